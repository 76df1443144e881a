/* lists.c - config keys whose value is a list of objects of one section (teacher.ensemble,
 * distill.losses): each object parsed and written back with the section's table. */
#include <stdio.h>
#include <string.h>

#include "schema_impl.h"


kd_status kd_cfg_parse_section_list(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v,
                                    const kd_cfg_obj_list *l, size_t *n_out) {
    char path[KD_CFG_JPATH_MAX], sub[KD_CFG_JPATH_MAX + 32], got[64];
    kd_status st;
    kd_cfg_key_path(s, k, path);
    if (!cJSON_IsArray(v))
        return kd_cfg_fail(s->p, path, "expected a list of %ss like %s, got %s", l->noun,
                           l->list_example, kd_cfg_describe(v, got, sizeof got));
    int n = cJSON_GetArraySize(v), i = 0;
    if (n == 0) return kd_cfg_fail(s->p, path, "empty (list at least one %s)", l->noun);
    if (n > l->max)
        return kd_cfg_fail(s->p, path, "at most %d %ss, got %d", l->max, l->noun, n);
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        snprintf(sub, sizeof sub, "%s[%d]", path, i);
        if (!cJSON_IsObject(e))
            return kd_cfg_fail(s->p, sub, "expected a %s object like %s, got %s", l->noun,
                               l->object_example, kd_cfg_describe(e, got, sizeof got));
        if ((st = kd_cfg_check_keys(s->p, e, l->sec, sub)) ||
            (st = kd_cfg_parse_section(s->p, l->sec, e, sub, k->name,
                                       l->base + (size_t)i * l->stride)))
            return st;
    }
    *n_out = (size_t)n;
    return KD_OK;
}

/* The n objects of such a list as a JSON array (*item; -1 when out of memory). */
int kd_cfg_write_section_list(const kd_cfg_out *o, const kd_cfg_section *sec, const char *base,
                              size_t stride, size_t n, cJSON **item) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++) {
        cJSON *obj = cJSON_CreateObject();
        if (!obj || kd_cfg_write_section(sec, o->c, base + i * stride, obj) != 0 ||
            !cJSON_AddItemToArray(a, obj)) {
            cJSON_Delete(obj);
            cJSON_Delete(a);
            return -1;
        }
    }
    *item = a;
    return a ? 0 : -1;
}
