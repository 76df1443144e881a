/* bench_ort.c - distill's side of `make bench-ort` (tests/bench/bench_ort.py): a config's model
 * with seeded random weights, exported to ONNX for ONNX Runtime, and the same model's forward
 * timed here on the same preprocessed test images.
 *   bench_ort prepare CONFIG DIR [--n N] [--qint8 1]
 *                                          DIR/model.onnx (no preprocessing node: it takes
 *                                          the preprocessed inputs) and DIR/input.f32, the first
 *                                          N test samples preprocessed as the config says; with
 *                                          --qint8 1 also DIR/model_qint8.onnx, the same model
 *                                          quantized (ranges from those N samples) as QDQ
 *   bench_ort run CONFIG DIR --batch B [--budget S] [--threads T] [--logits OUT.f32]
 *                 [--onnx FILE.onnx]       one timing round: prints one line; with --onnx
 *                                          the model is that file as distill's ONNX reader
 *                                          translates it (a teacher's path), not the config's
 *                                          seeded model (CONFIG then only names the command)
 *   bench_ort logits MODEL.onnx DIR --n N [--threads T] --logits OUT.f32
 *                                          no timing: the ONNX file's logits on the first N
 *                                          samples of DIR/input.f32 (the full-size ORT check,
 *                                          tests/onnx_fullsize.sh)
 *                                          (--split 0: dense layers on the team's sgemm, the
 *                                          path before issue 29, for A/B timings;
 *                                          --replicas 0: every layer on the team, the inference
 *                                          path before replicas; --direct 0 | 1: direct
 *                                          convolution never | always, default where it wins;
 *                                          --own 0 | 1: convolutions' own product never |
 *                                          always, default where it wins; --winograd 0 | 1:
 *                                          3x3 convolutions by Winograd never | wherever the
 *                                          shape allows, default by conv2d.c's rule; --alone 0:
 *                                          no products timed alone, for a profile;
 *                                          --banded 0: one sample never split by rows among
 *                                          the team (exec.c); --wg-frozen 0 | 1: a frozen
 *                                          model's one sample never | wherever the shape allows
 *                                          by Winograd (wg_frozen.c); --single-only 1: only
 *                                          single_us)
 *   result samples_per_s=.. best_samples_per_s=.. single_us=.. gflops=.. sgemm_gflops=..
 *          peak_gflops=.. core=..
 * samples_per_s: batch-B forwards of the first B samples (median pass of those run within the
 * budget; best_: the fastest pass, steadier for an A/B on a shared machine); single_us: one-sample forward latency (p50); gflops: 2 * MACs * B / pass time;
 * sgemm_gflops: the same products the forward makes (recorded through the gemm hook) timed
 * alone, in the same threading; peak_gflops: a 1024^3 sgemm on the whole team (best of 5).
 * The weights come from a fixed seed, so every run and both sides see the same model.
 * Not run by `make bench` (it needs arguments). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/test_hooks.h"
#include "kd_config.h"
#include "kd_eval.h"
#include "kd_export.h"
#include "kd_gemm.h"
#include "kd_onnx.h"
#include "kd_quant.h"
#include "kd_threads.h"

/* Room for every product of one forward: Winograd makes 16 per sample and layer. */
#define MAX_PRODUCTS ((size_t)1 << 20)

typedef struct {
    int ta, tb, serial;
    size_t M, N, K;
} product;

static product products[MAX_PRODUCTS];
static size_t n_products;
static int time_alone = 1; /* --alone 0: no sgemm_gflops (a profile of the forward alone) */
static int single_only;    /* --single-only 1: the one-sample p50 alone, over the whole budget */

/* The gemm hook: the shapes one forward multiplies. Per-chunk loops call it from several
 * threads at once, hence the critical section (the timing pass runs without the hook). */
static void record(int ta, int tb, size_t M, size_t N, size_t K, int serial) {
#pragma omp critical(bench_ort_record)
    if (n_products < MAX_PRODUCTS) products[n_products++] = (product){ta, tb, serial, M, N, K};
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The config's student (its "model"), built for batch B (0: not reserved) with weights from
 * seed 7. */
static kd_status build(const char *config, kd_model *m, kd_eval_data *d, kd_dataset **ds,
                       size_t B, kd_err *err) {
    kd_rng rng;
    kd_status st = kd_eval_data_from_config(d, config, NULL, 0, "test", err);
    if (!st) st = kd_eval_data_open(d, &d->pp, ds, err);
    if (st) return st;
    char *arch = kd_eval_data_arch(d, 0, &kd_dataset_info(*ds)->shape);
    if (!arch) return kd_err_set(err, KD_EUSAGE, "%s: no model layers", config);
    st = kd_model_init_arch(m, arch, 0, err);
    free(arch);
    /* Not reserved for prepare: quantization observes the values as it reserves. */
    if (!st && B) st = kd_model_reserve(m, B, err);
    if (st) return st;
    kd_rng_seed(&rng, 7);
    kd_model_init_weights(m, &rng, KD_INIT_HE);
    return KD_OK;
}

/* The model quantized with ranges from the n samples x, as DIR/model_qint8.onnx (QDQ). */
static kd_status prepare_qint8(kd_model *m, const float *x, size_t n, const char *dir,
                               kd_err *err) {
    char path[4200];
    kd_qmodel q;
    kd_export_info info = {0};
    info.n_classes = m->n_classes;
    memset(&q, 0, sizeof q);
    kd_status st = kd_quant_build(m, x, n, &q, err);
    snprintf(path, sizeof path, "%s/model_qint8.onnx", dir);
    if (!st) st = kd_export_onnx_qint8(path, &q, &m->input, &info, err);
    kd_qmodel_free(&q);
    return st;
}

static kd_status prepare(kd_model *m, kd_dataset *ds, const char *dir, size_t n, int qint8,
                         kd_err *err) {
    char path[4200];
    const size_t D = kd_shape_numel(&m->input);
    kd_status st = KD_OK;
    float *x = malloc(n * D * sizeof *x);
    size_t *idx = malloc(n * sizeof *idx);
    FILE *f = NULL;
    if (!x || !idx) {
        st = kd_err_set(err, KD_EIO, "out of memory");
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) idx[i] = i;
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    kd_export_info info = {0};
    info.n_classes = m->n_classes;
    if ((st = kd_export_onnx(path, m, &info, err))) goto cleanup;
    if ((st = kd_dataset_get(ds, idx, n, x, NULL, NULL, err))) goto cleanup;
    if (qint8 && (st = prepare_qint8(m, x, n, dir, err))) goto cleanup;
    snprintf(path, sizeof path, "%s/input.f32", dir);
    if (!(f = fopen(path, "wb")) || fwrite(x, sizeof *x, n * D, f) != n * D || fclose(f)) {
        f = NULL;
        st = kd_err_set(err, KD_EIO, "%s: cannot write", path);
        goto cleanup;
    }
    f = NULL;
    printf("shape");
    for (int k = 0; k < (int)m->input.rank; k++) printf("%c%zu", k ? ',' : ' ', m->input.d[k]);
    printf(" classes %zu macs %zu\n", m->n_classes, kd_model_macs(m));
cleanup:
    if (f) fclose(f);
    free(x);
    free(idx);
    return st;
}

/* Seconds for the recorded products run alone: serial ones shared by the team as the
 * per-chunk loops share them, the others one after another through kd_sgemm. Best of reps. */
static double products_alone(float *a, float *b, float *c, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = kd_now();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n_products; i++) {
            const product *p = &products[i];
            if (p->serial)
                kd_sgemm_serial(p->ta, p->tb, p->M, p->N, p->K, 1.0f, a, p->ta ? p->M : p->K, b,
                                p->tb ? p->K : p->N, 0.0f, c + (size_t)omp_get_thread_num() *
                                p->M * p->N, p->N);
        }
        for (size_t i = 0; i < n_products; i++) {
            const product *p = &products[i];
            if (!p->serial)
                kd_sgemm(p->ta, p->tb, p->M, p->N, p->K, 1.0f, a, p->ta ? p->M : p->K, b,
                         p->tb ? p->K : p->N, 0.0f, c, p->N);
        }
        double t = kd_now() - t0;
        if (t < best) best = t;
    }
    return best;
}

static double peak_gflops(void) {
    const size_t n = 1024;
    float *a = kd_alloc_floats(n * n), *b = kd_alloc_floats(n * n), *c = kd_alloc_floats(n * n);
    double best = 1e30;
    if (!a || !b || !c) exit(1);
    for (size_t i = 0; i < n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    for (int r = 0; r < 6; r++) {
        double t0 = kd_now();
        kd_sgemm(0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double t = kd_now() - t0;
        if (r && t < best) best = t;  /* the first call starts the threads */
    }
    kd_free_aligned(a);
    kd_free_aligned(b);
    kd_free_aligned(c);
    return 2.0 * (double)n * (double)n * (double)n / best / 1e9;
}

/* The largest operand of any recorded product, for the timing buffers. */
static size_t largest_operand(void) {
    size_t cap = 1;
    for (size_t i = 0; i < n_products; i++) {
        const product *p = &products[i];
        const size_t s[3] = {p->M * p->K, p->K * p->N, p->M * p->N * (size_t)kd_threads_get()};
        for (int k = 0; k < 3; k++)
            if (s[k] > cap) cap = s[k];
    }
    return cap;
}

/* Median seconds of a batch-B forward pass over reps (at least 3, within budget_s); *best the
 * fastest. */
static double time_batch(kd_model *m, const float *x, size_t B, double budget_s, double *best) {
    double t[64], start = kd_now();
    int reps = 0;
    kd_model_forward(m, x, B, NULL);
    while (reps < 64 && (reps < 3 || kd_now() - start < budget_s)) {
        double t0 = kd_now();
        kd_model_forward(m, x, B, NULL);
        t[reps++] = kd_now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    *best = t[0];
    return t[(reps - 1) / 2];
}

/* p50 of single-sample forwards, cycling through the first 64 samples. */
static double time_single(kd_model *m, const float *x, size_t n, double budget_s) {
    enum { REPS = 2000 };
    static double t[REPS];
    const size_t D = kd_shape_numel(&m->input), ns = n < 64 ? n : 64;
    int reps = 0;
    for (size_t i = 0; i < 10; i++) kd_model_forward(m, x + (i % ns) * D, 1, NULL);
    double start = kd_now();
    while (reps < REPS && (reps < 20 || kd_now() - start < budget_s)) {
        double t0 = kd_now();
        kd_model_forward(m, x + ((size_t)reps % ns) * D, 1, NULL);
        t[reps++] = kd_now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    return t[(reps - 1) / 2];
}

static kd_status run(kd_model *m, const char *dir, size_t B, double budget, const char *logits,
                     kd_err *err) {
    char path[4200];
    const size_t D = kd_shape_numel(&m->input);
    float *x = kd_alloc_floats(B * D), *a = NULL, *b = NULL, *c = NULL;
    kd_status st = KD_OK;
    FILE *f = NULL;
    snprintf(path, sizeof path, "%s/input.f32", dir);
    if (!x || !(f = fopen(path, "rb")) || fread(x, sizeof *x, B * D, f) != B * D) {
        st = kd_err_set(err, KD_EIO, "%s: cannot read %zu samples", path, B);
        goto cleanup;
    }
    fclose(f);
    f = NULL;
    if (single_only) { /* an A/B of the one-sample latency alone */
        printf("result single_us=%.2f threads=%d\n", time_single(m, x, B, budget) * 1e6,
               kd_threads_get());
        goto cleanup;
    }
    double t_best;
    const double t_batch = time_batch(m, x, B, budget, &t_best);
    if (logits) {
        const float *z = kd_model_forward(m, x, B, NULL);
        if (!(f = fopen(logits, "wb")) || fwrite(z, sizeof *z, B * m->n_classes, f) !=
                                              B * m->n_classes || fclose(f)) {
            f = NULL;
            st = kd_err_set(err, KD_EIO, "%s: cannot write", logits);
            goto cleanup;
        }
        f = NULL;
    }
    kd_hook_gemm_shape = record;
    kd_model_forward(m, x, B, NULL);
    kd_hook_gemm_shape = NULL;
    const size_t cap = largest_operand();
    a = kd_alloc_floats(cap), b = kd_alloc_floats(cap), c = kd_alloc_floats(cap);
    if (!a || !b || !c) {
        st = kd_err_set(err, KD_EIO, "out of memory");
        goto cleanup;
    }
    for (size_t i = 0; i < cap; i++) a[i] = b[i] = (float)(i % 11) * 0.01f;
    const double t_alone = time_alone ? products_alone(a, b, c, 3) : 0.0;
    const double flops = 2.0 * (double)kd_model_macs(m);
    const double t_single = time_single(m, x, B, budget / 2);
    printf("result samples_per_s=%.1f best_samples_per_s=%.1f single_us=%.2f gflops=%.2f "
           "sgemm_gflops=%.2f peak_gflops=%.2f products=%zu core=%s threads=%d\n",
           (double)B / t_batch, (double)B / t_best, t_single * 1e6, flops * (double)B / t_batch / 1e9,
           flops * (double)B / t_alone / 1e9, peak_gflops(), n_products, kd_blas_corename(),
           kd_threads_get());
cleanup:
    if (f) fclose(f);
    kd_free_aligned(x);
    kd_free_aligned(a);
    kd_free_aligned(b);
    kd_free_aligned(c);
    return st;
}

/* The model of an ONNX file as a teacher gets it (inference only), reserved for batch B. */
static kd_status load_onnx(const char *path, kd_model *m, size_t B, kd_err *err) {
    const kd_onnx_opts opt = {.output = NULL};
    kd_status st = kd_onnx_load(path, &opt, m, NULL, err);
    return st ? st : kd_model_reserve(m, B, err);
}

/* The logits of the first n samples of DIR/input.f32 to out, in batches of at most B. */
static kd_status logits_only(kd_model *m, const char *dir, size_t n, size_t B, const char *out,
                             kd_err *err) {
    char path[4200];
    const size_t D = kd_shape_numel(&m->input), C = m->n_classes;
    float *x = kd_alloc_floats(B * D);
    kd_status st = KD_OK;
    FILE *in = NULL, *f = NULL;
    snprintf(path, sizeof path, "%s/input.f32", dir);
    if (!x || !(in = fopen(path, "rb")) || !(f = fopen(out, "wb")))
        st = kd_err_set(err, KD_EIO, "cannot open %s or %s", path, out);
    for (size_t i = 0; !st && i < n; i += B) {
        const size_t b = n - i < B ? n - i : B;
        if (fread(x, sizeof *x, b * D, in) != b * D) {
            st = kd_err_set(err, KD_EIO, "%s: fewer than %zu samples of %zu values", path, n, D);
            break;
        }
        const float *z = kd_model_forward(m, x, b, NULL);
        if (fwrite(z, sizeof *z, b * C, f) != b * C) st = kd_err_set(err, KD_EIO, "%s: cannot write", out);
    }
    if (f && fclose(f) && !st) st = kd_err_set(err, KD_EIO, "%s: cannot write", out);
    if (in) fclose(in);
    kd_free_aligned(x);
    return st;
}

int main(int argc, char **argv) {
    const char *logits = NULL, *onnx = NULL;
    size_t B = 1000, n = 1000;
    double budget = 1.0;
    int threads = 2, rc = 1, qint8 = 0, freeze = 1;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--batch")) B = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--n")) n = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--budget")) budget = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--logits")) logits = argv[i + 1];
        else if (!strcmp(argv[i], "--split")) kd_gemm_row_split = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--replicas")) kd_infer_replicas = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--direct")) kd_direct_conv = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--own")) kd_conv_gemm_own = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--winograd")) kd_conv_winograd = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--alone")) time_alone = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--qint8")) qint8 = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--onnx")) onnx = argv[i + 1];
        else if (!strcmp(argv[i], "--freeze")) freeze = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--banded")) kd_banded_forward = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--wg-frozen")) kd_wg_frozen_on = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--single-only")) single_only = atoi(argv[i + 1]);
    }
    const int prep = argc >= 4 && !strcmp(argv[1], "prepare");
    const int only = argc >= 4 && !strcmp(argv[1], "logits");
    if (argc < 4 || (!prep && !only && strcmp(argv[1], "run")) || !B || !n || (only && !logits)) {
        fprintf(stderr, "usage: bench_ort prepare|run CONFIG DIR [--n N] [--batch B] "
                        "[--budget S] [--threads T] [--logits OUT] [--qint8 1] [--onnx FILE]\n"
                        "       [--freeze 0|1] [--banded 0|1] [--wg-frozen 0|1] [--single-only 1]\n"
                        "       bench_ort logits MODEL.onnx DIR --n N --logits OUT\n");
        return 2;
    }
    kd_threads_set(threads);
    kd_err err = {0};
    kd_model m = {0};
    kd_eval_data d = {0};
    kd_dataset *ds = NULL;
    kd_status st;
    if (only) {
        st = load_onnx(argv[2], &m, n < 100 ? n : 100, &err);
        if (!st && freeze) st = kd_model_freeze(&m, &err);
        if (!st) st = logits_only(&m, argv[3], n, n < 100 ? n : 100, logits, &err);
        if (st) fprintf(stderr, "bench_ort: %s\n", err.msg);
        kd_model_free(&m);
        return st ? 1 : 0;
    }
    st = onnx && !prep ? load_onnx(onnx, &m, B, &err) : build(argv[2], &m, &d, &ds, prep ? 0 : B, &err);
    /* as distill's inference commands run a model: frozen (--freeze 0: not, for A/B runs) */
    if (!st && !prep && freeze) st = kd_model_freeze(&m, &err);
    if (!st)
        st = prep ? prepare(&m, ds, argv[3], n, qint8, &err)
                  : run(&m, argv[3], B, budget, logits, &err);
    if (st) fprintf(stderr, "bench_ort: %s\n", err.msg);
    else rc = 0;
    kd_dataset_close(ds);
    kd_eval_data_free(&d);
    kd_model_free(&m);
    return rc;
}
