/* dataparallel.h - private to src/train: data-parallel training over the ranks of kd_dist.h.
 * Every rank holds the whole model, takes its contiguous shard of each global batch, and one
 * allreduce per step sums the gradients with the values the ranks must agree on; every rank then
 * applies the same update. The step (step.c), the epoch and the run (trainer.c) call these
 * hooks; each is a no-op (or the plain one-process answer) when the job has one rank. */
#ifndef KD_DATAPARALLEL_H
#define KD_DATAPARALLEL_H

#include "train_impl.h"

/* The values packed after the gradients in the step's allreduce (kd_dist_pack). */
enum {
    KD_DP_N,            /* samples trained on */
    KD_DP_SKIPPED,      /* samples left out (data.skip_bad) */
    KD_DP_CORRECT,      /* training-mode top-1 hits among the labelled */
    KD_DP_LABELLED,
    KD_DP_LOSS,         /* loss terms times samples */
    KD_DP_SOFT,
    KD_DP_HARD,
    KD_DP_STOP,         /* ranks whose stop flag (SIGINT/SIGTERM) was set */
    KD_DP_BAD_TEACHER,  /* ranks whose teacher logits were not finite */
    KD_DP_BAD_LOSS,     /* ranks whose loss was not finite */
    KD_DP_TERMS,        /* the named loss terms times samples (KD_MAX_LOSS_TERMS values) */
    KD_DP_N_EXTRA = KD_DP_TERMS + KD_MAX_LOSS_TERMS
};
/* kd_trainer_step's flags for what it found not finite on this rank. */
#define KD_DP_FLAG_TEACHER 1
#define KD_DP_FLAG_LOSS 2

/* With several ranks: the pack buffer, and the model made a replica that reads t->dp.shard;
 * with one, t->dp.on = 0 and nothing else. KD_EIO when out of memory. */
kd_status kd_dp_init(kd_trainer *t, kd_err *err);
void kd_dp_free(kd_trainer *t);

/* The epoch's loader: this rank's shard of every global batch (kd_loader_open_shard). */
kd_status kd_dp_loader_open(kd_loader **ld, const kd_trainer *t, const kd_epoch_pass *e,
                            size_t skip, kd_err *err);
/* Before the step on batch b of e (b is the shard of global batch e->batch): its rows of the
 * global batch, its left-out count and this rank's stop flag. */
void kd_dp_begin_step(kd_trainer *t, const kd_epoch_pass *e, const kd_batch *b);
/* dlogits (n, C) *= n / rows: each rank's loss is its shard's mean, and scaled so every rank's
 * backward gives its part of the global batch mean's gradient (the same factor on every rank,
 * which SyncBatchNorm's backward sums rely on). */
void kd_dp_scale_dlogits(kd_trainer *t, size_t n);
/* The step's one allreduce, after backward on this rank's n samples: afterwards m->grads is
 * the global batch mean's gradient on every rank, *lt the global mean loss terms, *correct,
 * *labelled and *n_step (samples) the sums over the ranks, and r's skipped and stop too (r may
 * be NULL). bad: this rank's KD_DP_FLAG_*; when any rank has one, every rank returns the same
 * KD_ENUMERIC before the update. */
kd_status kd_dp_reduce(kd_trainer *t, size_t n, int bad, kd_loss_terms *lt, size_t *correct,
                       size_t *labelled, size_t *n_step, kd_step_result *r, kd_err *err);

/* This rank's share of samples idx[0..n) (NULL: 0..n-1) for an evaluation whose counts are then
 * summed (kd_dist_sum): *own (*n_own entries) points into idx, or into *alloc (malloc'd, the
 * caller frees it) for idx NULL. One rank: all of them. KD_EIO when out of memory. */
kd_status kd_dp_share(const size_t *idx, size_t n, const size_t **own, size_t *n_own,
                      size_t **alloc, kd_err *err);

/* 1 on every rank when any rank's *stop is set (stop may be NULL). */
int kd_dp_stop(const volatile sig_atomic_t *stop);
/* Before the first epoch: says how many ranks run, and checks that every rank has the same
 * config, data sizes and starting state (weights, moments, RNG, step). At an epoch's end
 * (epoch > 0, 1-based): the same state checksum. A difference is KD_EIO ("ranks disagree ...")
 * on every rank. */
kd_status kd_dp_check(kd_run *t, size_t epoch, kd_err *err);
/* After training, with several ranks: a note with the time this rank spent in collectives. */
void kd_dp_report(kd_run *t);

#endif
