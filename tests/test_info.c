/* test_info.c - `distill info`: the description of a checkpoint (text and JSON), exit code 3
 * with the reader's message for bad files, and usage errors. Runs the real binary. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cache_fixture.h"
#include "kd_checkpoint.h"
#include "kd_test.h"

static const char *ARCH =
    "{\"input\":[6],\"layers\":[{\"type\":\"dense\",\"units\":5},{\"type\":\"batchnorm\"},"
    "{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":3}]}";

/* Saves a small training checkpoint with classes into dir; returns its path. */
static const char *make_checkpoint(const char *dir) {
    static char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    kd_model m;
    kd_err err;
    if (kd_model_init_arch(&m, ARCH, 1, &err) != KD_OK) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return path;
    }
    for (size_t i = 0; i < m.n_params; i++) m.params[i] = 0.01f * (float)i;
    char *classes[] = {"a", "b", "c"};
    kd_ckpt_meta meta = {classes, 3, NULL, NULL};
    size_t order[4] = {3, 1, 0, 2};
    kd_train_state ts = {.step = 7, .epoch = 1, .order = order, .n_order = 4, .best_val = 0.5};
    ts.rng.s[0] = 1;
    if (kd_ckpt_save(path, &m, &meta, &ts, &err) != KD_OK)
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
    kd_model_free(&m);
    return path;
}

KD_TEST(info_describes_a_checkpoint) {
    const char *path = make_checkpoint(kd_test_tmpdir());
    char cmd[1200], out[16384];
    snprintf(cmd, sizeof cmd, "'%s' info '%s'", kd_test_distill(), path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "format    distill/1");
    CHECK_CONTAINS(out, "dense");
    CHECK_CONTAINS(out, "batchnorm");
    CHECK_CONTAINS(out, "-> [5]");
    CHECK_CONTAINS(out, "-> [3]");
    /* Tensor table rows: name, dtype, shape, bytes. */
    CHECK_CONTAINS(out, "0.weight");
    CHECK_CONTAINS(out, "[5, 6]");
    CHECK_CONTAINS(out, "120\n");
    CHECK_CONTAINS(out, "1.num_batches_tracked");
    CHECK_CONTAINS(out, "I64");
    CHECK_CONTAINS(out, "optim.m.3.weight");
    /* 30+5 + 5+5 (+5+5 running stats) + 1 counter + 15+3 = 74 values; training state apart. */
    CHECK_CONTAINS(out, "total     9 tensors, 74 values, 300 bytes");
    CHECK_CONTAINS(out, "training  13 tensors, 536 bytes");
    CHECK_CONTAINS(out, "classes: [\"a\",\"b\",\"c\"]");
    CHECK_CONTAINS(out, "train.step: 7");
}

KD_TEST(info_json_is_machine_readable) {
    const char *path = make_checkpoint(kd_test_tmpdir());
    char cmd[1200];
    static char out[65536];
    snprintf(cmd, sizeof cmd, "'%s' info --json '%s' 2>/dev/null", kd_test_distill(), path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    cJSON *o = cJSON_Parse(out);
    CHECK(o != NULL);
    if (!o) return;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(o, "format");
    CHECK(cJSON_IsString(fmt) && strcmp(fmt->valuestring, "distill/1") == 0);
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(o, "layers");
    CHECK_EQ_INT(cJSON_GetArraySize(layers), 4);
    const cJSON *l0 = cJSON_GetArrayItem(layers, 0);
    CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(l0, "params")->valuedouble, 35);
    CHECK_EQ_INT(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(l0, "output"), 0)->valuedouble, 5);
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(o, "tensors");
    CHECK_EQ_INT(cJSON_GetArraySize(ts), 9 + 13);
    const cJSON *t0 = cJSON_GetArrayItem(ts, 0);
    CHECK(strcmp(cJSON_GetObjectItemCaseSensitive(t0, "name")->valuestring, "0.weight") == 0);
    CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(t0, "bytes")->valuedouble, 120);
    const cJSON *tot = cJSON_GetObjectItemCaseSensitive(o, "totals");
    CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(tot, "values")->valuedouble, 74);
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
    CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(md, "train.rng")));
    CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(o, "arch")));
    cJSON_Delete(o);
}

KD_TEST(info_bad_files_exit_3_with_the_reason) {
    const char *dir = kd_test_tmpdir();
    static const struct {
        const char *bytes;
        size_t n;
        const char *expect;
    } cases[] = {
        {"\x05\0\0", 3, "shorter than the 8-byte"},
        {"\x40\0\0\0\0\0\0\0{}", 10, "header length 64 is larger than the 2 bytes"},
        {"\x08\0\0\0\0\0\0\0{\"a\":1} ", 16, "tensor a: expected an object"},
        {"\x38\0\0\0\0\0\0\0{\"w\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]}}   "
         "\0\0\0\0\0\0\0\0", 72, "tensor w: unsupported dtype \"F64\""},
    };
    char path[700], cmd[1600], out[4096];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(path, sizeof path, "%s/bad%zu.safetensors", dir, i);
        CHECK_EQ_INT(kd_test_write_file(path, cases[i].bytes, cases[i].n), 0);
        snprintf(cmd, sizeof cmd, "'%s' info '%s'", kd_test_distill(), path);
        CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
        CHECK_CONTAINS(out, path);
        CHECK_CONTAINS(out, cases[i].expect);
    }
    /* Valid safetensors whose tensors contradict its own arch: also exit 3. */
    snprintf(path, sizeof path, "%s/mismatch.safetensors", dir);
    float w[8] = {0};
    kd_st_out t[] = {{"0.weight", KD_DT_F32, 2, {2, 3}, w}, {"0.bias", KD_DT_F32, 1, {2}, w}};
    const char *k[] = {"arch"}, *v[] = {"{\"input\":[4],\"layers\":[{\"type\":\"dense\",\"units\":2}]}"};
    kd_err err;
    CHECK_EQ_INT(kd_st_write(path, t, 2, k, v, 1, &err), KD_OK);
    snprintf(cmd, sizeof cmd, "'%s' info '%s'", kd_test_distill(), path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "tensor 0.weight: expected shape [2, 4], found [2, 3]");
    /* Without arch metadata the file is still described (a plain PyTorch export). */
    kd_st_out u[] = {{"0.weight", KD_DT_F32, 2, {2, 3}, w}};
    CHECK_EQ_INT(kd_st_write(path, u, 1, NULL, NULL, 0, &err), KD_OK);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "no \"arch\" metadata");
    CHECK_CONTAINS(out, "total     1 tensors, 6 values, 24 bytes");
}

/* Sets (replaces or adds) the metadata value of key in a checkpoint written by make_checkpoint. */
static int set_meta(const char *path, const char *key, const char *value) {
    kd_st_file f;
    kd_err err;
    if (kd_st_read(&f, path, &err) != KD_OK) return -1;
    kd_st_out t[32];
    const char *k[16], *v[16];
    size_t n = f.n_tensors < 32 ? f.n_tensors : 32, nm = f.n_meta < 16 ? f.n_meta : 16;
    for (size_t i = 0; i < n; i++) {
        const kd_st_tensor *s = &f.tensors[i];
        t[i] = (kd_st_out){s->name, s->dtype, s->rank, {0}, s->data};
        for (int d = 0; d < s->rank; d++) t[i].shape[d] = s->shape[d];
    }
    int found = 0;
    for (size_t i = 0; i < nm; i++) {
        k[i] = f.meta_keys[i];
        found |= strcmp(k[i], key) == 0;
        v[i] = strcmp(k[i], key) == 0 ? value : f.meta_vals[i];
    }
    if (!found && nm < 16) k[nm] = key, v[nm++] = value;
    int rc = kd_st_write(path, t, n, k, v, nm, &err) == KD_OK ? 0 : -1;
    kd_st_free(&f);
    return rc;
}

/* Metadata that eval and predict refuse (class names, preprocessing) is refused by info too,
 * with the error alone on stderr (its own line) and nothing on stdout: never a description
 * followed by an error glued to its last line. */
KD_TEST(info_refused_metadata_prints_only_the_error) {
    const char *dir = kd_test_tmpdir();
    static const struct {
        const char *key, *value, *expect;
    } cases[] = {
        {"classes", "[\"a\", 3]", "classes[1]: expected a string"},
        {"classes", "not json", "classes"},
        {"preprocess", "{\"scale\": -1}", "preprocess"},
    };
    char cmd[2400], out[4096], errp[700], errtext[4096];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = make_checkpoint(dir);
        CHECK_EQ_INT(set_meta(path, cases[i].key, cases[i].value), 0);
        snprintf(errp, sizeof errp, "%s/stderr.txt", dir);
        snprintf(cmd, sizeof cmd, "'%s' info '%s' 2>'%s'", kd_test_distill(), path, errp);
        CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
        CHECK(out[0] == '\0');  /* stdout: nothing */
        snprintf(cmd, sizeof cmd, "cat '%s'", errp);
        CHECK_EQ_INT(kd_test_run(cmd, errtext, sizeof errtext), 0);
        CHECK(strncmp(errtext, "distill: ", 9) == 0);
        CHECK_CONTAINS(errtext, path);
        CHECK_CONTAINS(errtext, cases[i].expect);
        /* One line, ended by its newline. */
        const char *nl = strchr(errtext, '\n');
        CHECK(nl != NULL && nl[1] == '\0');
    }
}

KD_TEST(info_usage_errors_exit_2) {
    char cmd[1200], out[4096];
    const char *d = kd_test_distill();
    snprintf(cmd, sizeof cmd, "'%s' info", d);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);
    CHECK_CONTAINS(out, "missing FILE");
    snprintf(cmd, sizeof cmd, "'%s' info --bogus x.safetensors", d);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);
    CHECK_CONTAINS(out, "unknown option '--bogus'");
    snprintf(cmd, sizeof cmd, "'%s' info a.safetensors b.safetensors", d);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "'%s' help info", d);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "Usage: distill info FILE [--json]");
    snprintf(cmd, sizeof cmd, "'%s' info /nonexistent/x.safetensors", d);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "/nonexistent/x.safetensors: cannot open");
}

/* A cache of 5 rows (samples 1, 4, ..., 13), 2 views, 2 teachers, f16 top-3 of 10 at T = 4. */
static const char *make_cache(const char *dir) {
    static char path[600];
    snprintf(path, sizeof path, "%s/targets.kdcache", dir);
    size_t *idx = cache_fx_index(5);
    kd_cache_meta m = cache_fx_meta(5, 10, 2, 2, KD_CACHE_F16, 3, 4.0);
    m.weight[0] = 0.75, m.weight[1] = 0.25;
    cache_fx fx = {0};
    kd_err err;
    if (cache_fx_write(path, &m, idx, &fx, 4, &err) != KD_OK)
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
    free(idx);
    return path;
}

KD_TEST(info_describes_a_cache) {
    const char *path = make_cache(kd_test_tmpdir());
    char cmd[1200], out[8192];
    snprintf(cmd, sizeof cmd, "'%s' info '%s'", kd_test_distill(), path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "format    distill-cache/1 (soft-target cache)");
    CHECK_CONTAINS(out, "targets   f16, top 3 of 10 logits at T = 4");
    CHECK_CONTAINS(out, "views     2 (view seed 12345)");
    CHECK_CONTAINS(out, "rows      5 training samples (indices 1..13), 10 classes, 2 teachers");
    CHECK_CONTAINS(out, "              0  0.75      80.00%");
    CHECK_CONTAINS(out, "              1  0.25      unknown");
    CHECK_CONTAINS(out, "ensemble  val acc 87.50%");
    /* A teacher row: 3 u16 classes, 3 f16 values, one f32: 16 bytes. */
    CHECK_CONTAINS(out, "bytes     64 per sample (32 per view, 16 per view and teacher)");
    CHECK_CONTAINS(out, "teacher[0].checkpoint_hash: crc32:0badf00d adler32:1 size:7");
    CHECK_CONTAINS(out, "data.train: train-images.idx");
    snprintf(cmd, sizeof cmd, "'%s' info --json '%s' 2>/dev/null", kd_test_distill(), path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    cJSON *o = cJSON_Parse(out);
    CHECK(o != NULL);
    if (!o) return;
#define GET(key) cJSON_GetObjectItemCaseSensitive(o, key)
    CHECK(strcmp(GET("format")->valuestring, "distill-cache/1") == 0);
    CHECK(strcmp(GET("dtype")->valuestring, "f16") == 0);
    CHECK_EQ_INT(GET("top_k")->valuedouble, 3);
    CHECK(GET("temperature")->valuedouble == 4.0);
    CHECK_EQ_INT(GET("views")->valuedouble, 2);
    CHECK_EQ_INT(GET("view_seed")->valuedouble, 12345);
    CHECK_EQ_INT(GET("rows")->valuedouble, 5);
    CHECK_EQ_INT(GET("last_sample")->valuedouble, 13);
    CHECK_EQ_INT(GET("classes")->valuedouble, 10);
    CHECK_EQ_INT(GET("bytes_per_sample")->valuedouble, 64);
    const cJSON *t1 = cJSON_GetArrayItem(GET("teachers"), 1);
    CHECK(cJSON_GetObjectItemCaseSensitive(t1, "weight")->valuedouble == 0.25);
    CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(t1, "val_acc")));
    CHECK(GET("ensemble_val_acc")->valuedouble == 0.875);
    CHECK(strcmp(cJSON_GetObjectItemCaseSensitive(GET("fields"), "data.train")->valuestring,
                 "train-images.idx") == 0);
#undef GET
    cJSON_Delete(o);
}

KD_TEST(info_broken_cache_exits_3_with_the_reason) {
    const char *path = make_cache(kd_test_tmpdir());
    size_t len;
    unsigned char *d = cache_fx_read(path, &len);
    if (!d) return;
    char cmd[1200], out[4096], want[200];
    snprintf(cmd, sizeof cmd, "'%s' info '%s'", kd_test_distill(), path);
    d[len - 6] ^= 0x20; /* the last block (the only one) */
    CHECK_EQ_INT(kd_test_write_file(path, d, len), 0);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, path);
    CHECK_CONTAINS(out, "block 0 (bytes ");
    CHECK_CONTAINS(out, "checksum mismatch: the file is corrupt");
    CHECK_EQ_INT(kd_test_write_file(path, d, len - 9), 0);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    snprintf(want, sizeof want, "the file is %zu bytes, its header implies %zu: truncated",
             len - 9, len);
    CHECK_CONTAINS(out, want);
    CHECK_EQ_INT(kd_test_write_file(path, d, 8), 0); /* the magic alone is still a cache */
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "the file is 8 bytes, shorter than the 16 bytes");
    free(d);
}
