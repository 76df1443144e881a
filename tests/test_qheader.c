/* test_qheader.c - the qint8 C header of the graph students is bit-identical to distill's
 * integer reference on x86: the small ResNet student (configs/fmnist-resnet-student.json:
 * strided and 1x1 downsampling convolutions, residual adds, folded batch norms, a global
 * average pool) and MobileNetV2 (configs/fmnist-mobilenetv2.json: depthwise convolutions,
 * ReLU6, inverted residuals). Each model gets random weights and batch-norm statistics far
 * from the identity, is quantized with ranges from the first 100 test images, written as a
 * qint8 safetensors file and read back (the model `distill eval` and `predict` run: the
 * reference), exported as a header from the same quantization, built with `cc -std=c99 -O2`
 * and run on Fashion-MNIST test images through tests/export/qint8_harness.c. Both entry points
 * are compared byte for byte: NAME_forward_q's int8 logits (from the reference's int8 inputs)
 * and NAME_forward's float logits (from the raw pixels, the preprocessing inside the header).
 * The suite runs the first images (a few seconds; 8 under ASan); KD_FULL=1 runs all 10,000. */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_data.h"
#include "kd_export.h"
#include "kd_nn.h"
#include "kd_quant.h"
#include "kd_rng.h"
#include "kd_test.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"
#define D 784
#define C 10
#if defined(__SANITIZE_ADDRESS__)
/* Under ASan the paths, not the counts: the plain suite runs the images. */
#define CAL 20
#define ASAN_IMAGES 8
#else
#define CAL 100
#define ASAN_IMAGES 0
#endif

/* model.layers of a shipped config as JSON text (malloc'd), NULL after a failure. */
static char *config_layers(const char *config) {
    char *text = NULL, *out = NULL;
    size_t n = 0;
    kd_err err = {0};
    if (kd_read_file(config, 1 << 20, &text, &n, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return NULL;
    }
    cJSON *root = cJSON_Parse(text);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(model, "layers");
    if (cJSON_IsArray(layers)) out = cJSON_PrintUnformatted(layers);
    if (!out) kd_test_fail(__FILE__, __LINE__, "%s: no model.layers", config);
    cJSON_Delete(root);
    free(text);
    return out;
}

/* He-initialised weights; batch-norm statistics and affine far from the identity, so a fold
 * that went wrong would move every value. */
static void random_model(kd_model *m, uint64_t seed) {
    kd_rng r;
    kd_rng_seed(&r, seed);
    kd_model_init_weights(m, &r, KD_INIT_HE);
    for (size_t t = 0; t < m->n_tensors; t++) {
        kd_tensor *T = &m->tensors[t];
        if (strcmp(kd_model_layer_type(m, T->layer), "batchnorm") || !T->data) continue;
        for (size_t k = 0; k < T->numel; k++) {
            float u = kd_rng_uniform(&r);
            if (strstr(T->name, "running_var")) T->data[k] = 0.3f + 2 * u;
            else if (strstr(T->name, "running_mean")) T->data[k] = 0.4f * (u - 0.5f);
            else if (strstr(T->name, "weight")) T->data[k] = 0.5f + u;
            else T->data[k] = 0.4f * (u - 0.5f);
        }
    }
}

/* The first n images of an IDX file, preprocessed by the dataset reader with pp. */
static float *images(const char *path, size_t n, const kd_preprocess *pp) {
    kd_data_source src;
    kd_dataset *ds = NULL;
    kd_err err = {0};
    float *x = malloc(n * D * sizeof *x);
    size_t *idx = malloc(n * sizeof *idx);
    kd_data_source_defaults(&src);
    src.format = KD_FMT_IDX, src.subset = n;
    snprintf(src.path, sizeof src.path, "%s", path);
    for (size_t i = 0; i < n; i++) idx[i] = i;
    kd_status st = x && idx ? kd_dataset_open(&ds, &src, pp, &err) : KD_EIO;
    if (!st) st = kd_dataset_get(ds, idx, n, x, NULL, NULL, &err);
    if (ds) kd_dataset_close(ds);
    free(idx);
    if (st) kd_test_fail(__FILE__, __LINE__, "%s: %s", path, err.msg), free(x), x = NULL;
    return x;
}

/* Compares n bytes of the file dir/name with want; reports the first differing sample. */
static void same_file(const char *dir, const char *name, const void *want, size_t n, size_t per) {
    char path[1100], *got = NULL;
    size_t len = 0;
    kd_err err = {0};
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (kd_read_file(path, 1 << 28, &got, &len, &err) || len != n) {
        kd_test_fail(__FILE__, __LINE__, "%s: %zu bytes, expected %zu %s", path, len, n, err.msg);
    } else {
        for (size_t i = 0; i < n; i++)
            if (got[i] != ((const char *)want)[i]) {
                kd_test_fail(__FILE__, __LINE__, "%s: sample %zu differs from the reference "
                             "(byte %zu)", name, i / per, i % per);
                break;
            }
    }
    free(got);
}

/* Builds the header with cc -O2 as an application would and runs it on n images of dir/xq.i8
 * and dir/raw.f32, writing lq.i8 and l.f32. */
static int run_header(const char *dir, const char *name, size_t n) {
    char cmd[4096], out[8192], repo[1024], upper[64];
    size_t i;
    for (i = 0; name[i] && i + 1 < sizeof upper; i++)
        upper[i] = (char)(name[i] >= 'a' && name[i] <= 'z' ? name[i] - 32 : name[i]);
    upper[i] = 0;
    if (!getcwd(repo, sizeof repo)) return 0;
    snprintf(cmd, sizeof cmd, "cd '%s' && cc -std=c99 -pedantic -Wall -Wextra -Werror -O2 -I. "
             "-DMODEL=%s -DMODEL_UPPER=%s '-DMODEL_HEADER=\"%s.h\"' -D%s_IMPLEMENTATION "
             "'%s/tests/export/qint8_harness.c' -lm -o harness && ./harness %zu xq.i8 lq.i8 "
             "raw.f32 l.f32 2>&1", dir, name, upper, name, upper, repo, n);
    int rc = kd_test_run(cmd, out, sizeof out);
    if (rc) kd_test_fail(__FILE__, __LINE__, "exit %d: %s\n%s", rc, cmd, out);
    return rc == 0;
}

/* The whole check for the model of configs/<config>.json on the first n test images. */
static void header_check(const char *config, const char *name, size_t n) {
    if (access(FMNIST "/t10k-images-idx3-ubyte.gz", R_OK)) {
        kd_test_skip(FMNIST " not installed (Debian package dataset-fashion-mnist)");
        return;
    }
    const char *full = getenv("KD_FULL");
    if (full && !strcmp(full, "1")) n = 10000;
    else if (ASAN_IMAGES) n = ASAN_IMAGES;
    char path[1100], *layers = config_layers(config);
    const char *dir = kd_test_tmpdir();
    kd_shape in = {3, {1, 28, 28}};
    kd_model m = {0};
    kd_qmodel q = {0}, ref = {0};
    kd_st_file f = {0};
    kd_err err = {0};
    kd_preprocess pp, raw_pp;
    kd_preprocess_defaults(&pp), kd_preprocess_defaults(&raw_pp);
    pp.scale = 1.0f / 255, pp.n_channels = 1, pp.mean[0] = 0.286f, pp.std[0] = 0.353f;
    raw_pp.scale = 1;
    /* Ranges from the first test images: the ranges only have to be a model's, and the
     * test file is the smaller one to decompress. */
    float *x = images(FMNIST "/t10k-images-idx3-ubyte.gz", n > CAL ? n : CAL, &pp), *cal = x;
    float *raw = images(FMNIST "/t10k-images-idx3-ubyte.gz", n, &raw_pp);
    int8_t *xq = malloc(n * D), *want_q = malloc(n * C);
    float *want = malloc(n * C * sizeof *want);
    kd_status st = layers && cal && x && raw && xq && want_q && want ? KD_OK : KD_EIO;
    if (!st) st = kd_model_init(&m, &in, layers, 0, &err);
    if (!st) random_model(&m, 7), st = kd_quant_build(&m, cal, CAL, &q, &err);
    /* The reference: the qint8 file as eval and predict read it. */
    snprintf(path, sizeof path, "%s/q.safetensors", dir);
    if (!st) st = kd_qmodel_write(path, &q, NULL, NULL, 0, &err);
    if (!st) st = kd_st_read(&f, path, &err);
    if (!st) st = kd_qmodel_read(&f, &ref, &err);
    if (!st) st = kd_qmodel_forward(&ref, x, n, want_q, want, &err);
    const kd_export_info info = {.pp = &pp};
    size_t arena = 0;
    snprintf(path, sizeof path, "%s/%s.h", dir, name);
    if (!st) st = kd_export_c_qint8(path, &q, &in, name, &info, &arena, &err);
    if (st) kd_test_fail(__FILE__, __LINE__, "%s: %s", config, err.msg);
    for (size_t i = 0; !st && i < n * D; i++) xq[i] = kd_quant_value(x[i], &ref.values[0]);
    char f_xq[1100], f_raw[1100];
    snprintf(f_xq, sizeof f_xq, "%s/xq.i8", dir), snprintf(f_raw, sizeof f_raw, "%s/raw.f32", dir);
    if (!st && !kd_test_write_file(f_xq, xq, n * D) &&
        !kd_test_write_file(f_raw, raw, n * D * sizeof *raw) && run_header(dir, name, n)) {
        same_file(dir, "lq.i8", want_q, n * C, C);
        same_file(dir, "l.f32", want, n * C * sizeof *want, C * sizeof *want);
        printf("    %s: %zu ops, arena %zu bytes; %zu test images bit-identical (int8 and "
               "float logits)\n", name, ref.n_ops, arena, n);
    }
    kd_st_free(&f), kd_qmodel_free(&q), kd_qmodel_free(&ref), kd_model_free(&m);
    free(layers), free(x), free(raw), free(xq), free(want_q), free(want);
}

KD_TEST(qheader_resnet_student_is_bit_identical_to_the_reference) {
    header_check("configs/fmnist-resnet-student.json", "resnet_q", 100);
}

KD_TEST(qheader_mobilenetv2_is_bit_identical_to_the_reference) {
    header_check("configs/fmnist-mobilenetv2.json", "mbv2_q", 50);
}

/* The header's int32 sums start at the bias with the zero point folded in: a model handed over
 * in memory whose bias leaves no room for the products is refused (the reader refuses such a
 * file before), naming the op, and no header is written. */
KD_TEST(qheader_refuses_a_bias_that_could_overflow_the_sums) {
    kd_shape in = {1, {4}};
    kd_model m = {0};
    kd_qmodel q = {0};
    kd_err err = {0};
    float x[8 * 4];
    for (size_t i = 0; i < 8 * 4; i++) x[i] = (float)(i % 7) - 3;
    CHECK_EQ_INT(kd_model_init(&m, &in, "[{\"type\": \"dense\", \"units\": 3}]", 0, &err), KD_OK);
    if (kd_test_failed_now()) return;
    random_model(&m, 3);
    CHECK_EQ_INT(kd_quant_build(&m, x, 8, &q, &err), KD_OK);
    if (kd_test_failed_now()) return;
    char path[1100];
    snprintf(path, sizeof path, "%s/big.h", kd_test_tmpdir());
    const kd_export_info info = {0};
    CHECK_EQ_INT(kd_export_c_qint8(path, &q, &in, "big", &info, NULL, &err), KD_OK);
    q.ops[0].bias[1] = INT32_MAX - 4 * 128 * 127 + 1; /* one short of room for 4 products */
    q.ops[0].w[4] = 0, q.ops[0].w[5] = 0, q.ops[0].w[6] = 0, q.ops[0].w[7] = 0;
    unlink(path);
    CHECK_EQ_INT(kd_export_c_qint8(path, &q, &in, "big", &info, NULL, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "channel 1: the sums could overflow int32");
    CHECK(access(path, F_OK) != 0);
    q.ops[0].bias[1] -= 1; /* exactly room for them */
    CHECK_EQ_INT(kd_export_c_qint8(path, &q, &in, "big", &info, NULL, &err), KD_OK);
    kd_qmodel_free(&q), kd_model_free(&m);
}
