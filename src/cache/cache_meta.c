/* cache_meta.c - what the cache's reader and writer share: dtype names, the meta's ranges, the
 * byte layout a meta implies (kd_cache.h's header comment), and the provenance fields. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cache_impl.h"
#include "kd_dtype.h"
#include "kd_safetensors.h"

static const char *const dtype_names[] = {[KD_CACHE_F32] = "f32", [KD_CACHE_F16] = "f16"};
#define N_DTYPES (sizeof dtype_names / sizeof dtype_names[0])

const char *const *kd_cache_dtype_names(size_t *n) {
    *n = N_DTYPES;
    return dtype_names;
}

const char *kd_cache_dtype_name(kd_cache_dtype d) {
    return (unsigned)d < N_DTYPES ? dtype_names[d] : "?";
}

int kd_cache_dtype_find(const char *name, kd_cache_dtype *out) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (strcmp(dtype_names[i], name) == 0) {
            *out = (kd_cache_dtype)i;
            return 0;
        }
    return -1;
}

/* Bytes per stored logit: the size of the value the dtype codec (kd_dtype.h) stores. */
static size_t value_bytes(kd_cache_dtype d) {
    const kd_codec *codec = kd_codec_find(kd_cache_dtype_name(d));
    return codec ? kd_dtype_size(codec->stored) : 0;
}

/* A teacher row: n_classes values, or K u16 class indices, K values and the f32 log-sum-exp of
 * the rest. Counts are within their ranges (at most 65535 classes, 16 teachers), so no product
 * here overflows. */
size_t kd_cache_entry_bytes(const kd_cache_meta *meta) {
    size_t vb = value_bytes(meta->dtype);
    size_t row = meta->top_k ? meta->top_k * (2 + vb) + 4 : meta->n_classes * vb;
    return meta->n_teachers * row;
}

uint32_t kd_cache_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void kd_cache_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/*   size = 16 + header_len + 4 n_rows + 4 + n_entries * entry_bytes + 4 n_blocks */
int kd_cache_layout_of(const kd_cache_meta *meta, size_t header_len, kd_cache_layout *out) {
    kd_cache_layout l = {0};
    l.header_len = header_len;
    l.value_bytes = value_bytes(meta->dtype);
    l.entry_bytes = kd_cache_entry_bytes(meta);
    l.row_bytes = l.entry_bytes / meta->n_teachers;
    l.block_stride = KD_CACHE_BLOCK_ROWS * l.entry_bytes + 4;
    size_t index_bytes, data_bytes, index_end, crc_bytes;
    if (kd_mul_size(meta->views, meta->n_rows, &l.n_entries) ||
        kd_mul_size(meta->n_rows, 4, &index_bytes) ||
        kd_mul_size(l.n_entries, l.entry_bytes, &data_bytes))
        return -1;
    l.n_blocks = l.n_entries / KD_CACHE_BLOCK_ROWS + (l.n_entries % KD_CACHE_BLOCK_ROWS != 0);
    l.index_off = KD_CACHE_PREAMBLE + header_len;
    if (kd_mul_size(l.n_blocks, 4, &crc_bytes) ||
        kd_add_size(l.index_off, index_bytes, &index_end) ||
        kd_add_size(index_end, 4, &l.blocks_off) ||
        kd_add_size(l.blocks_off, data_bytes, &l.file_size) ||
        kd_add_size(l.file_size, crc_bytes, &l.file_size))
        return -1;
    *out = l;
    return 0;
}

void kd_cache_block_span(const kd_cache_layout *lay, size_t b, size_t *begin, size_t *len) {
    size_t first = b * KD_CACHE_BLOCK_ROWS, n = lay->n_entries - first;
    if (n > KD_CACHE_BLOCK_ROWS) n = KD_CACHE_BLOCK_ROWS;
    *begin = lay->blocks_off + b * lay->block_stride;
    *len = n * lay->entry_bytes;
}

static int invalid(char *msg, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int invalid(char *msg, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, cap, fmt, ap);
    va_end(ap);
    return -1;
}

/* An accuracy is a fraction in [0, 1], or NaN (unknown). */
static int bad_acc(double a) { return !isnan(a) && !(a >= 0.0 && a <= 1.0); }

int kd_cache_meta_invalid(const kd_cache_meta *m, char *msg, size_t cap) {
    if (m->n_rows < 1 || (uint64_t)m->n_rows > ((uint64_t)1 << 32))
        return invalid(msg, cap, "n_rows: expected an integer in 1..4294967296, got %zu",
                       m->n_rows);
    if (m->n_classes < 1 || m->n_classes > KD_CACHE_MAX_CLASSES)
        return invalid(msg, cap, "n_classes: expected an integer in 1..%d, got %zu",
                       KD_CACHE_MAX_CLASSES, m->n_classes);
    if (m->n_teachers < 1 || m->n_teachers > KD_CACHE_MAX_TEACHERS)
        return invalid(msg, cap, "n_teachers: expected an integer in 1..%d, got %zu",
                       KD_CACHE_MAX_TEACHERS, m->n_teachers);
    if ((unsigned)m->dtype >= N_DTYPES)
        return invalid(msg, cap, "dtype: expected f32 or f16, got %d", (int)m->dtype);
    if (m->top_k >= m->n_classes)
        return invalid(msg, cap, "top_k: expected 0 (all logits) or 1..%zu (fewer than the %zu "
                       "classes), got %zu", m->n_classes - 1, m->n_classes, m->top_k);
    if (m->top_k > 0 && !(isfinite(m->temperature) && m->temperature > 0))
        return invalid(msg, cap, "temperature: expected a number > 0 (the T of a top-k cache), "
                       "got %.9g", m->temperature);
    if (m->top_k == 0 && m->temperature != 0)
        return invalid(msg, cap, "temperature: expected 0 (a cache of all logits holds no T), "
                       "got %.9g", m->temperature);
    if (m->views < 1 || m->views > KD_CACHE_MAX_VIEWS)
        return invalid(msg, cap, "views: expected an integer in 1..%d, got %zu",
                       KD_CACHE_MAX_VIEWS, m->views);
    if (m->view_seed > KD_CACHE_MAX_SEED)
        return invalid(msg, cap, "view_seed: expected an integer in 0..2^53-1, got %llu",
                       (unsigned long long)m->view_seed);
    double sum = 0;
    for (size_t k = 0; k < m->n_teachers; k++) {
        if (!(m->weight[k] >= 0.0 && m->weight[k] <= 1.0))
            return invalid(msg, cap, "weights[%zu]: expected a number in [0, 1], got %.9g", k,
                           m->weight[k]);
        sum += m->weight[k];
        if (bad_acc(m->teacher_val_acc[k]))
            return invalid(msg, cap, "teacher_val_acc[%zu]: expected a fraction in [0, 1] or "
                           "null, got %.9g", k, m->teacher_val_acc[k]);
    }
    if (fabs(sum - 1.0) > 1e-6)
        return invalid(msg, cap, "weights: expected %zu weights summing to 1 (within 1e-6), got "
                       "a sum of %.9g", m->n_teachers, sum);
    if (bad_acc(m->ensemble_val_acc))
        return invalid(msg, cap, "ensemble_val_acc: expected a fraction in [0, 1] or null, got "
                       "%.9g", m->ensemble_val_acc);
    if (m->n_fields > KD_CACHE_MAX_FIELDS)
        return invalid(msg, cap, "fields: expected at most %d, got %zu", KD_CACHE_MAX_FIELDS,
                       m->n_fields);
    for (size_t i = 0; i < m->n_fields; i++) {
        const kd_cache_field *f = &m->fields[i];
        size_t nl = strnlen(f->name, sizeof f->name), vl = strnlen(f->value, sizeof f->value);
        if (nl == 0 || nl == sizeof f->name)
            return invalid(msg, cap, "fields: expected names of 1 to %zu bytes, got one of %s",
                           sizeof f->name - 1, nl ? "more" : "0");
        if (vl == sizeof f->value)
            return invalid(msg, cap, "fields.%s: expected a value of at most %zu bytes", f->name,
                           sizeof f->value - 1);
        if (!kd_utf8_valid(f->name, nl, NULL) || !kd_utf8_valid(f->value, vl, NULL))
            return invalid(msg, cap, "fields.%s: expected UTF-8 text (the header is JSON)",
                           kd_utf8_valid(f->name, nl, NULL) ? f->name : "(name)");
        for (size_t j = 0; j < i; j++)
            if (strcmp(m->fields[j].name, f->name) == 0)
                return invalid(msg, cap, "fields.%s: expected each name once, got it twice",
                               f->name);
    }
    return 0;
}

kd_status kd_cache_meta_add(kd_cache_meta *meta, const char *name, const char *value,
                            kd_err *err) {
    if (meta->n_fields >= KD_CACHE_MAX_FIELDS)
        return kd_err_set(err, KD_EUSAGE, "cache field %s: a cache records at most %d fields",
                          name, KD_CACHE_MAX_FIELDS);
    kd_cache_field *f = &meta->fields[meta->n_fields];
    size_t nl = strlen(name), vl = strlen(value);
    if (nl == 0 || nl >= sizeof f->name)
        return kd_err_set(err, KD_EUSAGE, "cache field \"%.80s\": names are 1 to %zu bytes long",
                          name, sizeof f->name - 1);
    if (vl >= sizeof f->value)
        return kd_err_set(err, KD_EUSAGE, "cache field %s: its value is %zu bytes, more than "
                          "the %zu a cache holds", name, vl, sizeof f->value - 1);
    for (size_t i = 0; i < meta->n_fields; i++)
        if (strcmp(meta->fields[i].name, name) == 0)
            return kd_err_set(err, KD_EUSAGE, "cache field %s: recorded twice", name);
    memcpy(f->name, name, nl + 1);
    memcpy(f->value, value, vl + 1);
    meta->n_fields++;
    return KD_OK;
}
