/* dw_blocked.h - private to depthwise.c: the 3x3, padding 1 depthwise forward (stride 1 or 2,
 * every MobileNet layer) on small planes, eight channels at a time (dw_blocked.c). */
#ifndef KD_DW_BLOCKED_H
#define KD_DW_BLOCKED_H

#include "depthwise.h"

/* Whether d's forward can run in channel blocks on this CPU (and, under test hooks, whether
 * kd_dw_blocked allows it): a 3x3 kernel, padding 1, stride 1 or 2, at least 8 channels, a
 * padded plane of at most 1,024 points (the planes where rows of 14 or fewer leave the plane
 * kernels' vectors mostly empty), AVX2. */
int kd_dwb_takes(const kd_dw_dims *d);

/* Floats for the weights of the C / 8 blocks (the channels past the last whole block keep the
 * plane kernels), and for one thread's scratch (one block's zero-padded input). */
size_t kd_dwb_weight_floats(const kd_dw_dims *d);
size_t kd_dwb_scratch_floats(const kd_dw_dims *d);

/* The blocks' weights (C, 1, 3, 3) and bias (C, or NULL) as tap-major vectors of 8 channels in
 * wt (kd_dwb_weight_floats). Returns 0 when a weight is not finite: a tap outside the input is
 * skipped by the plane kernels but multiplies a padding zero here, and 0 * inf is NaN. */
int kd_dwb_weights(const kd_dw_dims *d, const float *w, const float *bias, float *wt);

/* Zeroes the padding of a thread's scratch; the blocks write only inside it. */
void kd_dwb_clear(const kd_dw_dims *d, float *scratch);

/* Channels 8k .. 8k+7 of one sample: x and y point at channel 8k's input and output planes.
 * Every output point is the sum of its nine taps in (i, j) order from 0 (a tap outside the
 * input adds k * 0 = +-0, which leaves every sum as the plane kernels leave it: a sum that
 * starts at +0 is never -0), then the bias, then act: the plane kernels' bits. */
void kd_dwb_block(const kd_dw_dims *d, const float *x, const float *wt, int bias, size_t k,
                  int act, float *y, float *scratch);

#endif
