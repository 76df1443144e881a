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

/* x (B, in) -> y (B, out). The bias is written into y first and sgemm adds x W^T on top
 * (beta = 1), so the bias costs one pass over y and no separate add. */
static void dense_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    (void)ctx;
    const dense_hp *hp = l->hp;
    const size_t in = l->in.d[0], out = hp->units;
    const float *w = l->t[DENSE_W], *b = l->t[DENSE_B];
    float beta = 0.0f;
    if (hp->bias) {
        for (size_t i = 0; i < B; i++) memcpy(y + i * out, b, out * sizeof *y);
        beta = 1.0f;
    }
    kd_sgemm(0, 1, B, out, in, 1.0f, x, in, w, in, beta, y, out);
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
    if (hp->bias)
        for (size_t i = 0; i < B; i++) add_kernel(dy + i * out, db, out);
    if (dx) kd_sgemm(0, 0, B, in, out, 1.0f, dy, out, l->t[DENSE_W], in, 0.0f, dx, in);
}

static int dense_describe(const kd_layer *l, cJSON *obj) {
    const dense_hp *hp = l->hp;
    if (kd_spec_add_size(obj, "units", hp->units)) return -1;
    return !hp->bias ? kd_spec_add_false(obj, "bias") : 0;
}

static size_t dense_macs(const kd_layer *l) { return l->in.d[0] * ((const dense_hp *)l->hp)->units; }

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
};
