/* affine.c - a per-channel affine map y = x * weight[c] + bias[c] (the channel is the first
 * per-sample axis: C of [C, H, W], each feature of [D]): what an imported ONNX graph's Sub, Mul,
 * Div and Add with per-channel constants become (a folded normalisation, distill's own export's
 * preprocessing), trainable and exportable like any layer. */
#include <cJSON.h>

#include "layer_impl.h"

enum { AF_W, AF_B };

static size_t n_ch(const kd_layer *l) { return l->in.d[0]; }
static size_t plane(const kd_layer *l) { return kd_shape_numel(&l->in) / n_ch(l); }

static kd_status af_configure(kd_layer *l, const cJSON *spec, kd_err *err) {
    static const char *const fields[] = {NULL};
    kd_status st = kd_spec_check_fields(l, spec, fields, err);
    if (st) return st;
    if (l->in.rank < 1) return kd_layer_err(l, err, "expects an input with a channel axis");
    l->out = l->in;
    return KD_OK;
}

static int af_tensors(const kd_layer *l, kd_tensor_decl *out) {
    out[AF_W] = (kd_tensor_decl){"weight", KD_TENSOR_PARAM, {1, {n_ch(l)}}, 0};
    out[AF_B] = (kd_tensor_decl){"bias", KD_TENSOR_PARAM, {1, {n_ch(l)}}, 0};
    return 2;
}

/* Backward's double accumulators for dweight and dbias. */
static size_t af_workspace(const kd_layer *l, size_t B) {
    (void)B;
    return 2 * n_ch(l) * (sizeof(double) / sizeof(float));
}

/* The identity: weight 1, bias 0. */
static void af_init(kd_layer *l, kd_rng *rng, int xavier) {
    (void)rng;
    (void)xavier;
    for (size_t c = 0; c < n_ch(l); c++) {
        l->t[AF_W][c] = 1.0f;
        l->t[AF_B][c] = 0.0f;
    }
}

/* Rows of P values (one channel of one sample) are independent: the team splits them. */
static void af_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    (void)ctx;
    const size_t C = n_ch(l), P = plane(l), R = B * C;
    const float *restrict w = l->t[AF_W], *restrict b = l->t[AF_B];
#pragma omp parallel for schedule(static) if (KD_PAR(R * P))
    for (size_t r = 0; r < R; r++) {
        const float wc = w[r % C], bc = b[r % C];
        for (size_t p = 0; p < P; p++) y[r * P + p] = x[r * P + p] * wc + bc;
    }
}

/* dx = dy * weight[c]; dweight[c] += sum dy * x and dbias[c] += sum dy over the batch and the
 * plane, each channel summed by one thread in a fixed order (double), so the sums do not depend
 * on the thread count. Not in place: the weight gradient reads x, which a weight of 0 would not
 * let backward recover from y. */
static void af_backward(kd_layer *l, const float *x, const float *y, const float *dy, float *dx,
                        size_t B, kd_ctx *ctx) {
    (void)y;
    const size_t C = n_ch(l), P = plane(l);
    const float *restrict w = l->t[AF_W];
    const int par = KD_PAR(B * C * P);
    double *restrict sw = (double *)ctx->workspace, *restrict sb = sw + C;
#pragma omp parallel for schedule(static) if (par)
    for (size_t c = 0; c < C; c++) {
        double a = 0.0, s = 0.0;
        for (size_t i = 0; i < B; i++) {
            const size_t o = (i * C + c) * P;
            for (size_t p = 0; p < P; p++) {
                a += (double)dy[o + p] * x[o + p];
                s += dy[o + p];
            }
        }
        sw[c] = a;
        sb[c] = s;
    }
    if (dx) {
#pragma omp parallel for schedule(static) if (par)
        for (size_t r = 0; r < B * C; r++)
            for (size_t p = 0; p < P; p++) dx[r * P + p] = dy[r * P + p] * w[r % C];
    }
    for (size_t c = 0; c < C; c++) {
        l->dt[AF_W][c] += (float)sw[c];
        l->dt[AF_B][c] += (float)sb[c];
    }
}

static size_t af_macs(const kd_layer *l) { return kd_shape_numel(&l->in); }

/* ONNX: Mul then Add with [C, 1, ..] constants, which broadcast over [N, C, ...]. */
static kd_status af_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    kd_shape s = l->in;
    for (int d = 1; d < s.rank; d++) s.d[d] = 1;
    const char *x = kd_onnx_current(em), *w, *b, *t;
    kd_status st;
    if ((st = kd_onnx_tensor(em, "weight", l->t[AF_W], &s, KD_STORE_F32, &w, err)) ||
        (st = kd_onnx_tensor(em, "bias", l->t[AF_B], &s, KD_STORE_F32, &b, err)) ||
        (st = kd_onnx_node(em, "Mul", (const char *[]){x, w}, 2, NULL, 0, &t, err)))
        return st;
    return kd_onnx_node(em, "Add", (const char *[]){t, b}, 2, NULL, 0, NULL, err);
}

static const char af_c_helper[] =
    "static void $affine(const float *x, float *y, const float *w, const float *b, long C,\n"
    "                    long P) {\n"
    "    long c, p;\n"
    "    for (c = 0; c < C; c++)\n"
    "        for (p = 0; p < P; p++) y[c * P + p] = x[c * P + p] * w[c] + b[c];\n"
    "}\n";

static kd_status af_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    const char *w, *b;
    int q;
    kd_status st = kd_layer_c_tensor(l, em, AF_W, &w, &q, err);
    if (!st) st = kd_layer_c_tensor(l, em, AF_B, &b, &q, err);
    if (!st) st = kd_c_helper(em, "affine", af_c_helper, err);
    if (st) return st;
    return kd_c_code(em, 0, err, "$affine(x, y, %s, %s, %zuL, %zuL);", w, b, n_ch(l), plane(l));
}

const kd_layer_ops kd_layer_affine = {
    .type = "affine",
    .configure = af_configure,
    .tensors = af_tensors,
    .workspace_floats = af_workspace,
    .init = af_init,
    .forward = af_forward,
    .backward = af_backward,
    .macs = af_macs,
    .export_onnx = af_export_onnx,
    .export_c = af_export_c,
};
