/* predict.c - `distill predict`: top-k classes with probabilities for images, IDX samples or
 * CSV rows, with the preprocessing recorded in the checkpoint. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "kd_checkpoint.h"
#include "kd_eval.h"
#include "kd_loss.h"
#include "kd_onnx.h"
#include "kd_path.h"

static const char usage[] =
    "Usage: distill predict --model M.safetensors [--top K] [--json] [--index N]\n"
    "                       [--labels IDX_LABELS] [--channels C] [--size HxW] INPUT...\n"
    "\n"
    "Prints the K most likely classes (default 5, at most the class count) with their softmax\n"
    "probabilities for every input, using the class names and the preprocessing recorded in\n"
    "the checkpoint. Any checkpoint distill reads works (f32, f16, bf16, int8 exports,\n"
    "training checkpoints; a full-integer qint8 export runs with the integer kernels, its\n"
    "int8 logits dequantized), and an ONNX model (FILE ending in .onnx: the default\n"
    "preprocessing, or the raw values for a file `distill export` wrote). INPUT is one of:\n"
    "  image (PNG, JPEG)  decoded, converted to the model's channel count and resized\n"
    "                     (bilinear) to its input height and width\n"
    "  IDX file (.gz ok)  every sample, or only sample N with --index N (0-based); with\n"
    "                     --labels FILE the true label is shown beside each prediction\n"
    "  CSV file (.csv)    one prediction per row of numeric features; a row with one value more\n"
    "                     than the model's inputs has its last column taken as the label\n"
    "\n"
    "Options:\n"
    "  --model FILE       the checkpoint (required)\n"
    "  --top K            classes per input (default 5)\n"
    "  --json             print {\"model\", \"predictions\": [{\"input\", \"index\", \"label\",\n"
    "                     \"top\": [{\"class\", \"name\", \"p\"}, ...]}, ...]}\n"
    "  --index N          only sample N of IDX / CSV inputs\n"
    "  --labels FILE      IDX labels for an IDX input\n"
    "  --channels C       image channels (1 grey, 3 RGB) when the model's input is flat\n"
    "                     (default 1); ignored when the arch says [C, H, W]\n"
    "  --size HxW         image size for a flat model input (default: square, from the input\n"
    "                     size divided by the channels)\n"
    "\n"
    "  folder             its PNG and JPEG images in name order, and those of its subfolders\n"
    "                     (one per class, as an image-folder dataset)\n"
    "\n"
    "A bad input is reported and the others still predicted; the exit code is then 3.\n"
    "\n"
    "Output (text): one line per input, 'INPUT: NAME (p=0.8123), NAME (p=0.1000), ...', where\n"
    "NAME is the class name, or 'class N' when the checkpoint records none; IDX and CSV\n"
    "inputs are shown as FILE[index].\n"
    "\n"
    "Exit codes: 0 ok, 1 I/O failure, 2 usage error, 3 bad input (missing or unreadable model,\n"
    "an input that does not fit the model, an undecodable image).\n";

typedef struct {
    const char *model_path;
    size_t top;
    int json;
    long index;            /* -1 = every sample */
    const char *labels;
    int channels;          /* 0 = default */
    size_t height, width;  /* 0 = default */
} predict_opts;

typedef struct {
    kd_model m;
    kd_cli_qnet qn;        /* a qint8 model, run by the integer reference */
    kd_eval_net net;       /* runs whichever of the two was loaded */
    kd_preprocess pp;
    int has_pp;
    char **names;
    size_t n_names;
    cJSON *preds;          /* JSON output array, or NULL for text */
    int json_failed;       /* an allocation for the JSON output failed */
    float *probs;          /* (n_classes) scratch */
    size_t *rank;          /* (n_classes) scratch */
} predictor;

/* Softmax (each probability rounded once from double: the printed digits), then the top k by
 * repeated selection (k is small). */
static void top_k(const float *z, size_t C, size_t k, float *p, size_t *rank) {
    kd_softmax_row_f64(z, p, C, 1.0f);
    for (size_t c = 0; c < C; c++) rank[c] = c;
    for (size_t i = 0; i < k; i++) {
        size_t best = i;
        for (size_t j = i + 1; j < C; j++)
            if (p[rank[j]] > p[rank[best]] || (p[rank[j]] == p[rank[best]] && rank[j] < rank[best]))
                best = j;
        size_t t = rank[i];
        rank[i] = rank[best];
        rank[best] = t;
    }
}

static const char *class_name(const predictor *pr, size_t c, char *buf, size_t cap) {
    if (pr->names && c < pr->n_names && pr->names[c]) return pr->names[c];
    snprintf(buf, cap, "class %zu", c);
    return buf;
}

/* Reports one sample's logits: a text line or a JSON entry. index < 0: a single file. */
static kd_status report(predictor *pr, const predict_opts *o, const char *input, long index,
                        int32_t label, const float *z, kd_err *err) {
    size_t C = pr->net.n_classes, k = o->top < C ? o->top : C;
    char buf[64];
    top_k(z, C, k, pr->probs, pr->rank);
    if (pr->preds) {
        /* A failed allocation sets json_failed; the output is then refused as a whole. */
        int *bad = &pr->json_failed;
        int has_name = pr->names && label >= 0 && (size_t)label < pr->n_names;
        cJSON *j = kd_cli_json_add(pr->preds, NULL, cJSON_CreateObject(), bad);
        kd_cli_json_add(j, "input", cJSON_CreateString(input), bad);
        kd_cli_json_add(j, "index", index >= 0 ? cJSON_CreateNumber((double)index) : cJSON_CreateNull(),
                        bad);
        kd_cli_json_add(j, "label", label >= 0 ? cJSON_CreateNumber(label) : cJSON_CreateNull(), bad);
        if (has_name) kd_cli_json_add(j, "label_name", cJSON_CreateString(pr->names[label]), bad);
        cJSON *top = kd_cli_json_add(j, "top", cJSON_CreateArray(), bad);
        for (size_t i = 0; i < k; i++) {
            size_t c = pr->rank[i];
            cJSON *e = kd_cli_json_add(top, NULL, cJSON_CreateObject(), bad);
            kd_cli_json_add(e, "class", cJSON_CreateNumber((double)c), bad);
            kd_cli_json_add(e, "name", pr->names && c < pr->n_names ? cJSON_CreateString(pr->names[c])
                                                                     : cJSON_CreateNull(),
                            bad);
            kd_cli_json_add(e, "p", cJSON_CreateNumber(pr->probs[c]), bad);
        }
        (void)err;
        return KD_OK;
    }
    if (index >= 0) printf("%s[%ld]", input, index);
    else printf("%s", input);
    if (label >= 0) printf(" (label: %s)", class_name(pr, (size_t)label, buf, sizeof buf));
    printf(":");
    for (size_t i = 0; i < k; i++) {
        size_t c = pr->rank[i];
        printf("%s %s (p=%.4f)", i ? "," : "", class_name(pr, c, buf, sizeof buf), pr->probs[c]);
    }
    printf("\n");
    return KD_OK;
}

typedef enum { IN_IMAGE, IN_IDX, IN_CSV, IN_UNKNOWN } input_kind;

/* A CSV file's name, in any case. */
static int csv_name(const char *path) {
    return kd_path_has_suffix(path, ".csv", 1) || kd_path_has_suffix(path, ".tsv", 1) ||
           kd_path_has_suffix(path, ".txt", 1);
}

/* By content first (PNG/JPEG/gzip/IDX magic), then by extension. */
static input_kind classify(const char *path, kd_err *err, kd_status *st) {
    unsigned char h[4] = {0};
    FILE *f = fopen(path, "rb");
    *st = KD_OK;
    if (!f) {
        *st = kd_err_set(err, KD_EINPUT, "%s: cannot open input file", path);
        return IN_UNKNOWN;
    }
    size_t got = fread(h, 1, sizeof h, f);
    fclose(f);
    if (got >= 4 && h[0] == 0x89 && h[1] == 'P' && h[2] == 'N' && h[3] == 'G') return IN_IMAGE;
    if (got >= 3 && h[0] == 0xFF && h[1] == 0xD8 && h[2] == 0xFF) return IN_IMAGE;
    if (got >= 2 && h[0] == 0x1F && h[1] == 0x8B) return IN_IDX; /* gzip: an .idx*.gz file */
    if (got >= 4 && h[0] == 0 && h[1] == 0 &&
        (h[2] == 0x08 || h[2] == 0x09 || (h[2] >= 0x0B && h[2] <= 0x0E)) && h[3] >= 1 && h[3] <= 4)
        return IN_IDX;
    if (kd_data_image_name(path)) return IN_IMAGE; /* the decoder will say what is wrong with it */
    if (csv_name(path)) return IN_CSV;
    *st = kd_err_set(err, KD_EINPUT,
                     "%s: not a PNG, JPEG, IDX or CSV file (unrecognised content and extension)",
                     path);
    return IN_UNKNOWN;
}

static kd_status predict_image(predictor *pr, const predict_opts *o, const char *path,
                               kd_err *err) {
    const kd_shape *in = &pr->net.input;
    size_t numel = kd_shape_numel(in), C = 1, H = 0, W = 0;
    char sh[96];
    if (in->rank == 3) {
        C = in->d[0];
        H = in->d[1];
        W = in->d[2];
    } else if (in->rank == 2) {
        H = in->d[0];
        W = in->d[1];
    } else {
        C = o->channels ? (size_t)o->channels : 1;
        if (o->height) {
            H = o->height;
            W = o->width;
        } else if (numel % C == 0) {
            size_t side = (size_t)llround(sqrt((double)(numel / C)));
            if (side * side * C == numel) H = W = side;
        }
    }
    if (!H || !W || C * H * W != numel || (C != 1 && C != 3))
        return kd_err_set(err, KD_EINPUT,
                          "%s: cannot map an image onto the model input %s (use --size HxW and "
                          "--channels C with C*H*W = %zu)",
                          path, kd_shape_str(in, sh, sizeof sh), numel);
    kd_preprocess pp = pr->pp;
    if (pp.scale == 0.0f) pp.scale = 1.0f / 255.0f;
    float *x = malloc(numel * sizeof *x);
    if (!x) return kd_err_set(err, KD_EIO, "out of memory");
    kd_status st = kd_image_load(path, (int)C, H, W, &pp, x, err);
    if (!st) st = pr->net.reserve(pr->net.self, 1, err);
    if (!st) st = report(pr, o, path, -1, -1, pr->net.forward(pr->net.self, x, 1), err);
    free(x);
    return st;
}

/* predict_dataset's callback: reports each sample of a batch from the evaluation loop. */
typedef struct {
    predictor *pr;
    const predict_opts *o;
    const char *path;
    size_t first;          /* file index of the first sample evaluated */
    int has_labels;
} dataset_report;

static kd_status report_batch(void *user, size_t done, const float *z, const int32_t *y, size_t n,
                              kd_err *err) {
    dataset_report *r = user;
    kd_status st = KD_OK;
    for (size_t i = 0; i < n && !st; i++)
        st = report(r->pr, r->o, r->path, (long)(r->first + done + i), r->has_labels ? y[i] : -1,
                    z + i * r->pr->net.n_classes, err);
    return st;
}

/* IDX and CSV files: through the data module, so the layout and preprocessing match training. */
static kd_status predict_dataset(predictor *pr, const predict_opts *o, const char *path,
                                 input_kind kind, kd_err *err) {
    kd_data_source src;
    kd_dataset *ds = NULL;
    size_t *order = NULL;
    kd_status st;
    kd_data_source_defaults(&src);
    src.format = kind == IN_IDX ? KD_FMT_IDX : KD_FMT_CSV;
    snprintf(src.path, sizeof src.path, "%s", path);
    if (kind == IN_IDX && o->labels) snprintf(src.labels_path, sizeof src.labels_path, "%s", o->labels);
    if (kind == IN_CSV) snprintf(src.label_column, sizeof src.label_column, "none");
    size_t numel = kd_shape_numel(&pr->net.input);
    /* Per-feature statistics fit only once the label column is known: the first open looks
     * at the shape without them. */
    kd_preprocess probe = pr->pp;
    probe.n_features = 0;
    probe.feat = NULL;
    st = kd_dataset_open(&ds, &src, &probe, err);
    int reopen = !st && pr->pp.n_features;
    if (!st && kind == IN_CSV && kd_shape_numel(&kd_dataset_info(ds)->shape) == numel + 1) {
        /* One column more than the model takes: the last one is the label. */
        src.label_column[0] = '\0';
        reopen = 1;
    }
    if (reopen) {
        kd_dataset_close(ds);
        ds = NULL;
        st = kd_dataset_open(&ds, &src, &pr->pp, err);
    }
    if (st) goto cleanup;
    const kd_data_info *info = kd_dataset_info(ds);
    st = kd_eval_check_fit_net(&pr->net, o->model_path, info, path, err);
    if (st) goto cleanup;
    size_t n = info->n, first = 0;
    if (o->index >= 0) {
        if ((size_t)o->index >= n) {
            st = kd_err_set(err, KD_EUSAGE, "%s: --index %ld is out of range (the file has %zu samples)",
                            path, o->index, n);
            goto cleanup;
        }
        first = (size_t)o->index;
        n = 1;
    }
    order = malloc((n ? n : 1) * sizeof *order);
    if (!order) {
        st = kd_err_set(err, KD_EIO, "out of memory");
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) order[i] = first + i;
    dataset_report r = {pr, o, path, first, info->has_labels};
    st = kd_eval_forward_net(&pr->net, ds, order, n, 256, report_batch, &r, NULL, NULL, err);
cleanup:
    kd_dataset_close(ds);
    free(order);
    return st;
}

/* "HxW", each side 1..8192. */
/* One input file: a bad input (KD_EINPUT) is reported on stderr and counted, and the next
 * input goes on; any other failure (out of memory, a write error) stops the command. */
static kd_status predict_file(predictor *pr, const predict_opts *o, const char *path,
                              size_t *n_bad, kd_err *err) {
    kd_status st;
    input_kind kind = classify(path, err, &st);
    if (!st) {
        if (kind == IN_IMAGE) st = predict_image(pr, o, path, err);
        else st = predict_dataset(pr, o, path, kind, err);
    }
    fflush(stdout);
    if (st != KD_EINPUT) return st;
    kd_cli_fail(err);
    (*n_bad)++;
    kd_err_clear(err);
    return KD_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A file, or a folder: its images in name order, and those of its subfolders (one per class,
 * as an image-folder dataset), depth at most 2. */
static kd_status predict_path(predictor *pr, const predict_opts *o, const char *path, int depth,
                              size_t *n_bad, kd_err *err) {
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return predict_file(pr, o, path, n_bad, err);
    kd_status st = KD_OK;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int oom = 0;
    DIR *d = opendir(path);
    if (!d) {
        kd_err_set(err, KD_EINPUT, "%s: cannot open folder: %s", path, strerror(errno));
        return predict_file(pr, o, path, n_bad, err);
    }
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char full[KD_PATH_MAX + 256];
        snprintf(full, sizeof full, "%s/%s", path, e->d_name);
        int dir = stat(full, &sb) == 0 && S_ISDIR(sb.st_mode);
        if (dir ? depth >= 1 : !kd_data_image_name(full))
            continue;
        if (n == cap) {
            char **g = realloc(names, (cap ? 2 * cap : 64) * sizeof *names);
            if (!g) {
                oom = 1;
                break;
            }
            names = g;
            cap = cap ? 2 * cap : 64;
        }
        if (!(names[n] = strdup(full))) {
            oom = 1;
            break;
        }
        n++;
    }
    if (oom) st = kd_err_set(err, KD_EIO, "%s: out of memory listing the folder", path);
    closedir(d);
    if (n && names) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && !st; i++) st = predict_path(pr, o, names[i], depth + 1, n_bad, err);
    kd_free_strings(names, n);
    return st;
}

static int parse_size(const char *v, size_t *h, size_t *w) {
    char *end;
    long a = strtol(v, &end, 10);
    if (end == v || (*end != 'x' && *end != 'X')) return -1;
    const char *s = end + 1;
    long b = strtol(s, &end, 10);
    if (end == s || *end || a < 1 || b < 1 || a > 8192 || b > 8192) return -1;
    *h = (size_t)a;
    *w = (size_t)b;
    return 0;
}

static int run(int argc, char **argv) {
    predict_opts o = {NULL, 5, 0, -1, NULL, 0, 0, 0};
    static const char *const channel_counts[] = {"1", "3", NULL};
    static const char size_words[] = "HxW (each side 1..8192)";
    const char *channels = NULL, *size = NULL;
    long long index = -1;
    size_t n_inputs;
    const kd_cli_opt cli_opts[] = {
        {.name = "--model", .kind = KD_OPT_STRING, .to.str = &o.model_path, .needs = "a file"},
        {.name = "--top", .kind = KD_OPT_SIZE, .to.size = &o.top, .min = 1, .max = 65536},
        {.name = "--json", .kind = KD_OPT_FLAG, .to.flag = &o.json},
        {.name = "--index", .kind = KD_OPT_INT, .to.num = &index, .min = 0, .max = LONG_MAX},
        {.name = "--labels", .kind = KD_OPT_STRING, .to.str = &o.labels, .needs = "a file"},
        {.name = "--channels", .kind = KD_OPT_STRING, .to.str = &channels,
         .choices = channel_counts},
        {.name = "--size", .kind = KD_OPT_STRING, .to.str = &size,
         .needs = size_words},
    };
    const kd_cli_spec spec = {cli_opts, KD_CLI_N_OPTS(cli_opts), SIZE_MAX, usage};
    int rc = kd_cli_parse(&spec, argc, argv, &n_inputs);
    if (rc != KD_CLI_GO) return rc;
    char **inputs = argv + 1;
    o.index = (long)index;
    if (channels) o.channels = atoi(channels);
    if (size && parse_size(size, &o.height, &o.width))
        return kd_cli_usage_error(argv[0], "--size needs %s, got \"%s\"", size_words, size);
    if (!o.model_path || n_inputs == 0)
        return kd_cli_usage_error(argv[0], "expected --model FILE and at least one INPUT");

    kd_err err = {0};
    predictor pr;
    memset(&pr, 0, sizeof pr);
    kd_status st;
    if (kd_path_has_suffix(o.model_path, ".onnx", 1)) {
        /* An ONNX model takes the default preprocessing; a file distill exported holds its
         * own and takes the raw values (scale 1). */
        kd_onnx_info info;
        const kd_onnx_opts oo = {NULL, 0, NULL, 0, NULL, NULL};
        st = kd_onnx_load(o.model_path, &oo, &pr.m, &info, &err);
        if (!st) st = kd_model_freeze(&pr.m, &err);
        if (!st && info.from_distill) {
            kd_preprocess_defaults(&pr.pp);
            pr.pp.scale = 1.0f;
            pr.has_pp = 1;
        }
        kd_onnx_info_free(&info);
    } else if (kd_cli_is_qint8(o.model_path)) {
        st = kd_cli_qnet_load(o.model_path, &pr.qn, &pr.pp, &pr.has_pp, &pr.names, &pr.n_names,
                              &err);
    } else {
        st = kd_eval_load_model(o.model_path, NULL, NULL, &pr.m, &pr.pp, &pr.has_pp, &pr.names,
                                &pr.n_names, &err);
        if (!st) st = kd_model_freeze(&pr.m, &err);
    }
    if (st) goto cleanup;
    pr.net = pr.qn.net.self ? pr.qn.net : kd_eval_net_model(&pr.m);
    if (!pr.has_pp) kd_preprocess_defaults(&pr.pp);
    pr.probs = malloc(pr.net.n_classes * sizeof *pr.probs);
    pr.rank = malloc(pr.net.n_classes * sizeof *pr.rank);
    if (o.json) pr.preds = cJSON_CreateArray();
    if (!pr.probs || !pr.rank || (o.json && !pr.preds)) {
        st = kd_err_set(&err, KD_EIO, "out of memory");
        goto cleanup;
    }
    size_t n_bad = 0;
    for (size_t i = 0; i < n_inputs && !st; i++) st = predict_path(&pr, &o, inputs[i], 0, &n_bad,
                                                                   &err);
    if (!st && pr.preds) {
        int *bad = &pr.json_failed;
        cJSON *root = cJSON_CreateObject();
        kd_cli_json_add(root, "model", cJSON_CreateString(o.model_path), bad);
        kd_cli_json_add(root, "predictions", pr.preds, bad);  /* root owns it now */
        pr.preds = NULL;
        st = kd_cli_json_print(root, *bad, &err);
    }
    /* Every input was tried; the bad ones were reported as they came. */
    if (!st && n_bad)
        st = kd_err_set(&err, KD_EINPUT, "%zu input%s could not be predicted (see above)", n_bad,
                        n_bad == 1 ? "" : "s");
cleanup:
    cJSON_Delete(pr.preds);
    free(pr.probs);
    free(pr.rank);
    kd_free_strings(pr.names, pr.n_names);
    if (pr.has_pp) kd_preprocess_free(&pr.pp);
    kd_model_free(&pr.m);
    kd_cli_qnet_free(&pr.qn);
    return st ? kd_cli_fail(&err) : 0;
}

const kd_command kd_cmd_predict = {
    "predict", "top-k classes for images, IDX samples or CSV rows", usage, run};
