/* safetensors.c - a validating safetensors reader (trusts nothing in the file) and an atomic
 * writer whose output any safetensors reader opens. */
#include "kd_safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kd_filekind.h"
#include "kd_strbuf.h"

/* Tensor bytes are little-endian in the file and used in place: only little-endian hosts. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

/* The largest integer a JSON number (parsed as a double) represents exactly. */
#define MAX_JSON_INT 9007199254740992.0 /* 2^53 */

static const struct {
    const char *name;
    size_t size;
} dtypes[KD_DT_COUNT] = {
    [KD_DT_F32] = {"F32", 4}, [KD_DT_F16] = {"F16", 2}, [KD_DT_BF16] = {"BF16", 2},
    [KD_DT_I8] = {"I8", 1},   [KD_DT_U8] = {"U8", 1},   [KD_DT_I32] = {"I32", 4},
    [KD_DT_I64] = {"I64", 8},
};

const char *kd_dtype_name(kd_dtype t) {
    return (unsigned)t < KD_DT_COUNT ? dtypes[t].name : "?";
}

size_t kd_dtype_size(kd_dtype t) { return (unsigned)t < KD_DT_COUNT ? dtypes[t].size : 0; }

int kd_dtype_parse(const char *name, kd_dtype *t) {
    for (int i = 0; i < KD_DT_COUNT; i++)
        if (strcmp(dtypes[i].name, name) == 0) {
            *t = (kd_dtype)i;
            return 0;
        }
    return -1;
}

const char *kd_dtype_list(void) { return "F32, F16, BF16, I8, U8, I32, I64"; }

int kd_utf8_valid(const void *p, size_t n, size_t *bad_offset) {
    const uint8_t *s = p;
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) len = 2, cp = c & 0x1fu, min = 0x80;
        else if ((c & 0xf0) == 0xe0) len = 3, cp = c & 0x0fu, min = 0x800;
        else if ((c & 0xf8) == 0xf0) len = 4, cp = c & 0x07u, min = 0x10000;
        else goto bad; /* a continuation byte out of place, or 0xf8..0xff */
        if (n - i < len) goto bad;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) goto bad;
            cp = (cp << 6) | (s[i + k] & 0x3fu);
        }
        /* Overlong encodings, UTF-16 surrogates and code points past Unicode are all invalid. */
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) goto bad;
        i += len;
    }
    return 1;
bad:
    if (bad_offset) *bad_offset = i;
    return 0;
}

/* ---- reading ---------------------------------------------------------------------------- */

/* "path: tensor NAME: what" (or "path: what" without a tensor), always KD_EINPUT. */
static kd_status bad(kd_err *err, const char *path, const char *tensor, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static kd_status bad(kd_err *err, const char *path, const char *tensor, const char *fmt, ...) {
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (tensor) return kd_err_set(err, KD_EINPUT, "%s: tensor %s: %s", path, tensor, what);
    return kd_err_set(err, KD_EINPUT, "%s: %s", path, what);
}

/* A JSON number that is an exact non-negative integer <= 2^53 (no fraction, no sign). */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > MAX_JSON_INT || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

/* Describes a JSON value briefly for messages ("-3", "\"x\"", "an array"). */
static const char *json_brief(const cJSON *v, char *buf, size_t cap) {
    if (cJSON_IsNumber(v)) snprintf(buf, cap, "%.17g", v->valuedouble);
    else if (cJSON_IsString(v)) snprintf(buf, cap, "\"%.40s\"", v->valuestring);
    else if (cJSON_IsArray(v)) snprintf(buf, cap, "an array");
    else if (cJSON_IsObject(v)) snprintf(buf, cap, "an object");
    else if (cJSON_IsBool(v)) snprintf(buf, cap, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else snprintf(buf, cap, "null");
    return buf;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Finds a duplicate among n strings (sorting a copy of the pointers); NULL if none. */
static const char *find_duplicate(char **names, size_t n, kd_err *err, int *oom) {
    *oom = 0;
    if (n < 2) return NULL;
    const char **s = malloc(n * sizeof *s);
    if (!s) {
        *oom = 1;
        kd_err_set(err, KD_EIO, "out of memory");
        return NULL;
    }
    memcpy(s, names, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_str_ptr);
    const char *dup = NULL;
    for (size_t i = 1; i < n && !dup; i++)
        if (strcmp(s[i - 1], s[i]) == 0) dup = s[i];
    free(s);
    return dup;
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const kd_st_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

const char *kd_st_shape_str(const kd_st_tensor *t, char *buf, size_t cap) {
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < t->rank && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%" PRIu64, i ? ", " : "", t->shape[i]);
    if (len < cap) snprintf(buf + len, cap - len, "]");
    return buf;
}

/* Validates one tensor entry {"dtype", "shape", "data_offsets"} into t (name set by caller). */
static kd_status parse_tensor(const char *path, const char *name, const cJSON *e, kd_st_tensor *t,
                              kd_err *err) {
    char vb[64];
    if (!cJSON_IsObject(e))
        return bad(err, path, name, "expected an object {\"dtype\", \"shape\", \"data_offsets\"}, got %s",
                   json_brief(e, vb, sizeof vb));
    const cJSON *dt = NULL, *shape = NULL, *offs = NULL, *c;
    cJSON_ArrayForEach(c, e) {
        const cJSON **slot = strcmp(c->string, "dtype") == 0          ? &dt
                             : strcmp(c->string, "shape") == 0        ? &shape
                             : strcmp(c->string, "data_offsets") == 0 ? &offs
                                                                      : NULL;
        if (!slot)
            return bad(err, path, name,
                       "unexpected key \"%s\" (expected only dtype, shape, data_offsets)", c->string);
        if (*slot) return bad(err, path, name, "key \"%s\" appears twice", c->string);
        *slot = c;
    }
    if (!dt) return bad(err, path, name, "missing \"dtype\"");
    if (!shape) return bad(err, path, name, "missing \"shape\"");
    if (!offs) return bad(err, path, name, "missing \"data_offsets\"");

    if (!cJSON_IsString(dt))
        return bad(err, path, name, "dtype: expected a string, got %s", json_brief(dt, vb, sizeof vb));
    if (kd_dtype_parse(dt->valuestring, &t->dtype) != 0)
        return bad(err, path, name, "unsupported dtype \"%.32s\" (supported: %s)", dt->valuestring,
                   kd_dtype_list());

    if (!cJSON_IsArray(shape))
        return bad(err, path, name, "shape: expected an array of non-negative integers, got %s",
                   json_brief(shape, vb, sizeof vb));
    int rank = cJSON_GetArraySize(shape);
    if (rank > KD_ST_MAX_RANK)
        return bad(err, path, name, "shape has %d dimensions, more than the supported %d", rank,
                   KD_ST_MAX_RANK);
    t->rank = rank;
    uint64_t numel = 1;
    int overflow = 0, i = 0;
    cJSON_ArrayForEach(c, shape) {
        if (json_uint(c, &t->shape[i]) != 0)
            return bad(err, path, name, "shape[%d]: expected a non-negative integer <= 2^53, got %s",
                       i, json_brief(c, vb, sizeof vb));
        if (t->shape[i] != 0 && numel > UINT64_MAX / t->shape[i]) overflow = 1;
        else numel *= t->shape[i];
        i++;
    }
    char sb[200];
    size_t esize = kd_dtype_size(t->dtype);
    uint64_t nbytes = 0;
    /* A zero dimension makes the product 0 whatever overflowed before it. */
    for (int k = 0; k < rank; k++)
        if (t->shape[k] == 0) overflow = 0, numel = 0;
    if (overflow || numel > UINT64_MAX / esize)
        return bad(err, path, name, "shape %s of %s overflows 64-bit byte counts",
                   kd_st_shape_str(t, sb, sizeof sb), dt->valuestring);
    t->numel = numel;
    nbytes = numel * esize;

    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return bad(err, path, name, "data_offsets: expected [begin, end], got %s",
                   json_brief(offs, vb, sizeof vb));
    if (json_uint(offs->child, &t->begin) != 0)
        return bad(err, path, name, "data_offsets[0]: expected a non-negative integer <= 2^53, got %s",
                   json_brief(offs->child, vb, sizeof vb));
    if (json_uint(offs->child->next, &t->end) != 0)
        return bad(err, path, name, "data_offsets[1]: expected a non-negative integer <= 2^53, got %s",
                   json_brief(offs->child->next, vb, sizeof vb));
    if (t->begin > t->end)
        return bad(err, path, name, "data_offsets [%" PRIu64 ", %" PRIu64 "]: begin is after end",
                   t->begin, t->end);
    if (t->end - t->begin != nbytes)
        return bad(err, path, name,
                   "shape %s of %s needs %" PRIu64 " bytes but data_offsets [%" PRIu64 ", %" PRIu64
                   "] span %" PRIu64,
                   kd_st_shape_str(t, sb, sizeof sb), dt->valuestring, nbytes, t->begin, t->end,
                   t->end - t->begin);
    return KD_OK;
}

static kd_status parse_metadata(kd_st_file *f, const cJSON *meta, kd_err *err) {
    char vb[64];
    if (!cJSON_IsObject(meta))
        return bad(err, f->path, NULL, "__metadata__: expected an object of strings, got %s",
                   json_brief(meta, vb, sizeof vb));
    size_t n = (size_t)cJSON_GetArraySize(meta);
    f->meta_keys = calloc(n ? n : 1, sizeof *f->meta_keys);
    f->meta_vals = calloc(n ? n : 1, sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals) return kd_err_set(err, KD_EIO, "%s: out of memory", f->path);
    const cJSON *c;
    cJSON_ArrayForEach(c, meta) {
        if (!cJSON_IsString(c))
            return bad(err, f->path, NULL, "__metadata__ key \"%.64s\": expected a string value, got %s",
                       c->string, json_brief(c, vb, sizeof vb));
        f->meta_keys[f->n_meta] = strdup(c->string);
        f->meta_vals[f->n_meta] = strdup(c->valuestring);
        f->n_meta++;
        if (!f->meta_keys[f->n_meta - 1] || !f->meta_vals[f->n_meta - 1])
            return kd_err_set(err, KD_EIO, "%s: out of memory", f->path);
    }
    int oom;
    const char *dup = find_duplicate(f->meta_keys, f->n_meta, err, &oom);
    if (oom) return KD_EIO;
    if (dup) return bad(err, f->path, NULL, "__metadata__ key \"%.64s\" appears twice", dup);
    return KD_OK;
}

/* The header's bytes, before any JSON parser sees them: the 8-byte length within the cap and
 * the file, valid UTF-8 without control bytes, an object, nested within the depth cap. */
static kd_status check_header_bytes(kd_st_file *f, kd_err *err) {
    const char *path = f->path;
    uint64_t first = 0;
    for (int i = 7; i >= 0 && f->blob_size >= 8; i--) first = (first << 8) | f->blob[i];
    /* Not a safetensors start: name the file's kind when its first bytes say it (an ONNX
     * model, a PyTorch archive, a CSV), instead of a "header length" made of its magic. */
    if (f->blob_size <= 8 || first > KD_ST_MAX_HEADER || first > f->blob_size - 8 ||
        f->blob[8] != '{') {
        kd_file_kind k = kd_file_sniff(f->blob, f->blob_size);
        if (k.what)
            return bad(err, path, NULL, "not a safetensors file: this is %s; %s", k.what, k.hint);
    }
    if (f->blob_size < 8)
        return bad(err, path, NULL,
                   "file is %zu bytes, shorter than the 8-byte header length of a safetensors file",
                   f->blob_size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | f->blob[i];
    if (n > KD_ST_MAX_HEADER)
        return bad(err, path, NULL, "header length %" PRIu64 " exceeds the %u-byte limit", n,
                   KD_ST_MAX_HEADER);
    if (n > f->blob_size - 8)
        return bad(err, path, NULL,
                   "header length %" PRIu64 " is larger than the %zu bytes that follow it", n,
                   f->blob_size - 8);
    f->header_len = (size_t)n;
    const uint8_t *h = f->blob + 8;
    size_t off;
    if (!kd_utf8_valid(h, f->header_len, &off))
        return bad(err, path, NULL, "header is not valid UTF-8 (byte 0x%02x at file offset %zu)",
                   h[off], off + 8);
    /* JSON allows no raw control characters; a NUL would also silently cut names short. */
    for (size_t i = 0; i < f->header_len; i++)
        if (h[i] < 0x20 && h[i] != '\t' && h[i] != '\n' && h[i] != '\r')
            return bad(err, path, NULL, "header contains control byte 0x%02x at file offset %zu",
                       h[i], i + 8);
    if (f->header_len == 0 || h[0] != '{')
        return bad(err, path, NULL, "header must be a JSON object starting with '{'");
    size_t deep;
    if (kd_json_depth_check((const char *)h, f->header_len, KD_JSON_MAX_DEPTH, &deep))
        return bad(err, path, NULL, "header JSON is nested deeper than %d levels (at file offset "
                   "%zu)", KD_JSON_MAX_DEPTH, deep + 8);
    return KD_OK;
}

/* The header parsed into *root: one JSON object, nothing but whitespace after it. */
static kd_status parse_header_json(const kd_st_file *f, cJSON **root, kd_err *err) {
    const char *path = f->path;
    kd_status st = KD_OK;
    char *hdr = malloc(f->header_len + 1);
    if (!hdr) return kd_err_set(err, KD_EIO, "%s: out of memory", path);
    memcpy(hdr, f->blob + 8, f->header_len);
    hdr[f->header_len] = '\0';
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts(hdr, f->header_len, &end, 0);
    if (!*root) {
        size_t at = end && end >= hdr ? (size_t)(end - hdr) : 0;
        st = bad(err, path, NULL, "header is not valid JSON (near file offset %zu)", at + 8);
        goto cleanup;
    }
    /* The reference writer pads with spaces; any JSON whitespace after the object is fine. */
    for (const char *p = end; p < hdr + f->header_len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            st = bad(err, path, NULL, "unexpected data after the header object at file offset %zu",
                     (size_t)(p - hdr) + 8);
            goto cleanup;
        }
    if (!cJSON_IsObject(*root)) st = bad(err, path, NULL, "header must be a JSON object");
cleanup:
    free(hdr);
    return st;
}

/* The header's entries: every tensor into f->tensors (each entry validated), names unique, at
 * most one "__metadata__", which goes to f's metadata. */
static kd_status read_entries(kd_st_file *f, const cJSON *root, kd_err *err) {
    const char *path = f->path;
    kd_status st = KD_OK;
    size_t n_entries = (size_t)cJSON_GetArraySize(root);
    f->tensors = calloc(n_entries ? n_entries : 1, sizeof *f->tensors);
    char **names = calloc(n_entries ? n_entries : 1, sizeof *names);
    if (!f->tensors || !names) {
        st = kd_err_set(err, KD_EIO, "%s: out of memory", path);
        goto cleanup;
    }
    const cJSON *c, *meta = NULL;
    int n_meta_keys = 0;
    cJSON_ArrayForEach(c, root) {
        if (strcmp(c->string, "__metadata__") == 0) {
            meta = c;
            n_meta_keys++;
            continue;
        }
        kd_st_tensor *t = &f->tensors[f->n_tensors];
        t->name = strdup(c->string);
        if (!t->name) {
            st = kd_err_set(err, KD_EIO, "%s: out of memory", path);
            goto cleanup;
        }
        names[f->n_tensors++] = t->name;
        if ((st = parse_tensor(path, t->name, c, t, err)) != KD_OK) goto cleanup;
    }
    if (n_meta_keys > 1) {
        st = bad(err, path, NULL, "\"__metadata__\" appears %d times", n_meta_keys);
        goto cleanup;
    }
    int oom;
    const char *dup = find_duplicate(names, f->n_tensors, err, &oom);
    if (oom) st = KD_EIO;
    else if (dup) st = bad(err, path, dup, "name appears more than once in the header");
    else if (meta) st = parse_metadata(f, meta, err);
cleanup:
    free(names);
    return st;
}

/* Data layout: sorted by offset, the ranges must tile [0, total) exactly, and the data end
 * where the file does; then each tensor's data pointer is set. */
static kd_status check_layout(kd_st_file *f, kd_err *err) {
    const char *path = f->path;
    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_tensor_offset);
    uint64_t pos = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const kd_st_tensor *t = &f->tensors[i];
        if (t->begin < pos)
            return bad(err, path, t->name,
                       "data_offsets [%" PRIu64 ", %" PRIu64 "] overlap tensor %s, which ends at "
                       "%" PRIu64, t->begin, t->end, f->tensors[i - 1].name, pos);
        if (t->begin > pos)
            return bad(err, path, t->name,
                       "data_offsets [%" PRIu64 ", %" PRIu64 "] leave a hole: expected it to begin "
                       "at %" PRIu64 " (offsets must be contiguous from 0)",
                       t->begin, t->end, pos);
        pos = t->end;
    }
    uint64_t data_size = (uint64_t)(f->blob_size - 8 - f->header_len);
    if (pos > data_size)
        return bad(err, path, f->n_tensors ? f->tensors[f->n_tensors - 1].name : NULL,
                   "file is truncated: the tensors need %" PRIu64 " data bytes but only %" PRIu64
                   " follow the header (file size %zu, expected %" PRIu64 ")",
                   pos, data_size, f->blob_size, 8 + (uint64_t)f->header_len + pos);
    if (pos < data_size)
        return bad(err, path, NULL,
                   "%" PRIu64 " trailing bytes after the last tensor (file size %zu, expected %"
                   PRIu64 ")", data_size - pos, f->blob_size, 8 + (uint64_t)f->header_len + pos);
    const uint8_t *data = f->blob + 8 + f->header_len;
    for (size_t i = 0; i < f->n_tensors; i++) f->tensors[i].data = data + f->tensors[i].begin;
    return KD_OK;
}

/* Parses and validates the header and the data layout of the whole file in f->blob. */
static kd_status parse_blob(kd_st_file *f, kd_err *err) {
    cJSON *root = NULL;
    kd_status st = check_header_bytes(f, err);
    if (!st) st = parse_header_json(f, &root, err);
    if (!st) st = read_entries(f, root, err);
    if (!st) st = check_layout(f, err);
    cJSON_Delete(root);
    return st;
}

kd_status kd_st_read(kd_st_file *f, const char *path, kd_err *err) {
    memset(f, 0, sizeof *f);
    kd_status st = KD_OK;
    FILE *fp = NULL;
    f->path = strdup(path);
    if (!f->path) return kd_err_set(err, KD_EIO, "%s: out of memory", path);
    fp = fopen(path, "rb");
    if (!fp) {
        st = kd_err_set(err, KD_EINPUT, "%s: cannot open: %s", path, strerror(errno));
        goto cleanup;
    }
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = kd_err_set(err, KD_EINPUT, "%s: not a regular file", path);
        goto cleanup;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX - 1) {
        st = kd_err_set(err, KD_EINPUT, "%s: file too large", path);
        goto cleanup;
    }
    f->blob_size = (size_t)sb.st_size;
    /* The allocation is the file's real size, so a lying header cannot inflate it. */
    f->blob = malloc(f->blob_size ? f->blob_size : 1);
    if (!f->blob) {
        st = kd_err_set(err, KD_EIO, "%s: out of memory reading %zu bytes", path, f->blob_size);
        goto cleanup;
    }
    if (f->blob_size && fread(f->blob, 1, f->blob_size, fp) != f->blob_size) {
        st = kd_err_set(err, KD_EIO, "%s: read failed", path);
        goto cleanup;
    }
    st = parse_blob(f, err);
cleanup:
    if (fp) fclose(fp);
    if (st != KD_OK) {
        kd_st_free(f);
        memset(f, 0, sizeof *f);
    }
    return st;
}

void kd_st_free(kd_st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->blob);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const kd_st_tensor *kd_st_find(const kd_st_file *f, const char *name) {
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *kd_st_meta(const kd_st_file *f, const char *key) {
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

void kd_st_to_f32(const kd_st_tensor *t, float *out) {
    const uint8_t *p = t->data;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case KD_DT_F32: memcpy(out, p, n * sizeof(float)); break;
    case KD_DT_F16:
    case KD_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = t->dtype == KD_DT_F16 ? kd_f16_to_f32(h) : kd_bf16_to_f32(h);
        }
        break;
    default:
        for (size_t i = 0; i < n; i++) out[i] = (float)kd_st_get_i64(t, i);
        break;
    }
}

int64_t kd_st_get_i64(const kd_st_tensor *t, uint64_t i) {
    const uint8_t *p = t->data + i * kd_dtype_size(t->dtype);
    switch (t->dtype) {
    case KD_DT_I8: return (int8_t)p[0];
    case KD_DT_U8: return p[0];
    case KD_DT_I32: {
        int32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    case KD_DT_I64: {
        int64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    case KD_DT_F32:
    case KD_DT_F16:
    case KD_DT_BF16: {
        float v;
        uint16_t h;
        if (t->dtype == KD_DT_F32) {
            memcpy(&v, p, 4);
        } else {
            memcpy(&h, p, 2);
            v = t->dtype == KD_DT_F16 ? kd_f16_to_f32(h) : kd_bf16_to_f32(h);
        }
        /* Out-of-range (and NaN) float-to-integer conversion is undefined: clamp to 0. */
        return (v > -9.2e18f && v < 9.2e18f) ? (int64_t)v : 0;
    }
    }
    return 0;
}

/* ---- writing ---------------------------------------------------------------------------- */

/* A JSON string literal; the text is already known to be valid UTF-8. */
static void sb_json_str(kd_strbuf *b, const char *s) {
    kd_strbuf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            kd_strbuf_put(b, esc, 2);
        } else if (*p < 0x20) {
            kd_strbuf_printf(b, "\\u%04x", *p);
        } else {
            kd_strbuf_put(b, (const char *)p, 1);
        }
    }
    kd_strbuf_puts(b, "\"");
}

typedef struct {
    const char *path;
    const char *header;
    size_t header_len;
    const kd_st_out *tensors;
    const uint64_t *nbytes;
    size_t n_tensors;
} write_ctx;

static kd_status write_body(FILE *f, void *vctx, kd_err *err) {
    const write_ctx *c = vctx;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)c->header_len >> (8 * i));
    if (fwrite(len8, 1, 8, f) != 8 || fwrite(c->header, 1, c->header_len, f) != c->header_len)
        return kd_err_set(err, KD_EIO, "%s: write failed: %s", c->path, strerror(errno));
    for (size_t i = 0; i < c->n_tensors; i++)
        if (c->nbytes[i] && fwrite(c->tensors[i].data, 1, (size_t)c->nbytes[i], f) != c->nbytes[i])
            return kd_err_set(err, KD_EIO, "%s: write failed: %s", c->path, strerror(errno));
    return KD_OK;
}

kd_status kd_st_write(const char *path, const kd_st_out *tensors, size_t n_tensors,
                      const char *const *meta_keys, const char *const *meta_vals, size_t n_meta,
                      kd_err *err) {
    kd_status st = KD_OK;
    kd_strbuf b = {0};
    uint64_t *nbytes = calloc(n_tensors ? n_tensors : 1, sizeof *nbytes);
    char **names = calloc(n_tensors ? n_tensors : 1, sizeof *names);
    if (!nbytes || !names) {
        st = kd_err_set(err, KD_EIO, "%s: out of memory", path);
        goto cleanup;
    }
    /* Refuse what our own reader (or any other) would refuse, before touching the disk. */
    for (size_t i = 0; i < n_tensors; i++) {
        const kd_st_out *t = &tensors[i];
        if (!kd_utf8_valid(t->name, strlen(t->name), NULL) || strcmp(t->name, "__metadata__") == 0) {
            st = kd_err_set(err, KD_EUSAGE, "%s: invalid tensor name \"%s\"", path, t->name);
            goto cleanup;
        }
        if ((unsigned)t->dtype >= KD_DT_COUNT || t->rank < 0 || t->rank > KD_ST_MAX_RANK) {
            st = kd_err_set(err, KD_EUSAGE, "%s: tensor %s: bad dtype or rank", path, t->name);
            goto cleanup;
        }
        uint64_t n = kd_dtype_size(t->dtype);
        for (int k = 0; k < t->rank; k++) {
            if (t->shape[k] > (uint64_t)MAX_JSON_INT ||
                (t->shape[k] && n > UINT64_MAX / t->shape[k])) {
                st = kd_err_set(err, KD_EUSAGE, "%s: tensor %s: shape too large", path, t->name);
                goto cleanup;
            }
            n *= t->shape[k];
        }
        nbytes[i] = n;
        names[i] = (char *)t->name;
    }
    for (size_t i = 0; i < n_meta; i++)
        if (!kd_utf8_valid(meta_keys[i], strlen(meta_keys[i]), NULL) ||
            !kd_utf8_valid(meta_vals[i], strlen(meta_vals[i]), NULL)) {
            st = kd_err_set(err, KD_EUSAGE, "%s: metadata \"%s\" is not valid UTF-8", path,
                            meta_keys[i]);
            goto cleanup;
        }
    int oom;
    const char *dup = find_duplicate(names, n_tensors, err, &oom);
    if (oom) {
        st = KD_EIO;
        goto cleanup;
    }
    if (dup) {
        st = kd_err_set(err, KD_EUSAGE, "%s: tensor name \"%s\" given twice", path, dup);
        goto cleanup;
    }

    /* Header: metadata first, then tensors in the given order (as the reference writer does). */
    kd_strbuf_puts(&b, "{");
    if (n_meta) {
        kd_strbuf_puts(&b, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i) kd_strbuf_puts(&b, ",");
            sb_json_str(&b, meta_keys[i]);
            kd_strbuf_puts(&b, ":");
            sb_json_str(&b, meta_vals[i]);
        }
        kd_strbuf_puts(&b, "}");
    }
    uint64_t pos = 0;
    for (size_t i = 0; i < n_tensors; i++) {
        const kd_st_out *t = &tensors[i];
        if (n_meta || i) kd_strbuf_puts(&b, ",");
        sb_json_str(&b, t->name);
        kd_strbuf_printf(&b, ":{\"dtype\":\"%s\",\"shape\":[", kd_dtype_name(t->dtype));
        for (int k = 0; k < t->rank; k++) kd_strbuf_printf(&b, "%s%" PRIu64, k ? "," : "", t->shape[k]);
        kd_strbuf_printf(&b, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", pos, pos + nbytes[i]);
        pos += nbytes[i];
    }
    kd_strbuf_puts(&b, "}");
    while (!b.oom && b.len % 8) kd_strbuf_puts(&b, " "); /* keeps every tensor 8-byte aligned */
    if (b.oom) {
        st = kd_err_set(err, KD_EIO, "%s: out of memory", path);
        goto cleanup;
    }
    if (b.len > KD_ST_MAX_HEADER) {
        st = kd_err_set(err, KD_EUSAGE, "%s: header of %zu bytes exceeds the limit", path, b.len);
        goto cleanup;
    }
    write_ctx ctx = {path, b.s, b.len, tensors, nbytes, n_tensors};
    st = kd_write_atomic(path, write_body, &ctx, err);
cleanup:
    kd_strbuf_free(&b);
    free(nbytes);
    free(names);
    return st;
}
