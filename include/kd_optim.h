/* kd_optim.h - optimizers (SGD with momentum/Nesterov, Adam, AdamW), L2 weight decay,
 * gradient-norm clipping, and learning-rate schedules. All work on flat buffers laid out like
 * the model's parameters, so each update is one loop. */
#ifndef KD_OPTIM_H
#define KD_OPTIM_H

#include <stddef.h>
#include <stdint.h>

typedef enum { KD_OPT_SGD = 0, KD_OPT_ADAM = 1, KD_OPT_ADAMW = 2 } kd_optim_kind;

typedef struct {
    kd_optim_kind kind;
    float momentum;      /* SGD */
    int nesterov;        /* SGD */
    float beta1, beta2, eps;  /* Adam/AdamW */
    float weight_decay;  /* SGD/Adam: L2 (added to the gradient); AdamW: decoupled */
    float clip_norm;     /* > 0: scale gradients so their global L2 norm is at most this */
} kd_optim_cfg;

/* Defaults matching PyTorch: momentum 0, beta1 0.9, beta2 0.999, eps 1e-8, no decay, no clip. */
kd_optim_cfg kd_optim_defaults(kd_optim_kind kind);

/* One update of n parameters with learning rate lr. m and v are the moment buffers (SGD uses
 * m as its momentum buffer; v unused and may be NULL). step is the 1-based step count after
 * this update (for Adam bias correction). Clipping modifies grads in place. Returns the
 * gradient L2 norm before clipping (NaN/Inf propagate, so the caller can check it).
 * Semantics follow torch.optim (SGD dampening 0; Nesterov as in torch). */
double kd_optim_step(const kd_optim_cfg *cfg, float *params, float *grads, float *m, float *v,
                     size_t n, float lr, uint64_t step);
/* The same update, leaving every gradient 0 (each chunk zeroed right after its update, while in
 * cache): what the trainer calls, so the next backward accumulates from zero without a separate
 * pass over the gradients. The returned norm and the new parameters and moments are the same
 * bits as kd_optim_step's. */
double kd_optim_step_and_zero(const kd_optim_cfg *cfg, float *params, float *grads, float *m,
                              float *v, size_t n, float lr, uint64_t step);

typedef enum { KD_SCHED_CONSTANT = 0, KD_SCHED_STEP = 1, KD_SCHED_COSINE = 2 } kd_sched_kind;

typedef struct {
    kd_sched_kind kind;
    float base_lr;
    uint64_t warmup_steps;   /* linear warmup from base_lr/warmup... see kd_sched_lr */
    uint64_t step_size;      /* STEP: decay every step_size steps */
    float gamma;             /* STEP: multiply by gamma */
    uint64_t total_steps;    /* COSINE: steps until min_lr */
    float min_lr;            /* COSINE: floor */
} kd_sched_cfg;

/* Learning rate for 0-based step t. Warmup (if warmup_steps > 0): lr = base_lr * (t+1) /
 * warmup_steps for t < warmup_steps; then the schedule runs on t' = t - warmup_steps:
 * constant: base_lr; step: base_lr * gamma^floor(t'/step_size);
 * cosine: min_lr + (base_lr - min_lr) * (1 + cos(pi * min(t', T') / T')) / 2 with
 * T' = total_steps - warmup_steps. */
float kd_sched_lr(const kd_sched_cfg *cfg, uint64_t t);

#endif
