/* test_quant_fmnist.c - post-training quantization on real data: a 784-64-10 MLP trained by
 * `distill train` on a Fashion-MNIST subset, quantized with 1,000 training images for the
 * ranges, keeps its test accuracy within a point and its top-1 on nearly every image. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_data.h"
#include "kd_eval.h"
#include "kd_quant.h"
#include "kd_test.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"

static kd_status open_idx(kd_dataset **ds, const char *images, const char *labels,
                          const kd_preprocess *pp, kd_err *err) {
    kd_data_source src;
    kd_data_source_defaults(&src);
    src.format = KD_FMT_IDX;
    snprintf(src.path, sizeof src.path, "%s", images);
    snprintf(src.labels_path, sizeof src.labels_path, "%s", labels);
    return kd_dataset_open(ds, &src, pp, err);
}

KD_TEST(quant_mlp_keeps_its_fashion_mnist_accuracy) {
    if (access(FMNIST "/train-images-idx3-ubyte.gz", R_OK) || access("configs/tiny.json", R_OK)) {
        kd_test_skip("%s or configs/tiny.json is absent", FMNIST);
        return;
    }
    char cmd[2048], out[8192], ckpt[1024];
    const char *dir = kd_test_tmpdir();
    snprintf(cmd, sizeof cmd, "%s train --config configs/tiny.json --out %s/run --quiet",
             kd_test_distill(), dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    snprintf(ckpt, sizeof ckpt, "%s/run/best.safetensors", dir);
    kd_model m = {0};
    kd_preprocess pp;
    int has_pp = 0;
    kd_err err = {0};
    kd_dataset *train = NULL, *test = NULL;
    CHECK_EQ_INT(kd_eval_load_model(ckpt, NULL, NULL, &m, &pp, &has_pp, NULL, NULL, &err), KD_OK);
    CHECK(has_pp);
    if (kd_test_failed_now()) return;
    CHECK_EQ_INT(open_idx(&train, FMNIST "/train-images-idx3-ubyte.gz",
                          FMNIST "/train-labels-idx1-ubyte.gz", &pp, &err), KD_OK);
    CHECK_EQ_INT(open_idx(&test, FMNIST "/t10k-images-idx3-ubyte.gz",
                          FMNIST "/t10k-labels-idx1-ubyte.gz", &pp, &err), KD_OK);
    if (kd_test_failed_now()) return;
    enum { CAL = 1000, N = 10000, D = 784, B = 250 };
    float *x = malloc((size_t)N * D * sizeof *x), *lq = malloc(B * 10 * sizeof *lq);
    int32_t *y = malloc(N * sizeof *y);
    int8_t q8[B * 10];
    size_t *idx = malloc(N * sizeof *idx);
    for (size_t i = 0; i < N; i++) idx[i] = i;
    CHECK_EQ_INT(kd_dataset_get(train, idx, CAL, x, NULL, NULL, &err), KD_OK);
    kd_qmodel q;
    CHECK_EQ_INT(kd_quant_build(&m, x, CAL, &q, &err), KD_OK);
    CHECK_EQ_INT(kd_dataset_get(test, idx, N, x, y, NULL, &err), KD_OK);
    if (kd_test_failed_now()) return;
    int right_f = 0, right_q = 0, agree = 0;
    kd_ctx ctx = {0};
    for (size_t off = 0; off < N; off += B) {
        const float *lf = kd_model_forward(&m, x + off * D, B, &ctx);
        CHECK_EQ_INT(kd_qmodel_forward(&q, x + off * D, B, q8, lq, &err), KD_OK);
        for (size_t i = 0; i < B; i++) {
            size_t af = 0, aq = 0;
            for (size_t k = 1; k < 10; k++) {
                if (lf[i * 10 + k] > lf[i * 10 + af]) af = k;
                if (lq[i * 10 + k] > lq[i * 10 + aq]) aq = k;
            }
            right_f += (int32_t)af == y[off + i], right_q += (int32_t)aq == y[off + i];
            agree += af == aq;
        }
    }
    printf("    test accuracy f32 %.2f%%, qint8 %.2f%% (%d images, ranges from %d training "
           "images); top-1 equal on %.2f%%\n", 100.0 * right_f / N, 100.0 * right_q / N, N, CAL,
           100.0 * agree / N);
    CHECK(right_f >= N * 68 / 100);
    CHECK(right_q >= right_f - N / 100); /* within one point */
    CHECK(agree >= N * 97 / 100);
    /* The command: the same quantization into a file, its accuracy printed beside the float
     * model's; the file is refused by what takes float checkpoints (a re-export), with the
     * reason (eval and predict run it: test_quant_eval.c). */
    snprintf(cmd, sizeof cmd, "%s export %s %s/q.safetensors --dtype qint8 --calibrate 1000 "
             "--config configs/tiny.json", kd_test_distill(), ckpt, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "2 integer ops, ranges from 1000 calibration samples; 50816 int8 weight");
    const char *acc = strstr(out, "float ");
    const char *acc_q = acc ? strstr(acc, "qint8 ") : NULL;
    double f32 = acc ? atof(acc + 6) : 0, int8 = acc_q ? atof(acc_q + 6) : 0;
    CHECK(f32 > 68 && int8 > f32 - 1.0);
    snprintf(cmd, sizeof cmd, "%s export %s/q.safetensors %s/q.f16.safetensors --dtype f16",
             kd_test_distill(), dir, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);
    CHECK_CONTAINS(out, "q.safetensors is a full-integer (qint8) model");
    snprintf(cmd, sizeof cmd, "%s info %s/q.safetensors", kd_test_distill(), dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "qint8 full-integer model: 2 ops, 3 values, 50816 int8 weights");
    CHECK_CONTAINS(out, "dense   layer 0 -> value 1 (64)");
    snprintf(cmd, sizeof cmd, "%s export %s %s/q2.safetensors --dtype qint8 --config "
             "configs/tiny.json", kd_test_distill(), ckpt, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);
    CHECK_CONTAINS(out, "--dtype qint8 needs --calibrate N");
    snprintf(cmd, sizeof cmd, "%s export %s %s/q2.onnx --format onnx --dtype qint8 --calibrate 9 "
             "--config configs/tiny.json", kd_test_distill(), ckpt, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0); /* ONNX Runtime's side: test_qdq.c */
    CHECK_CONTAINS(out, "q2.onnx: ONNX QDQ model");
    snprintf(cmd, sizeof cmd, "%s export %s %s/tiny_q.h --format c --dtype qint8 --calibrate 500 "
             "--config configs/tiny.json", kd_test_distill(), ckpt, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "tiny_q.h: C header, 848 bytes of arena"); /* 784 in + 64 hidden */
    snprintf(cmd, sizeof cmd, "%s export %s %s/q3.safetensors --dtype int8 --calibrate 9",
             kd_test_distill(), ckpt, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);
    CHECK_CONTAINS(out, "--calibrate is for --dtype qint8");
    kd_qmodel_free(&q), kd_model_free(&m), kd_preprocess_free(&pp);
    kd_dataset_close(train), kd_dataset_close(test);
    free(x), free(lq), free(y), free(idx);
}
