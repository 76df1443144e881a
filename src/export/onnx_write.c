/* onnx_write.c - the ONNX writer both exporters share (onnx_impl.h): the arena, nodes and
 * initializers, value infos, and the model around a graph, written with protobuf-c, whose code
 * is generated at build time from Debian's onnx.proto (build/gen/onnx.pb-c.[ch]; proto2, so
 * every optional scalar needs its has_ flag). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_impl.h"

/* Tensors go into raw_data in host byte order; ONNX stores raw_data little-endian. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the ONNX exporter writes raw_data in host order and needs a little-endian host"
#endif

/* One protobuf message may not exceed 2 GiB; larger models would need external data. */
#define ONNX_MAX_BYTES ((size_t)0x7fffffff)

/* ---- Arena: every message, name and tensor of the model lives in it until the write ---- */

struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
};

#define ARENA_BLOCK ((size_t)1 << 20)

void *kd_onnxw_alloc(arena_block **head, size_t n) {
    const size_t align = sizeof(max_align_t);
    if (n > SIZE_MAX / 2) return NULL;
    n = (n + align - 1) / align * align;
    arena_block *b = *head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        if (!(b = calloc(1, sizeof *b + cap))) return NULL;
        b->cap = cap;
        b->next = *head;
        *head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

char *kd_onnxw_printf(arena_block **head, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? kd_onnxw_alloc(head, (size_t)n + 1) : NULL;
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

void kd_onnxw_free_arena(arena_block *b) {
    while (b) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
}


/* arr (a malloc'd array of *cap elements of elem bytes) grown to twice the size (64 at first);
 * NULL when memory runs out (arr is then unchanged). */
static void *grown(void *arr, size_t *cap, size_t elem) {
    size_t nc = *cap ? 2 * *cap : 64;
    void *p = nc <= SIZE_MAX / elem ? realloc(arr, nc * elem) : NULL;
    if (p) *cap = nc;
    return p;
}

kd_status kd_onnxw_oom(kd_err *err) {
    return kd_err_set(err, KD_EIO, "ONNX export: out of memory");
}

/* The ONNX element type of each stored dtype the codecs use. */
int32_t kd_onnxw_type(kd_dtype t) {
    static const struct {
        kd_dtype dt;
        int32_t onnx;
    } map[] = {{KD_DT_F32, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT},
               {KD_DT_F16, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16},
               {KD_DT_BF16, ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16},
               {KD_DT_I8, ONNX__TENSOR_PROTO__DATA_TYPE__INT8}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (map[i].dt == t) return map[i].onnx;
    return ONNX__TENSOR_PROTO__DATA_TYPE__UNDEFINED;
}

/* Adds an initializer holding bytes (copied) of the given element type and shape. */
kd_status kd_onnxw_init(kd_onnxw_emitter *em, const char *name, int32_t type,
                          const kd_shape *shape, const void *bytes, size_t n_bytes, kd_err *err) {
    Onnx__TensorProto *t = kd_onnxw_alloc(&em->arena, sizeof *t);
    if (!t) return kd_onnxw_oom(err);
    *t = (Onnx__TensorProto)ONNX__TENSOR_PROTO__INIT;
    t->name = kd_onnxw_printf(&em->arena, "%s", name);
    t->dims = kd_onnxw_alloc(&em->arena, (shape->rank ? (size_t)shape->rank : 1) * sizeof *t->dims);
    t->raw_data.data = kd_onnxw_alloc(&em->arena, n_bytes ? n_bytes : 1);
    if (!t->name || !t->dims || !t->raw_data.data) return kd_onnxw_oom(err);
    t->n_dims = (size_t)shape->rank;
    for (int d = 0; d < shape->rank; d++) t->dims[d] = (int64_t)shape->d[d];
    t->has_data_type = 1;
    t->data_type = type;
    t->has_raw_data = 1;
    t->raw_data.len = n_bytes;
    if (n_bytes) memcpy(t->raw_data.data, bytes, n_bytes);
    if (em->n_inits == em->cap_inits) {
        Onnx__TensorProto **g = grown(em->inits, &em->cap_inits, sizeof *g);
        if (!g) return kd_onnxw_oom(err);
        em->inits = g;
    }
    em->inits[em->n_inits++] = t;
    return KD_OK;
}

/* Adds a node with one output, named out_name or "<layer>/<op>[_k]"; it becomes the current
 * value when set_current. */
kd_status kd_onnxw_node(kd_onnxw_emitter *em, const char *op, const char *const *inputs,
                          size_t n_inputs, const kd_onnx_attr *attrs, size_t n_attrs,
                          const char *out_name, int set_current, const char **out, kd_err *err) {
    Onnx__NodeProto *nd = kd_onnxw_alloc(&em->arena, sizeof *nd);
    if (!nd) return kd_onnxw_oom(err);
    *nd = (Onnx__NodeProto)ONNX__NODE_PROTO__INIT;
    nd->op_type = kd_onnxw_printf(&em->arena, "%s", op);
    nd->input = kd_onnxw_alloc(&em->arena, (n_inputs ? n_inputs : 1) * sizeof *nd->input);
    nd->output = kd_onnxw_alloc(&em->arena, sizeof *nd->output);
    nd->attribute = kd_onnxw_alloc(&em->arena, (n_attrs ? n_attrs : 1) * sizeof *nd->attribute);
    if (!nd->op_type || !nd->input || !nd->output || !nd->attribute) return kd_onnxw_oom(err);
    for (size_t i = 0; i < n_inputs; i++)
        if (!(nd->input[i] = kd_onnxw_printf(&em->arena, "%s", inputs[i] ? inputs[i] : "")))
            return kd_onnxw_oom(err);
    nd->n_input = n_inputs;
    if (out_name) nd->output[0] = kd_onnxw_printf(&em->arena, "%s", out_name);
    else if (em->n_in_layer) nd->output[0] = kd_onnxw_printf(&em->arena, "%s/%s_%d", em->layer, op, em->n_in_layer);
    else nd->output[0] = kd_onnxw_printf(&em->arena, "%s/%s", em->layer, op);
    if (!nd->output[0]) return kd_onnxw_oom(err);
    nd->n_output = 1;
    nd->name = nd->output[0];
    em->n_in_layer++;
    for (size_t i = 0; i < n_attrs; i++) {
        Onnx__AttributeProto *a = kd_onnxw_alloc(&em->arena, sizeof *a);
        if (!a) return kd_onnxw_oom(err);
        *a = (Onnx__AttributeProto)ONNX__ATTRIBUTE_PROTO__INIT;
        if (!(a->name = kd_onnxw_printf(&em->arena, "%s", attrs[i].name))) return kd_onnxw_oom(err);
        a->has_type = 1;
        if (attrs[i].kind == KD_ONNX_ATTR_INT) {
            a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
            a->has_i = 1;
            a->i = attrs[i].i;
        } else if (attrs[i].kind == KD_ONNX_ATTR_FLOAT) {
            a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
            a->has_f = 1;
            a->f = attrs[i].f;
        } else {
            a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
            a->n_ints = attrs[i].n_ints;
            if (!(a->ints = kd_onnxw_alloc(&em->arena, sizeof attrs[i].ints))) return kd_onnxw_oom(err);
            memcpy(a->ints, attrs[i].ints, sizeof attrs[i].ints);
        }
        nd->attribute[i] = a;
    }
    nd->n_attribute = n_attrs;
    if (em->n_nodes == em->cap_nodes) {
        Onnx__NodeProto **g = grown(em->nodes, &em->cap_nodes, sizeof *g);
        if (!g) return kd_onnxw_oom(err);
        em->nodes = g;
    }
    em->nodes[em->n_nodes++] = nd;
    if (set_current) em->current = nd->output[0];
    if (out) *out = nd->output[0];
    return KD_OK;
}

/* A float tensor value [N, dims...] with a symbolic batch dimension, for graph inputs and
 * outputs. */
Onnx__ValueInfoProto *kd_onnxw_value_info(arena_block **a, const char *name, const kd_shape *s) {
    Onnx__ValueInfoProto *vi = kd_onnxw_alloc(a, sizeof *vi);
    Onnx__TypeProto *tp = kd_onnxw_alloc(a, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = kd_onnxw_alloc(a, sizeof *tt);
    Onnx__TensorShapeProto *sh = kd_onnxw_alloc(a, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dims = kd_onnxw_alloc(a, ((size_t)s->rank + 1) * sizeof *dims);
    if (!vi || !tp || !tt || !sh || !dims) return NULL;
    for (int d = 0; d <= s->rank; d++) {
        if (!(dims[d] = kd_onnxw_alloc(a, sizeof *dims[d]))) return NULL;
        *dims[d] = (Onnx__TensorShapeProto__Dimension)ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
        if (d == 0) {
            dims[d]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            if (!(dims[d]->dim_param = kd_onnxw_printf(a, "N"))) return NULL;
        } else {
            dims[d]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dims[d]->dim_value = (int64_t)s->d[d - 1];
        }
    }
    *sh = (Onnx__TensorShapeProto)ONNX__TENSOR_SHAPE_PROTO__INIT;
    sh->n_dim = (size_t)s->rank + 1;
    sh->dim = dims;
    *tt = (Onnx__TypeProto__Tensor)ONNX__TYPE_PROTO__TENSOR__INIT;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = sh;
    *tp = (Onnx__TypeProto)ONNX__TYPE_PROTO__INIT;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    *vi = (Onnx__ValueInfoProto)ONNX__VALUE_INFO_PROTO__INIT;
    vi->name = kd_onnxw_printf(a, "%s", name);
    vi->type = tp;
    return vi->name ? vi : NULL;
}

void kd_onnxw_begin_layer(kd_onnxw_emitter *em, const char *name) {
    snprintf(em->layer, sizeof em->layer, "%s", name);
    em->n_in_layer = 0;
}

/* metadata_props: the checkpoint's pairs, then what this exporter states itself. */
static kd_status add_metadata(Onnx__ModelProto *mp, arena_block **a, const kd_export_info *info,
                              const char *dtype, const char *scheme, kd_err *err) {
    static const char *const own[] = {"distill_version", "dtype", "quantization"};
    const size_t cap = info->n_meta + 3;
    mp->metadata_props = kd_onnxw_alloc(a, cap * sizeof *mp->metadata_props);
    if (!mp->metadata_props) return kd_onnxw_oom(err);
    const char *keys[3] = {"distill_version", "dtype", scheme ? "quantization" : NULL};
    const char *vals[3] = {KD_VERSION, dtype, scheme};
    for (size_t i = 0; i < info->n_meta + 3; i++) {
        const char *k = i < info->n_meta ? info->meta_keys[i] : keys[i - info->n_meta];
        const char *v = i < info->n_meta ? info->meta_vals[i] : vals[i - info->n_meta];
        int skip = !k;
        for (size_t j = 0; j < 3 && i < info->n_meta && !skip; j++) skip = !strcmp(k, own[j]);
        if (skip) continue;
        Onnx__StringStringEntryProto *e = kd_onnxw_alloc(a, sizeof *e);
        if (!e) return kd_onnxw_oom(err);
        *e = (Onnx__StringStringEntryProto)ONNX__STRING_STRING_ENTRY_PROTO__INIT;
        e->key = kd_onnxw_printf(a, "%s", k);
        e->value = kd_onnxw_printf(a, "%s", v ? v : "");
        if (!e->key || !e->value) return kd_onnxw_oom(err);
        mp->metadata_props[mp->n_metadata_props++] = e;
    }
    return KD_OK;
}

typedef struct {
    const uint8_t *buf;
    size_t len;
} packed;

static kd_status write_packed(FILE *f, void *ctx, kd_err *err) {
    const packed *p = ctx;
    if (fwrite(p->buf, 1, p->len, f) != p->len)
        return kd_err_set(err, KD_EIO, "write failed");
    return KD_OK;
}

kd_status kd_onnxw_write_model(kd_onnxw_emitter *em, const char *path, const kd_shape *input,
                               size_t n_classes, const char *doc, const kd_export_info *info,
                               const char *dtype, const char *scheme, kd_err *err) {
    uint8_t *buf = NULL;
    kd_status st = KD_OK;
    Onnx__GraphProto *g = kd_onnxw_alloc(&em->arena, sizeof *g);
    Onnx__ModelProto *mp = kd_onnxw_alloc(&em->arena, sizeof *mp);
    Onnx__OperatorSetIdProto *ops = kd_onnxw_alloc(&em->arena, sizeof *ops);
    Onnx__OperatorSetIdProto **opsv = kd_onnxw_alloc(&em->arena, sizeof *opsv);
    Onnx__ValueInfoProto **in = kd_onnxw_alloc(&em->arena, sizeof *in);
    Onnx__ValueInfoProto **out = kd_onnxw_alloc(&em->arena, 2 * sizeof *out);
    const kd_shape classes = {1, {n_classes}};
    if (!g || !mp || !ops || !opsv || !in || !out ||
        !(in[0] = kd_onnxw_value_info(&em->arena, "input", input)) ||
        !(out[0] = kd_onnxw_value_info(&em->arena, "logits", &classes)) ||
        !(out[1] = kd_onnxw_value_info(&em->arena, "probabilities", &classes)))
        return kd_onnxw_oom(err);
    *g = (Onnx__GraphProto)ONNX__GRAPH_PROTO__INIT;
    g->name = "distill";
    g->doc_string = kd_onnxw_printf(&em->arena, "%s", doc);
    g->n_node = em->n_nodes;
    g->node = em->nodes;
    g->n_initializer = em->n_inits;
    g->initializer = em->inits;
    g->n_input = 1;
    g->input = in;
    g->n_output = 2;
    g->output = out;
    *ops = (Onnx__OperatorSetIdProto)ONNX__OPERATOR_SET_ID_PROTO__INIT;
    ops->domain = "";
    ops->has_version = 1;
    ops->version = ONNX_OPSET;
    opsv[0] = ops;
    *mp = (Onnx__ModelProto)ONNX__MODEL_PROTO__INIT;
    mp->has_ir_version = 1;
    mp->ir_version = ONNX_IR_VERSION;
    mp->n_opset_import = 1;
    mp->opset_import = opsv;
    mp->producer_name = "distill";
    mp->producer_version = KD_VERSION;
    mp->graph = g;
    if ((st = add_metadata(mp, &em->arena, info, dtype, scheme, err))) return st;

    size_t len = onnx__model_proto__get_packed_size(mp);
    if (len > ONNX_MAX_BYTES)
        return kd_err_set(err, KD_EUSAGE, "%s: the model needs %zu bytes, more than the 2 GiB "
                          "one ONNX file can hold", path, len);
    if (!(buf = malloc(len ? len : 1))) return kd_onnxw_oom(err);
    packed p = {buf, onnx__model_proto__pack(mp, buf)};
    st = kd_write_atomic(path, write_packed, &p, err);
    free(buf);
    return st;
}

void kd_onnxw_free(kd_onnxw_emitter *em) {
    free(em->nodes);
    free(em->inits);
    kd_onnxw_free_arena(em->arena);
    em->nodes = NULL, em->inits = NULL, em->arena = NULL;
}
