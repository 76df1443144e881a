/* conv_packed.c - a frozen model's convolution with packed weights (conv_packed.h).
 *
 * Each sample's input is copied into zero-padded planes (H + 2P by W + 2P, cs floats apart).
 * Output position q of the n samples (q = s OH OW + oh OW + ow) reads its tap (i, j) of channel
 * c at off[q] + tap[(c KH + i) KW + j], off[q] = s C cs + S oh (W + 2P) + S ow and tap = c cs +
 * i (W + 2P) + j, so a stride is only an address and the sum over (c, i, j) one loop over the
 * tap table. A tile keeps 6 positions by 64 output channels (or 12 by 32, 8 by 16) in 24
 * AVX-512 registers over a block of input channels: per tap, 4 aligned weight loads and 6
 * broadcasts for 24 FMAs. The sums go to t (positions by channels: the registers' order),
 * carried from one channel block to the next, and a last pass transposes t into y 16 by 16,
 * applying scale, shift, the residual and the activation. (16-channel layers at stride 1 turn
 * it around: grid tiles, positions in the lanes.) A call takes n whole samples, or a part of
 * one: a range of positions (padding only the rows they read) and of output channel blocks,
 * for a banded forward's threads (exec.c). Loops: a block of output channels, then input
 * channel blocks (their packed weights, CB T 64 floats, stay in L1 while every tile of the
 * call reads them), then tiles, each prefetching a share of the next block's weights into L2
 * as it runs: the layers with most weights read them from memory once per call (ResNet-18's
 * 512-channel 4x4 layers, one sample on one thread of a Xeon: 1080 us with the next block
 * fetched in bursts between tiles, 635 us spread over the tiles' steps). */
#include "conv_packed.h"

#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "../core/test_hooks.h"
#include "fused.h"
#include "kd_common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CP_X86 1
#endif

/* A tile: NB vectors of 16 output channels by NP positions, NB NP accumulators. Four vectors
 * by 6 positions where the output channels come in 64s (4 weight loads and 6 broadcasts per
 * 24 FMAs), two by 12 in 32s (more broadcast addresses than 12 no longer stay in registers),
 * one by 8 in 16s at strides above 1 (at stride 1, grid tiles: grid_tiles). */
static size_t lanes(const kd_cd_dims *d) { return d->O % 64 == 0 ? 64 : d->O % 32 == 0 ? 32 : 16; }
static size_t tile_pos(const kd_cd_dims *d) { return lanes(d) == 64 ? 6 : lanes(d) == 32 ? 12 : 8; }
/* A channel block's packed weights (CB T 64 floats) within this many floats: 32 KiB of a 48 KiB
 * L1 (on a Xeon, one sample of a 64-channel 28x28 layer: blocks of 14 channels 385 us, of 32
 * channels 420 us). */
#define CP_L1_FLOATS 8192
/* A call whose packed weights are at most this many floats (a quarter of a 2 MiB L2) finds
 * them in L2 from the last call: its tiles prefetch nothing. */
#define CP_L2_FLOATS ((size_t)1 << 17)
/* A batch's samples per call: as many as keep a call's planes and one block's sums (what a
 * channel block's tiles read) within CP_GROUP_FLOATS, at most CP_GROUP_MAX. */
#define CP_GROUP_FLOATS ((size_t)1 << 18)
#define CP_GROUP_MAX 16

/* Shorter sums (C KH KW) leave each output too little work beside its share of the tile's
 * setup and of the transpose into y (one sample of ResNet-18's 64-channel 1x1 downsample, 2
 * threads of a Xeon: 48 us unpacked, 67 packed; 128 channels: 66 and 64; 256: 130 and 92;
 * MobileNetV2's 8 -> 48 1x1 layers 2.7x slower packed). */
#define CP_MIN_SUM 128

#ifdef KD_TEST_HOOKS
int kd_conv_packed_on = -1;
#endif

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }
static size_t plane_floats(const kd_cd_dims *d) {
    return round_up((d->H + 2 * d->P) * (d->W + 2 * d->P), 16);
}
static size_t taps(const kd_cd_dims *d) { return d->KH * d->KW; }
static size_t channel_block(const kd_cd_dims *d) {
    const size_t cb = CP_L1_FLOATS / (taps(d) * lanes(d));
    return cb ? cb : 1;
}
/* Positions of n samples, rounded up to whole tiles. */
static size_t tile_positions(const kd_cd_dims *d, size_t n) {
    return round_up(n * d->OH * d->OW, tile_pos(d));
}

int kd_conv_packed_part_fits(const kd_cd_dims *d) {
    if (!KD_HOOK_VALUE(kd_conv_packed_on, -1)) return 0;
    if (d->O % 16 || taps(d) > KD_CD_MAX_TAPS) return 0;
#ifdef CP_X86
    __builtin_cpu_init();
    return !!__builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

int kd_conv_packed_fits(const kd_cd_dims *d) {
    return d->O % 32 == 0 && d->C * taps(d) >= CP_MIN_SUM && kd_conv_packed_part_fits(d);
}

/* Output channels in 16s at stride 1 put positions in the lanes instead (grid tiles): a run of
 * 48 positions of the padded rows' grid by 8 channels, per tap 3 loads and 8 broadcasts for 24
 * FMAs, where channels in the lanes would take a broadcast per FMA (the small ResNet's
 * 16-channel 28x28 layers, half a sample on one thread of a Xeon: 13.8 us, 15.7 by tiles of 16
 * channels by 8 positions, 16.0 by 12 positions). The grid is the padded planes' rows, W + 2P
 * wide: its last 2P columns are computed and dropped. */
static int grid_tiles(const kd_cd_dims *d) { return d->O % 32 != 0 && d->S == 1; }
static size_t grid_len(const kd_cd_dims *d, size_t rows) {
    return round_up(rows * (d->W + 2 * d->P), 16);
}

size_t kd_conv_packed_floats(const kd_cd_dims *d) { return d->O * d->C * taps(d); }

void kd_conv_packed_pack(const kd_cd_dims *d, const float *w, float *wp) {
    const size_t T = taps(d), C = d->C, L = grid_tiles(d) ? 8 : lanes(d);
    for (size_t o = 0; o < d->O; o++) {
        const size_t g = o / L, l = o % L;
        for (size_t c = 0; c < C; c++)
            for (size_t t = 0; t < T; t++)
                wp[((g * C + c) * T + t) * L + l] = w[(o * C + c) * T + t];
    }
}

/* Workspace: the sums t (tile positions + 16 rows of O: the transpose reads whole 16-row
 * blocks), the offsets off (tile positions) and tap (C T), as uint32, then the planes (n C cs).
 * (A copy of the planes per thread of a team, each thread reading the input where the previous
 * layer left it, was slower: ResNet-18, one sample on 2 threads, 3.97 -> 4.40 ms.) */
static size_t sums_floats(const kd_cd_dims *d, size_t n) {
    return grid_tiles(d) ? n * d->O * grid_len(d, d->OH) : (tile_positions(d, n) + 16) * d->O;
}
/* Zeros after the last plane: a grid tile's last run reads up to 15 + KW floats past it. */
#define CP_SLACK 96
static size_t tables_floats(const kd_cd_dims *d, size_t n) {
    return sums_floats(d, n) + round_up(tile_positions(d, n), 16) + round_up(d->C * taps(d), 16);
}
size_t kd_conv_packed_workspace(const kd_cd_dims *d, size_t n) {
    return tables_floats(d, n) + n * d->C * plane_floats(d) + CP_SLACK;
}

size_t kd_conv_packed_group(const kd_cd_dims *d) {
    const size_t per = channel_block(d) * plane_floats(d) + d->OH * d->OW * lanes(d);
    size_t n = CP_GROUP_FLOATS / per;
    return n < 1 ? 1 : n > CP_GROUP_MAX ? CP_GROUP_MAX : n;
}

/* A call: n samples, or output positions [q0, q1) of one. Its planes hold hb padded rows from
 * padded row pr0, cs floats apart; OHW positions per sample; y (and res) point at position q0
 * of sample 0's first channel, ys floats between their channel planes. */
typedef struct {
    const kd_cd_dims *d;
    size_t n, cs, T, OHW, ys, pr0, hb, q0;
    float *xp, *t;
    const uint32_t *off, *tap;
    const float *wp, *scale, *shift, *res;
    int act;
    float *y;
} cp_args;

#ifdef CP_X86
/* Tile: positions [q, q + NP) by channels [L g, L g + L), L = 16 NB, summing channels [c0, c1)
 * onto the sums in t (or from zero when first). */
#define CP_TILE(NAME, NB, NP, PF)                                                                \
    __attribute__((target("avx512f"))) static void NAME(const cp_args *a, size_t g, size_t c0, \
                                                        size_t c1, size_t q, int first,         \
                                                        const float *pf, const float *pf_end) {  \
        const size_t T = a->T, O = a->d->O, L = 16 * NB;                                         \
        float *t = a->t + q * O + g * L;                                                         \
        const float *wg = a->wp + g * a->d->C * T * L;                                           \
        __m512 acc[NP][NB];                                                                      \
        for (size_t p = 0; p < NP; p++)                                                          \
            for (size_t k = 0; k < NB; k++)                                                      \
                acc[p][k] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(t + p * O + 16 * k);   \
        const float *xs[NP];                                                                     \
        for (size_t p = 0; p < NP; p++) xs[p] = a->xp + a->off[q + p];                           \
        for (size_t k = c0 * T; k < c1 * T; k++) {                                               \
            const size_t o = a->tap[k];                                                          \
            if (PF) { /* two lines a step, branch-free: past the end, the last two again */    \
                const uintptr_t at = (uintptr_t)pf;                                              \
                _mm_prefetch((const char *)at, _MM_HINT_T1);                                     \
                _mm_prefetch((const char *)(at + 64), _MM_HINT_T1);                              \
                pf += at + 128 < (uintptr_t)pf_end ? 32 : 0;                                     \
            }                                                                                    \
            __m512 w[NB];                                                                        \
            for (size_t v = 0; v < NB; v++) w[v] = _mm512_load_ps(wg + k * L + 16 * v);          \
            for (size_t p = 0; p < NP; p++) {                                                    \
                const __m512 b = _mm512_set1_ps(xs[p][o]);                                       \
                for (size_t v = 0; v < NB; v++) acc[p][v] = _mm512_fmadd_ps(b, w[v], acc[p][v]); \
            }                                                                                    \
        }                                                                                        \
        for (size_t p = 0; p < NP; p++)                                                          \
            for (size_t k = 0; k < NB; k++) _mm512_storeu_ps(t + p * O + 16 * k, acc[p][k]);     \
    }
CP_TILE(tile_4x6, 4, 6, 1)
CP_TILE(tile_2x12, 2, 12, 1)
CP_TILE(tile_1x8, 1, 8, 1)
CP_TILE(tile_4x6_np, 4, 6, 0)
CP_TILE(tile_2x12_np, 2, 12, 0)
CP_TILE(tile_1x8_np, 1, 8, 0)
/* pf: weights to prefetch into L2 during the tile, up to two lines a step; none (pf == pf_end):
 * a tile without the prefetch's steps in its loop. */
static void tile(const cp_args *a, size_t g, size_t c0, size_t c1, size_t q, int first,
                 const float *pf, const float *pf_end) {
    const size_t L = lanes(a->d);
    if (pf == pf_end) {
        if (L == 64) tile_4x6_np(a, g, c0, c1, q, first, pf, pf_end);
        else if (L == 32) tile_2x12_np(a, g, c0, c1, q, first, pf, pf_end);
        else tile_1x8_np(a, g, c0, c1, q, first, pf, pf_end);
    } else if (L == 64) {
        tile_4x6(a, g, c0, c1, q, first, pf, pf_end);
    } else if (L == 32) {
        tile_2x12(a, g, c0, c1, q, first, pf, pf_end);
    } else {
        tile_1x8(a, g, c0, c1, q, first, pf, pf_end);
    }
}

/* r[i][l] -> r[l][i] for 16 vectors of 16 (unpack pairs, then 2x2 blocks of pairs, then 128-bit
 * lanes twice). */
__attribute__((target("avx512f"))) static void transpose16(__m512 r[16]) {
    __m512 u[16], v[16];
    for (size_t i = 0; i < 16; i += 2) {
        u[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        u[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* v[i + m], 128-bit lane L: rows i..i+3 of column 4L + m */
    for (size_t i = 0; i < 16; i += 4) {
        v[i] = _mm512_shuffle_ps(u[i], u[i + 2], 0x44);
        v[i + 1] = _mm512_shuffle_ps(u[i], u[i + 2], 0xEE);
        v[i + 2] = _mm512_shuffle_ps(u[i + 1], u[i + 3], 0x44);
        v[i + 3] = _mm512_shuffle_ps(u[i + 1], u[i + 3], 0xEE);
    }
    for (size_t m = 0; m < 4; m++) {
        const __m512 a = _mm512_shuffle_f32x4(v[m], v[4 + m], 0x88),
                     b = _mm512_shuffle_f32x4(v[m], v[4 + m], 0xDD),
                     c = _mm512_shuffle_f32x4(v[8 + m], v[12 + m], 0x88),
                     e = _mm512_shuffle_f32x4(v[8 + m], v[12 + m], 0xDD);
        r[m] = _mm512_shuffle_f32x4(a, c, 0x88);
        r[4 + m] = _mm512_shuffle_f32x4(b, e, 0x88);
        r[8 + m] = _mm512_shuffle_f32x4(a, c, 0xDD);
        r[12 + m] = _mm512_shuffle_f32x4(b, e, 0xDD);
    }
}

/* An output vector of channel o: act(scale v + shift + res), res read under keep (kd_act_value's
 * rules: NaN passes, ReLU keeps -0). */
__attribute__((target("avx512f"))) static inline __m512 finish(const cp_args *a, __m512 v,
                                                               size_t o, const float *res,
                                                               __mmask16 keep) {
    const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
    if (a->scale) v = _mm512_mul_ps(v, _mm512_set1_ps(a->scale[o]));
    if (a->shift) v = _mm512_add_ps(v, _mm512_set1_ps(a->shift[o]));
    if (a->res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(keep, res));
    if (a->act != KD_ACT_NONE)
        v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);
    if (a->act == KD_ACT_RELU6)
        v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, six, _CMP_GT_OQ), six);
    return v;
}

/* y for positions [q0, q1) and channels [o0, o1): t transposed 16 by 16, then finish. */
__attribute__((target("avx512f"))) static void epilogue(const cp_args *a, size_t q0, size_t q1,
                                                        size_t o0, size_t o1) {
    const size_t O = a->d->O, OHW = a->OHW;
    const __m512 zero = _mm512_setzero_ps();
    for (size_t s = q0 / OHW; s * OHW < q1; s++) {
        const size_t pb = (q0 > s * OHW ? q0 : s * OHW) - s * OHW;
        const size_t pe = (q1 < (s + 1) * OHW ? q1 : (s + 1) * OHW) - s * OHW;
        for (size_t p = pb; p < pe; p += 16) {
            const size_t nv = pe - p < 16 ? pe - p : 16;
            const __mmask16 keep = (__mmask16)((1u << nv) - 1);
            const float *tp = a->t + (s * OHW + p) * O;
            for (size_t o = o0; o < o1; o += 16) {
                __m512 r[16];
                for (size_t i = 0; i < 16; i++)
                    r[i] = i < nv ? _mm512_loadu_ps(tp + i * O + o) : zero;
                transpose16(r);
                for (size_t i = 0; i < 16; i++) {
                    const size_t at = (s * O + o + i) * a->ys + p;
                    const float *res = a->res ? a->res + at : NULL;
                    _mm512_mask_storeu_ps(a->y + at, keep, finish(a, r[i], o + i, res, keep));
                }
            }
        }
    }
}

/* Grid tile: channels [8 ob, 8 ob + 8) by grid positions [g, g + 16 NV) of the planes at xs,
 * the whole sum (c, i, j) in that order, into sums (8 rows per block, gl floats apart). */
#define CP_GRID(NAME, NV)                                                                        \
    __attribute__((target("avx512f"))) static void NAME(const cp_args *a, size_t ob,           \
                                                        const float *xs, size_t g, float *sums, \
                                                        size_t gl) {                            \
        const size_t K = a->d->C * a->T;                                                         \
        const float *w = a->wp + ob * K * 8;                                                     \
        __m512 acc[8][NV];                                                                       \
        for (size_t r = 0; r < 8; r++)                                                           \
            for (size_t v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();                     \
        for (size_t k = 0; k < K; k++) {                                                         \
            const float *xt = xs + a->tap[k] + g;                                                \
            __m512 xv[NV];                                                                       \
            for (size_t v = 0; v < NV; v++) xv[v] = _mm512_loadu_ps(xt + 16 * v);                \
            for (size_t r = 0; r < 8; r++) {                                                     \
                const __m512 b = _mm512_set1_ps(w[k * 8 + r]);                                   \
                for (size_t v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(b, xv[v], acc[r][v]); \
            }                                                                                    \
        }                                                                                        \
        for (size_t r = 0; r < 8; r++)                                                           \
            for (size_t v = 0; v < NV; v++)                                                      \
                _mm512_storeu_ps(sums + (8 * ob + r) * gl + g + 16 * v, acc[r][v]);              \
    }
CP_GRID(grid_8x3, 3)
CP_GRID(grid_8x1, 1)

/* Channels [16 g0, 16 g1) of each sample by grid tiles, then y from the grid's columns that
 * are outputs: act(scale s + shift + res), as epilogue. */
__attribute__((target("avx512f"))) static void run_grid(const cp_args *a, size_t g0, size_t g1) {
    const kd_cd_dims *d = a->d;
    const size_t O = d->O, OW = d->OW, Wp = d->W + 2 * d->P;
    const size_t gl = grid_len(d, a->hb - d->KH + 1); /* the call's rows, stride 1 */
    for (size_t s = 0; s < a->n; s++) {
        const float *xs = a->xp + s * d->C * a->cs;
        float *sums = a->t + s * O * gl;
        for (size_t ob = 2 * g0; ob < 2 * g1; ob++) {
            size_t g = 0;
            for (; g + 48 <= gl; g += 48) grid_8x3(a, ob, xs, g, sums, gl);
            for (; g < gl; g += 16) grid_8x1(a, ob, xs, g, sums, gl);
        }
        for (size_t o = 16 * g0; o < 16 * g1; o++) {
            /* a row's run of the call's positions at a time: grid row oh - pr0 (stride 1) */
            for (size_t p = 0, oh = a->q0 / OW, ow = a->q0 % OW; p < a->OHW; oh++, ow = 0) {
                const size_t len = OW - ow < a->OHW - p ? OW - ow : a->OHW - p;
                const float *src = sums + o * gl + (oh - a->pr0) * Wp + ow;
                const size_t at = (s * O + o) * a->ys + p;
                for (size_t j = 0; j < len; j += 16) {
                    const __mmask16 keep = (__mmask16)((1u << (len - j < 16 ? len - j : 16)) - 1);
                    const __m512 v = _mm512_maskz_loadu_ps(keep, src + j);
                    const float *res = a->res ? a->res + at + j : NULL;
                    _mm512_mask_storeu_ps(a->y + at + j, keep, finish(a, v, o, res, keep));
                }
                p += len;
            }
        }
    }
}
#else
static void run_grid(const cp_args *a, size_t g0, size_t g1) { (void)a, (void)g0, (void)g1; }
static void tile(const cp_args *a, size_t g, size_t c0, size_t c1, size_t q, int first,
                 const float *pf, const float *pf_end) {
    (void)a, (void)g, (void)c0, (void)c1, (void)q, (void)first, (void)pf, (void)pf_end;
    KD_ASSERT(!"conv_packed: no AVX-512 kernel on this architecture");
}
static void epilogue(const cp_args *a, size_t q0, size_t q1, size_t o0, size_t o1) {
    (void)a, (void)q0, (void)q1, (void)o0, (void)o1;
}
#endif

/* Channels [c0, c1) of each sample into its zero-padded planes, 16 floats at a time: a padded
 * row is a masked load from x's row (the mask leaves out the padding) stored whole, rather than
 * a memset and memcpy per row (ResNet-18's 64-channel 28x28 layer, one sample on one thread of
 * a Xeon: 352 -> 345 us; its 256-channel 7x7 layer 419 -> 387 us). */
#ifdef CP_X86
static __mmask16 lane_mask(size_t n) { return (__mmask16)((1u << n) - 1); }
__attribute__((target("avx512f"))) static void pad_planes(const cp_args *a, const float *x,
                                                          size_t c0, size_t c1) {
    const kd_cd_dims *d = a->d;
    const size_t Wp = d->W + 2 * d->P;
    for (size_t s = 0; s < a->n; s++)
        for (size_t c = c0; c < c1; c++) {
            float *pl = a->xp + (s * d->C + c) * a->cs;
            const float *xc = x + (s * d->C + c) * d->H * d->W;
            for (size_t j = 0; j < Wp; j += 16) {
                /* lane l: padded column j + l, x's column j + l - P where in [0, W): lanes
                 * [lo, hi), loaded from x's column j + lo - P on */
                const size_t lo = d->P > j ? d->P - j : 0;
                const size_t end = d->W + d->P > j ? d->W + d->P - j : 0;
                const size_t hi = end < 16 ? end : 16, from = hi > lo ? j + lo - d->P : 0;
                const __mmask16 m = hi > lo ? lane_mask(hi) & ~lane_mask(lo) : 0;
                const __mmask16 keep = lane_mask(Wp - j < 16 ? Wp - j : 16);
                for (size_t r = 0; r < a->hb; r++) {
                    const size_t pr = a->pr0 + r; /* padded row: x's row pr - P */
                    const __mmask16 in = pr >= d->P && pr < d->H + d->P ? m : 0;
                    const float *src = xc + (in ? (pr - d->P) * d->W + from : 0);
                    _mm512_mask_storeu_ps(pl + r * Wp + j, keep,
                                          _mm512_maskz_expandloadu_ps(in, src));
                }
            }
            memset(pl + a->hb * Wp, 0, (a->cs - a->hb * Wp) * sizeof *pl);
            if (s + 1 == a->n && c + 1 == d->C) memset(pl + a->cs, 0, CP_SLACK * sizeof *pl);
        }
}
#else
static void pad_planes(const cp_args *a, const float *x, size_t c0, size_t c1) {
    (void)a, (void)x, (void)c0, (void)c1;
}
#endif

/* Output blocks [g0, g1) over tiles [k0, k1), then their y. Before each tile, a share of the
 * next channel block's weights is prefetched into L2 (they stream from memory for the layers
 * with most weights). */
static void run_part(const cp_args *a, size_t g0, size_t g1, size_t k0, size_t k1) {
    const size_t C = a->d->C, cb = channel_block(a->d), np = tile_pos(a->d);
    const size_t L = lanes(a->d), row = a->T * L, end = a->n * a->OHW;
    const float *last = a->wp + g1 * C * row;
    const int fits_l2 = (g1 - g0) * C * row <= CP_L2_FLOATS; /* then no prefetch */
    for (size_t g = g0; g < g1; g++)
        for (size_t c0 = 0; c0 < C; c0 += cb) {
            const size_t c1 = c0 + cb < C ? c0 + cb : C;
            const float *next = a->wp + (g * C + c1) * row;
            const size_t lines = next < last && !fits_l2
                                     ? ((size_t)(last - next) < cb * row ? (size_t)(last - next)
                                                                         : cb * row) / 16
                                     : 0;
            for (size_t k = k0; k < k1; k++) {
                const size_t z0 = lines * (k - k0) / (k1 - k0);
                const size_t z1 = lines * (k - k0 + 1) / (k1 - k0);
                tile(a, g, c0, c1, k * np, c0 == 0, next + 16 * z0, next + 16 * z1);
            }
        }
    const size_t q1 = k1 * np < end ? k1 * np : end;
    if (k0 * np < q1) epilogue(a, k0 * np, q1, g0 * L, g1 * L);
}

/* The call's args and tables for n samples' output positions [q0, q1) (all of them unless n is
 * 1): the sums, then off (a position's first tap), tap (a tap's offset), then the planes, which
 * hold the padded rows the positions' rows read. */
static cp_args setup(const kd_cd_dims *d, size_t n, size_t q0, size_t q1, const float *wp,
                     const kd_cp_out *out, float *ws) {
    const size_t r0 = q0 / d->OW, r1 = (q1 + d->OW - 1) / d->OW; /* the positions' rows */
    const size_t Wp = d->W + 2 * d->P, hb = d->S * (r1 - r0 - 1) + d->KH;
    const size_t cs = round_up(hb * Wp, 16), OHW = q1 - q0;
    const size_t nq = round_up(n * OHW, tile_pos(d));
    KD_ASSERT(n >= 1 && d->O % 16 == 0 && q0 < q1 && q1 <= d->OH * d->OW &&
              (n == 1 || OHW == d->OH * d->OW));
    KD_ASSERT(n * d->C * cs < UINT32_MAX && cs <= plane_floats(d));
    const size_t sums = grid_tiles(d) ? n * d->O * grid_len(d, r1 - r0) : (nq + 16) * d->O;
    uint32_t *off = (uint32_t *)(ws + sums), *tap = off + round_up(nq, 16);
    size_t q = 0;
    for (size_t s = 0; s < n; s++)
        for (size_t oh = r0, ow = q0 % d->OW, k = 0; k < OHW; k++) {
            off[q++] = (uint32_t)(s * d->C * cs + d->S * ((oh - r0) * Wp + ow));
            if (++ow == d->OW) ow = 0, oh++;
        }
    for (; q < nq; q++) off[q] = off[q - 1]; /* past the last position: repeat it (never stored) */
    for (size_t c = 0; c < d->C; c++)
        for (size_t i = 0; i < d->KH; i++)
            for (size_t j = 0; j < d->KW; j++)
                tap[(c * d->KH + i) * d->KW + j] = (uint32_t)(c * cs + i * Wp + j);
    float *planes = (float *)(tap + round_up(d->C * taps(d), 16));
    return (cp_args){d, n, cs, taps(d), OHW, d->OH * d->OW, d->S * r0, hb, q0, planes, ws, off, tap,
                     wp, out->scale, out->shift, out->res ? out->res + q0 : NULL, out->act,
                     out->y + q0};
}

size_t kd_conv_packed_blocks(const kd_cd_dims *d) { return d->O / lanes(d); }

void kd_conv_packed_part(const kd_cd_dims *d, const float *x, const float *wp,
                         const kd_cp_out *out, float *ws, size_t q0, size_t q1, size_t g0,
                         size_t g1) {
    const cp_args a = setup(d, 1, q0, q1, wp, out, ws);
    pad_planes(&a, x, 0, d->C);
    if (grid_tiles(d)) run_grid(&a, g0, g1);
    else run_part(&a, g0, g1, 0, round_up(a.OHW, tile_pos(d)) / tile_pos(d));
}

void kd_conv_packed(const kd_cd_dims *d, size_t n, const float *x, const float *wp,
                    const kd_cp_out *out, float *ws, size_t team) {
    const cp_args a = setup(d, n, 0, d->OH * d->OW, wp, out, ws);
    const size_t nq = tile_positions(d, n);
    const size_t G = d->O / lanes(d), K = nq / tile_pos(d);
    if (team <= 1) {
        pad_planes(&a, x, 0, d->C);
        if (grid_tiles(d)) run_grid(&a, 0, G);
        else run_part(&a, 0, G, 0, K);
        return;
    }
    /* Blocks of channels per thread where each gets two or more (ResNet-18's 256-channel 7x7
     * layers, 4 blocks, one sample on 2 threads of a Xeon: 222-242 us by blocks, 251-261 by
     * positions), else runs of tiles (its 128-channel 14x14 layers, 2 blocks: 217-241 us by
     * blocks, 215-230 by positions). */
#pragma omp parallel num_threads((int)team)
    {
        const size_t k = (size_t)omp_get_thread_num(), nt = (size_t)omp_get_num_threads();
        pad_planes(&a, x, d->C * k / nt, d->C * (k + 1) / nt);
#pragma omp barrier
        if (grid_tiles(d)) run_grid(&a, G * k / nt, G * (k + 1) / nt);
        else if (G % nt == 0 && G >= 2 * nt) run_part(&a, G * k / nt, G * (k + 1) / nt, 0, K);
        else run_part(&a, 0, G, K * k / nt, K * (k + 1) / nt);
    }
}
