/* write.c - the resolved config as JSON, written from the key table: every default filled in,
 * every path absolute, floats as their shortest exact decimal (0.01, not 0.009999999776...),
 * keys the variant does not use left out, so loading it again gives the same config. */
#include <stdlib.h>

#include "config_impl.h"

/* 1 if k's value is zero, empty or absent (a section: all of its values). */
static int value_is_zero(const char *base, const kd_cfg_key *k) {
    const char *at = base + k->off;
    switch (k->kind) {
    case CFG_NUMBER: return kd_cfg_load_number(base, k) == 0;
    case CFG_BOOL:
    case CFG_ENUM: return *(const int *)at == 0;
    case CFG_STRING:
    case CFG_PATH: return at[0] == '\0';
    case CFG_FLOATS: return *(const int *)(base + k->count - 1) == 0;
    case CFG_JSON: return *(cJSON *const *)at == NULL;
    case CFG_SECTION:
        for (size_t i = 0; i < k->sub->n; i++)
            if (!value_is_zero(at, &k->sub->keys[i])) return 0;
        return 1;
    case CFG_CUSTOM: return 0;
    }
    return 0;
}

int kd_cfg_write_value(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    const char *at = o->base + k->off;
    *item = NULL;
    switch (k->kind) {
    case CFG_NUMBER: {
        double x = kd_cfg_load_number(o->base, k);
        *item = cJSON_CreateNumber(k->store == CFG_FLOAT ? kd_float_shortest((float)x) : x);
        break;
    }
    case CFG_BOOL: *item = cJSON_CreateBool(*(const int *)at); break;
    case CFG_STRING:
    case CFG_PATH: *item = cJSON_CreateString(at); break;
    case CFG_ENUM: {
        size_t n;
        const char *const *names = k->names(&n);
        int i = *(const int *)at;
        KD_ASSERT(i >= 0 && (size_t)i < n);
        *item = cJSON_CreateString(names[i]);
        break;
    }
    case CFG_FLOATS: {
        int n = *(const int *)(o->base + k->count - 1);
        if (n == 0) return 0;
        cJSON *a = cJSON_CreateArray();
        for (int i = 0; a && i < n; i++) {
            cJSON *x = cJSON_CreateNumber(kd_float_shortest(((const float *)at)[i]));
            if (!x || !cJSON_AddItemToArray(a, x)) {
                cJSON_Delete(x);
                cJSON_Delete(a);
                a = NULL;
            }
        }
        *item = a;
        break;
    }
    case CFG_SECTION: {
        cJSON *s = cJSON_CreateObject();
        if (s && kd_cfg_write_section(k->sub, o->c, at, s) != 0) {
            cJSON_Delete(s);
            s = NULL;
        }
        *item = s;
        break;
    }
    case CFG_JSON: {
        const cJSON *j = *(cJSON *const *)at;
        if (!j) return 0;
        *item = cJSON_Duplicate(j, 1);
        break;
    }
    case CFG_CUSTOM: KD_ASSERT(!"a custom key needs a write hook"); break;
    }
    return *item ? 0 : -1;
}

int kd_cfg_write_section(const kd_cfg_section *sec, const kd_config *c, const char *base,
                         cJSON *obj) {
    kd_cfg_out o = {c, base, -1};
    const kd_cfg_key *sel = kd_cfg_selector(sec);
    if (sel) o.variant = *(const int *)(base + sel->off);
    int prev_written = 0;
    for (size_t i = 0; i < sec->n; i++) {
        const kd_cfg_key *k = &sec->keys[i];
        int skip = (k->variants && !(k->variants & (1u << o.variant))) ||
                   (k->has && !*(const int *)(base + k->has - 1)) ||
                   ((k->flags & CFG_NONZERO) && value_is_zero(base, k)) ||
                   ((k->flags & CFG_ALT_PREV) && prev_written);
        prev_written = 0;
        if (skip) continue;
        cJSON *item = NULL;
        if ((k->write ? k->write(&o, k, &item) : kd_cfg_write_value(&o, k, &item)) != 0) return -1;
        if (!item) continue;
        if (!cJSON_AddItemToObject(obj, k->name, item)) {
            cJSON_Delete(item);
            return -1;
        }
        prev_written = 1;
    }
    return 0;
}

cJSON *kd_cfg_write_resolved(const kd_config *c) {
    cJSON *root = cJSON_CreateObject();
    if (root && kd_cfg_write_section(&kd_cfg_root, c, (const char *)c, root) != 0) {
        cJSON_Delete(root);
        root = NULL;
    }
    return root;
}
