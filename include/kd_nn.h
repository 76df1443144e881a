/* kd_nn.h - layers and models: a list of layers with value edges (torch.nn layout).
 *
 * A model is an input shape plus a list of layers. Activations count as list entries, so an
 * unnamed layer's parameters are "<index>.weight" / "<index>.bias" exactly as in an
 * nn.Sequential's state_dict; a layer with a "name" gets "<name>.weight", so names that follow a
 * module tree ("layer1.0.conv1") load torchvision's state_dicts. A layer reads the previous
 * layer's output unless its "from" names an earlier value ("input", a layer's name or index);
 * merges (add, concat) read several. The list order is the execution order; the last layer's
 * output is the model's.
 * All trainable parameters live in one 64-byte-aligned buffer; gradients and optimizer
 * moments use the same layout. Non-trainable state (batch-norm running statistics) lives in a
 * second flat buffer. Activations and scratch are sized once per batch size (kd_model_reserve):
 * nothing is allocated inside forward/backward. */
#ifndef KD_NN_H
#define KD_NN_H

#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"
#include "kd_emit.h"
#include "kd_rng.h"
#include "kd_shape.h"


/* What a layer tensor is, for naming, saving and the optimizer. */
typedef enum {
    KD_TENSOR_PARAM,     /* trainable float, in model->params (grads/moments alongside) */
    KD_TENSOR_BUFFER,    /* non-trainable float, in model->buffers (running_mean, running_var) */
    KD_TENSOR_COUNTER    /* a single int64 (num_batches_tracked), stored in the layer */
} kd_tensor_kind;

/* One named tensor of a model ("0.weight"). data points into the model's buffers. The layer
 * that declared it is recorded here, so nobody parses it back out of the name. */
/* Longest layer name, and longest tensor name ("<name>.<suffix>", the suffix at most 31). */
#define KD_LAYER_NAME_MAX 96
#define KD_TENSOR_NAME_MAX 128

typedef struct {
    char name[KD_TENSOR_NAME_MAX];
    kd_tensor_kind kind;
    kd_shape shape;      /* full tensor shape, e.g. {2, {out, in}} for a dense weight */
    size_t layer;        /* index of the layer that declared it; n_layers for a tensor of no
                          * layer (kd_model_add_param: a loss's adapter) */
    int quantize;        /* int8 export stores it as int8 rows (rows = shape[0]) + per-row scales */
    size_t offset;       /* offset in floats into params (PARAM) or buffers (BUFFER) */
    size_t numel;
    float *data;         /* PARAM/BUFFER: the values; COUNTER: NULL */
    int64_t *counter;    /* COUNTER: the value; otherwise NULL */
} kd_tensor;

typedef struct kd_layer kd_layer;  /* opaque outside src/nn (layer_impl.h) */
typedef struct kd_graph kd_graph;  /* the model's value edges and plans, private to src/nn */
/* Everything a layer may touch during a step besides its own tensors. */
typedef struct {
    int training;        /* dropout active, batch-norm uses batch statistics */
    kd_rng *rng;         /* dropout masks (only used when training) */
    float *workspace;    /* shared scratch (set by kd_model_forward/backward from the model) */
    size_t cache_shift;  /* an inference replica's layer caches: floats past l->cache (src/nn) */
    /* One sample's inference split among a team (src/nn/exec.c): this thread computes band
     * `band` of `bands` of every banded unit's output; bands 0: not split. */
    size_t band, bands;
} kd_ctx;

/* Data-parallel training (src/train/dataparallel.c over kd_dist.h): the model is one rank's
 * replica and a training step's batch is that rank's shard, rows [row0, row0 + B) of a global
 * batch of `rows` rows. Layers whose training result depends on the whole batch use it: dropout
 * draws the masks of all `rows` rows from the one RNG stream, as a single process would, and
 * keeps its own rows' (so the RNG stays the same on every rank); batch norm sums its statistics
 * over the ranks (SyncBatchNorm). Evaluation ignores it. */
typedef struct {
    size_t row0, rows;
    /* v[0..n) <- the element-wise sum of every rank's v, the same bits on every rank; every
     * rank calls it at the same point of the step. */
    void (*sum)(double *v, size_t n);
} kd_shard;

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
    size_t chunk;            /* samples per pass through the layers: batch_cap, or fewer in an
                              * inference-only model (kd_model_reserve) */
    float **acts;            /* acts[i] = output of layer i, (chunk, numel(out_i)); the last
                              * layer's (batch_cap, n_classes); for the batch norm of a fused
                              * batchnorm -> maxpool -> relu group in a training model, the
                              * pooling windows' winning inputs instead */
    float *act_mem;
    float *grad_a, *grad_b;  /* the first two gradient slots of backward, (batch_cap, max numel) */
    float *cache_mem;
    float *workspace;
    kd_graph *graph;         /* edges, readers, in-place and fusion decisions, gradient slots */
} kd_model;

/* Builds a model from an input shape and the JSON text of an array of layer specs
 * ('[{"type":"dense","units":1200}, {"type":"relu"}, ...]'; NULL or invalid JSON: KD_EUSAGE);
 * every spec may carry "name" and "from" (see the top of this file). with_grads = 0 builds an
 * inference-only model (teacher): no gradient or optimizer buffers. Parameters are zero until
 * kd_model_init_weights or a checkpoint load. Errors (unknown type, bad field, zero units,
 * shape mismatch) name the layer index; status KD_EUSAGE. */
kd_status kd_model_init(kd_model *m, const kd_shape *input, const char *layers_json,
                        int with_grads, kd_err *err);
/* Same, from an arch JSON string {"input":[...],"layers":[...]} (as stored in checkpoints). */
kd_status kd_model_init_arch(kd_model *m, const char *arch_json, int with_grads, kd_err *err);
/* The same, refusing (KD_EUSAGE, before allocating) an architecture with more than max_values
 * parameter and buffer values: a checkpoint's "arch" cannot make us allocate more than its
 * data section could hold (every value takes at least one byte there). */
kd_status kd_model_init_arch_capped(kd_model *m, const char *arch_json, int with_grads,
                                    size_t max_values, kd_err *err);
void kd_model_free(kd_model *m);  /* NULL-safe, idempotent on a zeroed model */

/* Canonical arch JSON {"input":[...],"layers":[{"type":...},...]}; malloc'd, caller frees. */
char *kd_model_arch_json(const kd_model *m);

/* Seeded He (default) or Xavier initialisation of all parameters; buffers to their defaults. */
void kd_model_init_weights(kd_model *m, kd_rng *rng, kd_init_kind kind);

/* Makes m a data-parallel replica whose training batches are the shards sh describes (read at
 * every training forward and backward, so the caller updates *sh between steps); NULL: one
 * process. sh must outlive its use. */
void kd_model_set_shard(kd_model *m, const kd_shard *sh);

/* Allocates activations/caches/workspace for batches up to B (no-op if already >= B). A model
 * with gradients keeps every layer's output for backward. An inference-only model reuses a
 * value's buffer after its last reader (liveness over the list), and runs a larger batch through
 * the whole network in chunks small enough for its buffers to stay in the CPU's cache
 * (evaluation treats samples independently, so the chunks give the whole batch's logits). */
kd_status kd_model_reserve(kd_model *m, size_t B, kd_err *err);
/* Freezes an inference-only model (no gradients) whose parameters and buffers are final: layers
 * whose inference kernels read their weights in another order keep a copy in that order, made
 * here once instead of on every forward (conv2d on an AVX-512 CPU: 32 or 64 output channels in
 * the vector lanes). Nothing may write the parameters afterwards (a forward would not see it).
 * Costs those copies' memory (ResNet-18: its 44 MB of weights again) and, when the model was
 * reserved, reserves its batch memory again for the kernels' workspace. Freezing twice changes
 * nothing. Errors: KD_EIO out of memory (copying: nothing frozen; reserving again: the batch
 * memory released, as a failed kd_model_reserve leaves it). */
kd_status kd_model_freeze(kd_model *m, kd_err *err);
/* Layers holding a frozen copy (0 before kd_model_freeze, or where no layer gains one). */
size_t kd_model_frozen_layers(const kd_model *m);

/* Inner values. Before the first kd_model_reserve, a caller declares the layer outputs it wants
 * to observe, by layer name or index as text ("3"); *id is the value's handle and *shape its
 * per-sample shape (a reserved model is reserved again for its batch size, its batch-sized
 * memory then new). An observed value stays out of fusion and in-place reuse. After a
 * forward, kd_model_value gives it for the whole batch (B, numel(shape)), valid until the next
 * forward. In a training model, kd_model_value_grad gives a (B, numel) buffer, zeroed by every
 * training forward, into which the caller may add a gradient before backward: backward adds it
 * to the gradient reaching the value from the layers that read it. */
kd_status kd_model_observe(kd_model *m, const char *value, size_t *id, kd_shape *shape,
                           kd_err *err);
const float *kd_model_value(const kd_model *m, size_t id);
float *kd_model_value_grad(kd_model *m, size_t id);

/* Forward over B <= batch_cap samples x (B, numel(input)); returns logits (B, n_classes),
 * valid until the next forward. */
const float *kd_model_forward(kd_model *m, const float *x, size_t B, kd_ctx *ctx);
/* Backward from dlogits (B, n_classes) after a training forward on the same x; ACCUMULATES
 * into m->grads (call kd_model_zero_grad first). */
void kd_model_backward(kd_model *m, const float *x, const float *dlogits, size_t B, kd_ctx *ctx);
void kd_model_zero_grad(kd_model *m);
/* Appends a trainable tensor of no layer (a feature loss's adapter, "adapters.<key>.weight"),
 * zero, to the one parameter buffer after the layers' parameters, so the optimizer, gradient
 * zeroing, checkpoints and the data-parallel sums carry it; it is not part of the architecture
 * (exports, which rebuild the model from its arch, never see it). Every parameter, gradient and
 * moment moves: pointers into them taken before are stale. KD_EUSAGE for a name in use. */
kd_status kd_model_add_param(kd_model *m, const char *name, const kd_shape *shape, kd_err *err);
/* Index of the first layer with a trainable tensor (n_layers if none): backward stops there,
 * since nothing before it has parameters and its input gradient is not needed. */
size_t kd_model_first_trainable(const kd_model *m);

/* Layer i's type name ("dense") and per-sample output shape, i < m->n_layers. */
const char *kd_model_layer_type(const kd_model *m, size_t i);
kd_shape kd_model_layer_out(const kd_model *m, size_t i);
/* Layer i's name (NULL when unnamed) and its inputs: *n values, each 0 for the model's input or
 * k + 1 for layer k's output. */
const char *kd_model_layer_name(const kd_model *m, size_t i);
const size_t *kd_model_layer_inputs(const kd_model *m, size_t i, size_t *n);
/* The index of the last layer that reads value v (0 = the input, k + 1 = layer k's output);
 * SIZE_MAX when none does. */
size_t kd_model_value_last_reader(const kd_model *m, size_t v);
/* Deployment export of layer i < m->n_layers (the exporters in src/export walk the layers and
 * call these): runs the layer type's export_onnx / export_c slot on the emitter (kd_emit.h).
 * A type without the slot is a KD_EUSAGE error naming the layer and the format. */
kd_status kd_model_layer_export_onnx(const kd_model *m, size_t i, kd_onnx_emitter *em,
                                     kd_err *err);
kd_status kd_model_layer_export_c(const kd_model *m, size_t i, kd_c_emitter *em, kd_err *err);
/* Finds a tensor by name ("2.weight", "layer1.0.conv1.weight"); NULL if absent. */
kd_tensor *kd_model_tensor(kd_model *m, const char *name);
/* Total forward multiply-accumulates per sample. */
size_t kd_model_macs(const kd_model *m);
/* Multi-line human description: one line per layer with output shape and parameter count. */
void kd_model_print(const kd_model *m, FILE *f);

#endif
