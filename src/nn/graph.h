/* graph.h - private to src/nn: a model's value edges (who reads what), the decisions taken from
 * them once at build time (which layer runs in place, which layers run fused as one unit), and
 * the batch-sized plans (kd_model_reserve) that forward and backward follow.
 *
 * Values: 0 is the model's input, k + 1 the output of layer k (n_layers + 1 in all). A value is
 * read by (layer, input slot) pairs; a merge may read one value twice. */
#ifndef KD_GRAPH_H
#define KD_GRAPH_H

#include "layer_impl.h"

typedef struct cJSON cJSON;

enum { GSLOT_NONE = -1, GSLOT_CALLER = -2 };

struct kd_graph {
    size_t n_values;
    size_t *n_readers;        /* (n_values) (layer, slot) pairs reading the value */
    size_t *last_reader;      /* (n_values) the last layer reading it; SIZE_MAX: none */
    unsigned char *observed;  /* (n_values) kd_model_observe asked for it */
    unsigned char *in_place;  /* (n_layers) a training model gives the layer its input's buffer */
    unsigned char *unit;      /* (n_layers) layers run as one unit from here: 1, 3 (a fused
                               * group), 4 (a convolution and the group after it; the group's
                               * own entry still says 3), or, in an inference-only model,
                               * KD_UNIT_CONV_BN | 2 or 3 (a convolution, its batch norm and
                               * the relu or relu6 after it) */
    unsigned char *recompute; /* (n_layers) training: the batch norm unit at i keeps no output.
                               * Its output lives in one buffer all such units share, from
                               * forward until layer i + 2, its only reader, has read it;
                               * backward writes it again from the kept input just before that
                               * reader's backward (plan.c, exec.c) */
    size_t n_xs;              /* the sum of the layers' n_in */
    const float **xs;         /* (n_xs) merges' input pointers, by layer (no malloc per step) */
    size_t *xs_at;            /* (n_layers) each layer's first entry in xs */

    /* Batch memory (kd_model_reserve). */
    float **val;              /* (n_values) a pass's buffer of each value (val[0]: the caller's x) */
    size_t n_pool;            /* inference: chunk buffers the values take turns in */
    int *pool_of;             /* (n_values) inference: the value's chunk buffer, -1 none */
    float **gathered;         /* (n_values) inference: an observed value for the whole batch */
    /* Inference replicas: up to n_rep threads run sample ranges through the whole model at
     * once, one chunk at a time each (no barrier per layer). Replica r > 0 has its own chunk
     * buffers (r * rep_act floats past replica 0's), layer caches (r * rep_cache past
     * l->cache), workspace (r * rep_ws past m->workspace) and tables rep_val / rep_xs. */
    size_t n_rep, rep_act, rep_cache, rep_ws;
    float **rep_val;          /* ((n_rep - 1) * n_values) replicas 1..: their value buffers */
    const float **rep_xs;     /* ((n_rep - 1) * n_xs) replicas 1..: merges' input pointers */
    float **obs_grad;         /* (n_values) training: the caller's gradient at an observed value */
    size_t n_slots;           /* backward's gradient buffers, (batch_cap, max numel) each, the
                               * last one a scratch for gradients that are added, not written */
    float **slot;             /* (n_slots) */
    unsigned char *slot_busy; /* (n_slots) */
    int *gslot;               /* (n_values) backward: the slot holding the value's gradient so
                               * far; GSLOT_NONE, or GSLOT_CALLER for the caller's memory */
};

/* Reads every layer's "name" and "from" (spec i is layers' i-th object, already typed) into
 * l->name, l->n_in, l->src and l->ins, checking them: a from that names a later or missing
 * value, a duplicate or illegal name, a list where one value is read or one value where a merge
 * reads several. Called layer by layer, before the layer's configure (the shapes of earlier
 * layers are known). */
kd_status kd_graph_read_edges(kd_model *m, size_t i, const cJSON *spec, kd_err *err);
/* Allocates m->graph and takes the build-time decisions (readers, in place, units). */
kd_status kd_graph_init(kd_model *m, kd_err *err);
/* Recomputes in-place and unit decisions (after kd_model_observe). */
void kd_graph_decide(kd_model *m);
void kd_graph_free_batch(kd_graph *g);
/* Frees the model's batch-sized memory (plan.c); batch_cap becomes 0. */
void kd_model_free_batch(kd_model *m);
void kd_graph_free(kd_graph *g);
/* Writes layer i's "name" and "from" into its arch object; 0, or -1 out of memory. */
int kd_graph_describe(const kd_model *m, size_t i, cJSON *obj);
/* The value id of layer i's k-th input's producer, as text for messages ("input", a name, "3"). */
const char *kd_graph_value_label(const kd_model *m, size_t v, char *buf, size_t cap);

/* The flag of a convolution's unit whose batch norm (and activation) each sample passes through
 * while it is in cache (inference only: batchnorm.c, kd_conv_bn_act_forward); the low bits give
 * the unit's length. The unit writes only its output's buffer: the convolution's output goes there
 * and batch norm and the activation work on it in place. */
#define KD_UNIT_CONV_BN 0x40
/* The flag of an add whose relu runs in place over its output: forward as one pass
 * (kd_add_relu_forward), backward layer by layer. */
#define KD_UNIT_ADD_RELU 0x20
/* The flag of a training model's batchnorm whose relu or relu6 runs in place over its output:
 * forward and backward as one (kd_bn_act_train_forward / _backward). */
#define KD_UNIT_BN_RELU 0x80
/* Both flags a convolution's unit never has otherwise: an inference model's convolution, its
 * batch norm and the add of two values after them, with the add's relu (length 3 or 4); the
 * add's other value (the residual) is added to each output as it is stored
 * (kd_conv_bn_add_forward). */
#define KD_UNIT_CONV_ADD (KD_UNIT_CONV_BN | KD_UNIT_ADD_RELU)
static inline int kd_unit_is_conv_add(const kd_graph *g, size_t i) {
    return (g->unit[i] & KD_UNIT_CONV_ADD) == KD_UNIT_CONV_ADD;
}
static inline size_t kd_unit_len(const kd_graph *g, size_t i) { return g->unit[i] & 0x1f; }

/* Per-sample floats of value v. */
static inline size_t kd_value_numel(const kd_model *m, size_t v) {
    return kd_shape_numel(v ? &m->layers[v - 1].out : &m->input);
}

/* Whether a training model's layer i writes its output over its input's buffer. */
static inline int kd_runs_in_place(const kd_model *m, size_t i) { return m->graph->in_place[i]; }

/* Gradient slots backward needs for this model (its walks, dry; exec.c), and in *need (malloc'd,
 * the caller frees) the floats per sample each holds at most; 0 and NULL when out of memory.
 * The last slot is the scratch for gradients added into a value's. */
size_t kd_graph_backward_slots(kd_model *m, size_t **need);

#endif
