/* bench_infer.c - the compact student's targets: an int8 export of a 784-128-10 MLP against its
 * f32 export (target: at least 3.5x smaller) and its single-sample latency (target: p50 under
 * 20 microseconds), measured on the model loaded back from the int8 file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kd_checkpoint.h"
#include "kd_eval.h"
#include "kd_threads.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Single-sample latencies over reps calls, cycling through n_x inputs; p50/p99 in us. */
static void latency(kd_model *m, const float *x, size_t n_x, size_t reps, double *p50, double *p99) {
    kd_ctx ctx = {0};
    size_t D = kd_shape_numel(&m->input);
    double *t = malloc(reps * sizeof *t);
    if (!t) exit(1);
    for (size_t i = 0; i < 200; i++) kd_model_forward(m, x + (i % n_x) * D, 1, &ctx);
    for (size_t i = 0; i < reps; i++) {
        double t0 = kd_now();
        kd_model_forward(m, x + (i % n_x) * D, 1, &ctx);
        t[i] = (kd_now() - t0) * 1e6;
    }
    qsort(t, reps, sizeof *t, cmp_double);
    *p50 = t[(reps - 1) / 2];
    *p99 = t[(size_t)((double)(reps - 1) * 0.99 + 0.5)];
    free(t);
}

int main(void) {
    kd_err err = {0};
    kd_model m, q;
    kd_rng rng;
    char dir[] = "/tmp/kd_bench_infer.XXXXXX", f32[64], i8[64];
    struct stat s32, s8;
    int rc = 1;
    float *x = NULL;
    memset(&m, 0, sizeof m);
    memset(&q, 0, sizeof q);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(f32, sizeof f32, "%s/student-f32.safetensors", dir);
    snprintf(i8, sizeof i8, "%s/student-int8.safetensors", dir);
    const char *arch = "{\"input\":[784],\"layers\":[{\"type\":\"dense\",\"units\":128},"
                       "{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":10}]}";
    if (kd_model_init_arch(&m, arch, 0, &err)) goto cleanup;
    kd_rng_seed(&rng, 1);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    if (kd_export_write(f32, &m, KD_DT_F32, NULL, NULL, 0, &err)) goto cleanup;
    if (kd_export_write(i8, &m, KD_DT_I8, NULL, NULL, 0, &err)) goto cleanup;
    if (stat(f32, &s32) || stat(i8, &s8)) {
        perror("stat");
        goto cleanup;
    }
    double ratio = (double)s32.st_size / (double)s8.st_size;
    printf("compact student 784-128-10 (%zu params): f32 %lld bytes, int8 %lld bytes, ratio %.2fx "
           "(target >= 3.5x: %s)\n",
           m.n_params, (long long)s32.st_size, (long long)s8.st_size, ratio,
           ratio >= 3.5 ? "met" : "MISSED");

    if (kd_ckpt_load(i8, NULL, 0, 0, &q, NULL, NULL, NULL, NULL, &err)) goto cleanup;
    if (kd_model_reserve(&q, 1, &err)) goto cleanup;
    enum { NX = 64 };
    x = malloc(NX * 784 * sizeof *x);
    if (!x) goto cleanup;
    for (size_t i = 0; i < NX * 784; i++) x[i] = kd_rng_uniform(&rng);
    int threads0 = kd_threads_set(0);
    for (int pass = 0; pass < 2; pass++) {
        int th = pass == 0 ? threads0 : 1;
        if (pass == 1) kd_threads_set(1);
        double p50, p99;
        latency(&q, x, NX, 20000, &p50, &p99);
        printf("int8 student single-sample latency, %d thread%s: p50 %.2f us, p99 %.2f us "
               "(target p50 < 20 us: %s)\n",
               th, th == 1 ? "" : "s", p50, p99, p50 < 20.0 ? "met" : "MISSED");
    }
    rc = 0;
cleanup:
    if (rc && err.msg[0]) fprintf(stderr, "bench_infer: %s\n", err.msg);
    free(x);
    kd_model_free(&m);
    kd_model_free(&q);
    unlink(f32);
    unlink(i8);
    rmdir(dir);
    return rc;
}
