/* kd_config.h - run configuration: strict JSON (unknown keys, wrong types and out-of-range
 * values are errors naming the JSON path, with a suggestion for near-miss keys), relative paths
 * resolved against the config file's directory, --set overrides on the same paths. */
#ifndef KD_CONFIG_H
#define KD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"
#include "kd_data.h"
#include "kd_loss.h"
#include "kd_nn.h"
#include "kd_optim.h"

typedef struct {
    char path[KD_PATH_MAX];      /* the config file ("" when built in code) */
    char name[256];              /* file name without .json: the default run folder name */

    /* data */
    kd_data_source train;        /* required */
    int has_test;
    kd_data_source test;         /* optional */
    int has_val_source;
    kd_data_source val;          /* optional separate validation source */
    size_t val_count;            /* held out from train when no val source (count wins) */
    float val_fraction;          /* ... or as a fraction of train (default 0.1 => see README) */
    int use_labels;              /* 0: train labels withheld (pure distillation, alpha must be 1) */
    kd_preprocess pp;

    /* model (the one being trained) */
    kd_shape input;              /* inferred from the data when not given */
    int has_input;
    cJSON *layers;               /* owned JSON array of layer specs */
    kd_init_kind init;

    /* teacher (optional) */
    int has_teacher;
    char teacher_path[KD_PATH_MAX];
    cJSON *teacher_layers;       /* optional arch for a file without "arch" metadata (owned) */
    kd_distill_cfg distill;

    /* optimisation */
    kd_optim_cfg optim;
    kd_sched_cfg sched;          /* sched.base_lr = optimizer.lr; total_steps filled by trainer */
    size_t epochs;
    size_t batch_size;
    uint64_t seed;
    int threads;                 /* 0 = all cores */

    /* output */
    char out_dir[KD_PATH_MAX];   /* default "runs/<name>" relative to the current directory */
    int save_best;               /* default 1 */

    cJSON *resolved;             /* the whole resolved config as JSON (owned), for printing/saving */
} kd_config;

/* Parses a config file plus "path=value" overrides (value parsed as JSON, or as a string if it
 * is not valid JSON). Errors: KD_EUSAGE with "FILE: json.path: expected ..., got ..." (and
 * "did you mean ...?"); KD_EIO/KD_EUSAGE if the file is missing (names the file). */
kd_status kd_config_load(kd_config *c, const char *path, const char *const *overrides,
                         size_t n_overrides, kd_err *err);
void kd_config_free(kd_config *c);  /* NULL-safe */
/* Pretty JSON of the resolved config; malloc'd. */
char *kd_config_to_json(const kd_config *c);

#endif
