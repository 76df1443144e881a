/* kd_data.h - datasets (IDX raw/gzip, CSV, image folders), preprocessing, splits and a
 * batch loader. Every loader yields float32 samples laid out [C, H, W] (or [features]) with
 * int32 labels (-1 when the source has no labels). Readers validate every size against the
 * header and against caps before allocating.
 *
 * Conventions: CSV lines and columns in messages are 1-based; an IDX byte offset is counted in
 * the decompressed stream (the same as the file offset for raw files). */
#ifndef KD_DATA_H
#define KD_DATA_H

#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"
#include "kd_shape.h"
#include "kd_rng.h"

#define KD_MAX_CHANNELS 4
#define KD_PATH_MAX 4096

/* Caps applied before any allocation sized from a file. */
#define KD_DATA_MAX_BYTES ((size_t)2 << 30)   /* one IDX payload / one CSV file: 2 GiB */
#define KD_IDX_MAX_DIM ((size_t)1 << 30)      /* any single IDX dimension */
#define KD_IMAGE_MAX_SIDE 8192                /* stbi_info width/height cap before decoding */
#define KD_IMAGE_MAX_FILE ((size_t)256 << 20)   /* one image file: 256 MiB */
#define KD_MAX_CLASSES 65536                  /* labels must lie in [0, KD_MAX_CLASSES) */
#ifndef KD_IMAGE_MAX_PIXELS                  /* the fuzz build sets a smaller one */
#define KD_IMAGE_MAX_PIXELS ((size_t)1 << 24) /* width * height of one image (4096x4096):
                                                 bounds a decode at 64 MiB of pixels */
#endif
#define KD_CSV_MAX_LINE ((size_t)16 << 20)    /* one CSV record (line), in bytes */
#define KD_CSV_MAX_COLUMNS ((size_t)1 << 20)  /* fields of one CSV record */

typedef enum { KD_FMT_IDX = 0, KD_FMT_CSV = 1, KD_FMT_IMAGES = 2 } kd_data_format;

/* Data format names, in one table (src/data/format.c): the values of a source's "format". */
const char *kd_data_format_name(kd_data_format f);
/* All names in enum order (*n set to their count), for config enums and messages. */
const char *const *kd_data_format_names(size_t *n);
/* 0 and *out for a known name; -1 otherwise. */
int kd_data_format_find(const char *name, kd_data_format *out);
/* The format a path's name implies (".csv", ".tsv", ".csv.gz" -> csv; "ubyte", ".idx",
 * ".idx.gz" -> idx); -1 when the name does not tell. */
int kd_data_format_guess(const char *path, kd_data_format *out);

/* Preprocessing applied per sample when a batch is produced: x = (raw * scale - mean[c]) / std[c].
 * Recorded in runs and checkpoints so eval/predict apply the same. */
typedef struct {
    float scale;                    /* default 1/255 for u8 sources (IDX u8, images), 1 otherwise */
    int n_channels;                 /* entries used in mean/std (0 = no normalisation; 1 = the
                                       same values for every channel; else = the data's C) */
    float mean[KD_MAX_CHANNELS];
    float std[KD_MAX_CHANNELS];
    int flatten;                    /* present samples as [numel] instead of [C,H,W] */
    int standardize;                /* data.preprocess.standardize: per-feature statistics are
                                       computed on the training split (by the trainer) */
    /* Per-feature statistics: x[i] = (raw[i] * scale - feat[i]) / feat[n_features + i], one
     * mean and std per value of the flattened sample (0 = none; then n_channels is 0). feat is
     * owned by the struct that kd_preprocess_copy, kd_preprocess_set_features, kd_ckpt_load or
     * the config filled (free with kd_preprocess_free); a plain struct copy only borrows it. */
    size_t n_features;
    float *feat;                    /* (2, n_features): the means, then the stds */
} kd_preprocess;

/* Features at most (the checkpoint's JSON must hold two arrays of them). */
#define KD_MAX_FEATURES (1u << 22)

/* Training-time augmentation (data.augment), applied to training batches only, never to
 * validation or test data: each sample is flipped left-right with probability 1/2 (flip) and
 * translated by (dy, dx) drawn uniformly from [-shift, shift]^2, the pixels that come in from
 * outside repeating the nearest edge pixel (the background, for centred images). Needs samples
 * shaped [C, H, W]. */
#define KD_AUGMENT_MAX_SHIFT 64
typedef struct {
    size_t shift;                   /* 0 = no translation */
    int flip;
} kd_augment;

/* out[c][h][w] = x[c][clamp(h - dy)][clamp(w' - dx)], w' = W-1-w when flip else w. */
void kd_augment_sample(const float *x, float *out, const kd_shape *shape, int dy, int dx,
                       int flip);
/* out = an augmented copy of the n samples of x, the draws taken from rng (in sample order:
 * flip bit, then dy, then dx), so a run's seed fixes them and a resumed run repeats them. */
void kd_augment_batch(const kd_augment *a, const kd_shape *shape, const float *x, float *out,
                      size_t n, kd_rng *rng);
/* View `view` of training sample `sample` (its index in the training source): one sample
 * augmented as kd_augment_batch does, the draws taken from an RNG seeded by (seed, sample,
 * view) alone. A teacher cache stores targets for views 0 .. V-1 of each sample and the trainer
 * shows the student the same views, so a view is reproduced, never stored. */
void kd_augment_view(const kd_augment *a, const kd_shape *shape, const float *x, float *out,
                     uint64_t seed, size_t sample, uint32_t view);
/* The same for a data-parallel shard: x holds rows [row0, row0 + n) of a global batch of `rows`
 * (row0 + n <= rows); the draws of all `rows` samples are taken, so out equals those rows of
 * kd_augment_batch over the whole batch and rng ends where that leaves it. */
void kd_augment_rows(const kd_augment *a, const kd_shape *shape, const float *x, float *out,
                     size_t row0, size_t n, size_t rows, kd_rng *rng);
static inline int kd_augment_active(const kd_augment *a) { return a->shift > 0 || a->flip; }

/* One data source, as the config describes it. */
typedef struct {
    kd_data_format format;
    char path[KD_PATH_MAX];         /* IDX images / CSV file / image folder root */
    char labels_path[KD_PATH_MAX];  /* IDX labels file ("" = unlabeled) */
    /* CSV */
    char label_column[256];         /* name, or decimal 0-based index (negative counts from the
                                       end); "" = last column; "none" = unlabeled */
    int has_header;                 /* -1 auto-detect, 0 no, 1 yes */
    char delimiter;                 /* default ',' */
    /* Image folders */
    int channels;                   /* 1 or 3; 0 = the first image's (1 grey, 3 colour) */
    size_t height, width;           /* resize target; 0 = the first image's */
    int skip_bad;                   /* skip undecodable images with a warning instead of failing */
    int unlabeled;                  /* flat folder of images, no classes */
    /* Subset: keep first N samples (subset_seeded = 0) or a seeded sample of N (1). 0 = all.
     * N larger than the data keeps everything. A seeded sample keeps source order. */
    size_t subset;
    int subset_seeded;
    uint64_t subset_seed;
    /* Expected number of classes (0 = derive: max label + 1 for numeric labels). When set, a
     * label >= n_classes is an error naming the file and sample. */
    size_t n_classes;
} kd_data_source;

/* Fills defaults (comma, auto header, image shape 0 meaning "the first image's"). */
void kd_data_source_defaults(kd_data_source *src);
/* Preprocessing defaults: scale 0 (auto), no normalisation, no flatten. */
void kd_preprocess_defaults(kd_preprocess *pp);
/* 1 when a and b give a model the same input values: scales equal within 1e-7 relative (one
 * float step at most, so a scale read back from a checkpoint's JSON still matches), the same
 * number of normalised channels and the same mean and std for each. flatten is not compared:
 * it changes only the shape the values are presented in, not the values or their order, and
 * callers check shapes separately (kd_eval_check_fit). Symmetric; a NaN scale is never the
 * same. */
int kd_preprocess_same(const kd_preprocess *a, const kd_preprocess *b);
/* Frees pp's per-feature statistics (NULL-safe); the rest of pp stays. */
void kd_preprocess_free(kd_preprocess *pp);
/* *dst = *src with its own copy of the per-feature statistics. KD_EIO when out of memory. */
kd_status kd_preprocess_copy(kd_preprocess *dst, const kd_preprocess *src, kd_err *err);
/* Sets pp's per-feature statistics (n of each, in double; a std of 0 becomes 1: a constant
 * feature is only centred), replacing any per-channel mean/std. */
kd_status kd_preprocess_set_features(kd_preprocess *pp, const double *mean, const double *std,
                                     size_t n, kd_err *err);

typedef struct kd_dataset kd_dataset;  /* opaque */

typedef struct {
    size_t n;               /* samples */
    kd_shape shape;         /* per-sample shape after preprocessing ([C,H,W] or flattened) */
    kd_shape source_shape;  /* the same before any flatten (an image folder's [C, H, W]) */
    int has_labels;
    size_t n_classes;       /* from class names, or max label + 1 (IDX), 0 if unknown */
    char **class_names;     /* n_classes names, or NULL; owned by the dataset */
    /* Added: */
    kd_data_format format;
    size_t n_source;        /* samples in the source before the subset */
    size_t n_skipped;       /* image folders with skip_bad: files skipped at open */
    const char *skip_note;  /* NULL, or "skipped N undecodable images (first: PATH: reason)";
                               owned by the dataset; the CLI prints it as a warning */
} kd_data_info;

/* Opens a source (reads the index / header / compact data). Errors: KD_EINPUT naming the file,
 * the byte offset or line/column, and what was expected; KD_EUSAGE for bad settings.
 * pp may be NULL (defaults). */
kd_status kd_dataset_open(kd_dataset **out, const kd_data_source *src, const kd_preprocess *pp,
                          kd_err *err);
void kd_dataset_close(kd_dataset *ds);  /* NULL-safe */
const kd_data_info *kd_dataset_info(const kd_dataset *ds);
/* The preprocessing in effect, with scale resolved (never 0): record this in runs. */
const kd_preprocess *kd_dataset_preprocess(const kd_dataset *ds);
/* Sample i's place in the source before the subset (info.n_source of them): i itself, or with
 * a seeded subset the source index it was drawn as (ascending in i). i < info.n. */
size_t kd_dataset_source_index(const kd_dataset *ds, size_t i);
/* Image folders with skip_bad: samples that passed the open-time check but failed to decode
 * later, and were left out of their batches. Always 0 for other sources. */
size_t kd_dataset_n_decode_failures(const kd_dataset *ds);
/* The first such failure's message ("PATH: cannot decode image: ..."), or NULL if none. */
const char *kd_dataset_decode_note(const kd_dataset *ds);

/* Decodes samples idx[0..B) into x (B, numel(shape)) and y (B) (y may be NULL). With
 * data.skip_bad and n_out non-NULL, a sample that fails to decode is left out: the others are
 * packed at the front in order and *n_out says how many (B when none failed); the failures are
 * counted (kd_dataset_n_decode_failures). Otherwise the first failure is the error (KD_EINPUT
 * naming the file). Thread-safe for distinct output buffers (the loader's worker calls it). */
kd_status kd_dataset_get(kd_dataset *ds, const size_t *idx, size_t B, float *x, int32_t *y,
                         size_t *n_out, kd_err *err);
/* Replaces the dataset's preprocessing by pp (same scale; its per-feature statistics copied),
 * for the statistics the trainer computes after opening. KD_EUSAGE when pp's feature count is
 * not the sample's. */
kd_status kd_dataset_set_preprocess(kd_dataset *ds, const kd_preprocess *pp, kd_err *err);
/* The mean and (population) standard deviation of every value of the samples idx[0..n), as the
 * dataset produces them now, in double (Welford's update, samples in the order given, so the
 * result depends on nothing else). mean and std hold numel values each. */
kd_status kd_dataset_feature_stats(kd_dataset *ds, const size_t *idx, size_t n, double *mean,
                                   double *std, kd_err *err);

/* The seed of the validation hold-out used by train and eval alike (not train.seed): every run
 * on the same data (the teacher, its students, every seed of a comparison) holds out the same
 * images, so a teacher's validation accuracy inside a student run is not inflated by images it
 * trained on, and `distill eval --split validation` sees exactly the trainer's split. */
#define KD_SPLIT_SEED 20240601u

/* Deterministic split of n samples: the last n_val of a seeded permutation (seed-only
 * dependent) are validation, the rest training, each list sorted ascending. Caller frees.
 * n_val > n is KD_EUSAGE. The lists are always allocated (at least one element). */
kd_status kd_split(size_t n, size_t n_val, uint64_t seed, size_t **train_idx, size_t *n_train,
                   size_t **val_idx, kd_err *err);
/* Validation count from a fraction in [0, 1) (rounded to nearest) or an absolute count
 * (fraction < 0 means "use count"). KD_EUSAGE when the result is out of [0, n). */
kd_status kd_split_count(size_t n, double fraction, size_t count, size_t *n_val, kd_err *err);

/* 1 when path's name says PNG or JPEG (.png, .jpg, .jpeg in any case): the files an image
 * folder lists and `predict` takes for an image when their bytes do not say. */
int kd_data_image_name(const char *path);
/* Decodes one image file (PNG/JPEG) to [channels, height, width] floats with pp applied
 * (pp may be NULL: scale 1/255, no normalisation). For `predict` on single files. */
kd_status kd_image_load(const char *path, int channels, size_t height, size_t width,
                        const kd_preprocess *pp, float *out, kd_err *err);

/* A batch loader over a fixed index order. For image folders it decodes in a background
 * thread with a bounded prefetch queue; for in-memory sources it converts on demand. */
typedef struct kd_loader kd_loader;
typedef struct {
    const float *x;      /* (n, numel(shape)) */
    const int32_t *y;    /* (n) labels, -1 where unlabeled */
    const size_t *idx;   /* (n) the samples' indices in the source; NULL when samples of the
                            slice were left out (data.skip_bad) */
    size_t n;            /* samples in this batch (last batch may be partial); 0 at the end */
    size_t n_skipped;    /* samples of its slices left out (data.skip_bad: undecodable) */
    size_t slices;       /* batch_size slices of the order it covers: 1, plus any slices before
                            it whose samples were all left out (also counted at the end) */
} kd_batch;

kd_status kd_loader_open(kd_loader **out, kd_dataset *ds, const size_t *order, size_t n,
                         size_t batch_size, kd_err *err);
/* The same, choosing the mode: KD_LOADER_AUTO (thread for image folders), or forcing one.
 * Both modes produce identical batches. order is copied. */
typedef enum { KD_LOADER_AUTO = 0, KD_LOADER_SYNC = 1, KD_LOADER_THREAD = 2 } kd_loader_mode;
kd_status kd_loader_open_mode(kd_loader **out, kd_dataset *ds, const size_t *order, size_t n,
                              size_t batch_size, kd_loader_mode mode, kd_err *err);
/* Data-parallel: the loader of rank `rank` of `ranks`, which hands out that rank's shard
 * (kd_dist_shard) of each batch_size slice of order, one per slice: b->slices is 1 and b->n may
 * be 0 (an empty shard, or one whose samples were all left out); the end is b->slices == 0. */
kd_status kd_loader_open_shard(kd_loader **out, kd_dataset *ds, const size_t *order, size_t n,
                               size_t batch_size, size_t rank, size_t ranks, kd_err *err);
/* Next batch: returns KD_OK and fills b (valid until the next call); sets b->n = 0 at the end. */
kd_status kd_loader_next(kd_loader *l, kd_batch *b, kd_err *err);
void kd_loader_close(kd_loader *l);  /* NULL-safe; joins the worker */

#endif
