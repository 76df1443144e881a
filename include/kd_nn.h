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
#include <string.h>
#include "kd_common.h"
#include "kd_rng.h"

typedef struct cJSON cJSON;

#define KD_MAX_RANK 4
/* Per-sample shape (no batch dimension): {784} for vectors, {C, H, W} for images. */
typedef struct {
    int rank;
    size_t d[KD_MAX_RANK];
} kd_shape;
size_t kd_shape_numel(const kd_shape *s);
/* "[1, 28, 28]" into buf; returns buf. */
const char *kd_shape_str(const kd_shape *s, char *buf, size_t cap);

/* What a layer tensor is, for naming, saving and the optimizer. */
typedef enum {
    KD_TENSOR_PARAM,     /* trainable float, in model->params (grads/moments alongside) */
    KD_TENSOR_BUFFER,    /* non-trainable float, in model->buffers (running_mean, running_var) */
    KD_TENSOR_COUNTER    /* a single int64 (num_batches_tracked), stored in the layer */
} kd_tensor_kind;

/* One named tensor of a model ("0.weight"). data points into the model's buffers. */
typedef struct {
    char name[48];
    kd_tensor_kind kind;
    kd_shape shape;      /* full tensor shape, e.g. {2, {out, in}} for a dense weight */
    size_t offset;       /* offset in floats into params (PARAM) or buffers (BUFFER) */
    size_t numel;
    float *data;         /* PARAM/BUFFER: the values; COUNTER: NULL */
    int64_t *counter;    /* COUNTER: the value; otherwise NULL */
} kd_tensor;

/* Layer hyperparameters, parsed from the JSON layer spec; each type uses the fields it needs. */
typedef struct {
    size_t units;              /* dense: output features */
    float slope;               /* leaky_relu: negative slope (default 0.01) */
    float p;                   /* dropout: drop probability in [0, 1) */
    size_t channels;           /* conv2d: output channels */
    size_t kh, kw;             /* conv2d/pools: kernel */
    size_t stride, padding;    /* conv2d/pools */
    int bias;                  /* dense/conv2d: has a bias (default 1) */
    float momentum, eps;       /* batchnorm */
} kd_layer_hp;

typedef struct kd_layer kd_layer;

/* Everything a layer may touch during a step besides its own tensors. */
typedef struct {
    int training;        /* dropout active, batch-norm uses batch statistics */
    kd_rng *rng;         /* dropout masks (only used when training) */
    float *workspace;    /* shared scratch (set by kd_model_forward/backward from the model) */
} kd_ctx;

/* One table of operations per layer type. tensors, cache_floats, workspace_floats, init,
 * describe and macs are optional: NULL means "none" / 0 / nothing to do. */
typedef struct {
    const char *type;  /* JSON "type" and the name shown to users */
    /* Reads hyperparameters from spec (already checked to be an object with a known "type"),
     * computes l->out from l->in. Errors name the layer index: "layer 3 (dense): ...". */
    kd_status (*configure)(kd_layer *l, const cJSON *spec, kd_err *err);
    /* Declares the layer's tensors (suffix "weight", kind, shape) into out[0..]; returns count
     * (at most 5). The model prefixes "<index>." and assigns storage. */
    int (*tensors)(const kd_layer *l, kd_tensor *out);
    /* Scratch floats kept from forward to backward for batch B (masks, normalised inputs). */
    size_t (*cache_floats)(const kd_layer *l, size_t B);
    /* Shared workspace floats needed during forward or backward for batch B (im2col columns). */
    size_t (*workspace_floats)(const kd_layer *l, size_t B);
    /* Initialises the layer's tensors (He/Xavier from rng; running stats to 0/1). */
    void (*init)(kd_layer *l, kd_rng *rng, int xavier);
    /* y (B, out) from x (B, in). */
    void (*forward)(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx);
    /* Given x, y from forward and dy, ACCUMULATES parameter gradients into l->grads views and
     * writes dx (B, in); dx may be NULL (first layer: input gradient not needed). */
    void (*backward)(kd_layer *l, const float *x, const float *y, const float *dy, float *dx,
                     size_t B, kd_ctx *ctx);
    /* Writes the JSON spec back (for the arch string): adds fields to obj (type is added by
     * the model). */
    void (*describe)(const kd_layer *l, cJSON *obj);
    /* Multiply-accumulates per sample in forward (for FLOP accounting). */
    size_t (*macs)(const kd_layer *l);
} kd_layer_ops;

struct kd_layer {
    const kd_layer_ops *ops;
    int index;             /* position in the model's list */
    kd_shape in, out;      /* per-sample shapes */
    kd_layer_hp hp;
    /* Views set by the model after allocation (NULL where the layer has none). */
    float *w, *b;          /* weight, bias (PARAM) */
    float *dw, *db;        /* their gradients (NULL in inference-only models) */
    float *bn_mean, *bn_var;  /* batchnorm running statistics (BUFFER) */
    int64_t n_batches;     /* batchnorm num_batches_tracked (COUNTER) */
    float *cache;          /* cache_floats(l, batch_cap) floats, owned by the model */
};

/* Looks up a layer type by name; NULL if unknown. */
const kd_layer_ops *kd_layer_find(const char *type);
/* Comma-separated list of known types, for error messages. */
const char *kd_layer_type_list(void);

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

/* Finds a tensor by name ("2.weight"); NULL if absent. */
kd_tensor *kd_model_tensor(kd_model *m, const char *name);
/* Total forward multiply-accumulates per sample. */
size_t kd_model_macs(const kd_model *m);
/* Multi-line human description: one line per layer with output shape and parameter count. */
void kd_model_print(const kd_model *m, FILE *f);

/* ---- Helpers for layer implementations (src/nn/layer.c) ----
 * Every message starts "layer <index> (<type>): " so the user finds the entry in the list. */

/* Sets err (KD_EUSAGE) to "layer <i> (<type>): <fmt...>"; returns KD_EUSAGE. */
kd_status kd_layer_err(const kd_layer *l, kd_err *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Rejects any key of spec other than "type" and the NULL-terminated list known (with a
 * did-you-mean suggestion for a near miss). */
kd_status kd_spec_check_fields(const kd_layer *l, const cJSON *spec, const char *const *known,
                               kd_err *err);
/* Reads an integer field in [lo, hi]. Absent: error if required, else *out = def. A
 * non-number, a fraction or an out-of-range value is an error that quotes the JSON value. */
kd_status kd_spec_size(const kd_layer *l, const cJSON *spec, const char *field, int required,
                       size_t def, size_t lo, size_t hi, size_t *out, kd_err *err);
/* Reads a finite number field with lo <= v < hi (hi_open) or lo <= v <= hi; absent -> def. */
kd_status kd_spec_float(const kd_layer *l, const cJSON *spec, const char *field, float def,
                        double lo, double hi, int hi_open, float *out, kd_err *err);
/* Reads a true/false field; absent -> def. */
kd_status kd_spec_bool(const kd_layer *l, const cJSON *spec, const char *field, int def,
                       int *out, kd_err *err);
/* Adds a float to a JSON object as the shortest decimal that reads back to the same float
 * ("0.01", not "0.0099999997764825821"), so arch strings stay readable and round-trip. */
void kd_spec_add_float(cJSON *obj, const char *field, float v);
/* The convolution family's "kernel": an integer or [kh, kw] (conv2d.c), read and written back. */
kd_status kd_spec_kernel(const kd_layer *l, const cJSON *spec, size_t *kh, size_t *kw,
                         kd_err *err);
void kd_spec_add_kernel(cJSON *obj, size_t kh, size_t kw);

/* Fills w[0..n) for a weight with the given fans:
 *   He (xavier = 0):     w ~ Normal(0, 1) * sqrt(2 / fan_in)        (ReLU nets; He et al. 2015)
 *   Xavier (xavier = 1): w ~ Uniform(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot 2010)
 * fan_in of a conv is in_channels * kh * kw, fan_out is out_channels * kh * kw. */
void kd_init_fill(float *w, size_t n, size_t fan_in, size_t fan_out, kd_rng *rng, int xavier);

/* v where cond (0 or 1) holds, else +0.0f, by masking v's bits: no branch (a branch on data
 * such as a random draw or a max-pool winner is mispredicted often) and no 0 * v (which would
 * turn an infinite v into NaN). */
static inline float kd_float_if(uint32_t cond, float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    u &= 0u - cond;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* Elementwise loop over i in [0, n) that GCC vectorises at -O2: its default "very cheap" cost
 * model only vectorises loops whose trip count is a known multiple of the vector width, so the
 * body runs in fixed blocks of 8 and then a scalar tail. Use restrict-qualified pointers in the
 * body (runtime alias checks are not "very cheap" either). */
#define KD_VEC_FOR(i, n, body)                                                             \
    do {                                                                                   \
        const size_t kd_n_ = (n), kd_nb_ = kd_n_ / 8 * 8;                                  \
        for (size_t kd_b_ = 0; kd_b_ < kd_nb_; kd_b_ += 8)                                 \
            for (size_t kd_k_ = 0; kd_k_ < 8; kd_k_++) {                                   \
                const size_t i = kd_b_ + kd_k_;                                            \
                body;                                                                      \
            }                                                                              \
        for (size_t i = kd_nb_; i < kd_n_; i++) {                                          \
            body;                                                                          \
        }                                                                                  \
    } while (0)

#endif
