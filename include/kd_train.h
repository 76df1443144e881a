/* kd_train.h - the training loop: trains a model on labels, or distils it from a teacher, from a
 * resolved kd_config; writes the run folder (config.json, metrics.jsonl, last/best checkpoints)
 * and resumes exactly. No command-line knowledge: progress goes to a callback, errors to kd_err. */
#ifndef KD_TRAIN_H
#define KD_TRAIN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"
#include "kd_config.h"
#include "kd_data.h"
#include "kd_nn.h"

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
} kd_epoch_metrics;

typedef enum {
    KD_EV_SETUP,        /* data and models ready: model, n_train, n_val, n_batches, teacher_model */
    KD_EV_WARNING,      /* msg: something the user must see ("WARNING: ...") */
    KD_EV_NOTE,         /* msg: an informational line */
    KD_EV_TEACHER,      /* value: teacher validation accuracy (NaN if no labelled validation) */
    KD_EV_EPOCH_BEGIN,  /* epoch, n_epochs, batch (batches already done when resuming mid-epoch) */
    KD_EV_BATCH,        /* after each optimizer step: batch, running_loss, samples_per_s */
    KD_EV_EPOCH_END,    /* metrics */
    KD_EV_EVAL          /* msg names the set being evaluated ("test"); emitted before the pass */
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
    char out_dir[KD_PATH_MAX];
    char last_path[KD_PATH_MAX];  /* "" if no checkpoint has been written */
    char best_path[KD_PATH_MAX];
} kd_train_result;

/* Runs a whole training job. Status KD_ENUMERIC on NaN/Inf ("numeric failure: loss is NaN at
 * epoch E step S (batch B); last good checkpoint kept: PATH"); nothing poisoned is written.
 * res is filled as far as the run got (also on failure). */
kd_status kd_train_run(const kd_train_opts *opts, kd_train_result *res, kd_err *err);

/* "loss = 0.9 * T^2 * KL(p_t^T || p_s^T) + 0.1 * CE(y, p_s), T = 4" for cfg; returns buf. */
const char *kd_train_loss_formula(const kd_config *cfg, char *buf, size_t cap);

/* Top-1 accuracy of m (eval mode) on samples idx[0..n) of ds (idx NULL = all), in batches of at
 * most m->batch_cap (reserved by the caller). Labels < 0 are skipped; *acc is NaN if none. */
kd_status kd_train_accuracy(kd_model *m, kd_dataset *ds, const size_t *idx, size_t n,
                            double *acc, kd_err *err);

#endif
