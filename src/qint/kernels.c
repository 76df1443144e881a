/* kernels.c - the integer kernels of full-integer models: dense, convolution (grouped and
 * depthwise), pools, add, per-tensor rescale (concat) and lookup tables. int8 in, int32
 * accumulators, int8 out through kd_q_store; no float anywhere in a loop. Plain loops: the C
 * header writes the same ones, and the same bytes must come out of both. */
#include <math.h>

#include "kd_qint.h"

void kd_qdense(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *bias,
               const kd_qmul *m, kd_qout o, size_t B, size_t in, size_t out, int8_t *y) {
    /* |x - zp| <= 255 and |w| <= 127: the sum fits int32 for in <= 66,000 (checked when a
     * model is quantized). */
    for (size_t b = 0; b < B; b++) {
        const int8_t *xb = x + b * in;
        for (size_t j = 0; j < out; j++) {
            const int8_t *wj = w + j * in;
            int32_t acc = bias ? bias[j] : 0;
            for (size_t i = 0; i < in; i++) acc += ((int32_t)xb[i] - x_zp) * wj[i];
            y[b * out + j] = kd_q_store(acc, m[j], o);
        }
    }
}

/* One output value of a convolution: channels c0 .. c0 + cg of x, taps outside the image
 * skipped (they read x_zp, a real zero). */
static int32_t conv_tap_sum(const int8_t *x, int32_t x_zp, const int8_t *wk,
                            const kd_qconv_geom *g, size_t c0, size_t cg, size_t oh, size_t ow) {
    int32_t acc = 0;
    for (size_t c = 0; c < cg; c++) {
        const int8_t *xc = x + (c0 + c) * g->H * g->W;
        for (size_t r = 0; r < g->kh; r++) {
            long ih = (long)(oh * g->stride + r) - (long)g->pad;
            if (ih < 0 || ih >= (long)g->H) continue;
            for (size_t s = 0; s < g->kw; s++) {
                long iw = (long)(ow * g->stride + s) - (long)g->pad;
                if (iw < 0 || iw >= (long)g->W) continue;
                acc += ((int32_t)xc[ih * (long)g->W + iw] - x_zp) * wk[(c * g->kh + r) * g->kw + s];
            }
        }
    }
    return acc;
}

void kd_qconv2d(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *bias,
                const kd_qmul *m, kd_qout o, const kd_qconv_geom *g, size_t B, int8_t *y) {
    size_t cg = g->C / g->groups, kg = g->K / g->groups, in_n = g->C * g->H * g->W;
    size_t plane = g->OH * g->OW;
    for (size_t b = 0; b < B; b++)
        for (size_t k = 0; k < g->K; k++) {
            const int8_t *wk = w + k * cg * g->kh * g->kw;
            int8_t *yk = y + (b * g->K + k) * plane;
            for (size_t oh = 0; oh < g->OH; oh++)
                for (size_t ow = 0; ow < g->OW; ow++) {
                    int32_t acc = (bias ? bias[k] : 0) +
                                  conv_tap_sum(x + b * in_n, x_zp, wk, g, k / kg * cg, cg, oh, ow);
                    yk[oh * g->OW + ow] = kd_q_store(acc, m[k], o);
                }
        }
}

/* The window of output (oh, ow) clipped to the image: rows [*r0, *r1), columns [*s0, *s1). */
static void window(const kd_qconv_geom *g, size_t oh, size_t ow, long *r0, long *r1, long *s0,
                   long *s1) {
    *r0 = (long)(oh * g->stride) - (long)g->pad, *s0 = (long)(ow * g->stride) - (long)g->pad;
    *r1 = *r0 + (long)g->kh, *s1 = *s0 + (long)g->kw;
    if (*r0 < 0) *r0 = 0;
    if (*s0 < 0) *s0 = 0;
    if (*r1 > (long)g->H) *r1 = (long)g->H;
    if (*s1 > (long)g->W) *s1 = (long)g->W;
}

void kd_qmaxpool(const int8_t *x, const kd_qconv_geom *g, size_t B, int8_t *y) {
    for (size_t p = 0; p < B * g->C; p++) {
        const int8_t *xp = x + p * g->H * g->W;
        for (size_t oh = 0; oh < g->OH; oh++)
            for (size_t ow = 0; ow < g->OW; ow++) {
                long r0, r1, s0, s1;
                window(g, oh, ow, &r0, &r1, &s0, &s1);
                int8_t best = INT8_MIN;
                for (long r = r0; r < r1; r++)
                    for (long s = s0; s < s1; s++)
                        if (xp[r * (long)g->W + s] > best) best = xp[r * (long)g->W + s];
                y[(p * g->OH + oh) * g->OW + ow] = best;
            }
    }
}

void kd_qavgpool(const int8_t *x, int32_t x_zp, kd_qmul m, kd_qout o, const kd_qconv_geom *g,
                 size_t B, int8_t *y) {
    for (size_t p = 0; p < B * g->C; p++) {
        const int8_t *xp = x + p * g->H * g->W;
        for (size_t oh = 0; oh < g->OH; oh++)
            for (size_t ow = 0; ow < g->OW; ow++) {
                long r0, r1, s0, s1;
                window(g, oh, ow, &r0, &r1, &s0, &s1);
                int32_t sum = 0; /* padding is a real zero: it adds nothing */
                for (long r = r0; r < r1; r++)
                    for (long s = s0; s < s1; s++) sum += (int32_t)xp[r * (long)g->W + s] - x_zp;
                y[(p * g->OH + oh) * g->OW + ow] = kd_q_store(sum, m, o);
            }
    }
}

void kd_qadd(const int8_t *const *x, const int32_t *zp, const kd_qmul *m_in, size_t n_in,
             kd_qmul m_out, kd_qout o, size_t n, int8_t *y) {
    for (size_t i = 0; i < n; i++) {
        int32_t sum = 0;
        for (size_t k = 0; k < n_in; k++)
            sum += kd_qmul_apply(((int32_t)x[k][i] - zp[k]) * (1 << KD_QADD_SHIFT), m_in[k]);
        y[i] = kd_q_store(sum, m_out, o);
    }
}

void kd_qrescale(const int8_t *x, int32_t x_zp, kd_qmul m, kd_qout o, size_t n, int8_t *y) {
    for (size_t i = 0; i < n; i++) y[i] = kd_q_store((int32_t)x[i] - x_zp, m, o);
}

void kd_qlut_build(double (*fn)(double x, double param), double param, double s_in,
                   int32_t zp_in, double s_out, int32_t zp_out, int8_t table[256]) {
    for (int q = -128; q < 128; q++) {
        double v = round(fn(s_in * (q - zp_in), param) / s_out) + zp_out;
        table[(uint8_t)(int8_t)q] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
    }
}

void kd_qlut_apply(const int8_t table[256], const int8_t *x, size_t n, int8_t *y) {
    for (size_t i = 0; i < n; i++) y[i] = table[(uint8_t)x[i]];
}
