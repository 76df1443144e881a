/* graph.c - a model's value edges: reading and checking each layer's "name" and "from", who
 * reads each value, and the decisions taken from that once (in place, fused units). */
#include <cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fused.h"
#include "graph.h"
#include "../core/test_hooks.h"

/* First components a layer name may not have: the checkpoint's own tensors (optimizer moments,
 * run state) and the loss adapters' live under them. */
static const char *const reserved_prefixes[] = {"optim", "train", "adapters", NULL};

static const char *layer_label(const kd_layer *l, char *buf, size_t cap) {
    if (l->name) snprintf(buf, cap, "%s", l->name);
    else snprintf(buf, cap, "%d", l->index);
    return buf;
}

const char *kd_graph_value_label(const kd_model *m, size_t v, char *buf, size_t cap) {
    if (v == 0) {
        snprintf(buf, cap, "input");
        return buf;
    }
    return layer_label(&m->layers[v - 1], buf, cap);
}

/* A name is dot-separated components of letters, digits and '_', at most KD_LAYER_NAME_MAX
 * characters; its first component is not all digits (an unnamed layer's tensors start with
 * "<index>.") and not a reserved prefix; "input" names the model's input. NULL: legal; else
 * what is wrong. */
static const char *name_problem(const char *s) {
    size_t n = strlen(s);
    if (n == 0) return "is empty";
    if (n > KD_LAYER_NAME_MAX) return "is longer than the limit of " "96" " characters";
    if (!strcmp(s, "input")) return "is \"input\", the model's input";
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.';
        if (!ok) return "has a character other than letters, digits, '_' and '.'";
        if (c == '.' && (i == 0 || i + 1 == n || s[i + 1] == '.'))
            return "has an empty component (a leading, trailing or doubled '.')";
    }
    size_t first = strcspn(s, ".");
    if (strspn(s, "0123456789") >= first)
        return "starts with a number, which would collide with an unnamed layer's tensors "
               "(\"<index>.weight\")";
    for (const char *const *p = reserved_prefixes; *p; p++)
        if (strlen(*p) == first && !strncmp(s, *p, first))
            return "starts with a prefix distill keeps for its own tensors (optim, train, "
                   "adapters)";
    return NULL;
}

/* The index of the layer after `spec` (layer i's) whose "name" is s; SIZE_MAX: none. */
static size_t later_layer_named(const cJSON *spec, size_t i, const char *s) {
    for (const cJSON *o = spec->next; o; o = o->next) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "name");
        i++;
        if (cJSON_IsString(n) && !strcmp(n->valuestring, s)) return i;
    }
    return SIZE_MAX;
}

/* The value one "from" entry names, layer i (spec) reading it: *v = 0 for "input", k + 1 for
 * layer k (by name or index), which must come before i. */
static kd_status resolve_from(const kd_model *m, size_t i, const cJSON *spec, const cJSON *it,
                              size_t *v, kd_err *err) {
    const kd_layer *l = &m->layers[i];
    if (cJSON_IsNumber(it)) {
        double d = it->valuedouble;
        if (d >= 0 && d < (double)i && d == (double)(size_t)d) {
            *v = (size_t)d + 1;
            return KD_OK;
        }
        return kd_layer_err(l, err, "from: %g is not the index of an earlier layer (0 to %zu)",
                            d, i ? i - 1 : 0);
    }
    if (!cJSON_IsString(it))
        return kd_layer_err(l, err, "from: expected \"input\", an earlier layer's name or index");
    const char *s = it->valuestring;
    if (!strcmp(s, "input")) {
        *v = 0;
        return KD_OK;
    }
    for (size_t k = 0; k < i; k++) {
        if (!m->layers[k].name || strcmp(m->layers[k].name, s) != 0) continue;
        *v = k + 1;
        return KD_OK;
    }
    const cJSON *own = cJSON_GetObjectItemCaseSensitive(spec, "name");
    const size_t k = cJSON_IsString(own) && !strcmp(own->valuestring, s)
                         ? i : later_layer_named(spec, i, s);
    if (k != SIZE_MAX)
        return kd_layer_err(l, err, "from: \"%.100s\" is layer %zu, which %s; a layer reads "
                            "only values computed before it", s, k,
                            k == i ? "is this layer" : "comes later");
    return kd_layer_err(l, err, "from: no layer is named \"%.100s\" (names are given by a "
                        "layer's \"name\"; the model's input is \"input\")", s);
}

static kd_status read_name(kd_model *m, size_t i, const cJSON *spec, kd_err *err) {
    kd_layer *l = &m->layers[i];
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(spec, "name");
    if (!it) return KD_OK;
    if (!cJSON_IsString(it)) return kd_layer_err(l, err, "name: expected a string");
    const char *why = name_problem(it->valuestring);
    if (why) return kd_layer_err(l, err, "name \"%.100s\" %s", it->valuestring, why);
    for (size_t k = 0; k < i; k++)
        if (m->layers[k].name && !strcmp(m->layers[k].name, it->valuestring))
            return kd_layer_err(l, err, "name \"%.100s\" is already layer %zu's", it->valuestring,
                                k);
    if (!(l->name = strdup(it->valuestring)))
        return kd_err_set(err, KD_EIO, "out of memory building layer %zu", i);
    return KD_OK;
}

kd_status kd_graph_read_edges(kd_model *m, size_t i, const cJSON *spec, kd_err *err) {
    kd_layer *l = &m->layers[i];
    kd_status st = read_name(m, i, spec, err);
    if (st) return st;
    const cJSON *from = cJSON_GetObjectItemCaseSensitive(spec, "from");
    const int merge = l->ops->forward_merge != NULL;
    size_t n = 1;
    if (merge) {
        if (!cJSON_IsArray(from) || cJSON_GetArraySize(from) < 2)
            return kd_layer_err(l, err, "from: expected a list of at least two values to merge, "
                                "like [\"layer1.0.bn2\", \"input\"]");
        n = (size_t)cJSON_GetArraySize(from);
    } else if (cJSON_IsArray(from)) {
        return kd_layer_err(l, err, "from: expected one value (a name, an index or \"input\"); "
                            "only merges (add, concat) read a list");
    }
    l->src = calloc(n, sizeof *l->src);
    l->ins = calloc(n, sizeof *l->ins);
    if (!l->src || !l->ins) return kd_err_set(err, KD_EIO, "out of memory building layer %zu", i);
    l->n_in = n;
    if (!from) {
        l->src[0] = i;  /* the previous layer's output (the input for layer 0) */
    } else if (!merge) {
        st = resolve_from(m, i, spec, from, &l->src[0], err);
    } else {
        size_t k = 0;
        for (const cJSON *e = from->child; e && !st; e = e->next, k++)
            st = resolve_from(m, i, spec, e, &l->src[k], err);
    }
    if (st) return st;
    for (size_t k = 0; k < n; k++)
        l->ins[k] = l->src[k] ? m->layers[l->src[k] - 1].out : m->input;
    l->in = l->ins[0];
    return KD_OK;
}

int kd_graph_describe(const kd_model *m, size_t i, cJSON *obj) {
    const kd_layer *l = &m->layers[i];
    char buf[KD_LAYER_NAME_MAX + 8];
    if (l->name && !cJSON_AddStringToObject(obj, "name", l->name)) return -1;
    if (l->n_in == 1 && l->src[0] == i) return 0;  /* the default: the previous value */
    cJSON *from = l->n_in > 1 ? cJSON_AddArrayToObject(obj, "from") : NULL;
    if (l->n_in > 1 && !from) return -1;
    for (size_t k = 0; k < l->n_in; k++) {
        const size_t v = l->src[k];
        cJSON *e = v && !m->layers[v - 1].name
                       ? cJSON_CreateNumber((double)(v - 1))
                       : cJSON_CreateString(kd_graph_value_label(m, v, buf, sizeof buf));
        if (!e) return -1;
        if (from) cJSON_AddItemToArray(from, e);
        else cJSON_AddItemToObject(obj, "from", e);
    }
    return 0;
}

/* ---- Decisions ---- */

#ifdef KD_TEST_HOOKS
int kd_fuse_residual = 1;
#endif

/* Whether value v may be written over or fused away: exactly one reader, not observed, not the
 * model's input. */
static int private_value(const kd_model *m, size_t v) {
    const kd_graph *g = m->graph;
    return v > 0 && g->n_readers[v] == 1 && !g->observed[v];
}

/* Whether layer j reads exactly layer j-1's output, which nobody else reads. */
static int chained(const kd_model *m, size_t j) {
    const kd_layer *l = &m->layers[j];
    return l->n_in == 1 && l->src[0] == j && private_value(m, j);
}

/* Whether layers i, i+1, i+2 are a batchnorm over [C, H, W], a 2x2 max-pool and a relu, each
 * reading only its predecessor's output. */
static int is_group(const kd_model *m, size_t i) {
    const kd_layer *l = &m->layers[i];
    return i + 2 < m->n_layers && l->ops == &kd_layer_batchnorm && l->in.rank == 3 &&
           kd_maxpool_is_2x2(&l[1]) && l[2].ops == &kd_layer_relu && chained(m, i + 1) &&
           chained(m, i + 2);
}

/* Whether layer i of a training model writes its output over its (first) input's buffer: the
 * layer allows it; that input is private to it; its producer's backward does not read that
 * output and the producer does not itself run in place with a backward that reads its input
 * (an in-place relu reads its own output as its input; an in-place add reads nothing). A view
 * (flatten) always shares its input's buffer: it writes nothing, so whatever read that buffer
 * still can; a layer after it then does not run in place. A merge in place (add) writes over
 * input 0 only; its other inputs are read before each element is written. */
static int decide_in_place(const kd_model *m, size_t i) {
    const kd_layer *l = &m->layers[i];
    if (l->src[0] == 0) return 0;
    if (l->n_in == 1 && l->ops->view) return 1;
    const size_t p = l->src[0] - 1;
    const kd_layer_ops *po = m->layers[p].ops;
    return l->ops->in_place && private_value(m, p + 1) && !po->backward_reads_output &&
           (!m->graph->in_place[p] || (po->forward_merge && po->grad_is_dy));
}

void kd_graph_decide(kd_model *m) {
    kd_graph *g = m->graph;
    for (size_t i = 0; i < m->n_layers; i++) g->in_place[i] = (unsigned char)decide_in_place(m, i);
    /* Units: a fused batchnorm -> maxpool2d 2x2 -> relu group, with the conv2d before it when
     * the convolution's output goes only to the group; else one layer. */
    for (size_t i = 0; i < m->n_layers; i++) g->unit[i] = is_group(m, i) ? 3 : 1;
    for (size_t i = 0; i + 1 < m->n_layers; i++)
        if (m->layers[i].ops == &kd_layer_conv2d && g->unit[i + 1] == 3 && chained(m, i + 1))
            g->unit[i] = 4;
    /* An add whose output only a relu reads, the relu running in place over it: one pass. */
    for (size_t i = 0; i + 1 < m->n_layers; i++)
        if (m->layers[i].ops == &kd_layer_add && g->unit[i] == 1 && g->unit[i + 1] == 1 &&
            m->layers[i + 1].ops == &kd_layer_relu && chained(m, i + 1) && g->in_place[i + 1])
            g->unit[i] = KD_UNIT_ADD_RELU | 2;
    /* Training: a batch norm whose output only a relu or relu6 reads, running in place. */
    for (size_t i = 0; m->grads && i + 1 < m->n_layers; i++)
        if (m->layers[i].ops == &kd_layer_batchnorm && g->unit[i] == 1 && g->unit[i + 1] == 1 &&
            (m->layers[i + 1].ops == &kd_layer_relu || m->layers[i + 1].ops == &kd_layer_relu6) &&
            chained(m, i + 1) && g->in_place[i + 1])
            g->unit[i] = KD_UNIT_BN_RELU | 2;
    /* Training: such a unit's output, when only the convolution or dense layer right after it
     * reads it, is not kept but recomputed in backward (memory: MobileNetV2's expanded values
     * are most of its activations). That layer must not run in place nor be a view. */
    for (size_t i = 0; i < m->n_layers; i++) {
        const kd_layer *c = i + 2 < m->n_layers ? &m->layers[i + 2] : NULL;
        g->recompute[i] = (unsigned char)(m->grads && (g->unit[i] & KD_UNIT_BN_RELU) && c &&
                                          (c->ops == &kd_layer_conv2d || c->ops == &kd_layer_dense) &&
                                          (g->unit[i + 2] == 1 || g->unit[i + 2] == 4) &&
                                          chained(m, i + 2) && !g->in_place[i + 2]);
    }
    /* Inference only: a convolution whose output only its batch norm reads, with the relu or
     * relu6 after that when it alone reads the batch norm's output: one pass per sample. */
    for (size_t i = 0; !m->grads && i + 1 < m->n_layers; i++) {
        const kd_layer *l = &m->layers[i];
        if (l->ops != &kd_layer_conv2d || g->unit[i] != 1 || g->unit[i + 1] != 1 ||
            l[1].ops != &kd_layer_batchnorm || !chained(m, i + 1))
            continue;
        const int act = i + 2 < m->n_layers && g->unit[i + 2] == 1 && chained(m, i + 2) &&
                        (l[2].ops == &kd_layer_relu || l[2].ops == &kd_layer_relu6);
        g->unit[i] = (unsigned char)(KD_UNIT_CONV_BN | (act ? 3 : 2));
    }
    /* Inference only: such a unit without activation whose output only the add of two values
     * right after it reads (with that add's relu): the add's other value joins each output as
     * it is stored (kd_conv_bn_add_forward). */
    for (size_t i = 0; !m->grads && i + 2 < m->n_layers; i++) {
        const kd_layer *a = &m->layers[i + 2];
        if (g->unit[i] != (KD_UNIT_CONV_BN | 2) || a->ops != &kd_layer_add || a->n_in != 2 ||
            (a->src[0] != i + 2 && a->src[1] != i + 2) || a->src[0] == a->src[1] ||
            !private_value(m, i + 2) || !KD_HOOK_VALUE(kd_fuse_residual, 1))
            continue;
        const int relu = (g->unit[i + 2] & KD_UNIT_ADD_RELU) != 0;
        g->unit[i] = (unsigned char)(KD_UNIT_CONV_ADD | (relu ? 4 : 3));
    }
}

kd_status kd_graph_init(kd_model *m, kd_err *err) {
    const size_t nv = m->n_layers + 1, nl = m->n_layers;
    size_t n_xs = 0;
    for (size_t i = 0; i < nl; i++) n_xs += m->layers[i].n_in;
    kd_graph *g = m->graph = calloc(1, sizeof *g);
    if (g) {
        g->n_values = nv;
        g->n_xs = n_xs;
        g->n_readers = calloc(nv, sizeof *g->n_readers);
        g->last_reader = malloc(nv * sizeof *g->last_reader);
        g->observed = calloc(nv, 1);
        g->in_place = calloc(nl, 1);
        g->recompute = calloc(nl, 1);
        g->unit = calloc(nl, 1);
        g->xs = calloc(n_xs, sizeof *g->xs);
        g->xs_at = calloc(nl, sizeof *g->xs_at);
    }
    if (!g || !g->n_readers || !g->last_reader || !g->observed || !g->in_place || !g->recompute || !g->unit ||
        !g->xs || !g->xs_at)
        return kd_err_set(err, KD_EIO, "out of memory building a model of %zu layers", nl);
    for (size_t v = 0; v < nv; v++) g->last_reader[v] = SIZE_MAX;
    for (size_t i = 0, at = 0; i < nl; i++) {
        const kd_layer *l = &m->layers[i];
        g->xs_at[i] = at;
        at += l->n_in;
        for (size_t k = 0; k < l->n_in; k++) {
            g->n_readers[l->src[k]]++;
            g->last_reader[l->src[k]] = i;
        }
    }
    kd_graph_decide(m);
    return KD_OK;
}

void kd_graph_free_batch(kd_graph *g) {
    if (!g) return;
    free(g->val);
    free(g->rep_val);
    free(g->rep_xs);
    g->rep_val = NULL;
    g->rep_xs = NULL;
    g->n_rep = 1;
    free(g->pool_of);
    if (g->gathered)
        for (size_t v = 0; v < g->n_values; v++) kd_free_aligned(g->gathered[v]);
    free(g->gathered);
    if (g->obs_grad)
        for (size_t v = 0; v < g->n_values; v++) kd_free_aligned(g->obs_grad[v]);
    free(g->obs_grad);
    if (g->slot)
        for (size_t s = 0; s < g->n_slots; s++) kd_free_aligned(g->slot[s]);
    free(g->slot);
    free(g->slot_busy);
    free(g->gslot);
    g->val = NULL;
    g->pool_of = g->gslot = NULL;
    g->gathered = g->obs_grad = g->slot = NULL;
    g->slot_busy = NULL;
    g->n_slots = g->n_pool = 0;
}

void kd_graph_free(kd_graph *g) {
    if (!g) return;
    kd_graph_free_batch(g);
    free(g->n_readers);
    free(g->last_reader);
    free(g->observed);
    free(g->in_place);
    free(g->recompute);
    free(g->unit);
    free(g->xs);
    free(g->xs_at);
    free(g);
}

/* ---- Public accessors ---- */

const char *kd_model_layer_name(const kd_model *m, size_t i) { return m->layers[i].name; }

const size_t *kd_model_layer_inputs(const kd_model *m, size_t i, size_t *n) {
    *n = m->layers[i].n_in;
    return m->layers[i].src;
}

size_t kd_model_value_last_reader(const kd_model *m, size_t v) {
    return m->graph->last_reader[v];
}
