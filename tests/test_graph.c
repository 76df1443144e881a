/* test_graph.c - graph models: layers with names and "from" edges, add and concat, gradients
 * summed over a value's readers (finite differences), inner values observed and given a
 * gradient, the inference plan's liveness, names in tensors and the arch string, and every
 * malformed edge refused by name. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/nn/graph.h"
#include "kd_gradcheck.h"
#include "kd_nn.h"
#include "kd_rng.h"
#include "kd_test.h"

#define GC_TOL 1e-2

static const kd_shape vec6 = {1, {6}};
static const kd_shape img = {3, {2, 5, 5}};

KD_TEST(graph_gradcheck_add_and_concat) {
    /* add of two and of three values; a value read by three layers (the input: dense "a",
     * dense "b" and the add); concat of vectors and of feature maps */
    CHECK_EQ_INT(kd_gradcheck(&vec6, "[{\"type\":\"dense\",\"units\":6,\"name\":\"a\"},"
                                     "{\"type\":\"tanh\"},"
                                     "{\"type\":\"add\",\"from\":[1,\"input\"]},"
                                     "{\"type\":\"dense\",\"units\":3}]", 3, 1, 1, GC_TOL), 0);
    CHECK_EQ_INT(kd_gradcheck(&vec6, "[{\"type\":\"dense\",\"units\":6,\"name\":\"a\"},"
                                     "{\"type\":\"dense\",\"units\":6,\"name\":\"b\",\"from\":\"input\"},"
                                     "{\"type\":\"add\",\"from\":[\"a\",\"b\",\"input\"]},"
                                     "{\"type\":\"sigmoid\"},{\"type\":\"dense\",\"units\":4}]",
                              3, 2, 1, GC_TOL), 0);
    CHECK_EQ_INT(kd_gradcheck(&vec6, "[{\"type\":\"dense\",\"units\":5,\"name\":\"a\"},"
                                     "{\"type\":\"gelu\",\"from\":\"input\"},"
                                     "{\"type\":\"concat\",\"from\":[\"a\",1,\"input\"]},"
                                     "{\"type\":\"dense\",\"units\":3}]", 3, 3, 1, GC_TOL), 0);
    CHECK_EQ_INT(kd_gradcheck(&img, "[{\"type\":\"conv2d\",\"channels\":3,\"kernel\":3,\"padding\":1},"
                                    "{\"type\":\"concat\",\"from\":[0,\"input\"]},"
                                    "{\"type\":\"relu\"},{\"type\":\"global_avgpool\"},"
                                    "{\"type\":\"dense\",\"units\":3}]", 2, 4, 1, GC_TOL), 0);
    /* a merge that reads one value twice: y = 2 * x */
    CHECK_EQ_INT(kd_gradcheck(&vec6, "[{\"type\":\"dense\",\"units\":4,\"name\":\"a\"},"
                                     "{\"type\":\"add\",\"from\":[\"a\",\"a\"]},"
                                     "{\"type\":\"concat\",\"from\":[1,\"a\",1]},"
                                     "{\"type\":\"dense\",\"units\":2}]", 3, 5, 1, GC_TOL), 0);
}

/* A torchvision BasicBlock with a downsampling shortcut, batch norm in training mode, and a
 * plain one after it. */
static const char resblock[] =
    "[{\"type\":\"conv2d\",\"channels\":4,\"kernel\":3,\"padding\":1,\"bias\":false,\"name\":\"conv1\"},"
    "{\"type\":\"batchnorm\",\"name\":\"bn1\"},{\"type\":\"relu\",\"name\":\"relu\"},"
    "{\"type\":\"conv2d\",\"channels\":4,\"kernel\":3,\"padding\":1,\"bias\":false,\"name\":\"l.0.conv1\"},"
    "{\"type\":\"batchnorm\",\"name\":\"l.0.bn1\"},{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"channels\":4,\"kernel\":3,\"padding\":1,\"bias\":false,\"name\":\"l.0.conv2\"},"
    "{\"type\":\"batchnorm\",\"name\":\"l.0.bn2\"},"
    "{\"type\":\"add\",\"from\":[\"l.0.bn2\",\"relu\"],\"name\":\"l.0.add\"},{\"type\":\"relu\",\"name\":\"l.0.out\"},"
    "{\"type\":\"conv2d\",\"channels\":6,\"kernel\":3,\"stride\":2,\"padding\":1,\"bias\":false,\"name\":\"l.1.conv1\"},"
    "{\"type\":\"batchnorm\",\"name\":\"l.1.bn1\"},{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"channels\":6,\"kernel\":3,\"padding\":1,\"bias\":false,\"name\":\"l.1.conv2\"},"
    "{\"type\":\"batchnorm\",\"name\":\"l.1.bn2\"},"
    "{\"type\":\"conv2d\",\"channels\":6,\"kernel\":1,\"stride\":2,\"bias\":false,\"name\":\"l.1.downsample.0\",\"from\":\"l.0.out\"},"
    "{\"type\":\"batchnorm\",\"name\":\"l.1.downsample.1\"},"
    "{\"type\":\"add\",\"from\":[\"l.1.bn2\",\"l.1.downsample.1\"]},{\"type\":\"relu\"},"
    "{\"type\":\"global_avgpool\"},{\"type\":\"dense\",\"units\":3,\"name\":\"fc\"}]";

KD_TEST(graph_gradcheck_residual_blocks) {
    const kd_shape in = {3, {2, 6, 6}};
    CHECK_EQ_INT(kd_gradcheck(&in, resblock, 4, 11, 1, GC_TOL), 0);
}

static int build(kd_model *m, const kd_shape *in, const char *json, int grads, size_t B) {
    kd_err err;
    if (kd_model_init(m, in, json, grads, &err) || kd_model_reserve(m, B, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return -1;
    }
    return 0;
}

/* loss = sum r * logits + sum q * value(observed): the gradient the caller adds at an observed
 * inner value reaches the parameters before it (finite differences, in double). */
KD_TEST(graph_observed_value_takes_a_gradient) {
    enum { B = 3 };
    const char *json = "[{\"type\":\"dense\",\"units\":5,\"name\":\"h\"},{\"type\":\"tanh\",\"name\":\"t\"},"
                       "{\"type\":\"dense\",\"units\":2}]";
    kd_model m;
    kd_err err;
    size_t id;
    kd_shape sh;
    memset(&m, 0, sizeof m);
    CHECK_EQ_INT(kd_model_init(&m, &vec6, json, 1, &err), KD_OK);
    CHECK_EQ_INT(kd_model_observe(&m, "t", &id, &sh, &err), KD_OK);
    CHECK(sh.rank == 1 && sh.d[0] == 5);
    CHECK_EQ_INT(kd_model_observe(&m, "nope", &id, &sh, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "nope");
    CHECK_EQ_INT(kd_model_observe(&m, "t", &id, &sh, &err), KD_OK);
    if (kd_model_reserve(&m, B, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        kd_model_free(&m);
        return;
    }
    kd_rng rng;
    kd_rng_seed(&rng, 5);
    kd_model_init_weights(&m, &rng, KD_INIT_XAVIER);
    float x[B * 6], r[B * 2], q[B * 5];
    for (size_t i = 0; i < B * 6; i++) x[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < B * 2; i++) r[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < B * 5; i++) q[i] = kd_rng_normal(&rng);
    kd_ctx ctx = {1, &rng, NULL, 0, 0, 0};
    kd_model_forward(&m, x, B, &ctx);
    float *g = kd_model_value_grad(&m, id);
    for (size_t i = 0; i < B * 5; i++) CHECK(g[i] == 0.0f);  /* zeroed by the forward */
    memcpy(g, q, sizeof q);
    kd_model_zero_grad(&m);
    kd_model_backward(&m, x, r, B, &ctx);
    double worst = 0;
    for (size_t p = 0; p < m.n_params; p++) {
        double L[2];
        const float saved = m.params[p];
        for (int s = 0; s < 2; s++) {
            m.params[p] = saved + (s ? -1e-2f : 1e-2f);
            const float *z = kd_model_forward(&m, x, B, &ctx);
            const float *v = kd_model_value(&m, id);
            L[s] = 0;
            for (size_t i = 0; i < B * 2; i++) L[s] += (double)r[i] * z[i];
            for (size_t i = 0; i < B * 5; i++) L[s] += (double)q[i] * v[i];
        }
        m.params[p] = saved;
        const double num = (L[0] - L[1]) / 2e-2, a = m.grads[p];
        const double rel = fabs(num - a) / fmax(fabs(num) + fabs(a), 1e-3);
        if (rel > worst) worst = rel;
    }
    CHECK(worst < 1e-2);
    kd_model_free(&m);
}

/* An inference model's chunks reuse a value's buffer after its last reader: a residual stack
 * of any depth needs three chunk buffers (the block's input, its branch, its output), and its
 * logits over a batch wider than a chunk match a training model's single pass. */
KD_TEST(graph_inference_plan_reuses_buffers_and_matches_training) {
    const kd_shape in = {3, {2, 6, 6}};
    enum { B = 40 };
    kd_model full, inf;
    if (build(&full, &in, resblock, 1, B)) return;
    if (build(&inf, &in, resblock, 0, B)) {
        kd_model_free(&full);
        return;
    }
    CHECK(inf.graph->n_pool <= 3);
    kd_rng rng;
    kd_rng_seed(&rng, 21);
    kd_model_init_weights(&full, &rng, KD_INIT_HE);
    for (size_t i = 0; i < full.n_buffers; i++) full.buffers[i] = 0.5f + 0.1f * (float)(i % 5);
    memcpy(inf.params, full.params, full.n_params * sizeof *full.params);
    memcpy(inf.buffers, full.buffers, full.n_buffers * sizeof *full.buffers);
    inf.chunk = 7;  /* several passes, the last one short */
    float *x = malloc(B * 72 * sizeof *x), want[B * 3];
    for (size_t i = 0; i < B * 72; i++) x[i] = kd_rng_normal(&rng);
    memcpy(want, kd_model_forward(&full, x, B, NULL), sizeof want);
    CHECK_FLOATS(kd_model_forward(&inf, x, B, NULL), want, B * 3, 1e-6, 1e-5);
    free(x);
    kd_model_free(&full);
    kd_model_free(&inf);
}

/* Names become tensor names; the arch string records names and edges and builds the same
 * model back. */
KD_TEST(graph_names_in_tensors_and_arch) {
    const kd_shape in = {3, {2, 6, 6}};
    kd_model m, back;
    kd_err err;
    if (build(&m, &in, resblock, 0, 1)) return;
    CHECK(kd_model_tensor(&m, "l.1.downsample.0.weight") != NULL);
    CHECK(kd_model_tensor(&m, "l.0.bn2.running_var") != NULL);
    CHECK(kd_model_tensor(&m, "fc.bias") != NULL);
    CHECK(kd_model_tensor(&m, "5.weight") == NULL);  /* relu: no tensors */
    char *arch = kd_model_arch_json(&m);
    CHECK(arch && strstr(arch, "\"from\":[\"l.1.bn2\",\"l.1.downsample.1\"]"));
    CHECK(arch && strstr(arch, "\"from\":\"l.0.out\""));
    CHECK_EQ_INT(kd_model_init_arch(&back, arch, 0, &err), KD_OK);
    char *arch2 = kd_model_arch_json(&back);
    CHECK(arch2 && !strcmp(arch, arch2));
    for (size_t t = 0; t < m.n_tensors; t++) CHECK(!strcmp(m.tensors[t].name, back.tensors[t].name));
    free(arch);
    free(arch2);
    kd_model_free(&back);
    kd_model_free(&m);
}

static void refused(const kd_shape *in, const char *json, const char *want) {
    kd_model m;
    kd_err err;
    kd_status st = kd_model_init(&m, in, json, 1, &err);
    CHECK_EQ_INT(st, KD_EUSAGE);
    if (st == KD_OK) kd_model_free(&m);
    else CHECK_CONTAINS(err.msg, want);
}

KD_TEST(graph_bad_edges_and_names_are_refused_by_name) {
    refused(&vec6, "[{\"type\":\"dense\",\"units\":3,\"from\":\"later\"},{\"type\":\"relu\",\"name\":\"later\"}]",
            "layer 0 (dense): from: \"later\" is layer 1, which comes later");
    refused(&vec6, "[{\"type\":\"dense\",\"units\":3,\"from\":\"ghost\"}]", "no layer is named \"ghost\"");
    refused(&vec6, "[{\"type\":\"dense\",\"units\":3},{\"type\":\"relu\",\"from\":1}]",
            "from: 1 is not the index of an earlier layer");
    refused(&vec6, "[{\"type\":\"dense\",\"units\":3,\"name\":\"a\"},{\"type\":\"relu\",\"name\":\"a\"}]",
            "layer 1 (relu): name \"a\" is already layer 0's");
    refused(&vec6, "[{\"type\":\"relu\",\"name\":\"input\"}]", "the model's input");
    refused(&vec6, "[{\"type\":\"relu\",\"name\":\"3\"}]", "starts with a number");
    refused(&vec6, "[{\"type\":\"relu\",\"name\":\"0.conv\"}]", "starts with a number");
    refused(&vec6, "[{\"type\":\"relu\",\"name\":\"optim.m\"}]", "prefix distill keeps");
    refused(&vec6, "[{\"type\":\"relu\",\"name\":\"adapters\"}]", "prefix distill keeps");
    refused(&vec6, "[{\"type\":\"relu\",\"name\":\"a-b\"}]", "character other than");
    refused(&vec6, "[{\"type\":\"relu\",\"name\":\"a..b\"}]", "empty component");
    refused(&vec6, "[{\"type\":\"relu\",\"name\":7}]", "name: expected a string");
    char long_name[256];
    memset(long_name, 'x', 97);
    long_name[97] = '\0';
    char json[512];
    snprintf(json, sizeof json, "[{\"type\":\"relu\",\"name\":\"%s\"}]", long_name);
    refused(&vec6, json, "longer than the limit of 96");
    long_name[96] = '\0';  /* exactly at the limit: accepted */
    snprintf(json, sizeof json, "[{\"type\":\"dense\",\"units\":2,\"name\":\"%s\"}]", long_name);
    kd_model m;
    kd_err err;
    CHECK_EQ_INT(kd_model_init(&m, &vec6, json, 0, &err), KD_OK);
    kd_model_free(&m);
    refused(&vec6, "[{\"type\":\"dense\",\"units\":3},{\"type\":\"add\",\"from\":[0,\"input\"]}]",
            "layer 1 (add): from: input 1 is [6] but input 0 is [3]");
    refused(&img, "[{\"type\":\"conv2d\",\"channels\":3,\"kernel\":3},{\"type\":\"concat\",\"from\":[0,\"input\"]}]",
            "input 1 is [2, 5, 5] but input 0 is [3, 3, 3]");
    refused(&vec6, "[{\"type\":\"add\",\"from\":\"input\"}]", "at least two values");
    refused(&vec6, "[{\"type\":\"add\"}]", "at least two values");
    refused(&vec6, "[{\"type\":\"relu\",\"from\":[\"input\"]}]", "only merges (add, concat) read a list");
    refused(&vec6, "[{\"type\":\"relu\",\"from\":true}]", "from: expected");
    refused(&vec6, "[{\"type\":\"dense\",\"units\":3,\"name\":\"a\",\"frm\":1}]", "did you mean \"from\"");
}

/* A dead branch (a layer whose output nobody reads) still runs forward and gets no gradient;
 * the training result equals the model without it. */
KD_TEST(graph_dead_branch_gets_no_gradient) {
    enum { B = 4 };
    kd_model a, b;
    if (build(&a, &vec6, "[{\"type\":\"dense\",\"units\":4,\"name\":\"h\"},{\"type\":\"dense\",\"units\":9},"
                         "{\"type\":\"dense\",\"units\":3,\"from\":\"h\"}]", 1, B))
        return;
    if (build(&b, &vec6, "[{\"type\":\"dense\",\"units\":4},{\"type\":\"dense\",\"units\":3}]", 1, B)) {
        kd_model_free(&a);
        return;
    }
    kd_rng rng;
    kd_rng_seed(&rng, 8);
    kd_model_init_weights(&a, &rng, KD_INIT_HE);
    memcpy(b.params, a.params, 28 * sizeof(float));               /* h */
    memcpy(b.params + 28, a.params + 28 + 45, 15 * sizeof(float)); /* the head */
    float x[B * 6], r[B * 3];
    for (size_t i = 0; i < B * 6; i++) x[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < B * 3; i++) r[i] = kd_rng_normal(&rng);
    kd_ctx ctx = {1, &rng, NULL, 0, 0, 0};
    CHECK_FLOATS(kd_model_forward(&a, x, B, &ctx), kd_model_forward(&b, x, B, &ctx), B * 3, 0, 0);
    kd_model_zero_grad(&a);
    kd_model_zero_grad(&b);
    kd_model_backward(&a, x, r, B, &ctx);
    kd_model_backward(&b, x, r, B, &ctx);
    CHECK_FLOATS(a.grads, b.grads, 28, 0, 0);
    CHECK_FLOATS(a.grads + 73, b.grads + 28, 15, 0, 0);
    for (size_t i = 28; i < 73; i++) CHECK(a.grads[i] == 0.0f);
    kd_model_free(&a);
    kd_model_free(&b);
}

/* Backward's gradient slots are each as wide as the widest value whose gradient they hold, by
 * the walk from the logits (hand-traced): the add hands its gradient's slot 0 to its branch
 * [8], the skip "a" [8] takes slot 1, the branch's [32] values slots 2 and 0, and the skip's
 * second gradient goes through the scratch [8]. The model's gradients still match finite
 * differences in slots that narrow (and stay within them under ASan). */
KD_TEST(graph_gradient_slots_are_as_wide_as_their_values) {
    static const char *json =
        "[{\"type\":\"dense\",\"units\":8,\"name\":\"a\"},{\"type\":\"dense\",\"units\":32},"
        "{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":8},{\"type\":\"add\",\"from\":[3,\"a\"]},"
        "{\"type\":\"dense\",\"units\":3}]";
    const kd_shape in = {1, {5}};
    kd_model m;
    if (build(&m, &in, json, 1, 4)) return;
    size_t *need = NULL;
    const size_t n = kd_graph_backward_slots(&m, &need);
    CHECK_EQ_INT((int)n, 4);
    const size_t want[4] = {32, 8, 32, 8};
    for (size_t s = 0; need && s < 4 && s < n; s++) CHECK_EQ_INT((int)need[s], (int)want[s]);
    free(need);
    kd_model_free(&m);
    CHECK_EQ_INT(kd_gradcheck(&in, json, 4, 12, 1, GC_TOL), 0);
}

/* Runs resblock on one batch, observing the value named observe (or none: NULL), which keeps
 * it out of in-place writes, fused units and recomputation; logits and parameter gradients out,
 * whether both adds run in place with their relus in place after them, the unit sizes at the
 * first add (layer 8) and at the batch norm l.0.bn1 (layer 4) as 10 * first + second, and in
 * *recomputed bit i for each unit i whose output backward recomputes. */
/* resblock on a [2, 6, 6] input, reserved for B, with the value `observe` observed (or none);
 * -1 after a failure (reported). */
static int resblock_model(kd_model *m, const char *observe, int with_grads, size_t B) {
    const kd_shape in = {3, {2, 6, 6}};
    kd_err err;
    size_t id;
    kd_shape sh;
    memset(m, 0, sizeof *m);
    if (kd_model_init(m, &in, resblock, with_grads, &err) ||
        (observe && kd_model_observe(m, observe, &id, &sh, &err)) ||
        kd_model_reserve(m, B, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        kd_model_free(m);
        return -1;
    }
    return 0;
}

static int resblock_step_r(const char *observe, size_t B, float *logits, float *grads,
                           size_t n_params, int *add_in_place, size_t *add_unit,
                           unsigned long *recomputed) {
    kd_model m;
    if (resblock_model(&m, observe, 1, B)) return -1;
    if (m.n_params != n_params) {
        kd_test_fail(__FILE__, __LINE__, "%zu parameters, expected %zu", m.n_params, n_params);
        kd_model_free(&m);
        return -1;
    }
    *add_in_place = kd_runs_in_place(&m, 8) && kd_runs_in_place(&m, 9) &&
                    kd_runs_in_place(&m, 17) && kd_runs_in_place(&m, 18);
    *add_unit = kd_model_unit_size(&m, 8) * 10 + kd_model_unit_size(&m, 4);
    *recomputed = 0;
    for (size_t i = 0; i < m.n_layers; i++)
        if (m.graph->recompute[i]) *recomputed |= 1ul << i;
    kd_rng rng;
    kd_rng_seed(&rng, 21);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    float x[4 * 72], r[4 * 3];
    for (size_t i = 0; i < B * 72; i++) x[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < B * 3; i++) r[i] = kd_rng_normal(&rng);
    kd_ctx ctx = {1, &rng, NULL, 0, 0, 0};
    memcpy(logits, kd_model_forward(&m, x, B, &ctx), B * 3 * sizeof *logits);
    kd_model_zero_grad(&m);
    kd_model_backward(&m, x, r, B, &ctx);
    memcpy(grads, m.grads, n_params * sizeof *grads);
    kd_model_free(&m);
    return 0;
}

static int resblock_step(const char *observe, size_t B, float *logits, float *grads,
                         size_t n_params, int *add_in_place, size_t *add_unit) {
    unsigned long recomputed;
    return resblock_step_r(observe, B, logits, grads, n_params, add_in_place, add_unit,
                           &recomputed);
}

/* The trainable floats of resblock on a [2, 6, 6] input, or 0 after a failure. */
static size_t resblock_params(void) {
    const kd_shape in = {3, {2, 6, 6}};
    kd_model m;
    kd_err err;
    memset(&m, 0, sizeof m);
    if (kd_model_init(&m, &in, resblock, 1, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return 0;
    }
    const size_t np = m.n_params;
    kd_model_free(&m);
    return np;
}

/* An add whose first input has no other reader sums into that input's buffer, and the relu
 * after it still runs in place over the sum; observing the input keeps the add out of place.
 * Both give the same logits and gradients bit for bit (finite differences: the residual
 * block's gradcheck above). */
KD_TEST(graph_add_runs_in_place_over_a_private_input) {
    enum { B = 4, NP = 1024 };
    float z[2][B * 3], g[2][NP];
    int in_place[2];
    size_t unit[2];
    const size_t np = resblock_params();
    if (!np) return;
    CHECK(np <= NP);
    if (np > NP || resblock_step(NULL, B, z[0], g[0], np, &in_place[0], &unit[0]) ||
        resblock_step("l.0.bn2", B, z[1], g[1], np, &in_place[1], &unit[1]))
        return;
    CHECK(in_place[0]);
    CHECK(!in_place[1]);
    CHECK(!memcmp(z[0], z[1], sizeof z[0]));
    CHECK(!memcmp(g[0], g[1], np * sizeof *g[0]));
}

/* A training model runs an add and the relu after it (in place over the sum) as one forward
 * pass; observing the add's output keeps them apart. Both give the same logits and gradients
 * bit for bit. */
KD_TEST(graph_add_relu_unit_matches_the_layers_one_by_one) {
    enum { B = 4, NP = 1024 };
    float z[2][B * 3], g[2][NP];
    int in_place[2];
    size_t unit[2];
    const size_t np = resblock_params();
    if (!np) return;
    if (np > NP || resblock_step(NULL, B, z[0], g[0], np, &in_place[0], &unit[0]) ||
        resblock_step("l.0.add", B, z[1], g[1], np, &in_place[1], &unit[1]))
        return;
    CHECK_EQ_INT((int)unit[0], 22);  /* add + relu, and batchnorm + relu at layer 4 */
    CHECK_EQ_INT((int)unit[1], 12);
    CHECK(!memcmp(z[0], z[1], sizeof z[0]));
    CHECK(!memcmp(g[0], g[1], np * sizeof *g[0]));
}

/* An inference model (no gradients) runs the add and the relu after it as one unit too, and
 * its evaluation gives the same logits as with the add's output observed (which keeps them
 * apart), bit for bit. */
static int resblock_eval(const char *observe, size_t B, float *logits, size_t *add_unit) {
    kd_model m;
    if (resblock_model(&m, observe, 0, B)) return -1;
    *add_unit = kd_model_unit_size(&m, 8);
    kd_rng rng;
    kd_rng_seed(&rng, 21);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    float x[4 * 72];
    for (size_t i = 0; i < B * 72; i++) x[i] = kd_rng_normal(&rng);
    memcpy(logits, kd_model_forward(&m, x, B, NULL), B * 3 * sizeof *logits);
    kd_model_free(&m);
    return 0;
}

KD_TEST(graph_add_relu_unit_runs_in_inference) {
    enum { B = 4 };
    float z[2][B * 3];
    size_t unit[2];
    if (resblock_eval(NULL, B, z[0], &unit[0]) || resblock_eval("l.0.add", B, z[1], &unit[1]))
        return;
    CHECK_EQ_INT((int)unit[0], 2);
    CHECK_EQ_INT((int)unit[1], 1);
    CHECK(!memcmp(z[0], z[1], sizeof z[0]));
}

/* A training model runs a batch norm and the relu in place after it as one unit, forward and
 * backward (relu's gradient made on the fly); observing the batch norm's output keeps them
 * apart. Both give the same logits and gradients bit for bit. */
KD_TEST(graph_bn_relu_unit_matches_the_layers_one_by_one) {
    enum { B = 4, NP = 1024 };
    float z[2][B * 3], g[2][NP];
    int in_place[2];
    size_t unit[2];
    const size_t np = resblock_params();
    if (!np) return;
    if (np > NP || resblock_step(NULL, B, z[0], g[0], np, &in_place[0], &unit[0]) ||
        resblock_step("l.0.bn1", B, z[1], g[1], np, &in_place[1], &unit[1]))
        return;
    CHECK_EQ_INT((int)unit[0], 22);
    CHECK_EQ_INT((int)unit[1], 21);
    CHECK(!memcmp(z[0], z[1], sizeof z[0]));
    CHECK(!memcmp(g[0], g[1], np * sizeof *g[0]));
}

/* A batch norm + relu unit whose output only the next convolution reads keeps no output: its
 * output shares one buffer with the others' and backward writes it again before that
 * convolution's backward. Observing the relu's output (layer 5) keeps it: logits and gradients
 * are the same bits. l.0.bn1 (4) and l.1.bn1 (11) qualify; bn1 (1) does not (the add reads its
 * relu's output too). The finite-difference check of resblock runs the recomputing model. */
KD_TEST(graph_bn_relu_output_is_recomputed_in_backward) {
    enum { B = 4, NP = 1024 };
    float z[2][B * 3], g[2][NP];
    int in_place[2];
    size_t unit[2];
    unsigned long rec[2];
    const size_t np = resblock_params();
    if (!np) return;
    if (np > NP || resblock_step_r(NULL, B, z[0], g[0], np, &in_place[0], &unit[0], &rec[0]) ||
        resblock_step_r("5", B, z[1], g[1], np, &in_place[1], &unit[1], &rec[1]))
        return;
    CHECK(rec[0] == ((1ul << 4) | (1ul << 11)));
    CHECK(rec[1] == (1ul << 11));
    CHECK_EQ_INT((int)unit[1], 22);  /* still one unit: only the recomputation is off */
    CHECK(!memcmp(z[0], z[1], sizeof z[0]));
    CHECK(!memcmp(g[0], g[1], np * sizeof *g[0]));
}

/* bn -> relu6 with outputs past both kinks (batch norm's weight 5, bias 2: about a third of the
 * values clamp at 6, a third at 0): the fused unit against the layers kept apart by observing
 * batch norm's output, logits and gradients bit for bit. */
static int bn_relu6_step(int observe, float *z, float *grads, size_t np, size_t *unit,
                         size_t *at6) {
    enum { B = 3 };
    const kd_shape in = {3, {2, 4, 4}};
    const char *json = "[{\"type\":\"batchnorm\",\"name\":\"bn\"},{\"type\":\"relu6\"},"
                       "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]";
    kd_model m;
    kd_err err;
    size_t id;
    kd_shape sh;
    memset(&m, 0, sizeof m);
    if (kd_model_init(&m, &in, json, 1, &err) ||
        (observe && kd_model_observe(&m, "bn", &id, &sh, &err)) ||
        kd_model_reserve(&m, B, &err) || m.n_params != np) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        kd_model_free(&m);
        return -1;
    }
    *unit = kd_model_unit_size(&m, 0);
    kd_rng rng;
    kd_rng_seed(&rng, 8);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    for (size_t c = 0; c < 2; c++) {
        m.layers[0].t[0][c] = 5.0f;
        m.layers[0].t[1][c] = 2.0f;
    }
    float x[B * 32], r[B * 3];
    for (size_t i = 0; i < B * 32; i++) x[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < B * 3; i++) r[i] = kd_rng_normal(&rng);
    kd_ctx ctx = {1, &rng, NULL, 0, 0, 0};
    memcpy(z, kd_model_forward(&m, x, B, &ctx), B * 3 * sizeof *z);
    *at6 = 0;
    for (size_t i = 0; i < B * 32; i++) *at6 += m.acts[1][i] == 6.0f;
    kd_model_zero_grad(&m);
    kd_model_backward(&m, x, r, B, &ctx);
    memcpy(grads, m.grads, np * sizeof *grads);
    kd_model_free(&m);
    return 0;
}

KD_TEST(graph_bn_relu6_unit_past_both_kinks_matches_the_layers) {
    const size_t np = 2 + 2 + 3 * 32 + 3;
    float z[2][9], g[2][2 + 2 + 3 * 32 + 3];
    size_t unit[2], at6[2];
    if (bn_relu6_step(0, z[0], g[0], np, &unit[0], &at6[0]) ||
        bn_relu6_step(1, z[1], g[1], np, &unit[1], &at6[1]))
        return;
    CHECK_EQ_INT((int)unit[0], 2);
    CHECK_EQ_INT((int)unit[1], 1);
    CHECK(at6[0] > 10 && at6[0] == at6[1]);
    CHECK(!memcmp(z[0], z[1], sizeof z[0]));
    CHECK(!memcmp(g[0], g[1], np * sizeof *g[0]));
}

/* Slots at least as wide as a conv -> bn -> relu stage's 8 x 4 x 4 values: the batch norm
 * unit writes its input gradient over its output gradient, so one such slot serves both;
 * observing batch norm's output (keeping the layers apart) needs two. */
static int wide_slots(int observe) {
    const kd_shape in = {3, {1, 4, 4}};
    const char *json = "[{\"type\":\"conv2d\",\"channels\":8,\"kernel\":3,\"padding\":1},"
                       "{\"type\":\"batchnorm\",\"name\":\"bn\"},{\"type\":\"relu\"},"
                       "{\"type\":\"conv2d\",\"channels\":2,\"kernel\":3,\"padding\":1},"
                       "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]";
    kd_model m;
    kd_err err;
    size_t id, *need = NULL;
    kd_shape sh;
    memset(&m, 0, sizeof m);
    if (kd_model_init(&m, &in, json, 1, &err) ||
        (observe && kd_model_observe(&m, "bn", &id, &sh, &err)) || kd_model_reserve(&m, 2, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        kd_model_free(&m);
        return -1;
    }
    const size_t n = kd_graph_backward_slots(&m, &need);
    int wide = 0;
    for (size_t s = 0; need && s < n; s++) wide += need[s] >= 8 * 16;
    free(need);
    kd_model_free(&m);
    return wide;
}

KD_TEST(graph_bn_unit_hands_its_gradient_slot_on) {
    CHECK_EQ_INT(wide_slots(0), 1);
    CHECK_EQ_INT(wide_slots(1), 2);
}
