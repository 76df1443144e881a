/* augment.c - training-time augmentation: random left-right flips and translations with the
 * edge pixels repeated, drawn from the run's RNG (see kd_augment in kd_data.h). */
#include <string.h>

#include "kd_data.h"

static size_t clamp_index(ptrdiff_t i, size_t n) {
    if (i < 0) return 0;
    if ((size_t)i >= n) return n - 1;
    return (size_t)i;
}

void kd_augment_sample(const float *x, float *out, const kd_shape *shape, int dy, int dx,
                       int flip) {
    const size_t C = shape->d[0], H = shape->d[1], W = shape->d[2];
    for (size_t c = 0; c < C; c++) {
        const float *xc = x + c * H * W;
        float *oc = out + c * H * W;
        for (size_t h = 0; h < H; h++) {
            const float *src = xc + clamp_index((ptrdiff_t)h - dy, H) * W;
            float *dst = oc + h * W;
            for (size_t w = 0; w < W; w++) {
                size_t wf = flip ? W - 1 - w : w;
                dst[w] = src[clamp_index((ptrdiff_t)wf - dx, W)];
            }
        }
    }
}

void kd_augment_rows(const kd_augment *a, const kd_shape *shape, const float *x, float *out,
                     size_t row0, size_t n, size_t rows, kd_rng *rng) {
    KD_ASSERT(row0 <= rows && n <= rows - row0);
    const size_t D = kd_shape_numel(shape), span = 2 * a->shift + 1;
    for (size_t i = 0; i < rows; i++) {
        int flip = a->flip ? (int)(kd_rng_u64(rng) >> 63) : 0;
        int dy = 0, dx = 0;
        if (a->shift) {
            dy = (int)kd_rng_below(rng, span) - (int)a->shift;
            dx = (int)kd_rng_below(rng, span) - (int)a->shift;
        }
        if (i >= row0 && i - row0 < n)
            kd_augment_sample(x + (i - row0) * D, out + (i - row0) * D, shape, dy, dx, flip);
    }
}

/* splitmix64's finaliser: a well-mixed 64-bit value of x. */
static uint64_t mix64(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void kd_augment_view(const kd_augment *a, const kd_shape *shape, const float *x, float *out,
                     uint64_t seed, size_t sample, uint32_t view) {
    kd_rng r;
    kd_rng_seed(&r, mix64(mix64(seed ^ 0x5643414348455631ULL) ^ (uint64_t)sample) ^
                        ((uint64_t)view << 32 | view));
    kd_augment_batch(a, shape, x, out, 1, &r);
}

void kd_augment_batch(const kd_augment *a, const kd_shape *shape, const float *x, float *out,
                      size_t n, kd_rng *rng) {
    kd_augment_rows(a, shape, x, out, 0, n, n, rng);
}
