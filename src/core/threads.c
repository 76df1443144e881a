/* threads.c - the thread count of the one OpenMP pool. OpenBLAS's OpenMP build follows
 * omp_get_max_threads() on every call, so setting the OpenMP count sets both; calling
 * openblas_set_num_threads would reset OpenMP's count behind our back (0.3.21 forwards it). */
#include <omp.h>

#include "kd_threads.h"
#include "test_hooks.h"

/* OpenMP's own default (OMP_NUM_THREADS, else the cores), read before distill first changes
 * it, so that "0 = default" means the same count after an explicit one was set. */
static int g_default;

#ifdef KD_TEST_HOOKS
size_t kd_par_min = KD_PAR_MIN;
#endif

int kd_threads_set(int n) {
    if (!g_default) g_default = omp_get_max_threads();
    omp_set_num_threads(n > 0 ? n : g_default);
    return omp_get_max_threads();
}

int kd_threads_get(void) { return omp_get_max_threads(); }
