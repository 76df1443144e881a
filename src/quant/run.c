/* run.c - the integer reference of a full-integer model: quantize the (preprocessed) input with
 * its scale and zero point, run every op with the integer kernels, dequantize the logits. Float
 * appears only at those two ends. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_quant.h"

int8_t kd_quant_value(float r, const kd_qvalue *v) {
    double q = round((double)r / v->scale) + v->zp; /* halves away from zero */
    return (int8_t)(q < -128 ? -128 : q > 127 ? 127 : q);
}

void kd_qmodel_free(kd_qmodel *q) {
    if (!q) return;
    for (size_t i = 0; q->ops && i < q->n_ops; i++)
        free(q->ops[i].w), free(q->ops[i].bias), free(q->ops[i].mult);
    for (size_t v = 0; q->buf && v < q->n_values; v++) free(q->buf[v]);
    free(q->ops), free(q->values), free(q->buf);
    memset(q, 0, sizeof *q);
}

kd_status kd_qmodel_reserve(kd_qmodel *q, size_t B, kd_err *err) {
    if (B <= q->batch_cap) return KD_OK;
    if (!q->buf && !(q->buf = calloc(q->n_values, sizeof *q->buf)))
        return kd_err_set(err, KD_EIO, "out of memory");
    for (size_t v = 0; v < q->n_values; v++) {
        int8_t *p = realloc(q->buf[v], B * q->values[v].numel);
        if (!p) return kd_err_set(err, KD_EIO, "out of memory");
        q->buf[v] = p;
    }
    q->batch_cap = B;
    return KD_OK;
}

/* concat along the first per-sample axis: each sample's block is the inputs' blocks in order. */
static void run_concat(kd_qmodel *q, const kd_qop *op, size_t B) {
    size_t out_n = q->values[op->out].numel;
    for (size_t b = 0; b < B; b++) {
        size_t off = 0;
        for (size_t k = 0; k < op->n_in; k++) {
            const kd_qvalue *v = &q->values[op->in[k]];
            kd_qrescale(q->buf[op->in[k]] + b * v->numel, v->zp, op->m_in[k], op->o, v->numel,
                        q->buf[op->out] + b * out_n + off);
            off += v->numel;
        }
    }
}

static void run_op(kd_qmodel *q, const kd_qop *op, size_t B) {
    const int8_t *x = q->buf[op->in[0]];
    int8_t *y = q->buf[op->out];
    int32_t zp = q->values[op->in[0]].zp;
    size_t n = B * q->values[op->out].numel;
    switch (op->kind) {
    case KD_QOP_DENSE:
        kd_qdense(x, zp, op->w, op->bias, op->mult, op->o, B, op->in_features, op->n_ch, y);
        break;
    case KD_QOP_CONV: kd_qconv2d(x, zp, op->w, op->bias, op->mult, op->o, &op->g, B, y); break;
    case KD_QOP_MAXPOOL: kd_qmaxpool(x, &op->g, B, y); break;
    case KD_QOP_AVGPOOL: kd_qavgpool(x, zp, op->m, op->o, &op->g, B, y); break;
    case KD_QOP_ADD: {
        const int8_t *xs[KD_QOP_MAX_IN];
        int32_t zps[KD_QOP_MAX_IN];
        for (size_t k = 0; k < op->n_in; k++)
            xs[k] = q->buf[op->in[k]], zps[k] = q->values[op->in[k]].zp;
        kd_qadd(xs, zps, op->m_in, op->n_in, op->m, op->o, n, y);
        break;
    }
    case KD_QOP_CONCAT: run_concat(q, op, B); break;
    case KD_QOP_CLAMP:
        for (size_t i = 0; i < n; i++)
            y[i] = (int8_t)(x[i] < op->o.lo ? op->o.lo : x[i] > op->o.hi ? op->o.hi : x[i]);
        break;
    case KD_QOP_LUT: kd_qlut_apply(op->lut, x, n, y); break;
    }
}

kd_status kd_qmodel_forward(kd_qmodel *q, const float *x, size_t B, int8_t *logits_q,
                            float *logits, kd_err *err) {
    kd_status st = kd_qmodel_reserve(q, B, err);
    if (st) return st;
    const kd_qvalue *in = &q->values[0], *out = &q->values[q->output];
    for (size_t i = 0; i < B * in->numel; i++) q->buf[0][i] = kd_quant_value(x[i], in);
    for (size_t k = 0; k < q->n_ops; k++) run_op(q, &q->ops[k], B);
    memcpy(logits_q, q->buf[q->output], B * out->numel);
    for (size_t i = 0; logits && i < B * out->numel; i++)
        logits[i] = out->scale * (float)(logits_q[i] - out->zp);
    return KD_OK;
}
