/* gemm.c - the single place that talks to BLAS. Every dense product in distill is a call to
 * kd_sgemm; kd_sgemm_ref is the plain loop the tests compare it against. */
#include "kd_gemm.h"

#include <cblas.h>

void kd_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
              const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
              size_t ldc) {
    if (M == 0 || N == 0) return;
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
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K, alpha, A,
                (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
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
}

int kd_blas_get_threads(void) { return openblas_get_num_threads(); }
