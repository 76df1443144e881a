/* test_quant.c - post-training quantization (kd_quant.h): a graph with every foldable pattern
 * (conv + batch norm + ReLU, grouped and depthwise conv, residual add, concat, pools, a table
 * activation, dense) gives logits within a few quantization steps of the float model and the
 * same top-1 on nearly every sample; the folds are checked by their effect (a wrong fold
 * moves the logits by far more); layers without an integer form are refused by name. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_export.h"
#include "kd_nn.h"
#include "kd_quant.h"
#include "kd_rng.h"
#include "kd_test.h"

static const char *graph_json =
    "[{\"type\": \"conv2d\", \"name\": \"stem\", \"channels\": 8, \"kernel\": 3, \"padding\": 1, "
    "\"bias\": false},"
    " {\"type\": \"batchnorm\", \"name\": \"stem_bn\"}, {\"type\": \"relu\", \"name\": \"stem_relu\"},"
    " {\"type\": \"conv2d\", \"name\": \"dw\", \"channels\": 8, \"kernel\": 3, \"padding\": 1, "
    "\"groups\": 8},"
    " {\"type\": \"batchnorm\"}, {\"type\": \"relu6\"},"
    " {\"type\": \"conv2d\", \"name\": \"pw\", \"channels\": 8, \"kernel\": 1, \"groups\": 2},"
    " {\"type\": \"add\", \"name\": \"res\", \"from\": [\"pw\", \"stem_relu\"]},"
    " {\"type\": \"relu\", \"name\": \"res_relu\"},"
    " {\"type\": \"maxpool2d\", \"kernel\": 2, \"name\": \"pool\"},"
    " {\"type\": \"avgpool2d\", \"kernel\": 3, \"stride\": 1, \"padding\": 1, \"name\": \"avg\"},"
    " {\"type\": \"concat\", \"name\": \"cat\", \"from\": [\"pool\", \"avg\"]},"
    " {\"type\": \"hardswish\"},"
    " {\"type\": \"global_avgpool\"},"
    " {\"type\": \"dense\", \"units\": 12}, {\"type\": \"tanh\"}, {\"type\": \"dropout\", \"p\": 0.1},"
    " {\"type\": \"dense\", \"units\": 5}]";

/* Random weights, and batch-norm statistics far from the identity, so a fold that is wrong
 * or missing shows in the logits. */
static void init_model(kd_model *m, uint64_t seed) {
    kd_rng r;
    kd_rng_seed(&r, seed);
    kd_model_init_weights(m, &r, KD_INIT_HE);
    for (size_t t = 0; t < m->n_tensors; t++) {
        kd_tensor *T = &m->tensors[t];
        if (strcmp(kd_model_layer_type(m, T->layer), "batchnorm") || !T->data) continue;
        for (size_t k = 0; k < T->numel; k++) {
            float u = kd_rng_uniform(&r);
            if (strstr(T->name, "running_var")) T->data[k] = 0.3f + 2 * u;
            else if (strstr(T->name, "running_mean")) T->data[k] = u - 0.5f;
            else if (strstr(T->name, "weight")) T->data[k] = 0.5f + u;
            else T->data[k] = 0.4f * (u - 0.5f);
        }
    }
}

KD_TEST(quant_graph_logits_follow_the_float_model) {
    kd_shape in = {3, {3, 8, 8}};
    kd_model m = {0}, f = {0};
    kd_err err = {0};
    CHECK_EQ_INT(kd_model_init(&m, &in, graph_json, 0, &err), KD_OK);
    CHECK_EQ_INT(kd_model_init(&f, &in, graph_json, 0, &err), KD_OK);
    if (kd_test_failed_now()) return;
    init_model(&m, 1), init_model(&f, 1);
    enum { N = 400, CAL = 200 };
    size_t d = 3 * 8 * 8;
    float *x = malloc(N * d * sizeof *x), *lq = malloc(N * 5 * sizeof *lq);
    int8_t *q8 = malloc(N * 5);
    kd_rng r;
    kd_rng_seed(&r, 2);
    for (size_t i = 0; i < N * d; i++) x[i] = 2 * kd_rng_uniform(&r) - 0.7f;
    kd_qmodel q;
    CHECK_EQ_INT(kd_quant_build(&m, x, CAL, &q, &err), KD_OK);
    if (kd_test_failed_now()) return;
    CHECK_EQ_INT(kd_qmodel_forward(&q, x, N, q8, lq, &err), KD_OK);
    CHECK_EQ_INT(kd_model_reserve(&f, N, &err), KD_OK);
    kd_ctx ctx = {0};
    const float *lf = kd_model_forward(&f, x, N, &ctx);
    double max_err = 0, lo = 1e30, hi = -1e30;
    int agree = 0;
    for (size_t i = 0; i < N; i++) {
        size_t af = 0, aq = 0;
        for (size_t k = 0; k < 5; k++) {
            max_err = fmax(max_err, fabs(lq[i * 5 + k] - lf[i * 5 + k]));
            lo = fmin(lo, lf[i * 5 + k]), hi = fmax(hi, lf[i * 5 + k]);
            if (lf[i * 5 + k] > lf[i * 5 + af]) af = k;
            if (lq[i * 5 + k] > lq[i * 5 + aq]) aq = k;
        }
        agree += af == aq;
    }
    /* Every op rounds once (about half a step of its own grid); ten ops deep, the logits stay
     * within a few steps of the output grid. */
    double step = q.values[q.output].scale;
    printf("    float logits in [%.3f, %.3f]; integer within %.4f (%.1f output steps); top-1 "
           "agrees on %d of %d\n", lo, hi, max_err, max_err / step, agree, N);
    CHECK(max_err < 6 * step);
    CHECK(agree >= N * 9 / 10);
    /* The folds leave no batch norm or ReLU op of their own: conv+bn+relu, dw+bn+relu6, pw,
     * add+relu, maxpool, avgpool, concat, table, global average, dense, table, dense. */
    CHECK_EQ_INT(q.n_ops, 12);
    kd_qmodel_free(&q), kd_model_free(&m), kd_model_free(&f);
    free(x), free(lq), free(q8);
}

KD_TEST(quant_refuses_layers_without_an_integer_form) {
    kd_shape in = {1, {6}};
    const char *ln = "[{\"type\": \"dense\", \"units\": 4}, {\"type\": \"layernorm\", \"name\": "
                     "\"norm\"}, {\"type\": \"dense\", \"units\": 2}]";
    const char *bn = "[{\"type\": \"batchnorm\"}, {\"type\": \"dense\", \"units\": 2}]";
    float x[6 * 4] = {0.5f, -1, 2, 0, 1, 3};
    const char *cases[2][2] = {{ln, "layer 1 (layernorm, \"norm\") has no integer form"},
                               {bn, "layer 0 (batchnorm) has no integer form"}};
    for (int c = 0; c < 2; c++) {
        kd_model m = {0};
        kd_err err = {0};
        kd_qmodel q;
        CHECK_EQ_INT(kd_model_init(&m, &in, cases[c][0], 0, &err), KD_OK);
        kd_rng r;
        kd_rng_seed(&r, 1);
        kd_model_init_weights(&m, &r, KD_INIT_HE);
        CHECK_EQ_INT(kd_quant_build(&m, x, 4, &q, &err), KD_EUSAGE);
        CHECK_CONTAINS(err.msg, cases[c][1]);
        kd_model_free(&m);
    }
}

KD_TEST(quant_dense_relu_chain_within_two_output_steps) {
    /* dense -> relu -> dense with hand-set weights: the input, the hidden value and the logits
     * are each rounded once, so the logits land within two steps of the output grid. */
    kd_shape in = {1, {4}};
    kd_model m = {0};
    kd_err err = {0};
    CHECK_EQ_INT(kd_model_init(&m, &in, "[{\"type\": \"dense\", \"units\": 3}, {\"type\": "
                 "\"relu\"}, {\"type\": \"dense\", \"units\": 2}]", 0, &err), KD_OK);
    if (kd_test_failed_now()) return;
    float *w0 = kd_model_tensor(&m, "0.weight")->data, *b0 = kd_model_tensor(&m, "0.bias")->data;
    float *w2 = kd_model_tensor(&m, "2.weight")->data, *b2 = kd_model_tensor(&m, "2.bias")->data;
    for (int i = 0; i < 12; i++) w0[i] = (float)((i * 5) % 9 - 4) / 8;
    for (int i = 0; i < 6; i++) w2[i] = (float)((i * 7) % 5 - 2) / 4;
    b0[0] = 0.25f, b0[1] = -0.5f, b0[2] = 0, b2[0] = 0.5f, b2[1] = -0.25f;
    float x[8 * 4];
    for (int i = 0; i < 32; i++) x[i] = (float)((i * 3) % 7) / 2;
    kd_qmodel q;
    float lq[8 * 2];
    int8_t q8[8 * 2];
    CHECK_EQ_INT(kd_quant_build(&m, x, 8, &q, &err), KD_OK);
    if (kd_test_failed_now()) return;
    CHECK_EQ_INT(kd_qmodel_forward(&q, x, 8, q8, lq, &err), KD_OK);
    kd_ctx ctx = {0};
    const float *lf = kd_model_forward(&m, x, 8, &ctx);
    for (int i = 0; i < 16; i++) CHECK_CLOSE(lq[i], lf[i], 2 * q.values[q.output].scale, 0);
    /* The ReLU was folded: one op per dense layer, the first clamped at its zero point. */
    CHECK_EQ_INT(q.n_ops, 2);
    CHECK_EQ_INT(q.ops[0].o.lo, q.values[q.ops[0].out].zp);
    kd_qmodel_free(&q), kd_model_free(&m);
}

/* The graph above, quantized with 64 random samples x (caller frees both). */
static int quantized_graph(kd_qmodel *q, float **x) {
    kd_shape in = {3, {3, 8, 8}};
    kd_model m = {0};
    kd_err err = {0};
    *x = malloc(64 * 192 * sizeof **x);
    kd_rng r;
    kd_rng_seed(&r, 4);
    for (size_t i = 0; i < 64 * 192; i++) (*x)[i] = 2 * kd_rng_uniform(&r) - 0.7f;
    int ok = kd_model_init(&m, &in, graph_json, 0, &err) == KD_OK;
    if (ok) init_model(&m, 1);
    ok = ok && kd_quant_build(&m, *x, 16, q, &err) == KD_OK;
    if (!ok) kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
    kd_model_free(&m);
    return ok;
}

/* Writes q to a fresh folder's `name` (its path into path, 1024 bytes) and reads it back into
 * *back: the read's status, its message in err. */
static kd_status write_read(const kd_qmodel *q, const char *name, kd_qmodel *back, kd_err *err,
                            char *path) {
    snprintf(path, 1024, "%s/%s", kd_test_tmpdir(), name);
    const char *k[] = {"classes"}, *v[] = {"[\"a\",\"b\",\"c\",\"d\",\"e\"]"};
    kd_status st = kd_qmodel_write(path, q, k, v, 1, err);
    kd_st_file f = {0};
    if (!st) st = kd_st_read(&f, path, err);
    if (!st) st = kd_qmodel_read(&f, back, err);
    kd_st_free(&f);
    return st;
}

KD_TEST(quant_file_round_trip_gives_the_same_bytes) {
    kd_qmodel q, back;
    float *x;
    kd_err err = {0};
    if (!quantized_graph(&q, &x)) return;
    char path[1024];
    CHECK_EQ_INT(write_read(&q, "g.safetensors", &back, &err, path), KD_OK);
    if (kd_test_failed_now()) return;
    int8_t a[64 * 5], b[64 * 5];
    CHECK_EQ_INT(kd_qmodel_forward(&q, x, 64, a, NULL, &err), KD_OK);
    CHECK_EQ_INT(kd_qmodel_forward(&back, x, 64, b, NULL, &err), KD_OK);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK_EQ_INT(back.n_ops, q.n_ops);
    CHECK_EQ_INT(back.n_classes, 5);
    kd_qmodel_free(&q), kd_qmodel_free(&back), free(x);
}

typedef struct {
    const char *want;
    void (*spoil)(kd_qmodel *q);
    const char *also; /* a second part of the message, or NULL */
} bad_case;
/* Each spoils one number of a quantized model before it is written. */
#define SPOIL(fn, ...) static void fn(kd_qmodel *q) { __VA_ARGS__; }
SPOIL(scale0, q->values[2].scale = 0)
SPOIL(scale_nan, q->values[2].scale = NAN)
SPOIL(scale_neg, q->values[1].scale = -0.5f)
SPOIL(zp_high, q->values[3].zp = 128)
SPOIL(zp_low, q->values[4].zp = -129)
SPOIL(shift_high, q->ops[0].mult[1].shift = 31)
SPOIL(shift_low, q->ops[2].mult[0].shift = -32)
SPOIL(mult_low, q->ops[1].mult[0].mult = (1 << 30) - 1)
SPOIL(mult_neg, q->ops[1].mult[2].mult = -(1 << 30))
SPOIL(read_ahead, q->ops[2].in[0] = q->ops[5].out)
SPOIL(weight_min, q->ops[0].w[3] = -128)
SPOIL(geometry, q->ops[1].g.OH = 7)
SPOIL(clamp_empty, q->ops[0].o.lo = 100; q->ops[0].o.hi = 99)
SPOIL(add_mul, q->ops[3].m = (kd_qmul){5, 0})

/* Each refused by the reader (KD_EINPUT), and by the real binary's `distill info` with exit 3
 * and the same message, which names the tensor holding the bad number where one does. */
KD_TEST(quant_file_refuses_bad_numbers_by_op) {
    static const bad_case cases[] = {
        {"tensor qint8.scale, value 2: scale 0 (expected a finite number > 0)", scale0, NULL},
        {"tensor qint8.scale, value 2: scale nan", scale_nan, NULL},
        {"tensor qint8.scale, value 1: scale -0.5", scale_neg, NULL},
        {"tensor qint8.zero_point, value 3: zero point 128 outside [-128, 127]", zp_high, NULL},
        {"tensor qint8.zero_point, value 4: zero point -129 outside [-128, 127]", zp_low, NULL},
        {"op 0 (layer stem): tensors stem.multiplier and stem.shift, channel 1: multiplier ",
         shift_high, ", shift 31 outside [2^30, 2^31) x 2^[-31, 30]"},
        {"op 2 (layer pw): tensors pw.multiplier and pw.shift, channel 0: multiplier ",
         shift_low, ", shift -32 outside"},
        {"op 1 (layer dw): tensors dw.multiplier and dw.shift, channel 0: multiplier "
         "1073741823, shift", mult_low, NULL},
        {"op 1 (layer dw): tensors dw.multiplier and dw.shift, channel 2: multiplier "
         "-1073741824, shift", mult_neg, NULL},
        {"op 2 (layer pw): reads value", read_ahead, NULL},
        {"op 0 (layer stem): weight 3 is -128", weight_min, NULL},
        {"op 1 (layer dw): inconsistent geometry", geometry, NULL},
        {"op 0 (layer stem): clamp [100, 99] is empty", clamp_empty, NULL},
        {"op 3 (layer res): m: multiplier 5", add_mul, NULL},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        kd_qmodel q, back;
        float *x;
        kd_err err = {0};
        if (!quantized_graph(&q, &x)) return;
        cases[c].spoil(&q);
        char path[1024], cmd[2200], out[4096];
        CHECK_EQ_INT(write_read(&q, "bad.safetensors", &back, &err, path), KD_EINPUT);
        CHECK_CONTAINS(err.msg, cases[c].want);
        if (cases[c].also) CHECK_CONTAINS(err.msg, cases[c].also);
        CHECK_CONTAINS(err.msg, "bad.safetensors: qint8");
        snprintf(cmd, sizeof cmd, "%s info '%s'", kd_test_distill(), path);
        CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
        CHECK_CONTAINS(out, cases[c].want);
        if (cases[c].also) CHECK_CONTAINS(out, cases[c].also);
        kd_qmodel_free(&q), free(x);
    }
}

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(p, 1, n, f) == n;
    if (f && fclose(f)) ok = 0;
    return ok;
}

KD_TEST(quant_c_header_gives_the_reference_bytes) {
    kd_qmodel q;
    float *x;
    kd_err err = {0};
    if (!quantized_graph(&q, &x)) return;
    enum { N = 64, D = 192, C = 5 };
    const char *dir = kd_test_tmpdir();
    char path[1024], cmd[4096], out[4096];
    snprintf(path, sizeof path, "%s/gq.h", dir);
    kd_shape in = {3, {3, 8, 8}};
    const kd_export_info info = {0};
    size_t arena = 0;
    CHECK_EQ_INT(kd_export_c_qint8(path, &q, &in, "gq", &info, &arena, &err), KD_OK);
    /* The reference: int8 logits from the int8 inputs, and the dequantized ones from raw. */
    int8_t xq[N * D], want_q[N * C], got_q[N * C];
    float want[N * C], got[N * C];
    for (size_t i = 0; i < N * D; i++) xq[i] = kd_quant_value(x[i], &q.values[0]);
    CHECK_EQ_INT(kd_qmodel_forward(&q, x, N, want_q, want, &err), KD_OK);
    char f_xq[1100], f_raw[1100], f_lq[1100], f_l[1100];
    snprintf(f_xq, sizeof f_xq, "%s/xq", dir), snprintf(f_raw, sizeof f_raw, "%s/raw", dir);
    snprintf(f_lq, sizeof f_lq, "%s/lq", dir), snprintf(f_l, sizeof f_l, "%s/l", dir);
    CHECK(write_bytes(f_xq, xq, sizeof xq) && write_bytes(f_raw, x, N * D * sizeof *x));
    char repo[1024];
    CHECK(getcwd(repo, sizeof repo) != NULL);
    /* Under ASan + UBSan: the generated loops must stay inside every buffer. */
    snprintf(cmd, sizeof cmd, "cd %s && cc -std=c99 -pedantic -Wall -Wextra -Werror -O1 -g "
             "-fsanitize=address,undefined -fno-sanitize-recover=all -I. -DMODEL=gq "
             "-DMODEL_UPPER=GQ '-DMODEL_HEADER=\"gq.h\"' -DGQ_IMPLEMENTATION "
             "'%s/tests/export/qint8_harness.c' -lm -o qh && ./qh %d xq lq raw l 2>&1", dir,
             repo, N);
    if (kd_test_run(cmd, out, sizeof out) != 0) kd_test_fail(__FILE__, __LINE__, "%s", out);
    char *text = NULL, *text2 = NULL;
    size_t n1 = 0, n2 = 0;
    CHECK_EQ_INT(kd_read_file(f_lq, 1 << 20, &text, &n1, &err), KD_OK);
    CHECK_EQ_INT(kd_read_file(f_l, 1 << 20, &text2, &n2, &err), KD_OK);
    if (text && text2 && n1 == sizeof got_q && n2 == sizeof got) {
        memcpy(got_q, text, n1), memcpy(got, text2, n2);
        CHECK(memcmp(got_q, want_q, sizeof got_q) == 0);
        CHECK(memcmp(got, want, sizeof got) == 0);
    } else {
        CHECK(0);
    }
    /* The arena holds the values live together (at most three [8, 8, 8] ones in the residual
     * block, 1,536 bytes), placed by first fit, not every value. */
    size_t sum = 0;
    for (size_t v = 0; v < q.n_values; v++) sum += q.values[v].numel;
    printf("    arena %zu bytes (every value: %zu)\n", arena, sum);
    CHECK(arena >= 1536 && arena <= sum * 6 / 10);
    free(text), free(text2), kd_qmodel_free(&q), free(x);
}
