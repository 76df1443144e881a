/* read.c - reads a qint8 file (file.c writes it) into a kd_qmodel, trusting nothing: every value
 * index must name a value already computed, every size must agree with the op's geometry and
 * its tensors' shapes, every zero point, clamp, weight and multiplier must be in its range, and
 * no accumulator may overflow int32. Each refusal is KD_EINPUT naming the file and the op. */
#include <cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_quant.h"

#define QR_MAX_VALUES 100000
#define QR_MAX_DIM ((long long)1 << 24)
#define QR_MAX_NUMEL ((size_t)1 << 28)
#define QR_ACC_LIMIT ((long long)1 << 30) /* |bias| and the product sum each stay below */

typedef struct {
    const kd_st_file *f;
    kd_qmodel *q;
    unsigned char *made;  /* per value: computed by the input or an earlier op */
    size_t op;            /* the op being read, for messages */
    const char *layer;
    kd_err *err;
} reader;

static kd_status bad(reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static kd_status bad(reader *r, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (r->layer)
        return kd_err_set(r->err, KD_EINPUT, "%s: qint8 op %zu (layer %s): %s", r->f->path, r->op,
                          r->layer, what);
    return kd_err_set(r->err, KD_EINPUT, "%s: qint8: %s", r->f->path, what);
}

/* n integers of the array `key` of o into v, each in [lo, hi]. */
static kd_status ints(reader *r, const cJSON *o, const char *key, long long *v, size_t n,
                      long long lo, long long hi) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsArray(a) || (size_t)cJSON_GetArraySize(a) != n)
        return bad(r, "\"%s\": expected an array of %zu integers", key, n);
    size_t i = 0;
    for (const cJSON *e = a->child; e; e = e->next, i++) {
        double x = cJSON_IsNumber(e) ? e->valuedouble : NAN;
        if (!(x == floor(x) && x >= (double)lo && x <= (double)hi))
            return bad(r, "\"%s\"[%zu]: expected an integer in [%lld, %lld]", key, i, lo, hi);
        v[i] = (long long)x;
    }
    return KD_OK;
}

/* The tensor <layer>.<suffix> with this dtype and shape, or an error. */
static const kd_st_tensor *tensor(reader *r, const char *suffix, kd_dtype dt, size_t d0,
                                  size_t d1) {
    char name[KD_LAYER_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s.%s", r->layer, suffix);
    const kd_st_tensor *t = kd_st_find(r->f, name);
    int rank = d1 ? 2 : 1;
    if (!t || t->dtype != dt || t->rank != rank || t->shape[0] != d0 || (d1 && t->shape[1] != d1)) {
        char want[64];
        snprintf(want, sizeof want, d1 ? "[%zu, %zu]" : "[%zu]", d0, d1);
        bad(r, "tensor %s: expected %s %s", name, kd_dtype_name(dt), want);
        return NULL;
    }
    return t;
}

static kd_status check_mul(reader *r, kd_qmul m, const char *what) {
    return kd_qmul_check(m) ? bad(r, "%s: multiplier %d, shift %d outside [2^30, 2^31) x "
                                  "2^[-31, 30]", what, m.mult, m.shift)
                            : KD_OK;
}

/* Weights, bias and per-channel multipliers of a dense or conv op with rows of `row` values. */
static kd_status read_channels(reader *r, kd_qop *op, size_t row) {
    if ((long long)row * 255 * 127 >= QR_ACC_LIMIT)
        return bad(r, "%zu inputs per output could overflow the int32 accumulator", row);
    const kd_st_tensor *w = tensor(r, "weight", KD_DT_I8, op->n_ch, row);
    const kd_st_tensor *b = w ? tensor(r, "bias", KD_DT_I32, op->n_ch, 0) : NULL;
    const kd_st_tensor *m = b ? tensor(r, "multiplier", KD_DT_I32, op->n_ch, 0) : NULL;
    const kd_st_tensor *s = m ? tensor(r, "shift", KD_DT_I32, op->n_ch, 0) : NULL;
    if (!s) return KD_EINPUT;
    op->w = malloc(op->n_ch * row), op->bias = malloc(op->n_ch * sizeof *op->bias);
    op->mult = malloc(op->n_ch * sizeof *op->mult);
    if (!op->w || !op->bias || !op->mult) return kd_err_set(r->err, KD_EIO, "out of memory");
    memcpy(op->w, w->data, op->n_ch * row);
    for (size_t i = 0; i < op->n_ch * row; i++)
        if (op->w[i] == -128) return bad(r, "weight %zu is -128 (weights are in [-127, 127])", i);
    for (size_t k = 0; k < op->n_ch; k++) {
        int32_t bias, mult, shift;
        memcpy(&bias, b->data + 4 * k, 4), memcpy(&mult, m->data + 4 * k, 4);
        memcpy(&shift, s->data + 4 * k, 4);
        if (llabs((long long)bias) >= QR_ACC_LIMIT)
            return bad(r, "bias of channel %zu is %d (|bias| < 2^30)", k, bias);
        op->bias[k] = bias, op->mult[k] = (kd_qmul){mult, shift};
        char what[2 * KD_LAYER_NAME_MAX + 64]; /* the tensors by name, as info lists them */
        snprintf(what, sizeof what, "tensors %s.multiplier and %s.shift, channel %zu", r->layer,
                 r->layer, k);
        if (check_mul(r, op->mult[k], what)) return KD_EINPUT;
    }
    return KD_OK;
}

/* Geometry of conv and pools: every size positive, the output size the one the input, kernel,
 * stride and padding give, and numel(in) / numel(out) as the values say. */
static kd_status read_geom(reader *r, kd_qop *op, const long long *g, size_t in_n, size_t out_n) {
    kd_qconv_geom *G = &op->g;
    size_t *f[] = {&G->C, &G->H, &G->W, &G->K, &G->kh, &G->kw, &G->stride, &G->pad, &G->groups,
                   &G->OH, &G->OW};
    for (int i = 0; i < 11; i++) *f[i] = (size_t)g[i];
    if (!G->C || !G->H || !G->W || !G->K || !G->kh || !G->kw || !G->stride || !G->groups ||
        G->C % G->groups || G->K % G->groups || G->pad >= G->kh || G->pad >= G->kw ||
        G->H + 2 * G->pad < G->kh || G->W + 2 * G->pad < G->kw ||
        G->OH != (G->H + 2 * G->pad - G->kh) / G->stride + 1 ||
        G->OW != (G->W + 2 * G->pad - G->kw) / G->stride + 1)
        return bad(r, "inconsistent geometry");
    if (G->C * G->H * G->W != in_n || G->K * G->OH * G->OW != out_n)
        return bad(r, "geometry gives %zu inputs and %zu outputs per sample, the values hold "
                   "%zu and %zu", G->C * G->H * G->W, G->K * G->OH * G->OW, in_n, out_n);
    return KD_OK;
}

static kd_status read_kind(reader *r, kd_qop *op, const long long *geom, const long long *sizes) {
    const kd_qvalue *V = r->q->values;
    size_t in_n = V[op->in[0]].numel, out_n = V[op->out].numel, sum = 0;
    int one_in = op->kind != KD_QOP_ADD && op->kind != KD_QOP_CONCAT;
    if (one_in ? op->n_in != 1 : op->n_in < 2)
        return bad(r, "%zu inputs (expected %s)", op->n_in, one_in ? "1" : "2 or more");
    switch (op->kind) {
    case KD_QOP_DENSE:
        op->n_ch = (size_t)sizes[0], op->in_features = (size_t)sizes[1];
        if (op->n_ch != out_n || op->in_features != in_n)
            return bad(r, "dense of %zu -> %zu on values of %zu -> %zu", op->in_features,
                       op->n_ch, in_n, out_n);
        return read_channels(r, op, in_n);
    case KD_QOP_CONV:
        if (read_geom(r, op, geom, in_n, out_n)) return KD_EINPUT;
        op->n_ch = op->g.K;
        return read_channels(r, op, op->g.C / op->g.groups * op->g.kh * op->g.kw);
    case KD_QOP_MAXPOOL:
    case KD_QOP_AVGPOOL:
        if (geom[0] != geom[3] || geom[8] != 1) return bad(r, "a pool keeps its channels");
        if (read_geom(r, op, geom, in_n, out_n)) return KD_EINPUT;
        return op->kind == KD_QOP_AVGPOOL ? check_mul(r, op->m, "m") : KD_OK;
    case KD_QOP_ADD:
        for (size_t k = 0; k < op->n_in; k++)
            if (V[op->in[k]].numel != out_n) return bad(r, "input %zu's size differs", k);
        return check_mul(r, op->m, "m");
    case KD_QOP_CONCAT:
        for (size_t k = 0; k < op->n_in; k++) sum += V[op->in[k]].numel;
        return sum == out_n ? KD_OK : bad(r, "inputs of %zu values in all, output %zu", sum, out_n);
    case KD_QOP_CLAMP: return in_n == out_n ? KD_OK : bad(r, "sizes differ");
    case KD_QOP_LUT: {
        const kd_st_tensor *t = in_n == out_n ? tensor(r, "table", KD_DT_I8, 256, 0) : NULL;
        if (t) memcpy(op->lut, t->data, 256);
        return t ? KD_OK : in_n == out_n ? KD_EINPUT : bad(r, "sizes differ");
    }
    }
    return bad(r, "unknown op");
}

static kd_status read_op(reader *r, const cJSON *o, kd_qop *op) {
    static const char *const kinds[] = {"dense", "conv2d", "maxpool", "avgpool", "add", "concat",
                                        "clamp", "table"};
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(o, "op");
    const cJSON *layer = cJSON_GetObjectItemCaseSensitive(o, "layer");
    if (!cJSON_IsString(layer) || !layer->valuestring[0] ||
        strlen(layer->valuestring) >= sizeof op->name)
        return bad(r, "\"layer\": expected a layer name");
    snprintf(op->name, sizeof op->name, "%s", layer->valuestring);
    r->layer = op->name;
    size_t k = 0;
    while (k < 8 && !(cJSON_IsString(kind) && strcmp(kind->valuestring, kinds[k]) == 0)) k++;
    if (k == 8) return bad(r, "\"op\": expected one of dense, conv2d, maxpool, avgpool, add, "
                           "concat, clamp, table");
    op->kind = (kd_qop_kind)k;
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(o, "in");
    long long v[2 * KD_QOP_MAX_IN], n_values = (long long)r->q->n_values;
    op->n_in = cJSON_IsArray(in) ? (size_t)cJSON_GetArraySize(in) : 0;
    if (op->n_in < 1 || op->n_in > KD_QOP_MAX_IN) return bad(r, "\"in\": expected 1 to 16 values");
    if (ints(r, o, "in", v, op->n_in, 0, n_values - 1)) return KD_EINPUT;
    for (size_t i = 0; i < op->n_in; i++)
        if (!r->made[op->in[i] = (size_t)v[i]]) return bad(r, "reads value %lld before it is made", v[i]);
    if (ints(r, o, "out_zp_lo_hi", v, 3, -128, 127)) return KD_EINPUT;
    op->o = (kd_qout){(int32_t)v[0], (int32_t)v[1], (int32_t)v[2]};
    if (op->o.lo > op->o.hi) return bad(r, "clamp [%d, %d] is empty", op->o.lo, op->o.hi);
    const cJSON *out = cJSON_GetObjectItemCaseSensitive(o, "out");
    double x = cJSON_IsNumber(out) ? out->valuedouble : -1;
    if (!(x == floor(x) && x >= 1 && x < (double)n_values) || r->made[(size_t)x])
        return bad(r, "\"out\": expected a value not yet made, below %lld", n_values);
    r->made[op->out = (size_t)x] = 1;
    long long geom[11], sizes[2], m[2];
    if (ints(r, o, "geom", geom, 11, 0, QR_MAX_DIM) ||
        ints(r, o, "channels_in_features", sizes, 2, 0, (long long)QR_MAX_NUMEL) ||
        ints(r, o, "m", m, 2, INT32_MIN, INT32_MAX) ||
        ints(r, o, "m_in", v, 2 * op->n_in, INT32_MIN, INT32_MAX))
        return KD_EINPUT;
    op->m = (kd_qmul){(int32_t)m[0], (int)m[1]};
    for (size_t i = 0; i < op->n_in; i++) {
        op->m_in[i] = (kd_qmul){(int32_t)v[2 * i], (int)v[2 * i + 1]};
        if ((op->kind == KD_QOP_ADD || op->kind == KD_QOP_CONCAT) && check_mul(r, op->m_in[i], "m_in"))
            return KD_EINPUT;
    }
    return read_kind(r, op, geom, sizes);
}

/* The values: sizes from the metadata, scale and zero point from their tensors. */
static kd_status read_values(reader *r) {
    const char *text = kd_st_meta(r->f, "qint8_values");
    cJSON *a = text ? cJSON_Parse(text) : NULL;
    kd_status st = KD_OK;
    int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : 0;
    if (n < 1 || n > QR_MAX_VALUES) st = bad(r, "\"qint8_values\": expected 1 to %d sizes", QR_MAX_VALUES);
    kd_qmodel *q = r->q;
    if (!st && (!(q->values = calloc((size_t)n, sizeof *q->values)) ||
                !(r->made = calloc((size_t)n, 1)) || !(q->ops = calloc((size_t)n, sizeof *q->ops))))
        st = kd_err_set(r->err, KD_EIO, "out of memory");
    const kd_st_tensor *s = kd_st_find(r->f, "qint8.scale"), *z = kd_st_find(r->f, "qint8.zero_point");
    if (!st && (!s || s->dtype != KD_DT_F32 || s->rank != 1 || s->shape[0] != (uint64_t)n ||
                !z || z->dtype != KD_DT_I32 || z->rank != 1 || z->shape[0] != (uint64_t)n))
        st = bad(r, "expected tensors qint8.scale F32 [%d] and qint8.zero_point I32 [%d]", n, n);
    q->n_values = st ? 0 : (size_t)n;
    for (size_t v = 0; !st && v < q->n_values; v++) {
        const cJSON *e = cJSON_GetArrayItem(a, (int)v);
        double numel = cJSON_IsNumber(e) ? e->valuedouble : 0;
        memcpy(&q->values[v].scale, s->data + 4 * v, 4), memcpy(&q->values[v].zp, z->data + 4 * v, 4);
        const int in_range = numel == floor(numel) && numel >= 1 && numel <= (double)QR_MAX_NUMEL;
        /* converted only inside the range: a negative or huge double has no size_t */
        q->values[v].numel = in_range ? (size_t)numel : 0;
        if (!in_range)
            st = bad(r, "value %zu: size %g outside [1, 2^28]", v, numel);
        else if (!(isfinite(q->values[v].scale) && q->values[v].scale > 0))
            st = bad(r, "tensor qint8.scale, value %zu: scale %g (expected a finite number > 0)", v,
                     q->values[v].scale);
        else if (q->values[v].zp < -128 || q->values[v].zp > 127)
            st = bad(r, "tensor qint8.zero_point, value %zu: zero point %d outside [-128, 127]", v,
                     q->values[v].zp);
    }
    cJSON_Delete(a);
    return st;
}

kd_status kd_qmodel_read(const kd_st_file *f, kd_qmodel *q, kd_err *err) {
    memset(q, 0, sizeof *q);
    reader r = {.f = f, .q = q, .err = err};
    kd_status st = read_values(&r);
    const char *text = kd_st_meta(f, "qint8_ops"), *out = kd_st_meta(f, "qint8_output");
    cJSON *ops = !st && text ? cJSON_Parse(text) : NULL;
    if (!st && (!cJSON_IsArray(ops) || cJSON_GetArraySize(ops) < 1 ||
                (size_t)cJSON_GetArraySize(ops) >= q->n_values))
        st = bad(&r, "\"qint8_ops\": expected 1 to %zu ops", q->n_values ? q->n_values - 1 : 0);
    if (!st) r.made[0] = 1;
    for (const cJSON *o = ops ? ops->child : NULL; !st && o; o = o->next) {
        r.op = q->n_ops++; /* counted first, so kd_qmodel_free frees what a failed op took */
        st = read_op(&r, o, &q->ops[r.op]);
    }
    r.layer = NULL;
    char *end = NULL;
    unsigned long long k = out ? strtoull(out, &end, 10) : 0;
    if (!st && (!out || !*out || *end || k >= q->n_values || !r.made[k] || k == 0))
        st = bad(&r, "\"qint8_output\": expected the index of a value an op makes");
    if (!st) q->output = (size_t)k, q->n_classes = q->values[k].numel;
    cJSON_Delete(ops);
    free(r.made);
    if (st) kd_qmodel_free(q);
    return st;
}
