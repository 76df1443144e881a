/* schema.c - the config's keys, one table entry each: name, kind, where the value goes, range,
 * default, the variants that use it; the hooks for the few keys that need custom code; and the
 * walk over the tables that messages and tests use. The data section's keys are in
 * schema_data.c; keys are documented in configs/README.md. */
#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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
NAMES(loss_type_names, [KD_LOSS_KL] = "kl", [KD_LOSS_MSE] = "mse", [KD_LOSS_CE] = "ce",
      [KD_LOSS_DKD] = "dkd", [KD_LOSS_HINT] = "hint", [KD_LOSS_AT] = "at")
NAMES(optimizer_names, [KD_OPT_SGD] = "sgd", [KD_OPT_ADAM] = "adam", [KD_OPT_ADAMW] = "adamw")
NAMES(schedule_names, [KD_SCHED_CONSTANT] = "constant", [KD_SCHED_STEP] = "step",
      [KD_SCHED_COSINE] = "cosine")

/* Enums are stored through an int. */
_Static_assert(sizeof(kd_data_format) == sizeof(int), "enum size");
_Static_assert(sizeof(kd_init_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(kd_distill_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(kd_loss_type) == sizeof(int), "enum size");
_Static_assert(sizeof(kd_optim_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(kd_sched_kind) == sizeof(int), "enum size");

static const kd_cfg_range R_NONNEG = {0, FLT_MAX, 0, 0, 0, "a number >= 0"};
static const kd_cfg_range R_UNIT = {0, 1, 0, 0, 0, "a number in [0, 1]"};
static const kd_cfg_range R_UNIT_OPEN = {0, 1, 0, 1, 0, "a number in [0, 1)"};
static const kd_cfg_range R_GAMMA = {0, 1, 1, 0, 0, "a number in (0, 1]"};
static const kd_cfg_range R_COUNT1 = {1, KD_CFG_MAX_INT53, 0, 0, 1, "an integer >= 1"};
static const kd_cfg_range R_EPOCHS_REAL = {0, 1e9, 1, 0, 0, "a number of epochs > 0"};
static const kd_cfg_range R_EPOCHS_REAL0 = {0, 1e9, 0, 0, 0, "a number of epochs >= 0"};
static const kd_cfg_range R_EPOCHS = {1, 1000000, 0, 0, 1, "an integer in [1, 1000000]"};
static const kd_cfg_range R_BATCH = {1, 1 << 20, 0, 0, 1, "an integer in [1, 1048576]"};
static const kd_cfg_range R_THREADS = {0, 1024, 0, 0, 1, "an integer in [0, 1024] (0 = all cores)"};

/* ---------------------------------------------------------------------------------------- */
/* Hooks: the rules a type and a range cannot say. */

/* A layer list: a non-empty array of objects with a string "type". Everything else about the
 * layers is checked by kd_model_init, which knows the layer types. */
kd_status kd_cfg_parse_layers(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
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


/* An entry's name becomes part of its term keys ("loss.<name>"): a word, no dots. */
static kd_status parse_loss_name(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_status st = kd_cfg_parse_value(s, k, v);
    const char *name = ((const kd_loss_entry *)s->base)->name;
    if (st || !v) return st;
    for (const char *c = name; *c; c++)
        if (!(isalnum((unsigned char)*c) || *c == '_'))
            return kd_cfg_fail_key(s, k, "expected letters, digits and _ (it names the terms "
                                   "loss.<name> in metrics.jsonl), got \"%s\"", name);
    return KD_OK;
}

/* A feature loss's "student" / "teacher": a layer's output, by the layer's name or by its index
 * (kept as its decimal text, as kd_model_observe reads it); required by hint and at. Whether the
 * model has it is checked when the run builds its models (src/train/features.c). */
static kd_status parse_loss_value(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    char got[64];
    if (!v) {
        if (s->variant == KD_LOSS_HINT || s->variant == KD_LOSS_AT)
            return kd_cfg_fail_key(s, k, "missing (the %s value: a layer's name or index)",
                                   k->name);
        return KD_OK;
    }
    if (cJSON_IsNumber(v)) {
        const double x = v->valuedouble;
        if (!(x >= 0 && x < 1e9 && x == floor(x)))
            return kd_cfg_fail_key(s, k, "expected a layer's name or index (an integer >= 0), "
                                   "got %s", kd_cfg_describe(v, got, sizeof got));
        snprintf(s->base + k->off, k->cap, "%.0f", x);
        return KD_OK;
    }
    return kd_cfg_parse_value(s, k, v);
}

static const kd_cfg_section loss_section;

/* distill.losses: 1 .. KD_MAX_LOSSES objects, each parsed with loss_keys into c->losses.e[i]. */
static kd_status parse_losses(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    kd_cfg_obj_list l = {&loss_section, (char *)c->losses.e, sizeof c->losses.e[0], KD_MAX_LOSSES,
                      "loss", "[{\"type\": \"kl\", \"weight\": 0.9}, {\"type\": \"ce\", "
                      "\"weight\": 0.1}]", "{\"type\": \"kl\", \"weight\": 0.9, \"temperature\": 4}"};
    if (!v) return KD_OK;
    memset(&c->losses, 0, sizeof c->losses);
    return kd_cfg_parse_section_list(s, k, v, &l, &c->losses.n);
}

static int write_losses(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    (void)k;
    *item = NULL;
    return kd_cfg_write_section_list(o, &loss_section, (const char *)o->c->losses.e,
                              sizeof o->c->losses.e[0], o->c->losses.n, item);
}

/* A weight exactly: today's alpha 0.9 means the weights (double)0.9f and 1 - (double)0.9f,
 * whose gradients must stay bit-identical when config.json is read again. */
static int write_loss_weight(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    char buf[40];
    double w = kd_cfg_load_number(o->base, k);
    /* A number when cJSON's 15 digits are exact (0.5, 1), else the exact text. */
    snprintf(buf, sizeof buf, "%.15g", w);
    *item = strtod(buf, NULL) == w ? cJSON_CreateNumber(w)
                                   : cJSON_CreateRaw(kd_double_text(w, buf, sizeof buf));
    return *item ? 0 : -1;
}

/* alpha / temperature / kind are read, then written back as the list they mean. */
static int write_legacy(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    (void)o;
    (void)k;
    *item = NULL;
    return 0;
}

/* Feature losses read the teacher's inner values, which only a teacher run online gives; with an
 * ensemble each names its member. */
static kd_status check_feature_losses(kd_cfg_sec *s, const char *path) {
    const kd_config *c = s->p->c;
    char sub[KD_CFG_JPATH_MAX + 32];
    for (size_t i = 0; i < c->losses.n; i++) {
        const kd_loss_entry *e = &c->losses.e[i];
        const kd_loss_info *info = kd_loss_type_info(e->type);
        if (!(info->needs & KD_LOSS_NEEDS_FEATURES)) continue;
        snprintf(sub, sizeof sub, "%s.losses[%zu].type", path, i);
        if (c->has_logits || c->has_cache)
            return kd_cfg_fail(s->p, sub, "\"%s\" reads the teacher's inner values, which %s "
                               "does not keep: feature losses need the teacher run online "
                               "(remove %s)", info->name,
                               c->has_logits ? "imported teacher.logits" : "a teacher.cache",
                               c->has_logits ? "teacher.logits" : "teacher.cache");
        snprintf(sub, sizeof sub, "%s.losses[%zu].member", path, i);
        if (c->n_teachers > 1 && !e->has_member)
            return kd_cfg_fail(s->p, sub, "missing: the teacher is an ensemble of %zu, so \"%s\" "
                               "names the member (0 to %zu) whose value it reads", c->n_teachers,
                               info->name, c->n_teachers - 1);
        if (e->has_member && e->member >= c->n_teachers)
            return kd_cfg_fail(s->p, sub, "%zu is out of range: the teacher has %zu member%s "
                               "(0 to %zu)", e->member, c->n_teachers,
                               c->n_teachers == 1 ? "" : "s", c->n_teachers - 1);
    }
    return KD_OK;
}

/* The list against the rest of the config: one form of the loss, labels and teachers for the
 * entries that need them, every logit for those that match them all. */
static kd_status check_losses(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    kd_status st;
    static const char *const legacy[] = {"kind", "temperature", "alpha"};
    char path[KD_CFG_JPATH_MAX], sub[KD_CFG_JPATH_MAX + 32];
    kd_cfg_key_path(s, k, path);
    const int listed = v && cJSON_GetObjectItemCaseSensitive(v, "losses");
    for (size_t i = 0; listed && i < N_OF(legacy); i++)
        if (cJSON_GetObjectItemCaseSensitive(v, legacy[i]))
            return kd_cfg_fail(s->p, kd_cfg_join(sub, path, legacy[i]), "given with "
                               "distill.losses: give the list alone (alpha, temperature and "
                               "kind mean [{KIND, weight alpha, T}, {\"ce\", weight 1 - alpha}])");
    if (!listed) kd_loss_list_from_distill(&c->distill, &c->losses);
    if ((st = check_feature_losses(s, path))) return st;
    float top_k_T = 0.0f;
    for (size_t i = 0; i < c->losses.n; i++) {
        const kd_loss_entry *e = &c->losses.e[i];
        const kd_loss_info *info = kd_loss_type_info(e->type);
        snprintf(sub, sizeof sub, "%s.losses[%zu].type", path, i);
        if (!listed) kd_cfg_path_of(CFG(distill.kind), sub);
        if ((info->needs & KD_LOSS_NEEDS_LABELS) && e->weight > 0.0 && !c->use_labels)
            return kd_cfg_fail(s->p, sub, "\"%s\" needs labels, but data.use_labels is false",
                               info->name);
        if ((info->needs & KD_LOSS_ONE_TEACHER) && c->n_teachers > 1)
            return kd_cfg_fail(s->p, sub, "\"%s\" matches one teacher's logits, but an "
                               "ensemble's target is a mixture of probabilities (use \"kl\")",
                               info->name);
        if ((info->needs & KD_LOSS_NEEDS_ALL_LOGITS) && c->has_cache && c->cache.top_k)
            return kd_cfg_fail(s->p, kd_cfg_path_of(CFG(cache.top_k), sub),
                               "\"%s\" %s every logit, but a top-k cache keeps only k of them "
                               "(use \"kl\", or top_k 0)", info->name,
                               e->type == KD_LOSS_MSE ? "matches" : "needs");
        /* A top-k cache keeps the left-out mass at one T: every kl entry must use it. */
        if (e->type == KD_LOSS_KL && c->has_cache && c->cache.top_k) {
            if (top_k_T > 0.0f && e->temperature != top_k_T)
                return kd_cfg_fail(s->p, sub, "a top-k cache holds targets at one temperature, "
                                   "but the kl entries use %g and %g", (double)top_k_T,
                                   (double)e->temperature);
            top_k_T = e->temperature;
        }
    }
    /* The older keys' readers (the cache's temperature, messages) see the list's first
     * teacher loss as alpha / temperature / kind. */
    const kd_loss_entry *soft = kd_loss_list_soft(&c->losses);
    if (listed && soft && (soft->type == KD_LOSS_KL || soft->type == KD_LOSS_MSE)) {
        c->distill.kind = soft->type == KD_LOSS_KL ? KD_DISTILL_KL : KD_DISTILL_MSE;
        if (soft->type == KD_LOSS_KL) c->distill.temperature = soft->temperature;
        c->distill.alpha = (float)soft->weight;
    }
    kd_loss_plan plan;
    kd_err perr;
    if (kd_loss_plan_init(&plan, &c->losses, &perr))
        return kd_cfg_fail(s->p, path, "%s", perr.msg);
    return KD_OK;
}

/* distill only with a teacher; and without labels a teacher is the only training signal. */
static kd_status parse_distill(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    char path[KD_CFG_JPATH_MAX];
    kd_status st = KD_OK;
    if (c->has_teacher) {
        st = kd_cfg_parse_value(s, k, v);
        if (!st) st = check_losses(s, k, v);
    } else if (v) {
        if (!cJSON_IsObject(v)) return kd_cfg_parse_value(s, k, v);  /* its type error */
        if ((st = kd_cfg_check_keys(s->p, v, k->sub, kd_cfg_key_path(s, k, path)))) return st;
        return kd_cfg_fail_key(s, k, "given, but there is no teacher section to distil from "
                               "(add teacher.checkpoint, or remove distill)");
    }
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


/* ---------------------------------------------------------------------------------------- */
/* The tables. Order is the order of parsing (within a phase), of "known keys here" and of the
 * resolved JSON. */


static const kd_cfg_key model_keys[] = {
    {"input", CFG_CUSTOM, .has = OFF1(kd_config, has_input), .parse = parse_input,
     .write = write_input},
    {"layers", CFG_JSON, .off = CFG(layers), .flags = CFG_INDEXED,
     .required = "required: the list of layers", .parse = kd_cfg_parse_layers, .phase = -1},
    {"init", CFG_ENUM, .off = CFG(init), .names = init_names, .flags = CFG_DEFAULT,
     .def = KD_INIT_HE},
};
static const kd_cfg_section model_section = SECTION(model_keys, NULL, 0);


#define LOS(f) offsetof(kd_loss_entry, f)
#define TEMPERED (ONLY(KD_LOSS_KL) | ONLY(KD_LOSS_DKD))
#define FEATURE (ONLY(KD_LOSS_HINT) | ONLY(KD_LOSS_AT))
/* One entry of distill.losses; the selector "type" names its row of the loss table. */
static const kd_cfg_key loss_keys[] = {
    {"type", CFG_ENUM, .off = LOS(type), .names = loss_type_names, .flags = CFG_SELECTOR,
     .required = "required: the loss, \"kl\", \"mse\", \"ce\", \"dkd\", \"hint\" or \"at\""},
    {"weight", CFG_NUMBER, CFG_DOUBLE, LOS(weight), .range = &R_NONNEG, .flags = CFG_DEFAULT,
     .def = 1, .write = write_loss_weight},
    {"name", CFG_STRING, .off = LOS(name), .cap = SIZE_OF(kd_loss_entry, name),
     .flags = CFG_NONZERO, .parse = parse_loss_name},
    {"temperature", CFG_NUMBER, CFG_FLOAT, LOS(temperature), .range = &R_POS,
     .variants = TEMPERED, .flags = CFG_DEFAULT, .def = 4},
    {"alpha", CFG_NUMBER, CFG_FLOAT, LOS(alpha), .range = &R_NONNEG,
     .variants = ONLY(KD_LOSS_DKD), .flags = CFG_DEFAULT, .def = 1},
    {"beta", CFG_NUMBER, CFG_FLOAT, LOS(beta), .range = &R_NONNEG,
     .variants = ONLY(KD_LOSS_DKD), .flags = CFG_DEFAULT, .def = 8},
    {"student", CFG_STRING, .off = LOS(student), .cap = SIZE_OF(kd_loss_entry, student),
     .variants = FEATURE, .flags = CFG_NONZERO, .parse = parse_loss_value},
    {"teacher", CFG_STRING, .off = LOS(teacher), .cap = SIZE_OF(kd_loss_entry, teacher),
     .variants = FEATURE, .flags = CFG_NONZERO, .parse = parse_loss_value},
    {"member", CFG_NUMBER, CFG_SIZE, LOS(member), .has = OFF1(kd_loss_entry, has_member),
     .range = &R_COUNT0, .variants = FEATURE},
    /* Variants are checked after the last key's own value, so a bad value is named first. */
    {"warmup_epochs", CFG_NUMBER, CFG_DOUBLE, LOS(warmup_epochs), .range = &R_NONNEG,
     .variants = ONLY(KD_LOSS_DKD), .flags = CFG_DEFAULT | CFG_CHECK_VARIANTS, .def = 0},
};
static const kd_cfg_section loss_section =
    SECTION(loss_keys, NULL, CFG_LIST_USERS);

static const kd_cfg_key distill_keys[] = {
    {"kind", CFG_ENUM, .off = DIS(kind), .names = distill_names,
     .flags = CFG_SELECTOR | CFG_DEFAULT, .def = KD_DISTILL_KL, .write = write_legacy},
    /* Variants are checked after the temperature's own value, so a bad value is named first. */
    {"temperature", CFG_NUMBER, CFG_FLOAT, DIS(temperature), .range = &R_POS,
     .variants = ONLY(KD_DISTILL_KL), .flags = CFG_DEFAULT | CFG_CHECK_VARIANTS, .def = 4,
     .unused_note = "it matches raw logits", .write = write_legacy},
    {"alpha", CFG_NUMBER, CFG_FLOAT, DIS(alpha), .range = &R_UNIT, .parse = parse_alpha,
     .write = write_legacy},
    {"losses", CFG_CUSTOM, .flags = CFG_INDEXED, .parse = parse_losses, .write = write_losses},
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
    /* 0: no warm-up, as warmup_steps 0 (then written back as warmup_steps: 0) */
    {"warmup_epochs", CFG_NUMBER, CFG_DOUBLE, CFG(warmup_epochs), .range = &R_EPOCHS_REAL0,
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
    {"teacher", CFG_SECTION, .sub = &kd_cfg_teacher_section, .has = OFF1(kd_config, has_teacher)},
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
