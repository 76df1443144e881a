/* test_standardize.c - data.preprocess.standardize end to end on a synthetic 3-class CSV whose
 * 20 features are scaled by 1e-3 .. 1e4 (one also shifted by 50,000): the run reaches within
 * one point of the same data standardized beforehand by this test (its own statistics, in
 * double, on the trainer's training split), the statistics are the ones recorded in the
 * checkpoint, ONNX Runtime and the compiled C header predict on raw rows exactly what distill
 * predicts, the unstandardized run warns about the scales, and the config refuses standardize
 * with mean/std. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "export_fixture.h"
#include "kd_checkpoint.h"
#include "kd_data.h"
#include "kd_test.h"

#define D 20
#define K 3
#define N_TRAIN 3000
#define N_TEST 1000
#define N_VAL 500

static char g_out[1 << 17];

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return kd_test_run(cmd, g_out, sizeof g_out);
}

/* A seeded normal deviate (xorshift64 + Box-Muller): the data are the same on every machine. */
static double normal(uint64_t *s) {
    double u[2];
    for (int k = 0; k < 2; k++) {
        *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
        u[k] = ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
    }
    return sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

/* Rows of float features (as float, so "%.9g" reads back to the same value) and labels. */
static void make_rows(uint64_t *s, const double centers[K][D], float *x, int *y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        y[i] = (int)(i % K);
        for (int j = 0; j < D; j++) {
            double scale = pow(10.0, -3.0 + 7.0 * j / (D - 1));
            double v = (centers[y[i]][j] + 1.2 * normal(s)) * scale + (j == 3 ? 50000.0 : 0.0);
            x[i * D + j] = (float)v;
        }
    }
}

/* Writes rows as CSV; with mean/sd, (x - mean) / sd in double instead of x. */
static int write_csv(const char *path, const float *x, const int *y, size_t n, const double *mean,
                     const double *sd) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    for (size_t i = 0; i < n; i++) {
        for (int j = 0; j < D; j++) {
            double v = x[i * D + j];
            if (mean) fprintf(f, "%.17g,", (v - mean[j]) / sd[j]);
            else fprintf(f, "%.9g,", v);
        }
        fprintf(f, "%d\n", y[i]);
    }
    return fclose(f);
}

/* The rows as a big-endian float32 IDX file [n, D] (the export harnesses' raw input). */
static int write_idx_f32(const char *path, const float *x, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    unsigned char h[12] = {0, 0, 0x0D, 2, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                           (unsigned char)(n >> 8), (unsigned char)n, 0, 0, 0, D};
    fwrite(h, 1, sizeof h, f);
    for (size_t i = 0; i < n * D; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        unsigned char b[4] = {(unsigned char)(u >> 24), (unsigned char)(u >> 16),
                              (unsigned char)(u >> 8), (unsigned char)u};
        fwrite(b, 1, 4, f);
    }
    return fclose(f);
}

static const char CONFIG[] =
    "{\"data\": {\"train\": {\"format\": \"csv\", \"path\": \"%s\"},"
    " \"test\": {\"format\": \"csv\", \"path\": \"%s\"}, \"validation_split\": %d},"
    " \"model\": {\"layers\": [{\"type\": \"dense\", \"units\": 32}, {\"type\": \"relu\"},"
    " {\"type\": \"dense\", \"units\": 3}]},"
    " \"optimizer\": {\"name\": \"adam\", \"lr\": 0.003},"
    " \"train\": {\"epochs\": 8, \"batch_size\": 50, \"seed\": 1, \"threads\": 1}}";

static int write_config(const char *path, const char *train, const char *test) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, CONFIG, train, test, N_VAL);
    return fclose(f);
}

/* argmax per row of n x K logits in a little-endian float32 file; NULL if unreadable. */
static int *argmax_file(const char *path, size_t n) {
    float *z = malloc(n * K * sizeof *z);
    int *c = malloc(n * sizeof *c);
    FILE *f = fopen(path, "rb");
    int ok = z && c && f && fread(z, sizeof *z, n * K, f) == n * K;
    for (size_t i = 0; ok && i < n; i++) {
        c[i] = 0;
        for (int k = 1; k < K; k++)
            if (z[i * K + k] > z[i * K + c[i]]) c[i] = k;
    }
    if (f) fclose(f);
    free(z);
    if (!ok) free(c);
    return ok ? c : NULL;
}

/* distill predict's class per row ("test.csv[i] (label: y): c (p=...)"). */
static int distill_classes(const char *out, int *c, size_t n) {
    size_t i = 0;
    for (const char *p = strstr(out, "]"); p && i < n; p = strstr(p + 1, "\n"), i++) {
        const char *q = strstr(p, "): ");
        if (!q) return -1;
        c[i] = atoi(q + 3);
        p = q;
    }
    return i == n ? 0 : -1;
}

static size_t mismatches(const int *a, const int *b, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += a[i] != b[i];
    return bad;
}

/* The exports of dir/s/best.safetensors on the raw test rows against distill's predictions. */
static void check_exports(const char *dir, const int *want) {
    char repo[1024], path[1200];
    int *got = NULL;
    CHECK(getcwd(repo, sizeof repo) != NULL);
    const char *ort = kd_test_ort_module();
    if (!ort) {
        printf("  (ONNX Runtime not installed: the ONNX export is checked by onnx.checker only in "
               "test_deploy; run tests/export/ort_install.sh)\n");
    } else {
        CHECK_EQ_INT(run("cd '%s' && '%s' export s/best.safetensors s.onnx --format onnx && "
                         "KD_ORT_MODULE='%s' node '%s/tests/export/ort_run.js' s.onnx test.idx "
                         "--n %d --logits ort.f32", dir, kd_test_distill(), ort, repo, N_TEST), 0);
        snprintf(path, sizeof path, "%s/ort.f32", dir);
        CHECK((got = argmax_file(path, N_TEST)) != NULL);
        if (got) CHECK_EQ_INT((int)mismatches(got, want, N_TEST), 0);
        free(got);
    }
    CHECK_EQ_INT(run("cd '%s' && '%s' export s/best.safetensors m.h --format c --name m && "
                     "printf '#define M_IMPLEMENTATION\\n#include \"m.h\"\\n' > impl.c && "
                     "cc -std=c99 -O2 -Wall -Wextra -Werror -pedantic -c impl.c -o impl.o && "
                     "cc -std=c99 -O2 -I. -DMODEL=m -DMODEL_UPPER=M '-DMODEL_HEADER=\"m.h\"' "
                     "'%s/tests/export/c_harness.c' impl.o -lm -o harness && "
                     "./harness test.idx %d c.f32", dir, kd_test_distill(), repo, N_TEST), 0);
    snprintf(path, sizeof path, "%s/c.f32", dir);
    CHECK((got = argmax_file(path, N_TEST)) != NULL);
    if (got) CHECK_EQ_INT((int)mismatches(got, want, N_TEST), 0);
    free(got);
}

KD_TEST(standardize_scaled_csv_matches_prestandardized_and_exports_take_raw_rows) {
    const char *dir = kd_test_tmpdir();
    static float xtr[N_TRAIN * D], xte[N_TEST * D];
    static int ytr[N_TRAIN], yte[N_TEST], want[N_TEST];
    double centers[K][D], mean[D] = {0}, sd[D] = {0};
    uint64_t s = 0x9e3779b97f4a7c15u;
    char p[4][1200], cfg[2][1200];
    for (int k = 0; k < K; k++)
        for (int j = 0; j < D; j++) centers[k][j] = normal(&s);
    make_rows(&s, centers, xtr, ytr, N_TRAIN);
    make_rows(&s, centers, xte, yte, N_TEST);
    /* The statistics the trainer must find: its training split (the hold-out is the last
     * N_VAL of its seeded permutation), population std, in double. */
    size_t *tr = NULL, *va = NULL, nt = 0;
    kd_err err;
    CHECK_EQ_INT(kd_split(N_TRAIN, N_VAL, KD_SPLIT_SEED, &tr, &nt, &va, &err), KD_OK);
    for (size_t i = 0; tr && i < nt; i++)
        for (int j = 0; j < D; j++) mean[j] += xtr[tr[i] * D + j] / (double)nt;
    for (size_t i = 0; tr && i < nt; i++)
        for (int j = 0; j < D; j++) {
            double d = xtr[tr[i] * D + j] - mean[j];
            sd[j] += d * d / (double)nt;
        }
    for (int j = 0; j < D; j++) sd[j] = sqrt(sd[j]);
    free(tr);
    free(va);
    const char *names[4] = {"train.csv", "test.csv", "std_train.csv", "std_test.csv"};
    for (int i = 0; i < 4; i++) snprintf(p[i], sizeof p[i], "%s/%s", dir, names[i]);
    snprintf(cfg[0], sizeof cfg[0], "%s/raw.json", dir);
    snprintf(cfg[1], sizeof cfg[1], "%s/std.json", dir);
    CHECK(write_csv(p[0], xtr, ytr, N_TRAIN, NULL, NULL) == 0 &&
          write_csv(p[1], xte, yte, N_TEST, NULL, NULL) == 0 &&
          write_csv(p[2], xtr, ytr, N_TRAIN, mean, sd) == 0 &&
          write_csv(p[3], xte, yte, N_TEST, mean, sd) == 0 &&
          write_config(cfg[0], p[0], p[1]) == 0 && write_config(cfg[1], p[2], p[3]) == 0);
    snprintf(p[0], sizeof p[0], "%s/test.idx", dir);
    CHECK(write_idx_f32(p[0], xte, N_TEST) == 0);

    CHECK_EQ_INT(run("'%s' train --config %s --out %s/s --quiet --set "
                     "data.preprocess.standardize=true", kd_test_distill(), cfg[0], dir), 0);
    double acc_std = kd_test_summary(g_out, "test_acc");
    CHECK_EQ_INT(run("'%s' train --config %s --out %s/p --quiet", kd_test_distill(), cfg[1],
                     dir), 0);
    double acc_pre = kd_test_summary(g_out, "test_acc");
    CHECK(acc_pre > 0.9);
    CHECK_CLOSE(acc_std, acc_pre, 0.01, 0);
    /* Unstandardized, the same data get a warning naming the spread. */
    CHECK_EQ_INT(run("'%s' train --config %s --out %s/n --quiet --epochs 1", kd_test_distill(),
                     cfg[0], dir), 0);
    CHECK_CONTAINS(g_out, "feature scales differ by");
    CHECK_CONTAINS(g_out, "set data.preprocess.standardize: true");

    /* The recorded statistics are the test's own (float of the double values). */
    kd_model m;
    kd_preprocess pp;
    int has_pp = 0;
    snprintf(p[0], sizeof p[0], "%s/s/best.safetensors", dir);
    CHECK_EQ_INT(kd_ckpt_load(p[0], NULL, 0, 0, &m, &pp, &has_pp, NULL, NULL, &err), KD_OK);
    CHECK(has_pp && pp.n_features == D && pp.n_channels == 0);
    for (int j = 0; has_pp && pp.n_features == D && j < D; j++) {
        CHECK_CLOSE(pp.feat[j], mean[j], 1e-6 * sd[j], 1e-6);
        CHECK_CLOSE(pp.feat[D + j], sd[j], 0, 1e-5);
    }
    /* The int8 export carries the same statistics. */
    kd_preprocess q;
    int has_q = 0;
    CHECK_EQ_INT(run("'%s' export %s %s/q.safetensors --dtype int8", kd_test_distill(), p[0],
                     dir), 0);
    snprintf(p[1], sizeof p[1], "%s/q.safetensors", dir);
    kd_model_free(&m);
    CHECK_EQ_INT(kd_ckpt_load(p[1], NULL, 0, 0, &m, &q, &has_q, NULL, NULL, &err), KD_OK);
    CHECK(has_q && has_pp && kd_preprocess_same(&q, &pp));
    if (has_q) kd_preprocess_free(&q);
    if (has_pp) kd_preprocess_free(&pp);
    kd_model_free(&m);

    /* distill's predictions on the raw rows, then the exports' on the same rows. */
    CHECK_EQ_INT(run("'%s' predict --model %s/s/best.safetensors %s/test.csv --top 1",
                     kd_test_distill(), dir, dir), 0);
    CHECK_EQ_INT(distill_classes(g_out, want, N_TEST), 0);
    check_exports(dir, want);

    /* standardize computes the statistics: given ones are refused. */
    CHECK_EQ_INT(run("'%s' train --config %s --out %s/bad --set data.preprocess.standardize=true "
                     "--set 'data.preprocess.mean=[0]' --set 'data.preprocess.std=[1]'",
                     kd_test_distill(), cfg[0], dir), 2);
    CHECK_CONTAINS(g_out, "data.preprocess.standardize: true computes a mean and std per feature");
}

/* mean/std with one value per feature in the config: the statistics standardize recorded,
 * given back by hand, train the same weights bit for bit; a count that is neither the
 * channels' nor the features' is refused naming both. */
KD_TEST(standardize_per_feature_mean_std_in_config) {
    const char *dir = kd_test_tmpdir();
    static float x[600 * D];
    static int y[600];
    double centers[K][D];
    uint64_t s = 12345;
    char path[1200], cfg[1200], arrays[2][D * 20 + 16], a[1300], b[1300];
    for (int k = 0; k < K; k++)
        for (int j = 0; j < D; j++) centers[k][j] = normal(&s);
    make_rows(&s, centers, x, y, 600);
    snprintf(path, sizeof path, "%s/train.csv", dir);
    snprintf(cfg, sizeof cfg, "%s/c.json", dir);
    CHECK(write_csv(path, x, y, 600, NULL, NULL) == 0 && write_config(cfg, path, path) == 0);
    CHECK_EQ_INT(run("'%s' train --config %s --out %s/s --quiet --epochs 2 --set "
                     "data.preprocess.standardize=true", kd_test_distill(), cfg, dir), 0);
    kd_model m;
    kd_preprocess pp;
    int has_pp = 0;
    kd_err err;
    snprintf(a, sizeof a, "%s/s/last.safetensors", dir);
    CHECK_EQ_INT(kd_ckpt_load(a, NULL, 0, 1, &m, &pp, &has_pp, NULL, NULL, &err), KD_OK);
    CHECK(has_pp && pp.n_features == D);
    if (!has_pp || pp.n_features != D) return;
    for (int h = 0; h < 2; h++) {
        size_t used = (size_t)snprintf(arrays[h], sizeof arrays[h], "[");
        for (int j = 0; j < D; j++)
            used += (size_t)snprintf(arrays[h] + used, sizeof arrays[h] - used, "%s%.9g",
                                     j ? "," : "", (double)pp.feat[h * D + j]);
        snprintf(arrays[h] + used, sizeof arrays[h] - used, "]");
    }
    kd_preprocess_free(&pp);
    kd_model_free(&m);
    CHECK_EQ_INT(run("'%s' train --config %s --out %s/g --quiet --epochs 2 --set "
                     "'data.preprocess.mean=%s' --set 'data.preprocess.std=%s'",
                     kd_test_distill(), cfg, dir, arrays[0], arrays[1]), 0);
    snprintf(b, sizeof b, "%s/g/last.safetensors", dir);
    CHECK(kd_test_same_tensors(a, b));
    /* The resolved config holds the 20 values and loads back. */
    CHECK_EQ_INT(run("'%s' train --config %s/g/config.json --out %s/g2 --quiet --epochs 2",
                     kd_test_distill(), dir, dir), 0);
    snprintf(b, sizeof b, "%s/g2/last.safetensors", dir);
    CHECK(kd_test_same_tensors(a, b));
    /* 7 values: neither 1, the 1 channel, nor the 20 features. */
    CHECK_EQ_INT(run("'%s' train --config %s --out %s/bad --set 'data.preprocess.mean=[1,2,3,4,5,6,7]' "
                     "--set 'data.preprocess.std=[1,1,1,1,1,1,1]'", kd_test_distill(), cfg, dir), 2);
    CHECK_CONTAINS(g_out, "7 values given");
    CHECK_CONTAINS(g_out, "one per channel: 1, or one per feature: 20");
    CHECK_EQ_INT(run("'%s' train --config %s --out %s/bad --set 'data.preprocess.mean=[1,2,3,4,5,6,7]' "
                     "--set 'data.preprocess.std=[1,1]'", kd_test_distill(), cfg, dir), 2);
    CHECK_CONTAINS(g_out, "data.preprocess.std: has 2 values but mean has 7");
}
