/* step.c - the training step as one unit (teacher forward, student forward, loss, backward,
 * optimizer update with its gradient-norm check) and the epoch that feeds it batches. The run
 * loop, both benchmarks and the unit tests call these same functions. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dataparallel.h"
#include "features.h"
#include "kd_eval.h"
#include "kd_train.h"

kd_status kd_trainer_init(kd_trainer *t, const kd_trainer_setup *s, kd_err *err) {
    memset(t, 0, sizeof *t);
    t->s = *s;
    kd_model *m = s->model;
    if (!m->grads || !m->m || !m->v)
        return kd_err_set(err, KD_EUSAGE, "trainer: the model was built without gradients");
    if (s->batch_cap == 0) return kd_err_set(err, KD_EUSAGE, "trainer: batch size 0");
    t->n_classes = m->n_classes;
    kd_status st = kd_model_reserve(m, s->batch_cap, err);
    if (st) return st;
    t->ts = s->teachers;
    if (!t->ts && s->teacher) {
        if ((st = kd_teacher_set_online(&t->one, &s->teacher, NULL, 1, s->batch_cap, err)))
            return st;
        t->ts = &t->one;
    }
    if (t->ts && t->ts->n_classes != t->n_classes)
        return kd_err_set(err, KD_EUSAGE, "trainer: teacher gives %zu classes, model %zu",
                          t->ts->n_classes, t->n_classes);
    if (t->ts && t->ts->batch_cap < s->batch_cap)
        return kd_err_set(err, KD_EUSAGE, "trainer: teachers set up for batches of %zu, not %zu",
                          t->ts->batch_cap, s->batch_cap);
    /* Without a teacher the loss is the labels' cross-entropy alone; with one, the list (or the
     * list that distill's alpha / temperature / kind mean). */
    kd_loss_list list = {0};
    if (t->ts && s->losses)
        list = *s->losses;
    else if (t->ts && s->distill)
        kd_loss_list_from_distill(s->distill, &list);
    else
        list = (kd_loss_list){1, {{.type = KD_LOSS_CE, .weight = 1.0}}};
    if ((st = kd_loss_plan_init(&t->plan, &list, err))) return st;
    t->needs = kd_loss_list_needs(&list);
    t->use_teacher = t->ts && (t->needs & (KD_LOSS_NEEDS_TEACHER | KD_LOSS_NEEDS_FEATURES));
    /* Before the buffers below and the data-parallel sums: adapters add parameters. */
    if ((st = kd_features_init(t, err))) return st;
    t->epoch = 1.0;
    size_t BC;
    if (kd_mul_size(s->batch_cap, t->n_classes, &BC))
        return kd_err_set(err, KD_EIO, "out of memory for training buffers");
    t->dlogits = kd_alloc_floats(BC);
    if (!t->dlogits)
        return kd_err_set(err, KD_EIO, "out of memory for training buffers");
    if (s->augment && kd_augment_active(s->augment)) {
        size_t n;
        if (s->sample_shape.rank != 3)
            return kd_err_set(err, KD_EUSAGE, "trainer: augmentation needs samples [C, H, W]");
        if (kd_mul_size(s->batch_cap, kd_shape_numel(&s->sample_shape), &n) ||
            !(t->aug_x = kd_alloc_floats(n)))
            return kd_err_set(err, KD_EIO, "out of memory for augmented batches");
    }
    if (t->ts && t->ts->views > 1 && !t->aug_x)
        return kd_err_set(err, KD_EUSAGE, "trainer: a cache of %zu views needs augmentation",
                          t->ts->views);
    if (t->ts && t->ts->views > 1 && !(t->views = malloc(s->batch_cap * sizeof *t->views)))
        return kd_err_set(err, KD_EIO, "out of memory for training buffers");
    return kd_dp_init(t, err);
}

void kd_trainer_free(kd_trainer *t) {
    if (!t) return;
    kd_free_aligned(t->dlogits);
    kd_free_aligned(t->aug_x);
    t->dlogits = t->aug_x = NULL;
    free(t->views);
    t->views = NULL;
    kd_teacher_set_free(&t->one);
    t->ts = NULL;
    kd_features_free(t);
    kd_dp_free(t);
}

static const char *nan_or_inf(double v) { return isnan(v) ? "NaN" : "Inf"; }

/* The batch as the student sees it: a view per sample drawn from the run's RNG when the cache
 * holds views (the cached targets are those of that view), else the run's augmentation draws.
 * x holds rows [row0, row0 + n) of a global batch of `rows` (data-parallel shards; one process:
 * 0, n, n): the draws of every row are taken, so the RNG stays the same on every rank. */
static const float *augment(kd_trainer *t, const float *x, const size_t *idx, size_t row0,
                            size_t n, size_t rows) {
    const kd_trainer_setup *s = &t->s;
    if (!t->aug_x) return x;
    if (!t->views) {
        kd_augment_rows(s->augment, &s->sample_shape, x, t->aug_x, row0, n, rows, s->rng);
        return t->aug_x;
    }
    const size_t D = kd_shape_numel(&s->sample_shape);
    for (size_t i = 0; i < rows; i++) {
        uint32_t v = (uint32_t)kd_rng_below(s->rng, t->ts->views);
        if (i < row0 || i - row0 >= n) continue;
        size_t k = i - row0;
        t->views[k] = v;
        kd_augment_view(s->augment, &s->sample_shape, x + k * D, t->aug_x + k * D,
                        t->ts->view_seed, idx[k], v);
    }
    return t->aug_x;
}

kd_status kd_trainer_step(kd_trainer *t, const float *x, const int32_t *y, const size_t *idx,
                          size_t n, kd_step_result *r, kd_err *err) {
    const kd_trainer_setup *s = &t->s;
    kd_model *m = s->model;
    const size_t C = t->n_classes;
    kd_ctx sctx = {1, s->rng, NULL, 0, 0, 0};
    /* Data-parallel (several ranks): x is this rank's shard, rows row0.. of `rows`; a
     * non-finite value is flagged in `bad` and told to every rank by the step's allreduce. */
    const int dp = t->dp.on;
    const size_t row0 = dp ? t->dp.shard.row0 : 0, rows = dp ? t->dp.shard.rows : n;
    int bad = 0;
    KD_ASSERT(n <= s->batch_cap);
    if (!y && (t->needs & KD_LOSS_NEEDS_LABELS))
        return kd_err_set(err, KD_EUSAGE, "trainer: the loss has a label term but the batch "
                          "has no labels");
    if (t->ts && t->ts->cache && !idx)
        return kd_err_set(err, KD_EUSAGE, "trainer: cached targets need the samples' indices");
    /* Teacher and student see the same augmented batch: the teacher's soft targets describe
     * the image the student is shown. The draws come from the run's RNG, so the checkpointed
     * RNG state makes a resumed run repeat them. */
    x = augment(t, x, idx, row0, n, rows);
    kd_loss_terms lt = {0};
    lt.n_terms = t->plan.n_terms;
    if (t->use_teacher) {
        kd_status st = kd_teacher_logits(t->ts, x, idx, t->views, n, t->zt, err);
        if (st && !(dp && st == KD_ENUMERIC)) return st;
        if (st) bad |= KD_DP_FLAG_TEACHER;
    }
    const float *zs = kd_model_forward(m, x, n, &sctx);
    /* Zeroed before the loss: a feature loss adds its adapter's gradient there. */
    if (!t->grads_clean) kd_model_zero_grad(m);
    t->grads_clean = 0;
    if (n) {
        /* A shard's feature gradients are scaled as its dlogits are (kd_dp_scale_dlogits). */
        const int feat = t->n_feat && t->use_teacher;  /* weight 0 alone: the teacher idles */
        if (feat) kd_features_bind(t, dp ? (double)n / (double)t->dp.shard.rows : 1.0);
        kd_loss_batch lb = {zs, n, C, t->use_teacher ? t->zt : NULL,
                            t->use_teacher ? t->ts->weight : NULL, t->use_teacher ? t->ts->n : 0,
                            y, t->epoch, feat ? t->feat : NULL};
        kd_loss_eval(&t->plan, &lb, &lt, t->dlogits);
    }
    if (!isfinite(lt.total)) {
        if (!dp) return kd_err_set(err, KD_ENUMERIC, "loss is %s", nan_or_inf(lt.total));
        bad |= KD_DP_FLAG_LOSS;
    }
    size_t correct = 0, labelled = 0;
    for (size_t i = 0; y && i < n; i++) {
        if (y[i] < 0) continue;
        labelled++;
        correct += kd_argmax(zs + i * C, C) == (size_t)y[i];
    }
    if (dp) kd_dp_scale_dlogits(t, n);
    kd_model_backward(m, x, t->dlogits, n, &sctx);
    float lr = kd_sched_lr(s->sched, t->step);
    size_t n_all = n;  /* samples of the step over every rank */
    if (r) r->skipped = r->stop = 0;
    if (dp) {
        kd_status st = kd_dp_reduce(t, n, bad, &lt, &correct, &labelled, &n_all, r, err);
        if (st) return st;
    }
    if (r) {
        r->n = n_all;
        r->loss = lt;
        r->correct = correct;
        r->labelled = labelled;
        r->lr = lr;
        r->grad_norm = 0.0;
    }
    /* Every sample of a data-parallel global batch was left out (data.skip_bad): no update. */
    if (n_all == 0 && dp) return KD_OK;
    double gnorm = kd_optim_step_and_zero(s->optim, m->params, m->grads, m->m, m->v,
                                          m->n_params, lr, t->step + 1);
    t->grads_clean = 1;
    if (!isfinite(gnorm))
        return kd_err_set(err, KD_ENUMERIC, "gradient norm is %s", nan_or_inf(gnorm));
    t->step++;
    if (r) r->grad_norm = gnorm;
    return KD_OK;
}

kd_status kd_trainer_epoch(kd_trainer *t, kd_epoch_pass *e, kd_err *err) {
    const size_t B = t->s.batch_cap, skip = e->batch * B;
    kd_loader *ld = NULL;
    kd_epoch_sums *sums = &e->sums;
    const int dp = t->dp.on;  /* data-parallel: this rank's shard of each global batch */
    e->stopped = 0;
    /* The terms are summed by position: the sums must be the plan's (or none). */
    KD_ASSERT(sums->n_terms == 0 || (sums->n_terms == t->plan.n_terms && sums->term));
    e->lr = kd_sched_lr(t->s.sched, t->step);
    t->epoch = (double)e->epoch;
    kd_status st = dp ? kd_dp_loader_open(&ld, t, e, skip, err)
                      : kd_loader_open(&ld, e->ds, e->order + skip, e->n - skip, B, err);
    while (!st) {
        kd_batch b;
        kd_step_result r;
        double t0 = kd_now();
        st = kd_loader_next(ld, &b, err);
        if (st) break;
        if (dp) {
            /* Every rank steps through every global batch, even with an empty shard; the
             * step's allreduce counts the samples left out on every rank. */
            if (b.slices == 0) break;
            kd_dp_begin_step(t, e, &b);
        } else {
            /* Undecodable samples (data.skip_bad) are left out; a slice that lost all of them
             * still counts as a batch of the epoch, so positions match the order on resume. */
            sums->skipped += (double)b.n_skipped;
            if (b.n == 0) {
                e->batch += b.slices;
                break;
            }
        }
        st = kd_trainer_step(t, b.x, e->use_labels ? b.y : NULL, b.idx, b.n, &r, err);
        if (st) break;
        sums->skipped += (double)r.skipped;
        e->lr = r.lr;
        e->batch += b.slices;
        /* Counts are whole numbers, exact in a double: adding a batch's count equals adding
         * its samples one by one. */
        sums->labelled += (double)r.labelled;
        sums->correct += (double)r.correct;
        sums->loss += r.loss.total * (double)r.n;
        sums->soft += r.loss.soft * (double)r.n;
        sums->hard += r.loss.hard * (double)r.n;
        for (size_t k = 0; k < sums->n_terms; k++) sums->term[k] += r.loss.term[k] * (double)r.n;
        sums->seen += (double)r.n;
        sums->train_seconds += kd_now() - t0;
        if (e->progress) {
            kd_train_event ev = {0};
            ev.kind = KD_EV_BATCH;
            ev.epoch = e->epoch;
            ev.n_epochs = e->n_epochs;
            ev.batch = e->batch;
            ev.n_batches = e->n_batches;
            ev.step = t->step;
            ev.running_loss = sums->loss / sums->seen;
            ev.samples_per_s = sums->train_seconds > 0 ? sums->seen / sums->train_seconds : 0;
            ev.epoch_seconds = kd_now() - e->t_start;
            e->progress(&ev, e->user);
        }
        /* SIGINT: finish this step, then stop (at the epoch's end, after its checkpoint).
         * Data-parallel: when any rank was asked to, as the step's allreduce tells them all. */
        if ((dp ? r.stop : e->stop && *e->stop) && e->batch < e->n_batches) {
            e->stopped = 1;
            break;
        }
    }
    kd_loader_close(ld);
    return st;
}
