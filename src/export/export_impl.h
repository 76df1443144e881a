/* export_impl.h - private to src/export: what the ONNX and C exporters share (the recorded
 * preprocessing as one multiply-add per channel, the storage decision per tensor, a one-line
 * architecture summary). */
#ifndef KD_EXPORT_IMPL_H
#define KD_EXPORT_IMPL_H

#include <stdio.h>

#include "kd_export.h"

/* The preprocessing x = (raw * scale - mean[c]) / std[c] folded, exactly as the dataset does
 * (src/data/dataset.c), into x = raw * mul[c] + add[c] with mul = scale / std and
 * add = -mean / std, computed in float. The per-sample input is n_ch channels of plane values
 * each (channel-major, so a flattened [C, H, W] sample keeps its channels in order). */
typedef struct {
    size_t n_ch, plane;
    float *mul, *add;      /* (n_ch) */
    int identity;          /* every mul is 1 and every add 0: nothing to emit */
} kd_export_pre;

/* From the recorded preprocessing (NULL: identity) and the model's per-sample input shape.
 * KD_EINPUT when the channel counts do not fit the shape. Free with kd_export_pre_free. */
kd_status kd_export_pre_init(kd_export_pre *p, const kd_preprocess *pp, const kd_shape *input,
                             kd_err *err);
void kd_export_pre_free(kd_export_pre *p);

/* The export's codec (f32 when info names none). */
const kd_codec *kd_export_codec(const kd_export_info *info);
/* 1 when a tensor stored as `store` goes through the codec, 0 when it stays f32: a row-scaled
 * codec (int8) takes only MATRIX tensors, the others every PARAM and MATRIX (the rule of the
 * safetensors export, kd_export_write). */
int kd_export_encodes(const kd_codec *codec, kd_export_store store);

/* "[784] -> dense 128 -> relu -> dense 10"-style summary of m (layer types with their output
 * shapes) into buf. */
void kd_export_arch_summary(const kd_model *m, char *buf, size_t cap);

/* KD_EUSAGE naming the tensor when any of data[0 .. n) is NaN or infinite (neither format can
 * carry them meaningfully, and a C initializer cannot spell them). */
kd_status kd_export_check_finite(const char *what, const float *data, size_t n, kd_err *err);

/* A class name as a C string literal: printable ASCII as is, '"', '\\' and '?' (trigraphs)
 * escaped, every other byte in octal. */
void kd_export_c_string(FILE *f, const char *s);

#endif
