/* depthwise.c - the depthwise convolution's direct kernels (conv2d with groups == in == out
 * channels, MobileNet's 3x3 layers). im2col would copy each input plane KH*KW times to feed
 * products of a single weight row; here every (sample, channel) plane is convolved directly
 * while it is in cache: forward one pass over x and y, backward one pass over x and dy that
 * writes dx and sums the plane's weight and bias gradients. Rows are the vector unit: an
 * output row accumulates each tap's contiguous (stride 1) run of an input row, so the inner
 * loops are plain axpys and dot products that the compiler vectorises. */
#include <omp.h>
#include <stddef.h>
#include <string.h>

#include "depthwise.h"
#include "fused.h"

/* For a kernel tap at signed offset off (k - P) along an axis of input length n and output
 * length on: the outputs o whose input o*S + off lies in [0, n) are [*lo, *hi). */
static void tap_range(size_t n, size_t on, size_t S, ptrdiff_t off, size_t *lo, size_t *hi) {
    size_t a, b;
    if (S == 1) {  /* no divisions on the common path (small planes call this per row) */
        a = off < 0 ? (size_t)-off : 0;
        b = (ptrdiff_t)n > off ? (size_t)((ptrdiff_t)n - off) : 0;
    } else {
        a = off < 0 ? ((size_t)-off + S - 1) / S : 0;
        b = (ptrdiff_t)n > off ? ((size_t)((ptrdiff_t)n - off) + S - 1) / S : 0;
    }
    if (a > on) a = on;
    if (b > on) b = on;
    *lo = a;
    *hi = b < a ? a : b;
}

/* y[k] += a * x[k * S] over k in [0, n): contiguous, the constant stride 2 (which the
 * vectoriser turns into loads and shuffles) and any stride. */
static void axpy(float *restrict y, const float *restrict x, size_t n, float a) {
    KD_VEC_FOR(k, n, y[k] += a * x[k]);
}
static void axpy_s2(float *restrict y, const float *restrict x, size_t n, float a) {
    KD_VEC_FOR(k, n, y[k] += a * x[2 * k]);
}
static void axpy_s(float *restrict y, const float *restrict x, size_t n, size_t S, float a) {
    for (size_t k = 0; k < n; k++) y[k] += a * x[k * S];
}

/* s + sum_k y[k] * x[k * S] in eight lane sums (lane u takes k = u mod 8, in order) and a tail
 * added to s, a fixed order whatever the vector width. lanes[8] carries across calls (the rows
 * of one tap). */
static float dot_lanes(float *restrict lanes, const float *restrict y, const float *restrict x,
                       size_t n, size_t S, float s) {
    size_t k = 0;
    if (S == 1)
        for (; k + 8 <= n; k += 8)
            for (size_t u = 0; u < 8; u++) lanes[u] += y[k + u] * x[k + u];
    else
        for (; k + 8 <= n; k += 8)
            for (size_t u = 0; u < 8; u++) lanes[u] += y[k + u] * x[(k + u) * S];
    for (; k < n; k++) s += y[k] * x[k * S];
    return s;
}
static float lanes_total(const float *l, float s) {
    return (((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))) + s;
}

/* out (OH, OW) = (sum over taps (i, j), in that order, of k[i, j] *
 * in[oh*S + i - PH, ow*S + j - PW], taps outside in skipped) + *bias when bias is not NULL;
 * k[i, j] = w[i*KW + j], or w[(KH-1-i)*KW + (KW-1-j)] (the kernel turned by 180 degrees) when
 * flip. Row by row: the output row (in L1) starts at 0, every tap adds its valid run of one
 * input row, then the bias: conv2d's C helper adds the same terms in the same order. */
static void correlate_plane(const float *in, size_t H, size_t W, const float *w, size_t KH,
                            size_t KW, int flip, size_t S, ptrdiff_t PH, ptrdiff_t PW,
                            const float *bias, float *out, size_t OH, size_t OW) {
    const size_t KK = KH * KW;
    for (size_t oh = 0; oh < OH; oh++) {
        float *yr = out + oh * OW;
        KD_VEC_FOR(k, OW, yr[k] = 0.0f);
        for (size_t i = 0; i < KH; i++) {
            const ptrdiff_t ih = (ptrdiff_t)(oh * S + i) - PH;
            if (ih < 0 || ih >= (ptrdiff_t)H) continue;
            const float *xr = in + (size_t)ih * W;
            for (size_t j = 0; j < KW; j++) {
                size_t lo, hi;
                tap_range(W, OW, S, (ptrdiff_t)j - PW, &lo, &hi);
                if (lo == hi) continue;
                const float a = flip ? w[KK - 1 - (i * KW + j)] : w[i * KW + j];
                const float *src = xr + ((ptrdiff_t)(lo * S + j) - PW);
                if (S == 1) axpy(yr + lo, src, hi - lo, a);
                else if (S == 2) axpy_s2(yr + lo, src, hi - lo, a);
                else axpy_s(yr + lo, src, hi - lo, S, a);
            }
        }
        if (bias) {
            const float b = *bias;
            KD_VEC_FOR(k, OW, yr[k] += b);
        }
    }
}

/* dx (H, W) of one plane for stride > 1, the adjoint of the forward: every dy value scattered
 * back to the inputs its taps read (rows in a fixed order). Stride 1 is a correlation of dy
 * with the turned kernel instead (gathers, contiguous). */
static void scatter_plane(const kd_dw_dims *d, const float *w, const float *dy, float *dx) {
    const size_t S = d->S, W = d->W;
    memset(dx, 0, d->H * W * sizeof *dx);
    for (size_t oh = 0; oh < d->OH; oh++) {
        const float *dyr = dy + oh * d->OW;
        for (size_t i = 0; i < d->KH; i++) {
            const ptrdiff_t ih = (ptrdiff_t)(oh * S + i) - (ptrdiff_t)d->P;
            if (ih < 0 || ih >= (ptrdiff_t)d->H) continue;
            float *dxr = dx + (size_t)ih * W;
            for (size_t j = 0; j < d->KW; j++) {
                size_t lo, hi;
                const ptrdiff_t off = (ptrdiff_t)j - (ptrdiff_t)d->P;
                tap_range(W, d->OW, S, off, &lo, &hi);
                const float a = w[i * d->KW + j];
                for (size_t ow = lo; ow < hi; ow++)
                    dxr[(size_t)((ptrdiff_t)(ow * S) + off)] += a * dyr[ow];
            }
        }
    }
}

/* One plane's backward: dx (when dxp) and, for each tap, gw[t] (+)= sum over the outputs of
 * dy * the input the tap read; gb (+)= sum of dy. acc: add to gw / gb (later samples of a
 * piece) rather than start them. */
static void plane_backward(const kd_dw_dims *d, const float *xp, const float *wc,
                           const float *dyp, float *dxp, float *gw, float *gb, int acc) {
    const size_t S = d->S, W = d->W, OW = d->OW, OHW = d->OH * OW;
    if (dxp && S == 1)
        correlate_plane(dyp, d->OH, OW, wc, d->KH, d->KW, 1, 1,
                        (ptrdiff_t)d->KH - 1 - (ptrdiff_t)d->P,
                        (ptrdiff_t)d->KW - 1 - (ptrdiff_t)d->P, NULL, dxp, d->H, W);
    else if (dxp)
        scatter_plane(d, wc, dyp, dxp);
    for (size_t i = 0; i < d->KH; i++) {
        size_t oh_lo, oh_hi;
        const ptrdiff_t offh = (ptrdiff_t)i - (ptrdiff_t)d->P;
        tap_range(d->H, d->OH, S, offh, &oh_lo, &oh_hi);
        for (size_t j = 0; j < d->KW; j++) {
            size_t lo, hi;
            const ptrdiff_t offw = (ptrdiff_t)j - (ptrdiff_t)d->P;
            tap_range(W, OW, S, offw, &lo, &hi);
            float lanes[8] = {0}, s = 0.0f;
            for (size_t oh = oh_lo; lo < hi && oh < oh_hi; oh++) {
                const size_t row = (size_t)((ptrdiff_t)(oh * S) + offh) * W;
                s = dot_lanes(lanes, dyp + oh * OW + lo,
                              xp + row + (size_t)((ptrdiff_t)(lo * S) + offw), hi - lo, S, s);
            }
            const size_t t = i * d->KW + j;
            gw[t] = (acc ? gw[t] : 0.0f) + lanes_total(lanes, s);
        }
    }
    if (gb) {
        float lanes[8] = {0}, s = 0.0f;
        size_t k = 0;
        for (; k + 8 <= OHW; k += 8)
            for (size_t u = 0; u < 8; u++) lanes[u] += dyp[k + u];
        for (; k < OHW; k++) s += dyp[k];
        *gb = (acc ? *gb : 0.0f) + lanes_total(lanes, s);
    }
}

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }
static size_t dy_slot(const kd_dw_dims *d) { return round16(d->C * d->OH * d->OW); }
static size_t part_slot(const kd_dw_dims *d) {
    return round16(d->C * d->KH * d->KW) + round16(d->C);
}

size_t kd_depthwise_workspace(const kd_dw_dims *d, size_t pieces, size_t slots) {
    return slots * dy_slot(d) + pieces * part_slot(d);
}

void kd_depthwise_forward(const kd_dw_dims *d, const float *x, const float *w, const float *bias,
                          float *y, const kd_sample_sink *sink, size_t B) {
    const size_t C = d->C, HW = d->H * d->W, OHW = d->OH * d->OW, KK = d->KH * d->KW;
    const ptrdiff_t P = (ptrdiff_t)d->P;
    const int par = KD_PAR(B * C * OHW * KK);
    if (sink) {  /* whole samples, so each is handed on complete while in cache */
#pragma omp parallel for schedule(static) if (par && B > 1)
        for (size_t b = 0; b < B; b++) {
            for (size_t c = 0; c < C; c++)
                correlate_plane(x + (b * C + c) * HW, d->H, d->W, w + c * KK, d->KH, d->KW, 0,
                                d->S, P, P, bias ? bias + c : NULL, y + (b * C + c) * OHW,
                                d->OH, d->OW);
            sink->fn(sink->arg, b, y + b * C * OHW);
        }
        return;
    }
#pragma omp parallel for schedule(static) if (par)
    for (size_t q = 0; q < B * C; q++) {
        const size_t c = q % C;
        correlate_plane(x + q * HW, d->H, d->W, w + c * KK, d->KH, d->KW, 0, d->S, P, P,
                        bias ? bias + c : NULL, y + q * OHW, d->OH, d->OW);
    }
}

void kd_depthwise_backward(const kd_dw_dims *d, const float *x, const float *w, const float *dy,
                           const kd_dy_source *src, float *dx, float *dw, float *db, size_t B,
                           float *ws, size_t pieces, size_t slots) {
    if (B == 0) return;
    const size_t C = d->C, HW = d->H * d->W, OHW = d->OH * d->OW, KK = d->KH * d->KW;
    const size_t part = part_slot(d), slot = dy_slot(d), CK = C * KK;
    const size_t threads = (size_t)omp_get_max_threads();
    const int team = (int)(threads < slots ? threads : slots);
    const int par = pieces > 1 && KD_PAR(B * C * OHW * KK);
    float *parts = ws + slots * slot;
#pragma omp parallel for schedule(static) num_threads(team) if (par)
    for (size_t p = 0; p < pieces; p++) {
        float *dy_b = ws + (par ? (size_t)omp_get_thread_num() : 0) * slot;
        float *dwp = parts + p * part, *dbp = dwp + round16(CK);
        const size_t b0 = B * p / pieces, b1 = B * (p + 1) / pieces;
        for (size_t b = b0; b < b1; b++) {
            const float *g = dy_b;
            if (src) src->fn(src->arg, b, dy_b);
            else g = dy + b * C * OHW;
            for (size_t c = 0; c < C; c++) {
                const size_t q = b * C + c;
                plane_backward(d, x + q * HW, w + c * KK, g + c * OHW, dx ? dx + q * HW : NULL,
                               dwp + c * KK, db ? dbp + c : NULL, b > b0);
            }
        }
    }
    /* The pieces' sums, added in piece order by one thread per element. */
#pragma omp parallel for schedule(static) if (KD_PAR(pieces * CK))
    for (size_t k = 0; k < CK; k++) {
        float s = parts[k];
        for (size_t p = 1; p < pieces; p++) s += parts[p * part + k];
        dw[k] += s;
    }
    for (size_t c = 0; db && c < C; c++) {
        const float *dbs = parts + round16(CK);
        float s = dbs[c];
        for (size_t p = 1; p < pieces; p++) s += dbs[p * part + c];
        db[c] += s;
    }
}
