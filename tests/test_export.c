/* test_export.c - int8 / f16 / bf16 round trips, `distill export` (weights only, names, order,
 * dtypes, metadata, loadable everywhere), and on Fashion-MNIST: int8 and f16 exports of a
 * trained student stay within half a point of its f32 accuracy. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kd_checkpoint.h"
#include "kd_eval.h"
#include "kd_loss.h"
#include "kd_test.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

KD_TEST(export_int8_round_trip_within_half_scale) {
    enum { R = 7, C = 33 };
    float w[R * C], back[R * C], scale[R];
    int8_t q[R * C];
    kd_rng rng;
    kd_rng_seed(&rng, 11);
    for (int i = 0; i < R * C; i++) w[i] = kd_rng_normal(&rng) * (float)(1 + i / C);
    for (int c = 0; c < C; c++) w[2 * C + c] = 0.0f;   /* an all-zero row */
    w[4 * C + 5] = 250.0f;                              /* a row with one outlier */
    w[5 * C + 0] = -3.0f;                               /* negative extreme */
    for (int c = 1; c < C; c++) w[5 * C + c] = 0.5f * (float)(c % 5) - 1.0f;
    kd_quant_int8_rows(w, R, C, q, scale);
    kd_dequant_int8_rows(q, scale, R, C, back);
    for (int r = 0; r < R; r++) {
        float mx = 0;
        for (int c = 0; c < C; c++) mx = fmaxf(mx, fabsf(w[r * C + c]));
        if (mx > 0) CHECK_CLOSE(scale[r], mx / 127.0f, 0, 1e-7);
        int seen_extreme = 0;
        for (int c = 0; c < C; c++) {
            int qi = q[r * C + c];
            CHECK(qi >= -127 && qi <= 127);
            if (qi == 127 || qi == -127) seen_extreme = 1;
            /* scale/2 bound, plus float rounding of the division and product. */
            double err = fabs((double)back[r * C + c] - (double)w[r * C + c]);
            if (!(err <= scale[r] * 0.5 * (1 + 1e-5) + 1e-7))
                kd_test_fail(__FILE__, __LINE__, "row %d col %d: %g vs %g, scale %g", r, c,
                             back[r * C + c], w[r * C + c], scale[r]);
        }
        if (mx > 0) CHECK(seen_extreme);
    }
    for (int c = 0; c < C; c++) CHECK(back[2 * C + c] == 0.0f && q[2 * C + c] == 0);
    CHECK(q[4 * C + 5] == 127);
    CHECK(q[5 * C + 0] == -127);
    CHECK(back[5 * C + 0] == -3.0f || fabsf(back[5 * C + 0] + 3.0f) < 1e-6f);
    /* Rounding, not truncation: with scale 1 (max 127), 2.6 -> 3 and -2.6 -> -3. */
    float w2[3] = {127.0f, 2.6f, -2.6f}, s2;
    int8_t q2[3];
    kd_quant_int8_rows(w2, 1, 3, q2, &s2);
    CHECK(s2 == 1.0f && q2[0] == 127 && q2[1] == 3 && q2[2] == -3);
}

KD_TEST(export_f16_bf16_round_trip_within_precision) {
    enum { N = 2000 };
    float x[N], back[N];
    uint16_t h[N];
    kd_rng rng;
    kd_rng_seed(&rng, 5);
    /* Magnitudes from 2^-10 to 2^10: all normal in half precision. */
    for (int i = 0; i < N; i++) {
        float mag = ldexpf(1.0f + kd_rng_uniform(&rng), (int)kd_rng_below(&rng, 21) - 10);
        x[i] = (i & 1) ? -mag : mag;
    }
    kd_quant_f16(x, h, N);
    kd_dequant_f16(h, back, N);
    for (int i = 0; i < N; i++)
        if (!(fabs((double)back[i] - x[i]) <= ldexp(fabs(x[i]), -11)))
            kd_test_fail(__FILE__, __LINE__, "f16 %d: %.9g -> %.9g", i, x[i], back[i]);
    kd_quant_bf16(x, h, N);
    kd_dequant_bf16(h, back, N);
    for (int i = 0; i < N; i++)
        if (!(fabs((double)back[i] - x[i]) <= ldexp(fabs(x[i]), -8)))
            kd_test_fail(__FILE__, __LINE__, "bf16 %d: %.9g -> %.9g", i, x[i], back[i]);
    /* Exactly representable values survive unchanged. */
    float exact[4] = {1.0f, -0.5f, 3.0f, 1024.0f}, eb[4];
    uint16_t eh[4];
    kd_quant_f16(exact, eh, 4);
    kd_dequant_f16(eh, eb, 4);
    CHECK_FLOATS(eb, exact, 4, 0, 0);
    kd_quant_bf16(exact, eh, 4);
    kd_dequant_bf16(eh, eb, 4);
    CHECK_FLOATS(eb, exact, 4, 0, 0);
    kd_dtype t;
    CHECK(kd_export_dtype_parse("int8", &t) == 0 && t == KD_DT_I8);
    CHECK(kd_export_dtype_parse("bf16", &t) == 0 && t == KD_DT_BF16);
    CHECK(kd_export_dtype_parse("f64", &t) == -1);
}

/* conv2d + batchnorm + dense: covers per-channel int8, F32 batch-norm tensors, I64 counter. */
static const char *k_arch =
    "{\"input\":[1,6,6],\"layers\":[{\"type\":\"conv2d\",\"channels\":3,\"kernel\":3},"
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},{\"type\":\"flatten\"},"
    "{\"type\":\"dense\",\"units\":4}]}";

static void make_training_checkpoint(const char *path, kd_model *m) {
    kd_err err = {0};
    kd_rng rng;
    CHECK(kd_model_init_arch(m, k_arch, 1, &err) == KD_OK);
    kd_rng_seed(&rng, 3);
    kd_model_init_weights(m, &rng, KD_INIT_HE);
    for (size_t i = 0; i < m->n_buffers; i++) m->buffers[i] = 0.25f + 0.125f * (float)i;
    for (size_t i = 0; i < m->n_params; i++) m->m[i] = 0.5f, m->v[i] = 0.25f;
    *kd_model_tensor(m, "1.num_batches_tracked")->counter = 42;
    char *names[4] = {"a", "b", "c", "d"};
    kd_preprocess pp;
    kd_preprocess_defaults(&pp);
    pp.scale = 1.0f / 255.0f;
    pp.n_channels = 1;
    pp.mean[0] = 0.5f;
    pp.std[0] = 0.25f;
    kd_ckpt_meta meta = {names, 4, &pp, "{\"note\":\"run info\"}"};
    kd_train_state ts;
    memset(&ts, 0, sizeof ts);
    ts.step = 7;
    ts.epoch = 1;
    kd_rng_seed(&ts.rng, 9);
    CHECK(kd_ckpt_save(path, m, &meta, &ts, &err) == KD_OK);
    if (err.code) kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
}

KD_TEST(export_cli_weights_only_every_dtype) {
    const char *dir = kd_test_tmpdir();
    char in[512], out[512], cmd[4096];
    static char text[1 << 16];
    kd_model src;
    memset(&src, 0, sizeof src);
    snprintf(in, sizeof in, "%s/train.safetensors", dir);
    make_training_checkpoint(in, &src);
    static const char *const dtypes[] = {"f32", "f16", "bf16", "int8"};
    for (int k = 0; k < 4; k++) {
        snprintf(out, sizeof out, "%s/out-%s.safetensors", dir, dtypes[k]);
        snprintf(cmd, sizeof cmd, "%s export %s %s --dtype %s", kd_test_distill(), in, out, dtypes[k]);
        int rc = kd_test_run(cmd, text, sizeof text);
        CHECK_EQ_INT(rc, 0);
        if (rc) {
            kd_test_fail(__FILE__, __LINE__, "%s", text);
            continue;
        }
        CHECK_CONTAINS(text, "smaller");
        kd_st_file f;
        kd_err err = {0};
        memset(&f, 0, sizeof f);
        CHECK(kd_st_read(&f, out, &err) == KD_OK);
        /* Names and order: the model's state_dict, with "<w>_scale" after each int8 weight. */
        size_t j = 0;
        for (size_t i = 0; i < src.n_tensors && j < f.n_tensors; i++) {
            const kd_tensor *t = &src.tensors[i];
            const kd_st_tensor *ft = &f.tensors[j++];
            CHECK(strcmp(ft->name, t->name) == 0);
            int is_mat = t->kind == KD_TENSOR_PARAM && t->shape.rank >= 2;
            kd_dtype want = KD_DT_F32;
            if (t->kind == KD_TENSOR_COUNTER) want = KD_DT_I64;
            else if (k == 1 && t->kind == KD_TENSOR_PARAM) want = KD_DT_F16;
            else if (k == 2 && t->kind == KD_TENSOR_PARAM) want = KD_DT_BF16;
            else if (k == 3 && is_mat) want = KD_DT_I8;
            if (ft->dtype != want)
                kd_test_fail(__FILE__, __LINE__, "%s %s: dtype %s, want %s", dtypes[k], t->name,
                             kd_dtype_name(ft->dtype), kd_dtype_name(want));
            if (want == KD_DT_I8 && j < f.n_tensors) {
                const kd_st_tensor *sc = &f.tensors[j++];
                char sname[80];
                snprintf(sname, sizeof sname, "%s_scale", t->name);
                CHECK(strcmp(sc->name, sname) == 0);
                CHECK(sc->dtype == KD_DT_F32 && sc->rank == 1 && sc->shape[0] == t->shape.d[0]);
            }
        }
        CHECK_EQ_INT(j, f.n_tensors);
        for (size_t i = 0; i < f.n_tensors; i++)
            CHECK(strncmp(f.tensors[i].name, "optim.", 6) && strncmp(f.tensors[i].name, "train.", 6));
        CHECK(kd_st_meta(&f, "train.step") == NULL);
        CHECK(kd_st_meta(&f, "run") == NULL);
        CHECK(kd_st_meta(&f, "format") && !strcmp(kd_st_meta(&f, "format"), "distill/1"));
        CHECK(kd_st_meta(&f, "dtype") && !strcmp(kd_st_meta(&f, "dtype"), dtypes[k]));
        CHECK(kd_st_meta(&f, "arch") != NULL);
        CHECK(kd_st_meta(&f, "classes") != NULL);
        CHECK(kd_st_meta(&f, "preprocess") != NULL);
        CHECK((kd_st_meta(&f, "quantization") != NULL) == (k == 3));
        kd_st_free(&f);

        /* Loads back: values within each format's precision, pp and classes preserved. */
        kd_model m;
        kd_preprocess pp;
        int has_pp = 0;
        char **cls = NULL;
        size_t n_cls = 0;
        CHECK(kd_ckpt_load(out, NULL, 0, 0, &m, &pp, &has_pp, &cls, &n_cls, &err) == KD_OK);
        if (err.code) {
            kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
            continue;
        }
        CHECK(has_pp && pp.n_channels == 1 && pp.mean[0] == 0.5f && pp.std[0] == 0.25f);
        CHECK(n_cls == 4 && cls && !strcmp(cls[3], "d"));
        kd_free_strings(cls, n_cls);
        for (size_t i = 0; i < m.n_tensors; i++) {
            const kd_tensor *a = &m.tensors[i], *b = &src.tensors[i];
            if (a->kind == KD_TENSOR_COUNTER) {
                CHECK(*a->counter == *b->counter);
                continue;
            }
            double bound_rel = 0, row_scale_bound = 0;
            if (a->kind == KD_TENSOR_PARAM && k == 1) bound_rel = ldexp(1, -11);
            if (a->kind == KD_TENSOR_PARAM && k == 2) bound_rel = ldexp(1, -8);
            size_t rows = a->shape.d[0], cols = a->numel / rows;
            for (size_t r = 0; r < rows; r++) {
                if (k == 3 && a->kind == KD_TENSOR_PARAM && a->shape.rank >= 2) {
                    float mx = 0;
                    for (size_t c = 0; c < cols; c++) mx = fmaxf(mx, fabsf(b->data[r * cols + c]));
                    row_scale_bound = mx / 127.0 * 0.5 * (1 + 1e-5) + 1e-8;
                }
                for (size_t c = 0; c < cols; c++) {
                    double x = b->data[r * cols + c], y = a->data[r * cols + c];
                    double bound = bound_rel * fabs(x) + row_scale_bound;
                    if (!(fabs(x - y) <= bound))
                        kd_test_fail(__FILE__, __LINE__, "%s %s[%zu]: %.9g vs %.9g", dtypes[k],
                                     a->name, r * cols + c, y, x);
                }
            }
        }
        kd_model_free(&m);
        /* `distill info` reads it (once the info command exists in this build). */
        snprintf(cmd, sizeof cmd, "%s info %s", kd_test_distill(), out);
        rc = kd_test_run(cmd, text, sizeof text);
        if (!strstr(text, "not available in this build")) {
            CHECK_EQ_INT(rc, 0);
        }
    }
    /* The int8 export is the smallest, f32 the largest of the exports, and the f32 export is
     * smaller than the training checkpoint (no moments). */
    struct stat s_in, s32, s8;
    snprintf(out, sizeof out, "%s/out-f32.safetensors", dir);
    CHECK(stat(in, &s_in) == 0 && stat(out, &s32) == 0);
    snprintf(out, sizeof out, "%s/out-int8.safetensors", dir);
    CHECK(stat(out, &s8) == 0);
    CHECK(s32.st_size < s_in.st_size);
    CHECK(s8.st_size < s32.st_size);
    kd_model_free(&src);

    /* Refusals: same path (also spelled differently), missing dtype, unknown dtype. */
    snprintf(cmd, sizeof cmd, "%s export %s %s/./train.safetensors --dtype f16", kd_test_distill(), in, dir);
    CHECK_EQ_INT(kd_test_run(cmd, text, sizeof text), 2);
    CHECK_CONTAINS(text, "same file");
    snprintf(cmd, sizeof cmd, "%s export %s %s --dtype f16", kd_test_distill(), in, in);
    CHECK_EQ_INT(kd_test_run(cmd, text, sizeof text), 2);
    snprintf(cmd, sizeof cmd, "%s export %s %s/x.safetensors", kd_test_distill(), in, dir);
    CHECK_EQ_INT(kd_test_run(cmd, text, sizeof text), 2);
    snprintf(cmd, sizeof cmd, "%s export %s %s/x.safetensors --dtype int4", kd_test_distill(), in, dir);
    CHECK_EQ_INT(kd_test_run(cmd, text, sizeof text), 2);
    snprintf(cmd, sizeof cmd, "%s export %s/missing.safetensors %s/x.safetensors --dtype f16",
             kd_test_distill(), dir, dir);
    CHECK_EQ_INT(kd_test_run(cmd, text, sizeof text), 3);
    CHECK_CONTAINS(text, "missing.safetensors");
    snprintf(cmd, sizeof cmd, "%s help export", kd_test_distill());
    CHECK_EQ_INT(kd_test_run(cmd, text, sizeof text), 0);
    CHECK_CONTAINS(text, "--dtype");
}

static const char *const k_fmnist_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                               "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                                               "Ankle boot"};

/* Trains a small 784-64-10 MLP for one epoch of plain SGD on the first n_train Fashion-MNIST
 * training images and saves it (f32, with class names and preprocessing) to path. Shared with
 * test_predict.c. Returns 0 on success, -1 (skip) if the dataset is not installed, 1 on error. */
int kd_test_eval_train_fmnist(const char *path, size_t n_train);
int kd_test_eval_train_fmnist(const char *path, size_t n_train) {
    kd_data_source src;
    kd_dataset *ds = NULL;
    kd_loader *ld = NULL;
    kd_model m;
    kd_err err = {0};
    size_t *order = NULL;
    float *dz = NULL;
    int rc = 1;
    struct stat sb;
    memset(&m, 0, sizeof m);
    if (stat(FMNIST_DIR "/train-images-idx3-ubyte.gz", &sb) != 0) return -1;
    kd_data_source_defaults(&src);
    src.format = KD_FMT_IDX;
    snprintf(src.path, sizeof src.path, "%s", FMNIST_DIR "/train-images-idx3-ubyte.gz");
    snprintf(src.labels_path, sizeof src.labels_path, "%s", FMNIST_DIR "/train-labels-idx1-ubyte.gz");
    src.subset = n_train;
    if (kd_dataset_open(&ds, &src, NULL, &err)) goto cleanup;
    const char *arch = "{\"input\":[1,28,28],\"layers\":[{\"type\":\"flatten\"},"
                       "{\"type\":\"dense\",\"units\":64},{\"type\":\"relu\"},"
                       "{\"type\":\"dense\",\"units\":10}]}";
    if (kd_model_init_arch(&m, arch, 1, &err)) goto cleanup;
    kd_rng rng;
    kd_rng_seed(&rng, 1234);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    size_t n = kd_dataset_info(ds)->n, B = 50;
    order = malloc(n * sizeof *order);
    dz = malloc(B * 10 * sizeof *dz);
    if (!order || !dz) goto cleanup;
    for (size_t i = 0; i < n; i++) order[i] = i;
    kd_rng_shuffle(&rng, order, n);
    if (kd_model_reserve(&m, B, &err) || kd_loader_open(&ld, ds, order, n, B, &err)) goto cleanup;
    kd_ctx ctx = {1, &rng, NULL, 0, 0, 0};
    for (;;) {
        kd_batch b;
        if (kd_loader_next(ld, &b, &err)) goto cleanup;
        if (b.n == 0) break;
        kd_model_zero_grad(&m);
        const float *z = kd_model_forward(&m, b.x, b.n, &ctx);
        kd_loss_ce(z, b.y, b.n, 10, dz);
        kd_model_backward(&m, b.x, dz, b.n, &ctx);
        for (size_t i = 0; i < m.n_params; i++) m.params[i] -= 0.1f * m.grads[i];
    }
    kd_ckpt_meta meta = {(char **)k_fmnist_names, 10, kd_dataset_preprocess(ds), NULL};
    if (kd_ckpt_save(path, &m, &meta, NULL, &err)) goto cleanup;
    rc = 0;
cleanup:
    if (rc) fprintf(stderr, "train_fmnist: %s\n", err.msg);
    kd_loader_close(ld);
    kd_dataset_close(ds);
    kd_model_free(&m);
    free(order);
    free(dz);
    return rc;
}

static double model_field(const cJSON *models, int k, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(models, k), key);
    return cJSON_IsNumber(it) ? it->valuedouble : NAN;
}

KD_TEST(export_fashion_mnist_int8_f16_keep_accuracy) {
    const char *dir = kd_test_tmpdir();
    char f32[512], cmd[8192];
    static char text[1 << 16];
    snprintf(f32, sizeof f32, "%s/student.safetensors", dir);
    int tr = kd_test_eval_train_fmnist(f32, 20000);
    if (tr < 0) {
        kd_test_skip("Fashion-MNIST is not installed in " FMNIST_DIR);
        return;
    }
    CHECK_EQ_INT(tr, 0);
    if (tr) return;
    /* A run folder whose config names the test data: export prints both accuracies. */
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    FILE *f = fopen(cfg, "w");
    CHECK(f != NULL);
    if (!f) return;
    fprintf(f,
            "{\"data\": {\"train\": {\"format\": \"idx\", \"path\": \"%s/train-images-idx3-ubyte.gz\","
            " \"labels\": \"%s/train-labels-idx1-ubyte.gz\"},"
            " \"test\": {\"format\": \"idx\", \"path\": \"%s/t10k-images-idx3-ubyte.gz\","
            " \"labels\": \"%s/t10k-labels-idx1-ubyte.gz\"}},"
            " \"model\": {\"layers\": [{\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 64},"
            " {\"type\": \"relu\"}, {\"type\": \"dense\", \"units\": 10}]}}\n",
            FMNIST_DIR, FMNIST_DIR, FMNIST_DIR, FMNIST_DIR);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s export %s %s/s8.safetensors --dtype int8 --run %s",
             kd_test_distill(), f32, dir, dir);
    int rc = kd_test_run(cmd, text, sizeof text);
    CHECK_EQ_INT(rc, 0);
    if (rc) kd_test_fail(__FILE__, __LINE__, "%s", text);
    CHECK_CONTAINS(text, "accuracy");
    CHECK_CONTAINS(text, "agreement");
    snprintf(cmd, sizeof cmd, "%s export %s %s/s16.safetensors --dtype f16", kd_test_distill(), f32, dir);
    CHECK_EQ_INT(kd_test_run(cmd, text, sizeof text), 0);

    snprintf(cmd, sizeof cmd, "%s eval --config %s --json %s %s/s8.safetensors %s/s16.safetensors",
             kd_test_distill(), cfg, f32, dir, dir);
    rc = kd_test_run(cmd, text, sizeof text);
    CHECK_EQ_INT(rc, 0);
    cJSON *j = cJSON_Parse(text);
    if (!j) {
        kd_test_fail(__FILE__, __LINE__, "not JSON: %s", text);
        return;
    }
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(j, "models");
    CHECK(cJSON_GetArraySize(models) == 3);
    CHECK_CLOSE(cJSON_GetObjectItemCaseSensitive(j, "n")->valuedouble, 10000, 0, 0);
    double a32 = model_field(models, 0, "top1");
    CHECK(a32 > 0.75); /* a real, trained student */
    for (int k = 1; k < 3; k++) {
        double a = model_field(models, k, "top1");
        if (!(fabs(a - a32) <= 0.005))
            kd_test_fail(__FILE__, __LINE__, "model %d accuracy %.4f vs f32 %.4f", k, a, a32);
        CHECK(model_field(models, k, "agreement") >= 0.98);
        CHECK(model_field(models, k, "kl") < 0.01);
    }
    /* int8: 784-64-10 weights shrink about 4x (biases and scales stay F32). */
    CHECK(model_field(models, 1, "compression") > 3.5);
    CHECK(model_field(models, 2, "compression") > 1.9);
    cJSON_Delete(j);
}
