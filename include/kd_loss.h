/* kd_loss.h - temperature softmax, cross-entropy, the teacher mixture, and the table of
 * distillation losses (kl, mse, ce, dkd on the logits; hint, at on inner values): a run's list of
 * weighted entries, each returning its named terms and its gradient with respect to the logits,
 * or to a student inner value and an adapter (batch-mean reduction). */
#ifndef KD_LOSS_H
#define KD_LOSS_H

#include <stddef.h>
#include <stdint.h>

#include "kd_common.h"
#include "kd_shape.h"

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

/* Teachers one loss may mix (a config's ensemble). */
#define KD_MAX_TEACHERS 16
/* Named terms of one loss list (kd_loss_plan). */
#define KD_MAX_LOSS_TERMS 16

typedef enum { KD_DISTILL_KL = 0, KD_DISTILL_MSE = 1 } kd_distill_kind;

typedef struct {
    float alpha;          /* weight of the soft (teacher) term, in [0, 1] */
    float temperature;    /* T > 0 (ignored by MSE) */
    kd_distill_kind kind;
} kd_distill_cfg;

typedef struct {
    double total;  /* alpha * soft + (1 - alpha) * hard; a list: sum of weight * entry value */
    double soft;   /* KL: T^2 * mean KL(p_t^T || p_s^T); MSE: mean ||z_t - z_s||^2 */
    double hard;   /* mean CE(y, softmax(z_s)); 0 when labels are NULL */
    size_t n_terms;                   /* a list's named terms (kd_loss_plan keys), else 0 */
    double term[KD_MAX_LOSS_TERMS];
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


/* The same loss with the teacher target at T the weighted mixture of K teachers' softmaxes,
 * p_t^T = sum_k w_k softmax(zt[k] / T) (weights NULL: all 1; they should sum to 1), each
 * zt[k] (B, C). KL only when K > 1: MSE matches one teacher's logits. K = 1 gives exactly
 * kd_loss_distill (bit for bit). */
kd_loss_terms kd_loss_distill_mix(const kd_distill_cfg *cfg, const float *zs,
                                  const float *const *zt, const float *weights, size_t K,
                                  const int32_t *labels, size_t B, size_t C, float *dzs);

/* ---- The teacher mixture (written once: the loss, metrics, teachers, eval and the cache) ---- */

/* Teacher target of one row at temperature T: one teacher's softmax, or the weighted mixture of
 * several teachers' softmaxes (Hinton 2015, section 2: an ensemble's soft target is the average
 * of its members' probabilities, not of their logits). Per teacher k: its row z[k], max m[k],
 * sum[k] = sum_j exp((z[k][j] - m[k]) / T) and lse[k] = log(sum[k]). */
typedef struct {
    size_t K;
    double T;
    const float *z[KD_MAX_TEACHERS];
    float m[KD_MAX_TEACHERS];
    double sum[KD_MAX_TEACHERS], lse[KD_MAX_TEACHERS], w[KD_MAX_TEACHERS];
} kd_mix_row;

/* Row i of the K teachers' logits zt[k] (B, C) at temperature T; weights NULL: all 1. */
void kd_mix_row_init(kd_mix_row *r, const float *const *zt, const float *weights, size_t K,
                     size_t i, size_t C, double T);
/* p_t(j) in double, and its log in *lp. One teacher: log-softmax directly (exact for tiny
 * probabilities); a mixture: log of the mixed probability (-inf where it underflows to 0). */
double kd_mix_prob(const kd_mix_row *r, size_t j, double *lp);

/* ---- The loss table ---- */

/* The loss types, in table order (config names: "kl", "mse", "ce", "dkd", "hint", "at"). */
typedef enum {
    KD_LOSS_KL, KD_LOSS_MSE, KD_LOSS_CE, KD_LOSS_DKD, KD_LOSS_HINT, KD_LOSS_AT, KD_LOSS_N_TYPES
} kd_loss_type;

/* What an entry needs. */
enum {
    KD_LOSS_NEEDS_TEACHER = 1u << 0,  /* the teachers' logits (the mixture) */
    KD_LOSS_NEEDS_LABELS = 1u << 1,
    KD_LOSS_NEEDS_ALL_LOGITS = 1u << 2, /* every logit of the teacher: refused with a top-k cache */
    KD_LOSS_ONE_TEACHER = 1u << 3,    /* one teacher's logits, not a mixture of probabilities */
    KD_LOSS_NEEDS_FEATURES = 1u << 4, /* a student and a teacher inner value: the teacher online */
    KD_LOSS_NEEDS_ADAPTER = 1u << 5,  /* trainable adapter weights (Ct, Cs) and bias (Ct) */
};

#define KD_MAX_LOSSES 8         /* entries of distill.losses */
#define KD_LOSS_NAME_MAX 32     /* an entry's name, NUL included */
#define KD_LOSS_KEY_MAX 64      /* "loss.<entry>[.<k>][.<term>]", NUL included */
#define KD_LOSS_VALUE_MAX 96    /* a feature loss's value: a layer's name or index (as text) */

/* One entry of distill.losses: {"type": ..., "weight": w, ...} (keys in configs/README.md). */
typedef struct {
    kd_loss_type type;
    double weight;          /* kept in double: the terms' gradients are summed in double */
    float temperature;      /* kl, dkd */
    float alpha, beta;      /* dkd: target-class and non-target-class weights */
    double warmup_epochs;   /* dkd: linear warm-up of its weight over these epochs (0: none) */
    char name[KD_LOSS_NAME_MAX];  /* "" = its type's name */
    /* hint, at: the student's and the teacher's inner value (a layer's output, by the layer's
     * name or index) and, with an ensemble, the teacher member (0-based) whose value it is. */
    char student[KD_LOSS_VALUE_MAX], teacher[KD_LOSS_VALUE_MAX];
    size_t member;
    int has_member;
} kd_loss_entry;

typedef struct {
    size_t n;
    kd_loss_entry e[KD_MAX_LOSSES];
} kd_loss_list;

/* Name, needs and named terms of a type (NULL for a type out of range). */
typedef struct {
    const char *name;
    unsigned needs;
    size_t n_terms;
    const char *const *terms;  /* n_terms > 1: the term suffixes ("tckd", "nckd") */
    const char *formula;       /* its value, for the run's "loss = ..." line */
} kd_loss_info;
const kd_loss_info *kd_loss_type_info(kd_loss_type type);
/* The type called name; -1 for none. */
int kd_loss_type_find(const char *name);

/* Today's keys as a list: [{kind, weight alpha, temperature T}, {ce, weight 1 - alpha}] (no ce
 * entry when alpha is 1), the weights the float alpha as a double and 1 - that double. */
void kd_loss_list_from_distill(const kd_distill_cfg *cfg, kd_loss_list *l);
/* The union of the needs of the entries with a weight > 0. */
unsigned kd_loss_list_needs(const kd_loss_list *l);
/* The first entry that needs the teacher (the one the "soft" metric reports); NULL if none. */
const kd_loss_entry *kd_loss_list_soft(const kd_loss_list *l);

/* "loss = 0.9 * T^2 * KL(p_t^T || p_s^T) + 0.1 * CE(y, p_s), T = 4" for the list; returns buf. */
const char *kd_loss_list_formula(const kd_loss_list *l, char *buf, size_t cap);

/* A list resolved for a run: the key of each named term, in list order. */
typedef struct {
    kd_loss_list list;
    size_t n_terms;
    size_t first_term[KD_MAX_LOSSES];       /* the entry's first term in key[] */
    char key[KD_MAX_LOSS_TERMS][KD_LOSS_KEY_MAX];
} kd_loss_plan;

/* Term keys are "loss.<entry>" where <entry> is the entry's name, else its type, with ".<k>"
 * for the k-th repeat (k >= 1) of a type, and ".<term>" for a loss of several terms. KD_EUSAGE
 * for an empty list, too many terms or two entries with one key. */
kd_status kd_loss_plan_init(kd_loss_plan *p, const kd_loss_list *l, kd_err *err);

/* A student value of Cs channels and a teacher value of Ct channels, both at P positions: a
 * [C, H, W] value has C channels at H * W positions, a [D] value D channels at one. */
typedef struct {
    size_t Cs, Ct, P;
} kd_feature_dims;

/* A feature entry's inputs for one batch (vs NULL: the entry is skipped). Gradients are added
 * times the entry's weight times gscale (data-parallel shards: n / rows) where non-NULL. */
typedef struct {
    kd_feature_dims d;
    const float *vs, *vt;     /* (B, Cs * P) the student's value, (B, Ct * P) the teacher's */
    float *dvs;               /* (B, Cs * P) the student value's gradient */
    const float *aw, *ab;     /* hint: the adapter's weight (Ct, Cs) and bias (Ct) */
    float *daw, *dab;         /* and their gradients */
    double gscale;
    double *scratch;          /* at: 2 * P doubles */
    float *adapted;           /* hint: (B, Ct * P) floats, the adapter's output */
} kd_loss_feature;

/* A batch as the losses see it. */
typedef struct {
    const float *zs;               /* (B, C) student logits */
    size_t B, C;
    const float *const *zt;        /* K teachers' (B, C) logits; NULL: no teacher this step */
    const float *weights;          /* (K) the mixture's weights; NULL: all 1 */
    size_t K;
    const int32_t *labels;         /* (B) or NULL */
    double epoch;                  /* 1-based epoch, for warm-ups */
    const kd_loss_feature *feat;   /* (list entries) feature entries' inputs; NULL: none */
} kd_loss_batch;

/* The list's value, its named terms (term[k] the batch mean of plan key k; the terms of an
 * entry whose inputs the batch lacks are 0) and, when dzs (B, C) is non-NULL, its gradient:
 * every entry's weighted gradient summed in double and rounded to float once. An entry that
 * needs the teacher is skipped when zt is NULL; one that needs labels must have them (the caller
 * checks), except that weight-0 entries are only reported. soft is the first teacher entry's
 * value, hard the first ce entry's, or the cross-entropy of the labels when there is none. A
 * feature entry (hint, at) runs when b->feat[entry].vs is given (else its term is 0 and it adds
 * nothing): its value joins total, its gradients go where b->feat[entry] points. */
void kd_loss_eval(const kd_loss_plan *p, const kd_loss_batch *b, kd_loss_terms *out, float *dzs);

/* ---- Feature losses on a pair of inner values (hint.c, at.c) ---- */

/* The dims of a feature loss `what` ("distill.losses[1]") on a student value of shape ss and a
 * teacher value of shape ts: both [C, H, W] with the same H and W, or (unless spatial_only, as
 * attention maps need) both [D]. KD_EUSAGE naming both shapes otherwise. */
kd_status kd_loss_feature_shapes(const char *what, int spatial_only, const kd_shape *ss,
                                 const kd_shape *ts, kd_feature_dims *d, kd_err *err);

/* hint: the adapter's output a[o, p] = bias[o] + sum_c w[o, c] vs[c, p] per sample (w (Ct, Cs),
 * bias (Ct) or NULL: a 1x1 convolution, or a dense layer at P = 1) against the teacher value,
 * L = mean over B * Ct * P of (a - vt)^2, returned. Adds weight * dL/d(vs) into dvs (B, Cs * P),
 * weight * dL/dw into dw and weight * dL/dbias into db, each when non-NULL (vt is a constant).
 * The products are float sgemms (as every layer's), the squared errors summed in double; a
 * holds B * Ct * P floats (the adapter's output, then its gradient). */
double kd_loss_hint(const kd_feature_dims *d, const float *vs, const float *vt, const float *w,
                    const float *bias, size_t B, double weight, float *dvs, float *dw,
                    float *db, float *a);

/* at: per sample the attention maps u = q / max(||q||_2, 1e-12), q[p] = mean_c v[c, p]^2, of
 * both values, L = mean over B * P of (u_s - u_t)^2, returned. Adds weight * dL/d(vs) into dvs
 * (B, Cs * P) when non-NULL (vt is a constant). scratch holds 2 * P doubles. */
double kd_loss_at(const kd_feature_dims *d, const float *vs, const float *vt, size_t B,
                  double weight, float *dvs, double *scratch);

#endif
