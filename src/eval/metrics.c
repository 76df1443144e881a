/* metrics.c - classification metrics for `distill eval`: top-k accuracy, Wilson interval,
 * agreement, KL at T = 1, expected calibration error, confusion matrix. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_eval.h"

size_t kd_argmax(const float *row, size_t C) {
    size_t best = 0;
    for (size_t c = 1; c < C; c++)
        if (row[c] > row[best]) best = c;
    return best;
}

int kd_topk_hit(const float *row, size_t C, int32_t label, size_t k) {
    if (label < 0 || (size_t)label >= C) return 0;
    if (k >= C) return 1;
    /* Rank of the label = entries that outrank it; a hit if fewer than k do. Equal values
     * earlier in the row outrank it, matching kd_argmax's first-on-ties rule for k = 1. */
    size_t lab = (size_t)label, above = 0;
    float v = row[lab];
    for (size_t c = 0; c < C; c++)
        if (row[c] > v || (row[c] == v && c < lab)) above++;
    return above < k;
}

double kd_topk_accuracy(const float *z, const int32_t *y, size_t B, size_t C, size_t k) {
    size_t n = 0, hits = 0;
    for (size_t i = 0; i < B; i++) {
        if (y[i] < 0) continue;
        n++;
        hits += (size_t)kd_topk_hit(z + i * C, C, y[i], k);
    }
    return n ? (double)hits / (double)n : 0.0;
}

void kd_wilson95(size_t k, size_t n, double *lo, double *hi) {
    if (n == 0) {
        *lo = 0.0;
        *hi = 1.0;
        return;
    }
    const double z = 1.959963984540054;
    double nn = (double)n, p = (double)k / nn, z2 = z * z;
    double denom = 1.0 + z2 / nn;
    double centre = (p + z2 / (2.0 * nn)) / denom;
    double half = z * sqrt(p * (1.0 - p) / nn + z2 / (4.0 * nn * nn)) / denom;
    *lo = centre - half < 0.0 ? 0.0 : centre - half;
    *hi = centre + half > 1.0 ? 1.0 : centre + half;
}

double kd_agreement(const float *za, const float *zb, size_t B, size_t C) {
    if (B == 0) return 0.0;
    size_t same = 0;
    for (size_t i = 0; i < B; i++) same += kd_argmax(za + i * C, C) == kd_argmax(zb + i * C, C);
    return (double)same / (double)B;
}

/* log(sum exp(z)) in double, with the max subtracted so large logits do not overflow. */
static double log_sum_exp(const float *z, size_t C) {
    double mx = z[kd_argmax(z, C)], s = 0.0;
    for (size_t c = 0; c < C; c++) s += exp((double)z[c] - mx);
    return mx + log(s);
}

double kd_kl_row(const float *zt, const float *zs, size_t C) {
    double lt = log_sum_exp(zt, C), ls = log_sum_exp(zs, C), kl = 0.0;
    for (size_t c = 0; c < C; c++) {
        double log_pt = (double)zt[c] - lt, log_ps = (double)zs[c] - ls;
        double pt = exp(log_pt);
        if (pt > 0.0) kl += pt * (log_pt - log_ps);
    }
    return kl > 0.0 ? kl : 0.0; /* rounding can give -1e-17 for identical rows */
}

double kd_kl_mean(const float *zt, const float *zs, size_t B, size_t C) {
    if (B == 0) return 0.0;
    double s = 0.0;
    for (size_t i = 0; i < B; i++) s += kd_kl_row(zt + i * C, zs + i * C, C);
    return s / (double)B;
}

int kd_ece_bin(double conf) {
    int b = (int)ceil(conf * KD_ECE_BINS) - 1;
    if (b < 0) b = 0;
    if (b >= KD_ECE_BINS) b = KD_ECE_BINS - 1;
    return b;
}

/* Max softmax probability of a row = exp(max - logsumexp). */
static double confidence(const float *z, size_t C) {
    return exp((double)z[kd_argmax(z, C)] - log_sum_exp(z, C));
}

static double ece_from_bins(const double *conf, const size_t *hits, const size_t *cnt) {
    size_t total = 0;
    for (int b = 0; b < KD_ECE_BINS; b++) total += cnt[b];
    if (total == 0) return 0.0;
    double e = 0.0;
    for (int b = 0; b < KD_ECE_BINS; b++) {
        if (!cnt[b]) continue;
        double nb = (double)cnt[b];
        e += nb / (double)total * fabs((double)hits[b] / nb - conf[b] / nb);
    }
    return e;
}

double kd_ece(const float *z, const int32_t *y, size_t B, size_t C) {
    double conf[KD_ECE_BINS] = {0};
    size_t hits[KD_ECE_BINS] = {0}, cnt[KD_ECE_BINS] = {0};
    for (size_t i = 0; i < B; i++) {
        if (y[i] < 0) continue;
        const float *row = z + i * C;
        double p = confidence(row, C);
        int b = kd_ece_bin(p);
        conf[b] += p;
        cnt[b]++;
        hits[b] += kd_argmax(row, C) == (size_t)y[i];
    }
    return ece_from_bins(conf, hits, cnt);
}

kd_status kd_metrics_init(kd_metrics *m, size_t n_classes, kd_err *err) {
    memset(m, 0, sizeof *m);
    size_t cells;
    if (n_classes == 0 || kd_mul_size(n_classes, n_classes, &cells))
        return kd_err_set(err, KD_EIO, "metrics: bad class count %zu", n_classes);
    m->n_classes = n_classes;
    m->confusion = calloc(cells, sizeof *m->confusion);
    m->class_n = calloc(n_classes, sizeof *m->class_n);
    m->class_hits = calloc(n_classes, sizeof *m->class_hits);
    if (!m->confusion || !m->class_n || !m->class_hits) {
        kd_metrics_free(m);
        return kd_err_set(err, KD_EIO, "metrics: out of memory for %zu classes", n_classes);
    }
    return KD_OK;
}

void kd_metrics_free(kd_metrics *m) {
    if (!m) return;
    free(m->confusion);
    free(m->class_n);
    free(m->class_hits);
    m->confusion = m->class_n = m->class_hits = NULL;
}

void kd_metrics_add(kd_metrics *m, const float *z, const float *ref, const int32_t *y, size_t B) {
    size_t C = m->n_classes;
    for (size_t i = 0; i < B; i++) {
        const float *row = z + i * C;
        size_t pred = kd_argmax(row, C);
        m->n_rows++;
        if (ref) {
            const float *rr = ref + i * C;
            m->n_ref++;
            m->agree += kd_argmax(rr, C) == pred;
            m->kl_sum += kd_kl_row(rr, row, C);
        }
        if (!y || y[i] < 0) continue;
        size_t lab = (size_t)y[i];
        KD_ASSERT(lab < C);
        int hit = pred == lab;
        m->n++;
        m->top1 += (size_t)hit;
        m->top5 += (size_t)kd_topk_hit(row, C, y[i], 5);
        m->confusion[lab * C + pred]++;
        m->class_n[lab]++;
        m->class_hits[lab] += (size_t)hit;
        double p = confidence(row, C);
        int b = kd_ece_bin(p);
        m->bin_conf[b] += p;
        m->bin_n[b]++;
        m->bin_hits[b] += (size_t)hit;
    }
}

double kd_metrics_ece(const kd_metrics *m) { return ece_from_bins(m->bin_conf, m->bin_hits, m->bin_n); }
