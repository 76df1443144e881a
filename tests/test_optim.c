/* test_optim.c - optimizers, clipping and schedules against tests/optim_reference.py (an
 * independent double-precision implementation of the torch.optim algorithms), plus
 * hand-computed checks that need no Python. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_optim.h"
#include "kd_rng.h"
#include "kd_test.h"

#define NP 3     /* parameters in the reference problem */
#define NSTEP 5  /* steps in the reference problem */

/* A value from the reference is double; ours ran in float: rtol 1e-5 with a small floor. */
#define REF_ATOL 1e-6
#define REF_RTOL 1e-5

typedef struct {
    char name[64];
    kd_optim_cfg cfg;
    float lr;
    int have_traj[NSTEP], have_norm[NSTEP];
    double traj[NSTEP][NP], norm[NSTEP];
} ref_opt;

typedef struct {
    char name[64];
    kd_sched_cfg cfg;
    int n_lr;
    uint64_t t[32];
    double lr[32];
} ref_sched;

static ref_opt *find_opt(ref_opt *o, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(o[i].name, name)) return &o[i];
    return NULL;
}

static ref_sched *find_sched(ref_sched *s, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s[i].name, name)) return &s[i];
    return NULL;
}

KD_TEST(optim_matches_python_reference) {
    static char out[1 << 16];
    int rc = kd_test_run("python3 tests/optim_reference.py", out, sizeof out);
    if (rc == 127) {
        kd_test_skip("python3 not found");
        return;
    }
    CHECK_EQ_INT(rc, 0);
    if (rc != 0) {
        kd_test_fail(__FILE__, __LINE__, "optim_reference.py failed:\n%s", out);
        return;
    }
    static ref_opt opts[32];
    static ref_sched scheds[16];
    int n_opt = 0, n_sched = 0, have_init = 0, have_grad[NSTEP] = {0}, n_lines = 0;
    double init[NP] = {0}, grads[NSTEP][NP] = {{0}};
    for (char *save = NULL, *line = strtok_r(out, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char name[64];
        int k, kind, nest;
        double a, b, c, d, e, f, g, h;
        unsigned long long w, ss, tot, t;
        n_lines++;
        if (sscanf(line, "init %lf %lf %lf", &a, &b, &c) == 3) {
            init[0] = a, init[1] = b, init[2] = c, have_init = 1;
        } else if (sscanf(line, "grad %d %lf %lf %lf", &k, &a, &b, &c) == 4 && k >= 1 &&
                   k <= NSTEP) {
            grads[k - 1][0] = a, grads[k - 1][1] = b, grads[k - 1][2] = c, have_grad[k - 1] = 1;
        } else if (sscanf(line, "opt %63s %d %lf %lf %d %lf %lf %lf %lf %lf", name, &kind, &a, &b,
                          &nest, &c, &d, &e, &f, &g) == 10 && n_opt < 32) {
            ref_opt *o = &opts[n_opt++];
            memset(o, 0, sizeof *o);
            strcpy(o->name, name);
            o->cfg = kd_optim_defaults((kd_optim_kind)kind);
            o->lr = (float)a;
            o->cfg.momentum = (float)b;
            o->cfg.nesterov = nest;
            o->cfg.beta1 = (float)c;
            o->cfg.beta2 = (float)d;
            o->cfg.eps = (float)e;
            o->cfg.weight_decay = (float)f;
            o->cfg.clip_norm = (float)g;
        } else if (sscanf(line, "traj %63s %d %lf %lf %lf", name, &k, &a, &b, &c) == 5) {
            ref_opt *o = find_opt(opts, n_opt, name);
            CHECK(o != NULL && k >= 1 && k <= NSTEP);
            if (!o || k < 1 || k > NSTEP) continue;
            o->traj[k - 1][0] = a, o->traj[k - 1][1] = b, o->traj[k - 1][2] = c;
            o->have_traj[k - 1] = 1;
        } else if (sscanf(line, "norm %63s %d %lf", name, &k, &a) == 3) {
            ref_opt *o = find_opt(opts, n_opt, name);
            CHECK(o != NULL && k >= 1 && k <= NSTEP);
            if (!o || k < 1 || k > NSTEP) continue;
            o->norm[k - 1] = a, o->have_norm[k - 1] = 1;
        } else if (sscanf(line, "sched %63s %d %lf %llu %llu %lf %llu %lf", name, &kind, &a, &w,
                          &ss, &b, &tot, &c) == 8 && n_sched < 16) {
            ref_sched *s = &scheds[n_sched++];
            memset(s, 0, sizeof *s);
            strcpy(s->name, name);
            s->cfg.kind = (kd_sched_kind)kind;
            s->cfg.base_lr = (float)a;
            s->cfg.warmup_steps = w;
            s->cfg.step_size = ss;
            s->cfg.gamma = (float)b;
            s->cfg.total_steps = tot;
            s->cfg.min_lr = (float)c;
        } else if (sscanf(line, "lr %63s %llu %lf", name, &t, &h) == 3) {
            ref_sched *s = find_sched(scheds, n_sched, name);
            CHECK(s != NULL && s->n_lr < 32);
            if (!s || s->n_lr >= 32) continue;
            s->t[s->n_lr] = t, s->lr[s->n_lr] = h, s->n_lr++;
        } else {
            kd_test_fail(__FILE__, __LINE__, "unparsed reference line: %s", line);
        }
    }
    CHECK(have_init);
    for (int k = 0; k < NSTEP; k++) CHECK(have_grad[k]);
    /* The reference covers every optimizer, clipping and schedule kind; if it printed less,
     * the comparison below would silently check less. */
    CHECK(n_opt >= 10 && n_sched >= 7 && n_lines > 200);
    if (kd_test_failed_now()) return;

    double worst = 0;
    for (int i = 0; i < n_opt; i++) {
        ref_opt *o = &opts[i];
        float p[NP], m[NP] = {0}, v[NP] = {0}, gr[NP];
        for (int j = 0; j < NP; j++) p[j] = (float)init[j];
        for (int k = 0; k < NSTEP; k++) {
            CHECK(o->have_traj[k] && o->have_norm[k]);
            for (int j = 0; j < NP; j++) gr[j] = (float)grads[k][j];
            double norm = kd_optim_step(&o->cfg, p, gr, m, v, NP, o->lr, (uint64_t)k + 1);
            CHECK_CLOSE(norm, o->norm[k], REF_ATOL, REF_RTOL);
            for (int j = 0; j < NP; j++) {
                double diff = fabs(p[j] - o->traj[k][j]);
                if (diff > worst) worst = diff;
                if (!(diff <= REF_ATOL + REF_RTOL * fabs(o->traj[k][j])))
                    kd_test_fail(__FILE__, __LINE__, "%s step %d param %d: %.9g vs ref %.9g",
                                 o->name, k + 1, j, (double)p[j], o->traj[k][j]);
            }
        }
    }
    for (int i = 0; i < n_sched; i++) {
        ref_sched *s = &scheds[i];
        CHECK(s->n_lr > 0);
        for (int k = 0; k < s->n_lr; k++) {
            float lr = kd_sched_lr(&s->cfg, s->t[k]);
            if (!(fabs(lr - s->lr[k]) <= 1e-9 + REF_RTOL * fabs(s->lr[k])))
                kd_test_fail(__FILE__, __LINE__, "schedule %s t=%llu: %.9g vs ref %.9g", s->name,
                             (unsigned long long)s->t[k], (double)lr, s->lr[k]);
        }
    }
    if (kd_test_failed_now()) printf("  largest parameter difference: %.3g\n", worst);
}

KD_TEST(optim_sgd_and_momentum_by_hand) {
    /* p = 1, g = 0.5, lr = 0.1: plain SGD gives 0.95. */
    kd_optim_cfg c = kd_optim_defaults(KD_OPT_SGD);
    float p = 1.0f, g = 0.5f, buf = 123.0f;  /* buf garbage: step 1 must overwrite it */
    kd_optim_step(&c, &p, &g, NULL, NULL, 1, 0.1f, 1);
    CHECK_CLOSE(p, 0.95, 1e-7, 0);
    /* Momentum 0.9: step 1 buf = g = 0.5, p = 1 - 0.05; step 2 with g = -0.75:
     * buf = 0.45 - 0.75 = -0.3, p = 0.95 + 0.03 = 0.98. Nesterov step 2 instead moves by
     * lr * (g + mu * buf) = 0.1 * (-0.75 - 0.27) -> 0.905 + 0.102. */
    c.momentum = 0.9f;
    p = 1.0f, g = 0.5f;
    kd_optim_step(&c, &p, &g, &buf, NULL, 1, 0.1f, 1);
    CHECK_CLOSE(buf, 0.5, 1e-7, 0);
    CHECK_CLOSE(p, 0.95, 1e-7, 0);
    g = -0.75f;
    kd_optim_step(&c, &p, &g, &buf, NULL, 1, 0.1f, 2);
    CHECK_CLOSE(buf, -0.3, 1e-6, 0);
    CHECK_CLOSE(p, 0.98, 1e-6, 0);
    c.nesterov = 1;
    p = 1.0f, g = 0.5f;
    kd_optim_step(&c, &p, &g, &buf, NULL, 1, 0.1f, 1);  /* 1 - 0.1 * (0.5 + 0.45) */
    CHECK_CLOSE(p, 0.905, 1e-6, 0);
    g = -0.75f;
    kd_optim_step(&c, &p, &g, &buf, NULL, 1, 0.1f, 2);
    CHECK_CLOSE(p, 1.007, 1e-6, 0);
    /* L2 weight decay adds wd * p to the gradient: g = 0 still shrinks p by lr * wd * p. */
    c = kd_optim_defaults(KD_OPT_SGD);
    c.weight_decay = 0.5f;
    p = 2.0f, g = 0.0f;
    kd_optim_step(&c, &p, &g, NULL, NULL, 1, 0.1f, 1);
    CHECK_CLOSE(p, 1.9, 1e-6, 0);
    CHECK(g == 0.0f);  /* the caller's gradient is not modified by decay */
}

KD_TEST(optim_adam_first_step_moves_by_lr_sign) {
    /* From zero moments, bias correction makes m_hat = g and v_hat = g^2, so each parameter
     * moves by lr * g / (|g| + eps) = lr * sign(g) up to eps / |g|. */
    static const float g0[] = {0.3f, -2.0f, 1e-3f, -50.0f, 7.0f};
    const size_t n = sizeof g0 / sizeof g0[0];
    for (int kind = KD_OPT_ADAM; kind <= KD_OPT_ADAMW; kind++) {
        kd_optim_cfg c = kd_optim_defaults((kd_optim_kind)kind);
        float p[5], g[5], m[5] = {0}, v[5] = {0};
        for (size_t i = 0; i < n; i++) p[i] = 1.0f + (float)i, g[i] = g0[i];
        kd_optim_step(&c, p, g, m, v, n, 0.01f, 1);
        for (size_t i = 0; i < n; i++) {
            double want = 1.0 + (double)i - 0.01 * (g0[i] > 0 ? 1 : -1);
            CHECK_CLOSE(p[i], want, 1e-6, 0);
            /* (1 - beta) from the float betas, as the optimizer sees them. */
            CHECK_CLOSE(m[i], (1.0 - (double)c.beta1) * g0[i], 0, 1e-6);
            CHECK_CLOSE(v[i], (1.0 - (double)c.beta2) * g0[i] * g0[i], 0, 1e-6);
        }
    }
    /* AdamW decays the parameter itself, Adam adds the decay to the gradient: with g = 0 and
     * p = 1, AdamW gives exactly 1 - lr * wd; Adam's L2 gradient wd * p is normalised away,
     * moving by lr * sign(wd * p). */
    kd_optim_cfg c = kd_optim_defaults(KD_OPT_ADAMW);
    c.weight_decay = 0.5f;
    float p = 1.0f, g = 0.0f, m = 0, v = 0;
    kd_optim_step(&c, &p, &g, &m, &v, 1, 0.1f, 1);
    CHECK_CLOSE(p, 0.95, 1e-7, 0);
    c.kind = KD_OPT_ADAM;
    p = 1.0f, g = 0.0f, m = 0, v = 0;
    kd_optim_step(&c, &p, &g, &m, &v, 1, 0.1f, 1);
    CHECK_CLOSE(p, 0.9, 1e-6, 0);
}

/* Adam(W) takes the gradient norm inside its update loop, SGD in a pass of its own: over the
 * same gradients (several 16K chunks, a length that is no multiple of 8) both return the same
 * bits, and the same value as one double sum. */
KD_TEST(optim_adam_norm_inside_the_update_matches_a_separate_pass) {
    enum { N = 40003 };
    float *p = malloc(N * sizeof *p), *g = malloc(N * sizeof *g), *m = calloc(N, sizeof *m),
          *v = calloc(N, sizeof *v);
    kd_rng r;
    kd_rng_seed(&r, 5);
    double want = 0.0;
    for (size_t i = 0; i < N; i++) {
        p[i] = kd_rng_normal(&r);
        g[i] = (float)(kd_rng_normal(&r) * (i % 97 == 0 ? 1e3 : 1e-2));
        want += (double)g[i] * g[i];
    }
    kd_optim_cfg sgd = kd_optim_defaults(KD_OPT_SGD), adam = kd_optim_defaults(KD_OPT_ADAM),
                 adamw = kd_optim_defaults(KD_OPT_ADAMW);
    const double n_sgd = kd_optim_step(&sgd, p, g, NULL, NULL, N, 0.0f, 1);
    const double n_adam = kd_optim_step(&adam, p, g, m, v, N, 1e-3f, 1);
    const double n_adamw = kd_optim_step(&adamw, p, g, m, v, N, 1e-3f, 2);
    CHECK(memcmp(&n_sgd, &n_adam, sizeof n_sgd) == 0);
    CHECK(memcmp(&n_sgd, &n_adamw, sizeof n_sgd) == 0);
    CHECK_CLOSE(n_adam, sqrt(want), 0, 1e-12);
    free(p);
    free(g);
    free(m);
    free(v);
}

KD_TEST(optim_clipping_to_norm_one) {
    /* |(6, 0, 8)| = 10; clipped to 1 the gradient is (0.6, 0, 0.8) and the step returns 10. */
    kd_optim_cfg c = kd_optim_defaults(KD_OPT_SGD);
    c.clip_norm = 1.0f;
    float p[3] = {0, 0, 0}, g[3] = {6.0f, 0.0f, 8.0f};
    double norm = kd_optim_step(&c, p, g, NULL, NULL, 3, 1.0f, 1);
    CHECK_CLOSE(norm, 10.0, 1e-6, 0);
    double after = sqrt((double)g[0] * g[0] + (double)g[1] * g[1] + (double)g[2] * g[2]);
    CHECK_CLOSE(after, 1.0, 1e-6, 0);
    CHECK_CLOSE(g[0], 0.6, 1e-6, 0);
    CHECK_CLOSE(g[2], 0.8, 1e-6, 0);
    CHECK_CLOSE(p[0], -0.6, 1e-6, 0);  /* the update used the clipped gradient */
    CHECK_CLOSE(p[2], -0.8, 1e-6, 0);
    /* Below the threshold nothing changes (bitwise). */
    c.clip_norm = 20.0f;
    g[0] = 6.0f, g[1] = 0.0f, g[2] = 8.0f;
    norm = kd_optim_step(&c, p, g, NULL, NULL, 3, 0.0f, 1);
    CHECK_CLOSE(norm, 10.0, 1e-6, 0);
    CHECK(g[0] == 6.0f && g[2] == 8.0f);
    /* torch's 1e-6 in the denominator matters for tiny gradients: norm 2e-6 clipped to 1e-6
     * scales by 1e-6 / 3e-6 = 1/3, not 1/2. */
    c.clip_norm = 1e-6f;
    g[0] = 2e-6f, g[1] = 0.0f, g[2] = 0.0f;
    norm = kd_optim_step(&c, p, g, NULL, NULL, 3, 0.0f, 1);
    CHECK_CLOSE(norm, 2e-6, 1e-12, 0);
    CHECK_CLOSE(g[0], 2e-6 / 3, 1e-12, 0);
    /* A NaN gradient shows up in the returned norm. */
    g[1] = NAN;
    norm = kd_optim_step(&c, p, g, NULL, NULL, 3, 0.0f, 1);
    CHECK(isnan(norm));
}

KD_TEST(sched_cosine_warmup_step_by_hand) {
    kd_sched_cfg s = {0};
    s.kind = KD_SCHED_COSINE;
    s.base_lr = 0.1f;
    s.min_lr = 0.001f;
    s.total_steps = 100;
    CHECK_CLOSE(kd_sched_lr(&s, 0), 0.1, 1e-8, 0);
    CHECK_CLOSE(kd_sched_lr(&s, 50), (0.1 + 0.001) / 2, 1e-8, 0);
    CHECK_CLOSE(kd_sched_lr(&s, 100), 0.001, 1e-8, 0);
    CHECK_CLOSE(kd_sched_lr(&s, 1000), 0.001, 1e-8, 0);  /* holds at the floor */
    for (uint64_t t = 1; t <= 100; t++) CHECK(kd_sched_lr(&s, t) <= kd_sched_lr(&s, t - 1));
    /* Warmup 10: lr ramps base/10, 2 base/10, ..., base at t = 9, then cosine from base. */
    s.warmup_steps = 10;
    for (uint64_t t = 0; t < 10; t++)
        CHECK_CLOSE(kd_sched_lr(&s, t), 0.1 * (double)(t + 1) / 10.0, 1e-8, 0);
    CHECK_CLOSE(kd_sched_lr(&s, 10), 0.1, 1e-8, 0);
    CHECK_CLOSE(kd_sched_lr(&s, 55), (0.1 + 0.001) / 2, 1e-8, 0);
    CHECK_CLOSE(kd_sched_lr(&s, 100), 0.001, 1e-8, 0);
    /* Degenerate: total <= warmup leaves base_lr after warmup (no division by zero). */
    s.total_steps = 10;
    CHECK_CLOSE(kd_sched_lr(&s, 10), 0.1, 1e-8, 0);
    CHECK_CLOSE(kd_sched_lr(&s, 500), 0.1, 1e-8, 0);
    /* Step: gamma^floor(t / step_size); step_size 0 means no decay. */
    kd_sched_cfg st = {0};
    st.kind = KD_SCHED_STEP;
    st.base_lr = 1.0f;
    st.step_size = 3;
    st.gamma = 0.5f;
    CHECK_CLOSE(kd_sched_lr(&st, 2), 1.0, 0, 0);
    CHECK_CLOSE(kd_sched_lr(&st, 3), 0.5, 0, 0);
    CHECK_CLOSE(kd_sched_lr(&st, 9), 0.125, 0, 0);
    st.step_size = 0;
    CHECK_CLOSE(kd_sched_lr(&st, 9), 1.0, 0, 0);
    kd_sched_cfg k = {0};
    k.kind = KD_SCHED_CONSTANT;
    k.base_lr = 0.25f;
    CHECK_CLOSE(kd_sched_lr(&k, 12345), 0.25, 0, 0);
}

/* kd_optim_step_and_zero (what the trainer calls) makes the same update as kd_optim_step, bit
 * for bit, and leaves every gradient 0, for SGD with momentum, Adam and AdamW, with and without
 * clipping, over more than one 16K-float chunk (test_step checks that a training step leaves
 * the model's gradients at 0). */
KD_TEST(optim_step_and_zero_matches_step_and_clears_gradients) {
    enum { N = 40000 };
    float *p1 = malloc(N * sizeof *p1), *p2 = malloc(N * sizeof *p2);
    float *g1 = malloc(N * sizeof *g1), *g2 = malloc(N * sizeof *g2);
    float *m1 = calloc(N, sizeof *m1), *m2 = calloc(N, sizeof *m2);
    float *v1 = calloc(N, sizeof *v1), *v2 = calloc(N, sizeof *v2);
    const kd_optim_kind kinds[] = {KD_OPT_SGD, KD_OPT_ADAM, KD_OPT_ADAMW};
    kd_rng r;
    kd_rng_seed(&r, 4);
    for (int k = 0; k < 3; k++)
        for (int clip = 0; clip < 2; clip++) {
            kd_optim_cfg c = kd_optim_defaults(kinds[k]);
            c.momentum = 0.9f;
            c.weight_decay = 0.01f;
            c.clip_norm = clip ? 1.0f : 0.0f;
            for (size_t i = 0; i < N; i++) p1[i] = p2[i] = kd_rng_normal(&r);
            memset(m1, 0, N * sizeof *m1);
            memset(m2, 0, N * sizeof *m2);
            memset(v1, 0, N * sizeof *v1);
            memset(v2, 0, N * sizeof *v2);
            for (uint64_t t = 1; t <= 3; t++) {
                for (size_t i = 0; i < N; i++) g1[i] = g2[i] = kd_rng_normal(&r);
                double n1 = kd_optim_step(&c, p1, g1, m1, v1, N, 0.01f, t);
                double n2 = kd_optim_step_and_zero(&c, p2, g2, m2, v2, N, 0.01f, t);
                CHECK(n1 == n2);
            }
            CHECK(memcmp(p1, p2, N * sizeof *p1) == 0);
            CHECK(memcmp(m1, m2, N * sizeof *m1) == 0);
            CHECK(memcmp(v1, v2, N * sizeof *v1) == 0);
            size_t nonzero = 0;
            for (size_t i = 0; i < N; i++) nonzero += g2[i] != 0.0f;
            CHECK_EQ_INT(nonzero, 0);
        }
    free(p1);
    free(p2);
    free(g1);
    free(g2);
    free(m1);
    free(m2);
    free(v1);
    free(v2);
}
