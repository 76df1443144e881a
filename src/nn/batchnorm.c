/* batchnorm.c - batch normalisation over the batch (and the spatial axes of [C, H, W] inputs),
 * one type for torch.nn.BatchNorm1d ([C] or [C, L]) and BatchNorm2d ([C, H, W]), with the same
 * state_dict: weight, bias, running_mean, running_var, num_batches_tracked. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fused.h"
#include "kd_reduce.h"
#include "layer_impl.h"
#include "../core/test_hooks.h"

typedef struct {
    float momentum;  /* running-statistics update weight (PyTorch's momentum, default 0.1) */
    float eps;       /* added to the variance (default 1e-5) */
} bn_hp;

/* Declared tensors, by position (PyTorch's state_dict order). */
enum { BN_W, BN_B, BN_MEAN, BN_VAR, BN_COUNT, BN_N_TENSORS };

/* Channels are the first per-sample axis; everything after it is "spatial" (S values per
 * channel per sample). N = B * S values are normalised together. */
static size_t n_channels(const kd_layer *l) { return l->in.d[0]; }
static size_t n_spatial(const kd_layer *l) { return kd_shape_numel(&l->in) / l->in.d[0]; }

static kd_status bn_configure(kd_layer *l, const cJSON *spec, kd_err *err) {
    static const char *const fields[] = {"momentum", "eps", NULL};
    bn_hp *hp = l->hp;
    char buf[64];
    kd_status st = kd_spec_check_fields(l, spec, fields, err);
    if (!st) st = kd_spec_float(l, spec, "momentum", 0.1f, 0.0, 1.0, 0, &hp->momentum, err);
    if (!st) st = kd_spec_float(l, spec, "eps", 1e-5f, 0.0, 1.0, 0, &hp->eps, err);
    if (st) return st;
    if (!(hp->eps > 0.0f)) return kd_layer_err(l, err, "eps: expected a number > 0");
    if (l->in.rank < 1 || l->in.rank > 3 || l->in.d[0] == 0)
        return kd_layer_err(l, err, "expects a [C], [C, L] or [C, H, W] input, got %s",
                            kd_shape_str(&l->in, buf, sizeof buf));
    l->out = l->in;
    return KD_OK;
}

static int bn_tensors(const kd_layer *l, kd_tensor_decl *out) {
    static const char *const names[] = {"weight", "bias", "running_mean", "running_var",
                                        "num_batches_tracked"};
    static const kd_tensor_kind kinds[] = {KD_TENSOR_PARAM, KD_TENSOR_PARAM, KD_TENSOR_BUFFER,
                                           KD_TENSOR_BUFFER, KD_TENSOR_COUNTER};
    for (int i = 0; i < BN_N_TENSORS; i++) {
        /* PyTorch stores num_batches_tracked as a 0-d tensor. */
        kd_shape shape = i < BN_COUNT ? (kd_shape){1, {n_channels(l)}} : (kd_shape){0, {0}};
        out[i] = (kd_tensor_decl){names[i], kinds[i], shape, 0};
    }
    return BN_N_TENSORS;
}

/* Cache layout: mean (C) | inv_std (C) | N (one double in two floats): the statistics forward
 * normalised with and how many values they cover (all ranks' under SyncBatchNorm), kept for
 * backward, which recomputes xhat from x rather than storing a copy of the whole input. Then
 * the fused group's backward keeps its per-channel dx constants (bn_dx_coefs, C of them),
 * which the convolution before it reads sample by sample. The statistics' block terms, needed
 * only within one forward, live in the shared workspace (bn_workspace, terms_in_workspace). */
static size_t plane_blocks(const kd_layer *l);
static size_t bn_cache(const kd_layer *l, size_t B) {
    (void)B;
    return 6 * n_channels(l) + 2;
}

/* Blocks of kd_reduce's shifted sums per (sample, channel) plane. */
static size_t plane_blocks(const kd_layer *l) {
    return (n_spatial(l) + KD_REDUCE_BLOCK - 1) / KD_REDUCE_BLOCK;
}

/* Doubles (two floats each): two sums per channel and a count (SyncBatchNorm sums [s, q, n]
 * over the ranks), then two block terms per block of every (sample, channel) plane: forward's
 * statistics terms (sample_terms) or backward's (grad_sums). */
static size_t bn_workspace(const kd_layer *l, size_t B) {
    return 2 * (2 * n_channels(l) + 1 + 2 * B * n_channels(l) * plane_blocks(l));
}

/* Where forward's statistics terms start in the workspace, past the sums and count that
 * bn_prepare writes at its start; a convolution fused before the group lowers its samples into
 * the workspace while it hands them to sample_terms, so there the terms start past that too. */
static double *terms_in_workspace(const kd_layer *l, const kd_layer *conv, size_t B,
                                  const kd_ctx *ctx) {
    size_t at = 2 * (2 * n_channels(l) + 1);
    const size_t cw = conv ? conv->ops->workspace_floats(conv, B) : 0;
    if (cw > at) at = cw + (cw & 1);  /* even: doubles */
    return (double *)(ctx->workspace + at);
}

size_t kd_conv_bn_group_workspace(const kd_layer *conv, const kd_layer *bn, size_t B) {
    const size_t cw = conv->ops->workspace_floats(conv, B), head = 2 * (2 * n_channels(bn) + 1);
    return (cw > head ? cw + (cw & 1) : head) + 4 * B * n_channels(bn) * plane_blocks(bn);
}

/* Per channel the block terms (B, C, nblk) in (sample, block) order, the order of one serial
 * pass over the samples: the same bits whatever the thread count. */
static void fold_terms(const double *ts, const double *tq, size_t B, size_t C, size_t nblk,
                       double *s, double *q) {
#pragma omp parallel for schedule(static) if (KD_PAR(B * C * nblk * KD_REDUCE_BLOCK))
    for (size_t c = 0; c < C; c++) {
        double sc = 0.0, qc = 0.0;
        for (size_t b0 = 0; b0 < B; b0++)
            for (size_t k = 0; k < nblk; k++) {
                sc += ts[(b0 * C + c) * nblk + k];
                qc += tq[(b0 * C + c) * nblk + k];
            }
        s[c] = sc;
        q[c] = qc;
    }
}

/* Backward's two per-channel sums, sdy = sum(dy) and sdyx = sum(dy * (x - mean[c])): the block
 * terms of every (sample, channel) plane, planes split among the threads in memory order (dy
 * and x read as streams), into ws, then fold_terms. */
static void grad_sums(const float *dy, const float *x, const float *mean, size_t B, size_t C,
                      size_t S, double *ws, double *sdy, double *sdyx) {
    const size_t nblk = (S + KD_REDUCE_BLOCK - 1) / KD_REDUCE_BLOCK;
    double *ts = ws, *tq = ws + B * C * nblk;
#pragma omp parallel for schedule(static) if (KD_PAR(B * C * S))
    for (size_t bc = 0; bc < B * C; bc++)
        kd_sum_dot_shifted_blocks(dy + bc * S, x + bc * S, S, mean[bc % C], ts + bc * nblk,
                                  tq + bc * nblk);
    fold_terms(ts, tq, B, C, nblk, sdy, sdyx);
}

static void bn_init(kd_layer *l, kd_rng *rng, int xavier) {
    (void)rng;
    (void)xavier;
    for (size_t c = 0; c < n_channels(l); c++) {
        l->t[BN_W][c] = 1.0f;
        l->t[BN_B][c] = 0.0f;
        l->t[BN_MEAN][c] = 0.0f;
        l->t[BN_VAR][c] = 1.0f;
    }
    l->count[BN_COUNT] = 0;
}

/* The statistics' terms of sample b, planes x_b (C, S), into terms: per plane, the block
 * sums of (x - x0) and then of (x - x0)^2 (nblk doubles each), x0 the plane's own first value,
 * so they can be taken plane by plane, even one sample at a time inside the layer before. */
static void sample_terms(const kd_layer *l, double *terms, size_t b, const float *x_b) {
    const size_t C = n_channels(l), S = n_spatial(l), nblk = plane_blocks(l);
    double *t = terms + b * C * 2 * nblk;
    for (size_t c = 0; c < C; c++, t += 2 * nblk)
        kd_sum_sq_shifted_blocks(x_b + c * S, S, x_b[c * S], t, t + nblk);
}

/* Per channel, the sums over every plane of (x - r) and (x - r)^2 with r = running_mean[c],
 * from the planes' terms (shifted by each plane's first value x0): moving a plane's sums s_p,
 * q_p over its S values from x0 to r, k = x0 - r,
 *   sum(x - r) = s_p + S k,   sum((x - r)^2) = q_p + 2 k s_p + S k^2,
 * in double, the planes added in sample order (the same bits on any thread count). r is the
 * same on every rank of a data-parallel run, so there the ranks' sums just add up. */
static void fold_to_running_mean(const kd_layer *l, const double *terms, const float *x,
                                 size_t B, double *s, double *q) {
    const size_t C = n_channels(l), S = n_spatial(l), nblk = plane_blocks(l);
    const float *r = l->t[BN_MEAN];
#pragma omp parallel for schedule(static) if (KD_PAR(B * C * nblk * KD_REDUCE_BLOCK))
    for (size_t c = 0; c < C; c++) {
        double sc = 0.0, qc = 0.0;
        for (size_t b = 0; b < B; b++) {
            const double *t = terms + (b * C + c) * 2 * nblk;
            double sp = 0.0, qp = 0.0;
            for (size_t k = 0; k < nblk; k++) {
                sp += t[k];
                qp += t[nblk + k];
            }
            const double k = (double)x[(b * C + c) * S] - (double)r[c];
            sc += sp + (double)S * k;
            qc += qp + k * (2.0 * sp + (double)S * k);
        }
        s[c] = sc;
        q[c] = qc;
    }
}

/* Training: per channel, mean and biased variance over the N = B*S values;
 *   xhat = (x - mean) / sqrt(var + eps),  y = weight * xhat + bias,
 *   running_mean = (1 - m) running_mean + m mean,
 *   running_var  = (1 - m) running_var  + m var * N / (N - 1)   (unbiased, as PyTorch).
 * Eval: the same with running_mean / running_var in place of the batch statistics.
 * The statistics come from one pass of block sums per plane, shifted by the plane's first
 * value (sample_terms: float partial sums folded into doubles), moved to a common shift, the
 * running mean, and added in a fixed order (fold_to_running_mean: the same bits on any thread
 * count). bn_prepare computes them (from terms a convolution before it already took, or its own
 * pass when terms is NULL) into the cache (mean, inv_std, N) and returns 0 when there is
 * nothing to normalise (no rank has a sample); normalising then splits the (sample, channel)
 * planes among the threads. */
static int bn_prepare(kd_layer *l, const float *x, size_t B, double *terms, kd_ctx *ctx) {
    const bn_hp *hp = l->hp;
    const size_t C = n_channels(l), S = n_spatial(l), N = B * S;
    float *cache = kd_layer_cache(l, ctx), *mean_c = cache, *inv_std = cache + C;
    float *run_mean = l->t[BN_MEAN], *run_var = l->t[BN_VAR];
    double n_all = (double)N;
    if (ctx->training) {
        if (!terms) {
            terms = terms_in_workspace(l, NULL, B, ctx);
#pragma omp parallel for schedule(static) if (KD_PAR(B * C * S))
            for (size_t b = 0; b < B; b++) sample_terms(l, terms, b, x + b * C * S);
        }
        /* s, q: sums of (x - running_mean) and its square (SyncBatchNorm: over every rank's
         * values, with the count in s[2C]) */
        double *s = (double *)ctx->workspace, *q = s + C;
        fold_to_running_mean(l, terms, x, B, s, q);
        if (l->shard) {
            s[2 * C] = n_all;
            l->shard->sum(s, 2 * C + 1);
            n_all = s[2 * C];
            if (n_all == 0.0) return 0;  /* no rank has a sample: nothing to normalise */
        }
        const double m = hp->momentum;
        for (size_t c = 0; c < C; c++) {
            const double d = s[c] / n_all, mean = run_mean[c] + d;
            double sq = q[c] - s[c] * d;  /* sum of squared deviations from the mean */
            if (sq < 0.0) sq = 0.0;
            const double var = sq / n_all;
            /* With a single value per channel the unbiased estimate is undefined (PyTorch
             * refuses); we keep the biased one rather than write Inf into the running stats. */
            const double unbiased = n_all > 1 ? sq / (n_all - 1) : var;
            run_mean[c] = (float)((1.0 - m) * run_mean[c] + m * mean);
            run_var[c] = (float)((1.0 - m) * run_var[c] + m * unbiased);
            mean_c[c] = (float)mean;
            inv_std[c] = (float)(1.0 / sqrt(var + (double)hp->eps));
        }
        l->count[BN_COUNT]++;
    } else {
        for (size_t c = 0; c < C; c++) {
            mean_c[c] = run_mean[c];
            inv_std[c] = (float)(1.0 / sqrt((double)run_var[c] + (double)hp->eps));
        }
    }
    memcpy(cache + 2 * C, &n_all, sizeof n_all);
    return 1;
}

/* The activation a batch norm's unit applies after it (none, or the relu / relu6 after it). */
static int act_kind(const kd_layer *act) {
    return !act ? KD_ACT_NONE : act->ops == &kd_layer_relu ? KD_ACT_RELU : KD_ACT_RELU6;
}

/* y = k * (x - mean) + bias with k = weight * inv_std, per channel: these float operations are
 * batch norm's output, fused or not; act: then the activation's, in the same pass. */
static void bn_apply(const kd_layer *l, const float *x, float *y, size_t B, int act,
                     kd_ctx *ctx) {
    const size_t C = n_channels(l), S = n_spatial(l);
    const float *mean_c = kd_layer_cache(l, ctx), *inv_std = mean_c + C;
    const float *w = l->t[BN_W], *bias = l->t[BN_B];
#pragma omp parallel for schedule(static) if (KD_PAR(B * C * S))
    for (size_t bc = 0; bc < B * C; bc++) {
        const size_t c = bc % C;
        const float mu = mean_c[c], k = w[c] * inv_std[c], beta = bias[c];
        const float *restrict xp = x + bc * S;
        float *restrict yp = y + bc * S;
        /* fixed 8-wide blocks, so that GCC vectorises the selects */
        if (act == KD_ACT_RELU) KD_VEC_FOR(i, S, yp[i] = kd_relu(k * (xp[i] - mu) + beta));
        else if (act == KD_ACT_RELU6) KD_VEC_FOR(i, S, yp[i] = kd_relu6(k * (xp[i] - mu) + beta));
        else for (size_t i = 0; i < S; i++) yp[i] = k * (xp[i] - mu) + beta;
    }
}

static void bn_normalise(kd_layer *l, const float *x, float *y, size_t B, int act,
                         kd_ctx *ctx) {
    if (bn_prepare(l, x, B, NULL, ctx)) bn_apply(l, x, y, B, act, ctx);
}

static void bn_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    bn_normalise(l, x, y, B, KD_ACT_NONE, ctx);
}

void kd_bn_act_train_forward(kd_layer *bn, const kd_layer *act, const float *x, float *y, size_t B,
                             kd_ctx *ctx) {
    bn_normalise(bn, x, y, B, act_kind(act), ctx);
}

void kd_bn_act_recompute(const kd_layer *bn, const kd_layer *act, const float *x, float *y,
                         size_t B, kd_ctx *ctx) {
    double n_all;  /* 0: no rank had a sample, and forward wrote nothing */
    memcpy(&n_all, kd_layer_cache(bn, ctx) + 2 * n_channels(bn), sizeof n_all);
    if (n_all > 0.0) bn_apply(bn, x, y, B, act_kind(act), ctx);
}

/* ---- Inference: a convolution's samples through its batch norm (and activation) while each
 * is in cache (exec.c runs the unit that graph.c chose). ---- */

/* The same float operations as bn_forward, then the activation's, in place on one plane. */
__attribute__((target_clones("avx2", "default")))
static void bn_act_plane(float *restrict y, size_t n, float k, float mu, float beta, int act) {
    if (act == KD_ACT_RELU6) KD_VEC_FOR(i, n, y[i] = kd_relu6(k * (y[i] - mu) + beta));
    else if (act == KD_ACT_RELU) KD_VEC_FOR(i, n, y[i] = kd_relu(k * (y[i] - mu) + beta));
    else KD_VEC_FOR(i, n, y[i] = k * (y[i] - mu) + beta);
}

typedef struct {
    const kd_layer *bn;
    int act;
    const float *mean_c;
    float *y;
} bn_act_sink;

/* Sample b of the convolution's output, y_b = s->y + b * n, which this rewrites. */
static void bn_act_sample(const void *arg, size_t b, const float *y_b) {
    const bn_act_sink *s = arg;
    const size_t C = n_channels(s->bn), S = n_spatial(s->bn);
    const float *mean_c = s->mean_c, *inv_std = mean_c + C;
    float *yb = s->y + b * C * S;
    KD_ASSERT(yb == y_b);
    for (size_t c = 0; c < C; c++)
        bn_act_plane(yb + c * S, S, s->bn->t[BN_W][c] * inv_std[c], mean_c[c],
                     s->bn->t[BN_B][c], s->act);
}

/* Batches from which inference folds batch norm into the convolution before it: the folded
 * weights are made on every call (a pass over the weights, about one sample's work), except where
 * the packed kernel runs a frozen convolution (kd_conv2d_frozen_takes: the fold after its sums,
 * any batch). Tests: 0 never, 1 always, -1 this rule. */
#define FOLD_MIN_BATCH 4
#ifdef KD_TEST_HOOKS
int kd_bn_fold = -1;
#endif

/* Inference's fold of a prepared batch norm: k = weight / sqrt(var + eps) per channel, written
 * after the statistics in its cache (the training-only backward constants' room). */
static const float *fold_scale(kd_layer *bn, kd_ctx *ctx) {
    const size_t C = n_channels(bn);
    float *cache = kd_layer_cache(bn, ctx), *k = cache + 2 * C + 2;
    for (size_t c = 0; c < C; c++) k[c] = bn->t[BN_W][c] * cache[C + c];
    return k;
}

void kd_conv_bn_act_forward(kd_layer *conv, kd_layer *bn, kd_layer *act, const float *x, float *y,
                            size_t B, kd_ctx *ctx) {
    KD_ASSERT(!ctx->training);
    KD_ASSERT(!act || act->ops == &kd_layer_relu || act->ops == &kd_layer_relu6);
    bn_prepare(bn, y, B, NULL, ctx);  /* running statistics: reads no input */
    const int a = act_kind(act), hook = KD_HOOK_VALUE(kd_bn_fold, -1);
    if (hook > 0 || (hook < 0 && (B >= FOLD_MIN_BATCH || kd_conv2d_frozen_takes(conv, ctx)))) {
        /* y = k (conv - mu) + beta: the convolution's weights times k, its bias k (b - mu) + beta */
        const float *cache = kd_layer_cache(bn, ctx);
        kd_conv2d_forward_folded(conv, fold_scale(bn, ctx), cache, bn->t[BN_B], a, NULL, x, y, B,
                                 ctx);
        return;
    }
    const bn_act_sink s = {bn, a, kd_layer_cache(bn, ctx), y};
    const kd_sample_sink sink = {bn_act_sample, &s};
    kd_conv2d_forward_to(conv, x, y, &sink, B, ctx);
}

static void add_act_block(float *restrict y, const float *restrict res, size_t n, int act) {
    if (act == KD_ACT_NONE) KD_VEC_FOR(i, n, y[i] = y[i] + res[i]);
    else KD_VEC_FOR(i, n, y[i] = kd_relu(y[i] + res[i]));
}

void kd_conv_bn_add_forward(kd_layer *conv, kd_layer *bn, kd_layer *act, const float *x,
                            const float *res, float *y, size_t B, kd_ctx *ctx) {
    KD_ASSERT(!ctx->training && (!act || act->ops == &kd_layer_relu));
    bn_prepare(bn, y, B, NULL, ctx);
    const int a = act_kind(act);
    /* as the two units would: the packed kernel where it takes the convolution (its fold),
     * else the convolution unit, then the add's pass */
    if (kd_conv2d_frozen_takes(conv, ctx)) {
        if (kd_conv2d_forward_folded(conv, fold_scale(bn, ctx), kd_layer_cache(bn, ctx),
                                     bn->t[BN_B], a, res, x, y, B, ctx))
            return;
    } else {
        kd_conv_bn_act_forward(conv, bn, NULL, x, y, B, ctx);
    }
    KD_ASSERT(ctx->bands < 2);
    KD_PAR_BLOCKS(B * kd_shape_numel(&conv->out), o, len, add_act_block(y + o, res + o, len, a));
}

/* dweight += sum(dy * xhat);  dbias += sum(dy);
 * training: dx = weight * inv_std * (dy - sum(dy)/N - xhat * sum(dy * xhat)/N)
 *   (the mean and variance depend on x, hence the two correction terms);
 * eval: dx = weight * inv_std * dy (the statistics are constants).
 * bn_finish_sums takes this shard's sdy = sum(dy) and sdyx = sum(dy * (x - mean)), adds the
 * parameter gradients and makes them the sums over the whole global batch (SyncBatchNorm);
 * dx_coefs gives channel c's constants of dx = k * (dy - a - (x - mu) * bq). */
static void bn_finish_sums(kd_layer *l, double *sdy, double *sdyx, kd_ctx *ctx) {
    const size_t C = n_channels(l);
    const float *inv_std = l->cache + C;
    for (size_t c = 0; c < C; c++) {
        sdyx[c] *= inv_std[c];  /* sum(dy * (x - mean)) * inv_std = sum(dy * xhat) */
        l->dt[BN_W][c] += (float)sdyx[c];
        l->dt[BN_B][c] += (float)sdy[c];
    }
    /* SyncBatchNorm: the parameter gradients above are this shard's part (the step's gradient
     * sum adds the ranks'); dx needs the sums over the whole global batch. */
    if (ctx->training && l->shard) l->shard->sum(sdy, 2 * C);
}

typedef struct {
    float k, a, bq, mu;
} bn_dx_coefs;

static bn_dx_coefs dx_coefs(const kd_layer *l, size_t c, const double *sdy, const double *sdyx,
                            int training) {
    const size_t C = n_channels(l);
    const float is = l->cache[C + c];
    double N;
    memcpy(&N, l->cache + 2 * C, sizeof N);
    bn_dx_coefs k = {l->t[BN_W][c] * is, 0.0f, 0.0f, l->cache[c]};
    if (training) {
        k.a = (float)(sdy[c] / N);
        k.bq = (float)(sdyx[c] / N) * is;
    }
    return k;
}

static void bn_backward(kd_layer *l, const float *x, const float *y, const float *dy, float *dx,
                        size_t B, kd_ctx *ctx) {
    (void)y;
    const size_t C = n_channels(l), S = n_spatial(l);
    double *sdy = (double *)ctx->workspace, *sdyx = sdy + C;
    grad_sums(dy, x, l->cache, B, C, S, sdyx + C, sdy, sdyx);
    bn_finish_sums(l, sdy, sdyx, ctx);
    if (!dx) return;
    const int training = ctx->training;
#pragma omp parallel for schedule(static) if (KD_PAR(B * C * S))
    for (size_t bc = 0; bc < B * C; bc++) {
        const bn_dx_coefs k = dx_coefs(l, bc % C, sdy, sdyx, training);
        const size_t off = bc * S;
        const float *restrict dyp = dy + off, *restrict xp = x + off;
        float *restrict dxp = dx + off;
        for (size_t i = 0; i < S; i++) dxp[i] = k.k * (dyp[i] - k.a - (xp[i] - k.mu) * k.bq);
    }
}

/* The activation's gradient at one element from its output y (in place over its input, so
 * y is inside the open range exactly where the input is): relu passes dy where y > 0, relu6
 * where 0 < y < 6. */
static float act_grad(uint32_t relu6, float y, float dy) {
    /* bitwise, not &&: a branch on the data is mispredicted (MobileNetV2's step took 1.8x) */
    const uint32_t pos = y > 0.0f, below = y < 6.0f;
    return kd_float_if(pos & (below | (relu6 ^ 1u)), dy);
}

/* One plane's dx = k (g - a - (x - mu) bq), g the activation's gradient; dx may be dy (exec.c
 * hands the output gradient's slot on), a case of its own so both loops vectorise. */
static void act_dx_plane(const float *restrict xp, const float *restrict yp, const float *dyp,
                         float *dxp, size_t S, bn_dx_coefs k, uint32_t relu6) {
    if (dxp == dyp) {
        float *restrict p = dxp;
        KD_VEC_FOR(i, S, p[i] = k.k * (act_grad(relu6, yp[i], p[i]) - k.a - (xp[i] - k.mu) * k.bq));
    } else {
        const float *restrict d = dyp;
        float *restrict o = dxp;
        KD_VEC_FOR(i, S, o[i] = k.k * (act_grad(relu6, yp[i], d[i]) - k.a - (xp[i] - k.mu) * k.bq));
    }
}

/* batchnorm -> relu or relu6 (in place over batch norm's output) in training: the
 * activation's gradient g is made block by block on the stack where batch norm's sums and its
 * dx read it, never written whole; the same values and sums as the two backwards one by one. */
void kd_bn_act_train_backward(kd_layer *bn, const kd_layer *act, const float *x, const float *y,
                              const float *dy, float *dx, size_t B, kd_ctx *ctx) {
    const uint32_t relu6 = act_kind(act) == KD_ACT_RELU6;
    const size_t C = n_channels(bn), S = n_spatial(bn), nblk = plane_blocks(bn);
    const float *mean_c = bn->cache;
    double *sdy = (double *)ctx->workspace, *sdyx = sdy + C, *ts = sdyx + C,
           *tq = ts + B * C * nblk;
#pragma omp parallel for schedule(static) if (KD_PAR(B * C * S))
    for (size_t bc = 0; bc < B * C; bc++) {
        const float *restrict yp = y + bc * S, *restrict dyp = dy + bc * S, *xp = x + bc * S;
        float g[KD_REDUCE_BLOCK];
        for (size_t o0 = 0, k = 0; o0 < S; o0 += KD_REDUCE_BLOCK, k++) {
            const size_t n = S - o0 < KD_REDUCE_BLOCK ? S - o0 : KD_REDUCE_BLOCK;
            KD_VEC_FOR(j, n, g[j] = act_grad(relu6, yp[o0 + j], dyp[o0 + j]));
            kd_sum_dot_shifted_blocks(g, xp + o0, n, mean_c[bc % C], ts + bc * nblk + k,
                                      tq + bc * nblk + k);
        }
    }
    fold_terms(ts, tq, B, C, nblk, sdy, sdyx);
    bn_finish_sums(bn, sdy, sdyx, ctx);
    if (!dx) return;
    const int training = ctx->training;
#pragma omp parallel for schedule(static) if (KD_PAR(B * C * S))
    for (size_t bc = 0; bc < B * C; bc++) {
        const size_t off = bc * S;
        act_dx_plane(x + off, y + off, dy + off, dx + off, S,
                     dx_coefs(bn, bc % C, sdy, sdyx, training), relu6);
    }
}

/* ---- batchnorm -> maxpool2d 2x2 -> relu as one pass (model.c decides when). Forward reads x
 * once after the statistics and writes only the pooled output: batch norm's full-size output
 * is never stored. Backward needs only the winners' gradients for the sums, then writes dx
 * plane by plane while the plane is in cache. ---- */

static void group_forward(kd_layer *bn, kd_layer *pool, const float *x, float *y, float *win,
                          size_t B, double *terms, kd_ctx *ctx) {
    if (!bn_prepare(bn, x, B, terms, ctx)) return;
    const size_t C = n_channels(bn), S = n_spatial(bn), OH = pool->out.d[1],
                 OW = pool->out.d[2];
    const float *mean_c = kd_layer_cache(bn, ctx), *inv_std = mean_c + C;
    const float *w = bn->t[BN_W], *bias = bn->t[BN_B];
    /* the winners' indices for backward: a pass without one never writes them */
    uint32_t *arg = ctx->training ? (uint32_t *)kd_layer_cache(pool, ctx) : NULL;
#pragma omp parallel for schedule(static) if (KD_PAR(B * C * S))
    for (size_t bc = 0; bc < B * C; bc++) {
        const size_t c = bc % C;
        kd_maxpool2x2_affine_relu_plane(x + bc * S, y + bc * OH * OW,
                                        arg ? arg + bc * OH * OW : NULL,
                                        win ? win + bc * OH * OW : NULL, OH, OW,
                                        w[c] * inv_std[c], mean_c[c], bias[c]);
    }
}

void kd_bn_pool_relu_forward(kd_layer *bn, kd_layer *pool, const float *x, float *y, float *win,
                             size_t B, kd_ctx *ctx) {
    group_forward(bn, pool, x, y, win, B, NULL, ctx);
}

/* A convolution followed by the group: in training, the convolution hands each sample's output
 * to sample_terms while it is in its thread's cache, so batch norm's statistics need no pass
 * of their own over the convolution's output. */
typedef struct {
    const kd_layer *bn;
    double *terms;
} terms_dest;

static void terms_sink(const void *arg, size_t b, const float *y_b) {
    const terms_dest *t = arg;
    sample_terms(t->bn, t->terms, b, y_b);
}

void kd_conv_bn_pool_relu_forward(kd_layer *conv, kd_layer *bn, kd_layer *pool, const float *x,
                                  float *conv_y, float *y, float *win, size_t B, kd_ctx *ctx) {
    const int fold = ctx->training != 0;
    const terms_dest t = {bn, fold ? terms_in_workspace(bn, conv, B, ctx) : NULL};
    const kd_sample_sink sink = {terms_sink, &t};
    kd_conv2d_forward_to(conv, x, conv_y, fold ? &sink : NULL, B, ctx);
    group_forward(bn, pool, conv_y, y, win, B, t.terms, ctx);
}

/* The group's dx constants per channel, after kd_bn_pool_relu_backward_sums. */
static bn_dx_coefs *group_coefs(const kd_layer *bn) {
    return (bn_dx_coefs *)(bn->cache + 2 * n_channels(bn) + 2);
}

/* The sums over batch norm's output gradient, which is relu's gradient routed to each window's
 * winner and 0 elsewhere: per plane, over the pooled outputs only, the gradients g (relu's,
 * gathered in blocks of KD_REDUCE_BLOCK on the stack) against the winners' inputs that forward
 * kept, summed as grad_sums does (block terms, then the fixed-order fold). Then batch norm's
 * parameter gradients, and each channel's dx constants into the cache. */
void kd_bn_pool_relu_backward_sums(kd_layer *bn, const kd_layer *pool, const float *y,
                                   const float *win, const float *dy, size_t B, kd_ctx *ctx) {
    const size_t C = n_channels(bn), S = n_spatial(bn), OHW = pool->out.d[1] * pool->out.d[2];
    const size_t nblk = (OHW + KD_REDUCE_BLOCK - 1) / KD_REDUCE_BLOCK;
    const float *mean_c = bn->cache;
    double *sdy = (double *)ctx->workspace, *sdyx = sdy + C, *ts = sdyx + C,
           *tq = ts + B * C * nblk;
#pragma omp parallel for schedule(static) if (KD_PAR(B * C * S))
    for (size_t bc = 0; bc < B * C; bc++) {
        const float *yp = y + bc * OHW, *dyp = dy + bc * OHW, *wp = win + bc * OHW;
        float g[KD_REDUCE_BLOCK];
        for (size_t o0 = 0, k = 0; o0 < OHW; o0 += KD_REDUCE_BLOCK, k++) {
            const size_t n = OHW - o0 < KD_REDUCE_BLOCK ? OHW - o0 : KD_REDUCE_BLOCK;
            for (size_t j = 0; j < n; j++) g[j] = kd_float_if(yp[o0 + j] > 0.0f, dyp[o0 + j]);
            kd_sum_dot_shifted_blocks(g, wp + o0, n, mean_c[bc % C], ts + bc * nblk + k,
                                      tq + bc * nblk + k);
        }
    }
    fold_terms(ts, tq, B, C, nblk, sdy, sdyx);
    bn_finish_sums(bn, sdy, sdyx, ctx);
    bn_dx_coefs *k = group_coefs(bn);
    for (size_t c = 0; c < C; c++) k[c] = dx_coefs(bn, c, sdy, sdyx, ctx->training);
}

/* Sample b's batch-norm input gradient dx_b (C, H, W), plane by plane. */
void kd_bn_pool_relu_dx(const kd_layer *bn, const kd_layer *pool, const float *x, const float *y,
                        const float *dy, size_t b, float *dx_b) {
    const size_t C = n_channels(bn), S = n_spatial(bn), OH = pool->out.d[1],
                 OW = pool->out.d[2], OHW = OH * OW;
    const bn_dx_coefs *k = group_coefs(bn);
    const uint32_t *arg = (const uint32_t *)pool->cache;
    for (size_t c = 0, bc = b * C; c < C; c++, bc++)
        kd_maxpool2x2_relu_bn_backward_plane(dy + bc * OHW, y + bc * OHW, arg + bc * OHW,
                                             x + bc * S, dx_b + c * S, OH, OW, k[c].k, k[c].a,
                                             k[c].bq, k[c].mu);
}

void kd_bn_pool_relu_backward(kd_layer *bn, kd_layer *pool, const float *x, const float *y,
                              const float *win, const float *dy, float *dx, size_t B,
                              kd_ctx *ctx) {
    kd_bn_pool_relu_backward_sums(bn, pool, y, win, dy, B, ctx);
    if (!dx) return;
    const size_t S = kd_shape_numel(&bn->in);
#pragma omp parallel for schedule(static) if (KD_PAR(B * S))
    for (size_t b = 0; b < B; b++) kd_bn_pool_relu_dx(bn, pool, x, y, dy, b, dx + b * S);
}

/* A convolution followed by the group: the convolution's backward makes each sample's output
 * gradient (the group's dx) itself, in its thread's cache, right before using it, so the
 * full-size gradient between the two is never written or read back. */
typedef struct {
    const kd_layer *bn, *pool;
    const float *x, *y, *dy;
} group_dy;

static void group_dy_sample(const void *arg, size_t b, float *dy_b) {
    const group_dy *g = arg;
    kd_bn_pool_relu_dx(g->bn, g->pool, g->x, g->y, g->dy, b, dy_b);
}

void kd_conv_bn_pool_relu_backward(kd_layer *conv, kd_layer *bn, kd_layer *pool, const float *x,
                                   const float *conv_y, const float *y, const float *win,
                                   const float *dy, float *dx, size_t B, kd_ctx *ctx) {
    kd_bn_pool_relu_backward_sums(bn, pool, y, win, dy, B, ctx);
    const group_dy g = {bn, pool, conv_y, y, dy};
    const kd_dy_source src = {group_dy_sample, &g};
    kd_conv2d_backward_from(conv, x, &src, dx, B, ctx);
}

static int bn_describe(const kd_layer *l, cJSON *obj) {
    const bn_hp *hp = l->hp;
    if (hp->momentum != 0.1f && kd_spec_add_float(obj, "momentum", hp->momentum)) return -1;
    return hp->eps != 1e-5f ? kd_spec_add_float(obj, "eps", hp->eps) : 0;
}

/* Normalisation is elementwise work, not multiply-accumulates of a product. */
static size_t bn_macs(const kd_layer *l) {
    (void)l;
    return 0;
}

/* ONNX: BatchNormalization in inference form (running statistics; an [N, C] input is valid,
 * as BatchNorm1d). */
static kd_status bn_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    const bn_hp *hp = l->hp;
    const char *in[5] = {kd_onnx_current(em)};
    kd_status st = KD_OK;
    for (int k = BN_W; k <= BN_VAR && !st; k++) st = kd_layer_onnx_tensor(l, em, k, &in[1 + k], err);
    if (st) return st;
    const kd_onnx_attr eps = KD_ONNX_FLOAT("epsilon", hp->eps);
    return kd_onnx_node(em, "BatchNormalization", in, 5, &eps, 1, NULL, err);
}

/* C: the evaluation forward above with its per-channel constants computed here, in the same
 * float operations: k = weight * inv_std, y = k * (x - running_mean) + bias, in place. */
static kd_status bn_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    const bn_hp *hp = l->hp;
    const size_t C = n_channels(l), S = n_spatial(l);
    float *k = malloc(C * sizeof *k);
    const char *mu, *kn, *beta;
    int q;
    if (!k) return kd_err_set(err, KD_EIO, "out of memory");
    for (size_t c = 0; c < C; c++)
        k[c] = l->t[BN_W][c] * (float)(1.0 / sqrt((double)l->t[BN_VAR][c] + (double)hp->eps));
    kd_status st = kd_c_tensor(em, "mean", l->t[BN_MEAN], 1, C, KD_STORE_F32, &mu, &q, err);
    if (!st) st = kd_c_tensor(em, "k", k, 1, C, KD_STORE_F32, &kn, &q, err);
    if (!st) st = kd_c_tensor(em, "bias", l->t[BN_B], 1, C, KD_STORE_F32, &beta, &q, err);
    free(k);
    if (st) return st;
    return kd_c_code(em, 1, err,
                     "long c, i;\nfor (c = 0; c < %zuL; c++)\n    for (i = 0; i < %zuL; i++)\n"
                     "        y[c * %zuL + i] = %s[c] * (x[c * %zuL + i] - %s[c]) + %s[c];",
                     C, S, S, kn, S, mu, beta);
}

const kd_layer_ops kd_layer_batchnorm = {
    .type = "batchnorm",
    .hp_size = sizeof(bn_hp),
    .configure = bn_configure,
    .tensors = bn_tensors,
    .cache_floats = bn_cache,
    .workspace_floats = bn_workspace,
    .init = bn_init,
    .forward = bn_forward,
    .backward = bn_backward,
    .describe = bn_describe,
    .macs = bn_macs,
    .export_onnx = bn_export_onnx,
    .export_c = bn_export_c,
};
