/* dense.c - fully connected layer, torch.nn.Linear layout: y = x W^T + b, W is [out, in]. */
#include <cJSON.h>
#include <string.h>

#include "kd_gemm.h"
#include "kd_nn.h"

/* Widest layer we accept; far above any useful size, low enough that out * in cannot overflow. */
#define DENSE_MAX_UNITS ((size_t)1 << 24)

static kd_status dense_configure(kd_layer *l, const cJSON *spec, kd_err *err) {
    static const char *const fields[] = {"units", "bias", NULL};
    char buf[64];
    kd_status st = kd_spec_check_fields(l, spec, fields, err);
    if (!st) st = kd_spec_size(l, spec, "units", 1, 0, 1, DENSE_MAX_UNITS, &l->hp.units, err);
    if (!st) st = kd_spec_bool(l, spec, "bias", 1, &l->hp.bias, err);
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
    l->out.d[0] = l->hp.units;
    return KD_OK;
}

static int dense_tensors(const kd_layer *l, kd_tensor *out) {
    size_t in = l->in.d[0], units = l->hp.units;
    memset(out, 0, 2 * sizeof *out);
    strcpy(out[0].name, "weight");
    out[0].kind = KD_TENSOR_PARAM;
    out[0].shape = (kd_shape){2, {units, in}};
    if (!l->hp.bias) return 1;
    strcpy(out[1].name, "bias");
    out[1].kind = KD_TENSOR_PARAM;
    out[1].shape = (kd_shape){1, {units}};
    return 2;
}

static size_t dense_zero(const kd_layer *l, size_t B) {
    (void)l;
    (void)B;
    return 0;
}

static void dense_init(kd_layer *l, kd_rng *rng, int xavier) {
    size_t in = l->in.d[0], units = l->hp.units;
    kd_init_fill(l->w, units * in, in, units, rng, xavier);
    if (l->b) memset(l->b, 0, units * sizeof *l->b);
}

/* acc += x elementwise (restrict + KD_VEC_FOR: vectorised at -O2). */
static void add_kernel(const float *restrict x, float *restrict acc, size_t n) {
    KD_VEC_FOR(i, n, acc[i] += x[i]);
}

/* x (B, in) -> y (B, out). The bias is written into y first and sgemm adds x W^T on top
 * (beta = 1), so the bias costs one pass over y and no separate add. */
static void dense_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    (void)ctx;
    const size_t in = l->in.d[0], out = l->hp.units;
    float beta = 0.0f;
    if (l->b) {
        for (size_t i = 0; i < B; i++) memcpy(y + i * out, l->b, out * sizeof *y);
        beta = 1.0f;
    }
    kd_sgemm(0, 1, B, out, in, 1.0f, x, in, l->w, in, beta, y, out);
}

/* dW (out, in) += dy^T x;  db (out) += sum over the batch of dy;  dx (B, in) = dy W. */
static void dense_backward(kd_layer *l, const float *x, const float *y, const float *dy,
                           float *dx, size_t B, kd_ctx *ctx) {
    (void)y;
    (void)ctx;
    const size_t in = l->in.d[0], out = l->hp.units;
    kd_sgemm(1, 0, out, in, B, 1.0f, dy, out, x, in, 1.0f, l->dw, in);
    if (l->db)
        for (size_t i = 0; i < B; i++) add_kernel(dy + i * out, l->db, out);
    if (dx) kd_sgemm(0, 0, B, in, out, 1.0f, dy, out, l->w, in, 0.0f, dx, in);
}

static void dense_describe(const kd_layer *l, cJSON *obj) {
    cJSON_AddNumberToObject(obj, "units", (double)l->hp.units);
    if (!l->hp.bias) cJSON_AddBoolToObject(obj, "bias", 0);
}

static size_t dense_macs(const kd_layer *l) { return l->in.d[0] * l->hp.units; }

const kd_layer_ops kd_layer_dense = {
    .type = "dense",
    .configure = dense_configure,
    .tensors = dense_tensors,
    .cache_floats = dense_zero,
    .workspace_floats = dense_zero,
    .init = dense_init,
    .forward = dense_forward,
    .backward = dense_backward,
    .describe = dense_describe,
    .macs = dense_macs,
};
