/* depthwise.c - the depthwise convolution's direct kernels (conv2d with groups == in == out
 * channels, MobileNet's 3x3 layers). im2col would copy each input plane KH*KW times to feed
 * products of a single weight row; here every (sample, channel) plane is convolved directly
 * while it is in cache: forward one pass over x and y, backward one pass over x and dy that
 * writes dx and sums the plane's weight and bias gradients. The 3x3, padding-1 layers (every
 * MobileNet one) have their own kernels that sum all nine taps of a point in one pass: at stride
 * 1 over the whole plane as one flat run (rows of 7 or 14 would leave a vector loop mostly tail),
 * at stride 2 per output row. Other shapes go row by row: an output row accumulates each tap's
 * run of an input row, so the inner loops are plain axpys and dot products that the compiler
 * vectorises. Every path adds a point's taps in the same (i, j) order, so they agree bit for
 * bit with each other and with the exported C. */
#include <omp.h>
#include <stddef.h>
#include <string.h>

#include "depthwise.h"
#include "dw_blocked.h"
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

/* One output point of a 3x3, padding 1 plane at stride S: the taps inside the input in (i, j)
 * order from 0, then the bias (the order of correlate_plane's rows). */
static float point3x3(const float *in, size_t H, size_t W, const float *k, size_t S, size_t oh,
                      size_t ow, const float *bias) {
    float a = 0.0f;
    for (size_t i = 0; i < 3; i++) {
        const ptrdiff_t ih = (ptrdiff_t)(oh * S + i) - 1;
        if (ih < 0 || ih >= (ptrdiff_t)H) continue;
        for (size_t j = 0; j < 3; j++) {
            const ptrdiff_t iw = (ptrdiff_t)(ow * S + j) - 1;
            if (iw >= 0 && iw < (ptrdiff_t)W) a += k[i * 3 + j] * in[(size_t)ih * W + (size_t)iw];
        }
    }
    return bias ? a + *bias : a;
}

/* y[p] for p in [0, n): kernel rows k[0..2] on xa and k[3..5] on xb at columns p .. p + 2, in
 * that order from 0, then the bias: a border row's inner points (one kernel row outside). */
static void border_row(float *restrict y, const float *restrict xa, const float *restrict xb,
                       const float *k, const float *bias, size_t n) {
    const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5];
    const float b = bias ? *bias : 0.0f;
    KD_VEC_FOR(p, n, {
        float a = 0.0f;
        a += k0 * xa[p]; a += k1 * xa[p + 1]; a += k2 * xa[p + 2];
        a += k3 * xb[p]; a += k4 * xb[p + 1]; a += k5 * xb[p + 2];
        y[p] = bias ? a + b : a;
    });
}

/* The 3x3, stride 1, padding 1 plane (H, W >= 3; out is H x W): MobileNet's depthwise layers on
 * small planes, where rows of 7 or 14 leave a vector loop mostly tail. Here the plane is one
 * flat run: output p reads in[p + (i-1)*W + (j-1)], the nine taps summed in (i, j) order from 0
 * in one pass, exact for every point off the border; the border points (where that flat address
 * wraps to the next row or leaves the plane) are then written again with their taps inside
 * the input only: rows and columns with six taps, the corners with four. The same operations in the same order per point as correlate_plane (AVX2
 * only widens the vectors: no FMA, C11 does not contract a * b + c). */
__attribute__((target_clones("avx2", "default")))
static void correlate3x3_s1(const float *restrict in, size_t H, size_t W, const float *k,
                            const float *bias, float *restrict out) {
    const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6],
                k7 = k[7], k8 = k[8], b = bias ? *bias : 0.0f;
    const size_t first = W + 1, n = (H - 1) * W - 1 - first;
    const float *r0 = in, *r1 = in + W, *r2 = in + 2 * W;
    float *y = out + first;
    if (bias)
        KD_VEC_FOR(p, n, {
            float a = 0.0f;
            a += k0 * r0[p]; a += k1 * r0[p + 1]; a += k2 * r0[p + 2];
            a += k3 * r1[p]; a += k4 * r1[p + 1]; a += k5 * r1[p + 2];
            a += k6 * r2[p]; a += k7 * r2[p + 1]; a += k8 * r2[p + 2];
            y[p] = a + b;
        });
    else
        KD_VEC_FOR(p, n, {
            float a = 0.0f;
            a += k0 * r0[p]; a += k1 * r0[p + 1]; a += k2 * r0[p + 2];
            a += k3 * r1[p]; a += k4 * r1[p + 1]; a += k5 * r1[p + 2];
            a += k6 * r2[p]; a += k7 * r2[p + 1]; a += k8 * r2[p + 2];
            y[p] = a;
        });
    /* The first and last rows' inner points: two kernel rows each (i = 1, 2 and i = 0, 1). */
    border_row(out + 1, in, in + W, k + 3, bias, W - 2);
    border_row(out + (H - 1) * W + 1, in + (H - 2) * W, in + (H - 1) * W, k, bias, W - 2);
    /* The side columns' inner points: two kernel columns each (j = 1, 2 and j = 0, 1). */
    for (size_t oh = 1; oh + 1 < H; oh++) {
        const float *x = in + (oh - 1) * W;
        float a = 0.0f;
        a += k1 * x[0]; a += k2 * x[1]; a += k4 * x[W]; a += k5 * x[W + 1];
        a += k7 * x[2 * W]; a += k8 * x[2 * W + 1];
        out[oh * W] = bias ? a + b : a;
        x += W - 2;
        a = 0.0f;
        a += k0 * x[0]; a += k1 * x[1]; a += k3 * x[W]; a += k4 * x[W + 1];
        a += k6 * x[2 * W]; a += k7 * x[2 * W + 1];
        out[oh * W + W - 1] = bias ? a + b : a;
    }
    const size_t corners[4][2] = {{0, 0}, {0, W - 1}, {H - 1, 0}, {H - 1, W - 1}};
    for (size_t c = 0; c < 4; c++)
        out[corners[c][0] * W + corners[c][1]] =
            point3x3(in, H, W, k, 1, corners[c][0], corners[c][1], bias);
}

/* The 3x3, stride 2, padding 1 plane (MobileNet's downsampling layers): per output row, the
 * points whose nine taps are all inside the input in one vector pass (the taps in (i, j) order
 * from 0, then the bias), the others (the first row and column, and the last where the input
 * has odd length) point by point. */
__attribute__((target_clones("avx2", "default")))
static void correlate3x3_s2(const float *restrict in, size_t H, size_t W, const float *k,
                            const float *bias, float *restrict out, size_t OH, size_t OW) {
    const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6],
                k7 = k[7], k8 = k[8], b = bias ? *bias : 0.0f;
    const size_t hi = (W - 2) / 2 + 1 < OW ? (W - 2) / 2 + 1 : OW;  /* 2 * ow + 1 <= W - 1 */
    for (size_t oh = 0; oh < OH; oh++) {
        float *y = out + oh * OW;
        if (oh == 0 || 2 * oh + 1 >= H) {
            for (size_t ow = 0; ow < OW; ow++) y[ow] = point3x3(in, H, W, k, 2, oh, ow, bias);
            continue;
        }
        const float *r0 = in + (2 * oh - 1) * W + 1, *r1 = r0 + W, *r2 = r1 + W;
        y[0] = point3x3(in, H, W, k, 2, oh, 0, bias);
        float *yi = y + 1;  /* ow = 1 + p reads columns 2p + 1 .. 2p + 3 */
        KD_VEC_FOR(p, hi - 1, {
            float a = 0.0f;
            a += k0 * r0[2 * p]; a += k1 * r0[2 * p + 1]; a += k2 * r0[2 * p + 2];
            a += k3 * r1[2 * p]; a += k4 * r1[2 * p + 1]; a += k5 * r1[2 * p + 2];
            a += k6 * r2[2 * p]; a += k7 * r2[2 * p + 1]; a += k8 * r2[2 * p + 2];
            yi[p] = bias ? a + b : a;
        });
        for (size_t ow = hi; ow < OW; ow++) y[ow] = point3x3(in, H, W, k, 2, oh, ow, bias);
    }
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
    if (KH == 3 && KW == 3 && (S == 1 || S == 2) && PH == 1 && PW == 1) {
        float k[9];
        for (size_t t = 0; t < 9; t++) k[t] = flip ? w[8 - t] : w[t];
        if (H < 3 || W < 3)  /* a plane of 2 x 2 or less: every point is on the border */
            for (size_t p = 0; p < OH * OW; p++)
                out[p] = point3x3(in, H, W, k, S, p / OW, p % OW, bias);
        else if (S == 1)
            correlate3x3_s1(in, H, W, k, bias, out);
        else
            correlate3x3_s2(in, H, W, k, bias, out, OH, OW);
        return;
    }
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

size_t kd_depthwise_workspace(const kd_dw_dims *d, size_t pieces, size_t slots, size_t threads) {
    const size_t backward = slots * dy_slot(d) + pieces * part_slot(d);
    if (!kd_dwb_takes(d)) return backward;
    const size_t forward = kd_dwb_weight_floats(d) + threads * kd_dwb_scratch_floats(d);
    return forward > backward ? forward : backward;
}

/* What every thread of a forward reads. wt: the channel blocks' weights (NULL: planes only). */
typedef struct {
    const kd_dw_dims *d;
    const float *x, *w, *bias, *wt;
    float *y, *scratch;
    const kd_sample_sink *sink;
    int act;
    size_t B, units; /* units per sample: the channel blocks, then the planes after them */
} fwd_job;

/* Unit u of sample b: channel block u, or the plane of channel 8 * blocks + (u - blocks). */
static void forward_unit(const fwd_job *j, size_t b, size_t u, float *scratch) {
    const kd_dw_dims *d = j->d;
    const size_t C = d->C, HW = d->H * d->W, OHW = d->OH * d->OW, blocks = j->wt ? C / 8 : 0;
    if (u < blocks) {
        const size_t q = b * C + 8 * u;
        kd_dwb_block(d, j->x + q * HW, j->wt, j->bias != NULL, u, j->act, j->y + q * OHW, scratch);
        return;
    }
    const size_t c = 8 * blocks + (u - blocks), q = b * C + c;
    const ptrdiff_t P = (ptrdiff_t)d->P;
    correlate_plane(j->x + q * HW, d->H, d->W, j->w + c * d->KH * d->KW, d->KH, d->KW, 0, d->S,
                    P, P, j->bias ? j->bias + c : NULL, j->y + q * OHW, d->OH, d->OW);
    kd_act_inplace(j->y + q * OHW, OHW, j->act); /* while the plane is in L1 */
}

/* Thread t of n: its static share of the samples (with a sink, each handed on once all its
 * units are done) or of the (sample, unit) pairs. */
static void forward_share(const fwd_job *j, size_t t, size_t n) {
    float *scratch = NULL; /* no blocks: no scratch (and no arithmetic on a null pointer) */
    if (j->wt) {
        scratch = j->scratch + t * kd_dwb_scratch_floats(j->d);
        kd_dwb_clear(j->d, scratch);
    }
    if (j->sink) {
        for (size_t b = j->B * t / n; b < j->B * (t + 1) / n; b++) {
            for (size_t u = 0; u < j->units; u++) forward_unit(j, b, u, scratch);
            j->sink->fn(j->sink->arg, b, j->y + b * j->d->C * j->d->OH * j->d->OW);
        }
        return;
    }
    const size_t all = j->B * j->units;
    for (size_t q = all * t / n; q < all * (t + 1) / n; q++)
        forward_unit(j, q / j->units, q % j->units, scratch);
}

void kd_depthwise_forward(const kd_dw_dims *d, const float *x, const float *w, const float *bias,
                          int act, float *y, const kd_sample_sink *sink, size_t B, float *ws,
                          size_t threads) {
    const size_t C = d->C, OHW = d->OH * d->OW, KK = d->KH * d->KW;
    fwd_job j = {.d = d, .x = x, .w = w, .bias = bias, .y = y, .sink = sink, .act = act, .B = B};
    if (kd_dwb_takes(d) && kd_dwb_weights(d, w, bias, ws)) {
        j.wt = ws;
        j.scratch = ws + kd_dwb_weight_floats(d);
    }
    j.units = j.wt ? C / 8 + C % 8 : C;
    const size_t max = (size_t)omp_get_max_threads(), team = max < threads ? max : threads;
    if (team > 1 && KD_PAR(B * C * OHW * KK) && (!sink || B > 1)) {
#pragma omp parallel num_threads((int)team)
        forward_share(&j, (size_t)omp_get_thread_num(), (size_t)omp_get_num_threads());
    } else {
        forward_share(&j, 0, 1);
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
