/* test_train.c - `distill train` end to end on the real binary: accuracy floors for training and
 * distillation on a Fashion-MNIST subset, bitwise-exact resume (epoch boundary, mid-epoch,
 * extended run, real SIGINT), pure distillation without labels, numeric failures (exit 4, last
 * checkpoint untouched), a mid-epoch checkpoint with damaged "run" metadata refused, and the
 * config/teacher errors that need the trainer. */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_common.h"
#include "kd_safetensors.h"
#include "kd_test.h"

#define TINY "configs/tiny.json"
#define OUT_CAP 65536

static char g_out[OUT_CAP];

/* `distill train ARGS`; output in g_out; the exit status. */
#define train(...) kd_test_distillf(g_out, sizeof g_out, "", "train " __VA_ARGS__)

static int same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    kd_err err;
    int same = kd_read_file(a, 1u << 28, &x, &nx, &err) == KD_OK &&
               kd_read_file(b, 1u << 28, &y, &ny, &err) == KD_OK && nx == ny &&
               memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

/* Every tensor of a with the same bytes in b (the weights part of a checkpoint). */
static int count_lines(const char *path) {
    char *text = NULL;
    size_t n = 0;
    kd_err err;
    if (kd_read_file(path, 1u << 20, &text, &n, &err) != KD_OK) return -1;
    int lines = 0;
    for (size_t i = 0; i < n; i++) lines += text[i] == '\n';
    free(text);
    return lines;
}

/* A small teacher: 784-256-10 on the tiny subset, 3 epochs (about 78% validation). */
static int make_teacher(const char *dir) {
    return train("--config " TINY " --out %s/teacher --epochs 3 --quiet --set "
                 "'model.layers=[{\"type\":\"dense\",\"units\":256},{\"type\":\"relu\"},"
                 "{\"type\":\"dense\",\"units\":10}]'",
                 dir);
}

#define KD_SET "--set 'teacher={\"checkpoint\":\"%s/teacher/best.safetensors\"}' "

KD_TEST(train_tiny_reaches_accuracy_floor_and_writes_run_folder) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    int rc = train("--config " TINY " --out %s/run", dir);
    CHECK_EQ_INT(rc, 0);
    /* 784-64-10 on 1500 images for 2 epochs: ~75% validation; a trainer with a wrong gradient
     * sign, no update or a shuffled label pairing stays near 10%. */
    double val = kd_test_summary(g_out, "val_acc"), test = kd_test_summary(g_out, "test_acc");
    CHECK(val >= 0.70);
    CHECK(test >= 0.68);
    CHECK_CONTAINS(g_out, "loss = CE(y, p_s)");
    CHECK_CONTAINS(g_out, "epoch 2/2");
    char p[1024];
    snprintf(p, sizeof p, "%s/run/metrics.jsonl", dir);
    CHECK_EQ_INT(count_lines(p), 2);
    const char *keys[] = {"\"epoch\":2", "\"loss\":", "\"soft\":", "\"hard\":", "\"train_acc\":",
                          "\"val_acc\":", "\"lr\":", "\"samples_per_s\":", "\"seconds\":"};
    char *text = NULL;
    size_t n;
    kd_err err;
    if (kd_read_file(p, 1u << 20, &text, &n, &err) == KD_OK)
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) CHECK_CONTAINS(text, keys[i]);
    free(text);
    const char *files[] = {"config.json", "last.safetensors", "best.safetensors"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/run/%s", dir, files[i]);
        CHECK(access(p, R_OK) == 0);
    }
    /* The saved config repeats the run: same seed, same thread count, same weights. */
    rc = train("--config %s/run/config.json --out %s/again --quiet", dir, dir);
    CHECK_EQ_INT(rc, 0);
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/run/last.safetensors", dir);
    snprintf(b, sizeof b, "%s/again/last.safetensors", dir);
    CHECK(kd_test_same_tensors(a, b));
    /* --quiet prints one line per epoch and the summary, nothing else. */
    CHECK(strncmp(g_out, "epoch 1/", 8) == 0);
    const char *sum = strstr(g_out, "\nsummary:");
    CHECK(sum != NULL);
    size_t lines = 0;
    for (const char *c = g_out; sum && c <= sum; c++) lines += *c == '\n';
    const char *e = strstr(g_out, "epoch 1/");
    CHECK(e && lines == (size_t)atoi(e + 8));
}

KD_TEST(train_distillation_reaches_floor_and_prints_teacher) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    CHECK_EQ_INT(make_teacher(dir), 0);
    double teacher_test = kd_test_summary(g_out, "best_test_acc");  /* students load best.safetensors */
    CHECK(teacher_test >= 0.72);
    int rc = train("--config " TINY " --out %s/kd " KD_SET
                   "--set 'distill={\"alpha\":0.9,\"temperature\":4}'",
                   dir, dir);
    CHECK_EQ_INT(rc, 0);
    CHECK_CONTAINS(g_out, "loss = 0.9 * T^2 * KL(p_t^T || p_s^T) + 0.1 * CE(y, p_s), T = 4");
    CHECK_CONTAINS(g_out, "teacher validation accuracy: ");
    CHECK(kd_test_summary(g_out, "val_acc") >= 0.68);
    CHECK(kd_test_summary(g_out, "test_acc") >= 0.66);
    CHECK_CLOSE(kd_test_summary(g_out, "teacher_test_acc"), teacher_test, 1e-9, 0);
    CHECK(strstr(g_out, "WARNING") == NULL);
}

KD_TEST(train_pure_distillation_without_labels) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    CHECK_EQ_INT(make_teacher(dir), 0);
    /* Labels withheld from the training set (validation keeps them). */
    int rc = train("--config " TINY " --out %s/a1 --quiet " KD_SET
                   "--set 'distill={\"alpha\":1,\"temperature\":4}' --set data.use_labels=false "
                   "--epochs 3",
                   dir, dir);
    CHECK_EQ_INT(rc, 0);
    CHECK(kd_test_summary(g_out, "val_acc") >= 0.65);
    char p[1024], *text = NULL;
    size_t n;
    kd_err err;
    snprintf(p, sizeof p, "%s/a1/metrics.jsonl", dir);
    if (kd_read_file(p, 1u << 20, &text, &n, &err) == KD_OK) {
        CHECK_CONTAINS(text, "\"train_acc\":null");
        CHECK_CONTAINS(text, "\"hard\":null");
    }
    free(text);
    /* Truly unlabeled data (no labels file): legal with alpha 1, judged on the test set. */
    rc = train("--config " TINY " --out %s/unl --quiet " KD_SET
               "--set 'distill={\"alpha\":1,\"temperature\":4}' --set data.train.labels=null "
               "--epochs 3",
               dir, dir);
    CHECK_EQ_INT(rc, 0);
    CHECK(kd_test_summary(g_out, "test_acc") >= 0.62);
    /* ... and refused with a label term. */
    rc = train("--config " TINY " --out %s/bad --quiet " KD_SET
               "--set 'distill={\"alpha\":0.5}' --set data.train.labels=null",
               dir, dir);
    CHECK_EQ_INT(rc, 2);
    CHECK_CONTAINS(g_out, "has no labels");
    CHECK_CONTAINS(g_out, "distill.alpha must be 1");
}

/* Full run vs the same run interrupted after `stop` steps and resumed: identical files. */
static void check_resume(const char *dir, const char *name, const char *extra, int stop) {
    int rc = train("--config " TINY " --out %s/%s-full --quiet %s", dir, name, extra);
    CHECK_EQ_INT(rc, 0);
    char env[64];
    snprintf(env, sizeof env, "KD_TRAIN_STOP_AFTER_STEPS=%d", stop);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s train --config " TINY " --out %s/%s-cut --quiet %s", env,
             kd_test_distill(), dir, name, extra);
    rc = kd_test_run(cmd, g_out, sizeof g_out);
    CHECK_EQ_INT(rc, 130);
    CHECK_CONTAINS(g_out, "resume with: distill train --resume");
    rc = train("--resume %s/%s-cut --quiet", dir, name);
    CHECK_EQ_INT(rc, 0);
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/%s-full/last.safetensors", dir, name);
    snprintf(b, sizeof b, "%s/%s-cut/last.safetensors", dir, name);
    if (!same_file(a, b)) {
        kd_test_fail(__FILE__, __LINE__, "%s: resumed run differs from the uninterrupted one", name);
        kd_test_same_tensors(a, b);
    }
    snprintf(a, sizeof a, "%s/%s-full/best.safetensors", dir, name);
    snprintf(b, sizeof b, "%s/%s-cut/best.safetensors", dir, name);
    CHECK(kd_test_same_tensors(a, b));
    snprintf(a, sizeof a, "%s/%s-cut/metrics.jsonl", dir, name);
    CHECK_EQ_INT(count_lines(a), 3);
}

/* tiny.json on [1, 28, 28] images with shifts of up to 2 pixels and flips. */
#define AUG_ARGS                                                                           \
    "--epochs 3 --set data.preprocess.flatten=false "                                      \
    "--set 'data.augment={\"shift\":2,\"flip\":true}' "                                   \
    "--set 'model.layers=[{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":64},"     \
    "{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":10}]'"

/* Augmentation is applied (the weights differ from the same run without it), still learns,
 * and is recorded in the run's resolved config. */
KD_TEST(train_with_augmentation_learns_and_differs) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    CHECK_EQ_INT(train("--config " TINY " --out %s/aug --quiet " AUG_ARGS, dir), 0);
    double acc = kd_test_summary(g_out, "test_acc");
    CHECK(acc >= 0.70);
    CHECK_EQ_INT(train("--config " TINY " --out %s/plain --quiet " AUG_ARGS
                       " --set 'data.augment={}'", dir), 0);
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/aug/last.safetensors", dir);
    snprintf(b, sizeof b, "%s/plain/last.safetensors", dir);
    CHECK(!same_file(a, b));
    snprintf(a, sizeof a, "%s/aug/config.json", dir);
    char *json = NULL;
    size_t len = 0;
    kd_err err;
    CHECK_EQ_INT(kd_read_file(a, 1u << 20, &json, &len, &err), KD_OK);
    CHECK(json && strstr(json, "\"augment\"") && strstr(json, "\"shift\":\t2") &&
          strstr(json, "\"flip\":\ttrue"));
    free(json);
}

KD_TEST(train_resume_is_bitwise_exact) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    /* Dropout in the student so the RNG stream (masks + shuffles) must be restored exactly;
     * 12 batches per epoch: step 17 is mid-epoch 2, step 12 the end of epoch 1. */
    const char *drop = "--epochs 3 --set 'model.layers=[{\"type\":\"dense\",\"units\":64},"
                       "{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.3},"
                       "{\"type\":\"dense\",\"units\":10}]'";
    check_resume(dir, "mid", drop, 17);
    check_resume(dir, "edge", drop, 12);
    /* Augmentation draws from the same RNG: a resumed run repeats the flips and shifts. */
    check_resume(dir, "aug", AUG_ARGS, 17);
    /* A graph model: a value read by three layers, a residual sum, a concat, dropout. */
    const char *graph = "--epochs 3 --set 'model.layers=[{\"type\":\"dense\",\"units\":32,\"name\":\"h\"},"
                        "{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.3},"
                        "{\"type\":\"dense\",\"units\":32,\"name\":\"g\"},"
                        "{\"type\":\"add\",\"from\":[\"g\",\"h\"]},"
                        "{\"type\":\"concat\",\"from\":[4,\"h\"]},"
                        "{\"type\":\"dense\",\"units\":10}]'";
    check_resume(dir, "graph", graph, 17);
    /* Distillation resumes exactly too. */
    CHECK_EQ_INT(make_teacher(dir), 0);
    char kd[2048];
    snprintf(kd, sizeof kd, "--epochs 3 " KD_SET "--set 'distill={\"alpha\":0.7}'", dir);
    check_resume(dir, "kd", kd, 20);
    /* Extending a finished run: 1 epoch, then --resume --epochs 3 (constant lr, so the first
     * epoch is the same run) equals 3 epochs straight. */
    const char *cst = "--set 'schedule={\"name\":\"constant\"}'";
    CHECK_EQ_INT(train("--config " TINY " --out %s/ext-full --epochs 3 --quiet %s", dir, cst), 0);
    CHECK_EQ_INT(train("--config " TINY " --out %s/ext --epochs 1 --quiet %s", dir, cst), 0);
    CHECK_EQ_INT(train("--resume %s/ext --epochs 3 --quiet", dir), 0);
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/ext-full/last.safetensors", dir);
    snprintf(b, sizeof b, "%s/ext/last.safetensors", dir);
    CHECK(kd_test_same_tensors(a, b));
}

KD_TEST(train_sigint_then_resume_matches_uninterrupted) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    /* Long enough (30 epochs, ~2 s) that the signal lands mid-run. It is sent once the first
     * epoch's metrics line exists, so the handler is surely installed however loaded the
     * machine is (a fixed delay once fired before it). */
    const char *args = "--epochs 30 --set 'model.layers=[{\"type\":\"dense\",\"units\":128},"
                       "{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.2},"
                       "{\"type\":\"dense\",\"units\":10}]'";
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "%s train --config " TINY " --out %s/cut %s > %s/cut.log 2>&1 & p=$!; i=0; "
             "while [ ! -s %s/cut/metrics.jsonl ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; "
             "kill -INT $p; wait $p; rc=$?; cat %s/cut.log; exit $rc",
             kd_test_distill(), dir, args, dir, dir, dir);
    int rc = kd_test_run(cmd, g_out, sizeof g_out);
    CHECK_EQ_INT(rc, 130);
    CHECK_CONTAINS(g_out, "interrupted");
    CHECK_CONTAINS(g_out, "resumable checkpoint");
    CHECK_EQ_INT(train("--resume %s/cut --quiet", dir), 0);
    CHECK_EQ_INT(train("--config " TINY " --out %s/full --quiet %s", dir, args), 0);
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/full/last.safetensors", dir);
    snprintf(b, sizeof b, "%s/cut/last.safetensors", dir);
    CHECK(kd_test_same_tensors(a, b));
}

KD_TEST(train_numeric_failure_exits_4_and_keeps_last_checkpoint) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    CHECK_EQ_INT(train("--config " TINY " --out %s/run --quiet", dir), 0);
    char last[1024], keep[1024], cmd[4096];
    snprintf(last, sizeof last, "%s/run/last.safetensors", dir);
    snprintf(keep, sizeof keep, "%s/keep.safetensors", dir);
    snprintf(cmd, sizeof cmd, "cp %s %s", last, keep);
    CHECK_EQ_INT(kd_test_run(cmd, NULL, 0), 0);
    /* lr 1e30 blows the weights up within a step or two. */
    int rc = train("--resume %s/run --epochs 4 --set optimizer.lr=1e30", dir);
    CHECK_EQ_INT(rc, 4);
    CHECK_CONTAINS(g_out, "numeric failure: ");
    CHECK_CONTAINS(g_out, " at epoch 3 step ");
    CHECK_CONTAINS(g_out, "last good checkpoint kept: ");
    CHECK_CONTAINS(g_out, last);
    CHECK(same_file(last, keep));
    kd_st_file f = {0};
    kd_err err;
    CHECK_EQ_INT(kd_st_read(&f, last, &err), KD_OK);
    kd_st_free(&f);
    /* From scratch: nothing written, and the message says so. */
    rc = train("--config " TINY " --out %s/fresh --quiet --set optimizer.lr=1e30", dir);
    CHECK_EQ_INT(rc, 4);
    CHECK_CONTAINS(g_out, "no checkpoint was written");
    snprintf(last, sizeof last, "%s/fresh/last.safetensors", dir);
    CHECK(access(last, F_OK) != 0);
}

/* Copies a checkpoint with one output bias set to NaN (every logit of that class is NaN). */
static int poison(const char *src, const char *dst) {
    kd_st_file f = {0};
    kd_err err;
    int ok = 0;
    kd_st_out *outs = NULL;
    float *copy = NULL;
    if (kd_st_read(&f, src, &err) != KD_OK) goto cleanup;
    outs = calloc(f.n_tensors, sizeof *outs);
    if (!outs) goto cleanup;
    for (size_t i = 0; i < f.n_tensors; i++) {
        const kd_st_tensor *t = &f.tensors[i];
        outs[i].name = t->name;
        outs[i].dtype = t->dtype;
        outs[i].rank = t->rank;
        memcpy(outs[i].shape, t->shape, sizeof t->shape);
        outs[i].data = t->data;
        if (strcmp(t->name, "2.bias") == 0 && t->dtype == KD_DT_F32) {
            copy = malloc(t->end - t->begin);
            if (!copy) goto cleanup;
            memcpy(copy, t->data, t->end - t->begin);
            copy[5] = NAN;
            outs[i].data = copy;
        }
    }
    ok = copy && kd_st_write(dst, outs, f.n_tensors, (const char *const *)f.meta_keys,
                             (const char *const *)f.meta_vals, f.n_meta, &err) == KD_OK;
cleanup:
    free(copy);
    free(outs);
    kd_st_free(&f);
    return ok;
}

KD_TEST(train_nan_teacher_exits_4_naming_teacher_logits) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    CHECK_EQ_INT(make_teacher(dir), 0);
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/teacher/best.safetensors", dir);
    snprintf(b, sizeof b, "%s/nan.safetensors", dir);
    CHECK(poison(a, b));
    int rc = train("--config " TINY " --out %s/kd --quiet --set "
                   "'teacher={\"checkpoint\":\"%s\"}'",
                   dir, b);
    CHECK_EQ_INT(rc, 4);
    CHECK_CONTAINS(g_out, "numeric failure: teacher logits contain NaN/Inf at epoch 1 step 1");
}

KD_TEST(train_teacher_errors_name_file_and_shapes) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    /* Missing teacher file: exit 3 naming it. */
    int rc = train("--config " TINY " --out %s/x --quiet --set "
                   "'teacher={\"checkpoint\":\"%s/nope.safetensors\"}'",
                   dir, dir);
    CHECK_EQ_INT(rc, 3);
    CHECK_CONTAINS(g_out, "nope.safetensors");
    /* A file that is not a checkpoint: exit 3 naming it. */
    char p[1024];
    snprintf(p, sizeof p, "%s/junk.safetensors", dir);
    CHECK_EQ_INT(kd_test_write_file(p, "not a checkpoint at all", 23), 0);
    rc = train("--config " TINY " --out %s/x --quiet --set 'teacher={\"checkpoint\":\"%s\"}'",
               dir, p);
    CHECK_EQ_INT(rc, 3);
    CHECK_CONTAINS(g_out, "junk.safetensors");
    /* A teacher trained on 5-feature CSV data, used on 784-pixel images: names both shapes. */
    snprintf(p, sizeof p, "%s/five.csv", dir);
    const char csv[] = "a,b,c,d,e,label\n1,2,3,4,5,0\n2,3,4,5,6,1\n0,1,0,1,0,0\n5,4,3,2,1,1\n"
                       "1,1,1,1,1,0\n9,8,7,6,5,1\n";
    CHECK_EQ_INT(kd_test_write_file(p, csv, sizeof csv - 1), 0);
    rc = train("--config " TINY " --out %s/five --quiet --epochs 1 "
               "--set 'data={\"train\":{\"format\":\"csv\",\"path\":\"%s\"},"
               "\"validation_split\":0}' "
               "--set 'model.layers=[{\"type\":\"dense\",\"units\":10}]'",
               dir, p);
    CHECK_EQ_INT(rc, 0);
    rc = train("--config " TINY " --out %s/x --quiet --set "
               "'teacher={\"checkpoint\":\"%s/five/last.safetensors\"}'",
               dir, dir);
    CHECK_EQ_INT(rc, 3);
    CHECK_CONTAINS(g_out, "[5]");
    CHECK_CONTAINS(g_out, "[784]");
    CHECK_CONTAINS(g_out, "five/last.safetensors");
    /* Teacher with 12 outputs vs a 10-class student. */
    rc = train("--config " TINY " --out %s/t12 --quiet --epochs 1 --set "
               "'model.layers=[{\"type\":\"dense\",\"units\":12}]'",
               dir);
    CHECK_EQ_INT(rc, 0);
    rc = train("--config " TINY " --out %s/x --quiet --set "
               "'teacher={\"checkpoint\":\"%s/t12/best.safetensors\"}'",
               dir, dir);
    CHECK_EQ_INT(rc, 3);
    CHECK_CONTAINS(g_out, "12 classes");
    CHECK_CONTAINS(g_out, "the data has 10 classes");
}

KD_TEST(train_usage_and_setup_errors) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    CHECK_EQ_INT(train("--config " TINY " --bogus"), 2);
    CHECK_CONTAINS(g_out, "unknown option '--bogus'");
    CHECK_CONTAINS(g_out, "Try 'distill help train'");
    CHECK_EQ_INT(train("--epochs 3"), 2);
    CHECK_CONTAINS(g_out, "--config FILE is required");
    CHECK_EQ_INT(train("--config " TINY " --epochs three"), 2);
    CHECK_CONTAINS(g_out, "--epochs needs an integer in 1..");
    CHECK_EQ_INT(train("--config " TINY " --set noequals"), 2);
    CHECK_EQ_INT(train("--resume %s/none", dir), 3);
    CHECK_CONTAINS(g_out, "none");
    /* Labels withheld but nothing else to learn from. */
    CHECK_EQ_INT(train("--config " TINY " --out %s/x --set data.use_labels=false", dir), 2);
    CHECK_CONTAINS(g_out, "data.use_labels");
    /* Model output narrower than the data's classes. */
    CHECK_EQ_INT(train("--config " TINY " --out %s/x --set "
                       "'model.layers=[{\"type\":\"dense\",\"units\":5}]'",
                       dir),
                 2);
    CHECK_CONTAINS(g_out, "5 outputs");
    CHECK_CONTAINS(g_out, "10 classes");
    /* Augmentation needs [C, H, W] samples (tiny.json flattens them). */
    CHECK_EQ_INT(train("--config " TINY " --out %s/x --set data.augment.shift=2", dir), 2);
    CHECK_CONTAINS(g_out, "data.augment needs image samples [C, H, W]");
    CHECK_CONTAINS(g_out, "data.preprocess.flatten is on");
    /* Validation larger than the data. */
    CHECK_EQ_INT(train("--config " TINY " --out %s/x --set data.validation_split=5000", dir), 2);
    CHECK_CONTAINS(g_out, "data.validation_split");
    /* --help is not an error. */
    CHECK_EQ_INT(train("--help"), 0);
    CHECK_CONTAINS(g_out, "--resume");
}

KD_TEST(train_records_class_names_from_config) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    /* Shell-quoted JSON array of ten names; a wrong count is a config error naming the key. */
    int rc = train("--config " TINY " --out %s/run --quiet --set train.epochs=1 --set "
                   "'data.classes=[\"top\",\"trouser\",\"pullover\",\"dress\",\"coat\",\"sandal\","
                   "\"shirt\",\"sneaker\",\"bag\",\"boot\"]'",
                   dir);
    CHECK_EQ_INT(rc, 0);
    char cmd[1024], out[16384];
    snprintf(cmd, sizeof cmd, "%s info %s/run/best.safetensors", kd_test_distill(), dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "\"trouser\"");
    CHECK_CONTAINS(out, "\"boot\"");
    rc = train("--config " TINY " --out %s/bad --quiet --set 'data.classes=[\"a\",\"b\"]'", dir);
    CHECK_EQ_INT(rc, 2);
    CHECK_CONTAINS(g_out, TINY ": data.classes: 2 names, but the model gives 10 classes");
    /* A layer the model cannot build: the message names the config file, then the field. */
    rc = train("--config " TINY " --out %s/bad2 --quiet --set 'model.layers[0].unit=3'", dir);
    CHECK_EQ_INT(rc, 2);
    CHECK_CONTAINS(g_out, TINY ": model.layers: layer 0");
    CHECK_CONTAINS(g_out, "did you mean \"units\"");
}

/* Copies checkpoint src to dst with its "run" metadata replaced by run (NULL: left out). */
static int rewrite_run(const char *src, const char *dst, const char *run) {
    kd_st_file f = {0};
    kd_err err;
    int ok = 0;
    kd_st_out *outs = NULL;
    const char **keys = NULL, **vals = NULL;
    size_t n_meta = 0;
    if (kd_st_read(&f, src, &err) != KD_OK) goto cleanup;
    outs = calloc(f.n_tensors, sizeof *outs);
    keys = calloc(f.n_meta + 1, sizeof *keys);
    vals = calloc(f.n_meta + 1, sizeof *vals);
    if (!outs || !keys || !vals) goto cleanup;
    for (size_t i = 0; i < f.n_tensors; i++) {
        const kd_st_tensor *t = &f.tensors[i];
        outs[i] = (kd_st_out){t->name, t->dtype, t->rank, {0}, t->data};
        memcpy(outs[i].shape, t->shape, sizeof t->shape);
    }
    for (size_t i = 0; i < f.n_meta; i++) {
        if (strcmp(f.meta_keys[i], "run") == 0) continue;
        keys[n_meta] = f.meta_keys[i];
        vals[n_meta++] = f.meta_vals[i];
    }
    if (run) {
        keys[n_meta] = "run";
        vals[n_meta++] = run;
    }
    ok = kd_st_write(dst, outs, f.n_tensors, keys, vals, n_meta, &err) == KD_OK;
cleanup:
    free(outs);
    free(keys);
    free(vals);
    kd_st_free(&f);
    return ok;
}

/* The checkpoint's "run" metadata with partial.FIELD set to the JSON value (NULL: removed);
 * malloc'd. */
static char *run_with_field(const char *path, const char *field, const char *value) {
    kd_st_file f = {0};
    kd_err err;
    char *out = NULL;
    if (kd_st_read(&f, path, &err) != KD_OK) return NULL;
    cJSON *j = cJSON_Parse(kd_st_meta(&f, "run"));
    cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "partial");
    if (p) {
        cJSON_DeleteItemFromObjectCaseSensitive(p, field);
        if (value) cJSON_AddItemToObject(p, field, cJSON_CreateRaw(value));
        out = cJSON_PrintUnformatted(j);
    }
    cJSON_Delete(j);
    kd_st_free(&f);
    return out;
}

/* Resumes dir (whose last.safetensors is damaged) and expects exit 3 naming the file and msg. */
static void check_resume_refused(const char *dir, const char *msg) {
    char want[1200];
    CHECK_EQ_INT(train("--resume %s --quiet", dir), 3);
    snprintf(want, sizeof want, "resume %s/last.safetensors: %s", dir, msg);
    CHECK_CONTAINS(g_out, want);
}

KD_TEST(train_resume_refuses_mid_epoch_checkpoint_with_damaged_run_metadata) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    char cut[1024], last[1024], good[1024], cmd[4096];
    snprintf(cut, sizeof cut, "%s/cut", dir);
    snprintf(last, sizeof last, "%s/last.safetensors", cut);
    snprintf(good, sizeof good, "%s/good.safetensors", dir);
    /* 12 batches per epoch: stopped after step 5, mid-epoch 1. */
    snprintf(cmd, sizeof cmd, "KD_TRAIN_STOP_AFTER_STEPS=5 %s train --config " TINY
             " --out %s --quiet", kd_test_distill(), cut);
    CHECK_EQ_INT(kd_test_run(cmd, g_out, sizeof g_out), 130);
    snprintf(cmd, sizeof cmd, "cp %s %s", last, good);
    CHECK_EQ_INT(kd_test_run(cmd, NULL, 0), 0);
    kd_st_file f = {0};
    kd_err err;
    CHECK_EQ_INT(kd_st_read(&f, good, &err), KD_OK);
    CHECK(kd_st_meta(&f, "train.batch_in_epoch") &&
          strcmp(kd_st_meta(&f, "train.batch_in_epoch"), "5") == 0);
    kd_st_free(&f);

    CHECK(rewrite_run(good, last, NULL));
    check_resume_refused(cut, "metadata run: missing");
    CHECK(rewrite_run(good, last, "{\"epoch\": 0, \"partial\": {\"loss\""));
    check_resume_refused(cut, "metadata run: expected a JSON object");
    CHECK(rewrite_run(good, last, "{\"epoch\":0,\"step\":5,\"val_acc\":null}"));
    check_resume_refused(cut, "metadata run.partial: expected an object");
    static const char *const cases[][2] = {
        {"seen", NULL}, {"loss", "-1"}, {"hard", "\"3.5\""}, {"correct", "1e999"},
        {"seconds", "null"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *run = run_with_field(good, cases[i][0], cases[i][1]);
        CHECK(run != NULL);
        CHECK(run && rewrite_run(good, last, run));
        char want[128];
        snprintf(want, sizeof want, "metadata run.partial.%s: expected a number >= 0",
                 cases[i][0]);
        check_resume_refused(cut, want);
        free(run);
    }
    /* The same file undamaged resumes; the refusals above wrote nothing. */
    snprintf(cmd, sizeof cmd, "cp %s %s", good, last);
    CHECK_EQ_INT(kd_test_run(cmd, NULL, 0), 0);
    CHECK_EQ_INT(train("--resume %s --quiet", cut), 0);
}

KD_TEST(train_resume_at_epoch_boundary_needs_no_partial_sums) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    char cut[1024], last[1024], cmd[4096];
    snprintf(cut, sizeof cut, "%s/edge", dir);
    snprintf(last, sizeof last, "%s/last.safetensors", cut);
    /* Stopped after step 12, the end of epoch 1: an epoch-boundary checkpoint. */
    snprintf(cmd, sizeof cmd, "KD_TRAIN_STOP_AFTER_STEPS=12 %s train --config " TINY
             " --out %s --quiet", kd_test_distill(), cut);
    CHECK_EQ_INT(kd_test_run(cmd, g_out, sizeof g_out), 130);
    CHECK(rewrite_run(last, last, NULL));
    CHECK_EQ_INT(train("--resume %s --quiet", cut), 0);
    CHECK_CONTAINS(g_out, "summary:");
}
