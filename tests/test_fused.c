/* test_fused.c - the fused batchnorm -> maxpool2d 2x2 -> relu group that kd_model_forward /
 * kd_model_backward run as one pass: the same logits, running statistics and pooling indices,
 * bit for bit, as the three layers' own forward called one after another, and the same
 * gradients (to rounding: the sums are taken in another order) as their own backward; which
 * layer runs are fused; and what the group keeps in place of batch norm's output. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/test_hooks.h"
#include "../src/nn/fused.h"
#include "kd_rng.h"
#include "kd_test.h"

typedef struct {
    kd_shape in;
    const char *json;
    size_t group[2];  /* indices of the fused groups' batch norms; SIZE_MAX: none */
} fuse_case;

/* Same weights in both models: each layer's init from the same seed, then batch norm's weight
 * and bias set to values of both signs (a negative weight turns the window's maximum into the
 * input's minimum, which the fused pass must get right) and non-default running statistics. */
static void init_twins(kd_model *a, kd_model *b, uint64_t seed) {
    kd_rng r;
    kd_rng_seed(&r, seed);
    kd_model_init_weights(a, &r, KD_INIT_HE);
    for (size_t t = 0; t < a->n_tensors; t++) {
        kd_tensor *tt = &a->tensors[t];
        if (tt->kind == KD_TENSOR_COUNTER) continue;
        if (strstr(tt->name, ".bias") || strstr(tt->name, "running_mean"))
            for (size_t i = 0; i < tt->numel; i++) tt->data[i] = kd_rng_uniform(&r) - 0.5f;
        if (strstr(tt->name, ".weight") && tt->shape.rank == 1)
            for (size_t i = 0; i < tt->numel; i++) tt->data[i] = 2.0f * kd_rng_uniform(&r) - 1.0f;
        if (strstr(tt->name, "running_var"))
            for (size_t i = 0; i < tt->numel; i++) tt->data[i] = 0.5f + kd_rng_uniform(&r);
    }
    memcpy(b->params, a->params, a->n_params * sizeof *a->params);
    memcpy(b->buffers, a->buffers, a->n_buffers * sizeof *a->buffers);
}

/* Inputs on a coarse grid (many ties inside pooling windows), around a mean of 2. */
static void fill_ties(kd_rng *r, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = 2.0f + 0.25f * floorf(8.0f * kd_rng_uniform(r));
}

static int is_group(const fuse_case *c, size_t i) { return i == c->group[0] || i == c->group[1]; }

static void check_case(const fuse_case *c, size_t B, int training, uint64_t seed) {
    kd_model f, u;
    kd_err err;
    memset(&f, 0, sizeof f);
    memset(&u, 0, sizeof u);
    CHECK_EQ_INT(kd_model_init(&f, &c->in, c->json, 1, &err), KD_OK);
    CHECK_EQ_INT(kd_model_init(&u, &c->in, c->json, 1, &err), KD_OK);
    CHECK_EQ_INT(kd_model_reserve(&f, B, &err), KD_OK);
    CHECK_EQ_INT(kd_model_reserve(&u, B, &err), KD_OK);
    if (kd_test_failed_now()) goto cleanup;
    init_twins(&f, &u, seed);
    const size_t L = f.n_layers;
    for (size_t i = 0; i < L; i++) {
        /* a batch norm with the relu after it (in place over its output): their own unit */
        const int bn_relu = f.layers[i].ops == &kd_layer_batchnorm && i + 1 < L &&
                            (f.layers[i + 1].ops == &kd_layer_relu ||
                             f.layers[i + 1].ops == &kd_layer_relu6);
        const size_t want = is_group(c, i)                                          ? 3
                            : is_group(c, i + 1) && f.layers[i].ops == &kd_layer_conv2d ? 4
                            : bn_relu                                                   ? 2
                                                                                        : 1;
        if (kd_model_unit_size(&f, i) != want)
            kd_test_fail(__FILE__, __LINE__, "%s: layer %zu runs as a unit of %zu, expected %zu",
                         c->json, i, kd_model_unit_size(&f, i), want);
    }

    const size_t D = kd_shape_numel(&c->in);
    float *x = malloc(B * D * sizeof *x), *dy = malloc(B * f.n_classes * sizeof *dy);
    float **outs = calloc(L, sizeof *outs), **dxs = calloc(L, sizeof *dxs);
    kd_rng r;
    kd_rng_seed(&r, seed + 1);
    fill_ties(&r, x, B * D);
    for (size_t i = 0; i < B * f.n_classes; i++) dy[i] = kd_rng_uniform(&r) - 0.5f;
    for (size_t i = 0; i < L; i++) {
        outs[i] = malloc(B * kd_shape_numel(&u.layers[i].out) * sizeof **outs);
        dxs[i] = malloc(B * kd_shape_numel(&u.layers[i].in) * sizeof **dxs);
    }

    /* Fused, through the model. */
    kd_ctx ctx = {training, NULL, NULL, 0, 0, 0};
    const float *z = kd_model_forward(&f, x, B, &ctx);
    kd_model_zero_grad(&f);
    if (training) kd_model_backward(&f, x, dy, B, &ctx);

    /* Layer by layer, each layer's own forward and backward. */
    kd_ctx uctx = {training, NULL, u.workspace, 0, 0, 0};
    const float *in = x;
    for (size_t i = 0; i < L; i++) {
        u.layers[i].ops->forward(&u.layers[i], in, outs[i], B, &uctx);
        in = outs[i];
    }
    CHECK(memcmp(z, outs[L - 1], B * f.n_classes * sizeof *z) == 0);
    CHECK(memcmp(f.buffers, u.buffers, f.n_buffers * sizeof *f.buffers) == 0);
    /* The pool's indices as the pool computes them; batch norm's output is never stored, its
     * slot holds each window's winning input instead (the sums of backward read those). An
     * evaluation writes neither (nothing reads them without a backward). */
    for (size_t i = 0; i < L; i++) {
        if (!is_group(c, i) || !training) continue;
        const kd_layer *pool = &f.layers[i + 1];
        const size_t OHW = pool->out.d[1] * pool->out.d[2], HW = pool->in.d[1] * pool->in.d[2];
        const uint32_t *arg = (const uint32_t *)pool->cache;
        CHECK(memcmp(arg, u.layers[i + 1].cache, B * pool->out.d[0] * OHW * sizeof *arg) == 0);
        const float *bn_in = i ? outs[i - 1] : x;
        size_t wrong = 0;
        for (size_t o = 0; o < B * pool->out.d[0] * OHW; o++)
            wrong += f.acts[i][o] != bn_in[o / OHW * HW + arg[o]];
        CHECK_EQ_INT(wrong, 0);
    }
    if (training) {
        kd_model_zero_grad(&u);
        const float *g = dy;
        for (size_t i = L; i-- > 0;) {
            u.layers[i].ops->backward(&u.layers[i], i ? outs[i - 1] : x, outs[i], g, dxs[i], B,
                                      &uctx);
            g = dxs[i];
        }
        if (!CHECK_FLOATS(f.grads, u.grads, f.n_params, 1e-6, 1e-5))
            kd_test_fail(__FILE__, __LINE__, "gradients of %s differ from the layers' own", c->json);
    }

    for (size_t i = 0; i < L; i++) {
        free(outs[i]);
        free(dxs[i]);
    }
    free(outs);
    free(dxs);
    free(x);
    free(dy);
cleanup:
    kd_model_free(&f);
    kd_model_free(&u);
}

#define BN_POOL_RELU "{\"type\":\"batchnorm\"},{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"relu\"}"

/* Rows of 6 windows (vector path and its overlapping last vector) after a convolution, whose
 * weight gradient checks the group's input gradient (made per sample inside the convolution's
 * backward); rows of 3 windows (scalar path) as the first layers (no input gradient: batch norm
 * is the first trainable layer); two groups, the second convolution's input gradient made
 * from the group after it; a group after tanh (its own input gradient, written whole);
 * training and evaluation. */
KD_TEST(fused_bn_pool_relu_matches_the_layers_one_by_one) {
    const fuse_case cases[] = {
        {{3, {2, 8, 12}},
         "[{\"type\":\"conv2d\",\"channels\":3,\"kernel\":3,\"padding\":1}," BN_POOL_RELU
         ",{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":4}]",
         {1, SIZE_MAX}},
        {{3, {3, 6, 6}}, "[" BN_POOL_RELU ",{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]",
         {0, SIZE_MAX}},
        {{3, {2, 8, 8}},
         "[{\"type\":\"conv2d\",\"channels\":4,\"kernel\":3,\"padding\":1,\"bias\":false},"
         BN_POOL_RELU ",{\"type\":\"conv2d\",\"channels\":2,\"kernel\":3,\"padding\":1}," BN_POOL_RELU
         ",{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]",
         {1, 5}},
        {{3, {2, 8, 8}},
         "[{\"type\":\"conv2d\",\"channels\":3,\"kernel\":3,\"padding\":1},{\"type\":\"tanh\"},"
         BN_POOL_RELU ",{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]",
         {2, SIZE_MAX}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        check_case(&cases[k], 5, 1, 10 + k);
        check_case(&cases[k], 5, 0, 20 + k);
        check_case(&cases[k], 1, 1, 30 + k);
    }
}

/* Runs that look alike but are not the group stay out of it: an odd plane (the 2x2 pool
 * drops a row), another order, a 1-d batch norm, a pool with stride 1. A batch norm and the relu
 * or relu6 right after it (another order, the 1-d batch norm, the last case) run as their own
 * two-layer unit, compared with the layers one by one here too. */
KD_TEST(fused_group_only_for_its_exact_pattern) {
    const fuse_case cases[] = {
        {{3, {2, 7, 8}}, "[" BN_POOL_RELU ",{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]",
         {SIZE_MAX, SIZE_MAX}},
        {{3, {2, 8, 8}},
         "[{\"type\":\"batchnorm\"},{\"type\":\"relu\"},{\"type\":\"maxpool2d\",\"kernel\":2},"
         "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]",
         {SIZE_MAX, SIZE_MAX}},
        {{3, {2, 8, 8}},
         "[{\"type\":\"batchnorm\"},{\"type\":\"maxpool2d\",\"kernel\":2,\"stride\":1},"
         "{\"type\":\"relu\"},{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]",
         {SIZE_MAX, SIZE_MAX}},
        {{1, {8}}, "[{\"type\":\"batchnorm\"},{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":3}]",
         {SIZE_MAX, SIZE_MAX}},
        /* relu6 (its kink at 0; batch norm outputs of scale up to 1 stay below 6) */
        {{3, {2, 8, 8}},
         "[{\"type\":\"batchnorm\"},{\"type\":\"relu6\"},{\"type\":\"flatten\"},"
         "{\"type\":\"dense\",\"units\":3}]",
         {SIZE_MAX, SIZE_MAX}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) check_case(&cases[k], 4, 1, 40 + k);
}

/* An inference-only model (chunked, two alternating buffers) runs the group fused too and
 * gives the training model's evaluation logits. */
KD_TEST(fused_group_in_an_inference_model_matches_evaluation) {
    const kd_shape in = {3, {2, 8, 12}};
    const char *json = "[{\"type\":\"conv2d\",\"channels\":3,\"kernel\":3,\"padding\":1},"
                       BN_POOL_RELU ",{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":4}]";
    kd_model t, inf;
    kd_err err;
    memset(&t, 0, sizeof t);
    memset(&inf, 0, sizeof inf);
    CHECK_EQ_INT(kd_model_init(&t, &in, json, 1, &err), KD_OK);
    CHECK_EQ_INT(kd_model_init(&inf, &in, json, 0, &err), KD_OK);
    CHECK_EQ_INT(kd_model_reserve(&t, 6, &err), KD_OK);
    CHECK_EQ_INT(kd_model_reserve(&inf, 6, &err), KD_OK);
    if (!kd_test_failed_now()) {
        init_twins(&t, &inf, 7);
        CHECK_EQ_INT(kd_model_unit_size(&inf, 1), 3);
        float x[6 * 2 * 8 * 12];
        kd_rng r;
        kd_rng_seed(&r, 8);
        fill_ties(&r, x, sizeof x / sizeof x[0]);
        float want[6 * 4];
        memcpy(want, kd_model_forward(&t, x, 6, NULL), sizeof want);
        CHECK(memcmp(kd_model_forward(&inf, x, 6, NULL), want, sizeof want) == 0);
    }
    kd_model_free(&t);
    kd_model_free(&inf);
}

/* The inference-only conv -> batchnorm (-> relu | relu6) unit: each case's logits equal the
 * training model's evaluation (the layers one by one, in the same chunks) bit for bit, on
 * inputs with zeros and ties, and the units are the ones expected (unit sizes at the listed
 * layers; a batch norm whose output a second layer reads keeps its activation apart, a
 * convolution read twice is not fused). */
#define CHECK_MSG(cond, ...)                                                               \
    do {                                                                                   \
        if (!(cond)) kd_test_fail(__FILE__, __LINE__, __VA_ARGS__);                        \
    } while (0)

typedef struct {
    kd_shape in;
    const char *json;
    size_t at[3], size[3];  /* layer index and expected unit size there (size 0: end) */
} conv_bn_case;

KD_TEST(fused_conv_bn_act_in_an_inference_model_matches_evaluation) {
#define CV(extra) "{\"type\":\"conv2d\",\"channels\":4,\"kernel\":3,\"padding\":1" extra "}"
#define BN "{\"type\":\"batchnorm\"}"
#define TAIL ",{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]"
    static const conv_bn_case cases[] = {
        {{3, {2, 7, 9}}, "[" CV("") "," BN ",{\"type\":\"relu6\"}" TAIL, {0, 3}, {3, 1}},
        {{3, {2, 7, 9}}, "[" CV(",\"stride\":2") "," BN ",{\"type\":\"relu\"}" TAIL, {0}, {3}},
        {{3, {2, 6, 6}}, "[" CV("") "," BN TAIL, {0, 2}, {2, 1}},
        /* 5 x 5: a last panel of one column (the own product's column kernel) */
        {{3, {2, 5, 5}}, "[" CV("") "," BN ",{\"type\":\"relu\"}" TAIL, {0, 3}, {3, 1}},
        /* depthwise (its own kernels hand samples on too), then a 1x1 projection and its
         * batch norm without an activation, the last before flatten */
        {{3, {4, 8, 8}}, "[" CV(",\"groups\":4") "," BN ",{\"type\":\"relu6\"},"
                         "{\"type\":\"conv2d\",\"channels\":5,\"kernel\":1}," BN TAIL,
         {0, 3}, {3, 2}},
        /* the batch norm's output read by relu6 and by an add: no activation in the unit */
        {{3, {4, 5, 5}}, "[" CV("") ",{\"type\":\"batchnorm\",\"name\":\"b\"},{\"type\":\"relu6\"},"
                         "{\"type\":\"add\",\"from\":[\"b\",2]}" TAIL, {0, 2}, {2, 1}},
        /* the convolution's output read twice: nothing fused */
        {{3, {4, 5, 5}}, "[{\"type\":\"conv2d\",\"channels\":4,\"kernel\":3,\"padding\":1,"
                         "\"name\":\"c\"}," BN ",{\"type\":\"add\",\"from\":[\"c\",1]}" TAIL,
         {0, 1}, {1, 1}},
    };
#undef CV
#undef BN
#undef TAIL
    /* every case through the own product (which applies batch norm and the activation as it
     * stores) and through sgemm (which hands samples to batch norm's pass) */
    for (size_t run = 0; run < 2 * (sizeof cases / sizeof cases[0]); run++) {
        const size_t ci = run / 2;
        const conv_bn_case *c = &cases[ci];
        kd_conv_gemm_own = run % 2 ? 0 : 1;
        kd_model t, inf;
        kd_err err;
        memset(&t, 0, sizeof t);
        memset(&inf, 0, sizeof inf);
        const size_t B = 5, D = kd_shape_numel(&c->in);
        if (kd_model_init(&t, &c->in, c->json, 1, &err) != KD_OK ||
            kd_model_init(&inf, &c->in, c->json, 0, &err) != KD_OK ||
            kd_model_reserve(&t, B, &err) != KD_OK || kd_model_reserve(&inf, B, &err) != KD_OK) {
            CHECK_MSG(0, "case %zu: %s", ci, err.msg);
            kd_model_free(&t);
            kd_model_free(&inf);
            continue;
        }
        init_twins(&t, &inf, 20 + ci);
        for (size_t k = 0; k < 3 && c->size[k]; k++)
            CHECK_MSG(kd_model_unit_size(&inf, c->at[k]) == c->size[k],
                      "case %zu: unit size %zu at layer %zu, expected %zu", ci,
                      kd_model_unit_size(&inf, c->at[k]), c->at[k], c->size[k]);
        float *x = malloc(B * D * sizeof *x), want[5 * 3];
        kd_rng r;
        kd_rng_seed(&r, 30 + ci);
        fill_ties(&r, x, B * D);
        /* The evaluation in the inference model's chunks, which it runs in turn with its
         * replicas off: a product's bits may depend on its row count (OpenBLAS's small-matrix
         * kernels for AVX-512 do), so each product has the same rows on both sides. */
        for (size_t b0 = 0; b0 < B; b0 += inf.chunk) {
            const size_t nb = B - b0 < inf.chunk ? B - b0 : inf.chunk;
            memcpy(want + b0 * 3, kd_model_forward(&t, x + b0 * D, nb, NULL),
                   nb * 3 * sizeof *want);
        }
        kd_bn_fold = 0;
        kd_infer_replicas = 0;
        CHECK_MSG(memcmp(kd_model_forward(&inf, x, B, NULL), want, sizeof want) == 0,
                  "case %zu (own product %d): inference logits differ from evaluation", ci,
                  kd_conv_gemm_own);
        kd_infer_replicas = 1;
        /* batch norm folded into the convolution (a batch of 4 or more): the same logits to
         * rounding, the activation applied as the convolution stores */
        kd_bn_fold = 1;
        const float *got = kd_model_forward(&inf, x, B, NULL);
        CHECK_FLOATS(got, want, B * 3, 1e-5, 1e-5);
        if (c->size[0] >= 2) /* a folded unit ran: other roundings */
            CHECK_MSG(memcmp(got, want, sizeof want) != 0, "case %zu: folding changed no bit", ci);
        kd_bn_fold = -1;
        free(x);
        kd_model_free(&t);
        kd_model_free(&inf);
    }
    kd_conv_gemm_own = -1;
}

/* Inference's batchnorm -> maxpool 2x2 -> relu plane 8 windows at a time (pool_affine.c:
 * the window's largest or smallest input mapped once) gives the general path's bits (every
 * input mapped, 4 windows at a time): rows of 4 to 23 windows (an overlapping last vector),
 * k above and below 0, ties, signed zeros, infinities and NaNs among the inputs. */
KD_TEST(fused_pool_eight_windows_match_the_general_path) {
    static const size_t widths[] = {4, 7, 8, 9, 14, 16, 23};
    static const float ks[] = {0.75f, -1.5f, 3e-3f, -2e4f};
    enum { OH = 5, MAXW = 23 };
    static float x[2 * OH * 2 * MAXW], y0[OH * MAXW], y1[OH * MAXW];
    kd_rng rng;
    kd_rng_seed(&rng, 99);
    int ran = 0;
    for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++)
        for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
            const size_t OW = widths[wi], n = 4 * OH * OW;
            for (size_t i = 0; i < n; i++) {
                const uint64_t r = kd_rng_below(&rng, 16);
                x[i] = r == 0 ? -0.0f : r == 1 ? 0.0f : r == 2 ? NAN : r == 3 ? INFINITY
                     : r == 4 ? -INFINITY : r == 5 && i ? x[i - 1] : kd_rng_normal(&rng);
            }
            const float k = ks[ki], mu = 0.25f, beta = ki % 2 ? -0.0f : 0.5f;
            kd_pool_affine_fast = 0;
            kd_maxpool2x2_affine_relu_plane(x, y0, NULL, NULL, OH, OW, k, mu, beta);
            kd_pool_affine_fast = 1;
            memset(y1, 0x5a, sizeof y1);
            kd_maxpool2x2_affine_relu_plane(x, y1, NULL, NULL, OH, OW, k, mu, beta);
            ran += kd_maxpool2x2_affine_relu_fast(x, y1, OH, OW, k, mu, beta);
            if (memcmp(y0, y1, OH * OW * sizeof *y0) != 0)
                kd_test_fail(__FILE__, __LINE__, "OW %zu k %g: other bits than the general path",
                             OW, (double)k);
        }
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) CHECK_EQ_INT(ran, 28);
#endif
    (void)ran;
}
