/* override.c - --set PATH=VALUE: applied to the config's JSON before validation, so an
 * override gets the checks and messages a value in the file would. Paths are walked through the
 * key table (unknown keys get a suggestion); inside a layer list anything goes (kd_model_init
 * checks layers). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_impl.h"

typedef struct {
    char *buf;     /* NULL: only count */
    size_t len;
    int i, n;      /* keys seen, keys in all */
} indexed_list;

static int add_indexed(const char *path, const kd_cfg_key *k, const kd_cfg_section *sec,
                       size_t off, void *user) {
    indexed_list *l = user;
    (void)sec, (void)off;
    if (!(k->flags & CFG_INDEXED)) return 0;
    const char *sep = l->i == 0 ? "" : l->i == l->n - 1 ? " and " : ", ";
    l->i++;
    if (l->buf && l->len < 256)
        l->len += (size_t)snprintf(l->buf + l->len, 256 - l->len, "%s%s", sep, path);
    return 0;
}

/* "model.layers, teacher.layers and teacher.ensemble": the keys [N] may index. */
static const char *indexed_keys(char buf[256]) {
    indexed_list count = {NULL, 0, 0, 0};
    kd_cfg_walk(add_indexed, &count);
    indexed_list l = {buf, 0, 0, count.i};
    buf[0] = '\0';
    kd_cfg_walk(add_indexed, &l);
    return buf;
}

/* Puts value at cur[name] (or removes the key when value is JSON null). Takes value. */
static kd_status set_key(kd_cfg_ctx *p, cJSON *cur, const char *name, cJSON *value) {
    if (cJSON_IsNull(value)) {
        cJSON_DeleteItemFromObjectCaseSensitive(cur, name);
        cJSON_Delete(value);
        return KD_OK;
    }
    int ok = cJSON_GetObjectItemCaseSensitive(cur, name)
                 ? cJSON_ReplaceItemInObjectCaseSensitive(cur, name, value)
                 : cJSON_AddItemToObject(cur, name, value);
    if (!ok) {
        cJSON_Delete(value);
        return kd_cfg_oom(p);
    }
    return KD_OK;
}

/* "PATH=VALUE": the path into spec, the value parsed as JSON (a bare word is a string) into
 * *value. */
static kd_status parse_override(kd_cfg_ctx *p, const char *ov, char spec[KD_CFG_JPATH_MAX],
                                cJSON **value) {
    const char *eq = strchr(ov, '=');
    if (!eq || eq == ov)
        return kd_err_set(p->err, KD_EUSAGE,
                          "%s: --set %s: expected PATH=VALUE (for example optimizer.lr=0.01)",
                          p->file, ov);
    size_t plen = (size_t)(eq - ov);
    if (plen >= KD_CFG_JPATH_MAX)
        return kd_err_set(p->err, KD_EUSAGE, "%s: --set %.64s...: path too long", p->file, ov);
    memcpy(spec, ov, plen);
    spec[plen] = '\0';
    const char *vend = NULL;
    size_t deep;
    /* Deeper than the cap would not parse, and must not become a string value instead. */
    if (kd_json_depth_check(eq + 1, strlen(eq + 1), KD_JSON_MAX_DEPTH, &deep))
        return kd_err_set(p->err, KD_EUSAGE, "%s: --set %.64s: the value is nested deeper than "
                          "%d levels", p->file, ov, KD_JSON_MAX_DEPTH);
    *value = cJSON_ParseWithOpts(eq + 1, &vend, 1);
    if (!*value && !(*value = cJSON_CreateString(eq + 1))) return kd_cfg_oom(p);
    return KD_OK;
}

/* The key name at path checked against the table's section sec: it exists, only a list takes
 * "[N]" (has_index), and only a section or a list is walked into (deeper). *sub and *opaque
 * say what follows: the key's sub-section, and whether it is a list whose entries the table
 * does not describe (a layer list). */
static kd_status check_key(kd_cfg_ctx *p, const char *path, const char *ov, const char *spec,
                           const kd_cfg_section *sec, const char *name, int has_index,
                           int deeper, const kd_cfg_section **sub, int *opaque) {
    char lists[256];
    const kd_cfg_key *k = kd_cfg_find(sec, name);
    if (!k) return kd_cfg_unknown_key(p, path, ov, name, sec);
    int indexed = (k->flags & CFG_INDEXED) != 0;
    if (has_index && !indexed)
        return kd_cfg_fail_set(p, path, ov, "is not a list ([N] only indexes %s)",
                               indexed_keys(lists));
    if (!k->sub && !indexed && deeper)
        return kd_cfg_fail_set(p, path, ov, "is a value, not a section (cannot set %s)", spec);
    *sub = k->sub;
    *opaque = indexed;
    return KD_OK;
}

/* The "[N]" at *br of list: N checked against the list, path extended with it; *br moves to a
 * following "[" or NULL. */
static kd_status index_step(kd_cfg_ctx *p, char *path, size_t cap, const char *ov,
                            const cJSON *list, char **br, int *idx) {
    char *end = NULL, got[64];
    errno = 0;
    unsigned long i = strtoul(*br + 1, &end, 10);
    if (end == *br + 1 || *end != ']' || errno || !isdigit((unsigned char)(*br)[1]) ||
        (end[1] != '\0' && end[1] != '['))
        return kd_cfg_fail_set(p, path, ov, "malformed index (expected name[N])");
    if (!cJSON_IsArray(list))
        return kd_cfg_fail_set(p, path, ov, "is %s, not a list",
                               kd_cfg_describe(list, got, sizeof got));
    int n = cJSON_GetArraySize(list);
    size_t pl = strlen(path);
    snprintf(path + pl, cap - pl, "[%lu]", i);
    if (i >= (unsigned long)n)
        return kd_cfg_fail_set(p, path, ov, "index out of range (the list has %d entries)", n);
    *br = end[1] == '[' ? end + 1 : NULL;
    *idx = (int)i;
    return KD_OK;
}

/* Puts value at list[idx] (or removes the entry when value is JSON null). Takes value. */
static kd_status set_entry(kd_cfg_ctx *p, cJSON *list, int idx, cJSON *value) {
    if (cJSON_IsNull(value)) {
        cJSON_DeleteItemFromArray(list, idx);
        cJSON_Delete(value);
        return KD_OK;
    }
    if (!cJSON_ReplaceItemInArray(list, idx, value)) {
        cJSON_Delete(value);
        return kd_cfg_oom(p);
    }
    return KD_OK;
}

/* Applies "a.b[2].c=value" to the tree. Keys are checked against the table as the path is
 * walked; missing sections are created; [N] indexes an existing list entry. JSON null removes
 * the key. */
kd_status kd_cfg_apply_override(kd_cfg_ctx *p, cJSON *root, const char *ov) {
    char spec[KD_CFG_JPATH_MAX], path[KD_CFG_JPATH_MAX + 64], got[64];
    cJSON *value = NULL;
    kd_status st = parse_override(p, ov, spec, &value);
    if (st) goto cleanup;
    cJSON *cur = root;
    const kd_cfg_section *sec = &kd_cfg_root;
    int opaque = 0;
    path[0] = '\0';
    for (char *s = spec;;) {
        char *dot = strchr(s, '.');
        if (dot) *dot = '\0';
        char *br = strchr(s, '[');
        size_t nlen = br ? (size_t)(br - s) : strlen(s);
        char name[KD_CFG_JPATH_MAX];
        memcpy(name, s, nlen);
        name[nlen] = '\0';
        size_t pl = strlen(path);
        snprintf(path + pl, sizeof path - pl, "%s%s", pl ? "." : "", name);
        if (!name[0]) {
            st = kd_cfg_fail_set(p, path, ov, "empty key in the --set path");
            goto cleanup;
        }
        const kd_cfg_section *next_sec = NULL;
        int next_opaque = opaque;
        if (!opaque && (st = check_key(p, path, ov, spec, sec, name, br != NULL, dot != NULL,
                                       &next_sec, &next_opaque)))
            goto cleanup;
        if (!dot && !br) {
            st = set_key(p, cur, name, value);
            value = NULL;
            break;
        }
        cJSON *child = cJSON_GetObjectItemCaseSensitive(cur, name);
        if (!child && br) {
            st = kd_cfg_fail_set(p, path, ov, "does not exist, so it cannot be indexed");
            goto cleanup;
        }
        if (!child && !(child = cJSON_AddObjectToObject(cur, name))) {
            st = kd_cfg_oom(p);
            goto cleanup;
        }
        while (br) {
            int idx = 0;
            if ((st = index_step(p, path, sizeof path, ov, child, &br, &idx))) goto cleanup;
            if (!br && !dot) {
                st = set_entry(p, child, idx, value);
                value = NULL;
                goto cleanup;
            }
            child = cJSON_GetArrayItem(child, idx);
        }
        if (!cJSON_IsObject(child)) {
            st = kd_cfg_fail_set(p, path, ov, "is %s, not a section (cannot set %s)",
                                 kd_cfg_describe(child, got, sizeof got), spec);
            goto cleanup;
        }
        cur = child;
        sec = next_sec;
        opaque = next_opaque;
        s = dot + 1;
    }
cleanup:
    cJSON_Delete(value);
    return st;
}
