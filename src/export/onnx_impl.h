/* onnx_impl.h - private to src/export: the ONNX writer both exporters share (onnx_write.c): an
 * arena every message lives in until the write, nodes and initializers added by name, graph
 * inputs and outputs, and the model around a graph packed with protobuf-c and written
 * atomically. The float exporter (onnx.c) walks a kd_model's layers, the QDQ one (onnx_qdq.c) a
 * full-integer kd_qmodel's ops. */
#ifndef KD_ONNX_IMPL_H
#define KD_ONNX_IMPL_H

#include "export_impl.h"
#include "onnx.pb-c.h"

/* IR 7 / opset 13 (ONNX 1.8, 2020): every ONNX Runtime since 1.6 runs it. */
#define ONNX_IR_VERSION 7
#define ONNX_OPSET 13

typedef struct arena_block arena_block;

/* n zeroed bytes, aligned for any type; NULL on overflow or when memory runs out. */
void *kd_onnxw_alloc(arena_block **head, size_t n);
char *kd_onnxw_printf(arena_block **head, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void kd_onnxw_free_arena(arena_block *b);

/* An ONNX graph under construction: the float exporter's layer interface (base) and
 * everything added so far. */
typedef struct {
    kd_onnx_emitter base;      /* the layers' interface (kd_emit.h) */
    arena_block *arena;
    const kd_codec *codec;
    char layer[KD_LAYER_NAME_MAX + 16]; /* prefix of the current layer's names: "3", "preprocess" */
    int n_in_layer;            /* nodes added for the current layer, for unique names */
    const char *current;       /* the value the next node reads */
    const char **values;       /* (n_layers + 1) each model value's name: "input" after the
                                * preprocessing, then every layer's output */
    const size_t *src;         /* the current layer's inputs (value ids), (n_src) */
    size_t n_src;
    Onnx__NodeProto **nodes;   /* (cap_nodes), malloc'd */
    size_t n_nodes, cap_nodes;
    Onnx__TensorProto **inits; /* (cap_inits), malloc'd */
    size_t n_inits, cap_inits;
} kd_onnxw_emitter;

kd_status kd_onnxw_oom(kd_err *err);
/* The ONNX element type of a stored dtype (UNDEFINED for one ONNX cannot hold). */
int32_t kd_onnxw_type(kd_dtype t);
/* Adds an initializer holding bytes (copied) of the given element type and shape. */
kd_status kd_onnxw_init(kd_onnxw_emitter *em, const char *name, int32_t type,
                        const kd_shape *shape, const void *bytes, size_t n_bytes, kd_err *err);
/* Adds a node with one output, named out_name or "<layer>/<op>[_k]"; it becomes the current
 * value when set_current. */
kd_status kd_onnxw_node(kd_onnxw_emitter *em, const char *op, const char *const *inputs,
                        size_t n_inputs, const kd_onnx_attr *attrs, size_t n_attrs,
                        const char *out_name, int set_current, const char **out, kd_err *err);
/* Starts the nodes of a layer: their names begin with name. */
void kd_onnxw_begin_layer(kd_onnxw_emitter *em, const char *name);
/* A float tensor value [N, dims...] with a symbolic batch dimension. */
Onnx__ValueInfoProto *kd_onnxw_value_info(arena_block **a, const char *name, const kd_shape *s);

/* The emitter of the float exporter's layer interface (onnx.c), weights through codec; the
 * QDQ exporter uses it for the preprocessing. */
void kd_onnxw_emitter_init(kd_onnxw_emitter *em, const kd_codec *codec);
/* The recorded preprocessing as Mul and Add nodes on em->current (the raw input of shape
 * input); nothing for the identity. */
kd_status kd_onnxw_preprocess(kd_onnxw_emitter *em, const kd_shape *input,
                              const kd_export_pre *p, kd_err *err);

/* The model around em's nodes and initializers: graph input "input" (input), outputs "logits"
 * and "probabilities" [N, n_classes], doc, metadata_props (info's pairs, then distill_version,
 * dtype and, when scheme is not NULL, quantization), packed and written to path atomically. */
kd_status kd_onnxw_write_model(kd_onnxw_emitter *em, const char *path, const kd_shape *input,
                               size_t n_classes, const char *doc, const kd_export_info *info,
                               const char *dtype, const char *scheme, kd_err *err);
/* Frees em's arena and arrays. */
void kd_onnxw_free(kd_onnxw_emitter *em);

#endif
