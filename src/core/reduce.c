/* reduce.c - double-accumulated float reductions with eight partial sums in a fixed order:
 * one running double sum is bound by the add latency (4 cycles per element), eight are not;
 * the order never depends on the data or the thread count, so results are reproducible. */
#include "kd_reduce.h"

#define LANES 8

/* acc[k] += term(i + k) over blocks of 8, the tail into the first lanes, then a fixed tree. */
#define KD_REDUCE(n, term)                                                                 \
    do {                                                                                   \
        double acc[LANES] = {0};                                                           \
        const size_t nb = (n) / LANES * LANES;                                             \
        for (size_t i0 = 0; i0 < nb; i0 += LANES)                                          \
            for (size_t k = 0; k < LANES; k++) {                                           \
                const size_t i = i0 + k;                                                   \
                acc[k] += (term);                                                          \
            }                                                                              \
        for (size_t i = nb; i < (n); i++) acc[i - nb] += (term);                           \
        return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])); \
    } while (0)

double kd_sum(const float *x, size_t n) { KD_REDUCE(n, (double)x[i]); }

double kd_sum_sq_dev(const float *x, size_t n, double mean) {
    KD_REDUCE(n, ((double)x[i] - mean) * ((double)x[i] - mean));
}

double kd_dot(const float *a, const float *b, size_t n) { KD_REDUCE(n, (double)a[i] * b[i]); }
