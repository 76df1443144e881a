/* pool.c - max and average pooling over [C, H, W] (torch.nn.MaxPool2d / AvgPool2d with
 * floor-mode output sizes) and global average pooling [C, H, W] -> [C]. Every loop runs over
 * the (sample, channel) planes, which the OpenMP team splits: a plane's outputs and input
 * gradients are written by one thread, so no sum depends on the thread count. */
#include <cJSON.h>
#include <stdint.h>
#include <string.h>

#include "fused.h"
#include "layer_impl.h"

#define POOL_MAX_STRIDE ((size_t)1 << 12)

/* maxpool2d and avgpool2d; global_avgpool has no hyperparameters. */
typedef struct {
    size_t kh, kw;   /* kernel */
    size_t stride;   /* 0 means "the kernel size", per axis, as PyTorch's default stride=None */
    size_t padding;
} pool_hp;

static const pool_hp *hp_of(const kd_layer *l) { return l->hp; }
static size_t stride_h(const kd_layer *l) {
    return hp_of(l)->stride ? hp_of(l)->stride : hp_of(l)->kh;
}
static size_t stride_w(const kd_layer *l) {
    return hp_of(l)->stride ? hp_of(l)->stride : hp_of(l)->kw;
}

static kd_status pool_configure(kd_layer *l, const cJSON *spec, kd_err *err) {
    static const char *const fields[] = {"kernel", "stride", "padding", NULL};
    pool_hp *hp = l->hp;
    char buf[64];
    kd_status st = kd_spec_check_fields(l, spec, fields, err);
    if (!st) st = kd_spec_kernel(l, spec, &hp->kh, &hp->kw, err);
    if (!st) st = kd_spec_size(l, spec, "stride", 0, 0, 1, POOL_MAX_STRIDE, &hp->stride, err);
    if (!st) st = kd_spec_size(l, spec, "padding", 0, 0, 0, POOL_MAX_STRIDE, &hp->padding, err);
    if (st) return st;
    if (l->in.rank != 3)
        return kd_layer_err(l, err, "expects a [C, H, W] input, got %s",
                            kd_shape_str(&l->in, buf, sizeof buf));
    size_t H = l->in.d[1], W = l->in.d[2], kh = hp->kh, kw = hp->kw, p = hp->padding;
    /* PyTorch's rule: with at most half a kernel of padding every window holds a real input. */
    if (2 * p > kh || 2 * p > kw)
        return kd_layer_err(l, err, "padding %zu is more than half the kernel", p);
    if (kh > H + 2 * p || kw > W + 2 * p) {
        char kbuf[48];
        if (kh == kw) snprintf(kbuf, sizeof kbuf, "%zu", kh);
        else snprintf(kbuf, sizeof kbuf, "%zux%zu", kh, kw);
        return kd_layer_err(l, err, "kernel %s larger than padded input %zux%zu", kbuf, H + 2 * p,
                            W + 2 * p);
    }
    l->out.rank = 3;
    l->out.d[0] = l->in.d[0];
    l->out.d[1] = (H + 2 * p - kh) / stride_h(l) + 1;
    l->out.d[2] = (W + 2 * p - kw) / stride_w(l) + 1;
    return KD_OK;
}

static int pool_describe(const kd_layer *l, cJSON *obj) {
    const pool_hp *hp = l->hp;
    if (kd_spec_add_kernel(obj, hp->kh, hp->kw)) return -1;
    if (hp->stride && kd_spec_add_size(obj, "stride", hp->stride)) return -1;
    return hp->padding ? kd_spec_add_size(obj, "padding", hp->padding) : 0;
}

/* Pools declare no tensors, and do no multiplications worth counting next to the products
 * around them: their tensors, macs, init and workspace slots stay NULL. */

/* Window of output (oh, ow) clipped to the real input: rows [*h0, *h1), columns [*w0, *w1). */
static void window(const kd_layer *l, size_t oh, size_t ow, size_t *h0, size_t *h1, size_t *w0,
                   size_t *w1) {
    const pool_hp *hp = l->hp;
    size_t H = l->in.d[1], W = l->in.d[2], P = hp->padding;
    size_t hs = oh * stride_h(l), ws = ow * stride_w(l);  /* in padded coordinates */
    *h0 = hs > P ? hs - P : 0;
    *w0 = ws > P ? ws - P : 0;
    *h1 = hs + hp->kh - P < H ? hs + hp->kh - P : H;
    *w1 = ws + hp->kw - P < W ? ws + hp->kw - P : W;
}

/* ---- maxpool2d: the cache holds, per output, the index (h*W + w) of the first maximum in its
 * window, so backward routes each gradient to exactly that input. ---- */

static size_t maxpool_cache(const kd_layer *l, size_t B) { return B * kd_shape_numel(&l->out); }

/* The common 2x2, stride 2, unpadded pool over a plane of even size: branch-free selects in
 * the scan order of the general loop (a strict > keeps the first maximum): the max of the top
 * pair, of the bottom pair, then of the two. Finite windows give exactly the general loop's
 * value and index. A NaN never wins a comparison in either path (as there, a NaN in the first
 * position is kept); with a NaN bottom-left value this path keeps the top pair's maximum where
 * the general loop could still take the bottom-right one. */
int kd_maxpool_is_2x2(const kd_layer *l) {
    const pool_hp *hp = l->hp;
    return l->ops == &kd_layer_maxpool2d && hp->kh == 2 && hp->kw == 2 && stride_h(l) == 2 &&
           stride_w(l) == 2 && !hp->padding && l->in.d[1] == 2 * l->out.d[1] &&
           l->in.d[2] == 2 * l->out.d[2];
}

/* Four windows at a time with SSE-width vectors (vector extensions and __builtin_shufflevector,
 * which GCC 12 and Clang both know; -O3 without
 * -mavx): the same comparisons lane by lane as the scalar form below, so the same values and
 * indices. A row's last four windows are done as one more vector overlapping the previous ones
 * (rewriting a window gives the same results), so only rows narrower than four are scalar. */
typedef float pool_v4f __attribute__((vector_size(16)));
typedef uint32_t pool_v4u __attribute__((vector_size(16)));
typedef int32_t pool_v4i __attribute__((vector_size(16)));

static pool_v4f v4_load(const float *p) {
    pool_v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}
/* Lanes of a where mask (all ones) holds, else b's: whole bit patterns, as the scalar selects. */
static pool_v4f v4_select(pool_v4i mask, pool_v4f a, pool_v4f b) {
    pool_v4u ua, ub, m = (pool_v4u)mask;
    memcpy(&ua, &a, sizeof ua);
    memcpy(&ub, &b, sizeof ub);
    ua = (ua & m) | (ub & ~m);
    memcpy(&a, &ua, sizeof a);
    return a;
}

/* The map structs below are compile-time constants in each caller; forcing the inlining makes
 * GCC build one specialised loop per caller (it kept one shared copy that tested the struct's
 * fields inside its loop). The fused group's two plane kernels also get an AVX2 clone, chosen
 * at load time: the same IEEE operations on the same 4-wide vectors, in three-operand
 * instructions (about 15% faster on one core); -std=c11 contracts nothing into FMA, so both
 * clones give the same bits. */
#define POOL_INLINE static inline __attribute__((always_inline))

/* What the pool reads, optionally through batch norm's affine map and followed by ReLU (the
 * fused batchnorm -> maxpool2d -> relu of kd_bn_pool_relu_forward): every input is read as
 * k * (x - mu) + beta, the float operations of batch norm's own forward, the window's maximum
 * m is written as m < 0 ? 0 : m, relu's, and the winner's own input x to win (when not NULL).
 * Plain pooling has affine = 0. */
typedef struct {
    int affine;
    float k, mu, beta;
    float *win;  /* the plane's winners' inputs (OH, OW), or NULL */
    int index;   /* write the winners' indices (backward's); 0: inference, which never reads them */
} pool_map;

POOL_INLINE pool_v4f v4_map(const pool_map *f, pool_v4f v) {
    if (!f->affine) return v;
    const pool_v4f k = {f->k, f->k, f->k, f->k}, mu = {f->mu, f->mu, f->mu, f->mu},
                   beta = {f->beta, f->beta, f->beta, f->beta};
    return k * (v - mu) + beta;
}
POOL_INLINE float map1(const pool_map *f, float v) {
    return f->affine ? f->k * (v - f->mu) + f->beta : v;
}

/* Windows ow..ow+3 of output row oh (o0: the row's first output in the plane). */
POOL_INLINE void maxpool2x2_quad(const float *r0, const float *r1, float *y, uint32_t *a,
                                   uint32_t base, size_t o0, size_t ow, uint32_t W,
                                   const pool_map *f) {
    const pool_v4f x0 = v4_load(r0 + 2 * ow), x1 = v4_load(r0 + 2 * ow + 4);
    const pool_v4f x2 = v4_load(r1 + 2 * ow), x3 = v4_load(r1 + 2 * ow + 4);
    const pool_v4f p0 = v4_map(f, x0), p1 = v4_map(f, x1), q0 = v4_map(f, x2), q1 = v4_map(f, x3);
    const pool_v4f va = __builtin_shufflevector(p0, p1, 0, 2, 4, 6),
                   vb = __builtin_shufflevector(p0, p1, 1, 3, 5, 7);
    const pool_v4f vc = __builtin_shufflevector(q0, q1, 0, 2, 4, 6),
                   vd = __builtin_shufflevector(q0, q1, 1, 3, 5, 7);
    const pool_v4i ba = vb > va, dc = vd > vc;  /* -1 (true) or 0 per lane */
    const pool_v4f m1 = v4_select(ba, vb, va), m2 = v4_select(dc, vd, vc);
    const pool_v4i lower = m2 > m1;
    pool_v4f out = v4_select(lower, m2, m1);
    if (f->affine) {
        const pool_v4f zero = {0, 0, 0, 0};
        out = v4_select(out < zero, zero, out);
    }
    if (f->win) {  /* the same selects on the inputs themselves */
        const pool_v4f xa = __builtin_shufflevector(x0, x1, 0, 2, 4, 6),
                       xb = __builtin_shufflevector(x0, x1, 1, 3, 5, 7);
        const pool_v4f xc = __builtin_shufflevector(x2, x3, 0, 2, 4, 6),
                       xd = __builtin_shufflevector(x2, x3, 1, 3, 5, 7);
        const pool_v4f w = v4_select(lower, v4_select(dc, xd, xc), v4_select(ba, xb, xa));
        memcpy(f->win + o0 + ow, &w, sizeof w);
    }
    memcpy(y + ow, &out, sizeof out);
    if (!f->index) return;
    const pool_v4u col = {0, 2, 4, 6}, ba1 = (pool_v4u)-ba, dc1 = (pool_v4u)-dc;
    const pool_v4u idx = base + (uint32_t)(2 * ow) + col + ba1 + ((W + dc1 - ba1) & (pool_v4u)lower);
    memcpy(a + ow, &idx, sizeof idx);
}

POOL_INLINE void maxpool2x2_plane_map(const float *restrict xp, float *restrict yp,
                                        uint32_t *restrict ap, size_t OH, size_t OW,
                                        const pool_map *f) {
    const size_t W = 2 * OW;
    for (size_t oh = 0; oh < OH; oh++) {
        const float *r0 = xp + 2 * oh * W, *r1 = r0 + W;
        const uint32_t base = (uint32_t)(2 * oh * W);
        const size_t o0 = oh * OW;
        uint32_t *ar = f->index ? ap + o0 : NULL;
        if (OW >= 4) {
            for (size_t ow = 0; ow + 4 <= OW; ow += 4)
                maxpool2x2_quad(r0, r1, yp + o0, ar, base, o0, ow, (uint32_t)W, f);
            if (OW % 4)
                maxpool2x2_quad(r0, r1, yp + o0, ar, base, o0, OW - 4, (uint32_t)W, f);
            continue;
        }
        for (size_t ow = 0; ow < OW; ow++) {
            const float xa = r0[2 * ow], xb = r0[2 * ow + 1], xc = r1[2 * ow], xd = r1[2 * ow + 1];
            const float a = map1(f, xa), b = map1(f, xb), c = map1(f, xc), d = map1(f, xd);
            /* Comparisons as 0/1 integers, not branches: which element wins is data, and a
             * mispredicted branch per window costs more than the whole window. */
            const uint32_t ba = b > a, dc = d > c;
            const float m1 = ba ? b : a, m2 = dc ? d : c;
            const uint32_t lower = m2 > m1;
            const float m = m2 > m1 ? m2 : m1;
            yp[o0 + ow] = f->affine && m < 0.0f ? 0.0f : m;
            if (f->index)
                ar[ow] = base + (uint32_t)(2 * ow) + ba + lower * ((uint32_t)W + dc - ba);
            if (f->win) f->win[o0 + ow] = lower ? (dc ? xd : xc) : (ba ? xb : xa);
        }
    }
}

static void maxpool2x2_plane(const float *xp, float *yp, uint32_t *ap, size_t OH, size_t OW) {
    const pool_map plain = {0, 1.0f, 0.0f, 0.0f, NULL, 1};
    maxpool2x2_plane_map(xp, yp, ap, OH, OW, &plain);
}

/* The clones are static with a plain exported wrapper: Clang 14 does not emit the resolver of
 * an exported target_clones function for other files' callers. */
__attribute__((target_clones("avx2", "default")))
static void affine_relu_plane(const float *xp, float *yp, uint32_t *ap, float *win, size_t OH,
                              size_t OW, float k, float mu, float beta) {
    const pool_map f = {1, k, mu, beta, win, 1};
    maxpool2x2_plane_map(xp, yp, ap, OH, OW, &f);
}
/* Inference's: no indices (the same maxima, a fifth fewer operations per window). */
__attribute__((target_clones("avx2", "default")))
static void affine_relu_plane_values(const float *xp, float *yp, size_t OH, size_t OW, float k,
                                     float mu, float beta) {
    const pool_map f = {1, k, mu, beta, NULL, 0};
    maxpool2x2_plane_map(xp, yp, NULL, OH, OW, &f);
}

void kd_maxpool2x2_affine_relu_plane(const float *xp, float *yp, uint32_t *ap, float *win,
                                     size_t OH, size_t OW, float k, float mu, float beta) {
    if (!ap) {
        if (!kd_maxpool2x2_affine_relu_fast(xp, yp, OH, OW, k, mu, beta))
            affine_relu_plane_values(xp, yp, OH, OW, k, mu, beta);
    } else {
        affine_relu_plane(xp, yp, ap, win, OH, OW, k, mu, beta);
    }
}

/* What the pool's backward writes, optionally through batch norm's backward (the fused group
 * of kd_bn_pool_relu_backward): each routed gradient e (relu's gradient at the window's winner,
 * 0 elsewhere) is written as k * (e - a - (x - mu) * bq), batch norm's input gradient, reading
 * x (batch norm's input) at the same position. Plain pooling has affine = 0 and writes e. */
typedef struct {
    const float *x;  /* the plane of batch norm's input, or NULL: plain pooling */
    float k, a, bq, mu;
} pool_bn_grad;

POOL_INLINE pool_v4f v4_bn_grad(const pool_bn_grad *f, pool_v4f e, const float *x) {
    if (!f->x) return e;
    const pool_v4f k = {f->k, f->k, f->k, f->k}, a = {f->a, f->a, f->a, f->a},
                   bq = {f->bq, f->bq, f->bq, f->bq}, mu = {f->mu, f->mu, f->mu, f->mu};
    return k * (e - a - (v4_load(x) - mu) * bq);
}
POOL_INLINE float bn_grad1(const pool_bn_grad *f, float e, size_t i) {
    return f->x ? f->k * (e - f->a - (f->x[i] - f->mu) * f->bq) : e;
}

/* The gradients of windows ow..ow+3 of output row oh into rows r0, r1 (offsets o0, o0 + W in
 * the plane dx); with yr (the fused ReLU's output row), a gradient passes only where yr > 0,
 * as relu's backward. */
POOL_INLINE void maxpool2x2_quad_backward(const float *dyr, const float *yr,
                                            const uint32_t *ar, float *dx, size_t o0,
                                            uint32_t base, size_t ow, uint32_t W,
                                            const pool_bn_grad *f) {
    const pool_v4f zero = {0, 0, 0, 0};
    pool_v4f g = v4_load(dyr + ow);
    if (yr) g = v4_select(v4_load(yr + ow) > zero, g, zero);
    pool_v4u k;
    memcpy(&k, ar + ow, sizeof k);
    const pool_v4u col = {0, 2, 4, 6};
    k -= base + (uint32_t)(2 * ow) + col;  /* 0, 1, W or W + 1 per lane */
    const pool_v4f e0 = v4_select((pool_v4i)(k == 0), g, zero),
                   e1 = v4_select((pool_v4i)(k == 1), g, zero),
                   e2 = v4_select((pool_v4i)(k == W), g, zero),
                   e3 = v4_select((pool_v4i)(k == W + 1), g, zero);
    const size_t i0 = o0 + 2 * ow, i1 = i0 + W;
    const pool_v4f t0 = v4_bn_grad(f, __builtin_shufflevector(e0, e1, 0, 4, 1, 5), f->x + i0),
                   t1 = v4_bn_grad(f, __builtin_shufflevector(e0, e1, 2, 6, 3, 7), f->x + i0 + 4);
    const pool_v4f b0 = v4_bn_grad(f, __builtin_shufflevector(e2, e3, 0, 4, 1, 5), f->x + i1),
                   b1 = v4_bn_grad(f, __builtin_shufflevector(e2, e3, 2, 6, 3, 7), f->x + i1 + 4);
    memcpy(dx + i0, &t0, sizeof t0);
    memcpy(dx + i0 + 4, &t1, sizeof t1);
    memcpy(dx + i1, &b0, sizeof b0);
    memcpy(dx + i1 + 4, &b1, sizeof b1);
}

/* Writes every input of the plane once (the gradient or 0): no separate clearing pass. */
POOL_INLINE void maxpool2x2_plane_backward_map(const float *restrict dyp,
                                                 const float *restrict yp,
                                                 const uint32_t *restrict ap,
                                                 float *restrict dxp, size_t OH, size_t OW,
                                                 const pool_bn_grad *f) {
    const size_t W = 2 * OW;
    for (size_t oh = 0; oh < OH; oh++) {
        const size_t o0 = 2 * oh * W;
        const uint32_t base = (uint32_t)o0;
        const float *yr = yp ? yp + oh * OW : NULL;
        if (OW >= 4) {
            for (size_t ow = 0; ow + 4 <= OW; ow += 4)
                maxpool2x2_quad_backward(dyp + oh * OW, yr, ap + oh * OW, dxp, o0, base, ow,
                                         (uint32_t)W, f);
            if (OW % 4)
                maxpool2x2_quad_backward(dyp + oh * OW, yr, ap + oh * OW, dxp, o0, base, OW - 4,
                                         (uint32_t)W, f);
            continue;
        }
        for (size_t ow = 0; ow < OW; ow++) {
            const float g = yr && !(yr[ow] > 0.0f) ? 0.0f : dyp[oh * OW + ow];
            const uint32_t k = ap[oh * OW + ow] - base - (uint32_t)(2 * ow);  /* 0, 1, W, W+1 */
            const size_t i0 = o0 + 2 * ow, i1 = i0 + W;
            dxp[i0] = bn_grad1(f, kd_float_if(k == 0, g), i0);
            dxp[i0 + 1] = bn_grad1(f, kd_float_if(k == 1, g), i0 + 1);
            dxp[i1] = bn_grad1(f, kd_float_if(k == W, g), i1);
            dxp[i1 + 1] = bn_grad1(f, kd_float_if(k == W + 1, g), i1 + 1);
        }
    }
}

static void maxpool2x2_plane_backward(const float *dyp, const uint32_t *ap, float *dxp,
                                      size_t OH, size_t OW) {
    const pool_bn_grad plain = {NULL, 1.0f, 0.0f, 0.0f, 0.0f};
    maxpool2x2_plane_backward_map(dyp, NULL, ap, dxp, OH, OW, &plain);
}

__attribute__((target_clones("avx2", "default")))
static void relu_bn_backward_plane(const float *dyp, const float *yp, const uint32_t *ap,
                                   const float *xp, float *dxp, size_t OH, size_t OW, float k,
                                   float a, float bq, float mu) {
    const pool_bn_grad f = {xp, k, a, bq, mu};
    maxpool2x2_plane_backward_map(dyp, yp, ap, dxp, OH, OW, &f);
}

void kd_maxpool2x2_relu_bn_backward_plane(const float *dyp, const float *yp, const uint32_t *ap,
                                          const float *xp, float *dxp, size_t OH, size_t OW,
                                          float k, float a, float bq, float mu) {
    relu_bn_backward_plane(dyp, yp, ap, xp, dxp, OH, OW, k, a, bq, mu);
}

static void maxpool_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    const size_t C = l->in.d[0], H = l->in.d[1], W = l->in.d[2];
    const size_t OH = l->out.d[1], OW = l->out.d[2];
    uint32_t *arg = (uint32_t *)kd_layer_cache(l, ctx);
    const pool_hp *hp = l->hp;
    const size_t KH = hp->kh, KW = hp->kw, SH = stride_h(l), SW = stride_w(l);
    const int par = KD_PAR(B * C * H * W);
    if (kd_maxpool_is_2x2(l)) {
#pragma omp parallel for schedule(static) if (par)
        for (size_t bc = 0; bc < B * C; bc++)
            maxpool2x2_plane(x + bc * H * W, y + bc * OH * OW, arg + bc * OH * OW, OH, OW);
        return;
    }
#pragma omp parallel for schedule(static) if (par)
    for (size_t bc = 0; bc < B * C; bc++) {
        const float *xp = x + bc * H * W;
        float *yp = y + bc * OH * OW;
        uint32_t *ap = arg + bc * OH * OW;
        if (!hp->padding) {
            /* Without padding every window lies inside the plane: no clipping per output. */
            for (size_t oh = 0; oh < OH; oh++) {
                for (size_t ow = 0; ow < OW; ow++) {
                    size_t first = oh * SH * W + ow * SW, best_i = first;
                    float best = xp[first];
                    for (size_t i = 0; i < KH; i++) {
                        const float *row = xp + first + i * W;
                        for (size_t j = 0; j < KW; j++)
                            if (row[j] > best) best = row[j], best_i = first + i * W + j;
                    }
                    yp[oh * OW + ow] = best;
                    ap[oh * OW + ow] = (uint32_t)best_i;
                }
            }
            continue;
        }
        for (size_t oh = 0; oh < OH; oh++) {
            for (size_t ow = 0; ow < OW; ow++) {
                size_t h0, h1, w0, w1;
                window(l, oh, ow, &h0, &h1, &w0, &w1);
                size_t best_i = h0 * W + w0;
                float best = xp[best_i];
                for (size_t h = h0; h < h1; h++)
                    for (size_t w = w0; w < w1; w++)
                        if (xp[h * W + w] > best) best = xp[h * W + w], best_i = h * W + w;
                yp[oh * OW + ow] = best;
                ap[oh * OW + ow] = (uint32_t)best_i;
            }
        }
    }
}

static void maxpool_backward(kd_layer *l, const float *x, const float *y, const float *dy,
                             float *dx, size_t B, kd_ctx *ctx) {
    (void)x;
    (void)y;
    (void)ctx;
    if (!dx) return;
    const size_t C = l->in.d[0], HW = l->in.d[1] * l->in.d[2], OHW = l->out.d[1] * l->out.d[2];
    const uint32_t *arg = (const uint32_t *)l->cache;
    const int par = KD_PAR(B * C * HW);
    if (kd_maxpool_is_2x2(l)) {
#pragma omp parallel for schedule(static) if (par)
        for (size_t bc = 0; bc < B * C; bc++)
            maxpool2x2_plane_backward(dy + bc * OHW, arg + bc * OHW, dx + bc * HW, l->out.d[1],
                                      l->out.d[2]);
        return;
    }
    /* Overlapping windows (stride < kernel) add into the same input: in output order, within
     * the plane's one thread. */
#pragma omp parallel for schedule(static) if (par)
    for (size_t bc = 0; bc < B * C; bc++) {
        float *dxp = dx + bc * HW;
        memset(dxp, 0, HW * sizeof *dxp);
        for (size_t o = 0; o < OHW; o++) dxp[arg[bc * OHW + o]] += dy[bc * OHW + o];
    }
}

/* ---- Deployment of maxpool2d / avgpool2d: MaxPool / AveragePool (count_include_pad = 1, as
 * the divisor above) with the same kernel, strides and pads; in C one helper with the same
 * clipped windows as window() and the same float operations as the forward loops. ---- */

static kd_status pool_export_onnx(const kd_layer *l, kd_onnx_emitter *em, const char *op,
                                  kd_err *err) {
    const pool_hp *hp = l->hp;
    const char *x = kd_onnx_current(em);
    const int64_t p = (int64_t)hp->padding;
    const kd_onnx_attr attrs[] = {
        KD_ONNX_INTS2("kernel_shape", (int64_t)hp->kh, (int64_t)hp->kw),
        KD_ONNX_INTS2("strides", (int64_t)stride_h(l), (int64_t)stride_w(l)),
        KD_ONNX_INTS4("pads", p, p, p, p), KD_ONNX_INT("count_include_pad", 1)};
    /* MaxPool has no count_include_pad: the last attribute is for AveragePool only. */
    return kd_onnx_node(em, op, &x, 1, attrs, strcmp(op, "MaxPool") ? 4 : 3, NULL, err);
}

static const char pool_c_helper[] =
    "static void $pool2d(const float *x, float *y, long C, long H, long W, long KH, long KW,\n"
    "                    long SH, long SW, long P, long OH, long OW, int is_max) {\n"
    "    const float inv = 1.0f / (float)(KH * KW);\n"
    "    long c, oh, ow, h, v;\n"
    "    for (c = 0; c < C; c++)\n"
    "        for (oh = 0; oh < OH; oh++)\n"
    "            for (ow = 0; ow < OW; ow++) {\n"
    "                const long hs = oh * SH - P, ws = ow * SW - P;\n"
    "                const long h0 = hs < 0 ? 0 : hs, h1 = hs + KH < H ? hs + KH : H;\n"
    "                const long w0 = ws < 0 ? 0 : ws, w1 = ws + KW < W ? ws + KW : W;\n"
    "                const float *xp = x + c * H * W;\n"
    "                float s = is_max ? xp[h0 * W + w0] : 0.0f;\n"
    "                for (h = h0; h < h1; h++)\n"
    "                    for (v = w0; v < w1; v++) {\n"
    "                        const float t = xp[h * W + v];\n"
    "                        if (!is_max) s += t;\n"
    "                        else if (t > s) s = t;\n"
    "                    }\n"
    "                y[(c * OH + oh) * OW + ow] = is_max ? s : s * inv;\n"
    "            }\n"
    "}\n";

static kd_status pool_export_c(const kd_layer *l, kd_c_emitter *em, int is_max, kd_err *err) {
    const pool_hp *hp = l->hp;
    kd_status st = kd_c_helper(em, "pool2d", pool_c_helper, err);
    if (st) return st;
    return kd_c_code(em, 0, err,
                     "$pool2d(x, y, %zuL, %zuL, %zuL, %zuL, %zuL, %zuL, %zuL, %zuL, %zuL, %zuL, %d);",
                     l->in.d[0], l->in.d[1], l->in.d[2], hp->kh, hp->kw, stride_h(l), stride_w(l),
                     hp->padding, l->out.d[1], l->out.d[2], is_max);
}

static kd_status maxpool_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    return pool_export_onnx(l, em, "MaxPool", err);
}
static kd_status maxpool_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    return pool_export_c(l, em, 1, err);
}
static kd_status avgpool_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    return pool_export_onnx(l, em, "AveragePool", err);
}
static kd_status avgpool_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    return pool_export_c(l, em, 0, err);
}

/* Plane indices must fit the uint32 cache slots. */
static kd_status maxpool_configure(kd_layer *l, const cJSON *spec, kd_err *err) {
    kd_status st = pool_configure(l, spec, err);
    if (st) return st;
    if (l->in.d[1] * l->in.d[2] > UINT32_MAX)
        return kd_layer_err(l, err, "input planes of %zux%zu are too large", l->in.d[1],
                            l->in.d[2]);
    return KD_OK;
}

const kd_layer_ops kd_layer_maxpool2d = {
    .type = "maxpool2d",
    .hp_size = sizeof(pool_hp),
    .configure = maxpool_configure,
    .cache_floats = maxpool_cache,
    .forward = maxpool_forward,
    .backward = maxpool_backward,
    .describe = pool_describe,
    .export_onnx = maxpool_export_onnx,
    .export_c = maxpool_export_c,
};

/* ---- avgpool2d: y = sum over the window / (kh*kw); padded zeros count towards the divisor,
 * as PyTorch's default count_include_pad=True. ---- */

static void avgpool_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    (void)ctx;
    const size_t C = l->in.d[0], H = l->in.d[1], W = l->in.d[2];
    const size_t OH = l->out.d[1], OW = l->out.d[2];
    const float scale = 1.0f / (float)(hp_of(l)->kh * hp_of(l)->kw);
#pragma omp parallel for schedule(static) if (KD_PAR(B * C * H * W))
    for (size_t bc = 0; bc < B * C; bc++) {
        const float *xp = x + bc * H * W;
        float *yp = y + bc * OH * OW;
        for (size_t oh = 0; oh < OH; oh++) {
            for (size_t ow = 0; ow < OW; ow++) {
                size_t h0, h1, w0, w1;
                window(l, oh, ow, &h0, &h1, &w0, &w1);
                float s = 0.0f;
                for (size_t h = h0; h < h1; h++)
                    for (size_t w = w0; w < w1; w++) s += xp[h * W + w];
                yp[oh * OW + ow] = s * scale;
            }
        }
    }
}

static void avgpool_backward(kd_layer *l, const float *x, const float *y, const float *dy,
                             float *dx, size_t B, kd_ctx *ctx) {
    (void)x;
    (void)y;
    (void)ctx;
    if (!dx) return;
    const size_t C = l->in.d[0], H = l->in.d[1], W = l->in.d[2];
    const size_t OH = l->out.d[1], OW = l->out.d[2];
    const float scale = 1.0f / (float)(hp_of(l)->kh * hp_of(l)->kw);
#pragma omp parallel for schedule(static) if (KD_PAR(B * C * H * W))
    for (size_t bc = 0; bc < B * C; bc++) {
        float *dxp = dx + bc * H * W;
        const float *dyp = dy + bc * OH * OW;
        memset(dxp, 0, H * W * sizeof *dxp);
        for (size_t oh = 0; oh < OH; oh++) {
            for (size_t ow = 0; ow < OW; ow++) {
                size_t h0, h1, w0, w1;
                window(l, oh, ow, &h0, &h1, &w0, &w1);
                float g = dyp[oh * OW + ow] * scale;
                for (size_t h = h0; h < h1; h++)
                    for (size_t w = w0; w < w1; w++) dxp[h * W + w] += g;
            }
        }
    }
}

const kd_layer_ops kd_layer_avgpool2d = {
    .type = "avgpool2d",
    .hp_size = sizeof(pool_hp),
    .configure = pool_configure,
    .forward = avgpool_forward,
    .backward = avgpool_backward,
    .describe = pool_describe,
    .export_onnx = avgpool_export_onnx,
    .export_c = avgpool_export_c,
};

/* ---- global_avgpool: [C, H, W] -> [C], the mean of each plane (AdaptiveAvgPool2d(1) followed
 * by a flatten). ---- */

static kd_status gap_configure(kd_layer *l, const cJSON *spec, kd_err *err) {
    static const char *const fields[] = {NULL};
    char buf[64];
    kd_status st = kd_spec_check_fields(l, spec, fields, err);
    if (st) return st;
    if (l->in.rank != 3)
        return kd_layer_err(l, err, "expects a [C, H, W] input, got %s",
                            kd_shape_str(&l->in, buf, sizeof buf));
    l->out.rank = 1;
    l->out.d[0] = l->in.d[0];
    return KD_OK;
}

static void gap_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    (void)ctx;
    const size_t HW = l->in.d[1] * l->in.d[2];
    const float scale = 1.0f / (float)HW;
#pragma omp parallel for schedule(static) if (KD_PAR(B * l->in.d[0] * HW))
    for (size_t bc = 0; bc < B * l->in.d[0]; bc++) {
        const float *xp = x + bc * HW;
        float s = 0.0f;
        for (size_t i = 0; i < HW; i++) s += xp[i];
        y[bc] = s * scale;
    }
}

static void gap_backward(kd_layer *l, const float *x, const float *y, const float *dy, float *dx,
                         size_t B, kd_ctx *ctx) {
    (void)x;
    (void)y;
    (void)ctx;
    if (!dx) return;
    const size_t HW = l->in.d[1] * l->in.d[2];
    const float scale = 1.0f / (float)HW;
#pragma omp parallel for schedule(static) if (KD_PAR(B * l->in.d[0] * HW))
    for (size_t bc = 0; bc < B * l->in.d[0]; bc++) {
        float *dxp = dx + bc * HW, g = dy[bc] * scale;
        for (size_t i = 0; i < HW; i++) dxp[i] = g;
    }
}

/* ONNX: GlobalAveragePool gives [N, C, 1, 1]; Flatten makes it [N, C]. C: the forward's sum
 * and multiplication by 1 / (H * W). */
static kd_status gap_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    (void)l;
    const char *x = kd_onnx_current(em), *pooled;
    const kd_onnx_attr axis = KD_ONNX_INT("axis", 1);
    kd_status st = kd_onnx_node(em, "GlobalAveragePool", &x, 1, NULL, 0, &pooled, err);
    return st ? st : kd_onnx_node(em, "Flatten", &pooled, 1, &axis, 1, NULL, err);
}

static kd_status gap_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    const size_t HW = l->in.d[1] * l->in.d[2];
    char scale[40];
    kd_c_float(1.0f / (float)HW, scale, sizeof scale);
    return kd_c_code(em, 0, err,
                     "long c, i;\nfor (c = 0; c < %zuL; c++) {\n    float s = 0.0f;\n"
                     "    for (i = 0; i < %zuL; i++) s += x[c * %zuL + i];\n    y[c] = s * %s;\n}",
                     l->in.d[0], HW, HW, scale);
}

const kd_layer_ops kd_layer_global_avgpool = {
    .type = "global_avgpool",
    .configure = gap_configure,
    .forward = gap_forward,
    .backward = gap_backward,
    .export_onnx = gap_export_onnx,
    .export_c = gap_export_c,
};
