/* test_loss.c - softmax, cross-entropy and distillation loss: finite differences, the closed
 * form of docs/design.md recomputed here in double, hand-computed values, extreme logits. */
#include <stdlib.h>
#include <string.h>

#include "kd_loss.h"
#include "kd_rng.h"
#include "kd_test.h"

#define TB 3  /* batch rows in the random cases */
#define TC 5  /* classes in the random cases */

static void fill(kd_rng *r, float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = (kd_rng_uniform(r) * 2.0f - 1.0f) * scale;
}

/* Reference softmax of one row at temperature T, in double. */
static void ref_softmax(const float *z, double *p, size_t C, double T) {
    double m = z[0], s = 0;
    for (size_t j = 1; j < C; j++) m = z[j] > m ? z[j] : m;
    for (size_t j = 0; j < C; j++) s += (p[j] = exp((z[j] - m) / T));
    for (size_t j = 0; j < C; j++) p[j] /= s;
}

/* Independent double-precision loss (naive KL sum p_t log(p_t / p_s)) and closed-form
 * gradient (dz, B*C) of docs/design.md. */
static kd_loss_terms ref_distill(const kd_distill_cfg *cfg, const float *zs, const float *zt,
                                 const int32_t *y, size_t B, size_t C, double *dz) {
    double a = cfg->alpha, T = cfg->temperature, soft = 0, hard = 0;
    double ps[16], pt[16], p1[16];
    for (size_t i = 0; i < B; i++) {
        const float *s = zs + i * C, *t = zt + i * C;
        ref_softmax(s, ps, C, T);
        ref_softmax(t, pt, C, T);
        ref_softmax(s, p1, C, 1.0);
        for (size_t j = 0; j < C; j++) {
            double g;
            if (cfg->kind == KD_DISTILL_KL) {
                if (pt[j] > 0) soft += pt[j] * log(pt[j] / ps[j]);
                g = a * T * (ps[j] - pt[j]);
            } else {
                soft += (t[j] - (double)s[j]) * (t[j] - (double)s[j]);
                g = a * 2.0 * ((double)s[j] - t[j]);
            }
            if (y) g += (1 - a) * (p1[j] - (j == (size_t)y[i]));
            dz[i * C + j] = g / (double)B;
        }
        if (y) hard -= log(p1[y[i]]);
    }
    kd_loss_terms r;
    r.soft = (cfg->kind == KD_DISTILL_KL ? T * T : 1.0) * soft / (double)B;
    r.hard = y ? hard / (double)B : 0.0;
    r.total = a * r.soft + (1 - a) * r.hard;
    return r;
}

/* Central difference of the loss w.r.t. z[k], using the float-rounded step actually taken. */
static double fd_distill(const kd_distill_cfg *cfg, float *zs, const float *zt, const int32_t *y,
                         size_t k, float *scratch) {
    const float h = 1.0f / 256.0f, z0 = zs[k];
    zs[k] = z0 + h;
    double zp = zs[k], lp = kd_loss_distill(cfg, zs, zt, y, TB, TC, NULL, scratch).total;
    zs[k] = z0 - h;
    double zm = zs[k], lm = kd_loss_distill(cfg, zs, zt, y, TB, TC, NULL, scratch).total;
    zs[k] = z0;
    return (lp - lm) / (zp - zm);
}

KD_TEST(loss_ce_hand_computed) {
    /* softmax([0, ln 3]) = [1/4, 3/4]: CE with label 1 is ln(4/3), gradient [1/4, -1/4];
     * as a batch of two with the second row labelled 0: mean(ln(4/3), ln 4). */
    const float z[] = {0.0f, (float)log(3.0), 0.0f, (float)log(3.0)};
    const int32_t y1[] = {1}, y2[] = {1, 0};
    float dz[4];
    CHECK_CLOSE(kd_loss_ce(z, y1, 1, 2, dz), log(4.0 / 3.0), 1e-7, 0);
    CHECK_CLOSE(dz[0], 0.25, 1e-7, 0);
    CHECK_CLOSE(dz[1], -0.25, 1e-7, 0);
    CHECK_CLOSE(kd_loss_ce(z, y2, 2, 2, dz), (log(4.0 / 3.0) + log(4.0)) / 2, 1e-7, 0);
    CHECK_CLOSE(dz[0], 0.125, 1e-7, 0);
    CHECK_CLOSE(dz[2], (0.25 - 1.0) / 2, 1e-7, 0);
    CHECK_CLOSE(kd_loss_ce(z, y1, 1, 2, NULL), log(4.0 / 3.0), 1e-7, 0);
    /* Extreme logits: the wrong class by 1e4 costs exactly 1e4 (no overflow, no inf). */
    const float zx[] = {1e4f, -1e4f, 0.0f};
    const int32_t yx[] = {2};
    float dzx[3];
    CHECK_CLOSE(kd_loss_ce(zx, yx, 1, 3, dzx), 1e4, 1e-3, 0);
    CHECK_CLOSE(dzx[0], 1.0, 1e-7, 0);
    CHECK_CLOSE(dzx[2], -1.0, 1e-7, 0);
}

KD_TEST(loss_ce_finite_differences) {
    kd_rng r;
    kd_rng_seed(&r, 11);
    float z[TB * TC], dz[TB * TC];
    const int32_t y[TB] = {0, 4, 2};
    fill(&r, z, TB * TC, 3.0f);
    kd_loss_ce(z, y, TB, TC, dz);
    for (size_t k = 0; k < TB * TC; k++) {
        const float h = 1.0f / 256.0f, z0 = z[k];
        z[k] = z0 + h;
        double zp = z[k], lp = kd_loss_ce(z, y, TB, TC, NULL);
        z[k] = z0 - h;
        double zm = z[k], lm = kd_loss_ce(z, y, TB, TC, NULL);
        z[k] = z0;
        CHECK_CLOSE(dz[k], (lp - lm) / (zp - zm), 2e-6, 1e-4);
    }
}

KD_TEST(loss_distill_finite_differences_and_closed_form) {
    static const float temps[] = {1.0f, 4.0f, 20.0f};
    static const float alphas[] = {0.0f, 0.5f, 1.0f};
    kd_rng r;
    kd_rng_seed(&r, 12);
    float zs[TB * TC], zt[TB * TC], dz[TB * TC], scratch[3 * TB * TC];
    double want[TB * TC];
    const int32_t y[TB] = {1, 3, 0};
    int checked = 0;
    for (int kind = KD_DISTILL_KL; kind <= KD_DISTILL_MSE; kind++)
        for (size_t ti = 0; ti < 3; ti++)
            for (size_t ai = 0; ai < 3; ai++) {
                kd_distill_cfg cfg = {alphas[ai], temps[ti], (kd_distill_kind)kind};
                /* Logits of size ~T so the soft targets are not all flat at T = 20. */
                fill(&r, zs, TB * TC, 2.0f + temps[ti] / 2);
                fill(&r, zt, TB * TC, 2.0f + temps[ti] / 2);
                kd_loss_terms got = kd_loss_distill(&cfg, zs, zt, y, TB, TC, dz, scratch);
                kd_loss_terms ref = ref_distill(&cfg, zs, zt, y, TB, TC, want);
                CHECK_CLOSE(got.soft, ref.soft, 1e-9, 1e-9);
                CHECK_CLOSE(got.hard, ref.hard, 1e-9, 1e-9);
                CHECK_CLOSE(got.total, ref.total, 1e-9, 1e-9);
                CHECK_CLOSE(got.total, cfg.alpha * got.soft + (1 - cfg.alpha) * got.hard, 1e-12,
                            1e-12);
                for (size_t k = 0; k < TB * TC; k++) {
                    CHECK_CLOSE(dz[k], want[k], 1e-7, 1e-5);
                    double fd = fd_distill(&cfg, zs, zt, y, k, scratch);
                    CHECK_CLOSE(dz[k], fd, 1e-5, 1e-3);
                    checked++;
                }
                /* The same value without a gradient buffer. */
                CHECK_CLOSE(kd_loss_distill(&cfg, zs, zt, y, TB, TC, NULL, NULL).total,
                            got.total, 0, 0);
                if (kd_test_failed_now()) {
                    printf("  failing case: kind %d T %g alpha %g\n", kind, cfg.temperature,
                           cfg.alpha);
                    return;
                }
            }
    CHECK_EQ_INT(checked, 2 * 3 * 3 * TB * TC);
}

KD_TEST(loss_distill_hand_computed) {
    /* T = 2, zs = [0, 2 ln 3] -> p_s^T = [1/4, 3/4]; zt = [0, 0] -> p_t^T = [1/2, 1/2].
     * KL = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3); soft = T^2 KL = 2 ln(4/3).
     * hard (label 0): softmax(zs) = [1/10, 9/10] -> ln 10. alpha = 1/2:
     * total = ln(4/3) + ln(10)/2; gradient = 1/2 * 2 * ([1/4, 3/4] - [1/2, 1/2])
     * + 1/2 * ([1/10, 9/10] - [1, 0]) = [-0.7, 0.7]. */
    const float zs[] = {0.0f, (float)(2 * log(3.0))}, zt[] = {0.0f, 0.0f};
    const int32_t y[] = {0};
    float dz[2], scratch[6];
    kd_distill_cfg cfg = {0.5f, 2.0f, KD_DISTILL_KL};
    kd_loss_terms t = kd_loss_distill(&cfg, zs, zt, y, 1, 2, dz, scratch);
    CHECK_CLOSE(t.soft, 2 * log(4.0 / 3.0), 1e-7, 0);
    CHECK_CLOSE(t.hard, log(10.0), 1e-7, 0);
    CHECK_CLOSE(t.total, log(4.0 / 3.0) + log(10.0) / 2, 1e-7, 0);
    CHECK_CLOSE(dz[0], -0.7, 1e-7, 0);
    CHECK_CLOSE(dz[1], 0.7, 1e-7, 0);
    /* MSE: zs = [1, 2], zt = [0, 4]: soft = 1 + 4 = 5, gradient alpha * 2 * [1, -2]. */
    const float ms[] = {1.0f, 2.0f}, mt[] = {0.0f, 4.0f};
    kd_distill_cfg mcfg = {1.0f, 7.0f, KD_DISTILL_MSE};
    t = kd_loss_distill(&mcfg, ms, mt, NULL, 1, 2, dz, scratch);
    CHECK_CLOSE(t.soft, 5.0, 0, 0);
    CHECK_CLOSE(t.total, 5.0, 0, 0);
    CHECK_CLOSE(t.hard, 0.0, 0, 0);
    CHECK_CLOSE(dz[0], 2.0, 0, 0);
    CHECK_CLOSE(dz[1], -4.0, 0, 0);
}

KD_TEST(loss_distill_student_equals_teacher) {
    /* KL is exactly 0 and the gradient is the CE part alone, (1 - alpha) * dCE. */
    kd_rng r;
    kd_rng_seed(&r, 13);
    float z[TB * TC], dz[TB * TC], dce[TB * TC], scratch[3 * TB * TC];
    const int32_t y[TB] = {2, 2, 4};
    fill(&r, z, TB * TC, 5.0f);
    double ce = kd_loss_ce(z, y, TB, TC, dce);
    for (int kind = KD_DISTILL_KL; kind <= KD_DISTILL_MSE; kind++) {
        kd_distill_cfg cfg = {0.7f, 4.0f, (kd_distill_kind)kind};
        kd_loss_terms t = kd_loss_distill(&cfg, z, z, y, TB, TC, dz, scratch);
        CHECK_CLOSE(t.soft, 0.0, 1e-15, 0);
        CHECK_CLOSE(t.hard, ce, 1e-12, 1e-12);
        for (size_t k = 0; k < TB * TC; k++)
            CHECK_CLOSE(dz[k], (1.0 - (double)cfg.alpha) * dce[k], 1e-8, 1e-6);
    }
}

KD_TEST(loss_distill_alpha_one_without_labels) {
    kd_rng r;
    kd_rng_seed(&r, 14);
    float zs[TB * TC], zt[TB * TC], dz[TB * TC], scratch[3 * TB * TC];
    double want[TB * TC];
    fill(&r, zs, TB * TC, 3.0f);
    fill(&r, zt, TB * TC, 3.0f);
    kd_distill_cfg cfg = {1.0f, 3.0f, KD_DISTILL_KL};
    kd_loss_terms t = kd_loss_distill(&cfg, zs, zt, NULL, TB, TC, dz, scratch);
    kd_loss_terms ref = ref_distill(&cfg, zs, zt, NULL, TB, TC, want);
    CHECK(t.soft > 0);
    CHECK_CLOSE(t.hard, 0.0, 0, 0);
    CHECK_CLOSE(t.total, t.soft, 0, 0);
    CHECK_CLOSE(t.total, ref.total, 1e-9, 1e-9);
    for (size_t k = 0; k < TB * TC; k++) CHECK_CLOSE(dz[k], want[k], 1e-7, 1e-5);
}

KD_TEST(loss_distill_soft_gradient_scale_with_temperature) {
    /* The soft gradient is alpha * T * (p_s^T - p_t^T) / B exactly; thanks to the T^2 factor
     * its size stays of the same order as T grows, tending to (Hinton 2015, eq. 3 with
     * zero-mean logits) alpha * ((zs - mean zs) - (zt - mean zt)) / (C * B). */
    kd_rng r;
    kd_rng_seed(&r, 15);
    float zs[TB * TC], zt[TB * TC], dz[TB * TC], scratch[3 * TB * TC];
    fill(&r, zs, TB * TC, 2.0f);
    fill(&r, zt, TB * TC, 2.0f);
    const float alpha = 1.0f;  /* unlabeled: the gradient is the soft part alone */
    double limit[TB * TC], lnorm = 0;
    for (size_t i = 0; i < TB; i++) {
        double ms = 0, mt = 0;
        for (size_t j = 0; j < TC; j++) ms += zs[i * TC + j], mt += zt[i * TC + j];
        ms /= TC, mt /= TC;
        for (size_t j = 0; j < TC; j++) {
            size_t k = i * TC + j;
            limit[k] = alpha * ((zs[k] - ms) - (zt[k] - mt)) / (TC * TB);
            lnorm += limit[k] * limit[k];
        }
    }
    lnorm = sqrt(lnorm);
    static const float temps[] = {1.0f, 4.0f, 20.0f, 100.0f, 1000.0f};
    double prev_err = INFINITY;
    for (size_t ti = 0; ti < 5; ti++) {
        kd_distill_cfg cfg = {alpha, temps[ti], KD_DISTILL_KL};
        kd_loss_distill(&cfg, zs, zt, NULL, TB, TC, dz, scratch);
        double norm = 0, err = 0;
        for (size_t i = 0; i < TB; i++) {
            double ps[TC], pt[TC];
            ref_softmax(zs + i * TC, ps, TC, temps[ti]);
            ref_softmax(zt + i * TC, pt, TC, temps[ti]);
            for (size_t j = 0; j < TC; j++) {
                size_t k = i * TC + j;
                CHECK_CLOSE(dz[k], alpha * temps[ti] * (ps[j] - pt[j]) / TB, 1e-7, 1e-5);
                norm += (double)dz[k] * dz[k];
                err += (dz[k] - limit[k]) * (dz[k] - limit[k]);
            }
        }
        norm = sqrt(norm), err = sqrt(err);
        CHECK(norm > 0.3 * lnorm && norm < 3 * lnorm);  /* same order at every T */
        CHECK(err < prev_err);                          /* converging to the limit */
        prev_err = err;
    }
    CHECK(prev_err < 1e-3 * lnorm);  /* at T = 1000 the gradient is the limit */
}

KD_TEST(softmax_extreme_logits) {
    /* Rows mixing +-1e4 and ordinary values, at temperatures down to 0.5 and up to 100. */
    const float z[] = {
        1e4f,  -1e4f, 0.0f,   1.0f,  /* one dominant class */
        1e4f,  1e4f,  -1e4f,  0.0f,  /* two tied at 1e4 */
        -1e4f, -1e4f, -1e4f,  -1e4f, /* all equal and very negative */
        1e4f,  9999.0f, -3.0f, 2.0f, /* large but close */
        0.0f,  1.0f,  2.0f,   3.0f,  /* ordinary */
    };
    const size_t B = 5, C = 4;
    static const float temps[] = {0.5f, 1.0f, 20.0f, 100.0f};
    float p[20], lp[20], pin[20];
    for (size_t ti = 0; ti < 4; ti++) {
        const float T = temps[ti];
        kd_softmax(z, p, B, C, T);
        kd_log_softmax(z, lp, B, C, T);
        memcpy(pin, z, sizeof z);
        kd_softmax(pin, pin, B, C, T);  /* in place */
        CHECK_FLOATS(pin, p, B * C, 0, 0);
        for (size_t i = 0; i < B; i++) {
            double s = 0;
            double ref[4];
            ref_softmax(z + i * C, ref, C, T);
            for (size_t j = 0; j < C; j++) {
                size_t k = i * C + j;
                CHECK(isfinite(p[k]) && isfinite(lp[k]) && p[k] >= 0 && lp[k] <= 0);
                CHECK_CLOSE(p[k], ref[j], 1e-7, 1e-6);
                s += p[k];
                /* log(softmax) where the probability is representable in float */
                if (p[k] > 1e-30f) CHECK_CLOSE(lp[k], log((double)p[k]), 1e-6, 1e-6);
            }
            CHECK_CLOSE(s, 1.0, 1e-6, 0);
        }
        /* Exact values: row 2 is [1/2, 1/2, 0, 0] with log -ln 2 and -(1e4 - 0)/T - ln 2;
         * row 3 is uniform. */
        CHECK_CLOSE(p[4], 0.5, 1e-7, 0);
        CHECK_CLOSE(lp[4], -log(2.0), 1e-6, 0);
        CHECK_CLOSE(lp[6], -2e4 / T - log(2.0), 0, 1e-6);
        CHECK_CLOSE(lp[7], -1e4 / T - log(2.0), 0, 1e-6);
        for (size_t j = 8; j < 12; j++) {
            CHECK_CLOSE(p[j], 0.25, 1e-7, 0);
            CHECK_CLOSE(lp[j], -log(4.0), 1e-6, 0);
        }
    }
    /* The distillation loss on such logits is finite too (p_t = 0 classes add 0, not NaN). */
    float dz[20], scratch[60];
    int32_t y[5] = {0, 1, 2, 3, 0};
    kd_distill_cfg cfg = {0.5f, 0.5f, KD_DISTILL_KL};
    const float *zt = z + 4;  /* rows shifted by one: teacher differs from student */
    kd_loss_terms t = kd_loss_distill(&cfg, z, zt, y, 4, C, dz, scratch);
    CHECK(isfinite(t.total) && isfinite(t.soft) && t.soft > 0);
    for (size_t k = 0; k < 16; k++) CHECK(isfinite(dz[k]));
}

/* The one-row reporting softmax: each probability is the double-precision value rounded once
 * (a straightforward double loop here), at T = 1 and T = 2.5, with logits far from 0. */
KD_TEST(softmax_row_f64_rounds_each_probability_once) {
    const float z[5] = {1000.25f, 997.5f, 1003.0f, -4.0f, 1003.0f};
    for (int k = 0; k < 2; k++) {
        double T = k ? 2.5 : 1.0, mx = 1003.0, s = 0.0;
        float p[5];
        kd_softmax_row_f64(z, p, 5, (float)T);
        for (int j = 0; j < 5; j++) s += exp(((double)z[j] - mx) / T);
        double total = 0.0;
        for (int j = 0; j < 5; j++) {
            CHECK(p[j] == (float)(exp(((double)z[j] - mx) / T) / s));
            total += p[j];
        }
        CHECK_CLOSE(total, 1.0, 1e-6, 0);
        CHECK(p[2] == p[4] && p[2] > p[0] && p[0] > p[1] && p[3] >= 0.0f);
    }
}
