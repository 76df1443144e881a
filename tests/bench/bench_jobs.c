/* bench_jobs.c - distill's side of `make bench-torch` (tests/bench/side_by_side.py): one job per
 * process, so the driver reads this process's peak RSS. tests/bench/torch_jobs.py is the same
 * job in PyTorch, with the same arguments, data and architecture. Training steps are
 * kd_trainer_step, the step `distill train` runs.
 *   bench_jobs KIND ARCH [TEACHER_ARCH] [--steps N] [--batch B] [--threads T] [--data DIR]
 *              [--alpha A] [--temperature T]
 * KIND: train (CE + Adam), distill (teacher forward + student train, KL), cached (the same
 * with the teacher's logits read from a soft-target cache written before the timing, as
 * `distill train` with teacher.cache does), infer (eval forward of batches), latency
 * (one-sample forwards; B is ignored). ARCH: {"input":[...],"layers":[...]}.
 * Data: the first images of DIR/train-images-idx3-ubyte.gz (Fashion-MNIST, scaled and
 * normalised as the configs do), or seeded noise when DIR has none. Prints one line:
 *   result samples_per_s=S us_per_sample=U steps=N
 * Not run by `make bench` (it needs arguments). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_cache.h"
#include "kd_data.h"
#include "kd_gemm.h"
#include "kd_loss.h"
#include "kd_nn.h"
#include "kd_optim.h"
#include "kd_threads.h"
#include "kd_train.h"

typedef struct {
    const char *kind, *arch, *teacher, *data;
    long steps, batch, threads;
    float alpha, temperature;
} job;

/* The batches a job cycles through: n samples x (n, D), labels y. */
typedef struct {
    size_t n, D;
    float *x;
    int32_t *y;
} batches;

static int load_data(const job *j, const kd_model *m, size_t n, batches *b) {
    kd_err err;
    kd_data_source src;
    kd_preprocess pp;
    kd_dataset *ds = NULL;
    b->n = n;
    b->D = kd_shape_numel(&m->input);
    b->x = kd_alloc_floats(n * b->D);
    b->y = malloc(n * sizeof *b->y);
    if (!b->x || !b->y) return -1;
    kd_data_source_defaults(&src);
    kd_preprocess_defaults(&pp);
    src.format = KD_FMT_IDX;
    snprintf(src.path, sizeof src.path, "%s/train-images-idx3-ubyte.gz", j->data);
    snprintf(src.labels_path, sizeof src.labels_path, "%s/train-labels-idx1-ubyte.gz", j->data);
    src.subset = n;
    pp.n_channels = 1;
    pp.mean[0] = 0.286f;  /* as configs/fmnist-*.json */
    pp.std[0] = 0.353f;
    pp.flatten = m->input.rank == 1;
    size_t *idx = malloc(n * sizeof *idx);
    if (!idx) return -1;
    for (size_t i = 0; i < n; i++) idx[i] = i;
    size_t got = 0;
    int ok = kd_dataset_open(&ds, &src, &pp, &err) == KD_OK &&
             kd_dataset_info(ds)->n == n && kd_shape_numel(&kd_dataset_info(ds)->shape) == b->D &&
             kd_dataset_get(ds, idx, n, b->x, b->y, &got, &err) == KD_OK && got == n;
    kd_dataset_close(ds);
    free(idx);
    if (!ok) {  /* no Fashion-MNIST here: seeded noise of the same size (torch_jobs.py agrees) */
        fprintf(stderr, "bench_jobs: no data in %s, using noise\n", j->data);
        kd_rng rng;
        kd_rng_seed(&rng, 11);
        for (size_t i = 0; i < n * b->D; i++) b->x[i] = kd_rng_normal(&rng);
        for (size_t i = 0; i < n; i++) b->y[i] = (int32_t)(i % m->n_classes);
    }
    return 0;
}

/* A model with seeded weights; without gradients, frozen as distill's inference commands and
 * teachers run it (kd_model_freeze). */
static int build(kd_model *m, const char *arch, int with_grads, size_t batch, uint64_t seed) {
    kd_err err;
    kd_rng rng;
    if (kd_model_init_arch(m, arch, with_grads, &err) || kd_model_reserve(m, batch, &err)) {
        fprintf(stderr, "bench_jobs: %s\n", err.msg);
        return -1;
    }
    kd_rng_seed(&rng, seed);
    kd_model_init_weights(m, &rng, KD_INIT_HE);
    if (!with_grads && kd_model_freeze(m, &err)) {
        fprintf(stderr, "bench_jobs: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* The cache's fill: the teacher's logits of samples [row, row + n) of the job's data. */
typedef struct {
    kd_model *t;
    const batches *d;
} cache_src;

static kd_status fill_cache(void *user, size_t view, size_t row, size_t n, float *logits,
                            kd_err *err) {
    cache_src *c = user;
    (void)view, (void)err;
    const float *z = kd_model_forward(c->t, c->d->x + row * c->d->D, n, NULL);
    memcpy(logits, z, n * c->t->n_classes * sizeof *logits);
    return KD_OK;
}

/* Writes the teacher's logits for every sample of d to path (f32, one view) and opens it. */
static kd_status open_cache(kd_model *t, const batches *d, size_t B, const char *path,
                            kd_cache **out, kd_err *err) {
    kd_cache_meta meta = {0};
    cache_src c = {t, d};
    size_t *idx = malloc(d->n * sizeof *idx);
    if (!idx) return kd_err_set(err, KD_EIO, "out of memory");
    for (size_t i = 0; i < d->n; i++) idx[i] = i;
    meta.n_rows = d->n;
    meta.n_classes = t->n_classes;
    meta.n_teachers = 1;
    meta.views = 1;
    meta.weight[0] = 1.0;
    meta.teacher_val_acc[0] = meta.ensemble_val_acc = NAN;
    kd_status st = kd_cache_write(path, &meta, idx, B, fill_cache, &c, err);
    free(idx);
    return st ? st : kd_cache_open(out, path, err);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Runs the job; returns the seconds per sample (negative on failure). Three untimed warm-up
 * steps (first touch of buffers, thread start), then j->steps timed ones in one block. */
static double run(const job *j, kd_model *m, kd_model *t, const batches *d) {
    const size_t B = (size_t)j->batch, n_b = d->n / B;
    kd_err err;
    if (!strcmp(j->kind, "latency")) {
        double *ts = malloc((size_t)j->steps * sizeof *ts);
        if (!ts) return -1;
        for (long i = -100; i < j->steps; i++) {
            const float *x = d->x + (size_t)((i + 100) % (long)d->n) * d->D;
            double t0 = kd_now();
            kd_model_forward(m, x, 1, NULL);
            if (i >= 0) ts[i] = kd_now() - t0;
        }
        qsort(ts, (size_t)j->steps, sizeof *ts, cmp_double);
        double med = ts[(j->steps - 1) / 2];
        free(ts);
        return med;
    }
    if (!strcmp(j->kind, "infer")) {
        double t0 = 0;
        for (long i = -3; i < j->steps; i++) {
            if (i == 0) t0 = kd_now();
            kd_model_forward(m, d->x + (size_t)((i + 3) % (long)n_b) * B * d->D, B, NULL);
        }
        return (kd_now() - t0) / (double)(j->steps * j->batch);
    }
    kd_rng rng;
    kd_rng_seed(&rng, 1);
    kd_optim_cfg oc = kd_optim_defaults(KD_OPT_ADAM);
    kd_sched_cfg sc = {.kind = KD_SCHED_CONSTANT, .base_lr = 1e-3f};
    kd_distill_cfg dc = {j->alpha, j->temperature, KD_DISTILL_KL};
    kd_trainer_setup s = {0};
    kd_trainer tr = {0};
    kd_cache *cache = NULL;
    kd_teacher_set set = {0};
    size_t *idx = NULL;
    char path[64];
    const int cached = !strcmp(j->kind, "cached");
    double t0 = 0, r = -1;
    snprintf(path, sizeof path, "/tmp/bench_jobs.%d.kdc", (int)getpid());
    if (cached) {
        if (!(idx = malloc(d->n * sizeof *idx))) goto cleanup;
        for (size_t i = 0; i < d->n; i++) idx[i] = i;
        if (open_cache(t, d, B, path, &cache, &err) || kd_teacher_set_cached(&set, cache, B, &err))
            goto cleanup;
        s.teachers = &set;
    } else {
        s.teacher = t;
    }
    s.model = m;
    s.distill = t ? &dc : NULL;
    s.optim = &oc;
    s.sched = &sc;
    s.batch_cap = B;
    s.rng = &rng;
    if (kd_trainer_init(&tr, &s, &err)) goto cleanup;
    for (long i = -3; i < j->steps; i++) {
        if (i == 0) t0 = kd_now();
        size_t k = (size_t)((i + 3) % (long)n_b);
        if (kd_trainer_step(&tr, d->x + k * B * d->D, d->y + k * B, idx ? idx + k * B : NULL, B,
                            NULL, &err))
            goto cleanup;
    }
    r = (kd_now() - t0) / (double)(j->steps * j->batch);
cleanup:
    if (r < 0) fprintf(stderr, "bench_jobs: %s\n", err.msg);
    kd_trainer_free(&tr);
    kd_teacher_set_free(&set);
    kd_cache_close(cache);
    if (cached) unlink(path);
    free(idx);
    return r;
}

int main(int argc, char **argv) {
    job j = {NULL, NULL, NULL, "/usr/share/datasets/fashion-mnist", 50, 128, 2, 0.9f, 4.0f};
    int pos = 0, rc = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strncmp(a, "--", 2) && !v) break;
        if (!strcmp(a, "--steps")) j.steps = atol(argv[++i]);
        else if (!strcmp(a, "--batch")) j.batch = atol(argv[++i]);
        else if (!strcmp(a, "--threads")) j.threads = atol(argv[++i]);
        else if (!strcmp(a, "--data")) j.data = argv[++i];
        else if (!strcmp(a, "--alpha")) j.alpha = (float)atof(argv[++i]);
        else if (!strcmp(a, "--temperature")) j.temperature = (float)atof(argv[++i]);
        else if (pos == 0) j.kind = a, pos++;
        else if (pos == 1) j.arch = a, pos++;
        else if (pos == 2) j.teacher = a, pos++;
    }
    const int distill = j.kind && (!strcmp(j.kind, "distill") || !strcmp(j.kind, "cached"));
    if (!j.kind || !j.arch || j.steps < 1 || j.batch < 1 || (distill && !j.teacher) ||
        (strcmp(j.kind, "train") && !distill && strcmp(j.kind, "infer") && strcmp(j.kind, "latency"))) {
        fprintf(stderr, "usage: bench_jobs train|distill|cached|infer|latency ARCH [TEACHER_ARCH] "
                        "[--steps N] [--batch B] [--threads T] [--data DIR]\n");
        return 2;
    }
    if (!strcmp(j.kind, "latency")) j.batch = 1;
    kd_threads_set((int)j.threads);
    const int train = distill || !strcmp(j.kind, "train");
    kd_model m = {0}, t = {0};
    batches d = {0};
    const size_t n_batches = j.steps < 20 ? (size_t)j.steps : 20;
    if (build(&m, j.arch, train, (size_t)j.batch, 1) ||
        (distill && build(&t, j.teacher, 0, (size_t)j.batch, 2)) ||
        load_data(&j, &m, n_batches * (size_t)j.batch, &d))
        goto cleanup;
    double sec = run(&j, &m, distill ? &t : NULL, &d);
    if (sec <= 0) goto cleanup;
    printf("result samples_per_s=%.1f us_per_sample=%.3f steps=%ld threads=%d openmp_blas=%d\n",
           1.0 / sec, 1e6 * sec, j.steps, kd_threads_get(), kd_blas_is_openmp());
    rc = 0;
cleanup:
    kd_model_free(&m);
    kd_model_free(&t);
    kd_free_aligned(d.x);
    free(d.y);
    return rc;
}
