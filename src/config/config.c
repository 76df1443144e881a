/* config.c - the run configuration: a strict JSON schema (every error names the file and the
 * JSON path; near-miss keys get a suggestion), relative paths resolved against the config
 * file's directory, --set overrides applied to the JSON before validation, and the resolved
 * config written back as JSON that loads to the same config. Keys: configs/README.md. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_config.h"

#define CONFIG_MAX_BYTES ((size_t)16 << 20)
/* Integers above 2^53 do not survive a JSON number (a double), so seeds and counts stop there. */
#define MAX_INT53 9007199254740991.0
#define JPATH_MAX 512

/* ---------------------------------------------------------------------------------------- */
/* Schema: which keys each section may hold. Types and ranges are checked by the parsers below;
 * this table drives the unknown-key check and the --set path walk, so both agree. */

typedef enum { K_LEAF, K_SECTION, K_OPAQUE } key_kind;  /* OPAQUE: layer lists, checked later */
struct schema;
typedef struct {
    const char *key;
    key_kind kind;
    const struct schema *sub;
} schema_key;
typedef struct schema {
    const schema_key *keys;
    size_t n;
} schema;
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static const schema_key source_keys[] = {
    {"format", K_LEAF, NULL},      {"path", K_LEAF, NULL},     {"labels", K_LEAF, NULL},
    {"label_column", K_LEAF, NULL}, {"header", K_LEAF, NULL},  {"delimiter", K_LEAF, NULL},
    {"channels", K_LEAF, NULL},    {"height", K_LEAF, NULL},   {"width", K_LEAF, NULL},
    {"skip_bad", K_LEAF, NULL},    {"unlabeled", K_LEAF, NULL}, {"subset", K_LEAF, NULL},
    {"subset_seed", K_LEAF, NULL},
};
static const schema source_schema = {source_keys, N_OF(source_keys)};

static const schema_key preprocess_keys[] = {
    {"scale", K_LEAF, NULL}, {"mean", K_LEAF, NULL}, {"std", K_LEAF, NULL}, {"flatten", K_LEAF, NULL},
};
static const schema preprocess_schema = {preprocess_keys, N_OF(preprocess_keys)};

static const schema_key augment_keys[] = {{"shift", K_LEAF, NULL}, {"flip", K_LEAF, NULL}};
static const schema augment_schema = {augment_keys, N_OF(augment_keys)};

static const schema_key data_keys[] = {
    {"train", K_SECTION, &source_schema},
    {"test", K_SECTION, &source_schema},
    {"validation", K_SECTION, &source_schema},
    {"validation_split", K_LEAF, NULL},
    {"use_labels", K_LEAF, NULL},
    {"classes", K_LEAF, NULL},
    {"preprocess", K_SECTION, &preprocess_schema},
    {"augment", K_SECTION, &augment_schema},
};
static const schema data_schema = {data_keys, N_OF(data_keys)};

static const schema_key model_keys[] = {
    {"input", K_LEAF, NULL}, {"layers", K_OPAQUE, NULL}, {"init", K_LEAF, NULL},
};
static const schema model_schema = {model_keys, N_OF(model_keys)};

static const schema_key teacher_keys[] = {{"checkpoint", K_LEAF, NULL}, {"layers", K_OPAQUE, NULL}};
static const schema teacher_schema = {teacher_keys, N_OF(teacher_keys)};

static const schema_key distill_keys[] = {
    {"kind", K_LEAF, NULL}, {"temperature", K_LEAF, NULL}, {"alpha", K_LEAF, NULL},
};
static const schema distill_schema = {distill_keys, N_OF(distill_keys)};

static const schema_key optimizer_keys[] = {
    {"name", K_LEAF, NULL},  {"lr", K_LEAF, NULL},    {"momentum", K_LEAF, NULL},
    {"nesterov", K_LEAF, NULL}, {"beta1", K_LEAF, NULL}, {"beta2", K_LEAF, NULL},
    {"eps", K_LEAF, NULL},   {"weight_decay", K_LEAF, NULL}, {"clip_norm", K_LEAF, NULL},
};
static const schema optimizer_schema = {optimizer_keys, N_OF(optimizer_keys)};

static const schema_key schedule_keys[] = {
    {"name", K_LEAF, NULL},       {"warmup_epochs", K_LEAF, NULL}, {"warmup_steps", K_LEAF, NULL},
    {"step_epochs", K_LEAF, NULL}, {"step_size", K_LEAF, NULL},    {"gamma", K_LEAF, NULL},
    {"min_lr", K_LEAF, NULL},
};
static const schema schedule_schema = {schedule_keys, N_OF(schedule_keys)};

static const schema_key train_keys[] = {
    {"epochs", K_LEAF, NULL}, {"batch_size", K_LEAF, NULL}, {"seed", K_LEAF, NULL},
    {"threads", K_LEAF, NULL},
};
static const schema train_schema = {train_keys, N_OF(train_keys)};

static const schema_key output_keys[] = {{"dir", K_LEAF, NULL}, {"save_best", K_LEAF, NULL}};
static const schema output_schema = {output_keys, N_OF(output_keys)};

static const schema_key root_keys[] = {
    {"data", K_SECTION, &data_schema},         {"model", K_SECTION, &model_schema},
    {"teacher", K_SECTION, &teacher_schema},   {"distill", K_SECTION, &distill_schema},
    {"optimizer", K_SECTION, &optimizer_schema}, {"schedule", K_SECTION, &schedule_schema},
    {"train", K_SECTION, &train_schema},       {"output", K_SECTION, &output_schema},
};
static const schema root_schema = {root_keys, N_OF(root_keys)};

static const schema_key *schema_find(const schema *s, const char *key) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->keys[i].key, key) == 0) return &s->keys[i];
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Near-miss suggestions. */

/* Optimal-string-alignment distance (Levenshtein plus adjacent transpositions), ignoring case;
 * long strings count as far apart. */
static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64][64];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            int best = d[i - 1][j - 1] + (ca != cb);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

static int has_prefix_ci(const char *s, const char *prefix) {
    for (; *prefix; s++, prefix++)
        if (tolower((unsigned char)*s) != tolower((unsigned char)*prefix)) return 0;
    return 1;
}

/* Words people reach for that are spelled differently here. */
static const char *const aliases[][2] = {
    {"learning_rate", "lr"}, {"wd", "weight_decay"}, {"bs", "batch_size"},
    {"T", "temperature"},    {"optim", "optimizer"},  {"distillation", "distill"},
    {"val", "validation"},   {"type", "name"},        {"checkpoint_path", "checkpoint"},
};

/* The best candidate for a mistyped word: an alias, else the closest within edit distance 2
 * (1 for words of 3 letters or fewer), else a candidate the word is a prefix of (or that is a
 * prefix of the word), at least 2 letters long. NULL if nothing is close. */
static const char *suggest(const char *word, const char *const *cands, size_t n) {
    for (size_t a = 0; a < N_OF(aliases); a++)
        if (strcmp(word, aliases[a][0]) == 0)
            for (size_t i = 0; i < n; i++)
                if (strcmp(cands[i], aliases[a][1]) == 0) return cands[i];
    size_t len = strlen(word);
    int limit = len <= 3 ? 1 : 2;
    const char *best = NULL;
    int best_d = limit + 1;
    for (size_t i = 0; i < n; i++) {
        int d = edit_distance(word, cands[i]);
        if (d < best_d) best_d = d, best = cands[i];
    }
    if (best) return best;
    if (len < 2) return NULL;
    for (size_t i = 0; i < n; i++)
        if (has_prefix_ci(cands[i], word) || (strlen(cands[i]) >= 2 && has_prefix_ci(word, cands[i])))
            return cands[i];
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Parse context and error messages: "FILE: json.path: problem". */

typedef struct {
    const char *file;                  /* the config's name in messages */
    char base_dir[KD_PATH_MAX];        /* absolute directory relative paths resolve against */
    char cwd[KD_PATH_MAX];             /* absolute current directory (output.dir) */
    const char *const *overrides;
    size_t n_overrides;
    kd_err *err;
} pctx;

/* The last --set whose path is `path` or encloses it, so a bad value it put there is blamed on
 * it; NULL if the value came from the file. */
static const char *override_for(const pctx *p, const char *path) {
    const char *found = NULL;
    for (size_t i = 0; i < p->n_overrides; i++) {
        const char *ov = p->overrides[i], *eq = strchr(ov, '=');
        if (!eq || eq == ov) continue;
        size_t L = (size_t)(eq - ov);
        if (strncmp(path, ov, L) == 0 && (path[L] == '\0' || path[L] == '.' || path[L] == '['))
            found = ov;
    }
    return found;
}

static kd_status vfail(pctx *p, const char *path, const char *ov, const char *fmt, va_list ap) {
    char msg[768], from[320] = "";
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (!ov && path) ov = override_for(p, path);
    if (ov) snprintf(from, sizeof from, " (from --set %s)", ov);
    if (path && path[0])
        return kd_err_set(p->err, KD_EUSAGE, "%s: %s: %s%s", p->file, path, msg, from);
    return kd_err_set(p->err, KD_EUSAGE, "%s: %s%s", p->file, msg, from);
}

__attribute__((format(printf, 3, 4))) static kd_status fail(pctx *p, const char *path,
                                                            const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    kd_status st = vfail(p, path, NULL, fmt, ap);
    va_end(ap);
    return st;
}

/* For errors in a --set itself (its path does not exist, is malformed, ...). */
__attribute__((format(printf, 4, 5))) static kd_status fail_set(pctx *p, const char *path,
                                                                const char *ov, const char *fmt,
                                                                ...) {
    va_list ap;
    va_start(ap, fmt);
    kd_status st = vfail(p, path, ov, fmt, ap);
    va_end(ap);
    return st;
}

static kd_status oom(pctx *p) { return kd_err_set(p->err, KD_EIO, "%s: out of memory", p->file); }

/* "parent.key" (or "key" at the top) into buf. */
static const char *join(char *buf, const char *parent, const char *key) {
    if (parent && parent[0]) snprintf(buf, JPATH_MAX, "%s.%s", parent, key);
    else snprintf(buf, JPATH_MAX, "%s", key);
    return buf;
}

/* A short rendering of a JSON value for "got ..." in messages. */
static const char *describe(const cJSON *v, char *buf, size_t cap) {
    if (!v) snprintf(buf, cap, "nothing");
    else if (cJSON_IsString(v))
        snprintf(buf, cap, "\"%.40s%s\"", v->valuestring, strlen(v->valuestring) > 40 ? "..." : "");
    else if (cJSON_IsNumber(v)) snprintf(buf, cap, "%.15g", v->valuedouble);
    else if (cJSON_IsTrue(v)) snprintf(buf, cap, "true");
    else if (cJSON_IsFalse(v)) snprintf(buf, cap, "false");
    else if (cJSON_IsNull(v)) snprintf(buf, cap, "null");
    else if (cJSON_IsArray(v)) snprintf(buf, cap, "an array");
    else snprintf(buf, cap, "an object");
    return buf;
}

static kd_status unknown_key(pctx *p, const char *path, const char *ov, const char *key,
                             const schema *s) {
    const char *names[32];
    size_t n = 0;
    char list[512];
    size_t len = 0;
    list[0] = '\0';
    for (size_t i = 0; i < s->n && n < N_OF(names); i++) {
        names[n++] = s->keys[i].key;
        len += (size_t)snprintf(list + len, len < sizeof list ? sizeof list - len : 0, "%s%s",
                                i ? ", " : "", s->keys[i].key);
    }
    const char *near = suggest(key, names, n);
    if (near) return fail_set(p, path, ov, "unknown key (did you mean \"%s\"?)", near);
    return fail_set(p, path, ov, "unknown key (known keys here: %s)", list);
}

/* Unknown and duplicate keys of one section. */
static kd_status check_keys(pctx *p, const cJSON *obj, const schema *s, const char *path) {
    char buf[JPATH_MAX];
    for (const cJSON *c = obj->child; c; c = c->next) {
        for (const cJSON *d = c->next; d; d = d->next)
            if (strcmp(c->string, d->string) == 0)
                return fail(p, join(buf, path, c->string), "duplicate key");
        if (!schema_find(s, c->string))
            return unknown_key(p, join(buf, path, c->string), NULL, c->string, s);
    }
    return KD_OK;
}

/* A sub-section: absent (*out = NULL), or an object whose keys are all known. */
static kd_status get_section(pctx *p, const cJSON *parent, const char *key, const char *ppath,
                             const schema *s, const cJSON **out) {
    char path[JPATH_MAX], got[64];
    *out = NULL;
    const cJSON *v = parent ? cJSON_GetObjectItemCaseSensitive(parent, key) : NULL;
    if (!v) return KD_OK;
    join(path, ppath, key);
    if (!cJSON_IsObject(v))
        return fail(p, path, "expected an object (a section), got %s", describe(v, got, sizeof got));
    kd_status st = check_keys(p, v, s, path);
    if (st) return st;
    *out = v;
    return KD_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Typed values. Each getter leaves *out alone when the key is absent (defaults are set first)
 * and reports presence through `present` when non-NULL. */

typedef struct {
    double lo, hi;
    int lo_open, hi_open;  /* exclusive bounds */
    int integer;
    const char *desc;      /* "a number > 0": what the message says was expected */
} range;

static const range R_POS = {0, FLT_MAX, 1, 0, 0, "a number > 0"};
static const range R_NONNEG = {0, FLT_MAX, 0, 0, 0, "a number >= 0"};
static const range R_UNIT = {0, 1, 0, 0, 0, "a number in [0, 1]"};
static const range R_UNIT_OPEN = {0, 1, 0, 1, 0, "a number in [0, 1)"};
static const range R_GAMMA = {0, 1, 1, 0, 0, "a number in (0, 1]"};
static const range R_SEED = {0, MAX_INT53, 0, 0, 1, "an integer in [0, 2^53)"};
static const range R_COUNT0 = {0, MAX_INT53, 0, 0, 1, "an integer >= 0"};

static kd_status get_number(pctx *p, const cJSON *obj, const char *key, const char *ppath,
                            const range *r, double *out, int *present) {
    char path[JPATH_MAX], got[64];
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (present) *present = v != NULL;
    if (!v) return KD_OK;
    double x = v->valuedouble;
    int ok = cJSON_IsNumber(v) && isfinite(x) && (r->lo_open ? x > r->lo : x >= r->lo) &&
             (r->hi_open ? x < r->hi : x <= r->hi) && (!r->integer || x == floor(x));
    if (!ok)
        return fail(p, join(path, ppath, key), "expected %s, got %s", r->desc,
                    describe(v, got, sizeof got));
    *out = x;
    return KD_OK;
}

static kd_status get_float(pctx *p, const cJSON *obj, const char *key, const char *ppath,
                           const range *r, float *out, int *present) {
    double x = 0;
    int here = 0;
    kd_status st = get_number(p, obj, key, ppath, r, &x, &here);
    if (!st && here) *out = (float)x;
    if (present) *present = here;
    return st;
}

static kd_status get_size(pctx *p, const cJSON *obj, const char *key, const char *ppath,
                          const range *r, size_t *out, int *present) {
    double x = 0;
    int here = 0;
    kd_status st = get_number(p, obj, key, ppath, r, &x, &here);
    if (!st && here) *out = (size_t)x;
    if (present) *present = here;
    return st;
}

static kd_status get_bool(pctx *p, const cJSON *obj, const char *key, const char *ppath, int *out,
                          int *present) {
    char path[JPATH_MAX], got[64];
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (present) *present = v != NULL;
    if (!v) return KD_OK;
    if (!cJSON_IsBool(v))
        return fail(p, join(path, ppath, key), "expected true or false, got %s",
                    describe(v, got, sizeof got));
    *out = cJSON_IsTrue(v);
    return KD_OK;
}

/* A non-empty string that fits in cap bytes. */
static kd_status get_string(pctx *p, const cJSON *obj, const char *key, const char *ppath,
                            char *out, size_t cap, int *present) {
    char path[JPATH_MAX], got[64];
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (present) *present = v != NULL;
    if (!v) return KD_OK;
    join(path, ppath, key);
    if (!cJSON_IsString(v) || !v->valuestring[0])
        return fail(p, path, "expected a non-empty string, got %s", describe(v, got, sizeof got));
    if (strlen(v->valuestring) >= cap)
        return fail(p, path, "too long (%zu bytes; at most %zu)", strlen(v->valuestring), cap - 1);
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return KD_OK;
}

/* One of a fixed set of names; *out is the index. */
static kd_status get_enum(pctx *p, const cJSON *obj, const char *key, const char *ppath,
                          const char *const *names, size_t n, int *out, int *present) {
    char path[JPATH_MAX], got[64], list[256];
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (present) *present = v != NULL;
    if (!v) return KD_OK;
    if (cJSON_IsString(v))
        for (size_t i = 0; i < n; i++)
            if (strcmp(v->valuestring, names[i]) == 0) {
                *out = (int)i;
                return KD_OK;
            }
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(list + len, len < sizeof list ? sizeof list - len : 0, "%s\"%s\"",
                                i ? ", " : "", names[i]);
    const char *near = cJSON_IsString(v) ? suggest(v->valuestring, names, n) : NULL;
    char hint[96] = "";
    if (near) snprintf(hint, sizeof hint, " (did you mean \"%s\"?)", near);
    return fail(p, join(path, ppath, key), "expected one of %s, got %s%s", list,
                describe(v, got, sizeof got), hint);
}

/* ---------------------------------------------------------------------------------------- */
/* Paths. */

/* Lexically normalises an absolute path in place: drops "." and empty components, folds "..".
 * The base directory comes from realpath(), so only ".." after a symlink inside the user's own
 * relative path could be folded differently from the kernel; that is accepted for readable
 * paths in messages and saved configs. */
static void clean_path(char *s) {
    size_t n = strlen(s), r = 0, w = 1;
    /* w never passes r: each component written was read with at least one separator before it. */
    while (r < n) {
        while (r < n && s[r] == '/') r++;
        size_t b = r;
        while (r < n && s[r] != '/') r++;
        size_t L = r - b;
        if (L == 0 || (L == 1 && s[b] == '.')) continue;
        if (L == 2 && s[b] == '.' && s[b + 1] == '.') {
            while (w > 1 && s[w - 1] != '/') w--;
            if (w > 1) w--;
            continue;
        }
        if (w > 1) s[w++] = '/';
        memmove(s + w, s + b, L);
        w += L;
    }
    s[0] = '/';
    s[w] = '\0';
}

/* in (relative to base, or absolute) -> absolute, cleaned, into out (KD_PATH_MAX). */
static kd_status resolve_path(pctx *p, const char *jpath, const char *in, const char *base,
                              char *out) {
    size_t need = strlen(in) + strlen(base) + 2;
    char *tmp = malloc(need);
    if (!tmp) return oom(p);
    if (in[0] == '/') snprintf(tmp, need, "%s", in);
    else snprintf(tmp, need, "%s/%s", base, in);
    clean_path(tmp);
    kd_status st = KD_OK;
    if (strlen(tmp) >= KD_PATH_MAX)
        st = fail(p, jpath, "path too long after resolving (%zu bytes)", strlen(tmp));
    else memcpy(out, tmp, strlen(tmp) + 1);
    free(tmp);
    return st;
}

/* A path-valued key: a non-empty string resolved against base. */
static kd_status get_path(pctx *p, const cJSON *obj, const char *key, const char *ppath,
                          const char *base, char *out, int *present) {
    char raw[KD_PATH_MAX], path[JPATH_MAX];
    int here = 0;
    kd_status st = get_string(p, obj, key, ppath, raw, sizeof raw, &here);
    if (present) *present = here;
    if (st || !here) return st;
    return resolve_path(p, join(path, ppath, key), raw, base, out);
}

/* ---------------------------------------------------------------------------------------- */
/* Sections. */

static const char *const format_names[] = {"idx", "csv", "images"};

static int ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

/* Which keys each format accepts (bit i = format_names[i]). */
static unsigned source_key_formats(const char *key) {
    static const struct {
        const char *key;
        unsigned formats;
    } table[] = {
        {"labels", 1u << KD_FMT_IDX},         {"label_column", 1u << KD_FMT_CSV},
        {"header", 1u << KD_FMT_CSV},         {"delimiter", 1u << KD_FMT_CSV},
        {"channels", 1u << KD_FMT_IMAGES},    {"height", 1u << KD_FMT_IMAGES},
        {"width", 1u << KD_FMT_IMAGES},       {"skip_bad", 1u << KD_FMT_IMAGES},
        {"unlabeled", 1u << KD_FMT_IMAGES},
    };
    for (size_t i = 0; i < N_OF(table); i++)
        if (strcmp(table[i].key, key) == 0) return table[i].formats;
    return 7u;
}

static kd_status parse_source(pctx *p, const cJSON *parent, const char *key, const char *ppath,
                              kd_data_source *s, int *present) {
    char path[JPATH_MAX], sub[JPATH_MAX], got[64], raw[KD_PATH_MAX];
    const cJSON *o = NULL;
    kd_status st;
    kd_data_source_defaults(s);
    *present = 0;
    if ((st = get_section(p, parent, key, ppath, &source_schema, &o)) || !o) return st;
    *present = 1;
    join(path, ppath, key);

    int here = 0, fmt = -1;
    if ((st = get_enum(p, o, "format", path, format_names, N_OF(format_names), &fmt, NULL))) return st;
    if ((st = get_string(p, o, "path", path, raw, sizeof raw, &here))) return st;
    if (!here)
        return fail(p, join(sub, path, "path"), "missing (required: the %s file or folder)",
                    fmt == KD_FMT_IMAGES ? "image" : "data");
    if (fmt < 0) {
        /* Infer the obvious cases; anything else must say what it is. */
        if (ends_with(raw, ".csv") || ends_with(raw, ".tsv") || ends_with(raw, ".csv.gz")) fmt = KD_FMT_CSV;
        else if (strstr(raw, "ubyte") || ends_with(raw, ".idx") || ends_with(raw, ".idx.gz")) fmt = KD_FMT_IDX;
        else
            return fail(p, join(sub, path, "format"),
                        "missing, and \"%s\" does not tell (give \"idx\", \"csv\" or \"images\")", raw);
    }
    s->format = (kd_data_format)fmt;
    if ((st = resolve_path(p, join(sub, path, "path"), raw, p->base_dir, s->path))) return st;
    for (const cJSON *c = o->child; c; c = c->next)
        if (!(source_key_formats(c->string) & (1u << fmt)))
            return fail(p, join(sub, path, c->string), "not used by format \"%s\"", format_names[fmt]);

    if ((st = get_path(p, o, "labels", path, p->base_dir, s->labels_path, NULL))) return st;

    const cJSON *lc = cJSON_GetObjectItemCaseSensitive(o, "label_column");
    if (lc) {
        if (cJSON_IsNumber(lc) && lc->valuedouble == floor(lc->valuedouble) &&
            fabs(lc->valuedouble) < 1e9)
            snprintf(s->label_column, sizeof s->label_column, "%.0f", lc->valuedouble);
        else if ((st = get_string(p, o, "label_column", path, s->label_column,
                                  sizeof s->label_column, NULL)))
            return fail(p, join(sub, path, "label_column"),
                        "expected a column name, a column index (negative counts from the end) "
                        "or \"none\", got %s", describe(lc, got, sizeof got));
    }
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "header");
    if (h) {
        if (cJSON_IsBool(h)) s->has_header = cJSON_IsTrue(h);
        else if (cJSON_IsString(h) && strcmp(h->valuestring, "auto") == 0) s->has_header = -1;
        else
            return fail(p, join(sub, path, "header"), "expected true, false or \"auto\", got %s",
                        describe(h, got, sizeof got));
    }
    const cJSON *dl = cJSON_GetObjectItemCaseSensitive(o, "delimiter");
    if (dl) {
        if (!cJSON_IsString(dl) || strlen(dl->valuestring) != 1 ||
            strchr("\"\r\n.-+0123456789eE", dl->valuestring[0]))
            return fail(p, join(sub, path, "delimiter"),
                        "expected one character that cannot occur in a number (\",\", \";\", "
                        "\"\\t\", ...), got %s", describe(dl, got, sizeof got));
        s->delimiter = dl->valuestring[0];
    }
    double ch = 0;
    if ((st = get_number(p, o, "channels", path,
                         &(range){1, 3, 0, 0, 1, "1 (grey) or 3 (RGB)"}, &ch, &here)))
        return st;
    if (here) {
        if (ch == 2) return fail(p, join(sub, path, "channels"), "expected 1 (grey) or 3 (RGB), got 2");
        s->channels = (int)ch;
    }
    static const range side = {1, KD_IMAGE_MAX_SIDE, 0, 0, 1, "an integer in [1, 8192]"};
    if ((st = get_size(p, o, "height", path, &side, &s->height, NULL))) return st;
    if ((st = get_size(p, o, "width", path, &side, &s->width, NULL))) return st;
    if ((st = get_bool(p, o, "skip_bad", path, &s->skip_bad, NULL))) return st;
    if ((st = get_bool(p, o, "unlabeled", path, &s->unlabeled, NULL))) return st;
    if ((st = get_size(p, o, "subset", path, &R_COUNT0, &s->subset, NULL))) return st;
    double seed = 0;
    if ((st = get_number(p, o, "subset_seed", path, &R_SEED, &seed, &here))) return st;
    if (here) {
        if (s->subset == 0)
            return fail(p, join(sub, path, "subset_seed"),
                        "needs a subset > 0 (the seed picks which subset samples are kept)");
        s->subset_seeded = 1;
        s->subset_seed = (uint64_t)seed;
    }
    return KD_OK;
}

/* mean/std: a number (same for every channel) or an array of 1..KD_MAX_CHANNELS numbers. */
static kd_status get_channels(pctx *p, const cJSON *o, const char *key, const char *ppath,
                              int positive, float *out, int *n_out) {
    char path[JPATH_MAX], sub[JPATH_MAX + 16], got[64];
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    *n_out = 0;
    if (!v) return KD_OK;
    join(path, ppath, key);
    const char *want = positive ? "a number > 0" : "a number";
    if (cJSON_IsArray(v)) {
        int n = cJSON_GetArraySize(v);
        if (n < 1 || n > KD_MAX_CHANNELS)
            return fail(p, path, "expected 1 to %d values (one per channel), got %d",
                        KD_MAX_CHANNELS, n);
        int i = 0;
        for (const cJSON *e = v->child; e; e = e->next, i++) {
            snprintf(sub, sizeof sub, "%s[%d]", path, i);
            if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) || fabs(e->valuedouble) > FLT_MAX ||
                (positive && !(e->valuedouble > 0)))
                return fail(p, sub, "expected %s, got %s", want, describe(e, got, sizeof got));
            out[i] = (float)e->valuedouble;
        }
        *n_out = n;
        return KD_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || fabs(v->valuedouble) > FLT_MAX ||
        (positive && !(v->valuedouble > 0)))
        return fail(p, path, "expected %s or an array of them (one per channel), got %s", want,
                    describe(v, got, sizeof got));
    out[0] = (float)v->valuedouble;
    *n_out = 1;
    return KD_OK;
}

static kd_status parse_preprocess(pctx *p, const cJSON *data, kd_preprocess *pp) {
    const char *path = "data.preprocess";
    char got[64];
    const cJSON *o = NULL;
    kd_status st;
    memset(pp, 0, sizeof *pp);  /* scale 0 = auto, no normalisation, no flatten */
    if ((st = get_section(p, data, "preprocess", "data", &preprocess_schema, &o)) || !o) return st;
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(o, "scale");
    if (sc && !(cJSON_IsString(sc) && strcmp(sc->valuestring, "auto") == 0)) {
        if (!cJSON_IsNumber(sc) || !(sc->valuedouble > 0) || sc->valuedouble > FLT_MAX)
            return fail(p, "data.preprocess.scale", "expected a number > 0 or \"auto\", got %s",
                        describe(sc, got, sizeof got));
        pp->scale = (float)sc->valuedouble;
    }
    int n_mean = 0, n_std = 0;
    if ((st = get_channels(p, o, "mean", path, 0, pp->mean, &n_mean))) return st;
    if ((st = get_channels(p, o, "std", path, 1, pp->std, &n_std))) return st;
    if (n_mean && !n_std) return fail(p, "data.preprocess.std", "missing (required with mean)");
    if (n_std && !n_mean) return fail(p, "data.preprocess.mean", "missing (required with std)");
    if (n_mean != n_std)
        return fail(p, "data.preprocess.std", "has %d value%s but mean has %d", n_std,
                    n_std == 1 ? "" : "s", n_mean);
    pp->n_channels = n_mean;
    return get_bool(p, o, "flatten", path, &pp->flatten, NULL);
}

/* data.augment: {"shift": pixels, "flip": bool}, both optional (absent: no augmentation). */
static kd_status parse_augment(pctx *p, const cJSON *data, kd_augment *a) {
    static const range R_SHIFT = {0, KD_AUGMENT_MAX_SHIFT, 0, 0, 1, "an integer in [0, 64]"};
    const cJSON *o = NULL;
    kd_status st;
    memset(a, 0, sizeof *a);
    if ((st = get_section(p, data, "augment", "data", &augment_schema, &o)) || !o) return st;
    if ((st = get_size(p, o, "shift", "data.augment", &R_SHIFT, &a->shift, NULL))) return st;
    return get_bool(p, o, "flip", "data.augment", &a->flip, NULL);
}

/* data.classes: names for the class indices (label i is classes[i]), recorded in checkpoints so
 * eval and predict print names; the trainer checks the count against the data. */
static kd_status parse_classes(pctx *p, const cJSON *d, kd_config *c) {
    char got[64], sub[64];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(d, "classes");
    if (!v) return KD_OK;
    if (!cJSON_IsArray(v) || !v->child)
        return fail(p, "data.classes", "expected a non-empty array of class names, got %s",
                    describe(v, got, sizeof got));
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        snprintf(sub, sizeof sub, "data.classes[%d]", i);
        if (!cJSON_IsString(e) || !e->valuestring[0])
            return fail(p, sub, "expected a non-empty string, got %s", describe(e, got, sizeof got));
        for (const cJSON *f = v->child; f != e; f = f->next)
            if (strcmp(f->valuestring, e->valuestring) == 0)
                return fail(p, sub, "\"%s\" is listed twice", e->valuestring);
    }
    c->classes = cJSON_Duplicate(v, 1);
    if (!c->classes) return fail(p, "data.classes", "out of memory");
    return KD_OK;
}

static kd_status parse_data(pctx *p, const cJSON *root, kd_config *c) {
    const cJSON *d = NULL;
    kd_status st;
    if ((st = get_section(p, root, "data", "", &data_schema, &d))) return st;
    if (!d) return fail(p, "data", "missing (required section: at least data.train)");
    int here = 0;
    if ((st = parse_source(p, d, "train", "data", &c->train, &here))) return st;
    if (!here) return fail(p, "data.train", "missing (required: the training data source)");
    if ((st = parse_source(p, d, "test", "data", &c->test, &c->has_test))) return st;
    if ((st = parse_source(p, d, "validation", "data", &c->val, &c->has_val_source))) return st;

    c->val_count = 0;
    c->val_fraction = c->has_val_source ? 0.0f : 0.1f;
    double split = 0;
    static const range R_SPLIT = {0, MAX_INT53, 0, 0, 0,
                                  "a fraction in [0, 1) or a whole number of samples >= 1"};
    if ((st = get_number(p, d, "validation_split", "data", &R_SPLIT, &split, &here))) return st;
    if (here) {
        if (c->has_val_source)
            return fail(p, "data.validation_split",
                        "not allowed together with data.validation (validation comes from there)");
        if (split >= 1 && split != floor(split))
            return fail(p, "data.validation_split",
                        "expected a fraction in [0, 1) or a whole number of samples >= 1, got %.15g",
                        split);
        if (split >= 1) c->val_count = (size_t)split, c->val_fraction = 0.0f;
        else c->val_fraction = (float)split;
    }
    c->use_labels = 1;
    if ((st = get_bool(p, d, "use_labels", "data", &c->use_labels, NULL))) return st;
    if ((st = parse_classes(p, d, c))) return st;
    if ((st = parse_augment(p, d, &c->augment))) return st;
    return parse_preprocess(p, d, &c->pp);
}

/* A layer list: a non-empty array of objects with a string "type". Everything else about the
 * layers is checked by kd_model_init, which knows the layer types. */
static kd_status check_layers(pctx *p, const cJSON *v, const char *path) {
    char sub[JPATH_MAX + 32], got[64];
    if (!cJSON_IsArray(v))
        return fail(p, path, "expected an array of layer objects, got %s", describe(v, got, sizeof got));
    if (!v->child) return fail(p, path, "empty (a model needs at least one layer)");
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        snprintf(sub, sizeof sub, "%s[%d]", path, i);
        if (!cJSON_IsObject(e))
            return fail(p, sub, "expected a layer object like {\"type\": \"dense\", \"units\": 10}, got %s",
                        describe(e, got, sizeof got));
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "type");
        snprintf(sub, sizeof sub, "%s[%d].type", path, i);
        if (!t) return fail(p, sub, "missing (every layer needs a \"type\")");
        if (!cJSON_IsString(t) || !t->valuestring[0])
            return fail(p, sub, "expected a layer type name, got %s", describe(t, got, sizeof got));
    }
    return KD_OK;
}

static kd_status parse_model(pctx *p, const cJSON *root, kd_config *c) {
    static const char *const init_names[] = {"he", "xavier"};
    char got[64], sub[64];
    const cJSON *m = NULL;
    kd_status st;
    if ((st = get_section(p, root, "model", "", &model_schema, &m))) return st;
    if (!m) return fail(p, "model", "missing (required section: at least model.layers)");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(m, "layers");
    if (!layers) return fail(p, "model.layers", "missing (required: the list of layers)");
    if ((st = check_layers(p, layers, "model.layers"))) return st;
    if (!(c->layers = cJSON_Duplicate(layers, 1))) return oom(p);

    const cJSON *in = cJSON_GetObjectItemCaseSensitive(m, "input");
    if (in) {
        int n = cJSON_IsArray(in) ? cJSON_GetArraySize(in) : 0;
        if (n < 1 || n > KD_MAX_RANK)
            return fail(p, "model.input", "expected an array of 1 to %d sizes like [1, 28, 28], got %s",
                        KD_MAX_RANK, describe(in, got, sizeof got));
        int i = 0;
        size_t numel = 1;
        for (const cJSON *e = in->child; e; e = e->next, i++) {
            double x = e->valuedouble;
            snprintf(sub, sizeof sub, "model.input[%d]", i);
            if (!cJSON_IsNumber(e) || x != floor(x) || x < 1 || x > (double)(1 << 24))
                return fail(p, sub, "expected an integer in [1, 2^24], got %s", describe(e, got, sizeof got));
            c->input.d[i] = (size_t)x;
            numel *= c->input.d[i];
            if (numel > ((size_t)1 << 31))
                return fail(p, "model.input", "too large (more than 2^31 values per sample)");
        }
        c->input.rank = n;
        c->has_input = 1;
    }
    int init = KD_INIT_HE;
    if ((st = get_enum(p, m, "init", "model", init_names, 2, &init, NULL))) return st;
    c->init = (kd_init_kind)init;
    return KD_OK;
}

static kd_status parse_teacher(pctx *p, const cJSON *root, kd_config *c) {
    static const char *const kind_names[] = {"kl", "mse"};
    const cJSON *t = NULL, *d = NULL;
    kd_status st;
    if ((st = get_section(p, root, "teacher", "", &teacher_schema, &t))) return st;
    if ((st = get_section(p, root, "distill", "", &distill_schema, &d))) return st;
    if (!t) {
        if (d)
            return fail(p, "distill", "given, but there is no teacher section to distil from "
                                      "(add teacher.checkpoint, or remove distill)");
        return KD_OK;
    }
    c->has_teacher = 1;
    int here = 0;
    if ((st = get_path(p, t, "checkpoint", "teacher", p->base_dir, c->teacher_path, &here))) return st;
    if (!here) return fail(p, "teacher.checkpoint", "missing (required: the teacher's safetensors file)");
    const cJSON *tl = cJSON_GetObjectItemCaseSensitive(t, "layers");
    if (tl) {
        if ((st = check_layers(p, tl, "teacher.layers"))) return st;
        if (!(c->teacher_layers = cJSON_Duplicate(tl, 1))) return oom(p);
    }

    /* Without labels the soft term is the only signal, so alpha defaults to 1 there. */
    c->distill.kind = KD_DISTILL_KL;
    c->distill.temperature = 4.0f;
    c->distill.alpha = c->use_labels ? 0.9f : 1.0f;
    int kind = KD_DISTILL_KL;
    if ((st = get_enum(p, d, "kind", "distill", kind_names, 2, &kind, NULL))) return st;
    c->distill.kind = (kd_distill_kind)kind;
    if ((st = get_float(p, d, "temperature", "distill", &R_POS, &c->distill.temperature, &here)))
        return st;
    if (here && kind == KD_DISTILL_MSE)
        return fail(p, "distill.temperature", "not used by kind \"mse\" (it matches raw logits)");
    int alpha_here = 0;
    if ((st = get_float(p, d, "alpha", "distill", &R_UNIT, &c->distill.alpha, &alpha_here))) return st;
    if (!c->use_labels && c->distill.alpha != 1.0f)
        return fail(p, "distill.alpha", "must be 1 when data.use_labels is false (no labels for "
                                        "the hard term), got %g", (double)c->distill.alpha);
    return KD_OK;
}

static kd_status parse_optimizer(pctx *p, const cJSON *root, kd_config *c) {
    static const char *const names[] = {"sgd", "adam", "adamw"};
    const cJSON *o = NULL;
    kd_status st;
    if ((st = get_section(p, root, "optimizer", "", &optimizer_schema, &o))) return st;
    int kind = KD_OPT_SGD;
    if ((st = get_enum(p, o, "name", "optimizer", names, 3, &kind, NULL))) return st;
    c->optim = kd_optim_defaults((kd_optim_kind)kind);
    c->sched.base_lr = kind == KD_OPT_SGD ? 0.01f : 0.001f;
    if (o)
        for (const cJSON *e = o->child; e; e = e->next) {
            int sgd_only = strcmp(e->string, "momentum") == 0 || strcmp(e->string, "nesterov") == 0;
            int adam_only = strcmp(e->string, "beta1") == 0 || strcmp(e->string, "beta2") == 0 ||
                            strcmp(e->string, "eps") == 0;
            char path[JPATH_MAX];
            if ((sgd_only && kind != KD_OPT_SGD) || (adam_only && kind == KD_OPT_SGD))
                return fail(p, join(path, "optimizer", e->string),
                            "not used by optimizer \"%s\" (only by %s)", names[kind],
                            sgd_only ? "\"sgd\"" : "\"adam\" and \"adamw\"");
        }
    if ((st = get_float(p, o, "lr", "optimizer", &R_POS, &c->sched.base_lr, NULL))) return st;
    if ((st = get_float(p, o, "momentum", "optimizer", &R_UNIT_OPEN, &c->optim.momentum, NULL))) return st;
    if ((st = get_bool(p, o, "nesterov", "optimizer", &c->optim.nesterov, NULL))) return st;
    if (c->optim.nesterov && !(c->optim.momentum > 0))
        return fail(p, "optimizer.nesterov", "needs optimizer.momentum > 0");
    if ((st = get_float(p, o, "beta1", "optimizer", &R_UNIT_OPEN, &c->optim.beta1, NULL))) return st;
    if ((st = get_float(p, o, "beta2", "optimizer", &R_UNIT_OPEN, &c->optim.beta2, NULL))) return st;
    if ((st = get_float(p, o, "eps", "optimizer", &R_POS, &c->optim.eps, NULL))) return st;
    if ((st = get_float(p, o, "weight_decay", "optimizer", &R_NONNEG, &c->optim.weight_decay, NULL)))
        return st;
    return get_float(p, o, "clip_norm", "optimizer", &R_NONNEG, &c->optim.clip_norm, NULL);
}

static kd_status parse_schedule(pctx *p, const cJSON *root, kd_config *c) {
    static const char *const names[] = {"constant", "step", "cosine"};
    const cJSON *s = NULL;
    kd_status st;
    float lr = c->sched.base_lr;
    memset(&c->sched, 0, sizeof c->sched);
    c->sched.base_lr = lr;
    c->sched.gamma = 0.1f;
    if ((st = get_section(p, root, "schedule", "", &schedule_schema, &s))) return st;
    int kind = KD_SCHED_CONSTANT;
    if ((st = get_enum(p, s, "name", "schedule", names, 3, &kind, NULL))) return st;
    c->sched.kind = (kd_sched_kind)kind;
    if (s)
        for (const cJSON *e = s->child; e; e = e->next) {
            int step_only = strcmp(e->string, "step_epochs") == 0 ||
                            strcmp(e->string, "step_size") == 0 || strcmp(e->string, "gamma") == 0;
            int cos_only = strcmp(e->string, "min_lr") == 0;
            char path[JPATH_MAX];
            if ((step_only && kind != KD_SCHED_STEP) || (cos_only && kind != KD_SCHED_COSINE))
                return fail(p, join(path, "schedule", e->string),
                            "not used by schedule \"%s\" (only by \"%s\")", names[kind],
                            step_only ? "step" : "cosine");
        }
    static const range R_STEPS0 = {0, MAX_INT53, 0, 0, 1, "an integer >= 0"};
    static const range R_STEPS1 = {1, MAX_INT53, 0, 0, 1, "an integer >= 1"};
    static const range R_EPOCHS = {0, 1e9, 1, 0, 0, "a number of epochs > 0"};
    int we = 0, ws = 0, se = 0, ss = 0;
    double x = 0;
    if ((st = get_number(p, s, "warmup_epochs", "schedule", &R_EPOCHS, &c->warmup_epochs, &we)))
        return st;
    if ((st = get_number(p, s, "warmup_steps", "schedule", &R_STEPS0, &x, &ws))) return st;
    if (we && ws)
        return fail(p, "schedule.warmup_steps", "give warmup_steps or warmup_epochs, not both");
    if (ws) c->sched.warmup_steps = (uint64_t)x;
    if ((st = get_number(p, s, "step_epochs", "schedule", &R_EPOCHS, &c->step_epochs, &se))) return st;
    if ((st = get_number(p, s, "step_size", "schedule", &R_STEPS1, &x, &ss))) return st;
    if (se && ss) return fail(p, "schedule.step_size", "give step_size or step_epochs, not both");
    if (ss) c->sched.step_size = (uint64_t)x;
    if (kind == KD_SCHED_STEP && !se && !ss)
        return fail(p, "schedule.step_size",
                    "missing (a \"step\" schedule needs step_size in steps or step_epochs)");
    if ((st = get_float(p, s, "gamma", "schedule", &R_GAMMA, &c->sched.gamma, NULL))) return st;
    if ((st = get_float(p, s, "min_lr", "schedule", &R_NONNEG, &c->sched.min_lr, NULL))) return st;
    if (c->sched.min_lr > c->sched.base_lr)
        return fail(p, "schedule.min_lr", "must not exceed optimizer.lr (%g), got %g",
                    (double)c->sched.base_lr, (double)c->sched.min_lr);
    return KD_OK;
}

static kd_status parse_train(pctx *p, const cJSON *root, kd_config *c) {
    static const range R_EPOCHS = {1, 1000000, 0, 0, 1, "an integer in [1, 1000000]"};
    static const range R_BATCH = {1, 1 << 20, 0, 0, 1, "an integer in [1, 1048576]"};
    static const range R_THREADS = {0, 1024, 0, 0, 1, "an integer in [0, 1024] (0 = all cores)"};
    const cJSON *t = NULL;
    kd_status st;
    if ((st = get_section(p, root, "train", "", &train_schema, &t))) return st;
    c->epochs = 10;
    c->batch_size = 128;
    c->seed = 0;
    c->threads = 0;
    double x = 0;
    int here = 0;
    if ((st = get_size(p, t, "epochs", "train", &R_EPOCHS, &c->epochs, NULL))) return st;
    if ((st = get_size(p, t, "batch_size", "train", &R_BATCH, &c->batch_size, NULL))) return st;
    if ((st = get_number(p, t, "seed", "train", &R_SEED, &x, &here))) return st;
    if (here) c->seed = (uint64_t)x;
    if ((st = get_number(p, t, "threads", "train", &R_THREADS, &x, &here))) return st;
    if (here) c->threads = (int)x;
    return KD_OK;
}

static kd_status parse_output(pctx *p, const cJSON *root, kd_config *c) {
    const cJSON *o = NULL;
    kd_status st;
    if ((st = get_section(p, root, "output", "", &output_schema, &o))) return st;
    c->save_best = 1;
    int here = 0;
    /* Relative output folders follow the current directory, like --out, not the config file:
     * runs land where the user works even when configs live elsewhere. */
    if ((st = get_path(p, o, "dir", "output", p->cwd, c->out_dir, &here))) return st;
    if (!here) {
        char def[300 + 8];
        snprintf(def, sizeof def, "runs/%s", c->name);
        if ((st = resolve_path(p, "output.dir", def, p->cwd, c->out_dir))) return st;
    }
    return get_bool(p, o, "save_best", "output", &c->save_best, NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* The resolved config as JSON. */

/* The shortest decimal that reads back as the same float, as a double (so the saved config
 * says 0.01, not 0.009999999776482582). */
typedef struct {
    int ok;
} builder;

static cJSON *b_obj(builder *b, cJSON *parent, const char *key) {
    cJSON *o = cJSON_AddObjectToObject(parent, key);
    if (!o) b->ok = 0;
    return o;
}
static void b_num(builder *b, cJSON *o, const char *key, double v) {
    if (o && !cJSON_AddNumberToObject(o, key, v)) b->ok = 0;
}
static void b_flt(builder *b, cJSON *o, const char *key, float v) { b_num(b, o, key, kd_float_shortest(v)); }
static void b_str(builder *b, cJSON *o, const char *key, const char *v) {
    if (o && !cJSON_AddStringToObject(o, key, v)) b->ok = 0;
}
static void b_bool(builder *b, cJSON *o, const char *key, int v) {
    if (o && !cJSON_AddBoolToObject(o, key, v)) b->ok = 0;
}
static void b_dup(builder *b, cJSON *o, const char *key, const cJSON *v) {
    cJSON *d = cJSON_Duplicate(v, 1);
    if (!o || !d || !cJSON_AddItemToObject(o, key, d)) {
        cJSON_Delete(d);
        b->ok = 0;
    }
}
static void b_floats(builder *b, cJSON *o, const char *key, const float *v, int n) {
    cJSON *a = o ? cJSON_AddArrayToObject(o, key) : NULL;
    if (!a) {
        b->ok = 0;
        return;
    }
    for (int i = 0; i < n; i++) {
        cJSON *x = cJSON_CreateNumber(kd_float_shortest(v[i]));
        if (!x || !cJSON_AddItemToArray(a, x)) {
            cJSON_Delete(x);
            b->ok = 0;
        }
    }
}

static void build_source(builder *b, cJSON *parent, const char *key, const kd_data_source *s) {
    cJSON *o = b_obj(b, parent, key);
    b_str(b, o, "format", format_names[s->format]);
    b_str(b, o, "path", s->path);
    if (s->format == KD_FMT_IDX && s->labels_path[0]) b_str(b, o, "labels", s->labels_path);
    if (s->format == KD_FMT_CSV) {
        if (s->label_column[0]) b_str(b, o, "label_column", s->label_column);
        if (s->has_header < 0) b_str(b, o, "header", "auto");
        else b_bool(b, o, "header", s->has_header);
        char dl[2] = {s->delimiter, '\0'};
        b_str(b, o, "delimiter", dl);
    }
    if (s->format == KD_FMT_IMAGES) {
        b_num(b, o, "channels", s->channels);
        b_num(b, o, "height", (double)s->height);
        b_num(b, o, "width", (double)s->width);
        b_bool(b, o, "skip_bad", s->skip_bad);
        b_bool(b, o, "unlabeled", s->unlabeled);
    }
    b_num(b, o, "subset", (double)s->subset);
    if (s->subset_seeded) b_num(b, o, "subset_seed", (double)s->subset_seed);
}

static cJSON *build_resolved(const kd_config *c) {
    static const char *const opt_names[] = {"sgd", "adam", "adamw"};
    static const char *const sched_names[] = {"constant", "step", "cosine"};
    builder b = {1};
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;

    cJSON *data = b_obj(&b, root, "data");
    build_source(&b, data, "train", &c->train);
    if (c->has_test) build_source(&b, data, "test", &c->test);
    if (c->has_val_source) build_source(&b, data, "validation", &c->val);
    else if (c->val_count) b_num(&b, data, "validation_split", (double)c->val_count);
    else b_flt(&b, data, "validation_split", c->val_fraction);
    b_bool(&b, data, "use_labels", c->use_labels);
    if (c->classes && data) {
        cJSON *names = cJSON_Duplicate(c->classes, 1);
        if (!names || !cJSON_AddItemToObject(data, "classes", names)) {
            cJSON_Delete(names);
            b.ok = 0;
        }
    }
    cJSON *pp = data ? b_obj(&b, data, "preprocess") : NULL;
    if (c->pp.scale > 0) b_flt(&b, pp, "scale", c->pp.scale);
    else b_str(&b, pp, "scale", "auto");
    if (c->pp.n_channels) {
        b_floats(&b, pp, "mean", c->pp.mean, c->pp.n_channels);
        b_floats(&b, pp, "std", c->pp.std, c->pp.n_channels);
    }
    b_bool(&b, pp, "flatten", c->pp.flatten);
    if (kd_augment_active(&c->augment)) {
        cJSON *aug = data ? b_obj(&b, data, "augment") : NULL;
        b_num(&b, aug, "shift", (double)c->augment.shift);
        b_bool(&b, aug, "flip", c->augment.flip);
    }

    cJSON *model = b_obj(&b, root, "model");
    if (c->has_input) {
        cJSON *in = model ? cJSON_AddArrayToObject(model, "input") : NULL;
        if (!in) b.ok = 0;
        for (int i = 0; in && i < c->input.rank; i++)
            if (!cJSON_AddItemToArray(in, cJSON_CreateNumber((double)c->input.d[i]))) b.ok = 0;
    }
    b_dup(&b, model, "layers", c->layers);
    b_str(&b, model, "init", c->init == KD_INIT_XAVIER ? "xavier" : "he");

    if (c->has_teacher) {
        cJSON *t = b_obj(&b, root, "teacher");
        b_str(&b, t, "checkpoint", c->teacher_path);
        if (c->teacher_layers) b_dup(&b, t, "layers", c->teacher_layers);
        cJSON *d = b_obj(&b, root, "distill");
        b_str(&b, d, "kind", c->distill.kind == KD_DISTILL_MSE ? "mse" : "kl");
        if (c->distill.kind == KD_DISTILL_KL) b_flt(&b, d, "temperature", c->distill.temperature);
        b_flt(&b, d, "alpha", c->distill.alpha);
    }

    cJSON *o = b_obj(&b, root, "optimizer");
    b_str(&b, o, "name", opt_names[c->optim.kind]);
    b_flt(&b, o, "lr", c->sched.base_lr);
    if (c->optim.kind == KD_OPT_SGD) {
        b_flt(&b, o, "momentum", c->optim.momentum);
        b_bool(&b, o, "nesterov", c->optim.nesterov);
    } else {
        b_flt(&b, o, "beta1", c->optim.beta1);
        b_flt(&b, o, "beta2", c->optim.beta2);
        b_flt(&b, o, "eps", c->optim.eps);
    }
    b_flt(&b, o, "weight_decay", c->optim.weight_decay);
    b_flt(&b, o, "clip_norm", c->optim.clip_norm);

    cJSON *s = b_obj(&b, root, "schedule");
    b_str(&b, s, "name", sched_names[c->sched.kind]);
    if (c->warmup_epochs > 0) b_num(&b, s, "warmup_epochs", c->warmup_epochs);
    else b_num(&b, s, "warmup_steps", (double)c->sched.warmup_steps);
    if (c->sched.kind == KD_SCHED_STEP) {
        if (c->step_epochs > 0) b_num(&b, s, "step_epochs", c->step_epochs);
        else b_num(&b, s, "step_size", (double)c->sched.step_size);
        b_flt(&b, s, "gamma", c->sched.gamma);
    }
    if (c->sched.kind == KD_SCHED_COSINE) b_flt(&b, s, "min_lr", c->sched.min_lr);

    cJSON *t = b_obj(&b, root, "train");
    b_num(&b, t, "epochs", (double)c->epochs);
    b_num(&b, t, "batch_size", (double)c->batch_size);
    b_num(&b, t, "seed", (double)c->seed);
    b_num(&b, t, "threads", c->threads);

    cJSON *out = b_obj(&b, root, "output");
    b_str(&b, out, "dir", c->out_dir);
    b_bool(&b, out, "save_best", c->save_best);

    if (!b.ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* ---------------------------------------------------------------------------------------- */
/* --set overrides. */

/* Applies "a.b[2].c=value" to the tree. Keys are checked against the schema as the path is
 * walked (inside layer lists anything goes: kd_model_init checks those); missing sections are
 * created; [N] indexes an existing list entry. JSON null removes the key. */
static kd_status apply_override(pctx *p, cJSON *root, const char *ov) {
    char spec[JPATH_MAX], path[JPATH_MAX + 64], got[64];
    kd_status st = KD_OK;
    cJSON *value = NULL;
    const char *eq = strchr(ov, '=');
    if (!eq || eq == ov)
        return kd_err_set(p->err, KD_EUSAGE,
                          "%s: --set %s: expected PATH=VALUE (for example optimizer.lr=0.01)",
                          p->file, ov);
    size_t plen = (size_t)(eq - ov);
    if (plen >= sizeof spec)
        return kd_err_set(p->err, KD_EUSAGE, "%s: --set %.64s...: path too long", p->file, ov);
    memcpy(spec, ov, plen);
    spec[plen] = '\0';
    const char *vend = NULL;
    value = cJSON_ParseWithOpts(eq + 1, &vend, 1);
    if (!value && !(value = cJSON_CreateString(eq + 1))) return oom(p);

    cJSON *cur = root;
    const schema *sch = &root_schema;
    int opaque = 0;
    path[0] = '\0';
    char *s = spec;
    for (;;) {
        char *dot = strchr(s, '.');
        if (dot) *dot = '\0';
        char *br = strchr(s, '[');
        size_t nlen = br ? (size_t)(br - s) : strlen(s);
        char name[JPATH_MAX];
        memcpy(name, s, nlen);
        name[nlen] = '\0';
        size_t pl = strlen(path);
        snprintf(path + pl, sizeof path - pl, "%s%s", pl ? "." : "", name);
        if (!name[0]) {
            st = fail_set(p, path, ov, "empty key in the --set path");
            goto cleanup;
        }
        const schema *next_sch = NULL;
        int next_opaque = opaque;
        if (!opaque) {
            const schema_key *k = schema_find(sch, name);
            if (!k) {
                st = unknown_key(p, path, ov, name, sch);
                goto cleanup;
            }
            if (br && k->kind != K_OPAQUE) {
                st = fail_set(p, path, ov, "is not a list ([N] only indexes model.layers and teacher.layers)");
                goto cleanup;
            }
            if (k->kind == K_LEAF && dot) {
                st = fail_set(p, path, ov, "is a value, not a section (cannot set %s)", spec);
                goto cleanup;
            }
            next_sch = k->sub;
            next_opaque = k->kind == K_OPAQUE;
        }
        if (!dot && !br) {
            if (cJSON_IsNull(value)) {
                cJSON_DeleteItemFromObjectCaseSensitive(cur, name);
            } else if (cJSON_GetObjectItemCaseSensitive(cur, name)) {
                if (!cJSON_ReplaceItemInObjectCaseSensitive(cur, name, value)) {
                    st = oom(p);
                    goto cleanup;
                }
                value = NULL;
            } else {
                if (!cJSON_AddItemToObject(cur, name, value)) {
                    st = oom(p);
                    goto cleanup;
                }
                value = NULL;
            }
            break;
        }
        cJSON *child = cJSON_GetObjectItemCaseSensitive(cur, name);
        if (!child) {
            if (br) {
                st = fail_set(p, path, ov, "does not exist, so it cannot be indexed");
                goto cleanup;
            }
            if (!(child = cJSON_AddObjectToObject(cur, name))) {
                st = oom(p);
                goto cleanup;
            }
        }
        while (br) {
            char *end = NULL;
            errno = 0;
            unsigned long idx = strtoul(br + 1, &end, 10);
            if (end == br + 1 || *end != ']' || errno || !isdigit((unsigned char)br[1]) ||
                (end[1] != '\0' && end[1] != '[')) {
                st = fail_set(p, path, ov, "malformed index (expected name[N])");
                goto cleanup;
            }
            if (!cJSON_IsArray(child)) {
                st = fail_set(p, path, ov, "is %s, not a list", describe(child, got, sizeof got));
                goto cleanup;
            }
            int n = cJSON_GetArraySize(child);
            pl = strlen(path);
            snprintf(path + pl, sizeof path - pl, "[%lu]", idx);
            if (idx >= (unsigned long)n) {
                st = fail_set(p, path, ov, "index out of range (the list has %d entries)", n);
                goto cleanup;
            }
            br = end[1] == '[' ? end + 1 : NULL;
            if (!br && !dot) {
                if (cJSON_IsNull(value)) {
                    cJSON_DeleteItemFromArray(child, (int)idx);
                } else {
                    if (!cJSON_ReplaceItemInArray(child, (int)idx, value)) {
                        st = oom(p);
                        goto cleanup;
                    }
                    value = NULL;
                }
                goto cleanup;
            }
            child = cJSON_GetArrayItem(child, (int)idx);
        }
        if (!cJSON_IsObject(child)) {
            st = fail_set(p, path, ov, "is %s, not a section (cannot set %s)",
                          describe(child, got, sizeof got), spec);
            goto cleanup;
        }
        cur = child;
        sch = next_sch;
        opaque = next_opaque;
        s = dot + 1;
    }
cleanup:
    cJSON_Delete(value);
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* Entry points. */

static void line_col(const char *text, size_t off, size_t *line, size_t *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') (*line)++, *col = 1;
        else (*col)++;
    }
}

static kd_status parse_json(pctx *p, const char *text, size_t len, cJSON **out) {
    const char *end = NULL;
    size_t line, col;
    *out = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t off = end && end >= text ? (size_t)(end - text) : 0;
        if (off > len) off = len;
        /* cJSON reports a truncated document at its last byte: call it the end of the file. */
        size_t rest = off;
        while (rest < len && isspace((unsigned char)text[rest])) rest++;
        if (rest >= len) off = len;
        line_col(text, off, &line, &col);
        if (off >= len)
            return kd_err_set(p->err, KD_EUSAGE, "%s: line %zu, column %zu: invalid JSON: "
                              "unexpected end of file", p->file, line, col);
        char near[24];
        size_t k = 0;
        for (size_t i = off; i < len && k < 16 && text[i] != '\n' && text[i] != '\r'; i++)
            near[k++] = isprint((unsigned char)text[i]) ? text[i] : '?';
        near[k] = '\0';
        return kd_err_set(p->err, KD_EUSAGE, "%s: line %zu, column %zu: invalid JSON near \"%s\"",
                          p->file, line, col, near);
    }
    size_t off = (size_t)(end - text);
    while (off < len && isspace((unsigned char)text[off])) off++;
    if (off < len) {
        cJSON_Delete(root);
        line_col(text, off, &line, &col);
        return kd_err_set(p->err, KD_EUSAGE,
                          "%s: line %zu, column %zu: invalid JSON: unexpected text after the end",
                          p->file, line, col);
    }
    *out = root;
    return KD_OK;
}

kd_status kd_config_parse(kd_config *c, const char *text, size_t len, const char *path,
                          const char *base_dir, const char *const *overrides,
                          size_t n_overrides, kd_err *err) {
    kd_status st = KD_OK;
    cJSON *root = NULL;
    char got[64];
    pctx *p = calloc(1, sizeof *p);
    memset(c, 0, sizeof *c);
    if (!p) return kd_err_set(err, KD_EIO, "out of memory");
    p->file = path && path[0] ? path : "config";
    p->err = err;
    p->overrides = overrides;
    p->n_overrides = n_overrides;
    if (!getcwd(p->cwd, sizeof p->cwd)) {
        st = kd_err_set(err, KD_EIO, "cannot get the current directory: %s", strerror(errno));
        goto cleanup;
    }
    if (base_dir && base_dir[0]) {
        if ((st = resolve_path(p, "", base_dir, p->cwd, p->base_dir))) goto cleanup;
    } else {
        memcpy(p->base_dir, p->cwd, sizeof p->base_dir);
    }
    if (path) snprintf(c->path, sizeof c->path, "%s", path);
    const char *base = path && path[0] ? strrchr(path, '/') : NULL;
    base = base ? base + 1 : (path && path[0] ? path : "config");
    snprintf(c->name, sizeof c->name, "%s", base);
    size_t nl = strlen(c->name);
    if (nl > 5 && strcmp(c->name + nl - 5, ".json") == 0) c->name[nl - 5] = '\0';

    if ((st = parse_json(p, text, len, &root))) goto cleanup;
    if (!cJSON_IsObject(root)) {
        st = fail(p, "", "expected a JSON object at the top level, got %s",
                  describe(root, got, sizeof got));
        goto cleanup;
    }
    for (size_t i = 0; i < n_overrides; i++)
        if ((st = apply_override(p, root, overrides[i]))) goto cleanup;
    if ((st = check_keys(p, root, &root_schema, ""))) goto cleanup;
    if ((st = parse_data(p, root, c))) goto cleanup;
    if ((st = parse_model(p, root, c))) goto cleanup;
    if ((st = parse_teacher(p, root, c))) goto cleanup;
    if (!c->use_labels && !c->has_teacher) {
        st = fail(p, "data.use_labels", "false needs a teacher section (without labels the "
                                        "teacher's soft targets are the only training signal)");
        goto cleanup;
    }
    if ((st = parse_optimizer(p, root, c))) goto cleanup;
    if ((st = parse_schedule(p, root, c))) goto cleanup;
    if ((st = parse_train(p, root, c))) goto cleanup;
    if ((st = parse_output(p, root, c))) goto cleanup;
    if (!(c->resolved = build_resolved(c))) st = oom(p);
cleanup:
    cJSON_Delete(root);
    free(p);
    if (st) kd_config_free(c);
    return st;
}

kd_status kd_config_load(kd_config *c, const char *path, const char *const *overrides,
                         size_t n_overrides, kd_err *err) {
    char *text = NULL, *dir = NULL;
    size_t len = 0;
    memset(c, 0, sizeof *c);
    kd_status st = kd_read_file(path, CONFIG_MAX_BYTES, &text, &len, err);
    if (st) {
        /* A config that cannot be read is a usage error: the user named the wrong file. */
        if (st == KD_EINPUT) {
            char msg[sizeof err->msg];
            memcpy(msg, err->msg, sizeof msg);
            kd_err_set(err, KD_EUSAGE, "config file %s", msg);
        }
        return err->code;
    }
    /* Relative paths resolve against the real directory of the file (symlinks followed once,
     * here, so ".." in the config means what it says on disk). */
    const char *slash = strrchr(path, '/');
    char dirbuf[KD_PATH_MAX];
    if (!slash) snprintf(dirbuf, sizeof dirbuf, ".");
    else if (slash == path) snprintf(dirbuf, sizeof dirbuf, "/");
    else snprintf(dirbuf, sizeof dirbuf, "%.*s", (int)(slash - path), path);
    dir = realpath(dirbuf, NULL);
    if (!dir) {
        st = kd_err_set(err, KD_EUSAGE, "%s: cannot resolve its directory: %s", path, strerror(errno));
        goto cleanup;
    }
    st = kd_config_parse(c, text, len, path, dir, overrides, n_overrides, err);
cleanup:
    free(dir);
    free(text);
    return st;
}

void kd_config_free(kd_config *c) {
    if (!c) return;
    cJSON_Delete(c->layers);
    cJSON_Delete(c->teacher_layers);
    cJSON_Delete(c->classes);
    cJSON_Delete(c->resolved);
    memset(c, 0, sizeof *c);
}

char *kd_config_to_json(const kd_config *c) {
    if (!c || !c->resolved) return NULL;
    return cJSON_Print(c->resolved);
}

kd_sched_cfg kd_config_sched(const kd_config *c, size_t steps_per_epoch) {
    kd_sched_cfg s = c->sched;
    if (c->warmup_epochs > 0) s.warmup_steps = (uint64_t)llround(c->warmup_epochs * (double)steps_per_epoch);
    if (c->step_epochs > 0) {
        s.step_size = (uint64_t)llround(c->step_epochs * (double)steps_per_epoch);
        if (s.step_size == 0) s.step_size = 1;
    }
    s.total_steps = (uint64_t)c->epochs * steps_per_epoch;
    return s;
}
