/* test_conv_gemm.c - inference's own convolution product (src/nn/conv_gemm.c) against a
 * double-precision loop written here, on sizes that reach every edge of it: channel counts
 * that are not multiples of its 4-channel panels; column counts with 1 to 23 columns past the
 * last whole 24 (its three masked tails, and the column kernels for up to 6 given the
 * transposed weights: 16 channels by all the columns, 8 for a last block of channels); tap
 * counts over one block of 192 (two and four blocks); a column matrix wider than the product
 * (ldb > N) and an output wider too (ldc > N, whose extra floats stay unwritten); each with
 * an activation (none, relu or relu6) applied as the last block is stored; the team's split
 * giving the same bits as
 * one thread, and a column's bits not depending on where it falls in a panel or which kernel
 * ran it. Then a model's eval through each of inference's convolution paths (this one,
 * conv_direct.c's and winograd.c's) against the im2col + sgemm path; training never takes
 * them. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/test_hooks.h"
#include "../src/nn/conv_gemm.h"
#include "../src/nn/fused.h"
#include "conv_reference.h"
#include "kd_common.h"
#include "kd_gemm.h"
#include "kd_nn.h"
#include "kd_rng.h"
#include "kd_test.h"

static int cpu_has_kernel(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 1; /* the portable loop */
#endif
}

/* One size: the product (with the transposed copy) against the double reference (each output
 * within 2^-20 of its terms' sum of magnitudes); by the AVX2 kernels on an AVX-512 CPU (panels
 * of 24 columns instead of 48), without the copy, on the team (two threads), the same bits;
 * and columns [s, N) computed alone (cols + s, N - s columns) the same bits as in the full
 * product. */
static void check_size(size_t O, size_t K, size_t N, size_t ldb, int with_bias, int act) {
    const size_t ldc = N + 3; /* y's rows wider than the product, as a chunk of a plane's rows */
    float *w = malloc(O * K * sizeof *w), *cols = malloc(K * ldb * sizeof *cols),
          *b = malloc(O * sizeof *b), *y = malloc(O * ldc * sizeof *y),
          *y2 = malloc(O * ldc * sizeof *y2);
    float *wt = kd_alloc_floats(kd_conv_gemm_transposed_floats(O, K));
    if (!w || !cols || !b || !y || !y2 || !wt) {
        kd_test_fail(__FILE__, __LINE__, "out of memory");
        goto done;
    }
    kd_rng rng;
    kd_rng_seed(&rng, (uint64_t)(O * 7919 + K * 31 + N));
    for (size_t i = 0; i < O * K; i++) w[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < K * ldb; i++) cols[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < O; i++) b[i] = kd_rng_normal(&rng);
    const float *bias = with_bias ? b : NULL;
    kd_conv_gemm_transpose(O, K, w, wt);
    memset(y, 0xff, O * ldc * sizeof *y); /* NaN: an output the kernel misses shows */
    kd_conv_gemm(O, K, N, w, wt, bias, act, cols, ldb, y, ldc, 0);
    size_t bad = 0;
    for (size_t o = 0; o < O; o++)
        for (size_t n = 0; n < N; n++) {
            double s = bias ? bias[o] : 0.0, a = bias ? fabs(bias[o]) : 0.0;
            for (size_t k = 0; k < K; k++) {
                const double t = (double)w[o * K + k] * (double)cols[k * ldb + n];
                s += t;
                a += fabs(t);
            }
            if (act != KD_ACT_NONE) s = s < 0.0 ? 0.0 : s; /* the activation, as stored */
            if (act == KD_ACT_RELU6) s = s > 6.0 ? 6.0 : s;
            const float got = y[o * ldc + n];
            if (!(fabs((double)got - s) <= a * 0x1p-20 + 1e-30)) {
                if (!bad)
                    kd_test_fail(__FILE__, __LINE__, "O %zu K %zu N %zu: y[%zu, %zu] = %.9g, "
                                 "reference %.9g", O, K, N, o, n, got, s);
                bad++;
            }
        }
    CHECK_EQ_INT((int)bad, 0);
    size_t spill = 0; /* the 3 floats past each row: never written */
    for (size_t o = 0; o < O; o++)
        for (size_t n = N; n < ldc; n++) spill += y[o * ldc + n] == y[o * ldc + n];
    CHECK_EQ_INT((int)spill, 0);
    kd_conv_gemm_wide = 0; /* the AVX2 kernels where the CPU has AVX-512: the same bits */
    memset(y2, 0xff, O * ldc * sizeof *y2);
    kd_conv_gemm(O, K, N, w, wt, bias, act, cols, ldb, y2, ldc, 0);
    kd_conv_gemm_wide = -1;
    CHECK(memcmp(y, y2, O * ldc * sizeof *y) == 0);
    const int t0 = omp_get_max_threads();
    omp_set_num_threads(2);
    memset(y2, 0xff, O * ldc * sizeof *y2);
    kd_conv_gemm(O, K, N, w, NULL, bias, act, cols, ldb, y2, ldc, 1); /* no copy: masked */
    omp_set_num_threads(t0);
    CHECK(memcmp(y, y2, O * ldc * sizeof *y) == 0); /* NaN bits compare equal with memcmp */
    omp_set_num_threads(2);
    memset(y2, 0xff, O * ldc * sizeof *y2);
    kd_conv_gemm(O, K, N, w, wt, bias, act, cols, ldb, y2, ldc, 1); /* the team's, the copy */
    omp_set_num_threads(t0);
    CHECK(memcmp(y, y2, O * ldc * sizeof *y) == 0);
    const size_t s = N > 5 ? 5 : N - 1, m = N - s; /* columns [s, N) alone: other panels */
    kd_conv_gemm(O, K, m, w, wt, bias, act, cols + s, ldb, y2, m, 0);
    size_t moved = 0;
    for (size_t o = 0; o < O; o++)
        moved += memcmp(y2 + o * m, y + o * ldc + s, m * sizeof *y) != 0;
    CHECK_EQ_INT((int)moved, 0);
done:
    free(w), free(cols), free(b), free(y), free(y2);
    kd_free_aligned(wt);
}

KD_TEST(conv_gemm_matches_a_double_reference) {
    if (!cpu_has_kernel()) {
        printf("    this CPU has no AVX2 + FMA: the kernel is never chosen here\n");
        return;
    }
    /* the activation (applied as the last tap block is stored): none, relu or relu6 */
    check_size(16, 9, 784, 784, 0, KD_ACT_NONE); /* a first layer: 32 panels, a 16-wide tail */
    check_size(13, 144, 49, 49, 1, KD_ACT_RELU); /* 3 panels of 4 + 1 channel; 2 + 1 column */
    check_size(3, 193, 57, 60, 1, KD_ACT_RELU6); /* one partial panel; two tap blocks; ldb > N */
    check_size(7, 577, 31, 31, 0, KD_ACT_RELU);  /* four tap blocks; a 7-wide tail */
    check_size(5, 1, 8, 8, 1, KD_ACT_NONE);      /* one tap; one 8-wide masked panel */
    check_size(4, 20, 1, 3, 1, KD_ACT_RELU6);    /* one column */
    check_size(9, 64, 20, 20, 1, KD_ACT_RELU6);  /* a 20-wide tail: three vectors, one masked */
    check_size(70, 200, 28, 28, 1, KD_ACT_RELU6); /* a 4-column tail: 4 x 16 + 6 channels */
    check_size(33, 30, 6, 6, 0, KD_ACT_RELU);    /* six columns: 16 + 16 + 1 channels */
    check_size(150, 400, 16, 16, 1, KD_ACT_NONE); /* one panel of 16: the team's 3 channel blocks */
    check_size(130, 50, 25, 25, 0, KD_ACT_RELU6); /* a one-column tail over 3 channel blocks */
    check_size(24, 40, 26, 26, 1, KD_ACT_RELU);  /* tails of 2, 3 and 5 columns: 16 + 8 channels */
    check_size(9, 50, 27, 27, 0, KD_ACT_NONE);
    check_size(20, 70, 29, 29, 1, KD_ACT_RELU6);
}

/* The products of K = 27 (the first layer's im2col: 3 channels by 9 taps) that went through
 * kd_sgemm or the own product, both of which report their shapes. */
static size_t first_layer_products;
static void note_first_layer(int ta, int tb, size_t M, size_t N, size_t K, int serial) {
    (void)ta, (void)tb, (void)M, (void)N, (void)serial;
    if (K == 27) first_layer_products++;
}

/* Eval of a model of conv2d layers (padding, stride 2, 1x1, no bias) through each of
 * inference's convolution paths gives the im2col + sgemm path's logits within rounding, and
 * each path ran: the own product's bits differ from sgemm's (its sums run in another order),
 * the direct convolution and Winograd make no im2col product for the first layer (the direct
 * kernel's sums can equal sgemm's bits: both sum the taps in order by FMA, as on AVX-512);
 * training's forward never takes any of them. */
KD_TEST(conv_inference_paths_run_in_eval_only) {
    static const char *json =
        "[{\"type\":\"conv2d\",\"channels\":12,\"kernel\":3,\"padding\":1},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"channels\":20,\"kernel\":3,\"padding\":1,\"bias\":false},"
        "{\"type\":\"conv2d\",\"channels\":8,\"kernel\":3,\"stride\":2},"
        "{\"type\":\"conv2d\",\"channels\":6,\"kernel\":1},"
        "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":4}]";
    enum { B = 5 };
    const kd_shape in = {3, {3, 30, 30}};
    kd_model m;
    kd_err err;
    memset(&m, 0, sizeof m);
    if (kd_model_init(&m, &in, json, 1, &err) || kd_model_reserve(&m, B, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        kd_model_free(&m);
        return;
    }
    kd_rng rng;
    kd_rng_seed(&rng, 5);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    static float x[B * 2700];
    float ref[B * 4], tref[B * 4], got[B * 4], t[B * 4];
    for (size_t i = 0; i < B * 2700; i++) x[i] = kd_rng_normal(&rng);
    kd_ctx train = {1, &rng, NULL, 0, 0, 0};
    kd_direct_conv = 0;
    kd_conv_gemm_own = 0;
    kd_conv_winograd = 0;
    kd_hook_gemm_shape = note_first_layer;
    first_layer_products = 0;
    memcpy(ref, kd_model_forward(&m, x, B, NULL), sizeof ref);
    CHECK(first_layer_products > 0); /* the reference's im2col product is seen */
    memcpy(tref, kd_model_forward(&m, x, B, &train), sizeof tref);
    /* {direct, own, Winograd}: the own product (where the CPU runs it), the direct convolution,
     * Winograd's F(2x2, 3x3) (winograd.h) */
    static const int paths[3][3] = {{0, 1, 0}, {1, 0, 0}, {0, 0, 1}};
    for (int p = cpu_has_kernel() ? 0 : 1; p < 3; p++) {
        kd_direct_conv = paths[p][0];
        kd_conv_gemm_own = paths[p][1];
        kd_conv_winograd = paths[p][2];
        first_layer_products = 0;
        memcpy(got, kd_model_forward(&m, x, B, NULL), sizeof got);
        if (p == 0) CHECK(memcmp(got, ref, sizeof got) != 0);
        else CHECK_EQ_INT((int)first_layer_products, 0);
        memcpy(t, kd_model_forward(&m, x, B, &train), sizeof t);
        CHECK_FLOATS(got, ref, B * 4, 1e-5, 1e-5);
        CHECK(memcmp(t, tref, sizeof t) == 0);
    }
    kd_hook_gemm_shape = NULL;
    kd_conv_gemm_own = -1;
    kd_direct_conv = -1;
    kd_conv_winograd = -1;
    kd_model_free(&m);
}

/* An inference model of these layers on a (3, H, H) input for batches of up to 8, seeded
 * weights and 8 samples of seeded input in x; 0 after a failure (reported). */
static int rule_model(kd_model *m, const char *json, size_t H, uint64_t seed, float *x) {
    const kd_shape in = {3, {3, H, H}};
    kd_err err;
    if (kd_model_init(m, &in, json, 0, &err) || kd_model_reserve(m, 8, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        kd_model_free(m);
        return 0;
    }
    kd_rng rng;
    kd_rng_seed(&rng, seed);
    kd_model_init_weights(m, &rng, KD_INIT_HE);
    for (size_t i = 0; i < 8 * 3 * H * H; i++) x[i] = kd_rng_normal(&rng);
    return 1;
}

/* The release rule for the direct convolution (conv_direct.h): on an AVX-512 CPU, 1 to 3
 * samples take it whatever OpenBLAS runs, and a batch only where OpenBLAS runs narrower kernels;
 * elsewhere never. Seen through the first layer's im2col product (K = 27), which the direct
 * path does not make; Winograd is off so that the batch's 3x3 layers have no other path. */
KD_TEST(conv_direct_rule_takes_few_samples_on_avx512) {
    static const char *json =
        "[{\"type\":\"conv2d\",\"channels\":8,\"kernel\":3,\"padding\":1},"
        "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]";
    kd_model m = {0};
    static float x[8 * 300];
    if (!rule_model(&m, json, 10, 6, x)) return;
    const int avx512 = kd_test_cpu_avx512();
    const int batch_direct = avx512 && kd_blas_core_level() < 3;
    kd_conv_winograd = 0;
    kd_infer_replicas = 0; /* the whole batch in one pass */
    kd_hook_gemm_shape = note_first_layer;
    first_layer_products = 0;
    kd_model_forward(&m, x, 1, NULL);
    CHECK_EQ_INT(first_layer_products == 0, avx512);
    first_layer_products = 0;
    kd_model_forward(&m, x, 8, NULL);
    CHECK_EQ_INT(first_layer_products == 0, batch_direct);
    kd_hook_gemm_shape = NULL;
    kd_infer_replicas = 1;
    kd_conv_winograd = -1;
    kd_model_free(&m);
}

/* Products other than the dense layer's (K = 64 x 49) in the small-plane model below. */
static size_t conv_products;
static void note_conv(int ta, int tb, size_t M, size_t N, size_t K, int serial) {
    (void)ta, (void)tb, (void)M, (void)N, (void)serial;
    if (K != 64 * 49) conv_products++;
}
static void note_wg(int ta, int tb, size_t M, size_t N, size_t K, int serial) {
    (void)ta, (void)tb, (void)N, (void)serial;
    if (M == 64 && K == 512) conv_products++;
}

/* On an AVX-512 CPU a batch's convolutions with output planes of at most 64 positions and at
 * least 2^18 weights take the direct kernel, even where Winograd's rule would take them (the
 * second layer: 16 tiles): none of Winograd's products (K = 512). The first layer (3 channels,
 * 1,728 weights) and every layer elsewhere do not. */
KD_TEST(conv_direct_rule_takes_small_planes_on_avx512) {
    static const char *json =
        "[{\"type\":\"conv2d\",\"channels\":512,\"kernel\":3,\"padding\":1},"
        "{\"type\":\"conv2d\",\"channels\":64,\"kernel\":3,\"padding\":1},"
        "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]";
    kd_model m = {0};
    static float x[8 * 147];
    if (!rule_model(&m, json, 7, 7, x)) return;
    const int avx512 = kd_test_cpu_avx512();
    kd_infer_replicas = 0;
    kd_hook_gemm_shape = note_conv;
    conv_products = 0;
    kd_model_forward(&m, x, 8, NULL);
    CHECK_EQ_INT(conv_products == 0, 0);  /* the first layer's, at least */
    conv_products = 0;
    kd_hook_gemm_shape = note_wg;
    kd_model_forward(&m, x, 8, NULL);
    CHECK_EQ_INT(conv_products == 0, avx512);
    kd_hook_gemm_shape = NULL;
    kd_infer_replicas = 1;
    kd_model_free(&m);
}
