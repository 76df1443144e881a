/* dense.c - fully connected layer, torch.nn.Linear layout: y = x W^T + b, W is [out, in]. */
#include <cJSON.h>
#include <string.h>

#include "kd_gemm.h"
#include "layer_impl.h"

/* Widest layer we accept; far above any useful size, low enough that out * in cannot overflow. */
#define DENSE_MAX_UNITS ((size_t)1 << 24)

typedef struct {
    size_t units;  /* output features */
    int bias;      /* has a bias (default true) */
} dense_hp;

/* Declared tensors, by position. */
enum { DENSE_W, DENSE_B };

static kd_status dense_configure(kd_layer *l, const cJSON *spec, kd_err *err) {
    static const char *const fields[] = {"units", "bias", NULL};
    dense_hp *hp = l->hp;
    char buf[64];
    kd_status st = kd_spec_check_fields(l, spec, fields, err);
    if (!st) st = kd_spec_size(l, spec, "units", 1, 0, 1, DENSE_MAX_UNITS, &hp->units, err);
    if (!st) st = kd_spec_bool(l, spec, "bias", 1, &hp->bias, err);
    if (st) return st;
    /* A dense layer on an image would silently mean "flatten first" in some frameworks and an
     * error in others; we make the flatten explicit so the layer indices match PyTorch's. */
    if (l->in.rank != 1)
        return kd_layer_err(l, err, "expects a flat input, got %s; add {\"type\":\"flatten\"} before it",
                            kd_shape_str(&l->in, buf, sizeof buf));
    if (l->in.d[0] > DENSE_MAX_UNITS)
        return kd_layer_err(l, err, "input has %zu features, more than the %zu supported",
                            l->in.d[0], DENSE_MAX_UNITS);
    l->out.rank = 1;
    l->out.d[0] = hp->units;
    return KD_OK;
}

static int dense_tensors(const kd_layer *l, kd_tensor_decl *out) {
    const dense_hp *hp = l->hp;
    out[DENSE_W] = (kd_tensor_decl){"weight", KD_TENSOR_PARAM, {2, {hp->units, l->in.d[0]}}, 1};
    out[DENSE_B] = (kd_tensor_decl){"bias", KD_TENSOR_PARAM, {1, {hp->units}}, 0};
    return hp->bias ? 2 : 1;
}

static void dense_init(kd_layer *l, kd_rng *rng, int xavier) {
    const dense_hp *hp = l->hp;
    size_t in = l->in.d[0], units = hp->units;
    kd_init_fill(l->t[DENSE_W], units * in, in, units, rng, xavier);
    if (hp->bias) memset(l->t[DENSE_B], 0, units * sizeof(float));
}

/* acc += x elementwise (restrict + KD_VEC_FOR: vectorised at -O2). */
static void add_kernel(const float *restrict x, float *restrict acc, size_t n) {
    KD_VEC_FOR(i, n, acc[i] += x[i]);
}

/* Columns of db per thread when the bias gradient is split among the OpenMP team. */
#define DENSE_DB_COLS 256

/* db (out) += sum over the B rows of dy (B, out), rows in order for every column: threads split
 * the columns, so the sums do not depend on the thread count. */
static void bias_grad(const float *dy, float *db, size_t B, size_t out) {
    const size_t n_blocks = (out + DENSE_DB_COLS - 1) / DENSE_DB_COLS;
#pragma omp parallel for schedule(static) if (KD_PAR(B * out) && n_blocks > 1)
    for (size_t k = 0; k < n_blocks; k++) {
        const size_t o0 = k * DENSE_DB_COLS;
        const size_t len = out - o0 < DENSE_DB_COLS ? out - o0 : DENSE_DB_COLS;
        for (size_t i = 0; i < B; i++) add_kernel(dy + i * out + o0, db + o0, len);
    }
}

/* x (B, in) -> y (B, out); inference may split the batch's rows among the threads. */
static void dense_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    const dense_hp *hp = l->hp;
    kd_sgemm_linear(B, hp->units, l->in.d[0], x, l->t[DENSE_W], hp->bias ? l->t[DENSE_B] : NULL,
                    y, !ctx || !ctx->training);
}

/* dW (out, in) += dy^T x;  db (out) += sum over the batch of dy;  dx (B, in) = dy W. */
static void dense_backward(kd_layer *l, const float *x, const float *y, const float *dy,
                           float *dx, size_t B, kd_ctx *ctx) {
    (void)y;
    (void)ctx;
    const dense_hp *hp = l->hp;
    const size_t in = l->in.d[0], out = hp->units;
    float *db = l->dt[DENSE_B];
    kd_sgemm(1, 0, out, in, B, 1.0f, dy, out, x, in, 1.0f, l->dt[DENSE_W], in);
    if (hp->bias) bias_grad(dy, db, B, out);
    if (dx) kd_sgemm(0, 0, B, in, out, 1.0f, dy, out, l->t[DENSE_W], in, 0.0f, dx, in);
}

static int dense_describe(const kd_layer *l, cJSON *obj) {
    const dense_hp *hp = l->hp;
    if (kd_spec_add_size(obj, "units", hp->units)) return -1;
    return !hp->bias ? kd_spec_add_false(obj, "bias") : 0;
}

static size_t dense_macs(const kd_layer *l) { return l->in.d[0] * ((const dense_hp *)l->hp)->units; }

/* ONNX: Gemm(x, W, b, transB = 1), i.e. y = x W^T + b with W as stored ([out, in]). */
static kd_status dense_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    const dense_hp *hp = l->hp;
    const char *x = kd_onnx_current(em), *w, *b = NULL;
    kd_status st = kd_layer_onnx_tensor(l, em, DENSE_W, &w, err);
    if (!st && hp->bias) st = kd_layer_onnx_tensor(l, em, DENSE_B, &b, err);
    if (st) return st;
    const kd_onnx_attr trans_b = KD_ONNX_INT("transB", 1);
    return kd_onnx_node(em, "Gemm", (const char *[]){x, w, b}, hp->bias ? 3 : 2, &trans_b, 1,
                        NULL, err);
}

/* C: y[o] = b[o] + sum_i w[o, i] x[i] (int8: b[o] + scale[o] * sum_i q[o, i] x[i]), with eight
 * partial sums in fixed blocks, which -O2 turns into vector code (a single running sum is one
 * chain of dependent additions and stays scalar; measured 2x faster on the MLP teacher). */
static const char dense_c_helper[] =
    "static void $dense(const float *x, float *y, const float *w, const signed char *q,\n"
    "                   const float *scale, const float *b, long n_in, long n_out) {\n"
    "    const long n8 = n_in - n_in % 8;\n"
    "    long o, i, k;\n"
    "    for (o = 0; o < n_out; o++) {\n"
    "        float a[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f}, s;\n"
    "        if (q) {\n"
    "            const signed char *r = q + o * n_in;\n"
    "            for (i = 0; i < n8; i += 8)\n"
    "                for (k = 0; k < 8; k++) a[k] += (float)r[i + k] * x[i + k];\n"
    "            for (i = n8; i < n_in; i++) a[0] += (float)r[i] * x[i];\n"
    "        } else {\n"
    "            const float *r = w + o * n_in;\n"
    "            for (i = 0; i < n8; i += 8)\n"
    "                for (k = 0; k < 8; k++) a[k] += r[i + k] * x[i + k];\n"
    "            for (i = n8; i < n_in; i++) a[0] += r[i] * x[i];\n"
    "        }\n"
    "        s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));\n"
    "        if (q) s *= scale[o];\n"
    "        y[o] = b ? s + b[o] : s;\n"
    "    }\n"
    "}\n";

static kd_status dense_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    const dense_hp *hp = l->hp;
    const char *w, *b = "0";
    int q, qb;
    kd_status st = kd_layer_c_tensor(l, em, DENSE_W, &w, &q, err);
    if (!st && hp->bias) st = kd_layer_c_tensor(l, em, DENSE_B, &b, &qb, err);
    if (!st) st = kd_c_helper(em, "dense", dense_c_helper, err);
    if (st) return st;
    char wq[160];
    if (q) snprintf(wq, sizeof wq, "0, %s, %s_scale", w, w);
    else snprintf(wq, sizeof wq, "%s, 0, 0", w);
    return kd_c_code(em, 0, err, "$dense(x, y, %s, %s, %zuL, %zuL);", wq, b, l->in.d[0],
                     hp->units);
}

const kd_layer_ops kd_layer_dense = {
    .type = "dense",
    .hp_size = sizeof(dense_hp),
    .configure = dense_configure,
    .tensors = dense_tensors,
    .init = dense_init,
    .forward = dense_forward,
    .backward = dense_backward,
    .describe = dense_describe,
    .macs = dense_macs,
    .export_onnx = dense_export_onnx,
    .export_c = dense_export_c,
};
