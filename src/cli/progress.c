/* progress.c - how train and logits report a run's progress: notes, warnings, the setup, a
 * live progress bar on a terminal, one line per epoch. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

void kd_cli_clear_bar(kd_cli_printer *p) {
    if (p->bar_shown) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        p->bar_shown = 0;
    }
}

/* Whether the epoch's named terms are those soft and hard already show: today's loss (kl or
 * mse, then ce), so its line stays as it was. */
static int terms_are_soft_hard(const kd_epoch_metrics *m) {
    for (size_t k = 0; k < m->n_terms; k++)
        if (strcmp(m->keys[k], "loss.kl") && strcmp(m->keys[k], "loss.mse") &&
            strcmp(m->keys[k], "loss.ce"))
            return 0;
    return m->n_terms <= 2;
}

/* " (soft S, hard H)", or with any other list its terms, short: " (dkd.tckd X, kl Y, ce Z)". */
static void print_terms(const kd_epoch_metrics *m) {
    if (terms_are_soft_hard(m)) {
        printf(" (soft %.4f, hard %.4f)", m->soft, isfinite(m->hard) ? m->hard : 0.0);
        return;
    }
    printf(" (");
    for (size_t k = 0; k < m->n_terms; k++)
        printf("%s%s %.4f", k ? ", " : "", m->keys[k] + strlen("loss."), m->term[k]);
    printf(")");
}

static void fmt_duration(double s, char *buf, size_t cap) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

static void fmt_pct(double v, char *buf, size_t cap) {
    if (isfinite(v))
        snprintf(buf, cap, "%.2f%%", 100 * v);
    else
        snprintf(buf, cap, "n/a");
}

/* "PREFIX [=====>    ] done/total TAIL ETA m:ss" on stderr, at most every 0.1 s. */
static void draw_bar(kd_cli_printer *p, const kd_train_event *ev, const char *prefix,
                     const char *tail) {
    double now = kd_now();
    if (ev->batch < ev->n_batches && now - p->last_draw < 0.1) return;
    p->last_draw = now;
    const int width = 24;
    int fill = ev->n_batches ? (int)((double)width * (double)ev->batch / (double)ev->n_batches) : 0;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[width] = '\0';
    double done = (double)(ev->batch - p->epoch_batch0);
    double per_batch = done > 0 ? ev->epoch_seconds / done : 0;
    char eta[32];
    fmt_duration(per_batch * (double)(ev->n_batches - ev->batch), eta, sizeof eta);
    fprintf(stderr, "\r\033[K%s [%s] %zu/%zu %s %.0f samples/s ETA %s", prefix, bar, ev->batch,
            ev->n_batches, tail, ev->samples_per_s, eta);
    fflush(stderr);
    p->bar_shown = 1;
}

void kd_cli_on_progress(const kd_train_event *ev, void *user) {
    kd_cli_printer *p = user;
    char a[32], b[32], c[32];
    switch (ev->kind) {
    case KD_EV_WARNING:
        if (p->silent) break;
        kd_cli_clear_bar(p);
        fprintf(stderr, "%s\n", ev->msg);  /* warnings show even with --quiet */
        break;
    case KD_EV_NOTE:
        if (p->quiet) break;
        kd_cli_clear_bar(p);
        printf("note: %s\n", ev->msg);
        break;
    case KD_EV_SETUP:
        if (p->quiet) break;
        printf("model: %zu parameters, %zu multiply-adds per sample\n", ev->model->n_params,
               kd_model_macs(ev->model));
        kd_model_print(ev->model, stdout);
        if (ev->teacher)
            printf("teacher: %zu parameters, %zu multiply-adds per sample\n",
                   ev->teacher->n_params, kd_model_macs(ev->teacher));
        printf("data: %zu training, %zu validation, %zu test samples; %zu batches per epoch\n",
               ev->n_train, ev->n_val, ev->n_test, ev->n_batches);
        if (ev->epoch > 0 || ev->step > 0)
            printf("resuming after epoch %zu, step %llu\n", ev->epoch,
                   (unsigned long long)ev->step);
        break;
    case KD_EV_TEACHER:
        if (p->quiet) break;
        fmt_pct(ev->value, a, sizeof a);
        printf("%s validation accuracy: %s\n", ev->msg ? ev->msg : "teacher", a);
        break;
    case KD_EV_EPOCH_BEGIN:
        p->epoch_t0 = kd_now();
        p->epoch_batch0 = ev->batch;
        p->last_draw = 0;
        break;
    case KD_EV_BATCH:
        if (p->stop_after && ev->step >= p->stop_after) *p->stop = 1;
        if (p->bar && !p->quiet) {
            char prefix[64], tail[64];
            snprintf(prefix, sizeof prefix, "epoch %zu/%zu", ev->epoch, ev->n_epochs);
            snprintf(tail, sizeof tail, "loss %.4f", ev->running_loss);
            draw_bar(p, ev, prefix, tail);
        }
        break;
    case KD_EV_CACHE:
        if (p->bar && !p->quiet) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "teacher logits, view %zu/%zu", ev->epoch, ev->n_epochs);
            draw_bar(p, ev, prefix, "");
        }
        break;
    case KD_EV_EPOCH_END: {
        if (p->silent) break;  /* one line per epoch, --quiet included */
        kd_cli_clear_bar(p);
        const kd_epoch_metrics *m = ev->metrics;
        fmt_pct(m->train_acc, a, sizeof a);
        fmt_pct(m->val_acc, b, sizeof b);
        fmt_duration(m->seconds, c, sizeof c);
        printf("epoch %zu/%zu  loss %.4f", m->epoch, ev->n_epochs, m->loss);
        /* The terms only mean something when distilling (soft is 0 without a teacher). */
        if (p->distilling) print_terms(m);
        printf("  train_acc %s  val_acc %s  lr %.3g  %.0f samples/s  %s", a, b, m->lr,
               m->samples_per_s, c);
        if (m->skipped > 0) printf("  skipped %.0f undecodable", m->skipped);
        printf("\n");
        fflush(stdout);
        break;
    }
    case KD_EV_EVAL:
        if (p->quiet) break;
        kd_cli_clear_bar(p);
        printf("evaluating on the %s set\n", ev->msg);
        fflush(stdout);
        break;
    }
}

