/* setup.c - a run's setup: the training, validation and test data with the validation split,
 * the model built from the config, and the teacher loaded and checked against both. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kd_dist.h"
#include "train_impl.h"

void kd_run_emit(kd_run *t, kd_train_event *ev) {
    if (t->opts->progress) t->opts->progress(ev, t->opts->user);
}

void kd_run_emit_msg(kd_run *t, kd_train_event_kind kind, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    kd_train_event ev = {0};
    ev.kind = kind;
    ev.msg = buf;
    kd_run_emit(t, &ev);
}

static kd_status open_source(kd_dataset **ds, const kd_data_source *src, const kd_preprocess *pp,
                             const char *what, kd_err *err) {
    kd_status st = kd_dataset_open(ds, src, pp, err);
    if (st) {
        /* A data file that cannot be read is bad input to this run, not an internal failure. */
        if (st == KD_EIO) err->code = st = KD_EINPUT;
        kd_err_prefix(err, "%s data", what);
    }
    return st;
}

/* Opens a validation or test source whose samples must have the training data's size. */
static kd_status open_matching_source(kd_dataset **ds, const kd_data_source *src,
                                      const kd_preprocess *pp, const char *what,
                                      const kd_data_source *train, const kd_data_info *train_info,
                                      kd_err *err) {
    /* Images take the training samples' shape unless the config gives theirs. */
    kd_data_source s = *src;
    const kd_shape *ts = &train_info->source_shape;
    if (s.format == KD_FMT_IMAGES && ts->rank == 3) {
        if (!s.channels) s.channels = (int)ts->d[0];
        if (!s.height) s.height = ts->d[1];
        if (!s.width) s.width = ts->d[2];
    }
    kd_status st = open_source(ds, &s, pp, what, err);
    if (st) return st;
    const kd_data_info *info = kd_dataset_info(*ds);
    if (kd_shape_numel(&info->shape) != kd_shape_numel(&train_info->shape)) {
        char a[64], b[64];
        return kd_err_set(err, KD_EINPUT,
                          "%s data %s gives samples of shape %s but the training data %s gives %s",
                          what, src->path, kd_shape_str(&info->shape, a, sizeof a), train->path,
                          kd_shape_str(&train_info->shape, b, sizeof b));
    }
    return KD_OK;
}

/* Feature scales of tabular data (root mean square per feature) spread by more than 1e3 with
 * nothing standardising them: a warning naming the two extremes. */
static void warn_scales(kd_run *t, const double *mean, const double *sd, size_t D) {
    size_t lo = D, hi = D;
    double rlo = 0, rhi = 0;
    for (size_t i = 0; i < D; i++) {
        double r = sqrt(mean[i] * mean[i] + sd[i] * sd[i]);
        if (!(r > 0)) continue;
        if (lo == D || r < rlo) lo = i, rlo = r;
        if (hi == D || r > rhi) hi = i, rhi = r;
    }
    if (lo < D && rhi > 1e3 * rlo)
        kd_run_emit_msg(t, KD_EV_WARNING, "WARNING: training data %s: feature scales differ by "
                        "%.2g times (feature %zu around %.3g, feature %zu around %.3g); set "
                        "data.preprocess.standardize: true", t->cfg->train.path, rhi / rlo, hi,
                        rhi, lo, rlo);
}

/* data.preprocess.standardize: a mean and std per feature, computed once in double on the
 * training split (after the validation hold-out), applied to every split and recorded in the
 * checkpoints. Without it, tabular data whose scales differ widely gets a warning. */
static kd_status standardize(kd_run *t, kd_err *err) {
    const kd_config *cfg = t->cfg;
    const kd_preprocess *pp = kd_dataset_preprocess(t->train_ds);
    const size_t D = kd_shape_numel(&kd_dataset_info(t->train_ds)->shape);
    if (!pp->standardize && (cfg->train.format != KD_FMT_CSV || pp->n_channels || pp->n_features))
        return KD_OK;
    double *mean = malloc(2 * (D ? D : 1) * sizeof *mean), *sd = mean ? mean + D : NULL;
    kd_preprocess q = *pp;
    q.feat = NULL;
    q.n_features = 0;
    kd_status st = mean ? kd_dataset_feature_stats(t->train_ds, t->train_idx, t->n_train, mean,
                                                   sd, err)
                        : kd_err_set(err, KD_EIO, "out of memory for feature statistics");
    if (st || !pp->standardize) {
        if (!st) warn_scales(t, mean, sd, D);
        goto cleanup;
    }
    if ((st = kd_preprocess_set_features(&q, mean, sd, D, err)) ||
        (st = kd_dataset_set_preprocess(t->train_ds, &q, err)) ||
        (t->val_ds && t->val_ds != t->train_ds &&
         (st = kd_dataset_set_preprocess(t->val_ds, &q, err))) ||
        (t->test_ds && (st = kd_dataset_set_preprocess(t->test_ds, &q, err))))
        goto cleanup;
    kd_run_emit_msg(t, KD_EV_NOTE, "standardize: a mean and std for each of the %zu features, "
                    "from the %zu training samples", D, t->n_train);
cleanup:
    kd_preprocess_free(&q);
    free(mean);
    return st;
}

kd_status kd_run_open_data(kd_run *t, kd_err *err) {
    const kd_config *cfg = t->cfg;
    kd_status st = open_source(&t->train_ds, &cfg->train, &cfg->pp, "training", err);
    if (st) return st;
    const kd_data_info *info = kd_dataset_info(t->train_ds);
    t->pp = kd_dataset_preprocess(t->train_ds);
    if (info->skip_note) kd_run_emit_msg(t, KD_EV_WARNING, "WARNING: training data: %s", info->skip_note);
    if (cfg->train.format == KD_FMT_IMAGES) {
        char sh[64];
        const int from_first = !cfg->train.channels || !cfg->train.height || !cfg->train.width;
        kd_run_emit_msg(t, KD_EV_NOTE, "image folder %s: samples %s%s", cfg->train.path,
                        kd_shape_str(&info->source_shape, sh, sizeof sh),
                        from_first ? " (channels, height and width of its first image; set "
                                     "data.train.channels/height/width to change)" : "");
    }
    if (info->n == 0)
        return kd_err_set(err, KD_EINPUT, "training data %s: no samples", cfg->train.path);

    if (cfg->has_val_source) {
        st = open_matching_source(&t->val_ds, &cfg->val, &cfg->pp, "validation", &cfg->train,
                                  info, err);
        if (st) return st;
        t->n_val = kd_dataset_info(t->val_ds)->n;
        t->train_idx = malloc(info->n * sizeof *t->train_idx);
        if (!t->train_idx) return kd_err_set(err, KD_EIO, "out of memory");
        for (size_t i = 0; i < info->n; i++) t->train_idx[i] = i;
        t->n_train = info->n;
    } else {
        size_t n_val = 0;
        if (cfg->val_count > 0)
            n_val = cfg->val_count;
        else if (cfg->val_fraction > 0)
            n_val = (size_t)llround((double)cfg->val_fraction * (double)info->n);
        if (n_val >= info->n)
            return kd_err_set(err, KD_EUSAGE,
                              "data.validation_split holds out %zu samples but the training "
                              "data %s has only %zu",
                              n_val, cfg->train.path, info->n);
        st = kd_split(info->n, n_val, KD_SPLIT_SEED, &t->train_idx, &t->n_train, &t->val_idx, err);
        if (st) return st;
        t->n_val = n_val;
        if (n_val) {
            t->val_ds = t->train_ds;
        }
    }
    if (t->val_ds && !kd_dataset_info(t->val_ds)->has_labels) {
        kd_run_emit_msg(t, KD_EV_NOTE, "validation data has no labels: no validation accuracy");
        t->n_val = 0;
    }

    if (cfg->has_test) {
        st = open_matching_source(&t->test_ds, &cfg->test, &cfg->pp, "test", &cfg->train, info,
                                  err);
        if (st) return st;
        const kd_data_info *ti = kd_dataset_info(t->test_ds);
        t->n_test = ti->has_labels ? ti->n : 0;
        if (!ti->has_labels) kd_run_emit_msg(t, KD_EV_NOTE, "test data has no labels: no test accuracy");
    }

    /* Which training signal is available. */
    int want_labels = !cfg->has_teacher ||
                      (kd_loss_list_needs(&cfg->losses) & KD_LOSS_NEEDS_LABELS);
    if (want_labels && !cfg->use_labels)
        return kd_err_set(err, KD_EUSAGE,
                          "data.use_labels is false, so training needs a teacher with "
                          "distill.alpha = 1 (alpha is %g%s)",
                          (double)cfg->distill.alpha, cfg->has_teacher ? "" : ", no teacher");
    if (want_labels && !info->has_labels)
        return kd_err_set(err, KD_EUSAGE,
                          "the training data %s has no labels: %s",
                          cfg->train.path,
                          cfg->has_teacher
                              ? "distill.alpha must be 1 (the label term needs labels)"
                              : "training without a teacher needs labels");
    t->labels_available = cfg->use_labels && info->has_labels;
    char a[64];
    if (kd_augment_active(&cfg->augment) && info->shape.rank != 3)
        return kd_err_set(err, KD_EUSAGE,
                          "data.augment needs image samples [C, H, W], but the training data "
                          "%s gives %s%s",
                          cfg->train.path, kd_shape_str(&info->shape, a, sizeof a),
                          cfg->pp.flatten ? " (data.preprocess.flatten is on)" : "");
    return standardize(t, err);
}

kd_status kd_run_build_model(kd_run *t, kd_err *err) {
    const kd_config *cfg = t->cfg;
    const char *cp = cfg->path[0] ? cfg->path : "config"; /* each message names the file */
    const kd_data_info *info = kd_dataset_info(t->train_ds);
    kd_shape in = cfg->has_input ? cfg->input : info->shape;
    char a[64], b[64];
    if (kd_shape_numel(&in) != kd_shape_numel(&info->shape))
        return kd_err_set(err, KD_EUSAGE, "%s: model.input %s does not match the data's %s (%s)",
                          cp, kd_shape_str(&in, a, sizeof a), kd_shape_str(&info->shape, b, sizeof b),
                          cfg->train.path);
    char *layers = cJSON_PrintUnformatted(cfg->layers);
    if (!layers) return kd_err_set(err, KD_EIO, "out of memory");
    kd_status st = kd_model_init(&t->model, &in, layers, 1, err);
    free(layers);
    if (st) {
        kd_err_prefix(err, "%s: model.layers", cp);
        return st;
    }
    t->C = t->model.n_classes;
    if (info->n_classes > t->C)
        return kd_err_set(err, KD_EUSAGE,
                          "%s: model.layers: the last layer gives %zu outputs but the data %s "
                          "has %zu classes",
                          cp, t->C, cfg->train.path, info->n_classes);
    if (t->C < 2)
        return kd_err_set(err, KD_EUSAGE, "%s: model.layers: the last layer gives %zu output; "
                          "a classifier needs at least 2", cp, t->C);
    if (cfg->classes) {
        /* Names from the config replace the data's ("0".."9" for IDX files). */
        size_t n = (size_t)cJSON_GetArraySize(cfg->classes);
        if (n != t->C)
            return kd_err_set(err, KD_EUSAGE,
                              "%s: data.classes: %zu names, but the model gives %zu classes", cp,
                              n, t->C);
        t->class_names = calloc(n, sizeof *t->class_names);
        if (!t->class_names) return kd_err_set(err, KD_EIO, "out of memory");
        size_t i = 0;
        for (const cJSON *e = cfg->classes->child; e; e = e->next) t->class_names[i++] = e->valuestring;
        t->n_class_names = n;
    } else if (info->class_names) {
        t->class_names = info->class_names;
        t->n_class_names = info->n_classes;
    }
    kd_model_init_weights(&t->model, &t->rng, cfg->init);
    return kd_model_reserve(&t->model, t->B, err);
}

kd_status kd_run_load_teachers(kd_run *t, kd_err *err) {
    const kd_config *cfg = t->cfg;
    const kd_data_info *info = kd_dataset_info(t->train_ds);
    char warning[KD_PATH_MAX + 256];
    kd_model *models[KD_MAX_TEACHERS];
    float w[KD_MAX_TEACHERS];
    for (size_t i = 0; i < cfg->n_teachers; i++) {
        kd_status st = kd_teacher_load(cfg, i, &info->shape, info->n_classes, t->class_names,
                                       t->n_class_names, t->pp, t->C,
                                       &t->teachers[i], warning, sizeof warning, err);
        t->n_teachers = i + 1;  /* freed by kd_run_free, also after a failed load */
        if (st) return st;
        if (warning[0]) kd_run_emit_msg(t, KD_EV_WARNING, "%s", warning);
        models[i] = &t->teachers[i];
        w[i] = kd_config_teacher_weight(cfg, i);
    }
    t->has_teacher = 1;
    return kd_teacher_set_online(&t->tset, models, w, cfg->n_teachers, t->B, err);
}

kd_status kd_run_open_cache(kd_run *t, const char *path, kd_err *err) {
    const kd_config *cfg = t->cfg;
    kd_cache_meta want;
    char rebuild[KD_PATH_MAX + 64];
    kd_status st = kd_cache_open(&t->cache, path, err);
    if (!st) st = kd_teacher_cache_meta(cfg, t->pp, t->n_train, t->C, &want, err);
    snprintf(rebuild, sizeof rebuild, "distill logits --config %s --force",
             cfg->path[0] ? cfg->path : "CONFIG");
    if (!st) st = kd_cache_check(t->cache, &want, t->train_idx, t->n_train, rebuild, err);
    if (!st) st = kd_teacher_set_cached(&t->tset, t->cache, t->B, err);
    if (!st) t->has_teacher = 1;
    return st;
}

/* teacher.logits: the file's rows of the training samples become a cache in memory, which the
 * step reads as it reads teacher.cache; no teacher is run. */
static kd_status import_logits(kd_run *t, kd_err *err) {
    const kd_config *cfg = t->cfg;
    kd_status st = kd_teacher_import_logits(&t->cache, cfg->logits_path, t->train_ds,
                                            cfg->train.path, t->train_idx, t->n_train, t->C,
                                            t->logits_hash, sizeof t->logits_hash, err);
    if (!st) st = kd_teacher_set_cached(&t->tset, t->cache, t->B, err);
    if (!st) t->has_teacher = 1;
    return st;
}

kd_status kd_run_build_teachers(kd_run *t, kd_err *err) {
    const kd_config *cfg = t->cfg;
    struct stat sb;
    if (cfg->has_logits) return import_logits(t, err);
    if (!cfg->has_cache) return kd_run_load_teachers(t, err);
    const char *path = cfg->cache.path;
    if (stat(path, &sb) != 0) {
        /* No cache yet: build it from the teachers, then train from the file like any run
         * (data-parallel: every rank computes a share of it, kd_run_write_cache). */
        kd_run_emit_msg(t, KD_EV_NOTE, "teacher.cache %s does not exist: building it", path);
        kd_status st = kd_run_load_teachers(t, err);
        if (kd_dist_size() > 1 && kd_dist_any(st != KD_OK) && !st)
            st = kd_err_set(err, KD_EIO, "another rank could not load the teachers");
        if (!st) st = kd_run_write_cache(t, path, err);
        kd_teacher_set_free(&t->tset);
        for (size_t i = 0; i < t->n_teachers; i++) kd_model_free(&t->teachers[i]);
        t->n_teachers = 0;
        if (st) return st;
    }
    return kd_run_open_cache(t, path, err);
}

void kd_run_free(kd_run *t) {
    kd_trainer_free(&t->trainer);
    kd_runfolder_free(&t->rf);
    free(t->order);
    free(t->resume_run);
    free(t->term_sums);
    kd_model_free(&t->model);
    kd_teacher_set_free(&t->tset);
    for (size_t i = 0; i < t->n_teachers; i++) kd_model_free(&t->teachers[i]);
    kd_cache_close(t->cache);
    if (t->cfg->classes) free(t->class_names); /* else it is the dataset's */
    free(t->train_idx);
    free(t->val_idx);
    if (t->val_ds && t->val_ds != t->train_ds) kd_dataset_close(t->val_ds);
    kd_dataset_close(t->train_ds);
    kd_dataset_close(t->test_ds);
}
