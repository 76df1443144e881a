/* ckpt_names.c - a checkpoint's tensor names against a model's: the prefix every tensor of a
 * wrapped PyTorch module carries ("module." from DataParallel, "net." from a wrapper class),
 * stripped only when it is common to all of them, and the names found, listed when one the
 * model needs is missing. */
#include <stdio.h>
#include <string.h>

#include "checkpoint_impl.h"

int kd_ckpt_common_prefix(const kd_st_file *f, const kd_model *m, char *out, size_t cap) {
    out[0] = '\0';
    if (f->n_tensors == 0 || m->n_tensors == 0 || kd_st_find(f, m->tensors[0].name)) return 0;
    /* The longest prefix of every name, cut back to its last '.'. */
    const char *first = f->tensors[0].name;
    size_t len = strlen(first);
    for (size_t i = 1; i < f->n_tensors; i++) {
        const char *s = f->tensors[i].name;
        size_t k = 0;
        while (k < len && s[k] == first[k]) k++;
        len = k;
    }
    while (len > 0 && first[len - 1] != '.') len--;
    if (len == 0 || len >= cap) return 0;
    char name[512];
    if (snprintf(name, sizeof name, "%.*s%s", (int)len, first, m->tensors[0].name) >=
            (int)sizeof name || !kd_st_find(f, name))
        return 0;
    memcpy(out, first, len);
    out[len] = '\0';
    return 1;
}

void kd_ckpt_names_found(const kd_st_file *f, char *out, size_t cap) {
    size_t used = 0, shown = 0;
    out[0] = '\0';
    for (size_t i = 0; i < f->n_tensors && used + 64 < cap && shown < 12; i++, shown++) {
        int n = snprintf(out + used, cap - used, "%s%.48s", i ? ", " : "", f->tensors[i].name);
        if (n > 0) used += (size_t)n;
    }
    if (f->n_tensors == 0)
        snprintf(out, cap, "none");
    else if (shown < f->n_tensors)
        snprintf(out + used, cap - used, ", ... (%zu in all)", f->n_tensors);
}
