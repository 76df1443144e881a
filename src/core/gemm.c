/* gemm.c - the single place that talks to BLAS. Every dense product in distill is a call to
 * kd_sgemm (or kd_sgemm_linear, a dense layer's product over it); kd_sgemm_ref is the plain
 * loop the tests compare it against; the kd_blas_* functions say which OpenBLAS kernels run. */
#include "kd_gemm.h"

#include <cblas.h>
#include <omp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kd_common.h"
#include "kd_threads.h"

/* cblas takes every dimension as a 32-bit int (blasint). The model refuses tensors and
 * per-sample activations past INT_MAX values when it is built (model.c), so no layer can pass
 * a larger size here: one that does is a bug, stopped before the narrowing conversion. */
#define FITS_BLASINT(v) ((v) <= (size_t)INT_MAX)

#include "test_hooks.h"

/* Small products (output layers, thin students) ran faster on one thread than on two on this
 * class of machine (pthreads OpenBLAS): 128x10x1200 took 50 us on one thread, 123 us on two;
 * 128x64x784 127 us vs 278 us; from 128x128x784 (12.8M multiply-adds) on, two threads won. So
 * products under 8M multiply-adds ran on one thread (now 2M, below). So do products with a tiny output and a
 * short reduction, which OpenBLAS cannot split between threads usefully. With the OpenMP build
 * the switch is omp_set_num_threads (OpenBLAS reads the OpenMP count on every call), a store
 * into libgomp's per-thread settings. tests/bench/bench_gemm.c times both sides of this rule
 * under the current build: with the OpenMP build the 6.4M-multiply-add 128x64x784 product ran
 * faster on the team on both machines measured (Intel: 88 vs 133 us; AMD EPYC: 120 vs 159 us),
 * while the 1.5M output layers were split (Intel: team 36 vs 46 us; AMD: one thread 74 vs 86 and
 * 125 us), and one sample's 3.6M-multiply-add conv2 product ran faster on the team (AMD: 64
 * vs 97 us). So the cut is 2M: output layers stay on one thread, everything wider goes to the
 * team. */
#define KD_SMALL_MACS 2e6
#define KD_SMALL_OUTPUT 1024

/* A tiny output with a long reduction (a first conv layer's weight gradient, 32x9 summed over
 * 100352 positions: 1.6 ms on one thread, 2.6 ms on two under pthreads OpenBLAS, which cannot
 * split it) is cut along K into KD_SPLIT_PIECES fixed pieces: each an sgemm into its own slot,
 * run by the OpenMP team (an sgemm inside a parallel region runs on its calling thread), then
 * the slots added in piece order. The pieces never depend on the thread count, so neither do
 * the bits; one thread runs the same pieces in turn. */
#define KD_SPLIT_PIECES 8
#define KD_SPLIT_MIN_K 16384

static void blas(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                 const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                 size_t ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K, alpha, A,
                (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

/* C = alpha * sum over pieces of op(A_p) op(B_p) + beta * C, M * N <= KD_SMALL_OUTPUT. */
static void sgemm_split_k(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                          const float *A, size_t lda, const float *B, size_t ldb, float beta,
                          float *C, size_t ldc) {
    float part[KD_SPLIT_PIECES][KD_SMALL_OUTPUT];  /* 32 KiB: no allocation in a step */
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < KD_SPLIT_PIECES; p++) {
        const size_t k0 = K * p / KD_SPLIT_PIECES, k1 = K * (p + 1) / KD_SPLIT_PIECES;
        /* op(A) is [M, K]: columns k0.. of A, or rows k0.. of A^T; op(B) is [K, N] likewise. */
        const float *Ap = trans_a ? A + k0 * lda : A + k0;
        const float *Bp = trans_b ? B + k0 : B + k0 * ldb;
        blas(trans_a, trans_b, M, N, k1 - k0, 1.0f, Ap, lda, Bp, ldb, 0.0f, part[p], N);
    }
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) {
            float acc = part[0][i * N + j];
            for (size_t p = 1; p < KD_SPLIT_PIECES; p++) acc += part[p][i * N + j];
            /* beta == 0 overwrites (C may hold garbage), as BLAS does. */
            C[i * ldc + j] = alpha * acc + (beta == 0.0f ? 0.0f : beta * C[i * ldc + j]);
        }
}

#ifdef KD_TEST_HOOKS
unsigned long kd_hook_gemm_one_thread;
int kd_gemm_small_rule = 1;
void (*kd_hook_gemm_shape)(int trans_a, int trans_b, size_t M, size_t N, size_t K, int serial);
#endif

/* What every product does first: nothing to compute (0), else the benchmark hook and the
 * blasint check (see FITS_BLASINT). */
static int begin_product(int trans_a, int trans_b, size_t M, size_t N, size_t K, size_t lda,
                         size_t ldb, size_t ldc, int serial) {
    if (M == 0 || N == 0) return 0;
#ifdef KD_TEST_HOOKS
    if (kd_hook_gemm_shape) kd_hook_gemm_shape(trans_a, trans_b, M, N, K, serial);
#else
    (void)trans_a, (void)trans_b, (void)serial;  /* only the benchmark hook reads them */
#endif
    KD_ASSERT(FITS_BLASINT(M) && FITS_BLASINT(N) && FITS_BLASINT(K) && FITS_BLASINT(lda) &&
              FITS_BLASINT(ldb) && FITS_BLASINT(ldc));
    return 1;
}

void kd_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
              const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
              size_t ldc) {
    if (!begin_product(trans_a, trans_b, M, N, K, lda, ldb, ldc, 0)) return;
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
    if (M * N <= KD_SMALL_OUTPUT && K >= KD_SPLIT_MIN_K && !omp_in_parallel()) {
        sgemm_split_k(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* The count is read on every call, so a run that never set one (threads 0, the default)
     * takes the same path as one that asked for all cores. Inside a parallel region (a
     * per-chunk loop) OpenBLAS runs on the calling thread anyway. */
    const int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    const int thin = nt > 1 && KD_HOOK_VALUE(kd_gemm_small_rule, 1) &&
                     ((double)M * (double)N * (double)K < KD_SMALL_MACS ||
                      (double)M * (double)N <= KD_SMALL_OUTPUT);
    if (thin) {
        omp_set_num_threads(1);
        KD_HOOK_RUN(kd_hook_gemm_one_thread++);
    }
    blas(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (thin) omp_set_num_threads(nt);
}

void kd_sgemm_serial(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                     const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                     size_t ldc) {
    if (!begin_product(trans_a, trans_b, M, N, K, lda, ldb, ldc, 1)) return;
    /* Inside an active parallel region OpenBLAS already runs on the calling thread; a team of
     * one (one thread configured) is not active, so the count is pinned for the call. Either
     * way the same single-threaded OpenBLAS path computes it, whatever the team size. */
    if (omp_in_parallel()) {
        blas(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    const int nt = omp_get_max_threads();
    if (nt > 1) omp_set_num_threads(1);
    blas(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (nt > 1) omp_set_num_threads(nt);
}

/* A dense layer's inference product over a batch (the compact student's 1000x128x784): the
 * team's sgemm splits it finely and meets at barriers for every block, and ran it at about a
 * third of the sgemm peak. Cut into one contiguous block of rows per thread instead, each a
 * one-thread sgemm, every thread packs the weights once and runs alone to the end. That pays
 * while the weights stay in a core's own cache (KD_ROWS_MAX_WEIGHTS floats: 1 MiB, the L2 of
 * the EPYC measured) and each thread has rows enough to amortise its packing (KD_ROWS_MIN);
 * products under KD_SMALL_MACS keep the small-products rule (one thread, no fork).
 * The blocks depend on the thread count only, and each row's sums are computed by the same
 * kernel in the same order either way. */
#define KD_ROWS_MAX_WEIGHTS ((size_t)1 << 18)
#define KD_ROWS_MIN 64

#ifdef KD_TEST_HOOKS
int kd_gemm_row_split = 1;
#endif

/* One sample through a dense layer whose weights are past a core's L2 (the MLP teacher's
 * 784x1200 and 1200x1200): the product is one pass over the weights, memory bound, and one core
 * reads them from L3 at about half the rate two do (Xeon, 2 threads: 1200x1200 + 784x1200 by
 * one sgemv each, 324 us; by a block of output rows per thread, 156 us). Each row's sum is
 * the same sgemv kernel's in the same order however the rows are cut (the same bits as one
 * sgemv, on OpenBLAS's Haswell and SkylakeX kernels alike). */
static void gemv_rows(size_t N, size_t K, const float *x, const float *w, const float *bias,
                      float *y, int nt) {
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int t = 0; t < nt; t++) {
        const size_t r0 = N * (size_t)t / (size_t)nt, r1 = N * (size_t)(t + 1) / (size_t)nt;
        if (bias) memcpy(y + r0, bias + r0, (r1 - r0) * sizeof *y);
        kd_sgemm(0, 1, 1, r1 - r0, K, 1.0f, x, K, w + r0 * K, K, bias ? 1.0f : 0.0f, y + r0, N);
    }
}

void kd_sgemm_linear(size_t M, size_t N, size_t K, const float *x, const float *w,
                     const float *bias, float *y, int split) {
    const int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    const float beta = bias ? 1.0f : 0.0f;
    if (M == 1 && split && nt > 1 && N * K >= KD_GEMV_SPLIT_MIN && N >= (size_t)nt &&
        KD_HOOK_VALUE(kd_gemm_row_split, 1)) {
        gemv_rows(N, K, x, w, bias, y, nt);
        return;
    }
    if (!split || !KD_HOOK_VALUE(kd_gemm_row_split, 1) || nt < 2 || M < KD_ROWS_MIN * (size_t)nt ||
        N * K > KD_ROWS_MAX_WEIGHTS || (double)M * (double)N * (double)K < KD_SMALL_MACS) {
        /* The bias is written into y first and sgemm adds x W^T on top (beta = 1), so it
         * costs one pass over y and no separate add. */
        if (bias) {
#pragma omp parallel for schedule(static) if (KD_PAR(M * N))
            for (size_t i = 0; i < M; i++) memcpy(y + i * N, bias, N * sizeof *y);
        }
        kd_sgemm(0, 1, M, N, K, 1.0f, x, K, w, K, beta, y, N);
        return;
    }
    /* Row blocks start on multiples of 16 (the kernels' row unrolling); the bias goes into a
     * block's rows just before its product, while they are in this core's cache. */
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int t = 0; t < nt; t++) {
        const size_t r0 = (M * (size_t)t / (size_t)nt) & ~(size_t)15;
        const size_t r1 = t + 1 == nt ? M : (M * (size_t)(t + 1) / (size_t)nt) & ~(size_t)15;
        if (bias)
            for (size_t i = r0; i < r1; i++) memcpy(y + i * N, bias, N * sizeof *y);
        kd_sgemm_serial(0, 1, r1 - r0, N, K, 1.0f, x + r0 * K, K, w, K, beta, y + r0 * N, N);
    }
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

const char *kd_blas_corename(void) {
    const char *s = openblas_get_corename();
    return s && *s ? s : "unknown";
}

/* Kernel families by the widest vector instructions they use: 3 AVX-512, 2 AVX2 + FMA, 1 AVX,
 * 0 older or unknown. OpenBLAS 0.3.21's core names, compared without case. */
static int core_level(const char *core) {
    static const struct { const char *name; int level; } cores[] = {
        {"skylakex", 3}, {"cooperlake", 3}, {"sapphirerapids", 3}, {"haswell", 2},
        {"zen", 2},      {"excavator", 2},  {"steamroller", 1},    {"piledriver", 1},
        {"bulldozer", 1}, {"sandybridge", 1},
    };
    for (size_t i = 0; i < sizeof cores / sizeof cores[0]; i++)
        if (strcasecmp(core, cores[i].name) == 0) return cores[i].level;
    return 0;
}

/* The most capable of those families this CPU can run, and its name. */
static int cpu_level(const char **name) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return *name = "AVX-512 (SkylakeX kernels)", 3;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return *name = "AVX2 (Haswell kernels)", 2;
    if (__builtin_cpu_supports("avx")) return *name = "AVX (Sandybridge kernels)", 1;
    return *name = "no AVX", 0;
}

int kd_blas_core_level(void) { return core_level(kd_blas_corename()); }

/* The pin exists on some machines because older OpenBLAS builds computed wrong results on some
 * CPU families: the note says what runs and what could, and leaves the choice to the user. */
int kd_blas_pin_note(char *buf, size_t cap) {
    const char *pin = getenv("OPENBLAS_CORETYPE"), *cpu;
    if (!pin || !*pin) return 0;
    const char *core = kd_blas_corename();
    if (core_level(core) >= cpu_level(&cpu)) return 0;
    snprintf(buf, cap,
             "OPENBLAS_CORETYPE=%s: OpenBLAS runs its %s kernels; this CPU supports %s "
             "(docs/benchmarks.md gives the measured difference)",
             pin, core, cpu);
    return 1;
}

/* A static buffer: --version calls it once, on one thread. */
const char *kd_blas_config(void) {
    static char buf[384];
    const char *pin = getenv("OPENBLAS_CORETYPE"), *cpu;
    cpu_level(&cpu);
    snprintf(buf, sizeof buf, "%s, running its %s kernels (%s%s; this CPU supports %s)",
             openblas_get_config(), kd_blas_corename(),
             pin && *pin ? "pinned by OPENBLAS_CORETYPE=" : "chosen by OpenBLAS",
             pin && *pin ? pin : "", cpu);
    return buf;
}
