/* test_conv_packed.c - a frozen model's convolution (src/nn/conv_packed.c: weights packed once,
 * 64, 32 or 16 output channels in the vector lanes, or positions in them for 16s at stride 1)
 * against a double-precision loop (tests/conv_reference.c), on shapes that reach every edge of
 * it: tiles of 64, 32 and 16 channels and grid tiles, positions that end inside a tile and
 * inside the transpose's blocks of 16, input channels over several channel blocks (14 for a 3x3
 * kernel, 128 or 256 for 1x1, 5 for 5x5), strides 2 and 3, non-square kernels and planes,
 * padding 0 to 2, one pixel, padded rows of several 16-float pieces; scale, shift, a residual
 * and both activations (NaN passing, -0 kept, as kd_act_value); the team (by channel blocks, or
 * by positions where a thread would get fewer than two), parts of the positions and of the
 * channel blocks, and several samples per call giving the bits of one thread and one sample.
 * Then models: a frozen model's logits against the same model unfrozen, alone and in a batch,
 * on one thread and on two (banded), an ONNX teacher loaded frozen, and residual units against
 * the units apart. All on CPUs with AVX-512 (elsewhere kd_conv_packed_fits says no and nothing
 * is frozen: checked). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/test_hooks.h"
#include "../src/nn/conv_packed.h"
#include "../src/nn/fused.h"
#include "../src/nn/graph.h"
#include "conv_reference.h"
#include "kd_common.h"
#include "kd_export.h"
#include "kd_nn.h"
#include "kd_onnx.h"
#include "kd_rng.h"
#include "kd_teacher.h"
#include "kd_test.h"

/* One shape with scale, shift, act and (for half the shapes) a residual: y within 2^-20 of the
 * terms' magnitudes (times |scale|) of act(scale s + shift + res); the team of two the same
 * bits; NS samples in one call the bits of each alone, on one thread and on two. */
#define NS 3
static void check_shape(size_t C, size_t H, size_t W, size_t O, size_t KH, size_t KW, size_t P,
                        size_t S, int act) {
    const kd_cd_dims d = {C, H, W, O, (H + 2 * P - KH) / S + 1, (W + 2 * P - KW) / S + 1,
                          KH, KW, P, S};
    const size_t ny = O * d.OH * d.OW, nx = C * H * W, nw = O * C * KH * KW;
    float *x = malloc(NS * nx * sizeof *x), *w = malloc(nw * sizeof *w);
    float *wp = kd_alloc_floats(kd_conv_packed_floats(&d)), *sc = malloc(2 * O * sizeof *sc);
    float *y = malloc(NS * ny * sizeof *y), *y2 = malloc(NS * ny * sizeof *y2);
    float *res = malloc(NS * ny * sizeof *res);
    double *ref = malloc(ny * sizeof *ref), *mag = malloc(ny * sizeof *mag);
    float *ws = kd_alloc_floats(kd_conv_packed_workspace(&d, NS));
    if (!x || !w || !wp || !sc || !y || !y2 || !res || !ref || !mag || !ws) {
        kd_test_fail(__FILE__, __LINE__, "out of memory");
        goto done;
    }
    kd_rng rng;
    kd_rng_seed(&rng, (uint64_t)(C * 131 + O * 17 + KH * 5 + KW + P + S));
    for (size_t i = 0; i < NS * nx; i++) x[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < nw; i++) w[i] = kd_rng_normal(&rng);
    float *scale = sc, *shift = sc + O;
    for (size_t i = 0; i < O; i++)
        scale[i] = 0.5f + kd_rng_uniform(&rng), shift[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < NS * ny; i++) res[i] = kd_rng_normal(&rng);
    const int with_res = (C + KH) % 2 == 0; /* a residual joins half the shapes' outputs */
    kd_conv_packed_pack(&d, w, wp);
    kd_conv_reference(&d, x, w, NULL, ref, mag);
    memset(y, 0xff, ny * sizeof *y); /* NaN: an output the kernel misses shows */
    const kd_cp_out one = {scale, shift, with_res ? res : NULL, act, y};
    kd_cp_out two = one;
    two.y = y2;
    kd_conv_packed(&d, 1, x, wp, &one, ws, 0);
    size_t first = 0;
    const size_t bad = kd_conv_epilogue_misses(&d, y, ref, mag, scale, shift, one.res, act,
                                               0x1p-20, &first);
    if (bad)
        kd_test_fail(__FILE__, __LINE__, "C %zu H %zu W %zu O %zu kernel %zux%zu pad %zu stride "
                     "%zu act %d: y[%zu] = %.9g, reference (without the epilogue) %.9g", C, H, W,
                     O, KH, KW, P, S, act, first, y[first], ref[first]);
    CHECK_EQ_INT((int)bad, 0);
    const int t0 = omp_get_max_threads();
    omp_set_num_threads(2);
    memset(y2, 0xff, ny * sizeof *y2);
    kd_conv_packed(&d, 1, x, wp, &two, ws, 2);
    CHECK(memcmp(y, y2, ny * sizeof *y) == 0);
    /* parts, each padding only the rows it reads: positions [0, cut) and [cut, OH OW) (a row,
     * one position, half a plane), the second in two: the first block of output channels, the
     * others */
    const size_t Q = d.OH * d.OW, cuts[] = {d.OW, 1, Q / 2};
    for (size_t k = 0; k < 3; k++) {
        const size_t cut = cuts[k], G = kd_conv_packed_blocks(&d);
        if (cut == 0 || cut >= Q) continue;
        memset(y2, 0xff, ny * sizeof *y2);
        kd_conv_packed_part(&d, x, wp, &two, ws, 0, cut, 0, G);
        kd_conv_packed_part(&d, x, wp, &two, ws, cut, Q, 0, 1);
        kd_conv_packed_part(&d, x, wp, &two, ws, cut, Q, 1, G);
        if (memcmp(y, y2, ny * sizeof *y) != 0)
            kd_test_fail(__FILE__, __LINE__, "C %zu H %zu W %zu O %zu kernel %zux%zu: positions "
                         "[0, %zu) and [%zu, %zu) (by blocks) give other bits than the whole "
                         "sample", C, H, W, O, KH, KW, cut, cut, Q);
    }
    for (size_t s = 1; s < NS; s++) {
        kd_cp_out o = one;
        o.y += s * ny;
        if (o.res) o.res += s * ny;
        kd_conv_packed(&d, 1, x + s * nx, wp, &o, ws, 0);
    }
    for (size_t team = 0; team <= 2; team += 2) {
        memset(y2, 0xff, NS * ny * sizeof *y2);
        kd_conv_packed(&d, NS, x, wp, &two, ws, team);
        if (memcmp(y, y2, NS * ny * sizeof *y) != 0)
            kd_test_fail(__FILE__, __LINE__, "C %zu H %zu W %zu O %zu kernel %zux%zu: %d samples "
                         "at once (team %zu) give other bits than each alone", C, H, W, O, KH, KW,
                         NS, team);
    }
    omp_set_num_threads(t0);
done:
    free(x), free(w), free(sc), free(y), free(y2), free(res), free(ref), free(mag);
    kd_free_aligned(wp);
    kd_free_aligned(ws);
}

KD_TEST(conv_packed_matches_a_double_reference) {
    if (!kd_test_cpu_avx512()) {
        printf("    no AVX-512 on this CPU: the packed kernel does not run\n");
        return;
    }
    check_shape(3, 28, 28, 64, 3, 3, 1, 1, KD_ACT_NONE); /* a first layer */
    check_shape(20, 9, 7, 64, 3, 3, 1, 1, KD_ACT_RELU);  /* 63 positions: a tile of 3, a block
                                                          * of 15; channel blocks 14 + 6 */
    check_shape(16, 28, 28, 128, 3, 3, 1, 2, KD_ACT_RELU6); /* stride 2, two channel blocks */
    check_shape(24, 4, 4, 64, 3, 3, 1, 1, KD_ACT_RELU);  /* ResNet-18's last stage: 16 positions */
    check_shape(20, 6, 6, 256, 3, 3, 1, 1, KD_ACT_RELU); /* 4 blocks: the team splits them */
    check_shape(5, 6, 11, 64, 5, 5, 2, 1, KD_ACT_NONE);  /* 5x5, padding 2, non-square plane */
    check_shape(6, 8, 9, 192, 1, 1, 0, 2, KD_ACT_RELU);  /* 1x1, stride 2; three blocks: the
                                                          * team splits the positions */
    check_shape(4, 13, 12, 64, 5, 4, 2, 3, KD_ACT_NONE); /* stride 3, 5x4 kernel */
    check_shape(17, 1, 1, 64, 3, 3, 1, 1, KD_ACT_RELU);  /* one pixel: only the centre tap */
    check_shape(130, 3, 3, 64, 1, 1, 0, 1, KD_ACT_NONE); /* 1x1: channel blocks 128 + 2 */
    /* tiles of 2 vectors by 12 positions (32s) */
    check_shape(16, 14, 14, 32, 3, 3, 1, 1, KD_ACT_RELU); /* 196 positions: a tile of 4 */
    check_shape(40, 7, 7, 96, 3, 3, 1, 2, KD_ACT_RELU6);  /* 3 blocks of 32: the team splits
                                                           * positions; channel blocks 28 + 12 */
    check_shape(300, 5, 5, 32, 1, 1, 0, 2, KD_ACT_RELU);  /* 1x1 stride 2: channel blocks
                                                           * 256 + 44 */
    check_shape(6, 5, 40, 32, 3, 5, 2, 1, KD_ACT_NONE);   /* padded rows of 44: three
                                                           * 16-float pieces, the last partial */
    /* 16s (banded forwards only), thin sums: at stride 1 grid tiles (positions in the lanes,
     * runs of 48 then 16), else tiles of one vector by 8 positions */
    check_shape(16, 28, 28, 16, 3, 3, 1, 1, KD_ACT_RELU); /* the small ResNet's 16-channel layer */
    check_shape(1, 28, 28, 16, 3, 3, 1, 1, KD_ACT_NONE);  /* its first layer: 9 terms */
    check_shape(5, 9, 13, 48, 5, 5, 2, 1, KD_ACT_RELU6);  /* 5x5, padding 2: grid rows of 17 */
    check_shape(20, 6, 7, 16, 1, 1, 0, 1, KD_ACT_RELU);   /* 1x1: the grid is the plane */
    check_shape(16, 28, 28, 32, 1, 1, 0, 2, KD_ACT_NONE); /* its 1x1 stride-2 downsample */
    check_shape(3, 11, 9, 48, 3, 3, 1, 2, KD_ACT_RELU6);  /* three blocks of 16, odd plane */
}

/* The epilogue's activations follow kd_act_value: ReLU passes NaN and keeps -0, ReLU6 clips
 * at 6 and passes NaN. One 1x1 layer of one input channel, weights 1, scale -1 and shift -0:
 * y = act(-x - 0), so x = +0 gives -0. */
KD_TEST(conv_packed_activations_keep_nan_and_signed_zero) {
    if (!kd_test_cpu_avx512()) return;
    const kd_cd_dims d = {1, 1, 4, 64, 1, 4, 1, 1, 0, 1};
    const float x[4] = {NAN, 0.0f, 2.0f, -7.5f};
    float w[64], scale[64], shift[64], y[256];
    for (size_t o = 0; o < 64; o++) w[o] = 1.0f, scale[o] = -1.0f, shift[o] = -0.0f;
    float *wp = kd_alloc_floats(kd_conv_packed_floats(&d));
    float *ws = kd_alloc_floats(kd_conv_packed_workspace(&d, 1));
    if (!wp || !ws) {
        kd_test_fail(__FILE__, __LINE__, "out of memory");
    } else {
        kd_conv_packed_pack(&d, w, wp);
        for (int act = KD_ACT_RELU; act <= KD_ACT_RELU6; act++) {
            const kd_cp_out out = {scale, shift, NULL, act, y};
            kd_conv_packed(&d, 1, x, wp, &out, ws, 0);
            for (size_t o = 0; o < 64; o += 21) {
                CHECK(isnan(y[4 * o]));
                CHECK(y[4 * o + 1] == 0.0f && signbit(y[4 * o + 1]));
                CHECK(y[4 * o + 2] == 0.0f && !signbit(y[4 * o + 2]));
                CHECK(y[4 * o + 3] == (act == KD_ACT_RELU ? 7.5f : 6.0f));
            }
        }
    }
    kd_free_aligned(wp);
    kd_free_aligned(ws);
}

/* He-initialised weights, and batch norms with weights, biases and statistics away from 1 and
 * 0 (the fold then changes every output; running variances positive). */
static void randomise(kd_model *m, kd_rng *rng) {
    kd_model_init_weights(m, rng, KD_INIT_HE);
    for (size_t i = 0; i < m->n_tensors; i++) {
        kd_tensor *t = &m->tensors[i];
        if (!t->data || strcmp(kd_model_layer_type(m, t->layer), "batchnorm")) continue;
        const int var = strstr(t->name, "running_var") != NULL;
        const int weight = strstr(t->name, "weight") != NULL;
        for (size_t k = 0; k < t->numel; k++) {
            const float v = 0.3f * kd_rng_normal(rng);
            t->data[k] = var ? 0.5f + fabsf(v) : weight ? 1.0f + v : v;
        }
    }
}

/* A residual block with a stride-2 downsample, batch norms folded (conv -> bn -> relu units),
 * a 1x1 layer without batch norm, layers of 64 and 128 channels and one of 24 (never frozen):
 * frozen logits within 1e-5 of the unfrozen model's for one sample and a batch of 6 (Winograd
 * keeps its layers there), the batch's the same bits on one thread and on two; one sample on
 * two threads runs banded. */
KD_TEST(frozen_model_matches_the_unfrozen_one) {
    static const char *json =
        "[{\"type\":\"conv2d\",\"channels\":64,\"kernel\":3,\"padding\":1,\"bias\":false},"
        "{\"type\":\"batchnorm\"},{\"type\":\"relu\",\"name\":\"r0\"},"
        "{\"type\":\"conv2d\",\"channels\":128,\"kernel\":3,\"stride\":2,\"padding\":1},"
        "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"channels\":128,\"kernel\":3,\"padding\":1,\"bias\":false},"
        "{\"type\":\"batchnorm\",\"name\":\"main\"},"
        "{\"type\":\"conv2d\",\"channels\":128,\"kernel\":1,\"stride\":2,\"name\":\"ds\","
        "\"from\":\"r0\"},{\"type\":\"add\",\"from\":[\"main\",\"ds\"]},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"channels\":64,\"kernel\":1},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"channels\":24,\"kernel\":3,\"padding\":1},"
        "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":10}]";
    enum { B = 6, H = 10, D = 3 * H * H };
    const kd_shape in = {3, {3, H, H}};
    kd_model m, f;
    kd_err err;
    memset(&m, 0, sizeof m);
    memset(&f, 0, sizeof f);
    if (kd_model_init(&m, &in, json, 0, &err) || kd_model_init(&f, &in, json, 0, &err) ||
        kd_model_reserve(&m, B, &err) || kd_model_reserve(&f, B, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        goto done;
    }
    kd_rng rng;
    kd_rng_seed(&rng, 11);
    randomise(&m, &rng);
    memcpy(f.params, m.params, m.n_params * sizeof *m.params);
    memcpy(f.buffers, m.buffers, m.n_buffers * sizeof *m.buffers);
    CHECK_EQ_INT(kd_model_freeze(&f, &err), KD_OK);
    static float x[B * D];
    float ref[B * 10], got[B * 10], two[B * 10];
    for (size_t i = 0; i < B * D; i++) x[i] = kd_rng_normal(&rng);
    if (!kd_test_cpu_avx512()) { /* nothing to freeze: the same path, the same bits */
        memcpy(ref, kd_model_forward(&m, x, B, NULL), sizeof ref);
        CHECK(memcmp(kd_model_forward(&f, x, B, NULL), ref, sizeof ref) == 0);
        goto done;
    }
    const int t0 = omp_get_max_threads();
    for (size_t n = 1; n <= B; n += B - 1) {
        memcpy(ref, kd_model_forward(&m, x, n, NULL), n * 10 * sizeof *ref);
        omp_set_num_threads(1);
        memcpy(got, kd_model_forward(&f, x, n, NULL), n * 10 * sizeof *got);
        omp_set_num_threads(2);
        const unsigned long banded = kd_hook_banded_passes;
        memcpy(two, kd_model_forward(&f, x, n, NULL), n * 10 * sizeof *two);
        omp_set_num_threads(t0);
        CHECK_FLOATS(got, ref, n * 10, 1e-5, 1e-5);
        CHECK(memcmp(got, ref, n * 10 * sizeof *got) != 0); /* the frozen path ran */
        if (n == 1) { /* two threads: banded, its thin layers packed too (exec.c) */
            CHECK_EQ_INT((int)(kd_hook_banded_passes - banded), 1);
            CHECK_FLOATS(two, ref, n * 10, 1e-5, 1e-5);
        } else {
            CHECK(memcmp(got, two, n * 10 * sizeof *got) == 0);
        }
    }
done:
    kd_model_free(&m);
    kd_model_free(&f);
}

/* The rule: on an AVX-512 CPU, output channels a multiple of 32 and sums of 128 terms or more
 * (C KH KW); never elsewhere; the hook off turns it off. */
KD_TEST(conv_packed_fits_whole_tiles_and_long_sums_on_avx512) {
    const kd_cd_dims a = {16, 8, 8, 32, 8, 8, 3, 3, 1, 1}, b = {16, 8, 8, 48, 8, 8, 3, 3, 1, 1},
                     c = {8, 8, 8, 64, 8, 8, 3, 3, 1, 1}, e = {128, 8, 8, 64, 8, 8, 1, 1, 0, 1};
    CHECK_EQ_INT(kd_conv_packed_fits(&a), kd_test_cpu_avx512());
    CHECK_EQ_INT(kd_conv_packed_fits(&e), kd_test_cpu_avx512());
    CHECK_EQ_INT(kd_conv_packed_fits(&b), 0);
    CHECK_EQ_INT(kd_conv_packed_fits(&c), 0);
    kd_conv_packed_on = 0;
    CHECK_EQ_INT(kd_conv_packed_fits(&a), 0);
    kd_conv_packed_on = -1;
}

/* A teacher from an ONNX file comes frozen (kd_teacher_load_onnx, as `train` and `eval` load
 * one): its two convolutions hold packed copies on an AVX-512 CPU (the 16-channel one for
 * banded forwards), its dense layer none, and its logits are the exported model's within
 * rounding. */
KD_TEST(onnx_teacher_loads_frozen) {
    static const char *json =
        "[{\"type\":\"conv2d\",\"channels\":16,\"kernel\":3,\"padding\":1},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"channels\":64,\"kernel\":3,\"stride\":2,\"padding\":1},"
        "{\"type\":\"relu\"},{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":10}]";
    const kd_shape in = {3, {1, 8, 8}};
    kd_model m, t;
    kd_onnx_info info;
    kd_err err;
    memset(&m, 0, sizeof m);
    memset(&t, 0, sizeof t);
    memset(&info, 0, sizeof info);
    kd_preprocess pp;
    kd_preprocess_defaults(&pp);
    char path[600];
    snprintf(path, sizeof path, "%s/t.onnx", kd_test_tmpdir());
    const kd_export_info ei = {.pp = &pp};
    kd_rng rng;
    kd_rng_seed(&rng, 3);
    if (kd_model_init(&m, &in, json, 0, &err) || (kd_model_init_weights(&m, &rng, KD_INIT_HE), 0) ||
        kd_export_onnx(path, &m, &ei, &err) || kd_model_reserve(&m, 2, &err) ||
        kd_teacher_load_onnx(path, NULL, KD_TEACHER_PP_DATA, NULL, &pp, &t, &info, &err) ||
        kd_model_reserve(&t, 2, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        goto done;
    }
    CHECK_EQ_INT((int)kd_model_frozen_layers(&m), 0);
    CHECK_EQ_INT((int)kd_model_frozen_layers(&t), 2 * kd_test_cpu_avx512());
    float x[2 * 64], ref[20];
    for (size_t i = 0; i < 2 * 64; i++) x[i] = kd_rng_normal(&rng);
    memcpy(ref, kd_model_forward(&m, x, 2, NULL), sizeof ref);
    CHECK_FLOATS(kd_model_forward(&t, x, 2, NULL), ref, 20, 1e-5, 1e-5);
done:
    kd_onnx_info_free(&info);
    kd_model_free(&m);
    kd_model_free(&t);
}

/* Residual units (graph.c, KD_UNIT_CONV_ADD): a block whose second convolution's batch norm
 * feeds the add of the identity (with its relu), and one whose downsample's does (the add's
 * other input the main branch, without relu after it). Fused, the unit's kernel adds the
 * residual as it stores each output: the same bits as the two units unfused, frozen or not, for
 * a batch and for one sample (banded on two threads when frozen, its 3x3 layers by Winograd:
 * the residual joins in its output transform), in as many chunk buffers. */
static void residual_logits(int fuse, int freeze, size_t n, float *out, size_t *n_pool) {
    static const char *json =
        "[{\"type\":\"conv2d\",\"channels\":32,\"kernel\":3,\"padding\":1,\"bias\":false},"
        "{\"type\":\"batchnorm\"},{\"type\":\"relu\",\"name\":\"r0\"},"
        "{\"type\":\"conv2d\",\"channels\":32,\"kernel\":3,\"padding\":1,\"bias\":false},"
        "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"channels\":32,\"kernel\":3,\"padding\":1},"
        "{\"type\":\"batchnorm\",\"name\":\"b2\"},{\"type\":\"add\",\"from\":[\"b2\",\"r0\"]},"
        "{\"type\":\"relu\",\"name\":\"r1\"},"
        "{\"type\":\"conv2d\",\"channels\":64,\"kernel\":3,\"stride\":2,\"padding\":1},"
        "{\"type\":\"batchnorm\",\"name\":\"main\"},"
        "{\"type\":\"conv2d\",\"channels\":64,\"kernel\":1,\"stride\":2,\"from\":\"r1\"},"
        "{\"type\":\"batchnorm\",\"name\":\"ds\"},{\"type\":\"add\",\"from\":[\"main\",\"ds\"]},"
        "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":10}]";
    enum { B = 6, H = 14, D = 16 * H * H };
    const kd_shape in = {3, {16, H, H}};
    kd_model m;
    kd_err err;
    memset(&m, 0, sizeof m);
    kd_fuse_residual = fuse;
    if (kd_model_init(&m, &in, json, 0, &err) || kd_model_reserve(&m, B, &err)) {
        kd_fuse_residual = 1;
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        goto done;
    }
    kd_fuse_residual = 1;
    kd_rng rng;
    kd_rng_seed(&rng, 5);
    randomise(&m, &rng);
    if (freeze) CHECK_EQ_INT(kd_model_freeze(&m, &err), KD_OK);
    *n_pool = m.graph->n_pool;
    /* the fused unit's inner values (the convolution's output among them) share its output's
     * buffer: nothing writes them */
    if (fuse) CHECK_EQ_INT(m.graph->pool_of[7], m.graph->pool_of[10]);
    CHECK_EQ_INT((int)kd_model_unit_size(&m, 6), fuse ? 4 : 2); /* conv, bn, add, relu */
    CHECK_EQ_INT((int)kd_model_unit_size(&m, 12), fuse ? 3 : 2); /* conv, bn, add */
    static float x[B * D];
    for (size_t i = 0; i < B * D; i++) x[i] = kd_rng_normal(&rng);
    const int t0 = omp_get_max_threads();
    omp_set_num_threads(2);
    memcpy(out, kd_model_forward(&m, x, n, NULL), n * 10 * sizeof *out);
    omp_set_num_threads(t0);
done:
    kd_model_free(&m);
}

KD_TEST(residual_unit_gives_the_bits_of_the_two_units) {
    for (int freeze = 0; freeze <= 1; freeze++)
        for (size_t n = 1; n <= 6; n += 5) {
            float fused[60], apart[60];
            size_t pool_fused = 0, pool_apart = 0;
            const unsigned long banded = kd_hook_banded_passes, wg = kd_hook_wgf_parts;
            residual_logits(1, freeze, n, fused, &pool_fused);
            residual_logits(0, freeze, n, apart, &pool_apart);
            /* a unit of 4 layers is not a convolution's group: no buffer kept for its conv */
            CHECK_EQ_INT((int)pool_fused, (int)pool_apart);
            if (memcmp(fused, apart, n * 10 * sizeof *fused) != 0)
                kd_test_fail(__FILE__, __LINE__, "%s, %zu sample(s): the fused residual units "
                             "give other logits than the units apart (%.9g vs %.9g)",
                             freeze ? "frozen" : "not frozen", n, fused[0], apart[0]);
            if (freeze && n == 1) { /* both banded where the packed kernel runs, the 3x3
                                     * layers at stride 1 by Winograd (wg_frozen.c) */
                CHECK_EQ_INT((int)(kd_hook_banded_passes - banded), 2 * kd_test_cpu_avx512());
                CHECK_EQ_INT(kd_hook_wgf_parts > wg, kd_test_cpu_avx512());
            }
        }
}
