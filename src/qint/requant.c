/* requant.c - the fixed-point requantization of integer models: a real multiplier as a Q31
 * value and a power-of-two shift, applied with gemmlowp's rounding, bit for bit as TFLite's
 * reference kernels do (MultiplyByQuantizedMultiplier, "double rounding"). */
#include <math.h>

#include "kd_qint.h"

#define Q31_ONE (1ll << 31)

int kd_qmul_from_real(double m, kd_qmul *out) {
    out->mult = 0, out->shift = 0;
    if (m == 0) return 0;
    if (!(m > 0) || !isfinite(m)) return -1;
    int e;
    double q = frexp(m, &e); /* m = q 2^e, q in [0.5, 1) */
    long long fixed = llround(q * (double)Q31_ONE); /* halves away from zero, as TfLiteRound */
    if (fixed == Q31_ONE) fixed /= 2, e++;
    if (e < -31) return 0;   /* below 2^-32: nothing survives the rounding */
    if (e > 30) return -1;
    out->mult = (int32_t)fixed, out->shift = e;
    return 0;
}

int kd_qmul_check(kd_qmul m) {
    if (m.mult == 0 && m.shift == 0) return 0;
    return m.mult >= (1 << 30) && m.shift >= -31 && m.shift <= 30 ? 0 : -1;
}

int32_t kd_q_high_mul(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * b;
    int64_t nudge = ab >= 0 ? (1 << 30) : 1 - (1 << 30);
    return (int32_t)((ab + nudge) / Q31_ONE); /* C division truncates toward zero */
}

int32_t kd_q_div_pot(int32_t x, int e) {
    int32_t mask = (int32_t)((1ll << e) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0);
    /* >> of a negative int is arithmetic on every compiler distill supports (GCC, Clang). */
    return (x >> e) + (remainder > threshold);
}

int32_t kd_qmul_apply(int32_t x, kd_qmul m) {
    if (m.shift > 0) { /* saturate the left shift instead of overflowing */
        int64_t s = (int64_t)x * ((int64_t)1 << m.shift);
        x = s > INT32_MAX ? INT32_MAX : s < INT32_MIN ? INT32_MIN : (int32_t)s;
    }
    int32_t hi = kd_q_high_mul(x, m.mult);
    return m.shift < 0 ? kd_q_div_pot(hi, -m.shift) : hi;
}
