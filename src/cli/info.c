/* info.c - `distill info FILE [--json]`: validates a safetensors checkpoint and describes it
 * (format, architecture with output shapes, tensor table, totals, metadata), an ONNX model as
 * distill translates it, or a soft-target cache file (info_cache.c). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kd_cache.h"
#include "kd_filekind.h"
#include "kd_checkpoint.h"
#include "kd_onnx.h"
#include "kd_path.h"

static const char usage[] =
    "Usage: distill info FILE [--json]\n"
    "\n"
    "Validates a safetensors file completely (header, UTF-8, JSON, dtypes, shapes, offsets,\n"
    "file size) and describes it:\n"
    "  - the format (\"distill/1\" for distill checkpoints; plain safetensors otherwise)\n"
    "  - the architecture, when the file records one (metadata \"arch\"): one line per layer\n"
    "    with its output shape and parameter count; the tensors are checked against it\n"
    "  - a table of tensors: name, dtype, shape, bytes (in file order)\n"
    "  - totals: model tensors, values and bytes; training state (optimizer moments and\n"
    "    resume position) listed separately\n"
    "  - the metadata (class names, preprocessing, run information, training step ...)\n"
    "A soft-target cache (written by `distill logits`, starting with \"KDCACHE1\") is verified\n"
    "completely (header, sizes, every checksum, index and value) and described: targets (dtype,\n"
    "top-k and T), views and their seed, rows, classes, each teacher's weight and recorded\n"
    "validation accuracy, bytes per sample, and what it was built from.\n"
    "An ONNX model (FILE ending in .onnx) is read as a teacher would be and described: opset,\n"
    "producer, input, outputs, operators with counts, every value with its ONNX name, its\n"
    "distill name (what feature losses use) and its shape, the translated layers and the\n"
    "parameter count; an operator distill cannot translate is an error naming the node.\n"
    "\n"
    "Options:\n"
    "  --json     print one JSON object instead (keys: file, size, format, arch, layers,\n"
    "             tensors, totals, metadata; for a cache: file, size, format, dtype, top_k,\n"
    "             temperature, views, view_seed, rows, first_sample, last_sample, classes,\n"
    "             teachers [{weight, val_acc}], ensemble_val_acc, bytes_per_sample,\n"
    "             bytes_per_view, fields)\n"
    "  -h, --help this text\n"
    "\n"
    "Exit codes: 0 the file is valid; 2 usage error; 3 FILE is not a valid safetensors file or\n"
    "its tensors do not match its architecture (the message names the tensor and what was\n"
    "expected), or a broken cache (the message names the byte, field or block); 1 I/O failure.\n"
    "\n"
    "Example:\n"
    "  distill info runs/student/best.safetensors\n"
    "  distill info model.safetensors --json | python3 -m json.tool\n";

static int is_train_state(const char *name) {
    return strncmp(name, "optim.", 6) == 0 || strncmp(name, "train.", 6) == 0;
}

/* Parameter count of layer i (its PARAM tensors). */
static size_t layer_params(const kd_model *m, size_t i) {
    size_t n = 0;
    for (size_t t = 0; t < m->n_tensors; t++)
        if (m->tensors[t].kind == KD_TENSOR_PARAM && m->tensors[t].layer == i)
            n += m->tensors[t].numel;
    return n;
}

typedef struct {
    size_t n_model, n_state;
    uint64_t values, bytes, state_bytes;
} totals;

static totals count(const kd_st_file *f) {
    totals t = {0};
    for (size_t i = 0; i < f->n_tensors; i++) {
        const kd_st_tensor *s = &f->tensors[i];
        if (is_train_state(s->name)) {
            t.n_state++;
            t.state_bytes += s->end - s->begin;
        } else {
            t.n_model++;
            t.values += s->numel;
            t.bytes += s->end - s->begin;
        }
    }
    return t;
}

/* Prints a metadata value on one line: control characters as spaces, long values cut. */
static void print_value(const char *v) {
    size_t n = strlen(v), shown = n > 400 ? 400 : n;
    for (size_t i = 0; i < shown; i++) putchar((unsigned char)v[i] < 0x20 ? ' ' : v[i]);
    if (shown < n) printf(" ... (%zu bytes)", n);
    putchar('\n');
}

static void print_text(const char *path, const kd_st_file *f, const kd_model *m, int has_model) {
    const char *format = kd_st_meta(f, "format");
    printf("file      %s (%zu bytes, header %zu bytes)\n", path, f->blob_size, f->header_len);
    printf("format    %s\n", format ? format : "safetensors (no \"format\" metadata)");
    if (has_model) {
        printf("architecture:\n");
        kd_model_print(m, stdout);
    } else {
        printf("architecture: none recorded (no \"arch\" metadata, e.g. a plain PyTorch export);\n"
               "          give it in the config (teacher.layers / student.layers) to load this file\n");
    }
    size_t w = 4;
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strlen(f->tensors[i].name) > w) w = strlen(f->tensors[i].name);
    if (w > 60) w = 60;
    printf("tensors:\n  %-*s  %-5s  %-20s %12s\n", (int)w, "name", "dtype", "shape", "bytes");
    for (size_t i = 0; i < f->n_tensors; i++) {
        const kd_st_tensor *t = &f->tensors[i];
        char sb[200];
        printf("  %-*s  %-5s  %-20s %12" PRIu64 "\n", (int)w, t->name, kd_dtype_name(t->dtype),
               kd_st_shape_str(t, sb, sizeof sb), t->end - t->begin);
    }
    totals tt = count(f);
    printf("total     %zu tensors, %" PRIu64 " values, %" PRIu64 " bytes\n", tt.n_model, tt.values,
           tt.bytes);
    if (tt.n_state)
        printf("training  %zu tensors, %" PRIu64 " bytes (optimizer moments, epoch order)\n",
               tt.n_state, tt.state_bytes);
    printf("metadata:%s\n", f->n_meta ? "" : " none");
    for (size_t i = 0; i < f->n_meta; i++) {
        printf("  %s: ", f->meta_keys[i]);
        print_value(f->meta_vals[i]);
    }
}

/* cJSON number / string / null shorthands for the document below. */
#define NUM(v) cJSON_CreateNumber((double)(v))
#define STR(v) cJSON_CreateString(v)
#define STR_OR_NULL(v) ((v) ? cJSON_CreateString(v) : cJSON_CreateNull())

static void json_layers(cJSON *o, const kd_model *m, int *bad) {
    cJSON *layers = kd_cli_json_add(o, "layers", cJSON_CreateArray(), bad);
    for (size_t i = 0; layers && i < m->n_layers; i++) {
        kd_shape shape = kd_model_layer_out(m, i);
        cJSON *lo = kd_cli_json_add(layers, NULL, cJSON_CreateObject(), bad);
        kd_cli_json_add(lo, "index", NUM(i), bad);
        kd_cli_json_add(lo, "type", STR(kd_model_layer_type(m, i)), bad);
        cJSON *out = kd_cli_json_add(lo, "output", cJSON_CreateArray(), bad);
        for (int d = 0; d < shape.rank; d++) kd_cli_json_add(out, NULL, NUM(shape.d[d]), bad);
        kd_cli_json_add(lo, "params", NUM(layer_params(m, i)), bad);
    }
}

static void json_tensors(cJSON *o, const kd_st_file *f, int *bad) {
    cJSON *ts = kd_cli_json_add(o, "tensors", cJSON_CreateArray(), bad);
    for (size_t i = 0; ts && i < f->n_tensors; i++) {
        const kd_st_tensor *t = &f->tensors[i];
        cJSON *to = kd_cli_json_add(ts, NULL, cJSON_CreateObject(), bad);
        kd_cli_json_add(to, "name", STR(t->name), bad);
        kd_cli_json_add(to, "dtype", STR(kd_dtype_name(t->dtype)), bad);
        cJSON *sh = kd_cli_json_add(to, "shape", cJSON_CreateArray(), bad);
        for (int d = 0; d < t->rank; d++) kd_cli_json_add(sh, NULL, NUM(t->shape[d]), bad);
        kd_cli_json_add(to, "bytes", NUM(t->end - t->begin), bad);
        cJSON *off = kd_cli_json_add(to, "data_offsets", cJSON_CreateArray(), bad);
        kd_cli_json_add(off, NULL, NUM(t->begin), bad);
        kd_cli_json_add(off, NULL, NUM(t->end), bad);
    }
}

static kd_status print_json(const char *path, const kd_st_file *f, const kd_model *m,
                            int has_model, kd_err *err) {
    int bad = 0;
    cJSON *o = cJSON_CreateObject();
    const char *arch = kd_st_meta(f, "arch");
    kd_cli_json_add(o, "file", STR(path), &bad);
    kd_cli_json_add(o, "size", NUM(f->blob_size), &bad);
    kd_cli_json_add(o, "header_bytes", NUM(f->header_len), &bad);
    kd_cli_json_add(o, "format", STR_OR_NULL(kd_st_meta(f, "format")), &bad);
    cJSON *a = arch ? cJSON_Parse(arch) : NULL;  /* an unparsable arch shows as null */
    kd_cli_json_add(o, "arch", a ? a : cJSON_CreateNull(), &bad);
    if (has_model)
        json_layers(o, m, &bad);
    else
        kd_cli_json_add(o, "layers", cJSON_CreateNull(), &bad);
    json_tensors(o, f, &bad);
    totals tt = count(f);
    cJSON *to = kd_cli_json_add(o, "totals", cJSON_CreateObject(), &bad);
    kd_cli_json_add(to, "tensors", NUM(tt.n_model), &bad);
    kd_cli_json_add(to, "values", NUM(tt.values), &bad);
    kd_cli_json_add(to, "bytes", NUM(tt.bytes), &bad);
    kd_cli_json_add(to, "training_tensors", NUM(tt.n_state), &bad);
    kd_cli_json_add(to, "training_bytes", NUM(tt.state_bytes), &bad);
    cJSON *md = kd_cli_json_add(o, "metadata", cJSON_CreateObject(), &bad);
    for (size_t i = 0; i < f->n_meta; i++)
        kd_cli_json_add(md, f->meta_keys[i], STR(f->meta_vals[i]), &bad);
    return kd_cli_json_print(o, bad, err);
}

/* The values of an ONNX model as a JSON list of {onnx, distill, shape}. */
static cJSON *json_onnx_values(const kd_onnx_info *info) {
    cJSON *a = cJSON_CreateArray();
    for (size_t k = 0; a && k < info->n_values; k++) {
        const kd_onnx_value *v = &info->values[k];
        cJSON *o = cJSON_CreateObject(), *sh = cJSON_CreateArray();
        int ok = o && sh && cJSON_AddStringToObject(o, "onnx", v->onnx) &&
                 cJSON_AddItemToObject(o, "distill", v->distill ? cJSON_CreateString(v->distill)
                                                                : cJSON_CreateNull());
        for (int d = 0; ok && d < v->shape.rank; d++)
            ok = cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)v->shape.d[d]));
        if (ok && cJSON_AddItemToObject(o, "shape", sh)) sh = NULL;
        if (!ok || sh || !cJSON_AddItemToArray(a, o)) {
            cJSON_Delete(sh);
            cJSON_Delete(o);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

static kd_status print_onnx_json(const char *path, const kd_onnx_info *info, const kd_model *m,
                                 kd_err *err) {
    int bad = 0;
    char shape[64];
    cJSON *root = cJSON_CreateObject(), *outs = cJSON_CreateArray();
    for (size_t k = 0; outs && k < info->n_outputs; k++)
        kd_cli_json_add(outs, NULL, cJSON_CreateString(info->outputs[k]), &bad);
    kd_cli_json_add(root, "file", cJSON_CreateString(path), &bad);
    kd_cli_json_add(root, "format", cJSON_CreateString("onnx"), &bad);
    kd_cli_json_add(root, "opset", cJSON_CreateNumber((double)info->opset), &bad);
    kd_cli_json_add(root, "producer", cJSON_CreateString(info->producer), &bad);
    kd_cli_json_add(root, "from_distill", cJSON_CreateBool(info->from_distill), &bad);
    kd_cli_json_add(root, "input", cJSON_CreateString(info->input), &bad);
    kd_cli_json_add(root, "input_shape", cJSON_CreateString(kd_shape_str(&m->input, shape, sizeof shape)), &bad);
    kd_cli_json_add(root, "outputs", outs, &bad);
    kd_cli_json_add(root, "output", cJSON_CreateString(info->output), &bad);
    kd_cli_json_add(root, "operators", cJSON_CreateString(info->ops), &bad);
    kd_cli_json_add(root, "note", cJSON_CreateString(info->note), &bad);
    kd_cli_json_add(root, "values", json_onnx_values(info), &bad);
    json_layers(root, m, &bad);
    kd_cli_json_add(root, "parameters", cJSON_CreateNumber((double)m->n_params), &bad);
    return kd_cli_json_print(root, bad, err);
}

static void print_onnx_text(const char *path, const kd_onnx_info *info, const kd_model *m) {
    char shape[64];
    printf("file: %s\nformat: ONNX (opset %lld, IR %lld, producer %s)%s\n", path,
           (long long)info->opset, (long long)info->ir_version, info->producer,
           info->from_distill ? ", written by distill export: fed the raw sample" : "");
    printf("input: %s [N, %s\n", info->input, kd_shape_str(&m->input, shape, sizeof shape) + 1);
    printf("outputs:");
    for (size_t k = 0; k < info->n_outputs; k++)
        printf(" %s%s", info->outputs[k], strcmp(info->outputs[k], info->output) ? "" : " (used)");
    printf("\noperators: %s\n", info->ops);
    if (info->note[0]) printf("note: %s\n", info->note);
    printf("values (ONNX name -> distill name, shape per sample; constants whole):\n");
    for (size_t k = 0; k < info->n_values; k++) {
        const kd_onnx_value *v = &info->values[k];
        printf("  %s -> %s %s\n", v->onnx, v->distill ? v->distill : "(constant)",
               kd_shape_str(&v->shape, shape, sizeof shape));
    }
    printf("layers:\n");
    kd_model_print(m, stdout);
    printf("parameters: %zu\n", m->n_params);
}

static int info_onnx(const char *path, int json) {
    kd_err err;
    kd_model m;
    kd_onnx_info info;
    const kd_onnx_opts opt = {NULL, 0, NULL, 0, NULL, NULL};
    int rc = 0;
    kd_err_clear(&err);
    if (kd_onnx_load(path, &opt, &m, &info, &err) != KD_OK) return kd_cli_fail(&err);
    if (json) {
        if (print_onnx_json(path, &info, &m, &err) != KD_OK) rc = kd_cli_fail(&err);
    } else {
        print_onnx_text(path, &info, &m);
    }
    kd_onnx_info_free(&info);
    kd_model_free(&m);
    return rc;
}

static int run(int argc, char **argv) {
    int json = 0;
    size_t n_args;
    const kd_cli_opt cli_opts[] = {{.name = "--json", .kind = KD_OPT_FLAG, .to.flag = &json}};
    const kd_cli_spec spec = {cli_opts, KD_CLI_N_OPTS(cli_opts), SIZE_MAX, usage};
    int rc = kd_cli_parse(&spec, argc, argv, &n_args);
    if (rc != KD_CLI_GO) return rc;
    if (n_args == 0)
        return kd_cli_usage_error(argv[0], "missing FILE (a .safetensors checkpoint or a cache)");
    if (n_args > 1)
        return kd_cli_usage_error(argv[0], "expected one FILE, got '%s' and '%s'", argv[1], argv[2]);
    const char *path = argv[1];
    if (kd_cache_sniff(path)) return kd_cli_info_cache(path, json);
    if (kd_path_has_suffix(path, ".onnx", 1)) return info_onnx(path, json);
    /* A foreign file (ONNX, a PyTorch archive, a CSV) is named before any safetensors check. */
    kd_file_kind kind = kd_file_sniff_path(path);
    if (kind.what) {
        fprintf(stderr, "distill: %s: not a checkpoint or a cache: this is %s; %s\n", path,
                kind.what, kind.hint);
        return KD_EINPUT;
    }

    kd_err err;
    kd_err_clear(&err);
    kd_st_file f = {0};
    kd_model m = {0};
    int has_model = 0;
    rc = 0;
    if (kd_st_read(&f, path, &err) != KD_OK) {
        rc = kd_cli_fail(&err);
        goto cleanup;
    }
    const char *dtype = kd_st_meta(&f, "dtype");
    if (dtype && strcmp(dtype, "qint8") == 0) { /* a full-integer model: its own reader */
        rc = kd_cli_info_qint8(path, &f, json);
        goto cleanup;
    }
    if (kd_st_meta(&f, "arch")) {
        /* Builds the model and checks every tensor against it, and the class names and the
         * preprocessing, as eval and predict would (training state and extra tensors allowed,
         * so any distill file describes itself). All of it before the first line of output:
         * a refused file prints its error alone, never after a partial description. */
        kd_preprocess pp;
        int has_pp = 0;
        char **classes = NULL;
        size_t n_classes = 0;
        if (kd_ckpt_load(path, NULL, 0, 1, &m, &pp, &has_pp, &classes, &n_classes, &err) !=
            KD_OK) {
            rc = kd_cli_fail(&err);
            goto cleanup;
        }
        kd_free_strings(classes, n_classes);
        kd_preprocess_free(&pp);
        has_model = 1;
    }
    if (json) {
        if (print_json(path, &f, &m, has_model, &err) != KD_OK) rc = kd_cli_fail(&err);
    } else {
        print_text(path, &f, &m, has_model);
    }
cleanup:
    kd_model_free(&m);
    kd_st_free(&f);
    return rc;
}

const kd_command kd_cmd_info = {"info",
                                "validate and describe a checkpoint (layers, tensors, metadata) "
                                "or a cache",
                                usage, run};
