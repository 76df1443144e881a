/* half.c - float32 <-> IEEE half (F16) and bfloat16 (BF16) conversions, round to nearest even. */
#include <math.h>
#include <string.h>

#include "kd_safetensors.h"

static uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

uint16_t kd_f32_to_f16(float x) {
    uint32_t u = f32_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) /* Inf stays Inf; NaN keeps its top payload bits and is made quiet */
        return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x0200u | ((a >> 13) & 0x3ffu) : 0));
    /* 65520 is halfway between the largest half (65504, odd mantissa) and 65536: ties go to
     * the even neighbour, which is infinity. */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) {
        /* Normal half: drop 13 mantissa bits with round-to-nearest-even; a carry out of the
         * mantissa correctly bumps the exponent. Rebias 127 -> 15 (subtract 112 << 10). */
        a += 0x0fffu + ((a >> 13) & 1u);
        return (uint16_t)(sign | ((a >> 13) - (112u << 10)));
    }
    if (a <= 0x33000000u) return sign; /* <= 2^-25: rounds to zero (2^-25 is a tie to 0) */
    /* Half subnormal: the value in units of 2^-24 is m * 2^(e - 150 + 24) = m >> (126 - e). */
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e; /* 14..24 here */
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (r & 1u))) r++;
    return (uint16_t)(sign | r); /* r == 0x400 is the smallest normal, encoded correctly */
}

float kd_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        float v = ldexpf((float)m, -24); /* zero or subnormal: exact in float */
        return sign ? -v : v;
    }
    if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

uint16_t kd_f32_to_bf16(float x) {
    uint32_t u = f32_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even; may carry into Inf, as it should */
    return (uint16_t)(u >> 16);
}

float kd_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }
