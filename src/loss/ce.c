/* ce.c - the "ce" loss: cross-entropy of the hard labels, -log softmax(z_s)_y, batch mean. */
#include <math.h>

#include "loss_impl.h"

static void ce_row(const kd_loss_entry *e, const kd_loss_row *r, kd_loss_state *st,
                   double *acc) {
    const int32_t y = r->b->labels[r->i];
    (void)e;
    /* Labels are validated against the class count by the data loader. */
    KD_ASSERT(y >= 0 && (size_t)y < r->b->C);
    st->sum = kd_row_exp_sum(r->z, NULL, r->b->C, r->m, 1.0);
    /* CE = -log p_y = lse - (z_y - m) */
    acc[0] += log(st->sum) - ((double)r->z[y] - r->m);
}

static double ce_grad(const kd_loss_entry *e, const kd_loss_row *r, const kd_loss_state *st,
                      size_t j, double w) {
    (void)e;
    return w * (kd_row_prob(r->z, j, r->m, 1.0, st->sum) -
                (j == (size_t)r->b->labels[r->i] ? 1.0 : 0.0));
}

static double ce_finish(const kd_loss_entry *e, size_t k, double sum, double invB) {
    (void)e;
    (void)k;
    return sum * invB;
}

const kd_loss_ops kd_loss_ops_ce = {
    {"ce", KD_LOSS_NEEDS_LABELS, 1, NULL, "CE(y, p_s)"}, ce_row, ce_grad, ce_finish, NULL, NULL,
    NULL};
