/* bench_train.c - sgemm peak, the MLP training step, the distillation step and the MLP
 * teacher's batch-1000 inference, each as samples/s and GFLOP/s against the sgemm rate on the
 * same shapes (docs/design.md). Both steps are kd_trainer_step, the step `distill train`
 * runs; inference is kd_model_forward of an inference-only model, as `distill eval` runs it.
 * Usage: bench_train [threads]   (default: all cores)
 *        bench_train --peak [threads]   the 2048^3 sgemm alone (best of 5): one line
 *                                       "peak_gflops=G core=NAME", for the Makefile's
 *                                       unpinned run (OpenBLAS reads OPENBLAS_CORETYPE when it
 *                                       loads, so the other kernels need another process)
 * With KD_UNPINNED_PEAK=G and KD_UNPINNED_CORE=NAME in the environment (`make bench` sets them
 * from that run) every fraction of peak is also given against that peak. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "kd_gemm.h"
#include "kd_threads.h"
#include "kd_loss.h"
#include "kd_nn.h"
#include "kd_optim.h"
#include "kd_train.h"

#define BATCH 128
#define INFER_BATCH 1000

typedef struct {
    size_t n;
    float *a, *b, *c;
} square_ctx;

static double run_square(void *p) {
    square_ctx *s = p;
    double t0 = kd_now();
    kd_sgemm(0, 0, s->n, s->n, s->n, 1.0f, s->a, s->n, s->b, s->n, 0.0f, s->c, s->n);
    return kd_now() - t0;
}

/* The products one training step of a dense stack makes at batch B, with the same shapes and
 * transposes as src/nn/dense.c: forward y = x W^T; backward dW += dy^T x, dx = dy W (not for
 * the first layer). fwd_only: teacher or inference. */
typedef struct {
    size_t n_layers;
    size_t dims[8];
    int fwd_only;
    size_t batch;
    float *x, *w, *y;
} shapes_ctx;

static double flops_of_shapes(const shapes_ctx *s) {
    double f = 0;
    for (size_t l = 0; l < s->n_layers; l++) {
        double macs = (double)s->batch * s->dims[l] * s->dims[l + 1];
        f += 2 * macs;
        if (!s->fwd_only) f += 2 * macs + (l > 0 ? 2 * macs : 0);
    }
    return f;
}

static double run_shapes(void *p) {
    shapes_ctx *s = p;
    double t0 = kd_now();
    for (size_t l = 0; l < s->n_layers; l++) {
        size_t in = s->dims[l], out = s->dims[l + 1];
        kd_sgemm(0, 1, s->batch, out, in, 1.0f, s->x, in, s->w, in, 0.0f, s->y, out);
    }
    if (!s->fwd_only)
        for (size_t l = s->n_layers; l-- > 0;) {
            size_t in = s->dims[l], out = s->dims[l + 1];
            kd_sgemm(1, 0, out, in, s->batch, 1.0f, s->y, out, s->x, in, 1.0f, s->w, in);
            if (l > 0)
                kd_sgemm(0, 0, s->batch, in, out, 1.0f, s->y, out, s->w, in, 0.0f, s->x, in);
        }
    return kd_now() - t0;
}

static double run_two(shapes_ctx *a, shapes_ctx *b, int reps) {
    double best = 1e30;
    for (int i = 0; i < reps; i++) {
        double t = run_shapes(a) + (b ? run_shapes(b) : 0);
        if (t < best) best = t;
    }
    return best;
}

static cJSON *mlp_layers(const size_t *dims, size_t n_layers, float dropout) {
    cJSON *arr = cJSON_CreateArray();
    for (size_t l = 0; l < n_layers; l++) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "type", "dense");
        cJSON_AddNumberToObject(d, "units", (double)dims[l + 1]);
        cJSON_AddItemToArray(arr, d);
        if (l + 1 < n_layers) {
            cJSON *r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "type", "relu");
            cJSON_AddItemToArray(arr, r);
            if (dropout > 0) {
                cJSON *dr = cJSON_CreateObject();
                cJSON_AddStringToObject(dr, "type", "dropout");
                cJSON_AddNumberToObject(dr, "p", dropout);
                cJSON_AddItemToArray(arr, dr);
            }
        }
    }
    return arr;
}

static int build(kd_model *m, const size_t *dims, size_t n_layers, int with_grads, size_t batch,
                 kd_rng *rng) {
    kd_err err;
    kd_shape in = {1, {dims[0]}};
    cJSON *spec = mlp_layers(dims, n_layers, with_grads ? 0.5f : 0.0f);
    char *layers = spec ? cJSON_PrintUnformatted(spec) : NULL;
    kd_status st = kd_model_init(m, &in, layers, with_grads, &err);
    free(layers);
    cJSON_Delete(spec);
    if (st == KD_OK) st = kd_model_reserve(m, batch, &err);
    if (st != KD_OK) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return -1;
    }
    kd_model_init_weights(m, rng, KD_INIT_HE);
    return 0;
}

static float *alloc_shapes(shapes_ctx *s) {
    size_t maxd = 0;
    for (size_t l = 0; l <= s->n_layers; l++)
        if (s->dims[l] > maxd) maxd = s->dims[l];
    s->x = kd_alloc_floats(s->batch * maxd);
    s->y = kd_alloc_floats(s->batch * maxd);
    s->w = kd_alloc_floats(maxd * maxd);
    return s->x;
}

static void free_shapes(shapes_ctx *s) {
    kd_free_aligned(s->x);
    kd_free_aligned(s->y);
    kd_free_aligned(s->w);
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
/* Median of n sorted values. */
static double median(const double *v, int n) {
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* "; P% of the unpinned peak (CORE)" when the Makefile measured it and it ran other kernels
 * than this process, else "": the same kernels timed a minute apart differ only by the
 * machine's drift, and a ratio of two such timings reads as a gain that is not there. */
static int unpinned_same_kernels(void) {
    const char *core = getenv("KD_UNPINNED_CORE");
    return core && !strcmp(core, kd_blas_corename());
}
static const char *unpinned(double gflops) {
    static char buf[96];
    const char *g = getenv("KD_UNPINNED_PEAK"), *core = getenv("KD_UNPINNED_CORE");
    const double peak = g ? atof(g) : 0;
    buf[0] = 0;
    if (peak > 0 && !unpinned_same_kernels())
        snprintf(buf, sizeof buf, "; %.0f%% of the unpinned peak (%s)", 100 * gflops / peak,
                 core ? core : "?");
    return buf;
}

int main(int argc, char **argv) {
    const int peak_only = argc > 1 && !strcmp(argv[1], "--peak");
    if (peak_only) argc--, argv++;
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    if (peak_only) {
        kd_threads_set(threads);
        square_ctx sq = {2048, kd_alloc_floats(2048 * 2048), kd_alloc_floats(2048 * 2048),
                         kd_alloc_floats(2048 * 2048)};
        for (size_t i = 0; i < sq.n * sq.n; i++) sq.a[i] = sq.b[i] = (float)(i % 7) * 0.1f;
        double best = 1e30;
        for (int r = 0; r < 5; r++) {
            const double t = run_square(&sq);
            if (t < best) best = t;
        }
        printf("peak_gflops=%.1f core=%s\n", 2.0 * sq.n * sq.n * sq.n / best / 1e9,
               kd_blas_corename());
        kd_free_aligned(sq.a);
        kd_free_aligned(sq.b);
        kd_free_aligned(sq.c);
        return 0;
    }
    printf("threads: %d (OpenMP, shared with OpenBLAS: %s)\n\n", kd_threads_set(threads),
           kd_blas_is_openmp() ? "its OpenMP build" : "NOT its OpenMP build");

    /* 1. Peak: large square products. */
    square_ctx sq = {2048, NULL, NULL, NULL};
    sq.a = kd_alloc_floats(sq.n * sq.n);
    sq.b = kd_alloc_floats(sq.n * sq.n);
    sq.c = kd_alloc_floats(sq.n * sq.n);
    for (size_t i = 0; i < sq.n * sq.n; i++) sq.a[i] = sq.b[i] = (float)(i % 7) * 0.1f;
    run_square(&sq);

    /* 2. MLP 784-1200-1200-10 training step: sgemm alone on its shapes vs the whole step. */
    static const size_t tdims[] = {784, 1200, 1200, 10};
    static const size_t sdims[] = {784, 800, 800, 10};
    shapes_ctx tsh = {3, {784, 1200, 1200, 10}, 0, BATCH, 0, 0, 0};
    alloc_shapes(&tsh);
    run_shapes(&tsh);

    kd_rng rng;
    kd_rng_seed(&rng, 1);
    kd_model teacher = {0}, student = {0}, tinf = {0}, wide = {0};
    if (build(&teacher, tdims, 3, 1, BATCH, &rng) || build(&student, sdims, 3, 1, BATCH, &rng) ||
        build(&tinf, tdims, 3, 0, BATCH, &rng) || build(&wide, tdims, 3, 0, INFER_BATCH, &rng))
        return 1;
    float *x = kd_alloc_floats(INFER_BATCH * 784);
    int32_t y[BATCH];
    for (size_t i = 0; i < INFER_BATCH * 784; i++) x[i] = kd_rng_uniform(&rng);
    for (size_t i = 0; i < BATCH; i++) y[i] = (int32_t)(i % 10);
    kd_optim_cfg oc = kd_optim_defaults(KD_OPT_ADAM);
    kd_sched_cfg sc = {.kind = KD_SCHED_CONSTANT, .base_lr = 1e-3f};
    kd_distill_cfg dc = {0.9f, 4.0f, KD_DISTILL_KL};
    kd_trainer_setup ts = {0};
    ts.optim = &oc;
    ts.sched = &sc;
    ts.batch_cap = BATCH;
    ts.rng = &rng;
    kd_trainer train = {0}, distill = {0};
    kd_err err;
    ts.model = &teacher;
    if (kd_trainer_init(&train, &ts, &err) != KD_OK) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 1;
    }
    ts.model = &student;
    ts.teacher = &tinf;
    ts.distill = &dc;
    if (kd_trainer_init(&distill, &ts, &err) != KD_OK) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 1;
    }

    /* 3. Distillation step: teacher forward + student forward/backward/update. */
    shapes_ctx ssh = {3, {784, 800, 800, 10}, 0, BATCH, 0, 0, 0};
    shapes_ctx tfwd = {3, {784, 1200, 1200, 10}, 1, BATCH, 0, 0, 0};
    alloc_shapes(&ssh);
    alloc_shapes(&tfwd);
    run_two(&tfwd, &ssh, 2);

    /* 4. The teacher's inference at batch 1000 (eval, forward only) against its three products. */
    shapes_ctx ish = {3, {784, 1200, 1200, 10}, 1, INFER_BATCH, 0, 0, 0};
    alloc_shapes(&ish);
    run_shapes(&ish);

    /* The host's speed drifts between seconds (other machines' load), so every quantity is
     * timed in each of the rounds, one after another: the rates are the best of all rounds,
     * and each step's ratio to its products' rate is taken within a round (the same moments)
     * and reported as the median over the rounds, with its range. */
    enum { ROUNDS = 15 };
    double t_sq = 1e30, t_tshapes = 1e30, t_dshapes = 1e30, best_step = 1e30, best_d = 1e30;
    double t_ishapes = 1e30, best_inf = 1e30;
    double r_step[ROUNDS], r_d[ROUNDS], r_inf[ROUNDS];
    const double step_flops = 6.0 * (double)kd_model_macs(&teacher) * BATCH;
    const double dflops_shapes = flops_of_shapes(&tfwd) + flops_of_shapes(&ssh);
    double dflops = (2.0 * (double)kd_model_macs(&tinf) + 6.0 * (double)kd_model_macs(&student)) * BATCH;
    const double iflops = 2.0 * (double)kd_model_macs(&wide) * INFER_BATCH;
    kd_model_forward(&wide, x, INFER_BATCH, NULL);
    for (int i = 0; i < 3; i++)
        if (kd_trainer_step(&train, x, y, NULL, BATCH, NULL, &err) != KD_OK ||
            kd_trainer_step(&distill, x, y, NULL, BATCH, NULL, &err) != KD_OK) {
            fprintf(stderr, "bench: %s\n", err.msg);
            return 1;
        }
    for (int r = 0; r < ROUNDS; r++) {
        double t = run_square(&sq), round_step = 1e30, round_d = 1e30;
        if (t < t_sq) t_sq = t;
        const double round_tsh = run_two(&tsh, NULL, 2);
        if (round_tsh < t_tshapes) t_tshapes = round_tsh;
        const double round_dsh = run_two(&tfwd, &ssh, 2);
        if (round_dsh < t_dshapes) t_dshapes = round_dsh;
        for (int k = 0; k < 2; k++) {
            double t0 = kd_now();
            if (kd_trainer_step(&train, x, y, NULL, BATCH, NULL, &err) != KD_OK) {
                fprintf(stderr, "bench: %s\n", err.msg);
                return 1;
            }
            t = kd_now() - t0;
            if (t < round_step) round_step = t;
            t0 = kd_now();
            if (kd_trainer_step(&distill, x, y, NULL, BATCH, NULL, &err) != KD_OK) {
                fprintf(stderr, "bench: %s\n", err.msg);
                return 1;
            }
            t = kd_now() - t0;
            if (t < round_d) round_d = t;
        }
        const double round_ish = run_two(&ish, NULL, 2);
        if (round_ish < t_ishapes) t_ishapes = round_ish;
        double round_inf = 1e30;
        for (int k = 0; k < 2; k++) {
            double t0 = kd_now();
            kd_model_forward(&wide, x, INFER_BATCH, NULL);
            t = kd_now() - t0;
            if (t < round_inf) round_inf = t;
        }
        if (round_inf < best_inf) best_inf = round_inf;
        r_inf[r] = iflops * round_ish / (flops_of_shapes(&ish) * round_inf);
        if (round_step < best_step) best_step = round_step;
        if (round_d < best_d) best_d = round_d;
        r_step[r] = step_flops * round_tsh / (flops_of_shapes(&tsh) * round_step);
        r_d[r] = dflops * round_dsh / (dflops_shapes * round_d);
    }
    qsort(r_step, ROUNDS, sizeof *r_step, cmp_double);
    qsort(r_d, ROUNDS, sizeof *r_d, cmp_double);
    qsort(r_inf, ROUNDS, sizeof *r_inf, cmp_double);
    kd_free_aligned(sq.a);
    kd_free_aligned(sq.b);
    kd_free_aligned(sq.c);
    const double peak = 2.0 * sq.n * sq.n * sq.n / t_sq / 1e9;
    const double gemm_rate_t = flops_of_shapes(&tsh) / t_tshapes / 1e9;
    const double step_rate = step_flops / best_step / 1e9;
    const double gemm_rate_d = dflops_shapes / t_dshapes / 1e9;
    double d_rate = dflops / best_d / 1e9;
    const double gemm_rate_i = flops_of_shapes(&ish) / t_ishapes / 1e9;
    const double inf_rate = iflops / best_inf / 1e9;

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%-52s %12s %10s %8s\n", "benchmark (batch 128, best of runs)", "samples/s", "GFLOP/s",
           "ratio");
    printf("%-52s %12s %10.1f %8s  (%s kernels%s)\n", "sgemm 2048x2048x2048 (machine peak)", "-",
           peak, "1.00", kd_blas_corename(),
           unpinned_same_kernels() ? ", as unpinned: nothing pins OpenBLAS" : unpinned(peak));
    printf("%-52s %12s %10.1f %7.2f%%\n", "sgemm on MLP 784-1200-1200-10 train shapes", "-",
           gemm_rate_t, 100 * gemm_rate_t / peak);
    printf("%-52s %12.0f %10.1f %7.2f%%  (of its sgemm rate: median of %d rounds, %.1f-%.1f%%; "
           "%.0f%% of peak%s)\n",
           "MLP 784-1200-1200-10 train step (fwd+bwd+Adam)", BATCH / best_step, step_rate,
           100 * median(r_step, ROUNDS), ROUNDS, 100 * r_step[0], 100 * r_step[ROUNDS - 1],
           100 * step_rate / peak, unpinned(step_rate));
    printf("%-52s %12s %10.1f %7.2f%%\n", "sgemm on distillation shapes (T fwd + S train)", "-",
           gemm_rate_d, 100 * gemm_rate_d / peak);
    printf("%-52s %12.0f %10.1f %7.2f%%  (of its sgemm rate: median, %.1f-%.1f%%; %.0f%% of "
           "peak%s)\n",
           "distill step 1200x2 teacher -> 800x2 student", BATCH / best_d, d_rate,
           100 * median(r_d, ROUNDS), 100 * r_d[0], 100 * r_d[ROUNDS - 1], 100 * d_rate / peak,
           unpinned(d_rate));
    printf("%-52s %12s %10.1f %7.2f%%\n", "sgemm on MLP teacher inference shapes (batch 1000)",
           "-", gemm_rate_i, 100 * gemm_rate_i / peak);
    printf("%-52s %12.0f %10.1f %7.2f%%  (of its sgemm rate: median, %.1f-%.1f%%; %.0f%% of "
           "peak%s)\n",
           "MLP 784-1200-1200-10 inference, batch 1000", INFER_BATCH / best_inf, inf_rate,
           100 * median(r_inf, ROUNDS), 100 * r_inf[0], 100 * r_inf[ROUNDS - 1],
           100 * inf_rate / peak, unpinned(inf_rate));
    printf("peak RSS: %.1f MiB (48 MiB of it the three 2048x2048 matrices of the peak)\n",
           ru.ru_maxrss / 1024.0);

    free_shapes(&tsh);
    free_shapes(&ssh);
    free_shapes(&tfwd);
    free_shapes(&ish);
    kd_free_aligned(x);
    kd_trainer_free(&train);
    kd_trainer_free(&distill);
    kd_model_free(&teacher);
    kd_model_free(&student);
    kd_model_free(&tinf);
    kd_model_free(&wide);
    return 0;
}
