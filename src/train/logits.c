/* logits.c - building the soft-target cache a config describes: `distill logits`, and `train`
 * when its teacher.cache does not exist yet. The training samples are streamed through the
 * teachers in batches (view by view), never held in memory whole. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kd_threads.h"
#include "train_impl.h"

typedef struct {
    kd_run *t;
    size_t D;            /* values per sample */
    float *x, *xa;       /* (B, D) the batch and its augmented view */
    size_t done, total;  /* entries written, of n_train * views */
    double t0;
} fill_ctx;

/* kd_cache_fill_fn: the teachers' logits of samples train_idx[row .. row + n) in view `view`
 * (the same kd_augment_view the trainer shows the student). */
static kd_status fill(void *user, size_t view, size_t row, size_t n, float *logits, kd_err *err) {
    fill_ctx *f = user;
    kd_run *t = f->t;
    const kd_config *cfg = t->cfg;
    const size_t *idx = t->train_idx + row, C = t->tset.n_classes;
    const kd_shape *shape = &kd_dataset_info(t->train_ds)->shape;
    const float *zt[KD_MAX_TEACHERS];
    kd_status st = kd_dataset_get(t->train_ds, idx, n, f->x, NULL, NULL, err);
    if (st) return st;
    const float *x = f->x;
    if (cfg->cache.views > 1) {
        for (size_t i = 0; i < n; i++)
            kd_augment_view(&cfg->augment, shape, f->x + i * f->D, f->xa + i * f->D,
                            cfg->cache.seed, idx[i], (uint32_t)view);
        x = f->xa;
    }
    if ((st = kd_teacher_logits(&t->tset, x, NULL, NULL, n, zt, err))) return st;
    for (size_t k = 0; k < t->tset.n; k++)
        memcpy(logits + k * n * C, zt[k], n * C * sizeof *logits);
    f->done += n;
    if (t->opts->progress) {
        kd_train_event ev = {0};
        ev.kind = KD_EV_CACHE;
        ev.batch = f->done;
        ev.n_batches = f->total;
        ev.epoch = view + 1;
        ev.n_epochs = cfg->cache.views;
        ev.epoch_seconds = kd_now() - f->t0;
        ev.samples_per_s = ev.epoch_seconds > 0 ? (double)f->done / ev.epoch_seconds : 0;
        t->opts->progress(&ev, t->opts->user);
    }
    return KD_OK;
}

kd_status kd_run_write_cache(kd_run *t, const char *path, kd_err *err) {
    const kd_config *cfg = t->cfg;
    kd_cache_meta meta;
    fill_ctx f = {0};
    size_t n;
    kd_status st = kd_teacher_cache_meta(cfg, t->pp, t->n_train, t->tset.n_classes, &meta, err);
    if (st) return st;
    /* Recorded so that runs from the cache can report the teachers they never run. */
    if (t->n_val &&
        (st = kd_teacher_accuracy(&t->tset, t->val_ds, t->val_idx, t->n_val, meta.teacher_val_acc,
                                  &meta.ensemble_val_acc, err)))
        return st;
    f.t = t;
    f.D = kd_shape_numel(&kd_dataset_info(t->train_ds)->shape);
    f.total = t->n_train * cfg->cache.views;
    f.t0 = kd_now();
    if (kd_mul_size(t->B, f.D, &n) || !(f.x = kd_alloc_floats(n)) ||
        (cfg->cache.views > 1 && !(f.xa = kd_alloc_floats(n)))) {
        st = kd_err_set(err, KD_EIO, "out of memory for the cache's batches");
        goto cleanup;
    }
    st = kd_cache_write(path, &meta, t->train_idx, t->B, fill, &f, err);
    if (!st)
        kd_run_emit_msg(t, KD_EV_NOTE, "wrote %s: %zu samples x %zu view%s x %zu teacher%s "
                        "(%zu bytes per sample and view) in %.1f s", path, t->n_train,
                        cfg->cache.views, cfg->cache.views == 1 ? "" : "s", meta.n_teachers,
                        meta.n_teachers == 1 ? "" : "s", kd_cache_entry_bytes(&meta),
                        kd_now() - f.t0);
cleanup:
    kd_free_aligned(f.x);
    kd_free_aligned(f.xa);
    return st;
}

kd_status kd_logits_run(const kd_logits_opts *o, kd_logits_result *res, kd_err *err) {
    const kd_config *cfg = o->cfg;
    kd_train_opts topts = {0};
    kd_run run = {0};
    kd_run *t = &run;
    struct stat sb;
    double t0 = kd_now();
    memset(res, 0, sizeof *res);
    if (!cfg->has_teacher || !cfg->has_cache)
        return kd_err_set(err, KD_EUSAGE, "%s: %s", cfg->path[0] ? cfg->path : "config",
                          cfg->has_teacher ? "the teacher section has no cache: add \"cache\": "
                          "{\"path\": \"FILE\"} to it (configs/README.md)"
                                           : "no teacher section: nothing to cache");
    const char *path = o->out && *o->out ? o->out : cfg->cache.path;
    if (snprintf(res->path, sizeof res->path, "%s", path) >= (int)sizeof res->path)
        return kd_err_set(err, KD_EUSAGE, "cache path too long");
    if (!o->force && stat(path, &sb) == 0)
        return kd_err_set(err, KD_EUSAGE, "%s exists (add --force to rebuild it)", path);
    topts.cfg = cfg;
    topts.progress = o->progress;
    topts.user = o->user;
    t->cfg = cfg;
    t->opts = &topts;
    t->B = cfg->batch_size;
    res->threads = kd_threads_set(cfg->threads);
    kd_rng_seed(&t->rng, cfg->seed);
    /* The student is not built: the cache depends on the teachers and the data alone (t->C 0:
     * the teachers' class count is checked against the student's when training). */
    kd_status st = kd_run_open_data(t, err);
    if (!st) st = kd_run_load_teachers(t, err);
    if (!st) st = kd_run_write_cache(t, path, err);
    if (!st) {
        res->n_rows = t->n_train;
        res->views = cfg->cache.views;
        res->n_teachers = t->n_teachers;
        res->bytes = stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
    }
    res->seconds = kd_now() - t0;
    res->samples_per_s = res->seconds > 0 ? (double)(res->n_rows * res->views) / res->seconds : 0;
    kd_run_free(t);
    return st;
}
