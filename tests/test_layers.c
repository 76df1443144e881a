/* test_layers.c - dense, activations, dropout and flatten: finite-difference gradient checks,
 * hand-computed and libm-computed forward values, dropout statistics and determinism. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_gradcheck.h"
#include "kd_nn.h"
#include "kd_rng.h"
#include "kd_test.h"

static const kd_shape vec6 = {1, {6}};

KD_TEST(layers_gradcheck_dense) {
    CHECK_EQ_INT(kd_gradcheck(&vec6, "[{\"type\":\"dense\",\"units\":5}]", 3, 1, 0, 1e-2), 0);
    CHECK_EQ_INT(kd_gradcheck(&vec6, "[{\"type\":\"dense\",\"units\":4,\"bias\":false}]", 3, 2, 0, 1e-2), 0);
    /* Two dense layers: the first one's input gradient flows through the second's dx. */
    CHECK_EQ_INT(kd_gradcheck(&vec6, "[{\"type\":\"dense\",\"units\":7},{\"type\":\"dense\",\"units\":3}]",
                              4, 3, 0, 1e-2), 0);
}

KD_TEST(layers_gradcheck_activations) {
    /* kd_gradcheck's inputs lie in [-1, 1]: relu6's kink at 0 and hardswish's middle piece (their
     * other kinks: layers_relu6_hardswish_values_and_gradients_across_the_kinks). */
    static const char *const acts[] = {"{\"type\":\"relu\"}", "{\"type\":\"leaky_relu\",\"slope\":0.2}",
                                       "{\"type\":\"tanh\"}", "{\"type\":\"sigmoid\"}", "{\"type\":\"gelu\"}",
                                       "{\"type\":\"relu6\"}", "{\"type\":\"hardswish\"}"};
    char json[256];
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) {
        /* Alone (checks the input gradient directly) and between two dense layers. */
        snprintf(json, sizeof json, "[%s]", acts[i]);
        CHECK_EQ_INT(kd_gradcheck(&vec6, json, 4, 10 + i, 0, 1e-2), 0);
        snprintf(json, sizeof json,
                 "[{\"type\":\"dense\",\"units\":8},%s,{\"type\":\"dense\",\"units\":3}]",
                 acts[i]);
        CHECK_EQ_INT(kd_gradcheck(&vec6, json, 3, 20 + i, 0, 1e-2), 0);
    }
}

KD_TEST(layers_gradcheck_dropout_and_flatten) {
    CHECK_EQ_INT(kd_gradcheck(&vec6, "[{\"type\":\"dense\",\"units\":8},{\"type\":\"dropout\",\"p\":0.3},"
                                     "{\"type\":\"dense\",\"units\":3}]", 4, 5, 1, 1e-2), 0);
    CHECK_EQ_INT(kd_gradcheck(&vec6, "[{\"type\":\"dropout\",\"p\":0.5}]", 4, 6, 1, 1e-2), 0);
    const kd_shape img = {3, {2, 3, 4}};
    CHECK_EQ_INT(kd_gradcheck(&img, "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":5}]", 3, 7, 0, 1e-2), 0);
}

KD_TEST(layers_gradcheck_deep_stack) {
    const kd_shape img = {3, {2, 2, 3}};
    CHECK_EQ_INT(kd_gradcheck(&img,
                              "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":9},{\"type\":\"tanh\"},"
                              "{\"type\":\"dense\",\"units\":8},{\"type\":\"gelu\"},"
                              "{\"type\":\"dropout\",\"p\":0.25},{\"type\":\"dense\",\"units\":7},"
                              "{\"type\":\"leaky_relu\"},{\"type\":\"dense\",\"units\":6},"
                              "{\"type\":\"sigmoid\"},{\"type\":\"dense\",\"units\":5},{\"type\":\"relu\"},"
                              "{\"type\":\"dense\",\"units\":4,\"bias\":false}]",
                              5, 8, 1, 1e-2), 0);
}

/* A model from a JSON literal, reserved for B samples; fails the case on error. */
static int build(kd_model *m, const kd_shape *in, const char *json, size_t B) {
    kd_err err;
    kd_status st = kd_model_init(m, in, json, 1, &err);
    if (!st) st = kd_model_reserve(m, B, &err);
    if (st) kd_test_fail(__FILE__, __LINE__, "%s: %s", json, err.msg);
    return st == KD_OK;
}

KD_TEST(layers_dense_forward_hand_computed) {
    kd_model m;
    const kd_shape in = {1, {3}};
    if (!build(&m, &in, "[{\"type\":\"dense\",\"units\":2}]", 2)) return;
    /* W = [[1,2,3],[4,5,6]], b = [0.5,-1]; x = [[1,0,-1],[2,1,0]]
     * y0 = [1-3+0.5, 4-6-1] = [-1.5, -3];  y1 = [2+2+0.5, 8+5-1] = [4.5, 12]. */
    const float W[] = {1, 2, 3, 4, 5, 6}, b[] = {0.5f, -1}, x[] = {1, 0, -1, 2, 1, 0};
    memcpy(kd_model_tensor(&m, "0.weight")->data, W, sizeof W);
    memcpy(kd_model_tensor(&m, "0.bias")->data, b, sizeof b);
    const float want[] = {-1.5f, -3, 4.5f, 12};
    CHECK_FLOATS(kd_model_forward(&m, x, 2, NULL), want, 4, 0, 0);
    /* dlogits = [[1,0],[0,1]]: dW = dy^T x = [[1,0,-1],[2,1,0]], db = [1,1]. */
    const float dy[] = {1, 0, 0, 1}, want_dw[] = {1, 0, -1, 2, 1, 0}, want_db[] = {1, 1};
    kd_model_zero_grad(&m);
    kd_model_backward(&m, x, dy, 2, NULL);
    CHECK_FLOATS(m.grads, want_dw, 6, 0, 0);
    CHECK_FLOATS(m.grads + 6, want_db, 2, 0, 0);
    /* Backward accumulates. */
    kd_model_backward(&m, x, dy, 2, NULL);
    CHECK_CLOSE(m.grads[3], 4.0, 0, 0);
    kd_model_free(&m);
}

static double ref_gelu(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }
static double ref_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

KD_TEST(layers_activation_values_match_libm) {
    enum { N = 41 };
    const kd_shape in = {1, {N}};
    float x[N];
    for (int i = 0; i < N; i++) x[i] = -10.0f + 0.5f * (float)i;  /* -10 .. 10 */
    const char *types[] = {"gelu", "sigmoid", "tanh", "relu", "leaky_relu"};
    for (int t = 0; t < 5; t++) {
        char json[64];
        kd_model m;
        snprintf(json, sizeof json, "[{\"type\":\"%s\"}]", types[t]);
        if (!build(&m, &in, json, 1)) return;
        const float *y = kd_model_forward(&m, x, 1, NULL);
        float want[N];
        for (int i = 0; i < N; i++) {
            double v = x[i];
            want[i] = (float)(t == 0 ? ref_gelu(v) : t == 1 ? ref_sigmoid(v) : t == 2 ? tanh(v)
                              : t == 3 ? (v > 0 ? v : 0) : (v > 0 ? v : 0.01 * v));
        }
        if (!CHECK_FLOATS(y, want, N, 1e-6, 1e-5)) printf("    (type %s)\n", types[t]);
        kd_model_free(&m);
    }
    /* Spot values: gelu(1) = 0.8413447, sigmoid(-100) = 0 exactly-ish, not NaN. */
    kd_model m;
    const kd_shape one = {1, {1}};
    const float big[] = {-100.0f};
    if (!build(&m, &one, "[{\"type\":\"sigmoid\"}]", 1)) return;
    float s = kd_model_forward(&m, big, 1, NULL)[0];
    CHECK(s >= 0.0f && s < 1e-30f);
    kd_model_free(&m);
}

KD_TEST(layers_dropout_eval_identity_and_training_statistics) {
    enum { N = 4000 };
    const kd_shape in = {1, {N}};
    kd_model m;
    if (!build(&m, &in, "[{\"type\":\"dropout\",\"p\":0.3}]", 2)) return;
    float *x = malloc(2 * N * sizeof *x), *first = malloc(2 * N * sizeof *first);
    kd_rng rng;
    kd_rng_seed(&rng, 99);
    for (size_t i = 0; i < 2 * N; i++) x[i] = 0.5f + kd_rng_uniform(&rng);  /* never 0 */

    /* Eval: identity, RNG untouched. */
    kd_ctx eval = {0, &rng, NULL, 0, 0, 0};
    kd_rng before = rng;
    CHECK_FLOATS(kd_model_forward(&m, x, 2, &eval), x, 2 * N, 0, 0);
    CHECK(memcmp(&before, &rng, sizeof rng) == 0);

    /* Training: about p zeroed, survivors scaled by exactly 1 / (1 - p). */
    kd_ctx train = {1, &rng, NULL, 0, 0, 0};
    kd_rng_seed(&rng, 5);
    const float *y = kd_model_forward(&m, x, 2, &train);
    size_t zeros = 0, bad_scale = 0;
    for (size_t i = 0; i < 2 * N; i++) {
        if (y[i] == 0.0f) zeros++;
        else if (y[i] != x[i] * (1.0f / 0.7f)) bad_scale++;
    }
    /* 8000 Bernoulli(0.3): sd ~ 41, so +-200 is ~5 sd. */
    CHECK(zeros > 2400 - 200 && zeros < 2400 + 200);
    CHECK_EQ_INT(bad_scale, 0);
    memcpy(first, y, 2 * N * sizeof *y);

    /* Backward uses the same mask: dx = dy * mask. */
    float *dy = malloc(2 * N * sizeof *dy), *dx = malloc(2 * N * sizeof *dx);
    for (size_t i = 0; i < 2 * N; i++) dy[i] = 1.0f;
    m.layers[0].ops->backward(&m.layers[0], x, y, dy, dx, 2, &train);
    size_t mismatched = 0;
    for (size_t i = 0; i < 2 * N; i++) mismatched += (dx[i] == 0.0f) != (first[i] == 0.0f);
    CHECK_EQ_INT(mismatched, 0);

    /* Same seed, same mask; another seed, another mask. */
    kd_rng_seed(&rng, 5);
    y = kd_model_forward(&m, x, 2, &train);
    CHECK(memcmp(y, first, 2 * N * sizeof *y) == 0);
    kd_rng_seed(&rng, 6);
    y = kd_model_forward(&m, x, 2, &train);
    CHECK(memcmp(y, first, 2 * N * sizeof *y) != 0);
    /* The next forward of the same run draws a new mask too (a new key from the RNG). */
    kd_rng_seed(&rng, 5);
    (void)kd_model_forward(&m, x, 2, &train);
    y = kd_model_forward(&m, x, 2, &train);
    CHECK(memcmp(y, first, 2 * N * sizeof *y) != 0);

    /* Neighbours are independent: the two elements of each 64-bit word (and each element and
     * the next word's) are both dropped about p^2 = 9% of the time, over 20 masks of 8000. */
    size_t pairs = 0, both_word = 0, both_next = 0;
    kd_rng_seed(&rng, 7);
    for (int rep = 0; rep < 20; rep++) {
        y = kd_model_forward(&m, x, 2, &train);
        for (size_t i = 0; i + 2 < 2 * N; i += 2) {
            pairs++;
            both_word += y[i] == 0.0f && y[i + 1] == 0.0f;
            both_next += y[i + 1] == 0.0f && y[i + 2] == 0.0f;
        }
    }
    /* 79,980 pairs, Bernoulli(0.09): sd ~ 81, so +-400 is ~5 sd. */
    CHECK(both_word > 7198 - 400 && both_word < 7198 + 400);
    CHECK(both_next > 7198 - 400 && both_next < 7198 + 400);
    free(dy);
    free(dx);
    free(x);
    free(first);
    kd_model_free(&m);
}

KD_TEST(layers_flatten_shapes) {
    const kd_shape in = {3, {2, 3, 4}};
    kd_model m;
    if (!build(&m, &in, "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":5}]", 1)) return;
    CHECK_EQ_INT(m.layers[0].out.rank, 1);
    CHECK_EQ_INT(m.layers[0].out.d[0], 24);
    kd_tensor *w = kd_model_tensor(&m, "1.weight");
    CHECK(w && w->shape.d[0] == 5 && w->shape.d[1] == 24);
    kd_model_free(&m);
}

/* ---- relu6 and hardswish (torch.nn.ReLU6, torch.nn.Hardswish) ---- */

/* Central differences in double over inputs spanning every kink (-8 .. 8; relu6's at 0 and 6,
 * hardswish's at -3 and 3), points within h of a kink skipped; and the values and gradients at
 * the kinks themselves, where torch picks: relu6 passes nothing at 0 or 6 (hardtanh_backward's
 * open interval), hardswish takes its middle piece x / 3 + 1/2 at both -3 and 3. */
KD_TEST(layers_relu6_hardswish_values_and_gradients_across_the_kinks) {
    enum { N = 41 };
    const kd_shape in = {1, {N}};
    float x[N], dy[N], dx[N];
    for (int i = 0; i < N; i++) {
        x[i] = -8.0f + 0.4f * (float)i + 0.013f;
        dy[i] = 1.0f;
    }
    static const char *const types[] = {"relu6", "hardswish"};
    static const double kinks[2][2] = {{0, 6}, {-3, 3}};
    for (int t = 0; t < 2; t++) {
        char json[64];
        kd_model m;
        snprintf(json, sizeof json, "[{\"type\":\"%s\"}]", types[t]);
        if (!build(&m, &in, json, 1)) return;
        kd_layer *l = &m.layers[0];
        float y[N], yp[N], ym[N], xs[N];
        const double h = 1e-2;
        l->ops->forward(l, x, y, 1, NULL);
        l->ops->backward(l, x, y, dy, dx, 1, NULL);
        for (int i = 0; i < N; i++) xs[i] = x[i] + (float)h;
        l->ops->forward(l, xs, yp, 1, NULL);
        for (int i = 0; i < N; i++) xs[i] = x[i] - (float)h;
        l->ops->forward(l, xs, ym, 1, NULL);
        int checked = 0;
        for (int i = 0; i < N; i++) {
            const double v = x[i];
            if (fabs(v - kinks[t][0]) < 2 * h || fabs(v - kinks[t][1]) < 2 * h) continue;
            const double want = t == 0 ? (v < 0 ? 0 : v > 6 ? 6 : v)
                                       : v * (v + 3 < 0 ? 0 : v + 3 > 6 ? 6 : v + 3) / 6;
            CHECK_CLOSE(y[i], want, 1e-6, 1e-6);
            CHECK_CLOSE(dx[i], ((double)yp[i] - ym[i]) / (2 * h), 1e-3, 1e-3);
            checked++;
        }
        CHECK(checked > 35);
        kd_model_free(&m);
    }
    /* At the kinks, and a NaN passes through the forward. */
    const kd_shape in6 = {1, {6}};
    const float xk[6] = {0.0f, 6.0f, -3.0f, 3.0f, -1.5f, NAN}, g[6] = {2, 2, 2, 2, 2, 2};
    const float want_y[2][5] = {{0, 6, 0, 3, 0}, {0, 6, 0, 3, -0.375f}};
    const float want_dx[2][5] = {{0, 0, 0, 2, 0}, {1, 2, -1, 3, 0}};
    for (int t = 0; t < 2; t++) {
        char json[64];
        kd_model m;
        float yk[6], dxk[6];
        snprintf(json, sizeof json, "[{\"type\":\"%s\"}]", types[t]);
        if (!build(&m, &in6, json, 1)) return;
        kd_layer *l = &m.layers[0];
        l->ops->forward(l, xk, yk, 1, NULL);
        l->ops->backward(l, xk, yk, g, dxk, 1, NULL);
        if (!CHECK_FLOATS(yk, want_y[t], 5, 0, 0) || !CHECK_FLOATS(dxk, want_dx[t], 5, 0, 0))
            printf("    (type %s)\n", types[t]);
        CHECK(isnan(yk[5]));
        kd_model_free(&m);
    }
}

/* relu6 runs in place (the model lets it write over its input): the same output, and its
 * backward handed the output as x gives the same input gradient. */
KD_TEST(layers_relu6_in_place_matches) {
    enum { N = 37 };
    const kd_shape in = {1, {N}};
    kd_model m;
    if (!build(&m, &in, "[{\"type\":\"relu6\"}]", 2)) return;
    kd_layer *l = &m.layers[0];
    CHECK(l->ops->in_place);
    float x[2 * N], y[2 * N], buf[2 * N], dy[2 * N], dx1[2 * N], dx2[2 * N];
    for (int i = 0; i < 2 * N; i++) {
        x[i] = -7.0f + 0.19f * (float)i;
        dy[i] = 0.5f + 0.01f * (float)i;
    }
    memcpy(buf, x, sizeof x);
    l->ops->forward(l, x, y, 2, NULL);
    l->ops->forward(l, buf, buf, 2, NULL);
    CHECK_FLOATS(buf, y, 2 * N, 0, 0);
    l->ops->backward(l, x, y, dy, dx1, 2, NULL);
    l->ops->backward(l, buf, buf, dy, dx2, 2, NULL);
    CHECK_FLOATS(dx2, dx1, 2 * N, 0, 0);
    kd_model_free(&m);
}

/* Stride-2 convolutions over rows wide enough for the four-at-a-time gather and scatter of
 * im2col and col2im (and their scalar tails): forward against the stride-1 layer with the same
 * weights read at even positions (an independent lowering), gradients by finite differences. */
KD_TEST(layers_conv2d_stride2_wide_rows) {
    static const char *const json[][2] = {
        {"[{\"type\":\"conv2d\",\"channels\":3,\"kernel\":3,\"stride\":2,\"padding\":1}]",
         "[{\"type\":\"conv2d\",\"channels\":3,\"kernel\":3,\"padding\":1}]"},
        {"[{\"type\":\"conv2d\",\"channels\":2,\"kernel\":1,\"stride\":2,\"bias\":false}]",
         "[{\"type\":\"conv2d\",\"channels\":2,\"kernel\":1,\"bias\":false}]"},
    };
    enum { B = 2, C = 2, H = 6, W = 23 };
    const kd_shape in = {3, {C, H, W}};
    for (size_t t = 0; t < 2; t++) {
        CHECK_EQ_INT(kd_gradcheck(&in, json[t][0], B, 40 + t, 1, 1e-2), 0);
        kd_model m[2];
        kd_err err;
        memset(m, 0, sizeof m);
        int bad = 0;
        for (int s = 0; s < 2; s++)
            bad = bad || kd_model_init(&m[s], &in, json[t][s], 0, &err) ||
                  kd_model_reserve(&m[s], B, &err);
        CHECK(!bad);
        if (!bad) {
            kd_rng rng;
            kd_rng_seed(&rng, 7);
            kd_model_init_weights(&m[0], &rng, KD_INIT_HE);
            memcpy(m[1].params, m[0].params, m[0].n_params * sizeof *m[0].params);
            float x[B * C * H * W];
            for (size_t i = 0; i < B * C * H * W; i++) x[i] = kd_rng_normal(&rng);
            kd_ctx ctx = {0, &rng, NULL, 0, 0, 0};
            const float *y2 = kd_model_forward(&m[0], x, B, &ctx);
            const float *y1 = kd_model_forward(&m[1], x, B, &ctx);
            const kd_shape o2 = m[0].layers[0].out, o1 = m[1].layers[0].out;
            double worst = 0;
            for (size_t b = 0; b < B; b++)
                for (size_t o = 0; o < o2.d[0]; o++)
                    for (size_t h = 0; h < o2.d[1]; h++)
                        for (size_t w = 0; w < o2.d[2]; w++) {
                            const float a = y2[((b * o2.d[0] + o) * o2.d[1] + h) * o2.d[2] + w];
                            const float e = y1[((b * o1.d[0] + o) * o1.d[1] + 2 * h) * o1.d[2] +
                                               2 * w];
                            worst = fmax(worst, fabs((double)a - e));
                        }
            CHECK(o2.d[2] == (W + 1) / 2 && worst < 1e-5);
        }
        kd_model_free(&m[0]);
        kd_model_free(&m[1]);
    }
}
