/* teachers.c - a step's teachers: online models (one, or an ensemble mixed by weight) or the
 * soft-target cache; loading a config's teachers with their fit checks; their validation
 * accuracy, each and mixed. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kd_checkpoint.h"
#include "kd_eval.h"
#include "kd_loss.h"
#include "kd_path.h"
#include "kd_teacher.h"

kd_status kd_teacher_set_online(kd_teacher_set *ts, kd_model *const *models, const float *weights,
                                size_t n, size_t batch_cap, kd_err *err) {
    memset(ts, 0, sizeof *ts);
    KD_ASSERT(n >= 1 && n <= KD_MAX_TEACHERS);
    ts->n = n;
    ts->n_classes = models[0]->n_classes;
    ts->batch_cap = batch_cap;
    ts->views = 1;
    for (size_t k = 0; k < n; k++) {
        if (models[k]->n_classes != ts->n_classes)
            return kd_err_set(err, KD_EUSAGE, "teacher %zu gives %zu classes, teacher 1 %zu",
                              k + 1, models[k]->n_classes, ts->n_classes);
        ts->model[k] = models[k];
        ts->weight[k] = weights ? weights[k] : 1.0f / (float)n;
        kd_status st = kd_model_reserve(models[k], batch_cap, err);
        if (st) return st;
    }
    return KD_OK;
}

kd_status kd_teacher_set_cached(kd_teacher_set *ts, const kd_cache *cache, size_t batch_cap,
                                kd_err *err) {
    const kd_cache_meta *m = kd_cache_info(cache);
    size_t n;
    memset(ts, 0, sizeof *ts);
    ts->n = m->n_teachers;
    ts->n_classes = m->n_classes;
    ts->batch_cap = batch_cap;
    ts->cache = cache;
    ts->views = m->views;
    ts->view_seed = m->view_seed;
    for (size_t k = 0; k < ts->n; k++) ts->weight[k] = (float)m->weight[k];
    if (kd_mul_size(ts->n * batch_cap, ts->n_classes, &n) || !(ts->buf = kd_alloc_floats(n)))
        return kd_err_set(err, KD_EIO, "out of memory for cached teacher logits");
    return KD_OK;
}

void kd_teacher_set_free(kd_teacher_set *ts) {
    if (!ts) return;
    kd_free_aligned(ts->buf);
    memset(ts, 0, sizeof *ts);
}

kd_status kd_teacher_logits(kd_teacher_set *ts, const float *x, const size_t *idx,
                            const uint32_t *view, size_t n, const float **zt, kd_err *err) {
    KD_ASSERT(n <= ts->batch_cap);
    if (ts->cache) {
        KD_ASSERT(idx != NULL);
        kd_status st = kd_cache_logits(ts->cache, idx, view, n, ts->buf, err);
        for (size_t k = 0; k < ts->n; k++) zt[k] = ts->buf + k * n * ts->n_classes;
        return st;
    }
    for (size_t k = 0; k < ts->n; k++) {
        kd_ctx ctx = {0, NULL, NULL, 0, 0, 0};
        zt[k] = kd_model_forward(ts->model[k], x, n, &ctx);
        if (!kd_all_finite(zt[k], n * ts->n_classes)) {
            if (ts->n == 1) return kd_err_set(err, KD_ENUMERIC, "teacher logits contain NaN/Inf");
            return kd_err_set(err, KD_ENUMERIC, "teacher %zu's logits contain NaN/Inf", k + 1);
        }
    }
    return KD_OK;
}

const char *kd_teacher_name(const kd_config *cfg, size_t i, char *buf, size_t cap) {
    if (cfg->ensemble) snprintf(buf, cap, "teacher.ensemble[%zu] %s", i, cfg->teachers[i].path);
    else snprintf(buf, cap, "teacher %s", cfg->teachers[i].path);
    return buf;
}

/* {"input": [...], "layers": LAYERS} for a teacher file without "arch"; NULL when out of
 * memory. */
static char *arch_with_input(const kd_shape *in, const cJSON *layers) {
    cJSON *o = cJSON_CreateObject();
    cJSON *dims = o ? cJSON_AddArrayToObject(o, "input") : NULL;
    char *s = NULL;
    int ok = dims && cJSON_AddItemToObject(o, "layers", cJSON_Duplicate(layers, 1));
    for (int i = 0; ok && i < in->rank; i++)
        ok = cJSON_AddItemToArray(dims, cJSON_CreateNumber((double)in->d[i]));
    if (ok) s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* The path from folder `from` to `to` (both absolute and clean): "../runs/t/best.safetensors". */
static void relative_path(const char *from, const char *to, char *out, size_t cap) {
    size_t common = 0, i = 0;
    /* The longest shared run of whole components. */
    for (; from[i] && from[i] == to[i]; i++)
        if (from[i] == '/') common = i;
    if (from[i] == '\0' && (to[i] == '/' || to[i] == '\0')) common = i;
    size_t used = 0;
    for (const char *p = from + common; *p; p++)
        if (*p == '/' && used + 4 < cap) used += (size_t)snprintf(out + used, cap - used, "../");
    snprintf(out + used, cap - used, "%s", to[common] == '/' ? to + common + 1 : to + common);
}

/* A teacher checkpoint that is not there: the folder its relative path was resolved against
 * (the config's, a documented rule that differs from the run folder's, the current one), and
 * the path to write when the file is found relative to the current folder instead. */
static kd_status missing_teacher(const kd_config *cfg, const char *path, const char *name,
                                 kd_err *err) {
    struct stat sb;
    const char *why = stat(path, &sb) != 0 ? strerror(errno) : "not a file";
    char dir[KD_PATH_MAX], *base = NULL, *found = NULL;
    if (cfg->path[0] && kd_path_dirname(dir, sizeof dir, cfg->path) == 0) base = realpath(dir, NULL);
    size_t nb = base ? strlen(base) : 0;
    /* The same relative path taken from the current folder, as a user may have meant it. */
    if (base && strncmp(path, base, nb) == 0 && path[nb] == '/' &&
        stat(path + nb + 1, &sb) == 0 && S_ISREG(sb.st_mode))
        found = realpath(path + nb + 1, NULL);
    if (found) {
        char rel[KD_PATH_MAX];
        relative_path(base, found, rel, sizeof rel);
        kd_err_set(err, KD_EINPUT, "%s: %s. A relative teacher path is resolved against the "
                   "config's folder %s, not the current folder; the file is at %s: write "
                   "\"%s\" (relative to the config) or the absolute path", name, why, base,
                   path + nb + 1, rel);
    } else if (base) {
        kd_err_set(err, KD_EINPUT, "%s: %s (relative teacher paths are resolved against the "
                   "config's folder %s; train the teacher first, or point teacher.checkpoint "
                   "at its best.safetensors)", name, why, base);
    } else {
        kd_err_set(err, KD_EINPUT, "%s: %s (train the teacher first, or point "
                   "teacher.checkpoint at its best.safetensors)", name, why);
    }
    free(base);
    free(found);
    return KD_EINPUT;
}

/* Class names of the teacher against the run's: a warning naming the first that differs. */
static void check_names(const char *name, char **tn, size_t n_tn, char *const *names,
                        size_t n_names, char *warning, size_t cap) {
    if (!tn || !names || warning[0]) return;
    for (size_t c = 0; c < n_tn && c < n_names; c++) {
        if (strcmp(tn[c], names[c]) == 0) continue;
        snprintf(warning, cap, "WARNING: %s names class %zu \"%.60s\" but the data calls it "
                 "\"%.60s\": a teacher trained on other classes gives meaningless soft targets",
                 name, c, tn[c], names[c]);
        return;
    }
}

kd_status kd_teacher_load(const kd_config *cfg, size_t i, const kd_shape *shape,
                          size_t n_data_classes, char *const *names, size_t n_names,
                          const kd_preprocess *pp, size_t n_classes, kd_model *m, char *warning,
                          size_t warning_cap, kd_err *err) {
    const kd_teacher_cfg *tc = &cfg->teachers[i];
    char name[KD_PATH_MAX + 64], a[64], b[64], *arch = NULL;
    kd_preprocess tpp;
    int has_pp = 0;
    struct stat sb;
    kd_status st = KD_OK;
    warning[0] = '\0';
    kd_teacher_name(cfg, i, name, sizeof name);
    if (stat(tc->path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return missing_teacher(cfg, tc->path, name, err);
    if (tc->layers && !(arch = arch_with_input(shape, tc->layers)))
        return kd_err_set(err, KD_EIO, "out of memory");
    kd_err_clear(err);
    char **tnames = NULL;
    size_t n_tnames = 0;
    if (kd_path_has_suffix(tc->path, ".onnx", 1)) {
        kd_onnx_info info;
        free(arch);
        arch = NULL;
        st = kd_teacher_load_onnx(tc->path, tc->output, tc->pp_mode, &tc->pp, pp, m, &info, err);
        if (!st && info.note[0]) snprintf(warning, warning_cap, "%s: %s", name, info.note);
        kd_onnx_info_free(&info);
        kd_preprocess_defaults(&tpp);
    } else {
        st = kd_ckpt_load(tc->path, arch, 0, 0, m, &tpp, &has_pp, &tnames, &n_tnames, err);
        if (!st) st = kd_model_freeze(m, err);
    }
    free(arch);
    if (st == KD_OK) check_names(name, tnames, n_tnames, names, n_names, warning, warning_cap);
    kd_free_strings(tnames, n_tnames);
    if (st == KD_OK && err->msg[0]) {  /* a note: the tensor-name prefix stripped */
        size_t used = strlen(warning);
        snprintf(warning + used, warning_cap - used, "%s%s", used ? "\n" : "", err->msg);
        kd_err_clear(err);
    }
    if (st) {
        if (st == KD_EIO) err->code = st = KD_EINPUT;
        if (!strstr(err->msg, tc->path)) kd_err_prefix(err, "%s", name);
        return st;
    }
    const int pp_differs = has_pp && !kd_preprocess_same(&tpp, pp);
    kd_preprocess_free(&tpp);  /* its scale and channel count stay for the message */
    if (kd_shape_numel(&m->input) != kd_shape_numel(shape))
        return kd_err_set(err, KD_EINPUT, "%s expects inputs of shape %s but the data gives %s",
                          name, kd_shape_str(&m->input, a, sizeof a), kd_shape_str(shape, b, sizeof b));
    /* More outputs than classes is no safer than fewer: its soft targets spread probability
     * over classes the data does not have. */
    if (n_data_classes && n_data_classes != m->n_classes)
        return kd_err_set(err, KD_EINPUT, "%s gives %zu classes but the data has %zu classes",
                          name, m->n_classes, n_data_classes);
    if (n_classes && m->n_classes != n_classes)
        return kd_err_set(err, KD_EINPUT, "%s gives %zu classes but the model being trained "
                          "(model.layers) gives %zu", name, m->n_classes, n_classes);
    size_t used = strlen(warning);
    if (pp_differs)
        snprintf(warning + used, warning_cap - used, "%s"
                 "WARNING: %s was trained with different preprocessing (scale %g, %d normalised "
                 "channels) than this run (scale %g, %d; or other per-feature statistics): its "
                 "soft targets may be poor",
                 used ? "\n" : "", name, (double)tpp.scale, tpp.n_channels, (double)pp->scale, pp->n_channels);
    return KD_OK;
}

kd_status kd_teacher_accuracy(kd_teacher_set *ts, kd_dataset *ds, const size_t *idx, size_t n,
                              double *acc, double *mix_acc, kd_err *err) {
    const size_t C = ts->n_classes;
    size_t hits[KD_MAX_TEACHERS] = {0}, mix_hits = 0, counted = 0, *all = NULL;
    double *p = NULL;
    kd_loader *ld = NULL;
    kd_status st = KD_OK;
    for (size_t k = 0; k < ts->n; k++) acc[k] = NAN;
    *mix_acc = NAN;
    if (n == 0) return KD_OK;
    KD_ASSERT(!ts->cache);
    if (!idx) {
        if (!(all = malloc(n * sizeof *all))) return kd_err_set(err, KD_EIO, "out of memory");
        for (size_t i = 0; i < n; i++) all[i] = i;
        idx = all;
    }
    if (!(p = malloc(C * sizeof *p))) {
        st = kd_err_set(err, KD_EIO, "out of memory");
        goto cleanup;
    }
    if ((st = kd_loader_open(&ld, ds, idx, n, ts->batch_cap, err))) goto cleanup;
    for (;;) {
        kd_batch b;
        const float *zt[KD_MAX_TEACHERS];
        if ((st = kd_loader_next(ld, &b, err)) || b.n == 0) break;
        /* Plain forwards: NaN logits only make a wrong argmax here; the step refuses them. */
        for (size_t k = 0; k < ts->n; k++) {
            kd_ctx ctx = {0, NULL, NULL, 0, 0, 0};
            zt[k] = kd_model_forward(ts->model[k], b.x, b.n, &ctx);
        }
        for (size_t i = 0; i < b.n; i++) {
            if (b.y[i] < 0) continue;
            counted++;
            for (size_t k = 0; k < ts->n; k++)
                hits[k] += kd_argmax(zt[k] + i * C, C) == (size_t)b.y[i];
            /* the mixture at T = 1: sum_k w_k softmax(z_k) (the loss's own, kd_mix_row) */
            kd_mix_row mr;
            kd_mix_row_init(&mr, zt, ts->weight, ts->n, i, C, 1.0);
            for (size_t j = 0; j < C; j++) {
                double lp;
                p[j] = kd_mix_prob(&mr, j, &lp);
            }
            size_t best = 0;
            for (size_t j = 1; j < C; j++)
                if (p[j] > p[best]) best = j;
            mix_hits += best == (size_t)b.y[i];
        }
    }
    if (!st && counted) {
        for (size_t k = 0; k < ts->n; k++) acc[k] = (double)hits[k] / (double)counted;
        *mix_acc = (double)mix_hits / (double)counted;
    }
cleanup:
    kd_loader_close(ld);
    free(p);
    free(all);
    return st;
}
