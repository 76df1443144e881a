/* eval.c - `distill eval`: teacher and students side by side on one dataset: size, accuracy
 * with Wilson intervals, agreement and KL against the first model, calibration, speed; as a
 * table, JSON, or (--report) an SVG picture drawn by src/report. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "kd_checkpoint.h"
#include "kd_eval.h"
#include "kd_loss.h"
#include "kd_path.h"
#include "kd_report.h"
#include "kd_teacher.h"
#include "kd_threads.h"

static const char usage[] =
    "Usage: distill eval [--config FILE | --run DIR | --data IDX_IMAGES [--labels IDX_LABELS]]\n"
    "                    [--split test|validation] [--batch N] [--threads N]\n"
    "                    [--per-class] [--confusion] [--json] [--report FILE.svg]\n"
    "                    [--ensemble CKPT,CKPT,...]\n"
    "                    CHECKPOINT...\n"
    "\n"
    "Evaluates one or more checkpoints (teacher first, then students; any mix of f32, f16,\n"
    "bf16, int8 and qint8 files) on the same data and prints one table with a column per model:\n"
    "  params          trainable parameters (a qint8 file: its int8 weights)\n"
    "  file size       bytes on disk, and compression against the first column\n"
    "  top-1, top-5    accuracy with a Wilson 95% confidence interval\n"
    "  agreement       fraction of samples whose top-1 class matches the first model's\n"
    "  KL              mean KL(first || model) of the softmax outputs at T = 1 (nats)\n"
    "  ECE             expected calibration error, 15 equal-width confidence bins\n"
    "  samples/s       forward throughput at --batch (default 256) on the first samples,\n"
    "                  repeated for 0.2 s; data decoding excluded\n"
    "  latency         single-sample forward time, p50 and p99 in microseconds\n"
    "With one checkpoint the columns relative to the first model are left out.\n"
    "\n"
    "Data (one of):\n"
    "  --config FILE   the config's data.test (or the validation split, see --split)\n"
    "  --run DIR       the same, from a training run folder's DIR/config.json\n"
    "  --set PATH=VALUE  override a value of that config, as train's --set (repeatable),\n"
    "                  e.g. --set data.test.path=other.csv\n"
    "  --data FILE     an IDX images file (raw or .gz), with --labels FILE for its labels\n"
    "Each model sees its data with the preprocessing recorded in its checkpoint metadata, else\n"
    "the config's, else the defaults (u8 pixels scaled by 1/255). A CHECKPOINT ending in .onnx\n"
    "is an ONNX model, read as a teacher is (the config's preprocessing; a file written by\n"
    "`distill export` gets the raw sample). A full-integer (qint8) file runs with the integer\n"
    "kernels (the reference); its logits are the int8 logits dequantized.\n"
    "\n"
    "Options:\n"
    "  --split S       test (default) or validation (the config's validation source, else the\n"
    "                  same hold-out of the training data that training used)\n"
    "  --batch N       batch size for the accuracy pass and the throughput figure (256)\n"
    "  --threads N     threads (BLAS and distill's own loops; default: the config's, else all\n"
    "                  cores)\n"
    "  --per-class     also print per-class top-1 accuracy for every model\n"
    "  --confusion     also print each model's confusion matrix (rows: true, columns: predicted)\n"
    "  --json          print {\"split\", \"n\", \"models\": [{\"path\", \"params\", \"bytes\",\n"
    "                  \"compression\", \"top1\", \"top1_ci\": [lo, hi], \"top5\", \"top5_ci\",\n"
    "                  \"agreement\", \"kl\", \"ece\", \"samples_per_s\", \"latency_us_p50\",\n"
    "                  \"latency_us_p99\"}, ...]} instead (fractions in [0, 1]; null where a\n"
    "                  value does not apply)\n"
    "  --ensemble A,B  add a column \"ensemble\": the listed checkpoints' softmaxes averaged\n"
    "                  with equal weights (what a teacher.ensemble distils from, at T = 1);\n"
    "                  its params and file size are the members' sums; speed is not measured\n"
    "                  (\"-\", null in --json) and the --report picture leaves it out\n"
    "  --report FILE   also draw the comparison as an SVG picture (a browser opens it): top-1\n"
    "                  with its 95% interval, parameters and latency (p50 bar, p99 whisker) on\n"
    "                  log scales, and a reliability diagram per model (accuracy per\n"
    "                  confidence bin against the diagonal; the ECE picture)\n"
    "\n"
    "Exit codes: 0 ok, 1 I/O failure, 2 usage error, 3 bad input file (including a model whose\n"
    "input shape or class count does not fit the data, or a model whose class count differs\n"
    "from the first model's).\n";

typedef struct {
    const char *path;
    const char *label;   /* the column heading (kd_path_label) */
    size_t params;
    long long bytes;
    kd_metrics met;
    int has_ref;
    double samples_per_s, p50, p99;
} model_result;

typedef struct {
    int per_class, confusion, json;
    size_t batch;
} eval_opts;

static long long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* *out = a copy of the n names (caller frees with kd_free_strings); returns n, or 0 with *out
 * NULL when memory runs out (names only label the output, so none is no error). */
static size_t copy_names(char *const *names, size_t n, char ***out) {
    char **copy = calloc(n, sizeof *copy);
    for (size_t c = 0; copy && c < n; c++) {
        if ((copy[c] = strdup(names[c]))) continue;
        kd_free_strings(copy, c);
        copy = NULL;
    }
    *out = copy;
    return copy ? n : 0;
}

/* The data one evaluation reads, reopened when a model records other preprocessing. */
typedef struct {
    kd_eval_data *d;
    kd_dataset *ds;
    kd_preprocess ds_pp;
    kd_shape data_shape;
    int32_t *labels;         /* (n) */
    size_t C0;               /* the first model's class count */
    const char *first;       /* its path */
    char ***class_names;     /* the first names found in a checkpoint (caller frees) */
    size_t *n_names;
} eval_ctx;

/* A model of any kind eval reads: a float model (a checkpoint or an ONNX file), or a qint8
 * file run by the integer reference; net runs whichever it is. */
typedef struct {
    kd_model m;
    kd_cli_qnet qn;
    kd_eval_net net;
    size_t params;
} loaded;

static void loaded_free(loaded *L) {
    kd_model_free(&L->m);
    kd_cli_qnet_free(&L->qn);
    memset(L, 0, sizeof *L);
}

/* Loads the checkpoint at path into *L, checks it fits the data and the first model's class
 * count, and runs it over every sample: *logits (n, C) malloc'd, labels filled. */
static kd_status forward_model(eval_ctx *e, const char *path, size_t batch, loaded *L,
                               float **logits, kd_err *err) {
    kd_model *m = &L->m;
    kd_eval_data *d = e->d;
    kd_preprocess pp;
    int has_pp = 0;
    char **names = NULL;
    size_t n_cls_names = 0, cells;
    kd_status st;
    if (kd_path_has_suffix(path, ".onnx", 1)) {
        /* Fed as a teacher would be: the data's preprocessing, or the raw sample for a file
         * distill exported (the data's resolved scale, hence the dataset opened first). */
        kd_onnx_info info;
        if (e->ds && !kd_preprocess_same(&e->ds_pp, &d->pp)) {
            kd_dataset_close(e->ds);
            e->ds = NULL;
            kd_preprocess_free(&e->ds_pp);
        }
        if (!e->ds && ((st = kd_eval_data_open(d, &d->pp, &e->ds, err)) ||
                       (st = kd_preprocess_copy(&e->ds_pp, &d->pp, err))))
            return st;
        st = kd_teacher_load_onnx(path, NULL, KD_TEACHER_PP_DATA, NULL,
                                  kd_dataset_preprocess(e->ds), m, &info, err);
        kd_onnx_info_free(&info);
    } else if (kd_cli_is_qint8(path)) {
        st = kd_cli_qnet_load(path, &L->qn, &pp, &has_pp, &names, &n_cls_names, err);
    } else {
        st = kd_eval_load_model(path, d, &e->data_shape, m, &pp, &has_pp, &names, &n_cls_names,
                                err);
        if (!st) st = kd_model_freeze(m, err);
    }
    if (st) return st;
    L->net = L->qn.net.self ? L->qn.net : kd_eval_net_model(m);
    L->params = L->qn.net.self ? L->qn.n_weights : m->n_params;
    const kd_eval_net *net = &L->net;
    if (names && !*e->class_names) {
        *e->class_names = names;
        *e->n_names = n_cls_names;
    } else {
        kd_free_strings(names, n_cls_names);
    }
    if (!has_pp) pp = d->pp;  /* borrowed; a checkpoint's own is freed below */
    if (!kd_preprocess_same(&pp, &e->ds_pp)) {
        kd_dataset_close(e->ds);
        e->ds = NULL;
        kd_preprocess_free(&e->ds_pp);
        if (!(st = kd_eval_data_open(d, &pp, &e->ds, err)))
            st = kd_preprocess_copy(&e->ds_pp, &pp, err);
    }
    if (has_pp) kd_preprocess_free(&pp);
    if (st) return st;
    if ((st = kd_eval_check_fit_net(net, path, kd_dataset_info(e->ds), d->src.path, err)))
        return st;
    /* Scoring a model with more outputs than the data's classes compares different tasks
     * (predict, which only shows labels, accepts it). */
    const kd_data_info *di = kd_dataset_info(e->ds);
    if (di->has_labels && di->n_classes && net->n_classes > di->n_classes)
        return kd_err_set(err, KD_EINPUT, "%s: model has %zu classes but the data %s has %zu "
                          "(labels 0 to %zu)", path, net->n_classes, d->src.path, di->n_classes,
                          di->n_classes - 1);
    if (!e->C0) e->C0 = net->n_classes, e->first = path;
    if (net->n_classes != e->C0)
        return kd_err_set(err, KD_EINPUT, "%s: model has %zu classes but the first model %s has %zu",
                          path, net->n_classes, e->first, e->C0);
    if (kd_mul_size(d->n ? d->n : 1, net->n_classes, &cells) ||
        !(*logits = malloc(cells * sizeof **logits)))
        return kd_err_set(err, KD_EIO, "out of memory for %zu x %zu logits", d->n,
                          net->n_classes);
    st = kd_eval_forward_all_net(net, e->ds, d->order, d->n, batch, *logits, e->labels, NULL,
                                 err);
    if (st) kd_err_prefix(err, "%s", path);
    return st;
}

/* The --ensemble column: the members' softmaxes averaged with equal weights (the mixture a
 * teacher.ensemble distils from, at T = 1), scored through its log, whose softmax is the
 * mixture itself. Speed is not measured: an ensemble is several models. */
static kd_status evaluate_ensemble(eval_ctx *e, char **members, size_t n_members,
                                   const eval_opts *o, const float *ref, model_result *r,
                                   kd_err *err) {
    const size_t n = e->d->n;
    double *mix = NULL;
    float *logits = NULL;
    loaded m;
    kd_status st = KD_OK;
    memset(&m, 0, sizeof m);
    r->path = "ensemble";
    r->samples_per_s = r->p50 = r->p99 = NAN;
    for (size_t k = 0; k < n_members && !st; k++) {
        if (!(st = forward_model(e, members[k], o->batch, &m, &logits, err))) {
            size_t C = e->C0;
            if (!mix && !(mix = calloc(n * C + 1, sizeof *mix))) {
                st = kd_err_set(err, KD_EIO, "out of memory");
                break;
            }
            for (size_t i = 0; i < n; i++) {
                float *p = logits + i * C;
                kd_softmax_row_f64(p, p, C, 1.0f);
                for (size_t j = 0; j < C; j++) mix[i * C + j] += (double)p[j] / (double)n_members;
            }
            r->params += m.params;
            r->bytes += file_size(members[k]);
        }
        free(logits);
        logits = NULL;
        loaded_free(&m);
    }
    if (st) goto cleanup;
    if (!(logits = malloc((n * e->C0 + 1) * sizeof *logits))) {
        st = kd_err_set(err, KD_EIO, "out of memory");
        goto cleanup;
    }
    /* log of the mixture; a probability that underflowed becomes the smallest float's log. */
    for (size_t i = 0; i < n * e->C0; i++) logits[i] = (float)log(mix[i] > 1e-44 ? mix[i] : 1e-44);
    if ((st = kd_metrics_init(&r->met, e->C0, err))) goto cleanup;
    r->has_ref = 1;
    kd_metrics_add(&r->met, logits, ref, kd_dataset_info(e->ds)->has_labels ? e->labels : NULL, n);
cleanup:
    free(mix);
    free(logits);
    return st;
}

/* Evaluates every checkpoint (res[k]) and, with members, their ensemble (res[n_models]). */
static kd_status evaluate(kd_eval_data *d, char **paths, size_t n_models, char **members,
                          size_t n_members, const eval_opts *o, model_result *res,
                          char ***class_names, size_t *n_names, kd_err *err) {
    eval_ctx e;
    memset(&e, 0, sizeof e);
    e.d = d;
    e.class_names = class_names;
    e.n_names = n_names;
    float *ref = NULL, *logits = NULL;
    loaded m;
    memset(&m, 0, sizeof m);
    kd_status st = kd_preprocess_copy(&e.ds_pp, &d->pp, err);
    if (!st) st = kd_eval_data_open(d, &d->pp, &e.ds, err);
    if (st) {
        kd_preprocess_free(&e.ds_pp);
        return st;
    }
    e.data_shape = kd_dataset_info(e.ds)->shape;
    if (!(e.labels = malloc((d->n ? d->n : 1) * sizeof *e.labels))) {
        st = kd_err_set(err, KD_EIO, "out of memory");
        goto cleanup;
    }
    for (size_t k = 0; k < n_models; k++) {
        if ((st = forward_model(&e, paths[k], o->batch, &m, &logits, err))) goto cleanup;
        const kd_data_info *info = kd_dataset_info(e.ds);
        model_result *r = &res[k];
        r->path = paths[k];
        r->params = m.params;
        r->bytes = file_size(paths[k]);
        if ((st = kd_metrics_init(&r->met, m.net.n_classes, err))) goto cleanup;
        r->has_ref = n_models + (n_members > 0) > 1;
        kd_metrics_add(&r->met, logits, r->has_ref ? (k == 0 ? logits : ref) : NULL,
                       info->has_labels ? e.labels : NULL, d->n);
        st = kd_eval_throughput_net(&m.net, e.ds, d->order, d->n, o->batch, 0.2,
                                    &r->samples_per_s, err);
        if (!st) st = kd_eval_latency_net(&m.net, e.ds, d->order, d->n, 0.25, &r->p50, &r->p99, err);
        if (st) goto cleanup;
        if (k == 0) {
            ref = logits;
        } else {
            free(logits);
        }
        logits = NULL;
        loaded_free(&m);
    }
    if (n_members && (st = evaluate_ensemble(&e, members, n_members, o, ref, &res[n_models], err)))
        goto cleanup;
    if (!*class_names) {
        const kd_data_info *info = kd_dataset_info(e.ds);
        if (info->class_names && info->n_classes == e.C0)
            *n_names = copy_names(info->class_names, e.C0, class_names);
    }
cleanup:
    loaded_free(&m);
    kd_dataset_close(e.ds);
    kd_preprocess_free(&e.ds_pp);
    free(ref);
    free(logits);
    free(e.labels);
    return st;
}

static double frac(size_t k, size_t n) { return n ? (double)k / (double)n : 0.0; }

static void print_row_label(const char *label) { printf("%-24s", label); }

static void print_table(const kd_eval_data *d, const model_result *res, size_t n_models,
                        const eval_opts *o, char **names, size_t n_names) {
    int w = 14;
    for (size_t k = 0; k < n_models; k++) {
        int len = (int)strlen(res[k].label);
        if (len + 2 > w) w = len + 2;
    }
    if (w > 40) w = 40;
    printf("eval: %s split of %s, %zu samples, %d thread%s\n\n", d->split, d->src.path, d->n,
           kd_threads_get(), kd_threads_get() == 1 ? "" : "s");
    char cell[64];
    print_row_label("");
    for (size_t k = 0; k < n_models; k++) printf("%*.*s", w, w - 2, res[k].label);
    printf("\n");
#define ROW(label, ...)                                                                    \
    do {                                                                                   \
        print_row_label(label);                                                            \
        for (size_t k = 0; k < n_models; k++) {                                            \
            const model_result *r = &res[k];                                               \
            (void)r;                                                                       \
            __VA_ARGS__;                                                                   \
            printf("%*s", w, cell);                                                        \
        }                                                                                  \
        printf("\n");                                                                      \
    } while (0)
    ROW("params", snprintf(cell, sizeof cell, "%zu", r->params));
    ROW("file size (bytes)", snprintf(cell, sizeof cell, "%lld", r->bytes));
    if (n_models > 1)
        ROW("compression vs first", snprintf(cell, sizeof cell, "%.2fx",
                                             r->bytes > 0 ? (double)res[0].bytes / (double)r->bytes : 0.0));
    int labelled = res[0].met.n > 0;
    if (labelled) {
        double lo, hi;
        ROW("top-1 accuracy", snprintf(cell, sizeof cell, "%.2f%%", 100.0 * frac(r->met.top1, r->met.n)));
        ROW("  95% CI (Wilson)", kd_wilson95(r->met.top1, r->met.n, &lo, &hi);
            snprintf(cell, sizeof cell, "[%.2f, %.2f]", 100.0 * lo, 100.0 * hi));
    }
    /* With 5 classes or fewer every label is in the top 5: the row would say nothing. */
    if (labelled && res[0].met.n_classes > 5) {
        double lo, hi;
        ROW("top-5 accuracy", snprintf(cell, sizeof cell, "%.2f%%", 100.0 * frac(r->met.top5, r->met.n)));
        ROW("  95% CI (Wilson)", kd_wilson95(r->met.top5, r->met.n, &lo, &hi);
            snprintf(cell, sizeof cell, "[%.2f, %.2f]", 100.0 * lo, 100.0 * hi));
    }
    if (n_models > 1) {
        ROW("agreement with first", snprintf(cell, sizeof cell, "%.2f%%", 100.0 * frac(r->met.agree, r->met.n_ref)));
        ROW("KL(first || model)", snprintf(cell, sizeof cell, "%.4f",
                                           r->met.n_ref ? r->met.kl_sum / (double)r->met.n_ref : 0.0));
    }
    if (labelled) ROW("ECE (15 bins)", snprintf(cell, sizeof cell, "%.4f", kd_metrics_ece(&r->met)));
    {
        char label[48];
        snprintf(label, sizeof label, "samples/s (batch %zu)", o->batch);
        ROW(label, snprintf(cell, sizeof cell, isfinite(r->samples_per_s) ? "%.0f" : "-",
                            r->samples_per_s));
    }
    ROW("latency p50 (us)", snprintf(cell, sizeof cell, isfinite(r->p50) ? "%.1f" : "-", r->p50));
    ROW("latency p99 (us)", snprintf(cell, sizeof cell, isfinite(r->p99) ? "%.1f" : "-", r->p99));
#undef ROW
    if (!labelled) printf("\n(the data has no labels: accuracy and calibration not measured)\n");
    size_t C = res[0].met.n_classes;
    if (o->per_class && labelled) {
        printf("\nper-class top-1 accuracy\n");
        printf("%-24s%8s", "class", "n");
        for (size_t k = 0; k < n_models; k++) printf("%*.*s", w, w - 2, res[k].label);
        printf("\n");
        for (size_t c = 0; c < C; c++) {
            char label[64];
            if (names && c < n_names) snprintf(label, sizeof label, "%zu %s", c, names[c]);
            else snprintf(label, sizeof label, "%zu", c);
            printf("%-24.24s%8zu", label, res[0].met.class_n[c]);
            for (size_t k = 0; k < n_models; k++) {
                char cell2[32];
                if (res[k].met.class_n[c])
                    snprintf(cell2, sizeof cell2, "%.2f%%",
                             100.0 * frac(res[k].met.class_hits[c], res[k].met.class_n[c]));
                else
                    snprintf(cell2, sizeof cell2, "-");
                printf("%*s", w, cell2);
            }
            printf("\n");
        }
    }
    if (o->confusion && labelled) {
        for (size_t k = 0; k < n_models; k++) {
            printf("\nconfusion matrix of %s (rows: true class, columns: predicted)\n", res[k].path);
            printf("%6s", "");
            for (size_t c = 0; c < C; c++) printf("%7zu", c);
            printf("\n");
            for (size_t t = 0; t < C; t++) {
                printf("%6zu", t);
                for (size_t c = 0; c < C; c++) printf("%7zu", res[k].met.confusion[t * C + c]);
                if (names && t < n_names) printf("  %s", names[t]);
                printf("\n");
            }
        }
    }
}

/* A number, or null where the value does not apply. */
static cJSON *num_or_null(int has, double v) {
    return has ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

/* [lo, hi] of the Wilson interval, or null without labels. */
static cJSON *json_ci(int has, size_t k, size_t n, int *bad) {
    if (!has) return cJSON_CreateNull();
    double lo, hi;
    kd_wilson95(k, n, &lo, &hi);
    cJSON *a = cJSON_CreateArray();
    kd_cli_json_add(a, NULL, cJSON_CreateNumber(lo), bad);
    kd_cli_json_add(a, NULL, cJSON_CreateNumber(hi), bad);
    return a;
}

static void json_model(cJSON *models, const model_result *res, size_t n_models, size_t k,
                       const eval_opts *o, int *bad) {
    const model_result *r = &res[k];
    const kd_metrics *met = &r->met;
    int lab = met->n > 0, ref = r->has_ref && met->n_ref, comp = n_models > 1 && r->bytes > 0;
    size_t C = met->n_classes;
    cJSON *j = kd_cli_json_add(models, NULL, cJSON_CreateObject(), bad);
    kd_cli_json_add(j, "path", cJSON_CreateString(r->path), bad);
    kd_cli_json_add(j, "params", cJSON_CreateNumber((double)r->params), bad);
    kd_cli_json_add(j, "bytes", cJSON_CreateNumber((double)r->bytes), bad);
    kd_cli_json_add(j, "compression",
                    num_or_null(comp, comp ? (double)res[0].bytes / (double)r->bytes : 0), bad);
    kd_cli_json_add(j, "top1", num_or_null(lab, frac(met->top1, met->n)), bad);
    kd_cli_json_add(j, "top1_ci", json_ci(lab, met->top1, met->n, bad), bad);
    kd_cli_json_add(j, "top5", num_or_null(lab, frac(met->top5, met->n)), bad);
    kd_cli_json_add(j, "top5_ci", json_ci(lab, met->top5, met->n, bad), bad);
    kd_cli_json_add(j, "ece", num_or_null(lab, lab ? kd_metrics_ece(met) : 0), bad);
    kd_cli_json_add(j, "agreement", num_or_null(ref, frac(met->agree, met->n_ref)), bad);
    kd_cli_json_add(j, "kl", num_or_null(ref, ref ? met->kl_sum / (double)met->n_ref : 0), bad);
    kd_cli_json_add(j, "samples_per_s", num_or_null(isfinite(r->samples_per_s), r->samples_per_s),
                    bad);
    kd_cli_json_add(j, "latency_us_p50", num_or_null(isfinite(r->p50), r->p50), bad);
    kd_cli_json_add(j, "latency_us_p99", num_or_null(isfinite(r->p99), r->p99), bad);
    if (o->per_class && lab) {
        cJSON *pc = kd_cli_json_add(j, "per_class", cJSON_CreateArray(), bad);
        for (size_t c = 0; c < C; c++)
            kd_cli_json_add(pc, NULL,
                            num_or_null(met->class_n[c] > 0,
                                        frac(met->class_hits[c], met->class_n[c])),
                            bad);
    }
    if (o->confusion && lab) {
        cJSON *cm = kd_cli_json_add(j, "confusion", cJSON_CreateArray(), bad);
        for (size_t t = 0; t < C; t++) {
            cJSON *row = kd_cli_json_add(cm, NULL, cJSON_CreateArray(), bad);
            for (size_t c = 0; c < C; c++)
                kd_cli_json_add(row, NULL, cJSON_CreateNumber((double)met->confusion[t * C + c]),
                                bad);
        }
    }
}

static kd_status print_json(const kd_eval_data *d, const model_result *res, size_t n_models,
                            const eval_opts *o, char **names, size_t n_names, kd_err *err) {
    int bad = 0;
    cJSON *root = cJSON_CreateObject();
    kd_cli_json_add(root, "split", cJSON_CreateString(d->split), &bad);
    kd_cli_json_add(root, "data", cJSON_CreateString(d->src.path), &bad);
    kd_cli_json_add(root, "n", cJSON_CreateNumber((double)d->n), &bad);
    kd_cli_json_add(root, "threads", cJSON_CreateNumber(kd_threads_get()), &bad);
    kd_cli_json_add(root, "batch", cJSON_CreateNumber((double)o->batch), &bad);
    if (names) {
        cJSON *cn = kd_cli_json_add(root, "classes", cJSON_CreateArray(), &bad);
        for (size_t c = 0; c < n_names; c++)
            kd_cli_json_add(cn, NULL, cJSON_CreateString(names[c]), &bad);
    }
    cJSON *models = kd_cli_json_add(root, "models", cJSON_CreateArray(), &bad);
    for (size_t k = 0; k < n_models; k++) json_model(models, res, n_models, k, o, &bad);
    return kd_cli_json_print(root, bad, err);
}

/* The --report picture: the measured numbers handed to kd_report_eval, saved atomically. */
static kd_status write_report(const kd_eval_data *d, const model_result *res, size_t n_models,
                              const char *path, kd_err *err) {
    kd_strbuf svg = {0};
    char subtitle[KD_PATH_MAX + 64];
    kd_status st = KD_OK;
    kd_report_model *rm = calloc(n_models, sizeof *rm);
    if (!rm) {
        st = kd_err_set(err, KD_EIO, "out of memory");
        goto cleanup;
    }
    for (size_t k = 0; k < n_models; k++) {
        rm[k].label = res[k].label;
        rm[k].params = res[k].params;
        rm[k].met = &res[k].met;
        rm[k].latency_p50_us = res[k].p50;
        rm[k].latency_p99_us = res[k].p99;
    }
    snprintf(subtitle, sizeof subtitle, "%s split of %s, %zu samples", d->split, d->src.path,
             d->n);
    st = kd_report_eval(rm, n_models, subtitle, &svg, err);
    if (!st) st = kd_report_save(path, &svg, err);
cleanup:
    free(rm);
    kd_strbuf_free(&svg);
    return st;
}

#define MAX_SETS 64

static int run(int argc, char **argv) {
    const char *config = NULL, *run_dir = NULL, *data = NULL, *labels = NULL, *split = NULL;
    const char *report = NULL, *ensemble = NULL;
    char *members[KD_MAX_TEACHERS], *ens_copy = NULL;
    size_t n_members = 0;
    long long threads = -1;
    eval_opts o = {0, 0, 0, 256};
    size_t n_models;
    kd_cli_item set_items[MAX_SETS];
    kd_cli_list sets = {set_items, 0, MAX_SETS};
    const kd_cli_opt cli_opts[] = {
        {.name = "--config", .kind = KD_OPT_STRING, .to.str = &config, .needs = "a file"},
        {.name = "--set", .kind = KD_OPT_STRING, .list = &sets, .needs = "PATH=VALUE"},
        {.name = "--run", .kind = KD_OPT_STRING, .to.str = &run_dir, .needs = "a folder"},
        {.name = "--data", .kind = KD_OPT_STRING, .to.str = &data, .needs = "a file"},
        {.name = "--labels", .kind = KD_OPT_STRING, .to.str = &labels, .needs = "a file"},
        KD_CLI_OPT_SPLIT(&split),
        KD_CLI_OPT_BATCH(&o.batch),
        KD_CLI_OPT_THREADS(&threads, NULL),
        {.name = "--per-class", .kind = KD_OPT_FLAG, .to.flag = &o.per_class},
        {.name = "--confusion", .kind = KD_OPT_FLAG, .to.flag = &o.confusion},
        {.name = "--json", .kind = KD_OPT_FLAG, .to.flag = &o.json},
        {.name = "--report", .kind = KD_OPT_STRING, .to.str = &report, .needs = "an SVG file"},
        {.name = "--ensemble", .kind = KD_OPT_STRING, .to.str = &ensemble,
         .needs = "a comma-separated list of checkpoints"},
    };
    const kd_cli_spec spec = {cli_opts, KD_CLI_N_OPTS(cli_opts), SIZE_MAX, usage};
    int rc = kd_cli_parse(&spec, argc, argv, &n_models);
    if (rc != KD_CLI_GO) return rc;
    char **paths = argv + 1;
    int n_sources = (config != NULL) + (run_dir != NULL) + (data != NULL);
    const char *problem = NULL;
    if (n_models == 0) problem = "expected at least one CHECKPOINT";
    else if (n_sources == 0) problem = "no data: give --config FILE, --run DIR or --data FILE";
    else if (n_sources > 1) problem = "give only one of --config, --run and --data";
    else if (labels && !data) problem = "--labels goes with --data";
    else if (data && split && strcmp(split, "test"))
        problem = "--split validation needs --config or --run (explicit data is used whole)";
    if (!problem && sets.n && !config && !run_dir) problem = "--set goes with --config or --run";
    if (problem) return kd_cli_usage_error(argv[0], "%s", problem);
    const char *overrides[MAX_SETS];
    for (size_t i = 0; i < sets.n; i++) {
        if (!strchr(sets.items[i].value, '=') || sets.items[i].value[0] == '=')
            return kd_cli_usage_error(argv[0], "--set %s: expected PATH=VALUE",
                                      sets.items[i].value);
        overrides[i] = sets.items[i].value;
    }
    if (ensemble) {
        if (!(ens_copy = strdup(ensemble))) {
            fprintf(stderr, "distill: out of memory\n");
            return KD_EIO;
        }
        for (char *tok = strtok(ens_copy, ","); tok; tok = strtok(NULL, ",")) {
            if (n_members == KD_MAX_TEACHERS) {
                free(ens_copy);
                return kd_cli_usage_error(argv[0], "--ensemble: at most %d checkpoints",
                                          KD_MAX_TEACHERS);
            }
            members[n_members++] = tok;
        }
        if (!n_members) {
            free(ens_copy);
            return kd_cli_usage_error(argv[0], "--ensemble: expected checkpoints A,B,...");
        }
    }
    const size_t n_cols = n_models + (n_members > 0);

    kd_err err = {0};
    kd_eval_data d;
    char cfg_path[KD_PATH_MAX + 16];
    char **names = NULL;
    size_t n_names = 0;
    model_result *res = calloc(n_cols, sizeof *res);
    kd_status st = KD_OK;
    memset(&d, 0, sizeof d);
    if (!res) {
        st = kd_err_set(&err, KD_EIO, "out of memory");
        goto cleanup;
    }
    if (run_dir) {
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", run_dir);
        config = cfg_path;
    }
    st = config ? kd_eval_data_from_config(&d, config, overrides, sets.n, split, &err)
                : kd_eval_data_from_idx(&d, data, labels, &err);
    if (st) goto cleanup;
    kd_threads_set(threads >= 0 ? (int)threads : d.threads);
    st = evaluate(&d, paths, n_models, members, n_members, &o, res, &names, &n_names, &err);
    if (st) goto cleanup;
    for (size_t k = 0; k < n_models; k++)
        res[k].label = kd_path_label((const char *const *)paths, n_models, k);
    if (n_members) res[n_models].label = "ensemble";
    if (o.json)
        st = print_json(&d, res, n_cols, &o, names, n_names, &err);
    else
        print_table(&d, res, n_cols, &o, names, n_names);
    if (!st && report) {
        st = write_report(&d, res, n_models, report, &err);
        if (!st) kd_cli_warn_if_any(&err);
        if (!st && !o.json) printf("\nreport: %s\n", report);
    }
cleanup:
    for (size_t k = 0; res && k < n_cols; k++) kd_metrics_free(&res[k].met);
    free(res);
    free(ens_copy);
    kd_free_strings(names, n_names);
    kd_eval_data_free(&d);
    return st ? kd_cli_fail(&err) : 0;
}

const kd_command kd_cmd_eval = {
    "eval", "compare teacher and students: accuracy, agreement, KL, calibration, size, speed",
    usage, run};
