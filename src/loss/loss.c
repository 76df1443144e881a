/* loss.c - temperature softmax / log-softmax, cross-entropy with its closed-form gradient, and
 * the teacher mixture's probabilities: the row arithmetic every loss of the table shares
 * (docs/design.md). */
#include <math.h>

#include "loss_impl.h"

/* Single-letter dimensions used below: B = batch rows, C = classes. All rows are stabilised
 * by subtracting their max before exp, so |z| ~ 1e4 with T as small as 0.5 stays finite:
 * the largest exponent is exactly 0 and the sum is in [1, C]. Sums are kept in double. */

float kd_row_max(const float *z, size_t C) {
    float m = z[0];
    for (size_t j = 1; j < C; j++)
        if (z[j] > m) m = z[j];
    return m;
}

/* e[j] = exp((z[j] - m) / T) (written when e != NULL); returns sum_j e[j]. e may alias z. */
double kd_row_exp_sum(const float *z, float *e, size_t C, float m, double T) {
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
        float m = kd_row_max(zi, C);
        /* Each z[j] is read before p[j] is written, so z == p works. */
        double inv = 1.0 / kd_row_exp_sum(zi, pi, C, m, T);
        for (size_t j = 0; j < C; j++) pi[j] = (float)(pi[j] * inv);
    }
}

void kd_log_softmax(const float *z, float *lp, size_t B, size_t C, float T) {
    KD_ASSERT(T > 0.0f && C > 0);
    for (size_t i = 0; i < B; i++) {
        const float *zi = z + i * C;  /* (C) */
        float *li = lp + i * C;       /* (C) */
        float m = kd_row_max(zi, C);
        /* log softmax = (z - m)/T - log sum exp((z - m)/T); computed directly rather than as
         * log(softmax), so tiny probabilities keep their (large negative) log exactly. */
        double lse = log(kd_row_exp_sum(zi, NULL, C, m, T));
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
        float m = kd_row_max(zi, C);
        double sum = kd_row_exp_sum(zi, NULL, C, m, 1.0);
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
double kd_row_prob(const float *z, size_t j, float m, double T, double sum) {
    return exp(((double)z[j] - m) / T) / sum;
}

void kd_softmax_row_f64(const float *z, float *p, size_t C, float T) {
    KD_ASSERT(T > 0.0f && C > 0);
    float m = kd_row_max(z, C);
    double sum = kd_row_exp_sum(z, NULL, C, m, T);
    for (size_t j = 0; j < C; j++) p[j] = (float)kd_row_prob(z, j, m, T, sum);
}

void kd_mix_row_init(kd_mix_row *r, const float *const *zt, const float *weights, size_t K,
                     size_t i, size_t C, double T) {
    KD_ASSERT(K >= 1 && K <= KD_MAX_TEACHERS && T > 0.0);
    r->K = K;
    r->T = T;
    for (size_t k = 0; k < K; k++) {
        r->w[k] = weights ? (double)weights[k] : 1.0;
        r->z[k] = zt[k] + i * C;
        r->m[k] = kd_row_max(r->z[k], C);
        r->sum[k] = kd_row_exp_sum(r->z[k], NULL, C, r->m[k], T);
        r->lse[k] = log(r->sum[k]);
    }
}

double kd_mix_prob(const kd_mix_row *r, size_t j, double *lp) {
    const double T = r->T;
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
