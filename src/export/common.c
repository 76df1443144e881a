/* common.c - what the deployment exporters share: the recorded preprocessing as a multiply-add
 * per channel, the storage rule per tensor, the architecture summary, C identifiers. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "export_impl.h"

/* Per-feature statistics (data.preprocess.standardize): one multiply-add per input value,
 * n_ch = numel and plane = 1, so the exporters' per-channel loops apply them unchanged. */
static kd_status pre_features(kd_export_pre *p, const kd_preprocess *pp, size_t numel,
                              kd_err *err) {
    if (pp->n_features != numel)
        return kd_err_set(err, KD_EINPUT, "preprocess: %zu per-feature statistics for an input "
                          "of %zu values", pp->n_features, numel);
    p->n_ch = numel;
    p->plane = 1;
    p->mul = malloc(numel * sizeof *p->mul);
    p->add = malloc(numel * sizeof *p->add);
    if (!p->mul || !p->add) {
        kd_export_pre_free(p);
        return kd_err_set(err, KD_EIO, "out of memory");
    }
    const float scale = pp->scale > 0 ? pp->scale : 1.0f;
    for (size_t i = 0; i < numel; i++) {
        float mean = pp->feat[i], sd = pp->feat[numel + i];
        if (!isfinite(scale) || !isfinite(mean) || !(sd > 0.0f) || !isfinite(sd)) {
            kd_export_pre_free(p);
            return kd_err_set(err, KD_EINPUT, "preprocess: feature %zu: scale %g, mean %g, std "
                              "%g are not usable", i, (double)scale, (double)mean, (double)sd);
        }
        /* The dataset's own fold: x = raw * (scale / sd) + (-mean / sd), in float. */
        p->mul[i] = scale / sd;
        p->add[i] = -mean / sd;
    }
    return KD_OK;
}

kd_status kd_export_pre_init(kd_export_pre *p, const kd_preprocess *pp, const kd_shape *input,
                             kd_err *err) {
    memset(p, 0, sizeof *p);
    const size_t numel = kd_shape_numel(input);
    if (pp && pp->n_features) return pre_features(p, pp, numel, err);
    const int given = pp ? pp->n_channels : 0;
    /* A flattened sample is one plane unless per-channel statistics say how many channels it
     * had; an unflattened one has its first axis as channels (as the dataset's reader). */
    if (input->rank == 1) p->n_ch = given > 1 ? (size_t)given : 1;
    else p->n_ch = input->d[0];
    if (p->n_ch == 0 || numel % p->n_ch)
        return kd_err_set(err, KD_EINPUT,
                          "preprocess: %d channel statistics do not divide the %zu input values",
                          given, numel);
    if (given > 1 && (size_t)given != p->n_ch)
        return kd_err_set(err, KD_EINPUT,
                          "preprocess: %d channel statistics for an input of %zu channels", given,
                          p->n_ch);
    p->plane = numel / p->n_ch;
    p->mul = malloc(p->n_ch * sizeof *p->mul);
    p->add = malloc(p->n_ch * sizeof *p->add);
    if (!p->mul || !p->add) {
        kd_export_pre_free(p);
        return kd_err_set(err, KD_EIO, "out of memory");
    }
    p->identity = 1;
    for (size_t c = 0; c < p->n_ch; c++) {
        float scale = pp && pp->scale > 0 ? pp->scale : 1.0f, mean = 0.0f, sd = 1.0f;
        if (given > 0) {
            mean = pp->mean[given == 1 ? 0 : c];
            sd = pp->std[given == 1 ? 0 : c];
        }
        if (!isfinite(scale) || !isfinite(mean) || !(sd > 0.0f) || !isfinite(sd)) {
            kd_export_pre_free(p);
            return kd_err_set(err, KD_EINPUT,
                              "preprocess: channel %zu: scale %g, mean %g, std %g are not usable",
                              c, (double)scale, (double)mean, (double)sd);
        }
        p->mul[c] = scale / sd;
        p->add[c] = -mean / sd;
        if (p->mul[c] != 1.0f || p->add[c] != 0.0f) p->identity = 0;
    }
    return KD_OK;
}

void kd_export_pre_free(kd_export_pre *p) {
    if (!p) return;
    free(p->mul);
    free(p->add);
    p->mul = p->add = NULL;
}

const kd_codec *kd_export_codec(const kd_export_info *info) {
    return info && info->codec ? info->codec : kd_codec_find("f32");
}

int kd_export_encodes(const kd_codec *codec, kd_export_store store) {
    if (store == KD_STORE_F32 || codec->stored == KD_DT_F32) return 0;
    return codec->row_scales ? store == KD_STORE_MATRIX : 1;
}

void kd_export_arch_summary(const kd_model *m, char *buf, size_t cap) {
    char sh[64];
    size_t len = (size_t)snprintf(buf, cap, "%s", kd_shape_str(&m->input, sh, sizeof sh));
    for (size_t i = 0; i < m->n_layers && len < cap; i++) {
        kd_shape out = kd_model_layer_out(m, i);
        len += (size_t)snprintf(buf + len, cap - len, " -> %s %s", kd_model_layer_type(m, i),
                                kd_shape_str(&out, sh, sizeof sh));
    }
}

kd_status kd_export_check_finite(const char *what, const float *data, size_t n, kd_err *err) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(data[i]))
            return kd_err_set(err, KD_EUSAGE, "%s: value %zu is %g; cannot export a non-finite "
                                              "weight", what, i, (double)data[i]);
    return KD_OK;
}

void kd_export_c_name(const char *path, char *buf, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strcspn(base, "."), len = 0;
    if (cap < 4) {
        if (cap) buf[0] = '\0';
        return;
    }
    if (n == 0 || isdigit((unsigned char)base[0])) {
        memcpy(buf, "m_", 2);
        len = 2;
    }
    for (size_t i = 0; i < n && len + 1 < cap && len < 48; i++) {
        unsigned char ch = (unsigned char)base[i];
        buf[len++] = isalnum(ch) || ch == '_' ? (char)tolower(ch) : '_';
    }
    buf[len] = '\0';
}

int kd_export_c_name_ok(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n > 48 || isdigit((unsigned char)name[0])) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '_') return 0;
    return 1;
}

/* A class name as a C string literal: printable ASCII as is, '"', '\\' and '?' (trigraphs)
 * escaped, every other byte in octal. */
void kd_export_c_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\' || *p == '?') fprintf(f, "\\%c", *p);
        else if (*p >= 0x20 && *p < 0x7f) fputc(*p, f);
        else fprintf(f, "\\%03o", *p);
    }
    fputc('"', f);
}
