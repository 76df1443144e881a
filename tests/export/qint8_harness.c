/* qint8_harness.c - runs a header written by `distill export --format c --dtype qint8` on N
 * samples: int8 inputs through NAME_forward_q (int8 logits out) and float raw inputs through
 * NAME_forward (float logits out), each read from and written to a file of native values:
 *
 *   cc -std=c99 -pedantic -I DIR -DMODEL=name -DMODEL_UPPER=NAME -DMODEL_HEADER='"name.h"' \
 *      -DNAME_IMPLEMENTATION qint8_harness.c -lm -o harness
 *   ./harness N INPUT_Q LOGITS_Q RAW LOGITS
 *
 * The arena is malloc'd at exactly NAME_ARENA_BYTES, one byte past an aligned address, so a
 * sanitizer catches any access outside it and nothing may assume its alignment. */
#include <stdio.h>
#include <stdlib.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FORWARD_Q CAT(MODEL, _forward_q)
#define FORWARD CAT(MODEL, _forward)
#define INPUT_SIZE CAT(MODEL_UPPER, _INPUT_SIZE)
#define N_CLASSES CAT(MODEL_UPPER, _N_CLASSES)
#define ARENA_BYTES CAT(MODEL_UPPER, _ARENA_BYTES)

#include MODEL_HEADER

static void *slurp(const char *path, size_t bytes) {
    FILE *f = fopen(path, "rb");
    void *p = malloc(bytes);
    if (!f || !p || fread(p, 1, bytes, f) != bytes) {
        fprintf(stderr, "cannot read %lu bytes of %s\n", (unsigned long)bytes, path);
        exit(1);
    }
    fclose(f);
    return p;
}

static void spill(const char *path, const void *p, size_t bytes) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, bytes, f) != bytes || fclose(f)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

int main(int argc, char **argv) {
    long n, i;
    unsigned char *block, *arena;
    signed char *xq, *lq;
    float *raw, *logits;
    if (argc != 6) {
        fprintf(stderr, "usage: harness N INPUT_Q LOGITS_Q RAW LOGITS\n");
        return 2;
    }
    n = atol(argv[1]);
    xq = slurp(argv[2], (size_t)n * INPUT_SIZE);
    raw = slurp(argv[4], (size_t)n * INPUT_SIZE * sizeof(float));
    lq = malloc((size_t)n * N_CLASSES);
    logits = malloc((size_t)n * N_CLASSES * sizeof(float));
    block = malloc(ARENA_BYTES + 1);
    if (!lq || !logits || !block) return 1;
    arena = block + 1;
    for (i = 0; i < n; i++) FORWARD_Q(xq + i * INPUT_SIZE, lq + i * N_CLASSES, arena);
    for (i = 0; i < n; i++) FORWARD(raw + i * INPUT_SIZE, logits + i * N_CLASSES, arena);
    spill(argv[3], lq, (size_t)n * N_CLASSES);
    spill(argv[5], logits, (size_t)n * N_CLASSES * sizeof(float));
    free(xq), free(raw), free(lq), free(logits), free(block);
    return 0;
}
