/* schedule.c - learning-rate schedules (constant, step, cosine) with optional linear warmup. */
#include <math.h>

#include "kd_common.h"
#include "kd_optim.h"

#define KD_PI 3.14159265358979323846  /* M_PI is not in strict C11/POSIX */

/* Formulas in kd_optim.h. Degenerate settings are treated as "no schedule" rather than
 * dividing by zero: step_size == 0 means no decay (base_lr forever), and a cosine whose
 * total_steps <= warmup_steps has no room to decay, so it stays at base_lr after warmup.
 * Past total_steps the cosine holds at min_lr. */
float kd_sched_lr(const kd_sched_cfg *cfg, uint64_t t) {
    KD_ASSERT(cfg != NULL);
    const double base = cfg->base_lr;
    const uint64_t W = cfg->warmup_steps;
    if (W > 0 && t < W) return (float)(base * (double)(t + 1) / (double)W);
    const uint64_t tp = t - W;
    switch (cfg->kind) {
    case KD_SCHED_CONSTANT: return cfg->base_lr;
    case KD_SCHED_STEP:
        if (cfg->step_size == 0) return cfg->base_lr;
        return (float)(base * pow(cfg->gamma, (double)(tp / cfg->step_size)));
    case KD_SCHED_COSINE: {
        if (cfg->total_steps <= W) return cfg->base_lr;
        const uint64_t Tp = cfg->total_steps - W;
        const double frac = (double)(tp < Tp ? tp : Tp) / (double)Tp;
        const double lo = cfg->min_lr;
        return (float)(lo + (base - lo) * (1.0 + cos(KD_PI * frac)) / 2.0);
    }
    }
    KD_ASSERT(!"unknown schedule kind");
    return cfg->base_lr;
}
