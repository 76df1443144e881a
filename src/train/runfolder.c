/* runfolder.c - a run's folder: its paths, config.json, metrics.jsonl (reloaded on resume,
 * rewritten atomically after each epoch, read back for `distill plot`), checkpoints with the
 * "run" metadata, and the one read of a checkpoint that resumes a run. The partial-epoch sums
 * and the metrics.jsonl fields each go out and come back through one table, so a writer and its
 * reader cannot drift apart. */
#include <cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kd_dist.h"
#include "train_impl.h"

/* A double field of a struct, by JSON name: the one list that both writes and reads it.
 * optional: a checkpoint written before the field existed may lack it (read as 0). */
typedef kd_double_field double_field;

#define SUM(f) {#f, offsetof(kd_epoch_sums, f), 0}
static const double_field sum_fields[] = {
    SUM(loss), SUM(soft), SUM(hard), SUM(correct), SUM(labelled), SUM(seen),
    SUM(train_seconds), SUM(seconds), {"skipped", offsetof(kd_epoch_sums, skipped), 1},
};
#undef SUM
#define N_SUM_FIELDS (sizeof sum_fields / sizeof sum_fields[0])
_Static_assert(offsetof(kd_epoch_sums, n_terms) == N_SUM_FIELDS * sizeof(double),
               "every double of kd_epoch_sums before its terms is in sum_fields");

/* The metrics.jsonl fields after "epoch", in the order they are written. */
#define MET(f) {#f, offsetof(kd_epoch_metrics, f), 0}
const kd_double_field kd_epoch_fields[] = {
    MET(loss), MET(soft), MET(hard), MET(train_acc), MET(val_acc), MET(lr), MET(samples_per_s),
    MET(seconds), MET(skipped),
};
#undef MET
const size_t kd_n_epoch_fields = sizeof kd_epoch_fields / sizeof kd_epoch_fields[0];
_Static_assert(offsetof(kd_epoch_metrics, n_terms) ==
                   sizeof(size_t) + sizeof kd_epoch_fields / sizeof kd_epoch_fields[0] *
                                        sizeof(double),
               "every metric of kd_epoch_metrics before its terms is in kd_epoch_fields");

/* Loss term keys in metrics.jsonl and the run metadata start with this. */
#define TERM_PREFIX "loss."

static double field_get(const void *base, const double_field *f) {
    return *(const double *)((const char *)base + f->offset);
}

static void field_set(void *base, const double_field *f, double v) {
    *(double *)((char *)base + f->offset) = v;
}

/* Adds v as a number, or null when it is not finite (JSON has no NaN); 0 when out of memory. */
static int add_num_or_null(cJSON *o, const char *k, double v) {
    return isfinite(v) ? cJSON_AddNumberToObject(o, k, v) != NULL
                       : cJSON_AddNullToObject(o, k) != NULL;
}

/* v with all 17 significant digits (null if not finite). cJSON's own printing is not exact:
 * 1.7.15 writes 3.0000000000000004 as 3, and the resumed epoch's sums must be the saved ones. */
static cJSON *exact_number(double v) {
    char buf[32];
    if (!isfinite(v)) return cJSON_CreateNull();
    snprintf(buf, sizeof buf, "%.17g", v);
    return cJSON_CreateRaw(buf);
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
    if (fwrite(s, 1, n, f) != n)
        return kd_err_set(err, KD_EIO, "write failed: %s", strerror(errno));
    return KD_OK;
}

static kd_status write_text(const char *path, const char *text, kd_err *err) {
    return kd_write_atomic(path, write_text_cb, (void *)text, err);
}

static int join_path(char *out, size_t cap, const char *dir, const char *file) {
    int n = snprintf(out, cap, "%s/%s", dir, file);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

kd_status kd_runfolder_init(kd_runfolder *rf, const char *out_dir, kd_err *err) {
    memset(rf, 0, sizeof *rf);
    if (snprintf(rf->out_dir, sizeof rf->out_dir, "%s", out_dir) >= (int)sizeof rf->out_dir ||
        join_path(rf->last_path, sizeof rf->last_path, out_dir, "last.safetensors") ||
        join_path(rf->best_path, sizeof rf->best_path, out_dir, "best.safetensors") ||
        join_path(rf->metrics_path, sizeof rf->metrics_path, out_dir, "metrics.jsonl"))
        return kd_err_set(err, KD_EUSAGE, "output folder path too long: %s", out_dir);
    return KD_OK;
}

void kd_runfolder_free(kd_runfolder *rf) {
    free(rf->metrics);
    rf->metrics = NULL;
    rf->metrics_len = rf->metrics_cap = 0;
}

/* The files of a run folder that kd_write_atomic replaces; their temporaries are named
 * "<file>.tmp.<pid>". */
static const char *const run_files[] = {"last.safetensors", "best.safetensors", "metrics.jsonl",
                                        "config.json"};

/* The pid of a temporary "<run file>.tmp.<pid>" name, or 0 when name is not one. */
static long temp_owner(const char *name) {
    for (size_t i = 0; i < sizeof run_files / sizeof run_files[0]; i++) {
        size_t n = strlen(run_files[i]);
        if (strncmp(name, run_files[i], n) != 0 || strncmp(name + n, ".tmp.", 5) != 0) continue;
        const char *d = name + n + 5;
        char *end;
        if (!isdigit((unsigned char)*d)) return 0;
        errno = 0;
        long pid = strtol(d, &end, 10);
        return *end || errno || pid <= 0 ? 0 : pid;
    }
    return 0;
}

size_t kd_runfolder_remove_stale(const char *dir, char *first, size_t cap) {
    size_t removed = 0;
    if (cap) first[0] = '\0';
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long pid = temp_owner(e->d_name);
        /* A write in progress belongs to a live process (ours never has one here): only the
         * temporaries of processes that no longer exist are stale. */
        if (pid == 0 || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char path[KD_PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) == 0 && removed++ == 0 && cap) snprintf(first, cap, "%s", e->d_name);
    }
    closedir(d);
    return removed;
}

/* Data-parallel: rank 0 alone writes the run folder (kd_runfolder_create, _add_metrics and
 * _save do nothing on the other ranks, which may not even share its disk). */
kd_status kd_runfolder_create(kd_runfolder *rf, const kd_config *cfg, kd_err *err) {
    if (kd_dist_rank() != 0) return KD_OK;
    kd_status st = make_dirs(rf->out_dir, err);
    if (st) return st;
    rf->n_stale = kd_runfolder_remove_stale(rf->out_dir, rf->first_stale, sizeof rf->first_stale);
    char *json = kd_config_to_json(cfg);
    if (!json) return kd_err_set(err, KD_EIO, "out of memory");
    char p[KD_PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/config.json", rf->out_dir);
    st = write_text(p, json, err);
    free(json);
    return st;
}

static kd_status metrics_append(kd_runfolder *rf, const char *line, kd_err *err) {
    size_t n = strlen(line), need;
    if (kd_add_size(rf->metrics_len, n + 2, &need))
        return kd_err_set(err, KD_EIO, "metrics too large");
    if (need > rf->metrics_cap) {
        size_t cap = rf->metrics_cap ? rf->metrics_cap : 1024;
        while (cap < need) cap *= 2;
        char *p = realloc(rf->metrics, cap);
        if (!p) return kd_err_set(err, KD_EIO, "out of memory for metrics");
        rf->metrics = p;
        rf->metrics_cap = cap;
    }
    memcpy(rf->metrics + rf->metrics_len, line, n);
    rf->metrics_len += n;
    rf->metrics[rf->metrics_len++] = '\n';
    rf->metrics[rf->metrics_len] = '\0';
    return KD_OK;
}

kd_status kd_runfolder_reload_metrics(kd_runfolder *rf, size_t done, kd_err *err) {
    char *text = NULL;
    size_t len = 0;
    kd_err ignore;
    if (kd_read_file(rf->metrics_path, (size_t)64 << 20, &text, &len, &ignore) != KD_OK)
        return KD_OK;
    kd_status st = KD_OK;
    char *line = text;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        cJSON *j = cJSON_Parse(line);
        const cJSON *e = j ? cJSON_GetObjectItemCaseSensitive(j, "epoch") : NULL;
        if (cJSON_IsNumber(e) && e->valuedouble >= 1 && e->valuedouble <= (double)done)
            st = metrics_append(rf, line, err);
        cJSON_Delete(j);
        if (st) break;
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    return st;
}

/* One metrics.jsonl line (NaN written as null); NULL when out of memory. */
static char *metrics_line(const kd_epoch_metrics *m) {
    cJSON *o = cJSON_CreateObject();
    char *s = NULL;
    int ok = o && cJSON_AddNumberToObject(o, "epoch", (double)m->epoch);
    for (size_t i = 0; ok && i < kd_n_epoch_fields; i++)
        ok = add_num_or_null(o, kd_epoch_fields[i].name, field_get(m, &kd_epoch_fields[i]));
    for (size_t k = 0; ok && k < m->n_terms; k++) ok = add_num_or_null(o, m->keys[k], m->term[k]);
    if (ok) s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

kd_status kd_runfolder_add_metrics(kd_runfolder *rf, const kd_epoch_metrics *em, kd_err *err) {
    if (kd_dist_rank() != 0) return KD_OK;
    char *line = metrics_line(em);
    if (!line) return kd_err_set(err, KD_EIO, "out of memory");
    kd_status st = metrics_append(rf, line, err);
    free(line);
    if (st == KD_OK) st = write_text(rf->metrics_path, rf->metrics, err);
    return st;
}

int kd_epoch_field_find(const char *name) {
    for (size_t i = 0; i < kd_n_epoch_fields; i++)
        if (strcmp(kd_epoch_fields[i].name, name) == 0) return (int)i;
    return -1;
}

double kd_epoch_field_get(const kd_epoch_metrics *m, size_t field) {
    return field < kd_n_epoch_fields ? field_get(m, &kd_epoch_fields[field]) : NAN;
}

int kd_epoch_term_find(const kd_epoch_metrics *m, const char *key) {
    for (size_t k = 0; k < m->n_terms; k++)
        if (strcmp(m->keys[k], key) == 0) return (int)k;
    return -1;
}

double kd_epoch_metric_get(const kd_epoch_metrics *m, const char *name) {
    int f = kd_epoch_field_find(name);
    if (f >= 0) return kd_epoch_field_get(m, (size_t)f);
    int k = kd_epoch_term_find(m, name);
    return k >= 0 ? m->term[k] : NAN;
}

/* The term keys of a metrics.jsonl file, in the order first seen (the rows point at them). */
typedef struct {
    size_t n;
    char key[KD_MAX_LOSS_TERMS][KD_LOSS_KEY_MAX];
} term_keys;

/* The loss terms of line j into row->term (every other term NaN), new keys added to keys. */
static kd_status metrics_parse_terms(const char *path, size_t line_no, const cJSON *j,
                                     kd_epoch_metrics *row, term_keys *keys, kd_err *err) {
    for (size_t k = 0; k < KD_MAX_LOSS_TERMS; k++) row->term[k] = NAN;
    for (const cJSON *v = j->child; v; v = v->next) {
        if (!v->string || strncmp(v->string, TERM_PREFIX, strlen(TERM_PREFIX)) != 0) continue;
        if (!cJSON_IsNumber(v) && !cJSON_IsNull(v))
            return kd_err_set(err, KD_EINPUT, "%s line %zu (epoch %zu): %s: expected a number or "
                              "null", path, line_no, row->epoch, v->string);
        size_t k = 0;
        while (k < keys->n && strcmp(keys->key[k], v->string) != 0) k++;
        if (k == keys->n) {
            if (keys->n == KD_MAX_LOSS_TERMS || strlen(v->string) >= KD_LOSS_KEY_MAX)
                return kd_err_set(err, KD_EINPUT, "%s line %zu (epoch %zu): %.80s: more than %d "
                                  "loss terms, or a key over %d characters", path, line_no,
                                  row->epoch, v->string, KD_MAX_LOSS_TERMS, KD_LOSS_KEY_MAX - 1);
            snprintf(keys->key[keys->n++], KD_LOSS_KEY_MAX, "%s", v->string);
        }
        row->term[k] = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    }
    return KD_OK;
}

/* One metrics.jsonl line into *row; prev is the previous line's epoch (0 before the first).
 * Errors are KD_EINPUT "PATH line N: ...". */
static kd_status metrics_parse_line(const char *path, size_t line_no, const char *line,
                                    size_t prev, kd_epoch_metrics *row, term_keys *keys,
                                    kd_err *err) {
    kd_status st = KD_OK;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(line, &end, 1);
    if (!cJSON_IsObject(j)) {
        st = kd_err_set(err, KD_EINPUT, "%s line %zu: expected one complete JSON object (a "
                        "truncated or damaged line?), got \"%.60s\"", path, line_no, line);
        goto cleanup;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "epoch");
    double ev = cJSON_IsNumber(e) ? e->valuedouble : -1;
    if (!(ev >= 1 && ev <= KD_MAX_EPOCH_LINE && ev == floor(ev)) || (size_t)ev <= prev) {
        st = kd_err_set(err, KD_EINPUT, "%s line %zu: epoch: expected an integer in %zu..%.0f "
                        "(epochs increase line by line)", path, line_no, prev + 1,
                        (double)KD_MAX_EPOCH_LINE);
        goto cleanup;
    }
    row->epoch = (size_t)ev;
    for (size_t i = 0; i < kd_n_epoch_fields; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, kd_epoch_fields[i].name);
        if (v && !cJSON_IsNumber(v) && !cJSON_IsNull(v)) {
            st = kd_err_set(err, KD_EINPUT, "%s line %zu (epoch %zu): %s: expected a number or "
                            "null", path, line_no, row->epoch, kd_epoch_fields[i].name);
            goto cleanup;
        }
        field_set(row, &kd_epoch_fields[i], cJSON_IsNumber(v) ? v->valuedouble : NAN);
    }
    st = metrics_parse_terms(path, line_no, j, row, keys, err);
cleanup:
    cJSON_Delete(j);
    return st;
}

kd_status kd_metrics_read(const char *path, kd_epoch_metrics **rows, size_t *n_rows,
                          kd_err *err) {
    char *text = NULL;
    size_t len = 0, n_lines = 1, n = 0, line_no = 0;
    kd_epoch_metrics *out = NULL;
    *rows = NULL;
    *n_rows = 0;
    kd_status st = kd_read_file(path, KD_MAX_METRICS_BYTES, &text, &len, err);
    if (st) goto cleanup;
    if (strlen(text) != len) {
        st = kd_err_set(err, KD_EINPUT, "%s: contains a NUL byte at offset %zu (not a "
                        "metrics.jsonl text file)", path, strlen(text));
        goto cleanup;
    }
    for (size_t i = 0; i < len; i++) n_lines += text[i] == '\n';
    /* The rows, then the file's term keys, in one block: the caller frees one pointer. */
    out = calloc(1, n_lines * sizeof *out + sizeof(term_keys));
    term_keys *keys = out ? (term_keys *)(void *)(out + n_lines) : NULL;
    if (!out) {
        st = kd_err_set(err, KD_EIO, "%s: out of memory for %zu lines", path, n_lines);
        goto cleanup;
    }
    for (char *line = text; line; ) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        line_no++;
        if (line[strspn(line, " \t\r")] != '\0') {
            st = metrics_parse_line(path, line_no, line, n ? out[n - 1].epoch : 0, &out[n], keys,
                                    err);
            if (st) goto cleanup;
            n++;
        }
        line = nl ? nl + 1 : NULL;
    }
    if (n == 0) {
        st = kd_err_set(err, KD_EINPUT, "%s: no epochs recorded (empty file)", path);
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        out[i].n_terms = keys->n;
        out[i].keys = (const char (*)[KD_LOSS_KEY_MAX])keys->key;
    }
    *rows = out;
    *n_rows = n;
    out = NULL;
cleanup:
    free(out);
    free(text);
    return st;
}

char *kd_run_meta_json(size_t epoch, uint64_t step, double val_acc,
                       const kd_epoch_sums *partial, const char *logits_hash) {
    cJSON *o = cJSON_CreateObject();
    char *s = NULL;
    int ok = o && cJSON_AddNumberToObject(o, "epoch", (double)epoch) &&
             cJSON_AddNumberToObject(o, "step", (double)step) &&
             add_num_or_null(o, "val_acc", val_acc) &&
             (!logits_hash || cJSON_AddStringToObject(o, "teacher_logits", logits_hash));
    if (ok && partial) {
        cJSON *p = cJSON_AddObjectToObject(o, "partial");
        ok = p != NULL;
        for (size_t i = 0; ok && i < N_SUM_FIELDS; i++)
            ok = cJSON_AddItemToObject(p, sum_fields[i].name,
                                       exact_number(field_get(partial, &sum_fields[i])));
        /* The loss terms by key, so a resume continues each one's sum (not by position: the
         * keys say which is which). */
        cJSON *terms = ok && partial->n_terms ? cJSON_AddObjectToObject(p, "terms") : NULL;
        ok = ok && (!partial->n_terms || terms);
        for (size_t k = 0; ok && k < partial->n_terms; k++)
            ok = cJSON_AddItemToObject(terms, partial->keys[k], exact_number(partial->term[k]));
    }
    if (ok) s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

kd_status kd_run_meta_partial(const char *path, const char *run_json, kd_epoch_sums *out,
                              kd_err *err) {
    kd_status st = KD_OK;
    cJSON *j = NULL;
    memset(out, 0, sizeof *out);
    if (!run_json) {
        st = kd_err_set(err, KD_EINPUT, "resume %s: metadata run: missing (a mid-epoch "
                        "checkpoint needs the epoch's running sums)", path);
        goto cleanup;
    }
    j = cJSON_Parse(run_json);
    if (!cJSON_IsObject(j)) {
        st = kd_err_set(err, KD_EINPUT, "resume %s: metadata run: expected a JSON object, got "
                        "\"%.60s\"", path, run_json);
        goto cleanup;
    }
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "partial");
    if (!cJSON_IsObject(p)) {
        st = kd_err_set(err, KD_EINPUT, "resume %s: metadata run.partial: expected an object "
                        "with the interrupted epoch's running sums", path);
        goto cleanup;
    }
    for (size_t i = 0; i < N_SUM_FIELDS; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(p, sum_fields[i].name);
        if (!v && sum_fields[i].optional) continue;
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0) {
            st = kd_err_set(err, KD_EINPUT, "resume %s: metadata run.partial.%s: expected a "
                            "number >= 0", path, sum_fields[i].name);
            goto cleanup;
        }
        field_set(out, &sum_fields[i], v->valuedouble);
    }
cleanup:
    cJSON_Delete(j);
    if (st) memset(out, 0, sizeof *out);
    return st;
}

kd_status kd_run_meta_terms(const char *path, const char *run_json, kd_epoch_sums *sums,
                            kd_err *err) {
    kd_status st = KD_OK;
    cJSON *j = run_json ? cJSON_Parse(run_json) : NULL;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "partial");
    const cJSON *terms = cJSON_GetObjectItemCaseSensitive(p, "terms");
    for (size_t k = 0; k < sums->n_terms; k++) sums->term[k] = NAN;
    /* A checkpoint written before the terms were kept: the epoch's terms are unknown (null). */
    if (!terms) goto cleanup;
    if (!cJSON_IsObject(terms)) {
        st = kd_err_set(err, KD_EINPUT, "resume %s: metadata run.partial.terms: expected an "
                        "object of the loss terms' sums", path);
        goto cleanup;
    }
    for (size_t k = 0; k < sums->n_terms; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(terms, sums->keys[k]);
        if (cJSON_IsNull(v)) continue;
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
            st = kd_err_set(err, KD_EINPUT, "resume %s: metadata run.partial.terms.%s: expected "
                            "a number or null (%s)", path, sums->keys[k],
                            v ? "not one" : "missing: the run was trained with other losses?");
            goto cleanup;
        }
        sums->term[k] = v->valuedouble;
    }
cleanup:
    cJSON_Delete(j);
    return st;
}

kd_status kd_runfolder_save(const kd_runfolder *rf, const char *path, const kd_model *m,
                            const kd_train_state *ts, size_t epoch, uint64_t step,
                            double val_acc, const kd_epoch_sums *partial, kd_err *err) {
    if (kd_dist_rank() != 0) return KD_OK;
    char *run = kd_run_meta_json(epoch, step, val_acc, partial, rf->logits_hash);
    if (!run) return kd_err_set(err, KD_EIO, "out of memory");
    kd_ckpt_meta meta = {0};
    meta.class_names = rf->class_names;
    meta.n_classes = rf->n_class_names;
    meta.pp = rf->pp;
    meta.extra_json = run;
    kd_status st = kd_ckpt_save(path, m, &meta, ts, err);
    free(run);
    return st;
}

void kd_resume_free(kd_resume *r) {
    kd_model_free(&r->model);
    free(r->ts.order);
    free(r->run);
    memset(r, 0, sizeof *r);
}

/* The teacher.logits hash a "run" metadata string records into out ("" when none). */
static void meta_logits_hash(const char *run_json, char *out, size_t cap) {
    cJSON *j = run_json ? cJSON_Parse(run_json) : NULL;
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "teacher_logits");
    snprintf(out, cap, "%s", cJSON_IsString(h) ? h->valuestring : "");
    cJSON_Delete(j);
}

kd_status kd_resume_load(const char *path, const char *arch_json, size_t batch, size_t n_train,
                         size_t n_data, size_t n_batches, kd_resume *r, kd_err *err) {
    char *run = NULL;
    memset(r, 0, sizeof *r);
    kd_status st = kd_ckpt_load_resume(path, arch_json, &r->model, &r->ts, &run, err);
    if (st == KD_OK) st = kd_model_reserve(&r->model, batch, err);
    if (st) {
        /* Whatever went wrong reading it, the file given to --resume is the bad input. */
        if (st == KD_EIO) err->code = st = KD_EINPUT;
        if (!strstr(err->msg, path)) kd_err_prefix(err, "resume %s", path);
        goto cleanup;
    }
    const kd_train_state *ts = &r->ts;
    if (ts->batch_in_epoch > 0 && (ts->n_order != n_train || !ts->order)) {
        st = kd_err_set(err, KD_EINPUT,
                        "resume %s: the checkpoint's epoch order has %zu samples but this "
                        "config's training set has %zu (different data or validation split?)",
                        path, ts->n_order, n_train);
        goto cleanup;
    }
    if (ts->batch_in_epoch >= n_batches) {
        st = kd_err_set(err, KD_EINPUT,
                        "resume %s: the checkpoint is at batch %llu of an epoch of %zu batches "
                        "(different batch size?)",
                        path, (unsigned long long)ts->batch_in_epoch, n_batches);
        goto cleanup;
    }
    for (size_t i = 0; ts->batch_in_epoch > 0 && i < ts->n_order; i++) {
        if (ts->order[i] >= n_data) {
            st = kd_err_set(err, KD_EINPUT, "resume %s: order entry %zu is out of range", path,
                            i);
            goto cleanup;
        }
    }
    meta_logits_hash(run, r->logits_hash, sizeof r->logits_hash);
    /* Mid-epoch, the epoch's metrics continue from the saved sums: refuse to guess them. */
    if (ts->batch_in_epoch > 0) st = kd_run_meta_partial(path, run, &r->partial, err);
cleanup:
    /* Kept: the loss terms' sums are read from it once the run's loss plan is known. */
    r->run = run;
    if (st) kd_resume_free(r);
    return st;
}
