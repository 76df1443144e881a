/* export.c - `distill export`: a weights-only checkpoint in f32, f16, bf16 or int8, with its
 * size against the source and, given data, the accuracy and agreement of both. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "kd_checkpoint.h"
#include "kd_dtype.h"
#include "kd_eval.h"
#include "kd_threads.h"

static const char usage[] =
    "Usage: distill export IN.safetensors OUT.safetensors --dtype f32|f16|bf16|int8\n"
    "                      [--config FILE | --run DIR] [--split test|validation]\n"
    "                      [--batch N] [--threads N]\n"
    "\n"
    "Writes the weights of checkpoint IN to OUT without optimizer or training state, in the\n"
    "same tensor names and order (torch.nn.Sequential state_dict), atomically.\n"
    "\n"
    "  --dtype f32|f16|bf16|int8  weight format (required)\n"
    "       f16, bf16: trainable tensors in half / bfloat16 precision; batch-norm running\n"
    "                  statistics stay F32.\n"
    "       int8:      weights of dense and conv2d layers as I8 \"<name>\" plus F32\n"
    "                  \"<name>_scale\" [out], symmetric per output row / channel:\n"
    "                  scale = max|w_row| / 127, q = round(w / scale), w = q * scale.\n"
    "                  Biases and batch-norm tensors stay F32, num_batches_tracked I64.\n"
    "  --config FILE   also measure the accuracy of IN and OUT and their top-1 agreement on the\n"
    "                  config's data (a file without \"arch\" takes the config's layers)\n"
    "  --run DIR       the same with DIR/config.json (a training run folder)\n"
    "  --split S       test (default) or validation, for the accuracy check\n"
    "  --batch N       batch size of the accuracy check (default 256)\n"
    "  --threads N     threads (BLAS and distill's own loops; default: the config's, else all\n"
    "                  cores)\n"
    "\n"
    "Metadata of OUT: format, arch, class names and preprocessing copied from IN, plus \"dtype\"\n"
    "and, for int8, \"quantization\". OUT must differ from IN. Exported files load in eval,\n"
    "predict and info, and in any safetensors reader.\n"
    "\n"
    "Exit codes: 0 ok, 1 I/O failure, 2 usage error, 3 bad input file.\n";

/* Metadata that describes the training run rather than the model ("train.*" resume state,
 * "run": the trainer's config and partial-epoch sums) is dropped; the rest (arch, classes,
 * preprocess, anything a foreign writer added) is copied. format/dtype/quantization are
 * rewritten by kd_export_write. */
static int dropped_key(const char *k) {
    return !strncmp(k, "train.", 6) || !strncmp(k, "optim.", 6) || !strcmp(k, "run") ||
           !strcmp(k, "format") || !strcmp(k, "dtype") || !strcmp(k, "quantization");
}

static long long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (strcmp(a, b) == 0) return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static void print_size(const char *what, const char *path, long long bytes, const char *dtype) {
    printf("%-9s %s: %lld bytes (%.2f MiB, %s)\n", what, path, bytes, (double)bytes / 1048576.0,
           dtype);
}

/* Accuracy of the source and the exported model on the data, and their top-1 agreement. */
static kd_status check_accuracy(kd_eval_data *d, const char *in, const char *out, size_t batch,
                                kd_err *err) {
    kd_model m[2];
    kd_preprocess pp[2];
    int has_pp[2] = {0, 0};
    float *logits[2] = {NULL, NULL};
    int32_t *labels = NULL;
    kd_dataset *ds = NULL;
    const char *paths[2] = {in, out};
    double acc[2] = {0, 0};
    memset(m, 0, sizeof m);
    kd_status st = KD_OK;
    for (int k = 0; k < 2 && !st; k++) {
        st = kd_eval_load_model(paths[k], d, NULL, &m[k], &pp[k], &has_pp[k], NULL, NULL, err);
        if (!st && !has_pp[k]) pp[k] = d->pp;
    }
    for (int k = 0; k < 2 && !st; k++) {
        st = kd_eval_data_open(d, &pp[k], &ds, err);
        if (st) break;
        const kd_data_info *info = kd_dataset_info(ds);
        st = kd_eval_check_fit(&m[k], paths[k], info, d->src.path, err);
        if (st) break;
        if (!info->has_labels) {
            st = kd_err_set(err, KD_EINPUT, "%s: no labels to measure accuracy with", d->src.path);
            break;
        }
        size_t C = m[k].n_classes, cells;
        if (kd_mul_size(d->n ? d->n : 1, C, &cells) || !(logits[k] = malloc(cells * sizeof(float))) ||
            (!labels && !(labels = malloc((d->n ? d->n : 1) * sizeof *labels)))) {
            st = kd_err_set(err, KD_EIO, "out of memory for %zu samples", d->n);
            break;
        }
        st = kd_eval_forward_all(&m[k], ds, d->order, d->n, batch, logits[k], labels, NULL, err);
        if (!st) acc[k] = kd_topk_accuracy(logits[k], labels, d->n, C, 1);
        kd_dataset_close(ds);
        ds = NULL;
    }
    if (!st && m[0].n_classes != m[1].n_classes)
        st = kd_err_set(err, KD_EIO, "%s: class count changed in export", out);
    if (!st) {
        double agree = kd_agreement(logits[0], logits[1], d->n, m[0].n_classes);
        printf("accuracy  %s split, %zu samples: source %.2f%%, exported %.2f%% (%+.2f points), "
               "agreement %.2f%%\n",
               d->split, d->n, 100.0 * acc[0], 100.0 * acc[1], 100.0 * (acc[1] - acc[0]),
               100.0 * agree);
    }
    kd_dataset_close(ds);
    for (int k = 0; k < 2; k++) {
        kd_model_free(&m[k]);
        free(logits[k]);
    }
    free(labels);
    return st;
}

static int run(int argc, char **argv) {
    const char *dtype_s = NULL, *config = NULL, *run_dir = NULL, *split = "test";
    size_t batch = 256, n_args;
    long long threads = -1;
    const kd_cli_opt cli_opts[] = {
        {.name = "--dtype", .kind = KD_OPT_STRING, .to.str = &dtype_s},
        {.name = "--config", .kind = KD_OPT_STRING, .to.str = &config, .needs = "a file"},
        {.name = "--run", .kind = KD_OPT_STRING, .to.str = &run_dir, .needs = "a folder"},
        KD_CLI_OPT_SPLIT(&split),
        KD_CLI_OPT_BATCH(&batch),
        KD_CLI_OPT_THREADS(&threads, NULL),
    };
    const kd_cli_spec spec = {cli_opts, KD_CLI_N_OPTS(cli_opts), 2, usage};
    int rc = kd_cli_parse(&spec, argc, argv, &n_args);
    if (rc != KD_CLI_GO) return rc;
    if (n_args < 2) return kd_cli_usage_error(argv[0], "expected IN.safetensors OUT.safetensors");
    const char *in = argv[1], *out = argv[2];
    char dtypes[128];
    kd_codec_names(dtypes, sizeof dtypes);
    if (!dtype_s) return kd_cli_usage_error(argv[0], "--dtype is required (%s)", dtypes);
    kd_dtype dtype;
    if (kd_export_dtype_parse(dtype_s, &dtype))
        return kd_cli_usage_error(argv[0], "--dtype: expected %s, got \"%s\"", dtypes, dtype_s);
    if (config && run_dir) return kd_cli_usage_error(argv[0], "give --config or --run, not both");
    if (same_file(in, out))
        return kd_cli_usage_error(argv[0], "OUT is the same file as IN (%s); choose another path", in);

    kd_err err = {0};
    kd_status st = KD_OK;
    kd_st_file f;
    kd_model m;
    kd_eval_data d;
    int have_data = 0;
    char cfg_path[KD_PATH_MAX + 16];
    memset(&f, 0, sizeof f);
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    if (run_dir) {
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", run_dir);
        config = cfg_path;
    }
    if (config) {
        st = kd_eval_data_from_config(&d, config, split, &err);
        if (st) goto cleanup;
        have_data = 1;
    }
    kd_threads_set(threads >= 0 ? (int)threads : have_data ? d.threads : 0);

    st = kd_st_read(&f, in, &err);
    if (!st) st = kd_eval_load_model(in, have_data ? &d : NULL, NULL, &m, NULL, NULL, NULL, NULL, &err);
    if (st) goto cleanup;
    {
        const char **keys = calloc(f.n_meta + 1, sizeof *keys), **vals = calloc(f.n_meta + 1, sizeof *vals);
        size_t n_md = 0;
        if (!keys || !vals) {
            free(keys);
            free(vals);
            st = kd_err_set(&err, KD_EIO, "out of memory");
            goto cleanup;
        }
        for (size_t i = 0; i < f.n_meta; i++) {
            if (dropped_key(f.meta_keys[i])) continue;
            keys[n_md] = f.meta_keys[i];
            vals[n_md++] = f.meta_vals[i];
        }
        st = kd_export_write(out, &m, dtype, keys, vals, n_md, &err);
        free(keys);
        free(vals);
        if (st) goto cleanup;
        kd_cli_warn_if_any(&err);  /* written and renamed, but perhaps not durably */
    }
    {
        const char *src_dtype = kd_st_meta(&f, "dtype");
        long long before = file_size(in), after = file_size(out);
        print_size("source", in, before, src_dtype ? src_dtype : "f32");
        print_size("exported", out, after, dtype_s);
        printf("ratio     %.2fx smaller (%zu tensors in, %zu model tensors out, %zu parameters)\n",
               after > 0 ? (double)before / (double)after : 0.0, f.n_tensors, m.n_tensors, m.n_params);
    }
    if (have_data) st = check_accuracy(&d, in, out, batch, &err);
cleanup:
    kd_model_free(&m);
    kd_st_free(&f);
    kd_eval_data_free(&d);
    return st ? kd_cli_fail(&err) : 0;
}

const kd_command kd_cmd_export = {
    "export", "write a weights-only checkpoint as f32, f16, bf16 or int8", usage, run};
