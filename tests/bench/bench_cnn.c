/* bench_cnn.c - the Fashion-MNIST CNN teacher's training step (forward + CE + backward + Adam) at
 * batch 128 as samples/s and GFLOP/s against the sgemm peak and against its own products timed
 * alone (recorded from the step; target >= 80%), its forward-only
 * rate (what distillation pays per batch) and the CNN students' forward rates, with the step
 * split by layer type. The architectures are read from configs/fmnist-cnn-*.json, so the bench
 * always measures the models the experiments train. The step timed is kd_trainer_step, the one
 * `distill train` runs. Run from the repository root (make bench).
 * Usage: bench_cnn [threads]   (default: all cores) */
#include <cJSON.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/test_hooks.h"
#include "../../src/nn/layer_impl.h"
#include "kd_config.h"
#include "kd_gemm.h"
#include "kd_threads.h"
#include "kd_loss.h"
#include "kd_nn.h"
#include "kd_optim.h"
#include "kd_train.h"

#define BATCH 128
#define MAX_TYPES 16

/* Seconds per layer type, summed over the timed steps. */
typedef struct {
    size_t n;
    const char *type[MAX_TYPES];
    double fwd[MAX_TYPES], bwd[MAX_TYPES];
} split;

static size_t split_slot(split *s, const char *type) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->type[i], type) == 0) return i;
    KD_ASSERT(s->n < MAX_TYPES);
    s->type[s->n] = type;
    return s->n++;
}

/* Builds the model of configs/<name>.json (seeded He init); the input shape is the config's or,
 * as the trainer infers it from Fashion-MNIST, [1, 28, 28]. */
static int build(kd_model *m, const char *name, int with_grads, kd_rng *rng) {
    char path[256];
    kd_err err = {0};
    kd_config cfg = {0};
    int rc = -1;
    snprintf(path, sizeof path, "configs/%s.json", name);
    kd_status st = kd_config_load(&cfg, path, NULL, 0, &err);
    if (st == KD_OK) {
        kd_shape in = cfg.has_input ? cfg.input : (kd_shape){3, {1, 28, 28}};
        char *layers = cJSON_PrintUnformatted(cfg.layers);
        st = kd_model_init(m, &in, layers, with_grads, &err);
        free(layers);
    }
    if (st == KD_OK) st = kd_model_reserve(m, BATCH, &err);
    if (st != KD_OK) {
        fprintf(stderr, "bench_cnn: %s (run from the repository root)\n", err.msg);
        goto cleanup;
    }
    kd_model_init_weights(m, rng, KD_INIT_HE);
    rc = 0;
cleanup:
    kd_config_free(&cfg);
    return rc;
}

static double sgemm_peak(int reps) {
    const size_t n = 2048;
    float *a = kd_alloc_floats(n * n), *b = kd_alloc_floats(n * n), *c = kd_alloc_floats(n * n);
    for (size_t i = 0; i < n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    double best = 1e30;
    for (int rep = 0; rep < reps; rep++) {
        double t0 = kd_now();
        kd_sgemm(0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double t = kd_now() - t0;
        if (t < best) best = t;
    }
    kd_free_aligned(a);
    kd_free_aligned(b);
    kd_free_aligned(c);
    return 2.0 * n * n * n / best / 1e9;
}

/* The products one step makes, recorded through kd_hook_gemm_shape: a team's products (kd_sgemm)
 * and the one-thread products of per-sample loops (kd_sgemm_serial, recorded from several
 * threads at once, hence the atomic slot counter). */
#define MAX_PRODUCTS 8192
typedef struct {
    int ta, tb, serial;
    size_t M, N, K;
} product;
static product g_prod[MAX_PRODUCTS];
static size_t g_n_prod;

static void record_product(int ta, int tb, size_t M, size_t N, size_t K, int serial) {
    size_t i = __atomic_fetch_add(&g_n_prod, 1, __ATOMIC_RELAXED);
    if (i < MAX_PRODUCTS) g_prod[i] = (product){ta, tb, serial, M, N, K};
}

static void replay(const product *p, int serial, const float *a, const float *b, float *c) {
    (serial ? kd_sgemm_serial : kd_sgemm)(p->ta, p->tb, p->M, p->N, p->K, 1.0f, a,
                                          p->ta ? p->M : p->K, b, p->tb ? p->K : p->N, 0.0f, c,
                                          p->N);
}

/* Best-of-reps seconds of the recorded products alone, on scratch buffers: the step's "sgemm
 * rate" denominator. The team's products run one after another through kd_sgemm (the same
 * thread rule as in the step); the one-thread products all in one parallel loop, each thread
 * taking its share on its own scratch output, with no other work between them. */
static double products_time(int reps) {
    size_t cap = 1;
    const size_t n_prod = g_n_prod < MAX_PRODUCTS ? g_n_prod : MAX_PRODUCTS;
    const int nt = kd_threads_get();
    for (size_t i = 0; i < n_prod; i++) {
        const product *p = &g_prod[i];
        size_t n[3] = {p->M * p->K, p->K * p->N, p->M * p->N};
        for (int k = 0; k < 3; k++)
            if (n[k] > cap) cap = n[k];
    }
    float *a = kd_alloc_floats(cap), *b = kd_alloc_floats(cap),
          *c = kd_alloc_floats(cap * (size_t)nt);
    double best = -1;
    if (a && b && c) {
        for (size_t i = 0; i < cap; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
        best = 1e30;
        for (int r = 0; r < reps; r++) {
            double t0 = kd_now();
            for (size_t i = 0; i < n_prod; i++)
                if (!g_prod[i].serial) replay(&g_prod[i], 0, a, b, c);
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < n_prod; i++)
                if (g_prod[i].serial) replay(&g_prod[i], 1, a, b, c + cap * (size_t)omp_get_thread_num());
            double t = kd_now() - t0;
            if (t < best) best = t;
        }
    }
    kd_free_aligned(a);
    kd_free_aligned(b);
    kd_free_aligned(c);
    return best;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
/* Median of n sorted values. */
static double median(const double *v, int n) {
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* One training step, the trainer's own; returns seconds (negative on failure). */
static double train_step(kd_trainer *tr, const float *x, const int32_t *y) {
    kd_err err;
    double t0 = kd_now();
    if (kd_trainer_step(tr, x, y, NULL, BATCH, NULL, &err) != KD_OK) {
        fprintf(stderr, "bench_cnn: %s\n", err.msg);
        return -1;
    }
    return kd_now() - t0;
}

/* The name a unit's time is filed under: its layer type, or the fused layers'. */
static const char *unit_name(const kd_model *m, size_t i) {
    const size_t n = kd_model_unit_size(m, i);
    return n == 4 ? "conv2d+bn+pool+relu" : n == 3 ? "bn+pool+relu" : m->layers[i].ops->type;
}

/* kd_trainer_step's cross-entropy path with each unit (a layer or a fused group) timed: the
 * loops of kd_model_forward/backward spelled out, which the step itself cannot time. Returns
 * the seconds spent outside the layers (loss, zero_grad, Adam). */
static double train_step_split(kd_model *m, const float *x, const int32_t *y, float *dz,
                               kd_ctx *ctx, const kd_optim_cfg *oc, uint64_t t, split *s) {
    ctx->workspace = m->workspace;
    const float *in = x;
    for (size_t i = 0, n; i < m->n_layers; i += n) {
        n = kd_model_unit_size(m, i);
        double t0 = kd_now();
        kd_model_unit_forward(m, i, in, m->acts[i + n - 1], BATCH, ctx);
        s->fwd[split_slot(s, unit_name(m, i))] += kd_now() - t0;
        in = m->acts[i + n - 1];
    }
    double t0 = kd_now();
    kd_loss_ce(in, y, BATCH, m->n_classes, dz);
    kd_model_zero_grad(m);
    double other = kd_now() - t0;
    /* as in kd_model_backward: no gradient before the first parameters */
    const size_t first = kd_model_first_trainable(m);
    const float *dy = dz;
    float *spare = m->grad_a;
    for (size_t j = m->n_layers; j-- > first;) {
        const size_t i = kd_model_backward_unit_start(m, j);
        /* a view sharing its input's buffer hands dy on (as kd_model_backward) */
        if (m->layers[i].ops->view && i && m->acts[i] == m->acts[i - 1]) continue;
        float *dx = i > first ? spare : NULL;
        double t1 = kd_now();
        kd_model_unit_backward(m, i, j, i ? m->acts[i - 1] : x, dy, dx, BATCH, ctx);
        s->bwd[split_slot(s, unit_name(m, i))] += kd_now() - t1;
        j = i;
        if (dx) {
            dy = dx;
            spare = dx == m->grad_a ? m->grad_b : m->grad_a;
        }
    }
    t0 = kd_now();
    kd_optim_step(oc, m->params, m->grads, m->m, m->v, m->n_params, 1e-3f, t);
    return other + kd_now() - t0;
}

/* Best-of forward-only time at batch 128 (eval mode, as a teacher or at inference). */
static double forward_time(kd_model *m, const float *x, int reps) {
    kd_ctx ctx = {0, NULL, NULL, 0, 0, 0};
    kd_model_forward(m, x, BATCH, &ctx);
    double best = 1e30;
    for (int i = 0; i < reps; i++) {
        double t0 = kd_now();
        kd_model_forward(m, x, BATCH, &ctx);
        double t = kd_now() - t0;
        if (t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    int rc = 1;
    printf("threads: %d (OpenMP, shared with OpenBLAS: %s)\n\n", kd_threads_set(threads),
           kd_blas_is_openmp() ? "its OpenMP build" : "NOT its OpenMP build");

    kd_rng rng;
    kd_rng_seed(&rng, 1);
    kd_model teacher = {0}, tinf = {0}, small = {0}, compact = {0};
    float *x = NULL;
    kd_trainer tr = {0};
    kd_ctx ctx = {1, &rng, NULL, 0, 0, 0};
    int32_t y[BATCH];
    if (build(&teacher, "fmnist-cnn-teacher", 1, &rng) || build(&tinf, "fmnist-cnn-teacher", 0, &rng) ||
        build(&small, "fmnist-cnn-small-scratch", 0, &rng) ||
        build(&compact, "fmnist-cnn-compact-scratch", 0, &rng))
        goto cleanup;
    const size_t D = kd_shape_numel(&teacher.input);
    x = kd_alloc_floats(BATCH * D);
    for (size_t i = 0; i < BATCH * D; i++) x[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < BATCH; i++) y[i] = (int32_t)(i % teacher.n_classes);

    /* Training step: 3 warm-up steps, then the products of one step recorded. */
    kd_optim_cfg oc = kd_optim_defaults(KD_OPT_ADAM);
    kd_sched_cfg sc = {.kind = KD_SCHED_CONSTANT, .base_lr = 1e-3f};
    kd_trainer_setup ts = {0};
    ts.model = &teacher;
    ts.optim = &oc;
    ts.sched = &sc;
    ts.batch_cap = BATCH;
    ts.rng = &rng;
    kd_err err;
    if (kd_trainer_init(&tr, &ts, &err) != KD_OK) {
        fprintf(stderr, "bench_cnn: %s\n", err.msg);
        goto cleanup;
    }
    for (int i = 0; i < 3; i++)
        if (train_step(&tr, x, y) < 0) goto cleanup;
    g_n_prod = 0;
    kd_hook_gemm_shape = record_product;
    if (train_step(&tr, x, y) < 0) goto cleanup;
    kd_hook_gemm_shape = NULL;
    const size_t n_step_prod = g_n_prod;
    KD_ASSERT(n_step_prod <= MAX_PRODUCTS);
    static product step_prod[MAX_PRODUCTS];
    memcpy(step_prod, g_prod, n_step_prod * sizeof *g_prod);
    g_n_prod = 0;
    kd_hook_gemm_shape = record_product;
    forward_time(&tinf, x, 0);
    kd_hook_gemm_shape = NULL;
    const size_t n_fwd_prod = g_n_prod;
    static product fwd_prod[MAX_PRODUCTS];
    memcpy(fwd_prod, g_prod, n_fwd_prod * sizeof *g_prod);

    /* The host's speed drifts between seconds (other machines' load), so each quantity is
     * timed in every round, one after another: the rates are the best of all rounds, and each
     * ratio to the products' time is taken within a round (the same moments) and reported as
     * the median over the rounds, with its range. Step: best of 2 per round; forward: of 3. */
    enum { ROUNDS = 16 };
    const int steps = 2 * ROUNDS;
    double peak_t = 1e30, best_step = 1e30, sum_step = 0, t_step_prod = 1e30, t_tfwd = 1e30,
           t_fwd_prod = 1e30, step_ratio[ROUNDS], fwd_ratio[ROUNDS];
    const double n2048 = 2048.0;
    for (int r = 0; r < ROUNDS; r++) {
        double t = 2.0 * n2048 * n2048 * n2048 / 1e9 / sgemm_peak(1), round_step = 1e30;
        if (t < peak_t) peak_t = t;
        for (int k = 0; k < 2; k++) {
            t = train_step(&tr, x, y);
            if (t < 0) goto cleanup;
            sum_step += t;
            if (t < round_step) round_step = t;
        }
        if (round_step < best_step) best_step = round_step;
        memcpy(g_prod, step_prod, n_step_prod * sizeof *g_prod);
        g_n_prod = n_step_prod;
        t = products_time(1);
        if (t < t_step_prod) t_step_prod = t;
        step_ratio[r] = t / round_step;
        const double fwd = forward_time(&tinf, x, 3);
        if (fwd < t_tfwd) t_tfwd = fwd;
        memcpy(g_prod, fwd_prod, n_fwd_prod * sizeof *g_prod);
        g_n_prod = n_fwd_prod;
        t = products_time(1);
        if (t < t_fwd_prod) t_fwd_prod = t;
        fwd_ratio[r] = t / fwd;
    }
    qsort(step_ratio, ROUNDS, sizeof *step_ratio, cmp_double);
    qsort(fwd_ratio, ROUNDS, sizeof *fwd_ratio, cmp_double);
    const double peak = 2.0 * n2048 * n2048 * n2048 / 1e9 / peak_t;
    const double step_gflop = 6.0 * (double)kd_model_macs(&teacher) * BATCH / 1e9;
    const double step_rate = step_gflop / best_step;

    /* Per-layer-type split, averaged over 10 instrumented steps. */
    split sp = {0};
    double other = 0, split_total = 0;
    const int split_steps = 10;
    for (int i = 0; i < split_steps; i++) {
        double t0 = kd_now();
        other += train_step_split(&teacher, x, y, tr.dlogits, &ctx, &oc, ++tr.step, &sp);
        split_total += kd_now() - t0;
    }

    double t_small = forward_time(&small, x, 50);
    double t_compact = forward_time(&compact, x, 100);

    printf("teacher configs/fmnist-cnn-teacher.json: %zu parameters, %zu MACs/sample\n",
           teacher.n_params, kd_model_macs(&teacher));
    printf("%-50s %10s %9s %8s\n", "benchmark (batch 128, best of runs)", "samples/s", "GFLOP/s",
           "of peak");
    printf("%-50s %10s %9.1f %7.1f%%\n", "sgemm 2048x2048x2048 (machine peak)", "-", peak, 100.0);
    printf("%-50s %10s %9.1f %7.1f%%  (%zu products, %.2f ms)\n",
           "  its sgemm products alone (same shapes, threads)", "-", step_gflop / t_step_prod,
           100 * step_gflop / t_step_prod / peak, n_step_prod, 1e3 * t_step_prod);
    printf("%-50s %10.0f %9.1f %7.1f%%  (%.1f%% of its sgemm rate, target 80%%: median of %d "
           "rounds, %.1f-%.1f%%; best %.1f ms, mean %.1f ms)\n",
           "CNN teacher train step (fwd+CE+bwd+Adam, 6*MACs)", BATCH / best_step, step_rate,
           100 * step_rate / peak, 100 * median(step_ratio, ROUNDS), ROUNDS, 100 * step_ratio[0],
           100 * step_ratio[ROUNDS - 1], 1e3 * best_step, 1e3 * sum_step / steps);
    double fwd_rate = 2.0 * (double)kd_model_macs(&tinf) * BATCH / t_tfwd / 1e9;
    printf("%-50s %10.0f %9.1f %7.1f%%  (%.1f%% of its sgemm rate: median, %.1f-%.1f%%)\n",
           "CNN teacher forward only (eval, 2*MACs)", BATCH / t_tfwd, fwd_rate,
           100 * fwd_rate / peak, 100 * median(fwd_ratio, ROUNDS), 100 * fwd_ratio[0],
           100 * fwd_ratio[ROUNDS - 1]);
    printf("%-50s %10.0f %9.1f %7.1f%%  (%zu params, %.1fx faster than the teacher)\n",
           "small CNN student forward (fmnist-cnn-small)", BATCH / t_small,
           2.0 * (double)kd_model_macs(&small) * BATCH / t_small / 1e9,
           100 * 2.0 * (double)kd_model_macs(&small) * BATCH / t_small / 1e9 / peak,
           small.n_params, t_tfwd / t_small);
    printf("%-50s %10.0f %9.1f %7.1f%%  (%zu params, %.1fx faster than the teacher)\n",
           "compact MLP student forward (fmnist-cnn-compact)", BATCH / t_compact,
           2.0 * (double)kd_model_macs(&compact) * BATCH / t_compact / 1e9,
           100 * 2.0 * (double)kd_model_macs(&compact) * BATCH / t_compact / 1e9 / peak,
           compact.n_params, t_tfwd / t_compact);

    printf("\nteacher train step by layer type (mean of %d steps, %.1f ms each):\n", split_steps,
           1e3 * split_total / split_steps);
    printf("  %-20s %10s %10s %8s\n", "layer type", "fwd ms", "bwd ms", "share");
    for (size_t i = 0; i < sp.n; i++)
        printf("  %-20s %10.2f %10.2f %7.1f%%\n", sp.type[i], 1e3 * sp.fwd[i] / split_steps,
               1e3 * sp.bwd[i] / split_steps, 100 * (sp.fwd[i] + sp.bwd[i]) / split_total);
    printf("  %-20s %21.2f %7.1f%%\n", "CE + zero + Adam", 1e3 * other / split_steps,
           100 * other / split_total);
    rc = 0;
cleanup:
    kd_free_aligned(x);
    kd_trainer_free(&tr);
    kd_model_free(&teacher);
    kd_model_free(&tinf);
    kd_model_free(&small);
    kd_model_free(&compact);
    return rc;
}
