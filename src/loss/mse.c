/* mse.c - the "mse" loss: mean over the batch of ||z_t - z_s||^2 against one teacher's raw
 * logits (an ensemble's target is a mixture of probabilities, which has no logits). */
#include "loss_impl.h"

static void mse_row(const kd_loss_entry *e, const kd_loss_row *r, kd_loss_state *st,
                    double *acc) {
    const kd_loss_batch *b = r->b;
    const float *zt = b->zt[0] + r->i * b->C;  /* (C) */
    (void)e;
    (void)st;
    KD_ASSERT(b->K == 1);
    /* Added per class into the batch's sum, as the loss this replaces did (bit-identity). */
    for (size_t j = 0; j < b->C; j++) {
        double d = (double)zt[j] - r->z[j];
        acc[0] += d * d;
    }
}

/* d(||zt - zs||^2)/dzs = 2 (zs - zt). */
static double mse_grad(const kd_loss_entry *e, const kd_loss_row *r, const kd_loss_state *st,
                       size_t j, double w) {
    const float *zt = r->b->zt[0] + r->i * r->b->C;  /* (C) */
    (void)e;
    (void)st;
    return w * 2.0 * ((double)r->z[j] - zt[j]);
}

static double mse_finish(const kd_loss_entry *e, size_t k, double sum, double invB) {
    (void)e;
    (void)k;
    return sum * invB;
}

const kd_loss_ops kd_loss_ops_mse = {
    {"mse", KD_LOSS_NEEDS_TEACHER | KD_LOSS_NEEDS_ALL_LOGITS | KD_LOSS_ONE_TEACHER, 1, NULL,
     "mean ||z_t - z_s||^2"},
    mse_row, mse_grad, mse_finish, NULL, NULL, NULL};
