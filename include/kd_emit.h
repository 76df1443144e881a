/* kd_emit.h - the interface through which a layer writes itself into a deployment format: its
 * export_onnx / export_c slot (src/nn/layer_impl.h) calls these functions, and the exporters
 * (src/export) implement them behind a table of operations. It sits below both, so the layers
 * know no exporter and the exporters no layer type.
 *
 * The exporter sets up the emitter for each layer: the layer's input values (kd_onnx_input,
 * the x / xs of a C block) and, when the slot returns, takes what it added as the layer's
 * output value. */
#ifndef KD_EMIT_H
#define KD_EMIT_H

#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"
#include "kd_shape.h"

/* How a layer tensor is stored in the exported file. */
typedef enum {
    KD_STORE_F32,     /* always f32: running statistics, constants of a decomposition */
    KD_STORE_PARAM,   /* a trainable vector (bias, norm weight): in a 16-bit dtype when the
                         export asks for one; f32 under int8 (as the int8 safetensors export) */
    KD_STORE_MATRIX   /* a weight [out, ...]: in the export dtype; int8 per output row */
} kd_export_store;

/* ---- ONNX: values are named by strings; each node has one output, which becomes the
 * "current" value that the layer's next node reads. ---- */

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

typedef struct kd_onnx_emitter kd_onnx_emitter;
typedef struct {
    const char *(*current)(const kd_onnx_emitter *em);
    const char *(*input)(const kd_onnx_emitter *em, size_t k);
    kd_status (*tensor)(kd_onnx_emitter *em, const char *suffix, const float *data,
                        const kd_shape *shape, kd_export_store store, const char **name,
                        kd_err *err);
    kd_status (*node)(kd_onnx_emitter *em, const char *op, const char *const *inputs,
                      size_t n_inputs, const kd_onnx_attr *attrs, size_t n_attrs,
                      const char **out, kd_err *err);
} kd_onnx_emitter_ops;
/* An exporter's emitter starts with this member. */
struct kd_onnx_emitter {
    const kd_onnx_emitter_ops *ops;
};

/* The name of the current value: at the start of a layer, its (first) input [N, ...in]. */
static inline const char *kd_onnx_current(const kd_onnx_emitter *em) {
    return em->ops->current(em);
}
/* The name of the layer's k-th input (merges). */
static inline const char *kd_onnx_input(const kd_onnx_emitter *em, size_t k) {
    return em->ops->input(em, k);
}
/* Adds a tensor as an initializer named "<layer>.<suffix>" (the state_dict name for a layer's
 * own tensor) in the storage store asks for, and sets *name to a float value holding it: the
 * initializer itself, or the output of the DequantizeLinear (int8, axis 0, the codec's per-row
 * scales in "<layer>.<suffix>_scale") or Cast (16-bit) node that decodes it. shape is the full
 * tensor shape; rank 0 is a scalar. Does not change the current value. */
static inline kd_status kd_onnx_tensor(kd_onnx_emitter *em, const char *suffix,
                                       const float *data, const kd_shape *shape,
                                       kd_export_store store, const char **name, kd_err *err) {
    return em->ops->tensor(em, suffix, data, shape, store, name, err);
}
/* Adds node op(inputs[0 .. n_inputs)) in the default domain (NULL entries: omitted optional
 * inputs, written as ""), with attributes; its output, named "<layer>/<op>[_k]", becomes the
 * current value and is stored in *out when out is not NULL. */
static inline kd_status kd_onnx_node(kd_onnx_emitter *em, const char *op,
                                     const char *const *inputs, size_t n_inputs,
                                     const kd_onnx_attr *attrs, size_t n_attrs, const char **out,
                                     kd_err *err) {
    return em->ops->node(em, op, inputs, n_inputs, attrs, n_attrs, out, err);
}

/* ---- C: the generated forward runs one block per layer on a per-sample input `x`
 * (const float *; for a merge also `xs[k]`, its k-th input) into `y` (float *), each value in
 * the scratch memory the exporter plans by liveness; identifiers written as `$name` in the code
 * and helper text get the export's prefix ("fmnist_name"). ---- */

typedef struct kd_c_emitter kd_c_emitter;
typedef struct {
    kd_status (*tensor)(kd_c_emitter *em, const char *suffix, const float *data, size_t rows,
                        size_t cols, kd_export_store store, const char **name, int *quantized,
                        kd_err *err);
    kd_status (*helper)(kd_c_emitter *em, const char *key, const char *text, kd_err *err);
    kd_status (*code)(kd_c_emitter *em, int in_place, const char *text, kd_err *err);
} kd_c_emitter_ops;
struct kd_c_emitter {
    const kd_c_emitter_ops *ops;
};

/* Writes a layer tensor as `static const` array(s) "$l<layer>_<suffix>" (rows x cols values):
 * float, or, for an int8 export of a MATRIX, `signed char` values plus "$l<layer>_<suffix>_scale"
 * [rows] floats (w = q * scale). *quantized says which; *name gets the array's identifier as
 * it appears in the code (with the `$`). */
static inline kd_status kd_c_tensor(kd_c_emitter *em, const char *suffix, const float *data,
                                    size_t rows, size_t cols, kd_export_store store,
                                    const char **name, int *quantized, kd_err *err) {
    return em->ops->tensor(em, suffix, data, rows, cols, store, name, quantized, err);
}
/* Adds a static helper function (its whole text, identifiers `$`-prefixed) once per key: a
 * second call with the same key adds nothing. */
static inline kd_status kd_c_helper(kd_c_emitter *em, const char *key, const char *text,
                                    kd_err *err) {
    return em->ops->helper(em, key, text, err);
}
/* Appends the layer's block to forward (once per layer): statements reading x (and xs) and
 * writing y. in_place: the statements also work with y == x (elementwise), so the exporter may
 * give y x's memory when nothing reads x afterwards. A layer that adds no block (flatten,
 * dropout) passes its input on unchanged. */
kd_status kd_c_code(kd_c_emitter *em, int in_place, kd_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* v as a C float literal that reads back to the same float ("0.00999999978f", "1.0f") into
 * buf (32 bytes suffice); returns buf. */
const char *kd_c_float(float v, char *buf, size_t cap);

#endif
