/* cache_read.c - opens a soft-target cache file (layout in kd_cache.h) trusting nothing in it:
 * the header is parsed strictly and the size it implies checked against the file before any
 * allocation sized by it; every checksum, index and value is verified before a row is used. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "cache_impl.h"
#include "kd_dtype.h"
#include "kd_safetensors.h"
#include "kd_suggest.h"

/* "cache NAME: what", always KD_EINPUT. */
static kd_status bad(kd_err *err, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static kd_status bad(kd_err *err, const char *name, const char *fmt, ...) {
    char what[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return kd_err_set(err, KD_EINPUT, "cache %s: %s", name, what);
}

/* ---- The header ------------------------------------------------------------------------- */

/* The header's keys, in the order the writer puts them; KEY_* are their positions. */
static const char *const header_keys[] = {
    "format", "n_rows", "n_classes", "n_teachers", "dtype", "top_k", "temperature", "views",
    "view_seed", "weights", "teacher_val_acc", "ensemble_val_acc", "fields"};
enum {
    KEY_FORMAT, KEY_N_ROWS, KEY_N_CLASSES, KEY_N_TEACHERS, KEY_DTYPE, KEY_TOP_K, KEY_TEMPERATURE,
    KEY_VIEWS, KEY_VIEW_SEED, KEY_WEIGHTS, KEY_TEACHER_VAL_ACC, KEY_ENSEMBLE_VAL_ACC, KEY_FIELDS,
    N_KEYS
};

/* A JSON value in a few words for messages. */
static const char *brief(const cJSON *v, char *buf, size_t cap) {
    if (cJSON_IsNumber(v)) snprintf(buf, cap, "%.17g", v->valuedouble);
    else if (cJSON_IsString(v)) snprintf(buf, cap, "\"%.40s\"", v->valuestring);
    else if (cJSON_IsArray(v)) snprintf(buf, cap, "an array of %d", cJSON_GetArraySize(v));
    else if (cJSON_IsObject(v)) snprintf(buf, cap, "an object");
    else if (cJSON_IsBool(v)) snprintf(buf, cap, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else snprintf(buf, cap, "null");
    return buf;
}

/* A whole number in 0 .. 2^53 - 1 (JSON numbers are doubles: exact up to there). */
static int json_whole(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= (double)KD_CACHE_MAX_SEED) || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

/* A number, or null for NaN (the accuracies). */
static int json_acc(const cJSON *v, double *out) {
    if (cJSON_IsNull(v)) *out = NAN;
    else if (cJSON_IsNumber(v)) *out = v->valuedouble;
    else return -1;
    return 0;
}

/* An array of n numbers (null allowed when nullable) into out. */
static int json_numbers(const cJSON *v, size_t n, int nullable, double *out) {
    if (!cJSON_IsArray(v) || (size_t)cJSON_GetArraySize(v) != n) return -1;
    size_t i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, v) {
        if (nullable ? json_acc(c, &out[i]) != 0 : !cJSON_IsNumber(c)) return -1;
        if (!nullable) out[i] = c->valuedouble;
        i++;
    }
    return 0;
}

static kd_status parse_fields(const char *name, const cJSON *v, kd_cache_meta *m, kd_err *err) {
    char vb[96];
    if (!cJSON_IsObject(v))
        return bad(err, name, "header field fields: expected an object of strings, got %s",
                   brief(v, vb, sizeof vb));
    const cJSON *c;
    cJSON_ArrayForEach(c, v) {
        if (!cJSON_IsString(c))
            return bad(err, name, "header field fields.%.64s: expected a string, got %s",
                       c->string, brief(c, vb, sizeof vb));
        kd_err e2;
        if (kd_cache_meta_add(m, c->string, c->valuestring, &e2) != KD_OK)
            return bad(err, name, "header field fields.%.64s: %s", c->string,
                       strchr(e2.msg, ':') ? strchr(e2.msg, ':') + 2 : e2.msg);
    }
    return KD_OK;
}

/* The header object's keys into m: each known key exactly once, nothing else. */
static kd_status parse_keys(const char *name, const cJSON *root, kd_cache_meta *m, kd_err *err) {
    const cJSON *v[N_KEYS] = {0}, *c;
    char vb[96];
    cJSON_ArrayForEach(c, root) {
        size_t k = 0;
        while (k < N_KEYS && strcmp(c->string, header_keys[k]) != 0) k++;
        if (k == N_KEYS) {
            const char *near = kd_suggest(c->string, header_keys, N_KEYS);
            return bad(err, name, "header field \"%.64s\": unknown key%s%s%s", c->string,
                       near ? " (did you mean " : "", near ? near : "", near ? "?)" : "");
        }
        if (v[k]) return bad(err, name, "header field %s: appears twice", header_keys[k]);
        v[k] = c;
    }
    for (size_t k = 0; k < N_KEYS; k++)
        if (!v[k]) return bad(err, name, "header field %s: missing", header_keys[k]);
    if (!cJSON_IsString(v[KEY_FORMAT]) || strcmp(v[KEY_FORMAT]->valuestring, KD_CACHE_FORMAT))
        return bad(err, name, "header field format: expected \"%s\", got %s", KD_CACHE_FORMAT,
                   brief(v[KEY_FORMAT], vb, sizeof vb));
    static const int whole[] = {KEY_N_ROWS, KEY_N_CLASSES, KEY_N_TEACHERS, KEY_TOP_K, KEY_VIEWS,
                                KEY_VIEW_SEED};
    uint64_t u[6];
    for (size_t i = 0; i < 6; i++)
        if (json_whole(v[whole[i]], &u[i]) != 0)
            return bad(err, name, "header field %s: expected a whole number in 0..2^53-1, got %s",
                       header_keys[whole[i]], brief(v[whole[i]], vb, sizeof vb));
    m->n_rows = (size_t)u[0];
    m->n_classes = (size_t)u[1];
    m->n_teachers = (size_t)u[2];
    m->top_k = (size_t)u[3];
    m->views = (size_t)u[4];
    m->view_seed = u[5];
    if (!cJSON_IsString(v[KEY_DTYPE]) || kd_cache_dtype_find(v[KEY_DTYPE]->valuestring, &m->dtype))
        return bad(err, name, "header field dtype: expected \"f32\" or \"f16\", got %s",
                   brief(v[KEY_DTYPE], vb, sizeof vb));
    if (!cJSON_IsNumber(v[KEY_TEMPERATURE]))
        return bad(err, name, "header field temperature: expected a number, got %s",
                   brief(v[KEY_TEMPERATURE], vb, sizeof vb));
    m->temperature = v[KEY_TEMPERATURE]->valuedouble;
    /* The arrays need n_teachers in range first. */
    if (m->n_teachers < 1 || m->n_teachers > KD_CACHE_MAX_TEACHERS)
        return bad(err, name, "header field n_teachers: expected an integer in 1..%d, got %zu",
                   KD_CACHE_MAX_TEACHERS, m->n_teachers);
    if (json_numbers(v[KEY_WEIGHTS], m->n_teachers, 0, m->weight) != 0)
        return bad(err, name, "header field weights: expected an array of %zu numbers (one per "
                   "teacher), got %s", m->n_teachers, brief(v[KEY_WEIGHTS], vb, sizeof vb));
    if (json_numbers(v[KEY_TEACHER_VAL_ACC], m->n_teachers, 1, m->teacher_val_acc) != 0)
        return bad(err, name, "header field teacher_val_acc: expected an array of %zu numbers or "
                   "nulls (one per teacher), got %s", m->n_teachers,
                   brief(v[KEY_TEACHER_VAL_ACC], vb, sizeof vb));
    if (json_acc(v[KEY_ENSEMBLE_VAL_ACC], &m->ensemble_val_acc) != 0)
        return bad(err, name, "header field ensemble_val_acc: expected a number or null, got %s",
                   brief(v[KEY_ENSEMBLE_VAL_ACC], vb, sizeof vb));
    return parse_fields(name, v[KEY_FIELDS], m, err);
}

/* Checks the first 16 + header_len bytes of a file of file_size bytes (at least that many
 * bytes are in data) and fills meta and lay; the file's size must be what the header implies
 * (unless any_size: kd_cache_fix_checksums). */
static kd_status parse_head(const char *name, const uint8_t *data, size_t avail, size_t file_size,
                            int any_size, kd_cache_meta *m, kd_cache_layout *lay, kd_err *err) {
    size_t n_magic = avail < 8 ? avail : 8;
    if (memcmp(data, KD_CACHE_MAGIC, n_magic) != 0)
        return bad(err, name, "byte 0: not a distill cache file (expected it to start with \"%s\")",
                   KD_CACHE_MAGIC);
    if (file_size < KD_CACHE_PREAMBLE)
        return bad(err, name, "the file is %zu bytes, shorter than the %d bytes of a cache's "
                   "magic, header length and header checksum: truncated", file_size,
                   KD_CACHE_PREAMBLE);
    size_t hl = kd_cache_get_u32(data + 8);
    if (hl > KD_CACHE_MAX_HEADER)
        return bad(err, name, "byte 8: header length %zu exceeds the %zu-byte limit", hl,
                   KD_CACHE_MAX_HEADER);
    if (hl > file_size - KD_CACHE_PREAMBLE)
        return bad(err, name, "the file is %zu bytes, shorter than its %zu-byte header needs "
                   "(%zu bytes and more): truncated", file_size, hl, KD_CACHE_PREAMBLE + hl);
    const uint8_t *h = data + KD_CACHE_PREAMBLE;
    if (crc32_z(0L, h, hl) != kd_cache_get_u32(data + 12))
        return bad(err, name, "header (bytes %d..%zu) checksum mismatch: the file is corrupt",
                   KD_CACHE_PREAMBLE, KD_CACHE_PREAMBLE + hl);
    size_t off;
    if (!kd_utf8_valid(h, hl, &off))
        return bad(err, name, "byte %zu: the header is not valid UTF-8", off + KD_CACHE_PREAMBLE);
    for (size_t i = 0; i < hl; i++)
        if (h[i] < 0x20)
            return bad(err, name, "byte %zu: control byte 0x%02x in the header",
                       i + KD_CACHE_PREAMBLE, h[i]);
    if (kd_json_depth_check((const char *)h, hl, KD_JSON_MAX_DEPTH, &off))
        return bad(err, name, "byte %zu: the header's JSON is nested deeper than %d levels",
                   off + KD_CACHE_PREAMBLE, KD_JSON_MAX_DEPTH);
    /* cJSON gets a NUL-terminated copy, as every other JSON text it reads. */
    char *text = malloc(hl + 1);
    if (!text) return kd_err_set(err, KD_EIO, "cache %s: out of memory", name);
    memcpy(text, h, hl);
    text[hl] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, hl, &end, 0);
    size_t at = end ? (size_t)(end - text) : 0;
    free(text);
    if (!root || !cJSON_IsObject(root) || at != hl) {
        int object = cJSON_IsObject(root);
        cJSON_Delete(root);
        if (!root)
            return bad(err, name, "byte %zu: the header is not valid JSON",
                       at + KD_CACHE_PREAMBLE);
        if (!object)
            return bad(err, name, "byte %d: the header is not a JSON object", KD_CACHE_PREAMBLE);
        return bad(err, name, "byte %zu: data after the header object", at + KD_CACHE_PREAMBLE);
    }
    memset(m, 0, sizeof *m);
    kd_status st = parse_keys(name, root, m, err);
    cJSON_Delete(root);
    if (st != KD_OK) return st;
    char why[768];
    if (kd_cache_meta_invalid(m, why, sizeof why) != 0)
        return bad(err, name, "header field %s", why);
    if (kd_cache_layout_of(m, hl, lay) != 0)
        return bad(err, name, "header field n_rows: %zu rows of %zu views of %zu bytes overflow "
                   "the sizes of this machine", m->n_rows, m->views, kd_cache_entry_bytes(m));
    if (!any_size && file_size != lay->file_size)
        return bad(err, name, "the file is %zu bytes, its header implies %zu: %s", file_size,
                   lay->file_size, file_size < lay->file_size ? "truncated" : "data after the end");
    return KD_OK;
}

/* ---- The index and the blocks ----------------------------------------------------------- */

/* Where entry e starts. */
static const uint8_t *entry_at(const kd_cache *c, size_t e) {
    return c->data + c->lay.blocks_off + (e / KD_CACHE_BLOCK_ROWS) * c->lay.block_stride +
           (e % KD_CACHE_BLOCK_ROWS) * c->lay.entry_bytes;
}

static float get_f32(const uint8_t *p) {
    uint32_t bits = kd_cache_get_u32(p);
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* Teacher row p as n_classes logits z. A top-k row becomes pseudo-logits whose softmax at T is
 * the stored target: the K kept classes keep their logits, and each of the C - K others gets
 *   z_o = T * (lse_rest - log(C - K)),  so  sum_others exp(z_o / T) = exp(lse_rest),
 * the others' stored total, shared evenly. */
static void decode_row(const kd_cache *c, const uint8_t *p, float *z) {
    const kd_cache_meta *m = &c->meta;
    size_t C = m->n_classes, K = m->top_k, vb = c->lay.value_bytes;
    if (K == 0) {
        c->codec->decode(p, NULL, 1, C, z);
        return;
    }
    double lse = get_f32(p + K * (2 + vb));
    float rest = (float)(m->temperature * (lse - log((double)(C - K))));
    for (size_t j = 0; j < C; j++) z[j] = rest;
    for (size_t j = 0; j < K; j++) {
        size_t cls = (size_t)p[2 * j] | (size_t)p[2 * j + 1] << 8;
        c->codec->decode(p + 2 * K + j * vb, NULL, 1, 1, &z[cls]);
    }
}

/* Checks teacher row p (at file offset off) of entry e: with top-k, every class index below
 * n_classes and none twice (seen: n_classes zeros, left zeroed); every value finite. */
static kd_status check_row(const kd_cache *c, const uint8_t *p, size_t e, size_t k,
                           uint8_t *seen, float *z, kd_err *err) {
    const kd_cache_meta *m = &c->meta;
    size_t K = m->top_k, off = (size_t)(p - c->data), v = e / m->n_rows, r = e % m->n_rows;
    const char *why = NULL;
    size_t j = 0;
    for (; j < K && !why; j++) {
        unsigned cls = (unsigned)p[2 * j] | (unsigned)p[2 * j + 1] << 8;
        if (cls >= m->n_classes) why = "is not below n_classes";
        else if (seen[cls]) why = "appears twice";
        else seen[cls] = 1;
    }
    for (size_t i = 0; i < K; i++) { /* leave seen zeroed for the next row */
        unsigned cls = (unsigned)p[2 * i] | (unsigned)p[2 * i + 1] << 8;
        if (cls < m->n_classes) seen[cls] = 0;
    }
    if (why) {
        unsigned cls = (unsigned)p[2 * (j - 1)] | (unsigned)p[2 * (j - 1) + 1] << 8;
        char what[64];
        if (cls >= m->n_classes) snprintf(what, sizeof what, "%s %zu", why, m->n_classes);
        else snprintf(what, sizeof what, "%s", why);
        return bad(err, c->name, "byte %zu: view %zu, row %zu (training sample %u), teacher %zu: "
                   "class index %u %s", off + 2 * (j - 1), v, r, c->index[r], k, cls, what);
    }
    decode_row(c, p, z);
    for (size_t i = 0; i < m->n_classes; i++)
        if (!isfinite(z[i]))
            return bad(err, c->name, "byte %zu: view %zu, row %zu (training sample %u), teacher "
                       "%zu: a logit is not finite (class %zu)", off, v, r, c->index[r], k, i);
    return KD_OK;
}

/* Everything after the header: the index (checksum, strictly ascending) and every block
 * (checksum, then each row's classes and values). */
static kd_status verify_body(kd_cache *c, kd_err *err) {
    const kd_cache_layout *lay = &c->lay;
    const kd_cache_meta *m = &c->meta;
    size_t ib = 4 * m->n_rows;
    const uint8_t *ip = c->data + lay->index_off;
    if (crc32_z(0L, ip, ib) != kd_cache_get_u32(ip + ib))
        return bad(err, c->name, "index (bytes %zu..%zu) checksum mismatch: the file is corrupt",
                   lay->index_off, lay->index_off + ib + 4);
    c->index = malloc(ib);
    uint8_t *seen = calloc(m->n_classes, 1);
    float *z = malloc(m->n_classes * sizeof *z);
    kd_status st = KD_OK;
    if (!c->index || !seen || !z) {
        st = kd_err_set(err, KD_EIO, "cache %s: out of memory", c->name);
        goto cleanup;
    }
    for (size_t r = 0; r < m->n_rows; r++) {
        c->index[r] = kd_cache_get_u32(ip + 4 * r);
        if (r > 0 && c->index[r] <= c->index[r - 1]) {
            st = bad(err, c->name, "byte %zu: index[%zu] = %u is not above index[%zu] = %u "
                     "(expected strictly ascending training-sample indices)",
                     lay->index_off + 4 * r, r, c->index[r], r - 1, c->index[r - 1]);
            goto cleanup;
        }
    }
    for (size_t b = 0; b < lay->n_blocks; b++) {
        size_t begin, len;
        kd_cache_block_span(lay, b, &begin, &len);
        if (crc32_z(0L, c->data + begin, len) != kd_cache_get_u32(c->data + begin + len)) {
            st = bad(err, c->name, "block %zu (bytes %zu..%zu) checksum mismatch: the file is "
                     "corrupt", b, begin, begin + len + 4);
            goto cleanup;
        }
        for (size_t j = 0; j < len / lay->entry_bytes; j++)
            for (size_t k = 0; k < m->n_teachers; k++) {
                size_t e = b * KD_CACHE_BLOCK_ROWS + j;
                st = check_row(c, entry_at(c, e) + k * lay->row_bytes, e, k, seen, z, err);
                if (st != KD_OK) goto cleanup;
            }
    }
cleanup:
    free(seen);
    free(z);
    return st;
}

/* ---- Opening ------------------------------------------------------------------------------ */

kd_status kd_cache_adopt(kd_cache **out, uint8_t *data, size_t len, const char *name,
                         kd_err *err) {
    *out = NULL;
    kd_cache *c = calloc(1, sizeof *c);
    if (!c || !(c->name = strdup(name))) {
        free(data);
        kd_cache_close(c);
        return kd_err_set(err, KD_EIO, "cache %s: out of memory", name);
    }
    c->data = data;
    kd_status st = parse_head(name, data, len, len, 0, &c->meta, &c->lay, err);
    if (st == KD_OK) {
        c->codec = kd_codec_find(kd_cache_dtype_name(c->meta.dtype));
        st = verify_body(c, err);
    }
    if (st != KD_OK) {
        kd_cache_close(c);
        return st;
    }
    *out = c;
    return KD_OK;
}

kd_status kd_cache_open_mem(kd_cache **out, const void *data, size_t len, const char *name,
                            kd_err *err) {
    *out = NULL;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) return kd_err_set(err, KD_EIO, "cache %s: out of memory (%zu bytes)", name, len);
    if (len) memcpy(copy, data, len);
    return kd_cache_adopt(out, copy, len, name, err);
}

/* Reads the header first and checks the size it implies against the file's before reading
 * (and allocating) the rest, so a short file with a huge header claim costs nothing. */
kd_status kd_cache_open(kd_cache **out, const char *path, kd_err *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kd_err_set(err, KD_EIO, "cache %s: cannot open: %s", path, strerror(errno));
    kd_status st = KD_OK;
    uint8_t *buf = NULL;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = bad(err, path, "not a regular file");
        goto cleanup;
    }
    size_t size = (size_t)sb.st_size, head = KD_CACHE_PREAMBLE + KD_CACHE_MAX_HEADER;
    if (head > size) head = size;
    kd_cache_meta meta;
    kd_cache_layout lay;
    buf = malloc(head ? head : 1);
    if (!buf) {
        st = kd_err_set(err, KD_EIO, "cache %s: out of memory", path);
        goto cleanup;
    }
    if (fread(buf, 1, head, f) != head) {
        st = kd_err_set(err, KD_EIO, "cache %s: read failed: %s", path,
                        ferror(f) ? strerror(errno) : "the file shrank while being read");
        goto cleanup;
    }
    if ((st = parse_head(path, buf, head, size, 0, &meta, &lay, err)) != KD_OK) goto cleanup;
    uint8_t *all = realloc(buf, size);
    if (!all) {
        st = kd_err_set(err, KD_EIO, "cache %s: out of memory (%zu bytes)", path, size);
        goto cleanup;
    }
    buf = all;
    if (fread(buf + head, 1, size - head, f) != size - head) {
        st = kd_err_set(err, KD_EIO, "cache %s: read failed: %s", path,
                        ferror(f) ? strerror(errno) : "the file shrank while being read");
        goto cleanup;
    }
    st = kd_cache_adopt(out, buf, size, path, err);
    buf = NULL; /* kd_cache_adopt owns it now */
cleanup:
    free(buf);
    fclose(f);
    return st;
}

int kd_cache_sniff(const char *path) {
    char magic[8];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    int yes = fread(magic, 1, 8, f) == 8 && memcmp(magic, KD_CACHE_MAGIC, 8) == 0;
    fclose(f);
    return yes;
}

void kd_cache_close(kd_cache *c) {
    if (!c) return;
    free(c->name);
    free(c->data);
    free(c->index);
    free(c);
}

const kd_cache_meta *kd_cache_info(const kd_cache *c) { return &c->meta; }

const uint32_t *kd_cache_index(const kd_cache *c) { return c->index; }

long kd_cache_row(const kd_cache *c, size_t sample) {
    size_t lo = 0, hi = c->meta.n_rows;
    while (lo < hi) { /* the first row whose sample is >= the one sought */
        size_t mid = lo + (hi - lo) / 2;
        if (c->index[mid] < sample) lo = mid + 1;
        else hi = mid;
    }
    return lo < c->meta.n_rows && c->index[lo] == sample ? (long)lo : -1;
}

kd_status kd_cache_logits(const kd_cache *c, const size_t *sample, const uint32_t *view,
                          size_t n, float *logits, kd_err *err) {
    const kd_cache_meta *m = &c->meta;
    size_t C = m->n_classes;
    for (size_t i = 0; i < n; i++) {
        long row = kd_cache_row(c, sample[i]);
        size_t v = view ? view[i] : 0;
        if (row < 0)
            return bad(err, c->name, "no row for training sample %zu (the cache was built for "
                       "other samples: rebuild it)", sample[i]);
        if (v >= m->views)
            return bad(err, c->name, "view %zu out of range (the cache holds %zu view%s)", v,
                       m->views, m->views == 1 ? "" : "s");
        const uint8_t *p = entry_at(c, v * m->n_rows + (size_t)row);
        for (size_t k = 0; k < m->n_teachers; k++)  /* logits: (n_teachers, n, C) */
            decode_row(c, p + k * c->lay.row_bytes, logits + (k * n + i) * C);
    }
    return KD_OK;
}

void kd_cache_fix_checksums(uint8_t *data, size_t len) {
    if (len < KD_CACHE_PREAMBLE) return;
    size_t hl = kd_cache_get_u32(data + 8);
    if (hl > len - KD_CACHE_PREAMBLE) return;
    kd_cache_put_u32(data + 12, (uint32_t)crc32_z(0L, data + KD_CACHE_PREAMBLE, hl));
    kd_cache_meta m;
    kd_cache_layout lay;
    kd_err err;
    if (parse_head("", data, len, len, 1, &m, &lay, &err) != KD_OK) return;
    size_t ib = 4 * m.n_rows;
    if (lay.index_off + ib + 4 <= len)
        kd_cache_put_u32(data + lay.index_off + ib,
                         (uint32_t)crc32_z(0L, data + lay.index_off, ib));
    for (size_t b = 0; b < lay.n_blocks; b++) {
        size_t begin, n;
        kd_cache_block_span(&lay, b, &begin, &n);
        if (begin + n + 4 > len) break;
        kd_cache_put_u32(data + begin + n, (uint32_t)crc32_z(0L, data + begin, n));
    }
}
