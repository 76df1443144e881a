/* ops_elem.c - the element-wise binary operators (Add, Sub, Mul, Div) and Erf: a residual
 * sum, a per-channel affine map with a constant (folded into the conv/dense bias or the affine
 * layer before it where it is that value's only reader), the exact-GELU pattern torch.onnx
 * writes (x * (erf(x / sqrt 2) + 1) * 0.5), and constant arithmetic folded. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_impl.h"

typedef enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV } binop;

static kd_status oom(kd_onnx_tr *t) { return kd_err_set(t->err, KD_EIO, "out of memory"); }

static int is_scalar(const tr_value *c, double want) {
    return c->kind == VAL_CONST && !c->is_int && c->n == 1 && fabs(c->f[0] - want) < 1e-5 * fabs(want);
}

const Onnx__NodeProto *kd_onnx_next_reader(kd_onnx_tr *t, const tr_value *v) {
    for (size_t n = t->node_index + 1; n < t->g->n_node; n++) {
        const Onnx__NodeProto *nd = t->g->node[n];
        for (size_t k = 0; k < nd->n_input; k++)
            if (!strcmp(nd->input[k], v->name)) return nd;
    }
    return NULL;
}

kd_status kd_onnx_pattern(kd_onnx_tr *t, const Onnx__NodeProto *nd, int stage, size_t of) {
    tr_value *y = kd_onnx_tr_find(t, nd->output[0]);
    y->kind = VAL_PAT;
    y->gelu = stage;
    y->gelu_of = of;
    return KD_OK;
}

/* The steps of x * (erf(x / sqrt 2) + 1) * 0.5; 1 when this node is one (handled), 0 when
 * not, or an error. */
static int gelu_step(kd_onnx_tr *t, const Onnx__NodeProto *nd, binop op, tr_value *a,
                     tr_value *b, kd_status *st) {
    const tr_value *y = kd_onnx_tr_find(t, nd->output[0]);
    const Onnx__NodeProto *r;
    *st = KD_OK;
    if (op == OP_DIV && a->kind == VAL_RUN && is_scalar(b, 1.4142135623730951) && y->readers == 1 &&
        (r = kd_onnx_next_reader(t, y)) && r->op_type && !strcmp(r->op_type, "Erf")) {
        *st = kd_onnx_pattern(t, nd, 1, (size_t)(a - t->v));
        return 1;
    }
    if (op == OP_ADD && (a->kind == VAL_PAT || b->kind == VAL_PAT)) {
        const tr_value *p = a->kind == VAL_PAT ? a : b, *c = p == a ? b : a;
        if (p->gelu == 2 && is_scalar(c, 1.0)) {
            *st = kd_onnx_pattern(t, nd, 3, p->gelu_of);
            return 1;
        }
    }
    if (op == OP_MUL && (a->kind == VAL_PAT || b->kind == VAL_PAT)) {
        const tr_value *p = a->kind == VAL_PAT ? a : b, *c = p == a ? b : a;
        if (p->gelu == 3 && c == &t->v[p->gelu_of]) {
            *st = kd_onnx_pattern(t, nd, 4, p->gelu_of);
            return 1;
        }
        if (p->gelu == KD_ONNX_HSWISH && c == &t->v[p->gelu_of]) {  /* x * HardSigmoid(x) */
            tr_value *x = &t->v[p->gelu_of];
            cJSON *spec = cJSON_CreateObject();
            *st = spec ? kd_onnx_add_layer(t, nd, "hardswish", spec, &x, 1, &x->shape, &x->dshape, NULL)
                       : oom(t);
            return 1;
        }
        if (p->gelu == 4 && is_scalar(c, 0.5)) {
            tr_value *x = &t->v[p->gelu_of];
            cJSON *spec = cJSON_CreateObject();
            *st = spec ? kd_onnx_add_layer(t, nd, "gelu", spec, &x, 1, &x->shape, &x->dshape, NULL)
                       : oom(t);
            return 1;
        }
    }
    return 0;
}

/* c's values for each channel of x ([C, ...] per sample; the channel is axis 1 of the batch):
 * c broadcasts as a scalar or as [C, 1, ...] (leading 1s allowed). *out malloc'd (C). */
static kd_status per_channel(kd_onnx_tr *t, const tr_value *x, const tr_value *c, float **out) {
    const int R = x->shape.rank + 1, cr = c->shape.rank;
    const size_t C = x->shape.d[0];
    int ok = c->n == 1;
    if (!ok && cr <= R) {
        ok = 1;
        for (int k = 0; k < R && ok; k++) {
            const size_t d = k < R - cr ? 1 : c->shape.d[k - (R - cr)];
            ok = d == (k == 1 ? C : 1);
        }
    }
    if (!ok)
        return kd_onnx_node_err(t, "constant '%.200s' of %zu values broadcasts neither as a "
                                "scalar nor per channel (one value for each of %zu channels)",
                                c->name, c->n, C);
    if (!(*out = malloc(C * sizeof **out))) return oom(t);
    for (size_t k = 0; k < C; k++) (*out)[k] = c->f[c->n == 1 ? 0 : k];
    return KD_OK;
}

/* y = x * w + b per channel, as a new affine layer, or folded into the affine layer that
 * computes x when this node is its only reader. Takes w and b over. */
static kd_status affine(kd_onnx_tr *t, const Onnx__NodeProto *nd, tr_value *x, float *w, float *b) {
    const size_t C = x->dshape.d[0];
    tr_value *y;
    kd_status st;
    if (x->affine && x->readers == 1) {
        float *w0 = t->w[x->aw].data, *b0 = t->w[x->ab].data;
        for (size_t c = 0; c < C; c++) {
            w0[c] *= w[c];
            b0[c] = b0[c] * w[c] + b[c];
        }
        free(w);
        free(b);
        const size_t aw = x->aw, ab = x->ab;
        st = kd_onnx_alias(t, nd, x, &x->shape);
        y = kd_onnx_tr_find(t, nd->output[0]);
        y->affine = 1;
        y->aw = aw;
        y->ab = ab;
        return st;
    }
    cJSON *spec = cJSON_CreateObject();
    if (!spec) {
        free(w);
        free(b);
        return oom(t);
    }
    if ((st = kd_onnx_add_layer(t, nd, "affine", spec, &x, 1, &x->shape, &x->dshape, &y))) {
        free(w);
        free(b);
        return st;
    }
    y->aw = t->n_w;
    if ((st = kd_onnx_add_weight(t, y->dname, "weight", w, C))) {
        free(b);
        return st;
    }
    y->ab = t->n_w;
    y->affine = 1;
    return kd_onnx_add_weight(t, y->dname, "bias", b, C);
}

/* x + c into the bias of the bias-free conv2d or dense layer computing x, when the Add is x's
 * only reader: 1 when done (or failed: *st), 0 when it does not apply. */
static int fold_bias(kd_onnx_tr *t, const Onnx__NodeProto *nd, tr_value *x, float *c,
                     kd_status *st) {
    cJSON *spec = x->layer >= 0 && x->readers == 1 && !x->affine ? cJSON_GetArrayItem(t->layers, x->layer) : NULL;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(spec, "type");
    if (!spec || !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(spec, "bias")) ||
        !cJSON_IsString(type) || (strcmp(type->valuestring, "conv2d") && strcmp(type->valuestring, "dense")))
        return 0;
    cJSON *yes = cJSON_CreateTrue();
    if (!yes || !cJSON_ReplaceItemInObjectCaseSensitive(spec, "bias", yes)) {
        cJSON_Delete(yes);
        free(c);
        *st = oom(t);
        return 1;
    }
    *st = kd_onnx_add_weight(t, x->dname, "bias", c, x->dshape.d[0]);
    if (!*st) *st = kd_onnx_alias(t, nd, x, &x->shape);
    return 1;
}

/* x op c or c op x with a constant c. */
static kd_status with_const(kd_onnx_tr *t, const Onnx__NodeProto *nd, binop op, tr_value *x,
                            const tr_value *c, int c_first) {
    float *v, *w = NULL, *b = NULL;
    kd_status st = per_channel(t, x, c, &v);
    if (st) return st;
    const size_t C = x->dshape.d[0];
    if (op == OP_DIV && c_first) {
        free(v);
        return kd_onnx_node_err(t, "a constant divided by a computed value");
    }
    if (op == OP_ADD && fold_bias(t, nd, x, v, &st)) return st;
    w = malloc(C * sizeof *w);
    b = malloc(C * sizeof *b);
    if (!w || !b) {
        free(v), free(w), free(b);
        return oom(t);
    }
    for (size_t k = 0; k < C; k++) {
        const float cv = v[k];
        w[k] = op == OP_MUL ? cv : op == OP_DIV ? 1.0f / cv : op == OP_SUB && c_first ? -1.0f : 1.0f;
        b[k] = op == OP_ADD ? cv : op == OP_SUB ? (c_first ? cv : -cv) : 0.0f;
        if (op == OP_DIV && cv == 0.0f) {
            free(v), free(w), free(b);
            return kd_onnx_node_err(t, "division by a constant 0");
        }
    }
    free(v);
    return affine(t, nd, x, w, b);
}

/* Arithmetic on two constants (shape computations): same count, or one a scalar. */
static kd_status fold(kd_onnx_tr *t, const Onnx__NodeProto *nd, binop op, const tr_value *a,
                      const tr_value *b) {
    if (a->is_int != b->is_int || (a->n != b->n && a->n != 1 && b->n != 1))
        return kd_onnx_node_err(t, "constant operands of different types or shapes");
    tr_value *y = kd_onnx_tr_find(t, nd->output[0]);
    const tr_value *big = a->n >= b->n ? a : b;
    const size_t n = big->n;
    y->kind = VAL_CONST;
    y->is_int = a->is_int;
    y->shape = big->shape;
    y->n = n;
    if (a->is_int ? !(y->i = malloc((n ? n : 1) * sizeof *y->i)) : !(y->f = malloc((n ? n : 1) * sizeof *y->f)))
        return oom(t);
    for (size_t k = 0; k < n; k++) {
        const size_t ka = a->n == 1 ? 0 : k, kb = b->n == 1 ? 0 : k;
        if (a->is_int) {
            const int64_t p = a->i[ka], q = b->i[kb];
            if (p == KD_ONNX_BATCH || q == KD_ONNX_BATCH || (op == OP_DIV && q == 0))
                return kd_onnx_node_err(t, "arithmetic on the batch size or a division by 0");
            y->i[k] = op == OP_ADD ? p + q : op == OP_SUB ? p - q : op == OP_MUL ? p * q : p / q;
        } else {
            const float p = a->f[ka], q = b->f[kb];
            y->f[k] = op == OP_ADD ? p + q : op == OP_SUB ? p - q : op == OP_MUL ? p * q : p / q;
        }
    }
    return KD_OK;
}

kd_status kd_onnx_op_binary(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    const char *name = nd->op_type;
    const binop op = !strcmp(name, "Add") ? OP_ADD : !strcmp(name, "Sub") ? OP_SUB :
                     !strcmp(name, "Mul") ? OP_MUL : OP_DIV;
    tr_value *a = kd_onnx_in(t, nd, 0), *b = kd_onnx_in(t, nd, 1);
    kd_status st;
    if (!a || !b || a->kind == VAL_NONE || b->kind == VAL_NONE)
        return kd_onnx_node_err(t, "needs two defined inputs");
    if (gelu_step(t, nd, op, a, b, &st)) return st;
    if (a->kind == VAL_PAT || b->kind == VAL_PAT)
        return kd_onnx_node_err(t, "reads a step of an exact-GELU pattern (Div, Erf, Add, Mul, "
                                "Mul) that does not complete");
    if (a->kind == VAL_CONST && b->kind == VAL_CONST) return fold(t, nd, op, a, b);
    if (a->kind == VAL_RUN && b->kind == VAL_RUN) {
        if (op != OP_ADD)
            return kd_onnx_node_err(t, "%s of two computed values: only their sum (Add) has a "
                                    "distill layer", name);
        if (a->dshape.rank != b->dshape.rank || memcmp(a->dshape.d, b->dshape.d, sizeof a->dshape.d))
            return kd_onnx_node_err(t, "adds values of different shapes (broadcasting between "
                                    "computed values is not supported)");
        cJSON *spec = cJSON_CreateObject();
        tr_value *ins[2] = {a, b};
        return spec ? kd_onnx_add_layer(t, nd, "add", spec, ins, 2, &a->shape, &a->dshape, NULL)
                    : oom(t);
    }
    if (a->kind == VAL_RUN ? b->is_int : a->is_int)
        return kd_onnx_node_err(t, "an integer constant with a computed value");
    return a->kind == VAL_RUN ? with_const(t, nd, op, a, b, 0) : with_const(t, nd, op, b, a, 1);
}

kd_status kd_onnx_op_erf(kd_onnx_tr *t, const Onnx__NodeProto *nd) {
    const tr_value *x = kd_onnx_in(t, nd, 0);
    if (!x || x->kind != VAL_PAT || x->gelu != 1)
        return kd_onnx_node_err(t, "Erf is supported only inside the exact GELU pattern "
                                "x * (erf(x / sqrt 2) + 1) * 0.5");
    return kd_onnx_pattern(t, nd, 2, x->gelu_of);
}
