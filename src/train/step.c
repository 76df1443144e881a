/* step.c - the training step as one unit (teacher forward, student forward, loss, backward,
 * optimizer update with its gradient-norm check) and the epoch that feeds it batches. The run
 * loop, both benchmarks and the unit tests call these same functions. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dataparallel.h"
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
    if (s->teacher && s->teacher->n_classes != t->n_classes)
        return kd_err_set(err, KD_EUSAGE, "trainer: teacher gives %zu classes, model %zu",
                          s->teacher->n_classes, t->n_classes);
    t->use_teacher = s->teacher && s->distill && s->distill->alpha > 0.0f;
    kd_status st = kd_model_reserve(m, s->batch_cap, err);
    if (!st && s->teacher) st = kd_model_reserve(s->teacher, s->batch_cap, err);
    if (st) return st;
    size_t BC;
    if (kd_mul_size(s->batch_cap, t->n_classes, &BC) || BC > SIZE_MAX / 3)
        return kd_err_set(err, KD_EIO, "out of memory for training buffers");
    t->dlogits = kd_alloc_floats(BC);
    t->scratch = kd_alloc_floats(3 * BC);
    if (!t->dlogits || !t->scratch)
        return kd_err_set(err, KD_EIO, "out of memory for training buffers");
    if (s->augment && kd_augment_active(s->augment)) {
        size_t n;
        if (s->sample_shape.rank != 3)
            return kd_err_set(err, KD_EUSAGE, "trainer: augmentation needs samples [C, H, W]");
        if (kd_mul_size(s->batch_cap, kd_shape_numel(&s->sample_shape), &n) ||
            !(t->aug_x = kd_alloc_floats(n)))
            return kd_err_set(err, KD_EIO, "out of memory for augmented batches");
    }
    return kd_dp_init(t, err);
}

void kd_trainer_free(kd_trainer *t) {
    if (!t) return;
    kd_free_aligned(t->dlogits);
    kd_free_aligned(t->scratch);
    kd_free_aligned(t->aug_x);
    t->dlogits = t->scratch = t->aug_x = NULL;
    kd_dp_free(t);
}

static const char *nan_or_inf(double v) { return isnan(v) ? "NaN" : "Inf"; }

kd_status kd_trainer_step(kd_trainer *t, const float *x, const int32_t *y, size_t n,
                          kd_step_result *r, kd_err *err) {
    const kd_trainer_setup *s = &t->s;
    kd_model *m = s->model;
    const size_t C = t->n_classes;
    kd_ctx sctx = {1, s->rng, NULL}, tctx = {0, NULL, NULL};
    /* Data-parallel (several ranks): x is this rank's shard, rows row0.. of `rows`; a
     * non-finite value is flagged in `bad` and told to every rank by the step's allreduce. */
    const int dp = t->dp.on;
    const size_t row0 = dp ? t->dp.shard.row0 : 0, rows = dp ? t->dp.shard.rows : n;
    int bad = 0;
    KD_ASSERT(n <= s->batch_cap);
    if (!y && (!t->use_teacher || s->distill->alpha < 1.0f))
        return kd_err_set(err, KD_EUSAGE, "trainer: the loss has a label term but the batch "
                          "has no labels");
    /* Teacher and student see the same augmented batch: the teacher's soft targets describe
     * the image the student is shown. The draws come from the run's RNG, so the checkpointed
     * RNG state makes a resumed run repeat them. */
    if (t->aug_x) {
        kd_augment_rows(s->augment, &s->sample_shape, x, t->aug_x, row0, n, rows, s->rng);
        x = t->aug_x;
    }
    kd_loss_terms lt = {0};
    const float *zs;
    if (t->use_teacher) {
        const float *zt = kd_model_forward(s->teacher, x, n, &tctx);
        if (!kd_all_finite(zt, n * C)) {
            if (!dp) return kd_err_set(err, KD_ENUMERIC, "teacher logits contain NaN/Inf");
            bad |= KD_DP_FLAG_TEACHER;
        }
        zs = kd_model_forward(m, x, n, &sctx);
        if (n) lt = kd_loss_distill(s->distill, zs, zt, y, n, C, t->dlogits, t->scratch);
    } else {
        zs = kd_model_forward(m, x, n, &sctx);
        if (n) lt.hard = kd_loss_ce(zs, y, n, C, t->dlogits);
        lt.total = lt.hard;
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
    kd_model_zero_grad(m);
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
    double gnorm = kd_optim_step(s->optim, m->params, m->grads, m->m, m->v, m->n_params, lr,
                                 t->step + 1);
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
    e->lr = kd_sched_lr(t->s.sched, t->step);
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
        st = kd_trainer_step(t, b.x, e->use_labels ? b.y : NULL, b.n, &r, err);
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
