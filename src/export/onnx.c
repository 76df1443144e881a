/* onnx.c - the ONNX exporter (opset 13, IR version 7): the graph is built through each layer's
 * export_onnx slot and written with protobuf-c, whose code is generated at build time from
 * Debian's onnx.proto (build/gen/onnx.pb-c.[ch]; proto2, so every optional scalar needs its
 * has_ flag). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "export_impl.h"
#include "onnx.pb-c.h"

/* Tensors go into raw_data in host byte order; ONNX stores raw_data little-endian. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the ONNX exporter writes raw_data in host order and needs a little-endian host"
#endif

/* IR 7 / opset 13 (ONNX 1.8, 2020): every ONNX Runtime since 1.6 runs it. */
#define ONNX_IR_VERSION 7
#define ONNX_OPSET 13
/* One protobuf message may not exceed 2 GiB; larger models would need external data. */
#define ONNX_MAX_BYTES ((size_t)0x7fffffff)

/* ---- Arena: every message, name and tensor of the model lives in it until the write ---- */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

#define ARENA_BLOCK ((size_t)1 << 20)

/* n zeroed bytes, aligned for any type; NULL on overflow or when memory runs out. */
static void *arena_alloc(arena_block **head, size_t n) {
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

static char *arena_printf(arena_block **head, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static char *arena_printf(arena_block **head, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? arena_alloc(head, (size_t)n + 1) : NULL;
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static void arena_free(arena_block *b) {
    while (b) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
}

/* ---- The emitter ---- */

typedef struct {
    kd_onnx_emitter base;      /* the layers' interface (kd_emit.h) */
    arena_block *arena;
    const kd_codec *codec;
    char layer[KD_LAYER_NAME_MAX + 16]; /* prefix of the current layer's names: "3", "preprocess" */
    int n_in_layer;            /* nodes added for the current layer, for unique names */
    const char *current;       /* the value the next node reads */
    const char **values;       /* (n_layers + 1) each model value's name: "input" after the
                                * preprocessing, then every layer's output */
    const size_t *src;         /* the current layer's inputs (value ids), (n_src) */
    size_t n_src;
    Onnx__NodeProto **nodes;   /* (cap_nodes), malloc'd */
    size_t n_nodes, cap_nodes;
    Onnx__TensorProto **inits; /* (cap_inits), malloc'd */
    size_t n_inits, cap_inits;
} onnx_emitter;

/* arr (a malloc'd array of *cap elements of elem bytes) grown to twice the size (64 at first);
 * NULL when memory runs out (arr is then unchanged). */
static void *grown(void *arr, size_t *cap, size_t elem) {
    size_t nc = *cap ? 2 * *cap : 64;
    void *p = nc <= SIZE_MAX / elem ? realloc(arr, nc * elem) : NULL;
    if (p) *cap = nc;
    return p;
}

static kd_status oom(kd_err *err) { return kd_err_set(err, KD_EIO, "ONNX export: out of memory"); }

/* The ONNX element type of each stored dtype the codecs use. */
static int32_t onnx_type(kd_dtype t) {
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
static kd_status add_init(onnx_emitter *em, const char *name, int32_t type,
                          const kd_shape *shape, const void *bytes, size_t n_bytes, kd_err *err) {
    Onnx__TensorProto *t = arena_alloc(&em->arena, sizeof *t);
    if (!t) return oom(err);
    *t = (Onnx__TensorProto)ONNX__TENSOR_PROTO__INIT;
    t->name = arena_printf(&em->arena, "%s", name);
    t->dims = arena_alloc(&em->arena, (shape->rank ? (size_t)shape->rank : 1) * sizeof *t->dims);
    t->raw_data.data = arena_alloc(&em->arena, n_bytes ? n_bytes : 1);
    if (!t->name || !t->dims || !t->raw_data.data) return oom(err);
    t->n_dims = (size_t)shape->rank;
    for (int d = 0; d < shape->rank; d++) t->dims[d] = (int64_t)shape->d[d];
    t->has_data_type = 1;
    t->data_type = type;
    t->has_raw_data = 1;
    t->raw_data.len = n_bytes;
    if (n_bytes) memcpy(t->raw_data.data, bytes, n_bytes);
    if (em->n_inits == em->cap_inits) {
        Onnx__TensorProto **g = grown(em->inits, &em->cap_inits, sizeof *g);
        if (!g) return oom(err);
        em->inits = g;
    }
    em->inits[em->n_inits++] = t;
    return KD_OK;
}

/* Adds a node with one output, named out_name or "<layer>/<op>[_k]"; it becomes the current
 * value when set_current. */
static kd_status add_node(onnx_emitter *em, const char *op, const char *const *inputs,
                          size_t n_inputs, const kd_onnx_attr *attrs, size_t n_attrs,
                          const char *out_name, int set_current, const char **out, kd_err *err) {
    Onnx__NodeProto *nd = arena_alloc(&em->arena, sizeof *nd);
    if (!nd) return oom(err);
    *nd = (Onnx__NodeProto)ONNX__NODE_PROTO__INIT;
    nd->op_type = arena_printf(&em->arena, "%s", op);
    nd->input = arena_alloc(&em->arena, (n_inputs ? n_inputs : 1) * sizeof *nd->input);
    nd->output = arena_alloc(&em->arena, sizeof *nd->output);
    nd->attribute = arena_alloc(&em->arena, (n_attrs ? n_attrs : 1) * sizeof *nd->attribute);
    if (!nd->op_type || !nd->input || !nd->output || !nd->attribute) return oom(err);
    for (size_t i = 0; i < n_inputs; i++)
        if (!(nd->input[i] = arena_printf(&em->arena, "%s", inputs[i] ? inputs[i] : "")))
            return oom(err);
    nd->n_input = n_inputs;
    if (out_name) nd->output[0] = arena_printf(&em->arena, "%s", out_name);
    else if (em->n_in_layer) nd->output[0] = arena_printf(&em->arena, "%s/%s_%d", em->layer, op, em->n_in_layer);
    else nd->output[0] = arena_printf(&em->arena, "%s/%s", em->layer, op);
    if (!nd->output[0]) return oom(err);
    nd->n_output = 1;
    nd->name = nd->output[0];
    em->n_in_layer++;
    for (size_t i = 0; i < n_attrs; i++) {
        Onnx__AttributeProto *a = arena_alloc(&em->arena, sizeof *a);
        if (!a) return oom(err);
        *a = (Onnx__AttributeProto)ONNX__ATTRIBUTE_PROTO__INIT;
        if (!(a->name = arena_printf(&em->arena, "%s", attrs[i].name))) return oom(err);
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
            if (!(a->ints = arena_alloc(&em->arena, sizeof attrs[i].ints))) return oom(err);
            memcpy(a->ints, attrs[i].ints, sizeof attrs[i].ints);
        }
        nd->attribute[i] = a;
    }
    nd->n_attribute = n_attrs;
    if (em->n_nodes == em->cap_nodes) {
        Onnx__NodeProto **g = grown(em->nodes, &em->cap_nodes, sizeof *g);
        if (!g) return oom(err);
        em->nodes = g;
    }
    em->nodes[em->n_nodes++] = nd;
    if (set_current) em->current = nd->output[0];
    if (out) *out = nd->output[0];
    return KD_OK;
}

/* ---- The layers' interface (kd_emit.h) ---- */

static const char *op_current(const kd_onnx_emitter *base) {
    return ((const onnx_emitter *)base)->current;
}

static const char *op_input(const kd_onnx_emitter *base, size_t k) {
    const onnx_emitter *em = (const onnx_emitter *)base;
    KD_ASSERT(k < em->n_src);
    return em->values[em->src[k]];
}

static kd_status op_node(kd_onnx_emitter *base, const char *op, const char *const *inputs,
                         size_t n_inputs, const kd_onnx_attr *attrs, size_t n_attrs,
                         const char **out, kd_err *err) {
    return add_node((onnx_emitter *)base, op, inputs, n_inputs, attrs, n_attrs, NULL, 1, out, err);
}

static kd_status op_tensor(kd_onnx_emitter *base, const char *suffix, const float *data,
                           const kd_shape *shape, kd_export_store store, const char **name,
                           kd_err *err) {
    onnx_emitter *em = (onnx_emitter *)base;
    const kd_codec *c = em->codec;
    const size_t numel = kd_shape_numel(shape);
    const kd_shape scale_shape = {1, {shape->rank ? shape->d[0] : 1}};
    char *tname = arena_printf(&em->arena, "%s.%s", em->layer, suffix), sname[KD_TENSOR_NAME_MAX + 32], zname[KD_TENSOR_NAME_MAX + 32];
    if (!tname) return oom(err);
    kd_status st = kd_export_check_finite(tname, data, numel, err);
    if (st) return st;
    if (!kd_export_encodes(c, store)) {
        *name = tname;
        return add_init(em, tname, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, shape, data,
                        numel * sizeof *data, err);
    }
    /* Encoded through the codec: int8 rows with their scales (the safetensors export's), or
     * 16-bit values, then decoded back to float inside the graph. */
    const size_t rows = c->row_scales ? scale_shape.d[0] : 1, cols = rows ? numel / rows : 0;
    void *q = arena_alloc(&em->arena, numel * kd_dtype_size(c->stored));
    float *scale = c->row_scales ? arena_alloc(&em->arena, rows * sizeof *scale) : NULL;
    if (!q || (c->row_scales && !scale)) return oom(err);
    c->encode(data, rows, cols, q, scale);
    st = add_init(em, tname, onnx_type(c->stored), shape, q, numel * kd_dtype_size(c->stored), err);
    if (st) return st;
    if (!c->row_scales) {
        const kd_onnx_attr to = KD_ONNX_INT("to", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
        snprintf(sname, sizeof sname, "%s_f32", tname);
        return add_node(em, "Cast", (const char *[]){tname}, 1, &to, 1, sname, 0, name, err);
    }
    /* DequantizeLinear (opset 13, per axis): y = (q - zero_point) * scale along axis 0; the
     * zero points are explicit int8 zeros so the input type is int8 for every reader. */
    void *zeros = arena_alloc(&em->arena, rows);
    if (!zeros) return oom(err);
    if (kd_codec_scale_name(tname, sname, sizeof sname) ||
        snprintf(zname, sizeof zname, "%s_zero_point", tname) >= (int)sizeof zname)
        return kd_err_set(err, KD_EIO, "ONNX export: tensor name %s too long", tname);
    if ((st = add_init(em, sname, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, &scale_shape, scale,
                       rows * sizeof *scale, err)) ||
        (st = add_init(em, zname, ONNX__TENSOR_PROTO__DATA_TYPE__INT8, &scale_shape, zeros, rows,
                       err)))
        return st;
    const kd_onnx_attr axis = KD_ONNX_INT("axis", 0);
    char dname[KD_TENSOR_NAME_MAX + 48];
    snprintf(dname, sizeof dname, "%s_dequantized", tname);
    return add_node(em, "DequantizeLinear", (const char *[]){tname, sname, zname}, 3, &axis, 1,
                    dname, 0, name, err);
}

static const kd_onnx_emitter_ops emitter_ops = {op_current, op_input, op_tensor, op_node};

/* ---- The model around the layers ---- */

/* A float tensor value [N, dims...] with a symbolic batch dimension, for graph inputs and
 * outputs. */
static Onnx__ValueInfoProto *value_info(arena_block **a, const char *name, const kd_shape *s) {
    Onnx__ValueInfoProto *vi = arena_alloc(a, sizeof *vi);
    Onnx__TypeProto *tp = arena_alloc(a, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = arena_alloc(a, sizeof *tt);
    Onnx__TensorShapeProto *sh = arena_alloc(a, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dims = arena_alloc(a, ((size_t)s->rank + 1) * sizeof *dims);
    if (!vi || !tp || !tt || !sh || !dims) return NULL;
    for (int d = 0; d <= s->rank; d++) {
        if (!(dims[d] = arena_alloc(a, sizeof *dims[d]))) return NULL;
        *dims[d] = (Onnx__TensorShapeProto__Dimension)ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
        if (d == 0) {
            dims[d]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            if (!(dims[d]->dim_param = arena_printf(a, "N"))) return NULL;
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
    vi->name = arena_printf(a, "%s", name);
    vi->type = tp;
    return vi->name ? vi : NULL;
}

static void begin_layer(onnx_emitter *em, const char *name) {
    snprintf(em->layer, sizeof em->layer, "%s", name);
    em->n_in_layer = 0;
}

/* The recorded preprocessing as Mul and Add nodes on the raw input: per channel, a [C, 1, ...]
 * constant broadcasts over the planes of an [N, C, ...] input; a flattened input with
 * per-channel statistics gets the values spelled out per element. */
static kd_status emit_preprocess(onnx_emitter *em, const kd_model *m, const kd_export_pre *p,
                                 kd_err *err) {
    if (p->identity) return KD_OK;
    const size_t D = kd_shape_numel(&m->input);
    kd_shape s = {0, {0}};
    size_t n = 1;
    if (p->n_ch == D && p->plane == 1 && D > 1) {
        s = m->input;  /* per-feature statistics: one value per input element */
        n = D;
    } else if (p->n_ch > 1 && m->input.rank > 1) {
        s = m->input;
        for (int d = 1; d < s.rank; d++) s.d[d] = 1;
        n = p->n_ch;
    } else if (p->n_ch > 1) {
        s = (kd_shape){1, {D}};
        n = D;
    }
    float *mul = malloc(n * sizeof *mul), *add = malloc(n * sizeof *add);
    kd_status st = KD_OK;
    const char *mname, *aname;
    if (!mul || !add) {
        st = oom(err);
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        size_t c = n == D && p->n_ch > 1 && m->input.rank == 1 ? i / p->plane : i;
        mul[i] = p->mul[c];
        add[i] = p->add[c];
    }
    /* x = raw * mul + add: the same two float operations the dataset applies. */
    if ((st = kd_onnx_tensor(&em->base, "mul", mul, &s, KD_STORE_F32, &mname, err)) ||
        (st = kd_onnx_tensor(&em->base, "add", add, &s, KD_STORE_F32, &aname, err)) ||
        (st = kd_onnx_node(&em->base, "Mul", (const char *[]){em->current, mname}, 2, NULL, 0, NULL, err)))
        goto cleanup;
    st = kd_onnx_node(&em->base, "Add", (const char *[]){em->current, aname}, 2, NULL, 0, NULL, err);
cleanup:
    free(mul);
    free(add);
    return st;
}

/* The graph: preprocessing, every layer's nodes, then "logits" [N, classes] and
 * "probabilities" = Softmax(logits) along the classes. */
static kd_status build_graph(onnx_emitter *em, const kd_model *m, const kd_export_info *info,
                             kd_err *err) {
    kd_export_pre pre;
    kd_status st = kd_export_pre_init(&pre, info->pp, &m->input, err);
    if (st) return st;
    em->current = "input";
    begin_layer(em, "preprocess");
    st = emit_preprocess(em, m, &pre, err);
    kd_export_pre_free(&pre);
    if (!st && !(em->values = arena_alloc(&em->arena, (m->n_layers + 1) * sizeof *em->values)))
        st = oom(err);
    if (st) return st;
    em->values[0] = em->current;
    /* Each layer's nodes and initializers are named after it: its name, or its index. */
    for (size_t i = 0; i < m->n_layers && !st; i++) {
        char name[KD_LAYER_NAME_MAX + 16];
        const char *lname = kd_model_layer_name(m, i);
        if (lname) snprintf(name, sizeof name, "%s", lname);
        else snprintf(name, sizeof name, "%zu", i);
        begin_layer(em, name);
        em->src = kd_model_layer_inputs(m, i, &em->n_src);
        em->current = em->values[em->src[0]];
        st = kd_model_layer_export_onnx(m, i, &em->base, err);
        em->values[i + 1] = em->current;
    }
    if (st) return st;
    begin_layer(em, "output");
    kd_shape last = m->n_layers ? kd_model_layer_out(m, m->n_layers - 1) : m->input;
    const kd_onnx_attr axis1[] = {KD_ONNX_INT("axis", 1)};
    /* A last layer with a [C, H, W] output is flattened: logits are always [N, classes]. */
    if (last.rank == 1)
        st = add_node(em, "Identity", &em->current, 1, NULL, 0, "logits", 1, NULL, err);
    else
        st = add_node(em, "Flatten", &em->current, 1, axis1, 1, "logits", 1, NULL, err);
    if (!st)
        st = add_node(em, "Softmax", &em->current, 1, axis1, 1, "probabilities", 1, NULL, err);
    return st;
}

/* metadata_props: the checkpoint's pairs, then what this exporter states itself. */
static kd_status add_metadata(Onnx__ModelProto *mp, arena_block **a, const kd_export_info *info,
                              const kd_codec *codec, kd_err *err) {
    static const char *const own[] = {"distill_version", "dtype", "quantization"};
    const size_t cap = info->n_meta + 3;
    mp->metadata_props = arena_alloc(a, cap * sizeof *mp->metadata_props);
    if (!mp->metadata_props) return oom(err);
    const char *keys[3] = {"distill_version", "dtype", codec->scheme ? "quantization" : NULL};
    const char *vals[3] = {KD_VERSION, codec->name, codec->scheme};
    for (size_t i = 0; i < info->n_meta + 3; i++) {
        const char *k = i < info->n_meta ? info->meta_keys[i] : keys[i - info->n_meta];
        const char *v = i < info->n_meta ? info->meta_vals[i] : vals[i - info->n_meta];
        int skip = !k;
        for (size_t j = 0; j < 3 && i < info->n_meta && !skip; j++) skip = !strcmp(k, own[j]);
        if (skip) continue;
        Onnx__StringStringEntryProto *e = arena_alloc(a, sizeof *e);
        if (!e) return oom(err);
        *e = (Onnx__StringStringEntryProto)ONNX__STRING_STRING_ENTRY_PROTO__INIT;
        e->key = arena_printf(a, "%s", k);
        e->value = arena_printf(a, "%s", v ? v : "");
        if (!e->key || !e->value) return oom(err);
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

kd_status kd_export_onnx(const char *path, const kd_model *m, const kd_export_info *info,
                         kd_err *err) {
    onnx_emitter em;
    memset(&em, 0, sizeof em);
    em.base.ops = &emitter_ops;
    em.codec = kd_export_codec(info);
    uint8_t *buf = NULL;
    kd_status st = KD_OK;
    char arch[1024];
    if (onnx_type(em.codec->stored) == ONNX__TENSOR_PROTO__DATA_TYPE__UNDEFINED) {
        st = kd_err_set(err, KD_EUSAGE, "%s: ONNX export cannot store %s weights", path,
                        em.codec->name);
        goto cleanup;
    }
    if ((st = build_graph(&em, m, info, err))) goto cleanup;

    Onnx__GraphProto *g = arena_alloc(&em.arena, sizeof *g);
    Onnx__ModelProto *mp = arena_alloc(&em.arena, sizeof *mp);
    Onnx__OperatorSetIdProto *ops = arena_alloc(&em.arena, sizeof *ops);
    Onnx__OperatorSetIdProto **opsv = arena_alloc(&em.arena, sizeof *opsv);
    Onnx__ValueInfoProto **in = arena_alloc(&em.arena, sizeof *in);
    Onnx__ValueInfoProto **out = arena_alloc(&em.arena, 2 * sizeof *out);
    const kd_shape classes = {1, {m->n_classes}};
    if (!g || !mp || !ops || !opsv || !in || !out ||
        !(in[0] = value_info(&em.arena, "input", &m->input)) ||
        !(out[0] = value_info(&em.arena, "logits", &classes)) ||
        !(out[1] = value_info(&em.arena, "probabilities", &classes))) {
        st = oom(err);
        goto cleanup;
    }
    kd_export_arch_summary(m, arch, sizeof arch);
    *g = (Onnx__GraphProto)ONNX__GRAPH_PROTO__INIT;
    g->name = "distill";
    g->doc_string = arena_printf(&em.arena, "%s; input: the raw sample, preprocessing inside", arch);
    g->n_node = em.n_nodes;
    g->node = em.nodes;
    g->n_initializer = em.n_inits;
    g->initializer = em.inits;
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
    if ((st = add_metadata(mp, &em.arena, info, em.codec, err))) goto cleanup;

    size_t len = onnx__model_proto__get_packed_size(mp);
    if (len > ONNX_MAX_BYTES) {
        st = kd_err_set(err, KD_EUSAGE, "%s: the model needs %zu bytes, more than the 2 GiB one "
                                        "ONNX file can hold", path, len);
        goto cleanup;
    }
    if (!(buf = malloc(len ? len : 1))) {
        st = oom(err);
        goto cleanup;
    }
    packed p = {buf, onnx__model_proto__pack(mp, buf)};
    st = kd_write_atomic(path, write_packed, &p, err);
cleanup:
    free(buf);
    free(em.nodes);
    free(em.inits);
    arena_free(em.arena);
    return st;
}
