/* bench_gemm.c - checks gemm.c's small-products rule under the linked OpenBLAS: each product
 * shape that distill's models make near the rule's thresholds, timed on one thread and on the
 * whole team (best of runs), with the side the rule picks. A row marked "WRONG" means the rule
 * costs over 5% on this machine and its thresholds (KD_SMALL_MACS, KD_SMALL_OUTPUT) should move.
 * Usage: bench_gemm [threads]   (default: all cores) */
#include <stdio.h>
#include <stdlib.h>

#include "../../src/core/test_hooks.h"
#include "kd_common.h"
#include "kd_gemm.h"
#include "kd_threads.h"

typedef struct {
    const char *what;
    int ta, tb;
    size_t M, N, K;
} shape;

static double best_time(const shape *s, float *a, float *b, float *c, double budget) {
    double best = 1e30, spent = 0;
    const size_t lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    for (int rep = 0; rep < 1000 && (rep < 5 || spent < budget); rep++) {
        double t0 = kd_now();
        kd_sgemm(s->ta, s->tb, s->M, s->N, s->K, 1.0f, a, lda, b, ldb, 0.0f, c, s->N);
        double t = kd_now() - t0;
        spent += t;
        if (t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv) {
    static const shape shapes[] = {
        {"output layer fwd 128x10x1200", 0, 1, 128, 10, 1200},
        {"output layer dW 10x1200x128", 1, 0, 10, 1200, 128},
        {"compact fwd 128x128x784", 0, 1, 128, 128, 784},
        {"compact dW 128x784x128", 1, 0, 128, 784, 128},
        {"thin fwd 128x64x784", 0, 1, 128, 64, 784},
        {"compact output dx 128x128x10", 0, 0, 128, 128, 10},
        {"CNN dense fwd 128x256x3136", 0, 1, 128, 256, 3136},
        /* One sample through the CNN teacher (a batch of one is not split into pieces, so
         * its convolutions' products go through the rule). */
        {"1-sample conv1 fwd 32x784x9", 0, 0, 32, 784, 9},
        {"1-sample conv2 fwd 64x196x288", 0, 0, 64, 196, 288},
    };
    const int threads = kd_threads_set(argc > 1 ? atoi(argv[1]) : 0);
    printf("threads: %d (OpenBLAS %s)\n", threads,
           kd_blas_is_openmp() ? "OpenMP build" : "NOT the OpenMP build");
    printf("%-32s %10s %12s %12s %10s\n", "product (M x N x K)", "MACs", "1 thread us",
           "team us", "rule");
    size_t cap = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const shape *s = &shapes[i];
        size_t m = s->M * s->K > s->K * s->N ? s->M * s->K : s->K * s->N;
        if (s->M * s->N > m) m = s->M * s->N;
        if (m > cap) cap = m;
    }
    float *a = kd_alloc_floats(cap), *b = kd_alloc_floats(cap), *c = kd_alloc_floats(cap);
    if (!a || !b || !c) return 1;
    for (size_t i = 0; i < cap; i++) a[i] = b[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const shape *s = &shapes[i];
        const double macs = (double)s->M * (double)s->N * (double)s->K;
        kd_threads_set(1);
        double t1 = best_time(s, a, b, c, 0.2);
        kd_threads_set(threads);
        unsigned long before = kd_hook_gemm_one_thread;
        kd_sgemm(s->ta, s->tb, s->M, s->N, s->K, 1.0f, a, s->ta ? s->M : s->K, b,
                 s->tb ? s->K : s->N, 0.0f, c, s->N);
        const int rule_one = kd_hook_gemm_one_thread != before;
        kd_gemm_small_rule = 0;  /* the team, whatever the rule says */
        double tt = best_time(s, a, b, c, 0.2);
        kd_gemm_small_rule = 1;
        /* WRONG only when the side the rule picks is over 5% slower: a difference of a few
         * per cent between two best-of times is this host's noise, not a verdict. */
        const double picked = rule_one ? t1 : tt, other = rule_one ? tt : t1;
        printf("%-32s %10.3g %12.1f %12.1f %10s%s\n", s->what, macs, 1e6 * t1, 1e6 * tt,
               rule_one ? "1 thread" : "team",
               threads > 1 && picked > 1.05 * other ? "  WRONG" : "");
    }
    kd_free_aligned(a);
    kd_free_aligned(b);
    kd_free_aligned(c);
    return 0;
}
