/* test_quant_eval.c - `distill eval` and `predict` of a full-integer (qint8) file: they run the
 * integer reference, so eval's top-1 on the test split is the qint8 figure `export` printed
 * and the count an independent pass through kd_qmodel_forward gives, and predict's
 * probabilities are the softmax of the reference's dequantized int8 logits; training from a
 * qint8 teacher is refused with exit 2. A 784-64-10 MLP trained by configs/tiny.json. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "export_fixture.h"
#include "kd_test.h"


/* Trains configs/tiny.json and exports it as qint8 into dir/q.safetensors; export's output in
 * out. 0 when it could not (the failure already reported) or was skipped. */
static int trained_qint8(const char *dir, char *out, size_t cap) {
    char cmd[2048];
    if (access(KD_TEST_T10K_IMAGES, R_OK) || access("configs/tiny.json", R_OK)) {
        kd_test_skip("%s or configs/tiny.json is absent", KD_TEST_FMNIST_DIR);
        return 0;
    }
    snprintf(cmd, sizeof cmd, "%s train --config configs/tiny.json --out %s/run --quiet",
             kd_test_distill(), dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, cap), 0);
    snprintf(cmd, sizeof cmd, "%s export %s/run/best.safetensors %s/q.safetensors --dtype qint8 "
             "--calibrate 500 --config configs/tiny.json", kd_test_distill(), dir, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, cap), 0);
    return !kd_test_failed_now();
}

/* The integer reference's dequantized logits (n, 10) and labels y of the first n test images;
 * malloc'd, NULL after a failure. */
static float *reference(const char *path, size_t n, int32_t *y) {
    size_t C = 0;
    double step;
    float *z = kd_test_qint8_reference(path, n, y, &C, &step);
    if (z) CHECK_EQ_INT(C, 10);
    if (z && C != 10) {
        free(z);
        return NULL;
    }
    return z;
}

static const cJSON *item(const cJSON *o, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

KD_TEST(quant_eval_runs_the_integer_reference) {
    enum { N = 1000 }; /* configs/tiny.json's test subset */
    static char out[65536];
    const char *dir = kd_test_tmpdir();
    if (!trained_qint8(dir, out, sizeof out)) return;
    /* "accuracy  test split, 1000 samples: float F%, qint8 Q% ..." */
    const char *acc = strstr(out, "accuracy  ");
    const char *qs = acc ? strstr(acc, "qint8 ") : NULL;
    double printed = -1;
    CHECK(qs && sscanf(qs, "qint8 %lf%%", &printed) == 1);
    int32_t y[N];
    char path[1024], cmd[4096];
    snprintf(path, sizeof path, "%s/q.safetensors", dir);
    float *z = reference(path, N, y);
    if (!z) return;
    size_t hits = 0;
    for (size_t i = 0; i < N; i++) {
        size_t a = 0;
        for (size_t k = 1; k < 10; k++) a = z[i * 10 + k] > z[i * 10 + a] ? k : a;
        hits += (int32_t)a == y[i];
    }
    /* The same test images, the reference's own count, and what export printed. */
    snprintf(cmd, sizeof cmd, "%s eval --config configs/tiny.json --json %s %s/run/best.safetensors",
             kd_test_distill(), path, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    cJSON *j = cJSON_Parse(out);
    const cJSON *models = item(j, "models"), *mq = cJSON_GetArrayItem(models, 0);
    CHECK(cJSON_GetArraySize(models) == 2 && cJSON_IsNumber(item(mq, "top1")));
    if (!kd_test_failed_now()) {
        double top1 = item(mq, "top1")->valuedouble;
        printf("    eval of the qint8 file: top-1 %.2f%%; the reference %.2f%%; export printed "
               "%.2f%%\n", 100 * top1, 100.0 * (double)hits / N, printed);
        CHECK_EQ_INT(llround(top1 * N), hits);
        CHECK_CLOSE(100 * top1, printed, 0.005, 0);
        CHECK(hits > N * 6 / 10); /* a trained model, not a constant */
        /* 784 x 64 + 64 x 10 int8 weights. */
        CHECK_EQ_INT(item(mq, "params")->valuedouble, 784 * 64 + 64 * 10);
        CHECK(cJSON_IsNumber(item(mq, "samples_per_s")));
    }
    cJSON_Delete(j);
    free(z);
}

KD_TEST(quant_predict_gives_the_reference_logits) {
    enum { N = 5 };
    static char out[65536];
    const char *dir = kd_test_tmpdir();
    if (!trained_qint8(dir, out, sizeof out)) return;
    char path[1024], cmd[4096];
    int32_t y[N];
    snprintf(path, sizeof path, "%s/q.safetensors", dir);
    float *z = reference(path, N, y);
    if (!z) return;
    for (int i = 0; i < N; i++) {
        snprintf(cmd, sizeof cmd, "%s predict --model %s --json --top 10 --index %d %s",
                 kd_test_distill(), path, i, KD_TEST_T10K_IMAGES);
        CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
        cJSON *j = cJSON_Parse(out);
        const cJSON *top = item(cJSON_GetArrayItem(item(j, "predictions"), 0), "top");
        CHECK_EQ_INT(cJSON_GetArraySize(top), 10);
        /* softmax of the dequantized logits, as predict computes it (in double). */
        double p[10], mx = z[i * 10], sum = 0;
        for (int k = 1; k < 10; k++) mx = z[i * 10 + k] > mx ? z[i * 10 + k] : mx;
        for (int k = 0; k < 10; k++) sum += p[k] = exp((double)z[i * 10 + k] - mx);
        for (const cJSON *e = top ? top->child : NULL; e; e = e->next) {
            int c = (int)item(e, "class")->valuedouble;
            CHECK_CLOSE(item(e, "p")->valuedouble, p[c] / sum, 1e-6, 1e-5);
        }
        cJSON_Delete(j);
        if (kd_test_failed_now()) break;
    }
    free(z);
}

KD_TEST(quant_qint8_teacher_is_refused) {
    static char out[65536];
    const char *dir = kd_test_tmpdir();
    if (!trained_qint8(dir, out, sizeof out)) return;
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s train --config configs/tiny.json --out %s/kd --quiet "
             "--set teacher.checkpoint=%s/q.safetensors", kd_test_distill(), dir, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);
    CHECK_CONTAINS(out, "full-integer (qint8) model");
    /* An ensemble column of qint8 members is their softmaxes averaged, as for float files. */
    snprintf(cmd, sizeof cmd, "%s eval --config configs/tiny.json --json --ensemble %s/q.safetensors "
             "%s/q.safetensors", kd_test_distill(), dir, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    cJSON *j = cJSON_Parse(out);
    const cJSON *models = item(j, "models");
    CHECK_EQ_INT(cJSON_GetArraySize(models), 2);
    if (!kd_test_failed_now())
        CHECK_CLOSE(item(cJSON_GetArrayItem(models, 1), "top1")->valuedouble,
                    item(cJSON_GetArrayItem(models, 0), "top1")->valuedouble, 1e-12, 0);
    cJSON_Delete(j);
}
