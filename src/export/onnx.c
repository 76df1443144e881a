/* onnx.c - the ONNX exporter (opset 13, IR version 7) of a float model: the graph is built
 * through each layer's export_onnx slot (the emitter interface of kd_emit.h) and written by the
 * shared writer (onnx_write.c). */
#include <stdlib.h>
#include <string.h>

#include "onnx_impl.h"

/* ---- The layers' interface (kd_emit.h) ---- */

static const char *op_current(const kd_onnx_emitter *base) {
    return ((const kd_onnxw_emitter *)base)->current;
}

static const char *op_input(const kd_onnx_emitter *base, size_t k) {
    const kd_onnxw_emitter *em = (const kd_onnxw_emitter *)base;
    KD_ASSERT(k < em->n_src);
    return em->values[em->src[k]];
}

static kd_status op_node(kd_onnx_emitter *base, const char *op, const char *const *inputs,
                         size_t n_inputs, const kd_onnx_attr *attrs, size_t n_attrs,
                         const char **out, kd_err *err) {
    return kd_onnxw_node((kd_onnxw_emitter *)base, op, inputs, n_inputs, attrs, n_attrs, NULL, 1, out, err);
}

static kd_status op_tensor(kd_onnx_emitter *base, const char *suffix, const float *data,
                           const kd_shape *shape, kd_export_store store, const char **name,
                           kd_err *err) {
    kd_onnxw_emitter *em = (kd_onnxw_emitter *)base;
    const kd_codec *c = em->codec;
    const size_t numel = kd_shape_numel(shape);
    const kd_shape scale_shape = {1, {shape->rank ? shape->d[0] : 1}};
    char *tname = kd_onnxw_printf(&em->arena, "%s.%s", em->layer, suffix), sname[KD_TENSOR_NAME_MAX + 32], zname[KD_TENSOR_NAME_MAX + 32];
    if (!tname) return kd_onnxw_oom(err);
    kd_status st = kd_export_check_finite(tname, data, numel, err);
    if (st) return st;
    if (!kd_export_encodes(c, store)) {
        *name = tname;
        return kd_onnxw_init(em, tname, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, shape, data,
                        numel * sizeof *data, err);
    }
    /* Encoded through the codec: int8 rows with their scales (the safetensors export's), or
     * 16-bit values, then decoded back to float inside the graph. */
    const size_t rows = c->row_scales ? scale_shape.d[0] : 1, cols = rows ? numel / rows : 0;
    void *q = kd_onnxw_alloc(&em->arena, numel * kd_dtype_size(c->stored));
    float *scale = c->row_scales ? kd_onnxw_alloc(&em->arena, rows * sizeof *scale) : NULL;
    if (!q || (c->row_scales && !scale)) return kd_onnxw_oom(err);
    c->encode(data, rows, cols, q, scale);
    st = kd_onnxw_init(em, tname, kd_onnxw_type(c->stored), shape, q, numel * kd_dtype_size(c->stored), err);
    if (st) return st;
    if (!c->row_scales) {
        const kd_onnx_attr to = KD_ONNX_INT("to", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
        snprintf(sname, sizeof sname, "%s_f32", tname);
        return kd_onnxw_node(em, "Cast", (const char *[]){tname}, 1, &to, 1, sname, 0, name, err);
    }
    /* DequantizeLinear (opset 13, per axis): y = (q - zero_point) * scale along axis 0; the
     * zero points are explicit int8 zeros so the input type is int8 for every reader. */
    void *zeros = kd_onnxw_alloc(&em->arena, rows);
    if (!zeros) return kd_onnxw_oom(err);
    if (kd_codec_scale_name(tname, sname, sizeof sname) ||
        snprintf(zname, sizeof zname, "%s_zero_point", tname) >= (int)sizeof zname)
        return kd_err_set(err, KD_EIO, "ONNX export: tensor name %s too long", tname);
    if ((st = kd_onnxw_init(em, sname, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, &scale_shape, scale,
                       rows * sizeof *scale, err)) ||
        (st = kd_onnxw_init(em, zname, ONNX__TENSOR_PROTO__DATA_TYPE__INT8, &scale_shape, zeros, rows,
                       err)))
        return st;
    const kd_onnx_attr axis = KD_ONNX_INT("axis", 0);
    char dname[KD_TENSOR_NAME_MAX + 48];
    snprintf(dname, sizeof dname, "%s_dequantized", tname);
    return kd_onnxw_node(em, "DequantizeLinear", (const char *[]){tname, sname, zname}, 3, &axis, 1,
                    dname, 0, name, err);
}

static const kd_onnx_emitter_ops emitter_ops = {op_current, op_input, op_tensor, op_node};

void kd_onnxw_emitter_init(kd_onnxw_emitter *em, const kd_codec *codec) {
    memset(em, 0, sizeof *em);
    em->base.ops = &emitter_ops;
    em->codec = codec;
}

/* On the raw input: per channel, a [C, 1, ...]
 * constant broadcasts over the planes of an [N, C, ...] input; a flattened input with
 * per-channel statistics gets the values spelled out per element. */
kd_status kd_onnxw_preprocess(kd_onnxw_emitter *em, const kd_shape *input,
                              const kd_export_pre *p, kd_err *err) {
    if (p->identity) return KD_OK;
    const size_t D = kd_shape_numel(&(*input));
    kd_shape s = {0, {0}};
    size_t n = 1;
    if (p->n_ch == D && p->plane == 1 && D > 1) {
        s = (*input);  /* per-feature statistics: one value per input element */
        n = D;
    } else if (p->n_ch > 1 && (*input).rank > 1) {
        s = (*input);
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
        st = kd_onnxw_oom(err);
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        size_t c = n == D && p->n_ch > 1 && (*input).rank == 1 ? i / p->plane : i;
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
static kd_status build_graph(kd_onnxw_emitter *em, const kd_model *m, const kd_export_info *info,
                             kd_err *err) {
    kd_export_pre pre;
    kd_status st = kd_export_pre_init(&pre, info->pp, &m->input, err);
    if (st) return st;
    em->current = "input";
    kd_onnxw_begin_layer(em, "preprocess");
    st = kd_onnxw_preprocess(em, &m->input, &pre, err);
    kd_export_pre_free(&pre);
    if (!st && !(em->values = kd_onnxw_alloc(&em->arena, (m->n_layers + 1) * sizeof *em->values)))
        st = kd_onnxw_oom(err);
    if (st) return st;
    em->values[0] = em->current;
    /* Each layer's nodes and initializers are named after it: its name, or its index. */
    for (size_t i = 0; i < m->n_layers && !st; i++) {
        char name[KD_LAYER_NAME_MAX + 16];
        const char *lname = kd_model_layer_name(m, i);
        if (lname) snprintf(name, sizeof name, "%s", lname);
        else snprintf(name, sizeof name, "%zu", i);
        kd_onnxw_begin_layer(em, name);
        em->src = kd_model_layer_inputs(m, i, &em->n_src);
        em->current = em->values[em->src[0]];
        st = kd_model_layer_export_onnx(m, i, &em->base, err);
        em->values[i + 1] = em->current;
    }
    if (st) return st;
    kd_onnxw_begin_layer(em, "output");
    kd_shape last = m->n_layers ? kd_model_layer_out(m, m->n_layers - 1) : m->input;
    const kd_onnx_attr axis1[] = {KD_ONNX_INT("axis", 1)};
    /* A last layer with a [C, H, W] output is flattened: logits are always [N, classes]. */
    if (last.rank == 1)
        st = kd_onnxw_node(em, "Identity", &em->current, 1, NULL, 0, "logits", 1, NULL, err);
    else
        st = kd_onnxw_node(em, "Flatten", &em->current, 1, axis1, 1, "logits", 1, NULL, err);
    if (!st)
        st = kd_onnxw_node(em, "Softmax", &em->current, 1, axis1, 1, "probabilities", 1, NULL, err);
    return st;
}

kd_status kd_export_onnx(const char *path, const kd_model *m, const kd_export_info *info,
                         kd_err *err) {
    kd_onnxw_emitter em;
    kd_onnxw_emitter_init(&em, kd_export_codec(info));
    kd_status st = KD_OK;
    char arch[1024], doc[1100];
    if (kd_onnxw_type(em.codec->stored) == ONNX__TENSOR_PROTO__DATA_TYPE__UNDEFINED) {
        st = kd_err_set(err, KD_EUSAGE, "%s: ONNX export cannot store %s weights", path,
                        em.codec->name);
        goto cleanup;
    }
    if ((st = build_graph(&em, m, info, err))) goto cleanup;
    kd_export_arch_summary(m, arch, sizeof arch);
    snprintf(doc, sizeof doc, "%s; input: the raw sample, preprocessing inside", arch);
    st = kd_onnxw_write_model(&em, path, &m->input, m->n_classes, doc, info, em.codec->name,
                              em.codec->scheme, err);
cleanup:
    kd_onnxw_free(&em);
    return st;
}
