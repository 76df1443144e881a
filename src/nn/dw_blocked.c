/* dw_blocked.c - the 3x3, padding 1 depthwise forward on small planes, eight channels at a time
 * (dw_blocked.h). MobileNet's depthwise layers run on planes of 14x14 down to 2x2, where the
 * plane kernels' vectors along a row of 7 or 4 points are mostly empty and most points are on
 * the border. Here eight channels' planes of one sample are turned into one zero-padded plane
 * of 8-channel vectors (8x8 transposes of eight consecutive points of each plane), so every
 * output point is nine vector multiply-adds with no border case, and eight output points are
 * turned back into the eight channels' planes the same way. */
#include "dw_blocked.h"

#include <math.h>
#include <string.h>

#include "simd.h"
#include "../core/test_hooks.h"

#ifdef KD_TEST_HOOKS
int kd_dw_blocked = 1;
#endif

#define DWB_MAX_PADDED 1024 /* (H + 2) * (W + 2) of the largest plane taken */

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

#if defined(__x86_64__) || defined(__i386__)
static int avx2_runs(void) {
    static int yes = -1; /* decided once; every thread computes the same answer */
    int w = __atomic_load_n(&yes, __ATOMIC_RELAXED);
    if (w < 0) {
        __builtin_cpu_init();
        w = __builtin_cpu_supports("avx2");
        __atomic_store_n(&yes, w, __ATOMIC_RELAXED);
    }
    return w;
}
#else
static int avx2_runs(void) { return 0; }
#endif

int kd_dwb_takes(const kd_dw_dims *d) {
    return KD_HOOK_VALUE(kd_dw_blocked, 1) && d->KH == 3 && d->KW == 3 && d->P == 1 &&
           (d->S == 1 || d->S == 2) && d->C >= 8 && (d->H + 2) * (d->W + 2) <= DWB_MAX_PADDED &&
           avx2_runs();
}

size_t kd_dwb_weight_floats(const kd_dw_dims *d) { return round16(d->C / 8 * 80); }
size_t kd_dwb_scratch_floats(const kd_dw_dims *d) { return round16((d->H + 2) * (d->W + 2) * 8); }

/* Block k's 80 floats: tap t's vector at 8t, the bias at 72. */
int kd_dwb_weights(const kd_dw_dims *d, const float *w, const float *bias, float *wt) {
    for (size_t k = 0; k < d->C / 8; k++)
        for (size_t u = 0; u < 8; u++) {
            const size_t c = 8 * k + u;
            for (size_t t = 0; t < 9; t++) {
                if (!isfinite(w[c * 9 + t])) return 0;
                wt[80 * k + 8 * t + u] = w[c * 9 + t];
            }
            wt[80 * k + 72 + u] = bias ? bias[c] : 0.0f;
        }
    return 1;
}

void kd_dwb_clear(const kd_dw_dims *d, float *scratch) {
    const size_t PW = d->W + 2, PH = d->H + 2;
    memset(scratch, 0, PW * 8 * sizeof *scratch);
    memset(scratch + (PH - 1) * PW * 8, 0, PW * 8 * sizeof *scratch);
    for (size_t r = 1; r + 1 < PH; r++) {
        memset(scratch + r * PW * 8, 0, 8 * sizeof *scratch);
        memset(scratch + (r * PW + PW - 1) * 8, 0, 8 * sizeof *scratch);
    }
}

#if defined(__x86_64__) || defined(__i386__)
/* r[u] = row u, in place: r[k] becomes the k-th floats of the eight rows. */
__attribute__((target("avx2"))) static inline void transpose8(__m256 r[8]) {
    __m256 t[8], s[8];
    for (size_t i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (size_t i = 0; i < 8; i += 4) {
        s[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (size_t i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
    }
}

/* The eight input planes (H x W, HW apart) into the padded plane's inside, eight points at a
 * time (a plane's flat run crosses rows: each point goes to its own padded place), the last
 * HW mod 8 points one float at a time (never reading past a plane's end). */
__attribute__((target("avx2")))
static void pack(const kd_dw_dims *d, const float *x, float *scratch) {
    const size_t W = d->W, HW = d->H * W, PW = W + 2;
    size_t h = 0, w = 0, p = 0;
    for (; p + 8 <= HW; p += 8) {
        __m256 r[8];
        for (size_t u = 0; u < 8; u++) r[u] = _mm256_loadu_ps(x + u * HW + p);
        transpose8(r);
        for (size_t i = 0; i < 8; i++) {
            _mm256_storeu_ps(scratch + ((h + 1) * PW + w + 1) * 8, r[i]);
            if (++w == W) w = 0, h++;
        }
    }
    for (; p < HW; p++) {
        float *s = scratch + ((h + 1) * PW + w + 1) * 8;
        for (size_t u = 0; u < 8; u++) s[u] = x[u * HW + p];
        if (++w == W) w = 0, h++;
    }
}

__attribute__((target("avx2"))) static inline __m256 act8(__m256 v, int act) {
    if (act == KD_ACT_NONE) return v;
    v = _mm256_max_ps(_mm256_setzero_ps(), v); /* NaN and -0 pass, as kd_relu */
    return act == KD_ACT_RELU6 ? _mm256_min_ps(_mm256_set1_ps(6.0f), v) : v;
}

/* Eight output points at a time, each its own chain of nine adds (the chains interleaved, so
 * the adds' latency is hidden), then the bias and act, turned into the channels' planes. */
__attribute__((target("avx2")))
static void block_avx2(const kd_dw_dims *d, const float *x, const float *wt, int bias, int act,
                       float *y, float *scratch) {
    const size_t PW = d->W + 2, S = d->S, OW = d->OW, OHW = d->OH * OW;
    pack(d, x, scratch);
    const __m256 b = _mm256_loadu_ps(wt + 72);
    size_t oh = 0, ow = 0;
    for (size_t p = 0; p < OHW; p += 8) {
        const size_t n = OHW - p < 8 ? OHW - p : 8;
        const float *q[8];
        for (size_t i = 0; i < 8; i++) {  /* past n: the last point again (not stored) */
            q[i] = scratch + (oh * S * PW + ow * S) * 8;
            if (i + 1 < n && ++ow == OW) ow = 0, oh++;
        }
        if (++ow == OW) ow = 0, oh++;
        __m256 a[8];
        for (size_t i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
        for (size_t ti = 0; ti < 3; ti++)
            for (size_t tj = 0; tj < 3; tj++) {
                const __m256 k = _mm256_loadu_ps(wt + 8 * (3 * ti + tj));
                const size_t at = (ti * PW + tj) * 8;
                for (size_t i = 0; i < 8; i++)
                    a[i] = _mm256_add_ps(a[i], _mm256_mul_ps(k, _mm256_loadu_ps(q[i] + at)));
            }
        for (size_t i = 0; bias && i < 8; i++) a[i] = _mm256_add_ps(a[i], b);
        for (size_t i = 0; i < 8; i++) a[i] = act8(a[i], act);
        transpose8(a); /* a[u] = channel u's points p .. p + 7 */
        for (size_t u = 0; u < 8; u++) {
            if (n == 8) _mm256_storeu_ps(y + u * OHW + p, a[u]);
            else kd_store_part8(y + u * OHW + p, a[u], n);
        }
    }
}
#endif

void kd_dwb_block(const kd_dw_dims *d, const float *x, const float *wt, int bias, size_t k,
                  int act, float *y, float *scratch) {
#if defined(__x86_64__) || defined(__i386__)
    block_avx2(d, x, wt + 80 * k, bias, act, y, scratch);
#else
    (void)d, (void)x, (void)wt, (void)bias, (void)k, (void)act, (void)y, (void)scratch;
#endif
}
