/* trainer.c - the run loop: sets a run up (setup.c), resumes it from one checkpoint read
 * (runfolder.c), runs each epoch through the trainer's step (step.c), then validates, keeps the
 * best and last checkpoints and metrics.jsonl, and finally tests. Knows nothing about the
 * command line; reports progress through a callback and errors through kd_err. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kd_eval.h"
#include "kd_gemm.h"
#include "dataparallel.h"
#include "kd_threads.h"
#include "train_impl.h"

const char *kd_train_loss_formula(const kd_config *cfg, char *buf, size_t cap) {
    if (!cfg->has_teacher) {
        snprintf(buf, cap, "loss = CE(y, p_s)");
        return buf;
    }
    return kd_loss_list_formula(&cfg->losses, buf, cap);
}

/* kd_train_accuracy's callback: counts top-1 hits among the labelled samples. */
typedef struct {
    size_t C, hits, counted;
} hit_count;

static kd_status count_hits(void *user, size_t done, const float *z, const int32_t *y, size_t n,
                            kd_err *err) {
    hit_count *h = user;
    (void)done;
    (void)err;
    for (size_t i = 0; i < n; i++) {
        if (!y || y[i] < 0) continue;
        h->counted++;
        h->hits += kd_argmax(z + i * h->C, h->C) == (size_t)y[i];
    }
    return KD_OK;
}

/* kd_train_accuracy; with `shared` set, data-parallel ranks each count their share of the
 * samples and the counts are summed (every rank must call it), else this rank counts them all. */
static kd_status accuracy(kd_model *m, kd_dataset *ds, const size_t *idx, size_t n, int shared,
                          double *acc, kd_err *err) {
    hit_count h = {m->n_classes, 0, 0};
    *acc = NAN;
    if (n == 0) return KD_OK;
    KD_ASSERT(m->batch_cap > 0);
    const size_t *own = idx;
    size_t n_own = n, *alloc = NULL;
    kd_status st = shared ? kd_dp_share(idx, n, &own, &n_own, &alloc, err) : KD_OK;
    /* Undecodable samples (data.skip_bad) are left out of the accuracy, hits and misses. */
    size_t skipped = 0;
    if (!st)
        st = kd_eval_forward(m, ds, own, n_own, m->batch_cap, count_hits, &h, NULL, &skipped, err);
    free(alloc);
    double counts[2] = {(double)h.hits, (double)h.counted};
    if (st == KD_OK && shared) kd_dist_sum(counts, 2);
    if (st == KD_OK && counts[1] > 0) *acc = counts[0] / counts[1];
    return st;
}

kd_status kd_train_accuracy(kd_model *m, kd_dataset *ds, const size_t *idx, size_t n,
                            double *acc, kd_err *err) {
    return accuracy(m, ds, idx, n, 1, acc, err);
}

static kd_status numeric_failure(kd_run *t, const char *what, size_t epoch, uint64_t step,
                                 size_t batch, kd_err *err) {
    if (t->last_good)
        return kd_err_set(err, KD_ENUMERIC,
                          "numeric failure: %s at epoch %zu step %llu (batch %zu); last good "
                          "checkpoint kept: %s",
                          what, epoch, (unsigned long long)step, batch, t->last_good);
    return kd_err_set(err, KD_ENUMERIC,
                      "numeric failure: %s at epoch %zu step %llu (batch %zu); no checkpoint "
                      "was written (try a smaller optimizer.lr)",
                      what, epoch, (unsigned long long)step, batch);
}

/* Paths, threads, seed, data, models and schedule: everything the run needs before a resume. */
static kd_status run_setup(kd_run *t, kd_err *err) {
    const kd_config *cfg = t->cfg;
    const kd_train_opts *opts = t->opts;
    const char *out = opts->out_dir && *opts->out_dir ? opts->out_dir : cfg->out_dir;
    kd_status st = kd_runfolder_init(&t->rf, out, err);
    if (st) return st;
    memcpy(t->res->out_dir, t->rf.out_dir, sizeof t->res->out_dir);
    /* Checked before the data loads, so a refusal is immediate; rank 0 owns the folder. */
    if (!opts->resume && kd_dist_rank() == 0) {
        char moved[KD_PATH_MAX + 16];
        if ((st = kd_runfolder_claim(out, opts->overwrite, moved, sizeof moved, err))) return st;
        if (moved[0])
            kd_run_emit_msg(t, KD_EV_WARNING, "note: --overwrite: moved the previous run in %s "
                            "to %s", out, moved);
    }

    /* Always set, 0 included: a default run and one asking for every core must take the same
     * paths (the one-thread rule for small products reads the count in force). */
    t->res->threads = kd_threads_set(cfg->threads);
    kd_run_emit_msg(t, KD_EV_NOTE, "threads: %d", t->res->threads);
    if (!kd_blas_is_openmp())
        kd_run_emit_msg(t, KD_EV_WARNING, "WARNING: the OpenBLAS loaded is not its OpenMP build; "
                        "its threads will compete with distill's (see README, Performance)");
    kd_rng_seed(&t->rng, cfg->seed);
    if ((st = kd_run_open_data(t, err)) || (st = kd_run_build_model(t, err))) return st;
    if (cfg->has_teacher && (st = kd_run_build_teachers(t, err))) return st;
    t->res->n_params = t->model.n_params;
    for (size_t i = 0; i < t->n_teachers; i++) t->res->teacher_params += t->teachers[i].n_params;
    t->rf.class_names = t->class_names;
    t->rf.n_class_names = t->n_class_names;
    t->rf.pp = t->pp;
    t->rf.logits_hash = t->logits_hash[0] ? t->logits_hash : NULL;

    t->order = malloc((t->n_train ? t->n_train : 1) * sizeof *t->order);
    if (!t->order) return kd_err_set(err, KD_EIO, "out of memory for training buffers");
    t->n_batches = (t->n_train + t->B - 1) / t->B;
    if (t->n_train == 0)
        return kd_err_set(err, KD_EUSAGE, "no training samples left after holding out validation");
    t->sched = kd_config_sched(cfg, t->n_batches);
    return KD_OK;
}

/* Resume: weights, moments, RNG, order, position and partial sums from the checkpoint. */
static kd_status run_resume(kd_run *t, kd_err *err) {
    const char *path = t->opts->resume;
    kd_resume r;
    char *arch = kd_model_arch_json(&t->model);
    if (!arch) return kd_err_set(err, KD_EIO, "out of memory");
    kd_status st = kd_resume_load(path, arch, t->B, t->n_train, kd_dataset_info(t->train_ds)->n,
                                  t->n_batches, &r, err);
    free(arch);
    if (st) return st;
    /* Targets from teacher.logits: only the file the run was trained from continues it. */
    if (t->logits_hash[0] && strcmp(r.logits_hash, t->logits_hash) != 0) {
        if (r.logits_hash[0])
            st = kd_err_set(err, KD_EINPUT, "resume %s: teacher.logits %s has changed since the "
                            "run started (it recorded %s, the file now has %s): resume with the "
                            "file it was trained from, or start a new run with --out DIR", path,
                            t->cfg->logits_path, r.logits_hash, t->logits_hash);
        else
            st = kd_err_set(err, KD_EINPUT, "resume %s: the checkpoint was not trained from "
                            "teacher.logits (it records no logits file), so it cannot continue "
                            "from %s: start a new run with --out DIR", path,
                            t->cfg->logits_path);
        kd_resume_free(&r);
        return st;
    }
    if (r.ts.batch_in_epoch == 0 && r.ts.epoch >= t->cfg->epochs) {
        /* a write the run was killed in after its last checkpoint leaves a temporary: gone */
        char first[300];
        const size_t stale = kd_runfolder_remove_stale(t->cfg->out_dir, first, sizeof first);
        st = kd_err_set(err, KD_EUSAGE, "resume %s: the run is finished (%llu of %zu epochs "
                        "done); nothing to continue. To train it further give more epochs "
                        "(--resume ... --epochs %llu); to start anew, --overwrite or --out DIR%s",
                        path, (unsigned long long)r.ts.epoch, t->cfg->epochs,
                        (unsigned long long)r.ts.epoch + 1,
                        stale ? " (removed a temporary file left by an interrupted write)" : "");
        kd_resume_free(&r);
        return st;
    }
    kd_model_free(&t->model);
    t->model = r.model;
    memset(&r.model, 0, sizeof r.model);
    t->rng = r.ts.rng;
    t->start_step = r.ts.step;
    t->start_epoch = (size_t)r.ts.epoch;
    t->start_batch = (size_t)r.ts.batch_in_epoch;
    t->best_val = r.ts.best_val;
    if (t->start_batch) {
        memcpy(t->order, r.ts.order, t->n_train * sizeof *t->order);
        t->resumed = r.partial;
    }
    t->resume_run = r.run;
    r.run = NULL;
    t->last_good = path;
    t->res->epochs_done = t->start_epoch;
    t->res->steps = t->start_step;
    if (t->best_val >= 0) t->res->best_val = t->best_val;
    kd_resume_free(&r);
    return KD_OK;
}

static kd_status run_trainer_init(kd_run *t, kd_err *err) {
    const kd_config *cfg = t->cfg;
    kd_trainer_setup s = {0};
    s.model = &t->model;
    s.teachers = t->has_teacher ? &t->tset : NULL;
    s.distill = &cfg->distill;
    s.losses = &cfg->losses;
    s.optim = &cfg->optim;
    s.sched = &t->sched;
    s.augment = &cfg->augment;
    s.sample_shape = kd_dataset_info(t->train_ds)->shape;
    s.batch_cap = t->B;
    s.rng = &t->rng;
    s.init = cfg->init;
    kd_status st = kd_trainer_init(&t->trainer, &s, err);
    t->trainer.step = t->start_step;
    /* The feature losses' adapters exist once the trainer has added them: load them now. */
    if (!st && t->opts->resume && t->trainer.n_feat &&
        (st = kd_ckpt_load_adapters(t->opts->resume, &t->model, err)) &&
        !strstr(err->msg, t->opts->resume))
        kd_err_prefix(err, "resume %s", t->opts->resume);
    return st;
}

/* The epoch sums of the loss plan's named terms, allocated once for the run (the epoch's, then
 * the resumed epoch's), and a mid-epoch resume's sums read by their keys. */
static kd_status run_terms_init(kd_run *t, kd_err *err) {
    const kd_loss_plan *p = &t->trainer.plan;
    const size_t n = p->n_terms;
    if (!(t->term_sums = calloc(2 * n + 1, sizeof *t->term_sums)))
        return kd_err_set(err, KD_EIO, "out of memory for the loss terms' sums");
    t->resumed.n_terms = n;
    t->resumed.keys = (const char (*)[KD_LOSS_KEY_MAX])p->key;
    t->resumed.term = t->term_sums + n;
    if (!t->start_batch) return KD_OK;
    return kd_run_meta_terms(t->opts->resume, t->resume_run, &t->resumed, err);
}

static void emit_setup(kd_run *t) {
    kd_train_event ev = {0};
    ev.kind = KD_EV_SETUP;
    ev.model = &t->model;
    ev.teacher = t->n_teachers == 1 ? &t->teachers[0] : NULL;
    ev.n_train = t->n_train;
    ev.n_val = t->n_val;
    ev.n_test = t->n_test;
    ev.n_batches = t->n_batches;
    ev.n_epochs = t->cfg->epochs;
    ev.epoch = t->start_epoch;
    ev.step = t->start_step;
    kd_run_emit(t, &ev);
}

/* The teachers: each one's size and validation accuracy, and the ensemble's, from the models
 * or as the cache recorded them; a warning when the target is near chance. */
static kd_status report_teachers(kd_run *t, kd_err *err) {
    const kd_config *cfg = t->cfg;
    double acc[KD_MAX_TEACHERS], mix = NAN;
    char name[KD_PATH_MAX + 64];
    const size_t n = cfg->n_teachers;
    if (t->cache && cfg->has_logits) {
        acc[0] = NAN;
        kd_run_emit_msg(t, KD_EV_NOTE, "soft targets from teacher.logits %s (%s): no teacher "
                        "is run", cfg->logits_path, t->logits_hash);
    } else if (t->cache) {
        const kd_cache_meta *m = kd_cache_info(t->cache);
        for (size_t k = 0; k < n; k++) acc[k] = m->teacher_val_acc[k];
        mix = n > 1 ? m->ensemble_val_acc : acc[0];
        kd_run_emit_msg(t, KD_EV_NOTE, "soft targets from the cache %s (%zu teacher%s, %s%s, "
                        "%zu view%s): the teachers are not run; accuracies as recorded when it "
                        "was built", cfg->cache.path, n, n == 1 ? "" : "s",
                        kd_cache_dtype_name(m->dtype), m->top_k ? ", top-k" : "", m->views,
                        m->views == 1 ? "" : "s");
    } else if (t->n_val) {
        kd_status st = kd_teacher_accuracy(&t->tset, t->val_ds, t->val_idx, t->n_val, acc, &mix, err);
        if (st) return st;
    } else {
        for (size_t k = 0; k < n; k++) acc[k] = NAN;
    }
    for (size_t k = 0; n > 1 && k < n; k++)
        kd_run_emit_msg(t, KD_EV_NOTE, "%s: weight %.4g, %zu parameters, validation accuracy "
                        "%.2f%%", kd_teacher_name(cfg, k, name, sizeof name),
                        (double)t->tset.weight[k], t->n_teachers ? t->teachers[k].n_params : 0,
                        100 * acc[k]);
    t->res->teacher_val_acc = mix;
    kd_train_event ev = {0};
    ev.kind = KD_EV_TEACHER;
    ev.value = mix;
    ev.msg = n > 1 ? "ensemble" : "teacher";
    kd_run_emit(t, &ev);
    double chance = 1.0 / (double)t->C;
    if (isfinite(mix) && mix <= chance + 0.05)
        kd_run_emit_msg(t, KD_EV_WARNING,
                        "WARNING: the %s's validation accuracy %.2f%% is within 5 points of "
                        "chance (%.2f%%): it is untrained or does not fit this data, and the "
                        "student will learn little from it",
                        ev.msg, 100 * mix, 100 * chance);
    return KD_OK;
}

/* The training steps of epoch `epoch` (0-based): a fresh order, or the resumed one from the
 * resume point. A numeric failure gets the epoch, step and batch where it happened. */
static kd_status run_epoch(kd_run *t, size_t epoch, kd_epoch_pass *e, kd_err *err) {
    const kd_train_opts *opts = t->opts;
    const size_t n_terms = t->resumed.n_terms;
    memset(e, 0, sizeof *e);
    memset(t->term_sums, 0, n_terms * sizeof *t->term_sums);
    if (epoch == t->start_epoch && t->start_batch) {
        e->batch = t->start_batch;
        e->sums = t->resumed;
        memcpy(t->term_sums, t->resumed.term, n_terms * sizeof *t->term_sums);
    } else {
        /* A fresh permutation of the sorted training list each epoch, so the order depends
         * only on the RNG state at the epoch's start (what a checkpoint saves). */
        memcpy(t->order, t->train_idx, t->n_train * sizeof *t->order);
        kd_rng_shuffle(&t->rng, t->order, t->n_train);
    }
    e->sums.n_terms = n_terms;
    e->sums.keys = t->resumed.keys;
    e->sums.term = t->term_sums;
    e->t_start = kd_now() - e->sums.seconds;
    e->ds = t->train_ds;
    e->order = t->order;
    e->n = t->n_train;
    e->use_labels = t->labels_available;
    e->epoch = epoch + 1;
    e->n_epochs = t->cfg->epochs;
    e->n_batches = t->n_batches;
    e->stop = opts->stop;
    e->progress = opts->progress;
    e->user = opts->user;
    kd_train_event ev = {0};
    ev.kind = KD_EV_EPOCH_BEGIN;
    ev.epoch = epoch + 1;
    ev.n_epochs = t->cfg->epochs;
    ev.batch = e->batch;
    ev.n_batches = t->n_batches;
    ev.step = t->trainer.step;
    kd_run_emit(t, &ev);

    kd_status st = kd_trainer_epoch(&t->trainer, e, err);
    t->res->steps = t->trainer.step;
    if (st == KD_ENUMERIC) {
        char what[sizeof err->msg];
        memcpy(what, err->msg, sizeof what);
        return numeric_failure(t, what, epoch + 1, t->trainer.step + 1, e->batch + 1, err);
    }
    if (st) return st;
    t->total_train_s += e->sums.train_seconds;
    t->total_samples += e->sums.seen;
    /* Never write weights that went non-finite (an update can overflow without a NaN
     * gradient). */
    if (!kd_all_finite(t->model.params, t->model.n_params))
        return numeric_failure(t, "weights became NaN/Inf", epoch + 1, t->trainer.step, e->batch,
                               err);
    return KD_OK;
}

/* A write that succeeded but could not make its rename durable (kd_write_atomic: KD_OK with a
 * message) is shown as a warning and the run goes on. */
static void warn_if_any(kd_run *t, kd_err *err) {
    if (err->msg[0]) kd_run_emit_msg(t, KD_EV_WARNING, "WARNING: %s", err->msg);
    kd_err_clear(err);
}

/* last.safetensors, resumable: after `epoch` completed epochs and `batch` batches of the next
 * (mid-epoch with the epoch's partial sums). */
static kd_status save_last(kd_run *t, size_t epoch, size_t batch, double val_acc,
                           const kd_epoch_sums *partial, kd_err *err) {
    kd_train_state s = {0};
    s.step = t->trainer.step;
    s.epoch = epoch;
    s.batch_in_epoch = batch;
    s.rng = t->rng;
    s.order = t->order;
    s.n_order = t->n_train;
    s.best_val = t->best_val;
    kd_status st = kd_runfolder_save(&t->rf, t->rf.last_path, &t->model, &s, epoch,
                                     t->trainer.step, val_acc, partial, err);
    if (st == KD_OK) {
        warn_if_any(t, err);
        memcpy(t->res->last_path, t->rf.last_path, sizeof t->res->last_path);
    }
    return st;
}

/* End of epoch `epoch` (0-based): validation, best, last, metrics. */
static kd_status end_epoch(kd_run *t, size_t epoch, const kd_epoch_pass *e, kd_err *err) {
    const kd_config *cfg = t->cfg;
    const kd_epoch_sums *sums = &e->sums;
    kd_train_result *res = t->res;
    kd_status st = KD_OK;
    kd_epoch_metrics em = {0};
    em.epoch = epoch + 1;
    em.loss = sums->seen ? sums->loss / sums->seen : NAN;
    em.soft = sums->seen ? sums->soft / sums->seen : NAN;
    em.hard = sums->seen && t->labels_available ? sums->hard / sums->seen : NAN;
    em.train_acc = sums->labelled ? sums->correct / sums->labelled : NAN;
    em.lr = kd_float_shortest(e->lr);
    em.samples_per_s = sums->train_seconds > 0 ? sums->seen / sums->train_seconds : NAN;
    em.skipped = sums->skipped;
    em.n_terms = sums->n_terms;
    em.keys = sums->keys;
    for (size_t k = 0; k < sums->n_terms; k++)
        em.term[k] = sums->seen ? sums->term[k] / sums->seen : NAN;
    if (sums->skipped > 0) {
        const char *note = kd_dataset_decode_note(t->train_ds);
        kd_run_emit_msg(t, KD_EV_WARNING, "WARNING: epoch %zu: %.0f training image%s could not be "
                        "decoded and %s left out (data.skip_bad; first: %s)", epoch + 1,
                        sums->skipped, sums->skipped == 1 ? "" : "s",
                        sums->skipped == 1 ? "was" : "were", note ? note : "?");
    }
    em.val_acc = NAN;
    if (t->n_val &&
        (st = kd_train_accuracy(&t->model, t->val_ds, t->val_idx, t->n_val, &em.val_acc, err)))
        return st;
    res->val_acc = em.val_acc;
    int improved = !isfinite(em.val_acc) || em.val_acc > t->best_val;
    if (isfinite(em.val_acc) && em.val_acc > t->best_val) t->best_val = em.val_acc;
    if (t->best_val >= 0) res->best_val = t->best_val;
    if (improved && cfg->save_best) {
        st = kd_runfolder_save(&t->rf, t->rf.best_path, &t->model, NULL, epoch + 1,
                               t->trainer.step, em.val_acc, NULL, err);
        if (st) return st;
        warn_if_any(t, err);
        memcpy(res->best_path, t->rf.best_path, sizeof res->best_path);
    }
    if ((st = save_last(t, epoch + 1, 0, em.val_acc, NULL, err))) return st;
    t->last_good = t->rf.last_path;
    res->epochs_done = epoch + 1;
    em.seconds = kd_now() - e->t_start;
    if ((st = kd_runfolder_add_metrics(&t->rf, &em, err))) return st;
    warn_if_any(t, err);
    kd_train_event ev = {0};
    ev.kind = KD_EV_EPOCH_END;
    ev.epoch = epoch + 1;
    ev.n_epochs = cfg->epochs;
    ev.batch = e->batch;
    ev.n_batches = t->n_batches;
    ev.step = t->trainer.step;
    ev.metrics = &em;
    kd_run_emit(t, &ev);
    return KD_OK;
}

/* Data-parallel: rank 0 alone reads the file it wrote (the other ranks may not share its
 * disk) and tells them the result. */
static kd_status test_accuracy_of_file(kd_run *t, const char *path, double *acc, kd_err *err) {
    kd_model m = {0};
    kd_status st = KD_OK;
    if (kd_dist_rank() == 0) {
        st = kd_ckpt_load(path, NULL, 0, 0, &m, NULL, NULL, NULL, NULL, err);
        if (st == KD_OK) st = kd_model_freeze(&m, err);
        if (st == KD_OK) st = kd_model_reserve(&m, t->B, err);
        if (st == KD_OK)
            st = accuracy(&m, t->test_ds, NULL, kd_dataset_info(t->test_ds)->n, 0, acc, err);
    }
    if (st == KD_OK) kd_dist_bcast(acc, sizeof *acc, 0);
    kd_model_free(&m);
    return st;
}

/* Test accuracy: the final model, and best.safetensors when it is a different model. */
static kd_status test_pass(kd_run *t, kd_err *err) {
    kd_train_result *res = t->res;
    size_t n = t->test_ds ? kd_dataset_info(t->test_ds)->n : 0;
    if (!t->n_test) return KD_OK;
    kd_run_emit_msg(t, KD_EV_EVAL, "test");
    kd_status st = kd_train_accuracy(&t->model, t->test_ds, NULL, n, &res->test_acc, err);
    if (st) return st;
    struct stat sb;
    int has_best = kd_dist_rank() == 0 && stat(t->rf.best_path, &sb) == 0;
    kd_dist_bcast(&has_best, sizeof has_best, 0);
    if (t->cfg->save_best && has_best) {
        if ((st = test_accuracy_of_file(t, t->rf.best_path, &res->best_test_acc, err))) return st;
        memcpy(res->best_path, t->rf.best_path, sizeof res->best_path);
    }
    /* The online teachers' (mixed) test accuracy; a cache never runs them. */
    if (t->n_teachers) {
        double acc[KD_MAX_TEACHERS];
        st = kd_teacher_accuracy(&t->tset, t->test_ds, NULL, n, acc, &res->teacher_test_acc, err);
    }
    return st;
}

kd_status kd_train_run(const kd_train_opts *opts, kd_train_result *res, kd_err *err) {
    kd_run run = {0};
    kd_run *t = &run;
    const kd_config *cfg = opts->cfg;
    double t_start = kd_now();

    memset(res, 0, sizeof *res);
    res->val_acc = res->best_val = res->test_acc = res->best_test_acc = NAN;
    res->teacher_val_acc = res->teacher_test_acc = NAN;
    t->cfg = cfg;
    t->opts = opts;
    t->res = res;
    t->B = cfg->batch_size;
    t->best_val = -1.0;
    if (t->B == 0 || cfg->epochs == 0)
        return kd_err_set(err, KD_EUSAGE, "train.batch_size and train.epochs must be > 0");

    kd_status st = run_setup(t, err);
    if (!st && opts->resume) st = run_resume(t, err);
    if (!st) st = run_trainer_init(t, err);
    if (!st) st = run_terms_init(t, err);
    /* Output folder: resolved config first, so a failed run still says what it ran. */
    if (!st && !(st = kd_runfolder_create(&t->rf, cfg, err))) warn_if_any(t, err);
    if (!st && t->rf.n_stale)
        kd_run_emit_msg(t, KD_EV_WARNING, "note: removed %zu temporary file%s left by an "
                        "interrupted write (%s)", t->rf.n_stale, t->rf.n_stale == 1 ? "" : "s",
                        t->rf.first_stale);
    if (!st && opts->resume) st = kd_runfolder_reload_metrics(&t->rf, t->start_epoch, err);
    if (st) goto cleanup;
    emit_setup(t);
    if ((st = kd_dp_check(t, 0, err))) goto cleanup;
    if (t->has_teacher && (st = report_teachers(t, err))) goto cleanup;

    for (size_t epoch = t->start_epoch; epoch < cfg->epochs; epoch++) {
        kd_epoch_pass e;
        if ((st = run_epoch(t, epoch, &e, err)) || (st = kd_dp_check(t, epoch + 1, err)))
            goto cleanup;
        if (e.stopped) {
            /* Interrupted mid-epoch (always after at least one step of it, so the epoch's
             * order is drawn and saved): record the exact position. */
            e.sums.seconds = kd_now() - e.t_start;
            st = save_last(t, epoch, e.batch, NAN, &e.sums, err);
            if (st == KD_OK) res->interrupted = 1;
            goto cleanup;
        }
        if ((st = end_epoch(t, epoch, &e, err))) goto cleanup;
        if (kd_dp_stop(opts->stop) && epoch + 1 < cfg->epochs) {
            res->interrupted = 1;
            goto cleanup;
        }
    }
    kd_dp_report(t);
    st = test_pass(t, err);

cleanup:
    res->seconds = kd_now() - t_start;
    res->samples_per_s = t->total_train_s > 0 ? t->total_samples / t->total_train_s : NAN;
    kd_run_free(t);
    return st;
}
