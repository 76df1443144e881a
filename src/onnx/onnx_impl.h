/* onnx_impl.h - private to src/onnx: the translation state shared by the reader (import.c),
 * the tensor decoder (tensor.c), the name mapping (names.c) and the operator translators
 * (ops.c, ops_shape.c). */
#ifndef KD_ONNX_IMPL_H
#define KD_ONNX_IMPL_H

#include <cJSON.h>
#include <stdint.h>

#include "kd_onnx.h"
#include "onnx.pb-c.h"

/* The batch entry of a folded Shape result: the batch size is not known until run time. */
#define KD_ONNX_BATCH INT64_MIN

/* VAL_NONE: a node output not translated (yet); VAL_PAT: a step of the exact-GELU pattern
 * (Div, Erf, Add, Mul, Mul), computed by no layer until the pattern completes. */
typedef enum { VAL_NONE = 0, VAL_RUN, VAL_CONST, VAL_PAT } tr_kind;

/* One ONNX value. A computed value (VAL_RUN) is a distill value: the model's input or a layer's
 * output, under its distill name; its ONNX per-sample shape may differ from distill's in
 * trailing 1s only (GlobalAveragePool gives [C, 1, 1], distill's global_avgpool [C]), which
 * hold the same floats in the same order. A constant (VAL_CONST) holds its data. */
typedef struct {
    const char *name;      /* the ONNX name (borrowed from the unpacked file) */
    tr_kind kind;
    const char *dname;     /* VAL_RUN: "input" or the layer name (owned by the name table) */
    kd_shape shape;        /* VAL_RUN: ONNX per-sample shape; VAL_CONST: the whole tensor */
    kd_shape dshape;       /* VAL_RUN: distill's per-sample shape */
    int layer;             /* VAL_RUN: the layer that writes it (-1: the input) */
    int is_int;            /* VAL_CONST: int64 data in i, else floats in f */
    float *f;              /* (n) owned */
    int64_t *i;            /* (n) owned */
    size_t n;
    size_t readers;        /* node inputs that read it (a graph output counts as one) */
    size_t producer;       /* index + 1 of the node that writes it; 0: input or initializer */
    int affine;            /* VAL_RUN written by an affine layer: a following constant Mul, Add,
                            * Sub or Div folds into it; aw, ab index its queued weights */
    size_t aw, ab;
    int gelu;              /* 1..4: the stage of the exact GELU pattern this value completes;
                            * KD_ONNX_HSWISH: HardSigmoid(x) waiting for x * it */
    size_t gelu_of;        /* the value the GELU pattern started from */
} tr_value;

/* A tensor to copy into the model once it is built. */
typedef struct {
    char tensor[KD_TENSOR_NAME_MAX];
    float *data;           /* (n) owned */
    size_t n;
} tr_weight;

typedef struct {
    const Onnx__GraphProto *g;
    const char *dir;                /* folder of external data, or NULL */
    const kd_onnx_caps *caps;
    int64_t opset;
    tr_value *v;
    size_t n_v, cap_v;
    size_t input;                   /* index of the graph input's value */
    size_t *slot;                   /* hash of names: value index + 1, 0 empty */
    size_t n_slot;                  /* a power of two */
    char **used;                    /* distill names taken (open addressing, n_slot) */
    cJSON *layers;
    int n_layers;
    tr_weight *w;
    size_t n_w, cap_w;
    const Onnx__NodeProto *node;    /* the node being translated, for messages */
    size_t node_index;
    char *note;                     /* info's note buffer */
    size_t note_cap;
    kd_err *err;
} kd_onnx_tr;

/* ---- names.c ---- */
uint64_t kd_onnx_hash(const char *s);
/* A fresh distill name for ONNX value `onnx` (collision suffix added), recorded as taken;
 * NULL when out of memory. Owned by the caller. */
char *kd_onnx_tr_name(kd_onnx_tr *t, const char *onnx);

/* ---- import.c ---- */
/* The value named s, or NULL. */
tr_value *kd_onnx_tr_find(kd_onnx_tr *t, const char *s);
/* Defines value s (KD_EINPUT when already defined: two producers). */
kd_status kd_onnx_tr_define(kd_onnx_tr *t, const char *s, tr_value **out);
/* "node 3 'name' (Conv): " + message; KD_EINPUT. */
kd_status kd_onnx_node_err(kd_onnx_tr *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- ops_elem.c ---- */
/* The gelu stage of HardSigmoid(x) (alpha 1/6, beta 1/2) read only by x * it: HardSwish as
 * torch.onnx writes it below opset 14. */
#define KD_ONNX_HSWISH 10
/* The node after the current one that reads value v first; NULL when none. */
const Onnx__NodeProto *kd_onnx_next_reader(kd_onnx_tr *t, const tr_value *v);
/* Makes output 0 of nd a pattern step (VAL_PAT) of the given stage, started from value of. */
kd_status kd_onnx_pattern(kd_onnx_tr *t, const Onnx__NodeProto *nd, int stage, size_t of);

/* ---- tensor.c ---- */
/* Decodes a TensorProto into a constant value (floats for float types, int64 for integer
 * types), checking dims, caps and the data's length; external data from t->dir only. Errors
 * name the tensor. */
kd_status kd_onnx_tensor_decode(kd_onnx_tr *t, const Onnx__TensorProto *tp, tr_value *v);

/* ---- ops.c / ops_shape.c: one translator per operator ---- */
typedef kd_status (*kd_onnx_op_fn)(kd_onnx_tr *t, const Onnx__NodeProto *nd);
/* The translator of op_type (default domain), or NULL when unsupported. */
kd_onnx_op_fn kd_onnx_op_find(const char *op_type);
/* Input k of the current node (NULL when absent or ""; error when undefined is reported by
 * the reader beforehand). */
tr_value *kd_onnx_in(kd_onnx_tr *t, const Onnx__NodeProto *nd, size_t k);
/* Attribute lookups on the current node: 0 when absent (*out = def). */
const Onnx__AttributeProto *kd_onnx_get_attr(const Onnx__NodeProto *nd, const char *name);
int64_t kd_onnx_get_int(const Onnx__NodeProto *nd, const char *name, int64_t def);
float kd_onnx_get_float(const Onnx__NodeProto *nd, const char *name, float def);
/* Appends a layer {"type": type, fields of spec} named after output 0 of nd, reading the
 * distill values of ins[0..n_in); spec is consumed. The output value gets shape/dshape.
 * *out (may be NULL) the new value. */
kd_status kd_onnx_add_layer(kd_onnx_tr *t, const Onnx__NodeProto *nd, const char *type,
                            cJSON *spec, tr_value *const *ins, size_t n_in,
                            const kd_shape *shape, const kd_shape *dshape, tr_value **out);
/* A layer whose output is an intermediate value of a multi-layer translation, named after
 * output 0 of nd with a suffix (".0", ".1"): returns its distill name (owned by the table). */
kd_status kd_onnx_add_inner(kd_onnx_tr *t, const Onnx__NodeProto *nd, const char *suffix,
                            const char *type, cJSON *spec, const char *from,
                            const char **dname);
/* Queues floats data[0..n) (taken over; freed on failure) for "<layer>.<suffix>". */
kd_status kd_onnx_add_weight(kd_onnx_tr *t, const char *layer, const char *suffix, float *data,
                             size_t n);
/* Makes output 0 of nd another name of value src (Identity, Dropout, a no-op Reshape). */
kd_status kd_onnx_alias(kd_onnx_tr *t, const Onnx__NodeProto *nd, const tr_value *src,
                        const kd_shape *shape);

#endif
