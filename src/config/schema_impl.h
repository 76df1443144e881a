/* schema_impl.h - what the two files of the config schema share (schema.c: the model, teacher,
 * training and output sections and the walk; schema_data.c: the data section): the macros that
 * write a table entry and the ranges both use. Private to src/config. */
#ifndef KD_SCHEMA_IMPL_H
#define KD_SCHEMA_IMPL_H

#include <float.h>

#include "config_impl.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define CFG(f) offsetof(kd_config, f)
#define SRC(f) offsetof(kd_data_source, f)
#define PP(f) offsetof(kd_preprocess, f)
#define AUG(f) offsetof(kd_augment, f)
#define DIS(f) offsetof(kd_distill_cfg, f)
#define TCH(f) offsetof(kd_teacher_cfg, f)
#define CACHE(f) offsetof(kd_cache_cfg, f)
#define SIZE_OF(T, f) sizeof(((T *)0)->f)
#define OFF1(T, f) (offsetof(T, f) + 1) /* "1 + offset" fields: 0 means none */
#define ONLY(v) (1u << (v))
#define SECTION(keys, init, flags) {keys, N_OF(keys), init, flags}

static const kd_cfg_range R_POS = {0, FLT_MAX, 1, 0, 0, "a number > 0"};
static const kd_cfg_range R_ANY = {-FLT_MAX, FLT_MAX, 0, 0, 0, "a number"};
static const kd_cfg_range R_SEED = {0, KD_CFG_MAX_INT53, 0, 0, 1, "an integer in [0, 2^53)"};
static const kd_cfg_range R_COUNT0 = {0, KD_CFG_MAX_INT53, 0, 0, 1, "an integer >= 0"};

/* The data section (schema_data.c), a key of the root table (schema.c). */
extern const kd_cfg_section kd_cfg_data_section;

#endif
