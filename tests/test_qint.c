/* test_qint.c - the integer arithmetic of full-integer models (kd_qint.h): the requantization
 * against a separately written 64-bit reference at every edge and by hand, and each integer
 * kernel against a double-precision reference of the same arithmetic (and, where it means
 * something, against the real-valued operation within a quantization step). */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kd_qint.h"
#include "kd_rng.h"
#include "kd_test.h"

/* ---- The reference: the same arithmetic written as exact integer divisions ---- */

static int64_t floor_div(int64_t n, int64_t d) {
    int64_t q = n / d;
    return (n % d != 0 && n < 0) ? q - 1 : q;
}

/* x * mult / 2^31, halves toward +infinity, the one unrepresentable result saturated. */
static int64_t ref_high_mul(int64_t x, int64_t mult) {
    if (x == INT32_MIN && mult == INT32_MIN) return INT32_MAX;
    return floor_div(x * mult + ((int64_t)1 << 30), (int64_t)1 << 31);
}

/* x / 2^e, halves away from zero. */
static int64_t ref_div_pot(int64_t x, int e) {
    if (e == 0) return x;
    int64_t n = x < 0 ? -x : x;
    int64_t q = (n + ((int64_t)1 << (e - 1))) >> e;
    return x < 0 ? -q : q;
}

static int32_t ref_apply(int32_t x, kd_qmul m) {
    int64_t v = x;
    if (m.shift > 0) {
        v = v * ((int64_t)1 << m.shift);
        v = v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : v;
    }
    v = ref_high_mul(v, m.mult);
    return (int32_t)(m.shift < 0 ? ref_div_pot(v, -m.shift) : v);
}

static int8_t ref_store(double acc, kd_qmul m, kd_qout o) {
    if (!(fabs(acc) <= INT32_MAX)) abort(); /* the tests keep sums inside int32 */
    int64_t y = o.zp + ref_apply((int32_t)acc, m);
    return (int8_t)(y < o.lo ? o.lo : y > o.hi ? o.hi : y);
}

KD_TEST(qint_multiplier_from_real_by_hand) {
    kd_qmul m;
    CHECK(kd_qmul_from_real(0.5, &m) == 0);
    CHECK_EQ_INT(m.mult, 1 << 30); CHECK_EQ_INT(m.shift, 0);
    CHECK(kd_qmul_from_real(0.75, &m) == 0);
    CHECK_EQ_INT(m.mult, 1610612736); CHECK_EQ_INT(m.shift, 0);
    CHECK(kd_qmul_from_real(1.0, &m) == 0);
    CHECK_EQ_INT(m.mult, 1 << 30); CHECK_EQ_INT(m.shift, 1);
    CHECK(kd_qmul_from_real(0.01, &m) == 0); /* 0.01 = 0.64 * 2^-6 */
    CHECK_EQ_INT(m.mult, 1374389535); CHECK_EQ_INT(m.shift, -6);
    /* Just below 1: the Q31 rounding reaches 2^31 and carries into the shift. */
    CHECK(kd_qmul_from_real(1.0 - ldexp(1, -40), &m) == 0);
    CHECK_EQ_INT(m.mult, 1 << 30); CHECK_EQ_INT(m.shift, 1);
    CHECK(kd_qmul_from_real(ldexp(1, -32), &m) == 0); /* shift -31: the smallest kept */
    CHECK_EQ_INT(m.mult, 1 << 30); CHECK_EQ_INT(m.shift, -31);
    CHECK(kd_qmul_from_real(ldexp(1, -33), &m) == 0);
    CHECK_EQ_INT(m.mult, 0); CHECK_EQ_INT(m.shift, 0);
    CHECK(kd_qmul_from_real(ldexp(1, 29), &m) == 0); /* shift 30: the largest */
    CHECK_EQ_INT(m.mult, 1 << 30); CHECK_EQ_INT(m.shift, 30);
    CHECK(kd_qmul_from_real(ldexp(1, 30), &m) == -1);
    CHECK(kd_qmul_from_real(-0.5, &m) == -1);
    CHECK(kd_qmul_from_real(NAN, &m) == -1);
    CHECK(kd_qmul_from_real(INFINITY, &m) == -1);
    CHECK(kd_qmul_check((kd_qmul){1 << 30, -31}) == 0);
    CHECK(kd_qmul_check((kd_qmul){0, 0}) == 0);
    CHECK(kd_qmul_check((kd_qmul){(1 << 30) - 1, 0}) == -1);
    CHECK(kd_qmul_check((kd_qmul){1 << 30, 31}) == -1);
    CHECK(kd_qmul_check((kd_qmul){1 << 30, -32}) == -1);
    /* Every multiplier is within half a Q31 step of the real value. */
    kd_rng r;
    kd_rng_seed(&r, 7);
    for (int i = 0; i < 10000; i++) {
        double x = ldexp(0.5 + 0.5 * kd_rng_uniform(&r), (int)kd_rng_below(&r, 60) - 31);
        CHECK(kd_qmul_from_real(x, &m) == 0 && kd_qmul_check(m) == 0);
        CHECK_CLOSE(ldexp(m.mult, m.shift - 31), x, 0, ldexp(1, -31));
    }
}

KD_TEST(qint_requantize_by_hand) {
    kd_qmul half = {1 << 30, 0}, quarter = {1 << 30, -1};
    CHECK_EQ_INT(kd_qmul_apply(3, half), 2);    /* 1.5 -> 2 */
    CHECK_EQ_INT(kd_qmul_apply(-3, half), -1);  /* -1.5 -> -1: the high mul rounds halves up */
    CHECK_EQ_INT(kd_qmul_apply(-1, half), 0);   /* -0.5 -> 0 */
    CHECK_EQ_INT(kd_qmul_apply(1, quarter), 1); /* 0.25: 0.5 -> 1, then 1/2 = 0.5 -> 1 (twice) */
    CHECK_EQ_INT(kd_qmul_apply(-1, quarter), 0); /* -0.25: -0.5 -> 0 (up), then 0 */
    CHECK_EQ_INT(kd_qmul_apply(6, quarter), 2); /* 1.5: 3 / 2 = 1.5 -> 2 (away from zero) */
    CHECK_EQ_INT(kd_qmul_apply(-6, quarter), -2);
    CHECK_EQ_INT(kd_q_high_mul(INT32_MIN, INT32_MIN), INT32_MAX);
    CHECK_EQ_INT(kd_q_high_mul(INT32_MAX, INT32_MAX), INT32_MAX - 1);
    CHECK_EQ_INT(kd_q_div_pot(INT32_MIN, 31), -1);
    CHECK_EQ_INT(kd_q_div_pot(INT32_MAX, 31), 1);
    CHECK_EQ_INT(kd_q_div_pot(-5, 0), -5);
    /* 2^20 * 2^30 saturates to INT32_MAX before the multiply by 0.5 (rounded up). */
    CHECK_EQ_INT(kd_qmul_apply(1 << 20, (kd_qmul){1 << 30, 30}), 1 << 30);
    CHECK_EQ_INT(kd_qmul_apply(-(1 << 20), (kd_qmul){1 << 30, 30}), INT32_MIN / 2);
}

KD_TEST(qint_requantize_matches_the_64_bit_reference_at_every_edge) {
    static const int32_t xs[] = {INT32_MIN, INT32_MIN + 1, -(1 << 30) - 1, -(1 << 30), -65536,
                                 -255, -3, -2, -1, 0, 1, 2, 3, 255, 65535, 1 << 30,
                                 INT32_MAX - 1, INT32_MAX};
    static const int32_t mults[] = {1 << 30, (1 << 30) + 1, 1610612736, INT32_MAX - 1, INT32_MAX};
    static const int shifts[] = {-31, -30, -17, -2, -1, 0, 1, 2, 15, 29, 30};
    int n = 0, bad = 0;
    for (size_t a = 0; a < sizeof xs / sizeof *xs; a++)
        for (size_t b = 0; b < sizeof mults / sizeof *mults; b++)
            for (size_t c = 0; c < sizeof shifts / sizeof *shifts; c++, n++) {
                kd_qmul m = {mults[b], shifts[c]};
                if (kd_qmul_apply(xs[a], m) != ref_apply(xs[a], m) && bad++ < 5)
                    kd_test_fail(__FILE__, __LINE__, "x %d mult %d shift %d: %d, reference %d",
                                 xs[a], m.mult, m.shift, kd_qmul_apply(xs[a], m),
                                 ref_apply(xs[a], m));
            }
    kd_rng r;
    kd_rng_seed(&r, 11);
    for (int i = 0; i < 200000; i++, n++) {
        int32_t x = (int32_t)(uint32_t)kd_rng_u64(&r);
        if (i % 2) x >>= kd_rng_below(&r, 31); /* small values too */
        kd_qmul m = {(int32_t)((1u << 30) + (uint32_t)kd_rng_below(&r, 1u << 30)),
                     (int)kd_rng_below(&r, 62) - 31};
        if (kd_qmul_apply(x, m) != ref_apply(x, m) && bad++ < 5)
            kd_test_fail(__FILE__, __LINE__, "x %d mult %d shift %d: %d, reference %d", x, m.mult,
                         m.shift, kd_qmul_apply(x, m), ref_apply(x, m));
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(n > 200000);
}

/* ---- Kernels ---- */

static void fill_i8(kd_rng *r, int8_t *x, size_t n, int lo, int hi) {
    for (size_t i = 0; i < n; i++) x[i] = (int8_t)(lo + (int)kd_rng_below(r, (uint64_t)(hi - lo + 1)));
}

static kd_qmul qmul(double m) {
    kd_qmul q = {0, 0};
    CHECK(kd_qmul_from_real(m, &q) == 0);
    return q;
}

KD_TEST(qint_dense_matches_the_reference_and_the_real_product) {
    enum { B = 3, IN = 37, OUT = 9 };
    int8_t x[B * IN], w[OUT * IN], y[B * OUT];
    int32_t bias[OUT];
    kd_qmul m[OUT];
    double s_x = 0.05, s_y = 0.4, s_w[OUT];
    kd_rng r;
    kd_rng_seed(&r, 3);
    static const int32_t zps[] = {-128, 0, 127, 17};
    for (size_t z = 0; z < 4; z++) {
        int32_t x_zp = zps[z];
        fill_i8(&r, x, B * IN, -128, 127);
        fill_i8(&r, w, OUT * IN, -127, 127);
        for (int j = 0; j < OUT; j++) {
            s_w[j] = 0.001 * (1 + j);
            bias[j] = (int32_t)kd_rng_below(&r, 20001) - 10000;
            m[j] = qmul(s_x * s_w[j] / s_y);
        }
        kd_qout o = {(int32_t)z * 20 - 30, z == 1 ? (int32_t)z * 20 - 30 : -128, 127}; /* z 1: ReLU */
        kd_qdense(x, x_zp, w, bias, m, o, B, IN, OUT, y);
        int bad = 0, saturated = 0;
        for (int b = 0; b < B; b++)
            for (int j = 0; j < OUT; j++) {
                double acc = bias[j];
                for (int i = 0; i < IN; i++) acc += (double)(x[b * IN + i] - x_zp) * w[j * IN + i];
                int8_t want = ref_store(acc, m[j], o);
                bad += y[b * OUT + j] != want;
                /* The real-valued product lands within one step where it is in range. */
                double real = acc * s_x * s_w[j] / s_y + o.zp;
                if (real > o.lo && real < o.hi) CHECK_CLOSE(y[b * OUT + j], real, 1.0, 0);
                else saturated++;
            }
        CHECK_EQ_INT(bad, 0);
        (void)saturated;
    }
}

static void ref_conv(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *bias,
                     const kd_qmul *m, kd_qout o, const kd_qconv_geom *g, size_t B, int8_t *y) {
    size_t cg = g->C / g->groups, kg = g->K / g->groups;
    for (size_t b = 0; b < B; b++)
        for (size_t k = 0; k < g->K; k++)
            for (size_t oh = 0; oh < g->OH; oh++)
                for (size_t ow = 0; ow < g->OW; ow++) {
                    double acc = bias[k];
                    for (size_t c = 0; c < cg; c++)
                        for (size_t i = 0; i < g->kh; i++)
                            for (size_t j = 0; j < g->kw; j++) {
                                long ih = (long)(oh * g->stride + i) - (long)g->pad;
                                long iw = (long)(ow * g->stride + j) - (long)g->pad;
                                /* A padded tap holds the zero point: it contributes 0. */
                                int32_t v = x_zp;
                                if (ih >= 0 && iw >= 0 && ih < (long)g->H && iw < (long)g->W)
                                    v = x[((b * g->C + k / kg * cg + c) * g->H + (size_t)ih) *
                                              g->W + (size_t)iw];
                                acc += (double)(v - x_zp) *
                                       w[((k * cg + c) * g->kh + i) * g->kw + j];
                            }
                    y[((b * g->K + k) * g->OH + oh) * g->OW + ow] = ref_store(acc, m[k], o);
                }
}

KD_TEST(qint_conv_plain_grouped_depthwise_match_the_reference) {
    static const kd_qconv_geom geoms[] = {
        {4, 7, 6, 5, 3, 3, 1, 1, 1, 7, 6},  /* plain, same padding */
        {6, 8, 8, 4, 3, 3, 2, 1, 2, 4, 4},  /* grouped, stride 2 */
        {5, 6, 7, 5, 3, 3, 1, 1, 5, 6, 7},  /* depthwise */
        {3, 5, 5, 2, 1, 1, 1, 0, 1, 5, 5},  /* pointwise */
    };
    kd_rng r;
    kd_rng_seed(&r, 5);
    for (size_t t = 0; t < sizeof geoms / sizeof *geoms; t++) {
        const kd_qconv_geom *g = &geoms[t];
        size_t B = 2, nx = B * g->C * g->H * g->W, nw = g->K * g->C / g->groups * g->kh * g->kw;
        size_t ny = B * g->K * g->OH * g->OW;
        int8_t *x = malloc(nx), *w = malloc(nw), *y = malloc(ny), *want = malloc(ny);
        int32_t bias[8];
        kd_qmul m[8];
        fill_i8(&r, x, nx, -128, 127);
        fill_i8(&r, w, nw, -127, 127);
        for (size_t k = 0; k < g->K; k++) {
            bias[k] = (int32_t)kd_rng_below(&r, 4001) - 2000;
            m[k] = qmul(0.0005 * (1.0 + (double)k));
        }
        int32_t x_zp = (int32_t)t * 40 - 60;
        kd_qout o = {(int32_t)t - 2, t == 2 ? (int32_t)t - 2 : -128, t == 2 ? 60 : 127}; /* relu6-like */
        kd_qconv2d(x, x_zp, w, bias, m, o, g, B, y);
        ref_conv(x, x_zp, w, bias, m, o, g, B, want);
        CHECK(memcmp(y, want, ny) == 0);
        free(x), free(w), free(y), free(want);
    }
}

KD_TEST(qint_pools_match_the_reference) {
    kd_qconv_geom g = {3, 7, 7, 3, 3, 3, 2, 1, 1, 4, 4};
    int8_t x[2 * 3 * 49], y[2 * 3 * 16];
    kd_rng r;
    kd_rng_seed(&r, 9);
    fill_i8(&r, x, sizeof x, -128, 127);
    x[0] = -128; /* a corner minimum: padding must not win a max */
    kd_qmaxpool(x, &g, 2, y);
    int bad = 0;
    int32_t x_zp = -7;
    for (int p = 0; p < 6; p++)
        for (int oh = 0; oh < 4; oh++)
            for (int ow = 0; ow < 4; ow++) {
                int best = -1000;
                for (int i = 0; i < 3; i++)
                    for (int j = 0; j < 3; j++) {
                        int ih = oh * 2 + i - 1, iw = ow * 2 + j - 1;
                        if (ih >= 0 && iw >= 0 && ih < 7 && iw < 7 && x[p * 49 + ih * 7 + iw] > best)
                            best = x[p * 49 + ih * 7 + iw];
                    }
                bad += y[p * 16 + oh * 4 + ow] != best;
            }
    CHECK_EQ_INT(bad, 0);
    kd_qmul m = qmul(0.7 / 9); /* s_in / (s_out * kh * kw) */
    kd_qout o = {3, -128, 127};
    kd_qavgpool(x, x_zp, m, o, &g, 2, y);
    for (int p = 0; p < 6; p++)
        for (int oh = 0; oh < 4; oh++)
            for (int ow = 0; ow < 4; ow++) {
                double sum = 0;
                for (int i = 0; i < 3; i++)
                    for (int j = 0; j < 3; j++) {
                        int ih = oh * 2 + i - 1, iw = ow * 2 + j - 1;
                        if (ih >= 0 && iw >= 0 && ih < 7 && iw < 7) sum += x[p * 49 + ih * 7 + iw] - x_zp;
                    }
                bad += y[p * 16 + oh * 4 + ow] != ref_store(sum, m, o);
                CHECK_CLOSE(y[p * 16 + oh * 4 + ow], sum * 0.7 / 9 + o.zp, 1.0, 0);
            }
    CHECK_EQ_INT(bad, 0);
    /* Global average: the window is the whole plane. */
    kd_qconv_geom gg = {3, 7, 7, 3, 7, 7, 1, 0, 1, 1, 1};
    kd_qmul mg = qmul(1.0 / 49);
    kd_qavgpool(x, x_zp, mg, (kd_qout){x_zp, -128, 127}, &gg, 2, y);
    for (int p = 0; p < 6; p++) {
        double mean = 0;
        for (int i = 0; i < 49; i++) mean += x[p * 49 + i];
        CHECK_CLOSE(y[p], mean / 49, 1.0, 0);
    }
}

KD_TEST(qint_add_and_concat_rescale_to_the_output) {
    enum { N = 500 };
    int8_t a[N], b[N], c[N], y[N];
    kd_rng r;
    kd_rng_seed(&r, 13);
    fill_i8(&r, a, N, -128, 127);
    fill_i8(&r, b, N, -128, 127);
    fill_i8(&r, c, N, -128, 127);
    a[0] = b[0] = c[0] = 127, a[1] = b[1] = c[1] = -128; /* saturate both ways */
    double s[3] = {0.02, 0.05, 0.031}, s_out = 0.09, smax = 0.05;
    int32_t zp[3] = {-128, 5, 127};
    const int8_t *xs[3] = {a, b, c};
    kd_qmul m_in[3];
    for (int k = 0; k < 3; k++) m_in[k] = qmul(s[k] / (2 * smax));
    kd_qmul m_out = qmul(2 * smax / (ldexp(1, KD_QADD_SHIFT) * s_out));
    kd_qout o = {-10, -128, 127};
    kd_qadd(xs, zp, m_in, 3, m_out, o, N, y);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        double sum = 0, real = 0;
        for (int k = 0; k < 3; k++) {
            sum += ref_apply((xs[k][i] - zp[k]) * (1 << KD_QADD_SHIFT), m_in[k]);
            real += s[k] * (xs[k][i] - zp[k]);
        }
        bad += y[i] != ref_store(sum, m_out, o);
        double want = real / s_out + o.zp;
        if (want > -128 && want < 127) CHECK_CLOSE(y[i], want, 1.0, 0);
        else CHECK(y[i] == (want <= -128 ? -128 : 127));
    }
    CHECK_EQ_INT(bad, 0);
    kd_qrescale(b, zp[1], qmul(s[1] / s_out), o, N, y);
    for (int i = 0; i < N; i++) {
        bad += y[i] != ref_store(b[i] - zp[1], qmul(s[1] / s_out), o);
        CHECK_CLOSE(y[i], s[1] * (b[i] - zp[1]) / s_out + o.zp, 1.0, 0);
    }
    CHECK_EQ_INT(bad, 0);
}

static double hardswish(double x, double p) { return (void)p, x * fmin(fmax(x + 3, 0), 6) / 6; }
static double tanh2(double x, double p) { return (void)p, tanh(x); }

KD_TEST(qint_lookup_tables_are_the_rounded_function) {
    int8_t t[256], x[256], y[256];
    double s_in = 6.0 / 255, s_out = 1.0 / 128;
    kd_qlut_build(tanh2, 0, s_in, 0, s_out, 0, t);
    for (int q = -128; q < 128; q++) x[q + 128] = (int8_t)q;
    kd_qlut_apply(t, x, 256, y);
    CHECK_EQ_INT(y[128], 0);                        /* tanh(0) */
    CHECK_EQ_INT(y[255], 127);                      /* tanh(3.0) * 128 = 127.3 */
    CHECK_EQ_INT(y[0], -127);                       /* tanh(-3.01) * 128 = -127.4 */
    CHECK_EQ_INT(y[128 + 10], (int)lround(tanh(10 * s_in) * 128));
    kd_qlut_build(hardswish, 0, 0.05, -20, 0.04, -100, t);
    kd_qlut_apply(t, x, 256, y);
    for (int q = -128; q < 128; q++) {
        double v = round(hardswish(0.05 * (q + 20), 0) / 0.04) - 100;
        CHECK_EQ_INT(y[q + 128], v < -128 ? -128 : v > 127 ? 127 : v);
    }
    CHECK_EQ_INT(y[-20 + 128], -100); /* hardswish(0) = 0 lands on the zero point */
}
