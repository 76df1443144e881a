/* depthwise.h - private to conv2d.c: the depthwise convolution (one KHxKW filter per channel,
 * groups == in channels == out channels) as direct kernels over planes (depthwise.c). */
#ifndef KD_DEPTHWISE_H
#define KD_DEPTHWISE_H

#include "fused.h"

typedef struct {
    size_t C, H, W;       /* input, C channels (the output's too) */
    size_t OH, OW;        /* output plane */
    size_t KH, KW, S, P;  /* kernel, stride, symmetric zero padding */
} kd_dw_dims;

/* Workspace floats for backward over a batch in `pieces` pieces run by at most `slots`
 * threads (one sample's output gradient per thread, for a kd_dy_source, then one weight and
 * bias gradient part per piece), and for a forward by at most `threads` threads (the channel
 * blocks' weights, then one scratch plane per thread, dw_blocked.h). */
size_t kd_depthwise_workspace(const kd_dw_dims *d, size_t pieces, size_t slots, size_t threads);

/* y (B, C, OH, OW) from x (B, C, H, W), weights w (C, 1, KH, KW) and bias (C) or NULL:
 *   y[b, c, oh, ow] = sum_{i, j} w[c, i, j] x[b, c, oh*S - P + i, ow*S - P + j] + bias[c]
 * the taps inside the input in (i, j) order, then the bias (conv2d's C helper adds the same
 * terms in the same order), then act (KD_ACT_*, fused.h) over each plane as it is done: the
 * same bits whether a plane runs alone or in a block of eight channels (dw_blocked.h). Planes
 * and blocks are shared by a team of at most `threads` threads; with a sink, whole samples,
 * each handed on once its planes are done. ws: kd_depthwise_workspace floats for `threads`. */
void kd_depthwise_forward(const kd_dw_dims *d, const float *x, const float *w, const float *bias,
                          int act, float *y, const kd_sample_sink *sink, size_t B, float *ws,
                          size_t threads);

/* From dy (B, C, OH, OW), or made one sample at a time by src (dy NULL), ACCUMULATES the weight
 * and bias gradients into dw (C, KH, KW) and db (C; NULL without a bias) and writes dx
 * (B, C, H, W) when not NULL. The batch is cut into `pieces` pieces of consecutive samples
 * (the rule of conv2d.c: fixed by the batch alone); each sums its samples' gradients in sample
 * order into its own part of ws (kd_depthwise_workspace floats), and the parts are added in
 * piece order, so the bits do not depend on the thread count. */
void kd_depthwise_backward(const kd_dw_dims *d, const float *x, const float *w, const float *dy,
                           const kd_dy_source *src, float *dx, float *dw, float *db, size_t B,
                           float *ws, size_t pieces, size_t slots);

#endif
