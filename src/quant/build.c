/* build.c - post-training quantization of a float model into a full-integer one: calibrate
 * every value's range on samples, fold batch norm into the convolution or dense layer before
 * it and ReLU / ReLU6 into their producer's clamp, quantize weights per output channel and
 * biases at s_in * s_w, and derive every multiplier (docs/integer.md). */
#include <cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_quant.h"

typedef struct {
    float lo, hi;
} range;

typedef struct {
    kd_model *m;
    kd_qmodel *q;
    const cJSON *layers;   /* the arch's layer objects */
    range *r;              /* per float value: 0 the input, i + 1 layer i's output */
    size_t *n_readers, *reader; /* per float value: how many layers read it, and the last */
    size_t *qv;            /* per float value: its quantized value */
    unsigned char *done;   /* per layer: folded into an earlier op */
    kd_err *err;
} builder;

/* ---- Calibration ---- */

static kd_status calibrate(kd_model *m, const float *x, size_t n, range *r, kd_err *err) {
    size_t L = m->n_layers, in_n = kd_shape_numel(&m->input), cap = n < 256 ? n : 256;
    size_t *ids = calloc(L, sizeof *ids);
    kd_shape *shapes = calloc(L, sizeof *shapes);
    kd_status st = ids && shapes ? KD_OK : kd_err_set(err, KD_EIO, "out of memory");
    for (size_t i = 0; !st && i < L; i++) {
        char index[32]; /* a named layer is observed by its name, an unnamed one by index */
        snprintf(index, sizeof index, "%zu", i);
        const char *name = kd_model_layer_name(m, i);
        st = kd_model_observe(m, name ? name : index, &ids[i], &shapes[i], err);
    }
    if (!st) st = kd_model_reserve(m, cap, err);
    for (size_t v = 0; v <= L; v++) r[v] = (range){FLT_MAX, -FLT_MAX};
    kd_ctx ctx = {0};
    for (size_t off = 0; !st && off < n; off += cap) {
        size_t B = n - off < cap ? n - off : cap;
        const float *xb = x + off * in_n;
        kd_model_forward(m, xb, B, &ctx);
        for (size_t v = 0; v <= L; v++) {
            const float *p = v ? kd_model_value(m, ids[v - 1]) : xb;
            size_t k = B * (v ? kd_shape_numel(&shapes[v - 1]) : in_n);
            for (size_t j = 0; j < k; j++) {
                if (!isfinite(p[j]))
                    return free(ids), free(shapes),
                           kd_err_set(err, KD_ENUMERIC, "calibration: %s of layer %zu is not "
                                      "finite on sample %zu", v ? "the output" : "the input",
                                      v ? v - 1 : 0, off + j / (k / B));
                r[v].lo = fminf(r[v].lo, p[j]), r[v].hi = fmaxf(r[v].hi, p[j]);
            }
        }
    }
    free(ids), free(shapes);
    return st;
}

/* The asymmetric int8 grid of a range, widened to hold 0 exactly (padding and ReLU need it). */
static kd_qvalue grid(range r, size_t numel) {
    double lo = fmin(r.lo, 0), hi = fmax(r.hi, 0);
    double s = (hi - lo) / 255;
    if (!(s > 1e-30)) s = 1.0 / 255; /* a value that is always 0 */
    double zp = round(-128 - lo / (float)s);
    return (kd_qvalue){(float)s, (int32_t)(zp < -128 ? -128 : zp > 127 ? 127 : zp), numel};
}

/* ---- Reading the float model ---- */

static const cJSON *spec(const builder *b, size_t i) { return cJSON_GetArrayItem(b->layers, (int)i); }

static size_t spec_size(const builder *b, size_t i, const char *key, size_t def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec(b, i), key);
    return cJSON_IsNumber(v) ? (size_t)v->valuedouble : def;
}

static void spec_kernel(const builder *b, size_t i, size_t *kh, size_t *kw) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec(b, i), "kernel");
    if (cJSON_IsArray(v)) *kh = (size_t)cJSON_GetArrayItem(v, 0)->valuedouble,
                          *kw = (size_t)cJSON_GetArrayItem(v, 1)->valuedouble;
    else *kh = *kw = cJSON_IsNumber(v) ? (size_t)v->valuedouble : 1;
}

/* Layer i's tensor with this suffix ("weight"), or NULL. */
static const float *tensor(const builder *b, size_t i, const char *suffix) {
    size_t n = strlen(suffix);
    for (size_t t = 0; t < b->m->n_tensors; t++) {
        const kd_tensor *T = &b->m->tensors[t];
        size_t len = strlen(T->name);
        if (T->layer == i && len > n && T->name[len - n - 1] == '.' &&
            strcmp(T->name + len - n, suffix) == 0)
            return T->data;
    }
    return NULL;
}

static int is(const builder *b, size_t i, const char *type) {
    return strcmp(kd_model_layer_type(b->m, i), type) == 0;
}

/* The one layer that reads value v, or SIZE_MAX when none or several do. */
static size_t sole_reader(const builder *b, size_t v) {
    return b->n_readers[v] == 1 ? b->reader[v] : SIZE_MAX;
}

static kd_status refuse(builder *b, size_t i, const char *why) {
    const char *name = kd_model_layer_name(b->m, i);
    char label[KD_LAYER_NAME_MAX + 32];
    if (name) snprintf(label, sizeof label, "layer %zu (%s, \"%s\")", i,
                       kd_model_layer_type(b->m, i), name);
    else snprintf(label, sizeof label, "layer %zu (%s)", i, kd_model_layer_type(b->m, i));
    return kd_err_set(b->err, KD_EUSAGE, "qint8: %s %s", label, why);
}

/* ---- Ops ---- */

static kd_qop *new_op(builder *b, kd_qop_kind kind, size_t layer) {
    kd_qop *op = &b->q->ops[b->q->n_ops++];
    memset(op, 0, sizeof *op);
    op->kind = kind, op->layer = layer;
    const char *name = kd_model_layer_name(b->m, layer);
    if (name) snprintf(op->name, sizeof op->name, "%s", name);
    else snprintf(op->name, sizeof op->name, "%zu", layer);
    op->o = (kd_qout){0, -128, 127};
    size_t n_in;
    const size_t *ins = kd_model_layer_inputs(b->m, layer, &n_in);
    op->n_in = n_in;
    for (size_t k = 0; k < n_in; k++) op->in[k] = b->qv[ins[k]];
    return op;
}

/* A new quantized value for float value v (its own calibrated grid), or one sharing the grid
 * of value `like` (same scale and zero point: max pool, an unfolded ReLU). */
static size_t new_value(builder *b, size_t v, const kd_qvalue *like) {
    kd_shape s = v ? kd_model_layer_out(b->m, v - 1) : b->m->input;
    size_t numel = kd_shape_numel(&s);
    kd_qvalue q = like ? *like : grid(b->r[v], numel);
    q.numel = numel;
    b->q->values[b->q->n_values] = q;
    return b->q->n_values++;
}

/* Output of op: value v's grid, with a ReLU / ReLU6 that solely reads v (the end of the
 * producer's chain) folded into the clamp. Returns the float value the op ends at. */
static size_t finish_out(builder *b, kd_qop *op, size_t v) {
    size_t j = sole_reader(b, v);
    int relu = j != SIZE_MAX && is(b, j, "relu"), relu6 = j != SIZE_MAX && is(b, j, "relu6");
    if (relu || relu6) b->done[j] = 1, b->qv[v] = SIZE_MAX, v = j + 1;
    op->out = new_value(b, v, NULL);
    const kd_qvalue *o = &b->q->values[op->out];
    op->o.zp = o->zp;
    if (relu || relu6) op->o.lo = o->zp;
    if (relu6) {
        double hi = o->zp + round(6.0 / o->scale);
        op->o.hi = hi < 127 ? (int32_t)hi : 127;
    }
    b->qv[v] = op->out;
    return v;
}

/* Folds the batch norm that solely reads value v (if any) into weights w (n_ch rows of `row`
 * values) and bias; returns the value the chain continues from. */
static size_t fold_bn(builder *b, size_t v, double *w, double *bias, size_t n_ch, size_t row) {
    size_t j = sole_reader(b, v);
    if (j == SIZE_MAX || !is(b, j, "batchnorm")) return v;
    const float *g = tensor(b, j, "weight"), *beta = tensor(b, j, "bias");
    const float *mean = tensor(b, j, "running_mean"), *var = tensor(b, j, "running_var");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(spec(b, j), "eps");
    double eps = cJSON_IsNumber(e) ? (double)(float)e->valuedouble : (double)1e-5f;
    for (size_t k = 0; k < n_ch; k++) {
        double a = g[k] / sqrt((double)var[k] + eps);
        for (size_t i = 0; i < row; i++) w[k * row + i] *= a;
        bias[k] = (bias[k] - mean[k]) * a + beta[k];
    }
    b->done[j] = 1;
    return j + 1;
}

/* Weights per output channel (symmetric, [-127, 127]), bias at s_in * s_w, multipliers. */
static kd_status quantize_weights(builder *b, kd_qop *op, const double *w, const double *bias,
                                  size_t row) {
    size_t n = op->n_ch;
    op->w = malloc(n * row), op->bias = malloc(n * sizeof *op->bias);
    op->mult = malloc(n * sizeof *op->mult);
    if (!op->w || !op->bias || !op->mult) return kd_err_set(b->err, KD_EIO, "out of memory");
    double s_in = b->q->values[op->in[0]].scale, s_out = b->q->values[op->out].scale;
    for (size_t k = 0; k < n; k++) {
        double amax = 0;
        for (size_t i = 0; i < row; i++) amax = fmax(amax, fabs(w[k * row + i]));
        float s_w = amax > 0 ? (float)(amax / 127) : 1.0f;
        for (size_t i = 0; i < row; i++) {
            double q = round(w[k * row + i] / s_w);
            op->w[k * row + i] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
        }
        double bq = round(bias[k] / (s_in * s_w));
        op->bias[k] = (int32_t)(bq > INT32_MAX ? INT32_MAX : bq < INT32_MIN ? INT32_MIN : bq);
        if (kd_qmul_from_real(s_in * s_w / s_out, &op->mult[k]))
            return refuse(b, op->layer, "needs a requantization multiplier outside [2^-32, 2^30)");
    }
    return KD_OK;
}

/* dense or conv2d, with the batch norm and ReLU after it. */
static kd_status build_product(builder *b, size_t i, int conv) {
    kd_qop *op = new_op(b, conv ? KD_QOP_CONV : KD_QOP_DENSE, i);
    size_t n_in, src = kd_model_layer_inputs(b->m, i, &n_in)[0];
    kd_shape in = src ? kd_model_layer_out(b->m, src - 1) : b->m->input;
    kd_shape out = kd_model_layer_out(b->m, i);
    size_t row;
    if (conv) {
        kd_qconv_geom *g = &op->g;
        g->C = in.d[0], g->H = in.d[1], g->W = in.d[2], g->K = out.d[0];
        g->OH = out.d[1], g->OW = out.d[2];
        spec_kernel(b, i, &g->kh, &g->kw);
        g->stride = spec_size(b, i, "stride", 1), g->pad = spec_size(b, i, "padding", 0);
        g->groups = spec_size(b, i, "groups", 1);
        op->n_ch = g->K, row = g->C / g->groups * g->kh * g->kw;
    } else {
        op->n_ch = kd_shape_numel(&out), row = op->in_features = kd_shape_numel(&in);
    }
    if ((double)row * 255 * 127 > INT32_MAX / 2)
        return refuse(b, i, "has too many inputs per output for an int32 accumulator");
    double *w = malloc(op->n_ch * row * sizeof *w), *bias = calloc(op->n_ch, sizeof *bias);
    if (!w || !bias) return free(w), free(bias), kd_err_set(b->err, KD_EIO, "out of memory");
    const float *wf = tensor(b, i, "weight"), *bf = tensor(b, i, "bias");
    for (size_t k = 0; k < op->n_ch * row; k++) w[k] = wf[k];
    for (size_t k = 0; bf && k < op->n_ch; k++) bias[k] = bf[k];
    size_t v = fold_bn(b, i + 1, w, bias, op->n_ch, row);
    for (size_t u = i + 1; u < v; u++) b->qv[u] = SIZE_MAX;
    finish_out(b, op, v);
    kd_status st = quantize_weights(b, op, w, bias, row);
    free(w), free(bias);
    return st;
}

static void pool_geom(builder *b, size_t i, kd_qop *op, int global) {
    kd_qconv_geom *g = &op->g;
    size_t n_in, src = kd_model_layer_inputs(b->m, i, &n_in)[0];
    kd_shape in = src ? kd_model_layer_out(b->m, src - 1) : b->m->input;
    kd_shape out = kd_model_layer_out(b->m, i);
    g->C = g->K = in.d[0], g->H = in.d[1], g->W = in.d[2], g->groups = 1;
    if (global) {
        g->kh = g->H, g->kw = g->W, g->stride = 1, g->pad = 0, g->OH = g->OW = 1;
        return;
    }
    spec_kernel(b, i, &g->kh, &g->kw);
    g->stride = spec_size(b, i, "stride", g->kh), g->pad = spec_size(b, i, "padding", 0);
    g->OH = out.d[1], g->OW = out.d[2];
}

/* The activations a table holds (p: leaky_relu's slope). */
static double lut_sigmoid(double x, double p) { return (void)p, 1 / (1 + exp(-x)); }
static double lut_tanh(double x, double p) { return (void)p, tanh(x); }
static double lut_gelu(double x, double p) { return (void)p, 0.5 * x * (1 + erf(x / sqrt(2))); }
static double lut_hardswish(double x, double p) { return (void)p, x * fmin(fmax(x + 3, 0), 6) / 6; }
static double lut_leaky(double x, double p) { return x >= 0 ? x : p * x; }

static kd_status build_layer(builder *b, size_t i) {
    const char *type = kd_model_layer_type(b->m, i);
    size_t n_in, src = kd_model_layer_inputs(b->m, i, &n_in)[0];
    if (is(b, i, "dense") || is(b, i, "conv2d")) return build_product(b, i, is(b, i, "conv2d"));
    if (is(b, i, "flatten") || is(b, i, "dropout")) {
        b->qv[i + 1] = b->qv[src];
        return KD_OK;
    }
    if (is(b, i, "maxpool2d")) {
        kd_qop *op = new_op(b, KD_QOP_MAXPOOL, i);
        pool_geom(b, i, op, 0);
        op->out = b->qv[i + 1] = new_value(b, i + 1, &b->q->values[op->in[0]]);
        return KD_OK;
    }
    if (is(b, i, "relu") || is(b, i, "relu6")) { /* one that no producer took */
        kd_qop *op = new_op(b, KD_QOP_CLAMP, i);
        const kd_qvalue *v = &b->q->values[op->in[0]];
        op->out = b->qv[i + 1] = new_value(b, i + 1, v);
        op->o = (kd_qout){v->zp, v->zp, 127};
        if (is(b, i, "relu6")) {
            double hi = v->zp + round(6.0 / v->scale);
            op->o.hi = hi < 127 ? (int32_t)hi : 127;
        }
        return KD_OK;
    }
    if (is(b, i, "avgpool2d") || is(b, i, "global_avgpool")) {
        kd_qop *op = new_op(b, KD_QOP_AVGPOOL, i);
        pool_geom(b, i, op, is(b, i, "global_avgpool"));
        finish_out(b, op, i + 1);
        double m = (double)b->q->values[op->in[0]].scale /
                   ((double)b->q->values[op->out].scale * (double)(op->g.kh * op->g.kw));
        return kd_qmul_from_real(m, &op->m) ? refuse(b, i, "needs a multiplier out of range")
                                            : KD_OK;
    }
    if (is(b, i, "add") || is(b, i, "concat")) {
        int add = is(b, i, "add");
        kd_qop *op = new_op(b, add ? KD_QOP_ADD : KD_QOP_CONCAT, i);
        if (op->n_in > KD_QOP_MAX_IN) return refuse(b, i, "has more than 16 inputs");
        finish_out(b, op, i + 1);
        double s_out = b->q->values[op->out].scale, smax = 0;
        for (size_t k = 0; k < op->n_in; k++) smax = fmax(smax, b->q->values[op->in[k]].scale);
        int bad = 0;
        for (size_t k = 0; k < op->n_in; k++) {
            double s = b->q->values[op->in[k]].scale;
            bad |= kd_qmul_from_real(add ? s / (2 * smax) : s / s_out, &op->m_in[k]);
        }
        if (add) bad |= kd_qmul_from_real(2 * smax / (ldexp(1, KD_QADD_SHIFT) * s_out), &op->m);
        return bad ? refuse(b, i, "needs a multiplier out of range") : KD_OK;
    }
    double (*fn)(double, double) = is(b, i, "sigmoid") ? lut_sigmoid : is(b, i, "tanh") ? lut_tanh
                           : is(b, i, "gelu") ? lut_gelu : is(b, i, "hardswish") ? lut_hardswish
                           : is(b, i, "leaky_relu") ? lut_leaky : NULL;
    if (fn) {
        kd_qop *op = new_op(b, KD_QOP_LUT, i);
        const cJSON *sl = cJSON_GetObjectItemCaseSensitive(spec(b, i), "slope");
        double slope = cJSON_IsNumber(sl) ? (double)(float)sl->valuedouble : (double)0.01f;
        op->out = b->qv[i + 1] = new_value(b, i + 1, NULL);
        const kd_qvalue *vi = &b->q->values[op->in[0]], *vo = &b->q->values[op->out];
        kd_qlut_build(fn, slope, vi->scale, vi->zp, vo->scale, vo->zp, op->lut);
        return KD_OK;
    }
    if (strcmp(type, "batchnorm") == 0)
        return refuse(b, i, "has no integer form: a batch norm is folded only into the conv2d "
                      "or dense layer it solely reads");
    return refuse(b, i, "has no integer form (qint8 takes dense, conv2d, pools, batchnorm after "
                  "conv2d or dense, add, concat, flatten, dropout and the activations but "
                  "layernorm)");
}

/* ---- The whole model ---- */

static kd_status plan(builder *b) {
    size_t L = b->m->n_layers;
    for (size_t i = 0; i < L; i++) {
        size_t n;
        const size_t *ins = kd_model_layer_inputs(b->m, i, &n);
        for (size_t k = 0; k < n; k++) b->n_readers[ins[k]]++, b->reader[ins[k]] = i;
    }
    b->qv[0] = new_value(b, 0, NULL);
    for (size_t i = 0; i < L; i++) {
        if (b->done[i]) continue;
        kd_status st = build_layer(b, i);
        if (st) return st;
    }
    b->q->output = b->qv[L];
    b->q->n_classes = b->m->n_classes;
    return KD_OK;
}

kd_status kd_quant_build(kd_model *m, const float *x, size_t n, kd_qmodel *q, kd_err *err) {
    size_t L = m->n_layers;
    memset(q, 0, sizeof *q);
    builder b = {.m = m, .q = q, .err = err};
    char *arch_text = kd_model_arch_json(m);
    cJSON *arch = arch_text ? cJSON_Parse(arch_text) : NULL;
    free(arch_text);
    b.layers = cJSON_GetObjectItemCaseSensitive(arch, "layers");
    b.r = calloc(L + 1, sizeof *b.r);
    b.n_readers = calloc(L + 1, sizeof *b.n_readers), b.reader = calloc(L + 1, sizeof *b.reader);
    b.qv = calloc(L + 1, sizeof *b.qv), b.done = calloc(L, 1);
    q->values = calloc(L + 1, sizeof *q->values), q->ops = calloc(L, sizeof *q->ops);
    kd_status st = KD_OK;
    if (!b.layers || !b.r || !b.n_readers || !b.reader || !b.qv || !b.done || !q->values ||
        !q->ops)
        st = kd_err_set(err, KD_EIO, "out of memory");
    if (!st && n == 0) st = kd_err_set(err, KD_EUSAGE, "qint8: calibration needs samples");
    if (!st) st = calibrate(m, x, n, b.r, err);
    if (!st) st = plan(&b);
    cJSON_Delete(arch);
    free(b.r), free(b.n_readers), free(b.reader), free(b.qv), free(b.done);
    if (st) kd_qmodel_free(q);
    return st;
}
