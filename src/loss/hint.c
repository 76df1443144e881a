/* hint.c - the "hint" feature loss (FitNets, Romero et al. 2015): the mean squared error between
 * an adapter of a student inner value (a 1x1 convolution of [C, H, W] values, a dense layer of
 * [D] values: the same product per spatial position) and a teacher inner value, with its
 * gradient with respect to the student value and the adapter's weights; the teacher's value is
 * a constant target. Also the shape rules every feature loss shares. */
#include <string.h>

#include "kd_gemm.h"
#include "kd_threads.h"
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

/* The adapter's output a = bias + w x, then dL/da in its place. The products are float sgemms
 * as every layer's (the squared errors are summed in double): for [D] values each is one
 * product over the batch, as a dense layer's; for [C, H, W] values one per sample, as a 1x1
 * convolution's, the team sharing out the samples' forward and input-gradient products (each a
 * sample's own) while the weight gradient adds the samples' products in sample order, so those
 * bits do not depend on the thread count. */
double kd_loss_hint(const kd_feature_dims *d, const float *vs, const float *vt, const float *w,
                    const float *bias, size_t B, double weight, float *dvs, float *dw,
                    float *db, float *a) {
    const size_t Cs = d->Cs, Ct = d->Ct, P = d->P, n = Ct * P, m = Cs * P;
    const double inv = 1.0 / ((double)B * (double)n), scale = weight * 2.0 * inv;
    const int par = KD_PAR(B * n * Cs);  /* a product's multiply-adds */
    if (P == 1) {
        kd_sgemm_linear(B, Ct, Cs, vs, w, bias, a, 0);
    } else {
#pragma omp parallel for schedule(static) if (par)
        for (size_t i = 0; i < B; i++) {
            float *ai = a + i * n;
            for (size_t o = 0; o < Ct; o++)
                for (size_t p = 0; p < P; p++) ai[o * P + p] = bias ? bias[o] : 0.0f;
            kd_sgemm_serial(0, 0, Ct, P, Cs, 1.0f, w, Cs, vs + i * m, P, 1.0f, ai, P);
        }
    }
    double sum = 0.0;
    for (size_t k = 0; k < B * n; k++) {
        const double e = (double)a[k] - (double)vt[k];
        sum += e * e;
        a[k] = (float)(scale * e);
    }
    if (db)
        for (size_t i = 0; i < B; i++)
            for (size_t o = 0; o < Ct; o++) {
                float s = 0.0f;
                for (size_t p = 0; p < P; p++) s += a[i * n + o * P + p];
                db[o] += s;
            }
    if (P == 1) {
        if (dw) kd_sgemm(1, 0, Ct, Cs, B, 1.0f, a, Ct, vs, Cs, 1.0f, dw, Cs);
        if (dvs) kd_sgemm(0, 0, B, Cs, Ct, 1.0f, a, Ct, w, Cs, 1.0f, dvs, Cs);
        return sum * inv;
    }
    for (size_t i = 0; dw && i < B; i++)
        kd_sgemm_serial(0, 1, Ct, Cs, P, 1.0f, a + i * n, P, vs + i * m, P, 1.0f, dw, Cs);
    if (dvs) {
#pragma omp parallel for schedule(static) if (par)
        for (size_t i = 0; i < B; i++)
            kd_sgemm_serial(1, 0, Cs, P, Ct, 1.0f, w, Cs, a + i * n, P, 1.0f, dvs + i * m, P);
    }
    return sum * inv;
}

static double hint_feature(const kd_loss_entry *e, const kd_loss_feature *f, size_t B,
                           double w) {
    (void)e;
    return kd_loss_hint(&f->d, f->vs, f->vt, f->aw, f->ab, B, w * f->gscale, f->dvs, f->daw,
                        f->dab, f->adapted);
}

const kd_loss_ops kd_loss_ops_hint = {
    {"hint", KD_LOSS_NEEDS_FEATURES | KD_LOSS_NEEDS_ADAPTER, 1, NULL,
     "mean (adapter(s) - t)^2"},
    NULL, NULL, NULL, NULL, NULL, hint_feature};
