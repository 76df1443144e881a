/* plot.c - `distill plot`: the training curves of one or more run folders (teacher and students
 * side by side) as an SVG picture, read from each folder's metrics.jsonl. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "kd_path.h"
#include "kd_report.h"
#include "kd_suggest.h"

static const char usage[] =
    "Usage: distill plot [--out FILE.svg] [--metric NAME] RUN...\n"
    "\n"
    "Draws the training curves of one or more runs from their metrics.jsonl: a line per run\n"
    "against the epoch, named after its folder in the legend, with round-number axis ticks.\n"
    "Default: a 2x2 grid of loss, validation accuracy, learning rate and throughput. Epochs\n"
    "without a value (null in metrics.jsonl, e.g. no validation set) leave a gap.\n"
    "RUN is a training run folder (the --out of `distill train`) or a metrics.jsonl file.\n"
    "\n"
    "Options:\n"
    "  -o, --out FILE  the SVG picture to write, atomically (default: curves.svg, or\n"
    "                  NAME.svg with --metric); any browser opens it\n"
    "  --metric NAME   one larger panel of one metric: loss, val_acc, train_acc, lr,\n"
    "                  samples_per_s, soft, hard (the first teacher loss and ce) or\n"
    "                  seconds, or a loss term the runs logged (loss.kl, loss.dkd.tckd, ...)\n"
    "\n"
    "Exit codes: 0 ok, 1 cannot write the picture, 2 usage error, 3 a RUN without\n"
    "metrics.jsonl or with a damaged one (the message names the file and line).\n";

#define MAX_CURVES 32

/* Where a RUN argument's metrics are, and its name before labelling: a folder's metrics.jsonl
 * (the folder, trailing slashes dropped, names it), or a file given directly (its folder names
 * it, or its own name when it has none). */
static kd_status locate_run(const char *arg, char *name, char *metrics, size_t cap,
                            kd_err *err) {
    struct stat sb;
    size_t len = strlen(arg);
    while (len > 1 && arg[len - 1] == '/') len--;
    if (len >= cap) return kd_err_set(err, KD_EUSAGE, "%s: path too long", arg);
    memcpy(name, arg, len);
    name[len] = '\0';
    if (stat(name, &sb) != 0)
        return kd_err_set(err, KD_EINPUT, "%s: no such run folder or metrics file", arg);
    if (S_ISREG(sb.st_mode)) {
        snprintf(metrics, cap, "%s", name);
        if (kd_path_dirname(name, cap, metrics) || strcmp(name, ".") == 0)
            snprintf(name, cap, "%s", kd_path_basename(metrics));
        return KD_OK;
    }
    if (kd_path_join(metrics, cap, name, "metrics.jsonl"))
        return kd_err_set(err, KD_EUSAGE, "%s: path too long", arg);
    if (stat(metrics, &sb) != 0)
        return kd_err_set(err, KD_EINPUT, "%s: no metrics.jsonl in this folder (not a training "
                          "run folder, or no epoch has finished yet)", arg);
    return KD_OK;
}

/* Whether the run whose metrics are at `metrics` took its teacher's logits from the cache
 * (its config.json has teacher.cache): its samples/s then leave the teacher's forward out. */
static int teacher_cached(const char *metrics) {
    char dir[KD_PATH_MAX], path[KD_PATH_MAX + 16], *text = NULL;
    size_t len = 0;
    kd_err ignore;
    if (kd_path_dirname(dir, sizeof dir, metrics) || kd_path_join(path, sizeof path, dir,
                                                                  "config.json") ||
        kd_read_file(path, (size_t)16 << 20, &text, &len, &ignore) != KD_OK)
        return 0;
    cJSON *j = cJSON_Parse(text);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "teacher");
    int cached = cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(t, "cache"));
    cJSON_Delete(j);
    free(text);
    return cached;
}

/* Whether metric is a curve of the table or a loss term of some run; else KD_EUSAGE naming
 * both lists (the terms the files have), with a suggestion for a near miss. */
static kd_status check_metric(const char *metric, const kd_report_run *runs, size_t n_runs,
                              kd_err *err) {
    const char *names[MAX_CURVES + KD_MAX_LOSS_TERMS * 4];
    size_t n = 0, n_curves = 0;
    for (size_t i = 0; i < MAX_CURVES && kd_report_curve_name(i); i++)
        names[n++] = kd_report_curve_name(i);
    n_curves = n;
    for (size_t r = 0; r < n_runs; r++) {
        if (!runs[r].n_rows) continue;
        const kd_epoch_metrics *m = &runs[r].rows[0];
        for (size_t k = 0; k < m->n_terms && n < sizeof names / sizeof names[0]; k++) {
            size_t o = n_curves;
            while (o < n && strcmp(names[o], m->keys[k])) o++;
            if (o == n) names[n++] = m->keys[k];
        }
    }
    for (size_t i = 0; i < n; i++)
        if (!strcmp(names[i], metric)) return KD_OK;
    char list[2048];
    size_t len = 0;
    for (size_t i = 0; i < n && len < sizeof list; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", names[i]);
    const char *near = kd_suggest(metric, names, n);
    kd_err_set(err, KD_EUSAGE, "--metric %s: unknown metric%s%s%s; expected one of %s%s", metric,
               near ? " (did you mean \"" : "", near ? near : "", near ? "\"?)" : "", list,
               n > n_curves ? "" : " (the runs logged no loss terms)");
    return KD_EUSAGE;
}

static int run(int argc, char **argv) {
    const char *out = NULL, *metric = NULL;
    /* --metric is checked once the runs are read: their loss terms are metrics too. */
    const kd_cli_opt cli_opts[] = {
        {.name = "--out", .short_name = 'o', .kind = KD_OPT_STRING, .to.str = &out,
         .needs = "an SVG file"},
        {.name = "--metric", .kind = KD_OPT_STRING, .to.str = &metric, .needs = "a metric"},
    };
    const kd_cli_spec spec = {cli_opts, KD_CLI_N_OPTS(cli_opts), SIZE_MAX, usage};
    size_t n_runs;
    int rc = kd_cli_parse(&spec, argc, argv, &n_runs);
    if (rc != KD_CLI_GO) return rc;
    if (n_runs == 0) return kd_cli_usage_error(argv[0], "expected at least one RUN folder");

    kd_err err = {0};
    kd_status st = KD_OK;
    kd_strbuf svg = {0};
    char default_out[64], metrics[KD_PATH_MAX];
    size_t max_epochs = 0;
    char **names = calloc(n_runs, sizeof *names), **labels = NULL;
    kd_epoch_metrics **rows = calloc(n_runs, sizeof *rows);
    kd_report_run *runs = calloc(n_runs, sizeof *runs);
    if (!names || !rows || !runs) {
        st = kd_err_set(&err, KD_EIO, "out of memory");
        goto cleanup;
    }
    for (size_t k = 0; k < n_runs; k++) {
        if (!(names[k] = malloc(KD_PATH_MAX))) {
            st = kd_err_set(&err, KD_EIO, "out of memory");
            goto cleanup;
        }
        st = locate_run(argv[1 + k], names[k], metrics, KD_PATH_MAX, &err);
        if (!st) st = kd_metrics_read(metrics, &rows[k], &runs[k].n_rows, &err);
        if (st) goto cleanup;
        runs[k].rows = rows[k];
        runs[k].teacher_cached = teacher_cached(metrics);
        if (runs[k].n_rows > max_epochs) max_epochs = runs[k].n_rows;
    }
    if (metric && (st = check_metric(metric, runs, n_runs, &err))) goto cleanup;
    if (!(labels = calloc(n_runs, sizeof *labels))) {
        st = kd_err_set(&err, KD_EIO, "out of memory");
        goto cleanup;
    }
    for (size_t k = 0; k < n_runs; k++) {
        const char *label = kd_path_label((const char *const *)names, n_runs, k);
        size_t cap = strlen(label) + 24;
        if (!(labels[k] = malloc(cap))) {
            st = kd_err_set(&err, KD_EIO, "out of memory");
            goto cleanup;
        }
        snprintf(labels[k], cap, "%s%s", label, runs[k].teacher_cached ? " (cached teacher)" : "");
        runs[k].label = labels[k];
    }
    if (!out) {
        snprintf(default_out, sizeof default_out, "%s.svg", metric ? metric : "curves");
        out = default_out;
    }
    st = kd_report_curves(runs, n_runs, metric, &svg, &err);
    if (!st) st = kd_report_save(out, &svg, &err);
    if (st) goto cleanup;
    kd_cli_warn_if_any(&err);
    printf("plot: wrote %s (%zu run%s, up to %zu epoch%s)\n", out, n_runs, n_runs == 1 ? "" : "s",
           max_epochs, max_epochs == 1 ? "" : "s");
cleanup:
    for (size_t k = 0; k < n_runs; k++) {
        if (names) free(names[k]);
        if (rows) free(rows[k]);
        if (labels) free(labels[k]);
    }
    free(labels);
    free(names);
    free(rows);
    free(runs);
    kd_strbuf_free(&svg);
    return st ? kd_cli_fail(&err) : 0;
}

const kd_command kd_cmd_plot = {
    "plot", "draw training curves of run folders (loss, accuracy, lr, speed) as SVG", usage, run};
