/* kd_qint.h - integer arithmetic of full-integer (qint8) models, as ONNX QDQ and TFLite define
 * it: int8 weights symmetric per output channel, int8 activations asymmetric per tensor (scale,
 * zero point), int32 bias at scale s_in * s_w, int32 accumulators, and requantization by a Q31
 * multiplier and a power-of-two shift exactly as TFLite's reference MultiplyByQuantizedMultiplier
 * (docs/integer.md writes the formulas out). Every kernel here is integer-only and gives the same
 * bytes on every machine; the C header exporter writes the same arithmetic.
 *
 * Layouts are distill's: [B, C, H, W] activations, [K, C/groups, kh, kw] convolution weights,
 * [out, in] dense weights. */
#ifndef KD_QINT_H
#define KD_QINT_H

#include <stddef.h>
#include <stdint.h>

/* A positive real multiplier m ~= mult * 2^(shift - 31), mult in [2^30, 2^31), shift in
 * [-31, 30]; m = 0 is {0, 0}. */
typedef struct {
    int32_t mult;
    int shift;
} kd_qmul;

/* m into a kd_qmul (TFLite's QuantizeMultiplier: frexp, round to Q31, carry). 0, or -1 when m is
 * negative, not finite, or beyond what the shift range holds (>= 2^30); below 2^-32 it is 0. */
int kd_qmul_from_real(double m, kd_qmul *out);
/* Checks a stored multiplier: 0 when it is {0, 0} or mult in [2^30, 2^31) and shift in
 * [-31, 30]. */
int kd_qmul_check(kd_qmul m);

/* round(a * b / 2^31) with halves rounded up (toward +infinity: -0.5 gives 0);
 * INT32_MIN * INT32_MIN saturates to INT32_MAX (gemmlowp's SaturatingRoundingDoublingHighMul). */
int32_t kd_q_high_mul(int32_t a, int32_t b);
/* x / 2^e rounded to nearest, halves away from zero; e in [0, 31] (RoundingDivideByPOT). */
int32_t kd_q_div_pot(int32_t x, int e);
/* x * m: a left shift (saturated to int32) for shift > 0, then kd_q_high_mul by mult, then
 * kd_q_div_pot by -shift for shift < 0 (MultiplyByQuantizedMultiplier). */
int32_t kd_qmul_apply(int32_t x, kd_qmul m);

/* Where a requantized value lands: y = clamp(zp + x * m, lo, hi). lo/hi are -128/127, or
 * tighter when a ReLU or ReLU6 is folded into the producer. */
typedef struct {
    int32_t zp, lo, hi;
} kd_qout;

static inline int8_t kd_q_store(int32_t acc, kd_qmul m, kd_qout o) {
    int32_t y = o.zp + kd_qmul_apply(acc, m);
    return (int8_t)(y < o.lo ? o.lo : y > o.hi ? o.hi : y);
}

/* y[B, out] = requant(bias + (x - x_zp) . w) per output channel (m[out], bias[out] may be NULL). */
void kd_qdense(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *bias,
               const kd_qmul *m, kd_qout o, size_t B, size_t in, size_t out, int8_t *y);

/* Convolution geometry (grouped: groups divides C and K; depthwise: groups = C = K). */
typedef struct {
    size_t C, H, W, K, kh, kw, stride, pad, groups, OH, OW;
} kd_qconv_geom;

/* Padding reads x_zp (a real zero). */
void kd_qconv2d(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *bias,
                const kd_qmul *m, kd_qout o, const kd_qconv_geom *g, size_t B, int8_t *y);

/* Pools over [B, C, H, W] with g's window (K = C, groups unused). Max pools in int8 (same
 * scale and zero point in and out; padding never wins). Average pools sum in int32 with padding
 * counted as real zeros (count_include_pad, as distill's pool), then requantize by m, which holds
 * s_in / (s_out * kh * kw); global average pooling is the window H x W. */
void kd_qmaxpool(const int8_t *x, const kd_qconv_geom *g, size_t B, int8_t *y);
void kd_qavgpool(const int8_t *x, int32_t x_zp, kd_qmul m, kd_qout o, const kd_qconv_geom *g,
                 size_t B, int8_t *y);

/* add: y = requant(sum_k rescaled(x_k - zp_k)), TFLite's way: each input shifted left by
 * KD_QADD_SHIFT, scaled by m_in[k] (s_k / (2 max_k s_k)), summed, then scaled by m_out
 * ((2 max_k s_k) / (2^KD_QADD_SHIFT s_out)). n values of each input. */
#define KD_QADD_SHIFT 20
void kd_qadd(const int8_t *const *x, const int32_t *zp, const kd_qmul *m_in, size_t n_in,
             kd_qmul m_out, kd_qout o, size_t n, int8_t *y);

/* One input's part of a concat (or any per-tensor rescale): y = clamp(o.zp + (x - x_zp) * m). */
void kd_qrescale(const int8_t *x, int32_t x_zp, kd_qmul m, kd_qout o, size_t n, int8_t *y);

/* An elementwise function as a 256-entry table indexed by (uint8_t)x: built once at
 * quantization from the real function (sigmoid, tanh, gelu, hardswish), stored with the model,
 * so the reference and every export use the same bytes. param is handed to fn (a slope). */
void kd_qlut_build(double (*fn)(double x, double param), double param, double s_in,
                   int32_t zp_in, double s_out, int32_t zp_out, int8_t table[256]);
void kd_qlut_apply(const int8_t table[256], const int8_t *x, size_t n, int8_t *y);

#endif
