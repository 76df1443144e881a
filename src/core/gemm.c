/* gemm.c - the single place that talks to BLAS. Every dense product in distill is a call to
 * kd_sgemm; kd_sgemm_ref is the plain loop the tests compare it against. */
#include "kd_gemm.h"

#include <cblas.h>
#include <limits.h>

#include "kd_common.h"

/* cblas takes every dimension as a 32-bit int (blasint). The model refuses tensors and
 * per-sample activations past INT_MAX values when it is built (model.c), so no layer can pass
 * a larger size here: one that does is a bug, stopped before the narrowing conversion. */
#define FITS_BLASINT(v) ((v) <= (size_t)INT_MAX)

/* Small products (output layers, thin students) run faster on one thread than on two on this
 * class of machine: 128x10x1200 takes 50 us on one thread, 123 us on two; 128x64x784 127 us vs
 * 278 us; from 128x128x784 (12.8M multiply-adds) on, two threads win. So products under 8M
 * multiply-adds run on one thread. So do products with a tiny output and a long reduction (a
 * first conv layer's weight gradient, 32x9 summed over 100352 positions: 1.6 ms on one thread,
 * 2.6 ms on two), which OpenBLAS cannot split between threads. Switching the OpenBLAS thread
 * count costs ~15 ns. */
#define KD_SMALL_MACS 8e6
#define KD_SMALL_OUTPUT 1024
static int g_threads;  /* the configured count (0 until kd_blas_set_threads) */

void kd_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
              const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
              size_t ldc) {
    if (M == 0 || N == 0) return;
    KD_ASSERT(FITS_BLASINT(M) && FITS_BLASINT(N) && FITS_BLASINT(K) && FITS_BLASINT(lda) &&
              FITS_BLASINT(ldb) && FITS_BLASINT(ldc));
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
    int thin = g_threads > 1 && ((double)M * (double)N * (double)K < KD_SMALL_MACS ||
                                 (double)M * (double)N <= KD_SMALL_OUTPUT);
    if (thin) openblas_set_num_threads(1);
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K, alpha, A,
                (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
    if (thin) openblas_set_num_threads(g_threads);
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

void kd_blas_set_threads(int n) {
    if (n > 0) openblas_set_num_threads(n);
    g_threads = openblas_get_num_threads();
}

int kd_blas_get_threads(void) { return openblas_get_num_threads(); }
