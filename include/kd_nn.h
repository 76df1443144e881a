/* kd_nn.h - layers and sequential models (torch.nn.Sequential layout).
 *
 * A model is an input shape plus a list of layers. Activations count as list entries, so
 * parameter names are "<index>.weight" / "<index>.bias" exactly as in PyTorch's state_dict.
 * All trainable parameters live in one 64-byte-aligned buffer; gradients and optimizer
 * moments use the same layout. Non-trainable state (batch-norm running statistics) lives in a
 * second flat buffer. Activations and scratch are sized once per batch size (kd_model_reserve):
 * nothing is allocated inside forward/backward. */
#ifndef KD_NN_H
#define KD_NN_H

#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"
#include "kd_rng.h"
#include "kd_shape.h"

typedef struct cJSON cJSON;

/* What a layer tensor is, for naming, saving and the optimizer. */
typedef enum {
    KD_TENSOR_PARAM,     /* trainable float, in model->params (grads/moments alongside) */
    KD_TENSOR_BUFFER,    /* non-trainable float, in model->buffers (running_mean, running_var) */
    KD_TENSOR_COUNTER    /* a single int64 (num_batches_tracked), stored in the layer */
} kd_tensor_kind;

/* One named tensor of a model ("0.weight"). data points into the model's buffers. The layer
 * that declared it is recorded here, so nobody parses it back out of the name. */
typedef struct {
    char name[48];
    kd_tensor_kind kind;
    kd_shape shape;      /* full tensor shape, e.g. {2, {out, in}} for a dense weight */
    size_t layer;        /* index of the layer that declared it (the "<index>." of the name) */
    int quantise;        /* int8 export stores it as int8 rows (rows = shape[0]) + per-row scales */
    size_t offset;       /* offset in floats into params (PARAM) or buffers (BUFFER) */
    size_t numel;
    float *data;         /* PARAM/BUFFER: the values; COUNTER: NULL */
    int64_t *counter;    /* COUNTER: the value; otherwise NULL */
} kd_tensor;

typedef struct kd_layer kd_layer;
/* A layer's tensor declaration (src/nn/layer_impl.h). */
typedef struct kd_tensor_decl kd_tensor_decl;
/* The deployment exporters' emitter contexts: defined by each exporter, opaque to the layers,
 * which add their nodes / code through the exporter's functions. */
typedef struct kd_onnx_emitter kd_onnx_emitter;
typedef struct kd_c_emitter kd_c_emitter;

/* Everything a layer may touch during a step besides its own tensors. */
typedef struct {
    int training;        /* dropout active, batch-norm uses batch statistics */
    kd_rng *rng;         /* dropout masks (only used when training) */
    float *workspace;    /* shared scratch (set by kd_model_forward/backward from the model) */
} kd_ctx;

/* One table of operations per layer type (one per file in src/nn; the list of types is in
 * layer.c). Every pointer but configure, forward and backward is optional: NULL means "none" /
 * 0 / nothing to do. Writing a layer: see src/nn/layer_impl.h. */
typedef struct {
    const char *type;  /* JSON "type" and the name shown to users */
    /* Bytes of the type's private hyperparameter struct: the model gives each layer that much
     * zeroed memory at l->hp before configure and frees it with the model (0: l->hp is NULL). */
    size_t hp_size;
    /* Reads hyperparameters from spec (already checked to be an object with a known "type")
     * into l->hp, computes l->out from l->in. Errors name the layer: "layer 3 (dense): ...". */
    kd_status (*configure)(kd_layer *l, const cJSON *spec, kd_err *err);
    /* Declares the layer's tensors in state_dict order into out[0..]; returns the count (at most
     * KD_LAYER_MAX_TENSORS). The model names them "<index>.<name>", gives them storage and sets
     * l->t[i] / l->dt[i] / l->count[i] for the i-th declared tensor. */
    int (*tensors)(const kd_layer *l, kd_tensor_decl *out);
    /* Scratch floats kept from forward to backward for batch B (masks, normalised inputs). */
    size_t (*cache_floats)(const kd_layer *l, size_t B);
    /* Shared workspace floats needed during forward or backward for batch B (im2col columns). */
    size_t (*workspace_floats)(const kd_layer *l, size_t B);
    /* Initialises the layer's tensors (He/Xavier from rng; running stats to 0/1). */
    void (*init)(kd_layer *l, kd_rng *rng, int xavier);
    /* y (B, out) from x (B, in). */
    void (*forward)(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx);
    /* Given x, y from forward and dy, ACCUMULATES parameter gradients into l->dt[i] and
     * writes dx (B, in); dx may be NULL (first layer: input gradient not needed). */
    void (*backward)(kd_layer *l, const float *x, const float *y, const float *dy, float *dx,
                     size_t B, kd_ctx *ctx);
    /* Writes the JSON spec back (for the arch string): adds fields to obj (type is added by
     * the model). */
    void (*describe)(const kd_layer *l, cJSON *obj);
    /* Multiply-accumulates per sample in forward (for FLOP accounting). */
    size_t (*macs)(const kd_layer *l);
    /* Deployment formats, one slot each, called by the exporter in layer order (no switch on
     * the type there): append this layer's computation to the emitter em (ONNX opset 13 nodes
     * and initializers / C99 code and constant arrays), reading the layer's hyperparameters
     * and its tensors l->t[i]. The emitter knows the current input name and shape and offers
     * the functions to add to it. Return KD_OK or an error naming the layer (kd_layer_err).
     * NULL: the format cannot express this layer; the exporter says so and names the layer. */
    kd_status (*export_onnx)(const kd_layer *l, kd_onnx_emitter *em, kd_err *err);
    kd_status (*export_c)(const kd_layer *l, kd_c_emitter *em, kd_err *err);
} kd_layer_ops;

#define KD_LAYER_MAX_TENSORS 5

/* A layer of a model. Other modules read ops->type, index, in and out; the rest belongs to
 * the layer implementations and the model. (kd_layer_ops and this struct stay in the public
 * header only because src/cli/info.c reads l->ops->type and l->out directly; with an accessor
 * there they could move into src/nn/layer_impl.h with the other layer internals.) */
struct kd_layer {
    const kd_layer_ops *ops;
    int index;             /* position in the model's list */
    kd_shape in, out;      /* per-sample shapes */
    void *hp;              /* the type's own hyperparameters (ops->hp_size bytes; model-owned) */
    /* The declared tensors, by declaration position (set by the model after allocation). */
    int n_tensors;
    float *t[KD_LAYER_MAX_TENSORS];      /* values (PARAM, BUFFER); NULL for a COUNTER */
    float *dt[KD_LAYER_MAX_TENSORS];     /* gradient of a PARAM; NULL otherwise and in
                                          * inference-only models */
    int64_t count[KD_LAYER_MAX_TENSORS]; /* value of a COUNTER (num_batches_tracked) */
    float *cache;          /* cache_floats(l, batch_cap) floats, owned by the model */
};

typedef enum { KD_INIT_HE = 0, KD_INIT_XAVIER = 1 } kd_init_kind;

typedef struct {
    kd_shape input;
    size_t n_layers;
    kd_layer *layers;
    size_t n_classes;        /* numel of the last layer's output */

    size_t n_tensors;
    kd_tensor *tensors;      /* in state_dict order: by layer, then weight, bias, buffers */

    size_t n_params;         /* trainable floats */
    float *params;           /* (n_params) */
    float *grads;            /* (n_params) or NULL when built without training state */
    float *m, *v;            /* optimizer moments (n_params) or NULL */
    size_t n_buffers;
    float *buffers;          /* (n_buffers) non-trainable floats */

    /* Batch-sized memory (kd_model_reserve). */
    size_t batch_cap;
    float **acts;            /* acts[i] = output of layer i, (batch_cap, numel(out_i)) */
    float *act_mem;
    float *grad_a, *grad_b;  /* ping-pong activation gradients, (batch_cap, max numel) */
    float *cache_mem;
    float *workspace;
} kd_model;

/* Builds a model from an input shape and a JSON array of layer specs
 * ([{"type":"dense","units":1200}, {"type":"relu"}, ...]). with_grads = 0 builds an
 * inference-only model (teacher): no gradient or optimizer buffers. Parameters are zero until
 * kd_model_init_weights or a checkpoint load. Errors (unknown type, bad field, zero units,
 * shape mismatch) name the layer index; status KD_EUSAGE. */
kd_status kd_model_init(kd_model *m, const kd_shape *input, const cJSON *layers, int with_grads,
                        kd_err *err);
/* Same, from an arch JSON string {"input":[...],"layers":[...]} (as stored in checkpoints). */
kd_status kd_model_init_arch(kd_model *m, const char *arch_json, int with_grads, kd_err *err);
void kd_model_free(kd_model *m);  /* NULL-safe, idempotent on a zeroed model */

/* Canonical arch JSON {"input":[...],"layers":[{"type":...},...]}; malloc'd, caller frees. */
char *kd_model_arch_json(const kd_model *m);

/* Seeded He (default) or Xavier initialisation of all parameters; buffers to their defaults. */
void kd_model_init_weights(kd_model *m, kd_rng *rng, kd_init_kind kind);

/* Allocates activations/caches/workspace for batches up to B (no-op if already >= B). */
kd_status kd_model_reserve(kd_model *m, size_t B, kd_err *err);

/* Forward over B <= batch_cap samples x (B, numel(input)); returns logits (B, n_classes),
 * valid until the next forward. */
const float *kd_model_forward(kd_model *m, const float *x, size_t B, kd_ctx *ctx);
/* Backward from dlogits (B, n_classes) after a training forward on the same x; ACCUMULATES
 * into m->grads (call kd_model_zero_grad first). */
void kd_model_backward(kd_model *m, const float *x, const float *dlogits, size_t B, kd_ctx *ctx);
void kd_model_zero_grad(kd_model *m);
/* Index of the first layer with a trainable tensor (n_layers if none): backward stops there,
 * since nothing before it has parameters and its input gradient is not needed. */
size_t kd_model_first_trainable(const kd_model *m);

/* Finds a tensor by name ("2.weight"); NULL if absent. */
kd_tensor *kd_model_tensor(kd_model *m, const char *name);
/* Total forward multiply-accumulates per sample. */
size_t kd_model_macs(const kd_model *m);
/* Multi-line human description: one line per layer with output shape and parameter count. */
void kd_model_print(const kd_model *m, FILE *f);

#endif
