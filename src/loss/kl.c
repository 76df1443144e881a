/* kl.c - the "kl" loss: T^2 * KL(p_t^T || p_s^T) against the teachers' mixture (Hinton 2015),
 * in the arithmetic of the loss it replaces, so today's runs stay bit-identical. */
#include <math.h>

#include "loss_impl.h"

/* KL(p_t || p_s) = sum p_t (log p_t - log p_s) with both logs from log-softmax: a class with
 * p_t = 0 (underflow) contributes 0 * finite = 0, never NaN. */
static void kl_row(const kd_loss_entry *e, const kd_loss_row *r, kd_loss_state *st,
                   double *acc) {
    const kd_loss_batch *b = r->b;
    const double T = e->temperature;
    kd_mix_row_init(&st->t, b->zt, b->weights, b->K, r->i, b->C, T);
    st->sum = kd_row_exp_sum(r->z, NULL, b->C, r->m, T);
    double lse_s = log(st->sum), row = 0.0;
    for (size_t j = 0; j < b->C; j++) {
        double lpt, pt = kd_mix_prob(&st->t, j, &lpt);
        if (b->K == 1) pt = exp(lpt);  /* one teacher: exactly the log-softmax's exp */
        double lps = ((double)r->z[j] - r->m) / T - lse_s;
        if (pt > 0.0) row += pt * (lpt - lps);
    }
    acc[0] += row;
}

/* d(T^2 KL)/dzs = T (p_s^T - p_t^T). */
static double kl_grad(const kd_loss_entry *e, const kd_loss_row *r, const kd_loss_state *st,
                      size_t j, double w) {
    const double T = e->temperature;
    double lpt;
    return w * T * (kd_row_prob(r->z, j, r->m, T, st->sum) - kd_mix_prob(&st->t, j, &lpt));
}

static double kl_finish(const kd_loss_entry *e, size_t k, double sum, double invB) {
    const double T = e->temperature;
    (void)k;
    return T * T * sum * invB;
}

const kd_loss_ops kd_loss_ops_kl = {
    {"kl", KD_LOSS_NEEDS_TEACHER, 1, NULL, "T^2 * KL(p_t^T || p_s^T)"},
    kl_row, kl_grad, kl_finish, NULL, NULL, NULL};
