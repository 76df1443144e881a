/* test_conv.c - conv2d, pools and batchnorm: finite-difference gradients, forward and backward
 * against naive loops written here, batch-norm statistics against hand computation, shapes and
 * shape errors. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_gradcheck.h"
#include "kd_nn.h"
#include "kd_rng.h"
#include "kd_test.h"

#define GC_TOL 1e-2

static void fill(kd_rng *r, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * kd_rng_uniform(r) - 1.0f;
}

/* Builds and reserves a model for batch B; on failure err says why. */
static kd_status build(kd_model *m, const kd_shape *in, const char *json, size_t B, kd_err *err) {
    memset(m, 0, sizeof *m);
    kd_status st = kd_model_init(m, in, json, 1, err);
    if (!st) st = kd_model_reserve(m, B, err);
    return st;
}

/* ---- conv2d ---- */

typedef struct {
    size_t C, H, W, O, KH, KW, S, P;
    int bias;
    size_t B;
} conv_case;

static size_t out_len(size_t n, size_t k, size_t s, size_t p) { return (n + 2 * p - k) / s + 1; }

static void conv_json(const conv_case *c, char *buf, size_t cap) {
    snprintf(buf, cap,
             "[{\"type\":\"conv2d\",\"channels\":%zu,\"kernel\":[%zu,%zu],\"stride\":%zu,"
             "\"padding\":%zu,\"bias\":%s}]",
             c->O, c->KH, c->KW, c->S, c->P, c->bias ? "true" : "false");
}

/* Direct convolution, double accumulation: y[b][o][oh][ow] = bias[o] +
 * sum_{c,i,j} w[o][c][i][j] * x[b][c][oh*S+i-P][ow*S+j-P] (zero outside). */
static void naive_conv(const conv_case *c, const float *x, const float *w, const float *bias,
                       double *y) {
    size_t OH = out_len(c->H, c->KH, c->S, c->P), OW = out_len(c->W, c->KW, c->S, c->P);
    for (size_t b = 0; b < c->B; b++)
        for (size_t o = 0; o < c->O; o++)
            for (size_t oh = 0; oh < OH; oh++)
                for (size_t ow = 0; ow < OW; ow++) {
                    double acc = bias ? bias[o] : 0.0;
                    for (size_t ci = 0; ci < c->C; ci++)
                        for (size_t i = 0; i < c->KH; i++)
                            for (size_t j = 0; j < c->KW; j++) {
                                long ih = (long)(oh * c->S + i) - (long)c->P;
                                long iw = (long)(ow * c->S + j) - (long)c->P;
                                if (ih < 0 || iw < 0 || ih >= (long)c->H || iw >= (long)c->W) continue;
                                acc += (double)w[((o * c->C + ci) * c->KH + i) * c->KW + j] *
                                       x[((b * c->C + ci) * c->H + (size_t)ih) * c->W + (size_t)iw];
                            }
                    y[((b * c->O + o) * OH + oh) * OW + ow] = acc;
                }
}

/* The adjoint of naive_conv: dw, db (sums over the batch) and dx from dy. */
static void naive_conv_backward(const conv_case *c, const float *x, const float *w, const float *dy,
                                double *dw, double *db, double *dx) {
    size_t OH = out_len(c->H, c->KH, c->S, c->P), OW = out_len(c->W, c->KW, c->S, c->P);
    memset(dw, 0, c->O * c->C * c->KH * c->KW * sizeof *dw);
    memset(db, 0, c->O * sizeof *db);
    memset(dx, 0, c->B * c->C * c->H * c->W * sizeof *dx);
    for (size_t b = 0; b < c->B; b++)
        for (size_t o = 0; o < c->O; o++)
            for (size_t oh = 0; oh < OH; oh++)
                for (size_t ow = 0; ow < OW; ow++) {
                    double g = dy[((b * c->O + o) * OH + oh) * OW + ow];
                    db[o] += g;
                    for (size_t ci = 0; ci < c->C; ci++)
                        for (size_t i = 0; i < c->KH; i++)
                            for (size_t j = 0; j < c->KW; j++) {
                                long ih = (long)(oh * c->S + i) - (long)c->P;
                                long iw = (long)(ow * c->S + j) - (long)c->P;
                                if (ih < 0 || iw < 0 || ih >= (long)c->H || iw >= (long)c->W) continue;
                                size_t wi = ((o * c->C + ci) * c->KH + i) * c->KW + j;
                                size_t xi = ((b * c->C + ci) * c->H + (size_t)ih) * c->W + (size_t)iw;
                                dw[wi] += g * x[xi];
                                dx[xi] += g * w[wi];
                            }
                }
}

static void to_float(const double *d, float *f, size_t n) {
    for (size_t i = 0; i < n; i++) f[i] = (float)d[i];
}

/* Runs the conv layer of a one-layer model forward and backward (calling the layer's backward
 * directly so the input gradient is produced) and compares with the naive loops. */
static void check_conv_vs_naive(const conv_case *c, uint64_t seed) {
    char json[256];
    conv_json(c, json, sizeof json);
    kd_shape in = {3, {c->C, c->H, c->W}};
    kd_model m;
    kd_err err;
    if (build(&m, &in, json, c->B, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s: %s", json, err.msg);
        kd_model_free(&m);
        return;
    }
    size_t OH = out_len(c->H, c->KH, c->S, c->P), OW = out_len(c->W, c->KW, c->S, c->P);
    size_t nx = c->B * c->C * c->H * c->W, ny = c->B * c->O * OH * OW;
    size_t nw = c->O * c->C * c->KH * c->KW;
    CHECK_EQ_INT(m.layers[0].out.d[1], OH);
    CHECK_EQ_INT(m.layers[0].out.d[2], OW);
    kd_rng r;
    kd_rng_seed(&r, seed);
    fill(&r, m.params, m.n_params);  /* includes a non-zero bias */
    float *x = malloc(nx * sizeof *x), *dy = malloc(ny * sizeof *dy), *dx = malloc(nx * sizeof *dx);
    float *f = malloc((nx > ny ? nx : ny) * sizeof *f);
    double *yd = malloc(ny * sizeof *yd), *dwd = malloc(nw * sizeof *dwd);
    double *dbd = malloc(c->O * sizeof *dbd), *dxd = malloc(nx * sizeof *dxd);
    fill(&r, x, nx);
    fill(&r, dy, ny);
    /* dx starts as garbage: backward must overwrite, not accumulate. */
    for (size_t i = 0; i < nx; i++) dx[i] = 1e6f;

    kd_ctx ctx = {1, NULL, NULL, 0, 0, 0};
    const float *y = kd_model_forward(&m, x, c->B, &ctx);
    naive_conv(c, x, m.layers[0].t[0], c->bias ? m.layers[0].t[1] : NULL, yd);
    to_float(yd, f, ny);
    CHECK_FLOATS(y, f, ny, 1e-5, 1e-4);

    kd_model_zero_grad(&m);
    kd_layer *l = &m.layers[0];
    l->ops->backward(l, x, y, dy, dx, c->B, &ctx);
    naive_conv_backward(c, x, l->t[0], dy, dwd, dbd, dxd);
    to_float(dwd, f, nw);
    CHECK_FLOATS(l->dt[0], f, nw, 1e-4, 1e-4);
    if (c->bias) {
        to_float(dbd, f, c->O);
        CHECK_FLOATS(l->dt[1], f, c->O, 1e-4, 1e-4);
    }
    to_float(dxd, f, nx);
    CHECK_FLOATS(dx, f, nx, 1e-5, 1e-4);

    free(x);
    free(dy);
    free(dx);
    free(f);
    free(yd);
    free(dwd);
    free(dbd);
    free(dxd);
    kd_model_free(&m);
}

KD_TEST(conv2d_forward_backward_match_naive_loops) {
    static const conv_case cases[] = {
        /* C, H, W, O, KH, KW, S, P, bias, B */
        {1, 5, 7, 2, 3, 3, 1, 0, 1, 3},
        {3, 5, 7, 4, 3, 3, 2, 1, 1, 2},
        {3, 6, 5, 3, 2, 3, 1, 2, 0, 2},
        {1, 7, 7, 2, 2, 3, 2, 0, 1, 1},
        {3, 4, 4, 2, 3, 3, 2, 2, 1, 2},
        {2, 1, 1, 2, 1, 1, 3, 2, 1, 2},   /* stride 3 over padding: some kernel taps see only zeros */
        {2, 9, 8, 3, 5, 5, 3, 2, 0, 2},
        /* Stride 1 with output width == input width (the flat im2col/col2im path), with
         * non-square kernels and all-padding rows. */
        {2, 6, 5, 3, 1, 3, 1, 1, 1, 2},
        {3, 5, 6, 2, 5, 1, 1, 0, 1, 2},
        {1, 3, 4, 2, 4, 5, 1, 2, 1, 2},
        /* Large planes: fewer samples than pieces (one sample each). */
        {4, 104, 104, 3, 3, 3, 1, 1, 1, 3},
        /* 37 samples in 16 pieces of 2 or 3: each piece sums its samples' weight and bias
         * gradients in its own slot before the slots are added; on the team. */
        {3, 12, 12, 4, 3, 3, 1, 1, 1, 37},
        /* 20 samples of a layer too small to fork for: the same pieces, one after another. */
        {2, 4, 4, 2, 3, 3, 1, 1, 1, 20},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_conv_vs_naive(&cases[i], 100 + i);
}

KD_TEST(conv2d_gradcheck) {
    static const conv_case cases[] = {
        {1, 5, 7, 2, 3, 3, 1, 0, 1, 2},
        {3, 5, 7, 2, 3, 3, 2, 1, 1, 2},
        {3, 6, 5, 3, 2, 3, 1, 2, 0, 2},
        {1, 7, 7, 2, 2, 3, 2, 0, 0, 3},
        {3, 4, 4, 2, 3, 3, 2, 2, 1, 2},
        {1, 5, 5, 2, 3, 3, 1, 1, 1, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[256];
        conv_json(&cases[i], json, sizeof json);
        kd_shape in = {3, {cases[i].C, cases[i].H, cases[i].W}};
        CHECK_EQ_INT(kd_gradcheck(&in, json, cases[i].B, 7 + i, 1, GC_TOL), 0);
    }
}

/* ---- pools ---- */

/* PyTorch semantics: window of output (oh, ow) covers padded rows oh*S .. oh*S+KH-1; max ignores
 * padding, average divides by KH*KW (count_include_pad). */
static void naive_pool(int is_max, const float *x, size_t BC, size_t H, size_t W, size_t KH,
                       size_t KW, size_t S, size_t P, double *y) {
    size_t OH = out_len(H, KH, S, P), OW = out_len(W, KW, S, P);
    for (size_t p = 0; p < BC; p++)
        for (size_t oh = 0; oh < OH; oh++)
            for (size_t ow = 0; ow < OW; ow++) {
                double acc = is_max ? -INFINITY : 0.0;
                for (size_t i = 0; i < KH; i++)
                    for (size_t j = 0; j < KW; j++) {
                        long ih = (long)(oh * S + i) - (long)P, iw = (long)(ow * S + j) - (long)P;
                        if (ih < 0 || iw < 0 || ih >= (long)H || iw >= (long)W) continue;
                        double v = x[(p * H + (size_t)ih) * W + (size_t)iw];
                        if (is_max) acc = v > acc ? v : acc;
                        else acc += v;
                    }
                y[(p * OH + oh) * OW + ow] = is_max ? acc : acc / (double)(KH * KW);
            }
}

KD_TEST(pools_forward_match_naive_loops) {
    static const struct {
        const char *type;
        size_t KH, KW, S, P, H, W;
        const char *json;
    } cases[] = {
        {"maxpool2d", 2, 2, 2, 0, 6, 7, "[{\"type\":\"maxpool2d\",\"kernel\":2}]"},
        {"maxpool2d", 3, 3, 2, 1, 7, 5, "[{\"type\":\"maxpool2d\",\"kernel\":3,\"stride\":2,\"padding\":1}]"},
        {"maxpool2d", 2, 3, 0, 0, 5, 7, "[{\"type\":\"maxpool2d\",\"kernel\":[2,3]}]"},
        {"avgpool2d", 2, 2, 2, 0, 6, 7, "[{\"type\":\"avgpool2d\",\"kernel\":2}]"},
        {"avgpool2d", 3, 3, 2, 1, 7, 5, "[{\"type\":\"avgpool2d\",\"kernel\":3,\"stride\":2,\"padding\":1}]"},
        {"avgpool2d", 3, 2, 1, 1, 4, 5, "[{\"type\":\"avgpool2d\",\"kernel\":[3,2],\"stride\":1,\"padding\":1}]"},
    };
    const size_t B = 2, C = 3;
    kd_rng r;
    kd_rng_seed(&r, 5);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t S = cases[k].S, SH = S ? S : cases[k].KH, SW = S ? S : cases[k].KW;
        kd_shape in = {3, {C, cases[k].H, cases[k].W}};
        kd_model m;
        kd_err err;
        if (build(&m, &in, cases[k].json, B, &err)) {
            kd_test_fail(__FILE__, __LINE__, "%s: %s", cases[k].json, err.msg);
            kd_model_free(&m);
            continue;
        }
        size_t OH = out_len(cases[k].H, cases[k].KH, SH, cases[k].P);
        size_t OW = out_len(cases[k].W, cases[k].KW, SW, cases[k].P);
        CHECK_EQ_INT(m.layers[0].out.d[1], OH);
        CHECK_EQ_INT(m.layers[0].out.d[2], OW);
        size_t nx = B * C * cases[k].H * cases[k].W, ny = B * C * OH * OW;
        float *x = malloc(nx * sizeof *x), *want = malloc(ny * sizeof *want);
        double *yd = malloc(ny * sizeof *yd);
        fill(&r, x, nx);
        const float *y = kd_model_forward(&m, x, B, NULL);
        /* Separable strides are equal in every case with an explicit stride. */
        if (SH == SW) {
            naive_pool(strcmp(cases[k].type, "maxpool2d") == 0, x, B * C, cases[k].H, cases[k].W,
                       cases[k].KH, cases[k].KW, SH, cases[k].P, yd);
            to_float(yd, want, ny);
            CHECK_FLOATS(y, want, ny, 1e-6, 1e-5);
        } else {
            /* kernel [2,3] with default stride (2,3): checked by hand on sample 0, channel 0. */
            size_t W = cases[k].W;
            for (size_t oh = 0; oh < OH; oh++)
                for (size_t ow = 0; ow < OW; ow++) {
                    float best = -INFINITY;
                    for (size_t i = 0; i < 2; i++)
                        for (size_t j = 0; j < 3; j++) {
                            float v = x[(oh * 2 + i) * W + ow * 3 + j];
                            best = v > best ? v : best;
                        }
                    CHECK(y[oh * OW + ow] == best);
                }
        }
        free(x);
        free(want);
        free(yd);
        kd_model_free(&m);
    }
}

KD_TEST(maxpool_ties_route_gradient_to_first_max) {
    kd_shape in = {3, {1, 2, 4}};
    kd_model m;
    kd_err err;
    CHECK(build(&m, &in, "[{\"type\":\"maxpool2d\",\"kernel\":2}]", 1, &err) == KD_OK);
    /* Window 0 = {x0,x1,x4,x5} all 3 (tie: first, index 0); window 1 = {2,7,7,1} (tie at 3 and 6). */
    const float x[] = {3, 3, 2, 7, 3, 3, 7, 1};
    kd_ctx ctx = {1, NULL, NULL, 0, 0, 0};
    const float *y = kd_model_forward(&m, x, 1, &ctx);
    CHECK(y[0] == 3.0f && y[1] == 7.0f);
    const float dy[] = {0.5f, -2.0f};
    float dx[8];
    kd_layer *l = &m.layers[0];
    l->ops->backward(l, x, y, dy, dx, 1, &ctx);
    const float want[] = {0.5f, 0, 0, -2.0f, 0, 0, 0, 0};
    CHECK_FLOATS(dx, want, 8, 0, 0);
    kd_model_free(&m);
}

/* The 2x2 stride-2 max pool on even planes (a vectorised path, four windows at a time, the last
 * four of a row overlapping when the width is not a multiple of four): values from {0, 1, 2}
 * make ties everywhere; the output is each window's maximum and the gradient goes to the first
 * maximum in scan order, as a loop written here says, for rows of 1 to 8 windows. */
KD_TEST(maxpool2x2_rows_of_any_width_match_the_scan_rule) {
    static const size_t shapes[][2] = {{4, 14}, {6, 16}, {2, 10}, {2, 6}, {4, 2}, {2, 8}};
    kd_rng r;
    kd_rng_seed(&r, 17);
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const size_t B = 2, C = 3, H = shapes[k][0], W = shapes[k][1], OH = H / 2, OW = W / 2;
        kd_shape in = {3, {C, H, W}};
        kd_model m;
        kd_err err;
        if (build(&m, &in, "[{\"type\":\"maxpool2d\",\"kernel\":2}]", B, &err)) {
            kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
            kd_model_free(&m);
            continue;
        }
        const size_t nx = B * C * H * W, ny = B * C * OH * OW;
        float *x = malloc(nx * sizeof *x), *dy = malloc(ny * sizeof *dy);
        float *dx = malloc(nx * sizeof *dx), *want_dx = calloc(nx, sizeof *want_dx);
        float *want_y = malloc(ny * sizeof *want_y);
        for (size_t i = 0; i < nx; i++) x[i] = (float)(kd_rng_u64(&r) % 3);
        for (size_t i = 0; i < ny; i++) dy[i] = (float)(i + 1);
        for (size_t p = 0; p < B * C; p++)
            for (size_t oh = 0; oh < OH; oh++)
                for (size_t ow = 0; ow < OW; ow++) {
                    const size_t first = p * H * W + 2 * oh * W + 2 * ow;
                    const size_t at[4] = {first, first + 1, first + W, first + W + 1};
                    size_t best = at[0];
                    for (int q = 1; q < 4; q++)
                        if (x[at[q]] > x[best]) best = at[q];
                    const size_t o = p * OH * OW + oh * OW + ow;
                    want_y[o] = x[best];
                    want_dx[best] = dy[o];
                }
        kd_ctx ctx = {1, NULL, NULL, 0, 0, 0};
        const float *y = kd_model_forward(&m, x, B, &ctx);
        CHECK_FLOATS(y, want_y, ny, 0, 0);
        kd_layer *l = &m.layers[0];
        l->ops->backward(l, x, y, dy, dx, B, &ctx);
        CHECK_FLOATS(dx, want_dx, nx, 0, 0);
        free(x);
        free(dy);
        free(dx);
        free(want_dx);
        free(want_y);
        kd_model_free(&m);
    }
}

KD_TEST(global_avgpool_forward_backward) {
    kd_shape in = {3, {2, 2, 3}};
    kd_model m;
    kd_err err;
    CHECK(build(&m, &in, "[{\"type\":\"global_avgpool\"}]", 2, &err) == KD_OK);
    CHECK_EQ_INT(m.layers[0].out.rank, 1);
    CHECK_EQ_INT(m.n_classes, 2);
    float x[24];
    for (int i = 0; i < 24; i++) x[i] = (float)(i * i % 7);
    const float *y = kd_model_forward(&m, x, 2, NULL);
    for (int p = 0; p < 4; p++) {
        double s = 0;
        for (int i = 0; i < 6; i++) s += x[p * 6 + i];
        CHECK_CLOSE(y[p], s / 6, 1e-6, 0);
    }
    kd_model_free(&m);
    CHECK_EQ_INT(kd_gradcheck(&in, "[{\"type\":\"global_avgpool\"}]", 2, 3, 1, GC_TOL), 0);
}

KD_TEST(pools_gradcheck) {
    kd_shape in = {3, {2, 6, 7}};
    static const char *const specs[] = {
        "[{\"type\":\"maxpool2d\",\"kernel\":2}]",
        "[{\"type\":\"maxpool2d\",\"kernel\":3,\"stride\":2,\"padding\":1}]",
        "[{\"type\":\"maxpool2d\",\"kernel\":[2,3],\"stride\":1}]",
        "[{\"type\":\"avgpool2d\",\"kernel\":2}]",
        "[{\"type\":\"avgpool2d\",\"kernel\":3,\"stride\":2,\"padding\":1}]",
        "[{\"type\":\"avgpool2d\",\"kernel\":[3,2]}]",
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        CHECK_EQ_INT(kd_gradcheck(&in, specs[i], 2, 11 + i, 1, GC_TOL), 0);
}

/* ---- batchnorm ---- */

/* Reference batch norm in double over x (B, C, S): y with batch or given statistics; returns the
 * batch mean and biased variance through mean/var. */
static void naive_bn(const float *x, size_t B, size_t C, size_t S, const float *g, const float *bt,
                     int use_batch, const double *rmean, const double *rvar, double eps,
                     double *mean, double *var, double *y) {
    for (size_t c = 0; c < C; c++) {
        double s = 0, q = 0;
        for (size_t b = 0; b < B; b++)
            for (size_t i = 0; i < S; i++) s += x[(b * C + c) * S + i];
        mean[c] = s / (double)(B * S);
        for (size_t b = 0; b < B; b++)
            for (size_t i = 0; i < S; i++) {
                double d = x[(b * C + c) * S + i] - mean[c];
                q += d * d;
            }
        var[c] = q / (double)(B * S);
        double mu = use_batch ? mean[c] : rmean[c], v = use_batch ? var[c] : rvar[c];
        for (size_t b = 0; b < B; b++)
            for (size_t i = 0; i < S; i++) {
                size_t k = (b * C + c) * S + i;
                y[k] = (x[k] - mu) / sqrt(v + eps) * g[c] + bt[c];
            }
    }
}

static void check_bn_semantics(const kd_shape *in, const char *json, double momentum, double eps) {
    const size_t B = 4, C = in->d[0], S = kd_shape_numel(in) / C, n = B * C * S;
    kd_model m;
    kd_err err;
    if (build(&m, in, json, B, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s: %s", json, err.msg);
        kd_model_free(&m);
        return;
    }
    kd_rng r;
    kd_rng_seed(&r, 21);
    kd_model_init_weights(&m, &r, KD_INIT_HE);
    float *w = kd_model_tensor(&m, "0.weight")->data, *b = kd_model_tensor(&m, "0.bias")->data;
    float *run_mean = kd_model_tensor(&m, "0.running_mean")->data;
    float *run_var = kd_model_tensor(&m, "0.running_var")->data;
    int64_t *n_batches = kd_model_tensor(&m, "0.num_batches_tracked")->counter;
    CHECK(run_mean[0] == 0.0f && run_var[0] == 1.0f && *n_batches == 0);
    for (size_t c = 0; c < C; c++) {
        w[c] = 0.5f + (float)c;
        b[c] = 0.25f - (float)c;
    }
    float *x = malloc(n * sizeof *x), *f = malloc(n * sizeof *f);
    double *yd = malloc(n * sizeof *yd), *mean = malloc(C * sizeof *mean), *var = malloc(C * sizeof *var);
    double *rm = malloc(C * sizeof *rm), *rv = malloc(C * sizeof *rv);
    for (size_t c = 0; c < C; c++) rm[c] = 0.0, rv[c] = 1.0;
    kd_ctx train = {1, NULL, NULL, 0, 0, 0};
    for (int step = 0; step < 2; step++) {
        /* Channel-dependent offset and scale so the statistics differ per channel. */
        for (size_t i = 0; i < n; i++) {
            size_t c = (i / S) % C;
            x[i] = (float)c * 2.0f - 1.0f + (1.0f + (float)c) * (2.0f * kd_rng_uniform(&r) - 1.0f);
        }
        const float *y = kd_model_forward(&m, x, B, &train);
        naive_bn(x, B, C, S, w, b, 1, NULL, NULL, eps, mean, var, yd);
        to_float(yd, f, n);
        CHECK_FLOATS(y, f, n, 1e-5, 1e-4);
        double N = (double)(B * S);
        for (size_t c = 0; c < C; c++) {
            rm[c] = (1 - momentum) * rm[c] + momentum * mean[c];
            rv[c] = (1 - momentum) * rv[c] + momentum * var[c] * N / (N - 1);  /* unbiased */
        }
    }
    for (size_t c = 0; c < C; c++) {
        CHECK_CLOSE(run_mean[c], rm[c], 1e-6, 1e-5);
        CHECK_CLOSE(run_var[c], rv[c], 1e-6, 1e-5);
    }
    CHECK_EQ_INT(*n_batches, 2);
    /* Eval: the running statistics normalise, and nothing is updated. */
    kd_ctx eval = {0, NULL, NULL, 0, 0, 0};
    const float *y = kd_model_forward(&m, x, B, &eval);
    naive_bn(x, B, C, S, w, b, 0, rm, rv, eps, mean, var, yd);
    to_float(yd, f, n);
    CHECK_FLOATS(y, f, n, 1e-5, 1e-4);
    CHECK_EQ_INT(*n_batches, 2);
    CHECK_CLOSE(run_mean[0], rm[0], 1e-6, 1e-5);
    free(x);
    free(f);
    free(yd);
    free(mean);
    free(var);
    free(rm);
    free(rv);
    kd_model_free(&m);
}

KD_TEST(batchnorm_train_eval_and_running_stats) {
    kd_shape in1 = {1, {3}};
    check_bn_semantics(&in1, "[{\"type\":\"batchnorm\"}]", 0.1, 1e-5);
    kd_shape in2 = {3, {2, 3, 2}};
    check_bn_semantics(&in2, "[{\"type\":\"batchnorm\",\"momentum\":0.3,\"eps\":0.01}]", 0.3, 0.01);
}

KD_TEST(batchnorm_hand_computed_1d) {
    /* One channel, batch {1, 2, 3, 6}: mean 3, biased var 3.5, unbiased 14/3. */
    kd_shape in = {1, {1}};
    kd_model m;
    kd_err err;
    CHECK(build(&m, &in, "[{\"type\":\"batchnorm\",\"eps\":0.5}]", 4, &err) == KD_OK);
    kd_rng r;
    kd_rng_seed(&r, 1);
    kd_model_init_weights(&m, &r, KD_INIT_HE);
    const float x[] = {1, 2, 3, 6};
    kd_ctx train = {1, NULL, NULL, 0, 0, 0};
    const float *y = kd_model_forward(&m, x, 4, &train);
    /* (x - 3) / sqrt(3.5 + 0.5) = (x - 3) / 2 */
    const float want[] = {-1.0f, -0.5f, 0.0f, 1.5f};
    CHECK_FLOATS(y, want, 4, 1e-6, 0);
    CHECK_CLOSE(kd_model_tensor(&m, "0.running_mean")->data[0], 0.3, 1e-7, 0);
    CHECK_CLOSE(kd_model_tensor(&m, "0.running_var")->data[0], 0.9 + 0.1 * 14.0 / 3.0, 1e-6, 0);
    kd_model_free(&m);
}

KD_TEST(batchnorm_state_dict_names_and_kinds) {
    kd_shape in = {3, {2, 4, 4}};
    kd_model m;
    kd_err err;
    CHECK(build(&m, &in,
                "[{\"type\":\"conv2d\",\"channels\":3,\"kernel\":3},{\"type\":\"batchnorm\"}]", 1,
                &err) == KD_OK);
    static const char *const names[] = {"0.weight",          "0.bias",         "1.weight",
                                        "1.bias",            "1.running_mean", "1.running_var",
                                        "1.num_batches_tracked"};
    static const kd_tensor_kind kinds[] = {KD_TENSOR_PARAM,  KD_TENSOR_PARAM,  KD_TENSOR_PARAM,
                                           KD_TENSOR_PARAM,  KD_TENSOR_BUFFER, KD_TENSOR_BUFFER,
                                           KD_TENSOR_COUNTER};
    CHECK_EQ_INT(m.n_tensors, 7);
    for (size_t i = 0; i < 7 && i < m.n_tensors; i++) {
        CHECK(strcmp(m.tensors[i].name, names[i]) == 0);
        CHECK(m.tensors[i].kind == kinds[i]);
    }
    kd_tensor *w = kd_model_tensor(&m, "0.weight");
    CHECK(w && w->shape.rank == 4 && w->shape.d[0] == 3 && w->shape.d[1] == 2 &&
          w->shape.d[2] == 3 && w->shape.d[3] == 3);
    kd_tensor *rv = kd_model_tensor(&m, "1.running_var");
    CHECK(rv && rv->numel == 3);
    CHECK_EQ_INT(m.n_params, 3 * 2 * 9 + 3 + 3 + 3);
    kd_model_free(&m);
}

KD_TEST(batchnorm_gradcheck) {
    kd_shape in1 = {1, {3}};
    CHECK_EQ_INT(kd_gradcheck(&in1, "[{\"type\":\"batchnorm\"}]", 5, 31, 1, GC_TOL), 0);
    kd_shape in2 = {3, {2, 3, 2}};
    CHECK_EQ_INT(kd_gradcheck(&in2, "[{\"type\":\"batchnorm\"}]", 3, 32, 1, GC_TOL), 0);
    /* A batch of one still normalises over the spatial values. */
    CHECK_EQ_INT(kd_gradcheck(&in2, "[{\"type\":\"batchnorm\"}]", 1, 33, 1, GC_TOL), 0);
    /* Eval mode: the statistics are constants. */
    CHECK_EQ_INT(kd_gradcheck(&in2, "[{\"type\":\"batchnorm\"}]", 3, 34, 0, GC_TOL), 0);
}

KD_TEST(cnn_stack_gradcheck) {
    kd_shape in = {3, {1, 6, 6}};
    const char *json =
        "[{\"type\":\"conv2d\",\"channels\":2,\"kernel\":3,\"padding\":1},"
        "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},{\"type\":\"maxpool2d\",\"kernel\":2},"
        "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]";
    CHECK_EQ_INT(kd_gradcheck(&in, json, 3, 41, 1, GC_TOL), 0);
    kd_shape in3 = {3, {3, 7, 5}};
    const char *json2 =
        "[{\"type\":\"conv2d\",\"channels\":4,\"kernel\":3,\"stride\":2,\"padding\":1,\"bias\":false},"
        "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},{\"type\":\"avgpool2d\",\"kernel\":2},"
        "{\"type\":\"conv2d\",\"channels\":3,\"kernel\":[2,1]},{\"type\":\"global_avgpool\"},"
        "{\"type\":\"batchnorm\"},{\"type\":\"dense\",\"units\":2}]";
    CHECK_EQ_INT(kd_gradcheck(&in3, json2, 4, 42, 1, GC_TOL), 0);
    /* batchnorm -> maxpool2d 2x2 -> relu, which the model runs fused (the direct walk of the
     * layers' own backward must agree with it, as must the finite differences). */
    kd_shape in4 = {3, {2, 8, 6}};
    const char *json3 =
        "[{\"type\":\"conv2d\",\"channels\":3,\"kernel\":3,\"padding\":1},"
        "{\"type\":\"batchnorm\"},{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"relu\"},"
        "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]";
    CHECK_EQ_INT(kd_gradcheck(&in4, json3, 3, 43, 1, GC_TOL), 0);
}

/* ---- shapes ---- */

KD_TEST(conv_shapes_inferred_and_round_trip) {
    kd_shape in = {3, {1, 28, 28}};
    const char *json =
        "[{\"type\":\"conv2d\",\"channels\":8,\"kernel\":5,\"padding\":2},"
        "{\"type\":\"maxpool2d\",\"kernel\":2},"
        "{\"type\":\"conv2d\",\"channels\":16,\"kernel\":[3,2],\"stride\":2,\"bias\":false},"
        "{\"type\":\"avgpool2d\",\"kernel\":3,\"stride\":2,\"padding\":1},"
        "{\"type\":\"batchnorm\",\"momentum\":0.05},{\"type\":\"global_avgpool\"}]";
    static const size_t want[][3] = {{8, 28, 28}, {8, 14, 14}, {16, 6, 7}, {16, 3, 4}, {16, 3, 4}, {16, 0, 0}};
    kd_model m, m2;
    kd_err err;
    memset(&m2, 0, sizeof m2);
    CHECK(build(&m, &in, json, 1, &err) == KD_OK);
    CHECK_EQ_INT(m.n_layers, 6);
    for (size_t i = 0; i < 6 && i < m.n_layers; i++) {
        CHECK_EQ_INT(m.layers[i].out.d[0], want[i][0]);
        if (want[i][1]) {
            CHECK_EQ_INT(m.layers[i].out.d[1], want[i][1]);
            CHECK_EQ_INT(m.layers[i].out.d[2], want[i][2]);
        }
    }
    CHECK_EQ_INT(m.n_classes, 16);
    CHECK_EQ_INT(kd_model_macs(&m), 8 * 28 * 28 * 25 + 16 * 6 * 7 * 8 * 6);
    /* The arch string rebuilds the same model. */
    char *arch = kd_model_arch_json(&m);
    CHECK(arch != NULL);
    if (arch) {
        CHECK_CONTAINS(arch, "\"kernel\":[3,2]");
        CHECK_CONTAINS(arch, "\"momentum\":0.05");
        CHECK(kd_model_init_arch(&m2, arch, 0, &err) == KD_OK);
        CHECK_EQ_INT(m2.n_layers, 6);
        CHECK_EQ_INT(m2.n_params, m.n_params);
        if (m2.n_layers == 6) {
            /* The rebuilt layers' own hyperparameters, as their describe writes them. */
            CHECK_EQ_INT(kd_test_layer_field(&m2.layers[2], "stride"), 2);
            CHECK_EQ_INT(kd_test_layer_field(&m2.layers[2], "bias"), 0);
            CHECK_EQ_INT(kd_test_layer_field(&m2.layers[3], "padding"), 1);
            CHECK_CLOSE(kd_test_layer_field(&m2.layers[4], "momentum"), 0.05, 1e-9, 0);
        }
    }
    free(arch);
    kd_model_free(&m2);
    kd_model_free(&m);
}

static void expect_error(const kd_shape *in, const char *json, const char *want) {
    kd_model m;
    kd_err err;
    kd_err_clear(&err);
    kd_status st = build(&m, in, json, 1, &err);
    if (st != KD_EUSAGE) kd_test_fail(__FILE__, __LINE__, "%s: status %d, want KD_EUSAGE", json, (int)st);
    CHECK_CONTAINS(err.msg, want);
    kd_model_free(&m);
}

KD_TEST(conv_shape_errors_name_the_layer) {
    kd_shape img = {3, {1, 3, 3}}, flat = {1, {784}}, img28 = {3, {1, 28, 28}};
    expect_error(&img, "[{\"type\":\"conv2d\",\"channels\":4,\"kernel\":5}]",
                 "layer 0 (conv2d): kernel 5 larger than padded input 3x3");
    expect_error(&img, "[{\"type\":\"relu\"},{\"type\":\"conv2d\",\"channels\":4,\"kernel\":[2,6],\"padding\":1}]",
                 "layer 1 (conv2d): kernel 2x6 larger than padded input 5x5");
    expect_error(&img, "[{\"type\":\"conv2d\",\"channels\":0,\"kernel\":3}]", "layer 0 (conv2d): channels");
    expect_error(&img, "[{\"type\":\"conv2d\",\"kernel\":3}]", "layer 0 (conv2d): missing \"channels\"");
    expect_error(&img, "[{\"type\":\"conv2d\",\"channels\":2,\"kernel\":\"3\"}]", "layer 0 (conv2d): kernel");
    expect_error(&img, "[{\"type\":\"conv2d\",\"channels\":2,\"kernel\":[3,0]}]", "layer 0 (conv2d): kernel");
    expect_error(&img, "[{\"type\":\"conv2d\",\"channels\":2,\"kernel\":3,\"stride\":0}]", "layer 0 (conv2d): stride");
    expect_error(&img, "[{\"type\":\"conv2d\",\"channels\":2,\"kernal\":3}]", "did you mean \"kernel\"");
    expect_error(&flat, "[{\"type\":\"conv2d\",\"channels\":2,\"kernel\":3}]",
                 "layer 0 (conv2d): expects a [C, H, W] input, got [784]");
    expect_error(&flat, "[{\"type\":\"dense\",\"units\":10},{\"type\":\"maxpool2d\",\"kernel\":2}]",
                 "layer 1 (maxpool2d): expects a [C, H, W] input, got [10]");
    expect_error(&flat, "[{\"type\":\"avgpool2d\",\"kernel\":2}]", "layer 0 (avgpool2d): expects a [C, H, W]");
    expect_error(&flat, "[{\"type\":\"global_avgpool\"}]", "layer 0 (global_avgpool): expects a [C, H, W]");
    expect_error(&img, "[{\"type\":\"maxpool2d\",\"kernel\":4}]",
                 "layer 0 (maxpool2d): kernel 4 larger than padded input 3x3");
    expect_error(&img28, "[{\"type\":\"maxpool2d\",\"kernel\":2,\"padding\":2}]",
                 "layer 0 (maxpool2d): padding 2 is more than half the kernel");
    expect_error(&img28, "[{\"type\":\"flatten\"},{\"type\":\"batchnorm\",\"momentum\":1.5}]",
                 "layer 1 (batchnorm): momentum");
    expect_error(&img28, "[{\"type\":\"batchnorm\",\"eps\":0}]", "layer 0 (batchnorm): eps");
}
