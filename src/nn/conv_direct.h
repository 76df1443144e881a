/* conv_direct.h - private to conv2d.c: inference's direct convolution for groups 1
 * (conv_direct.c; which shapes: kd_conv_direct_fits). No column matrix: each sample's input
 * is copied once into zero-padded planes (split by phase for a stride above 1), and a kernel of
 * 8 output channels by a run of output positions reads those planes and the weights where they
 * are (no packing), so neither im2col's K x OHW copy nor sgemm's packing of both operands is
 * paid on every sample. */
#ifndef KD_CONV_DIRECT_H
#define KD_CONV_DIRECT_H

#include <stddef.h>

typedef struct {
    size_t C, H, W;      /* input */
    size_t O, OH, OW;    /* output (OH = (H + 2P - KH) / S + 1, OW likewise) */
    size_t KH, KW, P, S; /* kernel, symmetric zero padding, stride */
} kd_cd_dims;

/* Kernels of at most this many taps (KH KW) run directly. */
#define KD_CD_MAX_TAPS 64

/* Whether the direct kernel takes this shape: at most KD_CD_MAX_TAPS taps, and for stride 1 a
 * kernel wider than 1x1 (a 1x1 kernel's columns are the input itself); for a larger stride only
 * a compact grid (4x4 outputs of a 3x3 kernel at stride 2: with a wide grid, the phase planes'
 * copy and the grid's unused columns made one sample of ResNet-18's stride-2 layers slower than
 * im2col and OpenBLAS's small-matrix sgemm on a Xeon with AVX-512). */
int kd_conv_direct_fits(const kd_cd_dims *d);

/* Workspace floats for n samples (kd_conv_direct) and the samples per call a batch should
 * take (their workspace within 2^18 floats, at most 16). */
size_t kd_conv_direct_workspace(const kd_cd_dims *d, size_t n);
size_t kd_conv_direct_group(const kd_cd_dims *d);

/* Whether inference should run the direct kernel on this machine for this layer and a batch of
 * B samples: where its kernel is wider than the one OpenBLAS runs (AVX-512 here, OpenBLAS on
 * AVX2 kernels, as when OPENBLAS_CORETYPE pins it); on an AVX-512 CPU whatever OpenBLAS runs
 * for 1 to 3 samples (sgemm packs the weights for one sample's columns: one sample of ResNet-18
 * 8.0 -> 5.7 ms on a Xeon with OpenBLAS's SkylakeX kernels), and for a layer of at most 64
 * output positions and 2^18 weights or more (Winograd's products repack their weights for every
 * group of tiles: ResNet-18 batch 256 235-248 -> 276-285 samples/s with the direct kernel there
 * in groups of samples). With equal vector
 * widths OpenBLAS's sgemm or Winograd was faster for the other layers of a batch (an AVX2 EPYC:
 * the CNN teacher 10.4-12.7k samples/s through im2col + sgemm, 6.4-9.3k direct; the Xeon:
 * 25.3k against 23.4k; docs/internals.md). */
int kd_conv_direct_wins(const kd_cd_dims *d, size_t B);

/* Whether, on this machine, the direct kernel should take this layer even where Winograd's rule
 * would (an AVX-512 CPU, at most 64 output positions, 2^18 weights or more). */
int kd_conv_direct_beats_winograd(const kd_cd_dims *d);

/* y (n, O, OH, OW) of n >= 1 samples from x (n, C, H, W), weights w (O, C, KH, KW), bias (O) or
 * NULL, for each sample:
 *   y[o, oh, ow] = bias[o] + sum over (c, i, j) in that order of w[o, c, i, j]
 *                  x[c, S oh - P + i, S ow - P + j]
 * (padding taps add 0 * w). The samples run as one tall image (each weight broadcast serves
 * all of them), each output's sum the same whatever n. ws: kd_conv_direct_workspace(d, n)
 * floats, 64-byte aligned. `team`: run on that many threads of an OpenMP team (outside a
 * parallel region; 0 or 1: the calling thread alone), each taking a share of the output
 * channels; every output is still summed by one thread in the same order, so the bits do not
 * depend on the thread count.
 * Which kernel runs (AVX-512, AVX2 or portable) depends on the CPU; the results agree with the
 * sgemm path to rounding. */
void kd_conv_direct(const kd_cd_dims *d, size_t n, const float *x, const float *w,
                    const float *bias, float *y, float *ws, size_t team);

#endif
