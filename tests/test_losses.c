/* test_losses.c - the loss table: term keys, the list's value and gradient against a separately
 * written double-precision reference of each definition (DKD by masking and renormalising, as
 * its paper writes it), finite differences through every entry (mixtures and warm-up included),
 * DKD on a 3-class example by hand, and distill.losses in the config. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_config.h"
#include "kd_loss.h"
#include "kd_rng.h"
#include "kd_test.h"
#include "kd_train.h"

#define RB 4  /* batch rows in the random cases */
#define RC 6  /* classes in the random cases */

static void fill(kd_rng *r, float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = (kd_rng_uniform(r) * 2.0f - 1.0f) * scale;
}

static kd_loss_entry entry(kd_loss_type type, double weight, float T) {
    kd_loss_entry e = {.type = type, .weight = weight, .temperature = T, .alpha = 1.0f,
                       .beta = 8.0f};
    return e;
}

/* ---- The reference: each definition in double, naive, written apart from src/loss ---- */

static void ref_softmax(const float *z, double *p, size_t C, double T) {
    double m = z[0], s = 0;
    for (size_t j = 1; j < C; j++) m = z[j] > m ? z[j] : m;
    for (size_t j = 0; j < C; j++) s += (p[j] = exp((z[j] - m) / T));
    for (size_t j = 0; j < C; j++) p[j] /= s;
}

/* The teachers' mixture at T: sum_k w_k softmax(zt[k] / T). */
static void ref_target(const float *const *zt, const float *w, size_t K, size_t i, size_t C,
                       double T, double *pt) {
    double p[RC];
    for (size_t j = 0; j < C; j++) pt[j] = 0;
    for (size_t k = 0; k < K; k++) {
        ref_softmax(zt[k] + i * C, p, C, T);
        for (size_t j = 0; j < C; j++) pt[j] += (w ? w[k] : 1.0) * p[j];
    }
}

static double ref_kl(const double *p, const double *q, size_t C) {
    double s = 0;
    for (size_t j = 0; j < C; j++)
        if (p[j] > 0) s += p[j] * log(p[j] / q[j]);
    return s;
}

/* DKD of one row as Zhao et al. write it: b = (p_y, 1 - p_y) from the full softmaxes, and the
 * non-target distributions as the softmaxes with the target masked out, renormalised. */
static void ref_dkd_row(const float *zs, const double *pt, int y, size_t C, double T,
                        double *tckd, double *nckd) {
    double ps[RC], bs[2], bt[2], hs[RC - 1], ht[RC - 1];
    ref_softmax(zs, ps, C, T);
    bs[0] = ps[y], bs[1] = 1 - ps[y];
    bt[0] = pt[y], bt[1] = 1 - pt[y];
    double ss = 0, st = 0;
    size_t n = 0;
    for (size_t j = 0; j < C; j++)
        if ((int)j != y) ss += ps[j], st += pt[j];
    for (size_t j = 0; j < C; j++)
        if ((int)j != y) hs[n] = ps[j] / ss, ht[n] = pt[j] / st, n++;
    *tckd = T * T * ref_kl(bt, bs, 2);
    *nckd = T * T * ref_kl(ht, hs, n);
}

/* The list's value by the reference, batch mean, terms into term[] in plan order. */
static double ref_list(const kd_loss_list *l, const float *zs, const float *const *zt,
                       const float *w, size_t K, const int32_t *y, size_t B, size_t C,
                       double epoch, double *term) {
    double total = 0;
    size_t t = 0;
    for (size_t e = 0; e < l->n; e++) {
        const kd_loss_entry *en = &l->e[e];
        double T = en->temperature, a = 0, b = 0, pt[RC], ps[RC];
        for (size_t i = 0; i < B; i++) {
            const float *zi = zs + i * C;
            if (en->type == KD_LOSS_KL) {
                ref_target(zt, w, K, i, C, T, pt);
                ref_softmax(zi, ps, C, T);
                a += T * T * ref_kl(pt, ps, C);
            } else if (en->type == KD_LOSS_MSE) {
                for (size_t j = 0; j < C; j++)
                    a += (zt[0][i * C + j] - (double)zi[j]) * (zt[0][i * C + j] - (double)zi[j]);
            } else if (en->type == KD_LOSS_CE) {
                ref_softmax(zi, ps, C, 1.0);
                a -= log(ps[y[i]]);
            } else {
                double tc, nc;
                ref_target(zt, w, K, i, C, T, pt);
                ref_dkd_row(zi, pt, y[i], C, T, &tc, &nc);
                a += tc, b += nc;
            }
        }
        a /= (double)B, b /= (double)B;
        term[t++] = a;
        double v = a, ww = en->weight;
        if (en->type == KD_LOSS_DKD) {
            term[t++] = b;
            v = en->alpha * a + en->beta * b;
            if (en->warmup_epochs > 0 && epoch < en->warmup_epochs) ww *= epoch / en->warmup_epochs;
        }
        total += ww * v;
    }
    return total;
}

/* ---- Term keys ---- */

KD_TEST(losses_plan_names_terms_by_entry_repeat_and_term) {
    kd_loss_list l = {0};
    l.e[l.n++] = entry(KD_LOSS_KL, 0.5, 4);
    l.e[l.n++] = entry(KD_LOSS_CE, 0.1, 0);
    l.e[l.n++] = entry(KD_LOSS_DKD, 1, 4);
    l.e[l.n] = entry(KD_LOSS_KL, 0.2, 1);
    strcpy(l.e[l.n++].name, "sharp");
    l.e[l.n++] = entry(KD_LOSS_KL, 0.2, 8);
    kd_loss_plan p;
    kd_err err;
    CHECK_EQ_INT(kd_loss_plan_init(&p, &l, &err), KD_OK);
    static const char *const want[] = {"loss.kl", "loss.ce", "loss.dkd.tckd", "loss.dkd.nckd",
                                       "loss.sharp", "loss.kl.1"};
    CHECK_EQ_INT(p.n_terms, 6);
    for (size_t k = 0; k < 6 && k < p.n_terms; k++) CHECK(strcmp(p.key[k], want[k]) == 0);
    CHECK_EQ_INT(p.first_term[2], 2);
    CHECK_EQ_INT(p.first_term[4], 5);
    /* A name that repeats another entry's key is refused, naming the entry. */
    strcpy(l.e[3].name, "ce");
    CHECK_EQ_INT(kd_loss_plan_init(&p, &l, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "distill.losses[3]: its term \"loss.ce\"");
    CHECK_EQ_INT(kd_loss_type_find("dkd"), KD_LOSS_DKD);
    CHECK_EQ_INT(kd_loss_type_find("hint"), KD_LOSS_HINT);
    CHECK_EQ_INT(kd_loss_type_find("fitnet"), -1);
}

KD_TEST(losses_legacy_keys_mean_kind_and_ce_entries) {
    kd_distill_cfg d = {0.9f, 3.0f, KD_DISTILL_KL};
    kd_loss_list l;
    kd_loss_list_from_distill(&d, &l);
    CHECK_EQ_INT(l.n, 2);
    CHECK_EQ_INT(l.e[0].type, KD_LOSS_KL);
    CHECK(l.e[0].weight == (double)0.9f && l.e[0].temperature == 3.0f);
    CHECK_EQ_INT(l.e[1].type, KD_LOSS_CE);
    CHECK(l.e[1].weight == 1.0 - (double)0.9f);  /* in double, as the old expression had it */
    d.alpha = 1.0f;
    d.kind = KD_DISTILL_MSE;
    kd_loss_list_from_distill(&d, &l);
    CHECK_EQ_INT(l.n, 1);  /* no ce entry when alpha is 1 */
    CHECK_EQ_INT(l.e[0].type, KD_LOSS_MSE);
    CHECK(kd_loss_list_needs(&l) == (KD_LOSS_NEEDS_TEACHER | KD_LOSS_NEEDS_ALL_LOGITS |
                                     KD_LOSS_ONE_TEACHER));
    char buf[256];
    d = (kd_distill_cfg){0.9f, 4.0f, KD_DISTILL_KL};
    kd_loss_list_from_distill(&d, &l);
    CHECK_CONTAINS(kd_loss_list_formula(&l, buf, sizeof buf),
                   "loss = 0.9 * T^2 * KL(p_t^T || p_s^T) + 0.1 * CE(y, p_s), T = 4");
}

/* ---- DKD by hand ---- */

/* z_s = (1, 0, -1), z_t = (0, 0, 0), y = 0, T = 1, alpha 1, beta 8:
 *   q = p_s(0) = e / (e + 1 + 1/e) = 0.665240955774822, a = p_t(0) = 1/3;
 *   TCKD = 1/3 ln((1/3) / q) + 2/3 ln((2/3) / (1 - q)) = 0.228917337804086;
 *   non-target: p^_s = (1, 1/e) / (1 + 1/e) = (0.731058578630005, 0.268941421369995),
 *   p^_t = (1/2, 1/2): NCKD = 1/2 ln(0.5 / 0.731058...) + 1/2 ln(0.5 / 0.268941...)
 *   = 0.120114506958278; the entry: TCKD + 8 NCKD.
 * Gradient (B = 1, T = 1), d = q - a: dz_0 = d; dz_j = -d p^_j + 8 (p^_j - 1/2) (j = 1, 2). */
KD_TEST(losses_dkd_three_classes_by_hand) {
    const float zs[3] = {1, 0, -1}, zt[3] = {0, 0, 0};
    const float *ztp[1] = {zt};
    const int32_t y[1] = {0};
    kd_loss_list l = {1, {entry(KD_LOSS_DKD, 1, 1)}};
    kd_loss_plan p;
    kd_err err;
    CHECK_EQ_INT(kd_loss_plan_init(&p, &l, &err), KD_OK);
    kd_loss_batch b = {zs, 1, 3, ztp, NULL, 1, y, 1.0, NULL};
    kd_loss_terms t;
    float dz[3];
    kd_loss_eval(&p, &b, &t, dz);
    CHECK_EQ_INT(t.n_terms, 2);
    CHECK_CLOSE(t.term[0], 0.228917337804086, 1e-12, 0);
    CHECK_CLOSE(t.term[1], 0.120114506958278, 1e-12, 0);
    CHECK_CLOSE(t.total, 0.228917337804086 + 8 * 0.120114506958278, 1e-12, 0);
    CHECK_CLOSE(t.soft, t.total, 0, 0);  /* the first teacher entry */
    CHECK_CLOSE(t.hard, -log(0.665240955774822), 1e-12, 0);  /* the log's label term */
    const double d = 0.665240955774822 - 1.0 / 3, h1 = 0.731058578630005, h2 = 0.268941421369995;
    CHECK_CLOSE(dz[0], d, 1e-6, 0);
    CHECK_CLOSE(dz[1], -d * h1 + 8 * (h1 - 0.5), 1e-6, 0);
    CHECK_CLOSE(dz[2], -d * h2 + 8 * (h2 - 0.5), 1e-6, 0);
    /* Warm-up: at epoch 2 of 4 the entry weighs half, its terms unchanged. */
    l.e[0].warmup_epochs = 4;
    CHECK_EQ_INT(kd_loss_plan_init(&p, &l, &err), KD_OK);
    b.epoch = 2;
    kd_loss_eval(&p, &b, &t, dz);
    CHECK_CLOSE(t.term[0], 0.228917337804086, 1e-12, 0);
    CHECK_CLOSE(t.total, 0.5 * (0.228917337804086 + 8 * 0.120114506958278), 1e-12, 0);
    CHECK_CLOSE(dz[0], 0.5 * d, 1e-6, 0);
}

/* ---- Every type against the reference and finite differences ---- */

static double list_total(const kd_loss_plan *p, const kd_loss_batch *b) {
    kd_loss_terms t;
    kd_loss_eval(p, b, &t, NULL);
    return t.total;
}

/* Compares value, terms and gradient of list l with the reference and central differences. */
static void check_list(const kd_loss_list *l, size_t K, double epoch, uint64_t seed) {
    kd_rng r;
    kd_rng_seed(&r, seed);
    float zs[RB * RC], zt[3][RB * RC], dz[RB * RC];
    /* Summing to 1 exactly, as a teacher set's weights should: DKD's 1 - a is the teacher's
     * non-target mass, which otherwise differs from 1 - p_t(y) by the weights' excess. */
    float w[3] = {0.5f, 0.25f, 0.25f};
    if (K == 2) w[0] = 0.75f, w[1] = 0.25f;
    int32_t y[RB];
    fill(&r, zs, RB * RC, 3.0f);
    for (size_t k = 0; k < K; k++) fill(&r, zt[k], RB * RC, 3.0f);
    for (size_t i = 0; i < RB; i++) y[i] = (int32_t)kd_rng_below(&r, RC);
    const float *ztp[3] = {zt[0], zt[1], zt[2]};
    const float *wp = K > 1 ? w : NULL;
    kd_loss_plan p;
    kd_err err;
    CHECK_EQ_INT(kd_loss_plan_init(&p, l, &err), KD_OK);
    kd_loss_batch b = {zs, RB, RC, ztp, wp, K, y, epoch, NULL};
    kd_loss_terms t;
    kd_loss_eval(&p, &b, &t, dz);
    double term[KD_MAX_LOSS_TERMS];
    double want = ref_list(l, zs, ztp, wp, K, y, RB, RC, epoch, term);
    CHECK_CLOSE(t.total, want, 1e-9, 1e-9);
    CHECK_EQ_INT(t.n_terms, p.n_terms);
    for (size_t k = 0; k < p.n_terms; k++) CHECK_CLOSE(t.term[k], term[k], 1e-9, 1e-9);
    for (size_t k = 0; k < RB * RC; k++) {
        const float h = 1.0f / 128.0f, z0 = zs[k];
        zs[k] = z0 + h;
        double hp = (double)zs[k] - z0, lp = list_total(&p, &b);
        zs[k] = z0 - h;
        double hm = z0 - (double)zs[k], lm = list_total(&p, &b);
        zs[k] = z0;
        double fd = (lp - lm) / (hp + hm);
        if (fabs(fd - dz[k]) > 2e-4 + 2e-3 * fabs(fd))
            kd_test_fail(__FILE__, __LINE__, "seed %llu K %zu: dz[%zu] = %.8g, FD %.8g",
                         (unsigned long long)seed, K, k, (double)dz[k], fd);
    }
}

KD_TEST(losses_each_type_matches_reference_and_finite_differences) {
    for (uint64_t seed = 1; seed <= 3; seed++) {
        kd_loss_list kl = {2, {entry(KD_LOSS_KL, 0.7, 2.5f), entry(KD_LOSS_CE, 0.3, 0)}};
        check_list(&kl, 1, 1, seed);
        check_list(&kl, 3, 1, seed);
        kd_loss_list mse = {2, {entry(KD_LOSS_MSE, 0.4, 0), entry(KD_LOSS_CE, 1.5, 0)}};
        check_list(&mse, 1, 1, seed);
        kd_loss_list dkd = {1, {entry(KD_LOSS_DKD, 1, 4)}};
        check_list(&dkd, 1, 1, seed);
        check_list(&dkd, 2, 1, seed);
        dkd.e[0].alpha = 0.5f, dkd.e[0].beta = 2.0f, dkd.e[0].temperature = 1.5f;
        dkd.e[0].warmup_epochs = 5;
        check_list(&dkd, 1, 2, seed);  /* weight 2/5 of the way */
        /* Every type at once, two of them twice. */
        kd_loss_list all = {5, {entry(KD_LOSS_KL, 0.3, 4), entry(KD_LOSS_DKD, 0.5, 2),
                                entry(KD_LOSS_CE, 0.2, 0), entry(KD_LOSS_KL, 0.1, 1),
                                entry(KD_LOSS_MSE, 0.01, 0)}};
        check_list(&all, 1, 1, seed);
    }
}

/* A confident teacher (target mass ~1: its non-target part underflows) and a confident student
 * give finite DKD values and gradients. */
KD_TEST(losses_dkd_extreme_logits_stay_finite) {
    const float zs[4] = {80, -80, 0, -40}, zt[4] = {900, 0, -900, 3};
    const float *ztp[1] = {zt};
    const int32_t y[1] = {0};
    kd_loss_list l = {1, {entry(KD_LOSS_DKD, 1, 1)}};
    kd_loss_plan p;
    kd_err err;
    CHECK_EQ_INT(kd_loss_plan_init(&p, &l, &err), KD_OK);
    kd_loss_batch b = {zs, 1, 4, ztp, NULL, 1, y, 1.0, NULL};
    kd_loss_terms t;
    float dz[4];
    kd_loss_eval(&p, &b, &t, dz);
    CHECK(isfinite(t.total) && isfinite(t.term[0]) && isfinite(t.term[1]));
    CHECK(kd_all_finite(dz, 4));
    CHECK_CLOSE(t.term[1], 0, 0, 0);  /* no teacher mass off the target: NCKD is 0 */
}

/* ---- The step: the list's named terms come out of kd_trainer_step ---- */

static void build_model(kd_model *m, const char *layers, int with_grads, uint64_t seed) {
    kd_err err;
    kd_shape in = {1, {5}};
    kd_rng rng;
    CHECK_EQ_INT(kd_model_init(m, &in, layers, with_grads, &err), KD_OK);
    kd_rng_seed(&rng, seed);
    kd_model_init_weights(m, &rng, KD_INIT_HE);
    CHECK_EQ_INT(kd_model_reserve(m, RB, &err), KD_OK);
}

KD_TEST(losses_step_reports_the_lists_terms_and_refuses_missing_labels) {
    kd_model s = {0}, teacher = {0};
    build_model(&s, "[{\"type\":\"dense\",\"units\":6}]", 1, 3);
    build_model(&teacher, "[{\"type\":\"dense\",\"units\":6},{\"type\":\"tanh\"}]", 0, 4);
    float x[RB * 5];
    int32_t y[RB] = {0, 1, 5, 2};
    kd_rng rng;
    kd_rng_seed(&rng, 5);
    fill(&rng, x, RB * 5, 1.0f);
    kd_loss_list l = {2, {entry(KD_LOSS_DKD, 0.8, 2), entry(KD_LOSS_CE, 0.2, 0)}};
    l.e[0].warmup_epochs = 2;
    /* What the step should report: the list on the same logits (no dropout, no augmentation:
     * the forwards repeat exactly), at epoch 1 of the warm-up. */
    kd_ctx train = {1, &rng, NULL, 0, 0, 0}, eval = {0, NULL, NULL, 0, 0, 0};
    float zs[RB * RC], zt[RB * RC];
    memcpy(zt, kd_model_forward(&teacher, x, RB, &eval), sizeof zt);
    memcpy(zs, kd_model_forward(&s, x, RB, &train), sizeof zs);
    const float *ztp[1] = {zt};
    kd_loss_plan p;
    kd_err err;
    CHECK_EQ_INT(kd_loss_plan_init(&p, &l, &err), KD_OK);
    kd_loss_batch b = {zs, RB, RC, ztp, NULL, 1, y, 1.0, NULL};
    kd_loss_terms want;
    kd_loss_eval(&p, &b, &want, NULL);

    kd_optim_cfg oc = kd_optim_defaults(KD_OPT_SGD);
    kd_sched_cfg sc = {.kind = KD_SCHED_CONSTANT, .base_lr = 0.1f};
    kd_trainer_setup setup = {0};
    setup.model = &s;
    setup.teacher = &teacher;
    setup.losses = &l;
    setup.optim = &oc;
    setup.sched = &sc;
    setup.batch_cap = RB;
    setup.rng = &rng;
    kd_trainer t;
    CHECK_EQ_INT(kd_trainer_init(&t, &setup, &err), KD_OK);
    CHECK(t.use_teacher);
    CHECK_EQ_INT(t.plan.n_terms, 3);
    CHECK(strcmp(t.plan.key[1], "loss.dkd.nckd") == 0 && strcmp(t.plan.key[2], "loss.ce") == 0);
    kd_step_result r;
    CHECK_EQ_INT(kd_trainer_step(&t, x, y, NULL, RB, &r, &err), KD_OK);
    CHECK_EQ_INT(r.loss.n_terms, 3);
    for (size_t k = 0; k < 3; k++) CHECK(r.loss.term[k] == want.term[k]);
    CHECK(r.loss.total == want.total);
    CHECK(r.loss.hard == want.term[2] && r.loss.soft > 0);
    /* dkd needs labels: a batch without them is refused before anything moves. */
    CHECK_EQ_INT(kd_trainer_step(&t, x, NULL, NULL, RB, &r, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "label term");
    kd_trainer_free(&t);
    kd_model_free(&s);
    kd_model_free(&teacher);
}

/* ---- distill.losses in the config ---- */

#define CFG_HEAD "{\"data\": {\"train\": {\"format\": \"idx\", \"path\": \"/i\"}}, " \
                 "\"model\": {\"layers\": [{\"type\": \"relu\"}]}, "
#define TEACHER_ONE "\"teacher\": {\"checkpoint\": \"/t.st\"}, "

static kd_status parse(kd_config *c, const char *text, kd_err *err) {
    return kd_config_parse(c, text, strlen(text), "base.json", "/", NULL, 0, err);
}

KD_TEST(losses_config_list_parses_defaults_and_writes_back) {
    kd_config c;
    kd_err err;
    const char *text = CFG_HEAD TEACHER_ONE "\"distill\": {\"losses\": [{\"type\": \"dkd\"}, "
                       "{\"type\": \"ce\", \"weight\": 0.25, \"name\": \"labels\"}]}}";
    CHECK_EQ_INT(parse(&c, text, &err), KD_OK);
    CHECK_EQ_INT(c.losses.n, 2);
    CHECK_EQ_INT(c.losses.e[0].type, KD_LOSS_DKD);
    CHECK(c.losses.e[0].weight == 1.0 && c.losses.e[0].temperature == 4.0f &&
          c.losses.e[0].alpha == 1.0f && c.losses.e[0].beta == 8.0f &&
          c.losses.e[0].warmup_epochs == 0.0);
    CHECK(strcmp(c.losses.e[1].name, "labels") == 0 && c.losses.e[1].weight == 0.25);
    char *j = cJSON_PrintUnformatted(c.resolved);
    CHECK_CONTAINS(j, "\"distill\":{\"losses\":[{\"type\":\"dkd\",\"weight\":1,\"temperature\":4,"
                      "\"alpha\":1,\"beta\":8,\"warmup_epochs\":0},{\"type\":\"ce\",\"weight\":"
                      "0.25,\"name\":\"labels\"}]}");
    free(j);
    kd_config_free(&c);
    /* The older keys resolve to their list, written exactly (0.9 is a float). */
    CHECK_EQ_INT(parse(&c, CFG_HEAD TEACHER_ONE "\"distill\": {\"alpha\": 0.9}}", &err), KD_OK);
    j = cJSON_PrintUnformatted(c.resolved);
    CHECK_CONTAINS(j, "\"losses\":[{\"type\":\"kl\",\"weight\":0.8999999761581421,"
                      "\"temperature\":4},{\"type\":\"ce\",\"weight\":0.10000002384185791}]");
    kd_config c2;
    CHECK_EQ_INT(parse(&c2, j, &err), KD_OK);  /* and read back to the same weights */
    CHECK(c2.losses.n == 2 && c2.losses.e[0].weight == (double)0.9f &&
          c2.losses.e[1].weight == 1.0 - (double)0.9f);
    CHECK(c2.distill.alpha == 0.9f);
    free(j);
    kd_config_free(&c2);
    kd_config_free(&c);
}

KD_TEST(losses_config_errors_name_the_entry) {
    static const struct {
        const char *json, *want;
    } cases[] = {
        {CFG_HEAD TEACHER_ONE "\"distill\": {\"alpha\": 0.5, \"losses\": [{\"type\": \"kl\"}]}}",
         "distill.alpha: given with distill.losses"},
        {CFG_HEAD TEACHER_ONE "\"distill\": {\"losses\": [{\"type\": \"kld\"}]}}",
         "distill.losses[0].type: expected one of"},
        {CFG_HEAD TEACHER_ONE "\"distill\": {\"losses\": [{\"weight\": 1}]}}",
         "distill.losses[0].type: missing"},
        {CFG_HEAD TEACHER_ONE
         "\"distill\": {\"losses\": [{\"type\": \"kl\", \"tempreature\": 2}]}}",
         "distill.losses[0].tempreature: unknown key (did you mean \"temperature\"?)"},
        {CFG_HEAD TEACHER_ONE "\"distill\": {\"losses\": [{\"type\": \"kl\", \"beta\": 2}]}}",
         "distill.losses[0].beta: not used by type \"kl\""},
        {CFG_HEAD TEACHER_ONE "\"distill\": {\"losses\": []}}", "distill.losses: empty"},
        {CFG_HEAD TEACHER_ONE "\"distill\": {\"losses\": [{\"type\": \"kl\", \"name\": \"a.b\"}]}}",
         "distill.losses[0].name: expected letters, digits and _"},
        {CFG_HEAD TEACHER_ONE "\"distill\": {\"losses\": [{\"type\": \"kl\"}, {\"type\": \"ce\", "
         "\"name\": \"kl\"}]}}", "its term \"loss.kl\" is also an earlier entry's"},
        {"{\"data\": {\"train\": {\"format\": \"idx\", \"path\": \"/i\"}, \"use_labels\": false}, "
         "\"model\": {\"layers\": [{\"type\": \"relu\"}]}, " TEACHER_ONE
         "\"distill\": {\"losses\": [{\"type\": \"dkd\"}]}}",
         "distill.losses[0].type: \"dkd\" needs labels, but data.use_labels is false"},
        {CFG_HEAD "\"teacher\": {\"checkpoint\": \"/t.st\", \"cache\": {\"path\": \"/c.kdc\", "
         "\"top_k\": 3}}, \"distill\": {\"losses\": [{\"type\": \"dkd\"}]}}",
         "teacher.cache.top_k: \"dkd\" needs every logit, but a top-k cache keeps only k"},
        {CFG_HEAD "\"teacher\": {\"ensemble\": [{\"checkpoint\": \"/a.st\"}, {\"checkpoint\": "
         "\"/b.st\"}]}, \"distill\": {\"losses\": [{\"type\": \"mse\"}]}}",
         "distill.losses[0].type: \"mse\" matches one teacher's logits"},
        {CFG_HEAD "\"teacher\": {\"checkpoint\": \"/t.st\", \"cache\": {\"path\": \"/c.kdc\", "
         "\"top_k\": 3}}, \"distill\": {\"losses\": [{\"type\": \"kl\"}, {\"type\": \"kl\", "
         "\"temperature\": 2}]}}", "the kl entries use 4 and 2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kd_config c;
        kd_err err;
        kd_err_clear(&err);
        if (parse(&c, cases[i].json, &err) != KD_EUSAGE) {
            kd_test_fail(__FILE__, __LINE__, "case %zu: accepted", i);
            kd_config_free(&c);
            continue;
        }
        if (!strstr(err.msg, cases[i].want))
            kd_test_fail(__FILE__, __LINE__, "case %zu:\n  expected: %s\n  got:      %s", i,
                         cases[i].want, err.msg);
    }
}
