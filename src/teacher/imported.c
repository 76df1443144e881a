/* imported.c - teacher.logits: a safetensors file of logits computed elsewhere (a teacher
 * distill cannot run), checked whole before training starts and turned into an in-memory
 * soft-target cache, so the step reads imported targets exactly as it reads cached ones. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kd_dtype.h"
#include "kd_safetensors.h"
#include "kd_teacher.h"

#define LOGITS "logits"
#define INDEX "index"
/* Training rows per fill call: the size of the cache writer's buffers. */
#define IMPORT_CHUNK 4096

/* What the cache's fill reads: the file's tensor and which file row holds each sample. */
typedef struct {
    const kd_dataset *ds;
    const size_t *idx;      /* the cache's rows: dataset indices of the training samples */
    const kd_st_tensor *z;  /* logits (N, C) */
    const kd_codec *codec;
    const size_t *row_of;   /* (N) file row of each source sample; NULL: row s is sample s */
    size_t C;
} import_src;

/* The file row that holds source sample s. */
static size_t row_of_sample(const import_src *im, size_t s) {
    return im->row_of ? im->row_of[s] : s;
}

static const uint8_t *row_at(const import_src *im, size_t row) {
    return im->z->data + row * im->C * kd_dtype_size(im->z->dtype);
}

/* kd_cache_fill_fn: one teacher, one view; logits (n, C) of training rows row .. row + n. */
static kd_status fill(void *user, size_t view, size_t row, size_t n, float *logits, kd_err *err) {
    const import_src *im = user;
    (void)view;
    (void)err;
    for (size_t i = 0; i < n; i++) {
        size_t s = kd_dataset_source_index(im->ds, im->idx[row + i]);
        im->codec->decode(row_at(im, row_of_sample(im, s)), NULL, 1, im->C, logits + i * im->C);
    }
    return KD_OK;
}

/* Only the two tensors the format names, logits with the rows and classes this run needs. */
static kd_status check_logits(const kd_st_file *f, const char *path, size_t n_source,
                              size_t n_classes, const char *data_path, kd_err *err) {
    for (size_t i = 0; i < f->n_tensors; i++) {
        const char *name = f->tensors[i].name;
        if (strcmp(name, LOGITS) != 0 && strcmp(name, INDEX) != 0)
            return kd_err_set(err, KD_EINPUT, "teacher.logits %s: tensor %s: unexpected (the "
                              "file holds \"logits\" [N, classes] and optionally \"index\" [N])",
                              path, name);
    }
    const kd_st_tensor *z = kd_st_find(f, LOGITS);
    char sh[96];
    if (!z)
        return kd_err_set(err, KD_EINPUT, "teacher.logits %s: no tensor \"logits\" (expected "
                          "logits [N, classes] in F32, F16 or BF16, one row per training sample)",
                          path);
    if (z->dtype != KD_DT_F32 && z->dtype != KD_DT_F16 && z->dtype != KD_DT_BF16)
        return kd_err_set(err, KD_EINPUT, "teacher.logits %s: tensor logits: dtype %s, expected "
                          "F32, F16 or BF16", path, kd_dtype_name(z->dtype));
    if (z->rank != 2)
        return kd_err_set(err, KD_EINPUT, "teacher.logits %s: tensor logits: shape %s, expected "
                          "[N, classes] = [%zu, %zu]", path, kd_st_shape_str(z, sh, sizeof sh),
                          n_source, n_classes);
    if (z->shape[0] != n_source) {
        int few = z->shape[0] < n_source;
        return kd_err_set(err, KD_EINPUT, "teacher.logits %s: tensor logits: %llu rows, but the "
                          "training data %s has %zu samples (one row per sample, in the source's "
                          "order, before subset and validation split): row %llu is %s", path,
                          (unsigned long long)z->shape[0], data_path, n_source,
                          few ? (unsigned long long)z->shape[0] : (unsigned long long)n_source,
                          few ? "missing" : "one too many");
    }
    if (z->shape[1] != n_classes)
        return kd_err_set(err, KD_EINPUT, "teacher.logits %s: tensor logits: %llu classes per "
                          "row, but the model gives %zu: row 0 is the first with %llu", path,
                          (unsigned long long)z->shape[1], n_classes,
                          (unsigned long long)z->shape[1]);
    return KD_OK;
}

/* index (I64 [N]): each sample in 0..N-1 exactly once; row_of[s] = the row that holds s. */
static kd_status check_index(const kd_st_tensor *t, const char *path, size_t n, size_t *row_of,
                             kd_err *err) {
    char sh[96];
    if (t->dtype != KD_DT_I64)
        return kd_err_set(err, KD_EINPUT, "teacher.logits %s: tensor index: dtype %s, expected "
                          "I64", path, kd_dtype_name(t->dtype));
    if (t->rank != 1 || t->shape[0] != n)
        return kd_err_set(err, KD_EINPUT, "teacher.logits %s: tensor index: shape %s, expected "
                          "[%zu] (one sample index per row of logits)", path,
                          kd_st_shape_str(t, sh, sizeof sh), n);
    for (size_t s = 0; s < n; s++) row_of[s] = SIZE_MAX;
    for (size_t r = 0; r < n; r++) {
        int64_t s = kd_st_get_i64(t, r);
        if (s < 0 || (uint64_t)s >= n)
            return kd_err_set(err, KD_EINPUT, "teacher.logits %s: tensor index: row %zu gives "
                              "sample %lld, outside 0..%zu", path, r, (long long)s, n - 1);
        if (row_of[s] != SIZE_MAX)
            return kd_err_set(err, KD_EINPUT, "teacher.logits %s: tensor index: row %zu gives "
                              "sample %lld, as row %zu does, so another sample is missing", path,
                              r, (long long)s, row_of[s]);
        row_of[s] = r;
    }
    return KD_OK;
}

/* Every logit of every row finite, the first bad one named by row (and sample, with an index). */
static kd_status check_finite(const import_src *im, const char *path, size_t n,
                              const kd_st_tensor *index, float *z, kd_err *err) {
    for (size_t r = 0; r < n; r++) {
        im->codec->decode(row_at(im, r), NULL, 1, im->C, z);
        for (size_t c = 0; c < im->C; c++) {
            if (isfinite(z[c])) continue;
            char sample[64] = "";
            if (index)
                snprintf(sample, sizeof sample, " (sample %lld)",
                         (long long)kd_st_get_i64(index, r));
            return kd_err_set(err, KD_EINPUT, "teacher.logits %s: tensor logits: row %zu%s, "
                              "class %zu is %g (logits must be finite)", path, r, sample, c,
                              (double)z[c]);
        }
    }
    return KD_OK;
}

kd_status kd_teacher_import_logits(kd_cache **out, const char *path, const kd_dataset *ds,
                                   const char *data_path, const size_t *idx, size_t n,
                                   size_t n_classes, char *hash, size_t hash_cap, kd_err *err) {
    const size_t N = kd_dataset_info(ds)->n_source;
    kd_st_file f;
    kd_cache_meta meta;
    size_t *row_of = NULL;
    float *z = NULL;
    *out = NULL;
    kd_status st = kd_file_hash(path, hash, hash_cap, err);
    if (st) {
        kd_err_prefix(err, "teacher.logits");
        return st;
    }
    if ((st = kd_st_read(&f, path, err))) {
        if (!strstr(err->msg, "teacher.logits")) kd_err_prefix(err, "teacher.logits");
        return st;
    }
    if ((st = check_logits(&f, path, N, n_classes, data_path, err))) goto cleanup;
    const kd_st_tensor *index = kd_st_find(&f, INDEX);
    import_src im = {ds, idx, kd_st_find(&f, LOGITS), NULL, NULL, n_classes};
    im.codec = kd_codec_for(im.z->dtype);
    if (!(z = malloc(n_classes * sizeof *z)) ||
        (index && !(row_of = malloc((N ? N : 1) * sizeof *row_of)))) {
        st = kd_err_set(err, KD_EIO, "teacher.logits %s: out of memory", path);
        goto cleanup;
    }
    if (index && (st = check_index(index, path, N, row_of, err))) goto cleanup;
    im.row_of = row_of;
    if ((st = check_finite(&im, path, N, index, z, err))) goto cleanup;

    /* One teacher of weight 1, every logit kept in f32 (F16 and BF16 widen exactly). */
    memset(&meta, 0, sizeof meta);
    meta.n_rows = n;
    meta.n_classes = n_classes;
    meta.n_teachers = 1;
    meta.dtype = KD_CACHE_F32;
    meta.views = 1;
    meta.weight[0] = 1.0;
    meta.teacher_val_acc[0] = NAN;
    meta.ensemble_val_acc = NAN;
    if (!(st = kd_cache_meta_add(&meta, "teacher.logits", hash, err)))
        st = kd_cache_build(out, path, &meta, idx, IMPORT_CHUNK, fill, &im, err);
cleanup:
    free(z);
    free(row_of);
    kd_st_free(&f);
    return st;
}
