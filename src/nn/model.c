/* model.c - models: building from a JSON layer list, the flat parameter buffers, the arch
 * string, and lookups. Edges are in graph.c, batch memory in plan.c, forward and backward in
 * exec.c. */
#include <cJSON.h>
#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"

/* Largest single tensor / per-sample activation / total parameter count we accept (floats).
 * 2^31 floats is 8 GiB: far above any model this tool trains, low enough that a typo such as
 * "units": 1e9 fails with a clear message instead of an out-of-memory crash. */
#define KD_MAX_FLOATS ((size_t)1 << 31)
/* One tensor or one sample's activation: BLAS (Debian's OpenBLAS, 32-bit blasint) takes every
 * matrix dimension as an int, and a layer's dimensions are at most its tensors' and per-sample
 * activations' sizes (convolution products are chunked below that), so this cap keeps every
 * kd_sgemm argument representable. */
#define KD_MAX_TENSOR_FLOATS ((size_t)INT_MAX)
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

/* Layer i from its spec: type, edges ("name", "from"), hyperparameters and output shape. */
static kd_status build_layer(kd_model *m, size_t i, const cJSON *spec, kd_err *err) {
    kd_layer *l = &m->layers[i];
    char buf[128];
    size_t numel;
    if (!cJSON_IsObject(spec)) {
        char *text = cJSON_PrintUnformatted(spec);
        kd_status st = kd_err_set(err, KD_EUSAGE, "layer %zu: expected an object like "
                                  "{\"type\":\"dense\",\"units\":10}, got %.80s", i,
                                  text ? text : "?");
        free(text);
        return st;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(spec, "type");
    if (!cJSON_IsString(type))
        return kd_err_set(err, KD_EUSAGE, "layer %zu: missing \"type\" (one of: %s)", i,
                          kd_layer_type_list());
    l->ops = kd_layer_find(type->valuestring);
    if (!l->ops)
        return kd_err_set(err, KD_EUSAGE, "layer %zu: unknown type \"%.60s\" (known: %s)", i,
                          type->valuestring, kd_layer_type_list());
    l->index = (int)i;
    kd_status st = kd_graph_read_edges(m, i, spec, err);
    if (st) return st;
    if (l->ops->hp_size && !(l->hp = calloc(1, l->ops->hp_size)))
        return kd_err_set(err, KD_EIO, "out of memory building layer %zu", i);
    if ((st = l->ops->configure(l, spec, err))) return st;
    if (shape_numel_checked(&l->out, &numel))
        return kd_layer_err(l, err, "input %s gives an empty or too large output (at most %zu "
                            "values per sample)", kd_shape_str(&l->in, buf, sizeof buf),
                            KD_MAX_TENSOR_FLOATS);
    return KD_OK;
}

/* Layer i's tensor declarations, named "<name>.<suffix>" (or "<index>.<suffix>"), with their
 * offsets into the parameter or buffer arrays. */
static kd_status declare_tensors(kd_model *m, size_t i, kd_err *err) {
    kd_layer *l = &m->layers[i];
    kd_tensor_decl decl[KD_LAYER_MAX_TENSORS];
    int n_decl = l->ops->tensors ? l->ops->tensors(l, decl) : 0;
    KD_ASSERT(n_decl >= 0 && n_decl <= KD_LAYER_MAX_TENSORS);
    l->n_tensors = n_decl;
    for (int k = 0; k < n_decl; k++) {
        kd_tensor *t = &m->tensors[m->n_tensors++];
        memset(t, 0, sizeof *t);
        if (l->name) snprintf(t->name, sizeof t->name, "%s.%s", l->name, decl[k].name);
        else snprintf(t->name, sizeof t->name, "%zu.%s", i, decl[k].name);
        t->kind = decl[k].kind;
        t->shape = decl[k].shape;
        t->layer = i;
        t->quantize = decl[k].quantize;
        if (t->kind == KD_TENSOR_COUNTER) {
            t->numel = 1;
            continue;
        }
        size_t *total = t->kind == KD_TENSOR_PARAM ? &m->n_params : &m->n_buffers;
        if (shape_numel_checked(&t->shape, &t->numel) ||
            kd_add_size(*total, t->numel, total) || *total > KD_MAX_FLOATS)
            return kd_layer_err(l, err, "%s is too large (more than %zu values, or more than %zu "
                                "in all)", t->name, KD_MAX_TENSOR_FLOATS, KD_MAX_FLOATS);
        t->offset = *total - t->numel;
    }
    return KD_OK;
}

/* One buffer each for parameters (with gradients and moments alongside) and buffers, in
 * state_dict order, so zeroing, the optimizer and saving are flat loops; then every tensor's
 * view. */
static kd_status allocate_tensors(kd_model *m, int with_grads, kd_err *err) {
    m->params = kd_alloc_floats(m->n_params);
    m->buffers = kd_alloc_floats(m->n_buffers);
    if (with_grads) {
        m->grads = kd_alloc_floats(m->n_params);
        m->m = kd_alloc_floats(m->n_params);
        m->v = kd_alloc_floats(m->n_params);
    }
    if (!m->params || !m->buffers || (with_grads && (!m->grads || !m->m || !m->v)))
        return kd_err_set(err, KD_EIO, "out of memory allocating %zu parameters", m->n_params);
    /* Tensors are grouped by layer in order, so walk both together. */
    size_t t = 0;
    for (size_t i = 0; i < m->n_layers; i++)
        for (int k = 0; k < m->layers[i].n_tensors; k++, t++)
            bind_tensor(m, &m->layers[i], k, &m->tensors[t]);
    return KD_OK;
}

static kd_status init_layers(kd_model *m, const kd_shape *input, const cJSON *layers,
                             int with_grads, size_t max_values, kd_err *err) {
    kd_status st = KD_OK;
    char buf[128];
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
        char *text = layers ? cJSON_PrintUnformatted(layers) : NULL;
        st = kd_err_set(err, KD_EUSAGE, "layers: expected a JSON array of layer objects like "
                        "[{\"type\":\"dense\",\"units\":10}], got %.80s", text ? text : "nothing");
        free(text);
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
    size_t i = 0;
    for (const cJSON *spec = layers->child; spec && !st; spec = spec->next, i++)
        if (!(st = build_layer(m, i, spec, err))) st = declare_tensors(m, i, err);
    if (st) goto cleanup;
    m->n_classes = kd_shape_numel(&m->layers[n - 1].out);
    if (m->n_params > max_values || m->n_buffers > max_values - m->n_params) {
        st = kd_err_set(err, KD_EUSAGE, "declares %zu parameter and buffer values, more than the "
                        "%zu its tensor data can hold", m->n_params + m->n_buffers, max_values);
        goto cleanup;
    }
    if (!(st = allocate_tensors(m, with_grads, err))) st = kd_graph_init(m, err);

cleanup:
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
        if (kd_graph_describe(m, i, obj)) goto cleanup;
        if (l->ops->describe && l->ops->describe(l, obj)) goto cleanup;
    }
    out = cJSON_PrintUnformatted(root);
cleanup:
    cJSON_Delete(root);
    return out;
}

kd_status kd_model_freeze(kd_model *m, kd_err *err) {
    KD_ASSERT(!m->grads);
    float **copy = calloc(m->n_layers ? m->n_layers : 1, sizeof *copy);
    int failed = !copy;
    for (size_t i = 0; !failed && i < m->n_layers; i++) {
        const kd_layer *l = &m->layers[i];
        const size_t n = l->frozen || !l->ops->frozen_floats ? 0 : l->ops->frozen_floats(l);
        if (n && !(copy[i] = kd_alloc_floats(n))) failed = 1;
        else if (n) l->ops->freeze(l, copy[i]);
    }
    for (size_t i = 0; copy && i < m->n_layers; i++) {
        if (failed) kd_free_aligned(copy[i]);
        else if (copy[i]) m->layers[i].frozen = copy[i];
    }
    free(copy);
    if (failed) return kd_err_set(err, KD_EIO, "out of memory freezing the model's weights");
    /* the frozen kernels' workspace: reserve again for the same batch */
    const size_t cap = m->batch_cap;
    if (!cap) return KD_OK;
    kd_model_free_batch(m);
    return kd_model_reserve(m, cap, err);
}

size_t kd_model_frozen_layers(const kd_model *m) {
    size_t n = 0;
    for (size_t i = 0; i < m->n_layers; i++) n += m->layers[i].frozen != NULL;
    return n;
}

void kd_model_free(kd_model *m) {
    if (!m) return;
    kd_model_free_batch(m);
    kd_graph_free(m->graph);
    for (size_t i = 0; m->layers && i < m->n_layers; i++) {
        free(m->layers[i].hp);
        free(m->layers[i].name);
        free(m->layers[i].src);
        free(m->layers[i].ins);
        kd_free_aligned(m->layers[i].frozen);
    }
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

void kd_model_set_shard(kd_model *m, const kd_shard *sh) {
    for (size_t i = 0; i < m->n_layers; i++) m->layers[i].shard = sh;
}

size_t kd_model_first_trainable(const kd_model *m) {
    for (size_t t = 0; t < m->n_tensors; t++)
        if (m->tensors[t].kind == KD_TENSOR_PARAM && m->tensors[t].layer < m->n_layers)
            return m->tensors[t].layer;
    return m->n_layers;
}

/* A new buffer of n floats holding the old one's first `keep` and zeros after; the old one is
 * freed on success. */
static int grow_floats(float **p, size_t keep, size_t n) {
    float *q = kd_alloc_floats(n);
    if (!q) return -1;
    if (keep) memcpy(q, *p, keep * sizeof *q);
    memset(q + keep, 0, (n - keep) * sizeof *q);
    kd_free_aligned(*p);
    *p = q;
    return 0;
}

kd_status kd_model_add_param(kd_model *m, const char *name, const kd_shape *shape, kd_err *err) {
    size_t numel, n;
    if (shape_numel_checked(shape, &numel) || kd_add_size(m->n_params, numel, &n) ||
        n > KD_MAX_FLOATS || strlen(name) >= KD_TENSOR_NAME_MAX)
        return kd_err_set(err, KD_EUSAGE, "%.100s: too large a tensor or name", name);
    if (kd_model_tensor(m, name))
        return kd_err_set(err, KD_EUSAGE, "%.100s: the model already has a tensor of that name",
                          name);
    kd_tensor *ts = realloc(m->tensors, (m->n_tensors + 1) * sizeof *ts);
    if (!ts) return kd_err_set(err, KD_EIO, "out of memory adding %.100s", name);
    m->tensors = ts;
    const size_t old = m->n_params;
    if (grow_floats(&m->params, old, n) ||
        (m->grads && (grow_floats(&m->grads, old, n) || grow_floats(&m->m, old, n) ||
                      grow_floats(&m->v, old, n))))
        return kd_err_set(err, KD_EIO, "out of memory adding %.100s", name);
    kd_tensor *t = &m->tensors[m->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->kind = KD_TENSOR_PARAM;
    t->shape = *shape;
    t->layer = m->n_layers;
    t->offset = old;
    t->numel = numel;
    m->n_params = n;
    /* Every parameter moved: the layers' views and the other tensors' follow. */
    size_t k = 0;
    for (size_t i = 0; i < m->n_layers; i++)
        for (int j = 0; j < m->layers[i].n_tensors; j++, k++)
            bind_tensor(m, &m->layers[i], j, &m->tensors[k]);
    for (; k < m->n_tensors; k++) m->tensors[k].data = m->params + m->tensors[k].offset;
    return KD_OK;
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
    char buf[64], from[KD_LAYER_NAME_MAX + 16];
    fprintf(f, "  input %s\n", kd_shape_str(&m->input, buf, sizeof buf));
    for (size_t i = 0; i < m->n_layers; i++) {
        const kd_layer *l = &m->layers[i];
        size_t n = 0;
        for (size_t t = 0; t < m->n_tensors; t++)
            if (m->tensors[t].kind == KD_TENSOR_PARAM && m->tensors[t].layer == i)
                n += m->tensors[t].numel;
        fprintf(f, "  %3zu  %-16s -> %-16s %12zu params", i, l->ops->type,
                kd_shape_str(&l->out, buf, sizeof buf), n);
        if (l->name) fprintf(f, "  %s", l->name);
        if (l->n_in > 1 || l->src[0] != i) {
            fputs(l->name ? " <- " : "  <- ", f);
            for (size_t k = 0; k < l->n_in; k++)
                fprintf(f, "%s%s", k ? ", " : "",
                        kd_graph_value_label(m, l->src[k], from, sizeof from));
        }
        fputc('\n', f);
    }
    fprintf(f, "  total %zu parameters, %zu multiply-accumulates per sample\n", m->n_params,
            kd_model_macs(m));
}

const char *kd_model_layer_type(const kd_model *m, size_t i) { return m->layers[i].ops->type; }

kd_shape kd_model_layer_out(const kd_model *m, size_t i) { return m->layers[i].out; }
