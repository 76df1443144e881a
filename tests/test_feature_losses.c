/* test_feature_losses.c - the feature losses on a pair of inner values: hint (an adapter of the
 * student value against the teacher's, mean squared error) and at (attention transfer): a case
 * of each by hand, a separately written double-precision reference (the adapter as one matrix
 * product over the whole batch, the attention maps through their definition), central
 * differences of the gradient with respect to the student value and the adapter's weight and
 * bias (the teacher's value is a constant target), and the shape rules with their messages. */
#include <math.h>
#include <string.h>

#include "../src/core/test_hooks.h"
#include "kd_loss.h"
#include "kd_rng.h"
#include "kd_test.h"
#include "kd_threads.h"

static void fill(kd_rng *r, float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = (kd_rng_uniform(r) * 2.0f - 1.0f) * scale;
}

/* ---- By hand ---- */

KD_TEST(feature_hint_by_hand) {
    /* One sample, student [2, 1, 2], teacher [1, 1, 2], adapter w = [0.5, -1], bias 0.25:
     * a = 0.25 + 0.5 * (1, 2) - (3, 4) = (-2.25, -2.75), errors against (0, 1) are
     * (-2.25, -3.75), L = (5.0625 + 14.0625) / 2 = 9.5625, dL/da = e (2 e / 2). */
    const kd_feature_dims d = {2, 1, 2};
    const float vs[4] = {1, 2, 3, 4}, vt[2] = {0, 1}, w[2] = {0.5f, -1}, b[1] = {0.25f};
    float dvs[4] = {0}, dw[2] = {0}, db[1] = {0}, a[2];
    double L = kd_loss_hint(&d, vs, vt, w, b, 1, 1.0, dvs, dw, db, a);
    CHECK_CLOSE(L, 9.5625, 1e-12, 0);
    CHECK_CLOSE(dw[0], -2.25 * 1 - 3.75 * 2, 1e-6, 0);
    CHECK_CLOSE(dw[1], -2.25 * 3 - 3.75 * 4, 1e-6, 0);
    CHECK_CLOSE(db[0], -6.0, 1e-6, 0);
    const double want[4] = {0.5 * -2.25, 0.5 * -3.75, -1 * -2.25, -1 * -3.75};
    for (size_t i = 0; i < 4; i++) CHECK_CLOSE(dvs[i], want[i], 1e-6, 0);
    /* The gradients are added, times the weight: a second call at weight 0.5 adds half. */
    L = kd_loss_hint(&d, vs, vt, w, b, 1, 0.5, dvs, dw, db, a);
    CHECK_CLOSE(L, 9.5625, 1e-12, 0);
    CHECK_CLOSE(db[0], -9.0, 1e-6, 0);
    CHECK_CLOSE(dvs[3], 1.5 * 3.75, 1e-6, 0);
}

KD_TEST(feature_at_by_hand) {
    /* One channel at two positions: the student's map (1, 1) normalises to (1, 1) / sqrt 2, the
     * teacher's (4, 0) to (1, 0); L = ((1/sqrt2 - 1)^2 + 1/2) / 2 = 1 - 1/sqrt2. */
    const kd_feature_dims d = {1, 1, 2};
    const float vs[2] = {1, 1}, vt[2] = {2, 0};
    float dvs[2] = {0};
    double scratch[4];
    double L = kd_loss_at(&d, vs, vt, 1, 1.0, dvs, scratch);
    CHECK_CLOSE(L, 1.0 - 1.0 / sqrt(2.0), 1e-12, 0);
    /* g = (u_s - u_t) (2 / 2) = (1/sqrt2 - 1, 1/sqrt2), u.g = 1/2 - 1/sqrt2 + 1/2 = 1 - 1/sqrt2,
     * dq = (g - u (u.g)) / sqrt2, dv = dq * 2 v / C = 2 dq. */
    const double r = 1.0 / sqrt(2.0), ug = 1.0 - r;
    const double dq0 = ((r - 1.0) - r * ug) / sqrt(2.0), dq1 = (r - r * ug) / sqrt(2.0);
    CHECK_CLOSE(dvs[0], 2 * dq0, 1e-7, 0);
    CHECK_CLOSE(dvs[1], 2 * dq1, 1e-7, 0);
    /* The map is scale-free: the student value times 3 has the same loss, a third the grad. */
    const float vs3[2] = {3, 3};
    float d3[2] = {0};
    CHECK_CLOSE(kd_loss_at(&d, vs3, vt, 1, 1.0, d3, scratch), L, 1e-12, 0);
    CHECK_CLOSE(d3[0], dvs[0] / 3.0, 1e-7, 0);
    /* Equal maps: zero loss and zero gradient. */
    const float same[2] = {2, 2};
    float dz[2] = {0};
    CHECK_CLOSE(kd_loss_at(&d, same, vs3, 1, 1.0, dz, scratch), 0.0, 1e-15, 0);
    CHECK(fabs(dz[0]) < 1e-12 && fabs(dz[1]) < 1e-12);
}

/* ---- A separately written reference in double ---- */

#define B_ 3
#define CS 4
#define CT 5
#define HW 6  /* positions: [C, 2, 3] */

/* hint: the adapter as one product A (Ct, B * P) = W (Ct, Cs) X (Cs, B * P) over the batch
 * laid out channel-major, then the mean squared error over every element. */
static double ref_hint(const float *vs, const float *vt, const float *w, const float *b) {
    static double X[CS][B_ * HW], A[CT][B_ * HW];
    for (size_t i = 0; i < B_; i++)
        for (size_t c = 0; c < CS; c++)
            for (size_t p = 0; p < HW; p++) X[c][i * HW + p] = vs[(i * CS + c) * HW + p];
    double se = 0.0;
    for (size_t o = 0; o < CT; o++)
        for (size_t k = 0; k < B_ * HW; k++) {
            A[o][k] = b[o];
            for (size_t c = 0; c < CS; c++) A[o][k] += (double)w[o * CS + c] * X[c][k];
            const size_t i = k / HW, p = k % HW;
            const double e = A[o][k] - vt[(i * CT + o) * HW + p];
            se += e * e;
        }
    return se / (B_ * CT * HW);
}

/* hint on [D] values (D = CS * HW): the dense adapter written as a dot product per output. */
static double ref_dense(const float *vs, const float *vt, const float *w, const float *b) {
    double se = 0.0;
    for (size_t i = 0; i < B_; i++)
        for (size_t o = 0; o < CT; o++) {
            double a = b[o];
            for (size_t k = 0; k < CS * HW; k++) a += (double)w[o * CS * HW + k] * vs[i * CS * HW + k];
            se += (a - vt[i * CT + o]) * (a - vt[i * CT + o]);
        }
    return se / (B_ * CT);
}

/* at: per sample the channel mean of squares, divided by its Euclidean norm. */
static double ref_at(const float *vs, const float *vt, size_t cs, size_t ct) {
    double total = 0.0;
    for (size_t i = 0; i < B_; i++) {
        double qs[HW], qt[HW], ns = 0.0, nt = 0.0;
        for (size_t p = 0; p < HW; p++) {
            qs[p] = qt[p] = 0.0;
            for (size_t c = 0; c < cs; c++) qs[p] += pow(vs[(i * cs + c) * HW + p], 2) / cs;
            for (size_t c = 0; c < ct; c++) qt[p] += pow(vt[(i * ct + c) * HW + p], 2) / ct;
            ns += qs[p] * qs[p];
            nt += qt[p] * qt[p];
        }
        for (size_t p = 0; p < HW; p++) total += pow(qs[p] / sqrt(ns) - qt[p] / sqrt(nt), 2);
    }
    return total / (B_ * HW);
}

/* Central difference of f at x[k] (float steps; values near 1). */
#define H 1e-3f
typedef double (*loss_fn)(void *ctx);
static double central(float *x, size_t k, loss_fn f, void *ctx) {
    const float x0 = x[k];
    x[k] = x0 + H;
    double up = f(ctx);
    x[k] = x0 - H;
    double down = f(ctx);
    x[k] = x0;
    return (up - down) / (double)((x0 + H) - (x0 - H));
}

typedef struct {
    float vs[B_ * CS * HW], vt[B_ * CT * HW], w[CT * CS], b[CT];
} feature_case;

/* [D] values: the student's [CS * HW] (the same floats as feature_case's), the teacher's [CT]. */
typedef struct {
    float vs[B_ * CS * HW], vt[B_ * CT], w[CT * CS * HW], b[CT];
} dense_case;

/* The hint gradients are checked against central differences of the double references: the
 * loss's own value comes from float products, whose rounding (~1e-7 of the value) over a step
 * of 2e-3 would be noise of the gradients' own size. */
static double hint_ref_value(void *ctx) {
    feature_case *c = ctx;
    return ref_hint(c->vs, c->vt, c->w, c->b);
}

static double dense_ref_value(void *ctx) {
    dense_case *c = ctx;
    return ref_dense(c->vs, c->vt, c->w, c->b);
}

static double at_value(void *ctx) {
    feature_case *c = ctx;
    const kd_feature_dims d = {CS, CT, HW};
    double scratch[2 * HW];
    return kd_loss_at(&d, c->vs, c->vt, B_, 1.0, NULL, scratch);
}

static void check_grad(const char *what, float *x, const float *g, size_t n, loss_fn f,
                       void *ctx) {
    for (size_t k = 0; k < n; k++) {
        double num = central(x, k, f, ctx);
        if (fabs(num - g[k]) > 2e-4 * fmax(fabs(num) + fabs(g[k]), 1e-2))
            kd_test_fail(__FILE__, __LINE__, "%s[%zu]: analytic %.9g, numeric %.9g", what, k,
                         (double)g[k], num);
    }
}

KD_TEST(feature_hint_matches_reference_and_finite_differences) {
    feature_case c;
    kd_rng rng;
    kd_rng_seed(&rng, 11);
    fill(&rng, c.vs, sizeof c.vs / sizeof *c.vs, 1.0f);
    fill(&rng, c.vt, sizeof c.vt / sizeof *c.vt, 1.0f);
    fill(&rng, c.w, sizeof c.w / sizeof *c.w, 0.5f);
    fill(&rng, c.b, sizeof c.b / sizeof *c.b, 0.2f);
    const kd_feature_dims d = {CS, CT, HW};
    float dvs[B_ * CS * HW] = {0}, dw[CT * CS] = {0}, db[CT] = {0}, a[B_ * CT * HW];
    double L = kd_loss_hint(&d, c.vs, c.vt, c.w, c.b, B_, 1.0, dvs, dw, db, a);
    /* The adapter's output is a float product (as a layer's): the value agrees with the double
     * reference to float rounding, not to double's. */
    CHECK_CLOSE(L, ref_hint(c.vs, c.vt, c.w, c.b), 0, 1e-6);
    check_grad("hint d/dvs", c.vs, dvs, B_ * CS * HW, hint_ref_value, &c);
    check_grad("hint d/dw", c.w, dw, CT * CS, hint_ref_value, &c);
    check_grad("hint d/db", c.b, db, CT, hint_ref_value, &c);
    /* [D] values: the dense adapter, one product over the batch (its own path in the code). */
    const kd_feature_dims dd = {CS * HW, CT, 1};
    dense_case e;
    memcpy(e.vs, c.vs, sizeof e.vs);
    fill(&rng, e.w, CT * CS * HW, 0.3f);
    fill(&rng, e.vt, B_ * CT, 1.0f);
    fill(&rng, e.b, CT, 0.2f);
    float dv2[B_ * CS * HW] = {0}, dw2[CT * CS * HW] = {0}, db2[CT] = {0};
    L = kd_loss_hint(&dd, e.vs, e.vt, e.w, e.b, B_, 1.0, dv2, dw2, db2, a);
    CHECK_CLOSE(L, ref_dense(e.vs, e.vt, e.w, e.b), 0, 1e-6);
    check_grad("dense hint d/dvs", e.vs, dv2, B_ * CS * HW, dense_ref_value, &e);
    check_grad("dense hint d/dw", e.w, dw2, CT * CS * HW, dense_ref_value, &e);
    check_grad("dense hint d/db", e.b, db2, CT, dense_ref_value, &e);
    /* Without a bias the adapter's output is w x alone. */
    float zero[CT] = {0};
    CHECK_CLOSE(kd_loss_hint(&dd, e.vs, e.vt, e.w, NULL, B_, 1.0, NULL, NULL, NULL, a),
                ref_dense(e.vs, e.vt, e.w, zero), 0, 1e-6);
}

/* hint's products share samples out among the team (its parallel loops forced on here): the
 * value and every gradient have the same bits on one thread and on three. */
KD_TEST(feature_hint_same_bits_on_any_thread_count) {
    enum { NB = 9, NS = 7, NT = 11, NP = 13, NV = NB * NS * NP, NU = NB * NT * NP };
    static float vs[NV], vt[NU], w[NT * NS], b[NT], dv[2][NV], dw[2][NT * NS], db[2][NT], a[NU];
    kd_rng rng;
    kd_rng_seed(&rng, 13);
    fill(&rng, vs, NV, 1.0f);
    fill(&rng, vt, NU, 1.0f);
    fill(&rng, w, NT * NS, 0.5f);
    fill(&rng, b, NT, 0.2f);
    const int def = kd_threads_get();
    kd_par_min = 1;
    /* The same floats as NB * NP [D] values of NS (one product over the batch) and as NB
     * [NS, NP] values (one product per sample). */
    for (size_t P = 1; P <= NP; P += NP - 1) {
        const kd_feature_dims d = {NS, NT, P};
        double L[2];
        for (int k = 0; k < 2; k++) {
            kd_threads_set(k ? 3 : 1);
            memset(dv[k], 0, sizeof dv[k]);
            memset(dw[k], 0, sizeof dw[k]);
            memset(db[k], 0, sizeof db[k]);
            L[k] = kd_loss_hint(&d, vs, vt, w, b, NB * NP / P, 0.7, dv[k], dw[k], db[k], a);
        }
        CHECK(L[0] == L[1]);
        CHECK(memcmp(dv[0], dv[1], sizeof dv[0]) == 0);
        CHECK(memcmp(dw[0], dw[1], sizeof dw[0]) == 0);
        CHECK(memcmp(db[0], db[1], sizeof db[0]) == 0);
    }
    kd_par_min = KD_PAR_MIN;
    kd_threads_set(def);
}

KD_TEST(feature_at_matches_reference_and_finite_differences) {
    feature_case c;
    kd_rng rng;
    kd_rng_seed(&rng, 12);
    fill(&rng, c.vs, sizeof c.vs / sizeof *c.vs, 1.0f);
    fill(&rng, c.vt, sizeof c.vt / sizeof *c.vt, 1.0f);
    const kd_feature_dims d = {CS, CT, HW};
    float dvs[B_ * CS * HW] = {0};
    double scratch[2 * HW];
    double L = kd_loss_at(&d, c.vs, c.vt, B_, 1.0, dvs, scratch);
    CHECK_CLOSE(L, ref_at(c.vs, c.vt, CS, CT), 1e-12, 1e-12);
    CHECK(L > 1e-3);
    check_grad("at d/dvs", c.vs, dvs, B_ * CS * HW, at_value, &c);
    /* The teacher's value is read, never written or differentiated. */
    float vt0[B_ * CT * HW];
    memcpy(vt0, c.vt, sizeof vt0);
    kd_loss_at(&d, c.vs, c.vt, B_, 2.0, dvs, scratch);
    CHECK(memcmp(vt0, c.vt, sizeof vt0) == 0);
}

/* ---- Shapes ---- */

KD_TEST(feature_shapes_must_match_and_errors_name_both) {
    kd_feature_dims d;
    kd_err err;
    kd_shape s = {3, {16, 7, 7}}, t = {3, {64, 7, 7}};
    CHECK_EQ_INT(kd_loss_feature_shapes("distill.losses[1]", 0, &s, &t, &d, &err), KD_OK);
    CHECK(d.Cs == 16 && d.Ct == 64 && d.P == 49);
    kd_shape t2 = {3, {64, 14, 14}};
    CHECK_EQ_INT(kd_loss_feature_shapes("distill.losses[1]", 0, &s, &t2, &d, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "distill.losses[1]");
    CHECK_CONTAINS(err.msg, "[16, 7, 7]");
    CHECK_CONTAINS(err.msg, "[64, 14, 14]");
    CHECK_CONTAINS(err.msg, "spatial sizes must match");
    kd_shape a = {1, {100}}, b = {1, {256}};
    CHECK_EQ_INT(kd_loss_feature_shapes("hint", 0, &a, &b, &d, &err), KD_OK);
    CHECK(d.Cs == 100 && d.Ct == 256 && d.P == 1);
    /* Attention maps need positions; a [D] and a [C, H, W] value never pair. */
    CHECK_EQ_INT(kd_loss_feature_shapes("at", 1, &a, &b, &d, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "expected both [C, H, W]");
    CHECK_EQ_INT(kd_loss_feature_shapes("hint", 0, &a, &t, &d, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "[100]");
}
