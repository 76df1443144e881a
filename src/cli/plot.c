/* plot.c - `distill plot`: the training curves of one or more run folders (teacher and students
 * side by side) as an SVG picture, read from each folder's metrics.jsonl. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "kd_path.h"
#include "kd_report.h"

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
    "                  samples_per_s, soft, hard (the loss's two terms) or seconds\n"
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

static int run(int argc, char **argv) {
    const char *out = NULL, *metric = NULL;
    const char *choices[MAX_CURVES + 1] = {0};
    for (size_t i = 0; i < MAX_CURVES && kd_report_curve_name(i); i++)
        choices[i] = kd_report_curve_name(i);
    const kd_cli_opt cli_opts[] = {
        {.name = "--out", .short_name = 'o', .kind = KD_OPT_STRING, .to.str = &out,
         .needs = "an SVG file"},
        {.name = "--metric", .kind = KD_OPT_STRING, .to.str = &metric, .choices = choices},
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
