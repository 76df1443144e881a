/* quantize.c - export weight formats: int8 symmetric per output row, f16, bf16; and the
 * writer that turns a model into a weights-only safetensors file in one of them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_checkpoint.h"
#include "kd_eval.h"

void kd_quant_int8_rows(const float *w, size_t rows, size_t cols, int8_t *q, float *scale) {
    for (size_t r = 0; r < rows; r++) {
        const float *wr = w + r * cols;
        float mx = 0.0f;
        for (size_t c = 0; c < cols; c++)
            if (fabsf(wr[c]) > mx) mx = fabsf(wr[c]);
        /* An all-zero row gets scale 1 (not 0) so that q * scale stays exact and no reader
         * divides by zero; its q are all 0 anyway. */
        float s = mx > 0.0f ? mx / 127.0f : 1.0f;
        scale[r] = s;
        for (size_t c = 0; c < cols; c++) {
            float v = roundf(wr[c] / s);
            if (v > 127.0f) v = 127.0f;
            if (v < -127.0f) v = -127.0f;
            q[r * cols + c] = (int8_t)v;
        }
    }
}

void kd_dequant_int8_rows(const int8_t *q, const float *scale, size_t rows, size_t cols, float *w) {
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) w[r * cols + c] = (float)q[r * cols + c] * scale[r];
}

void kd_quant_f16(const float *x, uint16_t *h, size_t n) {
    for (size_t i = 0; i < n; i++) h[i] = kd_f32_to_f16(x[i]);
}
void kd_quant_bf16(const float *x, uint16_t *h, size_t n) {
    for (size_t i = 0; i < n; i++) h[i] = kd_f32_to_bf16(x[i]);
}
void kd_dequant_f16(const uint16_t *h, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = kd_f16_to_f32(h[i]);
}
void kd_dequant_bf16(const uint16_t *h, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = kd_bf16_to_f32(h[i]);
}

int kd_export_dtype_parse(const char *s, kd_dtype *out) {
    static const struct { const char *name; kd_dtype t; } table[] = {
        {"f32", KD_DT_F32}, {"f16", KD_DT_F16}, {"bf16", KD_DT_BF16}, {"int8", KD_DT_I8}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(s, table[i].name) == 0) {
            *out = table[i].t;
            return 0;
        }
    return -1;
}

/* Weights that int8 quantises: those their layer declares so (the matrices of dense and conv2d
 * layers, [out, ...]); biases and normalisation tensors stay F32. */
static int quantised_weight(const kd_model *m, const kd_tensor *t) {
    (void)m;
    return t->kind == KD_TENSOR_PARAM && t->quantise;
}

static const char *dtype_word(kd_dtype t) {
    switch (t) {
    case KD_DT_F16: return "f16";
    case KD_DT_BF16: return "bf16";
    case KD_DT_I8: return "int8";
    default: return "f32";
    }
}

kd_status kd_export_write(const char *path, const kd_model *m, kd_dtype dtype,
                          const char *const *meta_keys, const char *const *meta_vals,
                          size_t n_meta, kd_err *err) {
    kd_status st = KD_OK;
    size_t cap = 2 * m->n_tensors, n_out = 0, n_bufs = 0, n_md = 0;
    kd_st_out *outs = calloc(cap ? cap : 1, sizeof *outs);
    void **bufs = calloc(cap ? cap : 1, sizeof *bufs);
    char (*scale_names)[64] = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *scale_names);
    const char **mk = calloc(n_meta + 4, sizeof *mk), **mv = calloc(n_meta + 4, sizeof *mv);
    char *arch = NULL;
    if (!outs || !bufs || !scale_names || !mk || !mv) {
        st = kd_err_set(err, KD_EIO, "%s: out of memory", path);
        goto cleanup;
    }
    if (dtype != KD_DT_F32 && dtype != KD_DT_F16 && dtype != KD_DT_BF16 && dtype != KD_DT_I8) {
        st = kd_err_set(err, KD_EUSAGE, "%s: cannot export as %s", path, kd_dtype_name(dtype));
        goto cleanup;
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        const kd_tensor *t = &m->tensors[i];
        kd_st_out *o = &outs[n_out++];
        o->name = t->name;
        o->rank = t->shape.rank;
        for (int d = 0; d < t->shape.rank; d++) o->shape[d] = t->shape.d[d];
        if (t->kind == KD_TENSOR_COUNTER) {
            o->dtype = KD_DT_I64;
            o->data = t->counter;
            continue;
        }
        o->dtype = KD_DT_F32;
        o->data = t->data;
        if (dtype == KD_DT_I8 && quantised_weight(m, t)) {
            size_t rows = t->shape.d[0], cols = t->numel / rows;
            int8_t *q = malloc(t->numel ? t->numel : 1);
            float *s = malloc(rows * sizeof *s);
            bufs[n_bufs++] = q;
            bufs[n_bufs++] = s;
            if (!q || !s) {
                st = kd_err_set(err, KD_EIO, "%s: out of memory quantising %s", path, t->name);
                goto cleanup;
            }
            kd_quant_int8_rows(t->data, rows, cols, q, s);
            o->dtype = KD_DT_I8;
            o->data = q;
            snprintf(scale_names[i], sizeof scale_names[i], "%s_scale", t->name);
            kd_st_out *so = &outs[n_out++];
            so->name = scale_names[i];
            so->dtype = KD_DT_F32;
            so->rank = 1;
            so->shape[0] = rows;
            so->data = s;
        } else if ((dtype == KD_DT_F16 || dtype == KD_DT_BF16) && t->kind == KD_TENSOR_PARAM) {
            /* Running statistics stay F32: a small running variance loses most of its digits
             * in half precision, and they are a negligible share of the file. */
            uint16_t *h = malloc((t->numel ? t->numel : 1) * sizeof *h);
            bufs[n_bufs++] = h;
            if (!h) {
                st = kd_err_set(err, KD_EIO, "%s: out of memory converting %s", path, t->name);
                goto cleanup;
            }
            if (dtype == KD_DT_F16)
                kd_quant_f16(t->data, h, t->numel);
            else
                kd_quant_bf16(t->data, h, t->numel);
            o->dtype = dtype;
            o->data = h;
        }
    }
    int has_arch = 0;
    for (size_t i = 0; i < n_meta; i++) {
        if (!strcmp(meta_keys[i], "format") || !strcmp(meta_keys[i], "dtype") ||
            !strcmp(meta_keys[i], "quantization"))
            continue;
        if (!strcmp(meta_keys[i], "arch")) has_arch = 1;
        mk[n_md] = meta_keys[i];
        mv[n_md++] = meta_vals[i];
    }
    mk[n_md] = "format";
    mv[n_md++] = KD_FORMAT;
    if (!has_arch) {
        arch = kd_model_arch_json(m);
        if (!arch) {
            st = kd_err_set(err, KD_EIO, "%s: out of memory describing the model", path);
            goto cleanup;
        }
        mk[n_md] = "arch";
        mv[n_md++] = arch;
    }
    mk[n_md] = "dtype";
    mv[n_md++] = dtype_word(dtype);
    if (dtype == KD_DT_I8) {
        mk[n_md] = "quantization";
        mv[n_md++] = "int8 symmetric per output row; w = q * scale";
    }
    st = kd_st_write(path, outs, n_out, mk, mv, n_md, err);
cleanup:
    for (size_t i = 0; i < n_bufs; i++) free(bufs[i]);
    free(bufs);
    free(outs);
    free(scale_names);
    free(mk);
    free(mv);
    free(arch);
    return st;
}
