/* bench_cache.c - the soft-target cache file at the scale (55,000 training samples,
 * 8 views, 3 teachers, 10 classes): bytes per sample, write time (the fill is a cheap formula,
 * so this is the file's own cost, not the teachers'), open time (every checksum and value
 * verified) and one epoch of reads (batches of 128 random samples in random views through
 * kd_cache_logits) for f32, f16 and top-4 of each. The file goes to $TMPDIR (default /tmp). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kd_cache.h"
#include "kd_rng.h"

#define N_ROWS 55000
#define VIEWS 8
#define TEACHERS 3
#define CLASSES 10
#define BATCH 128

static kd_status fill(void *user, size_t view, size_t row, size_t n, float *logits,
                      kd_err *err) {
    (void)user;
    (void)err;
    for (size_t k = 0; k < TEACHERS; k++)
        for (size_t i = 0; i < n; i++)
            for (size_t c = 0; c < CLASSES; c++)
                logits[(k * n + i) * CLASSES + c] =
                    (float)(((row + i) * 7 + c * 13 + k * 5 + view * 3) % 17) * 0.5f - 4.0f;
    return KD_OK;
}

int main(void) {
    const char *tmp = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/bench-cache.%ld.kdcache", tmp && *tmp ? tmp : "/tmp",
             (long)getpid());
    size_t *idx = malloc(N_ROWS * sizeof *idx), *sample = malloc(BATCH * sizeof *sample);
    uint32_t *view = malloc(BATCH * sizeof *view);
    float *out = malloc((size_t)TEACHERS * BATCH * CLASSES * sizeof *out);
    if (!idx || !sample || !view || !out) return 1;
    for (size_t r = 0; r < N_ROWS; r++) idx[r] = r + r / 10; /* a subset, with gaps */
    printf("%zu samples x %d views x %d teachers x %d classes\n", (size_t)N_ROWS, VIEWS, TEACHERS,
           CLASSES);
    printf("%-10s %12s %12s %10s %10s %12s\n", "targets", "bytes/sample", "file MB", "write s",
           "open s", "epoch read s");
    struct {
        const char *name;
        kd_cache_dtype dtype;
        size_t top_k;
    } kinds[] = {{"f32", KD_CACHE_F32, 0}, {"f16", KD_CACHE_F16, 0},
                 {"f32 top-4", KD_CACHE_F32, 4}, {"f16 top-4", KD_CACHE_F16, 4}};
    int rc = 0;
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds && rc == 0; i++) {
        kd_cache_meta m = {.n_rows = N_ROWS, .n_classes = CLASSES, .n_teachers = TEACHERS,
                           .dtype = kinds[i].dtype, .top_k = kinds[i].top_k,
                           .temperature = kinds[i].top_k ? 4.0 : 0.0, .views = VIEWS,
                           .view_seed = 1, .ensemble_val_acc = NAN};
        for (int k = 0; k < TEACHERS; k++) m.weight[k] = 1.0 / TEACHERS, m.teacher_val_acc[k] = NAN;
        kd_err err;
        kd_cache *c = NULL;
        double t0 = kd_now();
        if (kd_cache_write(path, &m, idx, 1024, fill, NULL, &err) != KD_OK) goto fail;
        double t1 = kd_now();
        if (kd_cache_open(&c, path, &err) != KD_OK) goto fail;
        double t2 = kd_now();
        kd_rng rng;
        kd_rng_seed(&rng, 7);
        for (size_t b = 0; b < N_ROWS / BATCH; b++) {
            for (size_t j = 0; j < BATCH; j++) {
                sample[j] = idx[kd_rng_below(&rng, N_ROWS)];
                view[j] = (uint32_t)kd_rng_below(&rng, VIEWS);
            }
            if (kd_cache_logits(c, sample, view, BATCH, out, &err) != KD_OK) goto fail;
        }
        double t3 = kd_now();
        printf("%-10s %12zu %12.1f %10.3f %10.3f %12.3f\n", kinds[i].name,
               kd_cache_entry_bytes(&m) * VIEWS,
               (double)kd_cache_entry_bytes(&m) * VIEWS * N_ROWS / 1e6, t1 - t0, t2 - t1, t3 - t2);
        kd_cache_close(c);
        continue;
    fail:
        fprintf(stderr, "bench_cache: %s\n", err.msg);
        kd_cache_close(c);
        rc = 1;
    }
    unlink(path);
    free(idx);
    free(sample);
    free(view);
    free(out);
    return rc;
}
