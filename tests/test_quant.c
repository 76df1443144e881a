/* test_quant.c - post-training quantization (kd_quant.h): a graph with every foldable pattern
 * (conv + batch norm + ReLU, grouped and depthwise conv, residual add, concat, pools, a table
 * activation, dense) gives logits within a few quantization steps of the float model and the
 * same top-1 on nearly every sample; the folds are checked by their effect (a wrong fold
 * moves the logits by far more); layers without an integer form are refused by name. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
