/* gemm.c - the single place that talks to BLAS. Every dense product in distill is a call to
 * kd_sgemm; kd_sgemm_ref is the plain loop the tests compare it against. */
#include "kd_gemm.h"

#include <cblas.h>
#include <omp.h>

#include "test_hooks.h"

/* Small products (output layers, thin students) ran faster on one thread than on two on this
 * class of machine (pthreads OpenBLAS): 128x10x1200 took 50 us on one thread, 123 us on two;
 * 128x64x784 127 us vs 278 us; from 128x128x784 (12.8M multiply-adds) on, two threads won. So
 * products under 8M multiply-adds run on one thread. So do products with a tiny output and a
 * long reduction (a first conv layer's weight gradient, 32x9 summed over 100352 positions:
 * 1.6 ms on one thread, 2.6 ms on two), which OpenBLAS cannot split between threads. With the
 * OpenMP build the switch is omp_set_num_threads (OpenBLAS reads the OpenMP count on every
 * call), a store into libgomp's per-thread settings. tests/bench/bench_gemm.c times both sides
 * of this rule under the current build. */
#define KD_SMALL_MACS 8e6
#define KD_SMALL_OUTPUT 1024

unsigned long kd_hook_gemm_one_thread;
int kd_gemm_small_rule = 1;
void (*kd_hook_gemm_shape)(int trans_a, int trans_b, size_t M, size_t N, size_t K);

void kd_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
              const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
              size_t ldc) {
    if (M == 0 || N == 0) return;
    if (kd_hook_gemm_shape) kd_hook_gemm_shape(trans_a, trans_b, M, N, K);
    if (M == 1 && !trans_a) {
        /* A single row (one-sample inference): OpenBLAS's sgemm pays ~20 us of set-up here,
         * sgemv does not. C[1,N] = alpha * op(B)^T-as-matrix-vector + beta * C. */
        if (trans_b) /* B is [N,K]: c = B a */
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)N, (blasint)K, alpha, B,
                        (blasint)ldb, A, 1, beta, C, 1);
        else /* B is [K,N]: c = B^T a */
            cblas_sgemv(CblasRowMajor, CblasTrans, (blasint)K, (blasint)N, alpha, B, (blasint)ldb,
                        A, 1, beta, C, 1);
        return;
    }
    /* The count is read on every call, so a run that never set one (threads 0, the default)
     * takes the same path as one that asked for all cores. Inside a parallel region (a
     * per-chunk loop) OpenBLAS runs on the calling thread anyway. */
    const int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    const int thin = nt > 1 && kd_gemm_small_rule &&
                     ((double)M * (double)N * (double)K < KD_SMALL_MACS ||
                      (double)M * (double)N <= KD_SMALL_OUTPUT);
    if (thin) {
        omp_set_num_threads(1);
        kd_hook_gemm_one_thread++;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K, alpha, A,
                (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
    if (thin) omp_set_num_threads(nt);
}

void kd_sgemm_ref(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                  const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                  size_t ldc) {
    for (size_t i = 0; i < M; i++) {
        for (size_t j = 0; j < N; j++) {
            double acc = 0.0;
            for (size_t k = 0; k < K; k++) {
                float a = trans_a ? A[k * lda + i] : A[i * lda + k];
                float b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
                acc += (double)a * (double)b;
            }
            /* beta == 0 overwrites (C may hold garbage), as BLAS does. */
            double c = beta == 0.0f ? 0.0 : (double)beta * C[i * ldc + j];
            C[i * ldc + j] = (float)(alpha * acc + c);
        }
    }
}

int kd_blas_is_openmp(void) { return openblas_get_parallel() == 2; }
