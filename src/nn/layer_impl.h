/* layer_impl.h - private to src/nn: what a layer implementation needs (tensor declarations,
 * JSON spec readers, initialisation, vectorisation helpers) and the table of layer types.
 *
 * Adding a layer type: one file src/nn/<type>.c with a private hyperparameter struct (its size
 * in ops.hp_size; configure fills it through l->hp), a tensors() list of kd_tensor_decl (the
 * model binds them by position: l->t[i] values, l->dt[i] gradient, l->count[i] counter), the
 * kernels, and one line in layer.c's table. Nothing else names the type. */
#ifndef KD_LAYER_IMPL_H
#define KD_LAYER_IMPL_H

#include <stdint.h>
#include <string.h>

#include "kd_nn.h"

/* One tensor a layer declares; the model prefixes "<index>." to name and assigns storage. */
struct kd_tensor_decl {
    const char *name;     /* state_dict suffix: "weight", "bias", "running_mean", ... */
    kd_tensor_kind kind;
    kd_shape shape;       /* full shape; a COUNTER is a 0-d scalar {0, {0}} as in PyTorch */
    int quantise;         /* int8 export quantises it per row (dense and conv weights only) */
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
