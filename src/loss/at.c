/* at.c - the "at" feature loss, attention transfer (Zagoruyko and Komodakis 2017): each value's
 * spatial attention map (the channel mean of its squared activations), L2-normalised per sample,
 * and the mean over samples and positions of the squared difference of the two maps, as the
 * authors' code computes it (at(x) = normalize(x.pow(2).mean(1)), (at(s) - at(t)).pow(2).mean());
 * the gradient with respect to the student value; the teacher's value is a constant target. */
#include <math.h>

#include "loss_impl.h"

/* Below this norm a map is divided by it instead (torch.nn.functional.normalize's eps). */
#define AT_EPS 1e-12

/* u = q / max(||q||, eps), q_p = mean_c v[c, p]^2, for one sample's (C, P) value; returns the
 * divisor. */
static double attention_map(const float *v, size_t C, size_t P, double *u) {
    /* Along the positions, which are contiguous; each q_p still sums over c in order. */
    for (size_t p = 0; p < P; p++) u[p] = 0.0;
    for (size_t c = 0; c < C; c++)
        for (size_t p = 0; p < P; p++) u[p] += (double)v[c * P + p] * v[c * P + p];
    double ss = 0.0;
    for (size_t p = 0; p < P; p++) {
        u[p] /= (double)C;
        ss += u[p] * u[p];
    }
    const double n = fmax(sqrt(ss), AT_EPS);
    for (size_t p = 0; p < P; p++) u[p] /= n;
    return n;
}

double kd_loss_at(const kd_feature_dims *d, const float *vs, const float *vt, size_t B,
                  double weight, float *dvs, double *scratch) {
    const size_t Cs = d->Cs, Ct = d->Ct, P = d->P;
    const double inv = 1.0 / ((double)B * (double)P);
    double sum = 0.0;
    double *us = scratch, *ut = scratch + P;  /* (P) each */
    for (size_t i = 0; i < B; i++) {
        const float *x = vs + i * Cs * P;  /* (Cs, P) */
        const double n = attention_map(x, Cs, P, us);
        attention_map(vt + i * Ct * P, Ct, P, ut);
        double ug = 0.0;  /* u . g, g = dL/du */
        for (size_t p = 0; p < P; p++) {
            const double e = us[p] - ut[p];
            sum += e * e;
            ut[p] = weight * 2.0 * e * inv;  /* g, in place of the teacher's map */
            ug += us[p] * ut[p];
        }
        if (!dvs) continue;
        /* du_p/dq_r = (delta_pr - u_p u_r) / n when the norm is above eps (else 1 / eps), and
         * dq_p/dv[c, p] = 2 v[c, p] / C. */
        const int clamped = n == AT_EPS;
        double *dq = ut;  /* in place of g */
        for (size_t p = 0; p < P; p++) dq[p] = (clamped ? ut[p] : ut[p] - us[p] * ug) / n;
        for (size_t c = 0; c < Cs; c++)
            for (size_t p = 0; p < P; p++)
                dvs[i * Cs * P + c * P + p] += (float)(dq[p] * 2.0 * x[c * P + p] / (double)Cs);
    }
    return sum * inv;
}

static double at_feature(const kd_loss_entry *e, const kd_loss_feature *f, size_t B, double w) {
    (void)e;
    return kd_loss_at(&f->d, f->vs, f->vt, B, w * f->gscale, f->dvs, f->scratch);
}

const kd_loss_ops kd_loss_ops_at = {
    {"at", KD_LOSS_NEEDS_FEATURES, 1, NULL, "mean (at(s) - at(t))^2"},
    NULL, NULL, NULL, NULL, NULL, at_feature};
