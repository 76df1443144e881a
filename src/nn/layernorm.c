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
    (void)ctx;
    const ln_hp *hp = l->hp;
    const size_t D = row_len(l), R = n_rows(l, B);
    const float *restrict w = l->t[LN_W], *restrict b = l->t[LN_B];
    for (size_t r = 0; r < R; r++) {
        const float *restrict xr = x + r * D;
        float *restrict yr = y + r * D;
        const double mean = kd_sum(xr, D) / (double)D;
        const double var = kd_sum_sq_dev(xr, D, mean) / (double)D;
        const float mu = (float)mean, rs = (float)(1.0 / sqrt(var + (double)hp->eps));
        l->cache[2 * r] = mu;
        l->cache[2 * r + 1] = rs;
        for (size_t d = 0; d < D; d++) yr[d] = w[d] * ((xr[d] - mu) * rs) + b[d];
    }
}

/* With g = dy * weight (the gradient with respect to xhat), per row:
 *   dweight += sum over rows of dy * xhat,  dbias += sum over rows of dy,
 *   dx = rstd * (g - sum(g) / D - xhat * sum(g * xhat) / D)
 * (the mean and the variance depend on every x of the row, hence the two correction terms).
 * Row sums and the weight/bias sums over rows accumulate in double. */
static void ln_backward(kd_layer *l, const float *x, const float *y, const float *dy, float *dx,
                        size_t B, kd_ctx *ctx) {
    (void)y;
    const size_t D = row_len(l), R = n_rows(l, B);
    const float *restrict w = l->t[LN_W];
    double *restrict sw = (double *)ctx->workspace, *restrict sb = sw + D;
    for (size_t d = 0; d < D; d++) sw[d] = sb[d] = 0.0;
    for (size_t r = 0; r < R; r++) {
        const float *restrict xr = x + r * D, *restrict dyr = dy + r * D;
        const double mu = l->cache[2 * r], rs = l->cache[2 * r + 1];
        double sg = 0.0, sgx = 0.0;
        for (size_t d = 0; d < D; d++) {
            const double xh = ((double)xr[d] - mu) * rs, g = (double)dyr[d] * w[d];
            sw[d] += (double)dyr[d] * xh;
            sb[d] += dyr[d];
            sg += g;
            sgx += g * xh;
        }
        if (!dx) continue;
        const double mg = sg / (double)D, mgx = sgx / (double)D;
        float *restrict dxr = dx + r * D;
        for (size_t d = 0; d < D; d++) {
            const double xh = ((double)xr[d] - mu) * rs;
            dxr[d] = (float)(rs * ((double)dyr[d] * w[d] - mg - xh * mgx));
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
};
