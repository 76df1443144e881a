/* test_checkpoint.c - model checkpoints: exact round trip with training state, loading plain
 * PyTorch-style files (Python-written) against logits computed independently, shape/name/dtype
 * validation against the architecture, int8 exports, failed writes, and running out of memory
 * while building the metadata. */
#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_checkpoint.h"
#include "kd_rng.h"
#include "kd_test.h"
#include "../src/core/test_hooks.h"

/* input 6 -> dense 5 -> batchnorm -> relu -> dropout -> dense 3 */
static const char *ARCH_BN =
    "{\"input\":[6],\"layers\":[{\"type\":\"dense\",\"units\":5},{\"type\":\"batchnorm\"},"
    "{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.25},{\"type\":\"dense\",\"units\":3}]}";
/* The Python script's nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)). */
static const char *ARCH_PY =
    "{\"input\":[4],\"layers\":[{\"type\":\"dense\",\"units\":3},{\"type\":\"relu\"},"
    "{\"type\":\"dense\",\"units\":2}]}";
static const float PY_INPUTS[3][4] = {
    {0.5f, -1.0f, 0.25f, 2.0f}, {-0.3f, 0.8f, -1.5f, 0.1f}, {1.0f, 1.0f, 1.0f, 1.0f}};


static void fill_random(kd_rng *r, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = kd_rng_normal(r);
}

static int build(kd_model *m, const char *arch, int with_grads) {
    kd_err err;
    kd_status st = kd_model_init_arch(m, arch, with_grads, &err);
    if (st != KD_OK) kd_test_fail(__FILE__, __LINE__, "model: %s", err.msg);
    return st == KD_OK;
}

/* Reads a whole file into a malloc'd buffer. */
static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
    *n = buf ? fread(buf, 1, (size_t)len, f) : 0;
    fclose(f);
    return buf;
}

KD_TEST(ckpt_round_trip_with_training_state_is_exact) {
    const char *dir = kd_test_tmpdir();
    char path[600], path2[620];
    snprintf(path, sizeof path, "%s/train.safetensors", dir);
    snprintf(path2, sizeof path2, "%s/again.safetensors", dir);
    kd_model m = {0}, l = {0};
    if (!build(&m, ARCH_BN, 1)) return;
    kd_rng r;
    kd_rng_seed(&r, 5);
    fill_random(&r, m.params, m.n_params);
    fill_random(&r, m.m, m.n_params);
    fill_random(&r, m.v, m.n_params);
    fill_random(&r, m.buffers, m.n_buffers);
    kd_tensor *cnt = kd_model_tensor(&m, "1.num_batches_tracked");
    CHECK(cnt && cnt->kind == KD_TENSOR_COUNTER);
    if (cnt) *cnt->counter = INT64_C(123456789012);
    char *classes[] = {"T-shirt/top", "quote\"d", "\xc3\xa9t\xc3\xa9"};
    kd_preprocess pp = {.scale = 1.0f / 255, .n_channels = 1, .mean = {0.2860f},
                        .std = {0.3530f}, .flatten = 1};
    kd_ckpt_meta meta = {classes, 3, &pp, "{\"epochs\":3,\"note\":\"x\"}"};
    size_t order[7] = {6, 2, 0, 5, 1, 4, 3};
    kd_train_state ts = {.step = 1234, .epoch = 2, .batch_in_epoch = 17, .order = order,
                         .n_order = 7, .best_val = 0.1 + 0.7};
    kd_rng_seed(&ts.rng, 99);
    kd_rng_u64(&ts.rng);
    kd_err err;
    kd_status st = kd_ckpt_save(path, &m, &meta, &ts, &err);
    CHECK_EQ_INT(st, KD_OK);
    if (st) {
        printf("  %s\n", err.msg);
        goto cleanup;
    }

    /* The file itself: PyTorch names and order first, counter as an I64 scalar, metadata. */
    kd_st_file f;
    CHECK_EQ_INT(kd_st_read(&f, path, &err), KD_OK);
    static const char *const want_order[] = {
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "1.num_batches_tracked", "4.weight", "4.bias"};
    CHECK(f.n_tensors == 9 + 2 * 6 + 1);
    for (size_t i = 0; i < 9 && i < f.n_tensors; i++)
        if (strcmp(f.tensors[i].name, want_order[i]) != 0)
            kd_test_fail(__FILE__, __LINE__, "tensor %zu is %s, expected %s", i, f.tensors[i].name,
                         want_order[i]);
    const kd_st_tensor *nb = kd_st_find(&f, "1.num_batches_tracked");
    CHECK(nb && nb->dtype == KD_DT_I64 && nb->rank == 0);
    const kd_st_tensor *w0 = kd_st_find(&f, "0.weight");
    CHECK(w0 && w0->dtype == KD_DT_F32 && w0->rank == 2 && w0->shape[0] == 5 && w0->shape[1] == 6);
    CHECK(kd_st_find(&f, "optim.m.4.weight") && kd_st_find(&f, "optim.v.1.bias"));
    CHECK(!kd_st_find(&f, "optim.m.1.running_mean"));
    const kd_st_tensor *ord = kd_st_find(&f, "train.order");
    CHECK(ord && ord->dtype == KD_DT_I64 && ord->numel == 7);
    CHECK(strcmp(kd_st_meta(&f, "format"), "distill/1") == 0);
    char *arch = kd_model_arch_json(&m);
    CHECK(arch && strcmp(kd_st_meta(&f, "arch"), arch) == 0);
    free(arch);
    CHECK(strcmp(kd_st_meta(&f, "classes"), "[\"T-shirt/top\",\"quote\\\"d\",\"\xc3\xa9t\xc3\xa9\"]") == 0);
    CHECK(strcmp(kd_st_meta(&f, "run"), meta.extra_json) == 0);
    CHECK(strcmp(kd_st_meta(&f, "train.step"), "1234") == 0);
    CHECK(strcmp(kd_st_meta(&f, "train.best_val"), "0.79999999999999993") == 0);
    kd_st_free(&f);

    /* Load: bit-identical parameters, buffers, counter, moments, state and metadata. */
    kd_preprocess pp2;
    int has_pp = 0;
    char **cl = NULL;
    size_t n_cl = 0;
    st = kd_ckpt_load(path, NULL, 1, 0, &l, &pp2, &has_pp, &cl, &n_cl, &err);
    CHECK_EQ_INT(st, KD_OK);
    if (st) {
        printf("  %s\n", err.msg);
        goto cleanup;
    }
    CHECK(l.n_params == m.n_params && l.n_buffers == m.n_buffers);
    CHECK(memcmp(l.params, m.params, m.n_params * sizeof(float)) == 0);
    CHECK(memcmp(l.buffers, m.buffers, m.n_buffers * sizeof(float)) == 0);
    CHECK(*kd_model_tensor(&l, "1.num_batches_tracked")->counter == INT64_C(123456789012));
    CHECK(has_pp && pp2.scale == pp.scale && pp2.n_channels == 1 && pp2.mean[0] == pp.mean[0] &&
          pp2.std[0] == pp.std[0] && pp2.flatten == 1);
    CHECK(n_cl == 3 && cl && strcmp(cl[1], "quote\"d") == 0 && strcmp(cl[2], classes[2]) == 0);
    kd_free_strings(cl, n_cl);
    kd_train_state ts2;
    st = kd_ckpt_load_train_state(path, &l, &ts2, &err);
    CHECK_EQ_INT(st, KD_OK);
    if (st) {
        printf("  %s\n", err.msg);
        goto cleanup;
    }
    CHECK(memcmp(l.m, m.m, m.n_params * sizeof(float)) == 0);
    CHECK(memcmp(l.v, m.v, m.n_params * sizeof(float)) == 0);
    CHECK(ts2.step == 1234 && ts2.epoch == 2 && ts2.batch_in_epoch == 17);
    CHECK(memcmp(&ts2.rng, &ts.rng, sizeof ts.rng) == 0);
    CHECK(ts2.best_val == ts.best_val);
    CHECK(ts2.n_order == 7 && ts2.order && memcmp(ts2.order, order, sizeof order) == 0);
    /* Saving what was loaded reproduces the file byte for byte. */
    CHECK_EQ_INT(kd_ckpt_save(path2, &l, &meta, &ts2, &err), KD_OK);
    free(ts2.order);
    size_t n1 = 0, n2 = 0;
    uint8_t *b1 = slurp(path, &n1), *b2 = slurp(path2, &n2);
    CHECK(b1 && b2 && n1 == n2 && n1 > 0 && memcmp(b1, b2, n1) == 0);
    free(b1);
    free(b2);
    /* Without the training state: an inference checkpoint, which cannot be resumed. */
    CHECK_EQ_INT(kd_ckpt_save(path2, &l, NULL, NULL, &err), KD_OK);
    CHECK_EQ_INT(kd_ckpt_load_train_state(path2, &l, &ts2, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "no training state");
cleanup:
    kd_model_free(&l);
    kd_model_free(&m);
}

KD_TEST(ckpt_loads_python_files_and_matches_python_logits) {
    if (!kd_test_have_python()) {
        kd_test_skip("python3 not available");
        return;
    }
    static const char *const dts[] = {"F32", "F16"};
    const char *dir = kd_test_tmpdir();
    for (int d = 0; d < 2; d++) {
        char path[600], cmd[900], out[8192];
        snprintf(path, sizeof path, "%s/torch_%s.safetensors", dir, dts[d]);
        snprintf(cmd, sizeof cmd, "python3 tests/st_interop.py write '%s' --dtype %s", path, dts[d]);
        CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
        kd_model m = {0};
        kd_err err;
        /* A plain PyTorch export has no arch: the caller must supply one. */
        CHECK_EQ_INT(kd_ckpt_load(path, NULL, 0, 0, &m, NULL, NULL, NULL, NULL, &err), KD_EUSAGE);
        CHECK_CONTAINS(err.msg, "has no arch metadata: give the architecture in the config");
        kd_status st = kd_ckpt_load(path, ARCH_PY, 0, 0, &m, NULL, NULL, NULL, NULL, &err);
        CHECK_EQ_INT(st, KD_OK);
        if (st) {
            printf("  %s\n", err.msg);
            continue;
        }
        CHECK_EQ_INT(kd_model_reserve(&m, 3, &err), KD_OK);
        kd_ctx ctx = {0, NULL, NULL, 0, 0, 0};
        const float *z = kd_model_forward(&m, &PY_INPUTS[0][0], 3, &ctx);
        for (int s = 0; s < 3; s++) {
            double want[2] = {NAN, NAN};
            CHECK_EQ_INT(kd_test_line_values(out, "logits ", s, want, 2), 2);
            CHECK_CLOSE(z[2 * s], want[0], 1e-6, 1e-5);
            CHECK_CLOSE(z[2 * s + 1], want[1], 1e-6, 1e-5);
        }
        /* Python's view of the weights equals what we loaded. */
        double w[12] = {0};
        CHECK_EQ_INT(kd_test_line_values(out, "tensor 0.weight ", 0, w, 12), 12);
        for (int i = 0; i < 12; i++) CHECK((double)kd_model_tensor(&m, "0.weight")->data[i] == w[i]);

        if (d == 0) {
            /* The other direction: our checkpoint, read back by the Python implementation. */
            char ours[620];
            snprintf(ours, sizeof ours, "%s/ours.safetensors", dir);
            CHECK_EQ_INT(kd_ckpt_save(ours, &m, NULL, NULL, &err), KD_OK);
            snprintf(cmd, sizeof cmd,
                     "python3 tests/st_interop.py check '%s' --require-meta arch --dump", ours);
            CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
            CHECK_CONTAINS(out, "OK 4 tensors");
            static const char *const names[] = {"0.weight", "0.bias", "2.weight", "2.bias"};
            for (int i = 0; i < 4; i++) {
                char prefix[64];
                double v[12] = {0};
                snprintf(prefix, sizeof prefix, "tensor %s ", names[i]);
                kd_tensor *t = kd_model_tensor(&m, names[i]);
                CHECK_EQ_INT(kd_test_line_values(out, prefix, 0, v, 12), t->numel);
                for (size_t k = 0; k < t->numel; k++) CHECK((double)t->data[k] == v[k]);
            }
        }
        kd_model_free(&m);
    }
}

/* Writes a safetensors file of F32 tensors named/shaped as given, values 0.5 each. */
static void write_plain(const char *path, const char *const *names, const uint64_t (*shapes)[2],
                        const int *ranks, const kd_dtype *dtypes, size_t n, const char *meta_arch) {
    kd_st_out t[8];
    static float data[64];
    for (int i = 0; i < 64; i++) data[i] = 0.5f;
    for (size_t i = 0; i < n; i++) {
        t[i] = (kd_st_out){names[i], dtypes ? dtypes[i] : KD_DT_F32, ranks[i], {0}, data};
        t[i].shape[0] = shapes[i][0];
        t[i].shape[1] = shapes[i][1];
    }
    const char *k[] = {"arch"}, *v[] = {meta_arch};
    kd_err err;
    if (kd_st_write(path, t, n, k, v, meta_arch ? 1 : 0, &err) != KD_OK)
        kd_test_fail(__FILE__, __LINE__, "write: %s", err.msg);
}

static void expect_load_error(const char *path, const char *arch, int allow_extra, kd_status code,
                              const char *fragment) {
    kd_model m = {0};
    kd_err err;
    kd_err_clear(&err);
    kd_status st = kd_ckpt_load(path, arch, 0, allow_extra, &m, NULL, NULL, NULL, NULL, &err);
    if (st != code)
        kd_test_fail(__FILE__, __LINE__, "expected status %d for \"%s\", got %d (%s)", (int)code,
                     fragment, (int)st, err.msg);
    if (code != KD_OK) {
        CHECK_CONTAINS(err.msg, path);
        CHECK_CONTAINS(err.msg, fragment);
        CHECK(m.params == NULL && m.n_tensors == 0);
    }
    kd_model_free(&m);
}

KD_TEST(ckpt_checks_tensors_against_the_architecture) {
    const char *dir = kd_test_tmpdir();
    char p[600];
    static const char *const names[] = {"0.weight", "0.bias", "2.weight", "2.bias", "3.weight"};
    static const uint64_t shapes[][2] = {{3, 4}, {3, 0}, {2, 3}, {2, 0}, {2, 2}};
    static const int ranks[] = {2, 1, 2, 1, 2};

    snprintf(p, sizeof p, "%s/ok.safetensors", dir);
    write_plain(p, names, shapes, ranks, NULL, 4, NULL);
    expect_load_error(p, ARCH_PY, 0, KD_OK, "");
    /* The wrong width for the supplied architecture. */
    expect_load_error(p,
                      "{\"input\":[4],\"layers\":[{\"type\":\"dense\",\"units\":5},{\"type\":\"relu\"},"
                      "{\"type\":\"dense\",\"units\":2}]}",
                      0, KD_EINPUT, "tensor 0.weight: expected shape [5, 4], found [3, 4]");
    expect_load_error(p,
                      "{\"input\":[4],\"layers\":[{\"type\":\"dense\",\"units\":3},{\"type\":\"relu\"},"
                      "{\"type\":\"dense\",\"units\":2,\"bias\":false}]}",
                      0, KD_EINPUT, "tensor 2.bias: not part of the architecture");

    snprintf(p, sizeof p, "%s/missing.safetensors", dir);
    write_plain(p, names, shapes, ranks, NULL, 3, NULL);
    expect_load_error(p, ARCH_PY, 0, KD_EINPUT,
                      "tensor 2.bias: missing (the architecture expects shape [2])");

    snprintf(p, sizeof p, "%s/extra.safetensors", dir);
    write_plain(p, names, shapes, ranks, NULL, 5, NULL);
    expect_load_error(p, ARCH_PY, 0, KD_EINPUT, "tensor 3.weight: not part of the architecture");
    expect_load_error(p, ARCH_PY, 1, KD_OK, "");

    static const char *const with_state[] = {"0.weight", "0.bias", "2.weight", "2.bias",
                                             "optim.m.0.bias"};
    snprintf(p, sizeof p, "%s/state.safetensors", dir);
    static const uint64_t st_shapes[][2] = {{3, 4}, {3, 0}, {2, 3}, {2, 0}, {3, 0}};
    static const int st_ranks[] = {2, 1, 2, 1, 1};
    write_plain(p, with_state, st_shapes, st_ranks, NULL, 5, NULL);
    expect_load_error(p, ARCH_PY, 0, KD_OK, ""); /* training state is always allowed */

    static const kd_dtype bad_dt[] = {KD_DT_F32, KD_DT_F32, KD_DT_I32, KD_DT_F32};
    snprintf(p, sizeof p, "%s/i32.safetensors", dir);
    write_plain(p, names, shapes, ranks, bad_dt, 4, NULL);
    expect_load_error(p, ARCH_PY, 0, KD_EINPUT,
                      "tensor 2.weight: dtype I32 cannot be loaded into a float parameter");

    snprintf(p, sizeof p, "%s/badarch.safetensors", dir);
    write_plain(p, names, shapes, ranks, NULL, 4, "{\"input\":[4],\"layers\":[{\"type\":\"densse\"}]}");
    expect_load_error(p, NULL, 0, KD_EINPUT, "metadata: arch: layer 0: unknown type \"densse\"");

    /* A file whose own arch disagrees with the supplied one, layer by layer. */
    snprintf(p, sizeof p, "%s/tanh.safetensors", dir);
    write_plain(p, names, shapes, ranks, NULL, 4,
                "{\"input\":[4],\"layers\":[{\"type\":\"dense\",\"units\":3},{\"type\":\"tanh\"},"
                "{\"type\":\"dense\",\"units\":2}]}");
    expect_load_error(p, NULL, 0, KD_OK, "");
    expect_load_error(p, ARCH_PY, 0, KD_EINPUT,
                      "layer 1 is {\"type\":\"tanh\"} in the file's architecture but "
                      "{\"type\":\"relu\"} in the supplied one");

    /* A truncated file and a malformed header travel up as KD_EINPUT with the reader's message. */
    snprintf(p, sizeof p, "%s/short.safetensors", dir);
    kd_test_write_file(p, "\x10\0\0", 3);
    expect_load_error(p, ARCH_PY, 0, KD_EINPUT, "shorter than the 8-byte");
}

KD_TEST(ckpt_loads_int8_exports_and_half_precision) {
    const char *dir = kd_test_tmpdir();
    char p[600];
    snprintf(p, sizeof p, "%s/q.safetensors", dir);
    /* 0.weight as int8 [3, 4] with per-row scales; biases in F16 and BF16; 2.weight F32. */
    int8_t q[12] = {-128, -1, 0, 127, 5, 6, 7, 8, -9, 10, -11, 12};
    float scale[3] = {0.5f, 0.25f, 2.0f};
    uint16_t b0[3] = {kd_f32_to_f16(0.1f), kd_f32_to_f16(-2.5f), kd_f32_to_f16(65504.0f)};
    uint16_t b2[2] = {kd_f32_to_bf16(3.0f), kd_f32_to_bf16(-0.1f)};
    float w2[6] = {1, 2, 3, 4, 5, 6};
    kd_st_out t[] = {{"0.weight", KD_DT_I8, 2, {3, 4}, q},
                     {"0.weight_scale", KD_DT_F32, 1, {3}, scale},
                     {"0.bias", KD_DT_F16, 1, {3}, b0},
                     {"2.weight", KD_DT_F32, 2, {2, 3}, w2},
                     {"2.bias", KD_DT_BF16, 1, {2}, b2}};
    kd_err err;
    CHECK_EQ_INT(kd_st_write(p, t, 5, NULL, NULL, 0, &err), KD_OK);
    kd_model m = {0};
    kd_status st = kd_ckpt_load(p, ARCH_PY, 0, 0, &m, NULL, NULL, NULL, NULL, &err);
    CHECK_EQ_INT(st, KD_OK);
    if (st) {
        printf("  %s\n", err.msg);
        return;
    }
    const float *w = kd_model_tensor(&m, "0.weight")->data;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) CHECK(w[r * 4 + c] == (float)q[r * 4 + c] * scale[r]);
    CHECK(w[0] == -64.0f && w[11] == 24.0f);
    const float *b = kd_model_tensor(&m, "0.bias")->data;
    CHECK(b[0] == kd_f16_to_f32(b0[0]) && b[1] == -2.5f && b[2] == 65504.0f);
    CHECK_CLOSE(b[0], 0.1, 1e-4, 0);
    const float *bb = kd_model_tensor(&m, "2.bias")->data;
    CHECK(bb[0] == 3.0f && bb[1] == kd_bf16_to_f32(b2[1]));
    kd_model_free(&m);

    /* int8 weights without their scales, or scales of the wrong shape, are refused. */
    snprintf(p, sizeof p, "%s/noscale.safetensors", dir);
    kd_st_out t2[] = {t[0], t[2], t[3], t[4]};
    CHECK_EQ_INT(kd_st_write(p, t2, 4, NULL, NULL, 0, &err), KD_OK);
    expect_load_error(p, ARCH_PY, 0, KD_EINPUT,
                      "tensor 0.weight: int8 weights need their per-row scales in tensor "
                      "0.weight_scale, which is missing");
    snprintf(p, sizeof p, "%s/badscale.safetensors", dir);
    kd_st_out t3[] = {t[0], {"0.weight_scale", KD_DT_F32, 1, {2}, scale}, t[2], t[3], t[4]};
    CHECK_EQ_INT(kd_st_write(p, t3, 5, NULL, NULL, 0, &err), KD_OK);
    expect_load_error(p, ARCH_PY, 0, KD_EINPUT,
                      "tensor 0.weight_scale: expected F32 [3] (one scale per output row), found F32 [2]");
    /* A stray _scale next to a float weight is unexpected. */
    snprintf(p, sizeof p, "%s/stray.safetensors", dir);
    kd_st_out t4[] = {{"0.weight", KD_DT_F32, 2, {3, 4}, w2}, t[1], t[2], t[3], t[4]};
    float w12[12] = {0};
    t4[0].data = w12;
    CHECK_EQ_INT(kd_st_write(p, t4, 5, NULL, NULL, 0, &err), KD_OK);
    expect_load_error(p, ARCH_PY, 0, KD_EINPUT, "tensor 0.weight_scale: not part of the architecture");
}

KD_TEST(ckpt_failed_write_leaves_previous_checkpoint_loadable) {
    const char *dir = kd_test_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/last.safetensors", dir);
    kd_model m = {0}, l = {0};
    if (!build(&m, ARCH_PY, 1)) return;
    for (size_t i = 0; i < m.n_params; i++) m.params[i] = (float)i;
    kd_err err;
    CHECK_EQ_INT(kd_ckpt_save(path, &m, NULL, NULL, &err), KD_OK);
    for (size_t i = 0; i < m.n_params; i++) m.params[i] = -1.0f;
    kd_train_state ts = {.step = 1};
    kd_rng_seed(&ts.rng, 1);
    kd_fault_write_after = 1;
    CHECK_EQ_INT(kd_ckpt_save(path, &m, NULL, &ts, &err), KD_EIO);
    kd_fault_write_after = 0;
    CHECK_CONTAINS(err.msg, path);
    kd_status st = kd_ckpt_load(path, NULL, 0, 0, &l, NULL, NULL, NULL, NULL, &err);
    CHECK_EQ_INT(st, KD_OK);
    for (size_t i = 0; st == KD_OK && i < l.n_params; i++) CHECK(l.params[i] == (float)i);
    char cmd[700], out[256];
    snprintf(cmd, sizeof cmd, "ls -A '%s'", dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK(strcmp(out, "last.safetensors\n") == 0);
    /* Unwritable target directory: an error, nothing created. */
    CHECK_EQ_INT(kd_ckpt_save("/nonexistent-dir/x.safetensors", &m, NULL, NULL, &err), KD_EIO);
    CHECK_CONTAINS(err.msg, "/nonexistent-dir/x.safetensors");
    kd_model_free(&l);
    kd_model_free(&m);
}

KD_TEST(ckpt_refuses_corrupt_training_state) {
    const char *dir = kd_test_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/t.safetensors", dir);
    kd_model m = {0};
    if (!build(&m, ARCH_PY, 1)) return;
    kd_train_state ts = {.step = 3};
    kd_rng_seed(&ts.rng, 3);
    kd_err err;
    CHECK_EQ_INT(kd_ckpt_save(path, &m, NULL, &ts, &err), KD_OK);
    /* Rewrite the file with one metadata value or tensor broken at a time. */
    kd_st_file f;
    if (kd_st_read(&f, path, &err) != KD_OK) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        kd_model_free(&m);
        return;
    }
    static const struct {
        const char *key, *value, *drop, *expect;
    } cases[] = {
        {"train.rng", "1 2 3", NULL, "metadata train.rng: expected 4 hexadecimal words"},
        {"train.rng", "0 0 0 0", NULL, "metadata train.rng"},
        {"train.step", "-1", NULL, "metadata train.step: expected a non-negative integer"},
        {"train.epoch", "99999999999999999999", NULL, "metadata train.epoch"},
        {"train.best_val", "abc", NULL, "metadata train.best_val: expected a number"},
        {NULL, NULL, "optim.v.2.bias", "tensor optim.v.2.bias: expected F32 [2], missing"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        kd_st_out outs[32];
        const char *mk[16], *mv[16];
        size_t n_out = 0;
        for (size_t i = 0; i < f.n_tensors && n_out < 32; i++) {
            const kd_st_tensor *t = &f.tensors[i];
            if (cases[c].drop && strcmp(t->name, cases[c].drop) == 0) continue;
            outs[n_out] = (kd_st_out){t->name, t->dtype, t->rank, {0}, t->data};
            memcpy(outs[n_out++].shape, t->shape, sizeof t->shape);
        }
        for (size_t i = 0; i < f.n_meta && i < 16; i++) {
            mk[i] = f.meta_keys[i];
            mv[i] = cases[c].key && strcmp(f.meta_keys[i], cases[c].key) == 0 ? cases[c].value
                                                                               : f.meta_vals[i];
        }
        char bad[620];
        snprintf(bad, sizeof bad, "%s/bad%zu.safetensors", dir, c);
        CHECK_EQ_INT(kd_st_write(bad, outs, n_out, mk, mv, f.n_meta, &err), KD_OK);
        kd_train_state got;
        CHECK_EQ_INT(kd_ckpt_load_train_state(bad, &m, &got, &err), KD_EINPUT);
        CHECK_CONTAINS(err.msg, cases[c].expect);
        CHECK(got.order == NULL);
    }
    kd_st_free(&f);
    kd_model_free(&m);
}

/* cJSON allocations that succeed this many more times, then fail (out of memory). */
static int g_cjson_allocs_left;
static void *failing_malloc(size_t n) {
    if (g_cjson_allocs_left <= 0) return NULL;
    g_cjson_allocs_left--;
    return malloc(n);
}

KD_TEST(ckpt_save_out_of_memory_in_metadata_is_an_error_not_a_partial_header) {
    const char *dir = kd_test_tmpdir();
    char p[600];
    snprintf(p, sizeof p, "%s/m.safetensors", dir);
    kd_model m = {0};
    if (!build(&m, ARCH_BN, 0)) return;
    char *names[3] = {"cat", "dog", "emu"};
    kd_preprocess pp;
    kd_preprocess_defaults(&pp);
    pp.scale = 0.5f;
    pp.n_channels = 1;
    pp.mean[0] = 0.25f;
    pp.std[0] = 2.0f;
    kd_ckpt_meta meta = {names, 3, &pp, NULL};
    /* The arch, classes and preprocess builders all allocate through cJSON: let the k-th
     * allocation fail, for every k until the save needs no more. */
    int failures = 0, saved = 0;
    for (int k = 0; k < 1000 && !saved; k++) {
        kd_err err;
        kd_err_clear(&err);
        cJSON_Hooks hooks = {failing_malloc, free};
        g_cjson_allocs_left = k;
        cJSON_InitHooks(&hooks);
        kd_status st = kd_ckpt_save(p, &m, &meta, NULL, &err);
        cJSON_InitHooks(NULL);
        if (st == KD_OK) {
            saved = 1;
            break;
        }
        failures++;
        CHECK_EQ_INT(st, KD_EIO);
        CHECK_CONTAINS(err.msg, "out of memory");
        CHECK(access(p, F_OK) != 0);  /* nothing written, not a file with a partial header */
    }
    CHECK(saved && failures >= 6);
    /* The save that went through has all of its metadata. */
    kd_model back = {0};
    kd_preprocess got;
    int has_pp = 0;
    char **cls = NULL;
    size_t n_cls = 0;
    kd_err err;
    CHECK_EQ_INT(kd_ckpt_load(p, NULL, 0, 0, &back, &got, &has_pp, &cls, &n_cls, &err), KD_OK);
    CHECK(has_pp && got.scale == 0.5f && got.n_channels == 1 && got.mean[0] == 0.25f &&
          got.std[0] == 2.0f);
    CHECK(n_cls == 3 && cls && strcmp(cls[2], "emu") == 0);
    kd_free_strings(cls, n_cls);
    kd_model_free(&back);
    kd_model_free(&m);
}
