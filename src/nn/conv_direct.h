/* conv_direct.h - private to conv2d.c: inference's direct convolution for groups 1, stride 1
 * and a kernel wider than 1x1 (conv_direct.c). No column matrix: each sample's input is copied
 * once into zero-padded planes, and a kernel of 8 output channels by a run of output positions
 * reads those planes and the weights where they are (no packing), so neither im2col's K x OHW
 * copy nor sgemm's packing of both operands is paid on every sample. */
#ifndef KD_CONV_DIRECT_H
#define KD_CONV_DIRECT_H

#include <stddef.h>

typedef struct {
    size_t C, H, W;   /* input */
    size_t O, OH, OW; /* output (OH = H + 2P - KH + 1, OW likewise: stride 1) */
    size_t KH, KW, P; /* kernel, symmetric zero padding */
} kd_cd_dims;

/* Workspace floats for one sample: the padded planes and the output rows before they are
 * compacted (each row of the padded width). */
size_t kd_conv_direct_workspace(const kd_cd_dims *d);

/* y (O, OH, OW) of one sample from x (C, H, W), weights w (O, C, KH, KW) and bias (O) or NULL:
 *   y[o, oh, ow] = bias[o] + sum over (c, i, j) in that order of w[o, c, i, j] x[c, oh - P + i, ow - P + j]
 * (padding taps add 0 * w). ws: kd_conv_direct_workspace floats, 64-byte aligned. `team`: split
 * the output channels among the OpenMP team (a one-sample pass outside a parallel region);
 * every output is still summed by one thread in the same order, so the bits do not depend on
 * the thread count. Which kernel runs (AVX-512, AVX2 or portable) depends on the CPU; the
 * results agree with the sgemm path to rounding. */
/* Whether inference should run the direct kernel on this machine for a batch of B samples:
 * where its kernel is wider than the one OpenBLAS runs (AVX-512 here, OpenBLAS on AVX2 kernels,
 * as when OPENBLAS_CORETYPE pins it), and on an AVX-512 CPU for 1 to 3 samples whatever OpenBLAS
 * runs (sgemm packs the weights for one sample's columns: one sample of ResNet-18 8.0 -> 5.7 ms
 * on a Xeon with OpenBLAS's SkylakeX kernels). With equal vector widths OpenBLAS's sgemm was
 * faster for a batch (an AVX2 EPYC: the CNN teacher 10.4-12.7k samples/s through im2col +
 * sgemm, 6.4-9.3k direct; the Xeon: 25.3k against 23.4k; docs/internals.md). */
int kd_conv_direct_wins(size_t B);

void kd_conv_direct_sample(const kd_cd_dims *d, const float *x, const float *w, const float *bias,
                           float *y, float *ws, int team);

#endif
