/* schema_teacher.c - the keys of the config's teacher section (one checkpoint, an ensemble,
 * imported logits, an ONNX teacher's output and preprocessing, the soft-target cache), one table
 * entry each, and the hooks of the ones that need custom code. The rest of the schema is in
 * schema.c and schema_data.c; keys are documented in configs/README.md. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kd_cache.h"
#include "kd_path.h"
#include "schema_impl.h"

static const kd_cfg_range R_TOP_K = {0, KD_CACHE_MAX_CLASSES - 1, 0, 0, 1,
                                     "an integer in [0, 65534] (0 = keep every logit)"};
static const kd_cfg_range R_VIEWS = {1, KD_CACHE_MAX_VIEWS, 0, 0, 1, "an integer in [1, 1024]"};

/* teacher.checkpoint: required unless teacher.ensemble lists the teachers or teacher.logits
 * replaces them (both parsed first). */
static kd_status parse_teacher_checkpoint(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    if (c->ensemble)
        return v ? kd_cfg_fail_key(s, k, "give teacher.checkpoint or teacher.ensemble, not both")
                 : KD_OK;
    if (c->has_logits && v)
        return kd_cfg_fail_key(s, k, "give teacher.checkpoint or teacher.logits, not both "
                               "(the logits file replaces the teacher: it is never run)");
    if (!v && !c->has_logits)
        return kd_cfg_fail_key(s, k, "missing (required: the teacher's safetensors file, "
                               "teacher.ensemble: a list of teachers, or teacher.logits: a file "
                               "of its logits)");
    c->n_teachers = 1;
    c->teachers[0].weight = 1.0f;
    return c->has_logits ? KD_OK : kd_cfg_parse_value(s, k, v);
}

static kd_status parse_teacher_layers(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    if (v && s->p->c->ensemble)
        return kd_cfg_fail_key(s, k, "with teacher.ensemble, give each teacher's layers in its "
                               "own entry");
    if (v && s->p->c->has_logits)
        return kd_cfg_fail_key(s, k, "describes a teacher checkpoint, but teacher.logits has "
                               "no model to describe (remove teacher.layers)");
    return kd_cfg_parse_layers(s, k, v);
}

/* teacher.logits (parsed first): precomputed logits instead of any teacher model. Not with an
 * ensemble (parsed before it) nor with anything that needs targets the file cannot give. */
static kd_status parse_teacher_logits(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    if (!v) return KD_OK;
    if (c->ensemble)
        return kd_cfg_fail_key(s, k, "give teacher.logits or teacher.ensemble, not both (the "
                               "logits file replaces the teachers: none is run)");
    if (kd_augment_active(&c->augment))
        return kd_cfg_fail_key(s, k, "cannot be used with data.augment: the file holds one row "
                               "per sample, the targets of the image as it is, and an augmented "
                               "image would be taught with the targets of another (remove "
                               "data.augment)");
    if (c->train.skip_bad)
        return kd_cfg_fail_key(s, k, "cannot be used with data.train.skip_bad: the rows follow "
                               "the training source's samples, and a skipped sample would move "
                               "every row after it");
    return kd_cfg_parse_value(s, k, v);
}

/* The single-teacher keys are written back only when there is one teacher checkpoint. */
static int write_unless_ensemble(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    *item = NULL;
    return o->c->ensemble || o->c->has_logits ? 0 : kd_cfg_write_value(o, k, item);
}

/* The teacher whose key k (at k->off from the section's base, field `field` of the teacher's
 * struct) is being parsed. */
static kd_teacher_cfg *teacher_of(kd_cfg_sec *s, const kd_cfg_key *k, size_t field) {
    return (kd_teacher_cfg *)(s->base + k->off - field);
}

/* teacher.output / teacher.preprocess: only for an ONNX teacher (parsed after checkpoint). */
static kd_status onnx_only(kd_cfg_sec *s, const kd_cfg_key *k, const kd_teacher_cfg *tc) {
    if (kd_path_has_suffix(tc->path, ".onnx", 1)) return KD_OK;
    return kd_cfg_fail_key(s, k, "only for an ONNX teacher (a checkpoint ending in .onnx); "
                           "a distill checkpoint records its own output and preprocessing");
}

static kd_status parse_teacher_output(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_status st = kd_cfg_parse_value(s, k, v);
    return st || !v ? st : onnx_only(s, k, teacher_of(s, k, TCH(output)));
}

/* teacher.preprocess: "raw", or {"scale": S, "mean": [..], "std": [..]} as data.preprocess
 * (mean and std with 1 or C values, the same count). */
static kd_status parse_teacher_pp(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_teacher_cfg *tc = teacher_of(s, k, TCH(pp_mode));
    char got[64];
    kd_preprocess_defaults(&tc->pp);
    tc->pp_mode = KD_TEACHER_PP_DATA;
    if (!v) return KD_OK;
    kd_status st = onnx_only(s, k, tc);
    if (st) return st;
    if (cJSON_IsString(v) && !strcmp(v->valuestring, "raw")) {
        tc->pp_mode = KD_TEACHER_PP_RAW;
        return KD_OK;
    }
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(v, "scale"),
                *mean = cJSON_GetObjectItemCaseSensitive(v, "mean"),
                *sd = cJSON_GetObjectItemCaseSensitive(v, "std");
    int n = cJSON_GetArraySize(mean), ok = cJSON_IsObject(v) && (!sc || cJSON_IsNumber(sc)) &&
        n == cJSON_GetArraySize(sd) && n <= KD_MAX_CHANNELS && (!mean || cJSON_IsArray(mean)) &&
        (!sd || cJSON_IsArray(sd)) && cJSON_GetArraySize(v) == !!sc + !!mean + !!sd;
    for (int i = 0; ok && i < n; i++) {
        const cJSON *a = cJSON_GetArrayItem(mean, i), *b = cJSON_GetArrayItem(sd, i);
        ok = cJSON_IsNumber(a) && cJSON_IsNumber(b) && b->valuedouble > 0;
        if (ok) tc->pp.mean[i] = (float)a->valuedouble, tc->pp.std[i] = (float)b->valuedouble;
    }
    if (ok && sc) ok = sc->valuedouble > 0, tc->pp.scale = (float)sc->valuedouble;
    if (!ok)
        return kd_cfg_fail_key(s, k, "expected \"raw\" or {\"scale\": S, \"mean\": [...], "
                               "\"std\": [...]} (std > 0, as many means as stds, at most %d), "
                               "got %s", KD_MAX_CHANNELS, kd_cfg_describe(v, got, sizeof got));
    tc->pp.n_channels = n;
    tc->pp_mode = KD_TEACHER_PP_GIVEN;
    return KD_OK;
}

static int write_teacher_pp(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    const kd_teacher_cfg *tc = (const kd_teacher_cfg *)(o->base + k->off - TCH(pp_mode));
    *item = NULL;
    if (tc->pp_mode == KD_TEACHER_PP_DATA || (k->off != TCH(pp_mode) && o->c->ensemble)) return 0;
    if (tc->pp_mode == KD_TEACHER_PP_RAW) return (*item = cJSON_CreateString("raw")) ? 0 : -1;
    cJSON *obj = cJSON_CreateObject(), *m = cJSON_AddArrayToObject(obj, "mean"),
          *d = cJSON_AddArrayToObject(obj, "std");
    int ok = obj && m && d && cJSON_AddNumberToObject(obj, "scale", tc->pp.scale);
    for (int i = 0; ok && i < tc->pp.n_channels; i++)
        ok = cJSON_AddItemToArray(m, cJSON_CreateNumber(tc->pp.mean[i])) &&
             cJSON_AddItemToArray(d, cJSON_CreateNumber(tc->pp.std[i]));
    if (!ok) {
        cJSON_Delete(obj);
        return -1;
    }
    *item = obj;
    return 0;
}

static const kd_cfg_key member_keys[] = {
    {"checkpoint", CFG_PATH, .off = TCH(path), .cap = SIZE_OF(kd_teacher_cfg, path),
     .required = "required: this teacher's safetensors file"},
    {"layers", CFG_JSON, .off = TCH(layers), .parse = kd_cfg_parse_layers},
    {"weight", CFG_NUMBER, CFG_FLOAT, TCH(weight), .range = &R_POS, .flags = CFG_DEFAULT, .def = 1},
    {"output", CFG_STRING, .off = TCH(output), .cap = SIZE_OF(kd_teacher_cfg, output),
     .flags = CFG_NONZERO, .parse = parse_teacher_output},
    {"preprocess", CFG_CUSTOM, .off = TCH(pp_mode), .parse = parse_teacher_pp,
     .write = write_teacher_pp},
};
static const kd_cfg_section member_section = SECTION(member_keys, NULL, 0);

/* teacher.ensemble: 1 .. KD_MAX_TEACHERS objects, each parsed with member_keys into
 * c->teachers[i] and named teacher.ensemble[i] in messages. */
static kd_status parse_ensemble(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    kd_cfg_obj_list l = {&member_section, (char *)c->teachers, sizeof c->teachers[0],
                      KD_MAX_TEACHERS, "teacher", "[{\"checkpoint\": \"a.safetensors\"}, ...]",
                      "{\"checkpoint\": \"a.safetensors\", \"weight\": 1}"};
    if (!v) return KD_OK;
    kd_status st = kd_cfg_parse_section_list(s, k, v, &l, &c->n_teachers);
    if (!st) c->ensemble = 1;
    return st;
}

static int write_ensemble(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    (void)k;
    *item = NULL;
    if (!o->c->ensemble) return 0;
    return kd_cfg_write_section_list(o, &member_section, (const char *)o->c->teachers,
                              sizeof o->c->teachers[0], o->c->n_teachers, item);
}

/* teacher.cache: the rules that tie it to augmentation and the data (parsed after data). */
static kd_status parse_cache(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    char sec[KD_CFG_JPATH_MAX], path[KD_CFG_JPATH_MAX];
    kd_status st = kd_cfg_parse_value(s, k, v);
    if (st || !v) return st;
    if (c->has_logits)
        return kd_cfg_fail_key(s, k, "cannot be used with teacher.logits: the logits file "
                               "already holds the targets, read as from a cache (remove "
                               "teacher.cache)");
    int aug = kd_augment_active(&c->augment);
    kd_cfg_join(path, kd_cfg_key_path(s, k, sec), "views");
    if (aug && c->cache.views == 1)
        return kd_cfg_fail(s->p, path, "1 view, but data.augment is on: cached targets "
                           "describe fixed images, so a randomly augmented image would be taught "
                           "with the targets of another; cache several augmented views per sample "
                           "(e.g. \"views\": 8, one drawn per sample and epoch) or remove "
                           "data.augment");
    if (!aug && c->cache.views > 1)
        return kd_cfg_fail(s->p, path, "%zu views need data.augment (shift and/or flip): "
                           "without augmentation every view is the same image", c->cache.views);
    if (c->train.skip_bad)
        return kd_cfg_fail_key(s, k, "cannot be used with data.train.skip_bad (a sample that "
                               "fails to decode would have no cached targets)");
    return KD_OK;
}

static const kd_cfg_key cache_keys[] = {
    {"path", CFG_PATH, .off = CACHE(path), .cap = SIZE_OF(kd_cache_cfg, path),
     .required = "required: the cache file ('distill logits' or the first training run builds "
                 "it)"},
    {"dtype", CFG_ENUM, .off = CACHE(dtype), .names = kd_cache_dtype_names, .flags = CFG_DEFAULT,
     .def = KD_CACHE_F32},
    {"top_k", CFG_NUMBER, CFG_SIZE, CACHE(top_k), .range = &R_TOP_K, .flags = CFG_DEFAULT, .def = 0},
    {"views", CFG_NUMBER, CFG_SIZE, CACHE(views), .range = &R_VIEWS, .flags = CFG_DEFAULT,
     .def = 1},
    {"seed", CFG_NUMBER, CFG_U64, CACHE(seed), .range = &R_SEED, .flags = CFG_DEFAULT, .def = 0},
};
static const kd_cfg_section cache_section = SECTION(cache_keys, NULL, 0);

static const kd_cfg_key teacher_keys[] = {
    {"checkpoint", CFG_PATH, .off = CFG(teachers[0].path), .cap = SIZE_OF(kd_teacher_cfg, path),
     .parse = parse_teacher_checkpoint, .write = write_unless_ensemble},
    {"layers", CFG_JSON, .off = CFG(teachers[0].layers), .flags = CFG_INDEXED,
     .parse = parse_teacher_layers, .write = write_unless_ensemble},
    {"output", CFG_STRING, .off = CFG(teachers[0].output), .flags = CFG_NONZERO,
     .cap = SIZE_OF(kd_teacher_cfg, output), .parse = parse_teacher_output,
     .write = write_unless_ensemble},
    {"preprocess", CFG_CUSTOM, .off = CFG(teachers[0].pp_mode), .parse = parse_teacher_pp,
     .write = write_teacher_pp},
    {"ensemble", CFG_CUSTOM, .flags = CFG_INDEXED, .parse = parse_ensemble,
     .write = write_ensemble, .phase = -1},
    {"logits", CFG_PATH, .off = CFG(logits_path), .cap = SIZE_OF(kd_config, logits_path),
     .has = OFF1(kd_config, has_logits), .parse = parse_teacher_logits, .phase = -1},
    {"cache", CFG_SECTION, .off = CFG(cache), .sub = &cache_section,
     .has = OFF1(kd_config, has_cache), .parse = parse_cache},
};
const kd_cfg_section kd_cfg_teacher_section = SECTION(teacher_keys, NULL, 0);
