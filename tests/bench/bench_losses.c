/* bench_losses.c - the distillation step per loss: a KL step (today's alpha 0.9, T 4) and a DKD
 * step (dkd weight 0.9 + ce 0.1, T 4) on the compact student (784-128-10) and the cnn-small
 * student ([1, 28, 28], two conv/pool/relu blocks), each from the MLP teacher (784-1200-1200-10,
 * online, its forward part of every step); then KL + hint (weight 1) on the compact student
 * (its hidden [128] to the MLP teacher's first hidden [1200]: a dense adapter) and, from a CNN
 * teacher (two conv/bn/pool/relu blocks of 32 and 64 channels, dense 256), KL, KL + hint and
 * KL + at on cnn-small (its last block [32, 7, 7] to the teacher's [64, 7, 7]), as samples/s and
 * the ratio to the KL step of the same student and teacher. Every step is kd_trainer_step, the
 * step `distill train` runs.
 * Usage: bench_losses [threads] [steps]   (default: all cores, 40 steps per measurement) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_loss.h"
#include "kd_nn.h"
#include "kd_optim.h"
#include "kd_threads.h"
#include "kd_train.h"

#define BATCH 128
#define ROUNDS 3

typedef struct {
    const char *name;
    kd_shape input;
    const char *layers;
} student;

static const student students[] = {
    {"compact 784-128-10", {1, {784}},
     "[{\"type\":\"dense\",\"units\":128},{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":10}]"},
    {"cnn-small", {3, {1, 28, 28}},
     "[{\"type\":\"conv2d\",\"channels\":16,\"kernel\":3,\"padding\":1},"
     "{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"relu\"},"
     "{\"type\":\"conv2d\",\"channels\":32,\"kernel\":3,\"padding\":1},"
     "{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"relu\"},{\"type\":\"flatten\"},"
     "{\"type\":\"dense\",\"units\":10}]"},
};

static const char *const teacher_layers[2] = {
    "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":1200},{\"type\":\"relu\"},"
    "{\"type\":\"dense\",\"units\":1200},{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":10}]",
    "[{\"type\":\"conv2d\",\"channels\":32,\"kernel\":3,\"padding\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\"},{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"channels\":64,\"kernel\":3,\"padding\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\"},{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"relu\"},"
    "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":256},{\"type\":\"relu\"},"
    "{\"type\":\"dense\",\"units\":10}]"};

/* The rows: a student, a teacher and a loss list (an index into main's lists); the first row of
 * each student and teacher pair is the KL step the others are compared with. */
typedef struct {
    size_t student, teacher, list;
    const char *name;
} row;
static const row rows[] = {
    {0, 0, 0, "KL step (online MLP teacher)"},
    {0, 0, 1, "DKD step (online MLP teacher)"},
    {0, 0, 2, "KL + hint (MLP teacher)"},
    {1, 0, 0, "KL step (online MLP teacher)"},
    {1, 0, 1, "DKD step (online MLP teacher)"},
    {1, 1, 0, "KL step (online CNN teacher)"},
    {1, 1, 3, "KL + hint (CNN teacher)"},
    {1, 1, 4, "KL + at (CNN teacher)"},
};

static int build(kd_model *m, const kd_shape *in, const char *layers, int with_grads,
                 kd_rng *rng) {
    kd_err err;
    kd_status st = kd_model_init(m, in, layers, with_grads, &err);
    if (st == KD_OK) st = kd_model_reserve(m, BATCH, &err);
    if (st != KD_OK) {
        fprintf(stderr, "bench_losses: %s\n", err.msg);
        return -1;
    }
    kd_model_init_weights(m, rng, KD_INIT_HE);
    return 0;
}

/* Best samples/s over the rounds of `steps` steps of a trainer with losses l; < 0 on an error. */
static double measure(const student *s, const kd_model *teacher_proto, const kd_loss_list *l,
                      const float *x, const int32_t *y, int steps) {
    kd_rng rng;
    kd_rng_seed(&rng, 1);
    kd_model m = {0};
    kd_model *teacher = (kd_model *)teacher_proto;
    if (build(&m, &s->input, s->layers, 1, &rng)) return -1;
    kd_optim_cfg oc = kd_optim_defaults(KD_OPT_ADAM);
    kd_sched_cfg sc = {.kind = KD_SCHED_CONSTANT, .base_lr = 1e-3f};
    kd_trainer_setup ts = {0};
    ts.model = &m;
    ts.teacher = teacher;
    ts.losses = l;
    ts.optim = &oc;
    ts.sched = &sc;
    ts.batch_cap = BATCH;
    ts.rng = &rng;
    kd_trainer t;
    kd_err err;
    double best = -1;
    if (kd_trainer_init(&t, &ts, &err) != KD_OK) {
        fprintf(stderr, "bench_losses: %s\n", err.msg);
        goto cleanup;
    }
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = kd_now();
        for (int k = 0; k < steps; k++)
            if (kd_trainer_step(&t, x, y, NULL, BATCH, NULL, &err) != KD_OK) {
                fprintf(stderr, "bench_losses: %s\n", err.msg);
                best = -1;
                goto cleanup;
            }
        double rate = BATCH * (double)steps / (kd_now() - t0);
        if (rate > best) best = rate;
    }
cleanup:
    kd_trainer_free(&t);
    kd_model_free(&m);
    return best;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    int steps = argc > 2 ? atoi(argv[2]) : 40;
    if (steps < 1) steps = 1;
    printf("threads: %d; %d steps per round, best of %d rounds, batch %d\n",
           kd_threads_set(threads), steps, ROUNDS, BATCH);
    kd_rng rng;
    kd_rng_seed(&rng, 2);
    const kd_shape img = {3, {1, 28, 28}};
    kd_model teachers[2];
    memset(teachers, 0, sizeof teachers);
    if (build(&teachers[0], &img, teacher_layers[0], 0, &rng) ||
        build(&teachers[1], &img, teacher_layers[1], 0, &rng))
        return 1;
    float *x = kd_alloc_floats(BATCH * 784);
    int32_t y[BATCH];
    if (!x) return 1;
    for (size_t i = 0; i < BATCH * 784; i++) x[i] = kd_rng_uniform(&rng);
    for (size_t i = 0; i < BATCH; i++) y[i] = (int32_t)(i % 10);
    const kd_loss_entry kl = {.type = KD_LOSS_KL, .weight = (double)0.9f, .temperature = 4};
    const kd_loss_entry dkd = {.type = KD_LOSS_DKD, .weight = (double)0.9f, .temperature = 4,
                               .alpha = 1, .beta = 8};
    const kd_loss_entry ce = {.type = KD_LOSS_CE, .weight = 1.0 - (double)0.9f};
    kd_loss_entry hint_mlp = {.type = KD_LOSS_HINT, .weight = 1, .student = "1", .teacher = "2"};
    kd_loss_entry hint_cnn = {.type = KD_LOSS_HINT, .weight = 1, .student = "5", .teacher = "7"};
    kd_loss_entry at_cnn = {.type = KD_LOSS_AT, .weight = 100, .student = "5", .teacher = "7"};
    const kd_loss_list lists[5] = {{2, {kl, ce}}, {2, {dkd, ce}}, {3, {kl, ce, hint_mlp}},
                                   {3, {kl, ce, hint_cnn}}, {3, {kl, ce, at_cnn}}};
    printf("%-22s %-32s %12s %8s\n", "student", "step", "samples/s", "vs KL");
    int rc = 0;
    double base = 0;
    for (size_t k = 0; k < sizeof rows / sizeof rows[0] && !rc; k++) {
        const row *r = &rows[k];
        double v = measure(&students[r->student], &teachers[r->teacher], &lists[r->list], x, y,
                           steps);
        if (v < 0) rc = 1;
        if (r->list == 0) base = v;
        if (!rc)
            printf("%-22s %-32s %12.0f %8.3f\n", students[r->student].name, r->name, v,
                   v / base);
    }
    kd_free_aligned(x);
    kd_model_free(&teachers[0]);
    kd_model_free(&teachers[1]);
    return rc;
}
