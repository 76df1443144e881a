/* standardize.c - per-feature statistics: a mean and a standard deviation for every value of the
 * flattened sample (data.preprocess.standardize, or mean/std given with one value per feature),
 * computed once in double over the training split, and the ownership of the arrays that carry
 * them in a kd_preprocess. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_data.h"

void kd_preprocess_free(kd_preprocess *pp) {
    if (!pp) return;
    free(pp->feat);
    pp->feat = NULL;
    pp->n_features = 0;
}

kd_status kd_preprocess_copy(kd_preprocess *dst, const kd_preprocess *src, kd_err *err) {
    *dst = *src;
    dst->feat = NULL;
    if (!src->n_features) return KD_OK;
    dst->feat = malloc(2 * src->n_features * sizeof *dst->feat);
    if (!dst->feat) {
        dst->n_features = 0;
        return kd_err_set(err, KD_EIO, "out of memory for %zu feature statistics",
                          src->n_features);
    }
    memcpy(dst->feat, src->feat, 2 * src->n_features * sizeof *dst->feat);
    return KD_OK;
}

kd_status kd_preprocess_set_features(kd_preprocess *pp, const double *mean, const double *std,
                                     size_t n, kd_err *err) {
    if (n == 0 || n > KD_MAX_FEATURES)
        return kd_err_set(err, KD_EUSAGE, "preprocess: %zu features, expected 1 to %u", n,
                          KD_MAX_FEATURES);
    float *f = malloc(2 * n * sizeof *f);
    if (!f) return kd_err_set(err, KD_EIO, "out of memory for %zu feature statistics", n);
    for (size_t i = 0; i < n; i++) {
        f[i] = (float)mean[i];
        /* A constant feature (std 0) is centred only, as scikit-learn's StandardScaler does. */
        f[n + i] = std[i] > 0 && (float)std[i] > 0 ? (float)std[i] : 1.0f;
    }
    kd_preprocess_free(pp);
    pp->feat = f;
    pp->n_features = n;
    pp->n_channels = 0;
    return KD_OK;
}

kd_status kd_dataset_feature_stats(kd_dataset *ds, const size_t *idx, size_t n, double *mean,
                                   double *std, kd_err *err) {
    const size_t D = kd_shape_numel(&kd_dataset_info(ds)->shape), B = 256;
    kd_status st = KD_OK;
    float *x = malloc(B * D * sizeof *x);
    double *m2 = calloc(D ? D : 1, sizeof *m2);
    size_t seen = 0;
    if (!x || !m2) {
        st = kd_err_set(err, KD_EIO, "out of memory for feature statistics");
        goto cleanup;
    }
    memset(mean, 0, D * sizeof *mean);
    /* Welford: stable when a feature's mean is far larger than its spread (a column shifted by
     * 50,000 with unit variance), where sum-of-squares would cancel. */
    for (size_t start = 0; start < n; start += B) {
        size_t b = n - start < B ? n - start : B, got = b;
        if ((st = kd_dataset_get(ds, idx + start, b, x, NULL, &got, err))) goto cleanup;
        for (size_t r = 0; r < got; r++) {
            const float *row = x + r * D;
            seen++;
            for (size_t i = 0; i < D; i++) {
                double d = (double)row[i] - mean[i];
                mean[i] += d / (double)seen;
                m2[i] += d * ((double)row[i] - mean[i]);
            }
        }
    }
    for (size_t i = 0; i < D; i++) std[i] = seen ? sqrt(m2[i] / (double)seen) : 0.0;
cleanup:
    free(x);
    free(m2);
    return st;
}
