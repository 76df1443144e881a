/* kd_reduce.h - float reductions accumulated in double, in a fixed order (deterministic), with
 * eight independent partial sums so they run at load speed instead of add latency. */
#ifndef KD_REDUCE_H
#define KD_REDUCE_H

#include <stddef.h>

double kd_sum(const float *x, size_t n);                          /* sum x */
double kd_sum_sq_dev(const float *x, size_t n, double mean);      /* sum (x - mean)^2 */
double kd_dot(const float *a, const float *b, size_t n);          /* sum a * b */

#endif
