/* im2col.c - the column lowering of a convolution and its adjoint (im2col.h), shared by the
 * forward and backward passes of conv2d.c. */
#include "im2col.h"

#include <string.h>

/* For kernel offset k along an axis of length n (output length on), the output positions o
 * whose input index o*S - P + k lies inside [0, n): o in [*lo, *hi). */
static void valid_range(size_t n, size_t on, size_t S, size_t P, size_t k, size_t *lo,
                        size_t *hi) {
    size_t a = P > k ? (P - k + S - 1) / S : 0;     /* first o with o*S + k >= P */
    size_t b = n + P > k ? (n + P - k + S - 1) / S : 0;  /* first o with o*S + k >= n + P */
    if (a > on) a = on;
    if (b > on) b = on;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* Four floats as one GCC/Clang vector (one SSE register; the baseline x86-64 target has no
 * wider one), two per step for eight lanes: the hot col2im accumulation is written with
 * explicit vectors (GCC vectorises only loops whose trip count it knows at its cheapest cost
 * model; and an eight-float vector type without AVX went through the stack at every step);
 * memcpy keeps the loads and stores unaligned-safe. */
typedef float conv_v4 __attribute__((vector_size(16)));

static void add_row(float *restrict dst, const float *restrict src, size_t n) {
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        conv_v4 a0, a1, b0, b1;
        memcpy(&a0, dst + k, sizeof a0);
        memcpy(&a1, dst + k + 4, sizeof a1);
        memcpy(&b0, src + k, sizeof b0);
        memcpy(&b1, src + k + 4, sizeof b1);
        a0 += b0;
        a1 += b1;
        memcpy(dst + k, &a0, sizeof a0);
        memcpy(dst + k + 4, &a1, sizeof a1);
    }
    for (; k < n; k++) dst[k] += src[k];
}
/* Sum of src[0..n) with eight partial sums, lanes 0-3 and 4-7 (a fixed order, so results stay
 * deterministic). */
float kd_row_sum(const float *src, size_t n) {
    conv_v4 lo = {0}, hi = {0};
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        conv_v4 a, b;
        memcpy(&a, src + k, sizeof a);
        memcpy(&b, src + k + 4, sizeof b);
        lo += a;
        hi += b;
    }
    float s = ((lo[0] + lo[1]) + (lo[2] + lo[3])) + ((hi[0] + hi[1]) + (hi[2] + hi[3]));
    for (; k < n; k++) s += src[k];
    return s;
}
/* Stride 2 (every downsampling layer) four outputs at a time with explicit vectors (GCC leaves
 * a strided loop scalar): the even lanes of eight inputs. Blocks stop while k + 4 < n, so no
 * load reaches past src[2(n - 1)]. Scattering back adds -0.0f to the odd lanes, which leaves
 * every float as it was (-0.0 included). */
static void copy_strided(float *restrict dst, const float *restrict src, size_t n, size_t S) {
    size_t k = 0;
    if (S == 2)
        for (; k + 4 < n; k += 4) {
            conv_v4 a, b;
            memcpy(&a, src + 2 * k, sizeof a);
            memcpy(&b, src + 2 * k + 4, sizeof b);
            const conv_v4 e = __builtin_shufflevector(a, b, 0, 2, 4, 6);
            memcpy(dst + k, &e, sizeof e);
        }
    for (; k < n; k++) dst[k] = src[k * S];
}
static void add_strided(float *restrict dst, const float *restrict src, size_t n, size_t S) {
    size_t k = 0;
    if (S == 2)
        for (; k + 4 < n; k += 4) {
            conv_v4 a, b, g;
            const conv_v4 z = {-0.0f, -0.0f, -0.0f, -0.0f};
            memcpy(&a, dst + 2 * k, sizeof a);
            memcpy(&b, dst + 2 * k + 4, sizeof b);
            memcpy(&g, src + k, sizeof g);
            a += __builtin_shufflevector(g, z, 0, 4, 1, 4);
            b += __builtin_shufflevector(g, z, 2, 4, 3, 4);
            memcpy(dst + 2 * k, &a, sizeof a);
            memcpy(dst + 2 * k + 4, &b, sizeof b);
        }
    for (; k < n; k++) dst[k * S] += src[k];
}

/* Zeroes columns [0, ow_lo) and [ow_hi, OW) of rows [oh_lo, oh_hi) of one column row (OW
 * floats per output row). Column by column down the rows: with padding P at most P columns on
 * each side, and a loop along a row would become one memset call per row for one or two
 * floats, which cost more than im2col's copies. */
static void zero_edges(float *dst, size_t OW, size_t oh_lo, size_t oh_hi, size_t ow_lo,
                       size_t ow_hi) {
    for (size_t ow = 0; ow < ow_lo; ow++)
        for (size_t oh = oh_lo; oh < oh_hi; oh++) dst[oh * OW + ow] = 0.0f;
    for (size_t ow = ow_hi; ow < OW; ow++)
        for (size_t oh = oh_lo; oh < oh_hi; oh++) dst[oh * OW + ow] = 0.0f;
}

/* One sample's columns (K rows of OH*OW floats) from its input x (C, H, W):
 * col[(c*KH + i)*KW + j][oh*OW + ow] = x[c][oh*S - P + i][ow*S - P + j], zero outside. The loop
 * runs kernel offset (i, j) outside and channel inside, so each offset's valid output ranges
 * and copy kind are worked out once per sample rather than once per channel (a plain copy:
 * the order of the writes changes nothing). */
void kd_im2col_channels(const kd_conv_dims *d, const float *x, float *col, size_t c0,
                        size_t c1) {
    const size_t ld = d->OHW, HW = d->H * d->W, rows = d->KH * d->KW;
    const size_t OW = d->OW, S = d->S, P = d->P, W = d->W;
    /* Stride 1 with OW == W ("same" width): a col row is the input plane shifted by
     * (i - P) * W + (j - P) as one flat array, so one memcpy per row plus re-zeroing the few
     * columns that wrapped around from the neighbouring image row. This is the common case
     * (3x3 padding 1) and replaces OH short copies by one long one. */
    const int flat = S == 1 && OW == W;
    for (size_t i = 0; i < d->KH; i++) {
        size_t oh_lo, oh_hi;
        valid_range(d->H, d->OH, S, P, i, &oh_lo, &oh_hi);
        for (size_t j = 0; j < d->KW; j++) {
            size_t ow_lo, ow_hi;
            valid_range(W, OW, S, P, j, &ow_lo, &ow_hi);
            const int empty = oh_lo == oh_hi || ow_lo == ow_hi;
            for (size_t c = c0; c < c1; c++) {
                float *dst = col + (c * rows + i * d->KW + j) * ld;
                const float *xc = x + c * HW;
                if (empty) {  /* this kernel offset only ever sees padding */
                    memset(dst, 0, ld * sizeof *dst);
                    continue;
                }
                if (oh_lo) memset(dst, 0, oh_lo * OW * sizeof *dst);
                if (oh_hi < d->OH)
                    memset(dst + oh_hi * OW, 0, (d->OH - oh_hi) * OW * sizeof *dst);
                if (flat) {
                    /* Flat positions [oh_lo*W + ow_lo, (oh_hi-1)*W + ow_hi) all map inside x. */
                    size_t a = oh_lo * W + ow_lo, b = (oh_hi - 1) * W + ow_hi;
                    memcpy(dst + a, xc + (a + i * W + j - P * W - P), (b - a) * sizeof *dst);
                } else {
                    for (size_t oh = oh_lo; oh < oh_hi; oh++) {
                        float *row = dst + oh * OW;
                        const float *src = xc + (oh * S + i - P) * W + (ow_lo * S + j - P);
                        if (S == 1) memcpy(row + ow_lo, src, (ow_hi - ow_lo) * sizeof *row);
                        else copy_strided(row + ow_lo, src, ow_hi - ow_lo, S);
                    }
                }
                zero_edges(dst, OW, oh_lo, oh_hi, ow_lo, ow_hi);
            }
        }
    }
}

void kd_im2col(const kd_conv_dims *d, const float *x, float *col) {
    kd_im2col_channels(d, x, col, 0, d->C);
}

/* One sample's input gradient xs (C, H, W) from its column gradient col (K rows of OH*OW
 * floats), the adjoint of im2col: plane c is the sum of its KH*KW rows, added in kernel-offset
 * order (each plane's order is that of a plane-by-plane loop; offsets run outside so their
 * ranges are worked out once). In the stride-1 same-width case the columns that correspond to
 * padding are zeroed first (col is scratch), so each row is added back as one long flat run,
 * mirroring im2col's fast path. */
void kd_col2im(const kd_conv_dims *d, float *col, float *xs) {
    const size_t ld = d->OHW, HW = d->H * d->W, rows = d->KH * d->KW;
    const size_t OW = d->OW, S = d->S, P = d->P, W = d->W;
    const int flat = S == 1 && OW == W;
    memset(xs, 0, d->C * HW * sizeof *xs);
    for (size_t i = 0; i < d->KH; i++) {
        size_t oh_lo, oh_hi;
        valid_range(d->H, d->OH, S, P, i, &oh_lo, &oh_hi);
        for (size_t j = 0; j < d->KW; j++) {
            size_t ow_lo, ow_hi;
            valid_range(W, OW, S, P, j, &ow_lo, &ow_hi);
            if (ow_lo == ow_hi || oh_lo == oh_hi) continue;
            for (size_t c = 0; c < d->C; c++) {
                float *src = col + (c * rows + i * d->KW + j) * ld, *xc = xs + c * HW;
                if (flat) {
                    zero_edges(src, OW, oh_lo, oh_hi, ow_lo, ow_hi);
                    size_t a = oh_lo * W + ow_lo, b = (oh_hi - 1) * W + ow_hi;
                    add_row(xc + (a + i * W + j - P * W - P), src + a, b - a);
                    continue;
                }
                for (size_t oh = oh_lo; oh < oh_hi; oh++) {
                    const float *row = src + oh * OW + ow_lo;
                    float *dst = xc + (oh * S + i - P) * W + (ow_lo * S + j - P);
                    if (S == 1) add_row(dst, row, ow_hi - ow_lo);
                    else add_strided(dst, row, ow_hi - ow_lo, S);
                }
            }
        }
    }
}

/* One sample's columns (K, OHW) from its input (C, H, W): written into col, or, for a 1x1
 * kernel at stride 1 without padding (MobileNet's expansions and projections), the input
 * itself, which is already that matrix. */
int kd_cols_are_input(const kd_conv_dims *d) {
    return d->KH == 1 && d->KW == 1 && d->S == 1 && d->P == 0;
}

const float *kd_sample_cols(const kd_conv_dims *d, const float *x, float *col) {
    if (kd_cols_are_input(d)) return x;
    kd_im2col(d, x, col);
    return col;
}
