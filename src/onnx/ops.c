/* ops.c - the table of ONNX operators distill translates, the helpers every translator uses
 * (inputs, attributes, appending layers and weights) and the translators of the layers with
 * weights or windows: Conv, Gemm, MatMul, BatchNormalization, the pools and activations. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_impl.h"

/* ---- helpers ---- */

tr_value *kd_onnx_in(kd_onnx_tr *t, const Onnx__NodeProto *nd, size_t k) {
    if (k >= nd->n_input || !nd->input[k][0]) return NULL;
    return kd_onnx_tr_find(t, nd->input[k]);
}

const Onnx__AttributeProto *kd_onnx_get_attr(const Onnx__NodeProto *nd, const char *name) {
    for (size_t k = 0; k < nd->n_attribute; k++)
        if (nd->attribute[k]->name && !strcmp(nd->attribute[k]->name, name)) return nd->attribute[k];
    return NULL;
}

int64_t kd_onnx_get_int(const Onnx__NodeProto *nd, const char *name, int64_t def) {
    const Onnx__AttributeProto *a = kd_onnx_get_attr(nd, name);
    return a && a->has_i ? a->i : def;
}

float kd_onnx_get_float(const Onnx__NodeProto *nd, const char *name, float def) {
    const Onnx__AttributeProto *a = kd_onnx_get_attr(nd, name);
    return a && a->has_f ? a->f : def;
}

/* The computed value input k must be. */
static kd_status need_run(kd_onnx_tr *t, const Onnx__NodeProto *nd, size_t k, tr_value **out) {
    tr_value *v = kd_onnx_in(t, nd, k);
    if (!v) return kd_onnx_node_err(t, "input %zu is missing", k);
    if (v->kind == VAL_PAT)
        return kd_onnx_node_err(t, "reads '%.200s', a step of an exact-GELU pattern (Div, Erf, "
                                "Add, Mul, Mul) that does not complete", v->name);
    if (v->kind != VAL_RUN)
        return kd_onnx_node_err(t, "input %zu '%.200s' must be computed from the graph's "
                                "input, not a constant", k, v->name);
    *out = v;
    return KD_OK;
}

/* The float constant input k must be (a weight), with n elements when n > 0. */
static kd_status need_const(kd_onnx_tr *t, const Onnx__NodeProto *nd, size_t k, size_t n,
                            tr_value **out) {
    tr_value *v = kd_onnx_in(t, nd, k);
    if (!v) return kd_onnx_node_err(t, "input %zu is missing", k);
    if (v->kind != VAL_CONST || v->is_int)
        return kd_onnx_node_err(t, "input %zu '%.200s' must be a float constant (an "
                                "initializer)", k, v->name);
    if (n && v->n != n)
        return kd_onnx_node_err(t, "input %zu '%.200s' has %zu values, expected %zu", k,
                                v->name, v->n, n);
    *out = v;
    return KD_OK;
}

static kd_status oom(kd_onnx_tr *t) { return kd_err_set(t->err, KD_EIO, "out of memory"); }

/* Adds "type", "name" and "from" to spec and appends it. */
static kd_status append(kd_onnx_tr *t, cJSON *spec, const char *type, const char *name,
                        const char *const *from, size_t n_from) {
    cJSON *f = n_from == 1 ? cJSON_CreateString(from[0]) : cJSON_CreateArray();
    int ok = spec && f && cJSON_AddStringToObject(spec, "type", type) &&
             cJSON_AddStringToObject(spec, "name", name);
    for (size_t k = 0; ok && n_from > 1 && k < n_from; k++)
        ok = cJSON_AddItemToArray(f, cJSON_CreateString(from[k]));
    if (ok && (ok = cJSON_AddItemToObject(spec, "from", f))) f = NULL;
    if (ok && (ok = cJSON_AddItemToArray(t->layers, spec))) spec = NULL;
    cJSON_Delete(f);
    cJSON_Delete(spec);
    if (!ok) return oom(t);
    t->n_layers++;
    return KD_OK;
}

kd_status kd_onnx_add_layer(kd_onnx_tr *t, const Onnx__NodeProto *nd, const char *type,
                            cJSON *spec, tr_value *const *ins, size_t n_in,
                            const kd_shape *shape, const kd_shape *dshape, tr_value **out) {
    const char *from[64];
    tr_value *v = kd_onnx_tr_find(t, nd->output[0]);
    const char *name = kd_onnx_tr_name(t, nd->output[0]);
    if (!name) {
        cJSON_Delete(spec);
        return oom(t);
    }
    KD_ASSERT(n_in >= 1 && n_in <= 64 && v);
    for (size_t k = 0; k < n_in; k++) from[k] = ins[k]->dname;
    kd_status st = append(t, spec, type, name, from, n_in);
    if (st) return st;
    v->kind = VAL_RUN;
    v->dname = name;
    v->layer = t->n_layers - 1;
    v->shape = *shape;
    v->dshape = *dshape;
    if (out) *out = v;
    return KD_OK;
}

kd_status kd_onnx_add_inner(kd_onnx_tr *t, const Onnx__NodeProto *nd, const char *suffix,
                            const char *type, cJSON *spec, const char *from,
                            const char **dname) {
    char onnx[512];
    snprintf(onnx, sizeof onnx, "%.400s%s", nd->output[0], suffix);
    const char *name = kd_onnx_tr_name(t, onnx);
    if (!name) {
        cJSON_Delete(spec);
        return oom(t);
    }
    *dname = name;
    return append(t, spec, type, name, &from, 1);
}

kd_status kd_onnx_add_weight(kd_onnx_tr *t, const char *layer, const char *suffix, float *data,
                             size_t n) {
    if (t->n_w == t->cap_w) {
        const size_t cap = t->cap_w ? 2 * t->cap_w : 64;
        tr_weight *w = realloc(t->w, cap * sizeof *w);
        if (!w) {
            free(data);
            return oom(t);
        }
        t->w = w;
        t->cap_w = cap;
    }
    tr_weight *w = &t->w[t->n_w++];
    snprintf(w->tensor, sizeof w->tensor, "%s.%s", layer, suffix);
    w->data = data;
    w->n = n;
    return KD_OK;
}

kd_status kd_onnx_alias(kd_onnx_tr *t, const Onnx__NodeProto *nd, const tr_value *src,
                        const kd_shape *shape) {
    tr_value *v = kd_onnx_tr_find(t, nd->output[0]);
    v->kind = VAL_RUN;
    v->dname = src->dname;
    v->layer = src->layer;
    v->shape = *shape;
    v->dshape = src->dshape;
    v->affine = 0;  /* another name of the value: a fold would change both */
    return KD_OK;
}

/* A copy of n floats (the weights move into the model; a constant may feed several nodes). */
static float *dup_floats(const float *x, size_t n) {
    float *y = malloc((n ? n : 1) * sizeof *y);
    if (y && n) memcpy(y, x, n * sizeof *y);
    return y;
}

/* A constant's floats into a queued weight. */
static kd_status add_weight_copy(kd_onnx_tr *t, const char *layer, const char *suffix,
                                 const float *x, size_t n) {
    float *d = dup_floats(x, n);
    if (!d) return oom(t);
    return kd_onnx_add_weight(t, layer, suffix, d, n);
}

/* ints attribute name into out[0..n) (absent: all def); KD_EINPUT when its count differs. */
static kd_status attr_ints(kd_onnx_tr *t, const Onnx__NodeProto *nd, const char *name,
                           int64_t *out, size_t n, int64_t def) {
    const Onnx__AttributeProto *a = kd_onnx_get_attr(nd, name);
    for (size_t k = 0; k < n; k++) out[k] = def;
    if (!a) return KD_OK;
    if (a->n_ints != n) return kd_onnx_node_err(t, "%s has %zu values, expected %zu", name, a->n_ints, n);
    for (size_t k = 0; k < n; k++) out[k] = a->ints[k];
    return KD_OK;
}

/* The 2-D window attributes shared by Conv and the pools: equal strides, equal pads on every
 * side, dilations 1, no auto_pad. */
static kd_status window(kd_onnx_tr *t, const Onnx__NodeProto *nd, size_t *stride, size_t *pad) {
    int64_t s[2], p[4], d[2];
    const Onnx__AttributeProto *ap = kd_onnx_get_attr(nd, "auto_pad");
    kd_status st = attr_ints(t, nd, "strides", s, 2, 1);
    if (!st) st = attr_ints(t, nd, "pads", p, 4, 0);
    if (!st) st = attr_ints(t, nd, "dilations", d, 2, 1);
    if (st) return st;
    if (ap && ap->has_s && !(ap->s.len == 6 && !memcmp(ap->s.data, "NOTSET", 6)) &&
        !(ap->s.len == 5 && !memcmp(ap->s.data, "VALID", 5) && !p[0] && !p[1] && !p[2] && !p[3]))
        return kd_onnx_node_err(t, "auto_pad other than NOTSET is not supported (give pads)");
    if (s[0] != s[1] || s[0] < 1 || s[0] > 64)
        return kd_onnx_node_err(t, "strides %lld, %lld: distill needs one stride in [1, 64] "
                                "for both axes", (long long)s[0], (long long)s[1]);
    if (p[0] != p[1] || p[0] != p[2] || p[0] != p[3] || p[0] < 0 || p[0] > 64)
        return kd_onnx_node_err(t, "pads %lld, %lld, %lld, %lld: distill needs the same padding "
                                "on every side", (long long)p[0], (long long)p[1],
                                (long long)p[2], (long long)p[3]);
    if (d[0] != 1 || d[1] != 1) return kd_onnx_node_err(t, "dilations other than 1");
    if (kd_onnx_get_int(nd, "ceil_mode", 0)) return kd_onnx_node_err(t, "ceil_mode 1");
    *stride = (size_t)s[0];
    *pad = (size_t)p[0];
    return KD_OK;
}

/* The [C, H, W] value an image operator reads. */
static kd_status need_image(kd_onnx_tr *t, const Onnx__NodeProto *nd, tr_value **x) {
    kd_status st = need_run(t, nd, 0, x);
    if (!st && (*x)->dshape.rank != 3)
        return kd_onnx_node_err(t, "reads '%.200s' of rank %d per sample; it needs [C, H, W]",
                                (*x)->name, (*x)->dshape.rank);
    return st;
}

/* Outputs after the first must not be read (MaxPool's indices, BatchNormalization's running
 * statistics in training, Dropout's mask). */
static kd_status only_first_output(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    for (size_t k = 1; k < nd->n_output; k++) {
        const tr_value *v = nd->output[k][0] ? kd_onnx_tr_find(t, nd->output[k]) : NULL;
        if (v && v->readers)
            return kd_onnx_node_err(t, "its output %zu '%.200s' is read; only the first output "
                                    "is supported", k, v->name);
    }
    return KD_OK;
}

static cJSON *spec_with(const char *key, double val) {
    cJSON *s = cJSON_CreateObject();
    if (s && key && !cJSON_AddNumberToObject(s, key, val)) {
        cJSON_Delete(s);
        return NULL;
    }
    return s;
}

/* ---- operators with weights or windows ---- */

static kd_status op_conv(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    tr_value *x = NULL, *w = NULL, *b = NULL;
    size_t s, p;
    kd_status st = need_image(t, nd, &x);
    if (!st) st = need_const(t, nd, 1, 0, &w);
    if (!st && kd_onnx_in(t, nd, 2)) st = need_const(t, nd, 2, 0, &b);
    if (!st) st = window(t, nd, &s, &p);
    if (st) return st;
    const int64_t g = kd_onnx_get_int(nd, "group", 1);
    const size_t C = x->dshape.d[0], H = x->dshape.d[1], W = x->dshape.d[2];
    if (w->shape.rank != 4) return kd_onnx_node_err(t, "a weight of rank %d (only 2-D convolution)", w->shape.rank);
    const size_t M = w->shape.d[0], kh = w->shape.d[2], kw = w->shape.d[3];
    if (g < 1 || (size_t)g > C || C % (size_t)g || M % (size_t)g || w->shape.d[1] * (size_t)g != C || !M)
        return kd_onnx_node_err(t, "weight [%zu, %zu, %zu, %zu] and group %lld do not fit %zu "
                                "input channels", M, w->shape.d[1], kh, kw, (long long)g, C);
    if (b && b->n != M) return kd_onnx_node_err(t, "bias of %zu values for %zu channels", b->n, M);
    if (!kh || !kw || kh > H + 2 * p || kw > W + 2 * p)
        return kd_onnx_node_err(t, "kernel %zux%zu larger than the padded input", kh, kw);
    const kd_shape out = {3, {M, (H + 2 * p - kh) / s + 1, (W + 2 * p - kw) / s + 1}};
    cJSON *spec = spec_with("channels", (double)M), *k = cJSON_CreateIntArray((const int[]){(int)kh, (int)kw}, 2);
    if (!spec || !k || !cJSON_AddItemToObject(spec, "kernel", k) ||
        !cJSON_AddNumberToObject(spec, "stride", (double)s) ||
        !cJSON_AddNumberToObject(spec, "padding", (double)p) ||
        !cJSON_AddNumberToObject(spec, "groups", (double)g) || !cJSON_AddBoolToObject(spec, "bias", b != NULL)) {
        cJSON_Delete(spec);
        return oom(t);
    }
    tr_value *y;
    if ((st = kd_onnx_add_layer(t, nd, "conv2d", spec, &x, 1, &out, &out, &y)) ||
        (st = add_weight_copy(t, y->dname, "weight", w->f, w->n)))
        return st;
    return b ? add_weight_copy(t, y->dname, "bias", b->f, b->n) : KD_OK;
}

/* A dense layer y = x W^T + c from a [D] input and a weight stored as [N, D] (trans) or
 * [D, N]. */
static kd_status dense(kd_onnx_tr *t, const Onnx__NodeProto *nd, tr_value *x, const tr_value *w,
                       int trans, const tr_value *c) {
    if (x->dshape.rank != 1 || x->shape.rank != 1)
        return kd_onnx_node_err(t, "reads '%.200s' of rank %d per sample; it needs [D] (flatten "
                                "first)", x->name, x->shape.rank);
    if (w->shape.rank != 2) return kd_onnx_node_err(t, "a weight of rank %d, not 2", w->shape.rank);
    const size_t D = x->dshape.d[0], N = trans ? w->shape.d[0] : w->shape.d[1];
    if ((trans ? w->shape.d[1] : w->shape.d[0]) != D || !N)
        return kd_onnx_node_err(t, "weight [%zu, %zu] does not fit %zu inputs", w->shape.d[0],
                                w->shape.d[1], D);
    if (c && c->n != N) return kd_onnx_node_err(t, "bias of %zu values for %zu outputs", c->n, N);
    float *wt = malloc(N * D * sizeof *wt);
    if (!wt) return oom(t);
    for (size_t o = 0; o < N; o++)  /* distill's dense weight is [N, D], as torch's Linear */
        for (size_t i = 0; i < D; i++) wt[o * D + i] = trans ? w->f[o * D + i] : w->f[i * N + o];
    cJSON *spec = spec_with("units", (double)N);
    const kd_shape out = {1, {N}};
    tr_value *y;
    kd_status st;
    if (!spec || !cJSON_AddBoolToObject(spec, "bias", c != NULL)) {
        cJSON_Delete(spec);
        free(wt);
        return oom(t);
    }
    if ((st = kd_onnx_add_layer(t, nd, "dense", spec, &x, 1, &out, &out, &y))) {
        free(wt);
        return st;
    }
    if ((st = kd_onnx_add_weight(t, y->dname, "weight", wt, N * D))) return st;
    return c ? add_weight_copy(t, y->dname, "bias", c->f, c->n) : KD_OK;
}

static kd_status op_gemm(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    tr_value *x = NULL, *w = NULL, *c = NULL;
    kd_status st = need_run(t, nd, 0, &x);
    if (!st) st = need_const(t, nd, 1, 0, &w);
    if (!st && kd_onnx_in(t, nd, 2)) st = need_const(t, nd, 2, 0, &c);
    if (st) return st;
    if (kd_onnx_get_int(nd, "transA", 0) || kd_onnx_get_float(nd, "alpha", 1.0f) != 1.0f ||
        (c && kd_onnx_get_float(nd, "beta", 1.0f) != 1.0f))
        return kd_onnx_node_err(t, "transA, alpha or beta other than 0, 1, 1");
    return dense(t, nd, x, w, (int)kd_onnx_get_int(nd, "transB", 0), c);
}

static kd_status op_matmul(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    tr_value *x = NULL, *w = NULL;
    kd_status st = need_run(t, nd, 0, &x);
    if (!st) st = need_const(t, nd, 1, 0, &w);
    return st ? st : dense(t, nd, x, w, 0, NULL);
}

static kd_status op_batchnorm(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    static const char *const names[] = {"weight", "bias", "running_mean", "running_var"};
    tr_value *x = NULL, *p[4] = {NULL};
    kd_status st = need_run(t, nd, 0, &x);
    if (st) return st;
    if (x->dshape.rank != 1 && x->dshape.rank != 3)
        return kd_onnx_node_err(t, "reads a value of rank %d per sample; it needs [C] or "
                                "[C, H, W]", x->dshape.rank);
    const size_t C = x->dshape.d[0];
    for (size_t k = 0; k < 4 && !st; k++) st = need_const(t, nd, k + 1, C, &p[k]);
    if (!st) st = only_first_output(t, nd);
    if (st) return st;
    const float eps = kd_onnx_get_float(nd, "epsilon", 1e-5f);
    if (kd_onnx_get_int(nd, "training_mode", 0))
        return kd_onnx_node_err(t, "training_mode 1 (export the model in evaluation mode)");
    if (!(eps > 0.0f && eps <= 1.0f)) return kd_onnx_node_err(t, "epsilon %g outside (0, 1]", (double)eps);
    for (size_t c = 0; c < C; c++)
        if (!(p[3]->f[c] >= 0.0f)) return kd_onnx_node_err(t, "a negative or NaN variance");
    cJSON *spec = spec_with("eps", eps);
    tr_value *y;
    if (!spec) return oom(t);
    if ((st = kd_onnx_add_layer(t, nd, "batchnorm", spec, &x, 1, &x->shape, &x->dshape, &y)))
        return st;
    for (size_t k = 0; k < 4 && !st; k++) st = add_weight_copy(t, y->dname, names[k], p[k]->f, C);
    return st;
}

static kd_status pool(kd_onnx_tr *t, const Onnx__NodeProto *nd, const char *type) {
    tr_value *x = NULL;
    size_t s, p;
    int64_t k[2];
    kd_status st = need_image(t, nd, &x);
    if (!st) st = window(t, nd, &s, &p);
    if (!st) st = attr_ints(t, nd, "kernel_shape", k, 2, 0);
    if (!st) st = only_first_output(t, nd);
    if (st) return st;
    const size_t H = x->dshape.d[1], W = x->dshape.d[2];
    if (k[0] < 1 || k[1] < 1 || k[0] > 64 || k[1] > 64 || (size_t)k[0] > H + 2 * p || (size_t)k[1] > W + 2 * p)
        return kd_onnx_node_err(t, "kernel_shape %lld, %lld does not fit the %zux%zu input",
                                (long long)k[0], (long long)k[1], H, W);
    if (2 * p > (size_t)k[0] || 2 * p > (size_t)k[1])
        return kd_onnx_node_err(t, "pads of %zu, more than half the kernel", p);
    if (!strcmp(type, "avgpool2d") && p && !kd_onnx_get_int(nd, "count_include_pad", 0))
        return kd_onnx_node_err(t, "padding with count_include_pad 0 (distill counts the "
                                "padding in the divisor, as count_include_pad 1)");
    if (kd_onnx_get_int(nd, "storage_order", 0)) return kd_onnx_node_err(t, "storage_order 1");
    const kd_shape out = {3, {x->dshape.d[0], (H + 2 * p - (size_t)k[0]) / s + 1,
                              (W + 2 * p - (size_t)k[1]) / s + 1}};
    cJSON *spec = spec_with("stride", (double)s), *kk = cJSON_CreateIntArray((const int[]){(int)k[0], (int)k[1]}, 2);
    if (!spec || !kk || !cJSON_AddItemToObject(spec, "kernel", kk) ||
        !cJSON_AddNumberToObject(spec, "padding", (double)p)) {
        cJSON_Delete(spec);
        return oom(t);
    }
    return kd_onnx_add_layer(t, nd, type, spec, &x, 1, &out, &out, NULL);
}

static kd_status op_maxpool(kd_onnx_tr *t, const Onnx__NodeProto *nd) { return pool(t, nd, "maxpool2d"); }
static kd_status op_avgpool(kd_onnx_tr *t, const Onnx__NodeProto *nd) { return pool(t, nd, "avgpool2d"); }

/* global_avgpool: ONNX keeps [C, 1, 1] (keepdims), distill [C]: the same floats. */
static kd_status global_pool(kd_onnx_tr *t, const Onnx__NodeProto *nd, int keep) {
    tr_value *x = NULL;
    kd_status st = need_image(t, nd, &x);
    if (st) return st;
    const size_t C = x->dshape.d[0];
    const kd_shape shape = keep ? (kd_shape){3, {C, 1, 1}} : (kd_shape){1, {C}}, d = {1, {C}};
    cJSON *spec = cJSON_CreateObject();
    return spec ? kd_onnx_add_layer(t, nd, "global_avgpool", spec, &x, 1, &shape, &d, NULL) : oom(t);
}

static kd_status op_gap(kd_onnx_tr *t, const Onnx__NodeProto *nd) { return global_pool(t, nd, 1); }

static kd_status op_reducemean(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    const Onnx__AttributeProto *a = kd_onnx_get_attr(nd, "axes");
    int ok = a && a->n_ints == 2;
    for (size_t k = 0; ok && k < 2; k++) {
        const int64_t ax = a->ints[k] < 0 ? a->ints[k] + 4 : a->ints[k];
        ok = ax == 2 + (int64_t)k || (ax == 3 - (int64_t)k && a->ints[0] != a->ints[1]);
    }
    if (!ok) return kd_onnx_node_err(t, "only a mean over the two spatial axes (axes 2, 3 of "
                                     "[N, C, H, W]) is supported");
    return global_pool(t, nd, kd_onnx_get_int(nd, "keepdims", 1) != 0);
}

/* ---- activations ---- */

static kd_status unary(kd_onnx_tr *t, const Onnx__NodeProto *nd, const char *type, cJSON *spec) {
    tr_value *x = NULL;
    kd_status st = spec ? need_run(t, nd, 0, &x) : oom(t);
    if (st) {
        cJSON_Delete(spec);
        return st;
    }
    return kd_onnx_add_layer(t, nd, type, spec, &x, 1, &x->shape, &x->dshape, NULL);
}

static kd_status op_relu(kd_onnx_tr *t, const Onnx__NodeProto *nd) { return unary(t, nd, "relu", cJSON_CreateObject()); }
static kd_status op_sigmoid(kd_onnx_tr *t, const Onnx__NodeProto *nd) { return unary(t, nd, "sigmoid", cJSON_CreateObject()); }
static kd_status op_tanh(kd_onnx_tr *t, const Onnx__NodeProto *nd) { return unary(t, nd, "tanh", cJSON_CreateObject()); }
static kd_status op_hardswish(kd_onnx_tr *t, const Onnx__NodeProto *nd) { return unary(t, nd, "hardswish", cJSON_CreateObject()); }
static kd_status op_leaky(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    return unary(t, nd, "leaky_relu", spec_with("slope", kd_onnx_get_float(nd, "alpha", 0.01f)));
}

/* A scalar bound of Clip: the attribute (opset < 11) or the constant input k; NAN absent. */
static kd_status clip_bound(kd_onnx_tr *t, const Onnx__NodeProto *nd, size_t k, float *out) {
    const tr_value *v = kd_onnx_in(t, nd, k);
    *out = NAN;
    if (!v) return KD_OK;
    if (v->kind != VAL_CONST || v->is_int || v->n != 1)
        return kd_onnx_node_err(t, "a bound that is not a float constant scalar");
    *out = v->f[0];
    return KD_OK;
}

/* Clip(0, 6) is relu6, Clip(0, none) relu: the bounds distill has layers for. */
static kd_status op_clip(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    float lo, hi;
    kd_status st = clip_bound(t, nd, 1, &lo);
    if (!st) st = clip_bound(t, nd, 2, &hi);
    if (st) return st;
    if (lo == 0.0f && hi == 6.0f) return unary(t, nd, "relu6", cJSON_CreateObject());
    if (lo == 0.0f && isnan(hi)) return unary(t, nd, "relu", cJSON_CreateObject());
    return kd_onnx_node_err(t, "bounds [%g, %g]: only [0, 6] (relu6) and [0, none] (relu) are "
                            "supported", (double)lo, (double)hi);
}

/* Weight w and bias b in every channel of affine layer `layer`. */
static kd_status fill_affine(kd_onnx_tr *t, const char *layer, size_t C, float w, float b) {
    float *wv = malloc(C * sizeof *wv), *bv = malloc(C * sizeof *bv);
    if (!wv || !bv) {
        free(wv);
        free(bv);
        return oom(t);
    }
    for (size_t c = 0; c < C; c++) {
        wv[c] = w;
        bv[c] = b;
    }
    kd_status st = kd_onnx_add_weight(t, layer, "weight", wv, C);  /* frees wv on failure */
    if (st) {
        free(bv);
        return st;
    }
    return kd_onnx_add_weight(t, layer, "bias", bv, C);
}

/* HardSigmoid max(0, min(1, a x + b)) = relu6(6 a x + 6 b) / 6: three layers, the first two
 * named after the output with ".scale" and ".relu6". */
static kd_status op_hardsigmoid(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    tr_value *x = NULL, *y = NULL;
    kd_status st = need_run(t, nd, 0, &x);
    if (st) return st;
    const float a = kd_onnx_get_float(nd, "alpha", 0.2f), b = kd_onnx_get_float(nd, "beta", 0.5f);
    const tr_value *hs = kd_onnx_tr_find(t, nd->output[0]);
    const Onnx__NodeProto *r = hs->readers == 1 ? kd_onnx_next_reader(t, hs) : NULL;
    if (r && fabsf(a - 1.0f / 6.0f) < 1e-6f && b == 0.5f && r->op_type && !strcmp(r->op_type, "Mul") &&
        r->n_input == 2 && (!strcmp(r->input[0], x->name) || !strcmp(r->input[1], x->name)))
        return kd_onnx_pattern(t, nd, KD_ONNX_HSWISH, (size_t)(x - t->v));
    const size_t C = x->dshape.d[0];
    tr_value mid = {0};
    tr_value *pmid = &mid;
    const char *n0 = NULL;
    if ((st = kd_onnx_add_inner(t, nd, ".scale", "affine", cJSON_CreateObject(), x->dname, &n0)) ||
        (st = fill_affine(t, n0, C, 6.0f * a, 6.0f * b)) ||
        (st = kd_onnx_add_inner(t, nd, ".relu6", "relu6", cJSON_CreateObject(), n0, &mid.dname)) ||
        (st = kd_onnx_add_layer(t, nd, "affine", cJSON_CreateObject(), &pmid, 1, &x->shape,
                                &x->dshape, &y)))
        return st;
    return fill_affine(t, y->dname, C, 1.0f / 6.0f, 0.0f);
}

/* ---- the table ---- */

kd_status kd_onnx_op_identity(kd_onnx_tr *t, const Onnx__NodeProto *nd);
kd_status kd_onnx_op_dropout(kd_onnx_tr *t, const Onnx__NodeProto *nd);
kd_status kd_onnx_op_flatten(kd_onnx_tr *t, const Onnx__NodeProto *nd);
kd_status kd_onnx_op_reshape(kd_onnx_tr *t, const Onnx__NodeProto *nd);
kd_status kd_onnx_op_squeeze(kd_onnx_tr *t, const Onnx__NodeProto *nd);
kd_status kd_onnx_op_unsqueeze(kd_onnx_tr *t, const Onnx__NodeProto *nd);
kd_status kd_onnx_op_concat(kd_onnx_tr *t, const Onnx__NodeProto *nd);
kd_status kd_onnx_op_constant(kd_onnx_tr *t, const Onnx__NodeProto *nd);
kd_status kd_onnx_op_shape(kd_onnx_tr *t, const Onnx__NodeProto *nd);
kd_status kd_onnx_op_gather(kd_onnx_tr *t, const Onnx__NodeProto *nd);
kd_status kd_onnx_op_binary(kd_onnx_tr *t, const Onnx__NodeProto *nd);
kd_status kd_onnx_op_erf(kd_onnx_tr *t, const Onnx__NodeProto *nd);
kd_status kd_onnx_op_pad(kd_onnx_tr *t, const Onnx__NodeProto *nd);

static const struct {
    const char *op;
    kd_onnx_op_fn fn;
} op_table[] = {
    {"Conv", op_conv}, {"Gemm", op_gemm}, {"MatMul", op_matmul},
    {"Add", kd_onnx_op_binary}, {"Sub", kd_onnx_op_binary}, {"Mul", kd_onnx_op_binary},
    {"Div", kd_onnx_op_binary}, {"Relu", op_relu}, {"LeakyRelu", op_leaky}, {"Clip", op_clip},
    {"Sigmoid", op_sigmoid}, {"Tanh", op_tanh}, {"HardSigmoid", op_hardsigmoid},
    {"HardSwish", op_hardswish}, {"Erf", kd_onnx_op_erf},
    {"BatchNormalization", op_batchnorm}, {"MaxPool", op_maxpool}, {"AveragePool", op_avgpool},
    {"GlobalAveragePool", op_gap}, {"ReduceMean", op_reducemean},
    {"Flatten", kd_onnx_op_flatten}, {"Reshape", kd_onnx_op_reshape},
    {"Squeeze", kd_onnx_op_squeeze}, {"Unsqueeze", kd_onnx_op_unsqueeze},
    {"Concat", kd_onnx_op_concat}, {"Identity", kd_onnx_op_identity},
    {"Dropout", kd_onnx_op_dropout}, {"Constant", kd_onnx_op_constant},
    {"Shape", kd_onnx_op_shape}, {"Gather", kd_onnx_op_gather}, {"Pad", kd_onnx_op_pad},
};

kd_onnx_op_fn kd_onnx_op_find(const char *op) {
    for (size_t k = 0; k < sizeof op_table / sizeof op_table[0]; k++)
        if (!strcmp(op_table[k].op, op)) return op_table[k].fn;
    return NULL;
}

const char *kd_onnx_supported_ops(void) {
    return "Conv, Gemm, MatMul (constant weight), Add, Sub, Mul, Div (same-shape operands or a "
           "constant scalar or per-channel operand), Relu, LeakyRelu, Clip (0..6, 0..), Sigmoid, "
           "Tanh, HardSigmoid, HardSwish, Erf (in exact GELU), BatchNormalization, MaxPool, "
           "AveragePool, GlobalAveragePool, ReduceMean (spatial axes), Flatten, Reshape, "
           "Squeeze, Unsqueeze (flattening), Concat, Identity, Dropout, Pad (by 0), Constant, Shape and "
           "Gather (folded shape arithmetic), a final Softmax or LogSoftmax (removed)";
}
