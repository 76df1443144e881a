/* test_deploy.c - `distill export --format onnx|c`: the ONNX file passes onnx.checker (Debian's
 * python3-onnx) and ONNX Runtime (npm onnxruntime-node, tests/export/ort_install.sh) computes
 * distill's logits from raw Fashion-MNIST images; the C header compiles with -std=c99 -pedantic
 * -Werror (and once under ASan + UBSan), needs no malloc, free or printf, and computes the same
 * logits. f32 within 1e-4 absolute + 1e-4 relative; int8 against distill's own int8 export. A
 * missing tool skips on a developer's machine and fails when CI=true. */
#include <math.h>
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "export_fixture.h"
#include "kd_checkpoint.h"
#include "kd_eval.h"
#include "kd_test.h"
#include "../src/nn/layer_impl.h"

#define TOL 1e-4  /* absolute and relative, as the issue asks */

/* A seeded model saved as a checkpoint with Fashion-MNIST's classes and preprocessing; the
 * batch-norm running statistics get values other than 0 / 1 so that folding them matters. */
static int make_checkpoint(const char *path, const kd_shape *input, const char *layers, int flatten,
                           uint64_t seed) {
    static const char *names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle \"boot\"?"};
    kd_model m;
    kd_rng rng;
    kd_err err = {0};
    kd_preprocess pp = {.scale = 1.0f / 255.0f, .n_channels = 1, .mean = {0.286f}, .std = {0.353f},
                        .flatten = flatten};
    if (kd_model_init(&m, input, layers, 0, &err)) {
        kd_test_fail(__FILE__, __LINE__, "model: %s", err.msg);
        return -1;
    }
    kd_rng_seed(&rng, seed);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    for (size_t i = 0; i < m.n_tensors; i++) {
        kd_tensor *t = &m.tensors[i];
        int var = strstr(t->name, "running_var") != NULL, mean = strstr(t->name, "running_mean") != NULL;
        for (size_t k = 0; (var || mean) && k < t->numel; k++)
            t->data[k] = var ? 0.5f + 1.5f * kd_rng_uniform(&rng) : 0.5f * kd_rng_normal(&rng);
        if (t->kind == KD_TENSOR_PARAM && strstr(t->name, "bias"))
            for (size_t k = 0; k < t->numel; k++) t->data[k] = 0.1f * kd_rng_normal(&rng);
    }
    kd_ckpt_meta meta = {(char **)names, 10, &pp, NULL};
    kd_status st = kd_ckpt_save(path, &m, &meta, NULL, &err);
    if (st) kd_test_fail(__FILE__, __LINE__, "save: %s", err.msg);
    kd_model_free(&m);
    return st ? -1 : 0;
}

/* distill's own logits (n, classes) of checkpoint path on the first n test images, with the
 * preprocessing the checkpoint records; malloc'd, NULL on failure. */
static float *distill_logits(const char *path, size_t n, size_t *classes) {
    kd_model m;
    kd_preprocess pp;
    kd_eval_data d;
    kd_dataset *ds = NULL;
    kd_err err = {0};
    int has_pp = 0;
    float *z = NULL;
    kd_status st = kd_eval_data_from_idx(&d, KD_TEST_T10K_IMAGES, KD_TEST_T10K_LABELS, &err);
    if (!st) st = kd_ckpt_load(path, NULL, 0, 0, &m, &pp, &has_pp, NULL, NULL, &err);
    if (!st) st = kd_eval_data_open(&d, &pp, &ds, &err);
    if (!st && !(z = malloc(n * m.n_classes * sizeof *z))) st = KD_EIO;
    if (!st) st = kd_eval_forward_all(&m, ds, d.order, n, 100, z, NULL, NULL, &err);
    if (st) {
        kd_test_fail(__FILE__, __LINE__, "distill forward of %s: %s", path, err.msg);
        free(z);
        z = NULL;
    } else {
        *classes = m.n_classes;
        kd_model_free(&m);
    }
    kd_dataset_close(ds);
    kd_eval_data_free(&d);
    return z;
}

/* Checks got against want (n rows of C logits): within TOL when close, and always the same
 * top-1 on every row. */
static void compare(const char *what, const float *got, const float *want, size_t n, size_t C,
                    int close) {
    size_t differ = 0;
    for (size_t i = 0; i < n; i++)
        differ += kd_argmax(got + i * C, C) != kd_argmax(want + i * C, C);
    if (differ) kd_test_fail(__FILE__, __LINE__, "%s: top-1 differs on %zu of %zu images", what, differ, n);
    if (close) kd_check_floats(__FILE__, __LINE__, what, got, want, n * C, TOL, TOL);
}

/* Exports path to ONNX (dtype), checks it with onnx.checker and returns ONNX Runtime's logits
 * on the first n test images. */
static float *onnx_logits(const char *dir, const char *path, const char *dtype, const char *shape,
                          size_t n, size_t C) {
    /* the check prints the arch metadata: a graph's is tens of KiB */
    static char check[1 << 18];
    char cmd[4096], onnx[1024], out[1024];
    snprintf(onnx, sizeof onnx, "%s/model_%s.onnx", dir, dtype);
    snprintf(out, sizeof out, "%s/ort_%s.f32", dir, dtype);
    snprintf(cmd, sizeof cmd, "'%s' export '%s' '%s' --format onnx --dtype %s", kd_test_distill(),
             path, onnx, dtype);
    if (!kd_test_run_ok(cmd)) return NULL;
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/export/onnx_check.py '%s'", onnx);
    if (kd_test_run(cmd, check, sizeof check) != 0) {
        kd_test_fail(__FILE__, __LINE__, "onnx.checker rejects %s:\n%s", onnx, check);
        return NULL;
    }
    CHECK_CONTAINS(check, "ir 7\n");
    CHECK_CONTAINS(check, "opset ai.onnx:13\n");
    CHECK_CONTAINS(check, "output logits ['N', 10]\n");
    CHECK_CONTAINS(check, "output probabilities ['N', 10]\n");
    CHECK_CONTAINS(check, "meta classes [\"T-shirt/top\"");
    CHECK_CONTAINS(check, "meta preprocess {");
    CHECK_CONTAINS(check, "meta distill_version ");
    if (!kd_test_ort_run("'%s' %s --n %zu --shape %s --logits '%s'", onnx, KD_TEST_T10K_IMAGES, n,
                         shape, out))
        return NULL;
    (void)C;
    return kd_test_read_floats(out, n * C);
}

/* Exports path to a C header "m.h" (dtype), compiles the implementation alone with
 * -std=c99 -pedantic -Werror (checking nm -u), links the harness (sanitized when asked) and
 * returns its logits on the first n test images. */
static float *c_logits(const char *dir, const char *path, const char *dtype, size_t n, size_t C,
                       int sanitize) {
    char cmd[8192], out[1024], syms[4096], repo[1024];
    if (!getcwd(repo, sizeof repo)) return NULL;
    const char *cc = "cc -std=c99 -Wall -Wextra -Werror -pedantic";
    const char *san = sanitize ? " -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all" : " -O2";
    snprintf(out, sizeof out, "%s/c_%s.f32", dir, dtype);
    snprintf(cmd, sizeof cmd,
             "cd '%s' && '%s' export '%s' m.h --format c --dtype %s && "
             "printf '#define M_IMPLEMENTATION\\n#include \"m.h\"\\n' > impl.c && "
             "%s%s -c impl.c -o impl.o && "
             "%s%s -I. -DMODEL=m -DMODEL_UPPER=M '-DMODEL_HEADER=\"m.h\"' '%s/tests/export/c_harness.c' "
             "impl.o -lm -o harness && (test -f t10k.idx || gzip -dc " KD_TEST_T10K_IMAGES " > t10k.idx) && "
             "./harness t10k.idx %zu '%s'",
             dir, kd_test_distill(), path, dtype, cc, san, cc, san, repo, n, out);
    if (!kd_test_run_ok(cmd)) return NULL;
    /* Freestanding apart from <math.h>: no allocation and no stdio in the compiled header
     * (a sanitized object calls the sanitizer's runtime instead, so only the plain build). */
    if (sanitize) return kd_test_read_floats(out, n * C);
    snprintf(cmd, sizeof cmd, "nm -u '%s/impl.o'", dir);
    if (kd_test_run(cmd, syms, sizeof syms) != 0) kd_test_fail(__FILE__, __LINE__, "nm failed");
    if (strstr(syms, "malloc") || strstr(syms, "free") || strstr(syms, "printf") ||
        strstr(syms, "alloc") || strstr(syms, "puts"))
        kd_test_fail(__FILE__, __LINE__, "the header needs: %s", syms);
    return kd_test_read_floats(out, n * C);
}

/* The whole check for one network: checkpoint and distill's logits, ONNX and C exports
 * compared with them; with quantized, also the int8 (ONNX and C) and f16 (ONNX) exports, each
 * against distill running its own safetensors export in the same dtype. */
static void check_network(const kd_shape *input, const char *layers, int flatten, const char *shape,
                          size_t n, int quantized, int sanitize) {
    static const char *const dtypes[] = {"int8", "f16"};
    if (!kd_test_have_export_tools(1)) return;
    const char *dir = kd_test_tmpdir();
    char ck[1024], ckq[1024], cmd[4096], what[32];
    size_t C = 0, Cq = 0;
    snprintf(ck, sizeof ck, "%s/model.safetensors", dir);
    if (make_checkpoint(ck, input, layers, flatten, 7)) return;
    float *ref = distill_logits(ck, n, &C), *z;
    if (!ref) return;
    CHECK_EQ_INT(C, 10);
    if ((z = onnx_logits(dir, ck, "f32", shape, n, C))) compare("onnx f32", z, ref, n, C, 1);
    free(z);
    if ((z = c_logits(dir, ck, "f32", n, C, sanitize))) compare("c f32", z, ref, n, C, 1);
    free(z);
    for (size_t k = 0; quantized && k < sizeof dtypes / sizeof dtypes[0]; k++) {
        float *refq = NULL;
        snprintf(ckq, sizeof ckq, "%s/model_%s.safetensors", dir, dtypes[k]);
        snprintf(cmd, sizeof cmd, "'%s' export '%s' '%s' --dtype %s", kd_test_distill(), ck, ckq,
                 dtypes[k]);
        if (!kd_test_run_ok(cmd) || !(refq = distill_logits(ckq, n, &Cq))) break;
        /* The same weights run three ways: distill on the decoded values, ONNX Runtime through
         * DequantizeLinear / Cast, the C header with its per-row scale after the sum. */
        snprintf(what, sizeof what, "onnx %s", dtypes[k]);
        if ((z = onnx_logits(dir, ck, dtypes[k], shape, n, C))) compare(what, z, refq, n, C, 1);
        free(z);
        if (!strcmp(dtypes[k], "int8") && (z = c_logits(dir, ck, "int8", n, C, 0))) {
            compare("c int8", z, refq, n, C, 1);
            free(z);
        }
        free(refq);
    }
    free(ref);
}

KD_TEST(deploy_mlp_onnx_and_c_match_distill) {
    const kd_shape in = {1, {784}};
    check_network(&in, "[{\"type\":\"dense\",\"units\":32},{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.2},"
                       "{\"type\":\"dense\",\"units\":10}]", 1, "784", 1000, 1, 0);
}

KD_TEST(deploy_cnn_with_batchnorm_onnx_and_c_match_distill) {
    const kd_shape in = {3, {1, 28, 28}};
    check_network(&in,
                  "[{\"type\":\"conv2d\",\"channels\":8,\"kernel\":3,\"padding\":1,\"bias\":false},"
                  "{\"type\":\"batchnorm\"},{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"relu\"},"
                  "{\"type\":\"conv2d\",\"channels\":16,\"kernel\":3,\"padding\":1},{\"type\":\"batchnorm\"},"
                  "{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"relu\"},{\"type\":\"flatten\"},"
                  "{\"type\":\"dropout\",\"p\":0.3},{\"type\":\"dense\",\"units\":32},{\"type\":\"relu\"},"
                  "{\"type\":\"dense\",\"units\":10}]",
                  0, "1,28,28", 1000, 1, 0);
}

/* The model.layers of a config file, as JSON text (malloc'd), or NULL. */
static char *config_layers(const char *path) {
    FILE *f = fopen(path, "rb");
    char *text = NULL, *out = NULL;
    long n = -1;
    if (f && !fseek(f, 0, SEEK_END) && (n = ftell(f)) > 0 && !fseek(f, 0, SEEK_SET) &&
        (text = calloc(1, (size_t)n + 1)) && fread(text, 1, (size_t)n, f) == (size_t)n) {
        cJSON *root = cJSON_Parse(text);
        const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
        out = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(model, "layers"));
        cJSON_Delete(root);
    }
    if (f) fclose(f);
    free(text);
    if (!out) kd_test_fail(__FILE__, __LINE__, "cannot read model.layers of %s", path);
    return out;
}

/* The graph students this project ships (residual blocks; MobileNetV2's inverted residuals with
 * depthwise convolutions), f32 and int8, on 1,000 images. */
KD_TEST(deploy_graph_students_onnx_and_c_match_distill) {
    static const char *const configs[] = {"configs/fmnist-resnet-student.json",
                                          "configs/fmnist-mobilenetv2.json"};
    const kd_shape in = {3, {1, 28, 28}};
    for (size_t k = 0; k < sizeof configs / sizeof configs[0]; k++) {
        char *layers = config_layers(configs[k]);
        if (layers) check_network(&in, layers, 0, "1,28,28", 1000, 1, 0);
        free(layers);
    }
}

/* Every layer type distill has, in one network (strides, padding, non-square kernels, both
 * norms, every activation, a value read by three layers, a sum of three values, a concat), f32
 * only, on 200 images; its C header also runs under ASan +
 * UBSan. A layer type added later without export slots fails here first. */
static const char zoo_layers[] =
    "[{\"type\":\"conv2d\",\"channels\":4,\"kernel\":3,\"stride\":2,\"padding\":1,\"name\":\"stem\"},"
    "{\"type\":\"leaky_relu\",\"slope\":0.1},"
    "{\"type\":\"avgpool2d\",\"kernel\":3,\"stride\":1,\"padding\":1,\"name\":\"block.pool\"},"
    "{\"type\":\"add\",\"from\":[\"block.pool\",\"stem\",\"block.pool\"]},"
    "{\"type\":\"concat\",\"from\":[\"stem\",3]},"
    "{\"type\":\"batchnorm\",\"eps\":0.001},{\"type\":\"gelu\"},"
    "{\"type\":\"maxpool2d\",\"kernel\":[2,3],\"padding\":1},{\"type\":\"layernorm\"},"
    "{\"type\":\"tanh\"},{\"type\":\"affine\"},{\"type\":\"conv2d\",\"channels\":6,\"kernel\":[3,2]},{\"type\":\"sigmoid\"},"
    "{\"type\":\"relu6\"},{\"type\":\"hardswish\"},"
    "{\"type\":\"dropout\",\"p\":0.5},{\"type\":\"global_avgpool\"},"
    "{\"type\":\"dense\",\"units\":24,\"bias\":false},{\"type\":\"layernorm\",\"eps\":0.01},"
    "{\"type\":\"relu\"},{\"type\":\"batchnorm\"},{\"type\":\"dense\",\"units\":10},"
    "{\"type\":\"flatten\"}]";

KD_TEST(deploy_every_layer_type_onnx_and_c_match_distill) {
    char types[512];
    snprintf(types, sizeof types, "%s", kd_layer_type_list());
    for (char *t = strtok(types, ", "); t; t = strtok(NULL, ", ")) {
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"type\":\"%s\"", t);
        if (!strstr(zoo_layers, quoted))
            kd_test_fail(__FILE__, __LINE__, "layer type %s is missing from the export test", t);
    }
    const kd_shape in = {3, {1, 28, 28}};
    check_network(&in, zoo_layers, 0, "1,28,28", 200, 0, 1);
}

/* MobileNet's pieces: depthwise convolutions (3x3 stride 2, 5x5 without bias), grouped ones
 * (2 and 4 groups, one strided), relu6 and hardswish, in f32, int8 and f16. */
KD_TEST(deploy_grouped_depthwise_relu6_hardswish_onnx_and_c_match_distill) {
    const kd_shape in = {3, {1, 28, 28}};
    check_network(&in,
                  "[{\"type\":\"conv2d\",\"channels\":8,\"kernel\":3,\"padding\":1},"
                  "{\"type\":\"hardswish\"},"
                  "{\"type\":\"conv2d\",\"channels\":8,\"kernel\":3,\"stride\":2,\"padding\":1,"
                  "\"groups\":8},{\"type\":\"batchnorm\"},{\"type\":\"relu6\"},"
                  "{\"type\":\"conv2d\",\"channels\":16,\"kernel\":1,\"groups\":2},{\"type\":\"relu6\"},"
                  "{\"type\":\"conv2d\",\"channels\":16,\"kernel\":5,\"padding\":2,\"groups\":16,"
                  "\"bias\":false},{\"type\":\"hardswish\"},"
                  "{\"type\":\"conv2d\",\"channels\":12,\"kernel\":3,\"stride\":2,\"groups\":4},"
                  "{\"type\":\"global_avgpool\"},{\"type\":\"dense\",\"units\":10}]",
                  0, "1,28,28", 500, 1, 0);
}

/* What the files hold and every way the command line can be wrong: each refused with exit 2
 * (usage) / 3 (input) / 1 (I/O), a message naming the problem, and no output file. */
KD_TEST(deploy_files_and_cli_errors) {
    if (!kd_test_have_export_tools(0)) return;
    const char *dir = kd_test_tmpdir();
    const kd_shape in = {1, {784}};
    char ck[1024], cmd[4096], out[8192], path[1024];
    snprintf(ck, sizeof ck, "%s/mlp.safetensors", dir);
    if (make_checkpoint(ck, &in, "[{\"type\":\"dense\",\"units\":32},{\"type\":\"relu\"},"
                                 "{\"type\":\"dense\",\"units\":10}]", 1, 3))
        return;
    const char *D = kd_test_distill();
    static const struct {
        const char *args, *msg;
        int rc;
    } bad[] = {
        {"'%s' '%s/x.h' --format c --dtype f16", "a C header holds f32 or int8 weights, not f16", 2},
        {"'%s' '%s/x.h' --format c --name 9lives", "--name: expected a C identifier", 2},
        {"'%s' '%s/x.h' --format onnx --name net", "--name is for --format c", 2},
        {"'%s' '%s/x.h' --format onxx", "(did you mean onnx?)", 2},
        {"'%s' '%s/x.h' --format onnx --dtype int4", "--dtype: expected f32, f16, bf16 or int8", 2},
        {"'%s' '%s/x.h'", "--dtype is required", 2},
        {"'%s.missing' '%s/x.h' --format onnx", "mlp.safetensors.missing", 3},
        {"'%s' '%s/no/such/dir/x.h' --format c", "x.h", 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char args[2048];
        snprintf(args, sizeof args, bad[i].args, ck, dir);
        snprintf(cmd, sizeof cmd, "'%s' export %s", D, args);
        int rc = kd_test_run(cmd, out, sizeof out);
        if (rc != bad[i].rc) kd_test_fail(__FILE__, __LINE__, "%s: exit %d, expected %d: %s", args, rc, bad[i].rc, out);
        CHECK_CONTAINS(out, bad[i].msg);
    }
    snprintf(cmd, sizeof cmd, "ls '%s'", dir);
    kd_test_run(cmd, out, sizeof out);
    if (strstr(out, "x.h") || strstr(out, ".tmp.")) kd_test_fail(__FILE__, __LINE__, "left behind: %s", out);

    /* A non-finite weight cannot be spelled in C nor meant in ONNX: refused, naming it. */
    {
        kd_model m;
        kd_err err = {0};
        char bad_ck[1100];
        snprintf(bad_ck, sizeof bad_ck, "%s/nan.safetensors", dir);
        if (kd_ckpt_load(ck, NULL, 0, 0, &m, NULL, NULL, NULL, NULL, &err) == KD_OK) {
            kd_model_tensor(&m, "2.weight")->data[5] = NAN;
            CHECK(kd_ckpt_save(bad_ck, &m, NULL, NULL, &err) == KD_OK);
            kd_model_free(&m);
        }
        for (int f = 0; f < 2; f++) {
            snprintf(cmd, sizeof cmd, "'%s' export '%s' '%s/nan.out' --format %s", D, bad_ck, dir,
                     f ? "c" : "onnx");
            CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);
            CHECK_CONTAINS(out, f ? "l2_weight: value 5 is nan" : "2.weight: value 5 is nan");
        }
    }

    /* The C name: from the file name unless --name says otherwise; class names escaped. */
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' export mlp.safetensors 3d-model.h --format c && "
             "'%s' export mlp.safetensors other.h --format c --name Tiny && "
             "grep -h -e '^#define' -e '^void' -e '^int' -e 'class_names\\[' -e Parameters "
             "3d-model.h other.h",
             dir, D, D);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "#define M_3D_MODEL_INPUT_SIZE 784\n");
    CHECK_CONTAINS(out, "void m_3d_model_forward(const float *raw_input, float *logits, float *scratch);");
    CHECK_CONTAINS(out, "int tiny_predict(const float *raw_input, float *scratch);");
    CHECK_CONTAINS(out, "#define TINY_SCRATCH_FLOATS ");
    CHECK_CONTAINS(out, "\"Ankle \\\"boot\\\"\\?\"");
    CHECK_CONTAINS(out, "Parameters: 25450;");

    /* int8 ONNX: int8 initialisers decoded by DequantizeLinear, about 4x smaller than f32. */
    long long size[2] = {0, 0};
    for (int q = 0; q < 2; q++) {
        snprintf(path, sizeof path, "%s/m%d.onnx", dir, q);
        snprintf(cmd, sizeof cmd, "'%s' export '%s' '%s' --format onnx --dtype %s && "
                 "/usr/bin/python3 tests/export/onnx_check.py '%s' && stat -c 'size %%s' '%s'",
                 D, ck, path, q ? "int8" : "f32", path, path);
        CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
        CHECK_CONTAINS(out, "input input ['N', 784]\n");
        CHECK_CONTAINS(out, q ? "initializers FLOAT INT8\n" : "initializers FLOAT\n");
        CHECK_CONTAINS(out, q ? "DequantizeLinear" : "ops Add Gemm Identity Mul Relu Softmax\n");
        CHECK_CONTAINS(out, q ? "meta quantization int8 symmetric per output row" : "meta dtype f32");
        const char *sz = strstr(out, "size ");
        size[q] = sz ? atoll(sz + 5) : 0;
    }
    if (!(size[0] > 100000 && (double)size[0] / (double)size[1] > 3.5))
        kd_test_fail(__FILE__, __LINE__, "onnx f32 %lld bytes, int8 %lld bytes", size[0], size[1]);
}
