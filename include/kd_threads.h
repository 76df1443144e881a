/* kd_threads.h - the one thread pool: OpenMP's (libgomp), shared by OpenBLAS's OpenMP build and
 * distill's own `omp parallel for` loops (docs/design.md). Thread counts are set here and
 * nowhere else. */
#ifndef KD_THREADS_H
#define KD_THREADS_H

#include <stddef.h>

/* Sets the team size of every parallel part of distill (sgemm and our loops): n > 0 threads,
 * 0 = the default (OMP_NUM_THREADS when set, else every core), the same count a caller gets
 * by asking for it explicitly. Returns the count now in force. */
int kd_threads_set(int n);
/* The count in force: the team size the next parallel loop or sgemm gets. */
int kd_threads_get(void);

/* Our loops go parallel only over at least KD_PAR_MIN floats of work: forking the team costs a
 * microsecond or two, a memory-bound pass over 32K floats ~10 us on one core. So small models
 * (a 784-128-10 student at batch 128, one-sample inference) never fork. In the test build the
 * threshold is the hook kd_par_min (src/core/test_hooks.h), which tests lower to 1 to run every
 * parallel path on tiny shapes; where a loop runs never changes its result (every parallel loop
 * in distill gives the same bits on any number of threads). Use as
 * `#pragma omp parallel for schedule(static) if (KD_PAR(n))`. */
#define KD_PAR_MIN ((size_t)1 << 15)
#ifdef KD_TEST_HOOKS
extern size_t kd_par_min;
#define KD_PAR(work) ((size_t)(work) >= kd_par_min)
#else
#define KD_PAR(work) ((size_t)(work) >= KD_PAR_MIN)
#endif
/* Flat elementwise loops are cut into blocks of this many floats (64 KiB), handed out to the
 * threads in a static schedule: each element is computed the same way whatever thread runs it. */
#define KD_PAR_BLOCK ((size_t)1 << 14)

#endif
