/* format.c - the table of data formats: each format's config name and the file names it is
 * guessed from. */
#include <string.h>

#include "kd_data.h"

typedef struct {
    const char *const *suffixes;   /* names ending so imply the format */
    const char *marker;            /* ... or containing this (NULL: none) */
} format_desc;

static const char *const idx_suffixes[] = {".idx", ".idx.gz", NULL};
static const char *const csv_suffixes[] = {".csv", ".tsv", ".csv.gz", NULL};
static const char *const no_suffixes[] = {NULL};

/* Both indexed by kd_data_format. */
static const char *const names[] = {[KD_FMT_IDX] = "idx", [KD_FMT_CSV] = "csv",
                                    [KD_FMT_IMAGES] = "images"};
#define N_FORMATS (sizeof names / sizeof names[0])
static const format_desc formats[N_FORMATS] = {
    [KD_FMT_IDX] = {idx_suffixes, "ubyte"},
    [KD_FMT_CSV] = {csv_suffixes, NULL},
    [KD_FMT_IMAGES] = {no_suffixes, NULL},
};

const char *kd_data_format_name(kd_data_format f) {
    return (size_t)f < N_FORMATS ? names[f] : "?";
}

const char *const *kd_data_format_names(size_t *n) {
    *n = N_FORMATS;
    return names;
}

int kd_data_format_find(const char *name, kd_data_format *out) {
    for (size_t i = 0; i < N_FORMATS; i++)
        if (strcmp(names[i], name) == 0) {
            *out = (kd_data_format)i;
            return 0;
        }
    return -1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

int kd_data_format_guess(const char *path, kd_data_format *out) {
    /* csv first: "x.csv" must not match idx's "ubyte" marker by accident of a folder name. */
    static const kd_data_format order[] = {KD_FMT_CSV, KD_FMT_IDX, KD_FMT_IMAGES};
    for (size_t k = 0; k < N_FORMATS; k++) {
        const format_desc *d = &formats[order[k]];
        int hit = d->marker && strstr(path, d->marker);
        for (const char *const *s = d->suffixes; *s && !hit; s++) hit = ends_with(path, *s);
        if (hit) {
            *out = order[k];
            return 0;
        }
    }
    return -1;
}
