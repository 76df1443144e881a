/* winograd.h - private to conv2d.c: inference's 3x3 stride-1 convolution by Winograd's
 * minimal filtering F(2x2, 3x3) (Lavin & Gray, 2016), the transforms only (winograd.c); the
 * products between them are conv2d.c's.
 *
 * Each 2x2 block of outputs (a tile) is made from the 4x4 input patch above it:
 *   Y = A^T [ sum over c of (G g_oc G^T) (*) (B^T d_c B) ] A,
 * (*) elementwise, so the 36 multiply-adds per (tile, input channel, output channel) of the
 * direct sum become 16, as 16 independent products (one per element xi of the 4x4 domain):
 *   M[xi] (O, T) = U[xi] (O, C) V[xi] (C, T),   U = G g G^T, V = B^T d B,
 * T the sample's tiles, numbered row by row. The transforms' coefficients are 0, +-1 and 1/2,
 * so each output is the direct sum to a few roundings (tests/test_conv.c bounds it against a
 * double-precision reference); every output is computed the same way whatever the batch or
 * the thread count. */
#ifndef KD_WINOGRAD_H
#define KD_WINOGRAD_H

#include <stddef.h>

typedef struct {
    size_t C, H, W;   /* input */
    size_t O, OH, OW; /* output: OH = H + 2P - 2, OW likewise */
    size_t P;         /* symmetric zero padding */
} kd_wg_dims;

/* Tiles across and down the output (the last one half outside when OW or OH is odd), and in
 * all: T = kd_wg_tiles_w * kd_wg_tiles_h. */
size_t kd_wg_tiles_w(const kd_wg_dims *d);
size_t kd_wg_tiles(const kd_wg_dims *d);
/* Whether the transforms take this shape: a tile row's scratch lives on the stack, so the
 * width has a cap (far above the images distill trains on). */
int kd_wg_fits(const kd_wg_dims *d);

/* Floats from one element xi's rows of v (rows C) or m (rows O), ld floats each, to the next
 * element's: a cache line more than the rows, so that the 16 stores of one input row's
 * transform (and the 16 loads of an output's) fall in different L1 sets (rows ld a multiple of
 * 1024 floats put them all in one: ResNet-18's 64 channels by 48 tiles, the input transform
 * 73 ns per channel and tile row, 34 with the line). */
size_t kd_wg_step(size_t rows, size_t ld);
/* Floats of one sample's transforms (kd_wg_sample's ws): v (16 kd_wg_step(C, T)), then m
 * (16 kd_wg_step(O, T)). */
size_t kd_wg_sample_floats(const kd_wg_dims *d);
/* Floats of the transformed weights and their transposed copies (kd_wg_weights's u). */
size_t kd_wg_weight_floats(const kd_wg_dims *d);
/* u (16, O, C) = G g G^T of every 3x3 filter of w (O, C, 3, 3): u[(xi * O + o) * C + c];
 * with copies, also each u[xi]'s transposed copy for conv_gemm.h's column kernel, after them,
 * returned (else NULL). */
const float *kd_wg_weights(const kd_wg_dims *d, const float *w, float *u, int copies);
/* Input channels [c0, c1) of one sample x (C, H, W) into v: element xi of channel c's tile t
 * at v[xi kd_wg_step(C, ld) + c ld + t], t < T (ld >= T: a group's samples side by side, each
 * at its own column). */
void kd_wg_input(const kd_wg_dims *d, const float *x, float *v, size_t ld, size_t c0,
                 size_t c1);
/* The same for tile rows [r0, r1) alone (tile t of row r at v's column (r - r0) TW + t), each
 * element xi's rows xs floats after the last's (kd_wg_input: kd_wg_step(C, ld)). */
void kd_wg_input_rows(const kd_wg_dims *d, const float *x, float *v, size_t ld, size_t xs,
                      size_t c0, size_t c1, size_t r0, size_t r1);
/* Output channels [o0, o1) of one sample's y (O, OH, OW) from m (element xi's rows at m + xi
 * kd_wg_step(O, ld), ld floats each), plus bias[o]
 * (bias may be NULL), through act (a KD_ACT_* of fused.h) as they are stored. */
void kd_wg_output(const kd_wg_dims *d, const float *m, size_t ld, const float *bias, int act,
                  float *y, size_t o0, size_t o1);

/* Output channels [o0, o1) of tile rows [r0, r1) (in m from row r0 on, as kd_wg_input_rows
 * left them, element xi at m + xi xs) into y (O, OH, OW): y = act(scale[o] s + shift[o] +
 * res), scale and shift per output channel or NULL (1, 0), res of y's shape or NULL, in that
 * order (a frozen model's folded batch norm and residual add: wg_frozen.h). AVX-512 only. */
void kd_wg_output_rows(const kd_wg_dims *d, const float *m, size_t ld, size_t xs,
                       const float *scale, const float *shift, const float *res, int act,
                       float *y, size_t o0, size_t o1, size_t r0, size_t r1);

/* The product m[xi] (O, ld) = u[xi] (O, C) v[xi] (C, ld), every row ld floats (the tiles of
 * ld / T samples), v[xi] and m[xi] kd_wg_step(C or O, ld) floats apart, the caller's (its own
 * kernel or sgemm; serial: on the calling thread alone). */
typedef void (*kd_wg_product)(const void *arg, size_t xi, const float *v, float *m, size_t ld,
                              int serial);
/* Samples a group holds: enough for products of 128 columns (tiles), at most 8; and the floats
 * of a group's transforms (kd_wg_group's ws: v, then m, for n T columns). */
size_t kd_wg_group_size(const kd_wg_dims *d);
size_t kd_wg_group_floats(const kd_wg_dims *d);
/* n <= kd_wg_group_size samples x (n, C, H, W) to y (n, O, OH, OW) through act (KD_ACT_*):
 * their inputs transformed side by side, the 16 products over all their tiles at once (each
 * u[xi] packed once for the group), the outputs transformed with the bias; on the calling
 * thread (serial as for the product). A sample's bits can depend on n only through the
 * product's (sgemm's kernels for a few columns may sum otherwise). */
void kd_wg_group(const kd_wg_dims *d, const float *x, size_t n, const float *bias, int act,
                 float *y, float *ws, kd_wg_product product, const void *arg, int serial);
/* One sample x (C, H, W) to y (O, OH, OW) through act (KD_ACT_*): a group of one, in ws
 * (kd_wg_sample_floats). On the team (a one-sample pass outside a parallel region) each stage
 * is shared out (input channel blocks, the products, output channel blocks), every output still
 * made by one thread the same way; else kd_wg_group (no inactive region: conv2d.c's forward). */
void kd_wg_sample(const kd_wg_dims *d, const float *x, const float *bias, int act, float *y,
                  float *ws, kd_wg_product product, const void *arg, int team, int serial);

#endif
