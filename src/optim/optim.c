/* optim.c - SGD (momentum, Nesterov), Adam and AdamW updates with L2 weight decay and global
 * gradient-norm clipping, as flat loops over the model's parameter layout (torch.optim semantics). */
#include <math.h>

#include "kd_common.h"
#include "kd_optim.h"
#include "kd_reduce.h"

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

/* Global L2 norm of g (n), accumulated in double; NaN/Inf propagate. */
static double grad_norm(const float *g, size_t n) { return sqrt(kd_dot(g, g, n)); }

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
static void adam_step(const kd_optim_cfg *cfg, float *p, const float *grad, float *m, float *v,
                      size_t n, float lr, uint64_t step) {
    KD_ASSERT(m != NULL && v != NULL && step >= 1);
    const int decoupled = cfg->kind == KD_OPT_ADAMW;
    const float b1 = cfg->beta1, b2 = cfg->beta2, eps = cfg->eps;
    const float l2 = decoupled ? 0.0f : cfg->weight_decay;
    const float shrink = decoupled ? (float)(1.0 - (double)lr * cfg->weight_decay) : 1.0f;
    /* Bias corrections in double: b2^t for t ~ 1e5 is far from 1 - tiny in float. */
    const float step_size = (float)((double)lr / (1.0 - pow(b1, (double)step)));
    const float inv_sqrt_bc2 = (float)(1.0 / sqrt(1.0 - pow(b2, (double)step)));
    for (size_t i = 0; i < n; i++) {
        float pi = p[i] * shrink;
        float g = grad[i] + l2 * pi;
        float mi = b1 * m[i] + (1.0f - b1) * g;
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
    }
}

double kd_optim_step(const kd_optim_cfg *cfg, float *params, float *grads, float *m, float *v,
                     size_t n, float lr, uint64_t step) {
    KD_ASSERT(cfg && params && grads);
    double norm = grad_norm(grads, n);
    if (cfg->clip_norm > 0.0f) {
        /* torch.nn.utils.clip_grad_norm_: scale by clip / (norm + 1e-6) only when that is
         * below 1. A NaN norm fails the comparison and leaves the gradient as it is; the
         * caller sees the NaN in the returned norm. */
        double scale = (double)cfg->clip_norm / (norm + 1e-6);
        if (scale < 1.0) {
            const float s = (float)scale;
            for (size_t i = 0; i < n; i++) grads[i] *= s;
        }
    }
    switch (cfg->kind) {
    case KD_OPT_SGD: sgd_step(cfg, params, grads, m, n, lr, step); break;
    case KD_OPT_ADAM:
    case KD_OPT_ADAMW: adam_step(cfg, params, grads, m, v, n, lr, step); break;
    default: KD_ASSERT(!"unknown optimizer kind");
    }
    return norm;
}
