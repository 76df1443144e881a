/* kd_config.h - run configuration: strict JSON (unknown keys, wrong types and out-of-range
 * values are errors naming the JSON path, with a suggestion for near-miss keys), relative paths
 * resolved against the config file's directory, --set overrides on the same paths.
 * Every key is documented in configs/README.md. */
#ifndef KD_CONFIG_H
#define KD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"
#include "kd_data.h"
#include "kd_loss.h"
#include "kd_nn.h"
#include "kd_optim.h"

typedef struct cJSON cJSON;  /* the config keeps layer lists and class names as JSON */

/* One teacher: teacher.checkpoint/layers, or one entry of teacher.ensemble. */
typedef struct {
    char path[KD_PATH_MAX];      /* its safetensors checkpoint (absolute) */
    cJSON *layers;               /* optional arch for a file without "arch" metadata (owned) */
    float weight;                /* as given (default 1); kd_config_teacher_weight normalises */
    /* ONNX teachers only (a checkpoint ending in .onnx): */
    char output[256];            /* teacher.output: the graph output to use ("": the default) */
    int pp_mode;                 /* teacher.preprocess: KD_TEACHER_PP_* */
    kd_preprocess pp;            /* KD_TEACHER_PP_GIVEN: scale, mean, std (no per-feature) */
} kd_teacher_cfg;

/* What an ONNX teacher is fed: the data as preprocessed for the student (the default, and a
 * distill export's raw sample), the raw sample, or the raw sample under its own preprocessing. */
enum { KD_TEACHER_PP_DATA = 0, KD_TEACHER_PP_RAW = 1, KD_TEACHER_PP_GIVEN = 2 };

/* teacher.cache: where the teachers' logits are kept, and what is kept. */
typedef struct {
    char path[KD_PATH_MAX];      /* absolute */
    int dtype;                   /* kd_cache_dtype: 0 f32, 1 f16 */
    size_t top_k;                /* 0 = every logit */
    size_t views;                /* augmented views per sample (>= 1) */
    uint64_t seed;               /* view v of sample i is a function of (seed, i, v) */
} kd_cache_cfg;

typedef struct {
    char path[KD_PATH_MAX];      /* the config file as given ("" when parsed from text) */
    char name[256];              /* file name without .json: the default run folder name */

    /* data (all paths absolute) */
    kd_data_source train;        /* required */
    int has_test;
    kd_data_source test;         /* optional */
    int has_val_source;
    kd_data_source val;          /* optional separate validation source */
    size_t val_count;            /* held out from train when no val source (count wins) */
    float val_fraction;          /* ... or as a fraction of train (default 0.1; 0 and count 0
                                    = no validation) */
    int use_labels;              /* 0: train labels withheld (pure distillation, alpha must be 1) */
    cJSON *classes;              /* data.classes: owned array of class-name strings, or NULL */
    kd_preprocess pp;            /* pp.scale 0 = auto (the data module picks 1/255 for u8) */
    kd_augment augment;          /* data.augment: training batches only (none by default) */

    /* model (the one being trained) */
    kd_shape input;              /* inferred from the data when not given */
    int has_input;
    cJSON *layers;               /* owned JSON array of layer specs (each an object with "type") */
    kd_init_kind init;

    /* teacher (optional): one checkpoint, or an ensemble (teacher.ensemble), and a cache; or
     * imported logits (teacher.logits) */
    int has_teacher;
    int ensemble;                /* given as teacher.ensemble (written back that way) */
    size_t n_teachers;           /* 1 for teacher.checkpoint; the ensemble's size */
    kd_teacher_cfg teachers[KD_MAX_TEACHERS];
    int has_cache;
    kd_cache_cfg cache;
    /* teacher.logits: a safetensors file of precomputed logits instead of teacher models (then
     * n_teachers is 1 with weight 1 and teachers[0] is empty) */
    int has_logits;
    char logits_path[KD_PATH_MAX];   /* absolute */
    kd_distill_cfg distill;      /* filled (defaults kl, T 4, alpha 0.9) only when has_teacher */
    kd_loss_list losses;         /* distill.losses, or the list alpha / temperature / kind mean
                                    (kd_loss_list_from_distill); only when has_teacher */

    /* optimisation */
    kd_optim_cfg optim;
    kd_sched_cfg sched;          /* sched.base_lr = optimizer.lr; total_steps filled by trainer
                                    (or use kd_config_sched, which also converts epochs) */
    double warmup_epochs;        /* > 0: warmup given in epochs (sched.warmup_steps is then 0) */
    double step_epochs;          /* > 0: step schedule period in epochs (sched.step_size 0) */
    size_t epochs;
    size_t batch_size;
    uint64_t seed;
    int threads;                 /* 0 = all cores */

    /* output */
    char out_dir[KD_PATH_MAX];   /* absolute; default "runs/<name>" relative to the current
                                    directory (as is a relative output.dir) */
    int save_best;               /* default 1 */

    cJSON *resolved;             /* the whole resolved config as JSON (owned), for printing/saving */
} kd_config;

/* Parses a config file plus "path=value" overrides (value parsed as JSON, or as a string if it
 * is not valid JSON; the value null removes the key, e.g. "teacher=null"). Overrides are
 * applied to the JSON before validation, so they get the same checks and paths. Errors:
 * KD_EUSAGE with "FILE: json.path: expected ..., got ..." (and "did you mean ...?"), also for a
 * missing or unreadable file (naming it) and invalid JSON (naming line and column); KD_EIO only
 * for out-of-memory. On failure *c is left empty (kd_config_free is still safe). */
kd_status kd_config_load(kd_config *c, const char *path, const char *const *overrides,
                         size_t n_overrides, kd_err *err);
/* The same from JSON text in memory (len bytes). `path` names the config in messages and gives
 * the default run name (NULL: "config"); relative paths resolve against base_dir (NULL: the
 * current directory). */
kd_status kd_config_parse(kd_config *c, const char *text, size_t len, const char *path,
                          const char *base_dir, const char *const *overrides,
                          size_t n_overrides, kd_err *err);
void kd_config_free(kd_config *c);  /* NULL-safe; leaves *c zeroed */
/* Pretty JSON of the resolved config (defaults filled, absolute paths); loading it again gives
 * the same config. malloc'd: the caller frees it with free(). NULL on out-of-memory. */
char *kd_config_to_json(const kd_config *c);
/* Teacher i's weight in the ensemble, normalised so the weights sum to 1. */
float kd_config_teacher_weight(const kd_config *c, size_t i);
/* The schedule in optimizer steps for a run of c->epochs epochs of steps_per_epoch steps:
 * base_lr, total_steps, and warmup/step sizes converted from epochs where given that way. */
kd_sched_cfg kd_config_sched(const kd_config *c, size_t steps_per_epoch);

#endif
