/* c_harness.c - runs a header written by `distill export --format c` on the first N images of
 * an uncompressed u8 IDX file (raw values as floats 0-255) or float32 IDX file (raw rows):
 * writes the logits (N x classes
 * float32) when given a path, prints "accuracy A" with an IDX labels file, and with --bench the
 * single-sample latency of NAME_predict. Used by the tests and the demo:
 *
 *   cc -std=c99 -O2 -I DIR -DMODEL=name -DMODEL_UPPER=NAME -DMODEL_HEADER='"name.h"' \
 *      c_harness.c impl.o -lm -o harness      (impl.c: #define NAME_IMPLEMENTATION + include)
 *   ./harness IMAGES N [LOGITS_OUT|-] [LABELS|-] [--bench]
 *
 * Every buffer handed to the model is malloc'd at its exact size, so a sanitizer build catches
 * any read or write outside it. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include MODEL_HEADER

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FORWARD CAT(MODEL, _forward)
#define PREDICT CAT(MODEL, _predict)
#define INPUT_SIZE CAT(MODEL_UPPER, _INPUT_SIZE)
#define N_CLASSES CAT(MODEL_UPPER, _N_CLASSES)
#define SCRATCH_FLOATS CAT(MODEL_UPPER, _SCRATCH_FLOATS)

/* The values of an IDX file as floats: u8 (type 0x08) or big-endian float32 (type 0x0D, raw
 * CSV rows for a model with per-feature statistics); magic 0 0 type rank, big-endian dims;
 * *n = first dimension. */
static float *read_idx(const char *path, unsigned long *n, unsigned long *per) {
    FILE *f = fopen(path, "rb");
    unsigned char h[4], d[4];
    unsigned long total = 1, k, size;
    unsigned char *buf = NULL;
    float *vals = NULL;
    if (!f || fread(h, 1, 4, f) != 4 || h[0] || h[1] || (h[2] != 8 && h[2] != 0x0D) || h[3] < 1)
        goto fail;
    size = h[2] == 8 ? 1 : 4;
    for (k = 0; k < h[3]; k++) {
        unsigned long v;
        if (fread(d, 1, 4, f) != 4) goto fail;
        v = ((unsigned long)d[0] << 24) | ((unsigned long)d[1] << 16) | ((unsigned long)d[2] << 8) | d[3];
        if (k == 0) *n = v;
        total *= v;
    }
    *per = *n ? total / *n : 0;
    if (!(buf = malloc(total ? total * size : 1)) || fread(buf, size, total, f) != total ||
        !(vals = malloc((total ? total : 1) * sizeof *vals)))
        goto fail;
    for (k = 0; k < total; k++) {
        if (size == 1) {
            vals[k] = (float)buf[k];
        } else {
            const unsigned char *b = buf + 4 * k;
            unsigned long u = ((unsigned long)b[0] << 24) | ((unsigned long)b[1] << 16) |
                              ((unsigned long)b[2] << 8) | b[3];
            unsigned int u32 = (unsigned int)u;
            memcpy(&vals[k], &u32, sizeof vals[k]);
        }
    }
    free(buf);
    fclose(f);
    return vals;
fail:
    fprintf(stderr, "c_harness: %s: not a readable u8 or float32 IDX file\n", path);
    free(buf);
    free(vals);
    if (f) fclose(f);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    unsigned long n_img = 0, per = 0, n_lab = 0, one = 0, n, i, k, hits = 0;
    float *img, *lab = NULL;
    float *x = malloc(INPUT_SIZE * sizeof *x), *logits = malloc(N_CLASSES * sizeof *logits);
    float *scratch = malloc(SCRATCH_FLOATS * sizeof *scratch);
    FILE *out = NULL;
    if (argc < 3 || !x || !logits || !scratch) {
        fprintf(stderr, "usage: %s IMAGES N [LOGITS|-] [LABELS|-] [--bench]\n", argv[0]);
        return 2;
    }
    if (!(img = read_idx(argv[1], &n_img, &per))) return 2;
    if (per != INPUT_SIZE) {
        fprintf(stderr, "c_harness: %lu values per image, the model takes %d\n", per, INPUT_SIZE);
        return 2;
    }
    n = strtoul(argv[2], NULL, 10);
    if (n > n_img) n = n_img;
    if (argc > 3 && strcmp(argv[3], "-") && !(out = fopen(argv[3], "wb"))) return 2;
    if (argc > 4 && strcmp(argv[4], "-") && !(lab = read_idx(argv[4], &n_lab, &one))) return 2;
    for (i = 0; i < n; i++) {
        int best = 0;
        for (k = 0; k < INPUT_SIZE; k++) x[k] = (float)img[i * INPUT_SIZE + k];
        FORWARD(x, logits, scratch);
        for (k = 1; k < N_CLASSES; k++)
            if (logits[k] > logits[best]) best = (int)k;
        if (PREDICT(x, scratch) != best) {
            fprintf(stderr, "c_harness: image %lu: predict %d, argmax of forward %d\n", i,
                    PREDICT(x, scratch), best);
            return 1;
        }
        if (lab && i < n_lab && lab[i] == (float)best) hits++;
        if (out && fwrite(logits, sizeof *logits, N_CLASSES, out) != N_CLASSES) return 1;
    }
    if (out && fclose(out)) return 1;
    if (lab) printf("accuracy %.2f %% of %lu\n", 100.0 * (double)hits / (double)n, n);
    if (argc > 5 && !strcmp(argv[5], "--bench")) {
        enum { RUNS = 2000 };
        static double us[RUNS];
        volatile int sink = 0;
        for (i = 0; i < RUNS; i++) {
            struct timespec t0, t1;
            for (k = 0; k < INPUT_SIZE; k++) x[k] = (float)img[(i % n) * INPUT_SIZE + k];
            clock_gettime(CLOCK_MONOTONIC, &t0);
            sink += PREDICT(x, scratch);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            us[i] = (double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3;
        }
        qsort(us, RUNS, sizeof us[0], cmp_double);
        printf("single p50 %.1f us, p99 %.1f us\n", us[RUNS / 2], us[RUNS * 99 / 100]);
    }
    free(img);
    free(lab);
    free(x);
    free(logits);
    free(scratch);
    return 0;
}
