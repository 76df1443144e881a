/* layer_impl.h - private to src/nn: what a layer implementation needs (tensor declarations,
 * JSON spec readers, initialisation, vectorisation helpers) and the table of layer types.
 *
 * Adding a layer type: one file src/nn/<type>.c with a private hyperparameter struct (its size
 * in ops.hp_size; configure fills it through l->hp), a tensors() list of kd_tensor_decl (the
 * model binds them by position: l->t[i] values, l->dt[i] gradient, l->count[i] counter), the
 * kernels, and one line in layer.c's table. A merge (several inputs) sets forward_merge and
 * backward_merge instead of forward and backward and reads its input shapes from l->ins in
 * configure (add.c, concat.c). Nothing else names the type but the fused units (fused.h),
 * which name the types they fuse. */
#ifndef KD_LAYER_IMPL_H
#define KD_LAYER_IMPL_H

#include <stdint.h>
#include <string.h>

#include "kd_emit.h"
#include "kd_nn.h"
#include "kd_threads.h"

typedef struct cJSON cJSON;

/* A layer's tensor declaration (defined below). */
typedef struct kd_tensor_decl kd_tensor_decl;
/* The deployment exporters' emitters (kd_onnx_emitter, kd_c_emitter) reach the layers through
 * the interface of kd_emit.h, which the exporters implement. */

/* One table of operations per layer type (one per file in src/nn; the list of types is in
 * layer.c). Every pointer but configure, forward and backward is optional: NULL means "none" /
 * 0 / nothing to do. Writing a layer: see src/nn/layer_impl.h. */
typedef struct {
    const char *type;  /* JSON "type" and the name shown to users */
    /* Bytes of the type's private hyperparameter struct: the model gives each layer that much
     * zeroed memory at l->hp before configure and frees it with the model (0: l->hp is NULL). */
    size_t hp_size;
    /* Reads hyperparameters from spec (already checked to be an object with a known "type";
     * "name" and "from" are the model's) into l->hp, computes l->out from l->in (l->ins for a
     * merge). Errors name the layer: "layer 3 (dense): ...". */
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
     * the model). Returns 0, or -1 when cJSON ran out of memory (the arch is then dropped,
     * never saved with a field missing). */
    int (*describe)(const kd_layer *l, cJSON *obj);
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
    /* Runs in place: forward accepts y == x (overwriting its input), and backward, handed its
     * output as x too (x == y), computes the same gradients. The model then lets the layer
     * write over the previous layer's output (kd_model_reserve says when). A merge sets it when
     * forward_merge accepts y == x[0] and backward_merge reads no input (add). */
    int in_place;
    /* backward reads its y (the layer's output), so no later layer may write over it. */
    int backward_reads_output;
    /* A reshape: the output is the input and the input gradient the output gradient, value for
     * value (flatten). A training model gives it its input's buffer whatever came before (it
     * writes nothing) and hands the output gradient on without calling its backward. */
    int view;
    /* Its evaluation forward is the identity (dropout, flatten): an inference-only model gives
     * it its input's buffer, so it copies nothing. */
    int eval_identity;
    /* Merges (add, concat) read l->n_in >= 2 values l->ins[k]; they set these two instead of
     * forward and backward. forward_merge: y from x[0 .. n_in). backward_merge: input k's
     * gradient from dy, written (accumulate = 0) or added (accumulate = 1) into dx. */
    void (*forward_merge)(kd_layer *l, const float *const *x, float *y, size_t B, kd_ctx *ctx);
    void (*backward_merge)(kd_layer *l, size_t k, const float *dy, float *dx, int accumulate,
                           size_t B, kd_ctx *ctx);
    /* Every input's gradient is dy itself (add): backward may hand dy's buffer on to one input
     * instead of copying it. */
    int grad_is_dy;
    /* A frozen model's copy of the layer's weights in its inference kernel's order
     * (kd_model_freeze): frozen_floats says how many floats (0: none, nothing gained here),
     * freeze writes them into dst from the layer's tensors. */
    size_t (*frozen_floats)(const kd_layer *l);
    void (*freeze)(const kd_layer *l, float *dst);
} kd_layer_ops;

#define KD_LAYER_MAX_TENSORS 5

/* A layer of a model: private to the layer implementations and the model (other modules use
 * kd_model_layer_type / kd_model_layer_out). */
struct kd_layer {
    const kd_layer_ops *ops;
    int index;             /* position in the model's list */
    kd_shape in, out;      /* per-sample shapes; in = ins[0] */
    char *name;            /* "layer1.0.conv1", or NULL: tensors are then "<index>.<suffix>" */
    size_t n_in;           /* values read: 1, or >= 2 for a merge */
    size_t *src;           /* (n_in) value ids: 0 the model's input, k + 1 layer k's output */
    kd_shape *ins;         /* (n_in) their per-sample shapes */
    void *hp;              /* the type's own hyperparameters (ops->hp_size bytes; model-owned) */
    /* The declared tensors, by declaration position (set by the model after allocation). */
    int n_tensors;
    float *t[KD_LAYER_MAX_TENSORS];      /* values (PARAM, BUFFER); NULL for a COUNTER */
    float *dt[KD_LAYER_MAX_TENSORS];     /* gradient of a PARAM; NULL otherwise and in
                                          * inference-only models */
    int64_t count[KD_LAYER_MAX_TENSORS]; /* value of a COUNTER (num_batches_tracked) */
    float *cache;          /* cache_floats(l, batch_cap) floats, owned by the model; a forward
                            * writes kd_layer_cache(l, ctx) (an inference replica's own copy) */
    const kd_shard *shard; /* data-parallel replica (kd_model_set_shard) or NULL */
    float *frozen;         /* ops->freeze's copy (kd_model_freeze; owned, 64-byte aligned) or
                            * NULL: an inference forward reads it instead of l->t */
};


/* One tensor a layer declares; the model prefixes "<index>." to name and assigns storage. */
struct kd_tensor_decl {
    const char *name;     /* state_dict suffix: "weight", "bias", "running_mean", ... */
    kd_tensor_kind kind;
    kd_shape shape;       /* full shape; a COUNTER is a 0-d scalar {0, {0}} as in PyTorch */
    int quantize;         /* int8 export quantizes it per row (dense and conv weights only) */
};

/* Looks up a layer type by name; NULL if unknown. */
const kd_layer_ops *kd_layer_find(const char *type);
/* Comma-separated list of known types, for error messages. */
const char *kd_layer_type_list(void);

/* ---- Spec readers. Every message starts "layer <index> (<type>): " so the user finds the
 * entry in the list. ---- */

/* Sets err (KD_EUSAGE) to "layer <i> (<type>): <fmt...>"; returns KD_EUSAGE. */
kd_status kd_layer_err(const kd_layer *l, kd_err *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Rejects any key of spec other than "type" and the NULL-terminated list known (with a
 * did-you-mean suggestion for a near miss, kd_suggest). */
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
int kd_spec_add_float(cJSON *obj, const char *field, float v);
/* Adds a size / a false bool; 0, or -1 when out of memory (as every kd_spec_add_*). */
int kd_spec_add_size(cJSON *obj, const char *field, size_t v);
int kd_spec_add_false(cJSON *obj, const char *field);
/* The convolution family's "kernel": an integer or [kh, kw] (conv2d.c, pool.c), each at most
 * KD_SPEC_MAX_KERNEL, read and written back. */
#define KD_SPEC_MAX_KERNEL ((size_t)1 << 12)
kd_status kd_spec_kernel(const kd_layer *l, const cJSON *spec, size_t *kh, size_t *kw,
                         kd_err *err);
int kd_spec_add_kernel(cJSON *obj, size_t kh, size_t kw);

/* Layer l's k-th declared tensor (l->t[k]) through a deployment exporter (kd_emit.h), named
 * by its declaration ("weight") and stored as the declaration says: a quantizable weight as a
 * matrix (int8 per output row), another parameter in the export dtype, a buffer as f32. */
kd_status kd_layer_onnx_tensor(const kd_layer *l, kd_onnx_emitter *em, int k, const char **name,
                               kd_err *err);
kd_status kd_layer_c_tensor(const kd_layer *l, kd_c_emitter *em, int k, const char **name,
                            int *quantized, kd_err *err);

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

/* relu and relu6 of one value, the comparisons in this order so a NaN passes through, as in
 * PyTorch (and the trainer's finite checks see it): the activations' own kernels and the fused
 * units that apply them (batchnorm.c) use these. */
static inline float kd_relu(float v) { return v < 0.0f ? 0.0f : v; }
static inline float kd_relu6(float v) { return v < 0.0f ? 0.0f : v > 6.0f ? 6.0f : v; }

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

/* Runs the statement(s) after `len` once per block [off, off + len) of [0, n), blocks of
 * KD_PAR_BLOCK floats shared by the OpenMP team in a static schedule (serial below kd_par_min).
 * For elementwise kernels: the statement calls a restrict-pointer kernel on the block, which
 * vectorises as in the serial code, and each element is computed the same way on any thread,
 * so the result does not depend on the thread count.
 *   KD_PAR_BLOCKS(n, o, k, relu_kernel(x + o, y + o, k)); */
#define KD_PAR_BLOCKS(n, off, len, ...)                                                    \
    do {                                                                                   \
        const size_t kd_pn_ = (n), kd_pnb_ = (kd_pn_ + KD_PAR_BLOCK - 1) / KD_PAR_BLOCK;   \
        const int kd_par_ = KD_PAR(kd_pn_);                                                \
        _Pragma("omp parallel for schedule(static) if (kd_par_)")                          \
        for (size_t kd_pb_ = 0; kd_pb_ < kd_pnb_; kd_pb_++) {                              \
            const size_t off = kd_pb_ * KD_PAR_BLOCK;                                      \
            const size_t len = kd_pn_ - off < KD_PAR_BLOCK ? kd_pn_ - off : KD_PAR_BLOCK;  \
            __VA_ARGS__;                                                                   \
        }                                                                                  \
    } while (0)

/* The units kd_model_forward / kd_model_backward run, for code that walks a model's layers
 * itself (the per-layer benchmark). Forward: kd_model_unit_size layers from layer i on (3 for a
 * fused batchnorm -> maxpool2d 2x2 -> relu group, 4 for a conv2d and the group after it, else
 * 1), from x (the input of layer i) to y (the output of its last layer); not a unit that
 * ends with an add (an inference model's residual unit: only kd_model_forward runs those).
 * Backward: the same units, layers kd_model_backward_unit_start(m, j) = i to j, from dy (the
 * gradient of layer j's output) to dx (that of layer i's input x, or NULL). */
size_t kd_model_unit_size(const kd_model *m, size_t i);
void kd_model_unit_forward(kd_model *m, size_t i, const float *x, float *y, size_t B,
                           kd_ctx *ctx);
size_t kd_model_backward_unit_start(const kd_model *m, size_t j);
void kd_model_unit_backward(kd_model *m, size_t i, size_t j, const float *x, const float *dy,
                            float *dx, size_t B, kd_ctx *ctx);

/* Backward through the units from dlogits down to the first trainable layer, or, with
 * dinput != NULL, through every layer down to the input's gradient (B, numel(input)), which it
 * writes. kd_model_backward is the first; the gradient checks use the second. */
void kd_model_backward_to(kd_model *m, const float *x, const float *dlogits, float *dinput,
                          size_t B, kd_ctx *ctx);

/* dst = src and dst = 0 over n floats, shared by the team as above (activation copies,
 * zeroed planes); a copy onto itself (an in-place layer) does nothing. */
void kd_par_copy(float *dst, const float *src, size_t n);
void kd_par_zero(float *dst, size_t n);

/* The cache a forward uses: the layer's own, or an inference replica's copy (plan.c gives each
 * replica its own, so threads running sample ranges at once never share one). */
static inline float *kd_layer_cache(const kd_layer *l, const kd_ctx *ctx) {
    return l->cache + ctx->cache_shift;
}

#endif
