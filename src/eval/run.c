/* run.c - evaluation runs shared by `eval` and `export`: choosing the data (config, run folder
 * or IDX files; test or validation split), loading checkpoints against it, checking that a
 * model fits the data, and timing forward passes (the evaluation loop itself: forward.c). */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kd_checkpoint.h"
#include "kd_config.h"
#include "kd_eval.h"

void kd_eval_data_free(kd_eval_data *d) {
    if (!d) return;
    free(d->layers_json);
    free(d->teacher_layers_json);
    free(d->order);
    kd_preprocess_free(&d->pp);
    d->layers_json = d->teacher_layers_json = NULL;
    d->order = NULL;
    d->n = 0;
}

kd_status kd_eval_data_from_config(kd_eval_data *d, const char *config_path,
                                   const char *const *over, size_t n_over, const char *split,
                                   kd_err *err) {
    kd_config c;
    memset(d, 0, sizeof *d);
    memset(&c, 0, sizeof c);
    kd_status st = kd_config_load(&c, config_path, over, n_over, err);
    if (st) return st;
    if (!split) split = "test";
    snprintf(d->split, sizeof d->split, "%s", split);
    d->has_config = 1;
    if ((st = kd_preprocess_copy(&d->pp, &c.pp, err))) goto cleanup;
    d->threads = c.threads;
    d->has_input = c.has_input;
    d->input = c.input;
    if (strcmp(split, "test") == 0) {
        if (!c.has_test) {
            st = kd_err_set(err, KD_EUSAGE,
                            "%s: no test data (data.test); use --split validation or give the "
                            "data with --data/--labels",
                            config_path);
            goto cleanup;
        }
        d->src = c.test;
    } else if (strcmp(split, "validation") == 0) {
        if (c.has_val_source) {
            d->src = c.val;
        } else {
            /* The same hold-out the trainer used (see kd_eval_data_open). */
            d->src = c.train;
            d->split_from_train = 1;
            d->val_count = c.val_count;
            d->val_fraction = c.val_fraction;
        }
    } else if (strcmp(split, "train") == 0) {
        d->src = c.train;
        d->split_from_train = d->train_part = 1;
        d->val_count = c.has_val_source ? 0 : c.val_count;
        d->val_fraction = c.has_val_source ? 0 : c.val_fraction;
    } else {
        st = kd_err_set(err, KD_EUSAGE, "unknown split \"%s\" (expected test or validation)", split);
        goto cleanup;
    }
    if (c.layers) {
        d->layers_json = cJSON_PrintUnformatted(c.layers);
        if (!d->layers_json) st = kd_err_set(err, KD_EIO, "out of memory");
    }
    if (!st && c.teachers[0].layers) {
        d->teacher_layers_json = cJSON_PrintUnformatted(c.teachers[0].layers);
        if (!d->teacher_layers_json) st = kd_err_set(err, KD_EIO, "out of memory");
    }
cleanup:
    kd_config_free(&c);
    if (st) kd_eval_data_free(d);
    return st;
}

kd_status kd_eval_data_from_idx(kd_eval_data *d, const char *images, const char *labels,
                                kd_err *err) {
    memset(d, 0, sizeof *d);
    kd_data_source_defaults(&d->src);
    kd_preprocess_defaults(&d->pp);
    d->src.format = KD_FMT_IDX;
    snprintf(d->src.path, sizeof d->src.path, "%s", images);
    if (labels) snprintf(d->src.labels_path, sizeof d->src.labels_path, "%s", labels);
    snprintf(d->split, sizeof d->split, "%s", "test");
    if (strlen(images) >= sizeof d->src.path || (labels && strlen(labels) >= sizeof d->src.labels_path))
        return kd_err_set(err, KD_EUSAGE, "path too long");
    return KD_OK;
}

kd_status kd_eval_data_open(kd_eval_data *d, const kd_preprocess *pp, kd_dataset **ds,
                            kd_err *err) {
    size_t *train_idx = NULL, *val_idx = NULL, n_train = 0, n_val = 0;
    kd_status st = kd_dataset_open(ds, &d->src, pp, err);
    if (st) return st;
    if (d->order) return KD_OK;
    size_t n = kd_dataset_info(*ds)->n;
    if (d->split_from_train) {
        /* Exactly the trainer's hold-out (src/train/trainer.c): a count wins over a fraction,
         * the fraction is rounded to nearest, and the permutation uses its fixed split seed. */
        if (d->val_count > 0)
            n_val = d->val_count;
        else if (d->val_fraction > 0)
            n_val = (size_t)llround(d->val_fraction * (double)n);
        if (n_val >= n) {
            st = kd_err_set(err, KD_EUSAGE,
                            "data.validation_split holds out %zu samples but %s has only %zu",
                            n_val, d->src.path, n);
            goto cleanup;
        }
        st = kd_split(n, n_val, KD_SPLIT_SEED, &train_idx, &n_train, &val_idx, err);
        if (st) goto cleanup;
        if (d->train_part) {
            d->order = train_idx, d->n = n_train;
            train_idx = NULL;
            goto cleanup;
        }
        if (n_val == 0) {
            st = kd_err_set(err, KD_EUSAGE,
                            "%s: the config holds out no validation samples "
                            "(data.validation_split is 0)",
                            d->src.path);
            goto cleanup;
        }
        d->order = val_idx;
        d->n = n_val;
        val_idx = NULL;
    } else {
        d->order = malloc((n ? n : 1) * sizeof *d->order);
        if (!d->order) {
            st = kd_err_set(err, KD_EIO, "out of memory");
            goto cleanup;
        }
        for (size_t i = 0; i < n; i++) d->order[i] = i;
        d->n = n;
    }
cleanup:
    free(train_idx);
    free(val_idx);
    if (st) {
        kd_dataset_close(*ds);
        *ds = NULL;
    }
    return st;
}

char *kd_eval_data_arch(const kd_eval_data *d, int teacher, const kd_shape *data_shape) {
    const char *layers = teacher ? d->teacher_layers_json : d->layers_json;
    if (!layers) return NULL;
    const kd_shape *in = d->has_input ? &d->input : data_shape;
    if (!in) return NULL;
    char dims[128] = "";
    size_t len = 0;
    for (int i = 0; i < in->rank; i++)
        len += (size_t)snprintf(dims + len, sizeof dims - len, "%s%zu", i ? "," : "", in->d[i]);
    size_t cap = strlen(layers) + len + 64;
    char *s = malloc(cap);
    if (s) snprintf(s, cap, "{\"input\":[%s],\"layers\":%s}", dims, layers);
    return s;
}

kd_status kd_eval_load_model(const char *path, const kd_eval_data *d, const kd_shape *data_shape,
                             kd_model *m, kd_preprocess *pp_out, int *has_pp, char ***classes,
                             size_t *n_classes, kd_err *err) {
    memset(m, 0, sizeof *m);
    /* A checkpoint named on the command line that is not there is a bad input (exit 3), not
     * an I/O failure. */
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return kd_err_set(err, KD_EINPUT, "%s: no such checkpoint file", path);
    /* Training state tensors (optim.*, train.*) are always accepted by the loader. */
    kd_status st = kd_ckpt_load(path, NULL, 0, 0, m, pp_out, has_pp, classes, n_classes, err);
    if (st != KD_EUSAGE || !d) return st;
    /* No "arch" in the file (a plain PyTorch export): try the config's student, then teacher. */
    kd_err first = *err;
    for (int teacher = 0; teacher < 2; teacher++) {
        char *arch = kd_eval_data_arch(d, teacher, data_shape);
        if (!arch) continue;
        kd_model_free(m);
        memset(m, 0, sizeof *m);
        st = kd_ckpt_load(path, arch, 0, 0, m, pp_out, has_pp, classes, n_classes, err);
        free(arch);
        if (!st) return KD_OK;
    }
    *err = first;
    return first.code;
}

kd_status kd_eval_check_fit(const kd_model *m, const char *model_path, const kd_data_info *info,
                            const char *data_path, kd_err *err) {
    const kd_eval_net net = {m->input, m->n_classes, NULL, NULL, NULL};
    return kd_eval_check_fit_net(&net, model_path, info, data_path, err);
}

kd_status kd_eval_check_fit_net(const kd_eval_net *m, const char *model_path,
                                const kd_data_info *info, const char *data_path, kd_err *err) {
    char ms[96], ds[96];
    kd_shape_str(&m->input, ms, sizeof ms);
    kd_shape_str(&info->shape, ds, sizeof ds);
    int same = m->input.rank == info->shape.rank;
    for (int i = 0; same && i < m->input.rank; i++) same = m->input.d[i] == info->shape.d[i];
    /* A flat model reads a [C, H, W] sample in row-major order, as torch's flatten does. */
    int flat_ok = (m->input.rank == 1 || info->shape.rank == 1) &&
                  kd_shape_numel(&m->input) == kd_shape_numel(&info->shape);
    if (!same && !flat_ok)
        return kd_err_set(err, KD_EINPUT,
                          "%s: model input shape %s does not fit the data %s (samples of shape %s)",
                          model_path, ms, data_path, ds);
    if (info->has_labels && info->n_classes > m->n_classes)
        return kd_err_set(err, KD_EINPUT,
                          "%s: model has %zu classes but the data %s has labels up to %zu "
                          "(%zu classes)",
                          model_path, m->n_classes, data_path, info->n_classes - 1,
                          info->n_classes);
    return KD_OK;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

kd_status kd_eval_latency(kd_model *m, kd_dataset *ds, const size_t *order, size_t n,
                          double budget_s, double *p50_us, double *p99_us, kd_err *err) {
    kd_eval_net net = kd_eval_net_model(m);
    return kd_eval_latency_net(&net, ds, order, n, budget_s, p50_us, p99_us, err);
}

kd_status kd_eval_latency_net(const kd_eval_net *net, kd_dataset *ds, const size_t *order,
                              size_t n, double budget_s, double *p50_us, double *p99_us,
                              kd_err *err) {
    /* 2000 calls put 20 above the p99 mark: enough, and quick for small models. */
    enum { MAX_SAMPLES = 64, MAX_REPS = 2000, MIN_REPS = 50 };
    size_t ns = n < MAX_SAMPLES ? n : MAX_SAMPLES, numel = kd_shape_numel(&net->input);
    float *x = NULL;
    double *t = NULL;
    size_t reps = 0;
    *p50_us = *p99_us = 0.0;
    kd_status st = KD_OK;
    if (ns == 0) return KD_OK;
    x = malloc(ns * numel * sizeof *x);
    t = malloc(MAX_REPS * sizeof *t);
    if (!x || !t) {
        st = kd_err_set(err, KD_EIO, "out of memory");
        goto cleanup;
    }
    st = kd_dataset_get(ds, order, ns, x, NULL, NULL, err);
    if (!st) st = net->reserve(net->self, 1, err);
    if (st) goto cleanup;
    for (size_t i = 0; i < 10; i++) net->forward(net->self, x + (i % ns) * numel, 1);
    double start = kd_now();
    while (reps < MAX_REPS && (reps < MIN_REPS || kd_now() - start < budget_s)) {
        const float *xi = x + (reps % ns) * numel;
        double t0 = kd_now();
        net->forward(net->self, xi, 1);
        t[reps++] = (kd_now() - t0) * 1e6;
    }
    qsort(t, reps, sizeof *t, cmp_double);
    /* Nearest-rank percentiles. */
    *p50_us = t[(reps - 1) / 2];
    *p99_us = t[(size_t)((double)(reps - 1) * 0.99 + 0.5)];
cleanup:
    free(x);
    free(t);
    return st;
}

kd_status kd_eval_throughput(kd_model *m, kd_dataset *ds, const size_t *order, size_t n,
                             size_t batch, double budget_s, double *samples_per_s, kd_err *err) {
    kd_eval_net net = kd_eval_net_model(m);
    return kd_eval_throughput_net(&net, ds, order, n, batch, budget_s, samples_per_s, err);
}

kd_status kd_eval_throughput_net(const kd_eval_net *net, kd_dataset *ds, const size_t *order,
                                 size_t n, size_t batch, double budget_s, double *samples_per_s,
                                 kd_err *err) {
    enum { MIN_REPS = 3, MAX_REPS = 50 };
    size_t B = n < batch ? n : batch, numel = kd_shape_numel(&net->input);
    float *x = NULL;
    kd_status st = KD_OK;
    *samples_per_s = 0.0;
    if (B == 0) return KD_OK;
    x = malloc(B * numel * sizeof *x);
    if (!x) return kd_err_set(err, KD_EIO, "out of memory");
    st = kd_dataset_get(ds, order, B, x, NULL, NULL, err);
    if (!st) st = net->reserve(net->self, B, err);
    if (!st) {
        /* Warm-up: first touch of the activations, BLAS thread start. */
        net->forward(net->self, x, B);
        net->forward(net->self, x, B);
        size_t reps = 0;
        double start = kd_now(), el = 0.0;
        while (reps < MIN_REPS || (reps < MAX_REPS && el < budget_s)) {
            net->forward(net->self, x, B);
            reps++;
            el = kd_now() - start;
        }
        *samples_per_s = el > 0.0 ? (double)(reps * B) / el : 0.0;
    }
    free(x);
    return st;
}
