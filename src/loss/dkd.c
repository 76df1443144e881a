/* dkd.c - the "dkd" loss, decoupled knowledge distillation (Zhao et al., CVPR 2022): the KL of
 * the teacher's and the student's binary target / non-target split (TCKD) and the KL of their
 * distributions over the non-target classes (NCKD), at temperature T and times T^2, weighted
 * alpha * TCKD + beta * NCKD, the entry's weight warmed up linearly over warmup_epochs. */
#include <math.h>

#include "loss_impl.h"

/* Student side, in logs from its max so no probability is formed by subtracting from 1:
 *   log q = (z_y - m) / T - lse,  log(1 - q) = (m_nt - m) / T + log sum_nt - lse,
 *   p^_j = exp((z_j - m_nt) / T) / sum_nt   (j != y, the non-target softmax),
 * where m_nt and sum_nt are the max and exp sum over the non-target classes (sum_nt >= 1).
 * Teacher side from the mixture's probabilities p_t: a = p_t(y), 1 - a = sum_{j != y} p_t(j),
 * p^_t(j) = p_t(j) / (1 - a). Classes whose teacher probability is 0 contribute 0. */
static void dkd_row(const kd_loss_entry *e, const kd_loss_row *r, kd_loss_state *st,
                    double *acc) {
    const kd_loss_batch *b = r->b;
    const size_t C = b->C, y = (size_t)b->labels[r->i];
    const double T = e->temperature;
    const float *z = r->z;  /* (C) */
    KD_ASSERT(b->labels[r->i] >= 0 && y < C && C >= 2);
    kd_mix_row_init(&st->t, b->zt, b->weights, b->K, r->i, C, T);
    st->sum = kd_row_exp_sum(z, NULL, C, r->m, T);
    float mn = y == 0 ? z[1] : z[0];
    for (size_t j = 0; j < C; j++)
        if (j != y && z[j] > mn) mn = z[j];
    double snt = 0.0;
    for (size_t j = 0; j < C; j++)
        if (j != y) snt += exp(((double)z[j] - mn) / T);
    st->m_nt = mn;
    st->sum_nt = snt;
    const double lse = log(st->sum), lsnt = log(snt);
    const double lq = ((double)z[y] - r->m) / T - lse;
    const double lnq = ((double)mn - r->m) / T + lsnt - lse;
    st->q = exp(lq);
    double lpt, na = 0.0;
    for (size_t j = 0; j < C; j++)
        if (j != y) na += kd_mix_prob(&st->t, j, &lpt);
    double la, a = kd_mix_prob(&st->t, y, &la);
    st->a = a;
    st->na = na;
    const double lna = log(na);
    double tckd = 0.0, nckd = 0.0;
    if (a > 0.0) tckd += a * (la - lq);
    if (na > 0.0) {
        tckd += na * (lna - lnq);
        for (size_t j = 0; j < C; j++) {
            double pt = j == y ? 0.0 : kd_mix_prob(&st->t, j, &lpt);
            if (pt > 0.0) nckd += pt / na * ((lpt - lna) - (((double)z[j] - mn) / T - lsnt));
        }
    }
    acc[0] += tckd;
    acc[1] += nckd;
}

/* With d = q - a: d(T^2 TCKD)/dz_y = T d, d(T^2 TCKD)/dz_j = -T d p^_j (j != y);
 * d(T^2 NCKD)/dz_j = T (p^_j - p^_t(j)) (j != y), 0 for y. */
static double dkd_grad(const kd_loss_entry *e, const kd_loss_row *r, const kd_loss_state *st,
                       size_t j, double w) {
    const double T = e->temperature, d = st->q - st->a;
    if (j == (size_t)r->b->labels[r->i]) return w * T * (e->alpha * d);
    double lpt, ps = exp(((double)r->z[j] - st->m_nt) / T) / st->sum_nt;
    double pt = st->na > 0.0 ? kd_mix_prob(&st->t, j, &lpt) / st->na : 0.0;
    return w * T * (e->alpha * -d * ps + e->beta * (ps - pt));
}

static double dkd_finish(const kd_loss_entry *e, size_t k, double sum, double invB) {
    const double T = e->temperature;
    (void)k;
    return T * T * sum * invB;
}

static double dkd_value(const kd_loss_entry *e, const double *terms) {
    return (double)e->alpha * terms[0] + (double)e->beta * terms[1];
}

/* mdistiller's min(epoch / warmup, 1), epoch 1-based. */
static double dkd_scale(const kd_loss_entry *e, double epoch) {
    if (!(e->warmup_epochs > 0.0)) return 1.0;
    return epoch >= e->warmup_epochs ? 1.0 : epoch / e->warmup_epochs;
}

static const char *const dkd_terms[] = {"tckd", "nckd"};

const kd_loss_ops kd_loss_ops_dkd = {
    {"dkd", KD_LOSS_NEEDS_TEACHER | KD_LOSS_NEEDS_LABELS | KD_LOSS_NEEDS_ALL_LOGITS, 2,
     dkd_terms, "T^2 * (alpha * TCKD + beta * NCKD)"},
    dkd_row, dkd_grad, dkd_finish, dkd_value, dkd_scale, NULL};
