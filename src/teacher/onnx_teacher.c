/* onnx_teacher.c - an ONNX file as a teacher (or as the model of eval and predict): read by
 * src/onnx, fed what it expects: the data as preprocessed for the student (the default), the raw
 * sample (teacher.preprocess "raw", and a file distill exported, which holds its preprocessing)
 * or the raw sample under its own preprocessing, through a first affine layer that maps the
 * data's values onto the teacher's per channel. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_teacher.h"

/* Per channel c of C, data = raw * m[c] + a[c] under pp (scale, mean, std; per feature when the
 * sample is [C] and pp has one statistic per value). KD_EUSAGE when pp does not fit C. */
static kd_status pp_affine(const kd_preprocess *pp, float data_scale, size_t C, float *m,
                           float *a, kd_err *err) {
    const float scale = pp->scale > 0 ? pp->scale : data_scale > 0 ? data_scale : 1.0f;
    const int n = pp->n_channels;
    if (pp->n_features && pp->n_features != C)
        return kd_err_set(err, KD_EUSAGE, "per-feature statistics of %zu values for an input of "
                          "%zu channels", pp->n_features, C);
    if (n > 1 && (size_t)n != C)
        return kd_err_set(err, KD_EUSAGE, "%d channel statistics for an input of %zu channels",
                          n, C);
    for (size_t c = 0; c < C; c++) {
        float mean = 0.0f, sd = 1.0f;
        if (pp->n_features) mean = pp->feat[c], sd = pp->feat[pp->n_features + c];
        else if (n > 0) mean = pp->mean[n == 1 ? 0 : c], sd = pp->std[n == 1 ? 0 : c];
        if (!(sd > 0.0f)) sd = 1.0f;  /* a constant feature is only centred */
        m[c] = scale / sd;
        a[c] = -mean / sd;
    }
    return KD_OK;
}

kd_status kd_teacher_load_onnx(const char *path, const char *output, int pp_mode,
                               const kd_preprocess *given, const kd_preprocess *data_pp,
                               kd_model *m, kd_onnx_info *info, kd_err *err) {
    kd_onnx_opts opt = {output && output[0] ? output : NULL, 0, NULL, 0, NULL, NULL};
    float *w = NULL, *b = NULL, *md = NULL, *ad = NULL;
    kd_status st = kd_onnx_load(path, &opt, m, info, err);
    if (st) return st;
    if (pp_mode == KD_TEACHER_PP_DATA && info->from_distill) pp_mode = KD_TEACHER_PP_RAW;
    if (pp_mode == KD_TEACHER_PP_DATA) return kd_model_freeze(m, err);
    /* The graph's channels, then the model again with the affine layer in front. */
    const size_t C = m->input.d[0];
    kd_model_free(m);
    kd_onnx_info_free(info);
    w = malloc(C * sizeof *w), b = malloc(C * sizeof *b);
    md = malloc(C * sizeof *md), ad = malloc(C * sizeof *ad);
    if (!w || !b || !md || !ad) {
        st = kd_err_set(err, KD_EIO, "out of memory");
        goto cleanup;
    }
    /* data = raw * md + ad and teacher = raw * w + b, so teacher = data * (w / md) +
     * (b - ad * w / md). */
    if ((st = pp_affine(data_pp, data_pp->scale, C, md, ad, err))) goto cleanup;
    if (pp_mode == KD_TEACHER_PP_RAW) {
        for (size_t c = 0; c < C; c++) w[c] = 1.0f, b[c] = 0.0f;
    } else if ((st = pp_affine(given, data_pp->scale, C, w, b, err))) {
        goto cleanup;
    }
    for (size_t c = 0; c < C; c++) {
        const float k = w[c] / md[c];
        b[c] -= ad[c] * k;
        w[c] = k;
    }
    opt.in_c = C;
    opt.in_w = w;
    opt.in_b = b;
    st = kd_onnx_load(path, &opt, m, info, err);
    if (!st) st = kd_model_freeze(m, err);
cleanup:
    if (st && !strstr(err->msg, path)) kd_err_prefix(err, "%s: teacher.preprocess", path);
    free(w);
    free(b);
    free(md);
    free(ad);
    return st;
}
