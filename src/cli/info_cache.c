/* info_cache.c - `distill info CACHE [--json]`: verifies a soft-target cache file completely
 * (kd_cache_open) and describes it: targets, views, rows, teachers with their weights and
 * recorded validation accuracies, bytes per sample, provenance fields. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "kd_cache.h"

/* "85.12%" or "unknown" (NaN: no labelled validation set when the cache was built). */
static const char *pct(double acc, char *buf, size_t cap) {
    if (isnan(acc)) snprintf(buf, cap, "unknown");
    else snprintf(buf, cap, "%.2f%%", 100.0 * acc);
    return buf;
}

/* Text on one line: control characters (a newline in a path) as spaces. */
static void put_line_text(const char *s) {
    for (; *s; s++) putchar((unsigned char)*s < 0x20 ? ' ' : *s);
}

static void print_field(const kd_cache_field *f) {
    printf("  ");
    put_line_text(f->name);
    printf(": ");
    put_line_text(f->value);
    putchar('\n');
}

static void print_text(const char *path, size_t size, const kd_cache *c) {
    const kd_cache_meta *m = kd_cache_info(c);
    const uint32_t *index = kd_cache_index(c);
    size_t entry = kd_cache_entry_bytes(m);
    char b[32];
    printf("file      %s (%zu bytes)\n", path, size);
    printf("format    distill-cache/1 (soft-target cache)\n");
    if (m->top_k)
        printf("targets   %s, top %zu of %zu logits at T = %g (the other classes share the "
               "rest's mass)\n", kd_cache_dtype_name(m->dtype), m->top_k, m->n_classes,
               m->temperature);
    else
        printf("targets   %s, all %zu logits\n", kd_cache_dtype_name(m->dtype), m->n_classes);
    printf("views     %zu (view seed %llu)\n", m->views, (unsigned long long)m->view_seed);
    printf("rows      %zu training samples (indices %u..%u), %zu classes, %zu teacher%s\n",
           m->n_rows, index[0], index[m->n_rows - 1], m->n_classes, m->n_teachers,
           m->n_teachers == 1 ? "" : "s");
    printf("teachers  index  weight    val acc\n");
    for (size_t k = 0; k < m->n_teachers; k++)
        printf("          %5zu  %-8.6g  %s\n", k, m->weight[k], pct(m->teacher_val_acc[k], b,
               sizeof b));
    if (m->n_teachers > 1)  /* one teacher: its own line says it */
        printf("ensemble  val acc %s\n", pct(m->ensemble_val_acc, b, sizeof b));
    printf("bytes     %zu per sample (%zu per view, %zu per view and teacher)\n",
           entry * m->views, entry, entry / m->n_teachers);
    printf("fields:%s\n", m->n_fields ? "" : " none");
    for (size_t i = 0; i < m->n_fields; i++)
        print_field(&m->fields[i]);
}

#define NUM(v) cJSON_CreateNumber((double)(v))
#define ACC(v) (isnan(v) ? cJSON_CreateNull() : cJSON_CreateNumber(v))

static kd_status print_json(const char *path, size_t size, const kd_cache *c, kd_err *err) {
    const kd_cache_meta *m = kd_cache_info(c);
    const uint32_t *index = kd_cache_index(c);
    size_t entry = kd_cache_entry_bytes(m);
    int bad = 0;
    cJSON *o = cJSON_CreateObject();
    kd_cli_json_add(o, "file", cJSON_CreateString(path), &bad);
    kd_cli_json_add(o, "size", NUM(size), &bad);
    kd_cli_json_add(o, "format", cJSON_CreateString("distill-cache/1"), &bad);
    kd_cli_json_add(o, "dtype", cJSON_CreateString(kd_cache_dtype_name(m->dtype)), &bad);
    kd_cli_json_add(o, "top_k", NUM(m->top_k), &bad);
    kd_cli_json_add(o, "temperature", m->top_k ? NUM(m->temperature) : cJSON_CreateNull(), &bad);
    kd_cli_json_add(o, "views", NUM(m->views), &bad);
    /* A JSON number holds the seed exactly (at most 2^53 - 1); cJSON prints 15 digits. */
    char seed[24];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)m->view_seed);
    kd_cli_json_add(o, "view_seed", cJSON_CreateRaw(seed), &bad);
    kd_cli_json_add(o, "rows", NUM(m->n_rows), &bad);
    kd_cli_json_add(o, "first_sample", NUM(index[0]), &bad);
    kd_cli_json_add(o, "last_sample", NUM(index[m->n_rows - 1]), &bad);
    kd_cli_json_add(o, "classes", NUM(m->n_classes), &bad);
    cJSON *ts = kd_cli_json_add(o, "teachers", cJSON_CreateArray(), &bad);
    for (size_t k = 0; ts && k < m->n_teachers; k++) {
        cJSON *t = kd_cli_json_add(ts, NULL, cJSON_CreateObject(), &bad);
        kd_cli_json_add(t, "weight", NUM(m->weight[k]), &bad);
        kd_cli_json_add(t, "val_acc", ACC(m->teacher_val_acc[k]), &bad);
    }
    kd_cli_json_add(o, "ensemble_val_acc", ACC(m->ensemble_val_acc), &bad);
    kd_cli_json_add(o, "bytes_per_sample", NUM(entry * m->views), &bad);
    kd_cli_json_add(o, "bytes_per_view", NUM(entry), &bad);
    cJSON *fs = kd_cli_json_add(o, "fields", cJSON_CreateObject(), &bad);
    for (size_t i = 0; i < m->n_fields; i++)
        kd_cli_json_add(fs, m->fields[i].name, cJSON_CreateString(m->fields[i].value), &bad);
    return kd_cli_json_print(o, bad, err);
}

int kd_cli_info_cache(const char *path, int json) {
    kd_err err;
    kd_err_clear(&err);
    kd_cache *c = NULL;
    if (kd_cache_open(&c, path, &err) != KD_OK) return kd_cli_fail(&err);
    struct stat sb;
    size_t size = stat(path, &sb) == 0 ? (size_t)sb.st_size : 0;
    int rc = 0;
    if (json) {
        if (print_json(path, size, c, &err) != KD_OK) rc = kd_cli_fail(&err);
    } else {
        print_text(path, size, c);
    }
    kd_cache_close(c);
    return rc;
}
