/* import.c - the ONNX reader: scan, unpack, check the graph (opset, one input, the output, every
 * value defined before it is read), translate the nodes the output needs onto a distill layer
 * list, build the model and copy the weights in. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "kd_data.h"
#include "kd_path.h"
#include "onnx_impl.h"

static const char *str(const char *s) { return s ? s : ""; }

/* ---- the value table: names hashed into slots (open addressing) ---- */

static size_t find_slot(const kd_onnx_tr *t, const char *s) {
    size_t k = (size_t)kd_onnx_hash(s) & (t->n_slot - 1);
    while (t->slot[k] && strcmp(t->v[t->slot[k] - 1].name, s)) k = (k + 1) & (t->n_slot - 1);
    return k;
}

tr_value *kd_onnx_tr_find(kd_onnx_tr *t, const char *s) {
    const size_t k = find_slot(t, s);
    return t->slot[k] ? &t->v[t->slot[k] - 1] : NULL;
}

kd_status kd_onnx_tr_define(kd_onnx_tr *t, const char *s, tr_value **out) {
    const size_t k = find_slot(t, s);
    if (t->slot[k])
        return kd_err_set(t->err, KD_EINPUT, "value '%.200s' is defined twice", s);
    KD_ASSERT(t->n_v < t->cap_v);
    tr_value *v = &t->v[t->n_v++];
    memset(v, 0, sizeof *v);
    v->name = s;
    t->slot[k] = t->n_v;
    *out = v;
    return KD_OK;
}

kd_status kd_onnx_node_err(kd_onnx_tr *t, const char *fmt, ...) {
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const Onnx__NodeProto *nd = t->node;
    return kd_err_set(t->err, KD_EINPUT, "node %zu '%.120s' (%.60s): %s", t->node_index,
                      str(nd->name), str(nd->op_type), msg);
}

static void tr_free(kd_onnx_tr *t) {
    for (size_t i = 0; i < t->n_v; i++) {
        free(t->v[i].f);
        free(t->v[i].i);
    }
    for (size_t i = 0; t->used && i < t->n_slot; i++) free(t->used[i]);
    for (size_t i = 0; i < t->n_w; i++) free(t->w[i].data);
    free(t->v);
    free(t->slot);
    free(t->used);
    free(t->w);
    cJSON_Delete(t->layers);
}

/* ---- checks of the model before translation ---- */

static kd_status check_opset(kd_onnx_tr *t, const Onnx__ModelProto *mp) {
    for (size_t k = 0; k < mp->n_opset_import; k++) {
        const Onnx__OperatorSetIdProto *o = mp->opset_import[k];
        if (o->domain && o->domain[0] && strcmp(o->domain, "ai.onnx")) continue;
        t->opset = o->version;
    }
    if (t->opset < 11 || t->opset > 17)
        return kd_err_set(t->err, KD_EINPUT, "opset %lld of the default domain: distill reads "
                          "opsets 11 to 17 (re-export with opset_version=13 or 17)",
                          (long long)t->opset);
    if (!mp->graph) return kd_err_set(t->err, KD_EINPUT, "the model has no graph");
    return KD_OK;
}

/* The graph's one input that is not an initializer: a float tensor [batch, ...], the batch
 * symbolic or any size, the rest known. */
static kd_status define_input(kd_onnx_tr *t, kd_onnx_info *info) {
    const Onnx__GraphProto *g = t->g;
    const Onnx__ValueInfoProto *in = NULL;
    for (size_t k = 0; k < g->n_input; k++) {
        const char *name = str(g->input[k]->name);
        if (kd_onnx_tr_find(t, name)) continue;  /* an initializer listed as an input */
        if (in)
            return kd_err_set(t->err, KD_EINPUT, "the graph has two inputs, '%.200s' and "
                              "'%.200s': a teacher takes one", str(in->name), name);
        in = g->input[k];
    }
    if (!in) return kd_err_set(t->err, KD_EINPUT, "the graph has no input");
    const char *name = str(in->name);
    const Onnx__TypeProto *ty = in->type;
    const Onnx__TensorShapeProto *sh = NULL;
    if (ty && ty->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE && ty->tensor_type)
        sh = ty->tensor_type->shape;
    if (!sh || ty->tensor_type->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return kd_err_set(t->err, KD_EINPUT, "input '%.200s': not a float tensor with a shape",
                          name);
    if (sh->n_dim < 2 || sh->n_dim > KD_MAX_RANK + 1)
        return kd_err_set(t->err, KD_EINPUT, "input '%.200s': rank %zu; a teacher takes "
                          "[batch, ...] with 1 to 4 per-sample axes", name, sh->n_dim);
    tr_value *v;
    kd_status st = kd_onnx_tr_define(t, name, &v);
    if (st) return st;
    t->input = (size_t)(v - t->v);
    v->kind = VAL_RUN;
    v->dname = "input";
    v->layer = -1;
    v->shape.rank = (int)sh->n_dim - 1;
    for (size_t k = 1; k < sh->n_dim; k++) {
        const Onnx__TensorShapeProto__Dimension *d = sh->dim[k];
        if (d->value_case != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE ||
            d->dim_value < 1 || d->dim_value > ((int64_t)1 << 24))
            return kd_err_set(t->err, KD_EINPUT, "input '%.200s': axis %zu is not a size in "
                              "[1, 2^24] (only the batch axis may be symbolic)", name, k);
        v->shape.d[k - 1] = (size_t)d->dim_value;
    }
    v->dshape = v->shape;
    snprintf(info->input, sizeof info->input, "%s", name);
    return KD_OK;
}

/* The first layer opt asks for: an affine map from the data to the graph's input. */
static kd_status input_affine(kd_onnx_tr *t, const kd_onnx_opts *opt) {
    tr_value *v = &t->v[t->input];
    if (!opt->in_c) return KD_OK;
    if (opt->in_c != v->dshape.d[0])
        return kd_err_set(t->err, KD_EUSAGE, "preprocessing of %zu channels for an input of %zu "
                          "channels", opt->in_c, v->dshape.d[0]);
    const char *name = kd_onnx_tr_name(t, "input.preprocess");
    cJSON *spec = cJSON_CreateObject();
    float *w = malloc(opt->in_c * sizeof *w), *b = malloc(opt->in_c * sizeof *b);
    kd_status st = KD_OK;
    if (!name || !spec || !w || !b || !cJSON_AddStringToObject(spec, "type", "affine") ||
        !cJSON_AddStringToObject(spec, "name", name) || !cJSON_AddStringToObject(spec, "from", "input") ||
        !cJSON_AddItemToArray(t->layers, spec)) {
        cJSON_Delete(spec);
        free(w);
        free(b);
        return kd_err_set(t->err, KD_EIO, "out of memory");
    }
    memcpy(w, opt->in_w, opt->in_c * sizeof *w);
    memcpy(b, opt->in_b, opt->in_c * sizeof *b);
    t->n_layers++;
    v->dname = name;
    v->layer = 0;
    v->affine = 1;
    v->aw = t->n_w;
    if ((st = kd_onnx_add_weight(t, name, "weight", w, opt->in_c))) {
        free(b);
        return st;
    }
    v->ab = t->n_w;
    return kd_onnx_add_weight(t, name, "bias", b, opt->in_c);
}

/* Every node input defined by an earlier node, an initializer or the input (which also
 * refuses a cycle), every output defined once; counts readers. */
static kd_status define_nodes(kd_onnx_tr *t) {
    const Onnx__GraphProto *g = t->g;
    for (size_t n = 0; n < g->n_node; n++) {
        const Onnx__NodeProto *nd = g->node[n];
        t->node = nd;
        t->node_index = n;
        for (size_t k = 0; k < nd->n_input; k++) {
            if (!nd->input[k][0]) continue;  /* an optional input left out */
            tr_value *v = kd_onnx_tr_find(t, nd->input[k]);
            if (!v)
                return kd_onnx_node_err(t, "reads '%.200s', which no earlier node, initializer "
                                        "or input defines (a missing value or a cycle)",
                                        nd->input[k]);
            v->readers++;
        }
        for (size_t k = 0; k < nd->n_output; k++) {
            tr_value *v;
            if (!nd->output[k][0]) continue;
            if (kd_onnx_tr_find(t, nd->output[k]))
                return kd_onnx_node_err(t, "writes '%.200s', which is already defined",
                                        nd->output[k]);
            kd_status st = kd_onnx_tr_define(t, nd->output[k], &v);
            if (st) return st;
            v->producer = n + 1;
        }
    }
    return KD_OK;
}

/* The output to translate up to: opt's, else "logits", else the only one. */
static kd_status choose_output(kd_onnx_tr *t, const char *want, tr_value **out) {
    const Onnx__GraphProto *g = t->g;
    const char *pick = NULL;
    char list[300] = "";
    for (size_t k = 0; k < g->n_output; k++) {
        const char *name = str(g->output[k]->name);
        tr_value *v = kd_onnx_tr_find(t, name);
        if (!v)
            return kd_err_set(t->err, KD_EINPUT, "output '%.200s' is not computed by any node",
                              name);
        v->readers++;
        size_t used = strlen(list);
        snprintf(list + used, sizeof list - used, "%s'%.60s'", k ? ", " : "", name);
        if (want ? !strcmp(name, want) : !strcmp(name, "logits")) pick = name;
    }
    if (!pick && want)
        return kd_err_set(t->err, KD_EUSAGE, "teacher.output \"%.200s\" is not an output of "
                          "the graph (its outputs: %s)", want, list);
    if (!pick && g->n_output == 1) pick = str(g->output[0]->name);
    if (!pick)
        return kd_err_set(t->err, KD_EINPUT, "the graph has %zu outputs (%s) and none is "
                          "named 'logits': name one with teacher.output", g->n_output, list);
    *out = kd_onnx_tr_find(t, pick);
    return KD_OK;
}

/* A final Softmax or LogSoftmax over the classes: its input is the logits. */
static tr_value *strip_softmax(kd_onnx_tr *t, tr_value *out, kd_onnx_info *info) {
    if (!out->producer) return out;
    const Onnx__NodeProto *nd = t->g->node[out->producer - 1];
    if (strcmp(str(nd->op_type), "Softmax") && strcmp(str(nd->op_type), "LogSoftmax")) return out;
    if (nd->n_input < 1 || !nd->input[0][0]) return out;
    tr_value *in = kd_onnx_tr_find(t, nd->input[0]);
    snprintf(info->note, sizeof info->note, "the final %s (node '%.100s') is removed: its input "
             "'%.100s' is used as the teacher's logits", nd->op_type, str(nd->name), in->name);
    return in;
}

/* Marks the nodes the value needs (need[n] = 1), walking producers back. */
static kd_status mark_needed(kd_onnx_tr *t, const tr_value *out, char *need) {
    size_t *stack = malloc((t->g->n_node + 1) * sizeof *stack), top = 0;
    if (!stack) return kd_err_set(t->err, KD_EIO, "out of memory");
    if (out->producer) stack[top++] = out->producer - 1;
    while (top) {
        const size_t n = stack[--top];
        if (need[n]) continue;
        need[n] = 1;
        const Onnx__NodeProto *nd = t->g->node[n];
        for (size_t k = 0; k < nd->n_input; k++) {
            if (!nd->input[k][0]) continue;
            const tr_value *v = kd_onnx_tr_find(t, nd->input[k]);
            if (v->producer && !need[v->producer - 1]) stack[top++] = v->producer - 1;
        }
    }
    free(stack);
    return KD_OK;
}

static kd_status translate(kd_onnx_tr *t, const tr_value *out, kd_onnx_info *info) {
    const size_t N = t->g->n_node;
    char *need = calloc(N + 1, 1);
    kd_status st = need ? mark_needed(t, out, need) : kd_err_set(t->err, KD_EIO, "out of memory");
    for (size_t n = 0; n < N && !st; n++) {
        const Onnx__NodeProto *nd = t->g->node[n];
        if (!need[n]) continue;
        t->node = nd;
        t->node_index = n;
        kd_onnx_op_fn fn = NULL;
        if (!nd->domain || !nd->domain[0] || !strcmp(nd->domain, "ai.onnx"))
            fn = kd_onnx_op_find(str(nd->op_type));
        if (!fn)
            st = kd_onnx_node_err(t, "operator %s%s%s is not supported; distill translates %s",
                                  nd->domain && nd->domain[0] ? nd->domain : "",
                                  nd->domain && nd->domain[0] ? "." : "", str(nd->op_type),
                                  kd_onnx_supported_ops());
        else if (nd->n_output < 1 || !nd->output[0][0])
            st = kd_onnx_node_err(t, "has no output");
        else
            st = fn(t, nd);
    }
    free(need);
    if (st) return st;
    if (out->kind != VAL_RUN || out->layer < 0)
        return kd_err_set(t->err, KD_EINPUT, "output '%.200s' is %s, not computed by any "
                          "layer", out->name, out->kind == VAL_RUN ? "the input itself" :
                          "a constant or an incomplete pattern");
    if (out->layer != t->n_layers - 1)  /* every translated node is an ancestor of out */
        return kd_err_set(t->err, KD_EINPUT, "output '%.200s' is not the last value computed",
                          out->name);
    snprintf(info->output, sizeof info->output, "%s", out->name);
    return KD_OK;
}

/* ---- the model and the description ---- */

static kd_status build_model(kd_onnx_tr *t, const kd_onnx_opts *opt, kd_model *m) {
    const tr_value *in = &t->v[t->input];
    char *json = cJSON_PrintUnformatted(t->layers);
    if (!json) return kd_err_set(t->err, KD_EIO, "out of memory");
    kd_status st = kd_model_init(m, &in->shape, json, opt->with_grads, t->err);
    free(json);
    if (st) {
        kd_err_prefix(t->err, "the translated graph");
        t->err->code = KD_EINPUT;
        return KD_EINPUT;
    }
    for (size_t k = 0; k < t->n_w; k++) {
        kd_tensor *x = kd_model_tensor(m, t->w[k].tensor);
        if (!x || x->numel != t->w[k].n || !x->data)
            return kd_err_set(t->err, KD_EIO, "internal: translated tensor %s has no place in "
                              "the model", t->w[k].tensor);
        memcpy(x->data, t->w[k].data, x->numel * sizeof *x->data);
    }
    return KD_OK;
}

/* "Conv x20, Relu x17, ...": op types in order of first use (the first 64 kinds). */
static void count_ops(const Onnx__GraphProto *g, kd_onnx_info *info) {
    const char *op[64];
    size_t count[64], n_op = 0, used = 0;
    for (size_t n = 0; n < g->n_node; n++) {
        const char *s = str(g->node[n]->op_type);
        size_t k = 0;
        while (k < n_op && strcmp(op[k], s)) k++;
        if (k == n_op && n_op < 64) {
            op[n_op] = s;
            count[n_op++] = 0;
        }
        if (k < n_op) count[k]++;
    }
    for (size_t k = 0; k < n_op && used + 1 < sizeof info->ops; k++) {
        used += (size_t)snprintf(info->ops + used, sizeof info->ops - used, "%s%.40s x%zu",
                                 used ? ", " : "", op[k], count[k]);
    }
}

static kd_status describe(kd_onnx_tr *t, const Onnx__ModelProto *mp, kd_onnx_info *info) {
    const Onnx__GraphProto *g = t->g;
    info->opset = t->opset;
    info->ir_version = mp->ir_version;
    snprintf(info->producer, sizeof info->producer, "%s %s", str(mp->producer_name),
             str(mp->producer_version));
    info->n_inputs = 1;
    count_ops(g, info);
    info->outputs = calloc(g->n_output + 1, sizeof *info->outputs);
    info->values = calloc(t->n_v + 1, sizeof *info->values);
    if (!info->outputs || !info->values) return kd_err_set(t->err, KD_EIO, "out of memory");
    for (size_t k = 0; k < g->n_output; k++) {
        if (!(info->outputs[k] = strdup(str(g->output[k]->name))))
            return kd_err_set(t->err, KD_EIO, "out of memory");
        info->n_outputs++;
    }
    for (size_t i = 0; i < t->n_v; i++) {
        const tr_value *v = &t->v[i];
        if (v->kind != VAL_RUN && v->kind != VAL_CONST) continue;
        kd_onnx_value *o = &info->values[info->n_values];
        o->onnx = strdup(v->name);
        o->distill = v->kind == VAL_RUN ? strdup(v->dname) : NULL;
        o->shape = v->shape;
        info->n_values++;
        if (!o->onnx || (v->kind == VAL_RUN && !o->distill))
            return kd_err_set(t->err, KD_EIO, "out of memory");
    }
    return KD_OK;
}

void kd_onnx_info_free(kd_onnx_info *info) {
    if (!info) return;
    for (size_t k = 0; k < info->n_outputs; k++) free(info->outputs[k]);
    for (size_t k = 0; k < info->n_values; k++) {
        free(info->values[k].onnx);
        free(info->values[k].distill);
    }
    free(info->outputs);
    free(info->values);
    memset(info, 0, sizeof *info);
}

/* Written by `distill export`: its producer name with its metadata. */
static int from_distill(const Onnx__ModelProto *mp) {
    if (strcmp(str(mp->producer_name), "distill")) return 0;
    for (size_t k = 0; k < mp->n_metadata_props; k++)
        if (!strcmp(str(mp->metadata_props[k]->key), "distill_version")) return 1;
    return 0;
}

/* Sizes the value and name tables for every value the graph can define. */
static kd_status tr_init(kd_onnx_tr *t, const Onnx__GraphProto *g) {
    size_t n = g->n_initializer + g->n_input + 1, slots = 16;
    for (size_t k = 0; k < g->n_node; k++) n += g->node[k]->n_output;
    /* names: values plus the inner layers of multi-layer translations (two per node) */
    const size_t names = n + 2 * g->n_node;
    while (slots < 2 * names) slots *= 2;
    t->g = g;
    t->cap_v = n;
    t->n_slot = slots;
    t->v = calloc(n, sizeof *t->v);
    t->slot = calloc(slots, sizeof *t->slot);
    t->used = calloc(slots, sizeof *t->used);
    t->layers = cJSON_CreateArray();
    if (!t->v || !t->slot || !t->used || !t->layers)
        return kd_err_set(t->err, KD_EIO, "out of memory");
    return KD_OK;
}

static kd_status define_initializers(kd_onnx_tr *t) {
    for (size_t k = 0; k < t->g->n_initializer; k++) {
        const Onnx__TensorProto *tp = t->g->initializer[k];
        tr_value *v;
        kd_status st = kd_onnx_tr_define(t, str(tp->name), &v);
        if (!st) st = kd_onnx_tensor_decode(t, tp, v);
        if (st) return st;
    }
    return KD_OK;
}

kd_status kd_onnx_load_buf(const uint8_t *buf, size_t len, const char *dir,
                           const kd_onnx_opts *opt, kd_model *m, kd_onnx_info *info,
                           kd_err *err) {
    kd_onnx_tr t;
    kd_onnx_info own;
    memset(&t, 0, sizeof t);
    memset(&own, 0, sizeof own);
    memset(m, 0, sizeof *m);
    if (!info) info = &own;
    memset(info, 0, sizeof *info);
    t.err = err;
    t.dir = dir;
    t.caps = opt->caps ? opt->caps : &kd_onnx_default_caps;
    Onnx__ModelProto *mp = NULL;
    tr_value *out = NULL;
    kd_status st = kd_onnx_scan(buf, len, t.caps, err);
    if (!st && !(mp = onnx__model_proto__unpack(NULL, len, buf)))
        st = kd_err_set(err, KD_EINPUT, "not a valid ONNX file (the protobuf does not decode "
                        "as a ModelProto: a wrong field type or a missing required field)");
    if (!st) st = check_opset(&t, mp);
    if (!st) st = tr_init(&t, mp->graph);
    if (!st) st = define_initializers(&t);
    if (!st) st = define_input(&t, info);
    if (!st) st = input_affine(&t, opt);
    if (!st) st = define_nodes(&t);
    if (!st) st = choose_output(&t, opt->output, &out);
    if (!st) {
        info->from_distill = from_distill(mp);
        out = strip_softmax(&t, out, info);
        st = translate(&t, out, info);
    }
    if (!st) st = build_model(&t, opt, m);
    if (!st) st = describe(&t, mp, info);
    if (st) {
        kd_model_free(m);
        memset(m, 0, sizeof *m);
        kd_onnx_info_free(info);
    }
    kd_onnx_info_free(&own);
    tr_free(&t);
    if (mp) onnx__model_proto__free_unpacked(mp, NULL);
    return st;
}

kd_status kd_onnx_load(const char *path, const kd_onnx_opts *opt, kd_model *m,
                       kd_onnx_info *info, kd_err *err) {
    const kd_onnx_caps *caps = opt->caps ? opt->caps : &kd_onnx_default_caps;
    char *buf = NULL, dir[KD_PATH_MAX];
    size_t len = 0;
    memset(m, 0, sizeof *m);
    if (info) memset(info, 0, sizeof *info);
    kd_status st = kd_read_file(path, caps->max_bytes, &buf, &len, err);
    if (st) {
        if (st != KD_EIO && !strstr(err->msg, path)) kd_err_prefix(err, "%s", path);
        return st;
    }
    if (kd_path_dirname(dir, sizeof dir, path)) snprintf(dir, sizeof dir, ".");
    st = kd_onnx_load_buf((const uint8_t *)buf, len, dir, opt, m, info, err);
    if (st && !strstr(err->msg, path)) kd_err_prefix(err, "%s", path);
    free(buf);
    return st;
}
