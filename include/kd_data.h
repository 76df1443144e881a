/* kd_data.h - datasets (IDX raw/gzip, CSV, image folders), preprocessing, splits and a
 * batch loader. Every loader yields float32 samples laid out [C, H, W] (or [features]) with
 * int32 labels (-1 when the source has no labels). Readers validate every size against the
 * header and against caps before allocating. */
#ifndef KD_DATA_H
#define KD_DATA_H

#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"
#include "kd_nn.h"
#include "kd_rng.h"

#define KD_MAX_CHANNELS 4
#define KD_PATH_MAX 4096

typedef enum { KD_FMT_IDX = 0, KD_FMT_CSV = 1, KD_FMT_IMAGES = 2 } kd_data_format;

/* Preprocessing applied per sample when a batch is produced: x = (raw * scale - mean[c]) / std[c].
 * Recorded in runs and checkpoints so eval/predict apply the same. */
typedef struct {
    float scale;                    /* default 1/255 for u8 sources (IDX u8, images), 1 otherwise */
    int n_channels;                 /* entries used in mean/std (0 = no normalisation) */
    float mean[KD_MAX_CHANNELS];
    float std[KD_MAX_CHANNELS];
    int flatten;                    /* present samples as [numel] instead of [C,H,W] */
} kd_preprocess;

/* One data source, as the config describes it. */
typedef struct {
    kd_data_format format;
    char path[KD_PATH_MAX];         /* IDX images / CSV file / image folder root */
    char labels_path[KD_PATH_MAX];  /* IDX labels file ("" = unlabeled) */
    /* CSV */
    char label_column[256];         /* name, or decimal index; "" = last column; "none" = unlabeled */
    int has_header;                 /* -1 auto-detect, 0 no, 1 yes */
    char delimiter;                 /* default ',' */
    /* Image folders */
    int channels;                   /* 1 or 3 */
    size_t height, width;           /* resize target */
    int skip_bad;                   /* skip undecodable images with a warning instead of failing */
    int unlabeled;                  /* flat folder of images, no classes */
    /* Subset: keep first N samples (subset_seeded = 0) or a seeded sample of N (1). 0 = all. */
    size_t subset;
    int subset_seeded;
    uint64_t subset_seed;
} kd_data_source;

/* Fills defaults (comma, auto header, 1 channel, 28x28, scale 0 meaning "auto"). */
void kd_data_source_defaults(kd_data_source *src);

typedef struct kd_dataset kd_dataset;  /* opaque */

typedef struct {
    size_t n;               /* samples */
    kd_shape shape;         /* per-sample shape after preprocessing ([C,H,W] or flattened) */
    int has_labels;
    size_t n_classes;       /* from class names, or max label + 1 (IDX), 0 if unknown */
    char **class_names;     /* n_classes names, or NULL; owned by the dataset */
} kd_data_info;

/* Opens a source (reads the index / header / compact data). Errors: KD_EINPUT naming the file,
 * the byte offset or line/column, and what was expected; KD_EUSAGE for bad settings. */
kd_status kd_dataset_open(kd_dataset **out, const kd_data_source *src, const kd_preprocess *pp,
                          kd_err *err);
void kd_dataset_close(kd_dataset *ds);  /* NULL-safe */
const kd_data_info *kd_dataset_info(const kd_dataset *ds);

/* Decodes samples idx[0..B) into x (B, numel(shape)) and y (B) (y may be NULL). Thread-safe
 * for distinct output buffers (the loader's worker calls it). */
kd_status kd_dataset_get(kd_dataset *ds, const size_t *idx, size_t B, float *x, int32_t *y,
                         kd_err *err);

/* Deterministic split of n samples: the last n_val of a seeded permutation (seed-only
 * dependent) are validation, the rest training, each list sorted ascending. Caller frees. */
kd_status kd_split(size_t n, size_t n_val, uint64_t seed, size_t **train_idx, size_t *n_train,
                   size_t **val_idx, kd_err *err);

/* A batch loader over a fixed index order. For image folders it decodes in a background
 * thread with a bounded prefetch queue; for in-memory sources it converts on demand. */
typedef struct kd_loader kd_loader;
typedef struct {
    const float *x;      /* (n, numel(shape)) */
    const int32_t *y;    /* (n) labels, -1 where unlabeled */
    size_t n;            /* samples in this batch (last batch may be partial) */
} kd_batch;

kd_status kd_loader_open(kd_loader **out, kd_dataset *ds, const size_t *order, size_t n,
                         size_t batch_size, kd_err *err);
/* Next batch: returns KD_OK and fills b (valid until the next call); sets b->n = 0 at the end. */
kd_status kd_loader_next(kd_loader *l, kd_batch *b, kd_err *err);
void kd_loader_close(kd_loader *l);  /* NULL-safe; joins the worker */

#endif
