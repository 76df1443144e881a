/* test_teacher_logits.c - teacher.logits, imported teacher logits, end to end on the real binary
 * over a small CSV whose first feature spells each sample's row in the source: a run from the
 * imported file equals, bit for bit, a run from a soft-target cache written here with the same
 * rows (through a seeded subset and a validation split, so every training sample must find its
 * source row); an index that permutes the rows, and F16/BF16 files, give the same runs as the
 * ordered F32 file of the same values; every refusal of a bad file (exit 3, naming file, tensor
 * and first bad row) and of a config that cannot use one (exit 2); a resume from an unchanged
 * file equals the uninterrupted run, and a changed file is refused. */
#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_cache.h"
#include "kd_config.h"
#include "kd_safetensors.h"
#include "kd_teacher.h"
#include "kd_test.h"

#define N_SRC 300      /* samples in the CSV */
#define N_SUB 240      /* the seeded subset the config keeps */
#define N_VAL 40       /* held out of the subset */
#define N_CLS 3
#define OUT_CAP 65536

static char g_out[OUT_CAP];

/* `distill ARGS`; output in g_out; the exit status. */
#define distill(...) kd_test_distillf(g_out, sizeof g_out, "", __VA_ARGS__)

/* The imported teacher's logit c of source sample s: distinct, irregular, within +-3. */
static float teacher_logit(size_t s, size_t c) {
    return (float)(3.0 * sin(0.37 * (double)s + 1.1 * (double)c + 0.2));
}

/* dir/data.csv (feature a = s / 100 spells the source row s) and dir/cfg.json: the CSV with a
 * seeded subset and a validation count, a small MLP, two epochs on two threads. */
static void write_data(const char *dir) {
    char p[1024];
    snprintf(p, sizeof p, "%s/data.csv", dir);
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (!f) return;
    fprintf(f, "a,b,c,d,label\n");
    for (int s = 0; s < N_SRC; s++)
        fprintf(f, "%.2f,%.4f,%.4f,%.1f,%d\n", s / 100.0, sin(s), cos(0.3 * s), (s * 7 % 11) / 10.0,
                s % N_CLS);
    fclose(f);
    snprintf(p, sizeof p, "%s/cfg.json", dir);
    f = fopen(p, "w");
    CHECK(f != NULL);
    if (!f) return;
    fprintf(f, "{\"data\": {\"train\": {\"path\": \"data.csv\", \"subset\": %d, "
            "\"subset_seed\": 7}, \"validation_split\": %d},"
            " \"model\": {\"layers\": [{\"type\": \"dense\", \"units\": 16}, {\"type\": \"relu\"},"
            " {\"type\": \"dense\", \"units\": %d}]},"
            " \"optimizer\": {\"name\": \"adam\", \"lr\": 0.01},"
            " \"train\": {\"epochs\": 2, \"batch_size\": 32, \"seed\": 3, \"threads\": 2}}\n",
            N_SUB, N_VAL, N_CLS);
    fclose(f);
}

/* Writes the logits of samples to path as `dtype` [n, N_CLS]: row r holds teacher_logit(
 * sample[r], .) (sample NULL: row r is sample r), rounded through dtype for F16/BF16, with an
 * I64 index tensor of sample when with_index. Extra tensors: none. */
static int write_logits(const char *path, size_t n, size_t classes, kd_dtype dtype,
                        const size_t *sample, int with_index) {
    size_t m = n * classes;
    uint16_t *h = malloc((m ? m : 1) * sizeof *h);
    float *z = malloc((m ? m : 1) * sizeof *z);
    int64_t *idx = malloc((n ? n : 1) * sizeof *idx);
    for (size_t r = 0; r < n; r++) {
        size_t s = sample ? sample[r] : r;
        idx[r] = (int64_t)s;
        for (size_t c = 0; c < classes; c++) {
            z[r * classes + c] = teacher_logit(s, c);
            h[r * classes + c] = dtype == KD_DT_F16 ? kd_f32_to_f16(z[r * classes + c])
                                                    : kd_f32_to_bf16(z[r * classes + c]);
        }
    }
    kd_st_out t[2] = {{"logits", dtype, 2, {n, classes}, dtype == KD_DT_F32 ? (void *)z : h},
                      {"index", KD_DT_I64, 1, {n}, idx}};
    kd_err err;
    kd_status st = kd_st_write(path, t, with_index ? 2 : 1, NULL, NULL, 0, &err);
    free(h);
    free(z);
    free(idx);
    return st == KD_OK ? 0 : -1;
}

/* The value a logit has after a round trip through dtype (what a run from such a file sees). */
static float through(kd_dtype dtype, float x) {
    if (dtype == KD_DT_F16) return kd_f16_to_f32(kd_f32_to_f16(x));
    if (dtype == KD_DT_BF16) return kd_bf16_to_f32(kd_f32_to_bf16(x));
    return x;
}

/* An F32 file of the rows a F16/BF16 file holds once widened: the same targets exactly. */
static int write_logits_rounded(const char *path, kd_dtype dtype) {
    float *z = malloc(N_SRC * N_CLS * sizeof *z);
    for (size_t s = 0; s < N_SRC; s++)
        for (size_t c = 0; c < N_CLS; c++) z[s * N_CLS + c] = through(dtype, teacher_logit(s, c));
    kd_st_out t = {"logits", KD_DT_F32, 2, {N_SRC, N_CLS}, z};
    kd_err err;
    kd_status st = kd_st_write(path, &t, 1, NULL, NULL, 0, &err);
    free(z);
    return st == KD_OK ? 0 : -1;
}

/* The cache fill: row r of the cache is training sample idx[r], whose source row src[r] was
 * read from its own features. */
typedef struct {
    const size_t *src;
} rows_fx;

static kd_status fill_rows(void *user, size_t view, size_t row, size_t n, float *logits,
                           kd_err *err) {
    const rows_fx *fx = user;
    (void)view;
    (void)err;
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < N_CLS; c++)
            logits[i * N_CLS + c] = teacher_logit(fx->src[row + i], c);
    return KD_OK;
}

#define CACHE_TEACHER "--set 'teacher={\"checkpoint\": \"%s/dummy.safetensors\", " \
                      "\"cache\": {\"path\": \"%s/c.kdc\"}}'"

/* Writes dir/c.kdc, the cache `train` accepts for cfg.json with teacher CACHE_TEACHER, whose
 * rows hold teacher_logit of each training sample's source row. The source row comes from the
 * sample's first feature, not from the subset's map the importer uses. */
static void write_cache(const char *dir) {
    char cfg_path[1024], ck[1024], cache[1024], ov[3000];
    snprintf(cfg_path, sizeof cfg_path, "%s/cfg.json", dir);
    snprintf(ck, sizeof ck, "%s/dummy.safetensors", dir);
    snprintf(cache, sizeof cache, "%s/c.kdc", dir);
    /* The cache's provenance only hashes the teacher checkpoint: it is never run from a cache. */
    CHECK_EQ_INT(kd_test_write_file(ck, "not a checkpoint", 16), 0);
    snprintf(ov, sizeof ov, "teacher={\"checkpoint\": \"%s\", \"cache\": {\"path\": \"%s\"}}",
             ck, cache);
    const char *ovs[] = {ov};
    kd_config cfg;
    kd_dataset *ds = NULL;
    kd_err err;
    size_t *train_idx = NULL, *val_idx = NULL, n_train = 0;
    CHECK_EQ_INT(kd_config_load(&cfg, cfg_path, ovs, 1, &err), KD_OK);
    CHECK_EQ_INT(kd_dataset_open(&ds, &cfg.train, &cfg.pp, &err), KD_OK);
    CHECK_EQ_INT(kd_dataset_info(ds)->n, N_SUB);
    CHECK_EQ_INT(kd_split(N_SUB, N_VAL, KD_SPLIT_SEED, &train_idx, &n_train, &val_idx, &err),
                 KD_OK);
    size_t *src = malloc(n_train * sizeof *src), moved = 0;
    float x[4];
    for (size_t r = 0; r < n_train; r++) {
        CHECK_EQ_INT(kd_dataset_get(ds, &train_idx[r], 1, x, NULL, NULL, &err), KD_OK);
        src[r] = (size_t)lround(x[0] * 100.0);
        moved += src[r] != train_idx[r];
    }
    /* The seeded subset moves samples from their source rows: a mapping bug would show. */
    CHECK(moved > n_train / 2);
    kd_cache_meta meta;
    rows_fx fx = {src};
    CHECK_EQ_INT(kd_teacher_cache_meta(&cfg, kd_dataset_preprocess(ds), n_train, N_CLS, &meta,
                                       &err), KD_OK);
    CHECK_EQ_INT(kd_cache_write(cache, &meta, train_idx, 64, fill_rows, &fx, &err), KD_OK);
    free(src);
    free(train_idx);
    free(val_idx);
    kd_dataset_close(ds);
    kd_config_free(&cfg);
}

/* Trains dir/cfg.json into dir/NAME from teacher.logits FILE (more --set ARGS after it). */
static int train_logits(const char *dir, const char *name, const char *file, const char *args) {
    return distill("train --config %s/cfg.json --out %s/%s --quiet --set "
                   "'teacher={\"logits\": \"%s\"}' %s", dir, dir, name, file, args);
}

/* 1 when the runs dir/a and dir/b end with the same weights and optimizer state, byte for
 * byte (kd_test_same_tensors fails the case naming a tensor that differs). */
static int same_run(const char *dir, const char *a, const char *b) {
    char pa[1024], pb[1024];
    snprintf(pa, sizeof pa, "%s/%s/last.safetensors", dir, a);
    snprintf(pb, sizeof pb, "%s/%s/last.safetensors", dir, b);
    return kd_test_same_tensors(pa, pb);
}

/* 1 when the first weight tensor of the two runs differs (a control: targets matter). */
static int weights_differ(const char *dir, const char *a, const char *b) {
    char pa[1024], pb[1024];
    kd_st_file fa, fb;
    kd_err err;
    snprintf(pa, sizeof pa, "%s/%s/last.safetensors", dir, a);
    snprintf(pb, sizeof pb, "%s/%s/last.safetensors", dir, b);
    if (kd_st_read(&fa, pa, &err) != KD_OK) return 0;
    if (kd_st_read(&fb, pb, &err) != KD_OK) {
        kd_st_free(&fa);
        return 0;
    }
    const kd_st_tensor *ta = kd_st_find(&fa, "0.weight"), *tb = kd_st_find(&fb, "0.weight");
    int differ = ta && tb && ta->end - ta->begin == tb->end - tb->begin &&
                 memcmp(ta->data, tb->data, ta->end - ta->begin) != 0;
    kd_st_free(&fa);
    kd_st_free(&fb);
    return differ;
}

KD_TEST(teacher_logits_train_equals_cache_bit_for_bit) {
    const char *d = kd_test_tmpdir();
    char lp[1024];
    write_data(d);
    write_cache(d);
    snprintf(lp, sizeof lp, "%s/l.safetensors", d);
    CHECK_EQ_INT(write_logits(lp, N_SRC, N_CLS, KD_DT_F32, NULL, 0), 0);
    CHECK_EQ_INT(distill("train --config %s/cfg.json --out %s/cached --quiet " CACHE_TEACHER,
                         d, d, d, d), 0);
    CHECK_EQ_INT(train_logits(d, "imported", lp, ""), 0);
    CHECK(same_run(d, "cached", "imported"));
    /* The run said where its targets came from, and never ran a teacher. */
    CHECK_EQ_INT(distill("train --config %s/cfg.json --out %s/noisy --set 'teacher={\"logits\": "
                         "\"%s\"}'", d, d, lp), 0);
    CHECK_CONTAINS(g_out, "soft targets from teacher.logits");
    CHECK_CONTAINS(g_out, lp);
    CHECK_CONTAINS(g_out, "teacher_params 0");
    /* The resolved config keeps teacher.logits alone, and reads back. */
    char saved[1024];
    snprintf(saved, sizeof saved, "%s/imported/config.json", d);
    kd_config cfg;
    kd_err err;
    CHECK_EQ_INT(kd_config_load(&cfg, saved, NULL, 0, &err), KD_OK);
    CHECK(cfg.has_logits && !strcmp(cfg.logits_path, lp) && cfg.n_teachers == 1 &&
          !cfg.teachers[0].path[0] && !cfg.has_cache);
    kd_config_free(&cfg);

    /* Control: the same file with its rows shifted by one trains another student, so the
     * equality above rests on each sample getting its own row. */
    size_t shifted[N_SRC];
    for (size_t r = 0; r < N_SRC; r++) shifted[r] = (r + 1) % N_SRC;
    snprintf(lp, sizeof lp, "%s/shifted.safetensors", d);
    CHECK_EQ_INT(write_logits(lp, N_SRC, N_CLS, KD_DT_F32, shifted, 0), 0);
    CHECK_EQ_INT(train_logits(d, "shifted", lp, ""), 0);
    CHECK(weights_differ(d, "imported", "shifted"));
}

KD_TEST(teacher_logits_index_permutation_equals_ordered_file) {
    const char *d = kd_test_tmpdir();
    char ordered[1024], permuted[1024];
    write_data(d);
    snprintf(ordered, sizeof ordered, "%s/ordered.safetensors", d);
    snprintf(permuted, sizeof permuted, "%s/permuted.safetensors", d);
    /* Row r holds sample (7 r + 3) mod 300 (7 is prime to 300: a permutation). */
    size_t perm[N_SRC];
    for (size_t r = 0; r < N_SRC; r++) perm[r] = (7 * r + 3) % N_SRC;
    CHECK_EQ_INT(write_logits(ordered, N_SRC, N_CLS, KD_DT_F32, NULL, 0), 0);
    CHECK_EQ_INT(write_logits(permuted, N_SRC, N_CLS, KD_DT_F32, perm, 1), 0);
    CHECK_EQ_INT(train_logits(d, "ordered", ordered, ""), 0);
    CHECK_EQ_INT(train_logits(d, "permuted", permuted, ""), 0);
    CHECK(same_run(d, "ordered", "permuted"));
    /* The identity index is legal too. */
    CHECK_EQ_INT(write_logits(permuted, N_SRC, N_CLS, KD_DT_F32, NULL, 1), 0);
    CHECK_EQ_INT(train_logits(d, "identity", permuted, ""), 0);
    CHECK(same_run(d, "ordered", "identity"));
}

KD_TEST(teacher_logits_f16_and_bf16_equal_their_widened_f32) {
    const char *d = kd_test_tmpdir();
    write_data(d);
    static const kd_dtype dts[] = {KD_DT_F16, KD_DT_BF16};
    static const char *const names[] = {"f16", "bf16"};
    for (size_t i = 0; i < 2; i++) {
        char half[1024], wide[1024], a[64], b[64];
        snprintf(half, sizeof half, "%s/%s.safetensors", d, names[i]);
        snprintf(wide, sizeof wide, "%s/%s_wide.safetensors", d, names[i]);
        snprintf(a, sizeof a, "%s_run", names[i]);
        snprintf(b, sizeof b, "%s_wide_run", names[i]);
        CHECK_EQ_INT(write_logits(half, N_SRC, N_CLS, dts[i], NULL, 0), 0);
        CHECK_EQ_INT(write_logits_rounded(wide, dts[i]), 0);
        CHECK_EQ_INT(train_logits(d, a, half, ""), 0);
        CHECK_EQ_INT(train_logits(d, b, wide, ""), 0);
        CHECK(same_run(d, a, b));
    }
    /* BF16 keeps 8 bits of mantissa: its targets differ from F16's, and so does the student. */
    CHECK(weights_differ(d, "f16_run", "bf16_run"));
}

/* A safetensors file of the given tensors (data: numel * dtype size bytes each). */
static void write_tensors(const char *path, const kd_st_out *t, size_t n) {
    kd_err err;
    CHECK_EQ_INT(kd_st_write(path, t, n, NULL, NULL, 0, &err), KD_OK);
}

/* Training from file must stop with exit 3 before the first epoch, naming file and `want`. */
static void check_refused(const char *d, const char *file, const char *want) {
    CHECK_EQ_INT(train_logits(d, "bad", file, ""), 3);
    CHECK_CONTAINS(g_out, file);
    CHECK_CONTAINS(g_out, want);
    CHECK(strstr(g_out, "epoch 1/") == NULL);
}

KD_TEST(teacher_logits_bad_files_exit_3_naming_tensor_and_row) {
    const char *d = kd_test_tmpdir();
    char p[1024];
    write_data(d);
    snprintf(p, sizeof p, "%s/bad.safetensors", d);
    /* Row and class counts. */
    CHECK_EQ_INT(write_logits(p, N_SRC - 1, N_CLS, KD_DT_F32, NULL, 0), 0);
    check_refused(d, p, "tensor logits: 299 rows, but the training data");
    CHECK_CONTAINS(g_out, "has 300 samples");
    CHECK_CONTAINS(g_out, "row 299 is missing");
    CHECK_EQ_INT(write_logits(p, N_SRC + 2, N_CLS, KD_DT_F32, NULL, 0), 0);
    check_refused(d, p, "tensor logits: 302 rows");
    CHECK_CONTAINS(g_out, "row 300 is one too many");
    CHECK_EQ_INT(write_logits(p, N_SRC, N_CLS + 1, KD_DT_F32, NULL, 0), 0);
    check_refused(d, p, "tensor logits: 4 classes per row, but the model gives 3: row 0");

    /* Dtypes and shapes. */
    static float z[N_SRC * N_CLS];
    static int32_t zi[N_SRC * N_CLS];
    static int64_t ix[N_SRC];
    for (size_t i = 0; i < N_SRC * N_CLS; i++) z[i] = teacher_logit(i / N_CLS, i % N_CLS);
    for (size_t i = 0; i < N_SRC; i++) ix[i] = (int64_t)i;
    kd_st_out t[3] = {{"logits", KD_DT_I32, 2, {N_SRC, N_CLS}, zi}};
    write_tensors(p, t, 1);
    check_refused(d, p, "tensor logits: dtype I32, expected F32, F16 or BF16");
    t[0] = (kd_st_out){"logits", KD_DT_F32, 1, {N_SRC * N_CLS}, z};
    write_tensors(p, t, 1);
    check_refused(d, p, "tensor logits: shape [900], expected [N, classes] = [300, 3]");
    t[0] = (kd_st_out){"scores", KD_DT_F32, 2, {N_SRC, N_CLS}, z};
    write_tensors(p, t, 1);
    check_refused(d, p, "tensor scores: unexpected");
    t[0] = (kd_st_out){"index", KD_DT_I64, 1, {N_SRC}, ix};
    write_tensors(p, t, 1);
    check_refused(d, p, "no tensor \"logits\"");

    /* Every value finite: the first bad row is named (with its sample under an index). */
    t[0] = (kd_st_out){"logits", KD_DT_F32, 2, {N_SRC, N_CLS}, z};
    z[123 * N_CLS + 2] = NAN;
    z[200 * N_CLS + 0] = INFINITY;
    write_tensors(p, t, 1);
    check_refused(d, p, "tensor logits: row 123, class 2 is nan");
    z[123 * N_CLS + 2] = 0;
    write_tensors(p, t, 1);
    check_refused(d, p, "tensor logits: row 200, class 0 is inf");
    for (size_t i = 0; i < N_SRC; i++) ix[i] = (int64_t)(N_SRC - 1 - i);
    t[1] = (kd_st_out){"index", KD_DT_I64, 1, {N_SRC}, ix};
    write_tensors(p, t, 2);
    check_refused(d, p, "tensor logits: row 200 (sample 99), class 0 is inf");
    z[200 * N_CLS + 0] = 0;

    /* The index: a permutation of the samples, as I64 [N]. */
    ix[150] = ix[10];
    write_tensors(p, t, 2);
    check_refused(d, p, "tensor index: row 150 gives sample 289, as row 10 does, so another "
                        "sample is missing");
    ix[150] = N_SRC;
    write_tensors(p, t, 2);
    check_refused(d, p, "tensor index: row 150 gives sample 300, outside 0..299");
    ix[150] = -1;
    write_tensors(p, t, 2);
    check_refused(d, p, "tensor index: row 150 gives sample -1");
    ix[150] = N_SRC - 1 - 150;
    t[1] = (kd_st_out){"index", KD_DT_I32, 1, {N_SRC}, zi};
    write_tensors(p, t, 2);
    check_refused(d, p, "tensor index: dtype I32, expected I64");
    t[1] = (kd_st_out){"index", KD_DT_I64, 1, {N_SRC - 1}, ix};
    write_tensors(p, t, 2);
    check_refused(d, p, "tensor index: shape [299], expected [300]");
    /* With everything repaired the same file trains. */
    t[1] = (kd_st_out){"index", KD_DT_I64, 1, {N_SRC}, ix};
    write_tensors(p, t, 2);
    CHECK_EQ_INT(train_logits(d, "good", p, ""), 0);

    /* Not a safetensors file, and no file at all. */
    CHECK_EQ_INT(kd_test_write_file(p, "garbage!", 8), 0);
    CHECK_EQ_INT(train_logits(d, "bad", p, ""), 3);
    CHECK_CONTAINS(g_out, "teacher.logits");
    CHECK_CONTAINS(g_out, p);
    snprintf(p, sizeof p, "%s/absent.safetensors", d);
    CHECK_EQ_INT(train_logits(d, "bad", p, ""), 3);
    CHECK_CONTAINS(g_out, "teacher.logits");
    CHECK_CONTAINS(g_out, p);
}

/* kd_config_parse of cfg.json's text with one teacher override; its status, message in err. */
static kd_status parse_with(const char *dir, const char *teacher, const char *extra, kd_err *err) {
    char p[1024], ov[2048], *text = NULL;
    size_t len = 0;
    snprintf(p, sizeof p, "%s/cfg.json", dir);
    CHECK_EQ_INT(kd_read_file(p, 1 << 20, &text, &len, err), KD_OK);
    snprintf(ov, sizeof ov, "teacher=%s", teacher);
    const char *ovs[] = {ov, extra};
    kd_config c;
    kd_status st = kd_config_parse(&c, text, len, "cfg.json", dir, ovs, extra ? 2 : 1, err);
    kd_config_free(&c);
    free(text);
    return st;
}

KD_TEST(teacher_logits_config_refusals_exit_2) {
    const char *d = kd_test_tmpdir();
    kd_err err;
    write_data(d);
    CHECK_EQ_INT(parse_with(d, "{\"logits\": \"l.safetensors\"}", NULL, &err), KD_OK);
    CHECK_EQ_INT(parse_with(d, "{\"logits\": \"l.safetensors\", \"checkpoint\": \"t.st\"}", NULL,
                            &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "teacher.checkpoint: give teacher.checkpoint or teacher.logits, not "
                            "both");
    CHECK_EQ_INT(parse_with(d, "{\"logits\": \"l.safetensors\", \"ensemble\": [{\"checkpoint\": "
                            "\"t.st\"}]}", NULL, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "teacher.logits: give teacher.logits or teacher.ensemble, not both");
    CHECK_EQ_INT(parse_with(d, "{\"logits\": \"l.safetensors\", \"cache\": {\"path\": \"c\"}}",
                            NULL, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "teacher.cache: cannot be used with teacher.logits");
    CHECK_EQ_INT(parse_with(d, "{\"logits\": \"l.safetensors\", \"layers\": [{\"type\": "
                            "\"dense\", \"units\": 3}]}", NULL, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "teacher.layers: describes a teacher checkpoint");
    CHECK_EQ_INT(parse_with(d, "{\"logits\": \"l.safetensors\"}", "data.augment={\"flip\": true}",
                            &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "teacher.logits: cannot be used with data.augment");
    CHECK_CONTAINS(err.msg, "the targets of another");
    CHECK_EQ_INT(parse_with(d, "{\"logits\": \"l.safetensors\"}", "data.train={\"format\": "
                            "\"images\", \"path\": \"imgs\", \"skip_bad\": true}", &err),
                 KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "teacher.logits: cannot be used with data.train.skip_bad");
    CHECK_EQ_INT(parse_with(d, "{}", NULL, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "teacher.logits: a file of its logits");

    /* The binary: exit 2 for a config error, and `distill logits` refuses imported logits. */
    CHECK_EQ_INT(distill("train --config %s/cfg.json --out %s/x --set 'teacher={\"logits\": "
                         "\"l.st\", \"checkpoint\": \"t.st\"}'", d, d), 2);
    CHECK_CONTAINS(g_out, "not both");
    CHECK_EQ_INT(distill("logits --config %s/cfg.json --set 'teacher={\"logits\": \"l.st\"}'",
                         d), 2);
    CHECK_CONTAINS(g_out, "teacher.logits: the config's targets are already a file of logits");
}

KD_TEST(teacher_logits_resume_equal_and_changed_file_refused) {
    const char *d = kd_test_tmpdir();
    char lp[1024];
    write_data(d);
    snprintf(lp, sizeof lp, "%s/l.safetensors", d);
    CHECK_EQ_INT(write_logits(lp, N_SRC, N_CLS, KD_DT_F32, NULL, 0), 0);
    CHECK_EQ_INT(train_logits(d, "whole", lp, ""), 0);
    CHECK_EQ_INT(train_logits(d, "split", lp, "--epochs 1"), 0);
    CHECK_EQ_INT(distill("train --resume %s/split --epochs 2 --quiet", d), 0);
    CHECK(same_run(d, "whole", "split"));

    /* Another file at the same path (one logit changed): refused, naming both hashes. */
    CHECK_EQ_INT(train_logits(d, "changed", lp, "--epochs 1"), 0);
    size_t perm[N_SRC];
    for (size_t r = 0; r < N_SRC; r++) perm[r] = r;
    perm[0] = 1;
    perm[1] = 0;
    CHECK_EQ_INT(write_logits(lp, N_SRC, N_CLS, KD_DT_F32, perm, 0), 0);
    CHECK_EQ_INT(distill("train --resume %s/changed --epochs 2 --quiet", d), 3);
    CHECK_CONTAINS(g_out, "teacher.logits");
    CHECK_CONTAINS(g_out, lp);
    CHECK_CONTAINS(g_out, "has changed since the run started");
    CHECK(strstr(g_out, "epoch 2/") == NULL);

    /* A run trained without the file cannot continue from one. */
    CHECK_EQ_INT(distill("train --config %s/cfg.json --out %s/labels --quiet --epochs 1", d, d),
                 0);
    CHECK_EQ_INT(distill("train --config %s/cfg.json --resume %s/labels --epochs 2 --quiet --set "
                         "'teacher={\"logits\": \"%s\"}'", d, d, lp), 3);
    CHECK_CONTAINS(g_out, "was not trained from teacher.logits");
}

/* kd_cache_build: the cache in memory is the cache the file holds, row for row. */
KD_TEST(teacher_logits_cache_build_equals_written_file) {
    const char *d = kd_test_tmpdir();
    char path[1024];
    snprintf(path, sizeof path, "%s/c.kdc", d);
    enum { N = 5000 };  /* over one block of KD_CACHE_BLOCK_ROWS */
    size_t *idx = malloc(N * sizeof *idx), *src = malloc(N * sizeof *src);
    for (size_t r = 0; r < N; r++) idx[r] = 2 * r + 1, src[r] = (r * 13) % N;
    kd_cache_meta m;
    memset(&m, 0, sizeof m);
    m.n_rows = N;
    m.n_classes = N_CLS;
    m.n_teachers = 1;
    m.views = 1;
    m.weight[0] = 1;
    m.teacher_val_acc[0] = NAN;
    m.ensemble_val_acc = NAN;
    kd_err err;
    CHECK_EQ_INT(kd_cache_meta_add(&m, "teacher.logits", "crc32:1 adler32:2 size:3", &err), KD_OK);
    rows_fx fx = {src};
    kd_cache *mem = NULL, *file = NULL;
    CHECK_EQ_INT(kd_cache_write(path, &m, idx, 700, fill_rows, &fx, &err), KD_OK);
    CHECK_EQ_INT(kd_cache_build(&mem, "in memory", &m, idx, 700, fill_rows, &fx, &err), KD_OK);
    CHECK_EQ_INT(kd_cache_open(&file, path, &err), KD_OK);
    if (mem && file) {
        float a[N_CLS], b[N_CLS];
        for (size_t r = 0; r < N; r += 7) {
            CHECK_EQ_INT(kd_cache_logits(mem, &idx[r], NULL, 1, a, &err), KD_OK);
            CHECK_EQ_INT(kd_cache_logits(file, &idx[r], NULL, 1, b, &err), KD_OK);
            for (size_t c = 0; c < N_CLS; c++) CHECK(a[c] == teacher_logit(src[r], c));
            CHECK(memcmp(a, b, sizeof a) == 0);
        }
        CHECK_EQ_INT(kd_cache_check(mem, &m, idx, N, "rebuild", &err), KD_OK);
        /* A sample it was not built for is no row, as from a file. */
        size_t absent = 2;
        CHECK_EQ_INT(kd_cache_logits(mem, &absent, NULL, 1, a, &err), KD_EINPUT);
        CHECK_CONTAINS(err.msg, "cache in memory: no row for training sample 2");
    }
    /* A bad meta is refused as kd_cache_write refuses it, and nothing is returned. */
    m.n_teachers = 0;
    kd_cache *none = (kd_cache *)&err;
    CHECK_EQ_INT(kd_cache_build(&none, "in memory", &m, idx, 700, fill_rows, &fx, &err),
                 KD_EUSAGE);
    CHECK(none == NULL);
    kd_cache_close(mem);
    kd_cache_close(file);
    free(idx);
    free(src);
}
