/* format.c - the table of data formats: each format's config name, the file names it is
 * guessed from, and its reader's operations (data_impl.h). */
#include <string.h>

#include "data_impl.h"
#include "kd_path.h"

typedef struct {
    const char *const *suffixes;   /* names ending so imply the format */
    const char *marker;            /* ... or containing this (NULL: none) */
    const kd_format_ops *ops;
} format_desc;

static const char *const idx_suffixes[] = {".idx", ".idx.gz", NULL};
static const char *const csv_suffixes[] = {".csv", ".tsv", ".csv.gz", NULL};
static const char *const no_suffixes[] = {NULL};

/* Both indexed by kd_data_format (names apart because kd_data_format_names hands out the
 * array). */
static const char *const names[] = {[KD_FMT_IDX] = "idx", [KD_FMT_CSV] = "csv",
                                    [KD_FMT_IMAGES] = "images"};
#define N_FORMATS (sizeof names / sizeof names[0])
static const format_desc formats[N_FORMATS] = {
    [KD_FMT_IDX] = {idx_suffixes, "ubyte", &kd_idx_format_ops},
    [KD_FMT_CSV] = {csv_suffixes, NULL, &kd_csv_format_ops},
    [KD_FMT_IMAGES] = {no_suffixes, NULL, &kd_images_format_ops},
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

const kd_format_ops *kd_data_format_ops(kd_data_format f) {
    return (size_t)f < N_FORMATS ? formats[f].ops : NULL;
}

int kd_data_format_guess(const char *path, kd_data_format *out) {
    /* Every suffix before any marker: "runs/ubyte/x.csv" is a CSV whatever its folder is
     * called. (A name ends in at most one of the suffixes, so the table order does not
     * matter.) */
    for (int pass = 0; pass < 2; pass++)
        for (size_t f = 0; f < N_FORMATS; f++) {
            const format_desc *d = &formats[f];
            int hit = 0;
            if (pass == 0)
                for (const char *const *s = d->suffixes; *s && !hit; s++)
                    hit = kd_path_has_suffix(path, *s, 0);
            else
                hit = d->marker && strstr(path, d->marker);
            if (hit) {
                *out = (kd_data_format)f;
                return 0;
            }
        }
    return -1;
}
