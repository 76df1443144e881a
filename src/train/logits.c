/* logits.c - building the soft-target cache a config describes: `distill logits`, and `train`
 * when its teacher.cache does not exist yet. The training samples are streamed through the
 * teachers in batches (view by view), never held in memory whole. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kd_dist.h"
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

/* ---- Data-parallel: each rank its share of the samples, rank 0 the file ---- */

/* Rank r's share of a cache at path, beside it: raw floats laid out [view][teacher][row][C]
 * for its rows [lo, hi) of the training list. The ranks must share that folder (one machine, or
 * a cluster's shared file system). */
typedef struct {
    int fd;
    size_t lo, hi;
} part_file;

typedef struct {
    part_file part[64];
    int n_parts;
    size_t views, K, C;
} parts;

static void part_path(char *buf, size_t cap, const char *path, int rank) {
    snprintf(buf, cap, "%s.part%d", path, rank);
}

/* Byte offset of (view v, teacher k, row r of the part) in a part of nr rows. */
static off_t part_offset(const parts *p, size_t v, size_t k, size_t nr, size_t r) {
    return (off_t)((((v * p->K + k) * nr) + r) * p->C * sizeof(float));
}

/* Computes rows [lo, hi) of every view into the part file at name. */
static kd_status write_part(fill_ctx *f, parts *p, const char *name, size_t lo, size_t hi,
                            float *buf, kd_err *err) {
    kd_status st = KD_OK;
    int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return kd_err_set(err, KD_EIO, "%s: cannot create: %s", name, strerror(errno));
    for (size_t v = 0; v < p->views && !st; v++)
        for (size_t row = lo; row < hi && !st; row += f->t->B) {
            size_t n = hi - row < f->t->B ? hi - row : f->t->B;
            if ((st = fill(f, v, row, n, buf, err))) break;
            for (size_t k = 0; k < p->K && !st; k++) {
                size_t bytes = n * p->C * sizeof(float);
                if (pwrite(fd, buf + k * n * p->C, bytes, part_offset(p, v, k, hi - lo, row - lo)) !=
                    (ssize_t)bytes)
                    st = kd_err_set(err, KD_EIO, "%s: cannot write: %s", name, strerror(errno));
            }
        }
    if (close(fd) != 0 && !st) st = kd_err_set(err, KD_EIO, "%s: %s", name, strerror(errno));
    return st;
}

/* kd_cache_fill_fn for rank 0: the rows of every rank's part, as the ranks computed them. */
static kd_status fill_from_parts(void *user, size_t view, size_t row, size_t n, float *logits,
                                 kd_err *err) {
    parts *p = user;
    for (int r = 0; r < p->n_parts; r++) {
        const part_file *pf = &p->part[r];
        size_t a = row > pf->lo ? row : pf->lo, b = row + n < pf->hi ? row + n : pf->hi;
        for (size_t k = 0; a < b && k < p->K; k++) {
            size_t bytes = (b - a) * p->C * sizeof(float);
            if (pread(pf->fd, logits + (k * n + (a - row)) * p->C, bytes,
                      part_offset(p, view, k, pf->hi - pf->lo, a - pf->lo)) != (ssize_t)bytes)
                return kd_err_set(err, KD_EIO, "rank %d's share of the cache is short", r);
        }
    }
    return KD_OK;
}

/* Every rank writes its part; after all did, rank 0 streams the parts into the cache file;
 * every rank learns the outcome and removes its part. */
static kd_status write_parallel(kd_run *t, fill_ctx *f, const char *path,
                                const kd_cache_meta *meta, float *buf, kd_err *err) {
    const int rank = kd_dist_rank(), size = kd_dist_size();
    parts p = {{{0}}, size, t->cfg->cache.views, meta->n_teachers, meta->n_classes};
    char name[KD_PATH_MAX + 32];
    size_t lo, hi;
    kd_status st = KD_OK;
    if (size > (int)(sizeof p.part / sizeof p.part[0]))
        return kd_err_set(err, KD_EUSAGE, "building a cache on more than 64 ranks");
    kd_dist_shard(t->n_train, (size_t)rank, (size_t)size, &lo, &hi);
    part_path(name, sizeof name, path, rank);
    f->total = (hi - lo) * p.views;
    st = write_part(f, &p, name, lo, hi, buf, err);
    int failed = kd_dist_any(st != KD_OK);
    if (!st && failed) st = kd_err_set(err, KD_EIO, "another rank could not compute its share");
    if (!st && rank == 0) {
        for (int r = 0; r < size && !st; r++) {
            part_path(name, sizeof name, path, r);
            kd_dist_shard(t->n_train, (size_t)r, (size_t)size, &p.part[r].lo, &p.part[r].hi);
            if ((p.part[r].fd = open(name, O_RDONLY)) < 0)
                st = kd_err_set(err, KD_EIO, "%s: %s (the ranks must share the cache's folder)",
                                name, strerror(errno));
        }
        if (!st) st = kd_cache_write(path, meta, t->train_idx, t->B, fill_from_parts, &p, err);
        for (int r = 0; r < size; r++)
            if (p.part[r].fd > 0) close(p.part[r].fd);
    }
    failed = kd_dist_any(st != KD_OK);  /* every rank waits for rank 0's file */
    part_path(name, sizeof name, path, rank);
    unlink(name);
    if (!st && failed) st = kd_err_set(err, KD_EIO, "rank 0 could not write %s", path);
    return st;
}

kd_status kd_run_write_cache(kd_run *t, const char *path, kd_err *err) {
    const kd_config *cfg = t->cfg;
    kd_cache_meta meta;
    fill_ctx f = {0};
    float *buf = NULL;
    size_t n;
    kd_status st = KD_OK;
    /* Provenance and the teachers' accuracies: rank 0's (no collectives in there). */
    if (kd_dist_rank() == 0) {
        st = kd_teacher_cache_meta(cfg, t->pp, t->n_train, t->tset.n_classes, &meta, err);
        /* Recorded so that runs from the cache can report the teachers they never run. */
        if (!st && t->n_val)
            st = kd_teacher_accuracy(&t->tset, t->val_ds, t->val_idx, t->n_val,
                                     meta.teacher_val_acc, &meta.ensemble_val_acc, err);
    } else {
        memset(&meta, 0, sizeof meta);
        meta.n_teachers = t->tset.n;
        meta.n_classes = t->tset.n_classes;
    }
    f.t = t;
    f.D = kd_shape_numel(&kd_dataset_info(t->train_ds)->shape);
    f.total = t->n_train * cfg->cache.views;
    f.t0 = kd_now();
    if (!st && (kd_mul_size(t->B, f.D, &n) || !(f.x = kd_alloc_floats(n)) ||
                (cfg->cache.views > 1 && !(f.xa = kd_alloc_floats(n))) ||
                !(buf = kd_alloc_floats(t->tset.n * t->B * t->tset.n_classes))))
        st = kd_err_set(err, KD_EIO, "out of memory for the cache's batches");
    if (kd_dist_size() > 1) {
        /* Every rank takes part, even after a failure of its own (the others wait for it). */
        kd_status ps = write_parallel(t, &f, path, &meta, buf, err);
        if (!st) st = ps;
    } else if (!st) {
        st = kd_cache_write(path, &meta, t->train_idx, t->B, fill, &f, err);
    }
    if (!st)
        kd_run_emit_msg(t, KD_EV_NOTE, "wrote %s: %zu samples x %zu view%s x %zu teacher%s "
                        "(%zu bytes per sample and view) in %.1f s%s", path, t->n_train,
                        cfg->cache.views, cfg->cache.views == 1 ? "" : "s", t->tset.n,
                        t->tset.n == 1 ? "" : "s", kd_cache_entry_bytes(&meta), kd_now() - f.t0,
                        kd_dist_size() > 1 ? " (each rank a share of the samples)" : "");
    kd_free_aligned(f.x);
    kd_free_aligned(f.xa);
    kd_free_aligned(buf);
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
    if (cfg->has_logits)
        return kd_err_set(err, KD_EUSAGE, "%s: teacher.logits: the config's targets are already "
                          "a file of logits, which `distill train` reads directly; `distill "
                          "logits` runs teacher checkpoints to build a teacher.cache, and this "
                          "config has none", cfg->path[0] ? cfg->path : "config");
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
