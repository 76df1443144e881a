/* winograd.c - the transforms of F(2x2, 3x3) (winograd.h).
 *
 *   B^T = | 1  0 -1  0 |    G = | 1    0    0   |    A^T = | 1  1  1  0 |
 *         | 0  1  1  0 |        | 1/2  1/2  1/2 |          | 0  1 -1 -1 |
 *         | 0 -1  1  0 |        | 1/2 -1/2  1/2 |
 *         | 0  1  0 -1 |        | 0    0    1   |
 *
 * Both data transforms run along a whole row of tiles at a time, so every loop reads and writes
 * consecutive floats (or every other one) and vectorises: the input patch of tile (r, c) is
 * rows 2r..2r+3 and columns 2c..2c+3 of the zero-padded plane, so a tile row's four padded rows
 * are combined first (B^T d, whole rows at once), then their columns (the result times B). */
#include "winograd.h"

#include <string.h>

#include "conv_gemm.h"
#include "fused.h"
#include "kd_common.h"
#include "simd.h"
#include "../core/test_hooks.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define WG_X86 1
#endif

#ifdef KD_TEST_HOOKS
int kd_winograd_portable = 0;
#endif

/* Tiles per row a tile row's scratch holds (output width up to 2 * WG_MAX_TW), a multiple of
 * the AVX2 kernels' 8; a padded row's floats, with room for the last 8 tiles' reads. */
#define WG_MAX_TW 256
#define WG_ROW (2 * WG_MAX_TW + 8)
/* A group of samples runs as one set of products of at least this many columns (tiles), at
 * most WG_GROUP_MAX samples: sgemm packs each u[xi] once per product, and a 7x7 layer's 16
 * tiles per sample left it packing ResNet-18's 512x512 u[xi] for 16 columns (a fifth of its
 * batch forward in `perf`, sgemm_oncopy). */
#define WG_GROUP_COLUMNS 128
#define WG_GROUP_MAX 8

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

/* A cache line more than the rows: kd_wg_step's reason (winograd.h). */
size_t kd_wg_step(size_t rows, size_t ld) { return rows * ld + 16; }

size_t kd_wg_tiles_w(const kd_wg_dims *d) { return (d->OW + 1) / 2; }
static size_t tiles_h(const kd_wg_dims *d) { return (d->OH + 1) / 2; }
size_t kd_wg_tiles(const kd_wg_dims *d) { return kd_wg_tiles_w(d) * tiles_h(d); }
int kd_wg_fits(const kd_wg_dims *d) { return kd_wg_tiles_w(d) <= WG_MAX_TW; }

size_t kd_wg_sample_floats(const kd_wg_dims *d) {
    const size_t T = kd_wg_tiles(d);
    return round16(16 * kd_wg_step(d->C, T)) + round16(16 * kd_wg_step(d->O, T));
}

size_t kd_wg_weight_floats(const kd_wg_dims *d) {
    return 16 * (round16(d->O * d->C) + kd_conv_gemm_transposed_floats(d->O, d->C));
}

__attribute__((target_clones("avx2", "default")))
static void transform_weights(const kd_wg_dims *d, const float *w, float *u) {
    const size_t OC = d->O * d->C;
    for (size_t oc = 0; oc < OC; oc++) {
        const float *g = w + oc * 9;
        float t[4][3]; /* G g: rows of the 4x3 */
        for (size_t j = 0; j < 3; j++) {
            const float g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
            t[0][j] = g0;
            t[1][j] = 0.5f * (g0 + g1 + g2);
            t[2][j] = 0.5f * (g0 - g1 + g2);
            t[3][j] = g2;
        }
        for (size_t i = 0; i < 4; i++) { /* (G g) G^T */
            const float a = t[i][0], b = t[i][1], c = t[i][2];
            u[(i * 4 + 0) * OC + oc] = a;
            u[(i * 4 + 1) * OC + oc] = 0.5f * (a + b + c);
            u[(i * 4 + 2) * OC + oc] = 0.5f * (a - b + c);
            u[(i * 4 + 3) * OC + oc] = c;
        }
    }
}

const float *kd_wg_weights(const kd_wg_dims *d, const float *w, float *u, int copies) {
    transform_weights(d, w, u);
    if (!copies) return NULL;
    float *ut = u + round16(16 * d->O * d->C);
    const size_t n = kd_conv_gemm_transposed_floats(d->O, d->C);
    for (size_t xi = 0; xi < 16; xi++)
        kd_conv_gemm_transpose(d->O, d->C, u + xi * d->O * d->C, ut + xi * n);
    return ut;
}

/* B^T d at column k of a tile row's four rows a0..a3 (the padded input rows 2r..2r+3): rows
 * d0 - d2, d1 + d2, d2 - d1, d1 - d3 into r0..r3 (which may be the rows read). */
static inline void bt_d(float a0, float a1, float a2, float a3, float *r0, float *r1, float *r2,
                        float *r3, size_t k) {
    r0[k] = a0 - a2;
    r1[k] = a1 + a2;
    r2[k] = a2 - a1;
    r3[k] = a1 - a3;
}

/* Padded row pr of plane xc into row[0, 2 TW + 2), zero outside the plane. */
static inline __attribute__((always_inline)) void padded_row(const kd_wg_dims *d,
                                                             const float *xc, size_t pr,
                                                             float *row, size_t n) {
    if (pr < d->P || pr - d->P >= d->H) {
        memset(row, 0, n * sizeof *row);
        return;
    }
    const size_t P = d->P, W = d->W, in = W < n - P ? W : n - P;
    memset(row, 0, P * sizeof *row);
    memcpy(row + P, xc + (pr - d->P) * W, in * sizeof *row);
    memset(row + P + in, 0, (n - P - in) * sizeof *row);
}

/* ---- Portable: plain loops (the compiler's baseline vectors) ---- */

static void input_portable(const kd_wg_dims *d, const float *x, float *v, size_t ld, size_t c0,
                           size_t c1, size_t rb, size_t re, size_t CT) {
    const size_t TW = kd_wg_tiles_w(d), n = 2 * TW + 2;
    float rows[4][WG_ROW];
    for (size_t c = c0; c < c1; c++) {
        const float *xc = x + c * d->H * d->W;
        for (size_t r = rb; r < re; r++) {
            for (size_t i = 0; i < 4; i++) padded_row(d, xc, 2 * r + i, rows[i], n);
            /* B^T d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3 */
            float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3];
            for (size_t k = 0; k < n; k++) bt_d(r0[k], r1[k], r2[k], r3[k], r0, r1, r2, r3, k);
            /* (B^T d) B: the same on the patch's columns 2t .. 2t + 3 */
            for (size_t i = 0; i < 4; i++) {
                float *v0 = v + (i * 4 + 0) * CT + c * ld + (r - rb) * TW;
                float *v1 = v0 + CT, *v2 = v1 + CT, *v3 = v2 + CT;
                const float *a = rows[i];
                for (size_t t = 0; t < TW; t++) {
                    v0[t] = a[2 * t] - a[2 * t + 2];
                    v1[t] = a[2 * t + 1] + a[2 * t + 2];
                    v2[t] = a[2 * t + 2] - a[2 * t + 1];
                    v3[t] = a[2 * t + 1] - a[2 * t + 3];
                }
            }
        }
    }
}

static void output_portable(const kd_wg_dims *d, const float *m, size_t ld, const float *bias,
                            int act, float *y, size_t o0, size_t o1) {
    const size_t TW = kd_wg_tiles_w(d), TH = tiles_h(d);
    const size_t OT = kd_wg_step(d->O, ld), OW = d->OW, even = OW / 2;
    float y0e[WG_MAX_TW], y0o[WG_MAX_TW], y1e[WG_MAX_TW], y1o[WG_MAX_TW];
    for (size_t o = o0; o < o1; o++) {
        const float b = bias ? bias[o] : 0.0f;
        float *yo = y + o * d->OH * OW;
        for (size_t r = 0; r < TH; r++) {
            const float *p = m + o * ld + r * TW; /* element xi at p + xi * OT */
            for (size_t t = 0; t < TW; t++) {
                float s[2][4]; /* A^T m: rows m0 + m1 + m2 and m1 - m2 - m3 */
                for (size_t j = 0; j < 4; j++) {
                    const float m0 = p[j * OT + t], m1 = p[(4 + j) * OT + t],
                                m2 = p[(8 + j) * OT + t], m3 = p[(12 + j) * OT + t];
                    s[0][j] = m0 + m1 + m2;
                    s[1][j] = m1 - m2 - m3;
                }
                y0e[t] = kd_act_value(s[0][0] + s[0][1] + s[0][2] + b, act);
                y0o[t] = kd_act_value(s[0][1] - s[0][2] - s[0][3] + b, act);
                y1e[t] = kd_act_value(s[1][0] + s[1][1] + s[1][2] + b, act);
                y1o[t] = kd_act_value(s[1][1] - s[1][2] - s[1][3] + b, act);
            }
            float *r0 = yo + 2 * r * OW, *r1 = r0 + OW;
            const int second = 2 * r + 1 < d->OH;
            for (size_t t = 0; t < even; t++) {
                r0[2 * t] = y0e[t];
                r0[2 * t + 1] = y0o[t];
            }
            if (OW & 1) r0[OW - 1] = y0e[TW - 1];
            if (second) {
                for (size_t t = 0; t < even; t++) {
                    r1[2 * t] = y1e[t];
                    r1[2 * t + 1] = y1o[t];
                }
                if (OW & 1) r1[OW - 1] = y1e[TW - 1];
            }
        }
    }
}

/* ---- AVX2: 8 tiles at a time, the same operations in the same order (the same bits) ---- */
#ifdef WG_X86
/* The even and odd floats of a[0, 16): [a0 a2 .. a14] and [a1 a3 .. a15]. */
__attribute__((target("avx2"))) static inline void split16(const float *a, __m256 *e,
                                                           __m256 *o) {
    const __m256 lo = _mm256_loadu_ps(a), hi = _mm256_loadu_ps(a + 8);
    const __m256 se = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    const __m256 so = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
    *e = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(se), _MM_SHUFFLE(3, 1, 2, 0)));
    *o = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(so), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* Lanes [0, n) set, for a masked load of the last block of a row. */
__attribute__((target("avx2"))) static inline __m256i lanes(size_t n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), idx);
}

__attribute__((target("avx2")))
static void input_avx2(const kd_wg_dims *d, const float *x, float *v, size_t ld, size_t c0,
                       size_t c1, size_t rb, size_t re, size_t CT) {
    const size_t TW = kd_wg_tiles_w(d), n = 2 * TW + 2;
    /* floats of a row the blocks read; a padded row holds the input's row at [P, P + W) and
     * zeros elsewhere (n - P >= W + P: OW = W + 2P - 2), written once */
    const size_t nr = 2 * ((TW + 7) / 8 * 8) + 2, n8 = (n + 7) / 8 * 8;
    const size_t end = nr > n8 ? nr : n8, P = d->P, W = d->W;
    float rows[4][WG_ROW] __attribute__((aligned(32))), zero[WG_ROW];
    for (size_t i = 0; i < 4; i++) memset(rows[i], 0, end * sizeof(float));
    memset(zero, 0, W * sizeof(float));
    for (size_t c = c0; c < c1; c++) {
        const float *xc = x + c * d->H * d->W;
        for (size_t r = rb; r < re; r++) {
            const float *in[4]; /* the tile row's 4 input rows, or zeros in the padding */
            for (size_t i = 0; i < 4; i++) {
                const size_t pr = 2 * r + i;
                in[i] = pr >= P && pr - P < d->H ? xc + (pr - P) * W : zero;
            }
            /* B^T d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3, straight from the input */
            float *r0 = rows[0] + P, *r1 = rows[1] + P, *r2 = rows[2] + P, *r3 = rows[3] + P;
            size_t q = 0;
            for (; q + 8 <= W; q += 8) {
                const __m256 a0 = _mm256_loadu_ps(in[0] + q), a1 = _mm256_loadu_ps(in[1] + q),
                             a2 = _mm256_loadu_ps(in[2] + q), a3 = _mm256_loadu_ps(in[3] + q);
                _mm256_storeu_ps(r0 + q, _mm256_sub_ps(a0, a2));
                _mm256_storeu_ps(r1 + q, _mm256_add_ps(a1, a2));
                _mm256_storeu_ps(r2 + q, _mm256_sub_ps(a2, a1));
                _mm256_storeu_ps(r3 + q, _mm256_sub_ps(a1, a3));
            }
            for (; q < W; q++) bt_d(in[0][q], in[1][q], in[2][q], in[3][q], r0, r1, r2, r3, q);
            for (size_t i = 0; i < 4; i++) {
                float *v0 = v + (i * 4 + 0) * CT + c * ld + (r - rb) * TW;
                float *v1 = v0 + CT, *v2 = v1 + CT, *v3 = v2 + CT;
                const float *a = rows[i];
                for (size_t t0 = 0; t0 < TW; t0 += 8) {
                    /* the last block: the 8 tiles ending at TW (rewriting some of the block
                     * before with the same values), or part of a block when the row has fewer */
                    const size_t t = t0 + 8 <= TW || TW < 8 ? t0 : TW - 8;
                    __m256 e, o, e2, o2; /* columns 2t.., 2t+1.., 2t+2.., 2t+3.. */
                    split16(a + 2 * t, &e, &o);
                    split16(a + 2 * t + 2, &e2, &o2);
                    const __m256 w0 = _mm256_sub_ps(e, e2), w1 = _mm256_add_ps(o, e2),
                                 w2 = _mm256_sub_ps(e2, o), w3 = _mm256_sub_ps(o, o2);
                    if (t + 8 <= TW) {
                        _mm256_storeu_ps(v0 + t, w0);
                        _mm256_storeu_ps(v1 + t, w1);
                        _mm256_storeu_ps(v2 + t, w2);
                        _mm256_storeu_ps(v3 + t, w3);
                    } else {
                        kd_store_part8(v0 + t, w0, TW - t);
                        kd_store_part8(v1 + t, w1, TW - t);
                        kd_store_part8(v2 + t, w2, TW - t);
                        kd_store_part8(v3 + t, w3, TW - t);
                    }
                }
            }
        }
    }
}

/* The same transform 16 tiles at a time on AVX-512, a tile row's last block masked (a 14-tile
 * row is one block instead of two overlapping ones): the same operations on the same values,
 * so the same bits. The rows stage runs for WG_ROWS_AT tile rows before their columns are
 * read: a load right after the (masked) stores it overlaps waits for them to retire (store
 * forwarding fails), which was a third of this function's time. */
#define WG_ROWS_AT 8
__attribute__((target("avx512f")))
static void input_avx512(const kd_wg_dims *d, const float *x, float *v, size_t ld, size_t c0,
                         size_t c1, size_t rb, size_t re, size_t CT) {
    const size_t TW = kd_wg_tiles_w(d), n = 2 * TW + 2;
    const size_t P = d->P, W = d->W;
    /* a block reads 34 floats from 2t: zeros past the padded row, written once */
    const size_t nr = 2 * ((TW + 15) / 16 * 16) + 4, end = nr > n ? nr : n;
    /* each row starts pad floats in, so that its input part (from P) is 64-byte aligned: the
     * rows stage's stores then never straddle two cache lines */
    static _Thread_local float rows[WG_ROWS_AT][4][WG_ROW + 32] __attribute__((aligned(64)));
    const size_t pad = (16 - P % 16) % 16;
    float zero[WG_ROW];
    for (size_t k = 0; k < WG_ROWS_AT; k++)
        for (size_t i = 0; i < 4; i++) memset(rows[k][i], 0, (pad + end) * sizeof(float));
    memset(zero, 0, W * sizeof(float));
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (size_t c = c0; c < c1; c++) {
        const float *xc = x + c * d->H * d->W;
        for (size_t r0 = rb; r0 < re; r0 += WG_ROWS_AT) {
            const size_t r1 = re - r0 < WG_ROWS_AT ? re : r0 + WG_ROWS_AT;
            for (size_t r = r0; r < r1; r++) { /* B^T d of each tile row's four input rows */
                const float *in[4];
                for (size_t i = 0; i < 4; i++) {
                    const size_t pr = 2 * r + i;
                    in[i] = pr >= P && pr - P < d->H ? xc + (pr - P) * W : zero;
                }
                float *b0 = rows[r - r0][0] + pad + P, *b1 = rows[r - r0][1] + pad + P;
                float *b2 = rows[r - r0][2] + pad + P, *b3 = rows[r - r0][3] + pad + P;
                for (size_t q = 0; q < W; q += 16) {
                    const __mmask16 m = W - q >= 16 ? (__mmask16)0xFFFF
                                                    : (__mmask16)((1u << (W - q)) - 1);
                    const __m512 a0 = _mm512_maskz_loadu_ps(m, in[0] + q),
                                 a1 = _mm512_maskz_loadu_ps(m, in[1] + q),
                                 a2 = _mm512_maskz_loadu_ps(m, in[2] + q),
                                 a3 = _mm512_maskz_loadu_ps(m, in[3] + q);
                    _mm512_mask_storeu_ps(b0 + q, m, _mm512_sub_ps(a0, a2));
                    _mm512_mask_storeu_ps(b1 + q, m, _mm512_add_ps(a1, a2));
                    _mm512_mask_storeu_ps(b2 + q, m, _mm512_sub_ps(a2, a1));
                    _mm512_mask_storeu_ps(b3 + q, m, _mm512_sub_ps(a1, a3));
                }
            }
            for (size_t r = r0; r < r1; r++) /* then times B, along each of those rows */
                for (size_t i = 0; i < 4; i++) {
                    float *v0 = v + (i * 4 + 0) * CT + c * ld + (r - rb) * TW;
                    float *v1 = v0 + CT, *v2 = v1 + CT, *v3 = v2 + CT;
                    const float *a = rows[r - r0][i] + pad;
                    for (size_t t = 0; t < TW; t += 16) {
                        const __mmask16 m = TW - t >= 16 ? (__mmask16)0xFFFF
                                                         : (__mmask16)((1u << (TW - t)) - 1);
                        const __m512 lo = _mm512_loadu_ps(a + 2 * t),
                                     hi = _mm512_loadu_ps(a + 2 * t + 16);
                        const __m512 lo2 = _mm512_loadu_ps(a + 2 * t + 2),
                                     hi2 = _mm512_loadu_ps(a + 2 * t + 18);
                        /* columns 2t.., 2t+1.., 2t+2.., 2t+3.. */
                        const __m512 e = _mm512_permutex2var_ps(lo, even, hi),
                                     o = _mm512_permutex2var_ps(lo, odd, hi),
                                     e2 = _mm512_permutex2var_ps(lo2, even, hi2),
                                     o2 = _mm512_permutex2var_ps(lo2, odd, hi2);
                        _mm512_mask_storeu_ps(v0 + t, m, _mm512_sub_ps(e, e2));
                        _mm512_mask_storeu_ps(v1 + t, m, _mm512_add_ps(o, e2));
                        _mm512_mask_storeu_ps(v2 + t, m, _mm512_sub_ps(e2, o));
                        _mm512_mask_storeu_ps(v3 + t, m, _mm512_sub_ps(o, o2));
                    }
                }
        }
    }
}

/* kd_act_value on 8 lanes: max and min return their second operand when either is NaN. */
__attribute__((target("avx2"))) static inline __m256 act8(__m256 v, int act) {
    if (act == KD_ACT_NONE) return v;
    v = _mm256_max_ps(_mm256_setzero_ps(), v);
    return act == KD_ACT_RELU6 ? _mm256_min_ps(_mm256_set1_ps(6.0f), v) : v;
}

/* Even floats e and odd floats o interleaved into out[0, k) (k <= 16). */
__attribute__((target("avx2"))) static inline void store_pairs(float *out, __m256 e, __m256 o,
                                                               size_t k) {
    const __m256 lo = _mm256_unpacklo_ps(e, o), hi = _mm256_unpackhi_ps(e, o);
    const __m256 a = _mm256_permute2f128_ps(lo, hi, 0x20), b = _mm256_permute2f128_ps(lo, hi, 0x31);
    if (k == 16) {
        _mm256_storeu_ps(out, a);
        _mm256_storeu_ps(out + 8, b);
        return;
    }
    if (k >= 8) {
        _mm256_storeu_ps(out, a);
        if (k > 8) kd_store_part8(out + 8, b, k - 8);
    } else {
        kd_store_part8(out, a, k);
    }
}

__attribute__((target("avx2")))
static void output_avx2(const kd_wg_dims *d, const float *m, size_t ld, const float *bias,
                        int act, float *y, size_t o0, size_t o1) {
    const size_t TW = kd_wg_tiles_w(d), TH = tiles_h(d);
    const size_t OT = kd_wg_step(d->O, ld), OW = d->OW;
    for (size_t o = o0; o < o1; o++) {
        const __m256 b = _mm256_set1_ps(bias ? bias[o] : 0.0f);
        float *yo = y + o * d->OH * OW;
        for (size_t r = 0; r < TH; r++) {
            const float *p = m + o * ld + r * TW; /* element xi at p + xi * OT */
            float *row0 = yo + 2 * r * OW, *row1 = row0 + OW;
            const int second = 2 * r + 1 < d->OH;
            for (size_t t = 0; t < TW; t += 8) {
                const int whole = t + 8 <= TW;
                const __m256i mk = lanes(whole ? 8 : TW - t);
                __m256 s0[4], s1[4];
                for (size_t j = 0; j < 4; j++) {
                    __m256 m0, m1, m2, m3;
                    if (whole) {
                        m0 = _mm256_loadu_ps(p + j * OT + t);
                        m1 = _mm256_loadu_ps(p + (4 + j) * OT + t);
                        m2 = _mm256_loadu_ps(p + (8 + j) * OT + t);
                        m3 = _mm256_loadu_ps(p + (12 + j) * OT + t);
                    } else {
                        m0 = _mm256_maskload_ps(p + j * OT + t, mk);
                        m1 = _mm256_maskload_ps(p + (4 + j) * OT + t, mk);
                        m2 = _mm256_maskload_ps(p + (8 + j) * OT + t, mk);
                        m3 = _mm256_maskload_ps(p + (12 + j) * OT + t, mk);
                    }
                    s0[j] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
                    s1[j] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
                }
                const size_t k = OW - 2 * t < 16 ? OW - 2 * t : 16; /* columns from 2t */
                const __m256 y0e =
                    act8(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s0[0], s0[1]), s0[2]), b), act);
                const __m256 y0o =
                    act8(_mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(s0[1], s0[2]), s0[3]), b), act);
                store_pairs(row0 + 2 * t, y0e, y0o, k);
                if (second) {
                    const __m256 y1e = act8(
                        _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s1[0], s1[1]), s1[2]), b), act);
                    const __m256 y1o = act8(
                        _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(s1[1], s1[2]), s1[3]), b), act);
                    store_pairs(row1 + 2 * t, y1e, y1o, k);
                }
            }
        }
    }
}

/* The output transform 16 tiles at a time on AVX-512 (the same operations: the same bits),
 * the even and odd outputs interleaved by two permutes, a row's last block masked. */
__attribute__((target("avx512f"))) static inline __mmask16 mask16(size_t n) {
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
}
__attribute__((target("avx512f"))) static inline __m512 act16(__m512 v, int act) {
    if (act == KD_ACT_NONE) return v;
    v = _mm512_max_ps(_mm512_setzero_ps(), v);
    return act == KD_ACT_RELU6 ? _mm512_min_ps(_mm512_set1_ps(6.0f), v) : v;
}
/* e and o interleaved, plus res (the same columns of a residual row, or NULL), through act,
 * into out[0, k) (k <= 32). */
__attribute__((target("avx512f"))) static inline void store_pairs16(float *out, __m512 e,
                                                                     __m512 o, const float *res,
                                                                     int act, size_t k) {
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    __m512 a = _mm512_permutex2var_ps(e, lo, o), b = _mm512_permutex2var_ps(e, hi, o);
    const __mmask16 ka = mask16(k), kb = k > 16 ? mask16(k - 16) : 0;
    if (res) {
        a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(ka, res));
        b = _mm512_add_ps(b, _mm512_maskz_loadu_ps(kb, res + 16));
    }
    _mm512_mask_storeu_ps(out, ka, act16(a, act));
    if (kb) _mm512_mask_storeu_ps(out + 16, kb, act16(b, act));
}

/* What the AVX-512 output transform adds as it stores: y = act(k s + b + res), k and res
 * optional (kd_wg_output: the bias alone). */
typedef struct {
    const float *scale, *shift, *res;
    int act;
    float *y;
} wg_epi;

/* One output row's even and odd outputs from A^T m's row s (times A: s0 + s1 + s2 and
 * s1 - s2 - s3), times k, plus b, then res and act, into out[0, k). */
__attribute__((target("avx512f"))) static inline void row_pairs16(float *out, const __m512 s[4],
                                                                   const __m512 *k, __m512 b,
                                                                   const float *res, int act,
                                                                   size_t n) {
    __m512 e = _mm512_add_ps(_mm512_add_ps(s[0], s[1]), s[2]);
    __m512 o = _mm512_sub_ps(_mm512_sub_ps(s[1], s[2]), s[3]);
    if (k) e = _mm512_mul_ps(e, *k), o = _mm512_mul_ps(o, *k);
    store_pairs16(out, _mm512_add_ps(e, b), _mm512_add_ps(o, b), res, act, n);
}

/* Output channels [o0, o1) of tile rows [rb, re) (in m from row rb on). */
__attribute__((target("avx512f")))
static void output_avx512(const kd_wg_dims *d, const float *m, size_t ld, size_t OT,
                          const wg_epi *ep, size_t o0, size_t o1, size_t rb, size_t re) {
    const size_t TW = kd_wg_tiles_w(d), OW = d->OW, OHW = d->OH * OW;
    for (size_t o = o0; o < o1; o++) {
        const __m512 b = _mm512_set1_ps(ep->shift ? ep->shift[o] : 0.0f);
        const __m512 k = _mm512_set1_ps(ep->scale ? ep->scale[o] : 1.0f);
        const __m512 *kp = ep->scale ? &k : NULL;
        for (size_t r = rb; r < re; r++) {
            const float *p = m + o * ld + (r - rb) * TW; /* element xi at p + xi * OT */
            const size_t at0 = o * OHW + 2 * r * OW, at1 = at0 + OW;
            const int second = 2 * r + 1 < d->OH;
            for (size_t t = 0; t < TW; t += 16) {
                const __mmask16 mk = mask16(TW - t);
                __m512 s0[4], s1[4];
                for (size_t j = 0; j < 4; j++) {
                    const __m512 m0 = _mm512_maskz_loadu_ps(mk, p + j * OT + t),
                                 m1 = _mm512_maskz_loadu_ps(mk, p + (4 + j) * OT + t),
                                 m2 = _mm512_maskz_loadu_ps(mk, p + (8 + j) * OT + t),
                                 m3 = _mm512_maskz_loadu_ps(mk, p + (12 + j) * OT + t);
                    s0[j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                    s1[j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
                }
                const size_t n = OW - 2 * t < 32 ? OW - 2 * t : 32; /* columns from 2t */
                const float *res0 = ep->res ? ep->res + at0 + 2 * t : NULL;
                row_pairs16(ep->y + at0 + 2 * t, s0, kp, b, res0, ep->act, n);
                if (second)
                    row_pairs16(ep->y + at1 + 2 * t, s1, kp, b, res0 ? res0 + OW : NULL, ep->act,
                                n);
            }
        }
    }
}

/* The widest transforms this CPU runs: 2 AVX-512, 1 AVX2, 0 portable;
 * the hook kd_winograd_portable 1 asks for the portable loops, 2 for no wider than AVX2. */
static int isa(void) {
    static int level = -1; /* decided once; every thread computes the same answer */
    int w = __atomic_load_n(&level, __ATOMIC_RELAXED);
    if (w < 0) {
        __builtin_cpu_init();
        w = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
        __atomic_store_n(&level, w, __ATOMIC_RELAXED);
    }
    const int hook = KD_HOOK_VALUE(kd_winograd_portable, 0);
    return hook == 1 ? 0 : hook == 2 && w > 1 ? 1 : w;
}
#endif

void kd_wg_input_rows(const kd_wg_dims *d, const float *x, float *v, size_t ld, size_t xs,
                      size_t c0, size_t c1, size_t r0, size_t r1) {
#ifdef WG_X86
    if (isa() == 2) {
        input_avx512(d, x, v, ld, c0, c1, r0, r1, xs);
        return;
    }
    if (isa() == 1) {
        input_avx2(d, x, v, ld, c0, c1, r0, r1, xs);
        return;
    }
#endif
    input_portable(d, x, v, ld, c0, c1, r0, r1, xs);
}
void kd_wg_input(const kd_wg_dims *d, const float *x, float *v, size_t ld, size_t c0,
                 size_t c1) {
    kd_wg_input_rows(d, x, v, ld, kd_wg_step(d->C, ld), c0, c1, 0, tiles_h(d));
}

void kd_wg_output(const kd_wg_dims *d, const float *m, size_t ld, const float *bias, int act,
                  float *y, size_t o0, size_t o1) {
#ifdef WG_X86
    if (isa() == 2) {
        const wg_epi ep = {NULL, bias, NULL, act, y};
        output_avx512(d, m, ld, kd_wg_step(d->O, ld), &ep, o0, o1, 0, tiles_h(d));
        return;
    }
    if (isa() == 1) {
        output_avx2(d, m, ld, bias, act, y, o0, o1);
        return;
    }
#endif
    output_portable(d, m, ld, bias, act, y, o0, o1);
}

void kd_wg_output_rows(const kd_wg_dims *d, const float *m, size_t ld, size_t xs,
                       const float *scale,
                       const float *shift, const float *res, int act, float *y, size_t o0,
                       size_t o1, size_t r0, size_t r1) {
#ifdef WG_X86
    KD_ASSERT(isa() == 2);
    const wg_epi ep = {scale, shift, res, act, y};
    output_avx512(d, m, ld, xs, &ep, o0, o1, r0, r1);
#else
    (void)d, (void)m, (void)ld, (void)xs, (void)scale, (void)shift, (void)res, (void)act, (void)y;
    (void)o0, (void)o1, (void)r0, (void)r1;
    KD_ASSERT(!"winograd: no AVX-512 output transform on this architecture");
#endif
}

size_t kd_wg_group_size(const kd_wg_dims *d) {
    const size_t T = kd_wg_tiles(d), g = (WG_GROUP_COLUMNS + T - 1) / T;
    return g < WG_GROUP_MAX ? g : WG_GROUP_MAX;
}

size_t kd_wg_group_floats(const kd_wg_dims *d) {
    const size_t nT = kd_wg_group_size(d) * kd_wg_tiles(d);
    return round16(16 * kd_wg_step(d->C, nT)) + round16(16 * kd_wg_step(d->O, nT));
}

void kd_wg_group(const kd_wg_dims *d, const float *x, size_t n, const float *bias, int act,
                 float *y, float *ws, kd_wg_product product, const void *arg, int serial) {
    const size_t C = d->C, O = d->O, T = kd_wg_tiles(d), ld = n * T;
    const size_t in_n = C * d->H * d->W, out_n = O * d->OH * d->OW;
    float *v = ws, *m = ws + round16(16 * kd_wg_step(C, kd_wg_group_size(d) * T));
    for (size_t s = 0; s < n; s++) kd_wg_input(d, x + s * in_n, v + s * T, ld, 0, C);
    for (size_t xi = 0; xi < 16; xi++) product(arg, xi, v, m, ld, serial);
    for (size_t s = 0; s < n; s++) kd_wg_output(d, m + s * T, ld, bias, act, y + s * out_n, 0, O);
}

void kd_wg_sample(const kd_wg_dims *d, const float *x, const float *bias, int act, float *y,
                  float *ws, kd_wg_product product, const void *arg, int team, int serial) {
    const size_t C = d->C, O = d->O;
    const size_t T = kd_wg_tiles(d);
    float *v = ws, *m = ws + round16(16 * kd_wg_step(C, T));
    if (!team) {
        kd_wg_group(d, x, 1, bias, act, y, ws, product, arg, serial);
        return;
    }
    const size_t nc = C < 8 ? C : 8, no = O < 8 ? O : 8;
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < nc; k++) kd_wg_input(d, x, v, T, C * k / nc, C * (k + 1) / nc);
#pragma omp parallel for schedule(static)
    for (size_t xi = 0; xi < 16; xi++) product(arg, xi, v, m, T, 1);
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < no; k++)
        kd_wg_output(d, m, T, bias, act, y, O * k / no, O * (k + 1) / no);
}
