/* ops_shape.c - operators that move no data or only compute shapes: Identity, Dropout,
 * Flatten, Reshape, Squeeze and Unsqueeze (a flatten, or another name for the same floats),
 * Concat (a layer, or folded constants), and the shape arithmetic torch.onnx writes for
 * x.view(x.size(0), -1) (Constant, Shape, Gather, Unsqueeze, Concat), folded to constants with
 * the batch size as a marker. */
#include <stdlib.h>
#include <string.h>

#include "onnx_impl.h"

static kd_status oom(kd_onnx_tr *t) { return kd_err_set(t->err, KD_EIO, "out of memory"); }

static tr_value *out0(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    return kd_onnx_tr_find(t, nd->output[0]);
}

/* A constant copy of c into the node's output, with shape s. */
static kd_status copy_const(kd_onnx_tr *t, const Onnx__NodeProto *nd, const tr_value *c,
                            const kd_shape *s) {
    tr_value *y = out0(t, nd);
    const size_t n = c->n ? c->n : 1;
    y->kind = VAL_CONST;
    y->is_int = c->is_int;
    y->n = c->n;
    y->shape = *s;
    if (c->is_int ? !(y->i = malloc(n * sizeof *y->i)) : !(y->f = malloc(n * sizeof *y->f)))
        return oom(t);
    if (c->is_int) memcpy(y->i, c->i, c->n * sizeof *y->i);
    else memcpy(y->f, c->f, c->n * sizeof *y->f);
    return KD_OK;
}

/* Output 0 of nd holds x's floats laid out as the per-sample shape s (same count): a flatten
 * layer when s is [numel] and distill's shape is not, another name otherwise, when distill's
 * shape is s give or take trailing 1s. */
static kd_status reshape_to(kd_onnx_tr *t, const Onnx__NodeProto *nd, tr_value *x, const kd_shape *s) {
    char a[64], b[64];
    if (kd_shape_numel(s) != kd_shape_numel(&x->shape))
        return kd_onnx_node_err(t, "reshapes %s to %s: the counts differ",
                                kd_shape_str(&x->shape, a, sizeof a), kd_shape_str(s, b, sizeof b));
    if (s->rank == 1 && x->dshape.rank != 1) {
        cJSON *spec = cJSON_CreateObject();
        return spec ? kd_onnx_add_layer(t, nd, "flatten", spec, &x, 1, s, s, NULL) : oom(t);
    }
    /* Equal but for trailing 1s: [C] and [C, 1, 1] hold the same floats in the same order. */
    int i = 0;
    while (i < s->rank && i < x->dshape.rank && s->d[i] == x->dshape.d[i]) i++;
    int ok = 1;
    for (int k = i; k < s->rank; k++) ok &= s->d[k] == 1;
    for (int k = i; k < x->dshape.rank; k++) ok &= x->dshape.d[k] == 1;
    if (!ok)
        return kd_onnx_node_err(t, "reshapes %s to %s: only flattening to [N, D] or adding or "
                                "removing trailing axes of size 1 is supported",
                                kd_shape_str(&x->dshape, a, sizeof a), kd_shape_str(s, b, sizeof b));
    return kd_onnx_alias(t, nd, x, s);
}

kd_status kd_onnx_op_identity(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    tr_value *x = kd_onnx_in(t, nd, 0);
    if (!x || x->kind == VAL_NONE || x->kind == VAL_PAT)
        return kd_onnx_node_err(t, "reads no defined value");
    if (x->kind == VAL_CONST) return copy_const(t, nd, x, &x->shape);
    return kd_onnx_alias(t, nd, x, &x->shape);
}

/* Dropout is the identity in evaluation; its mask output must not be read. */
kd_status kd_onnx_op_dropout(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    for (size_t k = 1; k < nd->n_output; k++) {
        const tr_value *m = nd->output[k][0] ? kd_onnx_tr_find(t, nd->output[k]) : NULL;
        if (m && m->readers) return kd_onnx_node_err(t, "its mask output is read");
    }
    const tr_value *tm = kd_onnx_in(t, nd, 2);
    if (tm && !(tm->kind == VAL_CONST && tm->n == 1 && (tm->is_int ? !tm->i[0] : !tm->f[0])))
        return kd_onnx_node_err(t, "training_mode is not a constant false");
    return kd_onnx_op_identity(t, nd);
}

/* The computed input 0. */
static kd_status run_in(kd_onnx_tr *t, const Onnx__NodeProto *nd, tr_value **x) {
    *x = kd_onnx_in(t, nd, 0);
    if (!*x || (*x)->kind != VAL_RUN) return kd_onnx_node_err(t, "input 0 is not a computed value");
    return KD_OK;
}

kd_status kd_onnx_op_flatten(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    tr_value *x = NULL;
    kd_status st = run_in(t, nd, &x);
    if (st) return st;
    if (kd_onnx_get_int(nd, "axis", 1) != 1) return kd_onnx_node_err(t, "axis other than 1");
    const kd_shape s = {1, {kd_shape_numel(&x->shape)}};
    return reshape_to(t, nd, x, &s);
}

/* A constant int64 list: axes (Squeeze/Unsqueeze from opset 13), a Reshape target. */
static kd_status const_ints(kd_onnx_tr *t, const Onnx__NodeProto *nd, size_t k, const tr_value **c) {
    *c = kd_onnx_in(t, nd, k);
    if (!*c || (*c)->kind != VAL_CONST || !(*c)->is_int || (*c)->n > 8)
        return kd_onnx_node_err(t, "input %zu is not a constant list of at most 8 integers "
                                "(a shape computed from the input that could not be folded)", k);
    return KD_OK;
}

kd_status kd_onnx_op_reshape(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    tr_value *x = NULL;
    const tr_value *c;
    kd_status st = run_in(t, nd, &x);
    if (!st) st = const_ints(t, nd, 1, &c);
    if (st) return st;
    if (kd_onnx_get_int(nd, "allowzero", 0)) return kd_onnx_node_err(t, "allowzero 1");
    const int64_t b = c->n ? c->i[0] : 0;
    if (c->n < 2 || c->n > KD_MAX_RANK + 1 || (b != KD_ONNX_BATCH && b != 0 && b != -1 && b != 1))
        return kd_onnx_node_err(t, "a target shape that does not keep the batch axis first");
    kd_shape s = {(int)c->n - 1, {0}};
    size_t known = 1;
    int infer = -1;
    for (size_t k = 1; k < c->n; k++) {
        const int64_t d = c->i[k];
        if (d == -1 && infer < 0 && b != -1) infer = (int)k - 1;
        else if (d == 0 && (int)k - 1 < x->shape.rank) s.d[k - 1] = x->shape.d[k - 1];
        else if (d >= 1 && d <= ((int64_t)1 << 31)) s.d[k - 1] = (size_t)d;
        else return kd_onnx_node_err(t, "target size %lld at axis %zu", (long long)d, k);
        if (infer != (int)k - 1) known *= s.d[k - 1];
    }
    if (infer >= 0) {
        if (!known || kd_shape_numel(&x->shape) % known)
            return kd_onnx_node_err(t, "the target shape does not divide the value's size");
        s.d[infer] = kd_shape_numel(&x->shape) / known;
    }
    return reshape_to(t, nd, x, &s);
}

/* The axes of Squeeze/Unsqueeze: the attribute (opset < 13) or the constant input 1. */
static kd_status axes_of(kd_onnx_tr *t, const Onnx__NodeProto *nd, int64_t *ax, size_t *n) {
    const Onnx__AttributeProto *a = kd_onnx_get_attr(nd, "axes");
    const tr_value *c;
    *n = 0;
    if (a) {
        if (a->n_ints > 8) return kd_onnx_node_err(t, "more than 8 axes");
        for (size_t k = 0; k < a->n_ints; k++) ax[(*n)++] = a->ints[k];
        return KD_OK;
    }
    if (!kd_onnx_in(t, nd, 1)) return KD_OK;
    kd_status st = const_ints(t, nd, 1, &c);
    for (size_t k = 0; !st && k < c->n; k++) ax[(*n)++] = c->i[k];
    return st;
}

/* Squeeze (unsq 0) or Unsqueeze (1) of a computed value (size-1 axes after the batch axis;
 * a flatten or another name) or of a constant (folded). */
static kd_status squeeze_like(kd_onnx_tr *t, const Onnx__NodeProto *nd, int unsq) {
    tr_value *x = kd_onnx_in(t, nd, 0);
    int64_t ax[8];
    size_t n;
    kd_status st = axes_of(t, nd, ax, &n);
    if (st) return st;
    if (!x || (x->kind != VAL_RUN && x->kind != VAL_CONST)) return kd_onnx_node_err(t, "input 0 is not defined");
    const int run = x->kind == VAL_RUN, r = x->shape.rank + run;  /* the batch axis counts */
    size_t full[KD_MAX_RANK + 2];
    int rank = 0;
    if (run) full[rank++] = 1;
    for (int k = 0; k < x->shape.rank; k++) full[rank++] = x->shape.d[k];
    const int out_rank = unsq ? r + (int)n : r - (int)n;
    if (out_rank < (run ? 1 : 0) || out_rank > KD_MAX_RANK + run || (!unsq && n == 0))
        return kd_onnx_node_err(t, "axes that leave a rank outside what distill holds");
    char mark[KD_MAX_RANK + 10] = {0};
    for (size_t k = 0; k < n; k++) {
        const int64_t a = ax[k] < 0 ? ax[k] + (unsq ? out_rank : r) : ax[k];
        if (a < (run ? 1 : 0) || a >= (unsq ? out_rank : r) || mark[a] ||
            (!unsq && full[a] != 1))
            return kd_onnx_node_err(t, "axis %lld: only axes of size 1 after the batch axis",
                                    (long long)ax[k]);
        mark[a] = 1;
    }
    kd_shape s = {0, {0}};
    for (int k = 0, src = 0; k < (unsq ? out_rank : r); k++) {
        size_t d = unsq ? (mark[k] ? 1 : full[src++]) : full[k];
        if (!unsq && mark[k]) continue;
        if (run && k == 0) continue;  /* the batch */
        s.d[s.rank++] = d;
    }
    return run ? reshape_to(t, nd, x, &s) : copy_const(t, nd, x, &s);
}

kd_status kd_onnx_op_squeeze(kd_onnx_tr *t, const Onnx__NodeProto *nd) { return squeeze_like(t, nd, 0); }
kd_status kd_onnx_op_unsqueeze(kd_onnx_tr *t, const Onnx__NodeProto *nd) { return squeeze_like(t, nd, 1); }

/* Constants of rank 0 or 1 joined into one list. */
static kd_status concat_consts(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    tr_value *y = out0(t, nd);
    size_t n = 0;
    int is_int = -1;
    for (size_t k = 0; k < nd->n_input; k++) {
        const tr_value *c = kd_onnx_in(t, nd, k);
        if (!c || c->kind != VAL_CONST || c->shape.rank > 1 || (is_int >= 0 && is_int != c->is_int))
            return kd_onnx_node_err(t, "joins constants and computed values, or constants that "
                                    "are not lists of one type");
        is_int = c->is_int;
        n += c->n;
    }
    if (n > 64) return kd_onnx_node_err(t, "a folded list of more than 64 values");
    y->kind = VAL_CONST;
    y->is_int = is_int;
    y->shape = (kd_shape){1, {n}};
    y->n = 0;
    if (is_int ? !(y->i = malloc((n + 1) * sizeof *y->i)) : !(y->f = malloc((n + 1) * sizeof *y->f)))
        return oom(t);
    for (size_t k = 0; k < nd->n_input; k++) {
        const tr_value *c = kd_onnx_in(t, nd, k);
        for (size_t j = 0; j < c->n; j++, y->n++)
            if (is_int) y->i[y->n] = c->i[j];
            else y->f[y->n] = c->f[j];
    }
    return KD_OK;
}

kd_status kd_onnx_op_concat(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    tr_value *ins[64];
    const tr_value *first = kd_onnx_in(t, nd, 0);
    if (!first || nd->n_input < 1) return kd_onnx_node_err(t, "no inputs");
    if (first->kind == VAL_CONST) return concat_consts(t, nd);
    const int64_t axis = kd_onnx_get_int(nd, "axis", 1);
    if (nd->n_input < 2 || nd->n_input > 64)
        return kd_onnx_node_err(t, "%zu inputs; distill's concat takes 2 to 64", nd->n_input);
    if (axis != 1 && axis != -(int64_t)first->shape.rank - 1)
        return kd_onnx_node_err(t, "axis %lld: only the channel axis (1) is supported", (long long)axis);
    kd_shape s = first->shape, d = first->dshape;
    s.d[0] = d.d[0] = 0;
    for (size_t k = 0; k < nd->n_input; k++) {
        tr_value *x = kd_onnx_in(t, nd, k);
        if (!x || x->kind != VAL_RUN || x->dshape.rank != d.rank || x->shape.rank != s.rank ||
            (d.rank > 1 && memcmp(x->dshape.d + 1, d.d + 1, (size_t)(d.rank - 1) * sizeof d.d[0])))
            return kd_onnx_node_err(t, "input %zu is not a computed value of the same shape but "
                                    "for its channels", k);
        s.d[0] += x->shape.d[0];
        d.d[0] += x->dshape.d[0];
        ins[k] = x;
    }
    cJSON *spec = cJSON_CreateObject();
    return spec ? kd_onnx_add_layer(t, nd, "concat", spec, ins, nd->n_input, &s, &d, NULL) : oom(t);
}

kd_status kd_onnx_op_constant(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    tr_value *y = out0(t, nd);
    const Onnx__AttributeProto *a = nd->n_attribute == 1 ? nd->attribute[0] : NULL;
    const char *name = a && a->name ? a->name : "";
    if (a && !strcmp(name, "value") && a->t) return kd_onnx_tensor_decode(t, a->t, y);
    const int fl = !strcmp(name, "value_float") || !strcmp(name, "value_floats");
    const int in = !strcmp(name, "value_int") || !strcmp(name, "value_ints");
    if (!a || (!fl && !in)) return kd_onnx_node_err(t, "only a tensor, float(s) or int(s) value");
    const int list = !strcmp(name, "value_floats") || !strcmp(name, "value_ints");
    const size_t n = list ? (fl ? a->n_floats : a->n_ints) : 1;
    if (n > t->caps->max_tensor_elems) return kd_onnx_node_err(t, "too many values");
    y->kind = VAL_CONST;
    y->is_int = in;
    y->n = n;
    y->shape = list ? (kd_shape){1, {n}} : (kd_shape){0, {0}};
    if (in ? !(y->i = malloc((n + 1) * sizeof *y->i)) : !(y->f = malloc((n + 1) * sizeof *y->f)))
        return oom(t);
    for (size_t k = 0; k < n; k++)
        if (in) y->i[k] = list ? a->ints[k] : a->i;
        else y->f[k] = list ? a->floats[k] : a->f;
    return KD_OK;
}

/* Shape of a computed value: [batch marker, per-sample sizes...], sliced by start/end. */
kd_status kd_onnx_op_shape(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    tr_value *x, *y = out0(t, nd);
    kd_status st = run_in(t, nd, &x);
    if (st) return st;
    const int64_t r = x->shape.rank + 1;
    int64_t lo = kd_onnx_get_int(nd, "start", 0), hi = kd_onnx_get_int(nd, "end", r);
    if (lo < 0) lo += r;
    if (hi < 0) hi += r;
    lo = lo < 0 ? 0 : lo > r ? r : lo;
    hi = hi < lo ? lo : hi > r ? r : hi;
    y->kind = VAL_CONST;
    y->is_int = 1;
    y->n = (size_t)(hi - lo);
    y->shape = (kd_shape){1, {y->n}};
    if (!(y->i = malloc((y->n + 1) * sizeof *y->i))) return oom(t);
    for (int64_t k = lo; k < hi; k++)
        y->i[k - lo] = k == 0 ? KD_ONNX_BATCH : (int64_t)x->shape.d[k - 1];
    return KD_OK;
}

/* Gather on axis 0 of a constant list (an entry of a folded shape). */
kd_status kd_onnx_op_gather(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    const tr_value *data = kd_onnx_in(t, nd, 0), *idx;
    kd_status st = const_ints(t, nd, 1, &idx);
    if (st) return st;
    if (!data || data->kind != VAL_CONST || data->shape.rank != 1 || kd_onnx_get_int(nd, "axis", 0))
        return kd_onnx_node_err(t, "only axis 0 of a constant list (shape arithmetic) is "
                                "supported");
    tr_value *y = out0(t, nd);
    y->kind = VAL_CONST;
    y->is_int = data->is_int;
    y->n = idx->n;
    y->shape = idx->shape;
    if (data->is_int ? !(y->i = malloc((idx->n + 1) * sizeof *y->i))
                     : !(y->f = malloc((idx->n + 1) * sizeof *y->f)))
        return oom(t);
    for (size_t k = 0; k < idx->n; k++) {
        int64_t j = idx->i[k] < 0 ? idx->i[k] + (int64_t)data->n : idx->i[k];
        if (j < 0 || j >= (int64_t)data->n) return kd_onnx_node_err(t, "index %lld out of range", (long long)idx->i[k]);
        if (data->is_int) y->i[k] = data->i[j];
        else y->f[k] = data->f[j];
    }
    return KD_OK;
}

/* Pad by zero on every side: the identity (torch.onnx writes one before an AveragePool with
 * count_include_pad); real padding belongs in the Conv or pool that follows. */
kd_status kd_onnx_op_pad(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    tr_value *x;
    const tr_value *p;
    const Onnx__AttributeProto *a = kd_onnx_get_attr(nd, "pads");
    kd_status st = run_in(t, nd, &x);
    if (st) return st;
    if (!a && (st = const_ints(t, nd, 1, &p))) return st;
    const size_t n = a ? a->n_ints : p->n;
    for (size_t k = 0; k < n; k++)
        if ((a ? a->ints[k] : p->i[k]) != 0)
            return kd_onnx_node_err(t, "padding other than 0 (give the padding to the Conv or "
                                    "pool instead)");
    return kd_onnx_alias(t, nd, x, &x->shape);
}
