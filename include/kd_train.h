/* kd_train.h - training: the step (teacher forward, student forward, loss, backward, optimizer
 * update) as one object that the run loop, the benchmarks and the tests all call, the epoch over
 * a loader, and the whole run from a resolved kd_config (run folder with config.json,
 * metrics.jsonl, last/best checkpoints; exact resume). No command-line knowledge: progress goes
 * to a callback, errors to kd_err. */
#ifndef KD_TRAIN_H
#define KD_TRAIN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"
#include "kd_config.h"
#include "kd_data.h"
#include "kd_dist.h"
#include "kd_loss.h"
#include "kd_nn.h"
#include "kd_optim.h"
#include "kd_rng.h"
#include "kd_teacher.h"

/* One epoch's numbers, as written to metrics.jsonl (NaN is written as null). */
typedef struct {
    size_t epoch;           /* 1-based */
    double loss;            /* mean total loss over the epoch's samples */
    double soft, hard;      /* mean soft (teacher) and hard (label) terms; soft 0 without teacher */
    double train_acc;       /* running accuracy of the training forward passes (dropout on);
                               NaN when labels are withheld (use_labels false) */
    double val_acc;         /* NaN without a labelled validation set */
    double lr;              /* learning rate of the epoch's last step */
    double samples_per_s;   /* training samples / seconds in training steps */
    double seconds;         /* wall time of the epoch, validation and checkpoints included */
    double skipped;         /* training samples left out: undecodable images (data.skip_bad) */
    /* The loss list's named terms, written after the fields above under their keys
     * (kd_loss_plan: "loss.kl", "loss.dkd.tckd", ...): term[k] is the mean over the epoch's
     * samples of keys[k]'s batch means; NaN when not known (null in metrics.jsonl). */
    size_t n_terms;
    const char (*keys)[KD_LOSS_KEY_MAX];  /* (n_terms) borrowed */
    double term[KD_MAX_LOSS_TERMS];
} kd_epoch_metrics;

/* ---- metrics.jsonl read back (src/train/runfolder.c, beside its writer) ---- */

/* A double field of a struct, by its JSON name; optional: files written before the field
 * existed may lack it. */
typedef struct {
    const char *name;
    size_t offset;
    int optional;
} kd_double_field;

/* The fields of a metrics.jsonl line after "epoch", in the order they are written: the one list
 * the writer, the reader and `distill plot` use. */
extern const kd_double_field kd_epoch_fields[];
extern const size_t kd_n_epoch_fields;
/* Index into kd_epoch_fields of a field name; -1 if there is none. */
int kd_epoch_field_find(const char *name);
/* Field `field` (an index into kd_epoch_fields) of m; NaN for an index out of range. */
double kd_epoch_field_get(const kd_epoch_metrics *m, size_t field);
/* The metric called name: a field of kd_epoch_fields or one of m's loss terms by key; NaN when
 * m has neither. */
double kd_epoch_metric_get(const kd_epoch_metrics *m, const char *name);
/* The index of m's loss term called key; -1 if m has none. */
int kd_epoch_term_find(const kd_epoch_metrics *m, const char *key);

#define KD_MAX_METRICS_BYTES ((size_t)64 << 20)
#define KD_MAX_EPOCH_LINE 1e9
/* Reads a run's metrics.jsonl: one JSON object per line (blank lines skipped) with "epoch", an
 * integer in 1..1e9 larger than the previous line's, and each field of kd_epoch_fields a number
 * or null (null or absent reads as NaN; other keys are ignored), and the loss terms: keys
 * "loss.*" with a number or null, at most KD_MAX_LOSS_TERMS different ones in the file. Every
 * row has every term key of the file (NaN on a line without it), in the order first seen; the
 * keys live in the same block as the rows. *rows (malloc'd, caller frees: one free) holds the
 * n_rows >= 1 epochs in file order. KD_EINPUT naming the file, and the line and field,
 * for a missing or unreadable file, a file over KD_MAX_METRICS_BYTES, a line that is not one
 * complete JSON object (truncated), a bad epoch or field, or no epochs at all. */
kd_status kd_metrics_read(const char *path, kd_epoch_metrics **rows, size_t *n_rows,
                          kd_err *err);

typedef enum {
    KD_EV_SETUP,        /* data and models ready: model, n_train, n_val, n_batches, teacher_model */
    KD_EV_WARNING,      /* msg: something the user must see ("WARNING: ...") */
    KD_EV_NOTE,         /* msg: an informational line */
    KD_EV_TEACHER,      /* value: teacher validation accuracy (NaN if no labelled validation);
                           msg "teacher" or "ensemble" (the mixture of several teachers) */
    KD_EV_EPOCH_BEGIN,  /* epoch, n_epochs, batch (batches already done when resuming mid-epoch) */
    KD_EV_BATCH,        /* after each optimizer step: batch, running_loss, samples_per_s */
    KD_EV_EPOCH_END,    /* metrics */
    KD_EV_EVAL,         /* msg names the set being evaluated ("test"); emitted before the pass */
    KD_EV_CACHE         /* building a cache: batch entries done of n_batches, view epoch of
                           n_epochs, samples_per_s, epoch_seconds since the build began */
} kd_train_event_kind;

typedef struct {
    kd_train_event_kind kind;
    const char *msg;
    size_t epoch, n_epochs;          /* 1-based current epoch, total epochs */
    size_t batch, n_batches;         /* batches done in this epoch, batches per epoch */
    uint64_t step;                   /* optimizer steps done in the whole run */
    double running_loss;             /* mean loss of this epoch so far */
    double samples_per_s;            /* this epoch so far */
    double epoch_seconds;            /* since this epoch (or the resume) began */
    double value;
    const kd_epoch_metrics *metrics; /* KD_EV_EPOCH_END */
    const kd_model *model;           /* KD_EV_SETUP: the model being trained */
    const kd_model *teacher;         /* KD_EV_SETUP: the teacher or NULL */
    size_t n_train, n_val, n_test;   /* KD_EV_SETUP */
} kd_train_event;

typedef void (*kd_train_progress_fn)(const kd_train_event *ev, void *user);

typedef struct {
    const kd_config *cfg;             /* resolved config (required) */
    const char *out_dir;              /* run folder; NULL = cfg->out_dir. Created if missing. */
    const char *resume;               /* checkpoint file to resume from, or NULL */
    int overwrite;                    /* a fresh run into a folder holding a run moves that
                                         folder to DIR.N first (else: refused, KD_EUSAGE) */
    const volatile sig_atomic_t *stop;/* when it becomes nonzero: finish the step, write a
                                         resumable last.safetensors, return (interrupted = 1) */
    kd_train_progress_fn progress;    /* may be NULL */
    void *user;
} kd_train_opts;

typedef struct {
    int interrupted;          /* stopped by *stop: last.safetensors holds the exact resume state */
    size_t epochs_done;       /* completed epochs */
    uint64_t steps;
    size_t n_params, teacher_params;
    double val_acc;           /* last epoch's validation accuracy (NaN if none) */
    double best_val;          /* best validation accuracy (NaN if none) */
    double test_acc;          /* the FINAL model's test accuracy (NaN without a test source) */
    double best_test_acc;     /* best.safetensors' test accuracy (NaN if none) */
    double teacher_val_acc, teacher_test_acc;  /* NaN without a teacher / the set */
    double seconds;           /* wall time of this invocation */
    double samples_per_s;     /* mean training throughput of this invocation */
    int threads;              /* threads in force (train.threads, 0 resolved to the default) */
    char out_dir[KD_PATH_MAX];
    char last_path[KD_PATH_MAX];  /* "" if no checkpoint has been written */
    char best_path[KD_PATH_MAX];
} kd_train_result;

/* Runs a whole training job. Status KD_ENUMERIC on NaN/Inf ("numeric failure: loss is NaN at
 * epoch E step S (batch B); last good checkpoint kept: PATH"); nothing poisoned is written.
 * res is filled as far as the run got (also on failure). */
kd_status kd_train_run(const kd_train_opts *opts, kd_train_result *res, kd_err *err);

/* ---- The soft-target cache of a config (src/train/logits.c) ---- */
typedef struct {
    const kd_config *cfg;             /* resolved, with teacher.cache */
    const char *out;                  /* the file to write; NULL = cfg->cache.path */
    int force;                        /* replace an existing file (else KD_EUSAGE) */
    kd_train_progress_fn progress;    /* KD_EV_CACHE, notes and warnings; may be NULL */
    void *user;
} kd_logits_opts;

typedef struct {
    char path[KD_PATH_MAX];
    size_t n_rows, views, n_teachers;
    long long bytes;                  /* the file's size */
    double seconds, samples_per_s;    /* whole command; entries (sample x view) per second */
    int threads;
} kd_logits_result;

/* Builds the cache the config describes: opens the data and the split as `train` does, loads
 * the teachers, records their validation accuracy, and writes every training sample's logits
 * (each view, each teacher) atomically. Errors as train's setup, KD_EUSAGE without
 * teacher.cache or when the file exists and force is 0. */
kd_status kd_logits_run(const kd_logits_opts *o, kd_logits_result *res, kd_err *err);

/* "loss = 0.9 * T^2 * KL(p_t^T || p_s^T) + 0.1 * CE(y, p_s), T = 4" for cfg; returns buf. */
const char *kd_train_loss_formula(const kd_config *cfg, char *buf, size_t cap);

/* Top-1 accuracy of m (eval mode) on samples idx[0..n) of ds (idx NULL = all), in batches of at
 * most m->batch_cap (reserved by the caller). Labels < 0 are skipped; *acc is NaN if none. */
kd_status kd_train_accuracy(kd_model *m, kd_dataset *ds, const size_t *idx, size_t n,
                            double *acc, kd_err *err);

/* ---- The training step and the epoch (src/train/step.c) ---- */

/* What a trainer works on. Pointers are borrowed and must outlive the trainer. */
typedef struct {
    kd_model *model;                /* being trained: built with gradients and moments */
    kd_teacher_set *teachers;       /* online teachers or a cache; NULL: `teacher` alone */
    kd_model *teacher;              /* one inference-only teacher (when teachers is NULL), or NULL */
    const kd_distill_cfg *distill;  /* the loss when there is a teacher (when losses is NULL) */
    const kd_loss_list *losses;     /* the loss list when there is a teacher; NULL: distill's */
    const kd_optim_cfg *optim;
    const kd_sched_cfg *sched;      /* learning rate of step t (0-based) */
    const kd_augment *augment;      /* NULL or inactive: none */
    kd_shape sample_shape;          /* with augment: the samples' shape [C, H, W] */
    size_t batch_cap;               /* largest batch a step will get */
    kd_rng *rng;                    /* the run's RNG: augmentation draws, dropout masks; a copy
                                       seeds the hint adapters (the run's stream is not drawn) */
    kd_init_kind init;              /* the hint adapters' initialisation (the model's) */
} kd_trainer_setup;

/* Data-parallel training when the job has several ranks (src/train/dataparallel.c): what the
 * step needs beside its batch, which is then this rank's shard of a global batch. */
typedef struct {
    int on;              /* kd_dist_size() > 1 */
    kd_shard shard;      /* this step's rows of the global batch (kd_trainer_epoch sets them) */
    kd_dist_pack pack;   /* the step's one allreduce: gradients, then KD_DP_N_EXTRA values */
    size_t skipped;      /* samples of this step's shard left out (data.skip_bad) */
    int stop;            /* this rank's stop flag when the step began */
} kd_trainer_dp;

/* A feature loss entry of the plan (hint, at): its observed values and its adapter. */
typedef struct {
    int on;
    size_t sid, tid;       /* the student's and the teacher's observed value */
    kd_model *teacher;     /* the member whose value it reads */
    size_t aw, ab;         /* hint: the adapter's weight and bias offsets in model->params */
} kd_feature_slot;

/* One step's buffers, allocated once by kd_trainer_init: a step allocates nothing. */
typedef struct {
    kd_trainer_setup s;
    int use_teacher;   /* a teacher, and a teacher loss of weight > 0 (alpha 0 never needs its
                          logits) */
    unsigned needs;    /* what the losses of weight > 0 need (KD_LOSS_NEEDS_*) */
    kd_loss_plan plan; /* the losses and their term keys: the list, or plain CE without teacher */
    double epoch;      /* the 1-based epoch being trained (warm-ups); kd_trainer_epoch sets it */
    size_t n_classes;
    float *dlogits;    /* (batch_cap, n_classes) loss gradient */
    float *aug_x;      /* (batch_cap, numel(sample_shape)) augmented batch, or NULL */
    kd_teacher_set one;        /* `teacher` as a set of one */
    kd_teacher_set *ts;        /* the teachers in use (NULL without) */
    uint32_t *views;           /* (batch_cap) each sample's view, with a cache of views */
    const float *zt[KD_MAX_TEACHERS];  /* this step's teacher logits */
    uint64_t step;     /* optimizer steps taken; a resumed run sets it */
    /* The model's gradients are all 0: the last step's optimizer zeroed them as it used them
     * (kd_optim_step_and_zero). Otherwise (a new trainer, a step that stopped between backward
     * and the update) the next step zeroes them first. */
    int grads_clean;
    kd_trainer_dp dp;
    /* Feature losses (src/train/features.c): per plan entry, its values and adapter, and the
     * inputs kd_loss_eval gets (n_feat entries on; scratch shared by them). */
    size_t n_feat;
    kd_feature_slot fslot[KD_MAX_LOSSES];
    kd_loss_feature feat[KD_MAX_LOSSES];
    double *fscratch;
    float *fadapted;   /* (batch_cap, max Ct * P) the hint adapters' output */
} kd_trainer;

typedef struct {
    kd_loss_terms loss;      /* batch means; soft 0 without the teacher, hard 0 without labels;
                                term[k] of the trainer's plan.key[k] */
    size_t correct;          /* labelled samples whose training-mode argmax is their label */
    size_t labelled;         /* samples with a label >= 0 (0 when y is NULL) */
    float lr;                /* learning rate used */
    double grad_norm;        /* global L2 norm before clipping */
    /* Over every rank of a data-parallel job (this process's batch with one rank): */
    size_t n;                /* samples the step trained on */
    size_t skipped;          /* samples of the global batch left out (data.skip_bad; 0 with one
                                rank, where kd_trainer_epoch counts them from the loader) */
    int stop;                /* some rank's stop flag was set (every rank sees the same) */
} kd_step_result;

/* Checks the setup, reserves both models for batch_cap and allocates the step's buffers (with
 * several ranks also the allreduce buffer, and the model becomes a replica reading t->dp.shard,
 * so t must stay where it is until kd_trainer_free).
 * KD_EUSAGE for a model without gradients, a teacher with another class count or augmentation
 * of samples that are not [C, H, W]; KD_EIO out of memory. kd_trainer_free is safe after a
 * failure. */
kd_status kd_trainer_init(kd_trainer *t, const kd_trainer_setup *s, kd_err *err);
void kd_trainer_free(kd_trainer *t);  /* NULL-safe, idempotent */

/* One optimizer step on n <= batch_cap samples x (n, D) with labels y (n; NULL = no label term,
 * then the loss must be the teacher's alone, alpha 1) and their indices in the training source
 * idx (n; needed only when the teachers are a cache, may be NULL otherwise):
 *   augment (draws from rng; with a cache of V views: a view per sample drawn from rng, the
 *   sample shown as that view, kd_augment_view) -> teacher logits (each online teacher's
 *   eval-mode forward, finite; or the cache's rows) ->
 *   student forward (training mode) -> loss and dlogits -> zero grad -> backward ->
 *   lr = sched(step) -> kd_optim_step (returns the gradient norm) -> step++.
 * KD_ENUMERIC, with err->msg "teacher logits contain NaN/Inf", "loss is NaN" (or Inf) or
 * "gradient norm is NaN" (or Inf); the caller adds where it happened. Before the update the
 * parameters are untouched (a bad teacher or loss); a bad gradient norm is found after the
 * update, so the parameters must then be discarded. r may be NULL.
 * Data-parallel (t->dp.on, set by kd_trainer_init when the job has several ranks): x is this
 * rank's shard, rows t->dp.shard.row0.. of a global batch of t->dp.shard.rows (n may be 0),
 * idx the shard's sample indices; augmentation, cached views and dropout draw for the whole
 * global batch, batch norm sums its statistics over the ranks, and one allreduce after backward
 * makes the gradient the global batch mean on every rank and r (loss, counts, n, skipped, stop)
 * the global step's; a non-finite value on any rank is the same KD_ENUMERIC on every rank,
 * before the update. */
kd_status kd_trainer_step(kd_trainer *t, const float *x, const int32_t *y, const size_t *idx,
                          size_t n, kd_step_result *r, kd_err *err);

/* Running sums of one epoch; saved in an interrupted checkpoint so the resumed epoch reports
 * the same metrics as an uninterrupted one. */
typedef struct {
    double loss, soft, hard;   /* sums of per-batch means times batch size */
    double correct, labelled;  /* training accuracy counts */
    double seen;               /* samples */
    double train_seconds;      /* time in training steps (loading included) */
    double seconds;            /* wall time of the epoch so far */
    double skipped;            /* samples left out: undecodable images (data.skip_bad) */
    /* The loss plan's named terms (0, NULL, NULL: not summed): storage the caller allocates
     * with the run, as many as the plan has, so a step allocates nothing. term[k] sums keys[k]'s
     * batch means times batch size; NaN when unknown (a resume from a checkpoint without them). */
    size_t n_terms;
    const char (*keys)[KD_LOSS_KEY_MAX];  /* (n_terms) borrowed: the trainer's plan keys */
    double *term;                         /* (n_terms) borrowed */
} kd_epoch_sums;

/* One pass of kd_trainer_epoch: the inputs, and where it got to. */
typedef struct {
    kd_dataset *ds;
    const size_t *order;          /* the epoch's sample order (n entries) */
    size_t n;
    int use_labels;               /* hand the batches' labels to the step (else NULL) */
    size_t epoch, n_epochs;       /* 1-based epoch and total, for KD_EV_BATCH */
    size_t n_batches;             /* batches per epoch, for KD_EV_BATCH and the stop rule */
    double t_start;               /* kd_now() when the epoch began (for epoch_seconds) */
    const volatile sig_atomic_t *stop;  /* may be NULL */
    kd_train_progress_fn progress;      /* may be NULL */
    void *user;
    size_t batch;                 /* in: batches of the epoch already done (skipped);
                                     out: batches done */
    kd_epoch_sums sums;           /* in/out: accumulated over the steps */
    float lr;                     /* out: learning rate of the last step */
    int stopped;                  /* out: *stop was seen before the epoch's last batch */
} kd_epoch_pass;

/* Runs the steps of one epoch over order[batch * batch_cap ..] in batches of batch_cap,
 * accumulating sums and emitting KD_EV_BATCH after each step; after a step that finds *stop
 * set it returns with stopped = 1 unless that was the epoch's last batch. Data-parallel: each
 * rank loads its shard of every global batch (kd_loader_open_shard), the sums are the global
 * ones, and the stop is taken after the first step whose allreduce saw any rank's flag. Errors as
 * kd_trainer_step (batch and t->step then count the steps done before the failing one) or the
 * loader's. */
kd_status kd_trainer_epoch(kd_trainer *t, kd_epoch_pass *e, kd_err *err);

#endif
