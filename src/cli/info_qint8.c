/* info_qint8.c - `distill info FILE [--json]` for a full-integer (qint8) file: checks it as the
 * integer reference would (kd_qmodel_read) and describes every op with its layer, values,
 * scale, zero point, clamp, and the range of its multipliers and shifts (docs/integer.md). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "kd_quant.h"

static const char *const op_names[] = {"dense", "conv2d", "maxpool", "avgpool", "add",
                                       "concat", "clamp", "table"};

/* The smallest and largest multiplier and shift of an op's channels (or its one multiplier). */
static void mult_range(const kd_qop *op, kd_qmul *lo, kd_qmul *hi) {
    *lo = *hi = op->mult ? op->mult[0] : op->m;
    for (size_t k = 1; op->mult && k < op->n_ch; k++) {
        if (op->mult[k].mult < lo->mult) lo->mult = op->mult[k].mult;
        if (op->mult[k].mult > hi->mult) hi->mult = op->mult[k].mult;
        if (op->mult[k].shift < lo->shift) lo->shift = op->mult[k].shift;
        if (op->mult[k].shift > hi->shift) hi->shift = op->mult[k].shift;
    }
}

static void print_text(const char *path, const kd_st_file *f, const kd_qmodel *q) {
    size_t weights = 0;
    for (size_t i = 0; i < q->n_ops; i++)
        if (q->ops[i].w)
            weights += q->ops[i].n_ch * (q->ops[i].kind == KD_QOP_CONV
                                             ? q->ops[i].g.C / q->ops[i].g.groups *
                                                   q->ops[i].g.kh * q->ops[i].g.kw
                                             : q->ops[i].in_features);
    printf("file      %s (%zu bytes)\n", path, f->blob_size);
    printf("format    qint8 full-integer model: %zu ops, %zu values, %zu int8 weights\n",
           q->n_ops, q->n_values, weights);
    printf("input     value 0: %zu per sample, scale %.9g, zero point %d\n", q->values[0].numel,
           q->values[0].scale, q->values[0].zp);
    for (size_t i = 0; i < q->n_ops; i++) {
        const kd_qop *op = &q->ops[i];
        const kd_qvalue *v = &q->values[op->out];
        kd_qmul lo, hi;
        mult_range(op, &lo, &hi);
        printf("op %-3zu    %-7s layer %s -> value %zu (%zu): scale %.6g, zero point %d, clamp "
               "[%d, %d]", i, op_names[op->kind], op->name, op->out, v->numel, v->scale, v->zp,
               op->o.lo, op->o.hi);
        if (op->mult)
            printf("; %zu channels, multipliers %d..%d, shifts %d..%d", op->n_ch, lo.mult, hi.mult,
                   lo.shift, hi.shift);
        putchar('\n');
    }
    printf("output    value %zu: %zu logits, scale %.9g, zero point %d\n", q->output, q->n_classes,
           q->values[q->output].scale, q->values[q->output].zp);
}

static kd_status print_json(const char *path, const kd_st_file *f, const kd_qmodel *q,
                            kd_err *err) {
    int bad = 0;
    cJSON *o = cJSON_CreateObject();
    kd_cli_json_add(o, "file", cJSON_CreateString(path), &bad);
    kd_cli_json_add(o, "size", cJSON_CreateNumber((double)f->blob_size), &bad);
    kd_cli_json_add(o, "format", cJSON_CreateString("qint8"), &bad);
    cJSON *vs = kd_cli_json_add(o, "values", cJSON_CreateArray(), &bad);
    for (size_t v = 0; v < q->n_values; v++) {
        cJSON *vo = kd_cli_json_add(vs, NULL, cJSON_CreateObject(), &bad);
        kd_cli_json_add(vo, "numel", cJSON_CreateNumber((double)q->values[v].numel), &bad);
        kd_cli_json_add(vo, "scale", cJSON_CreateNumber(q->values[v].scale), &bad);
        kd_cli_json_add(vo, "zero_point", cJSON_CreateNumber(q->values[v].zp), &bad);
    }
    cJSON *ops = kd_cli_json_add(o, "ops", cJSON_CreateArray(), &bad);
    for (size_t i = 0; i < q->n_ops; i++) {
        const kd_qop *op = &q->ops[i];
        kd_qmul lo, hi;
        mult_range(op, &lo, &hi);
        cJSON *oo = kd_cli_json_add(ops, NULL, cJSON_CreateObject(), &bad);
        kd_cli_json_add(oo, "op", cJSON_CreateString(op_names[op->kind]), &bad);
        kd_cli_json_add(oo, "layer", cJSON_CreateString(op->name), &bad);
        cJSON *in = kd_cli_json_add(oo, "in", cJSON_CreateArray(), &bad);
        for (size_t k = 0; k < op->n_in; k++)
            kd_cli_json_add(in, NULL, cJSON_CreateNumber((double)op->in[k]), &bad);
        kd_cli_json_add(oo, "out", cJSON_CreateNumber((double)op->out), &bad);
        int clamp[2] = {op->o.lo, op->o.hi}, m[2] = {lo.mult, hi.mult}, s[2] = {lo.shift, hi.shift};
        kd_cli_json_add(oo, "clamp", cJSON_CreateIntArray(clamp, 2), &bad);
        kd_cli_json_add(oo, "multiplier_range", cJSON_CreateIntArray(m, 2), &bad);
        kd_cli_json_add(oo, "shift_range", cJSON_CreateIntArray(s, 2), &bad);
        kd_cli_json_add(oo, "channels", cJSON_CreateNumber((double)op->n_ch), &bad);
    }
    kd_cli_json_add(o, "output", cJSON_CreateNumber((double)q->output), &bad);
    return kd_cli_json_print(o, bad, err);
}

int kd_cli_info_qint8(const char *path, const kd_st_file *f, int json) {
    kd_qmodel q;
    kd_err err;
    kd_err_clear(&err);
    kd_status st = kd_qmodel_read(f, &q, &err);
    if (!st && json) st = print_json(path, f, &q, &err);
    else if (!st) print_text(path, f, &q);
    kd_qmodel_free(&q);
    return st ? kd_cli_fail(&err) : 0;
}
