/* kd_loss.h - temperature softmax, cross-entropy and the distillation loss, each returning
 * its value and its gradient with respect to the logits (batch-mean reduction). */
#ifndef KD_LOSS_H
#define KD_LOSS_H

#include <stddef.h>
#include <stdint.h>

/* p[i,:] = softmax(z[i,:] / T), stable for |z| ~ 1e4 (row max subtracted). z may equal p. */
void kd_softmax(const float *z, float *p, size_t B, size_t C, float T);
/* p = softmax(z / T) of one row with each probability computed in double and rounded once (for
 * reporting: kd_softmax rounds every exp to float before dividing, one float step off at times). */
void kd_softmax_row_f64(const float *z, float *p, size_t C, float T);
/* lp[i,:] = log_softmax(z[i,:] / T). */
void kd_log_softmax(const float *z, float *lp, size_t B, size_t C, float T);

/* Mean cross-entropy of integer labels y (B) in [0, C). If dz is non-NULL writes
 * dz = (softmax(z) - onehot(y)) / B. Returns the loss. */
double kd_loss_ce(const float *z, const int32_t *y, size_t B, size_t C, float *dz);

typedef enum { KD_DISTILL_KL = 0, KD_DISTILL_MSE = 1 } kd_distill_kind;

typedef struct {
    float alpha;          /* weight of the soft (teacher) term, in [0, 1] */
    float temperature;    /* T > 0 (ignored by MSE) */
    kd_distill_kind kind;
} kd_distill_cfg;

typedef struct {
    double total;  /* alpha * soft + (1 - alpha) * hard */
    double soft;   /* KL: T^2 * mean KL(p_t^T || p_s^T); MSE: mean ||z_t - z_s||^2 */
    double hard;   /* mean CE(y, softmax(z_s)); 0 when labels are NULL */
} kd_loss_terms;

/* L = alpha * T^2 * KL(softmax(zt/T) || softmax(zs/T)) + (1 - alpha) * CE(y, softmax(zs))
 * (or the MSE soft term), batch mean. labels may be NULL only when alpha == 1.
 * Writes dzs (B, C) if non-NULL:
 *   KL:  alpha * T * (p_s^T - p_t^T) / B + (1 - alpha) * (p_s - onehot(y)) / B
 *   MSE: alpha * 2 * (zs - zt) / B      + (1 - alpha) * (p_s - onehot(y)) / B
 * scratch must hold 3 * B * C floats. */
kd_loss_terms kd_loss_distill(const kd_distill_cfg *cfg, const float *zs, const float *zt,
                              const int32_t *labels, size_t B, size_t C, float *dzs,
                              float *scratch);

/* Teachers one loss may mix (a config's ensemble). */
#define KD_MAX_TEACHERS 16

/* The same loss with the teacher target at T the weighted mixture of K teachers' softmaxes,
 * p_t^T = sum_k w_k softmax(zt[k] / T) (weights NULL: all 1; they should sum to 1), each
 * zt[k] (B, C). KL only when K > 1: MSE matches one teacher's logits. K = 1 gives exactly
 * kd_loss_distill (bit for bit). */
kd_loss_terms kd_loss_distill_mix(const kd_distill_cfg *cfg, const float *zs,
                                  const float *const *zt, const float *weights, size_t K,
                                  const int32_t *labels, size_t B, size_t C, float *dzs);

#endif
