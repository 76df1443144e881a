/* dataset.c - opens a data source through its format's reader (the table in format.c), applies
 * subset and preprocessing, produces float samples, and makes seeded splits. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "data_impl.h"

struct kd_dataset {
    kd_data_source src;
    kd_preprocess pp;       /* scale resolved */
    kd_data_info info;
    size_t numel;           /* values per sample */
    size_t C, plane;        /* channels and values per channel, for mean/std */
    size_t *map;            /* subset: dataset index -> source index (NULL = identity) */
    const kd_format_ops *ops;
    void *reader;           /* the format's open source (ops->close frees it) */
    kd_reader_info rd;      /* the source as the reader describes it (shape before flatten) */
    atomic_size_t n_decode_failures;
    atomic_int note_ready;  /* the first failure's message is in note */
    char note[512];
    float mul[KD_MAX_CHANNELS], add[KD_MAX_CHANNELS];  /* x = raw * mul[c] + add[c] */
    float *fmul, *fadd;     /* (numel) per-feature statistics: x[i] = raw[i] * fmul[i] + fadd[i] */
};

void kd_data_source_defaults(kd_data_source *src) {
    memset(src, 0, sizeof *src);
    src->format = KD_FMT_IDX;
    src->has_header = -1;
    src->delimiter = ',';
    /* Image folders: 0 = the first image's channels, height and width. */
    src->channels = 0;
    src->height = 0;
    src->width = 0;
}

void kd_preprocess_defaults(kd_preprocess *pp) { memset(pp, 0, sizeof *pp); }

int kd_preprocess_same(const kd_preprocess *a, const kd_preprocess *b) {
    /* Relative to the larger scale, so the rule is symmetric; NaN is never the same. */
    float tol = 1e-7f * fmaxf(fabsf(a->scale), fabsf(b->scale));
    if (!(fabsf(a->scale - b->scale) <= tol) || a->n_channels != b->n_channels) return 0;
    for (int c = 0; c < a->n_channels && c < KD_MAX_CHANNELS; c++)
        if (a->mean[c] != b->mean[c] || a->std[c] != b->std[c]) return 0;
    if (a->n_features != b->n_features) return 0;
    return a->n_features == 0 ||
           memcmp(a->feat, b->feat, 2 * a->n_features * sizeof *a->feat) == 0;
}

const kd_data_info *kd_dataset_info(const kd_dataset *ds) { return &ds->info; }
const kd_preprocess *kd_dataset_preprocess(const kd_dataset *ds) { return &ds->pp; }
size_t kd_dataset_source_index(const kd_dataset *ds, size_t i) { return ds->map ? ds->map[i] : i; }
size_t kd_dataset_n_decode_failures(const kd_dataset *ds) {
    return atomic_load(&((kd_dataset *)ds)->n_decode_failures);
}
const char *kd_dataset_decode_note(const kd_dataset *ds) {
    return atomic_load(&((kd_dataset *)ds)->note_ready) ? ds->note : NULL;
}

void kd_dataset_close(kd_dataset *ds) {
    if (!ds) return;
    free(ds->fmul);
    free(ds->fadd);
    kd_preprocess_free(&ds->pp);
    if (ds->ops) ds->ops->close(ds->reader);
    free(ds->map);
    free(ds);
}

static int cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* Per-feature statistics folded into one multiply-add per value (fmul, fadd). */
static kd_status resolve_features(kd_dataset *ds, kd_err *err) {
    const kd_preprocess *q = &ds->pp;
    if (q->n_features != ds->numel)
        return kd_err_set(err, KD_EUSAGE, "preprocess.mean/std: %zu values given, but the data "
                          "has %zu channel%s and %zu values per sample (give 1 value, one per "
                          "channel: %zu, or one per feature: %zu)", q->n_features, ds->C,
                          ds->C == 1 ? "" : "s", ds->numel, ds->C, ds->numel);
    free(ds->fmul);
    free(ds->fadd);
    ds->fmul = malloc(ds->numel * sizeof *ds->fmul);
    ds->fadd = malloc(ds->numel * sizeof *ds->fadd);
    if (!ds->fmul || !ds->fadd) return kd_err_set(err, KD_EIO, "out of memory");
    for (size_t i = 0; i < ds->numel; i++) {
        float mean = q->feat[i], sd = q->feat[q->n_features + i];
        if (!isfinite(mean) || !isfinite(sd) || !(sd > 0))
            return kd_err_set(err, KD_EUSAGE, "preprocess.std[%zu]: expected a finite number > "
                              "0, got %g (mean %g)", i, (double)sd, (double)mean);
        ds->fmul[i] = q->scale / sd;
        ds->fadd[i] = -mean / sd;
    }
    return KD_OK;
}

/* mean/std given with one value per feature (their count is the sample's, not the channels'):
 * moved into the per-feature statistics. */
static kd_status channels_to_features(kd_preprocess *q, kd_err *err) {
    double m[KD_MAX_CHANNELS], sd[KD_MAX_CHANNELS];
    for (int c = 0; c < q->n_channels; c++) m[c] = q->mean[c], sd[c] = q->std[c];
    return kd_preprocess_set_features(q, m, sd, (size_t)q->n_channels, err);
}

/* Resolves scale and folds (raw * scale - mean) / std into one multiply-add per channel (or
 * per feature). */
static kd_status resolve_preprocess(kd_dataset *ds, const kd_preprocess *pp, int u8_source,
                                    kd_err *err) {
    kd_preprocess_free(&ds->pp);
    if (pp) {
        kd_status st = kd_preprocess_copy(&ds->pp, pp, err);
        if (st) return st;
    } else {
        kd_preprocess_defaults(&ds->pp);
    }
    kd_preprocess *q = &ds->pp;
    if (!isfinite(q->scale) || q->scale < 0)
        return kd_err_set(err, KD_EUSAGE, "preprocess.scale: expected a finite number >= 0 (0 = auto), got %g",
                          (double)q->scale);
    if (q->scale == 0) q->scale = u8_source ? 1.0f / 255.0f : 1.0f;
    if (q->n_channels < 0 || q->n_channels > KD_MAX_CHANNELS)
        return kd_err_set(err, KD_EUSAGE, "preprocess.mean/std: expected at most %d values, got %d",
                          KD_MAX_CHANNELS, q->n_channels);
    if (q->n_channels > 1 && (size_t)q->n_channels != ds->C && (size_t)q->n_channels == ds->numel) {
        kd_status st = channels_to_features(q, err);
        if (st) return st;
    }
    if (q->n_features) return resolve_features(ds, err);
    if (q->n_channels > 1 && (size_t)q->n_channels != ds->C)
        return kd_err_set(err, KD_EUSAGE,
                          "preprocess.mean/std: %d values given, but the data has %zu channel%s "
                          "and %zu values per sample (give 1 value, one per channel: %zu, or one "
                          "per feature: %zu)",
                          q->n_channels, ds->C, ds->C == 1 ? "" : "s", ds->numel, ds->C,
                          ds->numel);
    for (size_t c = 0; c < ds->C; c++) {
        float mean = 0, sd = 1;
        if (q->n_channels > 0) {
            size_t k = q->n_channels == 1 ? 0 : c;
            mean = q->mean[k];
            sd = q->std[k];
            if (!isfinite(mean) || !isfinite(sd) || !(sd > 0))
                return kd_err_set(err, KD_EUSAGE,
                                  "preprocess.std[%zu]: expected a finite number > 0, got %g (mean %g)",
                                  k, (double)sd, (double)mean);
        }
        ds->mul[c] = q->scale / sd;
        ds->add[c] = -mean / sd;
    }
    return KD_OK;
}

kd_status kd_dataset_open(kd_dataset **out, const kd_data_source *src, const kd_preprocess *pp,
                          kd_err *err) {
    kd_status st = KD_OK;
    size_t *perm = NULL;
    *out = NULL;
    kd_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return kd_err_set(err, KD_EIO, "out of memory");
    ds->src = *src;
    atomic_init(&ds->n_decode_failures, 0);
    atomic_init(&ds->note_ready, 0);
    if (!src->path[0]) {
        st = kd_err_set(err, KD_EUSAGE, "data.path: expected a file or folder, got \"\"");
        goto cleanup;
    }
    ds->ops = kd_data_format_ops(src->format);
    if (!ds->ops) {
        st = kd_err_set(err, KD_EUSAGE, "data.format: unknown format %d", (int)src->format);
        goto cleanup;
    }
    if ((st = ds->ops->open(src, &ds->reader, &ds->rd, err))) goto cleanup;
    size_t n_src = ds->rd.n;
    ds->info.n_classes = ds->rd.n_classes;
    ds->info.n_skipped = ds->rd.n_skipped;
    ds->info.skip_note = ds->rd.skip_note;
    ds->numel = kd_shape_numel(&ds->rd.shape);
    ds->C = ds->rd.shape.rank == 3 ? ds->rd.shape.d[0] : 1;
    ds->plane = ds->numel / ds->C;
    if (ds->C > KD_MAX_CHANNELS) {
        st = kd_err_set(err, KD_EINPUT, "%s: %zu channels, expected at most %d", src->path, ds->C,
                        KD_MAX_CHANNELS);
        goto cleanup;
    }
    if ((st = resolve_preprocess(ds, pp, ds->rd.u8, err))) goto cleanup;

    /* Subset: first N, or a seeded sample of N kept in source order. */
    size_t n = n_src;
    if (src->subset && src->subset < n_src) {
        n = src->subset;
        if (src->subset_seeded) {
            perm = malloc(n_src * sizeof(size_t));
            ds->map = malloc(n * sizeof(size_t));
            if (!perm || !ds->map) {
                st = kd_err_set(err, KD_EIO, "out of memory");
                goto cleanup;
            }
            for (size_t i = 0; i < n_src; i++) perm[i] = i;
            kd_rng r;
            kd_rng_seed(&r, src->subset_seed);
            /* Partial Fisher-Yates: the first n slots are a uniform sample. */
            for (size_t i = 0; i < n; i++) {
                size_t j = i + (size_t)kd_rng_below(&r, n_src - i);
                size_t t = perm[i];
                perm[i] = perm[j];
                perm[j] = t;
            }
            memcpy(ds->map, perm, n * sizeof(size_t));
            qsort(ds->map, n, sizeof(size_t), cmp_size);
        }
    }
    ds->info.n = n;
    ds->info.source_shape = ds->rd.shape;
    ds->info.n_source = n_src;
    ds->info.format = src->format;
    ds->info.has_labels = ds->rd.labels != NULL;
    ds->info.class_names = ds->rd.class_names;
    if (ds->pp.flatten) {
        ds->info.shape.rank = 1;
        ds->info.shape.d[0] = ds->numel;
    } else {
        ds->info.shape = ds->rd.shape;
    }

cleanup:
    free(perm);
    if (st) {
        kd_dataset_close(ds);
        return st;
    }
    *out = ds;
    return KD_OK;
}

kd_status kd_dataset_get(kd_dataset *ds, const size_t *idx, size_t B, float *x, int32_t *y,
                         size_t *n_out, kd_err *err) {
    const size_t D = ds->numel, P = ds->plane, C = ds->C;
    size_t k = 0;  /* rows filled: a sample left out does not take one */
    if (n_out) *n_out = 0;
    for (size_t b = 0; b < B; b++) {
        if (idx[b] >= ds->info.n)
            return kd_err_set(err, KD_EUSAGE, "sample index %zu out of range (dataset has %zu)",
                              idx[b], ds->info.n);
        size_t s = ds->map ? ds->map[idx[b]] : idx[b];
        float *xb = x + k * D;
        kd_status st = ds->ops->read(ds->reader, s, xb, err);
        if (st) {
            if (!ds->src.skip_bad || st != KD_EINPUT || !n_out) return st;
            /* Passed the open-time check but the body is broken: leave it out of the batch
             * (never train or score an all-zero stand-in) and count it, rather than stopping a
             * run the user asked to be tolerant. The first message is kept for the report. */
            if (atomic_fetch_add(&ds->n_decode_failures, 1) == 0) {
                snprintf(ds->note, sizeof ds->note, "%s", err->msg);
                atomic_store(&ds->note_ready, 1);
            }
            kd_err_clear(err);
            continue;
        }
        if (ds->fmul) {
            for (size_t i = 0; i < D; i++) xb[i] = xb[i] * ds->fmul[i] + ds->fadd[i];
        } else {
            for (size_t c = 0; c < C; c++) {
                float m = ds->mul[c], a = ds->add[c];
                float *xc = xb + c * P;
                for (size_t q = 0; q < P; q++) xc[q] = xc[q] * m + a;
            }
        }
        if (y) y[k] = ds->rd.labels ? ds->rd.labels[s] : -1;
        k++;
    }
    if (n_out) *n_out = k;
    return KD_OK;
}

kd_status kd_split(size_t n, size_t n_val, uint64_t seed, size_t **train_idx, size_t *n_train,
                   size_t **val_idx, kd_err *err) {
    *train_idx = NULL;
    *val_idx = NULL;
    *n_train = 0;
    if (n_val > n)
        return kd_err_set(err, KD_EUSAGE, "validation split of %zu samples, but the data has only %zu",
                          n_val, n);
    size_t nt = n - n_val;
    size_t *perm = malloc((n ? n : 1) * sizeof(size_t));
    size_t *tr = malloc((nt ? nt : 1) * sizeof(size_t));
    size_t *va = malloc((n_val ? n_val : 1) * sizeof(size_t));
    if (!perm || !tr || !va) {
        free(perm);
        free(tr);
        free(va);
        return kd_err_set(err, KD_EIO, "out of memory");
    }
    for (size_t i = 0; i < n; i++) perm[i] = i;
    kd_rng r;
    kd_rng_seed(&r, seed);
    kd_rng_shuffle(&r, perm, n);
    memcpy(tr, perm, nt * sizeof(size_t));
    memcpy(va, perm + nt, n_val * sizeof(size_t));
    free(perm);
    qsort(tr, nt, sizeof(size_t), cmp_size);
    qsort(va, n_val, sizeof(size_t), cmp_size);
    *train_idx = tr;
    *val_idx = va;
    *n_train = nt;
    return KD_OK;
}

kd_status kd_split_count(size_t n, double fraction, size_t count, size_t *n_val, kd_err *err) {
    *n_val = 0;
    if (fraction >= 0) {
        if (!(fraction < 1))
            return kd_err_set(err, KD_EUSAGE, "validation fraction: expected a number in [0, 1), got %g",
                              fraction);
        count = (size_t)floor(fraction * (double)n + 0.5);
    }
    if (count >= n && count > 0)
        return kd_err_set(err, KD_EUSAGE,
                          "validation split of %zu samples leaves no training data (the data has %zu)",
                          count, n);
    *n_val = count;
    return KD_OK;
}

kd_status kd_image_load(const char *path, int channels, size_t height, size_t width,
                        const kd_preprocess *pp, float *out, kd_err *err) {
    kd_status st;
    if (channels != 1 && channels != 3)
        return kd_err_set(err, KD_EUSAGE, "image channels: expected 1 or 3, got %d", channels);
    if (height < 1 || width < 1 || height > KD_IMAGE_MAX_SIDE || width > KD_IMAGE_MAX_SIDE)
        return kd_err_set(err, KD_EUSAGE, "image size: expected 1 to %d, got %zux%zu", KD_IMAGE_MAX_SIDE,
                          height, width);
    /* Reuse the dataset's preprocessing resolution on a stack dataset (no source data). */
    kd_dataset tmp;
    memset(&tmp, 0, sizeof tmp);
    size_t P = height * width;
    tmp.C = (size_t)channels;
    tmp.plane = P;
    tmp.numel = tmp.C * P;
    if (!(st = resolve_preprocess(&tmp, pp, 1, err)) &&
        !(st = kd_image_decode(path, channels, height, width, out, err))) {
        for (size_t i = 0; tmp.fmul && i < tmp.numel; i++) out[i] = out[i] * tmp.fmul[i] + tmp.fadd[i];
        for (size_t c = 0; !tmp.fmul && c < tmp.C; c++)
            for (size_t k = 0; k < P; k++) out[c * P + k] = out[c * P + k] * tmp.mul[c] + tmp.add[c];
    }
    free(tmp.fmul);
    free(tmp.fadd);
    kd_preprocess_free(&tmp.pp);
    return st;
}

kd_status kd_dataset_set_preprocess(kd_dataset *ds, const kd_preprocess *pp, kd_err *err) {
    kd_preprocess keep = ds->pp;  /* its scale is already resolved */
    kd_preprocess q = *pp;
    q.scale = keep.scale;
    q.flatten = keep.flatten;
    memset(&ds->pp, 0, sizeof ds->pp);
    kd_status st = resolve_preprocess(ds, &q, 0, err);
    kd_preprocess_free(&keep);
    return st;
}
