/* onnx_qdq.c - a full-integer model (kd_quant.h) as an ONNX QDQ graph (opset 13): every value is
 * a uint8 tensor with its scale and zero point, the int8 value and zero point plus 128 (the same
 * numbers: ONNX Runtime fuses groups with uint8 activations into integer kernels on x86, where
 * it left every int8-activation group unfused); each dense, conv, average pool, add and concat
 * reads DequantizeLinear of its inputs and ends in QuantizeLinear, the weights int8 per output
 * channel (axis 0, zero point 0) and the bias int32 at s_in * s_w, which is the pattern ONNX
 * Runtime fuses into its integer kernels. Max pool and a clamp run on the stored values
 * themselves, and a table activation is the stored table itself (Gather), so those are exact.
 * Float input (the recorded preprocessing inside, then QuantizeLinear), float logits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_quant.h"
#include "onnx_impl.h"

#define T_FLOAT ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT
#define T_INT8 ONNX__TENSOR_PROTO__DATA_TYPE__INT8
#define T_INT32 ONNX__TENSOR_PROTO__DATA_TYPE__INT32
#define T_UINT8 ONNX__TENSOR_PROTO__DATA_TYPE__UINT8
/* An int8 activation q is stored as the uint8 q + 128. */
#define U8(q) ((uint8_t)((int32_t)(q) + 128))

typedef struct {
    kd_onnxw_emitter *em;
    const kd_qmodel *q;
    const char **name;     /* (n_values) each value's (uint8) tensor */
    const char **scale;    /* (n_values) its scale and zero point initializers, made on use */
    const char **zp;
    kd_shape *shape;       /* (n_values) per-sample shape of each value's tensor */
} qdq;

static const kd_shape scalar = {0, {0}};

/* An initializer named "<layer>.<suffix>"; *out its name. */
static kd_status init(qdq *Q, const char *suffix, int32_t type, const kd_shape *shape,
                      const void *bytes, size_t n_bytes, const char **out, kd_err *err) {
    char *name = kd_onnxw_printf(&Q->em->arena, "%s.%s", Q->em->layer, suffix);
    if (!name) return kd_onnxw_oom(err);
    *out = name;
    return kd_onnxw_init(Q->em, name, type, shape, bytes, n_bytes, err);
}

/* The scale and zero point of value v as scalar initializers (once). */
static kd_status qparams(qdq *Q, size_t v, kd_err *err) {
    if (Q->scale[v]) return KD_OK;
    const kd_qvalue *qv = &Q->q->values[v];
    const uint8_t zp = U8(qv->zp);
    char *s = kd_onnxw_printf(&Q->em->arena, "v%zu.scale", v);
    char *z = kd_onnxw_printf(&Q->em->arena, "v%zu.zero_point", v);
    if (!s || !z) return kd_onnxw_oom(err);
    kd_status st = kd_onnxw_init(Q->em, s, T_FLOAT, &scalar, &qv->scale, sizeof qv->scale, err);
    if (!st) st = kd_onnxw_init(Q->em, z, T_UINT8, &scalar, &zp, 1, err);
    Q->scale[v] = s, Q->zp[v] = z;
    return st;
}

/* *out = DequantizeLinear of value v (its tensor t, or v's own when t is NULL). */
static kd_status dq(qdq *Q, size_t v, const char *t, const char **out, kd_err *err) {
    kd_status st = qparams(Q, v, err);
    const char *in[] = {t ? t : Q->name[v], Q->scale[v], Q->zp[v]};
    return st ? st : kd_onnxw_node(Q->em, "DequantizeLinear", in, 3, NULL, 0, NULL, 0, out, err);
}

/* Value v = QuantizeLinear(f), then a Clip where the op's clamp (a folded ReLU or ReLU6) is
 * tighter than int8's range: the reference's clamp after rounding. */
static kd_status quant(qdq *Q, size_t v, const char *f, kd_qout o, kd_err *err) {
    kd_status st = qparams(Q, v, err);
    const char *in[] = {f, Q->scale[v], Q->zp[v]};
    if (!st) st = kd_onnxw_node(Q->em, "QuantizeLinear", in, 3, NULL, 0, NULL, 0, &Q->name[v], err);
    if (st || (o.lo <= -128 && o.hi >= 127)) return st;
    const uint8_t lo = U8(o.lo), hi = U8(o.hi);
    const char *lname = NULL, *hname = NULL;
    if ((st = init(Q, "clip_lo", T_UINT8, &scalar, &lo, 1, &lname, err)) ||
        (st = init(Q, "clip_hi", T_UINT8, &scalar, &hi, 1, &hname, err)))
        return st;
    const char *cin[] = {Q->name[v], lname, hname};
    return kd_onnxw_node(Q->em, "Clip", cin, 3, NULL, 0, NULL, 0, &Q->name[v], err);
}

/* The int8 weights of a dense or conv op (shape w_shape) and its int32 bias, dequantized per
 * output channel: s_w[k] is the multiplier times s_out / s_in (the stored multiplier is
 * s_in s_w / s_out to 31 bits), the bias's scale s_in s_w[k]. */
static kd_status weights(qdq *Q, const kd_qop *op, const kd_shape *w_shape, const char **w_f,
                         const char **b_f, kd_err *err) {
    const size_t K = op->n_ch, numel = kd_shape_numel(w_shape);
    const double s_in = Q->q->values[op->in[0]].scale, s_out = Q->q->values[op->out].scale;
    const kd_shape k_shape = {1, {K}};
    float *sw = kd_onnxw_alloc(&Q->em->arena, K * sizeof *sw);
    float *sb = kd_onnxw_alloc(&Q->em->arena, K * sizeof *sb);
    int32_t *zeros = kd_onnxw_alloc(&Q->em->arena, K * sizeof *zeros); /* int8 or int32 zeros */
    if (!sw || !sb || !zeros) return kd_onnxw_oom(err);
    for (size_t k = 0; k < K; k++) {
        double m = ldexp((double)op->mult[k].mult, op->mult[k].shift - 31);
        sw[k] = (float)(m * s_out / s_in);
        sb[k] = (float)(s_in * sw[k]);
    }
    const char *w = NULL, *ws = NULL, *wz = NULL, *b = NULL, *bs = NULL, *bz = NULL;
    const kd_onnx_attr axis = KD_ONNX_INT("axis", 0);
    kd_status st;
    if ((st = init(Q, "weight", T_INT8, w_shape, op->w, numel, &w, err)) ||
        (st = init(Q, "weight_scale", T_FLOAT, &k_shape, sw, K * sizeof *sw, &ws, err)) ||
        (st = init(Q, "weight_zero_point", T_INT8, &k_shape, zeros, K, &wz, err)) ||
        (st = init(Q, "bias", T_INT32, &k_shape, op->bias, K * sizeof *op->bias, &b, err)) ||
        (st = init(Q, "bias_scale", T_FLOAT, &k_shape, sb, K * sizeof *sb, &bs, err)) ||
        (st = init(Q, "bias_zero_point", T_INT32, &k_shape, zeros, K * sizeof *zeros, &bz, err)) ||
        (st = kd_onnxw_node(Q->em, "DequantizeLinear", (const char *[]){w, ws, wz}, 3, &axis, 1,
                            NULL, 0, w_f, err)))
        return st;
    return kd_onnxw_node(Q->em, "DequantizeLinear", (const char *[]){b, bs, bz}, 3, &axis, 1,
                         NULL, 0, b_f, err);
}

/* Value v's tensor as [N, C, H, W] for a convolution or pool of geometry g: a flat value of
 * that size is reshaped (exact). */
static kd_status as_image(qdq *Q, size_t v, const kd_qconv_geom *g, const char **out,
                          kd_err *err) {
    const kd_shape *s = &Q->shape[v];
    *out = Q->name[v];
    if (s->rank == 3 && s->d[0] == g->C && s->d[1] == g->H && s->d[2] == g->W) return KD_OK;
    const int64_t dims[] = {-1, (int64_t)g->C, (int64_t)g->H, (int64_t)g->W};
    const kd_shape four = {1, {4}};
    const char *dname = NULL;
    kd_status st = init(Q, "image_shape", ONNX__TENSOR_PROTO__DATA_TYPE__INT64, &four, dims,
                        sizeof dims, &dname, err);
    return st ? st : kd_onnxw_node(Q->em, "Reshape", (const char *[]){Q->name[v], dname}, 2,
                                   NULL, 0, NULL, 0, out, err);
}

/* Value v's tensor as [N, features]: a [C, H, W] value is flattened (exact). */
static kd_status as_rows(qdq *Q, size_t v, const char **out, kd_err *err) {
    const kd_onnx_attr axis1 = KD_ONNX_INT("axis", 1);
    *out = Q->name[v];
    if (Q->shape[v].rank <= 1) return KD_OK;
    return kd_onnxw_node(Q->em, "Flatten", &Q->name[v], 1, &axis1, 1, NULL, 0, out, err);
}

/* The window attributes of a conv or pool: kernel_shape, strides, pads. */
static void window(const kd_qconv_geom *g, kd_onnx_attr a[3]) {
    const int64_t p = (int64_t)g->pad, s = (int64_t)g->stride;
    a[0] = KD_ONNX_INTS2("kernel_shape", (int64_t)g->kh, (int64_t)g->kw);
    a[1] = KD_ONNX_INTS2("strides", s, s);
    a[2] = KD_ONNX_INTS4("pads", p, p, p, p);
}

static kd_status emit_dense(qdq *Q, const kd_qop *op, kd_err *err) {
    const kd_shape w_shape = {2, {op->n_ch, op->in_features}};
    const char *x = NULL, *xf = NULL, *wf = NULL, *bf = NULL, *y = NULL;
    const kd_onnx_attr tb = KD_ONNX_INT("transB", 1);
    kd_status st;
    if ((st = as_rows(Q, op->in[0], &x, err)) || (st = dq(Q, op->in[0], x, &xf, err)) ||
        (st = weights(Q, op, &w_shape, &wf, &bf, err)) ||
        (st = kd_onnxw_node(Q->em, "Gemm", (const char *[]){xf, wf, bf}, 3, &tb, 1, NULL, 0, &y,
                            err)))
        return st;
    Q->shape[op->out] = (kd_shape){1, {op->n_ch}};
    return quant(Q, op->out, y, op->o, err);
}

static kd_status emit_conv(qdq *Q, const kd_qop *op, kd_err *err) {
    const kd_qconv_geom *g = &op->g;
    const kd_shape w_shape = {4, {g->K, g->C / g->groups, g->kh, g->kw}};
    kd_onnx_attr a[4];
    window(g, a);
    a[3] = KD_ONNX_INT("group", (int64_t)g->groups);
    const char *x = NULL, *xf = NULL, *wf = NULL, *bf = NULL, *y = NULL;
    kd_status st;
    if ((st = as_image(Q, op->in[0], g, &x, err)) || (st = dq(Q, op->in[0], x, &xf, err)) ||
        (st = weights(Q, op, &w_shape, &wf, &bf, err)) ||
        (st = kd_onnxw_node(Q->em, "Conv", (const char *[]){xf, wf, bf}, 3, a, 4, NULL, 0, &y,
                            err)))
        return st;
    Q->shape[op->out] = (kd_shape){3, {g->K, g->OH, g->OW}};
    return quant(Q, op->out, y, op->o, err);
}

/* Max pool on the stored values (same scale in and out: exact); average pool between DQ and Q
 * with padding counted (count_include_pad, as distill's pool). */
static kd_status emit_pool(qdq *Q, const kd_qop *op, kd_err *err) {
    const kd_qconv_geom *g = &op->g;
    kd_onnx_attr a[4];
    window(g, a);
    a[3] = KD_ONNX_INT("count_include_pad", 1);
    const char *x = NULL, *xf = NULL, *y = NULL;
    kd_status st = as_image(Q, op->in[0], g, &x, err);
    if (st) return st;
    Q->shape[op->out] = (kd_shape){3, {g->C, g->OH, g->OW}};
    if (op->kind == KD_QOP_MAXPOOL)
        return kd_onnxw_node(Q->em, "MaxPool", &x, 1, a, 3, NULL, 0, &Q->name[op->out], err);
    if ((st = dq(Q, op->in[0], x, &xf, err)) ||
        (st = kd_onnxw_node(Q->em, "AveragePool", &xf, 1, a, 4, NULL, 0, &y, err)))
        return st;
    return quant(Q, op->out, y, op->o, err);
}

/* add: the dequantized inputs summed; concat: joined along the channels (axis 1). */
static kd_status emit_merge(qdq *Q, const kd_qop *op, kd_err *err) {
    const char *f[KD_QOP_MAX_IN], *y = NULL;
    const kd_onnx_attr axis1 = KD_ONNX_INT("axis", 1);
    kd_shape *out = &Q->shape[op->out];
    *out = Q->shape[op->in[0]];
    kd_status st = KD_OK;
    for (size_t k = 0; k < op->n_in && !st; k++) st = dq(Q, op->in[k], NULL, &f[k], err);
    for (size_t k = 1; op->kind == KD_QOP_CONCAT && k < op->n_in; k++)
        out->d[0] += Q->shape[op->in[k]].d[0];
    if (st) return st;
    if (op->kind == KD_QOP_CONCAT) {
        st = kd_onnxw_node(Q->em, "Concat", f, op->n_in, &axis1, 1, NULL, 0, &y, err);
    } else {
        y = f[0];
        for (size_t k = 1; k < op->n_in && !st; k++)
            st = kd_onnxw_node(Q->em, "Add", (const char *[]){y, f[k]}, 2, NULL, 0, NULL, 0, &y,
                               err);
    }
    return st ? st : quant(Q, op->out, y, op->o, err);
}

/* A clamp on the stored values (same scale in and out); a table activation as the stored table
 * indexed by the stored byte, x + 128 (Gather at the input widened to int32). Both exact. */
static kd_status emit_elementwise(qdq *Q, const kd_qop *op, kd_err *err) {
    const size_t v = op->in[0];
    Q->shape[op->out] = Q->shape[v];
    kd_status st;
    if (op->kind == KD_QOP_CLAMP) {
        const uint8_t lo = U8(op->o.lo), hi = U8(op->o.hi);
        const char *l = NULL, *h = NULL;
        if ((st = init(Q, "clip_lo", T_UINT8, &scalar, &lo, 1, &l, err)) ||
            (st = init(Q, "clip_hi", T_UINT8, &scalar, &hi, 1, &h, err)))
            return st;
        return kd_onnxw_node(Q->em, "Clip", (const char *[]){Q->name[v], l, h}, 3, NULL, 0,
                             NULL, 0, &Q->name[op->out], err);
    }
    /* Entry u (the stored byte of q = u - 128) holds the stored byte of table[(uint8_t)q]. */
    uint8_t table[256];
    for (int u = 0; u < 256; u++) table[u] = U8(op->lut[(uint8_t)(int8_t)(u - 128)]);
    const kd_shape t_shape = {1, {256}};
    const kd_onnx_attr to = KD_ONNX_INT("to", T_INT32), axis0 = KD_ONNX_INT("axis", 0);
    const char *t = NULL, *idx = NULL;
    if ((st = init(Q, "table", T_UINT8, &t_shape, table, sizeof table, &t, err)) ||
        (st = kd_onnxw_node(Q->em, "Cast", &Q->name[v], 1, &to, 1, NULL, 0, &idx, err)))
        return st;
    return kd_onnxw_node(Q->em, "Gather", (const char *[]){t, idx}, 2, &axis0, 1, NULL, 0,
                         &Q->name[op->out], err);
}

/* Each op's nodes are named after its layer, or "<layer>#<i>" when an earlier op has it. */
static void begin_op(qdq *Q, size_t i) {
    const char *name = Q->q->ops[i].name;
    int again = 0;
    for (size_t j = 0; j < i && !again; j++) again = !strcmp(Q->q->ops[j].name, name);
    char buf[KD_LAYER_NAME_MAX + 24];
    if (again) snprintf(buf, sizeof buf, "%s#%zu", name, i);
    kd_onnxw_begin_layer(Q->em, again ? buf : name);
}

static kd_status emit_op(qdq *Q, const kd_qop *op, kd_err *err) {
    switch (op->kind) {
    case KD_QOP_DENSE: return emit_dense(Q, op, err);
    case KD_QOP_CONV: return emit_conv(Q, op, err);
    case KD_QOP_MAXPOOL:
    case KD_QOP_AVGPOOL: return emit_pool(Q, op, err);
    case KD_QOP_ADD:
    case KD_QOP_CONCAT: return emit_merge(Q, op, err);
    case KD_QOP_CLAMP:
    case KD_QOP_LUT: return emit_elementwise(Q, op, err);
    }
    return kd_err_set(err, KD_EIO, "ONNX export: op %s of an unknown kind", op->name);
}

/* The graph: preprocessing, QuantizeLinear into value 0, every op, then "logits" (the output
 * value dequantized, [N, classes]) and "probabilities". */
static kd_status build_graph(qdq *Q, const kd_shape *input, const kd_export_info *info,
                             kd_err *err) {
    kd_export_pre pre;
    kd_onnxw_emitter *em = Q->em;
    kd_status st = kd_export_pre_init(&pre, info->pp, input, err);
    if (st) return st;
    em->current = "input";
    kd_onnxw_begin_layer(em, "preprocess");
    st = kd_onnxw_preprocess(em, input, &pre, err);
    kd_export_pre_free(&pre);
    Q->shape[0] = *input;
    if (!st) st = quant(Q, 0, em->current, (kd_qout){0, -128, 127}, err);
    for (size_t i = 0; i < Q->q->n_ops && !st; i++) {
        begin_op(Q, i);
        st = emit_op(Q, &Q->q->ops[i], err);
    }
    const char *x = NULL, *f = NULL;
    kd_onnxw_begin_layer(em, "output");
    if (!st) st = as_rows(Q, Q->q->output, &x, err);
    if (!st) st = dq(Q, Q->q->output, x, &f, err);
    const kd_onnx_attr axis1 = KD_ONNX_INT("axis", 1);
    if (!st) st = kd_onnxw_node(em, "Identity", &f, 1, NULL, 0, "logits", 1, NULL, err);
    if (!st)
        st = kd_onnxw_node(em, "Softmax", &em->current, 1, &axis1, 1, "probabilities", 1, NULL,
                           err);
    return st;
}

/* Geometry ONNX's windows compute the same way: floor((H + 2 pad - k) / stride) + 1. */
static kd_status check_ops(const kd_qmodel *q, const char *path, kd_err *err) {
    for (size_t i = 0; i < q->n_ops; i++) {
        const kd_qop *op = &q->ops[i];
        const kd_qconv_geom *g = &op->g;
        int windowed = op->kind == KD_QOP_CONV || op->kind == KD_QOP_MAXPOOL ||
                       op->kind == KD_QOP_AVGPOOL;
        if (windowed && (!g->stride || g->H + 2 * g->pad < g->kh || g->W + 2 * g->pad < g->kw ||
                         g->OH != (g->H + 2 * g->pad - g->kh) / g->stride + 1 ||
                         g->OW != (g->W + 2 * g->pad - g->kw) / g->stride + 1))
            return kd_err_set(err, KD_EUSAGE, "%s: op %zu (layer %s): a window whose output "
                              "size ONNX does not compute the same way", path, i, op->name);
    }
    return KD_OK;
}

kd_status kd_export_onnx_qint8(const char *path, const kd_qmodel *q, const kd_shape *input,
                               const kd_export_info *info, kd_err *err) {
    kd_onnxw_emitter em;
    kd_onnxw_emitter_init(&em, kd_export_codec(NULL));
    qdq Q = {&em, q, calloc(q->n_values, sizeof *Q.name), calloc(q->n_values, sizeof *Q.scale),
             calloc(q->n_values, sizeof *Q.zp), calloc(q->n_values, sizeof *Q.shape)};
    kd_status st = KD_OK;
    if (!Q.name || !Q.scale || !Q.zp || !Q.shape) {
        st = kd_onnxw_oom(err);
        goto cleanup;
    }
    if (kd_shape_numel(input) != q->values[0].numel) {
        st = kd_err_set(err, KD_EINPUT, "%s: the input shape does not hold the model's %zu "
                        "input values", path, q->values[0].numel);
        goto cleanup;
    }
    if ((st = check_ops(q, path, err)) || (st = build_graph(&Q, input, info, err))) goto cleanup;
    char doc[256];
    snprintf(doc, sizeof doc, "full-integer (qint8) QDQ model, %zu integer ops; input: the raw "
             "sample, preprocessing inside", q->n_ops);
    st = kd_onnxw_write_model(&em, path, input, q->values[q->output].numel, doc, info, "qint8",
                              "QDQ: int8 weights symmetric per output channel (axis 0), int8 "
                              "activations asymmetric per tensor stored as uint8 (value and zero "
                              "point + 128), int32 bias at s_in * s_w",
                              err);
cleanup:
    free(Q.name), free(Q.scale), free(Q.zp), free(Q.shape);
    kd_onnxw_free(&em);
    return st;
}
