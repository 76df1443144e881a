/* path.c - lexical path helpers (normalise, resolve against a base directory, join, split). */
#include "kd_path.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void kd_path_clean(char *s) {
    size_t n = strlen(s), r = 0, w = 1;
    /* w never passes r: each component written was read with at least one separator before it. */
    while (r < n) {
        while (r < n && s[r] == '/') r++;
        size_t b = r;
        while (r < n && s[r] != '/') r++;
        size_t len = r - b;
        if (len == 0 || (len == 1 && s[b] == '.')) continue;
        if (len == 2 && s[b] == '.' && s[b + 1] == '.') {
            while (w > 1 && s[w - 1] != '/') w--;
            if (w > 1) w--;
            continue;
        }
        if (w > 1) s[w++] = '/';
        memmove(s + w, s + b, len);
        w += len;
    }
    s[0] = '/';
    s[w] = '\0';
}

kd_status kd_path_resolve(char *out, size_t cap, const char *base, const char *in, kd_err *err) {
    /* Joined first and cleaned after: "../x" may shorten a base that alone would not fit. */
    size_t need = strlen(in) + strlen(base) + 2;
    char *tmp = malloc(need);
    if (!tmp) return kd_err_set(err, KD_EIO, "out of memory");
    if (in[0] == '/') snprintf(tmp, need, "%s", in);
    else snprintf(tmp, need, "%s/%s", base, in);
    kd_path_clean(tmp);
    size_t len = strlen(tmp);
    kd_status st = KD_OK;
    if (len >= cap) st = kd_err_set(err, KD_EUSAGE, "path too long after resolving (%zu bytes)", len);
    else memcpy(out, tmp, len + 1);
    free(tmp);
    return st;
}

int kd_path_join(char *out, size_t cap, const char *dir, const char *name) {
    size_t dl = strlen(dir);
    const char *sep = dl && dir[dl - 1] == '/' ? "" : "/";
    int n = snprintf(out, cap, "%s%s%s", dir, sep, name);
    return n >= 0 && (size_t)n < cap ? 0 : -1;
}

int kd_path_dirname(char *out, size_t cap, const char *path) {
    const char *slash = strrchr(path, '/');
    int n;
    if (!slash) n = snprintf(out, cap, ".");
    else if (slash == path) n = snprintf(out, cap, "/");
    else n = snprintf(out, cap, "%.*s", (int)(slash - path), path);
    return n >= 0 && (size_t)n < cap ? 0 : -1;
}

const char *kd_path_basename(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

const char *kd_path_label(const char *const *paths, size_t n, size_t k) {
    const char *p = paths[k], *base = kd_path_basename(p);
    for (size_t j = 0; j < n; j++) {
        if (j == k || strcmp(kd_path_basename(paths[j]), base) != 0) continue;
        if (base == p) return base; /* no folder to add */
        const char *s = base - 1;   /* the '/' before base */
        while (s > p && s[-1] != '/') s--;
        return s;
    }
    return base;
}

int kd_path_has_suffix(const char *path, const char *suffix, int fold_case) {
    size_t a = strlen(path), b = strlen(suffix);
    if (a < b) return 0;
    const char *tail = path + a - b;
    return fold_case ? strcasecmp(tail, suffix) == 0 : strcmp(tail, suffix) == 0;
}
