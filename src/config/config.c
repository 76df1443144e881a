/* config.c - the run configuration's entry points: read the file, parse the JSON (errors name
 * line and column), apply --set overrides, run the table-driven reader (parse.c over schema.c)
 * and keep the resolved config (write.c). Keys: configs/README.md. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config_impl.h"
#include "kd_path.h"

#define CONFIG_MAX_BYTES ((size_t)16 << 20)

static void line_col(const char *text, size_t off, size_t *line, size_t *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') (*line)++, *col = 1;
        else (*col)++;
    }
}

static kd_status parse_json(kd_cfg_ctx *p, const char *text, size_t len, cJSON **out) {
    const char *end = NULL;
    size_t line, col, deep;
    *out = NULL;
    if (kd_json_depth_check(text, len, KD_JSON_MAX_DEPTH, &deep)) {
        line_col(text, deep, &line, &col);
        return kd_err_set(p->err, KD_EUSAGE, "%s: line %zu, column %zu: JSON nested deeper than "
                          "%d levels", p->file, line, col, KD_JSON_MAX_DEPTH);
    }
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
    kd_cfg_ctx *p = calloc(1, sizeof *p);
    memset(c, 0, sizeof *c);
    if (!p) return kd_err_set(err, KD_EIO, "out of memory");
    p->file = path && path[0] ? path : "config";
    p->err = err;
    p->overrides = overrides;
    p->n_overrides = n_overrides;
    p->c = c;
    if (!getcwd(p->cwd, sizeof p->cwd)) {
        st = kd_err_set(err, KD_EIO, "cannot get the current directory: %s", strerror(errno));
        goto cleanup;
    }
    if (base_dir && base_dir[0]) {
        kd_err e;
        if ((st = kd_path_resolve(p->base_dir, sizeof p->base_dir, p->cwd, base_dir, &e))) {
            st = st == KD_EIO ? kd_cfg_oom(p) : kd_cfg_fail(p, "", "%s", e.msg);
            goto cleanup;
        }
    } else {
        memcpy(p->base_dir, p->cwd, sizeof p->base_dir);
    }
    if (path) snprintf(c->path, sizeof c->path, "%s", path);
    snprintf(c->name, sizeof c->name, "%s", path && path[0] ? kd_path_basename(path) : "config");
    size_t nl = strlen(c->name);
    if (nl > 5 && strcmp(c->name + nl - 5, ".json") == 0) c->name[nl - 5] = '\0';

    if ((st = parse_json(p, text, len, &root))) goto cleanup;
    if (!cJSON_IsObject(root)) {
        st = kd_cfg_fail(p, "", "expected a JSON object at the top level, got %s",
                         kd_cfg_describe(root, got, sizeof got));
        goto cleanup;
    }
    for (size_t i = 0; i < n_overrides; i++)
        if ((st = kd_cfg_apply_override(p, root, overrides[i]))) goto cleanup;
    if ((st = kd_cfg_check_keys(p, root, &kd_cfg_root, ""))) goto cleanup;
    if ((st = kd_cfg_parse_section(p, &kd_cfg_root, root, "", NULL, (char *)c))) goto cleanup;
    if (!(c->resolved = kd_cfg_write_resolved(c))) st = kd_cfg_oom(p);
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
    char dirbuf[KD_PATH_MAX];
    if (kd_path_dirname(dirbuf, sizeof dirbuf, path) != 0) {
        st = kd_err_set(err, KD_EUSAGE, "%s: path too long", path);
        goto cleanup;
    }
    dir = realpath(dirbuf, NULL);
    if (!dir) {
        st = errno == ENOMEM ? kd_err_set(err, KD_EIO, "%s: out of memory", path)
                             : kd_err_set(err, KD_EUSAGE, "%s: cannot resolve its directory: %s",
                                          path, strerror(errno));
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
    kd_preprocess_free(&c->pp);
    cJSON_Delete(c->layers);
    for (size_t i = 0; i < KD_MAX_TEACHERS; i++) cJSON_Delete(c->teachers[i].layers);
    cJSON_Delete(c->classes);
    cJSON_Delete(c->resolved);
    memset(c, 0, sizeof *c);
}

/* Replaces every whole number of 1e15 or more (below 2^53, where doubles hold integers exactly)
 * that 15 significant digits cannot hold by its exact digits. cJSON prints 15 significant digits whenever they read back within a
 * relative epsilon, which turned seed 9007199254740991 into 9.00719925474099e+15, and a rerun
 * from config.json into a run with another seed. */
static int exact_big_integers(cJSON *item) {
    for (cJSON *it = item; it; it = it->next) {
        if (it->child && !exact_big_integers(it->child)) return 0;
        double v = it->valuedouble;
        if (!cJSON_IsNumber(it) || fabs(v) < 1e15 || fabs(v) >= 9007199254740992.0 || v != floor(v))
            continue;
        /* Only where cJSON's 15 digits would lose it: a value that those digits give back
         * exactly prints as cJSON prints it, so writing a reloaded config gives the same text. */
        char digits[32];
        snprintf(digits, sizeof digits, "%1.15g", v);
        if (strtod(digits, NULL) == v) continue;
        snprintf(digits, sizeof digits, "%.0f", v);
        char *raw = cJSON_malloc(strlen(digits) + 1);  /* freed by cJSON_Delete */
        if (!raw) return 0;
        memcpy(raw, digits, strlen(digits) + 1);
        it->type = cJSON_Raw;
        it->valuestring = raw;
    }
    return 1;
}

char *kd_config_to_json(const kd_config *c) {
    if (!c || !c->resolved) return NULL;
    cJSON *copy = cJSON_Duplicate(c->resolved, 1);
    char *text = copy && exact_big_integers(copy) ? cJSON_Print(copy) : NULL;
    cJSON_Delete(copy);
    return text;
}

float kd_config_teacher_weight(const kd_config *c, size_t i) {
    double sum = 0.0;
    for (size_t k = 0; k < c->n_teachers; k++) sum += c->teachers[k].weight;
    KD_ASSERT(i < c->n_teachers && sum > 0.0);
    return (float)(c->teachers[i].weight / sum);
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
