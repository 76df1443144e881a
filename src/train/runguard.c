/* runguard.c - a run folder that holds a run is never written over unasked: what the folder
 * holds (an interrupted run, a finished one), the refusal that offers --resume, --out and
 * --overwrite, and --overwrite's move of the old folder to DIR.N (nothing is ever deleted). */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kd_safetensors.h"
#include "train_impl.h"

/* The files whose presence means a run wrote its results here. config.json alone does not:
 * it is written before the first epoch, and a run stopped then has nothing to lose. */
static const char *const result_files[] = {"last.safetensors", "best.safetensors",
                                           "metrics.jsonl"};

static int file_exists(const char *dir, const char *name) {
    char p[KD_PATH_MAX + 32];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &sb) == 0;
}

int kd_runfolder_holds_run(const char *dir) {
    for (size_t i = 0; i < sizeof result_files / sizeof result_files[0]; i++)
        if (file_exists(dir, result_files[i])) return 1;
    return 0;
}

/* train.epochs of DIR/config.json, or 0 when it cannot be read. */
static size_t saved_epochs(const char *dir) {
    char p[KD_PATH_MAX + 32], *text = NULL;
    size_t len = 0, epochs = 0;
    kd_err ignore;
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (kd_read_file(p, (size_t)16 << 20, &text, &len, &ignore) != KD_OK) return 0;
    cJSON *j = cJSON_Parse(text);
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(j, "train");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(tr, "epochs");
    if (cJSON_IsNumber(e) && e->valuedouble >= 1) epochs = (size_t)e->valuedouble;
    cJSON_Delete(j);
    free(text);
    return epochs;
}

kd_status kd_runfolder_state(const char *dir, kd_run_state *s, kd_err *err) {
    char p[KD_PATH_MAX + 32];
    kd_st_file f;
    memset(s, 0, sizeof *s);
    s->total = saved_epochs(dir);
    snprintf(p, sizeof p, "%s/last.safetensors", dir);
    if (!file_exists(dir, "last.safetensors")) return KD_OK;
    kd_status st = kd_st_read(&f, p, err);
    if (st) return st;
    const char *e = kd_st_meta(&f, "train.epoch"), *b = kd_st_meta(&f, "train.batch_in_epoch");
    s->has_last = e != NULL;
    s->epoch = e ? strtoull(e, NULL, 10) : 0;
    s->batch_in_epoch = b ? strtoull(b, NULL, 10) : 0;
    s->finished = s->has_last && s->total && s->epoch >= s->total && s->batch_in_epoch == 0;
    kd_st_free(&f);
    return KD_OK;
}

/* The first DIR.N (N >= 1) that does not exist, into out. */
static kd_status free_name(const char *dir, char *out, size_t cap, kd_err *err) {
    struct stat sb;
    for (unsigned n = 1; n < 100000; n++) {
        if (snprintf(out, cap, "%s.%u", dir, n) >= (int)cap)
            return kd_err_set(err, KD_EUSAGE, "run folder '%s': path too long", dir);
        if (lstat(out, &sb) != 0 && errno == ENOENT) return KD_OK;
    }
    return kd_err_set(err, KD_EIO, "run folder '%s': no free name %s.N to move it to", dir, dir);
}

/* The refusal: what the folder holds and the three ways on. */
static kd_status refuse(const char *dir, kd_err *err) {
    kd_run_state s;
    char what[160];
    kd_err ignore;
    if (kd_runfolder_state(dir, &s, &ignore) != KD_OK)
        snprintf(what, sizeof what, "a run (its last.safetensors does not read: %s)", ignore.msg);
    else if (s.finished)
        snprintf(what, sizeof what, "a finished run (%zu of %zu epochs)", s.epoch, s.total);
    else if (s.has_last && s.total)
        snprintf(what, sizeof what, "an interrupted run (%zu of %zu epochs done)", s.epoch,
                 s.total);
    else
        snprintf(what, sizeof what, "a run's results");
    if (s.has_last && !s.finished)
        return kd_err_set(err, KD_EUSAGE,
                          "run folder '%s' already holds %s; distill never writes over a run. "
                          "Continue it with --resume %s, choose another folder with --out DIR, "
                          "or start anew with --overwrite (moves the old folder to %s.1 or the "
                          "next free %s.N)", dir, what, dir, dir, dir);
    return kd_err_set(err, KD_EUSAGE,
                      "run folder '%s' already holds %s; distill never writes over a run. "
                      "Choose another folder with --out DIR, or start anew with --overwrite "
                      "(moves the old folder to %s.1 or the next free %s.N)%s", dir, what, dir,
                      dir, s.finished ? "; to train it further, --resume it with more --epochs"
                                      : "");
}

kd_status kd_runfolder_claim(const char *dir, int overwrite, char *moved, size_t cap,
                             kd_err *err) {
    if (cap) moved[0] = '\0';
    if (!kd_runfolder_holds_run(dir)) return KD_OK;
    if (!overwrite) return refuse(dir, err);
    /* "runs/x/" must move to "runs/x.1", not into itself. */
    char from[KD_PATH_MAX], to[KD_PATH_MAX + 16];
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    if (n >= sizeof from) return kd_err_set(err, KD_EUSAGE, "run folder '%s': path too long", dir);
    memcpy(from, dir, n);
    from[n] = '\0';
    kd_status st = free_name(from, to, sizeof to, err);
    if (st) return st;
    if (rename(from, to) != 0)
        return kd_err_set(err, KD_EIO, "--overwrite: cannot move run folder '%s' to '%s': %s",
                          from, to, strerror(errno));
    if (cap) snprintf(moved, cap, "%s", to);
    return KD_OK;
}
