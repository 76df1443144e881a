/* parse.c - the table-driven reader: each section's keys in table order, each value checked by
 * its kind (or handed to its key's hook), every error worded "FILE: json.path: problem" with
 * the --set that put a bad value there, and near-miss keys suggested. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_impl.h"
#include "kd_path.h"
#include "kd_suggest.h"

/* ---------------------------------------------------------------------------------------- */
/* Messages. */

/* The last --set whose path is `path` or encloses it, so a bad value it put there is blamed on
 * it; NULL if the value came from the file. */
static const char *override_for(const kd_cfg_ctx *p, const char *path) {
    const char *found = NULL;
    for (size_t i = 0; i < p->n_overrides; i++) {
        const char *ov = p->overrides[i], *eq = strchr(ov, '=');
        if (!eq || eq == ov) continue;
        size_t len = (size_t)(eq - ov);
        if (strncmp(path, ov, len) == 0 && (path[len] == '\0' || path[len] == '.' || path[len] == '['))
            found = ov;
    }
    return found;
}

static kd_status vfail(kd_cfg_ctx *p, const char *path, const char *ov, const char *fmt,
                       va_list ap) {
    char msg[768], from[320] = "";
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (!ov && path) ov = override_for(p, path);
    if (ov) snprintf(from, sizeof from, " (from --set %s)", ov);
    if (path && path[0])
        return kd_err_set(p->err, KD_EUSAGE, "%s: %s: %s%s", p->file, path, msg, from);
    return kd_err_set(p->err, KD_EUSAGE, "%s: %s%s", p->file, msg, from);
}

kd_status kd_cfg_fail(kd_cfg_ctx *p, const char *path, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    kd_status st = vfail(p, path, NULL, fmt, ap);
    va_end(ap);
    return st;
}

kd_status kd_cfg_fail_key(kd_cfg_sec *s, const kd_cfg_key *k, const char *fmt, ...) {
    char path[KD_CFG_JPATH_MAX];
    va_list ap;
    va_start(ap, fmt);
    kd_status st = vfail(s->p, kd_cfg_key_path(s, k, path), NULL, fmt, ap);
    va_end(ap);
    return st;
}

kd_status kd_cfg_fail_set(kd_cfg_ctx *p, const char *path, const char *ov, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    kd_status st = vfail(p, path, ov, fmt, ap);
    va_end(ap);
    return st;
}

kd_status kd_cfg_oom(kd_cfg_ctx *p) { return kd_err_set(p->err, KD_EIO, "%s: out of memory", p->file); }

const char *kd_cfg_join(char *buf, const char *parent, const char *key) {
    if (parent && parent[0]) snprintf(buf, KD_CFG_JPATH_MAX, "%s.%s", parent, key);
    else snprintf(buf, KD_CFG_JPATH_MAX, "%s", key);
    return buf;
}

const char *kd_cfg_key_path(const kd_cfg_sec *s, const kd_cfg_key *k, char *buf) {
    return kd_cfg_join(buf, s->path, k->name);
}

const char *kd_cfg_describe(const cJSON *v, char *buf, size_t cap) {
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

const char *kd_cfg_list(char *buf, size_t cap, const char *const *names, size_t n,
                        unsigned mask, const char *last) {
    size_t len = 0, k = 0, total = 0;
    for (size_t i = 0; i < n; i++) total += !mask || (mask & (1u << i));
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (mask && !(mask & (1u << i))) continue;
        const char *sep = k == 0 ? "" : k + 1 == total ? last : ", ";
        len += (size_t)snprintf(buf + len, len < cap ? cap - len : 0, "%s\"%s\"", sep, names[i]);
        k++;
    }
    return buf;
}

const kd_cfg_key *kd_cfg_find(const kd_cfg_section *sec, const char *name) {
    for (size_t i = 0; i < sec->n; i++)
        if (strcmp(sec->keys[i].name, name) == 0) return &sec->keys[i];
    return NULL;
}

const kd_cfg_key *kd_cfg_selector(const kd_cfg_section *sec) {
    for (size_t i = 0; i < sec->n; i++)
        if (sec->keys[i].flags & CFG_SELECTOR) return &sec->keys[i];
    return NULL;
}

kd_status kd_cfg_unknown_key(kd_cfg_ctx *p, const char *path, const char *ov, const char *key,
                             const kd_cfg_section *sec) {
    const char *names[32];
    char list[512];
    size_t n = 0, len = 0;
    list[0] = '\0';
    for (size_t i = 0; i < sec->n && n < sizeof names / sizeof names[0]; i++) {
        names[n++] = sec->keys[i].name;
        len += (size_t)snprintf(list + len, len < sizeof list ? sizeof list - len : 0, "%s%s",
                                i ? ", " : "", sec->keys[i].name);
    }
    const char *near = kd_suggest(key, names, n);
    if (near) return kd_cfg_fail_set(p, path, ov, "unknown key (did you mean \"%s\"?)", near);
    return kd_cfg_fail_set(p, path, ov, "unknown key (known keys here: %s)", list);
}

kd_status kd_cfg_check_keys(kd_cfg_ctx *p, const cJSON *obj, const kd_cfg_section *sec,
                            const char *path) {
    char buf[KD_CFG_JPATH_MAX];
    for (const cJSON *c = obj->child; c; c = c->next) {
        for (const cJSON *d = c->next; d; d = d->next)
            if (strcmp(c->string, d->string) == 0)
                return kd_cfg_fail(p, kd_cfg_join(buf, path, c->string), "duplicate key");
        if (!kd_cfg_find(sec, c->string))
            return kd_cfg_unknown_key(p, kd_cfg_join(buf, path, c->string), NULL, c->string, sec);
    }
    return KD_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Typed values. */

static int in_range(const kd_cfg_range *r, double x) {
    return isfinite(x) && (r->lo_open ? x > r->lo : x >= r->lo) &&
           (r->hi_open ? x < r->hi : x <= r->hi) && (!r->integer || x == floor(x));
}

void kd_cfg_store_number(char *base, const kd_cfg_key *k, double x) {
    void *at = base + k->off;
    switch (k->store) {
    case CFG_FLOAT: *(float *)at = (float)x; break;
    case CFG_DOUBLE: *(double *)at = x; break;
    case CFG_SIZE: *(size_t *)at = (size_t)x; break;
    case CFG_U64: *(uint64_t *)at = (uint64_t)x; break;
    case CFG_INT: *(int *)at = (int)x; break;
    }
}

double kd_cfg_load_number(const char *base, const kd_cfg_key *k) {
    const void *at = base + k->off;
    switch (k->store) {
    case CFG_FLOAT: return *(const float *)at;
    case CFG_DOUBLE: return *(const double *)at;
    case CFG_SIZE: return (double)*(const size_t *)at;
    case CFG_U64: return (double)*(const uint64_t *)at;
    case CFG_INT: return *(const int *)at;
    }
    return 0;
}

/* A value that passes the range as a double but not once stored as a float (1e-49 is > 0, but
 * 0 in single precision; 1e39 becomes infinity): the message says so, since the number the
 * user wrote looks right. "" when the float is fine too. */
static const char *float_note(const kd_cfg_range *r, double x, int as_float, char *buf,
                              size_t cap) {
    buf[0] = '\0';
    if (as_float && in_range(r, x) && !in_range(r, (double)(float)x))
        snprintf(buf, cap, " (%g in single precision)", (double)(float)x);
    return buf;
}

kd_status kd_cfg_get_number(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v, double *out) {
    char got[64], note[64];
    const int as_float = k->store == CFG_FLOAT;
    if (!cJSON_IsNumber(v) || !in_range(k->range, v->valuedouble) ||
        (as_float && !in_range(k->range, (double)(float)v->valuedouble)))
        return kd_cfg_fail_key(s, k, "expected %s, got %s%s", k->range->desc,
                               kd_cfg_describe(v, got, sizeof got),
                               cJSON_IsNumber(v) ? float_note(k->range, v->valuedouble, as_float,
                                                              note, sizeof note) : "");
    *out = v->valuedouble;
    return KD_OK;
}

kd_status kd_cfg_get_string(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v, char *out,
                            size_t cap) {
    char got[64];
    if (!cJSON_IsString(v) || !v->valuestring[0])
        return kd_cfg_fail_key(s, k, "expected a non-empty string, got %s",
                               kd_cfg_describe(v, got, sizeof got));
    size_t len = strlen(v->valuestring);
    if (len >= cap) return kd_cfg_fail_key(s, k, "too long (%zu bytes; at most %zu)", len, cap - 1);
    memcpy(out, v->valuestring, len + 1);
    return KD_OK;
}

static kd_status get_enum(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v, int *out) {
    char got[64], list[256], hint[96] = "";
    size_t n;
    const char *const *names = k->names(&n);
    if (cJSON_IsString(v))
        for (size_t i = 0; i < n; i++)
            if (strcmp(v->valuestring, names[i]) == 0) {
                *out = (int)i;
                return KD_OK;
            }
    const char *near = cJSON_IsString(v) ? kd_suggest(v->valuestring, names, n) : NULL;
    if (near) snprintf(hint, sizeof hint, " (did you mean \"%s\"?)", near);
    return kd_cfg_fail_key(s, k, "expected one of %s, got %s%s",
                           kd_cfg_list(list, sizeof list, names, n, 0, ", "),
                           kd_cfg_describe(v, got, sizeof got), hint);
}

/* A number within the range also as a float (the values are stored as floats). */
static int float_in_range(const kd_cfg_range *r, const cJSON *v) {
    return cJSON_IsNumber(v) && in_range(r, v->valuedouble) &&
           in_range(r, (double)(float)v->valuedouble);
}

kd_status kd_cfg_get_floats(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v, int *n_out) {
    char path[KD_CFG_JPATH_MAX], sub[KD_CFG_JPATH_MAX + 16], got[64], note[64] = "";
    float *out = (float *)(s->base + k->off);
    const char *want = k->range->desc;
    *n_out = 0;
    if (!v) return KD_OK;
    kd_cfg_key_path(s, k, path);
    if (cJSON_IsArray(v)) {
        int n = cJSON_GetArraySize(v);
        if (n < 1 || (size_t)n > k->cap)
            return kd_cfg_fail(s->p, path, "expected 1 to %zu values (one per channel), got %d",
                               k->cap, n);
        int i = 0;
        for (const cJSON *e = v->child; e; e = e->next, i++) {
            snprintf(sub, sizeof sub, "%s[%d]", path, i);
            if (!float_in_range(k->range, e))
                return kd_cfg_fail(s->p, sub, "expected %s, got %s%s", want,
                                   kd_cfg_describe(e, got, sizeof got),
                                   cJSON_IsNumber(e) ? float_note(k->range, e->valuedouble, 1,
                                                                  note, sizeof note) : "");
            out[i] = (float)e->valuedouble;
        }
        *n_out = n;
        return KD_OK;
    }
    if (!float_in_range(k->range, v))
        return kd_cfg_fail(s->p, path, "expected %s or an array of them (one per channel), got "
                           "%s%s", want, kd_cfg_describe(v, got, sizeof got),
                           cJSON_IsNumber(v) ? float_note(k->range, v->valuedouble, 1, note,
                                                          sizeof note) : "");
    out[0] = (float)v->valuedouble;
    *n_out = 1;
    return KD_OK;
}

kd_status kd_cfg_resolve(kd_cfg_sec *s, const kd_cfg_key *k, const char *raw, const char *base,
                         char *out) {
    kd_err e;
    kd_status st = kd_path_resolve(out, KD_PATH_MAX, base, raw, &e);
    if (st == KD_EIO) return kd_cfg_oom(s->p);
    if (st) return kd_cfg_fail_key(s, k, "%s", e.msg);
    return KD_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Keys and sections. */

kd_status kd_cfg_parse_value(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    char *at = s->base + k->off, got[64], path[KD_CFG_JPATH_MAX], raw[KD_PATH_MAX];
    kd_status st = KD_OK;
    if (k->kind == CFG_SECTION) {
        kd_cfg_key_path(s, k, path);
        if (v && !cJSON_IsObject(v))
            return kd_cfg_fail(s->p, path, "expected an object (a section), got %s",
                               kd_cfg_describe(v, got, sizeof got));
        if (v && (st = kd_cfg_check_keys(s->p, v, k->sub, path))) return st;
        if (!v && k->required) return kd_cfg_fail(s->p, path, "missing (%s)", k->required);
        if (!v && k->has) {  /* an optional section that is absent: its defaults only */
            if (k->sub->init) k->sub->init(at);
            return KD_OK;
        }
        return kd_cfg_parse_section(s->p, k->sub, v, path, k->name, at);
    }
    if (!v) return k->required ? kd_cfg_fail_key(s, k, "missing (%s)", k->required) : KD_OK;
    double x = 0;
    int n = 0;
    switch (k->kind) {
    case CFG_NUMBER:
        if (!(st = kd_cfg_get_number(s, k, v, &x))) kd_cfg_store_number(s->base, k, x);
        break;
    case CFG_BOOL:
        if (!cJSON_IsBool(v))
            return kd_cfg_fail_key(s, k, "expected true or false, got %s",
                                   kd_cfg_describe(v, got, sizeof got));
        *(int *)at = cJSON_IsTrue(v);
        break;
    case CFG_STRING: st = kd_cfg_get_string(s, k, v, at, k->cap); break;
    case CFG_PATH:
        KD_ASSERT(k->cap == KD_PATH_MAX);
        if (!(st = kd_cfg_get_string(s, k, v, raw, sizeof raw)))
            st = kd_cfg_resolve(s, k, raw, (k->flags & CFG_CWD) ? s->p->cwd : s->p->base_dir, at);
        break;
    case CFG_ENUM: st = get_enum(s, k, v, (int *)at); break;
    case CFG_FLOATS:
        if (!(st = kd_cfg_get_floats(s, k, v, &n))) *(int *)(s->base + k->count - 1) = n;
        break;
    case CFG_JSON: {
        cJSON *dup = cJSON_Duplicate(v, 1);
        if (!dup) return kd_cfg_oom(s->p);
        *(cJSON **)at = dup;
        break;
    }
    case CFG_SECTION:
    case CFG_CUSTOM: KD_ASSERT(!"a custom key needs a parse hook"); break;
    }
    if (!st && (k->flags & CFG_ALT_PREV) && cJSON_GetObjectItemCaseSensitive(s->obj, k[-1].name))
        return kd_cfg_fail_key(s, k, "give %s or %s, not both", k->name, k[-1].name);
    return st;
}

/* Every key given must be used by the section's variant (its selector's value). */
static kd_status check_variants(kd_cfg_sec *s) {
    const kd_cfg_key *sel = kd_cfg_selector(s->sec);
    char note[160], list[128];
    size_t n;
    const char *const *names = sel->names(&n);
    KD_ASSERT(s->variant >= 0 && (size_t)s->variant < n);
    for (const cJSON *e = s->obj ? s->obj->child : NULL; e; e = e->next) {
        const kd_cfg_key *k = kd_cfg_find(s->sec, e->string);
        if (!k->variants || (k->variants & (1u << s->variant))) continue;
        note[0] = '\0';
        if (k->unused_note) snprintf(note, sizeof note, " (%s)", k->unused_note);
        else if (s->sec->flags & CFG_LIST_USERS)
            snprintf(note, sizeof note, " (only by %s)",
                     kd_cfg_list(list, sizeof list, names, n, k->variants, " and "));
        const char *noun = (s->sec->flags & CFG_NOUN_IS_SECTION) ? s->name : sel->name;
        return kd_cfg_fail_key(s, k, "not used by %s \"%s\"%s", noun, names[s->variant], note);
    }
    return KD_OK;
}

kd_status kd_cfg_parse_section(kd_cfg_ctx *p, const kd_cfg_section *sec, const cJSON *obj,
                               const char *path, const char *name, char *base) {
    kd_cfg_sec s = {p, sec, obj, path, name, base, -1};
    kd_status st;
    if (sec->init) sec->init(base);
    for (size_t i = 0; i < sec->n; i++) {
        const kd_cfg_key *k = &sec->keys[i];
        if (!(k->flags & CFG_DEFAULT)) continue;
        if (k->kind == CFG_NUMBER) kd_cfg_store_number(base, k, k->def);
        else *(int *)(base + k->off) = (int)k->def;  /* bools and enums */
    }
    for (int phase = -1; phase <= 1; phase++)
        for (size_t i = 0; i < sec->n; i++) {
            const kd_cfg_key *k = &sec->keys[i];
            if (k->phase != phase) continue;
            const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, k->name) : NULL;
            if (v && k->has) *(int *)(base + k->has - 1) = 1;
            if ((st = k->parse ? k->parse(&s, k, v) : kd_cfg_parse_value(&s, k, v))) return st;
            if ((k->flags & CFG_SELECTOR) && (v || (k->flags & CFG_DEFAULT)))
                s.variant = *(const int *)(base + k->off);
            if ((k->flags & CFG_CHECK_VARIANTS) && (st = check_variants(&s))) return st;
        }
    return KD_OK;
}
