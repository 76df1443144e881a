/* features.c - the feature losses of a trainer (hint, at: issue 27): the inner values they read,
 * observed in the student and in the teacher member (kd_model_observe keeps each whole-batch
 * value and, in the student, its gradient alive), and the hint adapters, trainable tensors of no
 * layer in the student's one parameter buffer (kd_model_add_param) so the optimizer, checkpoints
 * and the data-parallel sums carry them with the rest. The loss maths is src/loss (hint.c,
 * at.c); the step adds each entry's gradient at the student's value before backward. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "features.h"
#include "kd_suggest.h"

/* "distill.losses[i].field: the student has no layer output "x" (did you mean "y"?)". */
static kd_status observe(kd_model *m, const char *who, const char *value, const char *what,
                         size_t *id, kd_shape *shape, kd_err *err) {
    kd_status st = kd_model_observe(m, value, id, shape, err);
    if (st != KD_EUSAGE || strstr(err->msg, "internal")) return st;
    const char **names = calloc(m->n_layers ? m->n_layers : 1, sizeof *names);
    size_t n = 0;
    for (size_t i = 0; names && i < m->n_layers; i++)
        if (kd_model_layer_name(m, i)) names[n++] = kd_model_layer_name(m, i);
    const char *near = names ? kd_suggest(value, names, n) : NULL;
    char hint[KD_LOSS_VALUE_MAX + 32] = "";
    if (near) snprintf(hint, sizeof hint, " (did you mean \"%s\"?)", near);
    st = kd_err_set(err, KD_EUSAGE, "%s: the %s has no layer output \"%.100s\"%s: give a "
                    "layer's name or an unnamed layer's index (0 to %zu)", what, who, value,
                    hint, m->n_layers - 1);
    free(names);
    return st;
}

static int same_shape(const kd_shape *a, const kd_shape *b) {
    if (a->rank != b->rank) return 0;
    for (int k = 0; k < a->rank; k++)
        if (a->d[k] != b->d[k]) return 0;
    return 1;
}

/* Adds the hint adapter of entry i, named after its term key ("loss.hint.1" ->
 * "adapters.hint.1.weight"), initialised as the model's layers are: He or Xavier weights on the
 * fan-in Cs, bias 0. The draws come from a copy of the run's RNG mixed with the entry: the
 * run's own stream is left as it was, so a resumed run (whose adapters are then loaded) draws
 * what the original did. */
static kd_status add_adapter(kd_trainer *t, size_t i, const kd_feature_dims *d, int spatial,
                             kd_err *err) {
    kd_model *m = t->s.model;
    kd_feature_slot *f = &t->fslot[i];
    char wname[KD_TENSOR_NAME_MAX], bname[KD_TENSOR_NAME_MAX];
    const char *key = t->plan.key[t->plan.first_term[i]] + strlen("loss.");
    snprintf(wname, sizeof wname, "adapters.%s.weight", key);
    snprintf(bname, sizeof bname, "adapters.%s.bias", key);
    kd_shape ws = spatial ? (kd_shape){4, {d->Ct, d->Cs, 1, 1}} : (kd_shape){2, {d->Ct, d->Cs}};
    kd_shape bs = {1, {d->Ct}};
    const kd_tensor *tw = kd_model_tensor(m, wname), *tb = kd_model_tensor(m, bname);
    /* A model trained before (a second trainer on it) keeps its adapter as it is. */
    if (tw && tb && same_shape(&tw->shape, &ws) && same_shape(&tb->shape, &bs)) {
        f->aw = tw->offset;
        f->ab = tb->offset;
        return KD_OK;
    }
    kd_status st = kd_model_add_param(m, wname, &ws, err);
    if (!st) st = kd_model_add_param(m, bname, &bs, err);
    if (st) return st;
    f->aw = kd_model_tensor(m, wname)->offset;
    f->ab = kd_model_tensor(m, bname)->offset;
    kd_rng r;
    if (t->s.rng) {
        r = *t->s.rng;
        kd_rng_seed(&r, kd_rng_u64(&r) ^ (0x9E3779B97F4A7C15ull * (uint64_t)(i + 1)));
    } else {
        kd_rng_seed(&r, 0x5EEDull + i);
    }
    float *w = m->params + f->aw;
    const size_t n = d->Ct * d->Cs;
    if (t->s.init == KD_INIT_XAVIER) {
        const double a = sqrt(6.0 / (double)(d->Cs + d->Ct));
        for (size_t k = 0; k < n; k++) w[k] = (float)(a * (2.0 * kd_rng_uniform(&r) - 1.0));
    } else {
        const double sd = sqrt(2.0 / (double)d->Cs);
        for (size_t k = 0; k < n; k++) w[k] = (float)(sd * kd_rng_normal(&r));
    }
    return KD_OK;
}

static kd_status init_entry(kd_trainer *t, size_t i, size_t *scratch, size_t *adapted,
                            kd_err *err) {
    const kd_loss_entry *e = &t->plan.list.e[i];
    const kd_loss_info *info = kd_loss_type_info(e->type);
    kd_feature_slot *f = &t->fslot[i];
    char what[64], field[80];
    kd_shape ss, ts;
    kd_feature_dims d;
    snprintf(what, sizeof what, "distill.losses[%zu]", i);
    if (!t->ts || t->ts->cache)
        return kd_err_set(err, KD_EUSAGE, "%s.type: \"%s\" reads the teacher's inner values: "
                          "feature losses need the teacher run online%s", what, info->name,
                          t->ts ? ", not a cache" : "");
    if (e->member >= t->ts->n)
        return kd_err_set(err, KD_EUSAGE, "%s.member: %zu is out of range (0 to %zu)", what,
                          e->member, t->ts->n - 1);
    f->teacher = t->ts->model[e->member];
    snprintf(field, sizeof field, "%s.student", what);
    kd_status st = observe(t->s.model, "student", e->student, field, &f->sid, &ss, err);
    snprintf(field, sizeof field, "%s.teacher", what);
    if (!st) st = observe(f->teacher, "teacher", e->teacher, field, &f->tid, &ts, err);
    if (!st) st = kd_loss_feature_shapes(what, e->type == KD_LOSS_AT, &ss, &ts, &d, err);
    if (!st && (info->needs & KD_LOSS_NEEDS_ADAPTER)) st = add_adapter(t, i, &d, ss.rank == 3, err);
    if (st) return st;
    t->feat[i].d = d;
    if (2 * d.P > *scratch) *scratch = 2 * d.P;
    if ((info->needs & KD_LOSS_NEEDS_ADAPTER) && d.Ct * d.P > *adapted) *adapted = d.Ct * d.P;
    f->on = 1;
    t->n_feat++;
    return KD_OK;
}

kd_status kd_features_init(kd_trainer *t, kd_err *err) {
    size_t scratch = 0, adapted = 0;  /* per sample: at's maps, a hint adapter's output */
    for (size_t i = 0; i < t->plan.list.n; i++) {
        if (!(kd_loss_type_info(t->plan.list.e[i].type)->needs & KD_LOSS_NEEDS_FEATURES)) continue;
        kd_status st = init_entry(t, i, &scratch, &adapted, err);
        if (st) return st;
    }
    size_t na = 0;
    if (t->n_feat && (!(t->fscratch = malloc(scratch * sizeof *t->fscratch)) ||
                      kd_mul_size(t->s.batch_cap, adapted, &na) ||
                      (na && !(t->fadapted = kd_alloc_floats(na)))))
        return kd_err_set(err, KD_EIO, "out of memory for the feature losses");
    return KD_OK;
}

void kd_features_bind(kd_trainer *t, double gscale) {
    kd_model *m = t->s.model;
    for (size_t i = 0; i < t->plan.list.n; i++) {
        const kd_feature_slot *f = &t->fslot[i];
        kd_loss_feature *x = &t->feat[i];
        if (!f->on) continue;
        x->vs = kd_model_value(m, f->sid);
        x->dvs = kd_model_value_grad(m, f->sid);
        x->vt = kd_model_value(f->teacher, f->tid);
        const int adapter = kd_loss_type_info(t->plan.list.e[i].type)->needs &
                            KD_LOSS_NEEDS_ADAPTER;
        x->aw = adapter ? m->params + f->aw : NULL;
        x->ab = adapter ? m->params + f->ab : NULL;
        x->daw = adapter ? m->grads + f->aw : NULL;
        x->dab = adapter ? m->grads + f->ab : NULL;
        x->gscale = gscale;
        x->scratch = t->fscratch;
        x->adapted = t->fadapted;
    }
}

void kd_features_free(kd_trainer *t) {
    free(t->fscratch);
    kd_free_aligned(t->fadapted);
    t->fscratch = NULL;
    t->fadapted = NULL;
    t->n_feat = 0;
}
