/* test_winograd.c - inference's 3x3 convolution by Winograd's F(2x2, 3x3) (src/nn/winograd.c,
 * run by conv2d.c) against a double-precision loop written here, on shapes that reach its
 * edges: odd and even planes (a last tile half outside), a one-row and a one-column plane,
 * paddings 0 to 2, channel counts past one block of the products' sums (192), with and without
 * a bias, batches of several groups of samples (one set of products per group, the last group
 * smaller), through the own product and through sgemm, the transforms' AVX-512 and AVX2 code
 * giving the same bits as their portable loops; then the bits: the same on the team (two
 * threads) as on one, and the same for a sample alone as inside a batch (test_conv_gemm.c:
 * training never takes the path). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/test_hooks.h"
#include "../src/nn/layer_impl.h"
#include "kd_nn.h"
#include "kd_rng.h"
#include "kd_test.h"
#include "kd_threads.h"

typedef struct {
    size_t C, H, W, O, P;
    int bias;
    size_t B;
} wg_case;

static int cpu_has_own_product(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static kd_status build(kd_model *m, const wg_case *c, kd_err *err) {
    char json[192];
    snprintf(json, sizeof json,
             "[{\"type\":\"conv2d\",\"channels\":%zu,\"kernel\":3,\"padding\":%zu,\"bias\":%s}]",
             c->O, c->P, c->bias ? "true" : "false");
    const kd_shape in = {3, {c->C, c->H, c->W}};
    memset(m, 0, sizeof *m);
    kd_status st = kd_model_init(m, &in, json, 0, err);
    if (!st) st = kd_model_reserve(m, c->B, err);
    return st;
}

/* Worst |y - reference| over the sum of the terms' magnitudes, over every output. */
static double worst_error(const wg_case *c, const float *x, const float *w, const float *bias,
                          const float *y) {
    const size_t OH = c->H + 2 * c->P - 2, OW = c->W + 2 * c->P - 2;
    double worst = 0.0;
    for (size_t b = 0; b < c->B; b++)
        for (size_t o = 0; o < c->O; o++)
            for (size_t oh = 0; oh < OH; oh++)
                for (size_t ow = 0; ow < OW; ow++) {
                    double s = bias ? bias[o] : 0.0, a = bias ? fabs(bias[o]) : 0.0;
                    for (size_t ci = 0; ci < c->C; ci++)
                        for (size_t i = 0; i < 3; i++)
                            for (size_t j = 0; j < 3; j++) {
                                const long ih = (long)(oh + i) - (long)c->P;
                                const long iw = (long)(ow + j) - (long)c->P;
                                if (ih < 0 || iw < 0 || ih >= (long)c->H || iw >= (long)c->W)
                                    continue;
                                const double t = (double)w[((o * c->C + ci) * 3 + i) * 3 + j] *
                                                 x[((b * c->C + ci) * c->H + ih) * c->W + iw];
                                s += t;
                                a += fabs(t);
                            }
                    const double got = y[((b * c->O + o) * OH + oh) * OW + ow];
                    const double e = fabs(got - s) / (a + 1e-30);
                    if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
                }
    return worst;
}

/* Each output within 2^-19 of its terms' magnitudes: F(2x2, 3x3)'s transforms add up to 9
 * values of an input patch and halve sums of filter taps, so an output carries a few more
 * roundings than the direct sum (which conv_gemm's test holds to 2^-20). A wrong transform
 * coefficient or a missed tile is off by about the terms themselves. */
#define WG_BOUND 0x1p-19

static void check_case(const wg_case *c, uint64_t seed) {
    kd_model m;
    kd_err err;
    if (build(&m, c, &err)) {
        kd_test_fail(__FILE__, __LINE__, "C %zu H %zu W %zu O %zu P %zu: %s", c->C, c->H, c->W,
                     c->O, c->P, err.msg);
        kd_model_free(&m);
        return;
    }
    const size_t nx = c->B * c->C * c->H * c->W, ny = c->B * m.n_classes;
    kd_rng r;
    kd_rng_seed(&r, seed);
    for (size_t i = 0; i < m.n_params; i++) m.params[i] = kd_rng_normal(&r);
    float *x = malloc(nx * sizeof *x), *ref = malloc(ny * sizeof *ref), *y = malloc(ny * sizeof *y);
    if (!x || !ref || !y) {
        kd_test_fail(__FILE__, __LINE__, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nx; i++) x[i] = kd_rng_normal(&r);
    const float *w = m.layers[0].t[0], *bias = c->bias ? m.layers[0].t[1] : NULL;
    kd_conv_winograd = 0;
    memcpy(ref, kd_model_forward(&m, x, c->B, NULL), ny * sizeof *ref);
    for (int own = cpu_has_own_product() ? 1 : 0; own >= 0; own--) {
        /* first another input by im2col, so that an output the path misses is left wrong */
        kd_conv_winograd = 0;
        for (size_t i = 0; i < nx; i++) x[i] = -x[i];
        kd_model_forward(&m, x, c->B, NULL);
        for (size_t i = 0; i < nx; i++) x[i] = -x[i];
        kd_conv_winograd = 1;
        kd_conv_gemm_own = own;
        memcpy(y, kd_model_forward(&m, x, c->B, NULL), ny * sizeof *y);
        const double e = worst_error(c, x, w, bias, y);
        if (!(e <= WG_BOUND))
            kd_test_fail(__FILE__, __LINE__, "C %zu H %zu W %zu O %zu P %zu own %d: error %.3g "
                         "of the terms' magnitudes (bound %.3g)", c->C, c->H, c->W, c->O, c->P,
                         own, e, WG_BOUND);
        CHECK(memcmp(y, ref, ny * sizeof *y) != 0); /* the path ran: other roundings */
        /* the transforms' portable loops and AVX2 ones: the same operations, the same bits as
         * the widest's */
        for (int h = 1; h <= 2; h++) {
            kd_winograd_portable = h;
            CHECK(memcmp(kd_model_forward(&m, x, c->B, NULL), y, ny * sizeof *y) == 0);
        }
        kd_winograd_portable = 0;
    }
done:
    kd_conv_winograd = -1;
    kd_conv_gemm_own = -1;
    free(x), free(ref), free(y);
    kd_model_free(&m);
}

KD_TEST(winograd_conv_matches_a_double_reference) {
    static const wg_case cases[] = {
        /* C, H, W, O, P, bias, B */
        {8, 28, 28, 16, 1, 1, 2},  /* the small ResNet's first stage */
        {16, 14, 14, 32, 1, 0, 3},
        {200, 7, 7, 5, 1, 1, 2},   /* sums over two blocks of 192 channels; a half-outside tile */
        {3, 6, 5, 4, 1, 1, 2},     /* odd width */
        {5, 9, 4, 3, 2, 0, 2},     /* padding 2 */
        {3, 33, 17, 9, 0, 1, 1},   /* no padding, odd both ways */
        {4, 3, 3, 6, 1, 1, 2},     /* one tile row and a half */
        {2, 4, 1, 3, 1, 1, 2},     /* a one-column plane */
        {6, 1, 9, 2, 1, 0, 2},     /* a one-row plane */
        {1, 5, 7, 2, 0, 1, 3},
        {3, 40, 37, 4, 1, 1, 1},   /* 19 tiles a row: two whole 8-tile blocks, a tail of 3 */
        {2, 31, 30, 3, 0, 0, 1},   /* 29 x 28 outputs: a half-outside last tile row */
        {6, 7, 7, 10, 1, 1, 11},   /* 16 tiles: groups of 8 samples, the last of 3 */
        {8, 10, 10, 9, 1, 0, 7},   /* 25 tiles: groups of 6, the last of 1 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i], 40 + i);
}

KD_TEST(winograd_conv_bits_depend_on_neither_threads_nor_batch) {
    /* Large enough for one sample's products to go to the team (kd_model_forward, conv2d.c). */
    const wg_case c = {32, 32, 32, 32, 1, 1, 3};
    kd_model m;
    kd_err err;
    const int threads0 = kd_threads_get();
    if (build(&m, &c, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        kd_model_free(&m);
        return;
    }
    const size_t D = c.C * c.H * c.W, n = m.n_classes;
    kd_rng r;
    kd_rng_seed(&r, 9);
    for (size_t i = 0; i < m.n_params; i++) m.params[i] = kd_rng_normal(&r);
    float *x = malloc(c.B * D * sizeof *x), *ref = malloc(c.B * n * sizeof *ref),
          *y = malloc(c.B * n * sizeof *y);
    if (!x || !ref || !y) {
        kd_test_fail(__FILE__, __LINE__, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < c.B * D; i++) x[i] = kd_rng_normal(&r);
    kd_conv_winograd = 1;
    kd_threads_set(1);
    memcpy(ref, kd_model_forward(&m, x, c.B, NULL), c.B * n * sizeof *ref);
    kd_threads_set(2);
    CHECK(memcmp(kd_model_forward(&m, x, c.B, NULL), ref, c.B * n * sizeof *ref) == 0);
    for (size_t b = 0; b < c.B; b++) { /* alone, on the team's stages */
        CHECK(memcmp(kd_model_forward(&m, x + b * D, 1, NULL), ref + b * n, n * sizeof *ref) == 0);
    }
    kd_threads_set(1);
    CHECK(memcmp(kd_model_forward(&m, x + D, 1, NULL), ref + n, n * sizeof *ref) == 0);
    /* the release rule: a batch of 3 is below its minimum, so im2col runs (other bits) */
    kd_conv_winograd = -1;
    CHECK(memcmp(kd_model_forward(&m, x, c.B, NULL), ref, c.B * n * sizeof *ref) != 0);
done:
    kd_conv_winograd = -1;
    kd_threads_set(threads0);
    free(x), free(ref), free(y);
    kd_model_free(&m);
}
