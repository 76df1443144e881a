/* loss.c - temperature softmax / log-softmax, cross-entropy and the distillation loss
 * (docs/design.md), each with its closed-form gradient with respect to the logits. */
#include <math.h>

#include "kd_common.h"
#include "kd_loss.h"

/* Single-letter dimensions used below: B = batch rows, C = classes. All rows are stabilised
 * by subtracting their max before exp, so |z| ~ 1e4 with T as small as 0.5 stays finite:
 * the largest exponent is exactly 0 and the sum is in [1, C]. Sums are kept in double. */

static float row_max(const float *z, size_t C) {
    float m = z[0];
    for (size_t j = 1; j < C; j++)
        if (z[j] > m) m = z[j];
    return m;
}

/* e[j] = exp((z[j] - m) / T) (written when e != NULL); returns sum_j e[j]. e may alias z. */
static double row_exp_sum(const float *z, float *e, size_t C, float m, double T) {
    double sum = 0.0;
    for (size_t j = 0; j < C; j++) {
        double x = exp(((double)z[j] - m) / T);
        sum += x;
        if (e) e[j] = (float)x;
    }
    return sum;
}

void kd_softmax(const float *z, float *p, size_t B, size_t C, float T) {
    KD_ASSERT(T > 0.0f && C > 0);
    for (size_t i = 0; i < B; i++) {
        const float *zi = z + i * C;  /* (C) */
        float *pi = p + i * C;        /* (C) */
        float m = row_max(zi, C);
        /* Each z[j] is read before p[j] is written, so z == p works. */
        double inv = 1.0 / row_exp_sum(zi, pi, C, m, T);
        for (size_t j = 0; j < C; j++) pi[j] = (float)(pi[j] * inv);
    }
}

void kd_log_softmax(const float *z, float *lp, size_t B, size_t C, float T) {
    KD_ASSERT(T > 0.0f && C > 0);
    for (size_t i = 0; i < B; i++) {
        const float *zi = z + i * C;  /* (C) */
        float *li = lp + i * C;       /* (C) */
        float m = row_max(zi, C);
        /* log softmax = (z - m)/T - log sum exp((z - m)/T); computed directly rather than as
         * log(softmax), so tiny probabilities keep their (large negative) log exactly. */
        double lse = log(row_exp_sum(zi, NULL, C, m, T));
        for (size_t j = 0; j < C; j++) li[j] = (float)(((double)zi[j] - m) / T - lse);
    }
}

double kd_loss_ce(const float *z, const int32_t *y, size_t B, size_t C, float *dz) {
    KD_ASSERT(y != NULL && B > 0 && C > 0);
    double loss = 0.0, invB = 1.0 / (double)B;
    for (size_t i = 0; i < B; i++) {
        const float *zi = z + i * C;  /* (C) */
        /* Labels are validated against the class count by the data loader. */
        KD_ASSERT(y[i] >= 0 && (size_t)y[i] < C);
        float m = row_max(zi, C);
        double sum = row_exp_sum(zi, NULL, C, m, 1.0);
        /* CE = -log p_y = lse - (z_y - m) */
        loss += log(sum) - ((double)zi[y[i]] - m);
        if (dz) {
            float *di = dz + i * C;  /* (C) */
            double inv = 1.0 / sum;
            for (size_t j = 0; j < C; j++) {
                double p = exp((double)zi[j] - m) * inv;
                di[j] = (float)((p - (j == (size_t)y[i] ? 1.0 : 0.0)) * invB);
            }
        }
    }
    return loss * invB;
}

/* exp(((double)z[j] - m) / T) / sum: one probability, in double. */
static double prob(const float *z, size_t j, float m, double T, double sum) {
    return exp(((double)z[j] - m) / T) / sum;
}

void kd_softmax_row_f64(const float *z, float *p, size_t C, float T) {
    KD_ASSERT(T > 0.0f && C > 0);
    float m = row_max(z, C);
    double sum = row_exp_sum(z, NULL, C, m, T);
    for (size_t j = 0; j < C; j++) p[j] = (float)prob(z, j, m, T, sum);
}

/* Teacher target of one row at temperature T: one teacher's softmax, or the weighted mixture of
 * several teachers' softmaxes (Hinton 2015, section 2: an ensemble's soft target is the
 * average of its members' probabilities, not of their logits). Per teacher k: its row zt[k],
 * max m[k] and sum[k] = sum_j exp((zt[k][j] - m[k]) / T). */
typedef struct {
    size_t K;
    const float *z[KD_MAX_TEACHERS];
    float m[KD_MAX_TEACHERS];
    double sum[KD_MAX_TEACHERS], lse[KD_MAX_TEACHERS], w[KD_MAX_TEACHERS];
} target_row;

/* p_t(j) in double, and its log in *lp. One teacher: log-softmax directly (exact for tiny
 * probabilities); a mixture: log of the mixed probability (-inf where it underflows to 0). */
static double target_prob(const target_row *r, size_t j, double T, double *lp) {
    if (r->K == 1) {
        *lp = ((double)r->z[0][j] - r->m[0]) / T - r->lse[0];
        return exp(((double)r->z[0][j] - r->m[0]) / T) / r->sum[0];
    }
    double p = 0.0;
    for (size_t k = 0; k < r->K; k++)
        p += r->w[k] * exp(((double)r->z[k][j] - r->m[k]) / T) / r->sum[k];
    *lp = log(p);
    return p;
}

kd_loss_terms kd_loss_distill(const kd_distill_cfg *cfg, const float *zs, const float *zt,
                              const int32_t *labels, size_t B, size_t C, float *dzs,
                              float *scratch) {
    /* The scratch (3 * B * C floats in the contract) is not used: caching the exps as floats
     * would cost T * 6e-8 relative precision in the cancellation T * (p_s^T - p_t^T), so the
     * few B * C exps are recomputed in double instead (negligible next to the sgemms). */
    (void)scratch;
    return kd_loss_distill_mix(cfg, zs, &zt, NULL, 1, labels, B, C, dzs);
}

kd_loss_terms kd_loss_distill_mix(const kd_distill_cfg *cfg, const float *zs,
                                  const float *const *zt, const float *weights, size_t K,
                                  const int32_t *labels, size_t B, size_t C, float *dzs) {
    KD_ASSERT(cfg && zs && zt && B > 0 && C > 0 && K >= 1 && K <= KD_MAX_TEACHERS);
    KD_ASSERT(cfg->alpha >= 0.0f && cfg->alpha <= 1.0f);
    /* Unlabeled transfer sets are only legal for a pure soft loss; the caller enforces it. */
    KD_ASSERT(labels != NULL || cfg->alpha == 1.0f);
    KD_ASSERT(cfg->kind == KD_DISTILL_MSE || cfg->temperature > 0.0f);
    /* A mixture of probabilities has no logits to match: MSE takes one teacher. */
    KD_ASSERT(cfg->kind == KD_DISTILL_KL || K == 1);

    const double alpha = cfg->alpha, T = cfg->temperature, invB = 1.0 / (double)B;
    const int kl = cfg->kind == KD_DISTILL_KL;
    /* The hard term is reported whenever labels exist (even at alpha = 1, for the log). */
    const int use_hard = labels != NULL;
    double soft = 0.0, hard = 0.0;
    target_row tr;
    tr.K = K;
    for (size_t k = 0; k < K; k++) tr.w[k] = weights ? (double)weights[k] : 1.0;
    for (size_t i = 0; i < B; i++) {
        const float *zsi = zs + i * C;  /* (C) */
        const float *zti = zt[0] + i * C;  /* (C) the first teacher: MSE's target */
        float ms = row_max(zsi, C);
        double sum_s = 0.0, sum_1 = 0.0;
        if (kl) {
            for (size_t k = 0; k < K; k++) {
                tr.z[k] = zt[k] + i * C;
                tr.m[k] = row_max(tr.z[k], C);
                tr.sum[k] = row_exp_sum(tr.z[k], NULL, C, tr.m[k], T);
                tr.lse[k] = log(tr.sum[k]);
            }
            sum_s = row_exp_sum(zsi, NULL, C, ms, T);
            double lse_s = log(sum_s), row = 0.0;
            /* KL(p_t || p_s) = sum p_t (log p_t - log p_s) with both logs from log-softmax:
             * a class with p_t = 0 (underflow) contributes 0 * finite = 0, never NaN. */
            for (size_t j = 0; j < C; j++) {
                double lpt, pt = target_prob(&tr, j, T, &lpt);
                if (K == 1) pt = exp(lpt);  /* one teacher: exactly the log-softmax's exp */
                double lps = ((double)zsi[j] - ms) / T - lse_s;
                if (pt > 0.0) row += pt * (lpt - lps);
            }
            soft += row;
        } else {
            for (size_t j = 0; j < C; j++) {
                double d = (double)zti[j] - zsi[j];
                soft += d * d;
            }
        }
        if (use_hard) {
            /* Labels are validated against the class count by the data loader. */
            KD_ASSERT(labels[i] >= 0 && (size_t)labels[i] < C);
            sum_1 = row_exp_sum(zsi, NULL, C, ms, 1.0);
            hard += log(sum_1) - ((double)zsi[labels[i]] - ms);
        }
        if (!dzs) continue;
        float *di = dzs + i * C;  /* (C) */
        for (size_t j = 0; j < C; j++) {
            /* d(T^2 KL)/dzs = T (p_s^T - p_t^T); d(||zt - zs||^2)/dzs = 2 (zs - zt). */
            double lpt, g = kl ? alpha * T * (prob(zsi, j, ms, T, sum_s) - target_prob(&tr, j, T, &lpt))
                               : alpha * 2.0 * ((double)zsi[j] - zti[j]);
            if (use_hard && alpha < 1.0)
                g += (1.0 - alpha) *
                     (prob(zsi, j, ms, 1.0, sum_1) - (j == (size_t)labels[i] ? 1.0 : 0.0));
            di[j] = (float)(g * invB);
        }
    }
    kd_loss_terms t;
    t.soft = (kl ? T * T : 1.0) * soft * invB;
    t.hard = use_hard ? hard * invB : 0.0;
    t.total = alpha * t.soft + (1.0 - alpha) * t.hard;
    return t;
}
