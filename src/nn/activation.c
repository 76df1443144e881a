/* activation.c - elementwise activations: relu, leaky_relu, tanh, sigmoid, gelu, relu6,
 * hardswish.
 * Each works on B * numel(in) floats: plain kernels the compiler vectorises, run on blocks
 * that the OpenMP team shares (KD_PAR_BLOCKS; elementwise, so any thread count gives the same
 * bits). */
#include <cJSON.h>
#include <math.h>
#include <string.h>

#include "fused.h"
#include "layer_impl.h"

/* leaky_relu's hyperparameter; the other activations have none. */
typedef struct {
    float slope;  /* negative slope (default 0.01) */
} leaky_relu_hp;

static size_t act_count(const kd_layer *l, size_t B) { return B * kd_shape_numel(&l->in); }

static kd_status act_configure(kd_layer *l, const cJSON *spec, kd_err *err) {
    static const char *const none[] = {NULL};
    kd_status st = kd_spec_check_fields(l, spec, none, err);
    if (st) return st;
    l->out = l->in;
    return KD_OK;
}

/* Kernels on restrict pointers in the KD_VEC_FOR shape, so -O2 vectorises them (max/min and
 * plain arithmetic; GCC's cheapest vectoriser does not if-convert a select between loads). */
static void relu_kernel(const float *restrict x, float *restrict y, size_t n) {
    KD_VEC_FOR(i, n, y[i] = kd_relu(x[i]));  /* x < 0 ? 0 : x, not x > 0 ? x : 0: NaN passes */
}

/* max(x, 0) + slope * min(x, 0): the same values as the branchy form, but vectorisable. */
static void leaky_relu_kernel(const float *restrict x, float *restrict y, size_t n, float slope) {
    KD_VEC_FOR(i, n, y[i] = (x[i] > 0.0f ? x[i] : 0.0f) + slope * (x[i] < 0.0f ? x[i] : 0.0f));
}

static void tanh_backward_kernel(const float *restrict y, const float *restrict dy,
                                 float *restrict dx, size_t n) {
    KD_VEC_FOR(i, n, dx[i] = dy[i] * (1.0f - y[i] * y[i]));
}

static void sigmoid_backward_kernel(const float *restrict y, const float *restrict dy,
                                    float *restrict dx, size_t n) {
    KD_VEC_FOR(i, n, dx[i] = dy[i] * y[i] * (1.0f - y[i]));
}

/* ---- relu: y = max(x, 0); dx = dy where x > 0 (the kink at 0 gets gradient 0, as torch) ---- */

/* restrict (dx never aliases x or dy: the model ping-pongs gradient buffers) lets the
 * select vectorise; without it this loop was several times slower than the forward. */
static void relu_backward_kernel(const float *restrict x, const float *restrict dy,
                                 float *restrict dx, size_t n) {
    KD_VEC_FOR(i, n, {
        /* dy loaded unconditionally: a conditional load made GCC branch (15x slower on random
         * signs); a select between two values vectorises. */
        const float g = dy[i];
        dx[i] = x[i] > 0.0f ? g : 0.0f;
    });
}

static void leaky_relu_backward_kernel(const float *restrict x, const float *restrict dy,
                                       float *restrict dx, size_t n, float s) {
    KD_VEC_FOR(i, n, {
        const float g = dy[i];
        dx[i] = x[i] > 0.0f ? g : s * g;
    });
}

__attribute__((target_clones("avx2", "default")))
static void relu_in_place_kernel(float *restrict y, size_t n) {
    KD_VEC_FOR(i, n, y[i] = kd_relu(y[i]));
}

/* In place (y == x) when the model says so. Backward then reads the output where it reads x:
 * y > 0 exactly where x > 0, so the gradient is the same. */
static void relu_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    (void)ctx;
    if (x == y) KD_PAR_BLOCKS(act_count(l, B), o, k, relu_in_place_kernel(y + o, k));
    else KD_PAR_BLOCKS(act_count(l, B), o, k, relu_kernel(x + o, y + o, k));
}

static void relu_backward(kd_layer *l, const float *x, const float *y, const float *dy, float *dx,
                          size_t B, kd_ctx *ctx) {
    (void)y;
    (void)ctx;
    if (!dx) return;
    KD_PAR_BLOCKS(act_count(l, B), o, k, relu_backward_kernel(x + o, dy + o, dx + o, k));
}

/* ---- leaky_relu: y = x for x > 0, slope * x otherwise ---- */

static kd_status leaky_relu_configure(kd_layer *l, const cJSON *spec, kd_err *err) {
    static const char *const fields[] = {"slope", NULL};
    kd_status st = kd_spec_check_fields(l, spec, fields, err);
    leaky_relu_hp *hp = l->hp;
    if (!st) st = kd_spec_float(l, spec, "slope", 0.01f, -1e6, 1e6, 0, &hp->slope, err);
    if (st) return st;
    l->out = l->in;
    return KD_OK;
}

static void leaky_relu_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    (void)ctx;
    const float slope = ((const leaky_relu_hp *)l->hp)->slope;
    KD_PAR_BLOCKS(act_count(l, B), o, k, leaky_relu_kernel(x + o, y + o, k, slope));
}

static void leaky_relu_backward(kd_layer *l, const float *x, const float *y, const float *dy, float *dx,
                           size_t B, kd_ctx *ctx) {
    (void)y;
    (void)ctx;
    if (!dx) return;
    const float slope = ((const leaky_relu_hp *)l->hp)->slope;
    KD_PAR_BLOCKS(act_count(l, B), o, k,
                  leaky_relu_backward_kernel(x + o, dy + o, dx + o, k, slope));
}

static int leaky_relu_describe(const kd_layer *l, cJSON *obj) {
    const leaky_relu_hp *hp = l->hp;
    return kd_spec_add_float(obj, "slope", hp->slope);
}

/* ---- tanh: dx = dy * (1 - y^2) ---- */

static void tanh_kernel(const float *restrict x, float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
}

static void tanh_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    (void)ctx;
    KD_PAR_BLOCKS(act_count(l, B), o, k, tanh_kernel(x + o, y + o, k));
}

static void tanh_backward(kd_layer *l, const float *x, const float *y, const float *dy, float *dx,
                          size_t B, kd_ctx *ctx) {
    (void)x;
    (void)ctx;
    if (!dx) return;
    KD_PAR_BLOCKS(act_count(l, B), o, k, tanh_backward_kernel(y + o, dy + o, dx + o, k));
}

/* ---- sigmoid: y = 1 / (1 + e^-x); dx = dy * y * (1 - y). For x << 0, e^-x overflows to inf
 * and y becomes exactly 0, which is the right limit, so no branch is needed. ---- */

static void sigmoid_kernel(const float *restrict x, float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
}

static void sigmoid_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    (void)ctx;
    KD_PAR_BLOCKS(act_count(l, B), o, k, sigmoid_kernel(x + o, y + o, k));
}

static void sigmoid_backward(kd_layer *l, const float *x, const float *y, const float *dy,
                             float *dx, size_t B, kd_ctx *ctx) {
    (void)x;
    (void)ctx;
    if (!dx) return;
    KD_PAR_BLOCKS(act_count(l, B), o, k, sigmoid_backward_kernel(y + o, dy + o, dx + o, k));
}

/* ---- gelu, the exact form (torch.nn.GELU() default, approximate='none'):
 *   y  = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))
 *   dy/dx = Phi(x) + x * phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
 * The tanh approximation differs by up to ~1e-3, enough to break PyTorch parity. ---- */

#define KD_INV_SQRT2 0.70710678118654752440f
#define KD_INV_SQRT_2PI 0.39894228040143267794f

static void gelu_kernel(const float *restrict x, float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * KD_INV_SQRT2));
}

static void gelu_backward_kernel(const float *restrict x, const float *restrict dy,
                                 float *restrict dx, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float cdf = 0.5f * (1.0f + erff(x[i] * KD_INV_SQRT2));
        float pdf = KD_INV_SQRT_2PI * expf(-0.5f * x[i] * x[i]);
        dx[i] = dy[i] * (cdf + x[i] * pdf);
    }
}

static void gelu_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    (void)ctx;
    KD_PAR_BLOCKS(act_count(l, B), o, k, gelu_kernel(x + o, y + o, k));
}

static void gelu_backward(kd_layer *l, const float *x, const float *y, const float *dy, float *dx,
                          size_t B, kd_ctx *ctx) {
    (void)y;
    (void)ctx;
    if (!dx) return;
    KD_PAR_BLOCKS(act_count(l, B), o, k, gelu_backward_kernel(x + o, dy + o, dx + o, k));
}

/* ---- relu6 (torch.nn.ReLU6): y = min(max(x, 0), 6); dx = dy strictly inside (0, 6), 0 at
 * and beyond the kinks (torch's hardtanh_backward). In place, as relu: y is inside (0, 6)
 * exactly where x is, so backward handed y for x computes the same gradient. ---- */

/* The comparisons in this order let a NaN through, as relu and torch do. */
static void relu6_kernel(const float *restrict x, float *restrict y, size_t n) {
    KD_VEC_FOR(i, n, y[i] = kd_relu6(x[i]));
}
__attribute__((target_clones("avx2", "default")))
static void relu6_in_place_kernel(float *restrict y, size_t n) {
    KD_VEC_FOR(i, n, y[i] = kd_relu6(y[i]));
}
void kd_act_inplace(float *y, size_t n, int act) {
    if (act == KD_ACT_RELU) relu_in_place_kernel(y, n);
    else if (act == KD_ACT_RELU6) relu6_in_place_kernel(y, n);
}

static void relu6_backward_kernel(const float *restrict x, const float *restrict dy,
                                  float *restrict dx, size_t n) {
    KD_VEC_FOR(i, n, {
        const float g = dy[i];
        const float v = x[i];
        dx[i] = v > 0.0f && v < 6.0f ? g : 0.0f;
    });
}

static void relu6_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    (void)ctx;
    if (x == y) KD_PAR_BLOCKS(act_count(l, B), o, k, relu6_in_place_kernel(y + o, k));
    else KD_PAR_BLOCKS(act_count(l, B), o, k, relu6_kernel(x + o, y + o, k));
}

static void relu6_backward(kd_layer *l, const float *x, const float *y, const float *dy,
                           float *dx, size_t B, kd_ctx *ctx) {
    (void)y;
    (void)ctx;
    if (!dx) return;
    KD_PAR_BLOCKS(act_count(l, B), o, k, relu6_backward_kernel(x + o, dy + o, dx + o, k));
}

/* ---- hardswish (torch.nn.Hardswish): y = x * relu6(x + 3) / 6, in torch's float order
 * ((x * r) / 6); dx = 0 for x < -3, dy * (x / 3 + 0.5) for -3 <= x <= 3, dy above (torch's
 * hardswish_backward, kinks included). Backward reads x, which y does not give back (y is not
 * monotonic on (-3, -1.5)), so not in place. ---- */

static void hardswish_kernel(const float *restrict x, float *restrict y, size_t n) {
    KD_VEC_FOR(i, n, {
        const float v = x[i];
        const float t = v + 3.0f;
        const float r = t < 0.0f ? 0.0f : t > 6.0f ? 6.0f : t;
        y[i] = v * r / 6.0f;
    });
}
static void hardswish_backward_kernel(const float *restrict x, const float *restrict dy,
                                      float *restrict dx, size_t n) {
    KD_VEC_FOR(i, n, {
        const float g = dy[i];
        const float v = x[i];
        const uint32_t below = v < -3.0f;
        const uint32_t inside = v <= 3.0f;
        /* The three cases as bit masks, one of the two terms +0 (float selects around the
         * division stayed a branch: GCC will not speculate an op that may trap). A NaN x
         * passes dy, as torch's last case. */
        const float mid = g * (v / 3.0f + 0.5f);
        dx[i] = kd_float_if((1u - below) & (1u - inside), g) +
                kd_float_if((1u - below) & inside, mid);
    });
}

static void hardswish_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    (void)ctx;
    KD_PAR_BLOCKS(act_count(l, B), o, k, hardswish_kernel(x + o, y + o, k));
}

static void hardswish_backward(kd_layer *l, const float *x, const float *y, const float *dy,
                               float *dx, size_t B, kd_ctx *ctx) {
    (void)y;
    (void)ctx;
    if (!dx) return;
    KD_PAR_BLOCKS(act_count(l, B), o, k, hardswish_backward_kernel(x + o, dy + o, dx + o, k));
}

/* ---- Deployment: one ONNX node each (GELU decomposed: opset 13 has no Gelu), and in C an
 * in-place loop with the same float expression as the forward kernel above. ---- */

static kd_status act_onnx(kd_onnx_emitter *em, const char *op, const kd_onnx_attr *attrs,
                          size_t n_attrs, kd_err *err) {
    const char *x = kd_onnx_current(em);
    return kd_onnx_node(em, op, &x, 1, attrs, n_attrs, NULL, err);
}

/* y[i] = expr, where expr reads v = x[i]. */
static kd_status act_c(const kd_layer *l, kd_c_emitter *em, const char *expr, kd_err *err) {
    return kd_c_code(em, 1, err, "long i;\nfor (i = 0; i < %zuL; i++) {\n    const float v = x[i];\n"
                                 "    y[i] = %s;\n}", kd_shape_numel(&l->in), expr);
}

static kd_status relu_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    (void)l;
    return act_onnx(em, "Relu", NULL, 0, err);
}
static kd_status relu_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    return act_c(l, em, "v < 0.0f ? 0.0f : v", err);
}

static kd_status leaky_relu_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    const leaky_relu_hp *hp = l->hp;
    const kd_onnx_attr alpha = KD_ONNX_FLOAT("alpha", hp->slope);
    return act_onnx(em, "LeakyRelu", &alpha, 1, err);
}
static kd_status leaky_relu_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    const leaky_relu_hp *hp = l->hp;
    char slope[40], expr[128];
    snprintf(expr, sizeof expr, "(v > 0.0f ? v : 0.0f) + %s * (v < 0.0f ? v : 0.0f)",
             kd_c_float(hp->slope, slope, sizeof slope));
    return act_c(l, em, expr, err);
}

static kd_status tanh_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    (void)l;
    return act_onnx(em, "Tanh", NULL, 0, err);
}
static kd_status tanh_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    return act_c(l, em, "tanhf(v)", err);
}

static kd_status sigmoid_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    (void)l;
    return act_onnx(em, "Sigmoid", NULL, 0, err);
}
static kd_status sigmoid_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    return act_c(l, em, "1.0f / (1.0f + expf(-v))", err);
}

/* GELU as 0.5 x (1 + Erf(x / sqrt 2)), the division written as the forward's multiplication
 * by 1/sqrt 2: Mul, Erf, Add, Mul, Mul. */
static kd_status gelu_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    const float inv_sqrt2 = KD_INV_SQRT2, one = 1.0f, half = 0.5f;
    const kd_shape scalar = {0, {0}};
    const char *x = kd_onnx_current(em), *k, *c1, *ch, *t;
    kd_status st;
    (void)l;
    if ((st = kd_onnx_tensor(em, "inv_sqrt2", &inv_sqrt2, &scalar, KD_STORE_F32, &k, err)) ||
        (st = kd_onnx_tensor(em, "one", &one, &scalar, KD_STORE_F32, &c1, err)) ||
        (st = kd_onnx_tensor(em, "half", &half, &scalar, KD_STORE_F32, &ch, err)) ||
        (st = kd_onnx_node(em, "Mul", (const char *[]){x, k}, 2, NULL, 0, &t, err)) ||
        (st = kd_onnx_node(em, "Erf", &t, 1, NULL, 0, &t, err)) ||
        (st = kd_onnx_node(em, "Add", (const char *[]){t, c1}, 2, NULL, 0, &t, err)) ||
        (st = kd_onnx_node(em, "Mul", (const char *[]){x, t}, 2, NULL, 0, &t, err)))
        return st;
    return kd_onnx_node(em, "Mul", (const char *[]){t, ch}, 2, NULL, 0, NULL, err);
}
static kd_status gelu_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    return act_c(l, em, "0.5f * v * (1.0f + erff(v * 0.707106781f))", err);
}

/* relu6 as Clip(x, 0, 6) (opset 13: the bounds are scalar inputs). */
static kd_status relu6_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    const float lo = 0.0f, hi = 6.0f;
    const kd_shape scalar = {0, {0}};
    const char *x = kd_onnx_current(em), *a, *b;
    kd_status st;
    (void)l;
    if ((st = kd_onnx_tensor(em, "min", &lo, &scalar, KD_STORE_F32, &a, err)) ||
        (st = kd_onnx_tensor(em, "max", &hi, &scalar, KD_STORE_F32, &b, err)))
        return st;
    return kd_onnx_node(em, "Clip", (const char *[]){x, a, b}, 3, NULL, 0, NULL, err);
}
static kd_status relu6_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    return act_c(l, em, "v < 0.0f ? 0.0f : v > 6.0f ? 6.0f : v", err);
}

/* hardswish as x * HardSigmoid(x) with alpha 1/6, beta 1/2 (HardSwish itself is opset 14):
 * max(0, min(1, x / 6 + 1/2)) = relu6(x + 3) / 6, rounded differently (within an ulp or two). */
static kd_status hardswish_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    const kd_onnx_attr attrs[] = {KD_ONNX_FLOAT("alpha", 1.0f / 6.0f), KD_ONNX_FLOAT("beta", 0.5f)};
    const char *x = kd_onnx_current(em), *h;
    kd_status st;
    (void)l;
    if ((st = kd_onnx_node(em, "HardSigmoid", &x, 1, attrs, 2, &h, err))) return st;
    return kd_onnx_node(em, "Mul", (const char *[]){x, h}, 2, NULL, 0, NULL, err);
}
static kd_status hardswish_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    return act_c(l, em, "v * (v + 3.0f < 0.0f ? 0.0f : v + 3.0f > 6.0f ? 6.0f : v + 3.0f) / 6.0f",
                 err);
}

#define KD_ACTIVATION(name_, str_, hp_size_, configure_, describe_, in_place_, reads_y_)   \
    const kd_layer_ops kd_layer_##name_ = {                                                \
        .type = str_,                                                                      \
        .hp_size = hp_size_,                                                               \
        .configure = configure_,                                                           \
        .forward = name_##_forward,                                                        \
        .backward = name_##_backward,                                                      \
        .describe = describe_,                                                             \
        .export_onnx = name_##_export_onnx,                                                \
        .export_c = name_##_export_c,                                                      \
        .in_place = in_place_,                                                             \
        .backward_reads_output = reads_y_,                                                 \
    }

KD_ACTIVATION(relu, "relu", 0, act_configure, NULL, 1, 0);
/* leaky_relu stays out of place: with a negative slope the sign of y is not that of x. */
KD_ACTIVATION(leaky_relu, "leaky_relu", sizeof(leaky_relu_hp), leaky_relu_configure,
              leaky_relu_describe, 0, 0);
KD_ACTIVATION(tanh, "tanh", 0, act_configure, NULL, 0, 1);
KD_ACTIVATION(sigmoid, "sigmoid", 0, act_configure, NULL, 0, 1);
KD_ACTIVATION(gelu, "gelu", 0, act_configure, NULL, 0, 0);
KD_ACTIVATION(relu6, "relu6", 0, act_configure, NULL, 1, 0);
KD_ACTIVATION(hardswish, "hardswish", 0, act_configure, NULL, 0, 0);
