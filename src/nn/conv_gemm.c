/* conv_gemm.c - inference's convolution product (conv_gemm.h).
 *
 * (On an AVX-512 CPU the panels are 48 columns, 3 vectors of 16, the same way; below, AVX2's.)
 * A kernel call keeps 4 output channels by up to 24 columns in 12 AVX2 registers over a block
 * of taps: per tap 3 column loads (from the column matrix as im2col left it, one row of 24
 * consecutive floats) and 4 weight broadcasts, straight from the 4 weight rows as stored, for
 * 12 FMAs, so the FMA units bound it, as in sgemm's own kernels; nothing is packed. The columns
 * are walked in panels of 24 (the last one narrower, masked), and each panel is used by every
 * channel panel while it is in L1; the taps are cut into blocks of at most CG_KC so that a
 * panel (KC rows of 96 bytes) stays there. A last panel of at most CG_NARROW columns goes
 * through the transposed copy instead (16 channels by all its columns in registers, each weight
 * vector loaded once per tap for all of them), where the caller made one. */
#include "conv_gemm.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "fused.h"
#include "simd.h"
#include "kd_gemm.h"
#include "../core/test_hooks.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CG_X86 1
#endif

/* Taps per block: a panel of 24 columns by 192 taps is 18 KiB of L1's 32 (conv_gemm.h says
 * 192 too). */
#define CG_KC 192
#define CG_MR 4
#define CG_NR 24
/* A last panel this narrow goes column by column (the column kernel) where the caller made
 * the transposed copy: a masked panel costs as much for one column as for eight. */
#define CG_NARROW 6

/* Channels of the transposed copy's rows: O rounded up to whole vectors. */
static size_t round8(size_t n) { return (n + 7) / 8 * 8; }

size_t kd_conv_gemm_transposed_floats(size_t O, size_t K) { return K * round8(O); }

void kd_conv_gemm_transpose(size_t O, size_t K, const float *w, float *wt) {
    const size_t O8 = round8(O);
    for (size_t k = 0; k < K; k++)
        for (size_t o = 0; o < O8; o++) wt[k * O8 + o] = o < O ? w[o * K + k] : 0.0f;
}

#ifdef KD_TEST_HOOKS
int kd_conv_gemm_wide = -1;
#endif
/* Whether the panels run the AVX-512 kernels (48 columns) instead of the AVX2 ones (24). */
static int cg_wide(void) {
    static int wide = -1; /* decided once; every thread computes the same answer */
    int w = __atomic_load_n(&wide, __ATOMIC_RELAXED);
    if (w < 0) {
#ifdef CG_X86
        __builtin_cpu_init();
        w = __builtin_cpu_supports("avx512f") != 0;
#else
        w = 0;
#endif
        __atomic_store_n(&wide, w, __ATOMIC_RELAXED);
    }
    return w && KD_HOOK_VALUE(kd_conv_gemm_wide, -1) != 0;
}
static size_t cg_nr(void) { return cg_wide() ? 2 * CG_NR : CG_NR; }

int kd_conv_gemm_narrow_tail(size_t N) {
    const size_t nr = cg_nr();
    return N % nr && N % nr <= CG_NARROW;
}

int kd_conv_gemm_wins(void) {
    static int wins = -1; /* decided once; every thread computes the same answer */
    int w = __atomic_load_n(&wins, __ATOMIC_RELAXED);
    if (w < 0) {
#ifdef CG_X86
        __builtin_cpu_init();
        const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        w = !avx2                            ? KD_OWN_NEVER
            : kd_blas_core_level() <= 2      ? KD_OWN_EVERY_PRODUCT
            : __builtin_cpu_supports("avx512f") ? KD_OWN_BATCH_IM2COL
                                             : KD_OWN_NEVER;
#else
        w = 0;
#endif
        __atomic_store_n(&wins, w, __ATOMIC_RELAXED);
    }
    return w;
}

/* One call: weight rows [0, mr) at a (rows lda apart, kc taps each) by columns [0, n) of b
 * (rows ldb apart) into c (rows ldc apart). first: c = sum + bias (or the sum), else
 * c += sum. */
typedef struct {
    const float *a, *b, *bias;
    float *c;
    size_t kc, lda, ldb, ldc, mr, n;
    int first, act; /* act: KD_ACT_* applied as the last block is stored, or KD_ACT_NONE */
} cg_call;
/* The last few columns: channels [0, mo) (mo <= 16) of the transposed copy at (rows O8 apart)
 * by the n <= CG_NARROW columns at b (rows ldb apart) into c (rows ldc apart); first as above. */
typedef struct {
    const float *at, *b, *bias;
    float *c;
    size_t kc, ldb, ldc, O8, mo, n;
    int first, act;
} cg_col;

#ifdef CG_X86
/* The activation as an output is stored, kd_relu's and kd_relu6's values: max and min return
 * their second operand when either is NaN, so a NaN passes. One lane without a branch on the
 * value (a relu6's two compares mispredicted in the column kernel's stores), and 8 lanes. */
__attribute__((target("avx2,fma"))) static inline float cg_act_ss(float v, int act) {
    if (act == KD_ACT_NONE) return v;
    __m128 x = _mm_max_ss(_mm_setzero_ps(), _mm_set_ss(v));
    if (act == KD_ACT_RELU6) x = _mm_min_ss(_mm_set_ss(6.0f), x);
    return _mm_cvtss_f32(x);
}
__attribute__((target("avx2,fma"))) static inline __m256 cg_act(__m256 v, int act) {
    v = _mm256_max_ps(_mm256_setzero_ps(), v);
    return act == KD_ACT_RELU6 ? _mm256_min_ps(_mm256_set1_ps(6.0f), v) : v;
}
/* NV vectors of 8 columns; MASKED: the columns past n are neither read nor written. The 12
 * accumulators are named variables (an array of them was kept in memory by GCC 12, a store per
 * FMA); the ones past NV are dead code. */
#define CG_LOAD(p, v)                                                                            \
    (masked ? _mm256_maskload_ps((p) + 8 * (v), m##v) : _mm256_loadu_ps((p) + 8 * (v)))
#define CG_ROW(r)                                                                                \
    do {                                                                                         \
        const __m256 s = _mm256_broadcast_ss(a##r + t);                                          \
        c##r##0 = _mm256_fmadd_ps(s, b0, c##r##0);                                               \
        if (nv > 1) c##r##1 = _mm256_fmadd_ps(s, b1, c##r##1);                                   \
        if (nv > 2) c##r##2 = _mm256_fmadd_ps(s, b2, c##r##2);                                   \
    } while (0)
#define CG_STORE1(r, v)                                                                          \
    do {                                                                                         \
        float *row = k->c + (size_t)(r) * k->ldc;                                                \
        const __m256 prev = k->first ? bias##r : CG_LOAD(row, v);                                \
        __m256 sum = _mm256_add_ps(prev, c##r##v);                                               \
        if (k->act) sum = cg_act(sum, k->act);                                                   \
        if (masked && k->n < 8 * (size_t)(v) + 8)                                               \
            kd_store_part8(row + 8 * (v), sum, k->n - 8 * (size_t)(v));                         \
        else _mm256_storeu_ps(row + 8 * (v), sum);                                               \
    } while (0)
#define CG_STORE(r)                                                                              \
    do {                                                                                         \
        if (k->mr <= (r)) break;                                                                 \
        const __m256 bias##r = _mm256_set1_ps(k->bias ? k->bias[r] : 0.0f);                      \
        CG_STORE1(r, 0);                                                                         \
        if (nv > 1) CG_STORE1(r, 1);                                                             \
        if (nv > 2) CG_STORE1(r, 2);                                                             \
    } while (0)
#define CG_KERNEL(NAME, NV, MASKED)                                                              \
    __attribute__((target("avx2,fma"))) static void NAME(const cg_call *k) {                    \
        const int nv = NV, masked = MASKED;                                                      \
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);                          \
        const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)k->n), lane);              \
        const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)k->n - 8), lane);          \
        const __m256i m2 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)k->n - 16), lane);         \
        (void)m0, (void)m1, (void)m2;                                                            \
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00, \
               c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;                 \
        /* rows past mr read row 0 again (computed, never stored) */                             \
        const float *a0 = k->a, *a1 = a0 + (k->mr > 1 ? k->lda : 0);                             \
        const float *a2 = a0 + (k->mr > 2 ? 2 * k->lda : 0);                                     \
        const float *a3 = a0 + (k->mr > 3 ? 3 * k->lda : 0);                                     \
        const float *b = k->b;                                                                   \
        const size_t kc = k->kc, ldb = k->ldb;                                                   \
        for (size_t t = 0; t < kc; t++, b += ldb) {                                              \
            const __m256 b0 = CG_LOAD(b, 0);                                                     \
            const __m256 b1 = nv > 1 ? CG_LOAD(b, 1) : b0;                                       \
            const __m256 b2 = nv > 2 ? CG_LOAD(b, 2) : b0;                                       \
            (void)b1, (void)b2;                                                                  \
            CG_ROW(0);                                                                           \
            CG_ROW(1);                                                                           \
            CG_ROW(2);                                                                           \
            CG_ROW(3);                                                                           \
        }                                                                                        \
        CG_STORE(0);                                                                             \
        CG_STORE(1);                                                                             \
        CG_STORE(2);                                                                             \
        CG_STORE(3);                                                                             \
    }
CG_KERNEL(k24, 3, 0)
CG_KERNEL(k24m, 3, 1)
CG_KERNEL(k16, 2, 0)
CG_KERNEL(k16m, 2, 1)
CG_KERNEL(k8, 1, 0)
CG_KERNEL(k8m, 1, 1)

/* The same on AVX-512: 4 channels by 48 columns (NV vectors of 16) in 12 registers, the loads
 * and stores masked to the panel's n columns (native masks, no cost for whole vectors). Each
 * output's sum is the AVX2 kernels' term for term, so a column's bits do not depend on the
 * vector width either. */
__attribute__((target("avx512f"))) static inline __m512 cg_act512(__m512 v, int act) {
    v = _mm512_max_ps(_mm512_setzero_ps(), v);
    return act == KD_ACT_RELU6 ? _mm512_min_ps(_mm512_set1_ps(6.0f), v) : v;
}
static __mmask16 cg_lanes16(size_t n, size_t from) {
    return n >= from + 16 ? (__mmask16)0xFFFF : n > from ? (__mmask16)((1u << (n - from)) - 1) : 0;
}
#define CG5_ROW(r)                                                                               \
    do {                                                                                         \
        const __m512 s = _mm512_set1_ps(a##r[t]);                                                \
        c##r##0 = _mm512_fmadd_ps(s, b0, c##r##0);                                               \
        if (nv > 1) c##r##1 = _mm512_fmadd_ps(s, b1, c##r##1);                                   \
        if (nv > 2) c##r##2 = _mm512_fmadd_ps(s, b2, c##r##2);                                   \
    } while (0)
#define CG5_STORE1(r, v)                                                                         \
    do {                                                                                         \
        float *row = k->c + (size_t)(r) * k->ldc + 16 * (v);                                     \
        const __m512 prev = k->first ? bias##r : _mm512_maskz_loadu_ps(m##v, row);              \
        __m512 sum = _mm512_add_ps(prev, c##r##v);                                               \
        if (k->act) sum = cg_act512(sum, k->act);                                                \
        _mm512_mask_storeu_ps(row, m##v, sum);                                                   \
    } while (0)
#define CG5_STORE(r)                                                                             \
    do {                                                                                         \
        if (k->mr <= (r)) break;                                                                 \
        const __m512 bias##r = _mm512_set1_ps(k->bias ? k->bias[r] : 0.0f);                      \
        CG5_STORE1(r, 0);                                                                        \
        if (nv > 1) CG5_STORE1(r, 1);                                                            \
        if (nv > 2) CG5_STORE1(r, 2);                                                            \
    } while (0)
#define CG5_KERNEL(NAME, NV)                                                                     \
    __attribute__((target("avx512f"))) static void NAME(const cg_call *k) {                     \
        const int nv = NV;                                                                       \
        const __mmask16 m0 = cg_lanes16(k->n, 0), m1 = cg_lanes16(k->n, 16),                     \
                        m2 = cg_lanes16(k->n, 32);                                               \
        (void)m1, (void)m2;                                                                      \
        __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00, \
               c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;                 \
        const float *a0 = k->a, *a1 = a0 + (k->mr > 1 ? k->lda : 0);                             \
        const float *a2 = a0 + (k->mr > 2 ? 2 * k->lda : 0);                                     \
        const float *a3 = a0 + (k->mr > 3 ? 3 * k->lda : 0);                                     \
        const float *b = k->b;                                                                   \
        const size_t kc = k->kc, ldb = k->ldb;                                                   \
        for (size_t t = 0; t < kc; t++, b += ldb) {                                              \
            const __m512 b0 = _mm512_maskz_loadu_ps(m0, b);                                      \
            const __m512 b1 = nv > 1 ? _mm512_maskz_loadu_ps(m1, b + 16) : b0;                   \
            const __m512 b2 = nv > 2 ? _mm512_maskz_loadu_ps(m2, b + 32) : b0;                   \
            (void)b1, (void)b2;                                                                  \
            CG5_ROW(0);                                                                          \
            CG5_ROW(1);                                                                          \
            CG5_ROW(2);                                                                          \
            CG5_ROW(3);                                                                          \
        }                                                                                        \
        CG5_STORE(0);                                                                            \
        CG5_STORE(1);                                                                            \
        CG5_STORE(2);                                                                            \
        CG5_STORE(3);                                                                            \
    }
CG5_KERNEL(k48, 3)
CG5_KERNEL(k32, 2)
CG5_KERNEL(k16w, 1)

/* The last n <= 6 columns of a panel for up to 16 channels of the transposed copy (rows of O8
 * channels): NV vectors of channels by NC columns in registers, per tap NV weight loads and NC
 * broadcasts of the columns' values for NV * NC FMAs (each weight read once for all the
 * columns). Each output's sum is the panel kernels' own, term for term (a fma of the same two
 * factors from 0, then added to the bias or the previous block), so a column's bits do not
 * depend on which kernel ran it. For the last few columns of a product, where a masked panel
 * would spend a whole 8-wide FMA per channel on each. */
#define CG_NFMA(j)                                                                               \
    do {                                                                                         \
        if (nc > (j)) {                                                                          \
            const __m256 s = _mm256_broadcast_ss(b + (j));                                       \
            a##j##0 = _mm256_fmadd_ps(w0, s, a##j##0);                                           \
            if (nv > 1) a##j##1 = _mm256_fmadd_ps(w1, s, a##j##1);                               \
        }                                                                                        \
    } while (0)
#define CG_NSTORE(j)                                                                             \
    do {                                                                                         \
        if (nc > (j)) {                                                                          \
            _mm256_storeu_ps(sum[j], a##j##0);                                                   \
            if (nv > 1) _mm256_storeu_ps(sum[j] + 8, a##j##1);                                   \
        }                                                                                        \
    } while (0)
#define CG_NKERNEL(NAME, NV, NC)                                                                 \
    __attribute__((target("avx2,fma"))) static void NAME(const cg_col *k) {                     \
        const int nv = NV, nc = NC;                                                              \
        __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, \
               a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;                 \
        const float *at = k->at, *b = k->b;                                                      \
        const size_t kc = k->kc, ldb = k->ldb, O8 = k->O8;                                       \
        for (size_t t = 0; t < kc; t++, at += O8, b += ldb) {                                    \
            const __m256 w0 = _mm256_loadu_ps(at);                                               \
            const __m256 w1 = nv > 1 ? _mm256_loadu_ps(at + 8) : w0;                             \
            (void)w1;                                                                            \
            CG_NFMA(0);                                                                          \
            CG_NFMA(1);                                                                          \
            CG_NFMA(2);                                                                          \
            CG_NFMA(3);                                                                          \
            CG_NFMA(4);                                                                          \
            CG_NFMA(5);                                                                          \
        }                                                                                        \
        float sum[6][16];                                                                        \
        CG_NSTORE(0);                                                                            \
        CG_NSTORE(1);                                                                            \
        CG_NSTORE(2);                                                                            \
        CG_NSTORE(3);                                                                            \
        CG_NSTORE(4);                                                                            \
        CG_NSTORE(5);                                                                            \
        for (size_t r = 0; r < k->mo && r < 8 * (size_t)nv; r++) {                               \
            float *c = k->c + r * k->ldc;                                                        \
            const float b0 = k->bias ? k->bias[r] : 0.0f;                                        \
            for (size_t j = 0; j < (size_t)nc; j++)                                              \
                c[j] = cg_act_ss((k->first ? b0 : c[j]) + sum[j][r], k->act);                    \
        }                                                                                        \
    }
CG_NKERNEL(n1v1, 1, 1)
CG_NKERNEL(n2v1, 1, 2)
CG_NKERNEL(n3v1, 1, 3)
CG_NKERNEL(n4v1, 1, 4)
CG_NKERNEL(n5v1, 1, 5)
CG_NKERNEL(n6v1, 1, 6)
CG_NKERNEL(n1v2, 2, 1)
CG_NKERNEL(n2v2, 2, 2)
CG_NKERNEL(n3v2, 2, 3)
CG_NKERNEL(n4v2, 2, 4)
CG_NKERNEL(n5v2, 2, 5)
CG_NKERNEL(n6v2, 2, 6)

/* Exactly the vectors mo channels need: a row of the copy ends at O rounded up to 8, so a
 * wider read would pass the last row's end. */
static void column(const cg_col *k) {
    static void (*const by_shape[2][CG_NARROW])(const cg_col *) = {
        {n1v1, n2v1, n3v1, n4v1, n5v1, n6v1}, {n1v2, n2v2, n3v2, n4v2, n5v2, n6v2}};
    by_shape[k->mo > 8][k->n - 1](k);
}

static void call(const cg_call *k) {
    if (cg_wide()) {
        if (k->n > 32) k48(k);
        else if (k->n > 16) k32(k);
        else k16w(k);
        return;
    }
    /* whole vectors unmasked (a 4x4 plane's 16 columns, masked, ran 15% slower) */
    if (k->n == CG_NR) k24(k);
    else if (k->n > 16) k24m(k);
    else if (k->n == 16) k16(k);
    else if (k->n > 8) k16m(k);
    else if (k->n == 8) k8(k);
    else k8m(k);
}
#else
static void call(const cg_call *k) {
    for (size_t r = 0; r < k->mr; r++)
        for (size_t j = 0; j < k->n; j++) {
            float s = 0.0f;
            for (size_t t = 0; t < k->kc; t++)
                s = fmaf(k->a[r * k->lda + t], k->b[t * k->ldb + j], s);
            float *c = k->c + r * k->ldc + j;
            *c = kd_act_value((k->first ? (k->bias ? k->bias[r] : 0.0f) : *c) + s, k->act);
        }
}
static void column(const cg_col *k) {
    for (size_t r = 0; r < k->mo; r++)
        for (size_t j = 0; j < k->n; j++) {
            float s = 0.0f;
            for (size_t t = 0; t < k->kc; t++)
                s = fmaf(k->at[t * k->O8 + r], k->b[t * k->ldb + j], s);
            float *c = k->c + r * k->ldc + j;
            *c = kd_act_value((k->first ? (k->bias ? k->bias[r] : 0.0f) : *c) + s, k->act);
        }
}
#endif


/* Channels [o0, o1) of column panel j of the product, every tap block: a run of 4-channel
 * panels (o0 a multiple of 4) or, for a narrow last panel with the copy, of 16-channel column
 * kernels (o0 a multiple of 16). Each output is computed the same way whatever the run. */
static void panel(size_t O, size_t K, size_t N, const float *w, const float *wt,
                  const float *bias, int act, const float *cols, size_t ldb, float *y,
                  size_t ldc, size_t j, size_t o0, size_t o1) {
    const size_t nr = cg_nr(), n0 = j * nr, n = N - n0 < nr ? N - n0 : nr;
    const size_t nb = (K + CG_KC - 1) / CG_KC, O8 = round8(O);
    for (size_t blk = 0; blk < nb; blk++) {
        const size_t k0 = K * blk / nb, k1 = K * (blk + 1) / nb;
        const int a = blk + 1 == nb ? act : KD_ACT_NONE;
        if (wt && n <= CG_NARROW) {
            for (size_t o = o0; o < o1; o += 16) {
                const cg_col k = {wt + k0 * O8 + o, cols + k0 * ldb + n0, bias ? bias + o : NULL,
                                  y + o * ldc + n0, k1 - k0, ldb, ldc, O8,
                                  o1 - o < 16 ? o1 - o : 16, n, blk == 0, a};
                column(&k);
            }
            continue;
        }
        for (size_t o = o0; o < o1; o += CG_MR) {
            const cg_call k = {w + o * K + k0, cols + k0 * ldb + n0, bias ? bias + o : NULL,
                               y + o * ldc + n0, k1 - k0, K, ldb, ldc,
                               o1 - o < CG_MR ? o1 - o : CG_MR, n, blk == 0, a};
            call(&k);
        }
    }
}

/* The team's share-out: (column panel, block of CG_OB channels) pairs, so that a product of
 * one panel (a 4x4 plane's 16 columns) still splits, each block's weights read by one thread. */
#define CG_OB 64

void kd_conv_gemm(size_t O, size_t K, size_t N, const float *w, const float *wt,
                  const float *bias, int act, const float *cols, size_t ldb, float *y,
                  size_t ldc, int team) {
    const size_t np = (N + cg_nr() - 1) / cg_nr();
#ifdef KD_TEST_HOOKS /* benchmarks time the same product by sgemm (bench_ort's fraction) */
    if (kd_hook_gemm_shape) kd_hook_gemm_shape(0, 0, O, N, K, !team);
#endif
    if (!team) {
        for (size_t j = 0; j < np; j++)
            panel(O, K, N, w, wt, bias, act, cols, ldb, y, ldc, j, 0, O);
        return;
    }
    const size_t nob = (O + CG_OB - 1) / CG_OB;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < np * nob; i++) {
        const size_t o0 = i % nob * CG_OB, o1 = o0 + CG_OB < O ? o0 + CG_OB : O;
        panel(O, K, N, w, wt, bias, act, cols, ldb, y, ldc, i / nob, o0, o1);
    }
}
