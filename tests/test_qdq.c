/* test_qdq.c - `distill export --dtype qint8 --format onnx`, the QDQ model: onnx.checker
 * (python3-onnx) accepts it, and ONNX Runtime (npm onnxruntime-node), which requantizes in
 * float with round-half-to-even, agrees with distill's integer reference on the 10,000
 * Fashion-MNIST test images: the same top-1 on >= 99.5% and logits within one quantization
 * step of the output on >= 99%, every top-1 difference a near-tie of the reference (its two
 * logits within a step), and its optimized graph holds the fused integer kernels (QGemm,
 * QLinearConv), for the compact MLP student and the small CNN student (each
 * trained briefly from its -scratch config: a few thousand images, one epoch). A missing tool
 * skips on a developer's machine and fails when CI=true. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "export_fixture.h"
#include "kd_export.h"
#include "kd_rng.h"
#include "kd_quant.h"
#include "kd_test.h"

#if defined(__SANITIZE_ADDRESS__)
#define N_TEST 2000  /* under ASan the paths, not the count: the release suite checks all 10,000 */
#else
#define N_TEST 10000
#endif

static void set_number(cJSON *o, const char *key, double v) {
    cJSON_DeleteItemFromObject(o, key);
    cJSON_AddNumberToObject(o, key, v);
}

/* The shipped config with a short training (train subset, one epoch) and a 1,000-image test
 * subset for export's own accuracy pass, written to dir/config.json. */
static int short_config(const char *shipped, const char *dir, size_t train_n) {
    FILE *f = fopen(shipped, "rb");
    static char text[1 << 16];
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[n] = '\0';
    cJSON *c = cJSON_Parse(text);
    cJSON *data = cJSON_GetObjectItem(c, "data"), *train = cJSON_GetObjectItem(c, "train");
    if (!data || !train) {
        kd_test_fail(__FILE__, __LINE__, "%s: not a config with data and train", shipped);
        cJSON_Delete(c);
        return 0;
    }
    set_number(cJSON_GetObjectItem(data, "train"), "subset", (double)train_n);
    set_number(data, "validation_split", 200);
    set_number(cJSON_GetObjectItem(data, "test"), "subset", 1000);
    set_number(train, "epochs", 1);
    char *s = cJSON_Print(c), path[1024];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int ok = s && kd_test_write_file(path, s, strlen(s)) == 0;
    free(s);
    cJSON_Delete(c);
    if (!ok) kd_test_fail(__FILE__, __LINE__, "cannot write %s", path);
    return ok;
}

static size_t argmax(const float *z, size_t C) {
    size_t a = 0;
    for (size_t c = 1; c < C; c++) a = z[c] > z[a] ? c : a;
    return a;
}

/* Trains the shipped config briefly, exports its qint8 model as safetensors and as ONNX, checks
 * the ONNX file, runs it under ONNX Runtime and compares with the reference. */
static void qdq_agrees(const char *shipped, size_t train_n, const char *ops, const char *fused) {
    if (!kd_test_have_export_tools(1)) return;
    const char *dir = kd_test_tmpdir();
    static char cmd[4096], check[1 << 18];
    const char *d = kd_test_distill();
    if (!short_config(shipped, dir, train_n)) return;
    snprintf(cmd, sizeof cmd, "%s train --config %s/config.json --out %s/run --quiet && "
             "%s export %s/run/best.safetensors %s/q.safetensors --dtype qint8 --calibrate 500 "
             "--config %s/config.json && "
             "%s export %s/run/best.safetensors %s/q.onnx --format onnx --dtype qint8 "
             "--calibrate 500 --config %s/config.json",
             d, dir, dir, d, dir, dir, dir, d, dir, dir, dir);
    if (!kd_test_run_ok(cmd)) return;
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/export/onnx_check.py '%s/q.onnx'", dir);
    if (kd_test_run(cmd, check, sizeof check) != 0) {
        kd_test_fail(__FILE__, __LINE__, "onnx.checker rejects the QDQ file:\n%s", check);
        return;
    }
    CHECK_CONTAINS(check, "opset ai.onnx:13\n");
    CHECK_CONTAINS(check, "output logits ['N', 10]\n");
    CHECK_CONTAINS(check, ops);
    CHECK_CONTAINS(check, "initializers FLOAT INT32 INT8 UINT8\n");
    CHECK_CONTAINS(check, "meta dtype qint8\n");
    if (!kd_test_ort_run("'%s/q.onnx' %s --n %d --logits '%s/ort.f32' --optimized '%s/opt.onnx'",
                         dir, KD_TEST_T10K_IMAGES, N_TEST, dir, dir))
        return;
    /* ONNX Runtime fused the QDQ groups into its integer kernels. */
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c \"import onnx, sys; print(' '.join(sorted("
             "{n.op_type for n in onnx.load(sys.argv[1]).graph.node})))\" '%s/opt.onnx'", dir);
    if (kd_test_run(cmd, check, sizeof check) != 0) kd_test_fail(__FILE__, __LINE__, "%s", check);
    for (const char *op = fused; *op; op += strlen(op) + 1) CHECK_CONTAINS(check, op);
    char path[1024];
    size_t C = 0;
    double step = 0;
    snprintf(path, sizeof path, "%s/q.safetensors", dir);
    float *ref = kd_test_qint8_reference(path, N_TEST, NULL, &C, &step);
    snprintf(path, sizeof path, "%s/ort.f32", dir);
    float *ort = ref ? kd_test_read_floats(path, (size_t)N_TEST * C) : NULL;
    if (!ref || !ort) {
        free(ref);
        return;
    }
    size_t same_top1 = 0, within = 0, near_tie = 0;
    for (size_t i = 0; i < N_TEST; i++) {
        const size_t a = argmax(ref + i * C, C), b = argmax(ort + i * C, C);
        same_top1 += a == b;
        /* A differing top-1 where the reference's logits of both classes are within a step. */
        near_tie += a != b && ref[i * C + a] - ref[i * C + b] <= step * (1 + 1e-4);
        int close = 1;
        for (size_t c = 0; c < C; c++)
            close &= fabs((double)ort[i * C + c] - ref[i * C + c]) <= step * (1 + 1e-4);
        within += close;
    }
    printf("    ONNX Runtime vs distill's integer reference, %d test images: top-1 equal on "
           "%.2f%%, every logit within one step (%.4g) on %.2f%%; %zu of the %zu top-1 "
           "differences are near-ties (the reference's two logits within a step)\n", N_TEST,
           100.0 * same_top1 / N_TEST, step, 100.0 * within / N_TEST, near_tie,
           N_TEST - same_top1);
    CHECK(same_top1 * 1000 >= (size_t)N_TEST * 995);
    CHECK(within * 100 >= (size_t)N_TEST * 99);
    CHECK_EQ_INT(near_tie, N_TEST - same_top1); /* a real disagreement, not rounding */
    free(ref), free(ort);
}

KD_TEST(qdq_compact_student_onnx_runtime_agrees) {
    qdq_agrees("configs/fmnist-compact-scratch.json", 3000,
               "ops Add DequantizeLinear Gemm Identity Mul QuantizeLinear Softmax\n", "QGemm\0");
}

KD_TEST(qdq_cnn_small_student_onnx_runtime_agrees) {
    qdq_agrees("configs/fmnist-cnn-small-scratch.json", 4000,
               "ops Add Clip Conv DequantizeLinear Flatten Gemm Identity MaxPool Mul "
               "QuantizeLinear Softmax\n", "QLinearConv\0QGemm\0");
}

/* A graph with every op kind the QDQ export writes: conv + batch norm + ReLU, depthwise +
 * ReLU6, grouped 1x1, a residual add, max and average pools, concat, tables (hardswish, tanh:
 * Gather), global average pooling, dense; random weights and inputs, fed as already
 * preprocessed floats (a float32 IDX file). ONNX Runtime's logits track the reference's to a
 * few output steps (measured: within three steps on 96.6% of 1,000 inputs, top-1 equal on
 * 98.4%; floors 95% and 97%). */
static const char *every_op_json =
    "[{\"type\": \"conv2d\", \"name\": \"stem\", \"channels\": 8, \"kernel\": 3, \"padding\": 1, "
    "\"bias\": false},"
    " {\"type\": \"batchnorm\", \"name\": \"stem_bn\"}, {\"type\": \"relu\", \"name\": \"stem_relu\"},"
    " {\"type\": \"conv2d\", \"name\": \"dw\", \"channels\": 8, \"kernel\": 3, \"padding\": 1, "
    "\"groups\": 8},"
    " {\"type\": \"relu6\"},"
    " {\"type\": \"conv2d\", \"name\": \"pw\", \"channels\": 8, \"kernel\": 1, \"groups\": 2},"
    " {\"type\": \"add\", \"name\": \"res\", \"from\": [\"pw\", \"stem_relu\"]},"
    " {\"type\": \"maxpool2d\", \"kernel\": 2, \"name\": \"pool\"},"
    " {\"type\": \"avgpool2d\", \"kernel\": 3, \"stride\": 1, \"padding\": 1, \"name\": \"avg\"},"
    " {\"type\": \"concat\", \"name\": \"cat\", \"from\": [\"pool\", \"avg\"]},"
    " {\"type\": \"hardswish\"}, {\"type\": \"global_avgpool\"},"
    " {\"type\": \"dense\", \"units\": 12}, {\"type\": \"tanh\"}, {\"type\": \"dense\", \"units\": 5}]";

/* n samples x (n, 3, 8, 8) as a float32 IDX file (big-endian), the form ort_run.js reads. */
static int write_float_idx(const char *path, const float *x, size_t n) {
    FILE *f = fopen(path, "wb");
    const uint32_t dims[] = {(uint32_t)n, 3, 8, 8};
    int ok = f && fputc(0, f) != EOF && fputc(0, f) != EOF && fputc(0x0d, f) != EOF &&
             fputc(4, f) != EOF;
    for (int k = 0; ok && k < 4; k++)
        for (int b = 3; b >= 0; b--) ok = fputc((int)(dims[k] >> (8 * b)) & 0xff, f) != EOF;
    for (size_t i = 0; ok && i < n * 192; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        for (int b = 3; b >= 0; b--) ok = fputc((int)(u >> (8 * b)) & 0xff, f) != EOF;
    }
    if (f && fclose(f)) ok = 0;
    return ok;
}

KD_TEST(qdq_every_op_kind_onnx_runtime_agrees) {
    if (!kd_test_have_export_tools(1)) return;
    enum { N = 1000, CAL = 200, C = 5, D = 192 };
    const kd_shape in = {3, {3, 8, 8}};
    const char *dir = kd_test_tmpdir();
    static char cmd[4096], check[1 << 16];
    char path[1024], onnx[1024];
    kd_model m = {0};
    kd_qmodel q;
    kd_err err = {0};
    kd_rng r;
    memset(&q, 0, sizeof q);
    CHECK_EQ_INT(kd_model_init(&m, &in, every_op_json, 0, &err), KD_OK);
    if (kd_test_failed_now()) return;
    kd_rng_seed(&r, 3);
    kd_model_init_weights(&m, &r, KD_INIT_HE);
    float *x = malloc(N * D * sizeof *x), *ref = malloc(N * C * sizeof *ref), *ort = NULL;
    int8_t *q8 = malloc(N * C);
    for (size_t i = 0; i < (size_t)N * D; i++) x[i] = 2 * kd_rng_uniform(&r) - 0.7f;
    const kd_export_info info = {.n_classes = C};
    snprintf(onnx, sizeof onnx, "%s/g.onnx", dir);
    snprintf(path, sizeof path, "%s/x.idx", dir);
    CHECK_EQ_INT(kd_quant_build(&m, x, CAL, &q, &err), KD_OK);
    if (!kd_test_failed_now()) CHECK_EQ_INT(kd_export_onnx_qint8(onnx, &q, &in, &info, &err), KD_OK);
    if (!kd_test_failed_now()) CHECK_EQ_INT(kd_qmodel_forward(&q, x, N, q8, ref, &err), KD_OK);
    CHECK(write_float_idx(path, x, N));
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/export/onnx_check.py '%s'", onnx);
    if (!kd_test_failed_now() && kd_test_run(cmd, check, sizeof check) != 0)
        kd_test_fail(__FILE__, __LINE__, "onnx.checker rejects the QDQ file:\n%s", check);
    CHECK_CONTAINS(check, "ops Add AveragePool Cast Concat Conv DequantizeLinear Flatten "
                          "Gather Gemm Identity MaxPool QuantizeLinear Softmax\n");
    if (!kd_test_failed_now() &&
        kd_test_ort_run("'%s' '%s' --n %d --shape 3,8,8 --logits '%s/ort.f32'", onnx, path, N, dir)) {
        snprintf(path, sizeof path, "%s/ort.f32", dir);
        ort = kd_test_read_floats(path, N * C);
    }
    if (ort) {
        /* Each op alone agrees within a step, but ten ops deep a step of a wide value becomes
         * several of a narrower one downstream (an average pool's output scale is finer than
         * its input's; a table is steep in places), so the logits agree to a few steps. */
        const double step = q.values[q.output].scale;
        size_t same = 0, within1 = 0, within3 = 0;
        double worst = 0;
        for (size_t i = 0; i < N; i++) {
            double w = 0;
            for (size_t c = 0; c < C; c++) w = fmax(w, fabs((double)ort[i * C + c] - ref[i * C + c]));
            worst = fmax(worst, w);
            within1 += w <= step * (1 + 1e-4), within3 += w <= 3 * step * (1 + 1e-4);
            same += argmax(ref + i * C, C) == argmax(ort + i * C, C);
        }
        printf("    every op kind, %d random inputs: top-1 equal on %.1f%%, logits within one "
               "step on %.1f%%, within three on %.1f%%, at most %.1f steps apart\n", N,
               100.0 * same / N, 100.0 * within1 / N, 100.0 * within3 / N, worst / step);
        CHECK(within3 * 100 >= (size_t)N * 95);
        CHECK(same * 100 >= (size_t)N * 97);
    }
    kd_qmodel_free(&q), kd_model_free(&m);
    free(x), free(ref), free(ort), free(q8);
}
