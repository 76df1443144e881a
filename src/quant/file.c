/* file.c - the qint8 safetensors file of a full-integer model (docs/integer.md, "The file"):
 * metadata "dtype": "qint8", the op list as JSON ("qint8_ops", "qint8_values", "qint8_output"),
 * and the arrays as tensors: qint8.scale (F32) and qint8.zero_point (I32) per value; per op
 * with channels <L>.weight (I8), <L>.bias, <L>.multiplier and <L>.shift (I32); per table op
 * <L>.table (I8 [256]), <L> the float layer's name or index. The reader trusts nothing: every
 * index, size, range and multiplier is checked before a kernel could read out of bounds. */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_quant.h"
#include "kd_safetensors.h"

static const char *const op_names[] = {[KD_QOP_DENSE] = "dense", [KD_QOP_CONV] = "conv2d",
                                       [KD_QOP_MAXPOOL] = "maxpool", [KD_QOP_AVGPOOL] = "avgpool",
                                       [KD_QOP_ADD] = "add", [KD_QOP_CONCAT] = "concat",
                                       [KD_QOP_CLAMP] = "clamp", [KD_QOP_LUT] = "table"};
#define N_OPS (sizeof op_names / sizeof *op_names)

/* The largest model a file may describe: a check on claims, not a limit users meet. */
#define QF_MAX_VALUES 100000
#define QF_MAX_NUMEL ((size_t)1 << 28)

/* ---- Writing ---- */

static int add_ints(cJSON *o, const char *key, const long long *v, size_t n) {
    cJSON *a = cJSON_AddArrayToObject(o, key);
    for (size_t i = 0; a && i < n; i++)
        if (!cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[i]))) return -1;
    return a ? 0 : -1;
}

static cJSON *op_json(const kd_qop *op) {
    cJSON *o = cJSON_CreateObject();
    long long in[KD_QOP_MAX_IN], m_in[2 * KD_QOP_MAX_IN];
    for (size_t k = 0; k < op->n_in; k++)
        in[k] = (long long)op->in[k], m_in[2 * k] = op->m_in[k].mult,
        m_in[2 * k + 1] = op->m_in[k].shift;
    const kd_qconv_geom *g = &op->g;
    long long geom[] = {(long long)g->C, (long long)g->H, (long long)g->W, (long long)g->K,
                        (long long)g->kh, (long long)g->kw, (long long)g->stride,
                        (long long)g->pad, (long long)g->groups, (long long)g->OH,
                        (long long)g->OW};
    long long clamp[] = {op->o.zp, op->o.lo, op->o.hi}, m[] = {op->m.mult, op->m.shift};
    long long sizes[] = {(long long)op->n_ch, (long long)op->in_features};
    int bad = !o || !cJSON_AddStringToObject(o, "op", op_names[op->kind]) ||
              !cJSON_AddStringToObject(o, "layer", op->name) ||
              add_ints(o, "in", in, op->n_in) ||
              !cJSON_AddNumberToObject(o, "out", (double)op->out) ||
              add_ints(o, "out_zp_lo_hi", clamp, 3) || add_ints(o, "geom", geom, 11) ||
              add_ints(o, "channels_in_features", sizes, 2) || add_ints(o, "m", m, 2) ||
              add_ints(o, "m_in", m_in, 2 * op->n_in);
    if (bad) cJSON_Delete(o);
    return bad ? NULL : o;
}

/* The metadata texts: ops, value sizes, output. NULL-terminated strings in out[0..3). */
static int meta_texts(const kd_qmodel *q, char *out[3]) {
    cJSON *ops = cJSON_CreateArray(), *values = cJSON_CreateArray();
    int bad = !ops || !values;
    for (size_t i = 0; !bad && i < q->n_ops; i++) {
        cJSON *o = op_json(&q->ops[i]);
        bad = !o || !cJSON_AddItemToArray(ops, o);
    }
    for (size_t v = 0; !bad && v < q->n_values; v++)
        bad = !cJSON_AddItemToArray(values, cJSON_CreateNumber((double)q->values[v].numel));
    out[0] = bad ? NULL : cJSON_PrintUnformatted(ops);
    out[1] = bad ? NULL : cJSON_PrintUnformatted(values);
    out[2] = malloc(32);
    if (out[2]) snprintf(out[2], 32, "%zu", q->output);
    cJSON_Delete(ops), cJSON_Delete(values);
    return out[0] && out[1] && out[2] ? 0 : -1;
}

kd_status kd_qmodel_write(const char *path, const kd_qmodel *q, const char *const *keys,
                          const char *const *vals, size_t n_meta, kd_err *err) {
    size_t cap = 2 + 5 * q->n_ops, n = 0;
    kd_st_out *t = calloc(cap, sizeof *t);
    char (*names)[KD_LAYER_NAME_MAX + 16] = calloc(cap, sizeof *names);
    float *scale = malloc(q->n_values * sizeof *scale);
    int32_t *zp = malloc(q->n_values * sizeof *zp), *mult = NULL, *shift = NULL;
    const char **mk = calloc(n_meta + 4, sizeof *mk), **mv = calloc(n_meta + 4, sizeof *mv);
    char *texts[3] = {NULL, NULL, NULL};
    size_t n_mult = 0;
    for (size_t i = 0; i < q->n_ops; i++) n_mult += q->ops[i].mult ? q->ops[i].n_ch : 0;
    mult = malloc((n_mult + 1) * sizeof *mult), shift = malloc((n_mult + 1) * sizeof *shift);
    kd_status st = KD_OK;
    if (!t || !names || !scale || !zp || !mk || !mv || !mult || !shift || meta_texts(q, texts)) {
        st = kd_err_set(err, KD_EIO, "out of memory");
        goto cleanup;
    }
    for (size_t v = 0; v < q->n_values; v++) scale[v] = q->values[v].scale, zp[v] = q->values[v].zp;
    t[n++] = (kd_st_out){"qint8.scale", KD_DT_F32, 1, {q->n_values}, scale};
    t[n++] = (kd_st_out){"qint8.zero_point", KD_DT_I32, 1, {q->n_values}, zp};
    size_t used = 0;
    for (size_t i = 0; i < q->n_ops; i++) {
        const kd_qop *op = &q->ops[i];
        if (op->kind == KD_QOP_LUT) {
            snprintf(names[n], sizeof names[n], "%s.table", op->name);
            t[n] = (kd_st_out){names[n], KD_DT_I8, 1, {256}, op->lut}, n++;
        }
        if (!op->w) continue;
        size_t row = op->kind == KD_QOP_CONV
                         ? op->g.C / op->g.groups * op->g.kh * op->g.kw : op->in_features;
        for (size_t k = 0; k < op->n_ch; k++)
            mult[used + k] = op->mult[k].mult, shift[used + k] = op->mult[k].shift;
        const char *suffix[] = {"weight", "bias", "multiplier", "shift"};
        const void *data[] = {op->w, op->bias, mult + used, shift + used};
        for (int j = 0; j < 4; j++) {
            snprintf(names[n], sizeof names[n], "%s.%s", op->name, suffix[j]);
            t[n] = (kd_st_out){names[n], j ? KD_DT_I32 : KD_DT_I8, j ? 1 : 2,
                               {op->n_ch, j ? 0 : row}, data[j]};
            n++;
        }
        used += op->n_ch;
    }
    size_t nm = 0;
    for (size_t i = 0; i < n_meta; i++) mk[nm] = keys[i], mv[nm++] = vals[i];
    mk[nm] = "dtype", mv[nm++] = "qint8";
    mk[nm] = "qint8_ops", mv[nm++] = texts[0];
    mk[nm] = "qint8_values", mv[nm++] = texts[1];
    mk[nm] = "qint8_output", mv[nm++] = texts[2];
    st = kd_st_write(path, t, n, mk, mv, nm, err);
cleanup:
    free(t), free(names), free(scale), free(zp), free(mult), free(shift), free(mk), free(mv);
    for (int i = 0; i < 3; i++) free(texts[i]);
    return st;
}
