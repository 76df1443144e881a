/* ckpt_preprocess.c - the "preprocess" metadata of a checkpoint, written and read back:
 * {"scale", "mean", "std", "flatten"} with one mean/std per channel, or with "per_feature": true
 * one per value of the flattened sample (data.preprocess.standardize), so every export and
 * every reader applies the statistics the model was trained with. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_impl.h"
#include "kd_dtype.h"

char *kd_ckpt_preprocess_json(const kd_preprocess *pp) {
    char *out = NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON *mean = cJSON_AddArrayToObject(o, "mean"), *std = cJSON_AddArrayToObject(o, "std");
    if (!cJSON_AddNumberToObject(o, "scale", kd_float_shortest(pp->scale)) || !mean || !std ||
        !cJSON_AddBoolToObject(o, "flatten", pp->flatten != 0) ||
        (pp->n_features && !cJSON_AddBoolToObject(o, "per_feature", 1)))
        goto cleanup;
    const size_t n = pp->n_features ? pp->n_features : (size_t)pp->n_channels;
    for (size_t c = 0; c < n && (pp->n_features || c < KD_MAX_CHANNELS); c++) {
        float m = pp->n_features ? pp->feat[c] : pp->mean[c];
        float s = pp->n_features ? pp->feat[n + c] : pp->std[c];
        if (!cJSON_AddItemToArray(mean, cJSON_CreateNumber(kd_float_shortest(m))) ||
            !cJSON_AddItemToArray(std, cJSON_CreateNumber(kd_float_shortest(s))))
            goto cleanup;
    }
    out = cJSON_PrintUnformatted(o);
cleanup:
    cJSON_Delete(o);
    return out;
}

/* The n means and stds (std > 0, both finite) into m and s; -1 naming the first bad index. */
static long read_pairs(const cJSON *mean, const cJSON *sd, double *m, double *s) {
    long i = 0;
    for (const cJSON *a = mean->child, *b = sd->child; a && b; a = a->next, b = b->next, i++) {
        if (!cJSON_IsNumber(a) || !cJSON_IsNumber(b) || !(b->valuedouble > 0) ||
            !isfinite(a->valuedouble) || !isfinite(b->valuedouble))
            return i;
        m[i] = a->valuedouble;
        s[i] = b->valuedouble;
    }
    return -1;
}

kd_status kd_ckpt_parse_preprocess(const char *path, const char *text, kd_preprocess *pp,
                                   kd_err *err) {
    kd_status st = KD_OK;
    double *m = NULL;
    memset(pp, 0, sizeof *pp);
    cJSON *o = cJSON_Parse(text);
    const cJSON *scale = cJSON_GetObjectItemCaseSensitive(o, "scale");
    const cJSON *mean = cJSON_GetObjectItemCaseSensitive(o, "mean");
    const cJSON *sd = cJSON_GetObjectItemCaseSensitive(o, "std");
    const cJSON *flat = cJSON_GetObjectItemCaseSensitive(o, "flatten");
    const cJSON *per = cJSON_GetObjectItemCaseSensitive(o, "per_feature");
    const int feat = cJSON_IsTrue(per);
    const size_t cap = feat ? KD_MAX_FEATURES : KD_MAX_CHANNELS;
    size_t n = (size_t)cJSON_GetArraySize(mean);
    if (!cJSON_IsObject(o) || !cJSON_IsNumber(scale) || !isfinite(scale->valuedouble) ||
        !cJSON_IsArray(mean) || !cJSON_IsArray(sd) || (size_t)cJSON_GetArraySize(sd) != n ||
        n > cap || (feat && n == 0) || (flat && !cJSON_IsBool(flat)) ||
        (per && !cJSON_IsBool(per))) {
        st = kd_err_set(err, KD_EINPUT,
                        "%s: metadata preprocess: expected {\"scale\": number, \"mean\": [up to %d "
                        "numbers, or one per feature with \"per_feature\": true], \"std\": [as "
                        "many], \"flatten\": bool}, got %.200s", path, KD_MAX_CHANNELS, text);
        goto cleanup;
    }
    pp->scale = (float)scale->valuedouble;
    pp->flatten = cJSON_IsTrue(flat);
    if (!(m = malloc(2 * (n ? n : 1) * sizeof *m))) {
        st = kd_err_set(err, KD_EIO, "%s: out of memory", path);
        goto cleanup;
    }
    long bad = read_pairs(mean, sd, m, m + n);
    if (bad >= 0) {
        st = kd_err_set(err, KD_EINPUT, "%s: metadata preprocess: %s %ld needs a finite mean "
                        "and a std > 0", path, feat ? "feature" : "channel", bad);
        goto cleanup;
    }
    if (feat) {
        st = kd_preprocess_set_features(pp, m, m + n, n, err);
        goto cleanup;
    }
    pp->n_channels = (int)n;
    for (size_t c = 0; c < n; c++) pp->mean[c] = (float)m[c], pp->std[c] = (float)m[n + c];
cleanup:
    free(m);
    cJSON_Delete(o);
    return st;
}
