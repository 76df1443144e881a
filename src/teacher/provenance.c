/* provenance.c - what a soft-target cache built from a config must hold and record, so that a
 * cache made from other teachers, data or settings is refused by name instead of silently
 * teaching the wrong targets. */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "kd_path.h"
#include "kd_teacher.h"

/* "scale=S mean=[..] std=[..][ features=N crc32=C]": the values a sample is turned into before
 * the teacher sees it. */
static void describe_preprocess(const kd_preprocess *pp, char *buf, size_t cap) {
    size_t len = (size_t)snprintf(buf, cap, "scale=%.9g mean=[", (double)pp->scale);
    for (int c = 0; c < pp->n_channels && len < cap; c++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%.9g", c ? "," : "", (double)pp->mean[c]);
    if (len < cap) len += (size_t)snprintf(buf + len, cap - len, "] std=[");
    for (int c = 0; c < pp->n_channels && len < cap; c++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%.9g", c ? "," : "", (double)pp->std[c]);
    if (len < cap) len += (size_t)snprintf(buf + len, cap - len, "]");
    /* Per-feature statistics (standardize, or one mean/std per feature): their count and a
     * checksum of their bytes, so a cache built under other statistics is refused. */
    if (pp->n_features && len < cap)
        snprintf(buf + len, cap - len, " features=%zu crc32=%08lx", pp->n_features,
                 crc32_z(0L, (const unsigned char *)pp->feat, 2 * pp->n_features * sizeof *pp->feat));
}

static kd_status add_file_hash(kd_cache_meta *meta, const char *name, const char *path,
                               kd_err *err) {
    char hash[160];
    kd_status st = kd_file_hash(path, hash, sizeof hash, err);
    return st ? st : kd_cache_meta_add(meta, name, hash, err);
}

kd_status kd_teacher_cache_meta(const kd_config *cfg, const kd_preprocess *pp, size_t n_rows,
                                size_t n_classes, kd_cache_meta *meta, kd_err *err) {
    const kd_cache_cfg *cc = &cfg->cache;
    const kd_data_source *src = &cfg->train;
    char name[64], value[512];
    kd_status st = KD_OK;
    memset(meta, 0, sizeof *meta);
    if (cc->top_k >= n_classes)
        return kd_err_set(err, KD_EUSAGE, "teacher.cache.top_k: %zu keeps every logit of %zu "
                          "classes (use 0, or fewer than %zu)", cc->top_k, n_classes, n_classes);
    meta->n_rows = n_rows;
    meta->n_classes = n_classes;
    meta->n_teachers = cfg->n_teachers;
    meta->dtype = (kd_cache_dtype)cc->dtype;
    meta->top_k = cc->top_k;
    /* Only a top-k cache depends on T: its left-out mass is a log-sum-exp at T. */
    meta->temperature = cc->top_k ? (double)cfg->distill.temperature : 0.0;
    meta->views = cc->views;
    meta->view_seed = cc->seed;
    meta->ensemble_val_acc = NAN;
    for (size_t i = 0; i < cfg->n_teachers && !st; i++) {
        meta->weight[i] = kd_config_teacher_weight(cfg, i);
        meta->teacher_val_acc[i] = NAN;
        snprintf(name, sizeof name, "teacher[%zu].checkpoint", i);
        if ((st = add_file_hash(meta, name, cfg->teachers[i].path, err))) break;
        if (cfg->teachers[i].layers) {
            /* The architecture given in the config decides how the file's tensors are read. */
            char *text = cJSON_PrintUnformatted(cfg->teachers[i].layers);
            if (!text) return kd_err_set(err, KD_EIO, "out of memory");
            snprintf(value, sizeof value, "crc32:%08lx",
                     crc32(0L, (const Bytef *)text, (uInt)strlen(text)));
            cJSON_free(text);
            snprintf(name, sizeof name, "teacher[%zu].layers", i);
            st = kd_cache_meta_add(meta, name, value, err);
        }
        /* An ONNX teacher's output and input preprocessing decide its logits too: both are
         * recorded, defaults included, so that a run giving either differently is refused. */
        const kd_teacher_cfg *tc = &cfg->teachers[i];
        if (!st && kd_path_has_suffix(tc->path, ".onnx", 1)) {
            static const char *const modes[] = {"data", "raw", "given"};
            snprintf(name, sizeof name, "teacher[%zu].output", i);
            st = kd_cache_meta_add(meta, name, tc->output[0] ? tc->output : "(default)", err);
            snprintf(name, sizeof name, "teacher[%zu].preprocess", i);
            size_t used = (size_t)snprintf(value, sizeof value, "%s scale %.9g",
                                           modes[tc->pp_mode], (double)tc->pp.scale);
            for (int c = 0; c < tc->pp.n_channels && used < sizeof value; c++)
                used += (size_t)snprintf(value + used, sizeof value - used, " %.9g/%.9g",
                                         (double)tc->pp.mean[c], (double)tc->pp.std[c]);
            if (!st) st = kd_cache_meta_add(meta, name, value, err);
        }
    }
    if (st) return st;
    if (src->format == KD_FMT_IMAGES) {
        /* Hashing every image would cost a pass over the folder: the folder and its sample
         * count stand for it (README says so). */
        snprintf(value, sizeof value, "folder %.400s", src->path);
        st = kd_cache_meta_add(meta, "data.train", value, err);
    } else {
        st = add_file_hash(meta, "data.train", src->path, err);
        if (!st && src->labels_path[0])
            st = add_file_hash(meta, "data.train.labels", src->labels_path, err);
    }
    if (st) return st;
    describe_preprocess(pp, value, sizeof value);
    if ((st = kd_cache_meta_add(meta, "data.preprocess", value, err))) return st;
    if (!src->subset) snprintf(value, sizeof value, "all");
    else if (src->subset_seeded)
        snprintf(value, sizeof value, "%zu drawn with seed %llu", src->subset,
                 (unsigned long long)src->subset_seed);
    else snprintf(value, sizeof value, "first %zu", src->subset);
    if ((st = kd_cache_meta_add(meta, "data.train.subset", value, err))) return st;
    snprintf(value, sizeof value, "shift=%zu flip=%d", cfg->augment.shift, cfg->augment.flip);
    return kd_cache_meta_add(meta, "data.augment", value, err);
}
