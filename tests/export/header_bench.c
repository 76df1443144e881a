/* header_bench.c - single-sample latency of a header written by `distill export --format c`
 * (f32, or qint8 with -DQINT8=1): the p50 and p99 of RUNS calls of NAME_forward, one sample at
 * a time, cycling over the first N images of an uncompressed u8 IDX file (raw values 0-255 as
 * floats), after a warm-up; with QINT8 also of NAME_forward_q (the pixels minus 128 as input).
 *
 *   cc -std=c99 -O2 -I DIR -DQINT8=0|1 -DMODEL=name -DMODEL_UPPER=NAME \
 *      -DMODEL_HEADER='"name.h"' -DNAME_IMPLEMENTATION header_bench.c -lm -o bench
 *   ./bench IMAGES [RUNS]        prints "forward p50 U us p99 U us" (and "forward_q ...")
 *
 * The working memory is malloc'd at its exact size, one byte past an aligned address for the
 * qint8 arena, as an application might hand it over. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include MODEL_HEADER

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FORWARD CAT(MODEL, _forward)
#define INPUT_SIZE CAT(MODEL_UPPER, _INPUT_SIZE)
#define N_CLASSES CAT(MODEL_UPPER, _N_CLASSES)
#if QINT8
#define FORWARD_Q CAT(MODEL, _forward_q)
#define WORK_BYTES (CAT(MODEL_UPPER, _ARENA_BYTES) + 1)
typedef unsigned char work_t;
#else
#define WORK_BYTES (CAT(MODEL_UPPER, _SCRATCH_FLOATS) * sizeof(float))
typedef float work_t;
#endif
#define N_IMAGES 64

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static void report(const char *what, double *us, long runs) {
    qsort(us, (size_t)runs, sizeof *us, cmp_double);
    printf("%s p50 %.2f us p99 %.2f us\n", what, us[runs / 2], us[runs * 99 / 100]);
}

int main(int argc, char **argv) {
    static float raw[N_IMAGES][INPUT_SIZE], logits[N_CLASSES];
    unsigned char head[16], *px = malloc(INPUT_SIZE);
    long runs = argc > 2 ? atol(argv[2]) : 3000, i, k;
    double *us = malloc((size_t)(runs > 0 ? runs : 1) * sizeof *us);
    void *block = malloc(WORK_BYTES);
    work_t *work = (work_t *)block + (QINT8 ? 1 : 0);
    volatile float sink = 0;
    FILE *f = argc > 1 ? fopen(argv[1], "rb") : NULL;
    if (!f || !px || !us || !block || runs < 100 || fread(head, 1, 16, f) != 16) {
        fprintf(stderr, "usage: bench IMAGES(u8 IDX, %d values each) [RUNS >= 100]\n", INPUT_SIZE);
        return 2;
    }
    for (i = 0; i < N_IMAGES; i++) {
        if (fread(px, 1, INPUT_SIZE, f) != INPUT_SIZE) return fprintf(stderr, "short IDX\n"), 2;
        for (k = 0; k < INPUT_SIZE; k++) raw[i][k] = (float)px[k];
    }
    fclose(f);
    for (i = 0; i < runs / 10; i++) FORWARD(raw[i % N_IMAGES], logits, work); /* warm-up */
    for (i = 0; i < runs; i++) {
        double t0 = now_us();
        FORWARD(raw[i % N_IMAGES], logits, work);
        us[i] = now_us() - t0;
        sink += logits[0];
    }
    report("forward", us, runs);
#if QINT8
    {
        static signed char xq[N_IMAGES][INPUT_SIZE], lq[N_CLASSES];
        volatile int isink = 0;
        /* The pixels shifted to int8: the integer loops take the same time whatever the bytes. */
        for (i = 0; i < N_IMAGES; i++)
            for (k = 0; k < INPUT_SIZE; k++) xq[i][k] = (signed char)((int)raw[i][k] - 128);
        for (i = 0; i < runs; i++) {
            double t0 = now_us();
            FORWARD_Q(xq[i % N_IMAGES], lq, work);
            us[i] = now_us() - t0;
            isink += lq[0];
        }
        report("forward_q", us, runs);
    }
#endif
    free(px), free(us), free(block);
    return 0;
}
