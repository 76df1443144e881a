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
typedef struct {
    kd_c_emitter base;           /* the layers' interface (kd_emit.h) */
    const kd_codec *codec;
    char lower[64], upper[64];   /* "fmnist_" for identifiers, "FMNIST" for macros */
    char layer[KD_LAYER_NAME_MAX + 96]; /* comment of the layer being emitted */
    char tag[24];                /* "l3": identifiers of the layer's arrays */
    FILE *helpers, *weights, *body;
    char *helpers_buf, *weights_buf, *body_buf;
    size_t helpers_len, weights_len, body_len;
    char **keys;                 /* helpers already written, (n_keys) */
    size_t n_keys;
    char **names;                /* array identifiers handed to layers, freed at the end */
    size_t n_names;
    size_t weight_bytes;
    /* Scratch, planned by liveness as the layers are emitted: value v (0 the preprocessed
     * input, k + 1 layer k's output) lives in the memory of value root[v] (itself, or the value
     * it shares with: an input passed on unchanged or overwritten in place), at off[root];
     * live[r] counts the values in r's memory that are still to be read. */
    const kd_model *m;
    size_t layer_index;
    int coded;                   /* the current layer has added its block */
    size_t *root, *off, *live;   /* (n_layers + 1) */
    size_t peak;                 /* floats of scratch in use at the worst point */
} c_emitter;

static kd_status oom(kd_err *err) { return kd_err_set(err, KD_EIO, "C export: out of memory"); }

/* text with every '$' replaced by the identifier prefix. */
static void put_code(c_emitter *em, FILE *f, const char *text) {
    for (const char *p = text; *p; p++) {
        if (*p == '$') fputs(em->lower, f);
        else fputc(*p, f);
    }
}

/* A name kept until the export ends ("$l3_weight"); NULL when memory runs out. */
static const char *keep_name(c_emitter *em, const char *s) {
    char **grown = realloc(em->names, (em->n_names + 1) * sizeof *grown);
    if (!grown) return NULL;
    em->names = grown;
    if (!(em->names[em->n_names] = malloc(strlen(s) + 1))) return NULL;
    strcpy(em->names[em->n_names], s);
    return em->names[em->n_names++];
}

static void put_float(FILE *f, float v) {
    char s[40];
    fputs(kd_c_float(v, s, sizeof s), f);
}

static void put_array(c_emitter *em, const char *type, const char *name, size_t n) {
    fprintf(em->weights, "static const %s %s%s[%zu] %s_WEIGHT_ATTR = {", type, em->lower,
            name + 1, n, em->upper);
}

/* A weight array of n floats, eight to a line; counted in the header's weight bytes. */
static void put_floats(c_emitter *em, const char *name, const float *v, size_t n) {
    put_array(em, "float", name, n);
    for (size_t i = 0; i < n; i++) {
        fputs(i % 8 ? " " : "\n    ", em->weights);
        put_float(em->weights, v[i]);
        fputc(',', em->weights);
    }
    fputs("\n};\n", em->weights);
    em->weight_bytes += n * sizeof(float);
}

static kd_status op_tensor(kd_c_emitter *base, const char *suffix, const float *data,
                           size_t rows, size_t cols, kd_export_store store, const char **name,
                           int *quantized, kd_err *err) {
    c_emitter *em = (c_emitter *)base;
    char id[96];
    const size_t n = rows * cols;
    snprintf(id, sizeof id, "$%s_%s", em->tag, suffix);
    kd_status st = kd_export_check_finite(id + 1, data, n, err);
    if (st) return st;
    if (!(*name = keep_name(em, id))) return oom(err);
    *quantized = kd_export_encodes(em->codec, store);
    if (!*quantized) {
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

static kd_status op_helper(kd_c_emitter *base, const char *key, const char *text, kd_err *err) {
    c_emitter *em = (c_emitter *)base;
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

/* ---- Scratch, by liveness ---- */

static size_t value_floats(const kd_model *m, size_t v) {
    const kd_shape s = v ? kd_model_layer_out(m, v - 1) : m->input;
    return (kd_shape_numel(&s) + 3) / 4 * 4;  /* every value 16-byte aligned */
}

/* The lowest offset where n floats fit between the memories still in use. */
static size_t first_fit(const c_emitter *em, size_t n) {
    size_t at = 0;
    for (int moved = 1; moved;) {
        moved = 0;
        for (size_t r = 0; r <= em->m->n_layers; r++) {
            if (!em->live[r] || em->root[r] != r) continue;
            const size_t lo = em->off[r], hi = lo + value_floats(em->m, r);
            if (at < hi && lo < at + n) {
                at = hi;
                moved = 1;
            }
        }
    }
    return at;
}

/* Value v gets memory of its own. */
static void place_value(c_emitter *em, size_t v) {
    const size_t n = value_floats(em->m, v);
    em->root[v] = v;
    em->off[v] = first_fit(em, n);
    em->live[v] = 1;
    if (em->off[v] + n > em->peak) em->peak = em->off[v] + n;
}

/* Value v uses the memory of value u (passed on unchanged, or overwritten in place). */
static void share_value(c_emitter *em, size_t v, size_t u) {
    em->root[v] = em->root[u];
    em->live[em->root[v]]++;
}

static void value_read_last(c_emitter *em, size_t v) { em->live[em->root[v]]--; }

/* After layer i: values it read for the last time, and its own output if nobody reads it (the
 * last layer's output, the logits, is read at the end). */
static void layer_done(c_emitter *em, size_t i) {
    const kd_model *m = em->m;
    size_t n;
    const size_t *src = kd_model_layer_inputs(m, i, &n);
    for (size_t k = 0; k < n; k++) {
        int seen = 0;
        for (size_t j = 0; j < k; j++) seen |= src[j] == src[k];
        if (!seen && kd_model_value_last_reader(m, src[k]) == i) value_read_last(em, src[k]);
    }
    if (i + 1 < m->n_layers && kd_model_value_last_reader(m, i + 1) == SIZE_MAX)
        value_read_last(em, i + 1);
}

static kd_status op_code(kd_c_emitter *base, int in_place, const char *text, kd_err *err) {
    c_emitter *em = (c_emitter *)base;
    const kd_model *m = em->m;
    const size_t i = em->layer_index, v = i + 1;
    size_t n_in;
    const size_t *src = kd_model_layer_inputs(m, i, &n_in);
    if (em->coded) return kd_err_set(err, KD_EIO, "C export: layer %zu added two blocks", i);
    em->coded = 1;
    /* In place only over an input that nothing reads later and no other value shares. */
    const size_t u = src[0], r = em->root[u];
    if (in_place && n_in == 1 && kd_model_value_last_reader(m, u) == i && em->live[r] == 1 &&
        value_floats(m, v) <= value_floats(m, r))
        share_value(em, v, u);
    else
        place_value(em, v);
    fprintf(em->body, "    { /* %s */\n", em->layer);
    fprintf(em->body, "        const float *x = scratch + %zu;\n", em->off[r]);
    if (n_in > 1) {
        fprintf(em->body, "        const float *const xs[%zu] = {", n_in);
        for (size_t k = 0; k < n_in; k++)
            fprintf(em->body, "%sscratch + %zu", k ? ", " : "", em->off[em->root[src[k]]]);
        fputs("};\n", em->body);
    }
    fprintf(em->body, "        float *y = scratch + %zu;\n", em->off[em->root[v]]);
    /* The block's statements, indented as the forward function's. */
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        const size_t len = end ? (size_t)(end - line) : strlen(line);
        char *copy = malloc(len + 1);
        if (!copy) return oom(err);
        memcpy(copy, line, len);
        copy[len] = '\0';
        fputs("        ", em->body);
        put_code(em, em->body, copy);
        fputc('\n', em->body);
        free(copy);
        line += len + (end ? 1 : 0);
    }
    fputs("    }\n", em->body);
    return KD_OK;
}

static const kd_c_emitter_ops emitter_ops = {op_tensor, op_helper, op_code};

/* ---- The header around the layers ---- */

/* Text inside a block comment: a star followed by a slash (a path could hold one) would end the
 * comment, so a backslash goes between them. */
static void put_comment_text(FILE *f, const char *s) {
    for (; *s; s++) {
        fputc(*s, f);
        if (s[0] == '*' && s[1] == '/') fputc('\\', f);
    }
}

typedef struct {
    c_emitter *em;
    const kd_model *m;
    const kd_export_info *info;
    const char *name, *path;
} header_ctx;

/* The file: a comment saying what it holds, the declarations, then the implementation. */
static kd_status write_header(FILE *f, void *ctx, kd_err *err) {
    const header_ctx *h = ctx;
    const c_emitter *em = h->em;
    const char *L = em->lower, *U = em->upper;
    const size_t classes = h->m->n_classes, scratch = em->peak + classes;
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
        kd_export_c_string(f, h->info->class_names && k < h->info->n_classes && h->info->class_names[k]
                          ? h->info->class_names[k] : num);
    }
    fputs("};\n", f);
    fwrite(em->helpers_buf, 1, em->helpers_len, f);
    fprintf(f, "\nvoid %sforward(const float *raw_input, float *logits, float *scratch) {\n", L);
    fwrite(em->body_buf, 1, em->body_len, f);
    fprintf(f, "    {\n        const float *x = scratch + %zu;\n        long i;\n"
               "        for (i = 0; i < %s_N_CLASSES; i++) logits[i] = x[i];\n    }\n}\n",
            em->off[em->root[h->m->n_layers]], U);
    fprintf(f, "\nint %spredict(const float *raw_input, float *scratch) {\n"
               "    float *logits = scratch + %zu;\n    int best = 0, i;\n"
               "    %sforward(raw_input, logits, scratch);\n"
               "    for (i = 1; i < %s_N_CLASSES; i++)\n"
               "        if (logits[i] > logits[best]) best = i;\n    return best;\n}\n",
            L, em->peak, L, U);
    fprintf(f, "#endif /* %s_IMPLEMENTATION */\n", U);
    return ferror(f) ? kd_err_set(err, KD_EIO, "write failed") : KD_OK;
}

/* The preprocessing block: raw_input -> the first scratch buffer. */
static kd_status emit_preprocess(c_emitter *em, const kd_model *m, const kd_export_info *info,
                                 kd_err *err) {
    kd_export_pre pre;
    const char *mul, *add;
    int q;
    kd_status st = kd_export_pre_init(&pre, info->pp, &m->input, err);
    if (st) return st;
    snprintf(em->tag, sizeof em->tag, "pre");
    if (!(st = kd_c_tensor(&em->base, "mul", pre.mul, 1, pre.n_ch, KD_STORE_F32, &mul, &q, err)) &&
        !(st = kd_c_tensor(&em->base, "add", pre.add, 1, pre.n_ch, KD_STORE_F32, &add, &q, err))) {
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
    c_emitter em;
    kd_status st = KD_OK;
    memset(&em, 0, sizeof em);
    em.base.ops = &emitter_ops;
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
    em.m = m;
    em.root = calloc(m->n_layers + 1, sizeof *em.root);
    em.off = calloc(m->n_layers + 1, sizeof *em.off);
    em.live = calloc(m->n_layers + 1, sizeof *em.live);
    if (!em.root || !em.off || !em.live) {
        st = oom(err);
        goto cleanup;
    }
    place_value(&em, 0);  /* the preprocessed input, at the start of scratch */
    if ((st = emit_preprocess(&em, m, info, err))) goto cleanup;
    for (size_t i = 0; i < m->n_layers && !st; i++) {
        char sh[64];
        kd_shape out = kd_model_layer_out(m, i);
        const char *lname = kd_model_layer_name(m, i);
        snprintf(em.tag, sizeof em.tag, "l%zu", i);
        snprintf(em.layer, sizeof em.layer, "layer %zu%s%s: %s -> %s", i, lname ? " " : "",
                 lname ? lname : "", kd_model_layer_type(m, i), kd_shape_str(&out, sh, sizeof sh));
        em.layer_index = i;
        em.coded = 0;
        st = kd_model_layer_export_c(m, i, &em.base, err);
        if (!st && !em.coded) share_value(&em, i + 1, kd_model_layer_inputs(m, i, &(size_t){0})[0]);
        if (!st) layer_done(&em, i);
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
    free(em.root);
    free(em.off);
    free(em.live);
    return st;
}
