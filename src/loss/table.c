/* table.c - the loss table (one line per type, like the layer table), a run's list of
 * weighted entries resolved into named terms, and its evaluation: every entry's value and the
 * sum of their gradients, in double, rounded to float once. Today's alpha / temperature / kind
 * are the list [{kind, alpha, T}, {ce, 1 - alpha}], evaluated here too. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "loss_impl.h"

static const kd_loss_ops *const types[KD_LOSS_N_TYPES] = {
    [KD_LOSS_KL] = &kd_loss_ops_kl,
    [KD_LOSS_MSE] = &kd_loss_ops_mse,
    [KD_LOSS_CE] = &kd_loss_ops_ce,
    [KD_LOSS_DKD] = &kd_loss_ops_dkd,
    [KD_LOSS_HINT] = &kd_loss_ops_hint,
    [KD_LOSS_AT] = &kd_loss_ops_at,
};

const kd_loss_info *kd_loss_type_info(kd_loss_type type) {
    return (unsigned)type < KD_LOSS_N_TYPES ? &types[type]->info : NULL;
}

int kd_loss_type_find(const char *name) {
    for (int t = 0; t < KD_LOSS_N_TYPES; t++)
        if (!strcmp(types[t]->info.name, name)) return t;
    return -1;
}

void kd_loss_list_from_distill(const kd_distill_cfg *cfg, kd_loss_list *l) {
    memset(l, 0, sizeof *l);
    kd_loss_entry *e = &l->e[l->n++];
    e->type = cfg->kind == KD_DISTILL_MSE ? KD_LOSS_MSE : KD_LOSS_KL;
    e->weight = cfg->alpha;
    e->temperature = cfg->kind == KD_DISTILL_MSE ? 0.0f : cfg->temperature;
    if (cfg->alpha < 1.0f) {
        e = &l->e[l->n++];
        e->type = KD_LOSS_CE;
        /* 1 - alpha in double, as the single expression this list replaces computed it. */
        e->weight = 1.0 - (double)cfg->alpha;
    }
}

unsigned kd_loss_list_needs(const kd_loss_list *l) {
    unsigned needs = 0;
    for (size_t i = 0; i < l->n; i++)
        if (l->e[i].weight > 0.0) needs |= types[l->e[i].type]->info.needs;
    return needs;
}

const kd_loss_entry *kd_loss_list_soft(const kd_loss_list *l) {
    for (size_t i = 0; i < l->n; i++)
        if (types[l->e[i].type]->info.needs & KD_LOSS_NEEDS_TEACHER) return &l->e[i];
    return NULL;
}

/* One entry's part of the formula: "0.9 * T^2 * KL(...)" ("(T = 2)" after it when the list's
 * tempered entries differ in T, and dkd's alpha and beta). */
static void formula_entry(const kd_loss_list *l, const kd_loss_entry *e, int one_T, char *buf,
                          size_t cap) {
    char w[40] = "", tail[96] = "";
    if (l->n > 1 || e->weight != 1.0) snprintf(w, sizeof w, "%g * ", e->weight);
    if (e->type == KD_LOSS_DKD)
        snprintf(tail, sizeof tail, " (alpha = %g, beta = %g%s)", (double)e->alpha,
                 (double)e->beta, e->warmup_epochs > 0.0 ? ", warmed up" : "");
    else if (e->type == KD_LOSS_KL && !one_T)
        snprintf(tail, sizeof tail, " (T = %g)", (double)e->temperature);
    else if (types[e->type]->feature)
        snprintf(tail, sizeof tail, " (s = %.30s, t = %.30s)", e->student, e->teacher);
    snprintf(buf, cap, "%s%s%s", w, types[e->type]->info.formula, tail);
}

const char *kd_loss_list_formula(const kd_loss_list *l, char *buf, size_t cap) {
    float T = 0.0f;
    int one_T = 1, teacher = 0;
    for (size_t i = 0; i < l->n; i++) {
        const kd_loss_entry *e = &l->e[i];
        if ((types[e->type]->info.needs & (KD_LOSS_NEEDS_TEACHER | KD_LOSS_NEEDS_FEATURES)) &&
            e->weight > 0.0)
            teacher = 1;
        if (e->type != KD_LOSS_KL && e->type != KD_LOSS_DKD) continue;
        if (T > 0.0f && e->temperature != T) one_T = 0;
        T = e->temperature;
    }
    /* alpha = 0: the teacher's entries weigh nothing, and the step never runs it. */
    if (!teacher) {
        snprintf(buf, cap, "loss = CE(y, p_s) (alpha = 0: the teacher is not used)");
        return buf;
    }
    size_t len = (size_t)snprintf(buf, cap, "loss = ");
    for (size_t i = 0; i < l->n && len < cap; i++) {
        char part[256];
        formula_entry(l, &l->e[i], one_T, part, sizeof part);
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? " + " : "", part);
    }
    if (T > 0.0f && one_T && len < cap) snprintf(buf + len, cap - len, ", T = %g", (double)T);
    return buf;
}

/* The entry's key without its term: "loss.<name>", else "loss.<type>[.<k>]". */
static void entry_key(const kd_loss_list *l, size_t i, char *key, size_t cap) {
    const kd_loss_entry *e = &l->e[i];
    if (e->name[0]) {
        snprintf(key, cap, "loss.%s", e->name);
        return;
    }
    size_t repeat = 0;
    for (size_t k = 0; k < i; k++) repeat += !l->e[k].name[0] && l->e[k].type == e->type;
    if (repeat)
        snprintf(key, cap, "loss.%s.%zu", types[e->type]->info.name, repeat);
    else
        snprintf(key, cap, "loss.%s", types[e->type]->info.name);
}

kd_status kd_loss_plan_init(kd_loss_plan *p, const kd_loss_list *l, kd_err *err) {
    memset(p, 0, sizeof *p);
    if (l->n == 0 || l->n > KD_MAX_LOSSES)
        return kd_err_set(err, KD_EUSAGE, "distill.losses: %zu entries (1 to %d)", l->n,
                          KD_MAX_LOSSES);
    p->list = *l;
    for (size_t i = 0; i < l->n; i++) {
        const kd_loss_info *info = kd_loss_type_info(l->e[i].type);
        char base[KD_LOSS_KEY_MAX];
        KD_ASSERT(info);
        entry_key(l, i, base, sizeof base);
        p->first_term[i] = p->n_terms;
        for (size_t k = 0; k < info->n_terms; k++) {
            if (p->n_terms == KD_MAX_LOSS_TERMS)
                return kd_err_set(err, KD_EUSAGE, "distill.losses: more than %d named terms",
                                  KD_MAX_LOSS_TERMS);
            char *key = p->key[p->n_terms];
            if (info->n_terms > 1)
                snprintf(key, KD_LOSS_KEY_MAX, "%s.%s", base, info->terms[k]);
            else
                snprintf(key, KD_LOSS_KEY_MAX, "%s", base);
            for (size_t o = 0; o < p->n_terms; o++)
                if (!strcmp(p->key[o], key))
                    return kd_err_set(err, KD_EUSAGE, "distill.losses[%zu]: its term \"%s\" is "
                                      "also an earlier entry's (give the entries other names)",
                                      i, key);
            p->n_terms++;
        }
    }
    return KD_OK;
}

/* Whether entry e runs on this batch: a teacher entry without teacher logits is skipped (its
 * weight is 0, or the run has no teacher); every other input must be there. */
static int entry_active(const kd_loss_list *l, size_t i, const kd_loss_batch *b) {
    const kd_loss_entry *e = &l->e[i];
    unsigned needs = types[e->type]->info.needs;
    if (types[e->type]->feature) return b->feat && b->feat[i].vs;
    if ((needs & KD_LOSS_NEEDS_TEACHER) && !b->zt) return 0;
    if ((needs & KD_LOSS_NEEDS_LABELS) && !b->labels) {
        KD_ASSERT(e->weight == 0.0);  /* the caller refuses a label term without labels */
        return 0;
    }
    return 1;
}

void kd_loss_eval(const kd_loss_plan *p, const kd_loss_batch *b, kd_loss_terms *out,
                  float *dzs) {
    const kd_loss_list *l = &p->list;
    const size_t B = b->B, C = b->C;
    KD_ASSERT(b->zs && B > 0 && C > 0 && (!b->zt || (b->K >= 1 && b->K <= KD_MAX_TEACHERS)));
    memset(out, 0, sizeof *out);
    out->n_terms = p->n_terms;
    size_t act[KD_MAX_LOSSES], n_act = 0;
    double w[KD_MAX_LOSSES];
    int hard_entry = -1;
    /* Feature entries first: their values and gradients need nothing of the logits'. */
    double ftotal = -0.0;
    for (size_t e = 0; e < l->n; e++) {
        if (!entry_active(l, e, b)) continue;
        const kd_loss_ops *ops = types[l->e[e].type];
        w[e] = ops->scale ? l->e[e].weight * ops->scale(&l->e[e], b->epoch) : l->e[e].weight;
        if (ops->feature) {
            const double v = ops->feature(&l->e[e], &b->feat[e], B, w[e]);
            out->term[p->first_term[e]] = v;
            ftotal += w[e] * v;
            continue;
        }
        act[n_act++] = e;
        if (hard_entry < 0 && l->e[e].type == KD_LOSS_CE) hard_entry = (int)e;
    }
    /* A student trained from its labels alone keeps the arithmetic of kd_loss_ce (its
     * probabilities multiply by 1 / sum where the table divides), so those runs stay
     * bit-identical too. */
    if (n_act == 1 && hard_entry >= 0 && w[hard_entry] == 1.0) {
        out->hard = kd_loss_ce(b->zs, b->labels, B, C, dzs);
        out->term[p->first_term[hard_entry]] = out->total = out->hard;
        out->total += ftotal;
        return;
    }
    const double invB = 1.0 / (double)B;
    const int report_hard = hard_entry < 0 && b->labels;  /* the log's label term */
    double acc[KD_MAX_LOSS_TERMS] = {0}, hard = 0.0;
    kd_loss_state st[KD_MAX_LOSSES], hst;
    static const kd_loss_entry ce_entry = {.type = KD_LOSS_CE};
    for (size_t i = 0; i < B; i++) {
        kd_loss_row r = {b, i, b->zs + i * C, kd_row_max(b->zs + i * C, C)};
        for (size_t a = 0; a < n_act; a++)
            types[l->e[act[a]].type]->row(&l->e[act[a]], &r, &st[act[a]],
                                          acc + p->first_term[act[a]]);
        if (report_hard) kd_loss_ops_ce.row(&ce_entry, &r, &hst, &hard);
        if (!dzs) continue;
        float *di = dzs + i * C;  /* (C) */
        for (size_t j = 0; j < C; j++) {
            /* -0.0 + x is x for every x (0.0 + -0.0 would be 0.0): the first entry's gradient
             * passes exactly, as when it was the expression's first term. */
            double g = -0.0;
            for (size_t a = 0; a < n_act; a++)
                g += types[l->e[act[a]].type]->grad(&l->e[act[a]], &r, &st[act[a]], j, w[act[a]]);
            di[j] = (float)(g * invB);
        }
    }
    double total = -0.0;
    int soft_done = 0;
    for (size_t a = 0; a < n_act; a++) {
        const size_t e = act[a], t0 = p->first_term[e];
        const kd_loss_ops *ops = types[l->e[e].type];
        for (size_t k = 0; k < ops->info.n_terms; k++)
            out->term[t0 + k] = ops->finish(&l->e[e], k, acc[t0 + k], invB);
        double v = ops->value ? ops->value(&l->e[e], out->term + t0) : out->term[t0];
        total += w[e] * v;
        if (!soft_done && (ops->info.needs & KD_LOSS_NEEDS_TEACHER)) {
            out->soft = v;
            soft_done = 1;
        }
        if ((int)e == hard_entry) out->hard = v;
    }
    if (report_hard) out->hard = hard * invB;
    out->total = total + ftotal;
}

/* ---- Today's single loss, as the list it means ---- */

kd_loss_terms kd_loss_distill(const kd_distill_cfg *cfg, const float *zs, const float *zt,
                              const int32_t *labels, size_t B, size_t C, float *dzs,
                              float *scratch) {
    /* The scratch (3 * B * C floats in the contract) is not used: caching the exps as floats
     * would cost T * 6e-8 relative precision in the cancellation T * (p_s^T - p_t^T), so the
     * few B * C exps are recomputed in double instead (negligible next to the sgemms). */
    (void)scratch;
    return kd_loss_distill_mix(cfg, zs, &zt, NULL, 1, labels, B, C, dzs);
}

kd_loss_terms kd_loss_distill_mix(const kd_distill_cfg *cfg, const float *zs,
                                  const float *const *zt, const float *weights, size_t K,
                                  const int32_t *labels, size_t B, size_t C, float *dzs) {
    KD_ASSERT(cfg && zs && zt && B > 0 && C > 0 && K >= 1 && K <= KD_MAX_TEACHERS);
    KD_ASSERT(cfg->alpha >= 0.0f && cfg->alpha <= 1.0f);
    /* Unlabeled transfer sets are only legal for a pure soft loss; the caller enforces it. */
    KD_ASSERT(labels != NULL || cfg->alpha == 1.0f);
    KD_ASSERT(cfg->kind == KD_DISTILL_MSE || cfg->temperature > 0.0f);
    /* A mixture of probabilities has no logits to match: MSE takes one teacher. */
    KD_ASSERT(cfg->kind == KD_DISTILL_KL || K == 1);
    kd_loss_list l;
    kd_loss_plan p;
    kd_loss_terms t;
    kd_err err;
    kd_loss_list_from_distill(cfg, &l);
    kd_status st = kd_loss_plan_init(&p, &l, &err);
    KD_ASSERT(st == KD_OK);
    kd_loss_batch b = {zs, B, C, zt, weights, K, labels, 1.0, NULL};
    kd_loss_eval(&p, &b, &t, dzs);
    return t;
}
