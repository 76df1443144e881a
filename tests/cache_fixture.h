/* cache_fixture.h - what the cache tests share (test_cache.c, test_cache_bad.c, test_info.c):
 * a fill function with known logits (a formula, or a table), a meta to write, and file
 * helpers. Static functions: each test file uses its own copy. */
#ifndef KD_CACHE_FIXTURE_H
#define KD_CACHE_FIXTURE_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_cache.h"
#include "kd_test.h"

typedef struct {
    const size_t *idx;      /* the training-source index of each row */
    size_t n_rows, n_teachers, n_classes;
    const float *table;     /* (views, n_rows, n_teachers, n_classes), or NULL: the formula */
    size_t calls;           /* fill calls so far */
    size_t fail_at;         /* the fill call (1-based) that fails with KD_EIO, 0: none */
    int nan_on;             /* 1: teacher nan_teacher's logit 2 for sample nan_sample is NaN */
    size_t nan_teacher, nan_sample;
    size_t max_n;           /* the largest n fill was asked for */
    size_t next_view, next_row;  /* the order fill is called in: view by view, rows in order */
    int out_of_order;
} cache_fx;

/* Teacher k's logit c for a sample in a view: distinct, irregular, within +-5. */
static inline float cache_fx_value(size_t k, size_t sample, size_t view, size_t c) {
    return (float)(5.0 * sin(1.3 * (double)k + 0.7 * (double)sample + 2.1 * (double)view +
                             0.9 * (double)c + 0.1));
}

static inline kd_status cache_fx_fill(void *user, size_t view, size_t row, size_t n,
                                      float *logits, kd_err *err) {
    cache_fx *fx = user;
    fx->calls++;
    if (fx->fail_at && fx->calls == fx->fail_at)
        return kd_err_set(err, KD_EIO, "teacher forward failed (injected, call %zu)", fx->calls);
    if (view != fx->next_view || row != fx->next_row) fx->out_of_order = 1;
    fx->next_row = row + n;
    if (fx->next_row == fx->n_rows) fx->next_view = view + 1, fx->next_row = 0;
    if (n > fx->max_n) fx->max_n = n;
    size_t C = fx->n_classes;
    for (size_t k = 0; k < fx->n_teachers; k++)
        for (size_t i = 0; i < n; i++) {
            float *z = logits + (k * n + i) * C;  /* (n_teachers, n, C) */
            size_t s = fx->idx[row + i];
            for (size_t c = 0; c < C; c++)
                z[c] = fx->table ? fx->table[((view * fx->n_rows + row + i) * fx->n_teachers + k)
                                             * C + c]
                                 : cache_fx_value(k, s, view, c);
            if (fx->nan_on && fx->nan_teacher == k && s == fx->nan_sample) z[2] = NAN;
        }
    return KD_OK;
}

/* A meta with equal weights, made-up accuracies (the last teacher's unknown) and two fields. */
static inline kd_cache_meta cache_fx_meta(size_t n_rows, size_t n_classes, size_t n_teachers,
                                          size_t views, kd_cache_dtype dtype, size_t top_k,
                                          double temperature) {
    kd_cache_meta m;
    memset(&m, 0, sizeof m);
    m.n_rows = n_rows;
    m.n_classes = n_classes;
    m.n_teachers = n_teachers;
    m.dtype = dtype;
    m.top_k = top_k;
    m.temperature = temperature;
    m.views = views;
    m.view_seed = 12345;
    for (size_t k = 0; k < n_teachers; k++) {
        m.weight[k] = 1.0 / (double)n_teachers;
        m.teacher_val_acc[k] = k + 1 == n_teachers && k > 0 ? NAN : 0.8 + 0.01 * (double)k;
    }
    m.ensemble_val_acc = 0.875;
    kd_err err;
    kd_cache_meta_add(&m, "teacher[0].checkpoint_hash", "crc32:0badf00d adler32:1 size:7", &err);
    kd_cache_meta_add(&m, "data.train", "train-images.idx", &err);
    return m;
}

/* Writes a cache of meta for idx through the fixture's fill; returns the status. */
static inline kd_status cache_fx_write(const char *path, const kd_cache_meta *m,
                                       const size_t *idx, cache_fx *fx, size_t chunk,
                                       kd_err *err) {
    fx->idx = idx;
    fx->n_rows = m->n_rows;
    fx->n_teachers = m->n_teachers;
    fx->n_classes = m->n_classes;
    return kd_cache_write(path, m, idx, chunk, cache_fx_fill, fx, err);
}

/* idx[r] = 3 r + 1: ascending with gaps, so absent samples exist between rows. */
static inline size_t *cache_fx_index(size_t n) {
    size_t *idx = malloc(n * sizeof *idx);
    for (size_t r = 0; idx && r < n; r++) idx[r] = 3 * r + 1;
    return idx;
}

/* The whole file; *len its size. Caller frees. */
static inline unsigned char *cache_fx_read(const char *path, size_t *len) {
    char *data = NULL;
    kd_err err;
    if (kd_read_file(path, (size_t)1 << 30, &data, len, &err) != KD_OK) return NULL;
    return (unsigned char *)data;
}

#endif
