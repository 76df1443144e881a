/* c_header.c - the C exporter: one stb-style C99 header (declarations always, the code under
 * <NAME>_IMPLEMENTATION) with the weights as static const arrays, no malloc and no stdio, and
 * scratch memory sized at compile time and passed in by the caller. Each layer writes its own
 * block of the forward function through its export_c slot. */
#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "export_impl.h"

/* The text goes into three growing streams (helpers, weights, the forward body), assembled
 * into the header once the scratch size is known. */
struct kd_c_emitter {
    const kd_codec *codec;
    char lower[64], upper[64];   /* "fmnist_" for identifiers, "FMNIST" for macros */
    char layer[160];             /* comment of the layer being emitted */
    char tag[24];                /* "l3": identifiers of the layer's arrays */
    FILE *helpers, *weights, *body;
    char *helpers_buf, *weights_buf, *body_buf;
    size_t helpers_len, weights_len, body_len;
    char **keys;                 /* helpers already written, (n_keys) */
    size_t n_keys;
    char **names;                /* array identifiers handed to layers, freed at the end */
    size_t n_names;
    size_t buf_floats;           /* each of the two ping-pong buffers */
    int cur;                     /* scratch buffer (0, 1) holding the current value */
    size_t weight_bytes;
};

static kd_status oom(kd_err *err) { return kd_err_set(err, KD_EIO, "C export: out of memory"); }

/* text with every '$' replaced by the identifier prefix. */
static void put_code(kd_c_emitter *em, FILE *f, const char *text) {
    for (const char *p = text; *p; p++) {
        if (*p == '$') fputs(em->lower, f);
        else fputc(*p, f);
    }
}

/* A name kept until the export ends ("$l3_weight"); NULL when memory runs out. */
static const char *keep_name(kd_c_emitter *em, const char *s) {
    char **grown = realloc(em->names, (em->n_names + 1) * sizeof *grown);
    if (!grown) return NULL;
    em->names = grown;
    if (!(em->names[em->n_names] = malloc(strlen(s) + 1))) return NULL;
    strcpy(em->names[em->n_names], s);
    return em->names[em->n_names++];
}

const char *kd_c_float(float v, char *buf, size_t cap) {
    /* "%.9g" always round-trips a float; an integral value needs a point before the suffix. */
    int n = snprintf(buf, cap, "%.9g", (double)v);
    if (n > 0 && (size_t)n + 3 < cap) {
        if (!strpbrk(buf, ".e")) strcat(buf, ".0");
        strcat(buf, "f");
    }
    return buf;
}

static void put_float(FILE *f, float v) {
    char s[40];
    fputs(kd_c_float(v, s, sizeof s), f);
}

static void put_array(kd_c_emitter *em, const char *type, const char *name, size_t n) {
    fprintf(em->weights, "static const %s %s%s[%zu] %s_WEIGHT_ATTR = {", type, em->lower,
            name + 1, n, em->upper);
}

/* A weight array of n floats, eight to a line; counted in the header's weight bytes. */
static void put_floats(kd_c_emitter *em, const char *name, const float *v, size_t n) {
    put_array(em, "float", name, n);
    for (size_t i = 0; i < n; i++) {
        fputs(i % 8 ? " " : "\n    ", em->weights);
        put_float(em->weights, v[i]);
        fputc(',', em->weights);
    }
    fputs("\n};\n", em->weights);
    em->weight_bytes += n * sizeof(float);
}

kd_status kd_c_tensor(kd_c_emitter *em, const char *suffix, const float *data, size_t rows,
                      size_t cols, kd_export_store store, const char **name, int *quantised,
                      kd_err *err) {
    char id[96];
    const size_t n = rows * cols;
    snprintf(id, sizeof id, "$%s_%s", em->tag, suffix);
    kd_status st = kd_export_check_finite(id + 1, data, n, err);
    if (st) return st;
    if (!(*name = keep_name(em, id))) return oom(err);
    *quantised = kd_export_encodes(em->codec, store);
    if (!*quantised) {
        put_floats(em, id, data, n);
        return KD_OK;
    }
    /* int8 rows through the codec (the int8 safetensors export's scales): values as signed
     * char, which C99 guarantees to hold -127..127, plus one float scale per row. */
    signed char *q = malloc(n ? n : 1);
    float *scale = malloc((rows ? rows : 1) * sizeof *scale);
    if (!q || !scale) {
        free(q);
        free(scale);
        return oom(err);
    }
    em->codec->encode(data, rows, cols, q, scale);
    put_array(em, "signed char", id, n);
    for (size_t i = 0; i < n; i++) fprintf(em->weights, "%s%d,", i % 16 ? " " : "\n    ", q[i]);
    fputs("\n};\n", em->weights);
    snprintf(id + strlen(id), sizeof id - strlen(id), "_scale");
    put_floats(em, id, scale, rows);
    em->weight_bytes += n;
    free(q);
    free(scale);
    return KD_OK;
}

kd_status kd_c_helper(kd_c_emitter *em, const char *key, const char *text, kd_err *err) {
    for (size_t i = 0; i < em->n_keys; i++)
        if (!strcmp(em->keys[i], key)) return KD_OK;
    char **grown = realloc(em->keys, (em->n_keys + 1) * sizeof *grown);
    if (!grown) return oom(err);
    em->keys = grown;
    if (!(em->keys[em->n_keys] = malloc(strlen(key) + 1))) return oom(err);
    strcpy(em->keys[em->n_keys++], key);
    fputc('\n', em->helpers);
    put_code(em, em->helpers, text);
    return KD_OK;
}

kd_status kd_c_code(kd_c_emitter *em, int in_place, kd_err *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *text = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!text) return oom(err);
    va_start(ap, fmt);
    vsnprintf(text, (size_t)n + 1, fmt, ap);
    va_end(ap);
    const int out = in_place ? em->cur : 1 - em->cur;
    fprintf(em->body, "    { /* %s */\n", em->layer);
    fprintf(em->body, "        const float *x = scratch + %zu;\n", (size_t)em->cur * em->buf_floats);
    fprintf(em->body, "        float *y = scratch + %zu;\n", (size_t)out * em->buf_floats);
    /* The block's statements, indented as the forward function's. */
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        fputs("        ", em->body);
        put_code(em, em->body, line);
        fputc('\n', em->body);
    }
    fputs("    }\n", em->body);
    free(text);
    em->cur = out;
    return KD_OK;
}

/* ---- The header around the layers ---- */

/* A class name as a C string literal: printable ASCII as is, '"', '\\' and '?' (trigraphs)
 * escaped, every other byte in octal. */
static void put_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\' || *p == '?') fprintf(f, "\\%c", *p);
        else if (*p >= 0x20 && *p < 0x7f) fputc(*p, f);
        else fprintf(f, "\\%03o", *p);
    }
    fputc('"', f);
}

/* Text inside a block comment: a star followed by a slash (a path could hold one) would end the
 * comment, so a backslash goes between them. */
static void put_comment_text(FILE *f, const char *s) {
    for (; *s; s++) {
        fputc(*s, f);
        if (s[0] == '*' && s[1] == '/') fputc('\\', f);
    }
}

typedef struct {
    kd_c_emitter *em;
    const kd_model *m;
    const kd_export_info *info;
    const char *name, *path;
} header_ctx;

/* The file: a comment saying what it holds, the declarations, then the implementation. */
static kd_status write_header(FILE *f, void *ctx, kd_err *err) {
    const header_ctx *h = ctx;
    const kd_c_emitter *em = h->em;
    const char *L = em->lower, *U = em->upper;
    const size_t classes = h->m->n_classes, scratch = 2 * em->buf_floats + classes;
    char arch[2048];
    kd_export_arch_summary(h->m, arch, sizeof arch);
    const char *base = strrchr(h->path, '/');
    fputs("/* ", f);
    put_comment_text(f, base ? base + 1 : h->path);
    fprintf(f, " - the model %s as one C99 header, generated by distill %s from ", h->name,
            KD_VERSION);
    put_comment_text(f, h->info->source ? h->info->source : "a checkpoint");
    fputs(".\n *\n", f);
    fprintf(f, " * Architecture: %s\n", arch);
    fprintf(f, " * Parameters: %zu; weights: %zu bytes (%s%s); scratch: %zu floats (%zu bytes).\n",
            h->m->n_params, em->weight_bytes, em->codec->name,
            em->codec->row_scales ? " per-row scales, float activations" : "", scratch,
            scratch * sizeof(float));
    fprintf(f, " * Input: the raw sample, %s_INPUT_SIZE floats as the data source yields it (the\n"
               " * recorded preprocessing is inside); output: %s_N_CLASSES logits.\n *\n", U, U);
    fprintf(f, " * In ONE C file:  #define %s_IMPLEMENTATION  before  #include \"%s.h\".\n", U,
            h->name);
    fprintf(f, " *   static float scratch[%s_SCRATCH_FLOATS];\n"
               " *   int k = %spredict(raw, scratch);   (%sclass_names[k] names it)\n", U, L, L);
    fprintf(f, " * No malloc, no stdio, only <math.h>; reentrant (all state is in scratch). Define\n"
               " * %s_WEIGHT_ATTR before the include to place the weights (default: 16-byte\n"
               " * aligned), e.g. in flash. */\n", U);
    fprintf(f, "#ifndef %s_H\n#define %s_H\n\n", U, U);
    fprintf(f, "#define %s_INPUT_SIZE %zu\n#define %s_N_CLASSES %zu\n#define %s_SCRATCH_FLOATS %zu\n\n",
            U, kd_shape_numel(&h->m->input), U, classes, U, scratch);
    fputs("#ifdef __cplusplus\nextern \"C\" {\n#endif\n", f);
    fprintf(f, "extern const char *const %sclass_names[%s_N_CLASSES];\n", L, U);
    fprintf(f, "/* logits (%s_N_CLASSES) of raw_input (%s_INPUT_SIZE); scratch holds %s_SCRATCH_FLOATS. */\n"
               "void %sforward(const float *raw_input, float *logits, float *scratch);\n", U, U, U, L);
    fprintf(f, "/* The top-1 class (the first on ties). */\n"
               "int %spredict(const float *raw_input, float *scratch);\n", L);
    fputs("#ifdef __cplusplus\n}\n#endif\n", f);
    fprintf(f, "#endif /* %s_H */\n\n", U);

    fprintf(f, "#if defined(%s_IMPLEMENTATION) && !defined(%s_IMPLEMENTED)\n#define %s_IMPLEMENTED\n", U, U, U);
    fputs("#include <math.h>\n\n", f);
    fprintf(f, "#ifndef %s_WEIGHT_ATTR\n#if defined(__GNUC__)\n#define %s_WEIGHT_ATTR "
               "__attribute__((aligned(16)))\n#else\n#define %s_WEIGHT_ATTR\n#endif\n#endif\n",
            U, U, U);
    fwrite(em->weights_buf, 1, em->weights_len, f);
    fprintf(f, "\nconst char *const %sclass_names[%s_N_CLASSES] = {", L, U);
    for (size_t k = 0; k < classes; k++) {
        char num[24];
        snprintf(num, sizeof num, "%zu", k);
        fputs(k ? ", " : "", f);
        put_string(f, h->info->class_names && k < h->info->n_classes && h->info->class_names[k]
                          ? h->info->class_names[k] : num);
    }
    fputs("};\n", f);
    fwrite(em->helpers_buf, 1, em->helpers_len, f);
    fprintf(f, "\nvoid %sforward(const float *raw_input, float *logits, float *scratch) {\n", L);
    fwrite(em->body_buf, 1, em->body_len, f);
    fprintf(f, "    {\n        const float *x = scratch + %zu;\n        long i;\n"
               "        for (i = 0; i < %s_N_CLASSES; i++) logits[i] = x[i];\n    }\n}\n",
            (size_t)em->cur * em->buf_floats, U);
    fprintf(f, "\nint %spredict(const float *raw_input, float *scratch) {\n"
               "    float *logits = scratch + %zu;\n    int best = 0, i;\n"
               "    %sforward(raw_input, logits, scratch);\n"
               "    for (i = 1; i < %s_N_CLASSES; i++)\n"
               "        if (logits[i] > logits[best]) best = i;\n    return best;\n}\n",
            L, 2 * em->buf_floats, L, U);
    fprintf(f, "#endif /* %s_IMPLEMENTATION */\n", U);
    return ferror(f) ? kd_err_set(err, KD_EIO, "write failed") : KD_OK;
}

/* The preprocessing block: raw_input -> the first scratch buffer. */
static kd_status emit_preprocess(kd_c_emitter *em, const kd_model *m, const kd_export_info *info,
                                 kd_err *err) {
    kd_export_pre pre;
    const char *mul, *add;
    int q;
    kd_status st = kd_export_pre_init(&pre, info->pp, &m->input, err);
    if (st) return st;
    snprintf(em->tag, sizeof em->tag, "pre");
    if (!(st = kd_c_tensor(em, "mul", pre.mul, 1, pre.n_ch, KD_STORE_F32, &mul, &q, err)) &&
        !(st = kd_c_tensor(em, "add", pre.add, 1, pre.n_ch, KD_STORE_F32, &add, &q, err))) {
        /* x = raw * mul[c] + add[c]: the two float operations the dataset applies. */
        fputs("    { /* preprocessing recorded in the checkpoint: x = raw * mul[c] + add[c] */\n"
              "        const float *x = raw_input;\n        float *y = scratch;\n"
              "        long c, i;\n", em->body);
        fprintf(em->body, "        for (c = 0; c < %zu; c++)\n            for (i = 0; i < %zu; i++)\n"
                          "                y[c * %zu + i] = x[c * %zu + i] * ", pre.n_ch, pre.plane,
                pre.plane, pre.plane);
        put_code(em, em->body, mul);
        fputs("[c] + ", em->body);
        put_code(em, em->body, add);
        fputs("[c];\n    }\n", em->body);
        em->cur = 0;
    }
    kd_export_pre_free(&pre);
    return st;
}

/* Closes a memory stream, keeping its text; 0 on success. */
static int close_stream(FILE **f) {
    int bad = *f && (fflush(*f) || ferror(*f));
    if (*f && fclose(*f)) bad = 1;
    *f = NULL;
    return bad;
}

kd_status kd_export_c(const char *path, const kd_model *m, const char *name,
                      const kd_export_info *info, kd_err *err) {
    kd_c_emitter em;
    kd_status st = KD_OK;
    memset(&em, 0, sizeof em);
    em.codec = kd_export_codec(info);
    if (em.codec->stored != KD_DT_F32 && !em.codec->row_scales) {
        st = kd_err_set(err, KD_EUSAGE, "%s: a C header holds f32 or int8 weights, not %s", path,
                        em.codec->name);
        goto cleanup;
    }
    if (!kd_export_c_name_ok(name)) {
        st = kd_err_set(err, KD_EUSAGE, "%s: name \"%s\" is not a C identifier of at most 48 "
                                        "characters ([A-Za-z_][A-Za-z0-9_]*)", path, name);
        goto cleanup;
    }
    for (size_t i = 0; name[i]; i++) {
        em.lower[i] = (char)tolower((unsigned char)name[i]);
        em.upper[i] = (char)toupper((unsigned char)name[i]);
    }
    strcat(em.lower, "_");
    em.helpers = open_memstream(&em.helpers_buf, &em.helpers_len);
    em.weights = open_memstream(&em.weights_buf, &em.weights_len);
    em.body = open_memstream(&em.body_buf, &em.body_len);
    if (!em.helpers || !em.weights || !em.body) {
        st = oom(err);
        goto cleanup;
    }
    /* Two ping-pong buffers, each as large as the largest value (input or any layer output),
     * rounded to 4 floats so the second one stays 16-byte aligned. */
    em.buf_floats = kd_shape_numel(&m->input);
    for (size_t i = 0; i < m->n_layers; i++) {
        kd_shape out = kd_model_layer_out(m, i);
        if (kd_shape_numel(&out) > em.buf_floats) em.buf_floats = kd_shape_numel(&out);
    }
    em.buf_floats = (em.buf_floats + 3) / 4 * 4;
    if ((st = emit_preprocess(&em, m, info, err))) goto cleanup;
    for (size_t i = 0; i < m->n_layers && !st; i++) {
        char sh[64];
        kd_shape out = kd_model_layer_out(m, i);
        snprintf(em.tag, sizeof em.tag, "l%zu", i);
        snprintf(em.layer, sizeof em.layer, "layer %zu: %s -> %s", i, kd_model_layer_type(m, i),
                 kd_shape_str(&out, sh, sizeof sh));
        st = kd_model_layer_export_c(m, i, &em, err);
    }
    if (st) goto cleanup;
    if (close_stream(&em.helpers) | close_stream(&em.weights) | close_stream(&em.body)) {
        st = oom(err);
        goto cleanup;
    }
    header_ctx h = {&em, m, info, name, path};
    st = kd_write_atomic(path, write_header, &h, err);
cleanup:
    close_stream(&em.helpers);
    close_stream(&em.weights);
    close_stream(&em.body);
    free(em.helpers_buf);
    free(em.weights_buf);
    free(em.body_buf);
    for (size_t i = 0; i < em.n_keys; i++) free(em.keys[i]);
    free(em.keys);
    for (size_t i = 0; i < em.n_names; i++) free(em.names[i]);
    free(em.names);
    return st;
}
