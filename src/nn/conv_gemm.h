/* conv_gemm.h - private to conv2d.c: inference's product of a convolution's weights and one
 * sample's columns, y (O, N) = bias + W (O, K) cols (K, N), by distill's own AVX2 or AVX-512
 * kernel (conv_gemm.c). The weights are read as they are stored and the columns where im2col wrote
 * them (sgemm copies both into its panels on every call), and the bias is added as the sums
 * are stored (no pass over y before the product). */
#ifndef KD_CONV_GEMM_H
#define KD_CONV_GEMM_H

#include <stddef.h>

/* Where inference should use it: KD_OWN_EVERY_PRODUCT on a CPU with AVX2 and FMA whose
 * OpenBLAS runs kernels no wider (AVX2 kernels: its own detection on AVX2 CPUs, or a pin);
 * KD_OWN_BATCH_IM2COL on an AVX-512 CPU whose OpenBLAS runs AVX-512 kernels too (conv2d.c's
 * rule: a batch's im2col products that fit in L2); else 0 (never). */
enum { KD_OWN_NEVER, KD_OWN_BATCH_IM2COL, KD_OWN_EVERY_PRODUCT };
int kd_conv_gemm_wins(void);

/* Floats of the transposed copy of an (O, K) weight matrix, and the copy itself: wt (K, O
 * rounded up to 8, zero-padded) from w (O, K). */
size_t kd_conv_gemm_transposed_floats(size_t O, size_t K);
void kd_conv_gemm_transpose(size_t O, size_t K, const float *w, float *wt);

/* Whether a product of N columns ends in a panel narrow enough for the column kernel, which
 * needs the transposed copy (worth making once for a batch, not for one sample). */
int kd_conv_gemm_narrow_tail(size_t N);

/* y[o, n] = act(bias[o] + sum over k of w[o, k] cols[k * ldb + n]) for o < O, n < N (K >= 1),
 * act a KD_ACT_* of fused.h applied as each output is stored (KD_ACT_NONE: none): w's
 * rows are K floats apart, y's ldc; bias may be NULL; wt the transposed copy or NULL. The sum
 * over k runs in order within blocks of at most 192 taps, and the blocks' sums are added in
 * order, in every kernel, so the bits depend on neither the thread count, nor where a column
 * falls in its panel, nor whether wt was given. `team`: split the columns among the OpenMP
 * team (a one-sample pass outside a parallel region). */
void kd_conv_gemm(size_t O, size_t K, size_t N, const float *w, const float *wt,
                  const float *bias, int act, const float *cols, size_t ldb, float *y,
                  size_t ldc, int team);

#endif
