/* test_cache_train.c - the soft-target cache and teacher ensembles end to end on the real
 * binary: `distill logits` then `distill train` from the file, the cached targets against a
 * fresh teacher forward of shuffled batches, cached and online runs alike, every refusal
 * (another teacher, subset, preprocessing or temperature; a corrupt or short file), a missing
 * cache built by train, ensembles online and cached (with their accuracies, a teacher that does
 * not fit, no labels), augmented views with an exact resume, top-k and f16. */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kd_cache.h"
#include "kd_checkpoint.h"
#include "kd_config.h"
#include "kd_safetensors.h"
#include "kd_test.h"

#define TINY "configs/tiny.json"
#define OUT_CAP 65536

static char g_out[OUT_CAP];

/* `distill ARGS`; output in g_out; the exit status. */
#define distill(...) kd_test_distillf(g_out, sizeof g_out, "", __VA_ARGS__)

#define MLP(units)                                                                         \
    "'model.layers=[{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":" #units "},"       \
    "{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":10}]'"
/* Samples stay [1, 28, 28] (augmentation needs images); the models flatten them. The student
 * is 784-64-10; a later --set of model.layers (the teachers') wins. */
#define IMAGES "--set data.preprocess.flatten=false --set " MLP(64) " "

static int make_teacher(const char *dir, const char *name, int seed, const char *layers) {
    return distill("train --config " TINY " --out %s/%s --epochs 3 --seed %d --quiet " IMAGES
                   "--set %s", dir, name, seed, layers);
}

#define ONE_TEACHER "--set 'teacher={\"checkpoint\":\"%s/t1/best.safetensors\", " \
                    "\"cache\": {\"path\": \"%s/c.kdc\"}}' "

KD_TEST(cache_build_matches_teacher_and_trains_like_online) {
    if (!kd_test_have_tiny()) return;
    const char *d = kd_test_tmpdir();
    CHECK_EQ_INT(make_teacher(d, "t1", 1, MLP(256)), 0);
    CHECK_EQ_INT(distill("logits --config " TINY " " IMAGES ONE_TEACHER, d, d), 0);
    CHECK_CONTAINS(g_out, "samples 1500 views 1 teachers 1");
    /* A second build refuses to overwrite without --force. */
    CHECK_EQ_INT(distill("logits --config " TINY " " IMAGES ONE_TEACHER, d, d), 2);
    CHECK_CONTAINS(g_out, "--force");

    /* The cached rows of a shuffled batch equal a fresh teacher forward of those samples. */
    char path[1024], ck[1024];
    snprintf(path, sizeof path, "%s/c.kdc", d);
    snprintf(ck, sizeof ck, "%s/t1/best.safetensors", d);
    kd_config cfg;
    kd_cache *cache = NULL;
    kd_model tm = {0};
    kd_dataset *ds = NULL;
    kd_err err;
    const char *ov[] = {"data.preprocess.flatten=false"};
    CHECK_EQ_INT(kd_config_load(&cfg, TINY, ov, 1, &err), KD_OK);
    CHECK_EQ_INT(kd_cache_open(&cache, path, &err), KD_OK);
    CHECK_EQ_INT(kd_dataset_open(&ds, &cfg.train, &cfg.pp, &err), KD_OK);
    CHECK_EQ_INT(kd_ckpt_load(ck, NULL, 0, 0, &tm, NULL, NULL, NULL, NULL, &err), KD_OK);
    size_t *train_idx = NULL, *val_idx = NULL, n_train = 0;
    CHECK_EQ_INT(kd_split(2000, 500, KD_SPLIT_SEED, &train_idx, &n_train, &val_idx, &err), KD_OK);
    kd_rng r;
    kd_rng_seed(&r, 5);
    kd_rng_shuffle(&r, train_idx, n_train);
    enum { NB = 100 };
    float *x = malloc(NB * 784 * sizeof *x), *got = malloc(NB * 10 * sizeof *got);
    CHECK_EQ_INT(kd_model_reserve(&tm, NB, &err), KD_OK);
    CHECK_EQ_INT(kd_dataset_get(ds, train_idx + 200, NB, x, NULL, NULL, &err), KD_OK);
    kd_ctx ctx = {0, NULL, NULL, 0, 0, 0};
    const float *want = kd_model_forward(&tm, x, NB, &ctx);
    CHECK_EQ_INT(kd_cache_logits(cache, train_idx + 200, NULL, NB, got, &err), KD_OK);
    /* Equal up to the order of the products' sums: the cache was built at another batch size,
     * and OpenBLAS's kernels for some CPUs (AMD Zen) sum a row in a different order for another
     * M (seen: 3.8e-6 on logits of 0.06). Another sample's row would be off by whole units. */
    CHECK_FLOATS(got, want, NB * 10, 2e-5, 2e-5);
    /* A validation sample has no row: the cache is keyed by sample, not by position. */
    CHECK(kd_cache_row(cache, val_idx[0]) == -1);
    CHECK(kd_cache_row(cache, train_idx[0]) >= 0);
    free(x);
    free(got);
    free(train_idx);
    free(val_idx);
    kd_model_free(&tm);
    kd_dataset_close(ds);
    kd_cache_close(cache);
    kd_config_free(&cfg);

    /* Cached and online runs reach the same accuracy (no augmentation: identical targets). */
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/cached --quiet " IMAGES ONE_TEACHER
                        , d, d, d), 0);
    double cached = kd_test_summary(g_out, "val_acc");
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/online --quiet " IMAGES
                         "--set 'teacher={\"checkpoint\":\"%s/t1/best.safetensors\"}' --set "
                         MLP(64), d, d), 0);
    double online = kd_test_summary(g_out, "val_acc");
    CHECK(cached >= 0.70 && online >= 0.70);
    CHECK(fabs(cached - online) <= 0.02);
}

KD_TEST(cache_refusals_name_the_field_and_the_rebuild_command) {
    if (!kd_test_have_tiny()) return;
    const char *d = kd_test_tmpdir();
    char p[1024], q[1024];
    CHECK_EQ_INT(make_teacher(d, "t1", 1, MLP(128)), 0);
    CHECK_EQ_INT(distill("logits --config " TINY " " IMAGES ONE_TEACHER, d, d), 0);
    /* Another teacher file (the run's last checkpoint instead of its best). */
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/a --quiet " IMAGES ONE_TEACHER
                         "--set teacher.checkpoint=%s/t1/last.safetensors", d, d, d, d), 3);
    CHECK_CONTAINS(g_out, "teacher[0].checkpoint");
    CHECK_CONTAINS(g_out, "distill logits --config");
    /* Another subset of the training data, other preprocessing. */
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/a --quiet " IMAGES ONE_TEACHER
                         "--set data.train.subset=1900", d, d, d), 3);
    CHECK_CONTAINS(g_out, "data.train.subset");
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/a --quiet " IMAGES ONE_TEACHER
                         "--set data.preprocess.mean=[0.3]", d, d, d), 3);
    CHECK_CONTAINS(g_out, "data.preprocess");
    /* Per-feature statistics (one mean and std per pixel; short numbers: the command line of
     * the helper holds 6,000 characters) are part of the preprocessing: a cache built under one
     * set is refused under another that differs in one pixel's mean. */
    static char means[2][784 * 6 + 64], stds[784 * 6 + 64];
    for (int k = 0; k < 2; k++) {
        size_t len = (size_t)snprintf(means[k], sizeof means[k], "--set data.preprocess.mean=[");
        for (int i = 0; i < 784; i++)
            len += (size_t)snprintf(means[k] + len, sizeof means[k] - len, "%s%s", i ? "," : "",
                                    k && i == 300 ? "1" : "0");
        snprintf(means[k] + len, sizeof means[k] - len, "]");
    }
    size_t len = (size_t)snprintf(stds, sizeof stds, "--set data.preprocess.std=[");
    for (int i = 0; i < 784; i++) len += (size_t)snprintf(stds + len, sizeof stds - len, "%s1", i ? "," : "");
    snprintf(stds + len, sizeof stds - len, "]");
    if (distill("logits --config " TINY " " IMAGES ONE_TEACHER "--set teacher.cache.path="
                "%s/pf.kdc %s %s", d, d, d, means[0], stds) != 0)
        kd_test_fail(__FILE__, __LINE__, "%.600s", g_out);
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/pf --quiet --epochs 1 " IMAGES
                         ONE_TEACHER "--set teacher.cache.path=%s/pf.kdc %s %s", d, d, d, d,
                         means[0], stds), 0);
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/pf2 --quiet " IMAGES ONE_TEACHER
                         "--set teacher.cache.path=%s/pf.kdc %s %s", d, d, d, d, means[1], stds), 3);
    CHECK_CONTAINS(g_out, "data.preprocess");
    /* Another validation split keeps the subset but changes which samples train. */
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/a --quiet " IMAGES ONE_TEACHER
                         "--set data.validation_split=400", d, d, d), 3);
    CHECK_CONTAINS(g_out, "c.kdc");
    /* A corrupt byte in the rows, and a short file: exit 3, never used. */
    snprintf(p, sizeof p, "%s/c.kdc", d);
    snprintf(q, sizeof q, "cp %s %s/good.kdc && printf 'X' | dd of=%s bs=1 seek=20000 "
             "conv=notrunc 2>/dev/null", p, d, p);
    CHECK_EQ_INT(system(q), 0);
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/a --quiet " IMAGES ONE_TEACHER, d, d,
                         d), 3);
    CHECK_CONTAINS(g_out, "c.kdc");
    snprintf(q, sizeof q, "head -c 30000 %s/good.kdc > %s", d, p);
    CHECK_EQ_INT(system(q), 0);
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/a --quiet " IMAGES ONE_TEACHER, d, d,
                         d), 3);
    CHECK_CONTAINS(g_out, "c.kdc");
    /* A missing cache: train builds it, then trains from it. */
    CHECK_EQ_INT(unlink(p), 0);
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/b " IMAGES ONE_TEACHER, d, d, d), 0);
    CHECK_CONTAINS(g_out, "does not exist: building it");
    CHECK_CONTAINS(g_out, "the teachers are not run");
    CHECK(access(p, R_OK) == 0);
    /* `distill info` describes a cache. */
    CHECK_EQ_INT(distill("info %s", p), 0);
    CHECK_CONTAINS(g_out, "f32");
}

#define ENSEMBLE                                                                           \
    "--set 'teacher={\"ensemble\": [{\"checkpoint\":\"%s/t1/best.safetensors\"},"          \
    "{\"checkpoint\":\"%s/t2/best.safetensors\", \"weight\": 2}]%s}' "

KD_TEST(ensemble_online_cached_and_without_labels) {
    if (!kd_test_have_tiny()) return;
    const char *d = kd_test_tmpdir();
    CHECK_EQ_INT(make_teacher(d, "t1", 1, MLP(128)), 0);
    CHECK_EQ_INT(make_teacher(d, "t2", 2, MLP(96)), 0);
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/on " IMAGES ENSEMBLE,
                         d, d, d, ""), 0);
    CHECK_CONTAINS(g_out, "teacher.ensemble[0]");
    CHECK_CONTAINS(g_out, "teacher.ensemble[1]");
    CHECK_CONTAINS(g_out, "weight 0.6667");
    CHECK_CONTAINS(g_out, "ensemble validation accuracy");
    CHECK(kd_test_summary(g_out, "val_acc") >= 0.70);
    CHECK(kd_test_summary(g_out, "teacher_test_acc") >= 0.70);
    /* Cached: the recorded accuracies, the same targets, the teachers never loaded. */
    char cache[1100];
    snprintf(cache, sizeof cache, ", \"cache\": {\"path\": \"%s/e.kdc\", \"dtype\": \"f16\"}", d);
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/ca " IMAGES ENSEMBLE,
                         d, d, d, cache), 0);
    CHECK_CONTAINS(g_out, "the teachers are not run");
    CHECK_CONTAINS(g_out, "ensemble validation accuracy");
    CHECK(kd_test_summary(g_out, "val_acc") >= 0.70);
    /* No labels: the ensemble is the only signal. */
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/nl --quiet " IMAGES ENSEMBLE
                         " --set data.use_labels=false", d, d, d, ""), 0);
    CHECK(kd_test_summary(g_out, "val_acc") >= 0.65);
    /* A member with another class count is refused by name. */
    CHECK_EQ_INT(make_teacher(d, "t12", 3, "'model.layers=[{\"type\":\"flatten\"},"
                              "{\"type\":\"dense\",\"units\":12}]'"), 0);
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/bad --quiet " IMAGES
                         "--set 'teacher={\"ensemble\": [{\"checkpoint\":\"%s/t1/best.safetensors\"},"
                         "{\"checkpoint\":\"%s/t12/best.safetensors\"}]}'", d, d, d), 3);
    CHECK_CONTAINS(g_out, "teacher.ensemble[1]");
    CHECK_CONTAINS(g_out, "12 classes");
    /* eval --ensemble: a mixture of one model with itself is that model (same top-1, KL 0
     * against it); the two teachers' mixture is a column with their summed parameters. */
    CHECK_EQ_INT(distill("eval --config " TINY " --json %s/t1/best.safetensors "
                         "--ensemble %s/t1/best.safetensors,%s/t1/best.safetensors", d, d, d), 0);
    cJSON *j = cJSON_Parse(g_out);
    cJSON *ms = cJSON_GetObjectItem(j, "models");
    CHECK(cJSON_GetArraySize(ms) == 2);
    if (cJSON_GetArraySize(ms) == 2) {
        cJSON *m0 = cJSON_GetArrayItem(ms, 0), *m1 = cJSON_GetArrayItem(ms, 1);
        CHECK(strcmp(cJSON_GetObjectItem(m1, "path")->valuestring, "ensemble") == 0);
        CHECK(cJSON_GetObjectItem(m0, "top1")->valuedouble ==
              cJSON_GetObjectItem(m1, "top1")->valuedouble);
        CHECK(cJSON_GetObjectItem(m1, "kl")->valuedouble < 1e-6);
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(m1, "samples_per_s")));
        CHECK(cJSON_GetObjectItem(m1, "params")->valuedouble ==
              2 * cJSON_GetObjectItem(m0, "params")->valuedouble);
    }
    cJSON_Delete(j);
    CHECK_EQ_INT(distill("eval --config " TINY " %s/t1/best.safetensors --ensemble "
                         "%s/t1/best.safetensors,%s/t2/best.safetensors", d, d, d), 0);
    CHECK_CONTAINS(g_out, "ensemble");
    /* MSE matches one teacher's logits: an ensemble is a config error. */
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/bad --quiet " IMAGES ENSEMBLE
                         "--set distill.kind=mse", d, d, d, ""), 2);
    CHECK_CONTAINS(g_out, "mixture of probabilities");
}

#define VIEWS "--set data.augment.shift=1 --set 'teacher={\"checkpoint\":" \
              "\"%s/t1/best.safetensors\", \"cache\": {\"path\": \"%s/v.kdc\", \"views\": %d}}' "

KD_TEST(cache_views_resume_exactly_and_top_k) {
    if (!kd_test_have_tiny()) return;
    const char *d = kd_test_tmpdir();
    char a[1024], b[1024];
    CHECK_EQ_INT(make_teacher(d, "t1", 1, MLP(128)), 0);
    /* Augmentation with one cached view would teach images with other images' targets. */
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/x --quiet " IMAGES VIEWS, d, d, d, 1), 2);
    CHECK_CONTAINS(g_out, "1 view, but data.augment is on");
    CHECK_EQ_INT(distill("logits --config " TINY " --quiet " IMAGES VIEWS, d, d, 3), 0);
    CHECK_CONTAINS(g_out, "samples 1500 views 3");
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/full --quiet " IMAGES VIEWS, d, d, d, 3), 0);
    CHECK(kd_test_summary(g_out, "val_acc") >= 0.62);  /* 2 epochs of shifted views: ~0.68 */
    /* Stopped after 5 steps and resumed: the view draws come from the checkpointed RNG. */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "KD_TRAIN_STOP_AFTER_STEPS=5 %s train --config " TINY
             " --out %s/cut2 --quiet " IMAGES VIEWS " >/dev/null 2>&1",
             kd_test_distill(), d, d, d, 3);
    CHECK_EQ_INT(WEXITSTATUS(system(cmd)), 130);
    CHECK_EQ_INT(distill("train --resume %s/cut2 --quiet", d), 0);
    snprintf(a, sizeof a, "%s/full/last.safetensors", d);
    snprintf(b, sizeof b, "%s/cut2/last.safetensors", d);
    CHECK(kd_test_same_tensors(a, b));
    /* Top-k: trains; another temperature is refused (the kept mass was computed at T). */
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/k --quiet " IMAGES
                         "--set 'teacher={\"checkpoint\":\"%s/t1/best.safetensors\", \"cache\": "
                         "{\"path\": \"%s/k.kdc\", \"top_k\": 3}}' --set " MLP(64), d, d, d), 0);
    CHECK(kd_test_summary(g_out, "val_acc") >= 0.65);  /* ~0.72 */
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/k2 --quiet " IMAGES
                         "--set 'teacher={\"checkpoint\":\"%s/t1/best.safetensors\", \"cache\": "
                         "{\"path\": \"%s/k.kdc\", \"top_k\": 3}}' --set distill.temperature=2",
                         d, d, d), 3);
    CHECK_CONTAINS(g_out, "temperature");
}
