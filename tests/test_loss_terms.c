/* test_loss_terms.c - the loss list's named terms end to end: the run metadata that carries
 * their partial sums, metrics.jsonl (one key per term beside soft and hard, equal to the
 * weighted total), the epoch line, `distill plot --metric loss.dkd.tckd` and an unknown
 * metric's message, and a resume in mid-epoch that continues every term's sum exactly. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/train/train_impl.h"
#include "kd_test.h"
#include "kd_train.h"

#define TINY "configs/tiny.json"

static char g_out[65536];

/* `ENV distill train ARGS` (env may be ""); output in g_out; the exit status. */
#define train(env, ...) kd_test_distillf(g_out, sizeof g_out, env, "train " __VA_ARGS__)

/* A small teacher (784-128-10, one epoch) in DIR/teacher. */
static int make_teacher(const char *dir) {
    return train("", "--config " TINY " --out %s/teacher --epochs 1 --quiet --set "
                 "'model.layers=[{\"type\":\"dense\",\"units\":128},{\"type\":\"relu\"},"
                 "{\"type\":\"dense\",\"units\":10}]'", dir);
}

#define TEACHER "--set 'teacher={\"checkpoint\":\"%s/teacher/best.safetensors\"}' "
/* dkd (alpha 1, beta 8, T 4) weighted 0.5, kl at T 2 weighted 0.3, ce weighted 0.2. */
#define LOSSES                                                                               \
    "--set 'distill={\"losses\":[{\"type\":\"dkd\",\"weight\":0.5},{\"type\":\"kl\","    \
    "\"weight\":0.3,\"temperature\":2},{\"type\":\"ce\",\"weight\":0.2}]}' "
static const char *const k_keys[] = {"loss.dkd.tckd", "loss.dkd.nckd", "loss.kl", "loss.ce"};

static kd_epoch_metrics *read_metrics(const char *dir, const char *run, size_t *n) {
    char p[1024];
    kd_epoch_metrics *rows = NULL;
    kd_err err;
    snprintf(p, sizeof p, "%s/%s/metrics.jsonl", dir, run);
    *n = 0;
    if (kd_metrics_read(p, &rows, n, &err) != KD_OK)
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
    return rows;
}

/* ---- The partial sums of the terms in the "run" metadata ---- */

KD_TEST(loss_terms_partial_sums_round_trip_by_key) {
    static const char keys[2][KD_LOSS_KEY_MAX] = {"loss.dkd.tckd", "loss.ce"};
    double term[2] = {0.30000000000000004, 12.5}, back_term[2] = {-1, -1};
    kd_epoch_sums s = {0}, back = {0};
    s.seen = 32;
    s.n_terms = back.n_terms = 2;
    s.keys = back.keys = keys;
    s.term = term;
    back.term = back_term;
    char *json = kd_run_meta_json(1, 5, NAN, &s, NULL);
    CHECK(json != NULL);
    CHECK_CONTAINS(json, "\"terms\":{\"loss.dkd.tckd\":0.30000000000000004,\"loss.ce\":12.5}");
    kd_err err;
    CHECK_EQ_INT(kd_run_meta_terms("f", json, &back, &err), KD_OK);
    CHECK(back_term[0] == term[0] && back_term[1] == term[1]);
    /* Read by key, not position: the same sums under the keys in the other order. */
    static const char swapped[2][KD_LOSS_KEY_MAX] = {"loss.ce", "loss.dkd.tckd"};
    back.keys = swapped;
    CHECK_EQ_INT(kd_run_meta_terms("f", json, &back, &err), KD_OK);
    CHECK(back_term[0] == 12.5 && back_term[1] == term[0]);
    free(json);
    /* A checkpoint written before the terms were kept: unknown, not 0. */
    back.keys = keys;
    CHECK_EQ_INT(kd_run_meta_terms("f", "{\"partial\":{\"loss\":1}}", &back, &err), KD_OK);
    CHECK(isnan(back_term[0]) && isnan(back_term[1]));
    /* A key the checkpoint lacks, or a value that is not a number: refused, naming it. */
    CHECK_EQ_INT(kd_run_meta_terms("d/last.safetensors", "{\"partial\":{\"terms\":"
                                   "{\"loss.kl\":1,\"loss.ce\":2}}}", &back, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "resume d/last.safetensors: metadata run.partial.terms.loss.dkd.tckd");
    CHECK_CONTAINS(err.msg, "other losses");
    CHECK_EQ_INT(kd_run_meta_terms("f", "{\"partial\":{\"terms\":{\"loss.dkd.tckd\":\"1\","
                                   "\"loss.ce\":2}}}", &back, &err), KD_EINPUT);
    CHECK_EQ_INT(kd_run_meta_terms("f", "{\"partial\":{\"terms\":[1,2]}}", &back, &err),
                 KD_EINPUT);
    CHECK_CONTAINS(err.msg, "run.partial.terms: expected an object");
    /* null is an unknown sum (NaN), as the writer writes one. */
    CHECK_EQ_INT(kd_run_meta_terms("f", "{\"partial\":{\"terms\":{\"loss.dkd.tckd\":null,"
                                   "\"loss.ce\":2}}}", &back, &err), KD_OK);
    CHECK(isnan(back_term[0]) && back_term[1] == 2);
}

/* ---- metrics.jsonl, the epoch line and plot ---- */

KD_TEST(loss_terms_flow_into_metrics_epoch_line_and_plot) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    CHECK_EQ_INT(make_teacher(dir), 0);
    CHECK_EQ_INT(train("", "--config " TINY " --out %s/kd " TEACHER LOSSES, dir, dir), 0);
    /* The epoch line shows the terms by their short keys. */
    CHECK_CONTAINS(g_out, "(dkd.tckd ");
    CHECK_CONTAINS(g_out, ", dkd.nckd ");
    CHECK_CONTAINS(g_out, ", kl ");
    CHECK_CONTAINS(g_out, ", ce ");
    size_t n = 0;
    kd_epoch_metrics *rows = read_metrics(dir, "kd", &n);
    CHECK_EQ_INT(n, 2);
    for (size_t e = 0; e < n; e++) {
        const kd_epoch_metrics *m = &rows[e];
        CHECK_EQ_INT(m->n_terms, 4);
        if (m->n_terms != 4) break;
        for (size_t k = 0; k < 4; k++) {
            CHECK(strcmp(m->keys[k], k_keys[k]) == 0);
            CHECK(isfinite(m->term[k]) && m->term[k] > 0);
        }
        const double tckd = m->term[0], nckd = m->term[1], kl = m->term[2], ce = m->term[3];
        /* Every batch's total is sum_e w_e value_e(terms), each term a batch mean: the epoch's
         * sample means obey the same sum. A swapped key (beta is 8), a term left out of the
         * sums or summed without its batch size breaks it. */
        const double dkd = 1.0 * tckd + 8.0 * nckd;
        CHECK_CLOSE(m->loss, 0.5 * dkd + 0.3 * kl + 0.2 * ce, 1e-12, 1e-12);
        CHECK_CLOSE(m->soft, dkd, 1e-12, 1e-12);  /* the first teacher entry */
        CHECK_CLOSE(m->hard, ce, 1e-12, 1e-12);   /* the ce entry */
    }
    /* The student learns: its label term falls. */
    if (n == 2) CHECK(rows[1].term[3] < rows[0].term[3]);

    /* plot draws a term by its key, at the values metrics.jsonl holds. */
    char cmd[4096], svg[1024];
    snprintf(svg, sizeof svg, "%s/tckd.svg", dir);
    snprintf(cmd, sizeof cmd, "%s plot %s/kd --metric loss.dkd.tckd -o %s", kd_test_distill(),
             dir, svg);
    CHECK_EQ_INT(kd_test_run(cmd, g_out, sizeof g_out), 0);
    if (kd_test_have_python()) {
        CHECK_EQ_INT(kd_test_svg_decode(svg, g_out, sizeof g_out), 0);
        double want[8];
        for (size_t e = 0; e < n && e < 2; e++) {
            want[2 * e] = (double)rows[e].epoch;
            want[2 * e + 1] = rows[e].term[0];
        }
        CHECK_SVG_MARK(g_out, "loss.dkd.tckd", "line", "kd", 0, want, 2 * n);
    }
    /* An unknown metric names the keys the file has, with the near one. */
    snprintf(cmd, sizeof cmd, "%s plot %s/kd --metric loss.dkd.tkd -o %s", kd_test_distill(),
             dir, svg);
    CHECK_EQ_INT(kd_test_run(cmd, g_out, sizeof g_out), 2);
    CHECK_CONTAINS(g_out, "did you mean \"loss.dkd.tckd\"");
    CHECK_CONTAINS(g_out, "val_acc");
    for (size_t k = 0; k < 4; k++) CHECK_CONTAINS(g_out, k_keys[k]);
    free(rows);

    /* Today's keys keep their line and their soft/hard, which equal the list's two terms. */
    CHECK_EQ_INT(train("", "--config " TINY " --out %s/legacy --epochs 1 " TEACHER
                       "--set 'distill={\"alpha\":0.9,\"temperature\":4}'", dir, dir), 0);
    CHECK_CONTAINS(g_out, "(soft ");
    rows = read_metrics(dir, "legacy", &n);
    CHECK(n == 1 && rows[0].n_terms == 2);
    if (n == 1 && rows[0].n_terms == 2) {
        CHECK(strcmp(rows[0].keys[0], "loss.kl") == 0 && strcmp(rows[0].keys[1], "loss.ce") == 0);
        CHECK(rows[0].term[0] == rows[0].soft && rows[0].term[1] == rows[0].hard);
    }
    free(rows);
}

/* ---- Resume ---- */

/* A run stopped mid-epoch and resumed writes the terms an uninterrupted run writes, to the bit:
 * the checkpoint carried their partial sums. */
KD_TEST(loss_terms_resume_mid_epoch_continues_the_sums) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    CHECK_EQ_INT(make_teacher(dir), 0);
    CHECK_EQ_INT(train("", "--config " TINY " --out %s/full --quiet " TEACHER LOSSES, dir, dir),
                 0);
    /* 12 batches per epoch: step 17 is in the middle of epoch 2. */
    CHECK_EQ_INT(train("KD_TRAIN_STOP_AFTER_STEPS=17", "--config " TINY " --out %s/cut --quiet "
                       TEACHER LOSSES, dir, dir), 130);
    CHECK_EQ_INT(train("", "--resume %s/cut --quiet", dir), 0);
    size_t nf = 0, nc = 0;
    kd_epoch_metrics *full = read_metrics(dir, "full", &nf), *cut = read_metrics(dir, "cut", &nc);
    CHECK(nf == 2 && nc == 2);
    for (size_t e = 0; e < nf && e < nc; e++) {
        CHECK(cut[e].n_terms == 4 && full[e].n_terms == 4);
        for (size_t k = 0; k < 4 && k < cut[e].n_terms; k++) {
            if (cut[e].term[k] != full[e].term[k])
                kd_test_fail(__FILE__, __LINE__, "epoch %zu %s: resumed %.17g, full %.17g",
                             e + 1, k_keys[k], cut[e].term[k], full[e].term[k]);
        }
        CHECK(cut[e].loss == full[e].loss && cut[e].soft == full[e].soft &&
              cut[e].hard == full[e].hard);
    }
    free(full);
    free(cut);
}
