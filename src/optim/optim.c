/* optim.c - SGD (momentum, Nesterov), Adam and AdamW updates with L2 weight decay and global
 * gradient-norm clipping, as flat loops over the model's parameter layout (torch.optim
 * semantics), in chunks that the OpenMP team shares. */
#include <math.h>
#include <string.h>

#include "kd_common.h"
#include "kd_optim.h"
#include "kd_reduce.h"
#include "kd_threads.h"

kd_optim_cfg kd_optim_defaults(kd_optim_kind kind) {
    kd_optim_cfg c;
    c.kind = kind;
    c.momentum = 0.0f;
    c.nesterov = 0;
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    c.eps = 1e-8f;
    c.weight_decay = 0.0f;
    c.clip_norm = 0.0f;
    return c;
}

/* torch.optim.SGD with dampening 0:
 *   g = grad + wd * p;  buf = g (first step) or mu * buf + g;
 *   d = nesterov ? g + mu * buf : buf;  p -= lr * d. */
static void sgd_step(const kd_optim_cfg *cfg, float *p, const float *grad, float *buf, size_t n,
                     float lr, uint64_t step) {
    const float wd = cfg->weight_decay, mu = cfg->momentum;
    if (mu == 0.0f) {
        for (size_t i = 0; i < n; i++) p[i] -= lr * (grad[i] + wd * p[i]);
        return;
    }
    KD_ASSERT(buf != NULL);
    /* torch creates the buffer as a copy of the first gradient; step counts from 1. */
    const float keep = step <= 1 ? 0.0f : mu;
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] + wd * p[i];
        float b = keep * buf[i] + g;
        buf[i] = b;
        p[i] -= lr * (cfg->nesterov ? g + mu * b : b);
    }
}

/* torch.optim.Adam / AdamW (amsgrad off):
 *   AdamW: p *= 1 - lr * wd;  Adam: g += wd * p
 *   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)   (eps after the sqrt). */
typedef struct {
    float b1, b2, eps, l2, shrink, step_size, inv_sqrt_bc2;
} adam_consts;

static adam_consts adam_prepare(const kd_optim_cfg *cfg, float lr, uint64_t step) {
    KD_ASSERT(step >= 1);
    const int decoupled = cfg->kind == KD_OPT_ADAMW;
    adam_consts c;
    c.b1 = cfg->beta1;
    c.b2 = cfg->beta2;
    c.eps = cfg->eps;
    c.l2 = decoupled ? 0.0f : cfg->weight_decay;
    c.shrink = decoupled ? (float)(1.0 - (double)lr * cfg->weight_decay) : 1.0f;
    /* Bias corrections in double: b2^t for t ~ 1e5 is far from 1 - tiny in float. */
    c.step_size = (float)((double)lr / (1.0 - pow(c.b1, (double)step)));
    c.inv_sqrt_bc2 = (float)(1.0 / sqrt(1.0 - pow(c.b2, (double)step)));
    return c;
}

/* The update is bound by divides and square roots; an AVX2 clone (chosen at load time, where
 * the CPU has it) runs them 8 wide instead of 4. IEEE division and sqrt round the same at any
 * width and -std=c11 does not contract into FMA, so both clones give identical bits. */
static inline void adam_one(const adam_consts *c, float *p, const float *grad, float *m,
                            float *v, size_t i) {
    float pi = p[i] * c->shrink;
    float g = grad[i] + c->l2 * pi;
    float mi = c->b1 * m[i] + (1.0f - c->b1) * g;
    float vi = c->b2 * v[i] + (1.0f - c->b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - c->step_size * mi / (sqrtf(vi) * c->inv_sqrt_bc2 + c->eps);
}

__attribute__((target_clones("avx2", "default")))
static void adam_step(const adam_consts *c, float *p, const float *grad, float *m, float *v,
                      size_t n) {
    KD_ASSERT(m != NULL && v != NULL);
    const adam_consts k = *c;  /* a local copy: no aliasing with the arrays written */
    for (size_t i = 0; i < n; i++) adam_one(&k, p, grad, m, v, i);
}

/* adam_step that also returns kd_dot(grad, grad) over the same n values, with kd_dot's eight
 * double lanes and final fold (the same bits), while the gradients are in registers: the
 * norm needs no pass of its own. */
__attribute__((target_clones("avx2", "default")))
static double adam_step_sumsq(const adam_consts *c, float *p, const float *grad, float *m,
                              float *v, size_t n) {
    KD_ASSERT(m != NULL && v != NULL);
    const adam_consts k = *c;
    double acc[8] = {0};
    const size_t nb = n / 8 * 8;
    for (size_t i0 = 0; i0 < nb; i0 += 8)
        for (size_t j = 0; j < 8; j++) {
            acc[j] += (double)grad[i0 + j] * grad[i0 + j];
            adam_one(&k, p, grad, m, v, i0 + j);
        }
    for (size_t i = nb; i < n; i++) {
        acc[i - nb] += (double)grad[i] * grad[i];
        adam_one(&k, p, grad, m, v, i);
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* One update of params[0..n) (offset views of the flat buffers). */
static void update(const kd_optim_cfg *cfg, const adam_consts *ac, float *p, const float *g,
                   float *m, float *v, size_t n, float lr, uint64_t step) {
    switch (cfg->kind) {
    case KD_OPT_SGD: sgd_step(cfg, p, g, m, n, lr, step); break;
    case KD_OPT_ADAM:
    case KD_OPT_ADAMW: adam_step(ac, p, g, m, v, n); break;
    default: KD_ASSERT(!"unknown optimizer kind");
    }
}

/* The squared gradient norm is summed chunk by chunk: each chunk's kd_dot (fixed order) into
 * its own slot, then the slots in chunk order, so the norm does not depend on the thread count.
 * Without clipping each chunk is updated right after its norm is taken, so the gradients are
 * read from memory once, not twice (the update is memory-bound: ~0.5 ms saved per step on a
 * 2.4M-parameter model). 16384 floats keep a chunk of the four arrays in L2. Chunks are handed
 * out in rounds of ROUND_CHUNKS, whose slots live on the stack (no allocation in a step). */
#define NORM_CHUNK 16384
#define ROUND_CHUNKS 512

/* Returns sum(grads^2); with do_update, updates each chunk after its sum (no clipping). */
static double chunked_pass(const kd_optim_cfg *cfg, const adam_consts *ac, float *params,
                           float *grads, float *m, float *v, size_t n, float lr, uint64_t step,
                           int do_update, int zero) {
    const size_t n_chunks = (n + NORM_CHUNK - 1) / NORM_CHUNK;
    const int par = KD_PAR(n);
    double part[ROUND_CHUNKS], sumsq = 0.0;
    for (size_t r0 = 0; r0 < n_chunks; r0 += ROUND_CHUNKS) {
        const size_t r1 = n_chunks - r0 < ROUND_CHUNKS ? n_chunks : r0 + ROUND_CHUNKS;
#pragma omp parallel for schedule(static) if (par)
        for (size_t k = r0; k < r1; k++) {
            const size_t off = k * NORM_CHUNK, len = n - off < NORM_CHUNK ? n - off : NORM_CHUNK;
            if (do_update && cfg->kind != KD_OPT_SGD) {  /* Adam(W): the norm inside the update */
                part[k - r0] = adam_step_sumsq(ac, params + off, grads + off, m + off, v + off,
                                               len);
                if (zero) memset(grads + off, 0, len * sizeof *grads);
                continue;
            }
            part[k - r0] = kd_dot(grads + off, grads + off, len);
            if (do_update) {
                update(cfg, ac, params + off, grads + off, m ? m + off : NULL, v ? v + off : NULL,
                       len, lr, step);
                if (zero) memset(grads + off, 0, len * sizeof *grads);
            }
        }
        for (size_t k = r0; k < r1; k++) sumsq += part[k - r0];
    }
    return sumsq;
}

/* kd_optim_step, zeroing each 16K-float chunk of gradients right after its update when zero is
 * set (the chunk is still in cache: no separate pass over the gradients before the next
 * backward). */
static double step_impl(const kd_optim_cfg *cfg, float *params, float *grads, float *m, float *v,
                        size_t n, float lr, uint64_t step, int zero) {
    KD_ASSERT(cfg && params && grads);
    adam_consts ac = {0};
    if (cfg->kind != KD_OPT_SGD) ac = adam_prepare(cfg, lr, step);
    if (!(cfg->clip_norm > 0.0f))
        return sqrt(chunked_pass(cfg, &ac, params, grads, m, v, n, lr, step, 1, zero));
    double norm = sqrt(chunked_pass(cfg, &ac, params, grads, m, v, n, lr, step, 0, 0));
    /* torch.nn.utils.clip_grad_norm_: scale by clip / (norm + 1e-6) only when that is below 1.
     * A NaN norm fails the comparison and leaves the gradient as it is; the caller sees the NaN
     * in the returned norm. */
    double scale = (double)cfg->clip_norm / (norm + 1e-6);
    const float s = scale < 1.0 ? (float)scale : 1.0f;
    const size_t n_chunks = (n + NORM_CHUNK - 1) / NORM_CHUNK;
#pragma omp parallel for schedule(static) if (KD_PAR(n))
    for (size_t k = 0; k < n_chunks; k++) {
        const size_t off = k * NORM_CHUNK, len = n - off < NORM_CHUNK ? n - off : NORM_CHUNK;
        if (s < 1.0f)
            for (size_t i = off; i < off + len; i++) grads[i] *= s;
        update(cfg, &ac, params + off, grads + off, m ? m + off : NULL, v ? v + off : NULL, len,
               lr, step);
        if (zero) memset(grads + off, 0, len * sizeof *grads);
    }
    return norm;
}

double kd_optim_step(const kd_optim_cfg *cfg, float *params, float *grads, float *m, float *v,
                     size_t n, float lr, uint64_t step) {
    return step_impl(cfg, params, grads, m, v, n, lr, step, 0);
}

double kd_optim_step_and_zero(const kd_optim_cfg *cfg, float *params, float *grads, float *m,
                              float *v, size_t n, float lr, uint64_t step) {
    return step_impl(cfg, params, grads, m, v, n, lr, step, 1);
}
