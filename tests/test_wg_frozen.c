/* test_wg_frozen.c - a frozen model's one-sample 3x3 convolution by Winograd's F(2x2, 3x3)
 * (src/nn/wg_frozen.c: weights transformed once, chunks of tile rows, products of 8 output
 * channels by 48, 32 or 16 tiles) against a double-precision loop (tests/conv_reference.c):
 * planes whose last tile column and row are half outside (odd widths and heights), rows of
 * tiles longer than a vector, chunks of one tile row and of several, the last chunk shorter,
 * tile counts that end inside a vector (the zeroed tail), padding 0 to 2, 8 to 64 output
 * channels; scale, shift, a residual and both activations. Parts (tile rows, blocks of output
 * channels) give the bits of the whole call. Then the release rule, and in a model: the banded
 * forward of a residual network runs it (test_conv_packed.c checks its logits). AVX-512 CPUs
 * only (elsewhere the shape test says no: checked). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/test_hooks.h"
#include "../src/nn/fused.h"
#include "../src/nn/wg_frozen.h"
#include "conv_reference.h"
#include "kd_common.h"
#include "kd_rng.h"
#include "kd_test.h"

/* As test_winograd.c: within 2^-19 of the terms' magnitudes (times |scale|), a few roundings
 * more than the direct sum; a wrong coefficient or a missed tile is off by the terms. */
#define WGF_BOUND 0x1p-19

static void check_shape(size_t C, size_t H, size_t W, size_t O, size_t P, int act, int with_res) {
    const kd_cd_dims d = {C, H, W, O, H + 2 * P - 2, W + 2 * P - 2, 3, 3, P, 1};
    const size_t ny = O * d.OH * d.OW, nx = C * H * W, nw = O * C * 9;
    float *x = malloc(nx * sizeof *x), *w = malloc(nw * sizeof *w), *sc = malloc(2 * O * 4);
    float *u = kd_alloc_floats(kd_wgf_floats(&d)), *ws = kd_alloc_floats(kd_wgf_workspace(&d));
    float *y = malloc(ny * sizeof *y), *y2 = malloc(ny * sizeof *y2), *res = malloc(ny * 4);
    double *ref = malloc(ny * sizeof *ref), *mag = malloc(ny * sizeof *mag);
    if (!x || !w || !sc || !u || !ws || !y || !y2 || !res || !ref || !mag) {
        kd_test_fail(__FILE__, __LINE__, "out of memory");
        goto done;
    }
    kd_rng rng;
    kd_rng_seed(&rng, (uint64_t)(C * 131 + O * 17 + H * 5 + W + P));
    for (size_t i = 0; i < nx; i++) x[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < nw; i++) w[i] = kd_rng_normal(&rng);
    float *scale = sc, *shift = sc + O;
    for (size_t i = 0; i < O; i++)
        scale[i] = 0.5f + kd_rng_uniform(&rng), shift[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < ny; i++) res[i] = kd_rng_normal(&rng);
    kd_wgf_pack(&d, w, u);
    kd_conv_reference(&d, x, w, NULL, ref, mag);
    memset(y, 0xff, ny * sizeof *y); /* NaN: an output the kernel misses shows */
    const kd_cp_out one = {scale, shift, with_res ? res : NULL, act, y};
    kd_cp_out two = one;
    two.y = y2;
    const size_t TR = kd_wgf_tile_rows(&d);
    CHECK_EQ_INT((int)TR, (int)((d.OH + 1) / 2));
    kd_wgf_part(&d, x, u, &one, ws, 0, TR, 0, O);
    size_t first = 0;
    const size_t bad = kd_conv_epilogue_misses(&d, y, ref, mag, scale, shift, one.res, act,
                                               WGF_BOUND, &first);
    if (bad)
        kd_test_fail(__FILE__, __LINE__, "C %zu H %zu W %zu O %zu pad %zu act %d: y[%zu] = "
                     "%.9g, reference (without the epilogue) %.9g", C, H, W, O, P, act, first,
                     y[first], ref[first]);
    CHECK_EQ_INT((int)bad, 0);
    /* parts: tile rows [0, cut) and [cut, TR), the second in two blocks of output channels */
    for (size_t cut = 1; cut < TR; cut += TR / 2 ? TR / 2 : 1) {
        memset(y2, 0xff, ny * sizeof *y2);
        kd_wgf_part(&d, x, u, &two, ws, 0, cut, 0, O);
        kd_wgf_part(&d, x, u, &two, ws, cut, TR, 0, 8);
        kd_wgf_part(&d, x, u, &two, ws, cut, TR, 8, O);
        if (memcmp(y, y2, ny * sizeof *y) != 0)
            kd_test_fail(__FILE__, __LINE__, "C %zu H %zu W %zu O %zu: tile rows [0, %zu) and "
                         "[%zu, %zu) (by blocks) give other bits than the whole sample", C, H, W,
                         O, cut, cut, TR);
    }
done:
    free(x), free(w), free(sc), free(y), free(y2), free(res), free(ref), free(mag);
    kd_free_aligned(u);
    kd_free_aligned(ws);
}

KD_TEST(wg_frozen_matches_a_double_reference) {
    if (!kd_test_cpu_avx512()) {
        const kd_cd_dims d = {16, 28, 28, 16, 28, 28, 3, 3, 1, 1};
        CHECK_EQ_INT(kd_wgf_shape(&d), 0);
        return;
    }
    check_shape(16, 28, 28, 16, 1, KD_ACT_RELU, 1);  /* the small ResNet's: 2 chunks of 8 + 6
                                                      * rows of 14 tiles, 112 and 84 (a tail) */
    check_shape(64, 28, 28, 64, 1, KD_ACT_NONE, 0);  /* ResNet-18's first stage */
    check_shape(32, 14, 14, 128, 1, KD_ACT_RELU, 1); /* 49 tiles: vectors 2 + 2 */
    check_shape(20, 9, 7, 24, 1, KD_ACT_RELU6, 0);   /* odd plane: half tiles; 3 blocks of 8 */
    check_shape(17, 13, 30, 8, 1, KD_ACT_RELU, 1);   /* rows of 15 tiles, chunks of 7 rows */
    check_shape(4, 5, 70, 16, 1, KD_ACT_NONE, 1);    /* a row of 35 tiles: 3 vectors, chunks
                                                      * of 3 rows, 105 tiles: 7 vectors 3 3 1 */
    check_shape(5, 6, 5, 16, 0, KD_ACT_RELU, 0);     /* no padding: 4x3 outputs */
    check_shape(3, 7, 7, 8, 2, KD_ACT_RELU6, 1);     /* padding 2: 9x9 outputs */
    check_shape(9, 1, 1, 8, 1, KD_ACT_NONE, 0);      /* one pixel: one tile, three quarters
                                                      * outside */
}

/* ReLU passes NaN and keeps -0, as kd_act_value: one input channel, the centre tap 1, scale -1
 * and shift -0 make y = act(-x - 0) at a 1x1 plane's one output. */
KD_TEST(wg_frozen_activations_keep_nan_and_signed_zero) {
    if (!kd_test_cpu_avx512()) return;
    const kd_cd_dims d = {1, 1, 1, 8, 1, 1, 3, 3, 1, 1};
    float w[72] = {0}, scale[8], shift[8], y[8];
    for (size_t o = 0; o < 8; o++) w[o * 9 + 4] = 1.0f, scale[o] = -1.0f, shift[o] = -0.0f;
    float *u = kd_alloc_floats(kd_wgf_floats(&d)), *ws = kd_alloc_floats(kd_wgf_workspace(&d));
    if (!u || !ws) {
        kd_test_fail(__FILE__, __LINE__, "out of memory");
    } else {
        kd_wgf_pack(&d, w, u);
        const float xs[4] = {NAN, 0.0f, 2.0f, -7.5f};
        for (int act = KD_ACT_RELU; act <= KD_ACT_RELU6; act++)
            for (size_t k = 0; k < 4; k++) {
                const kd_cp_out out = {scale, shift, NULL, act, y};
                kd_wgf_part(&d, &xs[k], u, &out, ws, 0, 1, 0, 8);
                const float want = k == 3 ? (act == KD_ACT_RELU ? 7.5f : 6.0f) : 0.0f;
                if (k == 0) CHECK(isnan(y[5]));
                else CHECK(y[5] == want && !!signbit(y[5]) == (k == 1));
            }
    }
    kd_free_aligned(u);
    kd_free_aligned(ws);
}

/* The rule: 3x3 at stride 1, output channels in 8s, on AVX-512; by default also 16 input
 * channels or more, planes of 100 positions or more and transformed weights of 2^18 floats or
 * fewer (ResNet-18's 64- and 128-channel stages, not its 256-channel 7x7 one); the hook 0
 * never, 1 wherever the shape allows. */
KD_TEST(wg_frozen_rule_takes_the_stages_where_it_wins) {
    const int avx = kd_test_cpu_avx512();
    const kd_cd_dims r64 = {64, 28, 28, 64, 28, 28, 3, 3, 1, 1};
    const kd_cd_dims r128 = {128, 14, 14, 128, 14, 14, 3, 3, 1, 1};
    const kd_cd_dims r256 = {256, 7, 7, 256, 7, 7, 3, 3, 1, 1};
    const kd_cd_dims thin = {8, 28, 28, 16, 28, 28, 3, 3, 1, 1};
    const kd_cd_dims small = {64, 8, 8, 64, 8, 8, 3, 3, 1, 1};
    const kd_cd_dims s2 = {64, 28, 28, 64, 14, 14, 3, 3, 1, 2};
    const kd_cd_dims k5 = {64, 28, 28, 64, 28, 28, 5, 5, 2, 1};
    const kd_cd_dims o12 = {64, 28, 28, 12, 28, 28, 3, 3, 1, 1};
    CHECK_EQ_INT(kd_wgf_fits(&r64), avx);
    CHECK_EQ_INT(kd_wgf_fits(&r128), avx);
    CHECK_EQ_INT(kd_wgf_fits(&r256), 0);
    CHECK_EQ_INT(kd_wgf_fits(&thin), 0);
    CHECK_EQ_INT(kd_wgf_fits(&small), 0);
    CHECK_EQ_INT(kd_wgf_shape(&s2), 0);
    CHECK_EQ_INT(kd_wgf_shape(&k5), 0);
    CHECK_EQ_INT(kd_wgf_shape(&o12), 0);
    kd_wg_frozen_on = 1;
    CHECK_EQ_INT(kd_wgf_fits(&r256), avx);
    CHECK_EQ_INT(kd_wgf_fits(&small), avx);
    CHECK_EQ_INT(kd_wgf_fits(&s2), 0);
    kd_wg_frozen_on = 0;
    CHECK_EQ_INT(kd_wgf_fits(&r64), 0);
    kd_wg_frozen_on = -1;
}
