/* loss_impl.h - private to src/loss: the row arithmetic the losses share (loss.c) and what one
 * loss type's file gives the table (table.c): its name, needs, terms and value + gradient. */
#ifndef KD_LOSS_IMPL_H
#define KD_LOSS_IMPL_H

#include "kd_loss.h"

/* Single-letter dimensions: B = batch rows, C = classes. Rows are stabilised by their max. */
float kd_row_max(const float *z, size_t C);
/* e[j] = exp((z[j] - m) / T) (written when e != NULL); returns sum_j e[j]. e may alias z. */
double kd_row_exp_sum(const float *z, float *e, size_t C, float m, double T);
/* exp(((double)z[j] - m) / T) / sum: one probability, in double. */
double kd_row_prob(const float *z, size_t j, float m, double T, double sum);

/* One row of a batch as an entry sees it. */
typedef struct {
    const kd_loss_batch *b;
    size_t i;        /* the row */
    const float *z;  /* (C) the student's logits of the row */
    float m;         /* their max */
} kd_loss_row;

/* What an entry's row function leaves for its gradient function (each type uses its part). */
typedef struct {
    double sum;     /* sum_j exp((z_j - m) / T) of the student */
    double sum_nt;  /* dkd: the same over the non-target classes, from their max m_nt */
    float m_nt;
    double q, a;    /* dkd: target-class probability of the student and of the teacher */
    double na;      /* dkd: the teacher's non-target mass 1 - a, summed */
    kd_mix_row t;   /* the teacher target at the entry's temperature */
} kd_loss_state;

typedef struct {
    kd_loss_info info;
    /* Prepares st for row r and adds the row's unweighted term values into acc[0..n_terms)
     * (the batch's running sums, so a loss may add per class as today's MSE does). */
    void (*row)(const kd_loss_entry *e, const kd_loss_row *r, kd_loss_state *st, double *acc);
    /* w times d(entry value of the row)/dz_j (the 1/B comes after the sum over entries). */
    double (*grad)(const kd_loss_entry *e, const kd_loss_row *r, const kd_loss_state *st,
                   size_t j, double w);
    /* The batch value of term k from its running sum (invB = 1 / B). */
    double (*finish)(const kd_loss_entry *e, size_t k, double sum, double invB);
    /* The entry's value from its terms; NULL: its one term. */
    double (*value)(const kd_loss_entry *e, const double *terms);
    /* The factor on the entry's weight at a 1-based epoch (a warm-up); NULL: none. */
    double (*scale)(const kd_loss_entry *e, double epoch);
    /* A feature loss (row, grad and finish NULL): its value on B samples of f, adding w times
     * its gradients where f points. */
    double (*feature)(const kd_loss_entry *e, const kd_loss_feature *f, size_t B, double w);
} kd_loss_ops;

/* The types, one file each (kl.c, mse.c, ce.c, dkd.c, hint.c, at.c); table.c lists them in
 * kd_loss_type order. */
extern const kd_loss_ops kd_loss_ops_kl, kd_loss_ops_mse, kd_loss_ops_ce, kd_loss_ops_dkd,
    kd_loss_ops_hint, kd_loss_ops_at;

#endif
