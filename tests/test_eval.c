/* test_eval.c - metrics against hand-computed values, and `distill eval` on a hand-made IDX
 * dataset with hand-made models whose accuracy, agreement, KL and ECE are known in advance. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_eval.h"
#include "kd_safetensors.h"
#include "kd_test.h"

/* ---- metrics ---- */

KD_TEST(eval_wilson_interval_hand_computed) {
    double lo, hi;
    /* 8/10: centre (0.8 + z^2/20) / (1 + z^2/10), half z sqrt(0.016 + z^2/400) / (1 + z^2/10),
     * z = 1.959964: [0.490162, 0.943318] (matches published Wilson tables: 0.490, 0.943). */
    kd_wilson95(8, 10, &lo, &hi);
    CHECK_CLOSE(lo, 0.490162, 2e-6, 0);
    CHECK_CLOSE(hi, 0.943318, 2e-6, 0);
    /* 0/10: lower bound 0, upper (z^2/n) / (1 + z^2/n) = 0.384146 / 1.384146 = 0.277533. */
    kd_wilson95(0, 10, &lo, &hi);
    CHECK_CLOSE(lo, 0.0, 1e-12, 0);
    CHECK_CLOSE(hi, 0.277533, 2e-6, 0);
    /* Symmetry: k/n and (n-k)/n mirror around 1/2. */
    double lo2, hi2;
    kd_wilson95(2, 10, &lo2, &hi2);
    CHECK_CLOSE(lo2, 1.0 - 0.943318, 2e-6, 0);
    CHECK_CLOSE(hi2, 1.0 - 0.490162, 2e-6, 0);
    /* Large n approaches p +- 1.96 sqrt(p(1-p)/n): 5000/10000 -> 0.5 +- 0.0098. */
    kd_wilson95(5000, 10000, &lo, &hi);
    CHECK_CLOSE(hi - lo, 2 * 1.959964 * 0.005, 1e-5, 0);
    kd_wilson95(0, 0, &lo, &hi);
    CHECK(lo == 0.0 && hi == 1.0);
}

KD_TEST(eval_topk_ties_and_bounds) {
    const float row[] = {0.1f, 0.5f, 0.3f, 0.5f};
    CHECK_EQ_INT(kd_argmax(row, 4), 1);          /* first of the tied maxima */
    CHECK_EQ_INT(kd_topk_hit(row, 4, 1, 1), 1);
    CHECK_EQ_INT(kd_topk_hit(row, 4, 3, 1), 0);  /* tied with an earlier entry: rank 2 */
    CHECK_EQ_INT(kd_topk_hit(row, 4, 3, 2), 1);
    CHECK_EQ_INT(kd_topk_hit(row, 4, 2, 2), 0);
    CHECK_EQ_INT(kd_topk_hit(row, 4, 2, 3), 1);
    CHECK_EQ_INT(kd_topk_hit(row, 4, 0, 3), 0);
    CHECK_EQ_INT(kd_topk_hit(row, 4, 0, 4), 1);
    CHECK_EQ_INT(kd_topk_hit(row, 4, 0, 9), 1);
    CHECK_EQ_INT(kd_topk_hit(row, 4, -1, 9), 0);
    const float z[] = {1, 0, 0, /**/ 0, 2, 1, /**/ 0, 1, 2, /**/ 3, 2, 1};
    const int32_t y[] = {0, 2, 2, -1};
    CHECK_CLOSE(kd_topk_accuracy(z, y, 4, 3, 1), 2.0 / 3.0, 1e-12, 0);
    CHECK_CLOSE(kd_topk_accuracy(z, y, 4, 3, 2), 1.0, 1e-12, 0);
}

KD_TEST(eval_kl_and_agreement_hand_computed) {
    /* p_t = (1/2, 1/2), p_s = (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3). */
    const float zt[] = {0.0f, 0.0f};
    const float zs[] = {logf(3.0f), 0.0f};
    CHECK_CLOSE(kd_kl_row(zt, zs, 2), 0.5 * log(4.0 / 3.0), 1e-7, 0);
    /* Invariant to adding a constant to all logits, even a large one (exact floats here):
     * p_s = (e, 1) / (e + 1). */
    const float zs_shift[] = {1001.0f, 1000.0f}, zt_shift[] = {-500.0f, -500.0f};
    double e = exp(1.0), want = 0.5 * log(0.5 * (e + 1) / e) + 0.5 * log(0.5 * (e + 1));
    CHECK_CLOSE(kd_kl_row(zt_shift, zs_shift, 2), want, 1e-9, 0);
    CHECK_CLOSE(kd_kl_row(zs, zs, 2), 0.0, 1e-15, 0);
    const float za[] = {1, 0, 0, 1, 5, 4}, zb[] = {2, 1, 1, 0, 4, 5};
    CHECK_CLOSE(kd_agreement(za, zb, 3, 2), 1.0 / 3.0, 1e-12, 0);
    const float zz[] = {0, 0, logf(3.0f), 0};
    CHECK_CLOSE(kd_kl_mean(zz, zz, 2, 2), 0.0, 1e-12, 0);
}

KD_TEST(eval_ece_constructed_example) {
    /* Two rows at confidence 0.9 (bin 13), one right one wrong: |0.5 - 0.9| = 0.4.
     * Two rows at confidence 0.6 (bin 8), both right: |1 - 0.6| = 0.4. ECE = 0.4.
     * A fifth unlabeled row must not count. */
    const float z[] = {logf(0.9f), logf(0.1f), logf(0.9f), logf(0.1f), logf(0.4f), logf(0.6f),
                       logf(0.6f), logf(0.4f), 5.0f, 0.0f};
    const int32_t y[] = {0, 1, 1, 0, -1};
    CHECK_CLOSE(kd_ece(z, y, 5, 2), 0.4, 1e-6, 0);
    /* Different bins make it a weighted sum: drop row 3 -> (2/3) 0.4 + (1/3) 0.4 = 0.4, and
     * with only rows 0 and 2: (1/2)|1 - 0.9| + (1/2)|1 - 0.6| = 0.25. */
    const float z2[] = {logf(0.9f), logf(0.1f), logf(0.4f), logf(0.6f)};
    const int32_t y2[] = {0, 1};
    CHECK_CLOSE(kd_ece(z2, y2, 2, 2), 0.25, 1e-6, 0);
    CHECK_EQ_INT(kd_ece_bin(0.0), 0);
    CHECK_EQ_INT(kd_ece_bin(1.0 / 15.0), 0);   /* right edge belongs to the lower bin */
    CHECK_EQ_INT(kd_ece_bin(0.07), 1);
    CHECK_EQ_INT(kd_ece_bin(0.5), 7);
    CHECK_EQ_INT(kd_ece_bin(0.9), 13);
    CHECK_EQ_INT(kd_ece_bin(1.0), 14);
    /* The streaming accumulator agrees with the pure functions. */
    kd_metrics m;
    kd_err err = {0};
    CHECK(kd_metrics_init(&m, 2, &err) == KD_OK);
    kd_metrics_add(&m, z, NULL, y, 3);
    kd_metrics_add(&m, z + 6, NULL, y + 3, 2);
    CHECK_CLOSE(kd_metrics_ece(&m), 0.4, 1e-6, 0);
    CHECK_EQ_INT(m.n, 4);
    CHECK_EQ_INT(m.n_rows, 5);
    CHECK_EQ_INT(m.top1, 3);
    /* confusion[true][pred]: row0 0->0, row1 1->0, row2 1->1, row3 0->0. */
    CHECK_EQ_INT(m.confusion[0 * 2 + 0], 2);
    CHECK_EQ_INT(m.confusion[1 * 2 + 0], 1);
    CHECK_EQ_INT(m.confusion[1 * 2 + 1], 1);
    CHECK_EQ_INT(m.confusion[0 * 2 + 1], 0);
    CHECK_EQ_INT(m.class_hits[1], 1);
    CHECK_EQ_INT(m.class_n[1], 2);
    kd_metrics_free(&m);
    kd_metrics_free(&m); /* idempotent */
}

/* ---- hand-made dataset and models ---- */

/* 8 samples of 2x2 u8 pixels, exactly one pixel (p) set to 255; labels y. */
static const int k_pix[8] = {0, 1, 2, 3, 0, 1, 2, 3};
static const int k_lab[8] = {0, 1, 2, 0, 0, 2, 2, 1};

static void be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Writes DIR/img.idx and DIR/lab.idx; label_bump adds to every label (to break class fit). */
static void write_idx_pair(const char *dir, int label_bump) {
    unsigned char img[16 + 8 * 4] = {0}, lab[8 + 8] = {0};
    char path[512];
    be32(img, 0x803);
    be32(img + 4, 8);
    be32(img + 8, 2);
    be32(img + 12, 2);
    for (int i = 0; i < 8; i++) img[16 + i * 4 + k_pix[i]] = 255;
    be32(lab, 0x801);
    be32(lab + 4, 8);
    for (int i = 0; i < 8; i++) lab[8 + i] = (unsigned char)(k_lab[i] + label_bump);
    snprintf(path, sizeof path, "%s/img.idx", dir);
    CHECK(kd_test_write_file(path, img, sizeof img) == 0);
    snprintf(path, sizeof path, "%s/lab.idx", dir);
    CHECK(kd_test_write_file(path, lab, sizeof lab) == 0);
}

/* A one-layer dense model n_in -> n_out written with kd_st_write (no distill code involved in
 * choosing the layout beyond the documented names). */
static void write_dense_model(const char *path, size_t n_in, size_t n_out, const float *w,
                              const float *b) {
    char arch[256];
    snprintf(arch, sizeof arch, "{\"input\":[%zu],\"layers\":[{\"type\":\"dense\",\"units\":%zu}]}",
             n_in, n_out);
    kd_st_out t[2] = {{"0.weight", KD_DT_F32, 2, {n_out, n_in}, w},
                      {"0.bias", KD_DT_F32, 1, {n_out}, b}};
    const char *keys[] = {"format", "arch"}, *vals[] = {"distill/1", arch};
    kd_err err = {0};
    CHECK(kd_st_write(path, t, 2, keys, vals, 2, &err) == KD_OK);
}

/* Teacher: logits 2 * (x0 + x3, x1, x2); student: (x0, x1 + x3, x2). */
static const float k_wt[12] = {2, 0, 0, 2, 0, 2, 0, 0, 0, 0, 2, 0};
static const float k_ws[12] = {1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 1, 0};
static const float k_b0[3] = {0, 0, 0};

static cJSON *run_json(const char *cmd, int *rc) {
    static char out[1 << 16];
    *rc = kd_test_run(cmd, out, sizeof out);
    cJSON *j = cJSON_Parse(out);
    if (!j) kd_test_fail(__FILE__, __LINE__, "not JSON (rc %d): %s", *rc, out);
    return j;
}

static double jnum(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it)) {
        kd_test_fail(__FILE__, __LINE__, "field %s is not a number", key);
        return NAN;
    }
    return it->valuedouble;
}

KD_TEST(eval_cli_hand_made_models_known_metrics) {
    const char *dir = kd_test_tmpdir();
    char cmd[4096], tp[512], sp[512];
    write_idx_pair(dir, 0);
    snprintf(tp, sizeof tp, "%s/teacher.safetensors", dir);
    snprintf(sp, sizeof sp, "%s/student.safetensors", dir);
    write_dense_model(tp, 4, 3, k_wt, k_b0);
    write_dense_model(sp, 4, 3, k_ws, k_b0);
    snprintf(cmd, sizeof cmd, "%s eval --data %s/img.idx --labels %s/lab.idx --json %s %s",
             kd_test_distill(), dir, dir, tp, sp);
    int rc;
    cJSON *j = run_json(cmd, &rc);
    CHECK_EQ_INT(rc, 0);
    if (!j) return;
    CHECK_CLOSE(jnum(j, "n"), 8, 0, 0);
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(j, "models");
    CHECK(cJSON_GetArraySize(models) == 2);
    const cJSON *t = cJSON_GetArrayItem(models, 0), *s = cJSON_GetArrayItem(models, 1);
    if (!t || !s) {
        cJSON_Delete(j);
        return;
    }
    /* Teacher predictions by pixel: 0->0, 1->1, 2->2, 3->0; labels 0,1,2,0,0,2,2,1: 6 of 8.
     * Student: 0->0, 1->1, 2->2, 3->1: right on 0,1,2,4,6,7: 6 of 8; agrees on all but the two
     * pixel-3 samples: 6 of 8. */
    CHECK_CLOSE(jnum(t, "top1"), 0.75, 1e-12, 0);
    CHECK_CLOSE(jnum(s, "top1"), 0.75, 1e-12, 0);
    CHECK_CLOSE(jnum(t, "top5"), 1.0, 1e-12, 0);
    CHECK_CLOSE(jnum(s, "agreement"), 0.75, 1e-12, 0);
    CHECK_CLOSE(jnum(t, "agreement"), 1.0, 1e-12, 0);
    CHECK_CLOSE(jnum(t, "kl"), 0.0, 1e-9, 0);
    /* Softmax of (a, 0, 0): max prob P(a) = e^a / (e^a + 2), others Q(a) = 1 / (e^a + 2). */
    double e = exp(1.0), e2 = exp(2.0);
    double pT = e2 / (e2 + 2), qT = 1 / (e2 + 2), pS = e / (e + 2), qS = 1 / (e + 2);
    double kl_same = pT * log(pT / pS) + 2 * qT * log(qT / qS);
    double kl_diff = pT * log(pT / qS) + qT * log(qT / pS) + qT * log(qT / qS);
    CHECK_CLOSE(jnum(s, "kl"), (6 * kl_same + 2 * kl_diff) / 8, 1e-6, 0);
    /* Every teacher row has confidence pT (one bin) and accuracy 3/4; same for the student. */
    CHECK_CLOSE(jnum(t, "ece"), fabs(0.75 - pT), 1e-6, 0);
    CHECK_CLOSE(jnum(s, "ece"), fabs(0.75 - pS), 1e-6, 0);
    CHECK_CLOSE(jnum(t, "params"), 15, 0, 0);
    CHECK(jnum(t, "bytes") > 60);
    CHECK(jnum(s, "samples_per_s") > 0);
    CHECK(jnum(s, "latency_us_p50") > 0);
    CHECK(jnum(s, "latency_us_p99") >= jnum(s, "latency_us_p50"));
    const cJSON *ci = cJSON_GetObjectItemCaseSensitive(t, "top1_ci");
    double lo, hi;
    kd_wilson95(6, 8, &lo, &hi);
    CHECK(cJSON_GetArraySize(ci) == 2);
    CHECK_CLOSE(cJSON_GetArrayItem(ci, 0)->valuedouble, lo, 1e-9, 0);
    CHECK_CLOSE(cJSON_GetArrayItem(ci, 1)->valuedouble, hi, 1e-9, 0);
    cJSON_Delete(j);

    /* A single model: everything but the teacher-relative fields. */
    snprintf(cmd, sizeof cmd, "%s eval --data %s/img.idx --labels %s/lab.idx --json %s",
             kd_test_distill(), dir, dir, sp);
    j = run_json(cmd, &rc);
    CHECK_EQ_INT(rc, 0);
    if (!j) return;
    s = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "models"), 0);
    CHECK(s && cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(s, "agreement")));
    CHECK(s && cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(s, "kl")));
    if (s) CHECK_CLOSE(jnum(s, "top1"), 0.75, 1e-12, 0);
    cJSON_Delete(j);

    /* The table names the models and the numbers; per-class and confusion sections appear. */
    static char out[1 << 16];
    snprintf(cmd, sizeof cmd, "%s eval --data %s/img.idx --labels %s/lab.idx --per-class --confusion %s %s",
             kd_test_distill(), dir, dir, tp, sp);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "teacher.safetensors");
    CHECK_CONTAINS(out, "student.safetensors");
    CHECK_CONTAINS(out, "75.00%");
    CHECK_CONTAINS(out, "agreement with first");
    CHECK_CONTAINS(out, "per-class");
    CHECK_CONTAINS(out, "confusion matrix");
}

KD_TEST(eval_cli_mixed_dtypes_and_bad_inputs) {
    const char *dir = kd_test_tmpdir();
    char cmd[4096], tp[512], bad[512];
    static char out[1 << 16];
    write_idx_pair(dir, 0);
    snprintf(tp, sizeof tp, "%s/teacher.safetensors", dir);
    write_dense_model(tp, 4, 3, k_wt, k_b0);
    /* int8 and bf16 exports of the teacher: weights 0 and 2 are exact in both, so the exports
     * agree everywhere and have KL 0 against the f32 column. */
    snprintf(cmd, sizeof cmd, "%s export %s %s/t8.safetensors --dtype int8 && %s export %s "
             "%s/tb.safetensors --dtype bf16", kd_test_distill(), tp, dir, kd_test_distill(), tp, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    snprintf(cmd, sizeof cmd, "%s eval --data %s/img.idx --labels %s/lab.idx --json %s "
             "%s/t8.safetensors %s/tb.safetensors", kd_test_distill(), dir, dir, tp, dir, dir);
    int rc;
    cJSON *j = run_json(cmd, &rc);
    CHECK_EQ_INT(rc, 0);
    if (j) {
        const cJSON *models = cJSON_GetObjectItemCaseSensitive(j, "models");
        CHECK(cJSON_GetArraySize(models) == 3);
        for (int k = 1; k < 3 && cJSON_GetArraySize(models) == 3; k++) {
            const cJSON *mm = cJSON_GetArrayItem(models, k);
            CHECK_CLOSE(jnum(mm, "agreement"), 1.0, 0, 0);
            CHECK_CLOSE(jnum(mm, "kl"), 0.0, 1e-9, 0);
            CHECK_CLOSE(jnum(mm, "top1"), 0.75, 1e-12, 0);
        }
        cJSON_Delete(j);
    }

    /* Missing checkpoint: exit 3 naming it. */
    snprintf(cmd, sizeof cmd, "%s eval --data %s/img.idx --labels %s/lab.idx %s/nope.safetensors",
             kd_test_distill(), dir, dir, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "nope.safetensors");
    /* Input shape that does not fit: 5 inputs vs 2x2 samples. */
    float w5[15] = {0}, b3[3] = {0};
    snprintf(bad, sizeof bad, "%s/wide.safetensors", dir);
    write_dense_model(bad, 5, 3, w5, b3);
    snprintf(cmd, sizeof cmd, "%s eval --data %s/img.idx --labels %s/lab.idx %s", kd_test_distill(),
             dir, dir, bad);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "wide.safetensors");
    CHECK_CONTAINS(out, "img.idx");
    CHECK_CONTAINS(out, "[5]");
    /* Too few classes: a 2-class model on labels 0..2. */
    float w2[8] = {0}, b2[2] = {0};
    snprintf(bad, sizeof bad, "%s/two.safetensors", dir);
    write_dense_model(bad, 4, 2, w2, b2);
    snprintf(cmd, sizeof cmd, "%s eval --data %s/img.idx --labels %s/lab.idx %s", kd_test_distill(),
             dir, dir, bad);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "two.safetensors");
    CHECK_CONTAINS(out, "2 classes");
    /* A garbage checkpoint is a bad input file too. */
    snprintf(bad, sizeof bad, "%s/junk.safetensors", dir);
    CHECK(kd_test_write_file(bad, "not a checkpoint at all", 23) == 0);
    snprintf(cmd, sizeof cmd, "%s eval --data %s/img.idx %s", kd_test_distill(), dir, bad);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "junk.safetensors");
    /* Usage errors: no data, two data sources, bad split. */
    snprintf(cmd, sizeof cmd, "%s eval %s", kd_test_distill(), tp);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "%s eval --data %s/img.idx --split nope %s", kd_test_distill(), dir, tp);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "%s help eval", kd_test_distill());
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "--per-class");
    CHECK_CONTAINS(out, "Wilson");
}

/* eval and export take --opt=value like train (they once rejected it), and "--" before the
 * checkpoints. */
KD_TEST(eval_and_export_accept_opt_equals_value) {
    const char *dir = kd_test_tmpdir();
    char cmd[4096], tp[512];
    static char out[1 << 16];
    write_idx_pair(dir, 0);
    snprintf(tp, sizeof tp, "%s/teacher.safetensors", dir);
    write_dense_model(tp, 4, 3, k_wt, k_b0);
    snprintf(cmd, sizeof cmd, "%s export %s %s/t16.safetensors --dtype=f16", kd_test_distill(), tp,
             dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "f16");
    snprintf(cmd, sizeof cmd,
             "%s eval --data=%s/img.idx --labels=%s/lab.idx --batch=3 --threads=1 --json -- %s "
             "%s/t16.safetensors",
             kd_test_distill(), dir, dir, tp, dir);
    int rc;
    cJSON *j = run_json(cmd, &rc);
    CHECK_EQ_INT(rc, 0);
    if (!j) return;
    CHECK_CLOSE(jnum(j, "batch"), 3, 0, 0);
    CHECK_CLOSE(jnum(j, "threads"), 1, 0, 0);
    CHECK_CLOSE(jnum(j, "n"), 8, 0, 0);
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(j, "models");
    CHECK(cJSON_GetArraySize(models) == 2);
    for (int k = 0; k < 2 && cJSON_GetArraySize(models) == 2; k++)
        CHECK_CLOSE(jnum(cJSON_GetArrayItem(models, k), "top1"), 0.75, 1e-12, 0);
    cJSON_Delete(j);
}

/* eval --report: the picture, read back through its tick labels (tests/svg_decode.py), shows
 * what eval measured: top-1 with its Wilson interval, the parameter counts, and each model's
 * one occupied confidence bin (accuracy 3/4 as the bar, the gap up or down to its confidence).
 * Without labels the accuracy and calibration panels say so and draw nothing. */
KD_TEST(eval_report_svg_shows_the_measured_numbers) {
    if (!kd_test_have_python()) {
        kd_test_skip("python3 not available");
        return;
    }
    const char *dir = kd_test_tmpdir();
    char cmd[4096], tp[512], sp[512], svg[512];
    static char out[1 << 16];
    write_idx_pair(dir, 0);
    snprintf(tp, sizeof tp, "%s/teacher.safetensors", dir);
    snprintf(sp, sizeof sp, "%s/student.safetensors", dir);
    snprintf(svg, sizeof svg, "%s/report.svg", dir);
    write_dense_model(tp, 4, 3, k_wt, k_b0);
    write_dense_model(sp, 4, 3, k_ws, k_b0);
    snprintf(cmd, sizeof cmd, "%s eval --data %s/img.idx --labels %s/lab.idx --report %s %s %s",
             kd_test_distill(), dir, dir, svg, tp, sp);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "report: ");
    CHECK_EQ_INT(kd_test_svg_decode(svg, out, sizeof out), 0);
    double lo, hi;
    kd_wilson95(6, 8, &lo, &hi);
    const double t_ci[] = {lo, 0, hi, 0}, s_ci[] = {lo, 1, hi, 1};
    const double t_top1[] = {0.75, 0}, s_top1[] = {0.75, 1};
    CHECK_SVG_MARK(out, "top1", "interval", "teacher.safetensors", 0, t_ci, 4);
    CHECK_SVG_MARK(out, "top1", "interval", "student.safetensors", 0, s_ci, 4);
    CHECK_SVG_MARK(out, "top1", "point", "teacher.safetensors", 0, t_top1, 2);
    CHECK_SVG_MARK(out, "top1", "point", "student.safetensors", 0, s_top1, 2);
    const double t_params[] = {0, 15}, s_params[] = {1, 15};
    CHECK_SVG_MARK(out, "params", "hbar", "teacher.safetensors", 0, t_params, 2);
    CHECK_SVG_MARK(out, "params", "hbar", "student.safetensors", 0, s_params, 2);
    double lat[2];
    CHECK_EQ_INT(kd_test_line_values(out, "mark latency hbar student.safetensors ", 0, lat, 2), 2);
    CHECK(lat[0] == 1 && lat[1] > 0);
    /* Confidences: teacher e^2 / (e^2 + 2), student e / (e + 2), every row alike. */
    double pT = exp(2.0) / (exp(2.0) + 2), pS = exp(1.0) / (exp(1.0) + 2);
    double xT = (kd_ece_bin(pT) + 0.5) / KD_ECE_BINS, xS = (kd_ece_bin(pS) + 0.5) / KD_ECE_BINS;
    const double t_bar[] = {xT, 0.75}, t_gap[] = {xT, 0.75, pT};
    const double s_bar[] = {xS, 0.75}, s_gap[] = {xS, pS, 0.75};
    CHECK_SVG_MARK(out, "reliability-0", "vbar", "teacher.safetensors", 0, t_bar, 2);
    CHECK_SVG_MARK(out, "reliability-0", "vspan", "teacher.safetensors", 0, t_gap, 3);
    CHECK_SVG_MARK(out, "reliability-1", "vbar", "student.safetensors", 0, s_bar, 2);
    CHECK_SVG_MARK(out, "reliability-1", "vspan", "student.safetensors", 0, s_gap, 3);
    /* Each diagram's bin counts below it: all 8 samples in the one bin. */
    const double t_n[] = {xT, 8}, s_n[] = {xS, 8};
    CHECK_SVG_MARK(out, "counts-0", "vbar", "teacher.safetensors", 0, t_n, 2);
    CHECK_SVG_MARK(out, "counts-1", "vbar", "student.safetensors", 0, s_n, 2);
    /* The parameter axis starts a decade below the smallest model (15): its bar shows. */
    double range[4];
    CHECK_EQ_INT(kd_test_line_values(out, "range params ", 0, range, 4), 4);
    CHECK(range[0] <= 1.5 * (1 + 1e-6));
    /* The ECE above the plot, where no bar can cover it. */
    char ece_line[64];
    snprintf(ece_line, sizeof ece_line, "ece reliability-0 outside ECE_%.4f\n", fabs(0.75 - pT));
    CHECK_CONTAINS(out, ece_line);
    CHECK(strstr(out, " inside ") == NULL);
    /* 3 panels + 2 diagrams + 2 count strips; marks: 2 intervals + 2 points, 2 bars, 2 bars +
     * 2 whiskers, 2 bars + 2 gaps, and 2 count bars. */
    CHECK_CONTAINS(out, "ok 7 16\n");
    char *text = NULL, ece[32];
    size_t len = 0;
    kd_err err = {0};
    CHECK(kd_read_file(svg, 1 << 20, &text, &len, &err) == KD_OK);
    snprintf(ece, sizeof ece, "ECE %.4f", fabs(0.75 - pT));
    CHECK_CONTAINS(text, ece);
    free(text);

    /* No labels: no accuracy or calibration marks, a note instead; the rest is drawn. */
    snprintf(cmd, sizeof cmd, "%s eval --data %s/img.idx --report %s %s", kd_test_distill(), dir,
             svg, tp);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_EQ_INT(kd_test_svg_decode(svg, out, sizeof out), 0);
    CHECK(!strstr(out, "mark top1") && !strstr(out, "mark reliability"));
    CHECK_SVG_MARK(out, "params", "hbar", "teacher.safetensors", 0, t_params, 2);
    CHECK(kd_read_file(svg, 1 << 20, &text, &len, &err) == KD_OK);
    CHECK_CONTAINS(text, "no labels");
    free(text);
}

/* 3 classes: every label is in the top 5, so the table has no top-5 row (top-1 stays); a
 * model with more outputs than the data's classes is refused. */
KD_TEST(eval_table_has_no_top5_row_for_few_classes) {
    const char *dir = kd_test_tmpdir();
    char cmd[4096], tp[512];
    static char out[16384];
    write_idx_pair(dir, 0);
    snprintf(tp, sizeof tp, "%s/teacher.safetensors", dir);
    write_dense_model(tp, 4, 3, k_wt, k_b0);
    snprintf(cmd, sizeof cmd, "%s eval --data %s/img.idx --labels %s/lab.idx %s",
             kd_test_distill(), dir, dir, tp);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "top-1 accuracy");
    CHECK_CONTAINS(out, "75.00%");
    CHECK(strstr(out, "top-5") == NULL);
    /* A 4-output model on this 3-class data: refused, naming both counts. */
    static const float w4[16], b4[4];
    snprintf(tp, sizeof tp, "%s/four.safetensors", dir);
    write_dense_model(tp, 4, 4, w4, b4);
    snprintf(cmd, sizeof cmd, "%s eval --data %s/img.idx --labels %s/lab.idx %s",
             kd_test_distill(), dir, dir, tp);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "model has 4 classes but the data");
    CHECK_CONTAINS(out, "has 3 (labels 0 to 2)");
}
