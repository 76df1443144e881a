/* fused.h - private to src/nn: the fused units' kernels. A conv2d, batchnorm, maxpool2d (2x2)
 * and relu that follow each other run as one pass (graph.c decides, exec.c runs them,
 * batchnorm.c, pool.c and conv2d.c hold the kernels), with the same bits as the layers one by
 * one (tests/test_fused.c), but for inference's batch norm folded into a convolution (within
 * rounding). */
#ifndef KD_NN_FUSED_H
#define KD_NN_FUSED_H

#include "layer_impl.h"

/* ---- The fused batchnorm -> maxpool2d (2x2) -> relu group (model.c runs the three layers
 * as one when they follow each other; batchnorm.c computes it with pool.c's plane kernels). ---- */
extern const kd_layer_ops kd_layer_batchnorm, kd_layer_maxpool2d, kd_layer_relu, kd_layer_conv2d,
    kd_layer_relu6, kd_layer_add, kd_layer_dense;
/* An add and the relu after it (running in place over the add's output), forward as one pass
 * over blocks: y = relu(x[0] + x[1] + ...), y the add's buffer (which may be x[0]); in a banded
 * forward (ctx->bands, exec.c) this thread's rows. Backward runs the two layers one by one. */
void kd_add_relu_forward(kd_layer *l, const float *const *x, float *y, size_t B,
                         const kd_ctx *ctx);
/* Training: a batchnorm and the relu or relu6 (act) that runs in place over its output.
 * Forward: y = act(batch norm(x)) in one pass; backward from act's output gradient dy (and its
 * output y) to batch norm's dx (or NULL), act's gradient made on the fly. The same bits as the
 * layers one by one. */
void kd_bn_act_train_forward(kd_layer *bn, const kd_layer *act, const float *x, float *y, size_t B,
                             kd_ctx *ctx);
void kd_bn_act_train_backward(kd_layer *bn, const kd_layer *act, const float *x, const float *y,
                              const float *dy, float *dx, size_t B, kd_ctx *ctx);  /* dx may be dy */
/* y = act(batch norm(x)) again, from the statistics forward left in the cache: the same bits as
 * kd_bn_act_train_forward wrote (a unit whose output is not kept: graph.h, recompute). */
void kd_bn_act_recompute(const kd_layer *bn, const kd_layer *act, const float *x, float *y,
                         size_t B, kd_ctx *ctx);
/* Whether l is a maxpool2d with a 2x2 kernel, stride 2, no padding, over even planes. */
int kd_maxpool_is_2x2(const kd_layer *l);
/* One (OH*2, OW*2) plane xp pooled into yp (OH, OW) with the first-maximum indices in ap, every
 * input read as k * (x - mu) + beta and every output through ReLU; the winners' own inputs xp
 * into win (OH, OW) when win is not NULL. ap NULL (inference): no indices, nor win. */
void kd_maxpool2x2_affine_relu_plane(const float *xp, float *yp, uint32_t *ap, float *win,
                                     size_t OH, size_t OW, float k, float mu, float beta);
/* Its values-only case 8 windows at a time (pool_affine.c), the same bits: 1 when it ran, 0
 * where it does not apply (no AVX2, OW < 4, k = 0). */
int kd_maxpool2x2_affine_relu_fast(const float *xp, float *yp, size_t OH, size_t OW, float k,
                                   float mu, float beta);
/* The plane's batch-norm input gradient dxp (every element written) from relu's output
 * gradient dyp, relu's output yp (a gradient passes where yp > 0), the indices ap and batch
 * norm's input xp: dx = k * (e - a - (x - mu) * bq), e the gradient routed to each window's
 * winner and 0 elsewhere. */
void kd_maxpool2x2_relu_bn_backward_plane(const float *dyp, const float *yp, const uint32_t *ap,
                                          const float *xp, float *dxp, size_t OH, size_t OW,
                                          float k, float a, float bq, float mu);
/* The group's forward: x (B, C, H, W), batch norm's input, to y (B, C, H/2, W/2), relu's
 * output, keeping what backward reads: batch norm's statistics, the pool's indices and, in win
 * (B, C, H/2, W/2; NULL in an inference-only model), each window's winning input. The same
 * bits as the three layers run one after another. */
void kd_bn_pool_relu_forward(kd_layer *bn, kd_layer *pool, const float *x, float *y, float *win,
                             size_t B, kd_ctx *ctx);
/* A sample's output handed on while it is in the producing thread's cache: fn(arg, b, y_b)
 * reads sample b's output y_b. Called from the team's threads at once, for distinct b. */
typedef struct {
    void (*fn)(const void *arg, size_t b, const float *y_b);
    const void *arg;
} kd_sample_sink;
/* conv2d's forward x -> y, handing each sample's output to sink (or NULL) right after its
 * product. */
void kd_conv2d_forward_to(kd_layer *l, const float *x, float *y, const kd_sample_sink *sink,
                          size_t B, kd_ctx *ctx);
/* conv2d followed by a fused group, forward as one: in training the convolution hands each
 * sample to batch norm's statistics while it is in cache (no pass of their own), then the
 * group; conv_y is the convolution's output (kept for backward), y and win the group's. */
void kd_conv_bn_pool_relu_forward(kd_layer *conv, kd_layer *bn, kd_layer *pool, const float *x,
                                  float *conv_y, float *y, float *win, size_t B, kd_ctx *ctx);
/* The workspace floats that forward needs in training: the convolution's, then batch norm's
 * statistics terms, which it fills while the convolution's columns are in use. */
size_t kd_conv_bn_group_workspace(const kd_layer *conv, const kd_layer *bn, size_t B);
/* An activation applied as a value is stored (KD_ACT_RELU: as kd_relu, KD_ACT_RELU6: as
 * kd_relu6, NaN passing through), and in place over y[0, n). */
enum { KD_ACT_NONE, KD_ACT_RELU, KD_ACT_RELU6 };
void kd_act_inplace(float *y, size_t n, int act);
static inline float kd_act_value(float v, int act) {
    return act == KD_ACT_RELU ? kd_relu(v) : act == KD_ACT_RELU6 ? kd_relu6(v) : v;
}
/* Inference: conv2d with a batch norm folded in, y = act(conv(x; k w, k (b - mu) + beta)):
 * the weights scaled per output channel by k (made on each call, in the layer's workspace),
 * the bias shifted, and act applied where each output is stored; or, where the packed kernel
 * runs a frozen convolution (k after its sums), y = act(k conv(x) + k (b - mu) + beta + res).
 * Returns 1 where that kernel ran; 0 otherwise, and then with res given, y is the convolution
 * alone (no res, no act: the caller adds them). */
int kd_conv2d_forward_folded(kd_layer *conv, const float *k, const float *mu, const float *beta,
                             int act, const float *res, const float *x, float *y, size_t B,
                             kd_ctx *ctx);
/* Inference: a KD_UNIT_CONV_ADD unit, y = act(batch norm(conv(x)) + res), act a relu or NULL,
 * res of y's shape: where the packed kernel runs the convolution it adds res as it stores each
 * output, else the unit's layers in turn; the same bits as the two units the graph would run
 * unfused. */
void kd_conv_bn_add_forward(kd_layer *conv, kd_layer *bn, kd_layer *act, const float *x,
                            const float *res, float *y, size_t B, kd_ctx *ctx);
/* Whether a frozen model's packed kernel runs this convolution (conv2d_frozen.c): in a banded
 * forward, or where it takes whole samples (conv_packed.h); it applies a batch norm's fold
 * after its sums, so the fold costs nothing there at any batch size. */
int kd_conv2d_frozen_takes(const kd_layer *conv, const kd_ctx *ctx);
/* Inference: conv2d into y, then batch norm (running statistics) and act (a relu or relu6, or
 * NULL): for a batch of at least 4, folded into the convolution (kd_conv2d_forward_folded);
 * else in place on each sample while it is in the producing thread's cache, the same bits as
 * the layers one after another. */
void kd_conv_bn_act_forward(kd_layer *conv, kd_layer *bn, kd_layer *act, const float *x, float *y,
                            size_t B, kd_ctx *ctx);
/* Its backward from dy (relu's output gradient) to dx (batch norm's input gradient, or NULL),
 * accumulating batch norm's parameter gradients: first the sums over the batch (they also keep
 * each channel's dx constants in batch norm's cache), then sample b's dx_b (C, H, W) from them,
 * on its own (a convolution's backward asks for one sample at a time). */
void kd_bn_pool_relu_backward(kd_layer *bn, kd_layer *pool, const float *x, const float *y,
                              const float *win, const float *dy, float *dx, size_t B,
                              kd_ctx *ctx);
void kd_bn_pool_relu_backward_sums(kd_layer *bn, const kd_layer *pool, const float *y,
                                   const float *win, const float *dy, size_t B, kd_ctx *ctx);
void kd_bn_pool_relu_dx(const kd_layer *bn, const kd_layer *pool, const float *x, const float *y,
                        const float *dy, size_t b, float *dx_b);

/* An output gradient made one sample at a time: fn(arg, b, dy_b) writes sample b's (the whole
 * per-sample output) into dy_b. Called from the team's threads at once, for distinct b. */
typedef struct {
    void (*fn)(const void *arg, size_t b, float *dy_b);
    const void *arg;
} kd_dy_source;
/* conv2d's backward with its output gradient from src, made per sample in the calling thread's
 * workspace just before use (the same gradients as its backward over the gathered dy). */
void kd_conv2d_backward_from(kd_layer *l, const float *x, const kd_dy_source *src, float *dx,
                             size_t B, kd_ctx *ctx);
/* conv2d followed by a fused group, backward as one: the group's sums, then the convolution's
 * backward with the group's dx (its output gradient) made per sample; conv_y is the
 * convolution's output (the group's input), y and win the group's, dx the convolution's input
 * gradient (or NULL). */
void kd_conv_bn_pool_relu_backward(kd_layer *conv, kd_layer *bn, kd_layer *pool, const float *x,
                                   const float *conv_y, const float *y, const float *win,
                                   const float *dy, float *dx, size_t B, kd_ctx *ctx);

#endif
