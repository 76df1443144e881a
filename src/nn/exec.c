/* exec.c - running a model: forward over the units in list order, backward in reverse adding
 * each layer's input gradient into its input value's gradient (a value read by k layers gets the
 * sum of k gradients), and the inner values callers observe. */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fused.h"
#include "graph.h"
#include "kd_gemm.h"
#include "../core/test_hooks.h"

/* ---- Units: a fused group or one layer ---- */

size_t kd_model_unit_size(const kd_model *m, size_t i) { return kd_unit_len(m->graph, i); }

/* The unit from layer i; act_shift: floats from replica 0's chunk buffers to the running
 * replica's (a convolution's output inside a fused unit is one of them); res: the residual of a
 * KD_UNIT_CONV_ADD unit. */
static void unit_forward(kd_model *m, size_t i, const float *x, const float *res, float *y,
                         size_t B, size_t act_shift, kd_ctx *ctx) {
    kd_layer *l = &m->layers[i];
    if (kd_unit_is_conv_add(m->graph, i)) {
        KD_ASSERT(res);
        kd_conv_bn_add_forward(l, &l[1], kd_unit_len(m->graph, i) == 4 ? &l[3] : NULL, x, res, y,
                               B, ctx);
        return;
    }
    switch (m->graph->unit[i]) {
    case 4:
        kd_conv_bn_pool_relu_forward(l, &l[1], &l[2], x, m->acts[i] + act_shift, y,
                                     m->grads ? m->acts[i + 1] : NULL, B, ctx);
        break;
    case 3:
        kd_bn_pool_relu_forward(l, &l[1], x, y, m->grads ? m->acts[i] : NULL, B, ctx);
        break;
    default:
        if (m->graph->unit[i] & KD_UNIT_BN_RELU)
            kd_bn_act_train_forward(l, &l[1], x, y, B, ctx);
        else if (m->graph->unit[i] & KD_UNIT_CONV_BN)
            kd_conv_bn_act_forward(l, &l[1], kd_unit_len(m->graph, i) == 3 ? &l[2] : NULL, x, y,
                                   B, ctx);
        else
            l->ops->forward(l, x, y, B, ctx);
    }
}

void kd_model_unit_forward(kd_model *m, size_t i, const float *x, float *y, size_t B,
                           kd_ctx *ctx) {
    unit_forward(m, i, x, NULL, y, B, 0, ctx);
}

size_t kd_model_backward_unit_start(const kd_model *m, size_t j) {
    const unsigned char *u = m->graph->unit;
    if (j >= 1 && (u[j - 1] & KD_UNIT_BN_RELU)) return j - 1;
    if (j < 2 || u[j - 2] != 3) return j;
    return j >= 3 && u[j - 3] == 4 ? j - 3 : j - 2;
}

void kd_model_unit_backward(kd_model *m, size_t i, size_t j, const float *x, const float *dy,
                            float *dx, size_t B, kd_ctx *ctx) {
    kd_layer *l = &m->layers[i];
    const float *y = m->acts[j];
    if (i == j) {
        l->ops->backward(l, x, y, dy, dx, B, ctx);
    } else if (m->graph->unit[i] & KD_UNIT_BN_RELU) {
        kd_bn_act_train_backward(l, &l[1], x, y, dy, dx, B, ctx);
    } else if (m->graph->unit[i] == 3) {
        kd_bn_pool_relu_backward(l, &l[1], x, y, m->acts[i], dy, dx, B, ctx);
    } else {  /* conv2d, then the group */
        kd_conv_bn_pool_relu_backward(l, &l[1], &l[2], x, m->acts[i], y, m->acts[i + 1], dy, dx,
                                      B, ctx);
    }
}

/* ---- Forward ---- */

/* One sample through a model of at most this many multiply-adds runs on the calling thread
 * alone (kd_model_forward). */
#define ONE_SAMPLE_SERIAL_MACS 4e6

/* One replica's view of a forward pass: its value table, merges' input pointers, chunk
 * buffers (act_shift floats past replica 0's) and context. */
typedef struct {
    float **val;
    const float **xs;
    size_t act_shift;
    kd_ctx *ctx;
} fwd_pass;
static void run_unit(kd_model *m, size_t i, float *out, size_t nb, const fwd_pass *ps);

/* ---- One sample split among the team: a banded forward ----
 * The whole forward is one parallel region. A thread computes the same band of every banded
 * unit's output, its share of the positions of each channel plane, so that a convolution reads
 * what the same thread wrote but for the rows its kernel reaches across the band's edge (on
 * this 2-core Xeon, a layer whose input the other core wrote spent much of its time fetching
 * it: the small ResNet's 16-channel 28x28 layers on 2 threads split by channels took 42 us, on
 * one 40). A layer whose weights outweigh its planes splits its channels instead (each thread
 * reading half the weights: conv2d_frozen.c). Each thread runs with its replica's workspace
 * and layer caches (a batch norm folds into its own copy), a barrier after each unit; the
 * other units (pooling to a vector, dense) run on thread 0, in a row without barriers. One
 * sample on 2 threads of a Xeon: the small ResNet student 175-184 us layer by layer, 128-135
 * banded; ResNet-18 3.90-3.96 ms and 3.63-3.75 (docs/design.md). */

/* Whether unit i runs banded: a frozen convolution (with its batch norm, activation or
 * residual add: the packed kernel by positions), an add of planes (with its relu). */
static int unit_banded(const kd_model *m, size_t i) {
    const kd_layer *l = &m->layers[i];
    const unsigned char u = m->graph->unit[i];
    if (l->ops == &kd_layer_conv2d) return l->frozen && (u == 1 || (u & KD_UNIT_CONV_BN));
    return l->ops == &kd_layer_add && l->out.rank == 3 && (u == 1 || (u & KD_UNIT_ADD_RELU));
}

/* Floats of every unit's output but the logits, each 16-aligned: a banded forward gives each
 * its own buffer, in the replicas' chunk buffers (which it does not use otherwise), so that a
 * thread writes the lines it wrote on the previous sample (with buffers shared by turns, its
 * part of one value is lines another thread wrote as part of a value of another shape). */
static size_t band_floats(const kd_model *m) {
    size_t n = 0;
    for (size_t i = 0; i + kd_unit_len(m->graph, i) < m->n_layers; i += kd_unit_len(m->graph, i))
        n += (kd_shape_numel(&m->layers[i + kd_unit_len(m->graph, i) - 1].out) + 15) & ~(size_t)15;
    return n;
}

/* Threads a one-sample forward runs banded on, or 0: a frozen model whose banded units hold
 * nearly all of its multiply-adds (BANDED_MIN_SHARE), of more than ONE_SAMPLE_SERIAL_MACS, with
 * a replica's memory for each thread, no observed values and the team free. */
#define BANDED_MIN_SHARE 0.9
#ifdef KD_TEST_HOOKS
int kd_banded_forward = 1;
unsigned long kd_hook_banded_passes;
#endif
static size_t band_threads(const kd_model *m, const kd_ctx *ctx) {
    const kd_graph *g = m->graph;
    const size_t t = (size_t)omp_get_max_threads(), n = t < g->n_rep ? t : g->n_rep;
    if (n < 2 || (ctx && ctx->training) || omp_in_parallel() ||
        omp_get_max_active_levels() > 1 || !KD_HOOK_VALUE(kd_banded_forward, 1))
        return 0;
    for (size_t v = 1; g->gathered && v < g->n_values; v++)
        if (g->gathered[v]) return 0;
    double all = 0, banded = 0;
    for (size_t i = 0, len; i < m->n_layers; i += len) {
        len = kd_unit_len(g, i);
        double macs = 0;
        for (size_t k = i; k < i + len; k++)
            if (m->layers[k].ops->macs) macs += (double)m->layers[k].ops->macs(&m->layers[k]);
        all += macs;
        if (unit_banded(m, i)) banded += macs;
    }
    return all > ONE_SAMPLE_SERIAL_MACS && banded >= BANDED_MIN_SHARE * all &&
                   band_floats(m) <= g->n_rep * g->rep_act
               ? n
               : 0;
}

static const float *forward_banded(kd_model *m, const float *x, kd_ctx *ctx, size_t nt) {
    kd_graph *g = m->graph;
    kd_ctx eval_ctx = {0, NULL, NULL, 0, 0, 0};
    if (!ctx) ctx = &eval_ctx;
    const size_t last = m->n_layers - 1;
    KD_HOOK_RUN(kd_hook_banded_passes++);
#pragma omp parallel num_threads((int)nt)
    {
        const size_t r = (size_t)omp_get_thread_num(), T = (size_t)omp_get_num_threads();
        kd_ctx band = *ctx, one;
        band.workspace = m->workspace + r * g->rep_ws;
        band.cache_shift = r * g->rep_cache;
        band.band = r;
        band.bands = T > 1 ? T : 0;
        one = band;
        one.band = one.bands = 0;
        float **val = r ? g->rep_val + (r - 1) * g->n_values : g->val;
        const float **xs = r ? g->rep_xs + (r - 1) * g->n_xs : g->xs;
        const fwd_pass pb = {val, xs, 0, &band}, p1 = {val, xs, 0, &one};
        val[0] = (float *)x;
        float *next = m->act_mem;  /* band_floats: each unit's output its own buffer */
        for (size_t i = 0, n; i < m->n_layers; i += n) {
            n = kd_unit_len(g, i);
            const size_t j = i + n - 1;
            float *out = j == last ? m->acts[last] : next;
            next += (kd_shape_numel(&m->layers[j].out) + 15) & ~(size_t)15;
            if (unit_banded(m, i)) {
                run_unit(m, i, out, 1, &pb);
#pragma omp barrier
            } else { /* on thread 0, a barrier only before the next banded unit */
                if (r == 0) run_unit(m, i, out, 1, &p1);
                if (j + 1 < m->n_layers && unit_banded(m, j + 1)) {
#pragma omp barrier
                }
            }
            val[j + 1] = out;
        }
    }
    g->val[m->n_layers] = m->acts[last];
    return m->acts[last];
}


static const float *forward_chunks(kd_model *m, const float *x, size_t B, kd_ctx *ctx);

/* A single sample through a small model runs on the calling thread: its products are small
 * and its other loops serial anyway, so the team would only be woken to wait. On a 2-vCPU Zen 3
 * host (2 threads, six alternating runs, single-sample p50) the team made MobileNetV2 x0.25
 * (2.5M multiply-adds) 30% slower, and the CNN teacher (4.6M) 20% faster, its products of 1M
 * multiply-adds or more split among the team (conv2d.c), the small ResNet student (9.4M)
 * about the same (docs/benchmarks.md, Threads). The results do not depend on the thread count,
 * so only the time changes. */
const float *kd_model_forward(kd_model *m, const float *x, size_t B, kd_ctx *ctx) {
    const int nt = omp_get_max_threads();
    const size_t bands = B == 1 ? band_threads(m, ctx) : 0;
    if (bands > 1) return forward_banded(m, x, ctx, bands);
    /* Weights too large for a core's cache make a one-sample dense product a pass over memory,
     * which the team reads faster (kd_sgemm_linear): the MLP teacher (2.4M multiply-adds). */
    if (B != 1 || nt == 1 || omp_in_parallel() ||
        (double)kd_model_macs(m) > ONE_SAMPLE_SERIAL_MACS || m->n_params >= KD_GEMV_SPLIT_MIN)
        return forward_chunks(m, x, B, ctx);
    omp_set_num_threads(1);
    const float *z = forward_chunks(m, x, B, ctx);
    omp_set_num_threads(nt);
    return z;
}


/* The unit starting at layer i on the chunk's values, its last layer's output into out. */
static void run_unit(kd_model *m, size_t i, float *out, size_t nb, const fwd_pass *ps) {
    kd_layer *l = &m->layers[i];
    if (!l->ops->forward_merge) {
        const float *res = NULL;
        if (kd_unit_is_conv_add(m->graph, i)) { /* its add's input that is not the unit's */
            const size_t *src = l[2].src;
            res = ps->val[src[src[0] == i + 2 ? 1 : 0]];
        }
        unit_forward(m, i, ps->val[l->src[0]], res, out, nb, ps->act_shift, ps->ctx);
        return;
    }
    const float **xs = ps->xs + m->graph->xs_at[i];
    for (size_t k = 0; k < l->n_in; k++) xs[k] = ps->val[l->src[k]];
    if (m->graph->unit[i] & KD_UNIT_ADD_RELU) kd_add_relu_forward(l, xs, out, nb, ps->ctx);
    else l->ops->forward_merge(l, xs, out, nb, ps->ctx);
}

/* Copies the chunk [b0, b0 + nb) of every observed value the unit i..j produced into its
 * whole-batch buffer (inference; a training pass is the whole batch and keeps its values). */
static void gather(kd_model *m, const fwd_pass *ps, size_t i, size_t j, size_t b0, size_t nb) {
    kd_graph *g = m->graph;
    for (size_t v = i + 1; g->gathered && v <= j + 1; v++) {
        if (!g->gathered[v]) continue;
        const size_t n = kd_value_numel(m, v);
        kd_par_copy(g->gathered[v] + b0 * n, ps->val[v], nb * n);
    }
}

/* Samples [b_lo, b_hi) through the model in chunks, with ps's buffers. At least one pass, even
 * over no samples: a data-parallel replica with an empty shard still joins its batch norms'
 * sums over the ranks. */
static void forward_range(kd_model *m, const float *x, size_t b_lo, size_t b_hi,
                          const fwd_pass *ps) {
    const size_t D = kd_shape_numel(&m->input), last = m->n_layers - 1;
    for (size_t b0 = b_lo; b0 == b_lo || b0 < b_hi; b0 += m->chunk) {
        const size_t nb = b_hi - b0 < m->chunk ? b_hi - b0 : m->chunk;
        ps->val[0] = (float *)(x + b0 * D);  /* read only: no layer writes over the input */
        for (size_t i = 0, n; i < m->n_layers; i += n) {
            n = kd_unit_len(m->graph, i);
            const size_t j = i + n - 1;  /* the unit's last layer, whose output it writes */
            float *out = j == last ? m->acts[last] + b0 * m->n_classes
                                   : m->acts[j] + ps->act_shift;
            run_unit(m, i, out, nb, ps);
            ps->val[j + 1] = out;
            gather(m, ps, i, j, b0, nb);
        }
    }
}

/* How many replicas run this pass: inference only, on the team's threads, when nested regions
 * stay inactive (a layer's own parallel loops then run on its replica's thread, which its
 * workspace slot assumes). */
#ifdef KD_TEST_HOOKS
int kd_infer_replicas = 1;
unsigned long kd_hook_replica_passes;
#endif

static size_t replicas_now(const kd_model *m, size_t B, const kd_ctx *ctx) {
    const size_t n = m->graph->n_rep, t = (size_t)omp_get_max_threads();
    if (ctx->training || n <= 1 || B < 2 || t < 2 || omp_in_parallel() ||
        omp_get_max_active_levels() > 1 || !KD_HOOK_VALUE(kd_infer_replicas, 1))
        return 1;
    KD_HOOK_RUN(kd_hook_replica_passes++);
    return t < n ? t : n;
}

/* Inference runs the batch as one sample range per replica, each thread through the whole
 * model on its own (no barrier per layer: on this 2-vCPU host a layer-by-layer team lost to
 * one thread whenever another process ran). A sample's values depend on its replica only where
 * a product's bits depend on its row count (OpenBLAS's small-matrix kernels for AVX-512): the
 * same for a given batch and thread count. */
static const float *forward_chunks(kd_model *m, const float *x, size_t B, kd_ctx *ctx) {
    KD_ASSERT(B <= m->batch_cap && m->chunk > 0 && m->n_layers > 0);
    kd_graph *g = m->graph;
    kd_ctx eval_ctx = {0, NULL, NULL, 0, 0, 0};
    if (!ctx) ctx = &eval_ctx;
    /* Training statistics (batch norm) need the whole batch in one pass. */
    KD_ASSERT(!ctx->training || B <= m->chunk);
    ctx->workspace = m->workspace;
    ctx->cache_shift = 0;
    if (ctx->training && g->obs_grad)
        for (size_t v = 1; v < g->n_values; v++)
            if (g->obs_grad[v]) kd_par_zero(g->obs_grad[v], B * kd_value_numel(m, v));
    const size_t R = replicas_now(m, B, ctx);
    if (R == 1) {
        const fwd_pass ps = {g->val, g->xs, 0, ctx};
        forward_range(m, x, 0, B, &ps);
    } else {
#pragma omp parallel num_threads((int)R)
        {
            const size_t r = (size_t)omp_get_thread_num(), T = (size_t)omp_get_num_threads();
            kd_ctx c = *ctx;
            c.workspace = m->workspace + r * g->rep_ws;
            c.cache_shift = r * g->rep_cache;
            const fwd_pass ps = {r ? g->rep_val + (r - 1) * g->n_values : g->val,
                                 r ? g->rep_xs + (r - 1) * g->n_xs : g->xs, r * g->rep_act, &c};
            forward_range(m, x, B * r / T, B * (r + 1) / T, &ps);
        }
    }
    g->val[m->n_layers] = m->acts[m->n_layers - 1];
    return m->acts[m->n_layers - 1];
}

/* ---- Backward ---- */

/* The walk's state: which slot holds each value's gradient, which slots are taken. A dry walk
 * (slots NULL) only counts the slots it would take. */
typedef struct {
    kd_model *m;
    const float *x, *dlogits;
    float *dinput;
    size_t B;
    kd_ctx *ctx;
    int dry;
    int *gslot;                /* (n_values) */
    unsigned char *busy;       /* (cap) */
    size_t cap, used;          /* slots available / the most taken at once, scratch excluded */
    size_t *need;              /* (cap + 1) dry walk: the most floats per sample each slot
                                * holds, the scratch's last; NULL otherwise */
} bwalk;

static int take_slot(bwalk *w) {
    size_t s = 0;
    while (s < w->cap && w->busy[s]) s++;
    KD_ASSERT(s < w->cap);
    w->busy[s] = 1;
    if (s + 1 > w->used) w->used = s + 1;
    return (int)s;
}

/* Slot s (or GSLOT_CALLER) now holds value v's gradient. */
static int hold(bwalk *w, size_t v, int s) {
    w->gslot[v] = s;
    const size_t n = kd_value_numel(w->m, v);
    if (w->need && s >= 0 && n > w->need[s]) w->need[s] = n;
    return s;
}

static void release(bwalk *w, int s) {
    if (s >= 0) w->busy[s] = 0;
}

/* Value v's gradient buffer: a slot, or the caller's memory (dinput for the input, dlogits for
 * the logits, obs_grad for an observed value not yet reached by any layer). */
static float *grad_of(const bwalk *w, size_t v) {
    const kd_graph *g = w->m->graph;
    const int s = w->gslot[v];
    if (s >= 0) return g->slot[s];
    if (s == GSLOT_NONE) return NULL;
    if (v == 0) return w->dinput;
    if (v == w->m->n_layers) return (float *)w->dlogits;
    return g->obs_grad[v];
}

/* Adds n floats of src into dst, shared by the team in fixed blocks (the same bits on any
 * thread count). */
static void add_into(float *restrict dst, const float *restrict src, size_t n) {
    KD_PAR_BLOCKS(n, o, k, KD_VEC_FOR(t, k, dst[o + t] += src[o + t]));
}

/* Whether value u needs a gradient: it is the input and the caller asked for its gradient, or
 * a layer at or after `first` produced it. */
static int wants_grad(const bwalk *w, size_t u, size_t first) {
    return u == 0 ? w->dinput != NULL : u - 1 >= first;
}

/* The gradient dy at value v (its unit's output) is complete once the walk reaches its
 * producer: the caller's gradient at an observed value is added in here. Returns the slot (or
 * GSLOT_CALLER) holding it, GSLOT_NONE when no gradient reaches v. */
static int complete_grad(bwalk *w, size_t v) {
    kd_graph *g = w->m->graph;
    int s = w->gslot[v];
    if (!g->obs_grad || !g->obs_grad[v]) return s;
    if (s == GSLOT_NONE) return hold(w, v, GSLOT_CALLER);
    if (s == GSLOT_CALLER) {  /* the logits, observed: dlogits + the caller's, in a slot */
        int t = take_slot(w);
        if (!w->dry) {
            memcpy(g->slot[t], w->dlogits, w->B * kd_value_numel(w->m, v) * sizeof(float));
            add_into(g->slot[t], g->obs_grad[v], w->B * kd_value_numel(w->m, v));
        }
        return hold(w, v, t);
    }
    if (!w->dry) add_into(g->slot[s], g->obs_grad[v], w->B * kd_value_numel(w->m, v));
    return s;
}

/* A merge's input gradients, added straight into each input's gradient. An add hands dy's own
 * slot to the first input that has no gradient yet instead of copying it. */
static void merge_backward(bwalk *w, size_t i, int dys, size_t first) {
    kd_model *m = w->m;
    kd_layer *l = &m->layers[i];
    const float *dy = w->dry ? NULL : grad_of(w, i + 1);
    int handed = 0;
    for (size_t k = 0; k < l->n_in; k++) {
        const size_t u = l->src[k];
        if (!wants_grad(w, u, first)) continue;
        const int fresh = w->gslot[u] == GSLOT_NONE;
        if (fresh && l->ops->grad_is_dy && !handed && dys >= 0) {
            hold(w, u, dys);  /* dy is no longer needed after this layer: no copy */
            handed = 1;
            continue;
        }
        if (fresh) hold(w, u, u == 0 ? GSLOT_CALLER : take_slot(w));
        if (!w->dry) l->ops->backward_merge(l, k, dy, grad_of(w, u), !fresh, w->B, w->ctx);
    }
    if (!handed) release(w, dys);
}

/* A single-input unit i..j: its input gradient written into the input's own gradient when it
 * has none yet, else into the scratch slot and added. A view hands its gradient on as is. */
static void unit_backward(bwalk *w, size_t i, size_t j, int dys, size_t first) {
    kd_model *m = w->m;
    kd_graph *g = m->graph;
    const kd_layer *l = &m->layers[i];
    const size_t u = l->src[0];
    const int need_in = wants_grad(w, u, first);
    if (need_in && u > 0 && w->gslot[u] == GSLOT_NONE && l->ops->view && dys >= 0) {
        hold(w, u, dys);  /* dx is dy, value for value */
        return;
    }
    /* A batch norm unit writes its input gradient over its output gradient (it reads each
     * element of dy before writing dx there): its input takes dy's slot, so the two gradients
     * never hold two slots at once. */
    if (need_in && u > 0 && w->gslot[u] == GSLOT_NONE && dys >= 0 &&
        (g->unit[i] & KD_UNIT_BN_RELU)) {
        hold(w, u, dys);
        if (!w->dry)
            kd_model_unit_backward(m, i, j, g->val[u], g->slot[dys], g->slot[dys], w->B, w->ctx);
        return;
    }
    float *dx = NULL;
    int accumulate = 0;
    if (need_in && w->gslot[u] == GSLOT_NONE) {
        hold(w, u, u == 0 ? GSLOT_CALLER : take_slot(w));
        dx = w->dry ? NULL : grad_of(w, u);
    } else if (need_in) {
        accumulate = 1;
        dx = w->dry ? NULL : g->slot[g->n_slots - 1];
        if (w->need && kd_value_numel(m, u) > w->need[w->cap]) w->need[w->cap] = kd_value_numel(m, u);
    }
    if (!w->dry) {
        const float *x = u ? g->val[u] : w->x;
        if (u >= 2 && g->recompute[u - 2]) {  /* x was not kept: write it again */
            const kd_layer *bn = &m->layers[u - 2];
            kd_bn_act_recompute(bn, &bn[1], g->val[bn->src[0]], g->val[u], w->B, w->ctx);
        }
        kd_model_unit_backward(m, i, j, x, grad_of(w, j + 1), dx, w->B, w->ctx);
        if (accumulate) add_into(grad_of(w, u), dx, w->B * kd_value_numel(m, u));
    }
    release(w, dys);
}

static void backward_walk(bwalk *w) {
    kd_model *m = w->m;
    const size_t first = w->dinput ? 0 : kd_model_first_trainable(m);
    for (size_t v = 0; v < m->graph->n_values; v++) w->gslot[v] = GSLOT_NONE;
    if (first == m->n_layers) return;
    w->gslot[m->n_layers] = GSLOT_CALLER;  /* dlogits */
    for (size_t j = m->n_layers; j-- > first;) {
        /* j is a unit's last layer; i its first (a unit's first layer has parameters, so it
         * never starts before `first`) */
        const size_t i = kd_model_backward_unit_start(m, j);
        const int dys = complete_grad(w, j + 1);
        if (dys != GSLOT_NONE) {
            if (m->layers[i].ops->backward_merge) merge_backward(w, i, dys, first);
            else unit_backward(w, i, j, dys, first);
        }
        j = i;
    }
}

/* A dry walk from dlogits, with the input's gradient asked for or not (the two walks backward
 * takes), each slot's need merged into need (n_values + 3 entries, the scratch's last).
 * Returns the slots taken at once, or SIZE_MAX when out of memory. */
static size_t dry_walk(kd_model *m, int with_dinput, size_t *need) {
    const size_t nv = m->graph->n_values;
    int *gslot = malloc(nv * sizeof *gslot);
    unsigned char *busy = calloc(nv + 2, 1);
    size_t *walk_need = calloc(nv + 3, sizeof *walk_need);
    float dummy;
    bwalk w = {m, NULL, NULL, with_dinput ? &dummy : NULL, 0, NULL, 1, gslot, busy, nv + 2, 0,
               walk_need};
    const int ok = gslot && busy && walk_need;
    if (ok) backward_walk(&w);
    for (size_t s = 0; ok && s < nv + 3; s++)
        if (walk_need[s] > need[s]) need[s] = walk_need[s];
    free(gslot);
    free(busy);
    free(walk_need);
    return ok ? w.used : SIZE_MAX;
}

size_t kd_graph_backward_slots(kd_model *m, size_t **need_out) {
    const size_t nv = m->graph->n_values;
    size_t *need = calloc(nv + 3, sizeof *need);
    *need_out = NULL;
    if (!need) return 0;
    const size_t a = dry_walk(m, 1, need), b = dry_walk(m, 0, need);
    if (a == SIZE_MAX || b == SIZE_MAX) {
        free(need);
        return 0;
    }
    const size_t used = a > b ? a : b;
    need[used] = need[nv + 2];  /* the scratch for added gradients, after the slots */
    *need_out = need;
    return used + 1;
}

void kd_model_backward_to(kd_model *m, const float *x, const float *dlogits, float *dinput,
                          size_t B, kd_ctx *ctx) {
    KD_ASSERT(m->grads && B <= m->batch_cap);
    kd_graph *g = m->graph;
    kd_ctx eval_ctx = {0, NULL, NULL, 0, 0, 0};
    if (!ctx) ctx = &eval_ctx;
    ctx->workspace = m->workspace;
    memset(g->slot_busy, 0, g->n_slots);
    bwalk w = {m, x, dlogits, dinput, B, ctx, 0, g->gslot, g->slot_busy, g->n_slots - 1, 0, NULL};
    backward_walk(&w);
}

void kd_model_backward(kd_model *m, const float *x, const float *dlogits, size_t B, kd_ctx *ctx) {
    kd_model_backward_to(m, x, dlogits, NULL, B, ctx);
}

/* ---- Inner values ---- */

kd_status kd_model_observe(kd_model *m, const char *value, size_t *id, kd_shape *shape,
                           kd_err *err) {
    size_t v = 0;
    for (size_t i = 0; i < m->n_layers && !v; i++)
        if (m->layers[i].name && !strcmp(m->layers[i].name, value)) v = i + 1;
    if (!v) {
        char *end;
        unsigned long long k = strtoull(value, &end, 10);
        if (*value >= '0' && *value <= '9' && !*end && k < m->n_layers && !m->layers[k].name)
            v = (size_t)k + 1;
    }
    if (!v)
        return kd_err_set(err, KD_EUSAGE, "no layer output named \"%.100s\" (a layer's name, or "
                          "an unnamed layer's index)", value);
    *id = v;
    if (shape) *shape = m->layers[v - 1].out;
    if (m->graph->observed[v]) return KD_OK;
    /* Fusion, in-place reuse and the buffers are planned at reserve time: plan them again. */
    const size_t B = m->batch_cap;
    kd_model_free_batch(m);
    m->graph->observed[v] = 1;
    kd_graph_decide(m);
    return B ? kd_model_reserve(m, B, err) : KD_OK;
}

const float *kd_model_value(const kd_model *m, size_t id) {
    const kd_graph *g = m->graph;
    KD_ASSERT(id > 0 && id < g->n_values && g->observed[id]);
    if (g->gathered && g->gathered[id]) return g->gathered[id];
    return m->acts[id - 1];
}

float *kd_model_value_grad(kd_model *m, size_t id) {
    const kd_graph *g = m->graph;
    KD_ASSERT(id > 0 && id < g->n_values && g->observed[id] && g->obs_grad);
    return g->obs_grad[id];
}
