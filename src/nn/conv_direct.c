/* conv_direct.c - inference's direct convolution (conv_direct.h).
 *
 * The input planes are copied into zero-padded phase planes: for stride S, phase (a, b) holds
 * the padded plane's rows S r + a and columns S u + b, Wq = ceil((W + 2P) / S) columns wide (for
 * stride 1 there is one phase, the padded plane itself). An output position is then computed on
 * the phase planes' grid, q = oh * Wq + ow: its tap (i, j) of channel c is phase
 * (i mod S, j mod S)'s value at q + (i / S) Wq + j / S, so a run of consecutive q reads
 * consecutive floats for every tap, across row ends too. The grid has Wq - OW columns per row
 * that are not outputs (computed and dropped when the rows are compacted into y): 2 in 30 on a
 * 28x28 plane with a 3x3 kernel, 2 in 9 on a 7x7 one, 1 in 15 for stride 2 from 28x28. Where
 * that waste is large the grid is compact instead (compact(): one plane per kernel column, OW
 * wide), and several samples can run as one tall image (rows_out()). A kernel call keeps a
 * block of output channels by positions in registers over the whole (c, i, j) sum (AVX-512: 8
 * channels by 48 positions, three vectors per channel, then 32 and 16; AVX2: 4 by 24, three
 * vectors per channel), broadcasting each weight from the weight rows as they are stored, and
 * reading each tap's floats at its offset in the channel's planes (a table made per call). */
#include "conv_direct.h"

#include <omp.h>
#include <string.h>

#include "../core/test_hooks.h"
#include "kd_common.h"
#include "kd_gemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CD_X86 1
#endif

/* The grid's positions are rounded up to CD_BLOCK: the kernels take blocks of 32 (AVX-512), 24
 * (AVX2) or 4 positions, and a last 16 (AVX-512) or 8 (AVX2). */
#define CD_BLOCK 16
/* Input channels per partial sum: each output's taps are summed in register over CD_CHUNK
 * channels at a time, and the partial sums added in channel order (two levels, as sgemm's
 * blocks along its reduction: a long single sum rounds worse). */
#define CD_CHUNK 16

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

typedef struct {
    float *xp;         /* each channel's phase planes, cs floats apart */
    size_t cs, wg;     /* channel stride, the grid's (and planes') width */
    size_t C, T, K;    /* channels, taps KH KW, C T */
    const size_t *tap; /* (T): tap t's offset in its channel's phase planes */
    const float *w;    /* (O, K) */
    const float *bias; /* (O) or NULL */
    float *out;        /* (O, qr): the grid's outputs */
    size_t qr;         /* positions per output row of out: the grid rounded up to CD_BLOCK */
} cd_args;

static size_t ceil_div(size_t n, size_t m) { return (n + m - 1) / m; }
/* Whether the grid is compact: one plane per kernel column j (each shifted by j), OW wide, so
 * that no grid position falls outside the outputs; rather than one plane per column phase,
 * ceil((W + 2P) / S) wide. Compact where that cuts the grid by more than a tenth (a 4x4 output
 * plane of a 3x3 kernel: 16 positions instead of 24 rounded to 32), its planes costing KW
 * copies of the input instead of one. */
static int compact(const kd_cd_dims *d) {
    const size_t wide = round_up(d->OH * ceil_div(d->W + 2 * d->P, d->S), CD_BLOCK);
    return round_up(d->OH * d->OW, CD_BLOCK) * 10 < wide * 9;
}
/* The grid's width, and the planes a channel has: rows phases by column phases (or columns). */
static size_t grid_width(const kd_cd_dims *d) {
    return compact(d) ? d->OW : ceil_div(d->W + 2 * d->P, d->S);
}
static size_t phase_rows(const kd_cd_dims *d) { return d->KH < d->S ? d->KH : d->S; }
static size_t phase_cols(const kd_cd_dims *d) {
    return compact(d) ? d->KW : d->KW < d->S ? d->KW : d->S;
}

/* Several samples run as one tall image: sample s's padded rows start at s Hs, Hs = S rows_out
 * (its top padding, its rows, zeros), the next sample's top padding serving as its bottom
 * padding, so that a run of grid positions crosses from one sample into the next and each
 * weight broadcast serves them all. Grid rows per sample, the last one's only OH. */
static size_t rows_out(const kd_cd_dims *d) {
    const size_t r = ceil_div(d->H + d->P, d->S);
    return r > d->OH ? r : d->OH;
}
static size_t grid_rows(const kd_cd_dims *d, size_t n) { return (n - 1) * rows_out(d) + d->OH; }
static size_t grid_positions(const kd_cd_dims *d, size_t n) {
    return round_up(grid_rows(d, n) * grid_width(d), CD_BLOCK);
}
static size_t phase_height(const kd_cd_dims *d, size_t n) {
    return ceil_div(n * d->S * rows_out(d) + d->P, d->S);
}
static size_t phase_stride(const kd_cd_dims *d, size_t n) {
    /* the last block's last tap reads up to qr - 1 + ((KH - 1) / S) Wg + (KW - 1) / pc */
    const size_t wg = grid_width(d);
    const size_t reach =
        grid_positions(d, n) + (d->KH - 1) / d->S * wg + (d->KW - 1) / phase_cols(d) + 1;
    const size_t held = phase_height(d, n) * wg;
    return round_up(reach > held ? reach : held, 16);
}
static size_t channel_stride(const kd_cd_dims *d, size_t n) {
    return phase_rows(d) * phase_cols(d) * phase_stride(d, n);
}

int kd_conv_direct_fits(const kd_cd_dims *d) {
    const size_t T = d->KH * d->KW;
    return T <= KD_CD_MAX_TAPS && (d->S == 1 ? T > 1 : compact(d));
}

size_t kd_conv_direct_workspace(const kd_cd_dims *d, size_t n) {
    return d->C * channel_stride(d, n) + d->O * grid_positions(d, n);
}

/* Samples per call in a batch: as many as keep the workspace within CD_GROUP_FLOATS, at most
 * CD_GROUP_MAX: each block of output channels reads all the group's planes, which should stay
 * in L2 (one thread of a Xeon, 2 MiB L2, per sample of ResNet-18's 512-channel 4x4 layer: one
 * sample a call 821 us, 5 samples (2^18 floats) 651 us, 16 samples (2^20) 820 us). */
#define CD_GROUP_FLOATS ((size_t)1 << 18)
#define CD_GROUP_MAX 16
size_t kd_conv_direct_group(const kd_cd_dims *d) {
    size_t n = 1;
    while (n < CD_GROUP_MAX && kd_conv_direct_workspace(d, n + 1) <= CD_GROUP_FLOATS) n++;
    return n;
}

/* ---- Kernels: channels [o, o + MR) over positions [q0, q1), a multiple of their block ---- */

/* Portable: MR channels by 4 positions, GCC vectors (SSE on the x86-64 baseline). */
typedef float cd_v4 __attribute__((vector_size(16)));
#define CD_PORTABLE(NAME, MR)                                                                    \
    static void NAME(const cd_args *a, size_t o, size_t c0, size_t c1, int first) {            \
        for (size_t q = 0; q < a->qr; q += 4) {                                                 \
            cd_v4 acc[MR];                                                                       \
            for (size_t r = 0; r < MR; r++) acc[r] = (cd_v4){0.0f, 0.0f, 0.0f, 0.0f};            \
            for (size_t c = c0; c < c1; c++) {                                                   \
                const float *xc = a->xp + c * a->cs + q, *wc = a->w + o * a->K + c * a->T;      \
                for (size_t t = 0; t < a->T; t++) {                                              \
                    cd_v4 xv;                                                                    \
                    memcpy(&xv, xc + a->tap[t], sizeof xv);                                      \
                    for (size_t r = 0; r < MR; r++) acc[r] += wc[r * a->K + t] * xv;             \
                }                                                                                \
            }                                                                                    \
            for (size_t r = 0; r < MR; r++) {                                                    \
                float *out = a->out + (o + r) * a->qr + q;                                       \
                cd_v4 s = {0.0f, 0.0f, 0.0f, 0.0f};                                              \
                if (!first) memcpy(&s, out, sizeof s);                                           \
                s += acc[r];                                                                     \
                memcpy(out, &s, sizeof s);                                                       \
            }                                                                                    \
        }                                                                                        \
    }
CD_PORTABLE(portable_8, 8)
CD_PORTABLE(portable_1, 1)

#ifdef CD_X86
/* AVX-512: MR channels by 16 NV positions (NV vectors each), from q while a whole block fits.
 * For MR = 8 and NV = 3, 24 accumulators and per tap 3 input loads and 8 broadcasts for 24
 * FMAs (against 10 loads for 16 FMAs at NV = 2: one sample of a 64-channel 28x28 layer 511 ->
 * 438 us, 128 channels at 14x14 531 -> 446 us on one thread of a Xeon). */
#define CD_AVX512(NAME, MR, NV)                                                                  \
    __attribute__((target("avx512f,fma"))) static size_t NAME(const cd_args *a, size_t o,       \
                                                               size_t c0, size_t c1, int first, \
                                                               size_t q) {                      \
        for (; q + 16 * NV <= a->qr; q += 16 * NV) {                                             \
            __m512 acc[MR][NV];                                                                  \
            for (size_t r = 0; r < MR; r++)                                                      \
                for (size_t v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();                 \
            for (size_t c = c0; c < c1; c++) {                                                   \
                const float *xc = a->xp + c * a->cs + q, *wc = a->w + o * a->K + c * a->T;      \
                for (size_t t = 0; t < a->T; t++) {                                              \
                    const float *xt = xc + a->tap[t];                                            \
                    __m512 xv[NV];                                                               \
                    for (size_t v = 0; v < NV; v++) xv[v] = _mm512_loadu_ps(xt + 16 * v);        \
                    for (size_t r = 0; r < MR; r++) {                                            \
                        const __m512 s = _mm512_set1_ps(wc[r * a->K + t]);                       \
                        for (size_t v = 0; v < NV; v++)                                          \
                            acc[r][v] = _mm512_fmadd_ps(s, xv[v], acc[r][v]);                    \
                    }                                                                            \
                }                                                                                \
            }                                                                                    \
            for (size_t r = 0; r < MR; r++) {                                                    \
                float *out = a->out + (o + r) * a->qr + q;                                       \
                for (size_t v = 0; v < NV; v++) {                                                \
                    if (!first)                                                                  \
                        acc[r][v] = _mm512_add_ps(_mm512_loadu_ps(out + 16 * v), acc[r][v]);     \
                    _mm512_storeu_ps(out + 16 * v, acc[r][v]);                                   \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
        return q;                                                                                \
    }
CD_AVX512(avx512_8x3, 8, 3)
CD_AVX512(avx512_8w, 8, 2)
CD_AVX512(avx512_8n, 8, 1)
CD_AVX512(avx512_1w, 1, 2)
CD_AVX512(avx512_1n, 1, 1)
/* Blocks of 48 positions, then 32 and 16 as they fit (the grid is a multiple of 16). */
static void avx512_8(const cd_args *a, size_t o, size_t c0, size_t c1, int first) {
    const size_t q = avx512_8x3(a, o, c0, c1, first, 0);
    avx512_8n(a, o, c0, c1, first, avx512_8w(a, o, c0, c1, first, q));
}
static void avx512_1(const cd_args *a, size_t o, size_t c0, size_t c1, int first) {
    avx512_1n(a, o, c0, c1, first, avx512_1w(a, o, c0, c1, first, 0));
}

/* AVX2: MR channels by 8 positions (8 accumulators for MR = 8, of 16 registers). Each tap
 * loads one x vector and broadcasts MR weights: about one load per FMA, which bounds it. */
#define CD_AVX2(NAME, MR)                                                                        \
    __attribute__((target("avx2,fma"))) static void NAME(const cd_args *a, size_t o, size_t c0, \
                                                          size_t c1, int first, size_t q0) {    \
        for (size_t q = q0; q < a->qr; q += 8) {                                                 \
            __m256 acc[MR];                                                                      \
            for (size_t r = 0; r < MR; r++) acc[r] = _mm256_setzero_ps();                        \
            for (size_t c = c0; c < c1; c++) {                                                   \
                const float *xc = a->xp + c * a->cs + q, *wc = a->w + o * a->K + c * a->T;      \
                for (size_t t = 0; t < a->T; t++) {                                              \
                    const __m256 xv = _mm256_loadu_ps(xc + a->tap[t]);                           \
                    for (size_t r = 0; r < MR; r++)                                              \
                        acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(wc[r * a->K + t]), xv, acc[r]);  \
                }                                                                                \
            }                                                                                    \
            for (size_t r = 0; r < MR; r++) {                                                    \
                float *out = a->out + (o + r) * a->qr + q;                                       \
                if (!first) acc[r] = _mm256_add_ps(_mm256_loadu_ps(out), acc[r]);                \
                _mm256_storeu_ps(out, acc[r]);                                                   \
            }                                                                                    \
        }                                                                                        \
    }
CD_AVX2(avx2_4t, 4)
CD_AVX2(avx2_1t, 1)

/* AVX2, 4 channels by 24 positions: 12 accumulators, and per tap 3 x loads and 4 broadcasts for
 * 12 FMAs, so the FMA units rather than the loads bound it. The positions past the last whole
 * 24 (the grid is a multiple of 32) go to the 4-by-8 kernel; every output sums the same taps
 * in the same order in both. */
__attribute__((target("avx2,fma"))) static void avx2_4(const cd_args *a, size_t o, size_t c0,
                                                       size_t c1, int first) {
    size_t q = 0;
    for (; q + 24 <= a->qr; q += 24) {
        __m256 acc[4][3];
        for (size_t r = 0; r < 4; r++) acc[r][0] = acc[r][1] = acc[r][2] = _mm256_setzero_ps();
        for (size_t c = c0; c < c1; c++) {
            const float *xc = a->xp + c * a->cs + q, *wc = a->w + o * a->K + c * a->T;
            for (size_t t = 0; t < a->T; t++) {
                const float *xt = xc + a->tap[t];
                const __m256 x0 = _mm256_loadu_ps(xt), x1 = _mm256_loadu_ps(xt + 8),
                             x2 = _mm256_loadu_ps(xt + 16);
                for (size_t r = 0; r < 4; r++) {
                    const __m256 s = _mm256_broadcast_ss(wc + r * a->K + t);
                    acc[r][0] = _mm256_fmadd_ps(s, x0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(s, x1, acc[r][1]);
                    acc[r][2] = _mm256_fmadd_ps(s, x2, acc[r][2]);
                }
            }
        }
        for (size_t r = 0; r < 4; r++) {
            float *out = a->out + (o + r) * a->qr + q;
            for (size_t v = 0; v < 3; v++) {
                if (!first) acc[r][v] = _mm256_add_ps(_mm256_loadu_ps(out + 8 * v), acc[r][v]);
                _mm256_storeu_ps(out + 8 * v, acc[r][v]);
            }
        }
    }
    if (q < a->qr) avx2_4t(a, o, c0, c1, first, q);
}
static void avx2_1(const cd_args *a, size_t o, size_t c0, size_t c1, int first) {
    avx2_1t(a, o, c0, c1, first, 0);
}

#endif

typedef void (*cd_kernel)(const cd_args *, size_t, size_t, size_t, int);
typedef struct {
    cd_kernel kb, k1; /* mr channels per call; one channel */
    size_t mr;
} cd_kernels;

/* The widest kernels the CPU runs (chosen once), or those a test asks for: 1 AVX-512, 2 AVX2,
 * 3 portable (the CPU must run them). */
#ifdef KD_TEST_HOOKS
int kd_direct_conv_isa = 0;
#endif
static const cd_kernels *kernels(int want) {
    static const cd_kernels portable = {portable_8, portable_1, 8};
#ifdef CD_X86
    static const cd_kernels k512 = {avx512_8, avx512_1, 8}, k256 = {avx2_4, avx2_1, 4};
    __builtin_cpu_init();
    if (want == 1 || (!want && __builtin_cpu_supports("avx512f"))) return &k512;
    if (want == 2 || (!want && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
        return &k256;
#endif
    return &portable;
}

/* Batches this small, and layers of output planes this small with this many weights, take the
 * AVX-512 kernel whatever OpenBLAS runs (conv_direct.h). */
#define CD_FEW_SAMPLES 4
#define CD_SMALL_PLANE 64
#define CD_LARGE_WEIGHTS ((size_t)1 << 18)

/* 0 never, 1 for a few samples and small planes, 2 always; decided once (every thread computes
 * the same answer). */
static int direct_level(void) {
    static int level = -1;
    int w = __atomic_load_n(&level, __ATOMIC_RELAXED);
    if (w < 0) {
#ifdef CD_X86
        __builtin_cpu_init();
        w = !__builtin_cpu_supports("avx512f") ? 0 : kd_blas_core_level() < 3 ? 2 : 1;
#else
        w = 0;
#endif
        __atomic_store_n(&level, w, __ATOMIC_RELAXED);
    }
    return w;
}

int kd_conv_direct_beats_winograd(const kd_cd_dims *d) {
    return direct_level() > 0 && d->OH * d->OW <= CD_SMALL_PLANE &&
           d->O * d->C * d->KH * d->KW >= CD_LARGE_WEIGHTS;
}

int kd_conv_direct_wins(const kd_cd_dims *d, size_t B) {
    const int w = direct_level();
    return w == 2 || (w == 1 && (B < CD_FEW_SAMPLES || kd_conv_direct_beats_winograd(d)));
}

/* Channel c of n samples into its planes, cs floats from xp: plane (a, b) holds the stacked
 * zero-padded image's rows S r + a and columns S u + b (u < Wg). x: sample 0's plane c; the
 * samples xs floats apart. */
static void pad_plane(const kd_cd_dims *d, size_t n, const float *x, size_t xs, float *xp) {
    const size_t wg = grid_width(d), hq = phase_height(d, n), pst = phase_stride(d, n);
    const size_t S = d->S, P = d->P, pc = phase_cols(d), np = phase_rows(d) * pc;
    const size_t hs = S * rows_out(d); /* stacked rows per sample */
    for (size_t ph = 0; ph < np; ph++) {
        float *pl = xp + ph * pst;
        const size_t pa = ph / pc, pb = ph % pc;
        /* columns u0 .. ue - 1 read the input (S u + pb - P in [0, W)), the rest padding */
        const size_t u0 = pb >= P ? 0 : ceil_div(P - pb, S);
        const size_t u1 = d->W + P > pb ? ceil_div(d->W + P - pb, S) : 0;
        const size_t ue = u1 < wg ? u1 : wg;
        for (size_t r = 0; r < hq; r++) {
            const size_t h = S * r + pa, s = h / hs, hl = h % hs; /* sample s's padded row hl */
            float *row = pl + r * wg;
            if (s >= n || hl < P || hl - P >= d->H || u0 >= ue) {
                memset(row, 0, wg * sizeof *row);
                continue;
            }
            const float *xr = x + s * xs + (hl - P) * d->W + (S * u0 + pb - P);
            memset(row, 0, u0 * sizeof *row);
            if (S == 1) memcpy(row + u0, xr, (ue - u0) * sizeof *row);
            else
                for (size_t u = u0; u < ue; u++) row[u] = xr[S * (u - u0)];
            memset(row + ue, 0, (wg - ue) * sizeof *row);
        }
        memset(pl + hq * wg, 0, (pst - hq * wg) * sizeof *pl);
    }
}

/* The three passes of ns samples over [lo, hi) of their ranges (n parts of each: part `part`). */
static void pass_part(const kd_cd_dims *d, size_t ns, const cd_kernels *k, const cd_args *a,
                      const float *x, float *y, int pass, size_t part, size_t n) {
    const size_t mr = k->mr, nb = d->O / mr, units = nb + d->O % mr;
    const size_t len = pass == 0 ? d->C : pass == 1 ? units : d->O;
    const size_t lo = len * part / n, hi = len * (part + 1) / n;
    for (size_t u = lo; u < hi; u++) {
        if (pass == 0) {
            pad_plane(d, ns, x + u * d->H * d->W, d->C * d->H * d->W, a->xp + u * a->cs);
        } else if (pass == 1) {  /* blocks of mr channels, then the rest one by one */
            for (size_t c0 = 0; c0 < d->C; c0 += CD_CHUNK) {
                const size_t c1 = d->C - c0 < CD_CHUNK ? d->C : c0 + CD_CHUNK;
                if (u < nb) k->kb(a, u * mr, c0, c1, c0 == 0);
                else k->k1(a, nb * mr + (u - nb), c0, c1, c0 == 0);
            }
        } else {  /* then the bias, as sgemm adds its product to a bias already in place */
            const float b = a->bias ? a->bias[u] : 0.0f;
            for (size_t sm = 0; sm < ns; sm++)
                for (size_t oh = 0; oh < d->OH; oh++) {
                    float *restrict yr = y + ((sm * d->O + u) * d->OH + oh) * d->OW;
                    const float *restrict src =
                        a->out + u * a->qr + (sm * rows_out(d) + oh) * a->wg;
                    for (size_t ow = 0; ow < d->OW; ow++) yr[ow] = src[ow] + b;
                }
        }
    }
}

void kd_conv_direct(const kd_cd_dims *d, size_t ns, const float *x, const float *w,
                    const float *bias, float *y, float *ws, size_t team) {
    static const cd_kernels *ks;
    const cd_kernels *k = __atomic_load_n(&ks, __ATOMIC_RELAXED);
    if (!k) {
        k = kernels(0);
        __atomic_store_n(&ks, k, __ATOMIC_RELAXED);
    }
    if (KD_HOOK_VALUE(kd_direct_conv_isa, 0)) k = kernels(KD_HOOK_VALUE(kd_direct_conv_isa, 0));
    const size_t cs = channel_stride(d, ns), wg = grid_width(d), pst = phase_stride(d, ns);
    const size_t S = d->S, pc = phase_cols(d), T = d->KH * d->KW;
    size_t tap[KD_CD_MAX_TAPS];
    KD_ASSERT(ns >= 1 && T <= KD_CD_MAX_TAPS);
    for (size_t i = 0; i < d->KH; i++)
        for (size_t j = 0; j < d->KW; j++)
            tap[i * d->KW + j] = ((i % S) * pc + j % pc) * pst + i / S * wg + j / pc;
    const cd_args a = {ws, cs, wg, d->C, T, d->C * T, tap, w, bias, ws + d->C * cs,
                       grid_positions(d, ns)};
    if (team < 2) {
        for (int pass = 0; pass < 3; pass++) pass_part(d, ns, k, &a, x, y, pass, 0, 1);
        return;
    }
#pragma omp parallel num_threads((int)team)
    {
        const size_t t = (size_t)omp_get_thread_num(), n = (size_t)omp_get_num_threads();
        for (int pass = 0; pass < 3; pass++) {
            pass_part(d, ns, k, &a, x, y, pass, t, n);
#pragma omp barrier
        }
    }
}
