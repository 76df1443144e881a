/* data_impl.h - private to src/data (and its tests): the table of data formats behind
 * kd_dataset_open, each format's reader, and the decoders they share. include/
 * kd_data.h is the module's public API; nothing outside src/data includes this file. */
#ifndef KD_DATA_IMPL_H
#define KD_DATA_IMPL_H

#include "kd_data.h"

/* ---- The format table ----
 * Each data format is one reader (its own file) with one row of operations in the table of
 * src/data/format.c. dataset.c does everything format-independent on top of it (subset,
 * preprocessing, labels, skip_bad's zero samples) and loader.c asks the row whether to decode
 * in a background thread. Adding a format: a reader file defining its kd_format_ops, a value in
 * kd_data_format (kd_data.h), and one row (name, file-name hints, ops) in format.c; its config
 * keys go in the config module's table. */

/* What a reader knows about its source once open. Pointers are owned by the reader and live
 * until its close. */
typedef struct {
    size_t n;                /* samples in the source */
    kd_shape shape;          /* per-sample shape as read: [C, H, W] or [D] */
    const int32_t *labels;   /* n labels, or NULL (unlabeled) */
    size_t n_classes;        /* from class names or max label + 1; 0 if unknown */
    char **class_names;      /* n_classes names, or NULL */
    int u8;                  /* raw values are bytes 0..255: the default scale is 1/255 */
    size_t n_skipped;        /* files left out at open (image folders with skip_bad) */
    const char *skip_note;   /* "skipped N undecodable images (first: ...)", or NULL */
} kd_reader_info;

typedef struct {
    /* Opens src (reads the index, the header or the compact data) into *handle and *info.
     * Errors: KD_EINPUT naming the file and where; KD_EUSAGE for settings the format refuses. */
    kd_status (*open)(const kd_data_source *src, void **handle, kd_reader_info *info,
                      kd_err *err);
    /* Raw values (before preprocessing) of source sample s, numel(info.shape) floats laid out
     * as info.shape. Thread-safe: the loader's worker calls it. KD_EINPUT when the sample cannot
     * be decoded (with data.skip_bad the dataset delivers zeros instead). */
    kd_status (*read)(const void *handle, size_t s, float *out, kd_err *err);
    void (*close)(void *handle);   /* NULL-safe */
    /* Reading a sample is slow (a file to decode): the loader decodes batches ahead in a
     * thread instead of converting on demand (KD_LOADER_AUTO). */
    int decodes_per_batch;
} kd_format_ops;

/* The operations of format f; NULL for a value outside kd_data_format. */
const kd_format_ops *kd_data_format_ops(kd_data_format f);

/* The rows, one per reader file (idx.c, csv.c, imagefolder.c). */
extern const kd_format_ops kd_idx_format_ops, kd_csv_format_ops, kd_images_format_ops;

/* ---- Compact in-memory sources (IDX, CSV): the whole source decoded at open ---- */

/* Compact in-memory data: exactly one of u8 / f32 holds n * numel values. */
typedef struct {
    size_t n;
    kd_shape shape;       /* per-sample shape as read ([1,H,W] for rank-3 IDX, [D] for rank 2) */
    uint8_t *u8;          /* malloc'd, or NULL */
    float *f32;           /* malloc'd, or NULL */
    int32_t *labels;      /* n labels, or NULL (unlabeled) */
    size_t n_classes;
    char **class_names;   /* n_classes malloc'd strings, or NULL */
} kd_data_mem;
void kd_data_mem_free(kd_data_mem *m);  /* frees the members, zeroes m */
/* m->class_names for m->n_classes classes: names[c] for the first k, the class number ("7")
 * after them (names may be NULL when k is 0: numeric labels). */
kd_status kd_data_name_classes(kd_data_mem *m, char *const *names, size_t k, kd_err *err);

/* The shared reader over kd_data_mem (mem.c): open runs load (kd_idx_load, kd_csv_load) and
 * describes the result; read converts one sample (u8 or f32) to floats. */
kd_status kd_data_mem_open(const kd_data_source *src,
                           kd_status (*load)(const kd_data_source *, kd_data_mem *, kd_err *),
                           void **handle, kd_reader_info *info, kd_err *err);
kd_status kd_data_mem_read(const void *handle, size_t s, float *out, kd_err *err);
void kd_data_mem_close(void *handle);

/* zlib's message for f, without the "path: " prefix gzerror puts on it (our messages name the
 * file themselves); *zerr gets zlib's error code. */
typedef struct gzFile_s *gzFile;
const char *kd_gz_msg(gzFile f, const char *path, int *zerr);
/* Reads a whole text file, gzip-compressed or not (zlib reads plain files as they are), into a
 * NUL-terminated buffer (caller frees), refusing more than max_bytes of content: the buffer
 * grows with what actually arrives, so a small compressed file cannot make us allocate a large
 * claimed size. *compressed tells which it was (may be NULL). KD_EINPUT names the file and the
 * offset of a corrupt stream. */
kd_status kd_data_read_all(const char *path, size_t max_bytes, char **out, size_t *len,
                           int *compressed, kd_err *err);

/* IDX: one file into rank/dims and values (u8 kept as u8, other types as float). */
typedef struct {
    int type;             /* 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64 */
    int rank;
    size_t dims[4];
    uint8_t *u8;
    float *f32;
} kd_idx;
kd_status kd_idx_read(const char *path, kd_idx *out, kd_err *err);
void kd_idx_free(kd_idx *x);
kd_status kd_idx_load(const kd_data_source *src, kd_data_mem *out, kd_err *err);
kd_status kd_csv_load(const kd_data_source *src, kd_data_mem *out, kd_err *err);

/* ---- Image folders: an index of files at open, each image decoded when read ---- */

/* Image folder index: file paths (one string pool) and labels; images are decoded per batch. */
typedef struct {
    size_t n;
    char *pool;           /* NUL-separated paths */
    size_t *offsets;      /* n offsets into pool */
    int32_t *labels;      /* n labels, or NULL (unlabeled) */
    size_t n_classes;
    char **class_names;
    size_t n_skipped;
    char *skip_note;
} kd_image_index;
kd_status kd_image_index_build(const kd_data_source *src, kd_image_index *out, kd_err *err);
void kd_image_index_free(kd_image_index *ix);
/* What kd_image_header says of an image file's first bytes (image_check.c): its size is within
 * the caps (KD_IMAGE_MAX_SIDE, KD_IMAGE_MAX_PIXELS) and nothing in its structure is known to
 * break stb_image; or why not, in why (cap bytes). whole = 0: buf is only the first bytes of
 * the file, and what is not there is not judged. */
typedef enum { KD_IMAGE_OK = 0, KD_IMAGE_BAD = 1, KD_IMAGE_TOO_LARGE = 2 } kd_image_verdict;
kd_image_verdict kd_image_header(const unsigned char *buf, size_t len, int whole, int *w, int *h,
                                 char *why, size_t cap);
/* Decodes path into raw [channels, height, width] values in 0..255 (bilinear resize). */
kd_status kd_image_decode(const char *path, int channels, size_t height, size_t width, float *out,
                          kd_err *err);
/* Bilinear resize of one [H, W] plane with half-pixel centres (like PIL/torch without
 * antialias); src is (sh, sw), dst is (dh, dw), both row-major. */
void kd_resize_bilinear(const float *src, size_t sh, size_t sw, float *dst, size_t dh, size_t dw);

#endif
