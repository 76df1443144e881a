/* model.c - sequential models: building from a JSON layer list, the flat parameter buffers,
 * batch-sized memory, forward/backward over the layer list, and the arch string. */
#include <cJSON.h>
#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "layer_impl.h"

/* Largest single tensor / per-sample activation / total parameter count we accept (floats).
 * 2^31 floats is 8 GiB: far above any model this tool trains, low enough that a typo such as
 * "units": 1e9 fails with a clear message instead of an out-of-memory crash. */
#define KD_MAX_FLOATS ((size_t)1 << 31)
/* One tensor or one sample's activation: BLAS (Debian's OpenBLAS, 32-bit blasint) takes every
 * matrix dimension as an int, and a layer's dimensions are at most its tensors' and per-sample
 * activations' sizes (convolution products are chunked below that), so this cap keeps every
 * kd_sgemm argument representable. */
#define KD_MAX_TENSOR_FLOATS ((size_t)INT_MAX)
/* Offsets inside the batch-sized arenas are rounded to 16 floats so every view is 64-byte
 * aligned, like the arenas themselves. */
#define KD_ALIGN_FLOATS 16

/* numel with overflow and emptiness checks: 0 on success. */
static int shape_numel_checked(const kd_shape *s, size_t *out) {
    size_t n = 1;
    if (s->rank < 1 || s->rank > KD_MAX_RANK) return -1;
    for (int i = 0; i < s->rank; i++)
        if (s->d[i] == 0 || kd_mul_size(n, s->d[i], &n)) return -1;
    if (n > KD_MAX_TENSOR_FLOATS) return -1;
    *out = n;
    return 0;
}

/* Rounds n up to a multiple of KD_ALIGN_FLOATS and adds it to *total; 0 on success. */
static int add_aligned(size_t *total, size_t n) {
    size_t r;
    if (kd_add_size(n, KD_ALIGN_FLOATS - 1, &r)) return -1;
    r -= r % KD_ALIGN_FLOATS;
    return kd_add_size(*total, r, total);
}

/* Gives the k-th tensor layer l declared its storage (offsets were assigned in pass 1) and
 * the layer its views by the same position: no per-name slots. */
static void bind_tensor(kd_model *m, kd_layer *l, int k, kd_tensor *t) {
    switch (t->kind) {
    case KD_TENSOR_COUNTER:
        t->counter = &l->count[k];
        break;
    case KD_TENSOR_BUFFER:
        t->data = l->t[k] = m->buffers + t->offset;
        break;
    case KD_TENSOR_PARAM:
        t->data = l->t[k] = m->params + t->offset;
        l->dt[k] = m->grads ? m->grads + t->offset : NULL;
        break;
    }
}

static kd_status init_layers(kd_model *m, const kd_shape *input, const cJSON *layers,
                             int with_grads, size_t max_values, kd_err *err) {
    kd_status st = KD_OK;
    char buf[128];
    char *text = NULL;
    memset(m, 0, sizeof *m);

    size_t numel;
    if (shape_numel_checked(input, &numel)) {
        st = kd_err_set(err, KD_EUSAGE,
                        "input: expected 1 to %d positive dimensions (at most %zu values), got %s",
                        KD_MAX_RANK, KD_MAX_TENSOR_FLOATS,
                        input->rank >= 0 && input->rank <= KD_MAX_RANK
                            ? kd_shape_str(input, buf, sizeof buf)
                            : "a shape of the wrong rank");
        goto cleanup;
    }
    if (!cJSON_IsArray(layers)) {
        text = layers ? cJSON_PrintUnformatted(layers) : NULL;
        st = kd_err_set(err, KD_EUSAGE,
                        "layers: expected a JSON array of layer objects like "
                        "[{\"type\":\"dense\",\"units\":10}], got %.80s",
                        text ? text : "nothing");
        goto cleanup;
    }
    size_t n = (size_t)cJSON_GetArraySize(layers);
    if (n == 0) {
        st = kd_err_set(err, KD_EUSAGE, "layers: the list is empty; a model needs at least one layer");
        goto cleanup;
    }
    m->input = *input;
    m->layers = calloc(n, sizeof *m->layers);
    m->tensors = calloc(n * KD_LAYER_MAX_TENSORS, sizeof *m->tensors);
    if (!m->layers || !m->tensors) {
        st = kd_err_set(err, KD_EIO, "out of memory building a model of %zu layers", n);
        goto cleanup;
    }
    m->n_layers = n;

    /* Pass 1: types, hyperparameters, shapes and tensor declarations with their offsets. */
    kd_shape cur = *input;
    size_t i = 0;
    for (const cJSON *spec = layers->child; spec; spec = spec->next, i++) {
        kd_layer *l = &m->layers[i];
        if (!cJSON_IsObject(spec)) {
            text = cJSON_PrintUnformatted(spec);
            st = kd_err_set(err, KD_EUSAGE,
                            "layer %zu: expected an object like {\"type\":\"dense\",\"units\":10}, got %.80s",
                            i, text ? text : "?");
            goto cleanup;
        }
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(spec, "type");
        if (!cJSON_IsString(type)) {
            st = kd_err_set(err, KD_EUSAGE, "layer %zu: missing \"type\" (one of: %s)", i,
                            kd_layer_type_list());
            goto cleanup;
        }
        l->ops = kd_layer_find(type->valuestring);
        if (!l->ops) {
            st = kd_err_set(err, KD_EUSAGE, "layer %zu: unknown type \"%.60s\" (known: %s)", i,
                            type->valuestring, kd_layer_type_list());
            goto cleanup;
        }
        l->index = (int)i;
        l->in = cur;
        if (l->ops->hp_size && !(l->hp = calloc(1, l->ops->hp_size))) {
            st = kd_err_set(err, KD_EIO, "out of memory building layer %zu", i);
            goto cleanup;
        }
        st = l->ops->configure(l, spec, err);
        if (st) goto cleanup;
        if (shape_numel_checked(&l->out, &numel)) {
            st = kd_layer_err(l, err, "input %s gives an empty or too large output (at most "
                              "%zu values per sample)", kd_shape_str(&l->in, buf, sizeof buf),
                              KD_MAX_TENSOR_FLOATS);
            goto cleanup;
        }
        cur = l->out;

        kd_tensor_decl decl[KD_LAYER_MAX_TENSORS];
        int n_decl = l->ops->tensors ? l->ops->tensors(l, decl) : 0;
        KD_ASSERT(n_decl >= 0 && n_decl <= KD_LAYER_MAX_TENSORS);
        l->n_tensors = n_decl;
        for (int k = 0; k < n_decl; k++) {
            kd_tensor *t = &m->tensors[m->n_tensors++];
            memset(t, 0, sizeof *t);
            snprintf(t->name, sizeof t->name, "%zu.%s", i, decl[k].name);
            t->kind = decl[k].kind;
            t->shape = decl[k].shape;
            t->layer = i;
            t->quantise = decl[k].quantise;
            if (t->kind == KD_TENSOR_COUNTER) {
                t->numel = 1;
                continue;
            }
            size_t *total = t->kind == KD_TENSOR_PARAM ? &m->n_params : &m->n_buffers;
            if (shape_numel_checked(&t->shape, &t->numel) ||
                kd_add_size(*total, t->numel, total) || *total > KD_MAX_FLOATS) {
                st = kd_layer_err(l, err, "%s is too large (more than %zu values, or more "
                                  "than %zu in all)", t->name, KD_MAX_TENSOR_FLOATS, KD_MAX_FLOATS);
                goto cleanup;
            }
            t->offset = *total - t->numel;
        }
    }
    m->n_classes = kd_shape_numel(&cur);
    if (m->n_params > max_values || m->n_buffers > max_values - m->n_params) {
        st = kd_err_set(err, KD_EUSAGE, "declares %zu parameter and buffer values, more than the "
                        "%zu its tensor data can hold", m->n_params + m->n_buffers, max_values);
        goto cleanup;
    }

    /* One buffer each, in state_dict order, so zeroing, the optimizer and saving are flat loops. */
    m->params = kd_alloc_floats(m->n_params);
    m->buffers = kd_alloc_floats(m->n_buffers);
    if (with_grads) {
        m->grads = kd_alloc_floats(m->n_params);
        m->m = kd_alloc_floats(m->n_params);
        m->v = kd_alloc_floats(m->n_params);
    }
    if (!m->params || !m->buffers || (with_grads && (!m->grads || !m->m || !m->v))) {
        st = kd_err_set(err, KD_EIO, "out of memory allocating %zu parameters", m->n_params);
        goto cleanup;
    }

    /* Pass 2: views. Tensors are grouped by layer in order, so walk both together. */
    size_t t = 0;
    for (i = 0; i < n; i++)
        for (int k = 0; k < m->layers[i].n_tensors; k++, t++)
            bind_tensor(m, &m->layers[i], k, &m->tensors[t]);

cleanup:
    free(text);
    if (st) kd_model_free(m);
    return st;
}

kd_status kd_model_init(kd_model *m, const kd_shape *input, const char *layers_json,
                        int with_grads, kd_err *err) {
    cJSON *layers = layers_json ? cJSON_Parse(layers_json) : NULL;
    if (layers_json && !layers) {
        memset(m, 0, sizeof *m);
        return kd_err_set(err, KD_EUSAGE, "layers: not valid JSON: %.80s", layers_json);
    }
    kd_status st = init_layers(m, input, layers, with_grads, SIZE_MAX, err);
    cJSON_Delete(layers);
    return st;
}

/* Reads {"input": [...], "layers": [...]} into a shape and the layer array. */
kd_status kd_model_init_arch_capped(kd_model *m, const char *arch_json, int with_grads,
                                    size_t max_values, kd_err *err) {
    kd_status st = KD_OK;
    memset(m, 0, sizeof *m);
    cJSON *root = cJSON_Parse(arch_json);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= arch_json ? (size_t)(at - arch_json) : 0;
        st = kd_err_set(err, KD_EUSAGE, "arch: not valid JSON (near byte %zu)", off);
        goto cleanup;
    }
    if (!cJSON_IsObject(root)) {
        st = kd_err_set(err, KD_EUSAGE, "arch: expected an object {\"input\": [...], \"layers\": [...]}");
        goto cleanup;
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        if (strcmp(it->string, "input") != 0 && strcmp(it->string, "layers") != 0) {
            st = kd_err_set(err, KD_EUSAGE, "arch: unknown key \"%.60s\" (expected input, layers)",
                            it->string);
            goto cleanup;
        }
    }
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(root, "input");
    kd_shape shape = {0, {0}};
    int n_in = cJSON_IsArray(in) ? cJSON_GetArraySize(in) : 0;
    if (n_in < 1 || n_in > KD_MAX_RANK) {
        st = kd_err_set(err, KD_EUSAGE,
                        "arch.input: expected an array of 1 to %d positive integers like [1, 28, 28]",
                        KD_MAX_RANK);
        goto cleanup;
    }
    shape.rank = n_in;
    int k = 0;
    for (const cJSON *d = in->child; d; d = d->next, k++) {
        double v = cJSON_IsNumber(d) ? d->valuedouble : 0;
        if (!(v >= 1 && v <= (double)KD_MAX_FLOATS) || v != (double)(size_t)v) {
            st = kd_err_set(err, KD_EUSAGE, "arch.input[%d]: expected a positive integer", k);
            goto cleanup;
        }
        shape.d[k] = (size_t)v;
    }
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    if (!layers) {
        st = kd_err_set(err, KD_EUSAGE, "arch: missing \"layers\"");
        goto cleanup;
    }
    st = init_layers(m, &shape, layers, with_grads, max_values, err);
    if (st) kd_err_prefix(err, "arch");

cleanup:
    cJSON_Delete(root);
    return st;
}

kd_status kd_model_init_arch(kd_model *m, const char *arch_json, int with_grads, kd_err *err) {
    return kd_model_init_arch_capped(m, arch_json, with_grads, SIZE_MAX, err);
}

char *kd_model_arch_json(const kd_model *m) {
    char *out = NULL;
    cJSON *root = cJSON_CreateObject();
    cJSON *in = cJSON_AddArrayToObject(root, "input");
    cJSON *layers = cJSON_AddArrayToObject(root, "layers");
    if (!root || !in || !layers) goto cleanup;
    for (int i = 0; i < m->input.rank; i++) {
        cJSON *d = cJSON_CreateNumber((double)m->input.d[i]);
        if (!d || !cJSON_AddItemToArray(in, d)) goto cleanup;
    }
    for (size_t i = 0; i < m->n_layers; i++) {
        const kd_layer *l = &m->layers[i];
        cJSON *obj = cJSON_CreateObject();
        if (!obj || !cJSON_AddItemToArray(layers, obj)) {
            cJSON_Delete(obj);
            goto cleanup;
        }
        if (!cJSON_AddStringToObject(obj, "type", l->ops->type)) goto cleanup;
        if (l->ops->describe && l->ops->describe(l, obj)) goto cleanup;
    }
    out = cJSON_PrintUnformatted(root);
cleanup:
    cJSON_Delete(root);
    return out;
}

static void free_batch_memory(kd_model *m) {
    free(m->acts);
    kd_free_aligned(m->act_mem);
    kd_free_aligned(m->grad_a);
    kd_free_aligned(m->grad_b);
    kd_free_aligned(m->cache_mem);
    kd_free_aligned(m->workspace);
    m->acts = NULL;
    m->act_mem = m->grad_a = m->grad_b = m->cache_mem = m->workspace = NULL;
    for (size_t i = 0; i < m->n_layers; i++) m->layers[i].cache = NULL;
    m->batch_cap = 0;
    m->chunk = 0;
}

void kd_model_free(kd_model *m) {
    if (!m) return;
    free_batch_memory(m);
    for (size_t i = 0; i < m->n_layers; i++) free(m->layers[i].hp);
    free(m->layers);
    free(m->tensors);
    kd_free_aligned(m->params);
    kd_free_aligned(m->grads);
    kd_free_aligned(m->m);
    kd_free_aligned(m->v);
    kd_free_aligned(m->buffers);
    memset(m, 0, sizeof *m);
}

/* Initialisation is per layer (each knows its fans): dense and conv weights get He
 * (Normal(0,1) * sqrt(2/fan_in)) or Xavier (Uniform(-a,a), a = sqrt(6/(fan_in+fan_out))),
 * biases 0, batch-norm weight 1 / bias 0 / running stats 0 and 1 (see kd_init_fill). Layers are
 * visited in order from one RNG, so the same seed gives the same weights. */
void kd_model_init_weights(kd_model *m, kd_rng *rng, kd_init_kind kind) {
    for (size_t i = 0; i < m->n_layers; i++) {
        kd_layer *l = &m->layers[i];
        if (l->ops->init) l->ops->init(l, rng, kind == KD_INIT_XAVIER);
    }
}

/* An inference-only model's chunk: samples whose widest activation fits in INFER_CHUNK_FLOATS
 * (8 MiB: two such buffers stay in a server CPU's last-level cache). The Fashion-MNIST CNN
 * teacher (25,088 floats per sample after its first convolution) runs 83 samples at a time; an
 * MLP's whole batch fits. */
#define INFER_CHUNK_FLOATS ((size_t)1 << 21)

/* Floats of the widest output of layers [0, n-1) (the last one's output goes to the logits). */
static size_t widest_inner(const kd_model *m) {
    size_t w = 1;
    for (size_t i = 0; i + 1 < m->n_layers; i++) {
        size_t n = kd_shape_numel(&m->layers[i].out);
        if (n > w) w = n;
    }
    return w;
}

/* Whether layer i of a training model writes its output over layer i-1's (the layer allows it,
 * and nothing reads layer i-1's output after layer i has run: not layer i-1's backward, and
 * not layer i-1 itself running in place, whose backward reads its own output as its input).
 * Layer 0 never does: its input is the caller's batch. Saves the activation memory of every
 * ReLU after a convolution, dense or pooling layer, and of most dropouts. A view (flatten)
 * always shares its input's buffer: it writes nothing, so whatever read that buffer still can;
 * the layer after it then does not run in place. */
static int runs_in_place(const kd_model *m, size_t i) {
    if (i == 0) return 0;
    if (m->layers[i].ops->view) return 1;  /* writes nothing over its input */
    if (!m->layers[i].ops->in_place) return 0;
    const kd_layer_ops *prev = m->layers[i - 1].ops;
    return !prev->backward_reads_output && !runs_in_place(m, i - 1);
}

/* Whether layers i, i+1, i+2 are a batchnorm over [C, H, W], a 2x2 max-pool and a relu. */
static int is_group(const kd_model *m, size_t i) {
    const kd_layer *l = &m->layers[i];
    return i + 2 < m->n_layers && l->ops == &kd_layer_batchnorm && l->in.rank == 3 &&
           kd_maxpool_is_2x2(&l[1]) && l[2].ops == &kd_layer_relu;
}

/* The run of layers starting at i that forward and backward treat as one: a fused
 * batchnorm -> maxpool2d 2x2 -> relu group (kd_bn_pool_relu_forward: one pass instead of
 * three, batch norm's output never stored), with the conv2d before it when there is one
 * (kd_conv_bn_pool_relu_forward: the statistics taken per sample inside the convolution; its
 * backward makes the group's dx per sample), else layer i alone. */
size_t kd_model_unit_size(const kd_model *m, size_t i) {
    if (is_group(m, i)) return 3;
    if (m->layers[i].ops == &kd_layer_conv2d && is_group(m, i + 1)) return 4;
    return 1;
}

void kd_model_unit_forward(kd_model *m, size_t i, const float *x, float *y, size_t B,
                           kd_ctx *ctx) {
    kd_layer *l = &m->layers[i];
    switch (kd_model_unit_size(m, i)) {
    case 4:
        kd_conv_bn_pool_relu_forward(l, &l[1], &l[2], x, m->acts[i], y,
                                     m->grads ? m->acts[i + 1] : NULL, B, ctx);
        break;
    case 3:
        kd_bn_pool_relu_forward(l, &l[1], x, y, m->grads ? m->acts[i] : NULL, B, ctx);
        break;
    default:
        l->ops->forward(l, x, y, B, ctx);
    }
}

size_t kd_model_backward_unit_start(const kd_model *m, size_t j) {
    if (j < 2 || !is_group(m, j - 2)) return j;
    return j >= 3 && kd_model_unit_size(m, j - 3) == 4 ? j - 3 : j - 2;
}

void kd_model_unit_backward(kd_model *m, size_t i, size_t j, const float *x, const float *dy,
                            float *dx, size_t B, kd_ctx *ctx) {
    kd_layer *l = &m->layers[i];
    const float *y = m->acts[j];
    if (i == j) {
        l->ops->backward(l, x, y, dy, dx, B, ctx);
    } else if (kd_model_unit_size(m, i) == 3) {
        kd_bn_pool_relu_backward(l, &l[1], x, y, m->acts[i], dy, dx, B, ctx);
    } else {  /* conv2d, then the group */
        kd_conv_bn_pool_relu_backward(l, &l[1], &l[2], x, m->acts[i], y, m->acts[i + 1], dy, dx,
                                      B, ctx);
    }
}

/* Floats per sample a training model keeps at acts[i]: layer i's output, except for a fused
 * group's batch norm, whose output is never stored; its slot holds instead each pooling
 * window's winning input (the pool's output size), which the group's backward sums over. */
static size_t kept_floats(const kd_model *m, size_t i) {
    return kd_shape_numel(&m->layers[is_group(m, i) ? i + 1 : i].out);
}

kd_status kd_model_reserve(kd_model *m, size_t B, kd_err *err) {
    if (B <= m->batch_cap) return KD_OK;
    kd_status st = KD_OK;
    const int chunked = m->grads == NULL;
    size_t nb = B;
    if (chunked) {
        size_t per = INFER_CHUNK_FLOATS / widest_inner(m);
        nb = per < 1 ? 1 : per < B ? per : B;
    }
    size_t act_total = 0, cache_total = 0, grad_floats = 0, ws = 0, max_numel = 0, n_out = 0;
    float **acts = NULL;
    float *act_mem = NULL, *grad_a = NULL, *grad_b = NULL, *cache_mem = NULL, *workspace = NULL;

    /* Sizes first, all overflow-checked; then allocate everything at once. Per layer, its
     * output (training) or nothing (the two alternating buffers are added after the loop); the
     * last layer's output is (B, n_classes) either way. */
    int bad = 0;
    max_numel = kd_shape_numel(&m->input);
    for (size_t i = 0; i < m->n_layers && !bad; i++) {
        const kd_layer *l = &m->layers[i];
        size_t out_n = kd_shape_numel(&l->out), n_act, n_cache;
        if (out_n > max_numel) max_numel = out_n;
        if (chunked && i + 1 == m->n_layers) bad |= kd_mul_size(out_n, B, &n_out);
        else if (!chunked && !runs_in_place(m, i))
            bad |= kd_mul_size(kept_floats(m, i), B, &n_act) || add_aligned(&act_total, n_act);
        n_cache = l->ops->cache_floats ? l->ops->cache_floats(l, nb) : 0;
        bad |= add_aligned(&cache_total, n_cache);
        size_t w = l->ops->workspace_floats ? l->ops->workspace_floats(l, nb) : 0;
        if (w > ws) ws = w;
    }
    size_t pingpong = 0;
    if (chunked) bad |= kd_mul_size(widest_inner(m), nb, &pingpong);
    bad = bad || add_aligned(&act_total, pingpong) || add_aligned(&act_total, pingpong) ||
          add_aligned(&act_total, n_out) || kd_mul_size(max_numel, B, &grad_floats);
    if (bad) {
        st = kd_err_set(err, KD_EUSAGE, "batch size %zu is too large for this model", B);
        goto cleanup;
    }
    acts = calloc(m->n_layers, sizeof *acts);
    act_mem = kd_alloc_floats(act_total);
    cache_mem = kd_alloc_floats(cache_total);
    workspace = kd_alloc_floats(ws);
    if (m->grads) {
        grad_a = kd_alloc_floats(grad_floats);
        grad_b = kd_alloc_floats(grad_floats);
    }
    if (!acts || !act_mem || !cache_mem || !workspace || (m->grads && (!grad_a || !grad_b))) {
        st = kd_err_set(err, KD_EIO, "out of memory reserving activations for batch size %zu", B);
        goto cleanup;
    }
    free_batch_memory(m);
    size_t act_off = 0, cache_off = 0;
    float *ping = act_mem, *pong = act_mem;
    if (chunked) {
        add_aligned(&act_off, pingpong);
        pong = act_mem + act_off;
        add_aligned(&act_off, pingpong);
    }
    int parity = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        kd_layer *l = &m->layers[i];
        if (chunked && i + 1 < m->n_layers) {
            /* the buffers alternate; an identity layer (not the first) shares its input's */
            if (i > 0 && l->ops->eval_identity) {
                acts[i] = acts[i - 1];
            } else {
                acts[i] = parity ? pong : ping;
                parity ^= 1;
            }
        } else if (!chunked && runs_in_place(m, i)) {
            acts[i] = acts[i - 1];
        } else {
            acts[i] = act_mem + act_off;
            add_aligned(&act_off, (chunked ? kd_shape_numel(&l->out) : kept_floats(m, i)) * B);
        }
        l->cache = cache_mem + cache_off;
        add_aligned(&cache_off, l->ops->cache_floats ? l->ops->cache_floats(l, nb) : 0);
    }
    m->acts = acts;
    m->act_mem = act_mem;
    m->grad_a = grad_a;
    m->grad_b = grad_b;
    m->cache_mem = cache_mem;
    m->workspace = workspace;
    m->batch_cap = B;
    m->chunk = nb;
    return KD_OK;

cleanup:
    free(acts);
    kd_free_aligned(act_mem);
    kd_free_aligned(grad_a);
    kd_free_aligned(grad_b);
    kd_free_aligned(cache_mem);
    kd_free_aligned(workspace);
    return st;
}

/* One sample through a model of at most this many multiply-adds runs on the calling thread
 * alone (kd_model_forward). */
#define ONE_SAMPLE_SERIAL_MACS 16e6

static const float *forward_chunks(kd_model *m, const float *x, size_t B, kd_ctx *ctx);

/* A single sample through a small model runs on the calling thread: its products are small
 * and its other loops serial anyway, so the team would only be woken to wait. On this 2-vCPU
 * host the CNN teacher's one-sample forward took 4 ms on average with the team (a worker
 * spinning at the barriers and woken late) against 0.24 ms on one thread. The results do not
 * depend on the thread count, so only the time changes. */
const float *kd_model_forward(kd_model *m, const float *x, size_t B, kd_ctx *ctx) {
    const int nt = omp_get_max_threads();
    if (B != 1 || nt == 1 || omp_in_parallel() ||
        (double)kd_model_macs(m) > ONE_SAMPLE_SERIAL_MACS)
        return forward_chunks(m, x, B, ctx);
    omp_set_num_threads(1);
    const float *z = forward_chunks(m, x, B, ctx);
    omp_set_num_threads(nt);
    return z;
}

static const float *forward_chunks(kd_model *m, const float *x, size_t B, kd_ctx *ctx) {
    KD_ASSERT(B <= m->batch_cap && m->chunk > 0 && m->n_layers > 0);
    kd_ctx eval_ctx = {0, NULL, NULL};
    if (!ctx) ctx = &eval_ctx;
    /* Training statistics (batch norm) need the whole batch in one pass. */
    KD_ASSERT(!ctx->training || B <= m->chunk);
    ctx->workspace = m->workspace;
    const size_t D = kd_shape_numel(&m->input), last = m->n_layers - 1;
    float *logits = m->acts[last];
    /* At least one pass, even over no samples: a data-parallel replica with an empty shard
     * still joins its batch norms' sums over the ranks. */
    for (size_t b0 = 0; b0 == 0 || b0 < B; b0 += m->chunk) {
        const size_t nb = B - b0 < m->chunk ? B - b0 : m->chunk;
        const float *in = x + b0 * D;
        for (size_t i = 0, n; i < m->n_layers; i += n) {
            n = kd_model_unit_size(m, i);
            const size_t j = i + n - 1;  /* the unit's last layer, whose output it writes */
            float *out = j == last ? logits + b0 * m->n_classes : m->acts[j];
            kd_model_unit_forward(m, i, in, out, nb, ctx);
            in = out;
        }
    }
    return logits;
}

void kd_model_backward(kd_model *m, const float *x, const float *dlogits, size_t B, kd_ctx *ctx) {
    KD_ASSERT(m->grads && B <= m->batch_cap);
    kd_ctx eval_ctx = {0, NULL, NULL};
    if (!ctx) ctx = &eval_ctx;
    ctx->workspace = m->workspace;
    /* Layers before the first one with parameters need no gradient at all, and that first
     * layer needs no input gradient (the input is data). */
    const size_t first = kd_model_first_trainable(m);
    if (first == m->n_layers) return;
    const float *dy = dlogits;
    float *spare = m->grad_a;
    for (size_t j = m->n_layers; j-- > first;) {
        /* j is a unit's last layer; i its first (a unit's first layer has parameters, so it
         * never starts before `first`) */
        const size_t i = kd_model_backward_unit_start(m, j);
        if (m->layers[i].ops->view && runs_in_place(m, i)) continue;  /* dx is dy */
        float *dx = i > first ? spare : NULL;
        kd_model_unit_backward(m, i, j, i ? m->acts[i - 1] : x, dy, dx, B, ctx);
        j = i;
        if (dx) {
            dy = dx;
            spare = dx == m->grad_a ? m->grad_b : m->grad_a;
        }
    }
}

void kd_model_set_shard(kd_model *m, const kd_shard *sh) {
    for (size_t i = 0; i < m->n_layers; i++) m->layers[i].shard = sh;
}

size_t kd_model_first_trainable(const kd_model *m) {
    for (size_t t = 0; t < m->n_tensors; t++)
        if (m->tensors[t].kind == KD_TENSOR_PARAM) return m->tensors[t].layer;
    return m->n_layers;
}

void kd_model_zero_grad(kd_model *m) {
    if (m->grads) kd_par_zero(m->grads, m->n_params);
}

kd_tensor *kd_model_tensor(kd_model *m, const char *name) {
    for (size_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

size_t kd_model_macs(const kd_model *m) {
    size_t total = 0;
    for (size_t i = 0; i < m->n_layers; i++)
        if (m->layers[i].ops->macs) total += m->layers[i].ops->macs(&m->layers[i]);
    return total;
}

void kd_model_print(const kd_model *m, FILE *f) {
    char buf[64];
    fprintf(f, "  input %s\n", kd_shape_str(&m->input, buf, sizeof buf));
    for (size_t i = 0; i < m->n_layers; i++) {
        const kd_layer *l = &m->layers[i];
        size_t n = 0;
        for (size_t t = 0; t < m->n_tensors; t++)
            if (m->tensors[t].kind == KD_TENSOR_PARAM && m->tensors[t].layer == i)
                n += m->tensors[t].numel;
        fprintf(f, "  %3zu  %-16s -> %-16s %12zu params\n", i, l->ops->type,
                kd_shape_str(&l->out, buf, sizeof buf), n);
    }
    fprintf(f, "  total %zu parameters, %zu multiply-accumulates per sample\n", m->n_params,
            kd_model_macs(m));
}

const char *kd_model_layer_type(const kd_model *m, size_t i) { return m->layers[i].ops->type; }

kd_shape kd_model_layer_out(const kd_model *m, size_t i) { return m->layers[i].out; }
