/* schema_data.c - the keys of the config's data section (its sources, preprocessing and
 * augmentation), one table entry each, and the hooks for the ones that need custom code. The
 * rest of the schema is in schema.c; keys are documented in configs/README.md. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "schema_impl.h"

/* An image folder's channels / height / width: 0 (or absent) takes the first image's. */
static const kd_cfg_range R_CHANNELS = {0, 3, 0, 0, 1, "1 (grey) or 3 (RGB), 0: the first image's"};
static const kd_cfg_range R_SIDE = {0, KD_IMAGE_MAX_SIDE, 0, 0, 1,
                                    "an integer in [1, 8192], 0: the first image's"};
static const kd_cfg_range R_SHIFT = {0, KD_AUGMENT_MAX_SHIFT, 0, 0, 1, "an integer in [0, 64]"};
static const kd_cfg_range R_SPLIT = {0, KD_CFG_MAX_INT53, 0, 0, 0,
                                     "a fraction in [0, 1) or a whole number of samples >= 1"};

/* ---------------------------------------------------------------------------------------- */
/* Hooks: the rules a type and a range cannot say. */

/* A source's path, which also settles its format: a missing "format" is guessed from the name. */
static kd_status parse_source_path(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_data_source *src = (kd_data_source *)s->base;
    char raw[KD_PATH_MAX], list[128];
    kd_status st;
    if (v && (st = kd_cfg_get_string(s, k, v, raw, sizeof raw))) return st;
    if (!v)
        return kd_cfg_fail_key(s, k, "missing (required: the %s file or folder)",
                               s->variant == KD_FMT_IMAGES ? "image" : "data");
    if (s->variant < 0) {
        kd_data_format f = KD_FMT_IMAGES;
        struct stat sb;
        /* A folder is an image folder (one subfolder per class) whatever its name. */
        int folder = kd_cfg_resolve(s, k, raw, s->p->base_dir, src->path) == KD_OK &&
                     stat(src->path, &sb) == 0 && S_ISDIR(sb.st_mode);
        if (!folder && kd_data_format_guess(raw, &f) != 0) {
            size_t n;
            const char *const *names = kd_data_format_names(&n);
            return kd_cfg_fail_key(s, kd_cfg_selector(s->sec),
                                   "missing, and \"%s\" does not tell (give %s)", raw,
                                   kd_cfg_list(list, sizeof list, names, n, 0, " or "));
        }
        s->variant = (int)f;
    }
    src->format = (kd_data_format)s->variant;
    return kd_cfg_resolve(s, k, raw, s->p->base_dir, src->path);
}

/* A column name, or an index written as a number (kept as its decimal string). */
static kd_status parse_label_column(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_data_source *src = (kd_data_source *)s->base;
    char got[64];
    if (v && cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) &&
        fabs(v->valuedouble) < 1e9) {
        snprintf(src->label_column, sizeof src->label_column, "%.0f", v->valuedouble);
        return KD_OK;
    }
    if (kd_cfg_parse_value(s, k, v))
        return kd_cfg_fail_key(s, k, "expected a column name, a column index (negative counts "
                               "from the end) or \"none\", got %s",
                               kd_cfg_describe(v, got, sizeof got));
    return KD_OK;
}

/* true, false or "auto" (stored as -1). */
static kd_status parse_header(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    int *h = (int *)(s->base + k->off);
    char got[64];
    if (!v) return KD_OK;
    if (cJSON_IsBool(v)) *h = cJSON_IsTrue(v);
    else if (cJSON_IsString(v) && strcmp(v->valuestring, "auto") == 0) *h = -1;
    else
        return kd_cfg_fail_key(s, k, "expected true, false or \"auto\", got %s",
                               kd_cfg_describe(v, got, sizeof got));
    return KD_OK;
}

static int write_header(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    int h = *(const int *)(o->base + k->off);
    *item = h < 0 ? cJSON_CreateString("auto") : cJSON_CreateBool(h);
    return *item ? 0 : -1;
}

static kd_status parse_delimiter(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    char got[64];
    if (!v) return KD_OK;
    if (!cJSON_IsString(v) || strlen(v->valuestring) != 1 ||
        strchr("\"\r\n.-+0123456789eE", v->valuestring[0]))
        return kd_cfg_fail_key(s, k, "expected one character that cannot occur in a number "
                               "(\",\", \";\", \"\\t\", ...), got %s",
                               kd_cfg_describe(v, got, sizeof got));
    *(s->base + k->off) = v->valuestring[0];
    return KD_OK;
}

static int write_delimiter(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    char d[2] = {*(o->base + k->off), '\0'};
    *item = cJSON_CreateString(d);
    return *item ? 0 : -1;
}

static kd_status parse_channels(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_status st = kd_cfg_parse_value(s, k, v);
    if (!st && ((kd_data_source *)s->base)->channels == 2)
        return kd_cfg_fail_key(s, k, "expected %s, got 2", k->range->desc);
    return st;
}

static kd_status parse_subset_seed(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_status st = kd_cfg_parse_value(s, k, v);
    if (!st && v && ((kd_data_source *)s->base)->subset == 0)
        return kd_cfg_fail_key(s, k, "needs a subset > 0 (the seed picks which subset samples "
                               "are kept)");
    return st;
}

static void source_init(void *base) { kd_data_source_defaults(base); }
static void preprocess_init(void *base) { kd_preprocess_defaults(base); }

/* "auto" (stored as 0: the data module picks 1/255 for 8-bit sources) or a number > 0. */
static kd_status parse_scale(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    char got[64];
    if (!v || (cJSON_IsString(v) && strcmp(v->valuestring, "auto") == 0)) return KD_OK;
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0) || v->valuedouble > FLT_MAX)
        return kd_cfg_fail_key(s, k, "expected a number > 0 or \"auto\", got %s",
                               kd_cfg_describe(v, got, sizeof got));
    *(float *)(s->base + k->off) = (float)v->valuedouble;
    return KD_OK;
}

static int write_scale(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    float x = *(const float *)(o->base + k->off);
    *item = x > 0 ? cJSON_CreateNumber(kd_float_shortest(x)) : cJSON_CreateString("auto");
    return *item ? 0 : -1;
}

/* std comes after mean: both or neither, with one value per channel each (or per feature:
 * preprocess.c). */
static kd_status parse_std(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_preprocess *pp = (kd_preprocess *)s->base;
    char mean_path[KD_CFG_JPATH_MAX];
    int n_mean = pp->n_channels, n_std = 0, per_feature = 0;
    kd_status st = kd_cfg_pp_features(s, k, v, &per_feature);
    if (per_feature) return st;
    st = kd_cfg_get_floats(s, k, v, &n_std);
    if (st) return st;
    if (n_mean && !n_std) return kd_cfg_fail_key(s, k, "missing (required with mean)");
    if (n_std && !n_mean)
        return kd_cfg_fail(s->p, kd_cfg_path_of(CFG(pp) + PP(mean), mean_path),
                           "missing (required with std)");
    if (n_mean != n_std)
        return kd_cfg_fail_key(s, k, "has %d value%s but mean has %d", n_std,
                               n_std == 1 ? "" : "s", n_mean);
    return KD_OK;
}

/* standardize computes a mean and std per feature: given ones would be overwritten. */
static kd_status parse_standardize(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    const kd_preprocess *pp = (const kd_preprocess *)s->base;
    kd_status st = kd_cfg_parse_value(s, k, v);
    if (!st && pp->standardize && (pp->n_channels || pp->n_features))
        return kd_cfg_fail_key(s, k, "true computes a mean and std per feature from the "
                               "training data: give it or mean/std, not both");
    return st;
}

/* The hold-out: a fraction of the training samples, or (a whole number >= 1) a count. */
static kd_status parse_validation_split(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    kd_config *c = s->p->c;
    double split = 0;
    c->val_count = 0;
    c->val_fraction = c->has_val_source ? 0.0f : 0.1f;
    if (!v) return KD_OK;
    kd_status st = kd_cfg_get_number(s, k, v, &split);
    if (st) return st;
    if (c->has_val_source)
        return kd_cfg_fail_key(s, k, "not allowed together with data.validation (validation "
                               "comes from there)");
    if (split >= 1 && split != floor(split))
        return kd_cfg_fail_key(s, k, "expected %s, got %.15g", k->range->desc, split);
    if (split >= 1) c->val_count = (size_t)split, c->val_fraction = 0.0f;
    else c->val_fraction = (float)split;
    return KD_OK;
}

static int write_validation_split(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item) {
    const kd_config *c = o->c;
    (void)k;
    *item = NULL;
    if (c->has_val_source) return 0;
    *item = cJSON_CreateNumber(c->val_count ? (double)c->val_count : kd_float_shortest(c->val_fraction));
    return *item ? 0 : -1;
}

/* Names for the class indices (label i is classes[i]), recorded in checkpoints so eval and
 * predict print names; the trainer checks the count against the data. */
static kd_status parse_classes(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v) {
    char got[64], path[KD_CFG_JPATH_MAX], sub[KD_CFG_JPATH_MAX + 32];
    if (!v) return KD_OK;
    kd_cfg_key_path(s, k, path);
    if (!cJSON_IsArray(v) || !v->child)
        return kd_cfg_fail(s->p, path, "expected a non-empty array of class names, got %s",
                           kd_cfg_describe(v, got, sizeof got));
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        snprintf(sub, sizeof sub, "%s[%d]", path, i);
        if (!cJSON_IsString(e) || !e->valuestring[0])
            return kd_cfg_fail(s->p, sub, "expected a non-empty string, got %s",
                               kd_cfg_describe(e, got, sizeof got));
        for (const cJSON *f = v->child; f != e; f = f->next)
            if (strcmp(f->valuestring, e->valuestring) == 0)
                return kd_cfg_fail(s->p, sub, "\"%s\" is listed twice", e->valuestring);
    }
    return kd_cfg_parse_value(s, k, v);
}

#define IDX ONLY(KD_FMT_IDX)
#define CSV ONLY(KD_FMT_CSV)
#define IMG ONLY(KD_FMT_IMAGES)
static const kd_cfg_key source_keys[] = {
    {"format", CFG_ENUM, .off = SRC(format), .names = kd_data_format_names, .flags = CFG_SELECTOR},
    {"path", CFG_PATH, .off = SRC(path), .cap = SIZE_OF(kd_data_source, path),
     .flags = CFG_CHECK_VARIANTS, .parse = parse_source_path},
    {"labels", CFG_PATH, .off = SRC(labels_path), .cap = SIZE_OF(kd_data_source, labels_path),
     .variants = IDX, .flags = CFG_NONZERO},
    {"label_column", CFG_STRING, .off = SRC(label_column),
     .cap = SIZE_OF(kd_data_source, label_column), .variants = CSV, .flags = CFG_NONZERO,
     .parse = parse_label_column},
    {"header", CFG_CUSTOM, .off = SRC(has_header), .variants = CSV, .parse = parse_header,
     .write = write_header},
    {"delimiter", CFG_CUSTOM, .off = SRC(delimiter), .variants = CSV, .parse = parse_delimiter,
     .write = write_delimiter},
    {"channels", CFG_NUMBER, CFG_INT, SRC(channels), .range = &R_CHANNELS, .variants = IMG,
     .flags = CFG_NONZERO, .parse = parse_channels},
    {"height", CFG_NUMBER, CFG_SIZE, SRC(height), .range = &R_SIDE, .variants = IMG,
     .flags = CFG_NONZERO},
    {"width", CFG_NUMBER, CFG_SIZE, SRC(width), .range = &R_SIDE, .variants = IMG,
     .flags = CFG_NONZERO},
    {"skip_bad", CFG_BOOL, .off = SRC(skip_bad), .variants = IMG},
    {"unlabeled", CFG_BOOL, .off = SRC(unlabeled), .variants = IMG},
    {"subset", CFG_NUMBER, CFG_SIZE, SRC(subset), .range = &R_COUNT0},
    {"subset_seed", CFG_NUMBER, CFG_U64, SRC(subset_seed), .range = &R_SEED,
     .has = OFF1(kd_data_source, subset_seeded), .parse = parse_subset_seed},
};
static const kd_cfg_section source_section = SECTION(source_keys, source_init, 0);

static const kd_cfg_key preprocess_keys[] = {
    {"scale", CFG_CUSTOM, .off = PP(scale), .parse = parse_scale, .write = write_scale},
    {"mean", CFG_FLOATS, .off = PP(mean), .cap = KD_MAX_CHANNELS,
     .count = OFF1(kd_preprocess, n_channels), .range = &R_ANY, .parse = kd_cfg_parse_pp_mean,
     .write = kd_cfg_write_pp_values},
    {"std", CFG_FLOATS, .off = PP(std), .cap = KD_MAX_CHANNELS,
     .count = OFF1(kd_preprocess, n_channels), .range = &R_POS, .parse = parse_std,
     .write = kd_cfg_write_pp_values},
    {"flatten", CFG_BOOL, .off = PP(flatten)},
    {"standardize", CFG_BOOL, .off = PP(standardize), .flags = CFG_NONZERO,
     .parse = parse_standardize},
};
static const kd_cfg_section preprocess_section = SECTION(preprocess_keys, preprocess_init, 0);

static const kd_cfg_key augment_keys[] = {
    {"shift", CFG_NUMBER, CFG_SIZE, AUG(shift), .range = &R_SHIFT},
    {"flip", CFG_BOOL, .off = AUG(flip)},
};
static const kd_cfg_section augment_section = SECTION(augment_keys, NULL, 0);

static const kd_cfg_key data_keys[] = {
    {"train", CFG_SECTION, .off = CFG(train), .sub = &source_section,
     .required = "required: the training data source"},
    {"test", CFG_SECTION, .off = CFG(test), .sub = &source_section,
     .has = OFF1(kd_config, has_test)},
    {"validation", CFG_SECTION, .off = CFG(val), .sub = &source_section,
     .has = OFF1(kd_config, has_val_source)},
    {"validation_split", CFG_CUSTOM, .range = &R_SPLIT, .parse = parse_validation_split,
     .write = write_validation_split},
    {"use_labels", CFG_BOOL, .off = CFG(use_labels), .flags = CFG_DEFAULT, .def = 1},
    {"classes", CFG_JSON, .off = CFG(classes), .parse = parse_classes},
    /* Phases keep the order the parser always had, so a config with two errors still gets
     * the same one reported: augment before preprocess, the layer list before model.input. */
    {"preprocess", CFG_SECTION, .off = CFG(pp), .sub = &preprocess_section, .phase = 1},
    {"augment", CFG_SECTION, .off = CFG(augment), .sub = &augment_section, .flags = CFG_NONZERO},
};
const kd_cfg_section kd_cfg_data_section = SECTION(data_keys, NULL, 0);
