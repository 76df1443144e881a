/* layernorm.c - layer normalisation over the last axis of each sample, torch.nn.LayerNorm with
 * normalized_shape = (last dimension,) and elementwise_affine: for [D] samples over D, for
 * [C, H, W] over W (every (c, h) row separately), with weight and bias of shape [last dim]. */
#include <cJSON.h>
#include <math.h>

#include "kd_reduce.h"
#include "layer_impl.h"

typedef struct {
    float eps;  /* added to the variance (default 1e-5, as torch) */
} ln_hp;

/* Declared tensors, by position. */
enum { LN_W, LN_B };

/* Each sample is R rows of D values; a batch is B * R rows normalised independently. */
static size_t row_len(const kd_layer *l) { return l->in.d[l->in.rank - 1]; }
static size_t n_rows(const kd_layer *l, size_t B) { return B * (kd_shape_numel(&l->in) / row_len(l)); }

static kd_status ln_configure(kd_layer *l, const cJSON *spec, kd_err *err) {
    static const char *const fields[] = {"eps", NULL};
    ln_hp *hp = l->hp;
    kd_status st = kd_spec_check_fields(l, spec, fields, err);
    if (!st) st = kd_spec_float(l, spec, "eps", 1e-5f, 0.0, 1.0, 0, &hp->eps, err);
    if (st) return st;
    if (!(hp->eps > 0.0f)) return kd_layer_err(l, err, "eps: expected a number > 0");
    l->out = l->in;
    return KD_OK;
}

static int ln_tensors(const kd_layer *l, kd_tensor_decl *out) {
    out[LN_W] = (kd_tensor_decl){"weight", KD_TENSOR_PARAM, {1, {row_len(l)}}, 0};
    out[LN_B] = (kd_tensor_decl){"bias", KD_TENSOR_PARAM, {1, {row_len(l)}}, 0};
    return 2;
}

/* Cache: (mean, 1/std) of every row, interleaved, kept from forward for backward, which
 * recomputes xhat from x rather than storing a copy of the input. */
static size_t ln_cache(const kd_layer *l, size_t B) { return 2 * n_rows(l, B); }

/* Backward's double accumulators for dweight and dbias, over all rows of the batch. */
static size_t ln_workspace(const kd_layer *l, size_t B) {
    (void)B;
    return 2 * row_len(l) * (sizeof(double) / sizeof(float));
}

static void ln_init(kd_layer *l, kd_rng *rng, int xavier) {
    (void)rng;
    (void)xavier;
    for (size_t d = 0; d < row_len(l); d++) {
        l->t[LN_W][d] = 1.0f;
        l->t[LN_B][d] = 0.0f;
    }
}

/* Per row of D values, training and eval alike (no running statistics):
 *   mean = sum(x) / D,  var = sum((x - mean)^2) / D  (biased, as torch; two passes in double),
 *   xhat = (x - mean) / sqrt(var + eps),  y = weight * xhat + bias. */
static void ln_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    const ln_hp *hp = l->hp;
    float *cache = kd_layer_cache(l, ctx);
    const size_t D = row_len(l), R = n_rows(l, B);
    const float *restrict w = l->t[LN_W], *restrict b = l->t[LN_B];
#pragma omp parallel for schedule(static) if (KD_PAR(R * D))
    for (size_t r = 0; r < R; r++) {  /* rows are independent: the team splits them */
        const float *restrict xr = x + r * D;
        float *restrict yr = y + r * D;
        const double mean = kd_sum(xr, D) / (double)D;
        const double var = kd_sum_sq_dev(xr, D, mean) / (double)D;
        const float mu = (float)mean, rs = (float)(1.0 / sqrt(var + (double)hp->eps));
        cache[2 * r] = mu;
        cache[2 * r + 1] = rs;
        for (size_t d = 0; d < D; d++) yr[d] = w[d] * ((xr[d] - mu) * rs) + b[d];
    }
}

/* With g = dy * weight (the gradient with respect to xhat), per row:
 *   dweight += sum over rows of dy * xhat,  dbias += sum over rows of dy,
 *   dx = rstd * (g - sum(g) / D - xhat * sum(g * xhat) / D)
 * (the mean and the variance depend on every x of the row, hence the two correction terms).
 * Row sums and the weight/bias sums over rows accumulate in double. The team splits the rows
 * for dx, then the columns for the sums over rows (each column summed by one thread, rows in
 * order), so no sum depends on the thread count. */
/* Columns per thread for the sums over rows. */
#define LN_COLS 64

static void ln_backward(kd_layer *l, const float *x, const float *y, const float *dy, float *dx,
                        size_t B, kd_ctx *ctx) {
    (void)y;
    const size_t D = row_len(l), R = n_rows(l, B);
    const float *restrict w = l->t[LN_W];
    const float *cache = l->cache;
    const int par = KD_PAR(R * D);
    double *restrict sw = (double *)ctx->workspace, *restrict sb = sw + D;
    if (dx) {
#pragma omp parallel for schedule(static) if (par)
        for (size_t r = 0; r < R; r++) {
            const float *restrict xr = x + r * D, *restrict dyr = dy + r * D;
            const double mu = cache[2 * r], rs = cache[2 * r + 1];
            double sg = 0.0, sgx = 0.0;
            for (size_t d = 0; d < D; d++) {
                const double xh = ((double)xr[d] - mu) * rs, g = (double)dyr[d] * w[d];
                sg += g;
                sgx += g * xh;
            }
            const double mg = sg / (double)D, mgx = sgx / (double)D;
            float *restrict dxr = dx + r * D;
            for (size_t d = 0; d < D; d++) {
                const double xh = ((double)xr[d] - mu) * rs;
                dxr[d] = (float)(rs * ((double)dyr[d] * w[d] - mg - xh * mgx));
            }
        }
    }
    const size_t n_blocks = (D + LN_COLS - 1) / LN_COLS;
#pragma omp parallel for schedule(static) if (par)
    for (size_t k = 0; k < n_blocks; k++) {  /* columns [d0, d1), all rows, rows in order */
        const size_t d0 = k * LN_COLS, d1 = D - d0 < LN_COLS ? D : d0 + LN_COLS;
        for (size_t d = d0; d < d1; d++) sw[d] = sb[d] = 0.0;
        for (size_t r = 0; r < R; r++) {
            const double mu = cache[2 * r], rs = cache[2 * r + 1];
            for (size_t d = d0; d < d1; d++) {
                const double xh = ((double)x[r * D + d] - mu) * rs;
                sw[d] += (double)dy[r * D + d] * xh;
                sb[d] += dy[r * D + d];
            }
        }
    }
    for (size_t d = 0; d < D; d++) {
        l->dt[LN_W][d] += (float)sw[d];
        l->dt[LN_B][d] += (float)sb[d];
    }
}

static int ln_describe(const kd_layer *l, cJSON *obj) {
    const ln_hp *hp = l->hp;
    return hp->eps != 1e-5f ? kd_spec_add_float(obj, "eps", hp->eps) : 0;
}

/* ONNX: opset 13 has no LayerNormalization (it came in 17), so its decomposition over the last
 * axis: mean = ReduceMean(x), d = x - mean, var = ReduceMean(d * d),
 * y = d / Sqrt(var + eps) * weight + bias. */
static kd_status ln_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    const ln_hp *hp = l->hp;
    const kd_shape scalar = {0, {0}};
    const kd_onnx_attr axes[] = {KD_ONNX_INTS1("axes", -1), KD_ONNX_INT("keepdims", 1)};
    const char *x = kd_onnx_current(em), *w, *b, *eps, *mean, *d, *t;
    kd_status st;
    if ((st = kd_layer_onnx_tensor(l, em, LN_W, &w, err)) ||
        (st = kd_layer_onnx_tensor(l, em, LN_B, &b, err)) ||
        (st = kd_onnx_tensor(em, "eps", &hp->eps, &scalar, KD_STORE_F32, &eps, err)) ||
        (st = kd_onnx_node(em, "ReduceMean", &x, 1, axes, 2, &mean, err)) ||
        (st = kd_onnx_node(em, "Sub", (const char *[]){x, mean}, 2, NULL, 0, &d, err)) ||
        (st = kd_onnx_node(em, "Mul", (const char *[]){d, d}, 2, NULL, 0, &t, err)) ||
        (st = kd_onnx_node(em, "ReduceMean", &t, 1, axes, 2, &t, err)) ||
        (st = kd_onnx_node(em, "Add", (const char *[]){t, eps}, 2, NULL, 0, &t, err)) ||
        (st = kd_onnx_node(em, "Sqrt", &t, 1, NULL, 0, &t, err)) ||
        (st = kd_onnx_node(em, "Div", (const char *[]){d, t}, 2, NULL, 0, &t, err)) ||
        (st = kd_onnx_node(em, "Mul", (const char *[]){t, w}, 2, NULL, 0, &t, err)))
        return st;
    return kd_onnx_node(em, "Add", (const char *[]){t, b}, 2, NULL, 0, NULL, err);
}

/* C: the forward above per row, mean and variance in double (two passes). */
static const char ln_c_helper[] =
    "static void $layernorm(const float *x, float *y, const float *w, const float *b, long R,\n"
    "                       long D, double eps) {\n"
    "    long r, d;\n"
    "    for (r = 0; r < R; r++) {\n"
    "        const float *xr = x + r * D;\n"
    "        float *yr = y + r * D;\n"
    "        double s = 0.0, q = 0.0;\n"
    "        float mu, rs;\n"
    "        for (d = 0; d < D; d++) s += xr[d];\n"
    "        s /= (double)D;\n"
    "        for (d = 0; d < D; d++) q += ((double)xr[d] - s) * ((double)xr[d] - s);\n"
    "        mu = (float)s;\n"
    "        rs = (float)(1.0 / sqrt(q / (double)D + eps));\n"
    "        for (d = 0; d < D; d++) yr[d] = w[d] * ((xr[d] - mu) * rs) + b[d];\n"
    "    }\n"
    "}\n";

static kd_status ln_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    const ln_hp *hp = l->hp;
    const char *w, *b;
    char eps[40];
    int q;
    kd_status st = kd_layer_c_tensor(l, em, LN_W, &w, &q, err);
    if (!st) st = kd_layer_c_tensor(l, em, LN_B, &b, &q, err);
    if (!st) st = kd_c_helper(em, "layernorm", ln_c_helper, err);
    if (st) return st;
    return kd_c_code(em, 0, err, "$layernorm(x, y, %s, %s, %zuL, %zuL, (double)%s);", w, b,
                     n_rows(l, 1), row_len(l), kd_c_float(hp->eps, eps, sizeof eps));
}

const kd_layer_ops kd_layer_layernorm = {
    .type = "layernorm",
    .hp_size = sizeof(ln_hp),
    .configure = ln_configure,
    .tensors = ln_tensors,
    .cache_floats = ln_cache,
    .workspace_floats = ln_workspace,
    .init = ln_init,
    .forward = ln_forward,
    .backward = ln_backward,
    .describe = ln_describe,
    .export_onnx = ln_export_onnx,
    .export_c = ln_export_c,
};
