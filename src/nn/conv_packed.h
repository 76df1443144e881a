/* conv_packed.h - private to conv2d.c: a frozen model's convolution with weights packed once
 * (conv_packed.c). A frozen model (kd_model_freeze) promises that its parameters no longer
 * change, so a layer may keep its weights in the order its kernel reads them instead of
 * repacking them on every call: here 64 output channels in the vector lanes (four AVX-512
 * vectors), each input value broadcast against them, as ONNX Runtime's NCHWc kernels do. Every
 * position is an output (no grid columns dropped, no phase planes), every weight load aligned
 * and from L1, and a stride is only a step in the broadcasts' addresses. */
#ifndef KD_CONV_PACKED_H
#define KD_CONV_PACKED_H

#include <stddef.h>

#include "conv_direct.h"

/* Whether the packed kernel takes this shape on this CPU: an AVX-512 CPU, output channels a
 * multiple of 64, at most KD_CD_MAX_TAPS taps. Tests: kd_conv_packed_on (0 never, -1 this
 * rule). */
int kd_conv_packed_fits(const kd_cd_dims *d);

/* Floats of the packed weights, and packing: wp[g][c][t][64] = w[64 g + l][c][t] for lane l. */
size_t kd_conv_packed_floats(const kd_cd_dims *d);
void kd_conv_packed_pack(const kd_cd_dims *d, const float *w, float *wp);

/* Workspace floats for n samples a call, and the samples per call a batch should take (the
 * planes and sums one block of channels reads within L2). */
size_t kd_conv_packed_workspace(const kd_cd_dims *d, size_t n);
size_t kd_conv_packed_group(const kd_cd_dims *d);

/* y (n, O, OH, OW) from x (n, C, H, W) and the packed weights, for each sample:
 *   y[o, oh, ow] = act(scale[o] s + shift[o]),
 *   s = sum over (c, i, j) in that order of w[o, c, i, j] x[c, S oh - P + i, S ow - P + j]
 * (scale NULL: 1; shift NULL: 0; act a KD_ACT_* of fused.h; padding taps add 0 * w). Batch
 * norm folds in as scale k and shift k (bias - mean) + beta, after the sum, so its weights are
 * packed as they are. ws: kd_conv_packed_workspace(d, n) floats, 64-byte aligned. `team`: run
 * on that many threads (outside a parallel region; 0 or 1: the calling thread), each taking
 * blocks of output channels, or with fewer than two blocks a thread runs of positions; every
 * output is summed by one thread in the same order, so the bits do not depend on the thread
 * count or on n. */
void kd_conv_packed(const kd_cd_dims *d, size_t n, const float *x, const float *wp,
                    const float *scale, const float *shift, int act, float *y, float *ws,
                    size_t team);

#endif
