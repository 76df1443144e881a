/* cache_check.c - compares what a run expects of a cache with what the file holds, and names
 * the first difference with the command that rebuilds the cache. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cache_impl.h"

/* "cache PATH: FIELD differs: the file has X, this run has Y (rebuild it: REBUILD)". */
static kd_status differs(kd_err *err, const kd_cache *c, const char *rebuild, const char *field,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static kd_status differs(kd_err *err, const kd_cache *c, const char *rebuild, const char *field,
                         const char *fmt, ...) {
    char what[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return kd_err_set(err, KD_EINPUT, "cache %s: %s differs: %s (rebuild it: %s)", c->name, field,
                      what, rebuild ? rebuild : "delete the file and run again");
}

static const char *field_value(const kd_cache_meta *m, const char *name) {
    for (size_t i = 0; i < m->n_fields; i++)
        if (strcmp(m->fields[i].name, name) == 0) return m->fields[i].value;
    return NULL;
}

kd_status kd_cache_check(const kd_cache *c, const kd_cache_meta *want, const size_t *idx,
                         size_t n_idx, const char *rebuild, kd_err *err) {
    const kd_cache_meta *m = &c->meta;
    const char *has_fmt = "the file has %zu, this run has %zu";
    if (m->n_classes != want->n_classes)
        return differs(err, c, rebuild, "n_classes", has_fmt, m->n_classes, want->n_classes);
    if (m->n_teachers != want->n_teachers)
        return differs(err, c, rebuild, "n_teachers", has_fmt, m->n_teachers, want->n_teachers);
    if (m->dtype != want->dtype)
        return differs(err, c, rebuild, "dtype", "the file has %s, this run has %s",
                       kd_cache_dtype_name(m->dtype), kd_cache_dtype_name(want->dtype));
    if (m->top_k != want->top_k)
        return differs(err, c, rebuild, "top_k", has_fmt, m->top_k, want->top_k);
    /* A top-k target is exact only at the T its log-sum-exp was taken at. */
    if (m->top_k > 0 &&
        !(fabs(m->temperature - want->temperature) <= 1e-6 * fabs(want->temperature)))
        return differs(err, c, rebuild, "temperature", "the file has %.9g, this run has %.9g",
                       m->temperature, want->temperature);
    if (m->views != want->views)
        return differs(err, c, rebuild, "views", has_fmt, m->views, want->views);
    if (m->view_seed != want->view_seed)
        return differs(err, c, rebuild, "view_seed", "the file has %llu, this run has %llu",
                       (unsigned long long)m->view_seed, (unsigned long long)want->view_seed);
    for (size_t k = 0; k < m->n_teachers; k++)
        if (!(fabs(m->weight[k] - want->weight[k]) <= 1e-6)) {
            char field[32];
            snprintf(field, sizeof field, "weights[%zu]", k);
            return differs(err, c, rebuild, field, "the file has %.9g, this run has %.9g",
                           m->weight[k], want->weight[k]);
        }
    for (size_t i = 0; i < want->n_fields; i++) {
        const kd_cache_field *f = &want->fields[i];
        const char *has = field_value(m, f->name);
        if (!has || strcmp(has, f->value) != 0)
            return differs(err, c, rebuild, f->name, "the file has %s%.200s%s, this run has "
                           "\"%.200s\"", has ? "\"" : "", has ? has : "none", has ? "\"" : "",
                           f->value);
    }
    if (m->n_rows != n_idx)
        return differs(err, c, rebuild, "n_rows", "the file has %zu samples, this run has %zu",
                       m->n_rows, n_idx);
    for (size_t r = 0; r < n_idx; r++)
        if (c->index[r] != idx[r])
            return differs(err, c, rebuild, "the sample index", "row %zu of the file is sample "
                           "%u, this run's is sample %zu", r, c->index[r], idx[r]);
    return KD_OK;
}
