/* kd_rng.h - the project's seeded PRNG (xoshiro256**, seeded by splitmix64). One seed drives
 * initialisation, shuffling and dropout; the state is 4 words, saved in training checkpoints. */
#ifndef KD_RNG_H
#define KD_RNG_H

#include <stdint.h>
#include <stddef.h>

typedef struct {
    uint64_t s[4];
} kd_rng;

void kd_rng_seed(kd_rng *r, uint64_t seed);
/* Inline: dropout draws one number per activation, and a call per draw cost more than the draw. */
static inline uint64_t kd_rng_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static inline uint64_t kd_rng_u64(kd_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = kd_rng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = kd_rng_rotl(s[3], 45);
    return result;
}
/* Uniform in [0, 1) with 24 random bits (exactly representable as float). */
static inline float kd_rng_uniform(kd_rng *r) {
    return (float)(kd_rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}
/* Uniform integer in [0, n), unbiased (n > 0). */
uint64_t kd_rng_below(kd_rng *r, uint64_t n);
/* Standard normal (Box-Muller, no cached second value so the state alone is the whole state). */
float kd_rng_normal(kd_rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void kd_rng_shuffle(kd_rng *r, size_t *idx, size_t n);

#endif
