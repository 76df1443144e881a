/* schema.c - the config's keys, one table entry each: name, kind, where the value goes, range,
 * default, the variants that use it; the hooks for the few keys that need custom code; and the
 * walk over the tables that messages and tests use. The data section's keys are in
 * schema_data.c; keys are documented in configs/README.md. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kd_cache.h"
#include "kd_path.h"
#include "schema_impl.h"

/* Enum names, in enum order (the stored value indexes them). */
#define NAMES(fn, ...)                                                                     \
    static const char *const *fn(size_t *n) {                                              \
        static const char *const v[] = {__VA_ARGS__};                                      \
        *n = N_OF(v);                                                                      \
        return v;                                                                          \
    }
NAMES(init_names, [KD_INIT_HE] = "he", [KD_INIT_XAVIER] = "xavier")
NAMES(distill_names, [KD_DISTILL_KL] = "kl", [KD_DISTILL_MSE] = "mse")
NAMES(optimizer_names, [KD_OPT_SGD] = "sgd", [KD_OPT_ADAM] = "adam", [KD_OPT_ADAMW] = "adamw")
NAMES(schedule_names, [KD_SCHED_CONSTANT] = "constant", [KD_SCHED_STEP] = "step",
      [KD_SCHED_COSINE] = "cosine")

/* Enums are stored through an int. */
_Static_assert(sizeof(kd_data_format) == sizeof(int), "enum size");
_Static_assert(sizeof(kd_init_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(kd_distill_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(kd_optim_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(kd_sched_kind) == sizeof(int), "enum size");

static const kd_cfg_range R_NONNEG = {0, FLT_MAX, 0, 0, 0, "a number >= 0"};
static const kd_cfg_range R_UNIT = {0, 1, 0, 0, 0, "a number in [0, 1]"};
static const kd_cfg_range R_UNIT_OPEN = {0, 1, 0, 1, 0, "a number in [0, 1)"};
static const kd_cfg_range R_GAMMA = {0, 1, 1, 0, 0, "a number in (0, 1]"};
static const kd_cfg_range R_COUNT1 = {1, KD_CFG_MAX_INT53, 0, 0, 1, "an integer >= 1"};
static const kd_cfg_range R_EPOCHS_REAL = {0, 1e9, 1, 0, 0, "a number of epochs > 0"};
static const kd_cfg_range R_EPOCHS = {1, 1000000, 0, 0, 1, "an integer in [1, 1000000]"};
static const kd_cfg_range R_BATCH = {1, 1 << 20, 0, 0, 1, "an integer in [1, 1048576]"};
static const kd_cfg_range R_TOP_K = {0, KD_CACHE_MAX_CLASSES - 1, 0, 0, 1,
                                     "an integer in [0, 65534] (0 = keep every logit)"};
static const kd_cfg_range R_VIEWS = {1, KD_CACHE_MAX_VIEWS, 0, 0, 1, "an integer in [1, 1024]"};
static const kd_cfg_range R_THREADS = {0, 1024, 0, 0, 1, "an integer in [0, 1024] (0 = all cores)"};

/* ---------------------------------------------------------------------------------------- */
/* Hooks: the rules a type and a range cannot say. */

/* A layer list: a non-empty array of objects with a string "type". Everything else about the
 * layers is checked by kd_model_init, which knows the layer types. */
static kd_status parse_layers(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    char path[KD_CFG_JPATH_MAX], sub[KD_CFG_JPATH_MAX + 32], got[64];
    if (!v) return kd_cfg_parse_value(s, k, v);
    kd_cfg_key_path(s, k, path);
    if (!cJSON_IsArray(v))
        return kd_cfg_fail(s->p, path, "expected an array of layer objects, got %s",
                           kd_cfg_describe(v, got, sizeof got));
    if (!v->child) return kd_cfg_fail(s->p, path, "empty (a model needs at least one layer)");
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        snprintf(sub, sizeof sub, "%s[%d]", path, i);
        if (!cJSON_IsObject(e))
            return kd_cfg_fail(s->p, sub, "expected a layer object like {\"type\": \"dense\", "
                               "\"units\": 10}, got %s", kd_cfg_describe(e, got, sizeof got));
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "type");
        snprintf(sub, sizeof sub, "%s[%d].type", path, i);
        if (!t) return kd_cfg_fail(s->p, sub, "missing (every layer needs a \"type\")");
        if (!cJSON_IsString(t) || !t->valuestring[0])
            return kd_cfg_fail(s->p, sub, "expected a layer type name, got %s",
                               kd_cfg_describe(t, got, sizeof got));
    }
    return kd_cfg_parse_value(s, k, v);
}

/* model.input: 1 to KD_MAX_RANK sizes. */
static kd_status parse_input(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_shape *in = &s->p->c->input;
    char path[KD_CFG_JPATH_MAX], sub[KD_CFG_JPATH_MAX + 32], got[64];
    if (!v) return KD_OK;
    kd_cfg_key_path(s, k, path);
    int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 0;
    if (n < 1 || n > KD_MAX_RANK)
        return kd_cfg_fail(s->p, path, "expected an array of 1 to %d sizes like [1, 28, 28], got %s",
                           KD_MAX_RANK, kd_cfg_describe(v, got, sizeof got));
    int i = 0;
    size_t numel = 1;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        double x = e->valuedouble;
        snprintf(sub, sizeof sub, "%s[%d]", path, i);
        if (!cJSON_IsNumber(e) || x != floor(x) || x < 1 || x > (double)(1 << 24))
            return kd_cfg_fail(s->p, sub, "expected an integer in [1, 2^24], got %s",
                               kd_cfg_describe(e, got, sizeof got));
        in->d[i] = (size_t)x;
        numel *= in->d[i];
        if (numel > ((size_t)1 << 31))
            return kd_cfg_fail(s->p, path, "too large (more than 2^31 values per sample)");
    }
    in->rank = n;
    return KD_OK;
}

static int write_input(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    const kd_shape *in = &o->c->input;
    (void)k;
    cJSON *a = *item = cJSON_CreateArray();
    for (int i = 0; a && i < in->rank; i++) {
        cJSON *x = cJSON_CreateNumber((double)in->d[i]);
        if (!x || !cJSON_AddItemToArray(a, x)) {
            cJSON_Delete(x);
            cJSON_Delete(a);
            *item = NULL;
            return -1;
        }
    }
    return a ? 0 : -1;
}

/* Without labels the soft term is the only signal, so alpha defaults to 1 there (and must be). */
static kd_status parse_alpha(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_distill_cfg *d = (kd_distill_cfg *)s->base;
    int use_labels = s->p->c->use_labels;
    d->alpha = use_labels ? 0.9f : 1.0f;
    kd_status st = kd_cfg_parse_value(s, k, v);
    if (!st && !use_labels && d->alpha != 1.0f)
        return kd_cfg_fail_key(s, k, "must be 1 when data.use_labels is false (no labels for "
                               "the hard term), got %g", (double)d->alpha);
    return st;
}

/* distill only with a teacher; and without labels a teacher is the only training signal. */
static kd_status parse_distill(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    char path[KD_CFG_JPATH_MAX];
    kd_status st = KD_OK;
    if (c->has_teacher) {
        st = kd_cfg_parse_value(s, k, v);
    } else if (v) {
        if (!cJSON_IsObject(v)) return kd_cfg_parse_value(s, k, v);  /* its type error */
        if ((st = kd_cfg_check_keys(s->p, v, k->sub, kd_cfg_key_path(s, k, path)))) return st;
        return kd_cfg_fail_key(s, k, "given, but there is no teacher section to distil from "
                               "(add teacher.checkpoint, or remove distill)");
    }
    if (!st && c->has_teacher && c->distill.kind == KD_DISTILL_MSE && c->n_teachers > 1)
        return kd_cfg_fail(s->p, kd_cfg_path_of(CFG(distill.kind), path),
                           "\"mse\" matches one teacher's logits, but an ensemble's target is a "
                           "mixture of probabilities (use \"kl\")");
    if (!st && c->has_cache && c->distill.kind == KD_DISTILL_MSE && c->cache.top_k)
        return kd_cfg_fail(s->p, kd_cfg_path_of(CFG(cache.top_k), path),
                           "\"mse\" matches every logit, but a top-k cache keeps only k of them "
                           "(use \"kl\", or top_k 0)");
    if (!st && !c->use_labels && !c->has_teacher)
        return kd_cfg_fail(s->p, kd_cfg_path_of(CFG(use_labels), path),
                           "false needs a teacher section (without labels the teacher's soft "
                           "targets are the only training signal)");
    return st;
}

static int write_distill(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    *item = NULL;
    return o->c->has_teacher ? kd_cfg_write_value(o, k, item) : 0;
}

/* The optimizer's defaults (torch's) and its default learning rate depend on its name. */
static kd_status parse_optimizer_name(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    kd_status st = kd_cfg_parse_value(s, k, v);
    c->optim = kd_optim_defaults(c->optim.kind);
    c->sched.base_lr = c->optim.kind == KD_OPT_SGD ? 0.01f : 0.001f;
    return st;
}

static kd_status parse_nesterov(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    kd_status st = kd_cfg_parse_value(s, k, v);
    if (!st && c->optim.nesterov && !(c->optim.momentum > 0))
        return kd_cfg_fail_key(s, k, "needs optimizer.momentum > 0");
    return st;
}

static kd_status parse_step_size(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    kd_status st = kd_cfg_parse_value(s, k, v);
    if (!st && c->sched.kind == KD_SCHED_STEP && !c->step_epochs && !c->sched.step_size)
        return kd_cfg_fail_key(s, k, "missing (a \"step\" schedule needs step_size in steps or "
                               "step_epochs)");
    return st;
}

static kd_status parse_min_lr(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    kd_status st = kd_cfg_parse_value(s, k, v);
    if (!st && c->sched.min_lr > c->sched.base_lr)
        return kd_cfg_fail_key(s, k, "must not exceed optimizer.lr (%g), got %g",
                               (double)c->sched.base_lr, (double)c->sched.min_lr);
    return st;
}

/* Relative output folders follow the current directory, like --out, not the config file:
 * runs land where the user works even when configs live elsewhere. Default: runs/<name>. */
static kd_status parse_output_dir(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    char def[sizeof c->name + 8];
    if (v) return kd_cfg_parse_value(s, k, v);
    snprintf(def, sizeof def, "runs/%s", c->name);
    return kd_cfg_resolve(s, k, def, s->p->cwd, c->out_dir);
}

/* teacher.checkpoint: required unless teacher.ensemble lists the teachers (parsed first). */
static kd_status parse_teacher_checkpoint(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    if (c->ensemble)
        return v ? kd_cfg_fail_key(s, k, "give teacher.checkpoint or teacher.ensemble, not both")
                 : KD_OK;
    if (!v)
        return kd_cfg_fail_key(s, k, "missing (required: the teacher's safetensors file, or "
                               "teacher.ensemble: a list of teachers)");
    c->n_teachers = 1;
    c->teachers[0].weight = 1.0f;
    return kd_cfg_parse_value(s, k, v);
}

static kd_status parse_teacher_layers(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    if (v && s->p->c->ensemble)
        return kd_cfg_fail_key(s, k, "with teacher.ensemble, give each teacher's layers in its "
                               "own entry");
    return parse_layers(s, k, v);
}

/* The single-teacher keys are written back only when there is no ensemble. */
static int write_unless_ensemble(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    *item = NULL;
    return o->c->ensemble ? 0 : kd_cfg_write_value(o, k, item);
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
    {"layers", CFG_JSON, .off = TCH(layers), .parse = parse_layers},
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
    char path[KD_CFG_JPATH_MAX], sub[KD_CFG_JPATH_MAX + 32], got[64];
    kd_status st;
    if (!v) return KD_OK;
    kd_cfg_key_path(s, k, path);
    if (!cJSON_IsArray(v))
        return kd_cfg_fail(s->p, path, "expected a list of teachers like [{\"checkpoint\": "
                           "\"a.safetensors\"}, ...], got %s", kd_cfg_describe(v, got, sizeof got));
    int n = cJSON_GetArraySize(v), i = 0;
    if (n == 0) return kd_cfg_fail(s->p, path, "empty (list at least one teacher)");
    if (n > KD_MAX_TEACHERS)
        return kd_cfg_fail(s->p, path, "at most %d teachers, got %d", KD_MAX_TEACHERS, n);
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        snprintf(sub, sizeof sub, "%s[%d]", path, i);
        if (!cJSON_IsObject(e))
            return kd_cfg_fail(s->p, sub, "expected a teacher object like {\"checkpoint\": "
                               "\"a.safetensors\", \"weight\": 1}, got %s",
                               kd_cfg_describe(e, got, sizeof got));
        if ((st = kd_cfg_check_keys(s->p, e, &member_section, sub)) ||
            (st = kd_cfg_parse_section(s->p, &member_section, e, sub, k->name,
                                       (char *)&c->teachers[i])))
            return st;
    }
    c->ensemble = 1;
    c->n_teachers = (size_t)n;
    return KD_OK;
}

static int write_ensemble(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    (void)k;
    *item = NULL;
    if (!o->c->ensemble) return 0;
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < o->c->n_teachers; i++) {
        cJSON *obj = cJSON_CreateObject();
        if (!obj || kd_cfg_write_section(&member_section, o->c, (const char *)&o->c->teachers[i],
                                         obj) != 0 || !cJSON_AddItemToArray(a, obj)) {
            cJSON_Delete(obj);
            cJSON_Delete(a);
            return -1;
        }
    }
    *item = a;
    return a ? 0 : -1;
}

/* teacher.cache: the rules that tie it to augmentation and the data (parsed after data). */
static kd_status parse_cache(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    char sec[KD_CFG_JPATH_MAX], path[KD_CFG_JPATH_MAX];
    kd_status st = kd_cfg_parse_value(s, k, v);
    if (st || !v) return st;
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

/* ---------------------------------------------------------------------------------------- */
/* The tables. Order is the order of parsing (within a phase), of "known keys here" and of the
 * resolved JSON. */


static const kd_cfg_key model_keys[] = {
    {"input", CFG_CUSTOM, .has = OFF1(kd_config, has_input), .parse = parse_input,
     .write = write_input},
    {"layers", CFG_JSON, .off = CFG(layers), .flags = CFG_INDEXED,
     .required = "required: the list of layers", .parse = parse_layers, .phase = -1},
    {"init", CFG_ENUM, .off = CFG(init), .names = init_names, .flags = CFG_DEFAULT,
     .def = KD_INIT_HE},
};
static const kd_cfg_section model_section = SECTION(model_keys, NULL, 0);

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
    {"cache", CFG_SECTION, .off = CFG(cache), .sub = &cache_section,
     .has = OFF1(kd_config, has_cache), .parse = parse_cache},
};
static const kd_cfg_section teacher_section = SECTION(teacher_keys, NULL, 0);

static const kd_cfg_key distill_keys[] = {
    {"kind", CFG_ENUM, .off = DIS(kind), .names = distill_names,
     .flags = CFG_SELECTOR | CFG_DEFAULT, .def = KD_DISTILL_KL},
    /* Variants are checked after the temperature's own value, so a bad value is named first. */
    {"temperature", CFG_NUMBER, CFG_FLOAT, DIS(temperature), .range = &R_POS,
     .variants = ONLY(KD_DISTILL_KL), .flags = CFG_DEFAULT | CFG_CHECK_VARIANTS, .def = 4,
     .unused_note = "it matches raw logits"},
    {"alpha", CFG_NUMBER, CFG_FLOAT, DIS(alpha), .range = &R_UNIT, .parse = parse_alpha},
};
static const kd_cfg_section distill_section = SECTION(distill_keys, NULL, 0);

#define SGD ONLY(KD_OPT_SGD)
#define ADAMS (ONLY(KD_OPT_ADAM) | ONLY(KD_OPT_ADAMW))
static const kd_cfg_key optimizer_keys[] = {
    {"name", CFG_ENUM, .off = CFG(optim.kind), .names = optimizer_names,
     .flags = CFG_SELECTOR | CFG_DEFAULT | CFG_CHECK_VARIANTS, .def = KD_OPT_SGD,
     .parse = parse_optimizer_name},
    {"lr", CFG_NUMBER, CFG_FLOAT, CFG(sched.base_lr), .range = &R_POS},
    {"momentum", CFG_NUMBER, CFG_FLOAT, CFG(optim.momentum), .range = &R_UNIT_OPEN, .variants = SGD},
    {"nesterov", CFG_BOOL, .off = CFG(optim.nesterov), .variants = SGD, .parse = parse_nesterov},
    {"beta1", CFG_NUMBER, CFG_FLOAT, CFG(optim.beta1), .range = &R_UNIT_OPEN, .variants = ADAMS},
    {"beta2", CFG_NUMBER, CFG_FLOAT, CFG(optim.beta2), .range = &R_UNIT_OPEN, .variants = ADAMS},
    {"eps", CFG_NUMBER, CFG_FLOAT, CFG(optim.eps), .range = &R_POS, .variants = ADAMS},
    {"weight_decay", CFG_NUMBER, CFG_FLOAT, CFG(optim.weight_decay), .range = &R_NONNEG},
    {"clip_norm", CFG_NUMBER, CFG_FLOAT, CFG(optim.clip_norm), .range = &R_NONNEG},
};
static const kd_cfg_section optimizer_section =
    SECTION(optimizer_keys, NULL, CFG_NOUN_IS_SECTION | CFG_LIST_USERS);

#define STEP ONLY(KD_SCHED_STEP)
static const kd_cfg_key schedule_keys[] = {
    {"name", CFG_ENUM, .off = CFG(sched.kind), .names = schedule_names,
     .flags = CFG_SELECTOR | CFG_DEFAULT | CFG_CHECK_VARIANTS, .def = KD_SCHED_CONSTANT},
    {"warmup_epochs", CFG_NUMBER, CFG_DOUBLE, CFG(warmup_epochs), .range = &R_EPOCHS_REAL,
     .flags = CFG_NONZERO},
    {"warmup_steps", CFG_NUMBER, CFG_U64, CFG(sched.warmup_steps), .range = &R_COUNT0,
     .flags = CFG_ALT_PREV},
    {"step_epochs", CFG_NUMBER, CFG_DOUBLE, CFG(step_epochs), .range = &R_EPOCHS_REAL,
     .variants = STEP, .flags = CFG_NONZERO},
    {"step_size", CFG_NUMBER, CFG_U64, CFG(sched.step_size), .range = &R_COUNT1, .variants = STEP,
     .flags = CFG_ALT_PREV, .parse = parse_step_size},
    {"gamma", CFG_NUMBER, CFG_FLOAT, CFG(sched.gamma), .range = &R_GAMMA, .variants = STEP,
     .flags = CFG_DEFAULT, .def = 0.1},
    {"min_lr", CFG_NUMBER, CFG_FLOAT, CFG(sched.min_lr), .range = &R_NONNEG,
     .variants = ONLY(KD_SCHED_COSINE), .parse = parse_min_lr},
};
static const kd_cfg_section schedule_section =
    SECTION(schedule_keys, NULL, CFG_NOUN_IS_SECTION | CFG_LIST_USERS);

static const kd_cfg_key train_keys[] = {
    {"epochs", CFG_NUMBER, CFG_SIZE, CFG(epochs), .range = &R_EPOCHS, .flags = CFG_DEFAULT, .def = 10},
    {"batch_size", CFG_NUMBER, CFG_SIZE, CFG(batch_size), .range = &R_BATCH, .flags = CFG_DEFAULT,
     .def = 128},
    {"seed", CFG_NUMBER, CFG_U64, CFG(seed), .range = &R_SEED, .flags = CFG_DEFAULT, .def = 0},
    {"threads", CFG_NUMBER, CFG_INT, CFG(threads), .range = &R_THREADS, .flags = CFG_DEFAULT,
     .def = 0},
};
static const kd_cfg_section train_section = SECTION(train_keys, NULL, 0);

static const kd_cfg_key output_keys[] = {
    {"dir", CFG_PATH, .off = CFG(out_dir), .cap = SIZE_OF(kd_config, out_dir), .flags = CFG_CWD,
     .parse = parse_output_dir},
    {"save_best", CFG_BOOL, .off = CFG(save_best), .flags = CFG_DEFAULT, .def = 1},
};
static const kd_cfg_section output_section = SECTION(output_keys, NULL, 0);

static const kd_cfg_key root_keys[] = {
    {"data", CFG_SECTION, .sub = &kd_cfg_data_section,
     .required = "required section: at least data.train"},
    {"model", CFG_SECTION, .sub = &model_section,
     .required = "required section: at least model.layers"},
    {"teacher", CFG_SECTION, .sub = &teacher_section, .has = OFF1(kd_config, has_teacher)},
    {"distill", CFG_SECTION, .off = CFG(distill), .sub = &distill_section, .parse = parse_distill,
     .write = write_distill},
    {"optimizer", CFG_SECTION, .sub = &optimizer_section},
    {"schedule", CFG_SECTION, .sub = &schedule_section},
    {"train", CFG_SECTION, .sub = &train_section},
    {"output", CFG_SECTION, .sub = &output_section},
};
const kd_cfg_section kd_cfg_root = SECTION(root_keys, NULL, 0);

/* ---------------------------------------------------------------------------------------- */
/* Walking the tables. */

static int walk(const kd_cfg_section *sec, const char *path, size_t base, kd_cfg_visit_fn fn,
                void *user) {
    char sub[KD_CFG_JPATH_MAX];
    for (size_t i = 0; i < sec->n; i++) {
        const kd_cfg_key *k = &sec->keys[i];
        kd_cfg_join(sub, path, k->name);
        int r = fn(sub, k, sec, base + k->off, user);
        if (!r && k->sub) r = walk(k->sub, sub, base + k->off, fn, user);
        if (r) return r;
    }
    return 0;
}

int kd_cfg_walk(kd_cfg_visit_fn fn, void *user) { return walk(&kd_cfg_root, "", 0, fn, user); }

typedef struct {
    size_t off;
    char *buf;
} find_off;

static int match_off(const char *path, const kd_cfg_key *k, const kd_cfg_section *sec,
                     size_t off, void *user) {
    find_off *f = user;
    (void)sec;
    if (k->sub || k->kind == CFG_CUSTOM || off != f->off) return 0;
    snprintf(f->buf, KD_CFG_JPATH_MAX, "%s", path);
    return 1;
}

const char *kd_cfg_path_of(size_t off, char *buf) {
    find_off f = {off, buf};
    int found = kd_cfg_walk(match_off, &f);
    KD_ASSERT(found);
    return buf;
}
