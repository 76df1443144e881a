/* preprocess.c - data.preprocess.mean/std given with one value per feature (the sample's element
 * count, more than the KD_MAX_CHANNELS per-channel values the struct holds inline): parsed into
 * the config's per-feature statistics and written back from them. Which meaning a short array
 * has (per channel or per feature) is decided by the data when it opens (src/data/dataset.c). */
#include <math.h>
#include <stdlib.h>

#include "config_impl.h"

/* Is v an array too long for the per-channel values? */
static int is_long(const cJSON *v) {
    return cJSON_IsArray(v) && cJSON_GetArraySize(v) > KD_MAX_CHANNELS;
}

kd_status kd_cfg_pp_features(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v, int *handled) {
    kd_preprocess *pp = (kd_preprocess *)s->base;
    const int is_std = k->name[0] == 's';
    char got[64];
    *handled = is_long(v) || (is_std && pp->n_features);
    if (!*handled) return KD_OK;
    if (!v) return kd_cfg_fail_key(s, k, "missing (required with mean)");
    size_t n = (size_t)cJSON_GetArraySize(v);
    if (!is_long(v))
        return kd_cfg_fail_key(s, k, "has %zu value%s but mean has %zu (one per feature)", n,
                               n == 1 ? "" : "s", pp->n_features);
    if (n > KD_MAX_FEATURES)
        return kd_cfg_fail_key(s, k, "expected 1 value, one per channel or one per feature "
                               "(at most %u), got %zu", KD_MAX_FEATURES, n);
    if (is_std && n != pp->n_features)
        return pp->n_features
                   ? kd_cfg_fail_key(s, k, "has %zu values but mean has %zu", n, pp->n_features)
                   : kd_cfg_fail_key(s, k, "%zu values, but mean has %d (give as many)", n,
                                     pp->n_channels);
    if (!is_std) {
        free(pp->feat);
        pp->n_channels = 0;
        pp->n_features = 0;
        if (!(pp->feat = calloc(2 * n, sizeof *pp->feat))) return kd_cfg_oom(s->p);
        pp->n_features = n;
    }
    size_t i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        double x = cJSON_IsNumber(e) ? e->valuedouble : NAN;
        if (!isfinite(x) || fabs(x) > 3.4e38 || (is_std && !((float)x > 0)))
            return kd_cfg_fail_key(s, k, "[%zu]: expected %s, got %s", i,
                                   is_std ? "a number > 0" : "a number",
                                   kd_cfg_describe(e, got, sizeof got));
        pp->feat[(is_std ? n : 0) + i] = (float)x;
    }
    return KD_OK;
}

kd_status kd_cfg_parse_pp_mean(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    int handled = 0;
    kd_status st = kd_cfg_pp_features(s, k, v, &handled);
    return handled ? st : kd_cfg_parse_value(s, k, v);
}

int kd_cfg_write_pp_values(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    const kd_preprocess *pp = (const kd_preprocess *)o->base;
    if (!pp->n_features) return kd_cfg_write_value(o, k, item);
    const float *x = pp->feat + (k->name[0] == 's' ? pp->n_features : 0);
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < pp->n_features; i++) {
        cJSON *e = cJSON_CreateNumber(kd_float_shortest(x[i]));
        if (!e || !cJSON_AddItemToArray(a, e)) {
            cJSON_Delete(e);
            cJSON_Delete(a);
            a = NULL;
        }
    }
    *item = a;
    return a ? 0 : -1;
}
