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

/* A list of 1..max objects (teacher.ensemble, distill.losses), each parsed with sec into
 * base + i * stride and named PATH[i] in messages; noun and the examples word the messages. */
typedef struct {
    const kd_cfg_section *sec;
    char *base;
    size_t stride;
    int max;
    const char *noun, *list_example, *object_example;
} kd_cfg_obj_list;
kd_status kd_cfg_parse_section_list(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v,
                                    const kd_cfg_obj_list *l, size_t *n_out);
/* The n objects of such a list as a JSON array (*item; -1 when out of memory). */
int kd_cfg_write_section_list(const kd_cfg_out *o, const kd_cfg_section *sec, const char *base,
                              size_t stride, size_t n, cJSON **item);

/* A layer list: a non-empty array of objects with a string "type" (model.layers, the
 * teachers' layers; schema.c). */
kd_status kd_cfg_parse_layers(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v);

/* The teacher section (schema_teacher.c), a key of the root table (schema.c). */
extern const kd_cfg_section kd_cfg_teacher_section;

#endif
