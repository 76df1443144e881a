/* conv_reference.h - what the inference convolution tests share (test_conv_direct.c,
 * test_conv_packed.c, test_conv_gemm.c): a double-precision convolution written here, the
 * yardstick the kernels are held to, and whether the CPU runs AVX-512. Defined in
 * tests/conv_reference.c. */
#ifndef KD_CONV_REFERENCE_H
#define KD_CONV_REFERENCE_H

#include "../src/nn/conv_direct.h"

/* y[o, oh, ow] = bias[o] (NULL: 0) + sum over (c, i, j) of w[o, c, i, j]
 * x[c, S oh - P + i, S ow - P + j] in double (taps in the padding add nothing); mag gets the
 * same sum of magnitudes, the size a rounding error is measured against. */
void kd_conv_reference(const kd_cd_dims *d, const float *x, const float *w, const float *bias,
                       double *y, double *mag);

/* How many outputs y (O, OH, OW) miss act(scale[o] ref + shift[o] + res) (res NULL: 0; act a
 * KD_ACT_* of fused.h) by more than |scale[o]| mag bound + 1e-6, the first of them at *first. */
size_t kd_conv_epilogue_misses(const kd_cd_dims *d, const float *y, const double *ref,
                               const double *mag, const float *scale, const float *shift,
                               const float *res, int act, double bound, size_t *first);

/* 1 when the CPU runs AVX-512F (as the kernels' own checks ask), else 0. */
int kd_test_cpu_avx512(void);

#endif
