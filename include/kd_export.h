/* kd_export.h - the deployment exporters: a model as an ONNX file (opset 13, IR 7) or as one
 * C99 header, both carrying the recorded preprocessing, and the emitter functions through which
 * each layer type writes its own part (its export_onnx / export_c slot, src/nn/layer_impl.h).
 *
 * The exporters know no layer type: they walk the layers and call each one's slot
 * (kd_model_layer_export_onnx / _c, kd_nn.h), which reads its own hyperparameters and tensors
 * and adds nodes / code through the emitter interface of kd_emit.h, which the exporters
 * implement. Weights go through the dtype codecs (kd_dtype.h), so int8 scales are the
 * ones the int8 safetensors export writes. */
#ifndef KD_EXPORT_H
#define KD_EXPORT_H

#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"
#include "kd_data.h"
#include "kd_dtype.h"
#include "kd_emit.h"
#include "kd_nn.h"
#include "kd_quant.h"

/* What the exported file needs besides the model (all from the checkpoint's metadata). */
typedef struct {
    const kd_codec *codec;      /* weight dtype (kd_codec_find("f32") when NULL) */
    const kd_preprocess *pp;    /* the recorded preprocessing, scale resolved; NULL: none (the
                                   file takes already-preprocessed inputs) */
    char **class_names;         /* n_classes names, or NULL ("0", "1", ... are used) */
    size_t n_classes;
    const char *source;         /* the checkpoint's path, for comments */
    /* Metadata copied into ONNX metadata_props as they are (the checkpoint's arch, classes,
     * preprocess, ...); keys the exporter writes itself (distill_version, dtype, quantization)
     * are skipped. */
    const char *const *meta_keys;
    const char *const *meta_vals;
    size_t n_meta;
} kd_export_info;

/* Writes m as an ONNX model to path, atomically. Graph input "input" [N, ...m->input] (the raw
 * sample; N symbolic), outputs "logits" [N, classes] and "probabilities" (softmax of the
 * logits). metadata_props: distill_version, arch, classes, preprocess, dtype. Errors: a layer
 * type without an ONNX form or a non-finite weight (KD_EUSAGE, naming the layer), a codec the
 * format cannot hold, I/O (KD_EIO). */
kd_status kd_export_onnx(const char *path, const kd_model *m, const kd_export_info *info,
                         kd_err *err);

/* Writes a full-integer model (kd_quant.h) as an ONNX QDQ model to path, atomically
 * (docs/integer.md, "ONNX"): graph input "input" [N, ...input] (the raw sample, the recorded
 * preprocessing inside, then QuantizeLinear), QuantizeLinear / DequantizeLinear around each
 * dense, conv, average pool, add and concat, int8 weights per output channel and int32 bias;
 * max pool, clamps and table activations on the int8 values; outputs "logits" (the int8 logits
 * dequantized) and "probabilities". KD_EUSAGE for a window ONNX computes otherwise. */
kd_status kd_export_onnx_qint8(const char *path, const kd_qmodel *q, const kd_shape *input,
                               const kd_export_info *info, kd_err *err);

/* Writes m as a C99 header named after name (a C identifier: lower case for functions and
 * arrays, upper case for macros), atomically; f32 and int8 weights only. */
kd_status kd_export_c(const char *path, const kd_model *m, const char *name,
                      const kd_export_info *info, kd_err *err);
/* Writes a full-integer model (kd_quant.h) as a C99 header (docs/integer.md): int8 weights
 * and activations, <NAME>_ARENA_BYTES of caller arena (the exact peak by liveness, *arena),
 * <name>_forward_q (int8 in and out, no float), <name>_forward and <name>_predict (raw input,
 * the recorded preprocessing inside). input is the float model's per-sample input shape. */
kd_status kd_export_c_qint8(const char *path, const kd_qmodel *q, const kd_shape *input,
                            const char *name, const kd_export_info *info, size_t *arena,
                            kd_err *err);
/* The identifier `export --format c` derives from a path when --name is absent: the file name
 * without directories and extension, with every character outside [A-Za-z0-9_] replaced by '_',
 * lower case, and "m_" before a leading digit. */
void kd_export_c_name(const char *path, char *buf, size_t cap);
/* 1 if name is a usable identifier ([A-Za-z_][A-Za-z0-9_]*, at most 48 characters). */
int kd_export_c_name_ok(const char *name);

#endif
