/* simd.h - private to src/nn: small AVX2 helpers the hand-written kernels share. */
#ifndef KD_NN_SIMD_H
#define KD_NN_SIMD_H

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stddef.h>

/* v's first k < 8 lanes into p[0, k), by plain stores: a masked store (vmaskmovps) costs more
 * than a whole kernel block on AMD CPUs, and a copy loop becomes a call to memcpy. */
__attribute__((target("avx2"))) static inline void kd_store_part8(float *p, __m256 v, size_t k) {
    __m128 h = _mm256_castps256_ps128(v);
    if (k >= 4) {
        _mm_storeu_ps(p, h);
        p += 4;
        k -= 4;
        h = _mm256_extractf128_ps(v, 1);
    }
    if (k >= 2) {
        _mm_storel_pi((__m64 *)p, h);
        p += 2;
        k -= 2;
        h = _mm_movehl_ps(h, h);
    }
    if (k) _mm_store_ss(p, h);
}
#endif

#endif
