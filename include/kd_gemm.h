/* kd_gemm.h - the one entry point for dense matrix products (row-major), over cblas_sgemm,
 * plus a plain reference loop used by the tests. Only src/core/gemm.c includes <cblas.h>. */
#ifndef KD_GEMM_H
#define KD_GEMM_H

#include <stddef.h>

/* C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, row-major.
 * trans_a: 0 -> A is [M,K] (lda >= K); 1 -> A is [K,M] (lda >= M). Same for B with [K,N]/[N,K]. */
void kd_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
              const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
              size_t ldc);
/* Same contract, on the calling thread alone: for a loop that splits a batch among the OpenMP
 * team itself (per-chunk convolution), each thread running its own products. The result does
 * not depend on the team size (the same single-threaded OpenBLAS path computes every call). */
void kd_sgemm_serial(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                     const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                     size_t ldc);
/* A dense layer's product: y[M,N] = x[M,K] w[N,K]^T + bias[N] (bias may be NULL). split = 1
 * allows cutting the rows into one block per thread, each a one-thread sgemm, where that is
 * faster (inference over a batch with small weights), and one sample's output rows into one
 * block per thread, each a one-thread sgemv, for weights of KD_GEMV_SPLIT_MIN floats or more
 * (the same bits as one sgemv); split = 0 (training) is always the team's sgemm.
 * Deterministic for a given thread count either way. */
#define KD_GEMV_SPLIT_MIN ((size_t)1 << 19)
void kd_sgemm_linear(size_t M, size_t N, size_t K, const float *x, const float *w,
                     const float *bias, float *y, int split);
/* Same contract, naive triple loop with double accumulation. */
void kd_sgemm_ref(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                  const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                  size_t ldc);
/* 1 when the OpenBLAS loaded at run time is its OpenMP build (openblas_get_parallel() == 2),
 * the one that shares distill's thread pool; thread counts are set in kd_threads.h. */
int kd_blas_is_openmp(void);
/* The loaded OpenBLAS's own description, "OpenBLAS 0.3.21 DYNAMIC_ARCH ... MAX_THREADS=64"
 * (openblas_get_config), then the kernels it runs, what chose them (OPENBLAS_CORETYPE or its
 * own detection) and the widest kernels this CPU supports, for `distill --version`. */
const char *kd_blas_config(void);
/* The name of the kernels OpenBLAS runs (openblas_get_corename: "Haswell", "SkylakeX", ...). */
const char *kd_blas_corename(void);
/* The widest vectors OpenBLAS's kernels use: 3 AVX-512, 2 AVX2 + FMA, 1 AVX, 0 older or unknown. */
int kd_blas_core_level(void);
/* 1, with a one-line note in buf, when OPENBLAS_CORETYPE pins OpenBLAS to kernels below what
 * this CPU supports (AVX2 kernels on an AVX-512 CPU, say); 0 otherwise, buf untouched. */
int kd_blas_pin_note(char *buf, size_t cap);

#endif
