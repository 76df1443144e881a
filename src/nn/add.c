/* add.c - the elementwise sum of two or more values of one shape (a residual connection:
 * torch's `out = out + identity`). y = ((x0 + x1) + x2) + ..., in that order; every input's
 * gradient is dy. */
#include <cJSON.h>
#include <string.h>

#include "fused.h"
#include "layer_impl.h"

static kd_status add_configure(kd_layer *l, const cJSON *spec, kd_err *err) {
    static const char *const none[] = {NULL};
    char a[64], b[64];
    kd_status st = kd_spec_check_fields(l, spec, none, err);
    if (st) return st;
    for (size_t k = 1; k < l->n_in; k++) {
        const kd_shape *s = &l->ins[k];
        int same = s->rank == l->ins[0].rank;
        for (int d = 0; same && d < s->rank; d++) same = s->d[d] == l->ins[0].d[d];
        if (!same)
            return kd_layer_err(l, err, "from: input %zu is %s but input 0 is %s; add sums "
                                "values of one shape", k, kd_shape_str(s, a, sizeof a),
                                kd_shape_str(&l->ins[0], b, sizeof b));
    }
    l->out = l->ins[0];
    return KD_OK;
}

static void sum_block(const float *const *x, size_t n_in, float *restrict y, size_t o, size_t n) {
    const float *restrict a = x[0] + o, *restrict b = x[1] + o;
    float *restrict out = y + o;
    KD_VEC_FOR(i, n, out[i] = a[i] + b[i]);
    for (size_t k = 2; k < n_in; k++) {
        const float *restrict c = x[k] + o;
        KD_VEC_FOR(i, n, out[i] += c[i]);
    }
}

/* In place (y == x[0]): the same sums in the same order, y[i] = ((y[i] + x1[i]) + x2[i]) ... */
static void sum_into_block(const float *const *x, size_t n_in, float *restrict y, size_t o,
                           size_t n) {
    float *restrict out = y + o;
    for (size_t k = 1; k < n_in; k++) {
        const float *restrict c = x[k] + o;
        KD_VEC_FOR(i, n, out[i] += c[i]);
    }
}

/* One block of the sum, then of the relu after it while the block is in cache (the same
 * float operations as the two layers one after the other). */
static void add_block(const float *const *x, size_t n_in, float *y, size_t o, size_t n,
                      int relu) {
    if (y == x[0]) sum_into_block(x, n_in, y, o, n);
    else sum_block(x, n_in, y, o, n);
    float *restrict out = y + o;
    if (relu) KD_VEC_FOR(i, n, out[i] = kd_relu(out[i]));
}

/* y may be x[0] (the model runs an add in place when input 0 has no other reader). */
/* The sum (and relu) of a batch, or in a banded forward (exec.c) this thread's positions of
 * each channel plane of the one sample. */
static void add_run(const kd_layer *l, const float *const *x, float *y, size_t B,
                    const kd_ctx *ctx, int relu) {
    const size_t n_in = l->n_in;
    if (!ctx->bands) {
        KD_PAR_BLOCKS(B * kd_shape_numel(&l->out), o, k, add_block(x, n_in, y, o, k, relu));
        return;
    }
    KD_ASSERT(B == 1 && l->out.rank == 3);
    const size_t Q = l->out.d[1] * l->out.d[2];
    const size_t q0 = Q * ctx->band / ctx->bands, q1 = Q * (ctx->band + 1) / ctx->bands;
    for (size_t c = 0; c < l->out.d[0] && q0 < q1; c++)
        add_block(x, n_in, y, c * Q + q0, q1 - q0, relu);
}

static void add_forward(kd_layer *l, const float *const *x, float *y, size_t B, kd_ctx *ctx) {
    add_run(l, x, y, B, ctx, 0);
}

void kd_add_relu_forward(kd_layer *l, const float *const *x, float *y, size_t B,
                         const kd_ctx *ctx) {
    add_run(l, x, y, B, ctx, 1);
}

static void acc_block(const float *restrict dy, float *restrict dx, size_t n) {
    KD_VEC_FOR(i, n, dx[i] += dy[i]);
}

static void add_backward(kd_layer *l, size_t k, const float *dy, float *dx, int accumulate,
                         size_t B, kd_ctx *ctx) {
    (void)k;
    (void)ctx;
    const size_t n = B * kd_shape_numel(&l->out);
    if (!accumulate) kd_par_copy(dx, dy, n);
    else if (dx == dy) KD_PAR_BLOCKS(n, o, len, KD_VEC_FOR(i, len, dx[o + i] *= 2.0f));
    else KD_PAR_BLOCKS(n, o, len, acc_block(dy + o, dx + o, len));
}

/* ONNX Add is binary: a chain of them sums in the same order. */
static kd_status add_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    const char *acc = kd_onnx_input(em, 0);
    kd_status st = KD_OK;
    for (size_t k = 1; k < l->n_in && !st; k++) {
        const char *in[2] = {acc, kd_onnx_input(em, k)};
        st = kd_onnx_node(em, "Add", in, 2, NULL, 0, &acc, err);
    }
    return st;
}

static kd_status add_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    return kd_c_code(em, 0, err, "long i, k;\n(void)x;\nfor (i = 0; i < %zuL; i++) {\n"
                     "    float s = xs[0][i] + xs[1][i];\n"
                     "    for (k = 2; k < %zuL; k++) s += xs[k][i];\n    y[i] = s;\n}",
                     kd_shape_numel(&l->out), l->n_in);
}

const kd_layer_ops kd_layer_add = {
    .type = "add",
    .configure = add_configure,
    .forward_merge = add_forward,
    .backward_merge = add_backward,
    .export_onnx = add_export_onnx,
    .export_c = add_export_c,
    .grad_is_dy = 1,
    .in_place = 1,  /* y over x[0]: backward reads no input */
};
