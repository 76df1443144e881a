/* conv_packed.h - private to conv2d.c: a frozen model's convolution with weights packed once
 * (conv_packed.c). A frozen model (kd_model_freeze) promises that its parameters no longer
 * change, so a layer may keep its weights in the order its kernel reads them instead of
 * repacking them on every call: here 64 output channels in the vector lanes (four AVX-512
 * vectors; 32 or 16 where the channels come so), each input value broadcast against them, as
 * ONNX Runtime's NCHWc kernels do. Every position is an output (no grid columns dropped, no
 * phase planes), every weight load aligned and from L1, and a stride is only a step in the
 * broadcasts' addresses. Only 16 channels at stride 1 put positions in the lanes instead. */
#ifndef KD_CONV_PACKED_H
#define KD_CONV_PACKED_H

#include <stddef.h>

#include "conv_direct.h"

/* Whether the packed kernel takes this shape on this CPU for whole samples (kd_conv_packed): an
 * AVX-512 CPU, output channels a multiple of 32, sums (C KH KW) of CP_MIN_SUM terms or more, at
 * most KD_CD_MAX_TAPS taps; and for the parts of a banded forward (kd_conv_packed_part):
 * output channels a multiple of 16, any sum. Tests: kd_conv_packed_on (0 never, -1 these
 * rules). */
int kd_conv_packed_fits(const kd_cd_dims *d);
int kd_conv_packed_part_fits(const kd_cd_dims *d);

/* Floats of the packed weights, and packing: wp[g][c][t][L] = w[L g + l][c][t] for lane l, L
 * = 64, 32 or 16 as the output channels divide. */
size_t kd_conv_packed_floats(const kd_cd_dims *d);
void kd_conv_packed_pack(const kd_cd_dims *d, const float *w, float *wp);

/* Workspace floats for n samples a call, and the samples per call a batch should take (the
 * planes and sums one block of channels reads within L2). */
size_t kd_conv_packed_workspace(const kd_cd_dims *d, size_t n);
size_t kd_conv_packed_group(const kd_cd_dims *d);

/* Where a call's outputs go and what joins them as they are stored (see kd_conv_packed). */
typedef struct {
    const float *scale, *shift; /* per output channel, or NULL */
    const float *res;           /* of y's shape, or NULL */
    int act;                    /* KD_ACT_* of fused.h */
    float *y;
} kd_cp_out;

/* out->y (n, O, OH, OW) from x (n, C, H, W) and the packed weights, for each sample:
 *   y[o, oh, ow] = act(scale[o] s + shift[o] + res[o, oh, ow]),
 *   s = sum over (c, i, j) in that order of w[o, c, i, j] x[c, S oh - P + i, S ow - P + j]
 * (scale NULL: 1; shift, res NULL: 0; in that order; padding taps add 0 * w). Batch
 * norm folds in as scale k and shift k (bias - mean) + beta, after the sum, so its weights are
 * packed as they are. ws: kd_conv_packed_workspace(d, n) floats, 64-byte aligned. `team`: run
 * on that many threads (outside a parallel region; 0 or 1: the calling thread), each taking
 * blocks of output channels, or with fewer than two blocks a thread runs of positions; every
 * output is summed by one thread in the same order, so the bits do not depend on the thread
 * count or on n. */
void kd_conv_packed(const kd_cd_dims *d, size_t n, const float *x, const float *wp,
                    const kd_cp_out *out, float *ws, size_t team);
/* Output positions [q0, q1) (q = oh OW + ow) of blocks [g0, g1) of output channels
 * (kd_conv_packed_blocks: O / 64, 32 or 16) of one sample, as kd_conv_packed computes them (the
 * same bits), on the calling thread: it pads only the input rows they read, into its own ws (at
 * least kd_conv_packed_workspace(d, 1) floats), so threads of a team each run their part at
 * once. */
size_t kd_conv_packed_blocks(const kd_cd_dims *d);
void kd_conv_packed_part(const kd_cd_dims *d, const float *x, const float *wp,
                         const kd_cp_out *out, float *ws, size_t q0, size_t q1, size_t g0,
                         size_t g1);

#endif
