/* test_conv_direct.c - inference's direct convolution (src/nn/conv_direct.c) against a
 * double-precision loop (tests/conv_reference.c), on shapes that reach every edge of it:
 * channel counts that are not multiples of its channel blocks (8; 4 in AVX2, whose 24-position
 * blocks leave 8-position tails on 7x7 and 2x2 planes), more input channels than one partial
 * sum, non-square kernels and planes, padding 0 to 2, a plane smaller than the kernel's reach,
 * strides 2 and 3 (the input split into phase planes, 1x1 to 5x4 kernels), compact grids (one
 * plane per kernel column: 4x4 outputs), several samples as one tall image, and the channel
 * split over the team giving the same bits as one thread; each of the three kernels (AVX-512,
 * AVX2, portable) this CPU can run. A model's eval through it: tests/test_conv_gemm.c. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/test_hooks.h"
#include "../src/nn/conv_direct.h"
#include "conv_reference.h"
#include "kd_common.h"
#include "kd_rng.h"
#include "kd_test.h"

/* One shape: the kernel against the reference (each output within 2^-20 of its terms' sum of
 * magnitudes), then with the team (two threads): the same bits; then NS samples as one tall
 * image, the first being that sample: each the bits of that sample run alone, on one thread
 * and on two. */
#define NS 3
static void check_shape_s(size_t C, size_t H, size_t W, size_t O, size_t KH, size_t KW, size_t P,
                          size_t S, int with_bias) {
    kd_cd_dims d = {C, H, W, O, (H + 2 * P - KH) / S + 1, (W + 2 * P - KW) / S + 1, KH, KW, P, S};
    const size_t ny = O * d.OH * d.OW, nw = O * C * KH * KW;
    const size_t nx = C * H * W;
    float *x = malloc(NS * nx * sizeof *x), *w = malloc(nw * sizeof *w), *b = malloc(O * sizeof *b);
    float *y = malloc(NS * ny * sizeof *y), *y2 = malloc(NS * ny * sizeof *y2);
    double *ref = malloc(ny * sizeof *ref), *scale = malloc(ny * sizeof *scale);
    float *ws = kd_alloc_floats(kd_conv_direct_workspace(&d, NS));
    if (!x || !w || !b || !y || !y2 || !ref || !scale || !ws) {
        kd_test_fail(__FILE__, __LINE__, "out of memory");
        goto done;
    }
    kd_rng rng;
    kd_rng_seed(&rng, (uint64_t)(C * 131 + O * 17 + KH * 5 + KW + P));
    for (size_t i = 0; i < NS * nx; i++) x[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < nw; i++) w[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < O; i++) b[i] = kd_rng_normal(&rng);
    const float *bias = with_bias ? b : NULL;
    kd_conv_reference(&d, x, w, bias, ref, scale);
    memset(y, 0xff, ny * sizeof *y);  /* NaN: an output the kernel misses shows */
    kd_conv_direct(&d, 1, x, w, bias, y, ws, 0);
    size_t bad = 0;
    for (size_t k = 0; k < ny; k++)
        if (!(fabs((double)y[k] - ref[k]) <= scale[k] * 0x1p-20 + 1e-30)) {
            if (!bad)
                kd_test_fail(__FILE__, __LINE__, "C %zu H %zu W %zu O %zu kernel %zux%zu pad %zu "
                             "stride %zu: y[%zu] = %.9g, reference %.9g", C, H, W, O, KH, KW, P, S,
                             k, y[k], ref[k]);
            bad++;
        }
    CHECK_EQ_INT((int)bad, 0);
    const int t0 = omp_get_max_threads();
    omp_set_num_threads(2);
    memset(y2, 0xff, ny * sizeof *y2);
    kd_conv_direct(&d, 1, x, w, bias, y2, ws, 2);
    CHECK(memcmp(y, y2, ny * sizeof *y) == 0);
    for (size_t s = 1; s < NS; s++) kd_conv_direct(&d, 1, x + s * nx, w, bias, y + s * ny, ws, 0);
    for (size_t team = 0; team <= 2; team += 2) {
        memset(y2, 0xff, NS * ny * sizeof *y2);
        kd_conv_direct(&d, NS, x, w, bias, y2, ws, team);
        if (memcmp(y, y2, NS * ny * sizeof *y) != 0)
            kd_test_fail(__FILE__, __LINE__, "C %zu H %zu W %zu O %zu kernel %zux%zu pad %zu "
                         "stride %zu: %d samples at once (team %zu) give other bits than each "
                         "alone", C, H, W, O, KH, KW, P, S, NS, team);
    }
    omp_set_num_threads(t0);
done:
    free(x), free(w), free(b), free(y), free(y2), free(ref), free(scale);
    kd_free_aligned(ws);
}

static void check_shape(size_t C, size_t H, size_t W, size_t O, size_t KH, size_t KW, size_t P,
                        int with_bias) {
    check_shape_s(C, H, W, O, KH, KW, P, 1, with_bias);
}

static void check_shapes(void) {
    check_shape(1, 28, 28, 8, 3, 3, 1, 0);    /* a first layer: one channel, one block */
    check_shape(3, 9, 7, 13, 3, 3, 1, 1);     /* 8 + 5 single channels (AVX2: 3 blocks of 4 + 1) */
    check_shape(40, 7, 7, 16, 3, 3, 1, 1);    /* three partial sums (16 + 16 + 8 channels) */
    check_shape(20, 12, 13, 11, 3, 3, 1, 1);  /* a 12 x 15 grid: 4 whole blocks of 48 positions
                                               * (AVX-512; 28x28 ends on 32 of them, 7x7 on 16) */
    check_shape(5, 6, 11, 9, 5, 5, 2, 1);     /* 5x5, padding 2, non-square plane */
    check_shape(4, 8, 10, 8, 1, 3, 0, 1);     /* 1x3, no padding */
    check_shape(4, 10, 8, 7, 3, 1, 1, 0);     /* 3x1 */
    check_shape(6, 2, 2, 8, 3, 3, 2, 1);      /* a 2x2 plane inside padding 2: 4x4 outputs */
    check_shape(24, 4, 4, 16, 3, 3, 1, 1);    /* ResNet-18's last stage: a compact grid (one
                                               * plane per kernel column, 16 positions) */
    check_shape(17, 1, 1, 3, 3, 3, 1, 1);     /* one pixel: only the centre tap is inside */
    /* stride 2 and 3: the phase planes, each tap in its own */
    check_shape_s(16, 28, 28, 32, 3, 3, 1, 2, 0); /* ResNet's first block of a stage: 14x14 */
    check_shape_s(5, 7, 7, 9, 3, 3, 1, 2, 1);     /* odd plane: 4x4 outputs, the last row's
                                                   * taps reach the bottom padding */
    check_shape_s(6, 8, 9, 8, 1, 1, 0, 2, 1);     /* 1x1, stride 2 (a downsample): one phase */
    check_shape_s(3, 11, 10, 8, 2, 2, 0, 2, 0);   /* 2x2, stride 2: four phases, no padding */
    check_shape_s(4, 13, 12, 10, 5, 4, 2, 3, 1);  /* stride 3, 5x4 kernel: taps in 3x3 phases */
    check_shape_s(20, 9, 8, 8, 3, 3, 1, 2, 1);    /* two partial sums at stride 2 */
}

/* Every kernel this CPU runs: the portable one always, AVX2 and AVX-512 where the CPU has them
 * (read from /proc/cpuinfo's flags independently of the kernel's own choice). */
KD_TEST(conv_direct_matches_a_double_reference) {
    int isa[3] = {3, 0, 0}, n = 1;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa[n++] = 2;
    if (__builtin_cpu_supports("avx512f")) isa[n++] = 1;
#endif
    for (int k = 0; k < n; k++) {
        kd_direct_conv_isa = isa[k];
        check_shapes();
    }
    kd_direct_conv_isa = 0;
    if (n < 3) printf("    %d of the 3 kernels run on this CPU\n", n);
}
