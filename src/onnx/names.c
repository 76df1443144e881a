/* names.c - the one mapping from ONNX value names to legal, unique distill layer names
 * (documented in kd_onnx.h and configs/README.md). */
#include <stdlib.h>
#include <string.h>

#include "onnx_impl.h"

uint64_t kd_onnx_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;  /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int legal_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.';
}

/* Whether the first component of s would be refused by the graph's name rules (all digits, or
 * a prefix distill keeps) or s is "input". */
static int needs_prefix(const char *s) {
    static const char *const reserved[] = {"optim", "train", "adapters", NULL};
    const size_t first = strcspn(s, ".");
    if (first == 0 || strspn(s, "0123456789") >= first || !strcmp(s, "input")) return 1;
    for (const char *const *p = reserved; *p; p++)
        if (strlen(*p) == first && !strncmp(s, *p, first)) return 1;
    return 0;
}

void kd_onnx_name(const char *onnx, char *out, size_t cap) {
    char buf[KD_LAYER_NAME_MAX + 2];
    size_t n = 0;
    if (onnx[0] == '/') onnx++;
    if (needs_prefix(onnx)) buf[n++] = '_';
    for (const char *p = onnx; *p && n < KD_LAYER_NAME_MAX; p++) {
        char c = legal_char(*p) ? *p : '_';
        /* A '.' that would leave an empty component (leading, doubled) reads as '_'. */
        if (c == '.' && (n == 0 || buf[n - 1] == '.')) c = '_';
        buf[n++] = c;
    }
    if (n && buf[n - 1] == '.') buf[n - 1] = '_';  /* trailing, also after shortening */
    if (n == 0) buf[n++] = '_';
    buf[n] = '\0';
    snprintf(out, cap, "%s", buf);
}

/* The slot of s in t->used: where it is, or the empty slot where it would go. */
static size_t used_slot(const kd_onnx_tr *t, const char *s) {
    size_t k = (size_t)kd_onnx_hash(s) & (t->n_slot - 1);
    while (t->used[k] && strcmp(t->used[k], s)) k = (k + 1) & (t->n_slot - 1);
    return k;
}

char *kd_onnx_tr_name(kd_onnx_tr *t, const char *onnx) {
    char base[KD_LAYER_NAME_MAX + 2], name[KD_LAYER_NAME_MAX + 2];
    kd_onnx_name(onnx, base, sizeof base);
    snprintf(name, sizeof name, "%s", base);
    for (unsigned k = 2; t->used[used_slot(t, name)]; k++) {
        char suffix[16];
        const int ns = snprintf(suffix, sizeof suffix, "_%u", k);
        size_t keep = strlen(base);
        if (keep + (size_t)ns > KD_LAYER_NAME_MAX) keep = KD_LAYER_NAME_MAX - (size_t)ns;
        snprintf(name, sizeof name, "%.*s%s", (int)keep, base, suffix);
    }
    char *s = strdup(name);
    if (s) t->used[used_slot(t, name)] = s;
    return s;
}
