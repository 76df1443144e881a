/* hint.c - the "hint" feature loss (FitNets, Romero et al. 2015): the mean squared error between
 * an adapter of a student inner value (a 1x1 convolution of [C, H, W] values, a dense layer of
 * [D] values: the same product per spatial position) and a teacher inner value, with its
 * gradient with respect to the student value and the adapter's weights; the teacher's value is
 * a constant target. Also the shape rules every feature loss shares. */
#include <string.h>

#include "loss_impl.h"

/* A value's channels and spatial positions: [C, H, W] is C channels at H * W positions, [D]
 * is D channels at one position (so the 1x1 convolution is the dense layer). */
static int split(const kd_shape *s, size_t *C, size_t *P) {
    if (s->rank == 3) {
        *C = s->d[0];
        *P = s->d[1] * s->d[2];
        return 1;
    }
    if (s->rank == 1) {
        *C = s->d[0];
        *P = 1;
        return 1;
    }
    return 0;
}

kd_status kd_loss_feature_shapes(const char *what, int spatial_only, const kd_shape *ss,
                                 const kd_shape *ts, kd_feature_dims *d, kd_err *err) {
    char a[64], b[64];
    kd_shape_str(ss, a, sizeof a);
    kd_shape_str(ts, b, sizeof b);
    memset(d, 0, sizeof *d);
    if (!split(ss, &d->Cs, &d->P) || !split(ts, &d->Ct, &d->P) || ss->rank != ts->rank ||
        (spatial_only && ss->rank != 3))
        return kd_err_set(err, KD_EUSAGE, "%s: the student value is %s and the teacher's %s: "
                          "expected both [C, H, W]%s", what, a, b,
                          spatial_only ? "" : " or both [D]");
    if (ss->rank == 3 && (ss->d[1] != ts->d[1] || ss->d[2] != ts->d[2]))
        return kd_err_set(err, KD_EUSAGE, "%s: the student value is %s and the teacher's %s: "
                          "their spatial sizes must match (the adapter is a 1x1 convolution)",
                          what, a, b);
    return KD_OK;
}

/* Positions whose input gradients are summed together (a block of doubles on the stack). */
#define HINT_PB 64

double kd_loss_hint(const kd_feature_dims *d, const float *vs, const float *vt, const float *w,
                    const float *bias, size_t B, double weight, float *dvs, float *dw,
                    float *db, double *scratch) {
    const size_t Cs = d->Cs, Ct = d->Ct, P = d->P;
    const double inv = 1.0 / ((double)B * (double)Ct * (double)P);
    double sum = 0.0;
    for (size_t i = 0; i < B; i++) {
        const float *x = vs + i * Cs * P;  /* (Cs, P) */
        const float *t = vt + i * Ct * P;  /* (Ct, P) */
        double *g = scratch;                /* (Ct, P): the adapter's output, then its gradient */
        /* Every sum runs over its index in the same order as sum_c w x, sum_o w g spelled out per
         * element; the loops run along the positions p, which are contiguous. */
        for (size_t o = 0; o < Ct; o++) {
            double *go = g + o * P;
            for (size_t p = 0; p < P; p++) go[p] = bias ? (double)bias[o] : 0.0;
            for (size_t c = 0; c < Cs; c++) {
                const double wc = (double)w[o * Cs + c];
                const float *xc = x + c * P;
                for (size_t p = 0; p < P; p++) go[p] += wc * xc[p];
            }
            for (size_t p = 0; p < P; p++) {
                const double e = go[p] - (double)t[o * P + p];
                sum += e * e;
                go[p] = weight * 2.0 * e * inv;
            }
        }
        if (dw)
            for (size_t o = 0; o < Ct; o++)
                for (size_t c = 0; c < Cs; c++) {
                    double s = 0.0;
                    for (size_t p = 0; p < P; p++) s += g[o * P + p] * x[c * P + p];
                    dw[o * Cs + c] += (float)s;
                }
        if (db)
            for (size_t o = 0; o < Ct; o++) {
                double s = 0.0;
                for (size_t p = 0; p < P; p++) s += g[o * P + p];
                db[o] += (float)s;
            }
        if (dvs)
            for (size_t c = 0; c < Cs; c++)
                for (size_t p0 = 0; p0 < P; p0 += HINT_PB) {
                    const size_t n = P - p0 < HINT_PB ? P - p0 : HINT_PB;
                    double acc[HINT_PB];
                    for (size_t k = 0; k < n; k++) acc[k] = 0.0;
                    for (size_t o = 0; o < Ct; o++) {
                        const double wc = (double)w[o * Cs + c];
                        const double *go = g + o * P + p0;
                        for (size_t k = 0; k < n; k++) acc[k] += wc * go[k];
                    }
                    float *dv = dvs + i * Cs * P + c * P + p0;
                    for (size_t k = 0; k < n; k++) dv[k] += (float)acc[k];
                }
    }
    return sum * inv;
}

static double hint_feature(const kd_loss_entry *e, const kd_loss_feature *f, size_t B,
                           double w) {
    (void)e;
    return kd_loss_hint(&f->d, f->vs, f->vt, f->aw, f->ab, B, w * f->gscale, f->dvs, f->daw,
                        f->dab, f->scratch);
}

const kd_loss_ops kd_loss_ops_hint = {
    {"hint", KD_LOSS_NEEDS_FEATURES | KD_LOSS_NEEDS_ADAPTER, 1, NULL,
     "mean (adapter(s) - t)^2"},
    NULL, NULL, NULL, NULL, NULL, hint_feature};
