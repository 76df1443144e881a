/* conv_direct.c - inference's direct convolution (conv_direct.h).
 *
 * The input planes are copied into zero-padded planes of width Wp = W + 2P. An output position
 * is then computed on that padded grid, q = oh * Wp + ow: its tap (i, j) of channel c is the
 * padded plane's value at q + i * Wp + j, so a run of consecutive q reads consecutive floats for
 * every tap, across row ends too. The grid has Wp - OW columns per row that are not outputs
 * (computed and dropped when the rows are compacted into y): 2 in 30 on a 28x28 plane with a
 * 3x3 kernel, 2 in 9 on a 7x7 one. A kernel call keeps a block of output channels by positions
 * in registers over the whole (c, i, j) sum (AVX-512: 8 channels by 32 positions, two vectors
 * per channel; AVX2: 4 by 24, three vectors per channel), broadcasting each weight from the
 * weight rows as they are stored. */
#include "conv_direct.h"

#include <omp.h>
#include <string.h>

#include "../core/test_hooks.h"
#include "kd_gemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CD_X86 1
#endif

/* Output positions per block in every kernel; the padded grid's rows are rounded up to it. */
#define CD_BLOCK 32
/* Input channels per partial sum: each output's taps are summed in register over CD_CHUNK
 * channels at a time, and the partial sums added in channel order (two levels, as sgemm's
 * blocks along its reduction: a long single sum rounds worse). */
#define CD_CHUNK 16

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

typedef struct {
    float *xp;         /* padded planes, ps floats apart */
    size_t ps, wp;     /* plane stride, padded width */
    size_t C, KH, KW, K;
    const float *w;    /* (O, K) */
    const float *bias; /* (O) or NULL */
    float *out;        /* (O, qr): the padded grid's outputs */
    size_t qr;         /* positions per output row of out: the grid rounded up to CD_BLOCK */
} cd_args;

static size_t grid_positions(const kd_cd_dims *d) {
    return round_up(d->OH * (d->W + 2 * d->P), CD_BLOCK);
}
static size_t plane_stride(const kd_cd_dims *d) {
    /* the last block's last tap reads up to qr - 1 + (KH - 1) Wp + KW - 1 */
    return round_up(grid_positions(d) + (d->KH - 1) * (d->W + 2 * d->P) + d->KW, 16);
}

size_t kd_conv_direct_workspace(const kd_cd_dims *d) {
    return d->C * plane_stride(d) + d->O * grid_positions(d);
}

/* ---- Kernels: channels [o, o + MR) over positions [q0, q1), a multiple of their block ---- */

/* Portable: MR channels by 4 positions, GCC vectors (SSE on the x86-64 baseline). */
typedef float cd_v4 __attribute__((vector_size(16)));
#define CD_PORTABLE(NAME, MR)                                                                    \
    static void NAME(const cd_args *a, size_t o, size_t c0, size_t c1, int first) {            \
        for (size_t q = 0; q < a->qr; q += 4) {                                                      \
            cd_v4 acc[MR];                                                                       \
            for (size_t r = 0; r < MR; r++) acc[r] = (cd_v4){0.0f, 0.0f, 0.0f, 0.0f};            \
            for (size_t c = c0; c < c1; c++)                                                      \
                for (size_t i = 0; i < a->KH; i++) {                                             \
                    const float *xr = a->xp + c * a->ps + i * a->wp + q;                         \
                    const float *wr = a->w + o * a->K + (c * a->KH + i) * a->KW;                 \
                    for (size_t j = 0; j < a->KW; j++) {                                         \
                        cd_v4 xv;                                                                \
                        memcpy(&xv, xr + j, sizeof xv);                                          \
                        for (size_t r = 0; r < MR; r++) acc[r] += wr[r * a->K + j] * xv;         \
                    }                                                                            \
                }                                                                                \
            for (size_t r = 0; r < MR; r++) {                                                    \
                float *out = a->out + (o + r) * a->qr + q;                                       \
                cd_v4 t = {0.0f, 0.0f, 0.0f, 0.0f};                                              \
                if (!first) memcpy(&t, out, sizeof t);                                           \
                t += acc[r];                                                                     \
                memcpy(out, &t, sizeof t);                                                       \
            }                                                                                    \
        }                                                                                        \
    }
CD_PORTABLE(portable_8, 8)
CD_PORTABLE(portable_1, 1)

#ifdef CD_X86
/* AVX-512: MR channels by 32 positions (two vectors each: 16 accumulators for MR = 8). */
#define CD_AVX512(NAME, MR)                                                                      \
    __attribute__((target("avx512f,fma"))) static void NAME(const cd_args *a, size_t o,         \
                                                             size_t c0, size_t c1, int first) { \
        for (size_t q = 0; q < a->qr; q += 32) {                                                    \
            __m512 acc[MR][2];                                                                   \
            for (size_t r = 0; r < MR; r++)                                                      \
                acc[r][0] = acc[r][1] = _mm512_setzero_ps();                                     \
            for (size_t c = c0; c < c1; c++)                                                      \
                for (size_t i = 0; i < a->KH; i++) {                                             \
                    const float *xr = a->xp + c * a->ps + i * a->wp + q;                         \
                    const float *wr = a->w + o * a->K + (c * a->KH + i) * a->KW;                 \
                    for (size_t j = 0; j < a->KW; j++) {                                         \
                        const __m512 x0 = _mm512_loadu_ps(xr + j), x1 = _mm512_loadu_ps(xr + j + 16); \
                        for (size_t r = 0; r < MR; r++) {                                        \
                            const __m512 s = _mm512_set1_ps(wr[r * a->K + j]);                   \
                            acc[r][0] = _mm512_fmadd_ps(s, x0, acc[r][0]);                       \
                            acc[r][1] = _mm512_fmadd_ps(s, x1, acc[r][1]);                       \
                        }                                                                        \
                    }                                                                            \
                }                                                                                \
            for (size_t r = 0; r < MR; r++) {                                                    \
                float *out = a->out + (o + r) * a->qr + q;                                       \
                if (!first) {                                                                    \
                    acc[r][0] = _mm512_add_ps(_mm512_loadu_ps(out), acc[r][0]);                  \
                    acc[r][1] = _mm512_add_ps(_mm512_loadu_ps(out + 16), acc[r][1]);             \
                }                                                                                \
                _mm512_storeu_ps(out, acc[r][0]);                                                \
                _mm512_storeu_ps(out + 16, acc[r][1]);                                           \
            }                                                                                    \
        }                                                                                        \
    }
CD_AVX512(avx512_8, 8)
CD_AVX512(avx512_1, 1)

/* AVX2: MR channels by 8 positions (8 accumulators for MR = 8, of 16 registers). Each tap
 * loads one x vector and broadcasts MR weights: about one load per FMA, which bounds it. */
#define CD_AVX2(NAME, MR)                                                                        \
    __attribute__((target("avx2,fma"))) static void NAME(const cd_args *a, size_t o, size_t c0, \
                                                          size_t c1, int first, size_t q0) {    \
        for (size_t q = q0; q < a->qr; q += 8) {                                                     \
            __m256 acc[MR];                                                                      \
            for (size_t r = 0; r < MR; r++) acc[r] = _mm256_setzero_ps();                        \
            for (size_t c = c0; c < c1; c++)                                                      \
                for (size_t i = 0; i < a->KH; i++) {                                             \
                    const float *xr = a->xp + c * a->ps + i * a->wp + q;                         \
                    const float *wr = a->w + o * a->K + (c * a->KH + i) * a->KW;                 \
                    for (size_t j = 0; j < a->KW; j++) {                                         \
                        const __m256 xv = _mm256_loadu_ps(xr + j);                               \
                        for (size_t r = 0; r < MR; r++)                                          \
                            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(wr[r * a->K + j]), xv, acc[r]); \
                    }                                                                            \
                }                                                                                \
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
        for (size_t c = c0; c < c1; c++)
            for (size_t i = 0; i < a->KH; i++) {
                const float *xr = a->xp + c * a->ps + i * a->wp + q;
                const float *wr = a->w + o * a->K + (c * a->KH + i) * a->KW;
                for (size_t j = 0; j < a->KW; j++) {
                    const __m256 x0 = _mm256_loadu_ps(xr + j), x1 = _mm256_loadu_ps(xr + j + 8),
                                 x2 = _mm256_loadu_ps(xr + j + 16);
                    for (size_t r = 0; r < 4; r++) {
                        const __m256 s = _mm256_broadcast_ss(wr + r * a->K + j);
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

/* Batches this small take the AVX-512 kernel whatever OpenBLAS runs (conv_direct.h). */
#define CD_FEW_SAMPLES 4

int kd_conv_direct_wins(size_t B) {
    /* decided once; every thread computes the same answer: 0 never, 1 for a few samples, 2
     * always */
    static int wins = -1;
    int w = __atomic_load_n(&wins, __ATOMIC_RELAXED);
    if (w < 0) {
#ifdef CD_X86
        __builtin_cpu_init();
        w = !__builtin_cpu_supports("avx512f") ? 0 : kd_blas_core_level() < 3 ? 2 : 1;
#else
        w = 0;
#endif
        __atomic_store_n(&wins, w, __ATOMIC_RELAXED);
    }
    return w == 2 || (w == 1 && B < CD_FEW_SAMPLES);
}

/* Plane c of x into its zero-padded plane. */
static void pad_plane(const kd_cd_dims *d, const float *x, float *xp, size_t ps) {
    const size_t wp = d->W + 2 * d->P;
    memset(xp, 0, d->P * wp * sizeof *xp);
    for (size_t h = 0; h < d->H; h++) {
        float *row = xp + (d->P + h) * wp;
        memset(row, 0, d->P * sizeof *row);
        memcpy(row + d->P, x + h * d->W, d->W * sizeof *row);
        memset(row + d->P + d->W, 0, d->P * sizeof *row);
    }
    const size_t used = (d->H + d->P) * wp;
    memset(xp + used, 0, (ps - used) * sizeof *xp);
}

/* The three passes of one sample over [lo, hi) of their ranges (n parts of each: part `part`). */
static void pass_part(const kd_cd_dims *d, const cd_kernels *k, const cd_args *a, const float *x,
                      float *y, int pass, size_t part, size_t n) {
    const size_t mr = k->mr, nb = d->O / mr, units = nb + d->O % mr;
    const size_t len = pass == 0 ? d->C : pass == 1 ? units : d->O;
    const size_t lo = len * part / n, hi = len * (part + 1) / n;
    for (size_t u = lo; u < hi; u++) {
        if (pass == 0) {
            pad_plane(d, x + u * d->H * d->W, a->xp + u * a->ps, a->ps);
        } else if (pass == 1) {  /* blocks of mr channels, then the rest one by one */
            for (size_t c0 = 0; c0 < d->C; c0 += CD_CHUNK) {
                const size_t c1 = d->C - c0 < CD_CHUNK ? d->C : c0 + CD_CHUNK;
                if (u < nb) k->kb(a, u * mr, c0, c1, c0 == 0);
                else k->k1(a, nb * mr + (u - nb), c0, c1, c0 == 0);
            }
        } else {  /* then the bias, as sgemm adds its product to a bias already in place */
            const float b = a->bias ? a->bias[u] : 0.0f;
            for (size_t oh = 0; oh < d->OH; oh++) {
                float *restrict yr = y + (u * d->OH + oh) * d->OW;
                const float *restrict src = a->out + u * a->qr + oh * a->wp;
                for (size_t ow = 0; ow < d->OW; ow++) yr[ow] = src[ow] + b;
            }
        }
    }
}

void kd_conv_direct_sample(const kd_cd_dims *d, const float *x, const float *w, const float *bias,
                           float *y, float *ws, int team) {
    static const cd_kernels *ks;
    const cd_kernels *k = __atomic_load_n(&ks, __ATOMIC_RELAXED);
    if (!k) {
        k = kernels(0);
        __atomic_store_n(&ks, k, __ATOMIC_RELAXED);
    }
    if (KD_HOOK_VALUE(kd_direct_conv_isa, 0)) k = kernels(KD_HOOK_VALUE(kd_direct_conv_isa, 0));
    const size_t ps = plane_stride(d);
    const cd_args a = {ws, ps, d->W + 2 * d->P, d->C, d->KH, d->KW, d->C * d->KH * d->KW, w,
                       bias, ws + d->C * ps, grid_positions(d)};
    if (!team) {
        for (int pass = 0; pass < 3; pass++) pass_part(d, k, &a, x, y, pass, 0, 1);
        return;
    }
#pragma omp parallel
    {
        const size_t t = (size_t)omp_get_thread_num(), n = (size_t)omp_get_num_threads();
        for (int pass = 0; pass < 3; pass++) {
            pass_part(d, k, &a, x, y, pass, t, n);
#pragma omp barrier
        }
    }
}
