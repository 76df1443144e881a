/* test_teacher.c - teacher ensembles and views below the command line: the mixed distillation
 * loss against a double-precision reference and finite differences, one teacher bit-identical
 * to kd_loss_distill, the trainer's step with a set of teachers, and augmented views as a pure
 * function of (seed, sample, view). */
#include <math.h>
#include <string.h>

#include "kd_loss.h"
#include "kd_rng.h"
#include "kd_teacher.h"
#include "kd_test.h"
#include "kd_train.h"

#define B 3
#define C 5
#define K 3

static void fill(kd_rng *r, float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = (kd_rng_uniform(r) * 2.0f - 1.0f) * scale;
}

/* The mixed loss, naively in double: p_t = sum_k w_k softmax(zt_k / T), soft = T^2 * mean
 * sum_j p_t log(p_t / p_s), hard = mean CE at T = 1. */
static double ref_mix(const kd_distill_cfg *cfg, const float *zs, const float *const *zt,
                      const float *w, size_t n_t, const int32_t *y) {
    double T = cfg->temperature, a = cfg->alpha, soft = 0, hard = 0;
    for (size_t i = 0; i < B; i++) {
        double pt[C] = {0}, ps[C], s = 0, s1 = 0;
        for (size_t k = 0; k < n_t; k++) {
            double e[C], sk = 0;
            for (size_t j = 0; j < C; j++) sk += (e[j] = exp(zt[k][i * C + j] / T));
            for (size_t j = 0; j < C; j++) pt[j] += w[k] * e[j] / sk;
        }
        for (size_t j = 0; j < C; j++) s += exp(zs[i * C + j] / T), s1 += exp(zs[i * C + j]);
        for (size_t j = 0; j < C; j++) {
            ps[j] = exp(zs[i * C + j] / T) / s;
            soft += pt[j] * log(pt[j] / ps[j]);
        }
        hard += log(s1) - zs[i * C + y[i]];
    }
    return a * T * T * soft / B + (1 - a) * hard / B;
}

KD_TEST(loss_mix_matches_reference_and_finite_differences) {
    kd_rng r;
    kd_rng_seed(&r, 7);
    float zs[B * C], t0[B * C], t1[B * C], t2[B * C], dz[B * C];
    const float *zt[K] = {t0, t1, t2};
    const float w[K] = {0.5f, 0.3f, 0.2f};
    const int32_t y[B] = {1, 4, 0};
    fill(&r, zs, B * C, 3);
    fill(&r, t0, B * C, 4);
    fill(&r, t1, B * C, 4);
    fill(&r, t2, B * C, 4);
    kd_distill_cfg cfg = {0.7f, 2.5f, KD_DISTILL_KL};
    kd_loss_terms lt = kd_loss_distill_mix(&cfg, zs, zt, w, K, y, B, C, dz);
    CHECK_CLOSE(lt.total, ref_mix(&cfg, zs, zt, w, K, y), 1e-9, 1e-9);
    /* Gradient: central differences of the loss itself. */
    for (size_t k = 0; k < B * C; k++) {
        float z0 = zs[k], h = 1.0f / 256.0f;
        zs[k] = z0 + h;
        double lp = kd_loss_distill_mix(&cfg, zs, zt, w, K, y, B, C, NULL).total;
        zs[k] = z0 - h;
        double lm = kd_loss_distill_mix(&cfg, zs, zt, w, K, y, B, C, NULL).total;
        zs[k] = z0;
        CHECK_CLOSE(dz[k], (lp - lm) / (2.0 * h), 2e-5, 1e-3);
    }
    /* The mixture is of probabilities, not logits: averaging the logits gives another loss. */
    float avg[B * C];
    for (size_t i = 0; i < B * C; i++) avg[i] = w[0] * t0[i] + w[1] * t1[i] + w[2] * t2[i];
    double of_avg = kd_loss_distill(&cfg, zs, avg, y, B, C, NULL, NULL).total;
    CHECK(fabs(of_avg - lt.total) > 1e-3);
}

KD_TEST(loss_mix_hand_computed_two_teachers) {
    /* One row, two classes, T = 1, alpha = 1: teachers softmax(0, ln 3) = (1/4, 3/4) and
     * softmax(0, 0) = (1/2, 1/2), equal weights: p_t = (3/8, 5/8). Student logits (0, 0):
     * p_s = (1/2, 1/2). KL = 3/8 ln(3/4) + 5/8 ln(5/4); gradient p_s - p_t = (1/8, -1/8). */
    float zs[2] = {0, 0}, a[2] = {0, (float)log(3.0)}, b[2] = {0, 0}, dz[2];
    const float *zt[2] = {a, b};
    const float w[2] = {0.5f, 0.5f};
    kd_distill_cfg cfg = {1.0f, 1.0f, KD_DISTILL_KL};
    kd_loss_terms lt = kd_loss_distill_mix(&cfg, zs, zt, w, 2, NULL, 1, 2, dz);
    CHECK_CLOSE(lt.soft, 0.375 * log(0.75) + 0.625 * log(1.25), 1e-7, 0);
    CHECK_CLOSE(dz[0], 0.125, 1e-7, 0);
    CHECK_CLOSE(dz[1], -0.125, 1e-7, 0);
}

KD_TEST(loss_mix_one_teacher_is_kd_loss_distill_bit_for_bit) {
    kd_rng r;
    kd_rng_seed(&r, 11);
    float zs[B * C], zt[B * C], d1[B * C], d2[B * C];
    const int32_t y[B] = {0, 2, 3};
    fill(&r, zs, B * C, 6);
    fill(&r, zt, B * C, 6);
    const float *one[1] = {zt};
    const float w[1] = {1.0f};
    kd_distill_cfg cfg = {0.9f, 4.0f, KD_DISTILL_KL};
    kd_loss_terms a = kd_loss_distill(&cfg, zs, zt, y, B, C, d1, NULL);
    kd_loss_terms b = kd_loss_distill_mix(&cfg, zs, one, w, 1, y, B, C, d2);
    CHECK(a.total == b.total && a.soft == b.soft && a.hard == b.hard);
    CHECK(memcmp(d1, d2, sizeof d1) == 0);
}

KD_TEST(loss_mix_underflowing_member_stays_finite) {
    /* A confident teacher whose other classes underflow, mixed with a uniform one: the mixed
     * probability is positive everywhere and the loss finite; two confident teachers that
     * underflow in the same class give p_t = 0 there, which must contribute 0, not NaN. */
    float zs[3] = {0, 1, 2}, a[3] = {0, 0, 1e4f}, b[3] = {0, 0, 0}, c[3] = {1e4f, 0, 1e4f}, dz[3];
    const float w[2] = {0.5f, 0.5f};
    const float *ab[2] = {a, b}, *ac[2] = {a, c};
    kd_distill_cfg cfg = {1.0f, 1.0f, KD_DISTILL_KL};
    kd_loss_terms t1 = kd_loss_distill_mix(&cfg, zs, ab, w, 2, NULL, 1, 3, dz);
    CHECK(isfinite(t1.total) && isfinite(dz[0]) && isfinite(dz[1]) && isfinite(dz[2]));
    kd_loss_terms t2 = kd_loss_distill_mix(&cfg, zs, ac, w, 2, NULL, 1, 3, dz);
    CHECK(isfinite(t2.total) && isfinite(dz[1]));
}

KD_TEST(augment_view_is_a_function_of_seed_sample_and_view) {
    kd_shape s = {3, {1, 6, 6}};
    kd_augment a = {2, 1};
    float x[36], v1[36], v2[36], v3[36];
    for (int i = 0; i < 36; i++) x[i] = (float)i;
    kd_augment_view(&a, &s, x, v1, 5, 1234, 3);
    kd_augment_view(&a, &s, x, v2, 5, 1234, 3);
    CHECK(memcmp(v1, v2, sizeof v1) == 0);
    /* Another view, sample or seed draws again: of 32 tries most differ (25 shifts x 2 flips,
     * so a few may coincide by chance, never all). */
    int differ = 0;
    for (uint32_t v = 0; v < 32; v++) {
        kd_augment_view(&a, &s, x, v3, 5, 1234, v + 4);
        differ += memcmp(v1, v3, sizeof v1) != 0;
    }
    CHECK(differ >= 24);
    kd_augment_view(&a, &s, x, v3, 6, 1234, 3);
    kd_augment_view(&a, &s, x, v2, 5, 1235, 3);
    CHECK(memcmp(v1, v3, sizeof v1) != 0 || memcmp(v1, v2, sizeof v1) != 0);
    /* Each view is a real augmentation: some shift/flip of x (every output value comes from
     * x, so the multiset of pixels is a subset of x's values). */
    for (int i = 0; i < 36; i++) CHECK(v1[i] >= 0 && v1[i] < 36 && v1[i] == floorf(v1[i]));
}

/* The trainer's step with an online set of two identical teachers matches the step with that
 * teacher alone (the mixture of equal distributions is the distribution), within float
 * rounding: the set's path mixes probabilities, the single one uses log-softmax. */
KD_TEST(trainer_step_with_teacher_set_matches_single_teacher) {
    const char *layers = "[{\"type\":\"dense\",\"units\":8},{\"type\":\"relu\"},"
                         "{\"type\":\"dense\",\"units\":4}]";
    kd_shape in = {1, {6}};
    kd_model s1, s2, tm;
    kd_err err;
    kd_rng r1, r2, init;
    CHECK_EQ_INT(kd_model_init(&s1, &in, layers, 1, &err), KD_OK);
    CHECK_EQ_INT(kd_model_init(&s2, &in, layers, 1, &err), KD_OK);
    CHECK_EQ_INT(kd_model_init(&tm, &in, layers, 0, &err), KD_OK);
    kd_rng_seed(&init, 3);
    kd_model_init_weights(&s1, &init, KD_INIT_HE);
    memcpy(s2.params, s1.params, s1.n_params * sizeof(float));
    kd_model_init_weights(&tm, &init, KD_INIT_HE);
    kd_distill_cfg dc = {0.8f, 3.0f, KD_DISTILL_KL};
    kd_optim_cfg oc = kd_optim_defaults(KD_OPT_SGD);
    kd_sched_cfg sc = {0};
    sc.base_lr = 0.1f;
    kd_rng_seed(&r1, 9);
    kd_rng_seed(&r2, 9);
    kd_trainer_setup a = {0};
    a.model = &s1;
    a.teacher = &tm;
    a.distill = &dc;
    a.optim = &oc;
    a.sched = &sc;
    a.batch_cap = 4;
    a.rng = &r1;
    kd_trainer_setup b = a;
    kd_teacher_set set;
    kd_model *both[2] = {&tm, &tm};
    CHECK_EQ_INT(kd_teacher_set_online(&set, both, NULL, 2, 4, &err), KD_OK);
    CHECK_CLOSE(set.weight[0], 0.5, 0, 0);
    b.model = &s2;
    b.teacher = NULL;
    b.teachers = &set;
    b.rng = &r2;
    kd_trainer ta, tb;
    CHECK_EQ_INT(kd_trainer_init(&ta, &a, &err), KD_OK);
    CHECK_EQ_INT(kd_trainer_init(&tb, &b, &err), KD_OK);
    float x[4 * 6];
    int32_t y[4] = {0, 1, 2, 3};
    kd_rng_seed(&init, 4);
    fill(&init, x, 24, 1);
    kd_step_result ra, rb;
    for (int step = 0; step < 3; step++) {
        CHECK_EQ_INT(kd_trainer_step(&ta, x, y, NULL, 4, &ra, &err), KD_OK);
        CHECK_EQ_INT(kd_trainer_step(&tb, x, y, NULL, 4, &rb, &err), KD_OK);
        CHECK_CLOSE(ra.loss.total, rb.loss.total, 1e-6, 1e-6);
    }
    CHECK_FLOATS(s2.params, s1.params, s1.n_params, 1e-6, 1e-5);
    kd_trainer_free(&ta);
    kd_trainer_free(&tb);
    kd_teacher_set_free(&set);
    kd_model_free(&s1);
    kd_model_free(&s2);
    kd_model_free(&tm);
}
