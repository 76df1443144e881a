/* kd_export.h - the deployment exporters: a model as an ONNX file (opset 13, IR 7) or as one
 * C99 header, both carrying the recorded preprocessing, and the emitter functions through which
 * each layer type writes its own part (its export_onnx / export_c slot, src/nn/layer_impl.h).
 *
 * The exporters know no layer type: kd_model_export_onnx / kd_model_export_c (kd_nn.h) walk the
 * layers and call each one's slot, which reads its own hyperparameters and tensors and adds
 * nodes / code here. Weights go through the dtype codecs (kd_dtype.h), so int8 scales are the
 * ones the int8 safetensors export writes. */
#ifndef KD_EXPORT_H
#define KD_EXPORT_H

#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"
#include "kd_data.h"
#include "kd_dtype.h"
#include "kd_nn.h"

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

/* Writes m as a C99 header named after name (a C identifier: lower case for functions and
 * arrays, upper case for macros), atomically; f32 and int8 weights only. */
kd_status kd_export_c(const char *path, const kd_model *m, const char *name,
                      const kd_export_info *info, kd_err *err);
/* The identifier `export --format c` derives from a path when --name is absent: the file name
 * without directories and extension, with every character outside [A-Za-z0-9_] replaced by '_',
 * lower case, and "m_" before a leading digit. */
void kd_export_c_name(const char *path, char *buf, size_t cap);
/* 1 if name is a usable identifier ([A-Za-z_][A-Za-z0-9_]*, at most 48 characters). */
int kd_export_c_name_ok(const char *name);

/* ---- For the layers' export slots ---- */

/* How a layer tensor is stored in the exported file. */
typedef enum {
    KD_STORE_F32,     /* always f32: running statistics, constants of a decomposition */
    KD_STORE_PARAM,   /* a trainable vector (bias, norm weight): in a 16-bit dtype when the
                         export asks for one; f32 under int8 (as the int8 safetensors export) */
    KD_STORE_MATRIX   /* a weight [out, ...]: in the export dtype; int8 per output row */
} kd_export_store;

/* ONNX: values are named by strings; each node has one output, which becomes the "current"
 * value that the next node or layer reads. */
typedef struct kd_onnx_emitter kd_onnx_emitter;

typedef enum { KD_ONNX_ATTR_INT, KD_ONNX_ATTR_FLOAT, KD_ONNX_ATTR_INTS } kd_onnx_attr_kind;
typedef struct {
    const char *name;
    kd_onnx_attr_kind kind;
    int64_t i;           /* INT */
    float f;             /* FLOAT */
    size_t n_ints;       /* INTS: ints[0 .. n_ints) */
    int64_t ints[4];
} kd_onnx_attr;
#define KD_ONNX_INT(n, v) ((kd_onnx_attr){.name = (n), .kind = KD_ONNX_ATTR_INT, .i = (v)})
#define KD_ONNX_FLOAT(n, v) ((kd_onnx_attr){.name = (n), .kind = KD_ONNX_ATTR_FLOAT, .f = (v)})
/* A list of 1, 2 or 4 integers (axes, kernel_shape, strides, pads). */
#define KD_ONNX_INTS1(n, a)                                                                \
    ((kd_onnx_attr){.name = (n), .kind = KD_ONNX_ATTR_INTS, .n_ints = 1, .ints = {(a)}})
#define KD_ONNX_INTS2(n, a, b)                                                             \
    ((kd_onnx_attr){.name = (n), .kind = KD_ONNX_ATTR_INTS, .n_ints = 2, .ints = {(a), (b)}})
#define KD_ONNX_INTS4(n, a, b, c, d)                                                       \
    ((kd_onnx_attr){                                                                       \
        .name = (n), .kind = KD_ONNX_ATTR_INTS, .n_ints = 4, .ints = {(a), (b), (c), (d)}})

/* The name of the current value: at the start of a layer, its input [N, ...in]. */
const char *kd_onnx_current(const kd_onnx_emitter *em);
/* Adds a tensor as an initializer named "<layer>.<suffix>" (the state_dict name for a layer's
 * own tensor) in the storage store asks for, and sets *name to a float value holding it: the
 * initializer itself, or the output of the DequantizeLinear (int8, axis 0, the codec's per-row
 * scales in "<layer>.<suffix>_scale") or Cast (16-bit) node that decodes it. shape is the full
 * tensor shape; rank 0 is a scalar. Does not change the current value. */
kd_status kd_onnx_tensor(kd_onnx_emitter *em, const char *suffix, const float *data,
                         const kd_shape *shape, kd_export_store store, const char **name,
                         kd_err *err);
/* Adds node op(inputs[0 .. n_inputs)) in the default domain (NULL entries: omitted optional
 * inputs, written as ""), with attributes; its output, named "<layer>/<op>[_k]", becomes the
 * current value and is stored in *out when out is not NULL. */
kd_status kd_onnx_node(kd_onnx_emitter *em, const char *op, const char *const *inputs,
                       size_t n_inputs, const kd_onnx_attr *attrs, size_t n_attrs,
                       const char **out, kd_err *err);

/* C: the generated forward runs one block per layer on a per-sample input `x` (const float *)
 * into `y` (float *), ping-ponging between two scratch buffers; identifiers written as `$name`
 * in the code and helper text get the export's prefix ("fmnist_name"). */
typedef struct kd_c_emitter kd_c_emitter;

/* Writes a layer tensor as `static const` array(s) "$l<layer>_<suffix>" (rows x cols values):
 * float, or, for an int8 export of a MATRIX, `signed char` values plus "$l<layer>_<suffix>_scale"
 * [rows] floats (w = q * scale). *quantised says which; *name gets the array's identifier as
 * it appears in the code (with the `$`). */
kd_status kd_c_tensor(kd_c_emitter *em, const char *suffix, const float *data, size_t rows,
                      size_t cols, kd_export_store store, const char **name, int *quantised,
                      kd_err *err);
/* Adds a static helper function (its whole text, identifiers `$`-prefixed) once per key: a
 * second call with the same key adds nothing. */
kd_status kd_c_helper(kd_c_emitter *em, const char *key, const char *text, kd_err *err);
/* Appends the layer's block to forward: statements reading x and writing y (in_place: y is x's
 * buffer, for elementwise layers). A layer that adds no block (flatten, dropout) passes its
 * input on unchanged. */
kd_status kd_c_code(kd_c_emitter *em, int in_place, kd_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* v as a C float literal that reads back to the same float ("0.00999999978f", "1.0f") into
 * buf (32 bytes suffice); returns buf. */
const char *kd_c_float(float v, char *buf, size_t cap);

#endif
