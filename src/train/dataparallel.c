/* dataparallel.c - data-parallel training over the ranks of kd_dist.h (see dataparallel.h):
 * shards of each global batch, the step's one packed allreduce, shared evaluation counts, the
 * agreed stop flag and the checksums that prove the ranks still hold the same model. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dataparallel.h"

static void sum_over_ranks(double *v, size_t n) { kd_dist_sum(v, n); }

kd_status kd_dp_init(kd_trainer *t, kd_err *err) {
    memset(&t->dp, 0, sizeof t->dp);
    if (kd_dist_size() == 1) return KD_OK;
    t->dp.on = 1;
    t->dp.shard.sum = sum_over_ranks;
    kd_model_set_shard(t->s.model, &t->dp.shard);
    return kd_dist_pack_init(&t->dp.pack, t->s.model->n_params, KD_DP_N_EXTRA, err);
}

void kd_dp_free(kd_trainer *t) { kd_dist_pack_free(&t->dp.pack); }

kd_status kd_dp_loader_open(kd_loader **ld, const kd_trainer *t, const kd_epoch_pass *e,
                            size_t skip, kd_err *err) {
    return kd_loader_open_shard(ld, e->ds, e->order + skip, e->n - skip, t->s.batch_cap,
                                (size_t)kd_dist_rank(), (size_t)kd_dist_size(), err);
}

void kd_dp_begin_step(kd_trainer *t, const kd_epoch_pass *e, const kd_batch *b) {
    const size_t B = t->s.batch_cap, first = e->batch * B;
    size_t lo, hi;
    /* Global batch e->batch holds order[first .. first + rows); the loader cut the same shard. */
    t->dp.shard.rows = e->n - first < B ? e->n - first : B;
    kd_dist_shard(t->dp.shard.rows, (size_t)kd_dist_rank(), (size_t)kd_dist_size(), &lo, &hi);
    KD_ASSERT(b->n <= hi - lo);
    t->dp.shard.row0 = lo;
    t->dp.skipped = b->n_skipped;
    t->dp.stop = e->stop && *e->stop;
}

void kd_dp_scale_dlogits(kd_trainer *t, size_t n) {
    if (n == 0) return;
    const float k = (float)((double)n / (double)t->dp.shard.rows);
    const size_t m = n * t->n_classes;
    for (size_t i = 0; i < m; i++) t->dlogits[i] *= k;
}

kd_status kd_dp_reduce(kd_trainer *t, size_t n, int bad, kd_loss_terms *lt, size_t *correct,
                       size_t *labelled, size_t *n_step, kd_step_result *r, kd_err *err) {
    kd_model *m = t->s.model;
    double x[KD_DP_N_EXTRA] = {0};
    x[KD_DP_N] = (double)n;
    x[KD_DP_SKIPPED] = (double)t->dp.skipped;
    x[KD_DP_CORRECT] = (double)*correct;
    x[KD_DP_LABELLED] = (double)*labelled;
    x[KD_DP_LOSS] = lt->total * (double)n;
    x[KD_DP_SOFT] = lt->soft * (double)n;
    x[KD_DP_HARD] = lt->hard * (double)n;
    x[KD_DP_STOP] = t->dp.stop != 0;
    x[KD_DP_BAD_TEACHER] = (bad & KD_DP_FLAG_TEACHER) != 0;
    x[KD_DP_BAD_LOSS] = (bad & KD_DP_FLAG_LOSS) != 0;
    for (size_t k = 0; k < lt->n_terms; k++) x[KD_DP_TERMS + k] = lt->term[k] * (double)n;
    kd_dist_pack_reduce(&t->dp.pack, m->grads, x);
    const double n_all = x[KD_DP_N];
    *n_step = (size_t)n_all;
    if (r) {
        r->skipped = (size_t)x[KD_DP_SKIPPED];
        r->stop = x[KD_DP_STOP] > 0;
    }
    /* Every rank has the same sums, so every rank takes the same branch. */
    if (x[KD_DP_BAD_TEACHER] > 0)
        return kd_err_set(err, KD_ENUMERIC, "teacher logits contain NaN/Inf (on %.0f of %d ranks)",
                          x[KD_DP_BAD_TEACHER], kd_dist_size());
    if (x[KD_DP_BAD_LOSS] > 0 || !isfinite(x[KD_DP_LOSS]))
        return kd_err_set(err, KD_ENUMERIC, "loss is %s (on %.0f of %d ranks)",
                          isinf(x[KD_DP_LOSS]) ? "Inf" : "NaN", x[KD_DP_BAD_LOSS], kd_dist_size());
    *correct = (size_t)x[KD_DP_CORRECT];
    *labelled = (size_t)x[KD_DP_LABELLED];
    if (n_all > 0) {
        lt->total = x[KD_DP_LOSS] / n_all;
        lt->soft = x[KD_DP_SOFT] / n_all;
        lt->hard = x[KD_DP_HARD] / n_all;
        for (size_t k = 0; k < lt->n_terms; k++) lt->term[k] = x[KD_DP_TERMS + k] / n_all;
    }
    /* The ranks scaled their losses by 1 / rows (kd_dp_scale_dlogits); samples left out
     * (data.skip_bad) make the true count n_all smaller. */
    const double rows = (double)t->dp.shard.rows;
    kd_dist_pack_unpack(&t->dp.pack, m->grads, n_all > 0 ? (float)(rows / n_all) : 0.0f);
    return KD_OK;
}

kd_status kd_dp_share(const size_t *idx, size_t n, const size_t **own, size_t *n_own,
                      size_t **alloc, kd_err *err) {
    size_t lo, hi;
    *alloc = NULL;
    kd_dist_shard(n, (size_t)kd_dist_rank(), (size_t)kd_dist_size(), &lo, &hi);
    *n_own = hi - lo;
    if (idx) {
        *own = idx + lo;
        return KD_OK;
    }
    if (!(*alloc = malloc((hi > lo ? hi - lo : 1) * sizeof **alloc)))
        return kd_err_set(err, KD_EIO, "out of memory for %zu indices", hi - lo);
    for (size_t i = lo; i < hi; i++) (*alloc)[i - lo] = i;
    *own = *alloc;
    return KD_OK;
}

int kd_dp_stop(const volatile sig_atomic_t *stop) { return kd_dist_any(stop && *stop); }

/* Everything that must be equal on every rank between two steps: weights, batch-norm buffers
 * and counters, optimizer moments, the RNG and the step count. */
static uint64_t state_checksum(const kd_run *t) {
    const kd_model *m = &t->model;
    uint64_t h = KD_DIST_HASH_INIT;
    h = kd_dist_hash(h, m->params, m->n_params * sizeof *m->params);
    h = kd_dist_hash(h, m->buffers, m->n_buffers * sizeof *m->buffers);
    if (m->m) h = kd_dist_hash(h, m->m, m->n_params * sizeof *m->m);
    if (m->v) h = kd_dist_hash(h, m->v, m->n_params * sizeof *m->v);
    for (size_t i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].kind == KD_TENSOR_COUNTER)
            h = kd_dist_hash(h, m->tensors[i].counter, sizeof *m->tensors[i].counter);
    h = kd_dist_hash(h, &t->rng, sizeof t->rng);
    return kd_dist_hash(h, &t->trainer.step, sizeof t->trainer.step);
}

static kd_status disagree(const char *what, uint64_t lo, uint64_t hi, kd_err *err) {
    return kd_err_set(err, KD_EIO, "ranks disagree: %s differs between ranks (checksums "
                      "%016llx .. %016llx); every rank must run the same build on the same "
                      "config, data and checkpoint", what, (unsigned long long)lo,
                      (unsigned long long)hi);
}

kd_status kd_dp_check(kd_run *t, size_t epoch, kd_err *err) {
    const int K = kd_dist_size();
    uint64_t lo, hi;
    if (K == 1) return KD_OK;
    if (epoch == 0) {
        kd_run_emit_msg(t, KD_EV_NOTE, "data-parallel: %d ranks (%s); each global batch of %zu "
                        "samples is split into %d shards of %zu to %zu", K, kd_dist_backend(),
                        t->B, K, t->B / (size_t)K, (t->B + (size_t)K - 1) / (size_t)K);
        char *json = kd_config_to_json(t->cfg);
        if (!json) return kd_err_set(err, KD_EIO, "out of memory");
        uint64_t h = kd_dist_hash(KD_DIST_HASH_INIT, json, strlen(json));
        free(json);
        if (!kd_dist_same(h, &lo, &hi)) return disagree("the resolved config", lo, hi, err);
        size_t sizes[3] = {t->n_train, t->n_val, t->n_test};
        if (!kd_dist_same(kd_dist_hash(KD_DIST_HASH_INIT, sizes, sizeof sizes), &lo, &hi))
            return disagree("the number of training, validation or test samples", lo, hi, err);
    }
    if (!kd_dist_same(state_checksum(t), &lo, &hi)) {
        char what[96];
        if (epoch == 0)
            snprintf(what, sizeof what, "the starting state (weights, moments, RNG, step)");
        else
            snprintf(what, sizeof what, "the model state after epoch %zu", epoch);
        return disagree(what, lo, hi, err);
    }
    return KD_OK;
}

void kd_dp_report(kd_run *t) {
    if (kd_dist_size() == 1) return;
    const double comm = kd_dist_comm_seconds();
    kd_run_emit_msg(t, KD_EV_NOTE, "data-parallel: rank 0 spent %.2f s in %llu collectives "
                    "(%.1f%% of its %.2f s in training steps)", comm,
                    (unsigned long long)kd_dist_comm_calls(),
                    t->total_train_s > 0 ? 100.0 * comm / t->total_train_s : 0.0,
                    t->total_train_s);
}
