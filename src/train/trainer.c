/* trainer.c - the training loop: data, teacher, student, loss, optimizer, checkpoints, exact
 * resume and numeric-failure handling. Knows nothing about the command line; reports progress
 * through a callback and errors through kd_err. */
#include "kd_train.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kd_checkpoint.h"
#include "kd_gemm.h"
#include "kd_loss.h"
#include "kd_optim.h"
#include "kd_rng.h"
#include "kd_safetensors.h"

/* Everything one run holds; zero-initialised, released in one place. */
typedef struct {
    const kd_config *cfg;
    const kd_train_opts *opts;
    kd_train_result *res;

    kd_dataset *train_ds, *val_ds, *test_ds;  /* val_ds may alias train_ds */
    int val_is_split;                          /* val_ds == train_ds with val_idx */
    size_t *train_idx, n_train;
    size_t *val_idx, n_val;                    /* val_idx NULL: all of val_ds */
    size_t n_test;
    int labels_available;                      /* training labels exist and may be used */
    const kd_preprocess *pp;

    kd_model model, teacher;
    char **class_names;                        /* recorded in checkpoints (n_class_names) */
    size_t n_class_names;
    int has_teacher;
    size_t C;                                  /* classes (model outputs) */
    float *dlogits;                            /* (B, C) */
    float *scratch;                            /* (3 * B * C) for the loss */
    size_t *order;                             /* (n_train) this epoch's order */
    float *aug_x;                              /* (B, D) augmented batch, when data.augment */
    kd_rng rng;
    kd_sched_cfg sched;
    size_t B, n_batches;

    char out_dir[KD_PATH_MAX];
    char last_path[KD_PATH_MAX], best_path[KD_PATH_MAX], metrics_path[KD_PATH_MAX];
    char *metrics;                             /* metrics.jsonl contents so far */
    size_t metrics_len, metrics_cap;
    const char *last_good;                     /* checkpoint a numeric failure leaves behind */
} trainer;

/* Running sums of one epoch (saved in an interrupted checkpoint so the resumed epoch's metrics
 * cover the whole epoch). */
typedef struct {
    double loss, soft, hard;   /* sums of per-batch means times batch size */
    double correct, labelled;  /* training accuracy counts */
    double seen;               /* samples */
    double train_seconds;      /* time in training steps */
    double seconds;            /* wall time of the epoch so far */
} epoch_sums;

static void emit(trainer *t, kd_train_event *ev) {
    if (t->opts->progress) t->opts->progress(ev, t->opts->user);
}

static void emit_msg(trainer *t, kd_train_event_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void emit_msg(trainer *t, kd_train_event_kind kind, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    kd_train_event ev = {0};
    ev.kind = kind;
    ev.msg = buf;
    emit(t, &ev);
}

const char *kd_train_loss_formula(const kd_config *cfg, char *buf, size_t cap) {
    if (!cfg->has_teacher) {
        snprintf(buf, cap, "loss = CE(y, p_s)");
        return buf;
    }
    float a = cfg->distill.alpha;
    char soft[128];
    if (cfg->distill.kind == KD_DISTILL_MSE)
        snprintf(soft, sizeof soft, "mean ||z_t - z_s||^2");
    else
        snprintf(soft, sizeof soft, "T^2 * KL(p_t^T || p_s^T)");
    char tail[64] = "";
    if (cfg->distill.kind == KD_DISTILL_KL)
        snprintf(tail, sizeof tail, ", T = %g", (double)cfg->distill.temperature);
    if (a >= 1.0f)
        snprintf(buf, cap, "loss = %s%s", soft, tail);
    else if (a <= 0.0f)
        snprintf(buf, cap, "loss = CE(y, p_s) (alpha = 0: the teacher is not used)");
    else
        snprintf(buf, cap, "loss = %g * %s + %g * CE(y, p_s)%s", (double)a, soft,
                 (double)(1.0f - a), tail);
    return buf;
}

static size_t argmax_row(const float *row, size_t C) {
    size_t best = 0;
    for (size_t j = 1; j < C; j++)
        if (row[j] > row[best]) best = j;
    return best;
}

kd_status kd_train_accuracy(kd_model *m, kd_dataset *ds, const size_t *idx, size_t n,
                            double *acc, kd_err *err) {
    kd_status st = KD_OK;
    size_t *all = NULL;
    kd_loader *ld = NULL;
    size_t hits = 0, counted = 0;
    *acc = NAN;
    if (n == 0) return KD_OK;
    if (!idx) {
        all = malloc(n * sizeof *all);
        if (!all) {
            st = kd_err_set(err, KD_EIO, "out of memory for %zu indices", n);
            goto cleanup;
        }
        for (size_t i = 0; i < n; i++) all[i] = i;
        idx = all;
    }
    st = kd_loader_open(&ld, ds, idx, n, m->batch_cap, err);
    if (st) goto cleanup;
    for (;;) {
        kd_batch b;
        st = kd_loader_next(ld, &b, err);
        if (st) goto cleanup;
        if (b.n == 0) break;
        const float *z = kd_model_forward(m, b.x, b.n, NULL);
        for (size_t i = 0; i < b.n; i++) {
            if (!b.y || b.y[i] < 0) continue;
            counted++;
            hits += argmax_row(z + i * m->n_classes, m->n_classes) == (size_t)b.y[i];
        }
    }
    if (counted) *acc = (double)hits / (double)counted;
cleanup:
    kd_loader_close(ld);
    free(all);
    return st;
}

/* mkdir -p; errors name the directory. */
static kd_status make_dirs(const char *path, kd_err *err) {
    char buf[KD_PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return kd_err_set(err, KD_EUSAGE, "output folder '%s': bad path", path);
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return kd_err_set(err, KD_EIO, "cannot create output folder '%s': %s", buf,
                              strerror(errno));
        buf[i] = saved;
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return kd_err_set(err, KD_EIO, "output path '%s' exists and is not a folder", path);
    return KD_OK;
}

static kd_status write_text_cb(FILE *f, void *ctx, kd_err *err) {
    const char *s = ctx;
    size_t n = strlen(s);
    if (fwrite(s, 1, n, f) != n) return kd_err_set(err, KD_EIO, "write failed");
    return KD_OK;
}

static kd_status write_text(const char *path, const char *text, kd_err *err) {
    return kd_write_atomic(path, write_text_cb, (void *)text, err);
}

static int join_path(char *out, size_t cap, const char *dir, const char *file) {
    int n = snprintf(out, cap, "%s/%s", dir, file);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static kd_status metrics_append(trainer *t, const char *line, kd_err *err) {
    size_t n = strlen(line), need;
    if (kd_add_size(t->metrics_len, n + 2, &need))
        return kd_err_set(err, KD_EIO, "metrics too large");
    if (need > t->metrics_cap) {
        size_t cap = t->metrics_cap ? t->metrics_cap : 1024;
        while (cap < need) cap *= 2;
        char *p = realloc(t->metrics, cap);
        if (!p) return kd_err_set(err, KD_EIO, "out of memory for metrics");
        t->metrics = p;
        t->metrics_cap = cap;
    }
    memcpy(t->metrics + t->metrics_len, line, n);
    t->metrics_len += n;
    t->metrics[t->metrics_len++] = '\n';
    t->metrics[t->metrics_len] = '\0';
    return KD_OK;
}

/* On resume: keeps the lines of metrics.jsonl for epochs <= done (a crash may have left a line
 * for an epoch whose checkpoint was never written). A missing file is fine. */
static kd_status metrics_reload(trainer *t, size_t done, kd_err *err) {
    char *text = NULL;
    size_t len = 0;
    kd_err ignore;
    if (kd_read_file(t->metrics_path, (size_t)64 << 20, &text, &len, &ignore) != KD_OK)
        return KD_OK;
    kd_status st = KD_OK;
    char *line = text;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        cJSON *j = cJSON_Parse(line);
        const cJSON *e = j ? cJSON_GetObjectItemCaseSensitive(j, "epoch") : NULL;
        if (cJSON_IsNumber(e) && e->valuedouble >= 1 && e->valuedouble <= (double)done)
            st = metrics_append(t, line, err);
        cJSON_Delete(j);
        if (st) break;
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    return st;
}

static void json_num_or_null(cJSON *o, const char *k, double v) {
    if (isfinite(v))
        cJSON_AddNumberToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

/* A float as the shortest decimal that reads back to it, so metrics say 0.003, not
 * 0.0030000000260770321. */
static double shortest(float f) {
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    return strtod(buf, NULL);
}

static char *metrics_line(const kd_epoch_metrics *m) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "epoch", (double)m->epoch);
    json_num_or_null(o, "loss", m->loss);
    json_num_or_null(o, "soft", m->soft);
    json_num_or_null(o, "hard", m->hard);
    json_num_or_null(o, "train_acc", m->train_acc);
    json_num_or_null(o, "val_acc", m->val_acc);
    json_num_or_null(o, "lr", m->lr);
    json_num_or_null(o, "samples_per_s", m->samples_per_s);
    json_num_or_null(o, "seconds", m->seconds);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* The "run" metadata of a checkpoint: where it was in the run, and (mid-epoch) the epoch's
 * running sums so the resumed epoch reports the same metrics as an uninterrupted one. */
static char *run_json(size_t epoch, uint64_t step, double val_acc,
                      const epoch_sums *partial) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "epoch", (double)epoch);
    cJSON_AddNumberToObject(o, "step", (double)step);
    json_num_or_null(o, "val_acc", val_acc);
    if (partial) {
        cJSON *p = cJSON_AddObjectToObject(o, "partial");
        if (p) {
            cJSON_AddNumberToObject(p, "loss", partial->loss);
            cJSON_AddNumberToObject(p, "soft", partial->soft);
            cJSON_AddNumberToObject(p, "hard", partial->hard);
            cJSON_AddNumberToObject(p, "correct", partial->correct);
            cJSON_AddNumberToObject(p, "labelled", partial->labelled);
            cJSON_AddNumberToObject(p, "seen", partial->seen);
            cJSON_AddNumberToObject(p, "train_seconds", partial->train_seconds);
            cJSON_AddNumberToObject(p, "seconds", partial->seconds);
        }
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static double json_get(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0.0;
}

/* Reads the partial-epoch sums from a checkpoint's "run" metadata (zeros if absent). */
static void read_partial(const char *path, epoch_sums *s) {
    memset(s, 0, sizeof *s);
    kd_st_file f = {0};
    kd_err ignore;
    if (kd_st_read(&f, path, &ignore) != KD_OK) return;
    const char *run = kd_st_meta(&f, "run");
    cJSON *j = run ? cJSON_Parse(run) : NULL;
    const cJSON *p = j ? cJSON_GetObjectItemCaseSensitive(j, "partial") : NULL;
    if (cJSON_IsObject(p)) {
        s->loss = json_get(p, "loss");
        s->soft = json_get(p, "soft");
        s->hard = json_get(p, "hard");
        s->correct = json_get(p, "correct");
        s->labelled = json_get(p, "labelled");
        s->seen = json_get(p, "seen");
        s->train_seconds = json_get(p, "train_seconds");
        s->seconds = json_get(p, "seconds");
    }
    cJSON_Delete(j);
    kd_st_free(&f);
}

static kd_status save_checkpoint(trainer *t, const char *path, const kd_train_state *ts,
                                 size_t epoch, uint64_t step, double val_acc,
                                 const epoch_sums *partial, kd_err *err) {
    char *run = run_json(epoch, step, val_acc, partial);
    if (!run) return kd_err_set(err, KD_EIO, "out of memory");
    kd_ckpt_meta meta = {0};
    meta.class_names = t->class_names;
    meta.n_classes = t->n_class_names;
    meta.pp = t->pp;
    meta.extra_json = run;
    kd_status st = kd_ckpt_save(path, &t->model, &meta, ts, err);
    free(run);
    return st;
}

static int same_pp(const kd_preprocess *a, const kd_preprocess *b) {
    if (fabsf(a->scale - b->scale) > 1e-7f * fabsf(b->scale) || a->n_channels != b->n_channels)
        return 0;
    for (int c = 0; c < a->n_channels && c < KD_MAX_CHANNELS; c++)
        if (a->mean[c] != b->mean[c] || a->std[c] != b->std[c]) return 0;
    return 1;
}

static char *arch_with_input(const kd_shape *in, const cJSON *layers) {
    cJSON *o = cJSON_CreateObject(), *dims = cJSON_CreateArray();
    char *s = NULL;
    if (!o || !dims) {
        cJSON_Delete(o);
        cJSON_Delete(dims);
        return NULL;
    }
    for (int i = 0; i < in->rank; i++) cJSON_AddItemToArray(dims, cJSON_CreateNumber((double)in->d[i]));
    cJSON_AddItemToObject(o, "input", dims);
    cJSON_AddItemToObject(o, "layers", cJSON_Duplicate(layers, 1));
    s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
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
    kd_status st = open_source(ds, src, pp, what, err);
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

static kd_status open_data(trainer *t, kd_err *err) {
    const kd_config *cfg = t->cfg;
    kd_status st = open_source(&t->train_ds, &cfg->train, &cfg->pp, "training", err);
    if (st) return st;
    const kd_data_info *info = kd_dataset_info(t->train_ds);
    t->pp = kd_dataset_preprocess(t->train_ds);
    if (info->skip_note) emit_msg(t, KD_EV_WARNING, "WARNING: training data: %s", info->skip_note);
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
            t->val_is_split = 1;
        }
    }
    if (t->val_ds && !kd_dataset_info(t->val_ds)->has_labels) {
        emit_msg(t, KD_EV_NOTE, "validation data has no labels: no validation accuracy");
        t->n_val = 0;
    }

    if (cfg->has_test) {
        st = open_matching_source(&t->test_ds, &cfg->test, &cfg->pp, "test", &cfg->train, info,
                                  err);
        if (st) return st;
        const kd_data_info *ti = kd_dataset_info(t->test_ds);
        t->n_test = ti->has_labels ? ti->n : 0;
        if (!ti->has_labels) emit_msg(t, KD_EV_NOTE, "test data has no labels: no test accuracy");
    }

    /* Which training signal is available. */
    int want_labels = !cfg->has_teacher || cfg->distill.alpha < 1.0f;
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
    if (kd_augment_active(&cfg->augment)) {
        char a[64];
        if (info->shape.rank != 3)
            return kd_err_set(err, KD_EUSAGE,
                              "data.augment needs image samples [C, H, W], but the training data "
                              "%s gives %s%s",
                              cfg->train.path, kd_shape_str(&info->shape, a, sizeof a),
                              cfg->pp.flatten ? " (data.preprocess.flatten is on)" : "");
        t->aug_x = kd_alloc_floats(t->B * kd_shape_numel(&info->shape));
        if (!t->aug_x) return kd_err_set(err, KD_EIO, "out of memory for augmented batches");
    }
    return KD_OK;
}

static kd_status build_model(trainer *t, kd_err *err) {
    const kd_config *cfg = t->cfg;
    const kd_data_info *info = kd_dataset_info(t->train_ds);
    kd_shape in = cfg->has_input ? cfg->input : info->shape;
    char a[64], b[64];
    if (kd_shape_numel(&in) != kd_shape_numel(&info->shape))
        return kd_err_set(err, KD_EUSAGE, "model.input %s does not match the data's %s (%s)",
                          kd_shape_str(&in, a, sizeof a), kd_shape_str(&info->shape, b, sizeof b),
                          cfg->train.path);
    kd_status st = kd_model_init(&t->model, &in, cfg->layers, 1, err);
    if (st) {
        kd_err_prefix(err, "model.layers");
        return st;
    }
    t->C = t->model.n_classes;
    if (info->n_classes > t->C)
        return kd_err_set(err, KD_EUSAGE,
                          "model.layers: the last layer gives %zu outputs but the data %s has "
                          "%zu classes",
                          t->C, cfg->train.path, info->n_classes);
    if (t->C < 2)
        return kd_err_set(err, KD_EUSAGE, "model.layers: the last layer gives %zu output; a "
                          "classifier needs at least 2", t->C);
    if (cfg->classes) {
        /* Names from the config replace the data's ("0".."9" for IDX files). */
        size_t n = (size_t)cJSON_GetArraySize(cfg->classes);
        if (n != t->C)
            return kd_err_set(err, KD_EUSAGE,
                              "data.classes: %zu names, but the model gives %zu classes", n, t->C);
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

static kd_status build_teacher(trainer *t, kd_err *err) {
    const kd_config *cfg = t->cfg;
    const kd_data_info *info = kd_dataset_info(t->train_ds);
    char *arch = NULL;
    kd_preprocess tpp;
    int has_pp = 0;
    kd_status st = KD_OK;
    char a[64], b[64];
    struct stat sb;
    if (stat(cfg->teacher_path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        return kd_err_set(err, KD_EINPUT,
                          "teacher.checkpoint %s: %s (train the teacher first, e.g. "
                          "'distill train --config configs/fmnist-teacher.json')",
                          cfg->teacher_path,
                          stat(cfg->teacher_path, &sb) != 0 ? strerror(errno) : "not a file");
    }
    if (cfg->teacher_layers) {
        arch = arch_with_input(&info->shape, cfg->teacher_layers);
        if (!arch) return kd_err_set(err, KD_EIO, "out of memory");
    }
    st = kd_ckpt_load(cfg->teacher_path, arch, 0, 0, &t->teacher, &tpp, &has_pp, NULL, NULL, err);
    if (st) {
        if (st == KD_EIO) err->code = st = KD_EINPUT;
        if (!strstr(err->msg, cfg->teacher_path)) kd_err_prefix(err, "teacher %s", cfg->teacher_path);
        goto cleanup;
    }
    t->has_teacher = 1;
    if (kd_shape_numel(&t->teacher.input) != kd_shape_numel(&info->shape)) {
        st = kd_err_set(err, KD_EINPUT,
                        "teacher %s expects inputs of shape %s but the data %s gives %s",
                        cfg->teacher_path, kd_shape_str(&t->teacher.input, a, sizeof a),
                        cfg->train.path, kd_shape_str(&info->shape, b, sizeof b));
        goto cleanup;
    }
    if (info->n_classes > t->teacher.n_classes) {
        st = kd_err_set(err, KD_EINPUT,
                        "teacher %s gives %zu classes but the data %s has %zu classes",
                        cfg->teacher_path, t->teacher.n_classes, cfg->train.path, info->n_classes);
        goto cleanup;
    }
    if (t->teacher.n_classes != t->C) {
        st = kd_err_set(err, KD_EINPUT,
                        "teacher %s gives %zu classes but the model being trained "
                        "(model.layers) gives %zu",
                        cfg->teacher_path, t->teacher.n_classes, t->C);
        goto cleanup;
    }
    if (has_pp && !same_pp(&tpp, t->pp))
        emit_msg(t, KD_EV_WARNING,
                 "WARNING: the teacher was trained with different preprocessing (scale %g, %d "
                 "normalised channels) than this run (scale %g, %d): its soft targets may be "
                 "poor",
                 (double)tpp.scale, tpp.n_channels, (double)t->pp->scale, t->pp->n_channels);
    st = kd_model_reserve(&t->teacher, t->B, err);
cleanup:
    free(arch);
    return st;
}

static double test_accuracy_of_file(trainer *t, const char *path, kd_err *err, kd_status *st) {
    kd_model m = {0};
    double acc = NAN;
    *st = kd_ckpt_load(path, NULL, 0, 0, &m, NULL, NULL, NULL, NULL, err);
    if (*st == KD_OK) *st = kd_model_reserve(&m, t->B, err);
    if (*st == KD_OK) *st = kd_train_accuracy(&m, t->test_ds, NULL, kd_dataset_info(t->test_ds)->n,
                                              &acc, err);
    kd_model_free(&m);
    return acc;
}

static kd_status numeric_failure(trainer *t, const char *what, size_t epoch, uint64_t step,
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

static const char *nan_or_inf(double v) { return isnan(v) ? "NaN" : "Inf"; }

kd_status kd_train_run(const kd_train_opts *opts, kd_train_result *res, kd_err *err) {
    trainer tr = {0};
    trainer *t = &tr;
    const kd_config *cfg = opts->cfg;
    kd_status st = KD_OK;
    kd_loader *ld = NULL;
    kd_train_state ts = {0};
    char *cfg_json = NULL;
    double t_start = kd_now(), total_train_s = 0, total_samples = 0;

    memset(res, 0, sizeof *res);
    res->val_acc = res->best_val = res->test_acc = res->best_test_acc = NAN;
    res->teacher_val_acc = res->teacher_test_acc = NAN;
    t->cfg = cfg;
    t->opts = opts;
    t->res = res;
    t->B = cfg->batch_size;
    if (t->B == 0 || cfg->epochs == 0)
        return kd_err_set(err, KD_EUSAGE, "train.batch_size and train.epochs must be > 0");

    /* Output paths. */
    const char *out = opts->out_dir && *opts->out_dir ? opts->out_dir : cfg->out_dir;
    if (snprintf(t->out_dir, sizeof t->out_dir, "%s", out) >= (int)sizeof t->out_dir ||
        join_path(t->last_path, sizeof t->last_path, out, "last.safetensors") ||
        join_path(t->best_path, sizeof t->best_path, out, "best.safetensors") ||
        join_path(t->metrics_path, sizeof t->metrics_path, out, "metrics.jsonl"))
        return kd_err_set(err, KD_EUSAGE, "output folder path too long: %s", out);
    memcpy(res->out_dir, t->out_dir, sizeof res->out_dir);

    if (cfg->threads > 0) kd_blas_set_threads(cfg->threads);
    kd_rng_seed(&t->rng, cfg->seed);

    st = open_data(t, err);
    if (st) goto cleanup;
    st = build_model(t, err);
    if (st) goto cleanup;
    if (cfg->has_teacher) {
        st = build_teacher(t, err);
        if (st) goto cleanup;
    }
    res->n_params = t->model.n_params;
    res->teacher_params = t->has_teacher ? t->teacher.n_params : 0;

    /* Everything a step touches, allocated before the first step. */
    size_t BC = t->B * t->C;
    t->dlogits = kd_alloc_floats(BC);
    t->scratch = kd_alloc_floats(3 * BC);
    t->order = malloc((t->n_train ? t->n_train : 1) * sizeof *t->order);
    if (!t->dlogits || !t->scratch || !t->order) {
        st = kd_err_set(err, KD_EIO, "out of memory for training buffers");
        goto cleanup;
    }
    t->n_batches = (t->n_train + t->B - 1) / t->B;
    if (t->n_train == 0) {
        st = kd_err_set(err, KD_EUSAGE, "no training samples left after holding out validation");
        goto cleanup;
    }
    t->sched = kd_config_sched(cfg, t->n_batches);

    /* Resume: weights, moments, RNG, order and position from the checkpoint. */
    size_t start_epoch = 0, start_batch = 0;
    uint64_t step = 0;
    double best_val = -1.0;
    epoch_sums resumed = {0};
    if (opts->resume) {
        char *arch = kd_model_arch_json(&t->model);
        if (!arch) {
            st = kd_err_set(err, KD_EIO, "out of memory");
            goto cleanup;
        }
        kd_model loaded = {0};
        st = kd_ckpt_load(opts->resume, arch, 1, 0, &loaded, NULL, NULL, NULL, NULL, err);
        free(arch);
        if (st == KD_OK) st = kd_ckpt_load_train_state(opts->resume, &loaded, &ts, err);
        if (st == KD_OK) st = kd_model_reserve(&loaded, t->B, err);
        if (st) {
            kd_model_free(&loaded);
            if (st == KD_EIO) err->code = st = KD_EINPUT;
            if (!strstr(err->msg, opts->resume)) kd_err_prefix(err, "resume %s", opts->resume);
            goto cleanup;
        }
        kd_model_free(&t->model);
        t->model = loaded;
        if (ts.batch_in_epoch > 0 && (ts.n_order != t->n_train || !ts.order)) {
            st = kd_err_set(err, KD_EINPUT,
                            "resume %s: the checkpoint's epoch order has %zu samples but this "
                            "config's training set has %zu (different data or validation split?)",
                            opts->resume, ts.n_order, t->n_train);
            goto cleanup;
        }
        if (ts.batch_in_epoch >= t->n_batches) {
            st = kd_err_set(err, KD_EINPUT,
                            "resume %s: the checkpoint is at batch %llu of an epoch of %zu batches "
                            "(different batch size?)",
                            opts->resume, (unsigned long long)ts.batch_in_epoch, t->n_batches);
            goto cleanup;
        }
        for (size_t i = 0; ts.batch_in_epoch > 0 && i < ts.n_order; i++) {
            if (ts.order[i] >= kd_dataset_info(t->train_ds)->n) {
                st = kd_err_set(err, KD_EINPUT, "resume %s: order entry %zu is out of range",
                                opts->resume, i);
                goto cleanup;
            }
        }
        t->rng = ts.rng;
        step = ts.step;
        start_epoch = (size_t)ts.epoch;
        start_batch = (size_t)ts.batch_in_epoch;
        best_val = ts.best_val;
        if (start_batch) {
            memcpy(t->order, ts.order, t->n_train * sizeof *t->order);
            read_partial(opts->resume, &resumed);
        }
        t->last_good = opts->resume;
        res->epochs_done = start_epoch;
        res->steps = step;
        if (best_val >= 0) res->best_val = best_val;
    }

    /* Output folder: resolved config first, so a failed run still says what it ran. */
    st = make_dirs(t->out_dir, err);
    if (st) goto cleanup;
    cfg_json = kd_config_to_json(cfg);
    if (!cfg_json) {
        st = kd_err_set(err, KD_EIO, "out of memory");
        goto cleanup;
    }
    {
        char p[KD_PATH_MAX + 16];
        snprintf(p, sizeof p, "%s/config.json", t->out_dir);
        st = write_text(p, cfg_json, err);
        if (st) goto cleanup;
    }
    if (opts->resume) {
        st = metrics_reload(t, start_epoch, err);
        if (st) goto cleanup;
    }

    {
        kd_train_event ev = {0};
        ev.kind = KD_EV_SETUP;
        ev.model = &t->model;
        ev.teacher = t->has_teacher ? &t->teacher : NULL;
        ev.n_train = t->n_train;
        ev.n_val = t->n_val;
        ev.n_test = t->n_test;
        ev.n_batches = t->n_batches;
        ev.n_epochs = cfg->epochs;
        ev.epoch = start_epoch;
        ev.step = step;
        emit(t, &ev);
    }

    if (t->has_teacher) {
        double acc = NAN;
        if (t->n_val) {
            st = kd_train_accuracy(&t->teacher, t->val_ds, t->val_idx, t->n_val, &acc, err);
            if (st) goto cleanup;
        }
        res->teacher_val_acc = acc;
        kd_train_event ev = {0};
        ev.kind = KD_EV_TEACHER;
        ev.value = acc;
        emit(t, &ev);
        double chance = 1.0 / (double)t->C;
        if (isfinite(acc) && acc <= chance + 0.05)
            emit_msg(t, KD_EV_WARNING,
                     "WARNING: the teacher's validation accuracy %.2f%% is within 5 points of "
                     "chance (%.2f%%): it is untrained or does not fit this data, and the "
                     "student will learn little from it",
                     100 * acc, 100 * chance);
    }

    const int use_teacher = t->has_teacher && cfg->distill.alpha > 0.0f;
    kd_ctx sctx = {1, &t->rng, NULL};
    kd_ctx tctx = {0, NULL, NULL};

    for (size_t epoch = start_epoch; epoch < cfg->epochs; epoch++) {
        size_t first_batch = 0;
        epoch_sums sums = {0};
        if (epoch == start_epoch && start_batch) {
            first_batch = start_batch;
            sums = resumed;
        } else {
            /* A fresh permutation of the sorted training list each epoch, so the order depends
             * only on the RNG state at the epoch's start (what a checkpoint saves). */
            memcpy(t->order, t->train_idx, t->n_train * sizeof *t->order);
            kd_rng_shuffle(&t->rng, t->order, t->n_train);
        }
        double t_epoch = kd_now() - sums.seconds;
        size_t skip = first_batch * t->B;
        st = kd_loader_open(&ld, t->train_ds, t->order + skip, t->n_train - skip, t->B, err);
        if (st) goto cleanup;
        {
            kd_train_event ev = {0};
            ev.kind = KD_EV_EPOCH_BEGIN;
            ev.epoch = epoch + 1;
            ev.n_epochs = cfg->epochs;
            ev.batch = first_batch;
            ev.n_batches = t->n_batches;
            ev.step = step;
            emit(t, &ev);
        }
        size_t batch = first_batch;
        float lr = kd_sched_lr(&t->sched, step);
        int stopped = 0;
        for (;;) {
            kd_batch b;
            double t0 = kd_now();
            st = kd_loader_next(ld, &b, err);
            if (st) goto cleanup;
            if (b.n == 0) break;
            const int32_t *labels = t->labels_available ? b.y : NULL;
            /* Teacher and student see the same augmented batch: the teacher's soft targets
             * describe the image the student is shown. The draws come from the run's RNG, so
             * the checkpointed RNG state makes a resumed run repeat them. */
            const float *x = b.x;
            if (t->aug_x) {
                kd_augment_batch(&cfg->augment, &kd_dataset_info(t->train_ds)->shape, b.x,
                                 t->aug_x, b.n, &t->rng);
                x = t->aug_x;
            }
            /* Step: teacher forward (eval) -> student forward (train) -> loss -> backward -> update. */
            kd_loss_terms lt = {0};
            const float *zs;
            if (use_teacher) {
                const float *zt = kd_model_forward(&t->teacher, x, b.n, &tctx);
                if (!kd_all_finite(zt, b.n * t->C)) {
                    st = numeric_failure(t, "teacher logits contain NaN/Inf", epoch + 1, step + 1,
                                         batch + 1, err);
                    goto cleanup;
                }
                zs = kd_model_forward(&t->model, x, b.n, &sctx);
                lt = kd_loss_distill(&cfg->distill, zs, zt, labels, b.n, t->C, t->dlogits,
                                     t->scratch);
            } else {
                zs = kd_model_forward(&t->model, x, b.n, &sctx);
                lt.hard = kd_loss_ce(zs, labels, b.n, t->C, t->dlogits);
                lt.total = lt.hard;
            }
            if (!isfinite(lt.total)) {
                char what[64];
                snprintf(what, sizeof what, "loss is %s", nan_or_inf(lt.total));
                st = numeric_failure(t, what, epoch + 1, step + 1, batch + 1, err);
                goto cleanup;
            }
            if (labels)
                for (size_t i = 0; i < b.n; i++) {
                    if (labels[i] < 0) continue;
                    sums.labelled += 1;
                    sums.correct += argmax_row(zs + i * t->C, t->C) == (size_t)labels[i];
                }
            kd_model_zero_grad(&t->model);
            kd_model_backward(&t->model, x, t->dlogits, b.n, &sctx);
            lr = kd_sched_lr(&t->sched, step);
            double gnorm = kd_optim_step(&cfg->optim, t->model.params, t->model.grads,
                                         t->model.m, t->model.v, t->model.n_params, lr, step + 1);
            if (!isfinite(gnorm)) {
                char what[64];
                snprintf(what, sizeof what, "gradient norm is %s", nan_or_inf(gnorm));
                st = numeric_failure(t, what, epoch + 1, step + 1, batch + 1, err);
                goto cleanup;
            }
            step++;
            batch++;
            sums.loss += lt.total * (double)b.n;
            sums.soft += lt.soft * (double)b.n;
            sums.hard += lt.hard * (double)b.n;
            sums.seen += (double)b.n;
            sums.train_seconds += kd_now() - t0;
            res->steps = step;
            if (opts->progress) {
                kd_train_event ev = {0};
                ev.kind = KD_EV_BATCH;
                ev.epoch = epoch + 1;
                ev.n_epochs = cfg->epochs;
                ev.batch = batch;
                ev.n_batches = t->n_batches;
                ev.step = step;
                ev.running_loss = sums.loss / sums.seen;
                ev.samples_per_s = sums.train_seconds > 0 ? sums.seen / sums.train_seconds : 0;
                ev.epoch_seconds = kd_now() - t_epoch;
                emit(t, &ev);
            }
            /* SIGINT: finish this step, then stop (at the epoch's end, after its checkpoint). */
            if (opts->stop && *opts->stop && batch < t->n_batches) {
                stopped = 1;
                break;
            }
        }
        kd_loader_close(ld);
        ld = NULL;
        total_train_s += sums.train_seconds;
        total_samples += sums.seen;

        /* Never write weights that went non-finite (an update can overflow without a NaN
         * gradient). */
        if (!kd_all_finite(t->model.params, t->model.n_params)) {
            st = numeric_failure(t, "weights became NaN/Inf", epoch + 1, step, batch, err);
            goto cleanup;
        }

        if (stopped) {
            /* Interrupted mid-epoch (always after at least one step of it, so the epoch's
             * order is drawn and saved): record the exact position. */
            sums.seconds = kd_now() - t_epoch;
            kd_train_state s = {0};
            s.step = step;
            s.epoch = epoch;
            s.batch_in_epoch = batch;
            s.rng = t->rng;
            s.order = t->order;
            s.n_order = t->n_train;
            s.best_val = best_val;
            st = save_checkpoint(t, t->last_path, &s, epoch, step, NAN, &sums, err);
            if (st) goto cleanup;
            memcpy(res->last_path, t->last_path, sizeof res->last_path);
            res->interrupted = 1;
            goto cleanup;
        }

        /* End of epoch: validation, best, last, metrics. */
        kd_epoch_metrics em = {0};
        em.epoch = epoch + 1;
        em.loss = sums.seen ? sums.loss / sums.seen : NAN;
        em.soft = sums.seen ? sums.soft / sums.seen : NAN;
        em.hard = sums.seen && t->labels_available ? sums.hard / sums.seen : NAN;
        em.train_acc = sums.labelled ? sums.correct / sums.labelled : NAN;
        em.lr = shortest(lr);
        em.samples_per_s = sums.train_seconds > 0 ? sums.seen / sums.train_seconds : NAN;
        em.val_acc = NAN;
        if (t->n_val) {
            st = kd_train_accuracy(&t->model, t->val_ds, t->val_idx, t->n_val, &em.val_acc, err);
            if (st) goto cleanup;
        }
        res->val_acc = em.val_acc;
        int improved = !isfinite(em.val_acc) || em.val_acc > best_val;
        if (isfinite(em.val_acc) && em.val_acc > best_val) best_val = em.val_acc;
        if (best_val >= 0) res->best_val = best_val;
        if (improved && cfg->save_best) {
            st = save_checkpoint(t, t->best_path, NULL, epoch + 1, step, em.val_acc, NULL, err);
            if (st) goto cleanup;
            memcpy(res->best_path, t->best_path, sizeof res->best_path);
        }
        kd_train_state s = {0};
        s.step = step;
        s.epoch = epoch + 1;
        s.batch_in_epoch = 0;
        s.rng = t->rng;
        s.order = t->order;
        s.n_order = t->n_train;
        s.best_val = best_val;
        st = save_checkpoint(t, t->last_path, &s, epoch + 1, step, em.val_acc, NULL, err);
        if (st) goto cleanup;
        t->last_good = t->last_path;
        memcpy(res->last_path, t->last_path, sizeof res->last_path);
        res->epochs_done = epoch + 1;
        em.seconds = kd_now() - t_epoch;
        char *line = metrics_line(&em);
        if (!line) {
            st = kd_err_set(err, KD_EIO, "out of memory");
            goto cleanup;
        }
        st = metrics_append(t, line, err);
        free(line);
        if (st == KD_OK) st = write_text(t->metrics_path, t->metrics, err);
        if (st) goto cleanup;
        kd_train_event ev = {0};
        ev.kind = KD_EV_EPOCH_END;
        ev.epoch = epoch + 1;
        ev.n_epochs = cfg->epochs;
        ev.batch = batch;
        ev.n_batches = t->n_batches;
        ev.step = step;
        ev.metrics = &em;
        emit(t, &ev);
        if (opts->stop && *opts->stop && epoch + 1 < cfg->epochs) {
            res->interrupted = 1;
            goto cleanup;
        }
    }

    /* Test accuracy: the final model, and best.safetensors when it is a different model. */
    if (t->n_test) {
        emit_msg(t, KD_EV_EVAL, "test");
        st = kd_train_accuracy(&t->model, t->test_ds, NULL, kd_dataset_info(t->test_ds)->n,
                               &res->test_acc, err);
        if (st) goto cleanup;
        struct stat sb;
        if (cfg->save_best && stat(t->best_path, &sb) == 0) {
            res->best_test_acc = test_accuracy_of_file(t, t->best_path, err, &st);
            if (st) goto cleanup;
            memcpy(res->best_path, t->best_path, sizeof res->best_path);
        }
        if (t->has_teacher) {
            st = kd_train_accuracy(&t->teacher, t->test_ds, NULL, kd_dataset_info(t->test_ds)->n,
                                   &res->teacher_test_acc, err);
            if (st) goto cleanup;
        }
    }

cleanup:
    res->seconds = kd_now() - t_start;
    res->samples_per_s = total_train_s > 0 ? total_samples / total_train_s : NAN;
    kd_loader_close(ld);
    free(ts.order);
    free(cfg_json);
    free(t->metrics);
    free(t->order);
    kd_free_aligned(t->aug_x);
    kd_free_aligned(t->dlogits);
    kd_free_aligned(t->scratch);
    kd_model_free(&t->model);
    kd_model_free(&t->teacher);
    if (t->cfg->classes) free(t->class_names); /* else it is the dataset's */
    free(t->train_idx);
    free(t->val_idx);
    if (t->val_ds && t->val_ds != t->train_ds) kd_dataset_close(t->val_ds);
    kd_dataset_close(t->train_ds);
    kd_dataset_close(t->test_ds);
    return st;
}
