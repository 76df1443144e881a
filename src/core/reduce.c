/* reduce.c - double-accumulated float reductions with eight partial sums in a fixed order:
 * one running double sum is bound by the add latency (4 cycles per element), eight are not;
 * the order never depends on the data or the thread count, so results are reproducible. */
#include "kd_reduce.h"
#include "kd_vec.h"


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

/* The block sums below keep two kd_v4f per sum, for eight lanes. */
static double fold8(kd_v4f a, kd_v4f b) {
    return (((double)a[0] + a[1]) + ((double)a[2] + a[3])) +
           (((double)b[0] + b[1]) + ((double)b[2] + b[3]));
}

/* The two terms of one block x[0..n), n <= KD_REDUCE_BLOCK: the values the sums are added. */
static void sq_block(const float *x, size_t n, float shift, double *s, double *q) {
    kd_v4f s0 = {0}, s1 = {0}, q0 = {0}, q1 = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const kd_v4f u = kd_v4_load(x + i) - shift, v = kd_v4_load(x + i + 4) - shift;
        s0 += u;
        s1 += v;
        q0 += u * u;
        q1 += v * v;
    }
    float ts = 0.0f, tq = 0.0f;  /* the tail, under 8 values */
    for (; i < n; i++) {
        float d = x[i] - shift;
        ts += d;
        tq += d * d;
    }
    *s = fold8(s0, s1) + ts;
    *q = fold8(q0, q1) + tq;
}

static void dot_block(const float *a, const float *b, size_t n, float shift, double *sa,
                      double *sab) {
    kd_v4f a0 = {0}, a1 = {0}, p0 = {0}, p1 = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const kd_v4f u0 = kd_v4_load(a + i), u1 = kd_v4_load(a + i + 4);
        const kd_v4f v0 = kd_v4_load(b + i), v1 = kd_v4_load(b + i + 4);
        a0 += u0;
        a1 += u1;
        p0 += u0 * (v0 - shift);
        p1 += u1 * (v1 - shift);
    }
    float ta = 0.0f, tp = 0.0f;
    for (; i < n; i++) {
        ta += a[i];
        tp += a[i] * (b[i] - shift);
    }
    *sa = fold8(a0, a1) + ta;
    *sab = fold8(p0, p1) + tp;
}

static size_t block_len(size_t n, size_t b0) {
    return n - b0 < KD_REDUCE_BLOCK ? n - b0 : KD_REDUCE_BLOCK;
}

void kd_sum_sq_shifted(const float *x, size_t n, float shift, double *s, double *q) {
    for (size_t b0 = 0; b0 < n; b0 += KD_REDUCE_BLOCK) {
        double bs, bq;
        sq_block(x + b0, block_len(n, b0), shift, &bs, &bq);
        *s += bs;
        *q += bq;
    }
}

size_t kd_sum_sq_shifted_blocks(const float *x, size_t n, float shift, double *s_blk,
                                double *q_blk) {
    size_t k = 0;
    for (size_t b0 = 0; b0 < n; b0 += KD_REDUCE_BLOCK, k++)
        sq_block(x + b0, block_len(n, b0), shift, &s_blk[k], &q_blk[k]);
    return k;
}

void kd_sum_dot_shifted(const float *a, const float *b, size_t n, float shift, double *sa,
                        double *sab) {
    for (size_t b0 = 0; b0 < n; b0 += KD_REDUCE_BLOCK) {
        double ba, bp;
        dot_block(a + b0, b + b0, block_len(n, b0), shift, &ba, &bp);
        *sa += ba;
        *sab += bp;
    }
}

size_t kd_sum_dot_shifted_blocks(const float *a, const float *b, size_t n, float shift,
                                 double *sa_blk, double *sab_blk) {
    size_t k = 0;
    for (size_t b0 = 0; b0 < n; b0 += KD_REDUCE_BLOCK, k++)
        dot_block(a + b0, b + b0, block_len(n, b0), shift, &sa_blk[k], &sab_blk[k]);
    return k;
}
