/* forward.c - the one evaluation loop: a model in inference mode over chosen samples of a
 * dataset, batch by batch, each batch's logits handed to a callback. The trainer's accuracy,
 * `eval`, `export` and `predict` all run through it, so they batch, order and time alike. */
#include <stdlib.h>
#include <string.h>

#include "kd_eval.h"

static kd_status model_reserve(void *self, size_t B, kd_err *err) {
    return kd_model_reserve(self, B, err);
}

static const float *model_forward(void *self, const float *x, size_t B) {
    kd_ctx ctx = {0, NULL, NULL, 0, 0, 0};
    return kd_model_forward(self, x, B, &ctx);
}

kd_eval_net kd_eval_net_model(kd_model *m) {
    return (kd_eval_net){m->input, m->n_classes, m, model_reserve, model_forward};
}

kd_status kd_eval_forward(kd_model *m, kd_dataset *ds, const size_t *idx, size_t n, size_t batch,
                          kd_eval_batch_fn fn, void *user, double *fwd_seconds, size_t *n_skipped,
                          kd_err *err) {
    kd_eval_net net = kd_eval_net_model(m);
    return kd_eval_forward_net(&net, ds, idx, n, batch, fn, user, fwd_seconds, n_skipped, err);
}

kd_status kd_eval_forward_net(const kd_eval_net *net, kd_dataset *ds, const size_t *idx, size_t n,
                              size_t batch, kd_eval_batch_fn fn, void *user, double *fwd_seconds,
                              size_t *n_skipped, kd_err *err) {
    kd_loader *ld = NULL;
    size_t *all = NULL;
    size_t done = 0, skipped = 0;
    double t_fwd = 0.0;
    kd_status st = KD_OK;
    if (!idx) {
        all = malloc((n ? n : 1) * sizeof *all);
        if (!all) {
            st = kd_err_set(err, KD_EIO, "out of memory for %zu indices", n);
            goto cleanup;
        }
        for (size_t i = 0; i < n; i++) all[i] = i;
        idx = all;
    }
    st = net->reserve(net->self, batch, err);
    if (!st) st = kd_loader_open(&ld, ds, idx, n, batch, err);
    while (!st) {
        kd_batch b;
        st = kd_loader_next(ld, &b, err);
        if (st) break;
        skipped += b.n_skipped;
        if (b.n_skipped && !n_skipped) {
            const char *note = kd_dataset_decode_note(ds);
            st = kd_err_set(err, KD_EINPUT, "%s (every sample is needed here, data.skip_bad "
                            "notwithstanding)", note ? note : "a sample could not be decoded");
            break;
        }
        if (b.n == 0) break;
        if (done + b.n + skipped > n) {
            st = kd_err_set(err, KD_EIO, "loader returned more samples than requested");
            break;
        }
        double t0 = kd_now();
        const float *z = net->forward(net->self, b.x, b.n);
        t_fwd += kd_now() - t0;
        st = fn(user, done, z, b.y, b.n, err);
        done += b.n;
    }
    if (!st && done + skipped != n)
        st = kd_err_set(err, KD_EIO, "loader stopped after %zu of %zu samples", done + skipped, n);
    if (n_skipped) *n_skipped = skipped;
cleanup:
    kd_loader_close(ld);
    free(all);
    if (fwd_seconds) *fwd_seconds = t_fwd;
    return st;
}

/* kd_eval_forward_all's callback: copies each batch into the caller's arrays. */
typedef struct {
    float *logits;    /* (n, C) */
    int32_t *labels;  /* (n) or NULL */
    size_t C;
} fill_ctx;

static kd_status fill_batch(void *user, size_t done, const float *z, const int32_t *y, size_t n,
                            kd_err *err) {
    fill_ctx *f = user;
    (void)err;
    memcpy(f->logits + done * f->C, z, n * f->C * sizeof *z);
    if (f->labels) memcpy(f->labels + done, y, n * sizeof *y);
    return KD_OK;
}

kd_status kd_eval_forward_all(kd_model *m, kd_dataset *ds, const size_t *order, size_t n,
                              size_t batch, float *logits, int32_t *labels, double *fwd_seconds,
                              kd_err *err) {
    kd_eval_net net = kd_eval_net_model(m);
    return kd_eval_forward_all_net(&net, ds, order, n, batch, logits, labels, fwd_seconds, err);
}

kd_status kd_eval_forward_all_net(const kd_eval_net *net, kd_dataset *ds, const size_t *order,
                                  size_t n, size_t batch, float *logits, int32_t *labels,
                                  double *fwd_seconds, kd_err *err) {
    fill_ctx f = {logits, labels, net->n_classes};
    kd_status st =
        kd_eval_forward_net(net, ds, order, n, batch, fill_batch, &f, fwd_seconds, NULL, err);
    if (!st && !kd_all_finite(logits, n * net->n_classes))
        st = kd_err_set(err, KD_ENUMERIC, "the model produced NaN or Inf logits");
    return st;
}
