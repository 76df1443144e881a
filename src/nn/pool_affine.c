/* pool_affine.c - inference's batchnorm -> maxpool2d 2x2 -> relu over a plane, 8 windows at a
 * time with AVX2, 4 on rows of 4 to 7 (fused.h, kd_maxpool2x2_affine_relu_plane's values-only
 * case).
 *
 * Batch norm's map g(x) = k (x - mu) + beta is monotonic in x as floats compute it (each
 * operation rounds monotonically): non-decreasing for k > 0, non-increasing for k < 0. So the
 * window's largest g is g of its largest input (k > 0) or of its smallest (k < 0), and g is
 * applied once per output instead of once per input. The selects are the general path's, in
 * its order, on the inputs instead of the mapped values (b > a there is b > a or b < a here):
 * where two inputs map to the same float either one gives that float, and a NaN loses every
 * comparison in both, so the outputs are the same bits. k = 0 (where g of an infinite input
 * is NaN and of a finite one beta) stays with the general path. */
#include "fused.h"

#include "../core/test_hooks.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#ifdef KD_TEST_HOOKS
int kd_pool_affine_fast = 1;
#endif

/* The even and odd elements of 16 consecutive floats, each in order. */
__attribute__((target("avx2"))) static inline void split_pairs(const float *p, __m256 *even,
                                                               __m256 *odd) {
    const __m256 lo = _mm256_loadu_ps(p), hi = _mm256_loadu_ps(p + 8);
    *even = _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8));
    *odd = _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD)), 0xD8));
}

/* The even and odd elements of 8 consecutive floats. */
__attribute__((target("avx2"))) static inline void split_pairs4(const float *p, __m128 *even,
                                                                __m128 *odd) {
    const __m128 lo = _mm_loadu_ps(p), hi = _mm_loadu_ps(p + 4);
    *even = _mm_shuffle_ps(lo, hi, 0x88);
    *odd = _mm_shuffle_ps(lo, hi, 0xDD);
}

/* Windows ow .. ow + 7 of a row pair: (b > a) ? b : a is _mm256_max_ps(b, a), (b < a) ? b : a
 * _mm256_min_ps(b, a); relu's m < 0 ? 0 : m is _mm256_max_ps(0, m). */
#define POOL8(SELECT)                                                                          \
    do {                                                                                       \
        __m256 a, b, c, d;                                                                     \
        split_pairs(r0 + 2 * ow, &a, &b);                                                      \
        split_pairs(r1 + 2 * ow, &c, &d);                                                      \
        const __m256 m = SELECT(SELECT(d, c), SELECT(b, a));                                   \
        const __m256 g = _mm256_add_ps(_mm256_mul_ps(vk, _mm256_sub_ps(m, vmu)), vbeta);      \
        _mm256_storeu_ps(y + ow, _mm256_max_ps(_mm256_setzero_ps(), g));                       \
    } while (0)

/* Windows ow .. ow + 3, for rows of 4 to 7 windows. */
#define POOL4(SELECT)                                                                          \
    do {                                                                                       \
        __m128 a, b, c, d;                                                                     \
        split_pairs4(r0 + 2 * ow, &a, &b);                                                     \
        split_pairs4(r1 + 2 * ow, &c, &d);                                                     \
        const __m128 m = SELECT(SELECT(d, c), SELECT(b, a));                                   \
        const __m128 g = _mm_add_ps(_mm_mul_ps(_mm256_castps256_ps128(vk),                    \
                                               _mm_sub_ps(m, _mm256_castps256_ps128(vmu))),    \
                                    _mm256_castps256_ps128(vbeta));                            \
        _mm_storeu_ps(y + ow, _mm_max_ps(_mm_setzero_ps(), g));                                \
    } while (0)

__attribute__((target("avx2"))) static void plane_avx2(const float *xp, float *yp, size_t OH,
                                                       size_t OW, float k, float mu,
                                                       float beta) {
    const size_t W = 2 * OW;
    const __m256 vk = _mm256_set1_ps(k), vmu = _mm256_set1_ps(mu), vbeta = _mm256_set1_ps(beta);
    for (size_t oh = 0; oh < OH; oh++) {
        const float *r0 = xp + 2 * oh * W, *r1 = r0 + W;
        float *y = yp + oh * OW;
        /* the row's last 8 (or 4) windows as one more vector overlapping the ones before */
        const size_t step = OW >= 8 ? 8 : 4;
        for (size_t i = 0; i < OW; i += step) {
            const size_t ow = i + step <= OW ? i : OW - step;
            if (step == 4 && k > 0.0f) POOL4(_mm_max_ps);
            else if (step == 4) POOL4(_mm_min_ps);
            else if (k > 0.0f) POOL8(_mm256_max_ps);
            else POOL8(_mm256_min_ps);
        }
    }
}

int kd_maxpool2x2_affine_relu_fast(const float *xp, float *yp, size_t OH, size_t OW, float k,
                                   float mu, float beta) {
    static int avx2 = -1;
    int a = __atomic_load_n(&avx2, __ATOMIC_RELAXED);
    if (a < 0) {
        __builtin_cpu_init();
        a = __builtin_cpu_supports("avx2") != 0;
        __atomic_store_n(&avx2, a, __ATOMIC_RELAXED);
    }
    if (!a || OW < 4 || !(k > 0.0f || k < 0.0f) || !KD_HOOK_VALUE(kd_pool_affine_fast, 1))
        return 0;
    plane_avx2(xp, yp, OH, OW, k, mu, beta);
    return 1;
}
#else
int kd_maxpool2x2_affine_relu_fast(const float *xp, float *yp, size_t OH, size_t OW, float k,
                                   float mu, float beta) {
    (void)xp, (void)yp, (void)OH, (void)OW, (void)k, (void)mu, (void)beta;
    return 0;
}
#endif
