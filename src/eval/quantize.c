/* quantize.c - the writer that turns a model into a weights-only safetensors file in one of the
 * export dtypes (the codecs of kd_dtype.h: f32, f16, bf16, int8 per output row). */
#include <stdlib.h>
#include <string.h>

#include "kd_checkpoint.h"
#include "kd_dtype.h"
#include "kd_eval.h"

/* The array functions of kd_eval.h, kept for their callers: the codecs of kd_dtype.h do the
 * work. */
void kd_quant_int8_rows(const float *w, size_t rows, size_t cols, int8_t *q, float *scale) {
    kd_codec_for(KD_DT_I8)->encode(w, rows, cols, q, scale);
}
void kd_dequant_int8_rows(const int8_t *q, const float *scale, size_t rows, size_t cols, float *w) {
    kd_codec_for(KD_DT_I8)->decode(q, scale, rows, cols, w);
}
void kd_quant_f16(const float *x, uint16_t *h, size_t n) {
    kd_codec_for(KD_DT_F16)->encode(x, 1, n, h, NULL);
}
void kd_quant_bf16(const float *x, uint16_t *h, size_t n) {
    kd_codec_for(KD_DT_BF16)->encode(x, 1, n, h, NULL);
}
void kd_dequant_f16(const uint16_t *h, float *x, size_t n) {
    kd_codec_for(KD_DT_F16)->decode(h, NULL, 1, n, x);
}
void kd_dequant_bf16(const uint16_t *h, float *x, size_t n) {
    kd_codec_for(KD_DT_BF16)->decode(h, NULL, 1, n, x);
}

int kd_export_dtype_parse(const char *s, kd_dtype *out) {
    const kd_codec *c = kd_codec_find(s);
    if (!c) return -1;
    *out = c->stored;
    return 0;
}

/* Weights that int8 quantizes: those their layer declares so (the matrices of dense and conv2d
 * layers, [out, ...]); biases and normalisation tensors stay F32. */
static int quantized_weight(const kd_model *m, const kd_tensor *t) {
    (void)m;
    return t->kind == KD_TENSOR_PARAM && t->quantize;
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
    const kd_codec *codec = kd_codec_for(dtype);
    if (!codec) {
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
        /* A row-scaled codec takes the weight matrices ([out, ...]); the others every trainable
         * tensor. Running statistics stay F32: a small running variance loses most of its
         * digits in half precision, and they are a negligible share of the file. */
        if (!(codec->row_scales ? quantized_weight(m, t) : t->kind == KD_TENSOR_PARAM)) continue;
        size_t rows = codec->row_scales ? t->shape.d[0] : 1, cols = rows ? t->numel / rows : 0;
        void *q = malloc(t->numel ? t->numel * kd_dtype_size(codec->stored) : 1);
        float *s = codec->row_scales ? malloc(rows * sizeof *s) : NULL;
        bufs[n_bufs++] = q;
        bufs[n_bufs++] = s;
        if (!q || (codec->row_scales && !s)) {
            st = kd_err_set(err, KD_EIO, "%s: out of memory %s %s", path,
                            codec->row_scales ? "quantizing" : "converting", t->name);
            goto cleanup;
        }
        codec->encode(t->data, rows, cols, q, s);
        o->dtype = codec->stored;
        o->data = q;
        if (codec->row_scales) {
            kd_st_out *so = &outs[n_out++];
            if (kd_codec_scale_name(t->name, scale_names[i], sizeof scale_names[i])) {
                st = kd_err_set(err, KD_EIO, "%s: tensor name %s too long", path, t->name);
                goto cleanup;
            }
            so->name = scale_names[i];
            so->dtype = KD_DT_F32;
            so->rank = 1;
            so->shape[0] = rows;
            so->data = s;
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
    mv[n_md++] = codec->name;
    if (codec->scheme) {
        mk[n_md] = "quantization";
        mv[n_md++] = codec->scheme;
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
