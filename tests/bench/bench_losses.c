/* bench_losses.c - the distillation step per loss: a KL step (today's alpha 0.9, T 4) and a DKD
 * step (dkd weight 0.9 + ce 0.1, T 4) on the compact student (784-128-10) and the cnn-small
 * student ([1, 28, 28], two conv/pool/relu blocks), each from the MLP teacher (784-1200-1200-10,
 * online, its forward part of every step); then KL + hint (weight 1) on the compact student
 * (its hidden [128] to the MLP teacher's first hidden [1200]: a dense adapter) and, from a CNN
 * teacher (two conv/bn/pool/relu blocks of 32 and 64 channels, dense 256), KL, KL + hint and
 * KL + at on cnn-small (its last block [32, 7, 7] to the teacher's [64, 7, 7]); and the KL and
 * DKD steps of the compact student from the MLP teacher's logits in a cache (built in memory
 * with kd_cache_build and read through kd_teacher_set_cached, as `distill train` reads
 * teacher.cache: no teacher forward in the step, so the losses' own cost shows), as samples/s
 * and the ratio to the KL step of the same student and teacher. Each row's trainer and that
 * KL step's take their steps in turn (on a shared machine, rows measured one after the other
 * differed by more than the losses did). Every step is kd_trainer_step, the step
 * `distill train` runs.
 * Usage: bench_losses [threads] [steps]   (default: all cores, 40 steps per round; the cached
 * rows take 10 times as many, their steps being about a tenth as long) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_cache.h"
#include "kd_loss.h"
#include "kd_nn.h"
#include "kd_optim.h"
#include "kd_teacher.h"
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

/* The rows: a student, a teacher (CACHED: the cache of the MLP teacher's logits) and a loss
 * list (an index into main's lists); the first row of each student and teacher pair is the KL
 * step the others are compared with. */
#define CACHED 2
typedef struct {
    size_t student, teacher, list;
    const char *name;
} row;
static const row rows[] = {
    {0, 0, 0, "KL step (online MLP teacher)"},
    {0, 0, 1, "DKD step (online MLP teacher)"},
    {0, 0, 2, "KL + hint (MLP teacher)"},
    {0, CACHED, 0, "KL step (cached compact)"},
    {0, CACHED, 1, "DKD step (cached compact)"},
    {1, 0, 0, "KL step (online MLP teacher)"},
    {1, 0, 1, "DKD step (online MLP teacher)"},
    {1, 1, 0, "KL step (online CNN teacher)"},
    {1, 1, 3, "KL + hint (CNN teacher)"},
    {1, 1, 4, "KL + at (CNN teacher)"},
};

static int build(kd_model *m, const kd_shape *in, const char *layers, int with_grads,
                 uint64_t seed, kd_rng *rng) {
    kd_err err;
    kd_status st = kd_model_init(m, in, layers, with_grads, &err);
    if (st == KD_OK) st = kd_model_reserve(m, BATCH, &err);
    if (st != KD_OK) {
        fprintf(stderr, "bench_losses: %s\n", err.msg);
        return -1;
    }
    kd_rng_seed(rng, seed);
    kd_model_init_weights(m, rng, KD_INIT_HE);
    return 0;
}

static const kd_shape img = {3, {1, 28, 28}};

/* The trainer of a row with its own student and online teacher (teacher t from seed 2 + t: the
 * same weights in every arm), so that two arms can take steps in turn. */
typedef struct {
    kd_model student, teacher;
    kd_teacher_set cached;
    kd_optim_cfg oc;
    kd_sched_cfg sc;
    kd_rng rng, trng;
    kd_trainer t;
    double elapsed, best;  /* this round's seconds; the best round's samples/s */
} arm;

static void arm_free(arm *a) {
    kd_trainer_free(&a->t);
    kd_teacher_set_free(&a->cached);
    kd_model_free(&a->student);
    kd_model_free(&a->teacher);
}

/* The row's trainer, its teacher online or (CACHED) the cache's rows of samples 0 .. BATCH - 1. */
static int arm_init(arm *a, const row *r, const kd_loss_list *l, const kd_cache *cache) {
    memset(a, 0, sizeof *a);
    const student *s = &students[r->student];
    kd_err err;
    if (build(&a->student, &s->input, s->layers, 1, 1, &a->rng)) return -1;
    kd_trainer_setup ts = {0};
    if (r->teacher == CACHED) {
        if (kd_teacher_set_cached(&a->cached, cache, BATCH, &err) != KD_OK) goto fail;
        ts.teachers = &a->cached;
    } else {
        if (build(&a->teacher, &img, teacher_layers[r->teacher], 0, 2 + r->teacher, &a->trng))
            return -1;
        ts.teacher = &a->teacher;
    }
    a->oc = kd_optim_defaults(KD_OPT_ADAM);
    a->sc = (kd_sched_cfg){.kind = KD_SCHED_CONSTANT, .base_lr = 1e-3f};
    ts.model = &a->student;
    ts.losses = l;
    ts.optim = &a->oc;
    ts.sched = &a->sc;
    ts.batch_cap = BATCH;
    ts.rng = &a->rng;
    if (kd_trainer_init(&a->t, &ts, &err) == KD_OK) return 0;
fail:
    fprintf(stderr, "bench_losses: %s\n", err.msg);
    return -1;
}

/* ROUNDS rounds of `steps` steps of each of the n arms, their steps taken in turn so that the
 * load of other processes falls on them alike; sets each arm's best round in samples/s. */
static int run_rounds(arm *const *a, size_t n, const float *x, const int32_t *y, int steps) {
    size_t idx[BATCH];
    for (size_t i = 0; i < BATCH; i++) idx[i] = i;
    for (size_t j = 0; j < n; j++) a[j]->best = 0;
    kd_err err;
    for (int r = 0; r < ROUNDS; r++) {
        for (size_t j = 0; j < n; j++) a[j]->elapsed = 0;
        for (int k = 0; k < steps; k++)
            for (size_t j = 0; j < n; j++) {
                double t0 = kd_now();
                if (kd_trainer_step(&a[j]->t, x, y, idx, BATCH, NULL, &err) != KD_OK) {
                    fprintf(stderr, "bench_losses: %s\n", err.msg);
                    return -1;
                }
                a[j]->elapsed += kd_now() - t0;
            }
        for (size_t j = 0; j < n; j++) {
            double rate = BATCH * (double)steps / a[j]->elapsed;
            if (rate > a[j]->best) a[j]->best = rate;
        }
    }
    return 0;
}

/* The cache's rows: the online MLP teacher's logits of the bench batch (one view). */
static kd_status teacher_rows(void *user, size_t view, size_t r0, size_t n, float *logits,
                              kd_err *err) {
    (void)view;
    (void)err;
    const void *const *u = user;
    kd_model *teacher = (kd_model *)u[0];
    const float *x = u[1];
    const float *z = kd_model_forward(teacher, x + r0 * 784, n, NULL);
    memcpy(logits, z, n * teacher->n_classes * sizeof *logits);
    return KD_OK;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    int steps = argc > 2 ? atoi(argv[2]) : 40;
    if (steps < 1) steps = 1;
    printf("threads: %d; %d steps per round (cached rows 10x), best of %d rounds, batch %d; each row's steps "
           "taken in turn with its KL step's\n", kd_threads_set(threads), steps, ROUNDS, BATCH);
    kd_rng rng;
    kd_model mlp = {0};
    if (build(&mlp, &img, teacher_layers[0], 0, 2, &rng)) return 1;
    kd_rng_seed(&rng, 3);
    float *x = kd_alloc_floats(BATCH * 784);
    int32_t y[BATCH];
    if (!x) return 1;
    for (size_t i = 0; i < BATCH * 784; i++) x[i] = kd_rng_uniform(&rng);
    for (size_t i = 0; i < BATCH; i++) y[i] = (int32_t)(i % 10);
    kd_cache_meta meta = {.n_rows = BATCH, .n_classes = 10, .n_teachers = 1,
                          .dtype = KD_CACHE_F32, .views = 1, .weight = {1.0},
                          .teacher_val_acc = {NAN}, .ensemble_val_acc = NAN};
    size_t rows_idx[BATCH];
    for (size_t i = 0; i < BATCH; i++) rows_idx[i] = i;
    const void *user[2] = {&mlp, x};
    kd_cache *cache = NULL;
    kd_err err;
    if (kd_cache_build(&cache, "bench", &meta, rows_idx, BATCH, teacher_rows, user, &err)) {
        fprintf(stderr, "bench_losses: %s\n", err.msg);
        return 1;
    }
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
    arm base, other;
    int have_base = 0;
    for (size_t k = 0; k < sizeof rows / sizeof rows[0] && !rc; k++) {
        const row *r = &rows[k];
        const char *name = students[r->student].name;
        const int n = r->teacher == CACHED ? 10 * steps : steps;
        if (r->list == 0) {  /* a new student and teacher pair: its KL step alone */
            if (have_base) arm_free(&base);
            have_base = 1;
            arm *one[1] = {&base};
            if (arm_init(&base, r, &lists[0], cache) || run_rounds(one, 1, x, y, n)) {
                rc = 1;
                break;
            }
            printf("%-22s %-32s %12.0f %8.3f\n", name, r->name, base.best, 1.0);
            continue;
        }
        arm *two[2] = {&base, &other};
        if (arm_init(&other, r, &lists[r->list], cache) || run_rounds(two, 2, x, y, n))
            rc = 1;
        else
            printf("%-22s %-32s %12.0f %8.3f\n", name, r->name, other.best,
                   other.best / base.best);
        arm_free(&other);
    }
    if (have_base) arm_free(&base);
    kd_cache_close(cache);
    kd_free_aligned(x);
    kd_model_free(&mlp);
    return rc;
}
