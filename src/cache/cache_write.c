/* cache_write.c - writes a soft-target cache file (layout in kd_cache.h) in one streaming pass
 * inside kd_write_atomic's callback, so a half-written cache is never visible, or the same
 * bytes into memory for a cache that is never saved; and the content hash of a file that caches
 * record for provenance. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "cache_impl.h"
#include "kd_dtype.h"

/* Adds item under key (appends to an array when key is NULL); a failed allocation sets *oom. */
static void json_add(cJSON *parent, const char *key, cJSON *item, int *oom) {
    if (!item || !parent) {
        cJSON_Delete(item);
        *oom = 1;
        return;
    }
    if (!(key ? cJSON_AddItemToObject(parent, key, item) : cJSON_AddItemToArray(parent, item))) {
        cJSON_Delete(item);
        *oom = 1;
    }
}

/* A number as the shortest text that reads back as exactly d (kd_double_text): cJSON's own
 * printer would turn a view_seed of 2^53 - 1 into 2^53 - 2 and move weights. */
static cJSON *json_number(double d) {
    char buf[40];
    return cJSON_CreateRaw(kd_double_text(d, buf, sizeof buf));
}

/* A fraction, or null when unknown (NaN). */
static cJSON *json_acc(double a) { return isnan(a) ? cJSON_CreateNull() : json_number(a); }

/* The header: one JSON object with the keys in the order the reader lists them; every number
 * reads back exactly (view_seed <= 2^53 - 1 is an exact double). */
static char *header_json(const kd_cache_meta *m) {
    int oom = 0;
    cJSON *o = cJSON_CreateObject();
    json_add(o, "format", cJSON_CreateString(KD_CACHE_FORMAT), &oom);
    json_add(o, "n_rows", json_number((double)m->n_rows), &oom);
    json_add(o, "n_classes", json_number((double)m->n_classes), &oom);
    json_add(o, "n_teachers", json_number((double)m->n_teachers), &oom);
    json_add(o, "dtype", cJSON_CreateString(kd_cache_dtype_name(m->dtype)), &oom);
    json_add(o, "top_k", json_number((double)m->top_k), &oom);
    json_add(o, "temperature", json_number(m->temperature), &oom);
    json_add(o, "views", json_number((double)m->views), &oom);
    json_add(o, "view_seed", json_number((double)m->view_seed), &oom);
    cJSON *w = cJSON_CreateArray(), *acc = cJSON_CreateArray();
    for (size_t k = 0; w && acc && k < m->n_teachers; k++) {
        json_add(w, NULL, json_number(m->weight[k]), &oom);
        json_add(acc, NULL, json_acc(m->teacher_val_acc[k]), &oom);
    }
    json_add(o, "weights", w, &oom);
    json_add(o, "teacher_val_acc", acc, &oom);
    json_add(o, "ensemble_val_acc", json_acc(m->ensemble_val_acc), &oom);
    cJSON *fields = cJSON_CreateObject();
    for (size_t i = 0; fields && i < m->n_fields; i++)
        json_add(fields, m->fields[i].name, cJSON_CreateString(m->fields[i].value), &oom);
    json_add(o, "fields", fields, &oom);
    char *text = oom ? NULL : cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

/* One (value, class) of a teacher row, for the top-k selection. */
typedef struct {
    float z;
    uint32_t c;
} ranked;

/* Larger logits first; among equal logits the lower class index first. */
static int cmp_ranked(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    if (a->z != b->z) return a->z > b->z ? -1 : 1;
    return a->c < b->c ? -1 : a->c > b->c;
}

typedef struct {
    const char *path;
    const kd_cache_meta *meta;
    kd_cache_layout lay;
    const char *header;
    const size_t *idx;
    size_t chunk;
    kd_cache_fill_fn fill;
    void *user;
    const kd_codec *codec;
    float *logits;     /* (n_teachers, chunk, n_classes), as fill writes them */
    uint8_t *entries;  /* (chunk, entry_bytes), encoded */
    ranked *rank;      /* (n_classes) top-k selection */
    float *top;        /* (n_classes) the kept logits in rank order */
    float *vals;       /* (n_classes) the codec's round trip */
    uLong crc;         /* the block being written: its crc so far */
    size_t in_block;   /* and how many entries it holds */
} write_ctx;

static kd_status put(FILE *f, const void *p, size_t n, const char *path, kd_err *err) {
    if (n && fwrite(p, 1, n, f) != n)
        return kd_err_set(err, KD_EIO, "cache %s: write failed: %s", path, strerror(errno));
    return KD_OK;
}

/* Encodes n values with the codec into dst; 0, or -1 with *bad the first value that does not
 * survive the round trip as a finite number (f16 holds at most 65504). */
static int encode_checked(const write_ctx *w, const float *z, size_t n, uint8_t *dst,
                          size_t *bad) {
    w->codec->encode(z, 1, n, dst, NULL);
    w->codec->decode(dst, NULL, 1, n, w->vals);
    for (size_t c = 0; c < n; c++)
        if (!isfinite(w->vals[c])) {
            *bad = c;
            return -1;
        }
    return 0;
}

/* Encodes teacher k's row z (n_classes finite logits) into dst (row_bytes). With top_k K: the
 * K largest logits' classes (u16) and values, then the f32
 *   lse_rest = log sum_{j not kept} exp(z_j / T) = mx + log sum_{j not kept} exp(z_j / T - mx),
 * in double, mx the largest z_j / T not kept (rank K, the first after the kept ones), so no
 * exp overflows and the largest term is 1. */
static kd_status encode_row(write_ctx *w, const float *z, uint8_t *dst, size_t k, size_t sample,
                            size_t view, kd_err *err) {
    const kd_cache_meta *m = w->meta;
    size_t C = m->n_classes, K = m->top_k, bad;
    if (K == 0) {
        if (encode_checked(w, z, C, dst, &bad) == 0) return KD_OK;
        return kd_err_set(err, KD_ENUMERIC, "cache %s: teacher %zu logit for training sample "
                          "%zu (view %zu, class %zu) is %g, beyond the range of %s: use dtype f32",
                          w->path, k, sample, view, bad, z[bad], w->codec->name);
    }
    for (size_t c = 0; c < C; c++) w->rank[c] = (ranked){z[c], (uint32_t)c};
    qsort(w->rank, C, sizeof *w->rank, cmp_ranked);
    for (size_t j = 0; j < K; j++) {
        dst[2 * j] = (uint8_t)w->rank[j].c;
        dst[2 * j + 1] = (uint8_t)(w->rank[j].c >> 8);
        w->top[j] = w->rank[j].z;
    }
    if (encode_checked(w, w->top, K, dst + 2 * K, &bad) != 0)
        return kd_err_set(err, KD_ENUMERIC, "cache %s: teacher %zu logit for training sample "
                          "%zu (view %zu, class %u) is %g, beyond the range of %s: use dtype f32",
                          w->path, k, sample, view, w->rank[bad].c, w->top[bad], w->codec->name);
    double T = m->temperature, mx = (double)w->rank[K].z / T, s = 0;
    for (size_t j = K; j < C; j++) s += exp((double)w->rank[j].z / T - mx);
    float lse = (float)(mx + log(s));
    if (!isfinite(lse))
        return kd_err_set(err, KD_ENUMERIC, "cache %s: teacher %zu, training sample %zu (view "
                          "%zu): the log-sum-exp at T = %g of the logits not kept is not finite",
                          w->path, k, sample, view, T);
    uint32_t bits;
    memcpy(&bits, &lse, 4);
    kd_cache_put_u32(dst + K * (2 + w->lay.value_bytes), bits);
    return KD_OK;
}

/* Appends n encoded entries to the blocks, closing each block with its crc32. */
static kd_status put_entries(FILE *f, write_ctx *w, const uint8_t *p, size_t n, kd_err *err) {
    size_t eb = w->lay.entry_bytes;
    while (n > 0) {
        size_t take = KD_CACHE_BLOCK_ROWS - w->in_block;
        if (take > n) take = n;
        kd_status st = put(f, p, take * eb, w->path, err);
        if (st != KD_OK) return st;
        w->crc = crc32_z(w->crc, p, take * eb);
        w->in_block += take;
        p += take * eb;
        n -= take;
        if (w->in_block == KD_CACHE_BLOCK_ROWS) {
            uint8_t c[4];
            kd_cache_put_u32(c, (uint32_t)w->crc);
            if ((st = put(f, c, 4, w->path, err)) != KD_OK) return st;
            w->crc = crc32(0L, Z_NULL, 0);
            w->in_block = 0;
        }
    }
    return KD_OK;
}

/* Rows [row, row + n) of view v: fill, check, encode, append. */
static kd_status put_chunk(FILE *f, write_ctx *w, size_t v, size_t row, size_t n, kd_err *err) {
    const kd_cache_meta *m = w->meta;
    size_t C = m->n_classes, nt = m->n_teachers;
    kd_status st = w->fill(w->user, v, row, n, w->logits, err);
    if (st != KD_OK) return st;
    for (size_t k = 0; k < nt; k++)
        for (size_t i = 0; i < n; i++) {
            const float *z = w->logits + (k * n + i) * C;  /* (n_teachers, n, C) */
            for (size_t c = 0; c < C; c++)
                if (!isfinite(z[c]))
                    return kd_err_set(err, KD_ENUMERIC, "cache %s: teacher %zu logit for "
                                      "training sample %zu (view %zu, class %zu) is %g",
                                      w->path, k, w->idx[row + i], v, c, z[c]);
            uint8_t *dst = w->entries + i * w->lay.entry_bytes + k * w->lay.row_bytes;
            if ((st = encode_row(w, z, dst, k, w->idx[row + i], v, err)) != KD_OK) return st;
        }
    return put_entries(f, w, w->entries, n, err);
}

/* kd_write_atomic's callback: the whole file, front to back. */
static kd_status write_all(FILE *f, void *ctx, kd_err *err) {
    write_ctx *w = ctx;
    const kd_cache_meta *m = w->meta;
    uint8_t buf[4096];
    size_t hl = w->lay.header_len;
    memcpy(buf, KD_CACHE_MAGIC, 8);
    kd_cache_put_u32(buf + 8, (uint32_t)hl);
    kd_cache_put_u32(buf + 12, (uint32_t)crc32_z(0L, (const Bytef *)w->header, hl));
    kd_status st = put(f, buf, KD_CACHE_PREAMBLE, w->path, err);
    if (st == KD_OK) st = put(f, w->header, hl, w->path, err);
    uLong crc = crc32(0L, Z_NULL, 0);
    for (size_t r = 0; st == KD_OK && r < m->n_rows; r += sizeof buf / 4) {
        size_t n = m->n_rows - r < sizeof buf / 4 ? m->n_rows - r : sizeof buf / 4;
        for (size_t i = 0; i < n; i++) kd_cache_put_u32(buf + 4 * i, (uint32_t)w->idx[r + i]);
        crc = crc32_z(crc, buf, 4 * n);
        st = put(f, buf, 4 * n, w->path, err);
    }
    kd_cache_put_u32(buf, (uint32_t)crc);
    if (st == KD_OK) st = put(f, buf, 4, w->path, err);
    w->crc = crc32(0L, Z_NULL, 0);
    w->in_block = 0;
    for (size_t v = 0; v < m->views; v++)
        for (size_t r = 0; st == KD_OK && r < m->n_rows; r += w->chunk)
            st = put_chunk(f, w, v, r, m->n_rows - r < w->chunk ? m->n_rows - r : w->chunk, err);
    if (st == KD_OK && w->in_block > 0) { /* the last, shorter block */
        kd_cache_put_u32(buf, (uint32_t)w->crc);
        st = put(f, buf, 4, w->path, err);
    }
    return st;
}

/* Checks the arguments and sets up w (its buffers, the header, the layout) for a write of
 * meta (m: meta with T cleared for full rows) under name; release_ctx frees what it holds,
 * also after a failure. */
static kd_status prepare_ctx(write_ctx *w, kd_cache_meta *m, const char *name,
                             const size_t *idx, size_t chunk, kd_cache_fill_fn fill, void *user,
                             kd_err *err) {
    if (m->top_k == 0) m->temperature = 0; /* no T is stored for full rows */
    *w = (write_ctx){.path = name, .meta = m, .idx = idx, .fill = fill, .user = user};
    char why[768];
    if (kd_cache_meta_invalid(m, why, sizeof why) != 0)
        return kd_err_set(err, KD_EUSAGE, "cache %s: cannot write: %s", name, why);
    for (size_t r = 0; r < m->n_rows; r++)
        if (idx[r] > UINT32_MAX || (r > 0 && idx[r] <= idx[r - 1]))
            return kd_err_set(err, KD_EUSAGE, "cache %s: cannot write: sample index %zu (row %zu) "
                              "is %s", name, idx[r], r, idx[r] > UINT32_MAX ? "2^32 or more" :
                              "not above the one before it (expected strictly ascending)");
    if (chunk == 0 || !fill)
        return kd_err_set(err, KD_EUSAGE, "cache %s: cannot write: %s", name,
                          chunk ? "no fill function" : "chunk is 0");
    w->chunk = chunk < m->n_rows ? chunk : m->n_rows;
    w->codec = kd_codec_find(kd_cache_dtype_name(m->dtype));
    char *header = header_json(m);
    size_t logit_floats, entry_bytes;
    w->header = header;
    if (!header || strlen(header) > KD_CACHE_MAX_HEADER ||
        kd_cache_layout_of(m, strlen(header), &w->lay) != 0 ||
        kd_mul_size(m->n_teachers * w->chunk, m->n_classes, &logit_floats) ||
        kd_mul_size(w->chunk, w->lay.entry_bytes, &entry_bytes))
        return kd_err_set(err, header ? KD_EUSAGE : KD_EIO, "cache %s: cannot write: %s", name,
                          header ? "the header or the file would be too large" : "out of memory");
    w->logits = kd_alloc_floats(logit_floats);
    w->entries = malloc(entry_bytes);
    w->rank = malloc(m->n_classes * sizeof *w->rank);
    w->top = malloc(m->n_classes * sizeof *w->top);
    w->vals = malloc(m->n_classes * sizeof *w->vals);
    if (!w->logits || !w->entries || !w->rank || !w->top || !w->vals)
        return kd_err_set(err, KD_EIO, "cache %s: out of memory (chunks of %zu rows)", name,
                          w->chunk);
    return KD_OK;
}

static void release_ctx(write_ctx *w) {
    cJSON_free((char *)w->header);
    kd_free_aligned(w->logits);
    free(w->entries);
    free(w->rank);
    free(w->top);
    free(w->vals);
}

kd_status kd_cache_write(const char *path, const kd_cache_meta *meta, const size_t *idx,
                         size_t chunk, kd_cache_fill_fn fill, void *user, kd_err *err) {
    kd_cache_meta m = *meta;
    write_ctx w;
    kd_status st = prepare_ctx(&w, &m, path, idx, chunk, fill, user, err);
    if (st == KD_OK) st = kd_write_atomic(path, write_all, &w, err);
    release_ctx(&w);
    return st;
}

/* The bytes a file would hold, written to a memory stream and opened by the reader, which
 * verifies them as it verifies a file: one layout, one writer, one reader. */
kd_status kd_cache_build(kd_cache **out, const char *name, const kd_cache_meta *meta,
                         const size_t *idx, size_t chunk, kd_cache_fill_fn fill, void *user,
                         kd_err *err) {
    kd_cache_meta m = *meta;
    write_ctx w;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = NULL;
    *out = NULL;
    kd_status st = prepare_ctx(&w, &m, name, idx, chunk, fill, user, err);
    if (st == KD_OK && !(f = open_memstream(&buf, &len)))
        st = kd_err_set(err, KD_EIO, "cache %s: out of memory", name);
    if (st == KD_OK) st = write_all(f, &w, err);
    if (f && fclose(f) != 0 && st == KD_OK)
        st = kd_err_set(err, KD_EIO, "cache %s: out of memory", name);
    release_ctx(&w);
    if (st != KD_OK) {
        free(buf);
        return st;
    }
    return kd_cache_adopt(out, (uint8_t *)buf, len, name, err);
}

kd_status kd_file_hash(const char *path, char *out, size_t cap, kd_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return kd_err_set(err, KD_EINPUT, "%s: cannot open: %s", path, strerror(errno));
    kd_status st = KD_OK;
    size_t piece = (size_t)1 << 20;
    unsigned char *buf = malloc(piece);
    uLong crc = crc32(0L, Z_NULL, 0), adler = adler32(0L, Z_NULL, 0);
    unsigned long long size = 0;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = kd_err_set(err, KD_EINPUT, "%s: not a regular file", path);
        goto cleanup;
    }
    if (!buf) {
        st = kd_err_set(err, KD_EIO, "%s: out of memory", path);
        goto cleanup;
    }
    size_t n;
    while ((n = fread(buf, 1, piece, f)) > 0) {
        crc = crc32_z(crc, buf, n);
        adler = adler32_z(adler, buf, n);
        size += n;
    }
    if (ferror(f)) {
        st = kd_err_set(err, KD_EINPUT, "%s: read failed: %s", path, strerror(errno));
        goto cleanup;
    }
    if ((size_t)snprintf(out, cap, "crc32:%08lx adler32:%08lx size:%llu", crc, adler, size) >= cap)
        st = kd_err_set(err, KD_EUSAGE, "%s: the hash does not fit in %zu bytes", path, cap);
cleanup:
    free(buf);
    fclose(f);
    return st;
}
