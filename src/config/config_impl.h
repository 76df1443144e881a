/* config_impl.h - what the files of the config module share: the declarative key table (one
 * entry per key drives validation, parsing, the resolved write-back and the --set walker), the
 * parse context and its error helpers. Private to src/config; tests include it to walk the table.
 *
 * Adding a key: one entry in its section's table in schema.c (name, kind, where the value goes,
 * range, default, variants). A key that needs custom code gets a parse and/or write hook in that
 * entry; nothing else in the module names it. Then document it in configs/README.md (a test
 * checks that every key of the table appears there). */
#ifndef KD_CONFIG_IMPL_H
#define KD_CONFIG_IMPL_H

#include <cJSON.h>
#include <stddef.h>

#include "kd_config.h"

#define KD_CFG_JPATH_MAX 512
/* Integers above 2^53 do not survive a JSON number (a double), so seeds and counts stop there. */
#define KD_CFG_MAX_INT53 9007199254740991.0

/* A numeric range and the words the message uses for it ("expected a number > 0, got ..."). */
typedef struct {
    double lo, hi;
    int lo_open, hi_open;  /* exclusive bounds */
    int integer;
    const char *desc;
} kd_cfg_range;

typedef enum {
    CFG_NUMBER,   /* a JSON number in `range`, stored as `store` */
    CFG_BOOL,     /* true/false into an int */
    CFG_STRING,   /* a non-empty string into char[cap] */
    CFG_PATH,     /* a non-empty string resolved against the config's directory into char[cap] */
    CFG_ENUM,     /* one of names(), its index stored into an int-sized enum */
    CFG_FLOATS,   /* a number or an array of 1..cap numbers (one per channel) into float[cap],
                     how many into the int at `count` */
    CFG_SECTION,  /* an object described by `sub`, its values stored from base + off */
    CFG_JSON,     /* any JSON kept as given (a cJSON * at off, owned by the config) */
    CFG_CUSTOM,   /* the parse and write hooks do everything */
} kd_cfg_kind;

typedef enum { CFG_FLOAT, CFG_DOUBLE, CFG_SIZE, CFG_U64, CFG_INT } kd_cfg_store;

enum {
    CFG_SELECTOR = 1u << 0,        /* this enum picks the section's variant */
    CFG_CHECK_VARIANTS = 1u << 1,  /* after this key, every key given must be used by the variant */
    CFG_DEFAULT = 1u << 2,         /* `def` is stored before parsing */
    CFG_CWD = 1u << 3,             /* a path relative to the current directory, not the config's */
    CFG_NONZERO = 1u << 4,         /* written back only when non-zero / non-empty (a section: when
                                      any value in it is) */
    CFG_ALT_PREV = 1u << 5,        /* an alternative to the key before it: not both given, and
                                      written back only when that one was not */
    CFG_INDEXED = 1u << 6,         /* a list that --set may index with [N]; its inside is opaque */
};

/* Section flags: how "not used by ..." messages read. */
enum {
    CFG_NOUN_IS_SECTION = 1u << 0, /* "not used by optimizer ..." (else: by the selector's name) */
    CFG_LIST_USERS = 1u << 1,      /* append "(only by "a" and "b")" */
};

typedef struct kd_cfg_key kd_cfg_key;
typedef struct kd_cfg_section kd_cfg_section;

/* The whole parse: the config's name in messages, where paths resolve, the overrides to blame. */
typedef struct {
    const char *file;
    char base_dir[KD_PATH_MAX];   /* absolute directory relative paths resolve against */
    char cwd[KD_PATH_MAX];        /* absolute current directory (CFG_CWD paths) */
    const char *const *overrides;
    size_t n_overrides;
    kd_config *c;
    kd_err *err;
} kd_cfg_ctx;

/* One section being parsed. */
typedef struct {
    kd_cfg_ctx *p;
    const kd_cfg_section *sec;
    const cJSON *obj;   /* NULL when the section is absent */
    const char *path;   /* its JSON path ("" at the top) */
    const char *name;   /* its key in the parent (NULL at the top) */
    char *base;         /* the C struct its values go to */
    int variant;        /* the selector's value; -1 while unknown */
} kd_cfg_sec;

/* One section being written back. */
typedef struct {
    const kd_config *c;
    const char *base;
    int variant;
} kd_cfg_out;

/* A parse hook replaces the default handling of its key (it may call kd_cfg_parse_value for
 * the typed part); v is NULL when the key is absent. A write hook sets *item to the value to
 * write under the key's name (NULL: omit it); it returns -1 only for out-of-memory. */
typedef kd_status (*kd_cfg_parse_fn)(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v);
typedef int (*kd_cfg_write_fn)(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item);

struct kd_cfg_key {
    const char *name;
    kd_cfg_kind kind;
    kd_cfg_store store;                   /* CFG_NUMBER: the C type at off */
    size_t off;                           /* the value's place from the section's base */
    size_t cap;                           /* STRING/PATH: bytes at off; FLOATS: floats */
    size_t has;                           /* 1 + offset of an int set when the key is given;
                                             written back only when set (0: none) */
    size_t count;                         /* FLOATS: 1 + offset of the int counting them */
    const kd_cfg_range *range;            /* NUMBER; FLOATS (each value) */
    const char *const *(*names)(size_t *n);  /* ENUM: the names, in enum order */
    const kd_cfg_section *sub;            /* SECTION */
    unsigned variants;                    /* bit v: used when the selector is v (0: always) */
    unsigned flags;
    double def;                           /* CFG_DEFAULT */
    const char *required;                 /* absent is "missing (<required>)"; NULL: optional */
    const char *unused_note;              /* replaces "(only by ...)" in "not used by" */
    int phase;                            /* -1 / 0 / 1: parsed before / with / after the
                                             other keys (table order is the JSON's order) */
    kd_cfg_parse_fn parse;
    kd_cfg_write_fn write;
};

struct kd_cfg_section {
    const kd_cfg_key *keys;
    size_t n;
    void (*init)(void *base);  /* defaults the table does not hold (NULL: none) */
    unsigned flags;
};

/* The whole schema: the top-level keys of a config (schema.c). */
extern const kd_cfg_section kd_cfg_root;

/* ---- Lookups (schema walk) ---- */
const kd_cfg_key *kd_cfg_find(const kd_cfg_section *sec, const char *name);
const kd_cfg_key *kd_cfg_selector(const kd_cfg_section *sec);  /* NULL: no variants */
/* Visits every key depth-first in table order with its JSON path and the offset of its value
 * in kd_config; a nonzero return from fn stops the walk and is returned. */
typedef int (*kd_cfg_visit_fn)(const char *path, const kd_cfg_key *k, const kd_cfg_section *sec,
                               size_t off, void *user);
int kd_cfg_walk(kd_cfg_visit_fn fn, void *user);
/* The JSON path of the key whose value lies at offset off of kd_config (for messages about one
 * key that another key's rule finds). */
const char *kd_cfg_path_of(size_t off, char *buf);
/* "a", "b" and "c" (quoted names joined by ", " and `last`) into buf. */
const char *kd_cfg_list(char *buf, size_t cap, const char *const *names, size_t n,
                        unsigned mask, const char *last);

/* ---- Messages: "FILE: json.path: problem[ (from --set ...)]", always KD_EUSAGE ---- */
kd_status kd_cfg_fail(kd_cfg_ctx *p, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
kd_status kd_cfg_fail_key(kd_cfg_sec *s, const kd_cfg_key *k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* For errors in a --set itself (ov is the --set that is wrong). */
kd_status kd_cfg_fail_set(kd_cfg_ctx *p, const char *path, const char *ov, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
kd_status kd_cfg_oom(kd_cfg_ctx *p);  /* KD_EIO "FILE: out of memory" */
kd_status kd_cfg_unknown_key(kd_cfg_ctx *p, const char *path, const char *ov, const char *key,
                             const kd_cfg_section *sec);
const char *kd_cfg_join(char *buf, const char *parent, const char *key);  /* "parent.key" */
const char *kd_cfg_key_path(const kd_cfg_sec *s, const kd_cfg_key *k, char *buf);
const char *kd_cfg_describe(const cJSON *v, char *buf, size_t cap);  /* for "got ..." */

/* ---- Parsing (parse.c) ---- */
kd_status kd_cfg_parse_section(kd_cfg_ctx *p, const kd_cfg_section *sec, const cJSON *obj,
                               const char *path, const char *name, char *base);
/* The default handling of a key by its kind (what a key without a parse hook gets). */
kd_status kd_cfg_parse_value(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v);
/* Duplicate and unknown keys of one JSON object against a section's table. */
kd_status kd_cfg_check_keys(kd_cfg_ctx *p, const cJSON *obj, const kd_cfg_section *sec,
                            const char *path);
/* The typed readers under it, for hooks: each checks v (non-NULL) and reports with k's path. */
kd_status kd_cfg_get_number(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v, double *out);
kd_status kd_cfg_get_string(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v, char *out,
                            size_t cap);
kd_status kd_cfg_get_floats(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v, int *n);
/* raw resolved against base (absolute) into out (KD_PATH_MAX), errors naming k. */
kd_status kd_cfg_resolve(kd_cfg_sec *s, const kd_cfg_key *k, const char *raw, const char *base,
                         char *out);
/* Stores x into k's place as k->store says. */
void kd_cfg_store_number(char *base, const kd_cfg_key *k, double x);
double kd_cfg_load_number(const char *base, const kd_cfg_key *k);

/* ---- The resolved config (write.c) and --set (override.c) ---- */
cJSON *kd_cfg_write_resolved(const kd_config *c);  /* NULL on out-of-memory */
int kd_cfg_write_value(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item);

/* data.preprocess.mean/std with one value per feature (preprocess.c). kd_cfg_pp_features
 * takes an array longer than the per-channel values (or std after such a mean) into the
 * per-feature statistics and sets *handled; otherwise leaves the key to its usual parse. */
kd_status kd_cfg_pp_features(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v, int *handled);
kd_status kd_cfg_parse_pp_mean(kd_cfg_sec *s, const kd_cfg_key *k, const cJSON *v);
int kd_cfg_write_pp_values(const kd_cfg_out *o, const kd_cfg_key *k, cJSON **item);
/* Writes the keys of sec with their values at base into obj: 0, or -1 on out-of-memory (obj
 * then holds part of the section; the caller deletes it). */
int kd_cfg_write_section(const kd_cfg_section *sec, const kd_config *c, const char *base,
                         cJSON *obj);
kd_status kd_cfg_apply_override(kd_cfg_ctx *p, cJSON *root, const char *ov);

#endif
