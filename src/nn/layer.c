/* layer.c - the table of layer types and the helpers layer implementations share (spec
 * readers, weight initialisation). */
#include <cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_suggest.h"
#include "layer_impl.h"

/* The layer types, one line each, in the order messages list them. Each names a
 * `const kd_layer_ops kd_layer_<name>` defined in its own file. Plain (strong) references: the
 * layers live in a static archive, and a weak reference would not make the linker pull their
 * object files in, leaving every type "unknown". */
#define KD_LAYER_TYPES(X)                                                                  \
    X(dense)                                                                               \
    X(relu)                                                                                \
    X(leaky_relu)                                                                          \
    X(tanh)                                                                                \
    X(sigmoid)                                                                             \
    X(gelu)                                                                                \
    X(relu6)                                                                               \
    X(hardswish)                                                                           \
    X(dropout)                                                                             \
    X(flatten)                                                                             \
    X(conv2d)                                                                              \
    X(maxpool2d)                                                                           \
    X(avgpool2d)                                                                           \
    X(global_avgpool)                                                                      \
    X(batchnorm)                                                                           \
    X(layernorm)                                                                           \
    X(add)                                                                                 \
    X(concat)                                                                              \
    X(affine)                                                                              \
    /* new types go above this line: one X(name) line each */

#define KD_LAYER_DECL(name) extern const kd_layer_ops kd_layer_##name;
#define KD_LAYER_REF(name) &kd_layer_##name,
KD_LAYER_TYPES(KD_LAYER_DECL)
static const kd_layer_ops *const layer_types[] = {KD_LAYER_TYPES(KD_LAYER_REF)};
#define N_LAYER_TYPES (sizeof layer_types / sizeof layer_types[0])

const kd_layer_ops *kd_layer_find(const char *type) {
    for (size_t i = 0; i < N_LAYER_TYPES; i++)
        if (layer_types[i] && strcmp(layer_types[i]->type, type) == 0) return layer_types[i];
    return NULL;
}

const char *kd_layer_type_list(void) {
    static char list[512];
    if (list[0]) return list;
    size_t len = 0;
    for (size_t i = 0; i < N_LAYER_TYPES; i++) {
        if (!layer_types[i]) continue;
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "",
                                layer_types[i]->type);
    }
    return list;
}

/* ---- Deployment export: the exporters call the layer's slot through these ---- */

kd_status kd_model_layer_export_onnx(const kd_model *m, size_t i, kd_onnx_emitter *em,
                                     kd_err *err) {
    const kd_layer *l = &m->layers[i];
    if (!l->ops->export_onnx)
        return kd_layer_err(l, err, "this layer type cannot be exported to ONNX yet");
    return l->ops->export_onnx(l, em, err);
}

kd_status kd_model_layer_export_c(const kd_model *m, size_t i, kd_c_emitter *em, kd_err *err) {
    const kd_layer *l = &m->layers[i];
    if (!l->ops->export_c)
        return kd_layer_err(l, err, "this layer type cannot be exported to C yet");
    return l->ops->export_c(l, em, err);
}

/* Declaration k of layer l and how it is stored: a quantizable weight as a matrix (int8 rows),
 * another parameter in the export dtype, a buffer (running statistics) as f32. */
static kd_tensor_decl export_decl(const kd_layer *l, int k, kd_export_store *store) {
    kd_tensor_decl d[KD_LAYER_MAX_TENSORS];
    int n = l->ops->tensors(l, d);
    KD_ASSERT(k >= 0 && k < n && d[k].kind != KD_TENSOR_COUNTER);
    *store = d[k].quantize ? KD_STORE_MATRIX
             : d[k].kind == KD_TENSOR_PARAM ? KD_STORE_PARAM
                                            : KD_STORE_F32;
    return d[k];
}

kd_status kd_layer_onnx_tensor(const kd_layer *l, kd_onnx_emitter *em, int k, const char **name,
                               kd_err *err) {
    kd_export_store store;
    kd_tensor_decl d = export_decl(l, k, &store);
    return kd_onnx_tensor(em, d.name, l->t[k], &d.shape, store, name, err);
}

kd_status kd_layer_c_tensor(const kd_layer *l, kd_c_emitter *em, int k, const char **name,
                            int *quantized, kd_err *err) {
    kd_export_store store;
    kd_tensor_decl d = export_decl(l, k, &store);
    size_t n = kd_shape_numel(&d.shape), rows = d.shape.rank ? d.shape.d[0] : 1;
    return kd_c_tensor(em, d.name, l->t[k], rows, rows ? n / rows : 0, store, name, quantized,
                       err);
}

/* ---- Helpers shared by the layer implementations ---- */

kd_status kd_layer_err(const kd_layer *l, kd_err *err, const char *fmt, ...) {
    char msg[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (l->name)
        return kd_err_set(err, KD_EUSAGE, "layer %d \"%s\" (%s): %s", l->index, l->name,
                          l->ops->type, msg);
    return kd_err_set(err, KD_EUSAGE, "layer %d (%s): %s", l->index, l->ops->type, msg);
}

/* The JSON text of an item for messages ("\"ten\"", "-3"), into buf. */
static const char *json_text(const cJSON *item, char *buf, size_t cap) {
    char *s = cJSON_PrintUnformatted(item);
    snprintf(buf, cap, "%s", s ? s : "?");
    if (strlen(buf) == cap - 1 && cap > 4) memcpy(buf + cap - 4, "...", 4);
    free(s);
    return buf;
}

kd_status kd_spec_check_fields(const kd_layer *l, const cJSON *spec, const char *const *known,
                               kd_err *err) {
    for (const cJSON *it = spec->child; it; it = it->next) {
        const char *key = it->string ? it->string : "";
        /* the model's own keys (graph.c) */
        if (!strcmp(key, "type") || !strcmp(key, "name") || !strcmp(key, "from")) continue;
        int ok = 0;
        for (const char *const *k = known; k && *k; k++)
            if (strcmp(*k, key) == 0) ok = 1;
        if (ok) continue;
        char list[256] = "";
        size_t len = 0, n_known = 0;
        for (const char *const *k = known; k && *k; k++, n_known++)
            len += (size_t)snprintf(list + len, len < sizeof list ? sizeof list - len : 0,
                                    "%s%s", len ? ", " : "", *k);
        /* near misses of the model's own keys too */
        const char *cands[34] = {"name", "from"};
        size_t n_cands = 2;
        for (size_t k = 0; k < n_known && n_cands < 34; k++) cands[n_cands++] = known[k];
        const char *near = kd_suggest(key, cands, n_cands);
        if (near)
            return kd_layer_err(l, err, "unknown field \"%s\" (did you mean \"%s\"?)", key, near);
        if (!list[0]) return kd_layer_err(l, err, "unknown field \"%s\" (this type takes none)", key);
        return kd_layer_err(l, err, "unknown field \"%s\" (known fields: %s)", key, list);
    }
    return KD_OK;
}

kd_status kd_spec_size(const kd_layer *l, const cJSON *spec, const char *field, int required,
                       size_t def, size_t lo, size_t hi, size_t *out, kd_err *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(spec, field);
    char buf[64];
    if (!it) {
        if (required) return kd_layer_err(l, err, "missing \"%s\" (an integer >= %zu)", field, lo);
        *out = def;
        return KD_OK;
    }
    double v = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    if (!(v >= (double)lo && v <= (double)hi) || v != floor(v))
        return kd_layer_err(l, err, "%s: expected an integer in [%zu, %zu], got %s", field, lo, hi,
                            json_text(it, buf, sizeof buf));
    *out = (size_t)v;
    return KD_OK;
}

kd_status kd_spec_float(const kd_layer *l, const cJSON *spec, const char *field, float def,
                        double lo, double hi, int hi_open, float *out, kd_err *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(spec, field);
    char buf[64];
    if (!it) {
        *out = def;
        return KD_OK;
    }
    double v = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    int ok = v >= lo && (hi_open ? v < hi : v <= hi);
    if (!ok)
        return kd_layer_err(l, err, "%s: expected a number in [%g, %g%c, got %s", field, lo, hi,
                            hi_open ? ')' : ']', json_text(it, buf, sizeof buf));
    *out = (float)v;
    return KD_OK;
}

kd_status kd_spec_bool(const kd_layer *l, const cJSON *spec, const char *field, int def,
                       int *out, kd_err *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(spec, field);
    char buf[64];
    if (!it) {
        *out = def;
        return KD_OK;
    }
    if (!cJSON_IsBool(it))
        return kd_layer_err(l, err, "%s: expected true or false, got %s", field,
                            json_text(it, buf, sizeof buf));
    *out = cJSON_IsTrue(it) ? 1 : 0;
    return KD_OK;
}

int kd_spec_add_float(cJSON *obj, const char *field, float v) {
    return cJSON_AddNumberToObject(obj, field, kd_float_shortest(v)) ? 0 : -1;
}

int kd_spec_add_size(cJSON *obj, const char *field, size_t v) {
    return cJSON_AddNumberToObject(obj, field, (double)v) ? 0 : -1;
}

int kd_spec_add_false(cJSON *obj, const char *field) {
    return cJSON_AddBoolToObject(obj, field, 0) ? 0 : -1;
}

void kd_init_fill(float *w, size_t n, size_t fan_in, size_t fan_out, kd_rng *rng, int xavier) {
    if (xavier) {
        float a = (float)sqrt(6.0 / (double)(fan_in + fan_out));
        for (size_t i = 0; i < n; i++) w[i] = (2.0f * kd_rng_uniform(rng) - 1.0f) * a;
    } else {
        float s = (float)sqrt(2.0 / (double)fan_in);
        for (size_t i = 0; i < n; i++) w[i] = kd_rng_normal(rng) * s;
    }
}

void kd_par_copy(float *dst, const float *src, size_t n) {
    if (dst == src) return;
    KD_PAR_BLOCKS(n, o, k, memcpy(dst + o, src + o, k * sizeof *dst));
}

void kd_par_zero(float *dst, size_t n) {
    KD_PAR_BLOCKS(n, o, k, memset(dst + o, 0, k * sizeof *dst));
}

/* ---- The convolution family's "kernel" (layer_impl.h) ---- */

int kd_spec_add_kernel(cJSON *obj, size_t kh, size_t kw) {
    if (kh == kw) return kd_spec_add_size(obj, "kernel", kh);
    cJSON *k = cJSON_AddArrayToObject(obj, "kernel");
    for (int i = 0; k && i < 2; i++) {
        cJSON *v = cJSON_CreateNumber((double)(i ? kw : kh));
        if (!v || !cJSON_AddItemToArray(k, v)) {
            cJSON_Delete(v);
            return -1;
        }
    }
    return k ? 0 : -1;
}

kd_status kd_spec_kernel(const kd_layer *l, const cJSON *spec, size_t *kh, size_t *kw,
                         kd_err *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(spec, "kernel");
    if (!it) return kd_layer_err(l, err, "missing \"kernel\" (an integer or [kh, kw])");
    size_t v[2];
    int n = 0;
    if (cJSON_IsNumber(it)) {
        v[0] = v[1] = 0;
        double d = it->valuedouble;
        if (d >= 1 && d <= (double)KD_SPEC_MAX_KERNEL && d == floor(d)) v[0] = v[1] = (size_t)d, n = 2;
    } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2) {
        for (const cJSON *e = it->child; e; e = e->next) {
            double d = cJSON_IsNumber(e) ? e->valuedouble : NAN;
            if (!(d >= 1 && d <= (double)KD_SPEC_MAX_KERNEL && d == floor(d))) break;
            v[n++] = (size_t)d;
        }
    }
    if (n != 2) {
        char *s = cJSON_PrintUnformatted(it);
        kd_status st = kd_layer_err(l, err,
                                    "kernel: expected an integer in [1, %zu] or [kh, kw], got %s",
                                    KD_SPEC_MAX_KERNEL, s ? s : "?");
        cJSON_free(s);
        return st;
    }
    *kh = v[0];
    *kw = v[1];
    return KD_OK;
}
