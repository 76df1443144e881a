/* kd_reduce.h - float reductions accumulated in double, in a fixed order (deterministic), with
 * eight independent partial sums so they run at load speed instead of add latency. */
#ifndef KD_REDUCE_H
#define KD_REDUCE_H

#include <stddef.h>

double kd_sum(const float *x, size_t n);                          /* sum x */
double kd_sum_sq_dev(const float *x, size_t n, double mean);      /* sum (x - mean)^2 */
double kd_dot(const float *a, const float *b, size_t n);          /* sum a * b */

/* Fused one-pass sums for batch statistics, ADDED to the outputs. Float partial sums over
 * blocks of KD_REDUCE_BLOCK values (8 lanes, fixed order) are folded into the doubles, so they
 * run at vector speed while long rows keep double precision; shifting by a value near the mean
 * keeps sum((x - shift)^2) free of cancellation. */
#define KD_REDUCE_BLOCK 256
/* *s += sum(x - shift);  *q += sum((x - shift)^2) */
void kd_sum_sq_shifted(const float *x, size_t n, float shift, double *s, double *q);
/* *sa += sum(a);  *sab += sum(a * (b - shift)) */
void kd_sum_dot_shifted(const float *a, const float *b, size_t n, float shift, double *sa,
                        double *sab);
/* The same sums block by block: writes the ceil(n / KD_REDUCE_BLOCK) terms that the functions
 * above add, in order, and returns their count. Adding them in order gives the same bits, so the
 * blocks of many rows can be computed in parallel, in memory order, and summed per output in a
 * fixed order afterwards (batch norm over the (sample, channel) planes). */
size_t kd_sum_sq_shifted_blocks(const float *x, size_t n, float shift, double *s_blk,
                                double *q_blk);
size_t kd_sum_dot_shifted_blocks(const float *a, const float *b, size_t n, float shift,
                                 double *sa_blk, double *sab_blk);

#endif
