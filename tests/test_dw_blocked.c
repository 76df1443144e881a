/* test_dw_blocked.c - the depthwise forward in blocks of eight channels (src/nn/dw_blocked.c,
 * run by depthwise.c) against a loop written here in the order the plane kernels and the C
 * header add (every tap inside the input in (i, j) order from 0, then the bias, then the
 * activation): the same bits, on MobileNet's planes (28x28 at stride 2 down to 2x2) and the
 * edges of the rule (a plane of 1 x 5, the largest padded plane taken and one past it, channel
 * counts that leave planes after the last block), with and without a bias, each activation,
 * on one thread and two, with a sample sink (each sample complete when handed on); a weight
 * that is not finite sends the layer back to the plane kernels (a padding zero times inf is
 * NaN, where the plane kernels skip the tap). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/test_hooks.h"
#include "../src/nn/dw_blocked.h"
#include "kd_common.h"
#include "kd_rng.h"
#include "kd_test.h"
#include "kd_threads.h"

static int cpu_has_avx2(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

static size_t out_len(size_t n, size_t S) { return (n + 2 - 3) / S + 1; }

static void reference(const kd_dw_dims *d, const float *x, const float *w, const float *bias,
                      int act, float *y, size_t B) {
    for (size_t q = 0; q < B * d->C; q++)
        for (size_t oh = 0; oh < d->OH; oh++)
            for (size_t ow = 0; ow < d->OW; ow++) {
                const size_t c = q % d->C;
                float s = 0.0f;
                for (size_t i = 0; i < 3; i++)
                    for (size_t j = 0; j < 3; j++) {
                        const long ih = (long)(oh * d->S + i) - 1, iw = (long)(ow * d->S + j) - 1;
                        if (ih < 0 || iw < 0 || ih >= (long)d->H || iw >= (long)d->W) continue;
                        const float p = w[c * 9 + i * 3 + j] *
                                        x[(q * d->H + (size_t)ih) * d->W + (size_t)iw];
                        s += p;
                    }
                y[(q * d->OH + oh) * d->OW + ow] = kd_act_value(bias ? s + bias[c] : s, act);
            }
}

/* The sink copies each sample's outputs when it is handed on: they must be final by then. */
typedef struct {
    const kd_dw_dims *d;
    float *seen;
} sink_arg;
static void copy_sample(const void *arg, size_t b, const float *yb) {
    const sink_arg *a = arg;
    const size_t n = a->d->C * a->d->OH * a->d->OW;
    memcpy(a->seen + b * n, yb, n * sizeof *yb);
}

typedef struct {
    size_t C, H, W, S;
    int bias, act;
    size_t B;
    int blocked; /* the rule takes the shape (on an AVX2 CPU) */
} dwb_case;

static void check_case(const dwb_case *c, uint64_t seed, int inf_weight) {
    kd_dw_dims d = {c->C, c->H, c->W, out_len(c->H, c->S), out_len(c->W, c->S), 3, 3, c->S, 1};
    const size_t nx = c->B * c->C * c->H * c->W, ny = c->B * c->C * d.OH * d.OW;
    const size_t threads = 2, nws = kd_depthwise_workspace(&d, 1, 1, threads);
    float *x = kd_alloc_floats(nx), *w = kd_alloc_floats(c->C * 9), *b = kd_alloc_floats(c->C);
    float *want = kd_alloc_floats(ny), *got = kd_alloc_floats(ny), *seen = kd_alloc_floats(ny);
    float *ws = kd_alloc_floats(nws ? nws : 1);
    kd_rng r;
    kd_rng_seed(&r, seed);
    for (size_t i = 0; i < nx; i++) x[i] = kd_rng_normal(&r);
    for (size_t i = 0; i < c->C * 9; i++) w[i] = kd_rng_normal(&r);
    for (size_t i = 0; i < c->C; i++) b[i] = kd_rng_normal(&r);
    if (inf_weight) w[9 * (c->C / 2)] = INFINITY; /* tap (0, 0): padding in the first row */
    const float *bias = c->bias ? b : NULL;
    reference(&d, x, w, bias, c->act, want, c->B);
    CHECK_EQ_INT(kd_dwb_takes(&d), c->blocked && cpu_has_avx2());
    const int saved = kd_threads_get();
    for (int t = 1; t <= 2; t++) {
        kd_threads_set(t);
        for (int blocked = 0; blocked <= 1; blocked++) {
            kd_dw_blocked = blocked;
            for (size_t i = 0; i < ny; i++) got[i] = NAN; /* a point the path misses stays NaN */
            kd_depthwise_forward(&d, x, w, bias, c->act, got, NULL, c->B, ws, threads);
            if (memcmp(got, want, ny * sizeof *got) != 0)
                kd_test_fail(__FILE__, __LINE__, "C %zu H %zu W %zu S %zu bias %d act %d inf %d: "
                             "threads %d blocked %d differs from the ordered sums", c->C, c->H,
                             c->W, c->S, c->bias, c->act, inf_weight, t, blocked);
            const sink_arg a = {&d, seen};
            const kd_sample_sink sink = {copy_sample, &a};
            for (size_t i = 0; i < ny; i++) got[i] = seen[i] = NAN;
            kd_depthwise_forward(&d, x, w, bias, c->act, got, &sink, c->B, ws, threads);
            if (memcmp(seen, want, ny * sizeof *got) != 0)
                kd_test_fail(__FILE__, __LINE__, "C %zu H %zu W %zu S %zu: threads %d blocked %d:"
                             " a sample handed on before it was done", c->C, c->H, c->W, c->S, t,
                             blocked);
        }
    }
    kd_threads_set(saved);
    kd_dw_blocked = 1;
    kd_free_aligned(x), kd_free_aligned(w), kd_free_aligned(b), kd_free_aligned(want);
    kd_free_aligned(got), kd_free_aligned(seen), kd_free_aligned(ws);
}

KD_TEST(depthwise_blocks_give_the_ordered_sums_bits) {
    static const dwb_case cases[] = {
        /* C, H, W, S, bias, act, B, blocked */
        {8, 28, 28, 1, 0, KD_ACT_RELU6, 2, 1},   /* MobileNetV2's first depthwise layer */
        {48, 28, 28, 2, 0, KD_ACT_RELU6, 2, 1},  /* its first downsampling one */
        {48, 14, 14, 1, 1, KD_ACT_NONE, 3, 1},
        {16, 7, 7, 2, 1, KD_ACT_RELU, 2, 1},     /* odd plane at stride 2: a padding row read */
        {19, 7, 7, 1, 1, KD_ACT_RELU6, 2, 1},    /* two blocks and three planes */
        {96, 4, 4, 1, 0, KD_ACT_RELU6, 3, 1},
        {8, 4, 4, 2, 1, KD_ACT_NONE, 2, 1},
        {24, 2, 2, 1, 1, KD_ACT_RELU6, 5, 1},    /* every point on the border */
        {8, 2, 2, 2, 0, KD_ACT_NONE, 2, 1},
        {9, 1, 5, 1, 1, KD_ACT_RELU, 3, 1},      /* one row */
        {8, 5, 1, 2, 1, KD_ACT_NONE, 2, 1},      /* one column */
        {8, 30, 30, 1, 1, KD_ACT_NONE, 2, 1},    /* the largest padded plane taken (1,024) */
        {8, 31, 31, 1, 1, KD_ACT_NONE, 2, 0},    /* one past it: the plane kernels */
        {7, 7, 7, 1, 1, KD_ACT_NONE, 2, 0},      /* no whole block */
    };
    kd_par_min = 1; /* the team splits even these small shapes */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i], 70 + i, 0);
    /* a weight of inf: the blocks would make NaN at every border point */
    check_case(&cases[2], 90, 1);
    check_case(&cases[7], 91, 1);
    kd_par_min = KD_PAR_MIN;
}
