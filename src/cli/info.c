/* info.c - `distill info FILE [--json]`: validates a safetensors checkpoint and describes it
 * (format, architecture with output shapes, tensor table, totals, metadata). */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_checkpoint.h"
#include "kd_cli.h"

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
    "\n"
    "Options:\n"
    "  --json     print one JSON object instead (keys: file, size, format, arch, layers,\n"
    "             tensors, totals, metadata)\n"
    "  -h, --help this text\n"
    "\n"
    "Exit codes: 0 the file is valid; 2 usage error; 3 FILE is not a valid safetensors file or\n"
    "its tensors do not match its architecture (the message names the tensor and what was\n"
    "expected); 1 I/O failure.\n"
    "\n"
    "Example:\n"
    "  distill info runs/student/best.safetensors\n"
    "  distill info model.safetensors --json | python3 -m json.tool\n";

static int is_train_state(const char *name) {
    return strncmp(name, "optim.", 6) == 0 || strncmp(name, "train.", 6) == 0;
}

static const char *shape_str(const kd_st_tensor *t, char *buf, size_t cap) {
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < t->rank && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%" PRIu64, i ? ", " : "", t->shape[i]);
    if (len < cap) snprintf(buf + len, cap - len, "]");
    return buf;
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
               shape_str(t, sb, sizeof sb), t->end - t->begin);
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

static int print_json(const char *path, const kd_st_file *f, const kd_model *m, int has_model) {
    cJSON *o = cJSON_CreateObject();
    const char *format = kd_st_meta(f, "format"), *arch = kd_st_meta(f, "arch");
    cJSON_AddStringToObject(o, "file", path);
    cJSON_AddNumberToObject(o, "size", (double)f->blob_size);
    cJSON_AddNumberToObject(o, "header_bytes", (double)f->header_len);
    if (format) cJSON_AddStringToObject(o, "format", format);
    else cJSON_AddNullToObject(o, "format");
    cJSON *a = arch ? cJSON_Parse(arch) : NULL;
    if (a) cJSON_AddItemToObject(o, "arch", a);
    else cJSON_AddNullToObject(o, "arch");
    if (has_model) {
        cJSON *layers = cJSON_AddArrayToObject(o, "layers");
        for (size_t i = 0; i < m->n_layers; i++) {
            const kd_layer *l = &m->layers[i];
            cJSON *lo = cJSON_CreateObject();
            cJSON_AddNumberToObject(lo, "index", (double)i);
            cJSON_AddStringToObject(lo, "type", l->ops->type);
            cJSON *out = cJSON_AddArrayToObject(lo, "output");
            for (int d = 0; d < l->out.rank; d++)
                cJSON_AddItemToArray(out, cJSON_CreateNumber((double)l->out.d[d]));
            cJSON_AddNumberToObject(lo, "params", (double)layer_params(m, i));
            cJSON_AddItemToArray(layers, lo);
        }
    } else {
        cJSON_AddNullToObject(o, "layers");
    }
    cJSON *ts = cJSON_AddArrayToObject(o, "tensors");
    for (size_t i = 0; i < f->n_tensors; i++) {
        const kd_st_tensor *t = &f->tensors[i];
        cJSON *to = cJSON_CreateObject();
        cJSON_AddStringToObject(to, "name", t->name);
        cJSON_AddStringToObject(to, "dtype", kd_dtype_name(t->dtype));
        cJSON *sh = cJSON_AddArrayToObject(to, "shape");
        for (int d = 0; d < t->rank; d++)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
        cJSON_AddNumberToObject(to, "bytes", (double)(t->end - t->begin));
        cJSON *off = cJSON_AddArrayToObject(to, "data_offsets");
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)t->begin));
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)t->end));
        cJSON_AddItemToArray(ts, to);
    }
    totals tt = count(f);
    cJSON *to = cJSON_AddObjectToObject(o, "totals");
    cJSON_AddNumberToObject(to, "tensors", (double)tt.n_model);
    cJSON_AddNumberToObject(to, "values", (double)tt.values);
    cJSON_AddNumberToObject(to, "bytes", (double)tt.bytes);
    cJSON_AddNumberToObject(to, "training_tensors", (double)tt.n_state);
    cJSON_AddNumberToObject(to, "training_bytes", (double)tt.state_bytes);
    cJSON *md = cJSON_AddObjectToObject(o, "metadata");
    for (size_t i = 0; i < f->n_meta; i++)
        cJSON_AddStringToObject(md, f->meta_keys[i], f->meta_vals[i]);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) {
        fprintf(stderr, "distill info: out of memory\n");
        return KD_EIO;
    }
    puts(text);
    free(text);
    return 0;
}

static int run(int argc, char **argv) {
    const char *path = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) json = 1;
        else if (argv[i][0] == '-' && argv[i][1])
            return kd_cli_usage_error(argv[0], "unknown option '%s'", argv[i]);
        else if (path)
            return kd_cli_usage_error(argv[0], "expected one FILE, got '%s' and '%s'", path, argv[i]);
        else path = argv[i];
    }
    if (!path) return kd_cli_usage_error(argv[0], "missing FILE (a .safetensors checkpoint)");

    kd_err err;
    kd_err_clear(&err);
    kd_st_file f = {0};
    kd_model m = {0};
    int rc = 0, has_model = 0;
    if (kd_st_read(&f, path, &err) != KD_OK) {
        rc = kd_cli_fail(&err);
        goto cleanup;
    }
    if (kd_st_meta(&f, "arch")) {
        /* Builds the model and checks every tensor against it, as loading would (training
         * state and extra tensors allowed, so any distill file describes itself). */
        if (kd_ckpt_load(path, NULL, 0, 1, &m, NULL, NULL, NULL, NULL, &err) != KD_OK) {
            rc = kd_cli_fail(&err);
            goto cleanup;
        }
        has_model = 1;
    }
    if (json) rc = print_json(path, &f, &m, has_model);
    else print_text(path, &f, &m, has_model);
cleanup:
    kd_model_free(&m);
    kd_st_free(&f);
    return rc;
}

const kd_command kd_cmd_info = {"info", "validate and describe a checkpoint (layers, tensors, metadata)",
                                usage, run};
