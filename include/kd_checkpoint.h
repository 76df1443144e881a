/* kd_checkpoint.h - models to and from safetensors checkpoints. Parameter names follow
 * torch.nn.Sequential's state_dict; __metadata__ holds format "distill/1", the arch JSON, class
 * names and preprocessing; training checkpoints also carry the exact-resume state. */
#ifndef KD_CHECKPOINT_H
#define KD_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"
#include "kd_data.h"
#include "kd_nn.h"
#include "kd_rng.h"
#include "kd_safetensors.h"

#define KD_FORMAT "distill/1"

/* What a run needs to resume exactly (saved only in training checkpoints). */
typedef struct {
    uint64_t step;          /* optimizer steps taken */
    uint64_t epoch;         /* completed epochs */
    uint64_t batch_in_epoch;/* batches done in the current epoch (0 at an epoch boundary) */
    kd_rng rng;             /* the run's RNG state */
    size_t *order;          /* current epoch's training order (n_order indices), or NULL */
    size_t n_order;
    double best_val;        /* best validation accuracy so far */
} kd_train_state;

/* Extra description saved in metadata (all optional: NULL / 0 = absent). */
typedef struct {
    char **class_names;
    size_t n_classes;
    const kd_preprocess *pp;
    const char *extra_json;   /* free-form JSON string stored as metadata "run" */
} kd_ckpt_meta;

/* Saves model parameters (+ buffers) as F32, with metadata; with ts non-NULL also optimizer
 * moments and the resume state. Atomic. */
kd_status kd_ckpt_save(const char *path, const kd_model *m, const kd_ckpt_meta *meta,
                       const kd_train_state *ts, kd_err *err);

/* Loads a checkpoint into a newly built model. If the file has "arch" metadata the model is
 * built from it; otherwise arch_json must be supplied (else KD_EUSAGE). If both, the file's
 * tensors must match the supplied arch. Every expected tensor must exist with the exact shape;
 * unexpected tensors are an error unless allow_extra. Any float dtype (F32/F16/BF16) and int8
 * quantized exports (weight I8 + "<name>_scale" F32 per row) load into float parameters.
 * with_grads as in kd_model_init. pp / class names, if the file records them, are returned via
 * out_pp (may be NULL; zeroed when the file has none; its per-feature statistics are the
 * caller's to kd_preprocess_free) and out_classes (malloc'd array of malloc'd strings; may be
 * NULL). */
kd_status kd_ckpt_load(const char *path, const char *arch_json, int with_grads, int allow_extra,
                       kd_model *m, kd_preprocess *out_pp, int *has_pp, char ***out_classes,
                       size_t *out_n_classes, kd_err *err);

/* The recorded preprocessing and class names of f (already read), as kd_ckpt_load returns
 * them; for files that hold no float model (a qint8 file carries its source's). */
kd_status kd_ckpt_read_meta(const kd_st_file *f, kd_preprocess *out_pp, int *has_pp,
                            char ***out_classes, size_t *out_n_classes, kd_err *err);

/* Restores optimizer moments and resume state from a training checkpoint into m (built with
 * grads) and ts (ts->order malloc'd). KD_EINPUT if the file has no training state. */
kd_status kd_ckpt_load_train_state(const char *path, kd_model *m, kd_train_state *ts,
                                   kd_err *err);

/* The tensors of m that belong to no layer (feature losses' adapters, kd_model_add_param) and,
 * when m has moments, their optimizer moments, from the checkpoint at path. KD_EINPUT naming a
 * tensor that is missing or of another shape. */
kd_status kd_ckpt_load_adapters(const char *path, kd_model *m, kd_err *err);

/* Everything a resumed run needs, from ONE read of the file: builds m with gradients and
 * optimizer buffers (from arch_json checked against the file's arch, or from the file's own
 * when arch_json is NULL), loads its weights as kd_ckpt_load (no extra tensors), the moments
 * and resume state as kd_ckpt_load_train_state (ts->order malloc'd), and *run_json = a malloc'd
 * copy of the "run" metadata (NULL when the file has none; its content is the trainer's). On
 * failure m is freed, ts zeroed and *run_json NULL. */
kd_status kd_ckpt_load_resume(const char *path, const char *arch_json, kd_model *m,
                              kd_train_state *ts, char **run_json, kd_err *err);

void kd_free_strings(char **s, size_t n);

#endif
