/* test_model.c - sequential models: state_dict names and layout, arch round trip, construction
 * errors, He/Xavier statistics, and a small MLP trained to 100% with bitwise-reproducible weights. */
#include <omp.h>
#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kd_gradcheck.h"
#include "kd_nn.h"
#include "kd_test.h"

static kd_status init_json(kd_model *m, const kd_shape *in, const char *json, int with_grads,
                           kd_err *err) {
    kd_status st = kd_model_init(m, in, json, with_grads, err);
    return st;
}

static const char *const mlp_json =
    "[{\"type\":\"dense\",\"units\":1200},{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":10}]";

KD_TEST(model_mlp_state_dict_names_shapes_count) {
    const kd_shape in = {1, {784}};
    kd_model m;
    kd_err err;
    if (init_json(&m, &in, mlp_json, 1, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    /* Sequential(Linear(784,1200), ReLU(), Linear(1200,10)).state_dict() */
    static const char *names[] = {"0.weight", "0.bias", "2.weight", "2.bias"};
    static const size_t shapes[][2] = {{1200, 784}, {1200, 0}, {10, 1200}, {10, 0}};
    CHECK_EQ_INT(m.n_tensors, 4);
    size_t off = 0;
    for (size_t i = 0; i < 4 && i < m.n_tensors; i++) {
        kd_tensor *t = &m.tensors[i];
        CHECK(strcmp(t->name, names[i]) == 0);
        CHECK(t->kind == KD_TENSOR_PARAM);
        CHECK_EQ_INT(t->shape.rank, shapes[i][1] ? 2 : 1);
        CHECK_EQ_INT(t->shape.d[0], shapes[i][0]);
        if (shapes[i][1]) CHECK_EQ_INT(t->shape.d[1], shapes[i][1]);
        CHECK_EQ_INT(t->offset, off);  /* contiguous, state_dict order */
        CHECK(t->data == m.params + off);
        CHECK(kd_model_tensor(&m, names[i]) == t);
        off += t->numel;
    }
    CHECK(kd_model_tensor(&m, "1.weight") == NULL);
    CHECK_EQ_INT(m.n_params, 784 * 1200 + 1200 + 1200 * 10 + 10);
    CHECK_EQ_INT(off, m.n_params);
    CHECK_EQ_INT(m.n_classes, 10);
    CHECK_EQ_INT(kd_model_macs(&m), 784 * 1200 + 1200 * 10);
    CHECK(((uintptr_t)m.params & 63) == 0 && ((uintptr_t)m.grads & 63) == 0);
    CHECK(m.grads && m.m && m.v);
    /* Layers see their tensors by declaration position; tensors know their layer. */
    CHECK(m.layers[0].t[0] == m.params && m.layers[0].dt[0] == m.grads);
    CHECK(m.layers[2].t[1] == m.params + 784 * 1200 + 1200 + 12000);
    CHECK(m.layers[2].dt[1] == m.grads + 784 * 1200 + 1200 + 12000);
    CHECK_EQ_INT(m.layers[0].n_tensors, 2);
    CHECK_EQ_INT(m.layers[1].n_tensors, 0);
    CHECK(m.layers[1].t[0] == NULL && m.layers[1].t[1] == NULL);
    static const size_t layer_of[] = {0, 0, 2, 2};
    static const int quantized[] = {1, 0, 1, 0};  /* int8 export: weights yes, biases no */
    for (size_t i = 0; i < 4 && i < m.n_tensors; i++) {
        CHECK_EQ_INT(m.tensors[i].layer, layer_of[i]);
        CHECK_EQ_INT(m.tensors[i].quantize, quantized[i]);
    }
    CHECK_EQ_INT(kd_model_first_trainable(&m), 0);

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    kd_model_print(&m, f);
    fclose(f);
    CHECK_CONTAINS(text, "dense");
    CHECK_CONTAINS(text, "954010");
    free(text);
    kd_model_free(&m);
    kd_model_free(&m);  /* idempotent */

    /* The teacher: no gradient or optimizer memory. */
    CHECK_EQ_INT(init_json(&m, &in, mlp_json, 0, &err), KD_OK);
    CHECK(m.grads == NULL && m.m == NULL && m.v == NULL && m.layers[0].dt[0] == NULL);
    CHECK(m.layers[0].t[0] == m.params);
    CHECK_EQ_INT(kd_model_reserve(&m, 4, &err), KD_OK);
    CHECK(m.grad_a == NULL);
    kd_model_free(&m);
}

KD_TEST(model_arch_json_round_trip) {
    const kd_shape in = {3, {1, 4, 4}};
    kd_model a, b;
    kd_err err;
    const char *json =
        "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":7,\"bias\":false},"
        "{\"type\":\"leaky_relu\",\"slope\":0.2},{\"type\":\"dropout\",\"p\":0.1},"
        "{\"type\":\"dense\",\"units\":5},{\"type\":\"gelu\"},{\"type\":\"dense\",\"units\":3}]";
    if (init_json(&a, &in, json, 1, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    char *arch = kd_model_arch_json(&a);
    CHECK_CONTAINS(arch, "\"input\":[1,4,4]");
    CHECK_CONTAINS(arch, "\"slope\":0.2}");  /* shortest decimal, not 0.200000003 */
    CHECK_CONTAINS(arch, "\"p\":0.1}");
    CHECK_CONTAINS(arch, "\"bias\":false");
    if (kd_model_init_arch(&b, arch, 0, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        free(arch);
        kd_model_free(&a);
        return;
    }
    CHECK_EQ_INT(b.n_tensors, a.n_tensors);
    CHECK_EQ_INT(b.n_params, a.n_params);
    for (size_t i = 0; i < a.n_tensors && i < b.n_tensors; i++) {
        CHECK(strcmp(a.tensors[i].name, b.tensors[i].name) == 0);
        CHECK(memcmp(&a.tensors[i].shape, &b.tensors[i].shape, sizeof a.tensors[i].shape) == 0);
        CHECK_EQ_INT(a.tensors[i].offset, b.tensors[i].offset);
        CHECK_EQ_INT(a.tensors[i].kind, b.tensors[i].kind);
    }
    /* The rebuilt layers' own hyperparameters, as their describe writes them. */
    CHECK((float)kd_test_layer_field(&b.layers[2], "slope") == 0.2f);
    CHECK((float)kd_test_layer_field(&b.layers[3], "p") == 0.1f);
    char *arch2 = kd_model_arch_json(&b);
    CHECK(arch2 && strcmp(arch, arch2) == 0);
    free(arch);
    free(arch2);
    kd_model_free(&a);
    kd_model_free(&b);
}

KD_TEST(model_construction_errors_name_the_layer) {
    static const struct {
        int image;  /* input [1, 28, 28] instead of [784] */
        const char *json, *want1, *want2;
    } cases[] = {
        {0, "[{\"type\":\"dense\",\"units\":10},{\"type\":\"conv\"}]", "layer 1: unknown type \"conv\"",
         "dense, relu, leaky_relu"},
        {0, "[{\"type\":\"dense\",\"units\":0}]", "layer 0 (dense): units: expected an integer", "got 0"},
        {0, "[{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":\"ten\"}]", "layer 1 (dense): units",
         "got \"ten\""},
        {0, "[{\"type\":\"dense\",\"units\":-3}]", "layer 0 (dense): units", "got -3"},
        {0, "[{\"type\":\"dense\",\"units\":2.5}]", "layer 0 (dense): units", "got 2.5"},
        {0, "[{\"type\":\"dense\"}]", "layer 0 (dense): missing \"units\"", "integer"},
        {0, "[{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":10,\"unit\":3}]",
         "layer 1 (dense): unknown field \"unit\"", "did you mean \"units\""},
        {0, "[{\"type\":\"relu\",\"slope\":0.1}]", "layer 0 (relu): unknown field \"slope\"", "none"},
        /* kd_suggest's rules: case-insensitive, and a prefix of a known field. */
        {0, "[{\"type\":\"batchnorm\",\"mom\":0.2}]", "layer 0 (batchnorm): unknown field \"mom\"",
         "(did you mean \"momentum\"?)"},
        {0, "[{\"type\":\"dense\",\"UNITS\":3}]", "layer 0 (dense): unknown field \"UNITS\"",
         "(did you mean \"units\"?)"},
        {0, "[{\"type\":\"dense\",\"units\":4,\"zzz\":1}]", "layer 0 (dense): unknown field \"zzz\"",
         "known fields: units, bias"},
        {1, "[{\"type\":\"dense\",\"units\":10}]",
         "layer 0 (dense): expects a flat input, got [1, 28, 28]; add {\"type\":\"flatten\"} before it", ""},
        {0, "[]", "layers: the list is empty", ""},
        {0, "{\"type\":\"dense\"}", "layers: expected a JSON array", "got {\"type\""},
        {0, "[3]", "layer 0: expected an object", "got 3"},
        {0, "[{\"units\":3}]", "layer 0: missing \"type\"", "dense"},
        {0, "[{\"type\":\"dropout\",\"p\":1}]", "layer 0 (dropout): p: expected a number in [0, 1)", "got 1"},
        {0, "[{\"type\":\"dropout\",\"p\":-0.1}]", "layer 0 (dropout): p", "got -0.1"},
        {0, "[{\"type\":\"leaky_relu\",\"slope\":\"x\"}]", "layer 0 (leaky_relu): slope", "got \"x\""},
        {0, "[{\"type\":\"dense\",\"units\":3,\"bias\":\"yes\"}]", "layer 0 (dense): bias: expected true or false",
         "got \"yes\""},
        {0, "[{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":16777216}]",
         "layer 1 (dense): 1.weight is too large", ""},
    };
    const kd_shape flat = {1, {784}}, image = {3, {1, 28, 28}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kd_model m;
        kd_err err;
        kd_err_clear(&err);
        kd_status st = init_json(&m, cases[i].image ? &image : &flat, cases[i].json, 1, &err);
        if (st != KD_EUSAGE) kd_test_fail(__FILE__, __LINE__, "case %zu (%s): status %d", i, cases[i].json, st);
        CHECK_CONTAINS(err.msg, cases[i].want1);
        CHECK_CONTAINS(err.msg, cases[i].want2);
        CHECK(m.layers == NULL && m.params == NULL && m.tensors == NULL);  /* freed on error */
        kd_model_free(&m);
    }
    /* NULL layers and bad inputs. */
    kd_model m;
    kd_err err;
    CHECK_EQ_INT(kd_model_init(&m, &flat, NULL, 1, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "layers: expected a JSON array");
    const kd_shape huge = {3, {(size_t)1 << 30, (size_t)1 << 30, (size_t)1 << 30}}, zero = {2, {3, 0, 0}};
    CHECK_EQ_INT(init_json(&m, &huge, "[{\"type\":\"flatten\"}]", 1, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "input:");
    CHECK_EQ_INT(init_json(&m, &zero, "[{\"type\":\"flatten\"}]", 1, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "[3, 0]");

    /* Arch strings. */
    static const struct {
        const char *arch, *want;
    } arch_cases[] = {
        {"{\"input\":[4],\"layers\":[", "arch: not valid JSON"},
        {"[1,2]", "arch: expected an object"},
        {"{\"input\":[4]}", "arch: missing \"layers\""},
        {"{\"input\":[0],\"layers\":[{\"type\":\"relu\"}]}", "arch.input[0]: expected a positive integer"},
        {"{\"input\":[1,2,3,4,5],\"layers\":[{\"type\":\"relu\"}]}", "arch.input: expected an array of 1 to 4"},
        {"{\"input\":[4],\"layers\":[],\"extra\":1}", "arch: unknown key \"extra\""},
        {"{\"input\":[4],\"layers\":[{\"type\":\"tanhh\"}]}", "arch: layer 0: unknown type \"tanhh\""},
    };
    for (size_t i = 0; i < sizeof arch_cases / sizeof arch_cases[0]; i++) {
        CHECK_EQ_INT(kd_model_init_arch(&m, arch_cases[i].arch, 1, &err), KD_EUSAGE);
        CHECK_CONTAINS(err.msg, arch_cases[i].want);
        CHECK(m.layers == NULL);
    }

    /* An absurd batch size is refused before any allocation. */
    CHECK_EQ_INT(init_json(&m, &flat, mlp_json, 1, &err), KD_OK);
    CHECK_EQ_INT(kd_model_reserve(&m, SIZE_MAX / 2, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "batch size");
    CHECK_EQ_INT(m.batch_cap, 0);
    kd_model_free(&m);
}

static void stats(const float *x, size_t n, double *mean, double *sd, double *absmax) {
    double s = 0, s2 = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
        if (fabs(x[i]) > mx) mx = fabs(x[i]);
    }
    *mean = s / (double)n;
    *sd = sqrt(s2 / (double)n - *mean * *mean);
    *absmax = mx;
}

KD_TEST(model_he_and_xavier_statistics) {
    const kd_shape in = {1, {784}};
    kd_model m;
    kd_err err;
    kd_rng rng;
    if (init_json(&m, &in, mlp_json, 0, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    double mean, sd, mx;
    kd_rng_seed(&rng, 1);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    stats(m.layers[0].t[0], 1200 * 784, &mean, &sd, &mx);
    CHECK_CLOSE(mean, 0.0, 1e-3, 0);
    CHECK_CLOSE(sd, sqrt(2.0 / 784), 0, 0.01);
    stats(m.layers[2].t[0], 10 * 1200, &mean, &sd, &mx);
    CHECK_CLOSE(sd, sqrt(2.0 / 1200), 0, 0.03);  /* 12000 samples: ~0.7% sd of the estimate */
    stats(m.layers[0].t[1], 1200, &mean, &sd, &mx);
    CHECK(mx == 0.0);
    float *first = malloc(m.n_params * sizeof *first);
    memcpy(first, m.params, m.n_params * sizeof *first);

    for (size_t i = 0; i < m.n_params; i++) m.params[i] = 7.0f;  /* biases must be reset too */
    kd_rng_seed(&rng, 1);
    kd_model_init_weights(&m, &rng, KD_INIT_XAVIER);
    double a = sqrt(6.0 / (784 + 1200));
    stats(m.layers[0].t[0], 1200 * 784, &mean, &sd, &mx);
    CHECK_CLOSE(mean, 0.0, 1e-3, 0);
    CHECK_CLOSE(sd, a / sqrt(3.0), 0, 0.01);
    CHECK(mx <= a && mx > 0.99 * a);
    stats(m.layers[2].t[0], 10 * 1200, &mean, &sd, &mx);
    CHECK(mx <= sqrt(6.0 / 1210));
    stats(m.layers[2].t[1], 10, &mean, &sd, &mx);
    CHECK(mx == 0.0);

    /* Same seed, same weights; another seed, other weights. */
    kd_rng_seed(&rng, 1);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    CHECK(memcmp(first, m.params, m.n_params * sizeof *first) == 0);
    kd_rng_seed(&rng, 2);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    CHECK(memcmp(first, m.params, m.n_params * sizeof *first) != 0);
    free(first);
    kd_model_free(&m);
}

/* ---- A small MLP trained with plain SGD and softmax cross-entropy written here, so this test
 * depends on nothing but the model. ---- */

enum { TR_N = 256, TR_D = 8, TR_C = 4, TR_B = 32, TR_EPOCHS = 40 };

/* Four classes in 8-D: the sign pattern of the first two coordinates (centres at +-2) plus
 * uniform noise in [-1, 1) on every coordinate, so the classes are linearly separable. */
static void make_data(float *x, int32_t *y) {
    kd_rng r;
    kd_rng_seed(&r, 1234);
    for (size_t i = 0; i < TR_N; i++) {
        int c = (int)(i % TR_C);
        y[i] = c;
        for (size_t j = 0; j < TR_D; j++) x[i * TR_D + j] = 2.0f * kd_rng_uniform(&r) - 1.0f;
        x[i * TR_D + 0] += c & 1 ? 2.0f : -2.0f;
        x[i * TR_D + 1] += c & 2 ? 2.0f : -2.0f;
    }
}

/* Mean CE over the batch; dz = (softmax(z) - onehot(y)) / B. */
static double ce(const float *z, const int32_t *y, size_t B, float *dz) {
    double loss = 0;
    for (size_t i = 0; i < B; i++) {
        const float *row = z + i * TR_C;
        double mx = row[0], sum = 0, p[TR_C];
        for (int c = 1; c < TR_C; c++) mx = row[c] > mx ? row[c] : mx;
        for (int c = 0; c < TR_C; c++) sum += p[c] = exp(row[c] - mx);
        loss += log(sum) - (row[y[i]] - mx);
        for (int c = 0; c < TR_C; c++) dz[i * TR_C + c] = (float)((p[c] / sum - (c == y[i])) / (double)B);
    }
    return loss / (double)B;
}

/* Trains from seed; returns training accuracy (eval mode); *params_out gets a copy (caller frees). */
static double train_mlp(uint64_t seed, float **params_out, size_t *n_params, double *first_loss,
                        double *last_loss) {
    const kd_shape in = {1, {TR_D}};
    kd_model m;
    kd_err err;
    kd_rng rng;
    float x[TR_N * TR_D], bx[TR_B * TR_D], dz[TR_B * TR_C];
    int32_t y[TR_N], by[TR_B];
    size_t order[TR_N];
    double acc = -1;
    *params_out = NULL;
    make_data(x, y);
    if (init_json(&m, &in,
                  "[{\"type\":\"dense\",\"units\":32},{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.1},"
                  "{\"type\":\"dense\",\"units\":4}]", 1, &err) ||
        kd_model_reserve(&m, TR_N, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        kd_model_free(&m);
        return -1;
    }
    kd_rng_seed(&rng, seed);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    kd_ctx ctx = {1, &rng, NULL, 0, 0, 0};
    for (size_t i = 0; i < TR_N; i++) order[i] = i;
    for (int epoch = 0; epoch < TR_EPOCHS; epoch++) {
        double sum = 0;
        kd_rng_shuffle(&rng, order, TR_N);
        for (size_t b0 = 0; b0 < TR_N; b0 += TR_B) {
            for (size_t i = 0; i < TR_B; i++) {
                memcpy(bx + i * TR_D, x + order[b0 + i] * TR_D, sizeof(float) * TR_D);
                by[i] = y[order[b0 + i]];
            }
            const float *z = kd_model_forward(&m, bx, TR_B, &ctx);
            sum += ce(z, by, TR_B, dz);
            kd_model_zero_grad(&m);
            kd_model_backward(&m, bx, dz, TR_B, &ctx);
            for (size_t p = 0; p < m.n_params; p++) m.params[p] -= 0.2f * m.grads[p];
        }
        if (epoch == 0) *first_loss = sum / (TR_N / TR_B);
        *last_loss = sum / (TR_N / TR_B);
    }
    kd_ctx eval = {0, NULL, NULL, 0, 0, 0};
    const float *z = kd_model_forward(&m, x, TR_N, &eval);
    size_t correct = 0;
    for (size_t i = 0; i < TR_N; i++) {
        int best = 0;
        for (int c = 1; c < TR_C; c++)
            if (z[i * TR_C + c] > z[i * TR_C + best]) best = c;
        correct += best == y[i];
    }
    acc = (double)correct / TR_N;
    *n_params = m.n_params;
    *params_out = malloc(m.n_params * sizeof(float));
    memcpy(*params_out, m.params, m.n_params * sizeof(float));
    kd_model_free(&m);
    return acc;
}

KD_TEST(model_mlp_trains_to_100_percent_reproducibly) {
    float *p1, *p2, *p3;
    size_t n1 = 0, n2 = 0, n3 = 0;
    double l0, l1, l0b, l1b, l0c, l1c;
    double acc = train_mlp(7, &p1, &n1, &l0, &l1);
    CHECK_CLOSE(acc, 1.0, 0, 0);
    CHECK(l1 < 0.1 * l0);
    double acc2 = train_mlp(7, &p2, &n2, &l0b, &l1b);
    CHECK(acc2 == acc && l1b == l1);
    CHECK(p1 && p2 && n1 == n2 && memcmp(p1, p2, n1 * sizeof *p1) == 0);  /* bitwise */
    train_mlp(8, &p3, &n3, &l0c, &l1c);
    CHECK(p3 && n3 == n1 && memcmp(p1, p3, n1 * sizeof *p1) != 0);
    free(p1);
    free(p2);
    free(p3);
}

KD_TEST(model_reserve_is_reused_and_smaller_batches_work) {
    const kd_shape in = {1, {5}};
    kd_model m;
    kd_err err;
    kd_rng rng;
    if (init_json(&m, &in, "[{\"type\":\"dense\",\"units\":3},{\"type\":\"tanh\"}]", 1, &err) ||
        kd_model_reserve(&m, 8, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        kd_model_free(&m);
        return;
    }
    kd_rng_seed(&rng, 3);
    kd_model_init_weights(&m, &rng, KD_INIT_XAVIER);
    float *acts = m.act_mem;
    CHECK_EQ_INT(kd_model_reserve(&m, 4, &err), KD_OK);
    CHECK(m.act_mem == acts && m.batch_cap == 8);
    float x[8 * 5], z8[8 * 3];
    for (int i = 0; i < 40; i++) x[i] = kd_rng_normal(&rng);
    memcpy(z8, kd_model_forward(&m, x, 8, NULL), sizeof z8);
    /* Rows do not interact: a forward of the last 3 samples gives the same rows. */
    CHECK_FLOATS(kd_model_forward(&m, x + 5 * 5, 3, NULL), z8 + 5 * 3, 9, 1e-6, 1e-6);
    /* Growing keeps the weights. */
    CHECK_EQ_INT(kd_model_reserve(&m, 16, &err), KD_OK);
    CHECK_FLOATS(kd_model_forward(&m, x, 8, NULL), z8, 24, 1e-6, 1e-6);
    kd_model_free(&m);
}

/* An inference-only model runs a batch wider than its chunk (2M floats of its widest activation:
 * 16x32x32 = 16,384 floats per sample here, so 128 samples) through the whole network chunk by
 * chunk, its layers' outputs taking turns in two buffers: the logits of 300 samples (chunks
 * of 128, 128 and 44) match a training-state model's single pass in evaluation mode, with batch
 * norm, dropout, pooling and dense layers in between (dropout and flatten sharing their input's
 * buffer); once layer by layer (batchnorm, relu, maxpool) and once with the convolution, batch
 * norm, pool and ReLU as one fused unit. */
static void check_chunked(const char *layers) {
    const kd_shape in = {3, {3, 32, 32}};
    enum { B = 300, D = 3 * 32 * 32 };
    kd_model full, inf;
    kd_err err;
    CHECK_EQ_INT(init_json(&full, &in, layers, 1, &err), KD_OK);
    CHECK_EQ_INT(init_json(&inf, &in, layers, 0, &err), KD_OK);
    CHECK_EQ_INT(kd_model_reserve(&full, B, &err), KD_OK);
    CHECK_EQ_INT(kd_model_reserve(&inf, B, &err), KD_OK);
    CHECK_EQ_INT(full.chunk, B);
    /* 8 MiB of the widest value (16 x 32 x 32 floats a sample) shared among the inference
     * replicas, one per processor (at most 16: plan.c) */
    const int procs = omp_get_num_procs();
    CHECK_EQ_INT(inf.chunk, 128 / (procs > 16 ? 16 : procs));
    /* a chain needs two chunk buffers: each layer's output goes where the value before its
     * input was (liveness); a fused unit's inner values, never written, share its output's */
    CHECK(inf.acts[0] != inf.acts[3] && (inf.acts[1] == inf.acts[3] || inf.acts[1] == inf.acts[0]));
    CHECK(inf.acts[6] != inf.acts[3] && inf.acts[6] != inf.acts[0]);
    /* dropout and flatten, the identity in evaluation, copy nothing: they share their input */
    CHECK(inf.acts[4] == inf.acts[3] && inf.acts[5] == inf.acts[3]);
    kd_rng rng;
    kd_rng_seed(&rng, 9);
    kd_model_init_weights(&full, &rng, KD_INIT_HE);
    /* Running statistics away from 0 and 1, so evaluation-mode batch norm does something. */
    for (size_t i = 0; i < full.n_buffers; i++) full.buffers[i] = 0.5f + 0.1f * (float)(i % 5);
    memcpy(inf.params, full.params, full.n_params * sizeof *full.params);
    memcpy(inf.buffers, full.buffers, full.n_buffers * sizeof *full.buffers);
    float *x = malloc((size_t)B * D * sizeof *x), *want = malloc(B * 7 * sizeof *want);
    for (size_t i = 0; i < (size_t)B * D; i++) x[i] = kd_rng_normal(&rng);
    memcpy(want, kd_model_forward(&full, x, B, NULL), B * 7 * sizeof *want);
    CHECK_FLOATS(kd_model_forward(&inf, x, B, NULL), want, B * 7, 1e-5, 1e-5);
    /* A batch of one sample, and one of chunk + 1. */
    CHECK_FLOATS(kd_model_forward(&inf, x + 200 * D, 1, NULL), want + 200 * 7, 7, 1e-5, 1e-5);
    CHECK_FLOATS(kd_model_forward(&inf, x, 129, NULL), want, 129 * 7, 1e-5, 1e-5);
    free(x);
    free(want);
    kd_model_free(&full);
    kd_model_free(&inf);
}

KD_TEST(model_inference_runs_wide_batches_in_chunks) {
    check_chunked(
        "[{\"type\":\"conv2d\",\"channels\":16,\"kernel\":3,\"padding\":1},{\"type\":\"batchnorm\"},"
        "{\"type\":\"relu\"},{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"dropout\",\"p\":0.5},"
        "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":7}]");
    check_chunked(
        "[{\"type\":\"conv2d\",\"channels\":16,\"kernel\":3,\"padding\":1},{\"type\":\"batchnorm\"},"
        "{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.5},"
        "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":7}]");
}

/* Layers that may run in place (relu, dropout, flatten) write over the previous layer's output
 * when nothing reads it afterwards: never layer 0 (the caller's batch), never after tanh or
 * sigmoid (their backward reads their output), never two in a row (a relu in place reads its
 * output as its input). A flatten (a view: it writes nothing) shares its input even after an
 * in-place layer, and the layer after it then does not. Then the whole stack's gradients still
 * match finite differences. */
KD_TEST(model_in_place_layers_share_only_safe_buffers) {
    const kd_shape in = {3, {2, 6, 6}};
    static const char layers[] =
        "[{\"type\":\"relu\"},"                                                  /* 0: input */
        "{\"type\":\"conv2d\",\"channels\":3,\"kernel\":3,\"padding\":1},"       /* 1 */
        "{\"type\":\"relu\"},"                                                   /* 2: in place */
        "{\"type\":\"dropout\",\"p\":0.2},"                                      /* 3: after 2 */
        "{\"type\":\"flatten\"},"                                                /* 4: in place */
        "{\"type\":\"dense\",\"units\":9},{\"type\":\"tanh\"},"                  /* 5, 6 */
        "{\"type\":\"dropout\",\"p\":0.2},"                                      /* 7: after tanh */
        "{\"type\":\"dense\",\"units\":8},{\"type\":\"relu\"},"                  /* 8, 9: in place */
        "{\"type\":\"flatten\"},{\"type\":\"relu\"},"                              /* 10: view, 11 */
        "{\"type\":\"dense\",\"units\":4}]";
    kd_model m;
    kd_err err;
    CHECK_EQ_INT(init_json(&m, &in, layers, 1, &err), KD_OK);
    CHECK_EQ_INT(kd_model_reserve(&m, 3, &err), KD_OK);
    static const int shares[] = {0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0};
    for (size_t i = 1; i < m.n_layers; i++)
        if ((m.acts[i] == m.acts[i - 1]) != shares[i])
            kd_test_fail(__FILE__, __LINE__, "layer %zu: shares its input buffer %d, expected %d",
                         i, m.acts[i] == m.acts[i - 1], shares[i]);
    kd_model_free(&m);
    CHECK_EQ_INT(kd_gradcheck(&in, layers, 3, 21, 1, 1e-2), 0);
    CHECK_EQ_INT(kd_gradcheck(&in, layers, 3, 22, 0, 1e-2), 0);
}
