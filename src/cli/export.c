/* export.c - `distill export`: a weights-only checkpoint in f32, f16, bf16 or int8 (with, given
 * data, the accuracy and agreement of source and export), or a deployment file: ONNX or a C
 * header. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "kd_checkpoint.h"
#include "kd_dtype.h"
#include "kd_export.h"
#include "kd_eval.h"
#include "kd_threads.h"

static const char usage[] =
    "Usage: distill export IN.safetensors OUT [--format safetensors|onnx|c]\n"
    "                      [--dtype f32|f16|bf16|int8|qint8] [--calibrate N] [--name NAME]\n"
    "                      [--config FILE | --run DIR] [--split test|validation]\n"
    "                      [--batch N] [--threads N]\n"
    "\n"
    "Writes the model in checkpoint IN to OUT, atomically, without optimizer or training state.\n"
    "\n"
    "  --format safetensors  (default) a weights-only checkpoint with the same tensor names and\n"
    "                  order (torch.nn.Sequential state_dict); --dtype is required.\n"
    "  --format onnx   an ONNX model (opset 13, IR version 7: ONNX Runtime 1.6 and later).\n"
    "                  Input \"input\" [N, ...] is the RAW sample as the data source yields it\n"
    "                  (u8 pixels as floats 0-255, [N, C, H, W], or [N, D] when the checkpoint\n"
    "                  flattens); the recorded preprocessing is inside the graph. Outputs\n"
    "                  \"logits\" [N, classes] and \"probabilities\" (softmax). metadata_props:\n"
    "                  arch, classes, preprocess, dtype, distill_version. Batch norm is\n"
    "                  BatchNormalization in inference form, GELU 0.5 x (1 + Erf(x / sqrt 2)),\n"
    "                  layer norm its opset-13 decomposition; dropout disappears.\n"
    "  --format c      one C99 header, stb-style: declarations always, the code under\n"
    "                  #define NAME_IMPLEMENTATION (NAME upper case). No malloc, no stdio, only\n"
    "                  <math.h>; weights as static const arrays (NAME_WEIGHT_ATTR places them);\n"
    "                  the caller passes NAME_SCRATCH_FLOATS floats of scratch. API:\n"
    "                  NAME_INPUT_SIZE, NAME_N_CLASSES, name_class_names[],\n"
    "                  void name_forward(const float *raw_input, float *logits, float *scratch),\n"
    "                  int name_predict(const float *raw_input, float *scratch) (top-1 class).\n"
    "  --dtype f32|f16|bf16|int8  weight format (onnx and c: default f32; c: f32 or int8)\n"
    "       f16, bf16: trainable tensors in half / bfloat16 precision; batch-norm running\n"
    "                  statistics stay F32 (onnx: decoded by Cast nodes).\n"
    "       int8:      weights of dense and conv2d layers as int8 plus one F32 scale per\n"
    "                  output row / channel, symmetric: scale = max|w_row| / 127,\n"
    "                  q = round(w / scale), w = q * scale; activations stay float. Safetensors:\n"
    "                  I8 \"<name>\" + F32 \"<name>_scale\"; onnx: DequantizeLinear (axis 0);\n"
    "                  c: signed char arrays and float scales. Biases and batch norm stay F32.\n"
    "       qint8:     (safetensors) a full-integer model: int8 weights per output channel\n"
    "                  and int8 activations per tensor, int32 bias and accumulators, batch norm\n"
    "                  folded into the conv2d or dense before it, ReLU into its producer;\n"
    "                  needs --calibrate N and --config (docs/integer.md). With --format c:\n"
    "                  a header with NAME_forward_q (int8 in and out, no float),\n"
    "                  NAME_forward / NAME_predict (raw input) and NAME_ARENA_BYTES of arena;\n"
    "                  with --format onnx: a QDQ model (QuantizeLinear / DequantizeLinear\n"
    "                  around each op, int8 weights, int32 bias) that ONNX Runtime runs with\n"
    "                  its integer kernels, float input and logits\n"
    "  --calibrate N   qint8: activation ranges from the first N samples of the config's\n"
    "                  training split (after the validation hold-out, in file order)\n"
    "  --name NAME     the C header's identifier prefix (default: OUT's file name)\n"
    "  --config FILE   (safetensors) also measure the accuracy of IN and OUT and their top-1\n"
    "                  agreement on the config's data (a file without \"arch\" takes the\n"
    "                  config's layers; onnx and c take them too)\n"
    "  --run DIR       the same with DIR/config.json (a training run folder)\n"
    "  --split S       test (default) or validation, for the accuracy check\n"
    "  --batch N       batch size of the accuracy check (default 256)\n"
    "  --threads N     threads (BLAS and distill's own loops; default: the config's, else all\n"
    "                  cores)\n"
    "\n"
    "Metadata of a safetensors OUT: format, arch, class names and preprocessing copied from IN,\n"
    "plus \"dtype\" and, for int8, \"quantization\". OUT must differ from IN. Exported\n"
    "safetensors files load in eval, predict and info, and in any safetensors reader.\n"
    "\n"
    "Examples:\n"
    "  distill export runs/s/best.safetensors s.onnx --format onnx --dtype int8\n"
    "      python3: import onnxruntime as ort, numpy as np\n"
    "               s = ort.InferenceSession(\"s.onnx\")\n"
    "               x = np.zeros((1, 784), np.float32)  # raw pixels 0-255\n"
    "               logits, probs = s.run(None, {\"input\": x})\n"
    "               print(probs.argmax(1))\n"
    "  distill export runs/s/best.safetensors fmnist.h --format c --dtype int8\n"
    "      C:  #include <stdio.h>\n"
    "          #define FMNIST_IMPLEMENTATION      /* in one .c file */\n"
    "          #include \"fmnist.h\"\n"
    "          static float img[FMNIST_INPUT_SIZE], scratch[FMNIST_SCRATCH_FLOATS];\n"
    "          int main(void) { puts(fmnist_class_names[fmnist_predict(img, scratch)]); }\n"
    "\n"
    "Exit codes: 0 ok, 1 I/O failure, 2 usage error (also a layer or weight the format cannot\n"
    "hold), 3 bad input file.\n";

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

/* IN's metadata pairs that OUT keeps (pointers into f). */
static kd_status copy_meta(const kd_st_file *f, const char ***keys, const char ***vals,
                           size_t *n, kd_err *err) {
    *keys = calloc(f->n_meta + 1, sizeof **keys);
    *vals = calloc(f->n_meta + 1, sizeof **vals);
    if (!*keys || !*vals) return kd_err_set(err, KD_EIO, "out of memory");
    for (size_t i = 0; i < f->n_meta; i++) {
        if (dropped_key(f->meta_keys[i])) continue;
        (*keys)[*n] = f->meta_keys[i];
        (*vals)[(*n)++] = f->meta_vals[i];
    }
    return KD_OK;
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
        if (has_pp[k]) kd_preprocess_free(&pp[k]);
    }
    free(labels);
    return st;
}

/* ONNX or C: the model with the checkpoint's preprocessing, classes and metadata. */
static kd_status write_deployment(const char *format, const char *in, const char *out,
                                  const char *name, const kd_codec *codec, const kd_model *m,
                                  const kd_preprocess *pp, char **classes, size_t n_classes,
                                  const char *const *keys, const char *const *vals, size_t n_md,
                                  kd_err *err) {
    const kd_export_info info = {codec, pp, classes, n_classes, in, keys, vals, n_md};
    if (!strcmp(format, "onnx")) return kd_export_onnx(out, m, &info, err);
    char derived[64];
    if (!name) {
        kd_export_c_name(out, derived, sizeof derived);
        name = derived;
    }
    return kd_export_c(out, m, name, &info, err);
}

/* What is wrong with the arguments of a qint8 export (or --calibrate without one); NULL: fine. */
static const char *qint8_args_wrong(int qint8, size_t calibrate,
                                    int has_config) {
    if (!qint8) return calibrate ? "--calibrate is for --dtype qint8" : NULL;
    if (!calibrate || !has_config)
        return "--dtype qint8 needs --calibrate N (samples for the activation ranges) and "
               "--config FILE or --run DIR";
    return NULL;
}

static int run(int argc, char **argv) {
    static const char *const formats[] = {"safetensors", "onnx", "c", NULL};
    const char *dtype_s = NULL, *config = NULL, *run_dir = NULL, *split = "test";
    const char *format = "safetensors", *name = NULL;
    size_t batch = 256, calibrate = 0, n_args;
    long long threads = -1;
    const kd_cli_opt cli_opts[] = {
        {.name = "--format", .kind = KD_OPT_STRING, .to.str = &format, .choices = formats},
        {.name = "--dtype", .kind = KD_OPT_STRING, .to.str = &dtype_s},
        {.name = "--name", .kind = KD_OPT_STRING, .to.str = &name, .needs = "a C identifier"},
        {.name = "--config", .kind = KD_OPT_STRING, .to.str = &config, .needs = "a file"},
        {.name = "--run", .kind = KD_OPT_STRING, .to.str = &run_dir, .needs = "a folder"},
        KD_CLI_OPT_SPLIT(&split),
        KD_CLI_OPT_BATCH(&batch),
        {.name = "--calibrate", .kind = KD_OPT_SIZE, .to.size = &calibrate, .min = 1,
         .max = 1000000, .needs = "a sample count"},
        KD_CLI_OPT_THREADS(&threads, NULL),
    };
    const kd_cli_spec spec = {cli_opts, KD_CLI_N_OPTS(cli_opts), 2, usage};
    int rc = kd_cli_parse(&spec, argc, argv, &n_args);
    if (rc != KD_CLI_GO) return rc;
    if (n_args < 2) return kd_cli_usage_error(argv[0], "expected IN.safetensors OUT");
    const char *in = argv[1], *out = argv[2];
    const int deploy = strcmp(format, "safetensors") != 0;
    char dtypes[128];
    kd_codec_names(dtypes, sizeof dtypes);
    if (!dtype_s && !deploy) return kd_cli_usage_error(argv[0], "--dtype is required (%s)", dtypes);
    if (!dtype_s) dtype_s = "f32";
    const int qint8 = strcmp(dtype_s, "qint8") == 0;
    const char *why = qint8_args_wrong(qint8, calibrate, config || run_dir);
    if (why) return kd_cli_usage_error(argv[0], "%s", why);
    kd_dtype dtype = KD_DT_F32;
    if (!qint8 && kd_export_dtype_parse(dtype_s, &dtype))
        return kd_cli_usage_error(argv[0], "--dtype: expected %s, got \"%s\"", dtypes, dtype_s);
    if (name && strcmp(format, "c"))
        return kd_cli_usage_error(argv[0], "--name is for --format c");
    if (name && !kd_export_c_name_ok(name))
        return kd_cli_usage_error(argv[0], "--name: expected a C identifier of at most 48 "
                                            "characters ([A-Za-z_][A-Za-z0-9_]*), got \"%s\"", name);
    if (config && run_dir) return kd_cli_usage_error(argv[0], "give --config or --run, not both");
    if (same_file(in, out))
        return kd_cli_usage_error(argv[0], "OUT is the same file as IN (%s); choose another path", in);

    kd_err err = {0};
    kd_status st = KD_OK;
    kd_st_file f;
    kd_model m;
    kd_eval_data d;
    kd_preprocess pp;
    int have_data = 0, has_pp = 0;
    char **classes = NULL;
    size_t n_classes = 0, n_md = 0;
    const char **keys = NULL, **vals = NULL;
    char cfg_path[KD_PATH_MAX + 16];
    memset(&f, 0, sizeof f);
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    if (run_dir) {
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", run_dir);
        config = cfg_path;
    }
    if (config && qint8) {
        if (!(st = kd_st_read(&f, in, &err))) st = copy_meta(&f, &keys, &vals, &n_md, &err);
        char cname[64]; /* the header's name when --name is absent */
        kd_export_c_name(out, cname, sizeof cname);
        const kd_cli_qint8 job = {in, out, config, split, format, name ? name : cname,
                                  calibrate, batch, keys, vals, n_md};
        if (!st) st = kd_cli_export_qint8(&job, &err);
        goto cleanup;
    }
    if (config) {
        st = kd_eval_data_from_config(&d, config, NULL, 0, split, &err);
        if (st) goto cleanup;
        have_data = 1;
    }
    kd_threads_set(threads >= 0 ? (int)threads : have_data ? d.threads : 0);

    st = kd_st_read(&f, in, &err);
    if (!st)
        st = kd_eval_load_model(in, have_data ? &d : NULL, NULL, &m, &pp, &has_pp, &classes,
                                &n_classes, &err);
    if (st) goto cleanup;
    st = copy_meta(&f, &keys, &vals, &n_md, &err);
    if (st) goto cleanup;
    if (deploy && !has_pp)
        printf("note      %s records no preprocessing: the exported model takes its inputs as "
               "the model does\n", in);
    if (deploy)
        st = write_deployment(format, in, out, name, kd_codec_for(dtype), &m, has_pp ? &pp : NULL,
                              classes, n_classes, keys, vals, n_md, &err);
    else
        st = kd_export_write(out, &m, dtype, keys, vals, n_md, &err);
    if (st) goto cleanup;
    kd_cli_warn_if_any(&err);  /* written and renamed, but perhaps not durably */
    {
        const char *src_dtype = kd_st_meta(&f, "dtype");
        char what[48];
        snprintf(what, sizeof what, "%s %s", deploy ? format : "safetensors", dtype_s);
        long long before = file_size(in), after = file_size(out);
        print_size("source", in, before, src_dtype ? src_dtype : "f32");
        print_size("exported", out, after, what);
        /* A C header is text, usually larger than the binary checkpoint. */
        const int smaller = after <= before;
        printf("ratio     %.2fx %s (%zu tensors in, %zu model tensors out, %zu parameters)\n",
               after > 0 && before > 0 ? (smaller ? (double)before / (double)after
                                                  : (double)after / (double)before)
                                       : 0.0,
               smaller ? "smaller" : "larger", f.n_tensors, m.n_tensors, m.n_params);
    }
    if (have_data && !deploy) st = check_accuracy(&d, in, out, batch, &err);
cleanup:
    free(keys);
    free(vals);
    kd_free_strings(classes, n_classes);
    if (has_pp) kd_preprocess_free(&pp);
    kd_model_free(&m);
    kd_st_free(&f);
    kd_eval_data_free(&d);
    return st ? kd_cli_fail(&err) : 0;
}

const kd_command kd_cmd_export = {
    "export", "write a weights-only checkpoint (f32, f16, bf16, int8), an ONNX model or a C header",
    usage, run};
