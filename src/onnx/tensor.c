/* tensor.c - an ONNX TensorProto (initializer, Constant) decoded into floats or int64s: dims
 * and element count checked against the caps before any data is read, the stored bytes against
 * the shape, external data read only from inside the model's own folder. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "kd_data.h"
#include "kd_path.h"
#include "kd_safetensors.h"
#include "onnx_impl.h"

static const char *tname(const Onnx__TensorProto *tp) {
    return tp->name && tp->name[0] ? tp->name : "(unnamed)";
}

/* Bytes per element of the stored types we decode; 0 for the others. */
static size_t elem_bytes(int32_t dt) {
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: return 4;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return 8;
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16: return 2;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL: return 1;
    default: return 0;
    }
}

static int is_float_type(int32_t dt) {
    return dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || dt == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE ||
           dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16 ||
           dt == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16;
}

/* The w little-endian bytes of element k. */
static uint64_t raw_bits(const uint8_t *p, size_t w, size_t k) {
    uint64_t u = 0;
    for (size_t i = 0; i < w; i++) u |= (uint64_t)p[k * w + i] << (8 * i);
    return u;
}

/* Element k of little-endian raw bytes of type dt, as a double. */
static double raw_elem(const uint8_t *p, int32_t dt, size_t k) {
    const uint64_t u = raw_bits(p, elem_bytes(dt), k);
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: {
        uint32_t u32 = (uint32_t)u;
        float f;
        memcpy(&f, &u32, 4);
        return f;
    }
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: {
        double d;
        memcpy(&d, &u, 8);
        return d;
    }
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16: return kd_f16_to_f32((uint16_t)u);
    case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16: return kd_bf16_to_f32((uint16_t)u);
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: return (double)(int32_t)(uint32_t)u;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return (double)(int64_t)u;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8: return (double)(int8_t)(uint8_t)u;
    default: return (double)u;
    }
}

/* The external file's bytes [offset, offset + len) into *out (malloc'd). Only a relative path
 * that stays inside t->dir (after resolving links) is read. */
static kd_status read_external(kd_onnx_tr *t, const Onnx__TensorProto *tp, size_t len,
                               uint8_t **out) {
    const char *loc = NULL;
    unsigned long long off = 0, n = len;
    for (size_t k = 0; k < tp->n_external_data; k++) {
        const Onnx__StringStringEntryProto *e = tp->external_data[k];
        if (!e->key || !e->value) continue;
        char *end = NULL;
        errno = 0;
        if (!strcmp(e->key, "location")) loc = e->value;
        else if (!strcmp(e->key, "offset")) off = strtoull(e->value, &end, 10);
        else if (!strcmp(e->key, "length")) n = strtoull(e->value, &end, 10);
        if (end && (*end || errno))
            return kd_err_set(t->err, KD_EINPUT, "tensor '%.200s': external data %s \"%.40s\" "
                              "is not a number", tname(tp), e->key, e->value);
    }
    if (!loc || !loc[0])
        return kd_err_set(t->err, KD_EINPUT, "tensor '%.200s': external data without a "
                          "location", tname(tp));
    if (!t->dir || loc[0] == '/')
        return kd_err_set(t->err, KD_EINPUT, "tensor '%.200s': external data \"%.200s\" is an "
                          "absolute path; only files inside the model's folder are read",
                          tname(tp), loc);
    if (n != len)
        return kd_err_set(t->err, KD_EINPUT, "tensor '%.200s': external data length %llu, but "
                          "its shape needs %zu bytes", tname(tp), n, len);
    char path[KD_PATH_MAX];
    char *real = NULL, *rdir = NULL;
    FILE *f = NULL;
    kd_status st = KD_OK;
    if (kd_path_join(path, sizeof path, t->dir, loc) || !(rdir = realpath(t->dir, NULL)) ||
        !(real = realpath(path, NULL))) {
        st = kd_err_set(t->err, KD_EINPUT, "tensor '%.200s': external data \"%.200s\": %s",
                        tname(tp), loc, strerror(errno ? errno : ENAMETOOLONG));
        goto cleanup;
    }
    const size_t nd = strlen(rdir);
    if (strncmp(real, rdir, nd) || (real[nd] != '/' && !(nd == 1 && rdir[0] == '/'))) {
        st = kd_err_set(t->err, KD_EINPUT, "tensor '%.200s': external data \"%.200s\" is "
                        "outside the model's folder %.200s; only files inside it are read",
                        tname(tp), loc, rdir);
        goto cleanup;
    }
    if (!(*out = malloc(len ? len : 1))) {
        st = kd_err_set(t->err, KD_EIO, "out of memory");
        goto cleanup;
    }
    if (!(f = fopen(real, "rb")) || off > LONG_MAX || fseek(f, (long)off, SEEK_SET) ||
        fread(*out, 1, len, f) != len) {
        free(*out);
        *out = NULL;
        st = kd_err_set(t->err, KD_EINPUT, "tensor '%.200s': external data \"%.200s\" holds "
                        "no %zu bytes at offset %llu", tname(tp), loc, len, off);
    }
cleanup:
    if (f) fclose(f);
    free(real);
    free(rdir);
    return st;
}

/* The element count of the typed repeated field that holds dt's values inline. */
static size_t inline_count(const Onnx__TensorProto *tp, int32_t dt) {
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: return tp->n_float_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: return tp->n_double_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return tp->n_int64_data;
    default: return tp->n_int32_data;  /* int32, int8, uint8, bool, float16, bfloat16 */
    }
}

static double inline_elem(const Onnx__TensorProto *tp, int32_t dt, size_t k) {
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: return tp->float_data[k];
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: return tp->double_data[k];
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return (double)tp->int64_data[k];
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
        return kd_f16_to_f32((uint16_t)tp->int32_data[k]);
    case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16:
        return kd_bf16_to_f32((uint16_t)tp->int32_data[k]);
    default: return tp->int32_data[k];
    }
}

/* Shape and element count: every dim in [0, 2^31), rank at most KD_MAX_RANK, the product
 * within the cap. */
static kd_status decode_dims(kd_onnx_tr *t, const Onnx__TensorProto *tp, tr_value *v) {
    size_t n = 1;
    if (tp->n_dims > KD_MAX_RANK)
        return kd_err_set(t->err, KD_EINPUT, "tensor '%.200s': rank %zu, above the %d distill "
                          "holds", tname(tp), tp->n_dims, KD_MAX_RANK);
    v->shape.rank = (int)tp->n_dims;
    for (size_t k = 0; k < tp->n_dims; k++) {
        const int64_t d = tp->dims[k];
        if (d < 0 || d >= ((int64_t)1 << 31))
            return kd_err_set(t->err, KD_EINPUT, "tensor '%.200s': dimension %zu is %lld, "
                              "outside [0, 2^31)", tname(tp), k, (long long)d);
        v->shape.d[k] = (size_t)d;
        if (kd_mul_size(n, (size_t)d, &n) || n > t->caps->max_tensor_elems)
            return kd_err_set(t->err, KD_EINPUT, "tensor '%.200s': more than the %zu elements "
                              "one tensor may hold", tname(tp), t->caps->max_tensor_elems);
    }
    v->n = n;
    return KD_OK;
}

kd_status kd_onnx_tensor_decode(kd_onnx_tr *t, const Onnx__TensorProto *tp, tr_value *v) {
    const int32_t dt = tp->data_type;
    const size_t w = elem_bytes(dt);
    uint8_t *ext = NULL;
    kd_status st = decode_dims(t, tp, v);
    if (st) return st;
    if (!w)
        return kd_err_set(t->err, KD_EINPUT, "tensor '%.200s': data type %d is not supported "
                          "(float, double, float16, bfloat16 and integer types are)",
                          tname(tp), (int)dt);
    v->kind = VAL_CONST;
    v->is_int = !is_float_type(dt);
    const size_t n = v->n, bytes = n * w;  /* n * w <= 2^28 * 8: no overflow */
    const uint8_t *raw = NULL;
    if (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
        if ((st = read_external(t, tp, bytes, &ext))) return st;
        raw = ext;
    } else if (tp->has_raw_data) {
        if (tp->raw_data.len != bytes)
            return kd_err_set(t->err, KD_EINPUT, "tensor '%.200s': raw data holds %zu bytes, its "
                              "shape needs %zu", tname(tp), tp->raw_data.len, bytes);
        raw = tp->raw_data.data;
    } else if (inline_count(tp, dt) != n) {
        return kd_err_set(t->err, KD_EINPUT, "tensor '%.200s': %zu values stored, its shape "
                          "needs %zu", tname(tp), inline_count(tp, dt), n);
    }
    if (v->is_int) v->i = malloc((n ? n : 1) * sizeof *v->i);
    else v->f = malloc((n ? n : 1) * sizeof *v->f);
    if (!v->i && !v->f) {
        free(ext);
        return kd_err_set(t->err, KD_EIO, "out of memory for tensor '%.200s'", tname(tp));
    }
    for (size_t k = 0; k < n; k++) {
        const double x = raw ? raw_elem(raw, dt, k) : inline_elem(tp, dt, k);
        if (dt == ONNX__TENSOR_PROTO__DATA_TYPE__INT64)  /* exact, not through a double */
            v->i[k] = raw ? (int64_t)raw_bits(raw, 8, k) : tp->int64_data[k];
        else if (v->is_int) v->i[k] = (int64_t)x;
        else v->f[k] = (float)x;
    }
    free(ext);
    return KD_OK;
}
