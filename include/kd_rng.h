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
uint64_t kd_rng_u64(kd_rng *r);
/* Uniform in [0, 1) with 24 random bits (exactly representable as float). */
float kd_rng_uniform(kd_rng *r);
/* Uniform integer in [0, n), unbiased (n > 0). */
uint64_t kd_rng_below(kd_rng *r, uint64_t n);
/* Standard normal (Box-Muller, no cached second value so the state alone is the whole state). */
float kd_rng_normal(kd_rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void kd_rng_shuffle(kd_rng *r, size_t *idx, size_t n);

#endif
