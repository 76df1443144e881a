/* test_augment.c - training-time augmentation: hand-computed flips and shifts with repeated
 * edges, the identity when off, and the spread of the random draws over a batch. */
#include <string.h>

#include "kd_data.h"
#include "kd_test.h"

/* x[c][h][w] = 100 c + 4 h + w: every pixel of a 2 x 3 x 4 image is distinct. */
static void ramp(float *x) {
    for (int c = 0; c < 2; c++)
        for (int h = 0; h < 3; h++)
            for (int w = 0; w < 4; w++) x[(c * 3 + h) * 4 + w] = (float)(100 * c + 4 * h + w);
}

KD_TEST(augment_sample_hand_computed) {
    const kd_shape s = {3, {2, 3, 4}};
    float x[24], out[24];
    ramp(x);
    /* Down 1, left 2: row h comes from row h-1 (row 0 repeats), column w from w+2 (the last
     * column repeats). Channel 1 is channel 0 + 100. */
    static const float down_left[12] = {2, 3, 3, 3, 2, 3, 3, 3, 6, 7, 7, 7};
    kd_augment_sample(x, out, &s, 1, -2, 0);
    for (int i = 0; i < 12; i++) {
        CHECK(out[i] == down_left[i]);
        CHECK(out[12 + i] == down_left[i] + 100);
    }
    /* Flipped, then right 1: out[h][w] = x[h][clamp(3 - w - 1)]. */
    static const float flip_right[12] = {2, 1, 0, 0, 6, 5, 4, 4, 10, 9, 8, 8};
    kd_augment_sample(x, out, &s, 0, 1, 1);
    for (int i = 0; i < 12; i++) CHECK(out[i] == flip_right[i]);
    /* Up 2 (rows 2, 2, 2), no flip, no horizontal shift. */
    kd_augment_sample(x, out, &s, -2, 0, 0);
    for (int h = 0; h < 3; h++)
        for (int w = 0; w < 4; w++) CHECK(out[h * 4 + w] == (float)(8 + w));
}

KD_TEST(augment_off_is_identity_and_draws_nothing) {
    const kd_shape s = {3, {2, 3, 4}};
    float x[48], out[48];
    ramp(x);
    ramp(x + 24);
    kd_augment a = {0, 0};
    kd_rng r, r0;
    kd_rng_seed(&r, 3);
    r0 = r;
    CHECK(!kd_augment_active(&a));
    kd_augment_batch(&a, &s, x, out, 2, &r);
    CHECK(memcmp(x, out, sizeof x) == 0);
    CHECK(memcmp(&r, &r0, sizeof r) == 0);
}

/* 4000 samples with shift 2 and flips: every output is exactly one of the 50 transforms
 * (5 x 5 shifts x 2 flips, all distinct on a 1 x 7 x 7 ramp), each drawn about 80 times. */
KD_TEST(augment_batch_draws_every_transform_uniformly) {
    enum { N = 4000, S = 2, SPAN = 2 * S + 1, D = 49 };
    const kd_shape s = {3, {1, 7, 7}};
    static float x[N * D], out[N * D], cand[2 * SPAN * SPAN][D];
    for (int i = 0; i < N; i++)
        for (int k = 0; k < D; k++) x[i * D + k] = (float)k;
    for (int f = 0; f < 2; f++)
        for (int dy = -S; dy <= S; dy++)
            for (int dx = -S; dx <= S; dx++)
                kd_augment_sample(x, cand[(f * SPAN + dy + S) * SPAN + dx + S], &s, dy, dx, f);
    kd_augment a = {S, 1};
    kd_rng r;
    kd_rng_seed(&r, 11);
    kd_augment_batch(&a, &s, x, out, N, &r);
    int count[2 * SPAN * SPAN] = {0}, unmatched = 0, ambiguous = 0;
    for (int i = 0; i < N; i++) {
        int found = -1;
        for (int c = 0; c < 2 * SPAN * SPAN; c++)
            if (memcmp(out + i * D, cand[c], sizeof cand[c]) == 0) {
                if (found >= 0) ambiguous++;
                found = c;
            }
        if (found < 0) unmatched++;
        else count[found]++;
    }
    CHECK_EQ_INT(unmatched, 0);
    CHECK_EQ_INT(ambiguous, 0);
    /* Binomial(4000, 1/50): mean 80, sd ~8.9; [40, 125] is beyond 4.5 sd on both sides. */
    for (int c = 0; c < 2 * SPAN * SPAN; c++) CHECK(count[c] >= 40 && count[c] <= 125);
}
