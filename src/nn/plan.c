/* plan.c - a model's batch-sized memory (kd_model_reserve): every value's buffer, the layers'
 * caches, the shared workspace and backward's gradient slots, sized once per batch capacity so
 * that nothing is allocated inside a step.
 *
 * A training model keeps every value until backward (a layer that runs in place shares its
 * input's buffer). An inference-only model runs the batch in chunks, and a value's chunk
 * buffer goes back to the pool after the last unit that reads it (liveness over the list). */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fused.h"
#include "graph.h"

/* Offsets inside the batch-sized arenas are rounded to 16 floats so every view is 64-byte
 * aligned, like the arenas themselves. */
#define KD_ALIGN_FLOATS 16

/* An inference-only model's chunk: samples whose widest activation fits in INFER_CHUNK_FLOATS
 * (8 MiB: two such buffers stay in a server CPU's last-level cache); an MLP's whole batch fits.
 * A model with more than a quarter as many parameters gets four floats per parameter, up to 4
 * times INFER_CHUNK_FLOATS: each chunk passes over the weights (sgemm packs them, a folded
 * batch norm and Winograd transform them). ResNet-18's 11.7M parameters were passed over for
 * every 5 samples (Xeon, batch 256 on 2 threads, alternating: 229-233 -> 261-268 samples/s with
 * 20-sample chunks); the Fashion-MNIST CNN teacher (25,088 floats per sample after its first
 * convolution, 0.82M parameters) had its dense layer's 3.2 MB of weights packed every 41
 * samples of each of 2 replicas (Xeon, batch 1000, alternating: 23.6-24.3k -> 25.0-26.1k
 * samples/s at 65); MobileNetV2 x0.25 and the small ResNet student, 0.25M and 0.08M
 * parameters, ran 5-17% slower with larger chunks, so they keep theirs. */
#define INFER_CHUNK_FLOATS ((size_t)1 << 21)

/* An inference-only model runs its batch as sample ranges, one per replica and thread, each
 * through the whole model (exec.c). Each replica has its own workspace, sized for the layers'
 * own threading: this cap keeps that bounded on a many-core server. */
#define INFER_REPLICAS_MAX 16

/* Rounds n up to a multiple of KD_ALIGN_FLOATS and adds it to *total; 0 on success. */
static int add_aligned(size_t *total, size_t n) {
    size_t r;
    if (kd_add_size(n, KD_ALIGN_FLOATS - 1, &r)) return -1;
    r -= r % KD_ALIGN_FLOATS;
    return kd_add_size(*total, r, total);
}

/* Floats of the widest output of layers [0, n-1) (the last one's output goes to the logits). */
static size_t widest_inner(const kd_model *m) {
    size_t w = 1;
    for (size_t i = 0; i + 1 < m->n_layers; i++) {
        size_t n = kd_shape_numel(&m->layers[i].out);
        if (n > w) w = n;
    }
    return w;
}

/* Whether layer i is a fused group's batch norm: a training model keeps at its slot each
 * pooling window's winning input (the pool's output size), which the group's backward sums
 * over, instead of its output, which is never stored. */
static size_t kept_floats(const kd_model *m, size_t i) {
    return kd_shape_numel(&m->layers[m->graph->unit[i] == 3 ? i + 1 : i].out);
}

void kd_model_free_batch(kd_model *m) {
    free(m->acts);
    kd_free_aligned(m->act_mem);
    kd_free_aligned(m->cache_mem);
    kd_free_aligned(m->workspace);
    kd_graph_free_batch(m->graph);
    m->acts = NULL;
    m->act_mem = m->grad_a = m->grad_b = m->cache_mem = m->workspace = NULL;
    for (size_t i = 0; i < m->n_layers; i++) m->layers[i].cache = NULL;
    m->batch_cap = 0;
    m->chunk = 0;
}

/* The lowest free pool buffer (refs[b] == 0), growing the pool when none is. */
static int free_buffer(size_t *refs, size_t *n_pool) {
    size_t b = 0;
    while (b < *n_pool && refs[b]) b++;
    if (b == *n_pool) (*n_pool)++;
    return (int)b;
}

/* Inference: assigns each value a chunk buffer from a pool, unit by unit in list order: a
 * unit's outputs take free buffers (the lowest first), then every value whose last reader is in
 * the unit gives its buffer back. A fused unit writes only its last layer's output and, for a
 * convolution's unit, the convolution's; its other inner values share the last one's buffer
 * (nothing writes them). An identity layer (dropout, flatten: not the first, not the last)
 * shares its input's buffer. The last layer writes the logits. Returns the pool size. */
static size_t plan_pool(const kd_model *m, int *pool_of) {
    const kd_graph *g = m->graph;
    const size_t n = m->n_layers;
    size_t n_pool = 0, *refs = calloc(n + 1, sizeof *refs);
    if (!refs) return SIZE_MAX;
    for (size_t v = 0; v <= n; v++) pool_of[v] = -1;
    for (size_t i = 0, u; i < n; i += u) {
        u = kd_unit_len(g, i);
        const size_t j = i + u - 1;  /* the unit's last layer */
        const kd_layer *l = &m->layers[i];
        const int grp = g->unit[i] == 4; /* a convolution and its group: its output kept */
        if (grp && (pool_of[i + 1] = free_buffer(refs, &n_pool)) >= 0) refs[pool_of[i + 1]]++;
        if (j + 1 < n) {
            if (u == 1 && l->ops->eval_identity && l->n_in == 1 && l->src[0] > 0)
                pool_of[j + 1] = pool_of[l->src[0]];
            else
                pool_of[j + 1] = free_buffer(refs, &n_pool);
            refs[pool_of[j + 1]]++;
            for (size_t v = (grp ? i + 2 : i + 1); v <= j; v++) pool_of[v] = pool_of[j + 1];
        }
        /* Buffers read for the last time in this unit: its inputs', the convolution's. */
        for (size_t v = 0; v <= n; v++) {
            const int input_or_conv = v <= i || (grp && v == i + 1);
            if (pool_of[v] >= 0 && input_or_conv && g->last_reader[v] >= i &&
                g->last_reader[v] <= j)
                refs[pool_of[v]]--;
        }
        /* An output nobody reads (a dead branch) is done once written. */
        if (j + 1 < n && g->last_reader[j + 1] == SIZE_MAX) refs[pool_of[j + 1]]--;
    }
    free(refs);
    return n_pool;
}

typedef struct {
    size_t nb;            /* samples per pass (of one replica) */
    size_t n_rep;         /* inference replicas (1 for a training model) */
    size_t act_total;     /* floats of act_mem */
    size_t cache_total, ws, max_numel, pool_floats, n_pool, n_slots;
    size_t shared_numel, shared_off; /* training: per-sample floats of the buffer recomputed
                                      * values share, and its offset in act_mem (the end) */
    size_t rep_act;                  /* floats of one replica's chunk buffers */
    size_t cache_all, ws_all;        /* cache_total and ws times n_rep */
} plan_sizes;

/* Every size, overflow-checked, before anything is allocated; 0 on success. */
static int plan_sizes_of(const kd_model *m, size_t B, int *pool_of, plan_sizes *p) {
    const int chunked = m->grads == NULL;
    const kd_graph *g = m->graph;
    memset(p, 0, sizeof *p);
    p->nb = B;
    p->n_rep = 1;
    if (chunked) {
        /* One replica per processor, as many as the batch has samples; the chunk memory of
         * one pass is shared among them. */
        size_t r = (size_t)omp_get_num_procs();
        r = r > INFER_REPLICAS_MAX ? INFER_REPLICAS_MAX : r < 1 ? 1 : r;
        p->n_rep = B < 2 ? 1 : r < B ? r : B;
        size_t budget = m->n_params > INFER_CHUNK_FLOATS / 4 ? 4 * m->n_params
                                                             : INFER_CHUNK_FLOATS;
        if (budget > 4 * INFER_CHUNK_FLOATS) budget = 4 * INFER_CHUNK_FLOATS;
        const size_t per = budget / widest_inner(m) / p->n_rep;
        const size_t share = (B + p->n_rep - 1) / p->n_rep;
        p->nb = per < 1 ? 1 : per < share ? per : share;
    }
    int bad = 0;
    p->max_numel = kd_shape_numel(&m->input);
    for (size_t i = 0; i < m->n_layers && !bad; i++) {
        const kd_layer *l = &m->layers[i];
        size_t out_n = kd_shape_numel(&l->out), n_act;
        if (out_n > p->max_numel) p->max_numel = out_n;
        if (!chunked && g->recompute[i]) {
            if (out_n > p->shared_numel) p->shared_numel = out_n;
        } else if (chunked ? i + 1 == m->n_layers : !g->in_place[i]) {
            bad |= kd_mul_size(chunked ? out_n : kept_floats(m, i), B, &n_act) ||
                   add_aligned(&p->act_total, n_act);
        }
        bad |= add_aligned(&p->cache_total, l->ops->cache_floats ? l->ops->cache_floats(l, p->nb) : 0);
        size_t w = l->ops->workspace_floats ? l->ops->workspace_floats(l, p->nb) : 0;
        if (!chunked && g->unit[i] == 4) {  /* conv -> fused group: see fused.h */
            const size_t wg = kd_conv_bn_group_workspace(l, &l[1], p->nb);
            if (wg > w) w = wg;
        }
        if (w > p->ws) p->ws = w;
    }
    if (chunked) {
        p->n_pool = plan_pool(m, pool_of);
        bad |= p->n_pool == SIZE_MAX || kd_mul_size(widest_inner(m), p->nb, &p->pool_floats);
        /* Every replica's pool, after the logits: rep_act floats each. */
        size_t rep = 0, all;
        for (size_t k = 0; k < p->n_pool && !bad; k++) bad |= add_aligned(&rep, p->pool_floats);
        bad |= kd_mul_size(rep, p->n_rep, &all) || kd_add_size(p->act_total, all, &p->act_total);
        p->rep_act = rep;
    }
    size_t ws = 0;  /* rounded, so that every replica's workspace starts aligned */
    bad |= add_aligned(&ws, p->ws);
    p->ws = ws;
    bad |= kd_mul_size(p->cache_total, p->n_rep, &p->cache_all) ||
           kd_mul_size(p->ws, p->n_rep, &p->ws_all);
    size_t slot_floats, shared;
    p->shared_off = p->act_total;
    bad |= kd_mul_size(p->max_numel, B, &slot_floats) ||
           kd_mul_size(p->shared_numel, B, &shared) || add_aligned(&p->act_total, shared);
    return bad;
}

/* Observed values' whole-batch buffers: gathered chunks (inference) or the caller's gradient
 * (training). */
static int alloc_observed(kd_model *m, size_t B) {
    kd_graph *g = m->graph;
    float ***to = m->grads ? &g->obs_grad : &g->gathered;
    if (!(*to = calloc(g->n_values, sizeof **to))) return -1;
    for (size_t v = 1; v < g->n_values; v++) {
        if (!g->observed[v] || (!m->grads && v == m->n_layers)) continue;
        size_t n;
        if (kd_mul_size(kd_value_numel(m, v), B, &n) || !((*to)[v] = kd_alloc_floats(n))) return -1;
    }
    return 0;
}

/* Backward's gradient slots, each (B, the widest value whose gradient it holds). */
static int alloc_slots(kd_model *m, size_t B) {
    kd_graph *g = m->graph;
    size_t *need = NULL, n;
    if (!(g->gslot = malloc(g->n_values * sizeof *g->gslot))) return -1;
    g->n_slots = kd_graph_backward_slots(m, &need);
    g->slot = calloc(g->n_slots ? g->n_slots : 1, sizeof *g->slot);
    g->slot_busy = calloc(g->n_slots ? g->n_slots : 1, 1);
    int bad = !need || !g->slot || !g->slot_busy;
    for (size_t s = 0; s < g->n_slots && !bad; s++)
        bad = kd_mul_size(need[s] ? need[s] : 1, B, &n) || !(g->slot[s] = kd_alloc_floats(n));
    free(need);
    if (bad) return -1;
    m->grad_a = g->n_slots > 0 ? g->slot[0] : NULL;
    m->grad_b = g->n_slots > 1 ? g->slot[1] : NULL;
    return 0;
}

/* Points acts[i] and the values at their buffers. */
static void place(kd_model *m, size_t B, const plan_sizes *p, float **pool) {
    kd_graph *g = m->graph;
    const int chunked = m->grads == NULL;
    size_t act_off = 0, cache_off = 0;
    for (size_t k = 0; k < p->n_pool; k++) {
        pool[k] = m->act_mem + act_off;
        add_aligned(&act_off, p->pool_floats);
    }
    act_off = p->rep_act * p->n_rep;  /* the other replicas' pools, then the logits */
    g->n_rep = p->n_rep;
    g->rep_act = p->rep_act;
    g->rep_cache = p->cache_total;
    g->rep_ws = p->ws;
    for (size_t i = 0; i < m->n_layers; i++) {
        kd_layer *l = &m->layers[i];
        if (chunked && i + 1 < m->n_layers) {
            /* NULL: a fused unit's inner value that nothing writes */
            m->acts[i] = g->pool_of[i + 1] >= 0 ? pool[g->pool_of[i + 1]] : NULL;
        } else if (!chunked && g->in_place[i]) {
            m->acts[i] = m->acts[l->src[0] - 1];
        } else if (!chunked && g->recompute[i]) {
            m->acts[i] = m->act_mem + p->shared_off;
        } else {
            m->acts[i] = m->act_mem + act_off;
            add_aligned(&act_off, (chunked ? kd_shape_numel(&l->out) : kept_floats(m, i)) * B);
        }
        g->val[i + 1] = m->acts[i];
        l->cache = m->cache_mem + cache_off;
        add_aligned(&cache_off, l->ops->cache_floats ? l->ops->cache_floats(l, p->nb) : 0);
    }
}

kd_status kd_model_reserve(kd_model *m, size_t B, kd_err *err) {
    if (B <= m->batch_cap) return KD_OK;
    kd_graph *g = m->graph;
    plan_sizes p;
    float **pool = NULL;
    kd_model_free_batch(m);
    if (!(g->pool_of = malloc(g->n_values * sizeof *g->pool_of)))
        return kd_err_set(err, KD_EIO, "out of memory reserving activations for batch size %zu", B);
    if (plan_sizes_of(m, B, g->pool_of, &p)) {
        kd_model_free_batch(m);
        return kd_err_set(err, KD_EUSAGE, "batch size %zu is too large for this model", B);
    }
    m->acts = calloc(m->n_layers, sizeof *m->acts);
    g->val = calloc(g->n_values, sizeof *g->val);
    pool = calloc(p.n_pool ? p.n_pool : 1, sizeof *pool);
    m->act_mem = kd_alloc_floats(p.act_total);
    m->cache_mem = kd_alloc_floats(p.cache_all);
    m->workspace = kd_alloc_floats(p.ws_all);
    if (p.n_rep > 1) {
        g->rep_val = calloc((p.n_rep - 1) * g->n_values, sizeof *g->rep_val);
        g->rep_xs = calloc((p.n_rep - 1) * (g->n_xs ? g->n_xs : 1), sizeof *g->rep_xs);
    }
    if (!m->acts || !g->val || !pool || !m->act_mem || !m->cache_mem || !m->workspace ||
        (p.n_rep > 1 && (!g->rep_val || !g->rep_xs)) ||
        alloc_observed(m, B) || (m->grads && alloc_slots(m, B))) {
        free(pool);
        kd_model_free_batch(m);
        return kd_err_set(err, KD_EIO, "out of memory reserving activations for batch size %zu", B);
    }
    place(m, B, &p, pool);
    free(pool);
    m->batch_cap = B;
    m->chunk = p.nb;
    return KD_OK;
}
