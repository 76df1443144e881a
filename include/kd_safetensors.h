/* kd_safetensors.h - safetensors files: a validating reader for files written by anyone and
 * an atomic writer. Format: u64 LE header length N, N bytes of JSON
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
 * then the raw little-endian tensor bytes. */
#ifndef KD_SAFETENSORS_H
#define KD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"

#define KD_ST_MAX_HEADER (100u << 20)  /* header length cap (as the reference reader) */
#define KD_ST_MAX_RANK 8

typedef enum { KD_DT_F32, KD_DT_F16, KD_DT_BF16, KD_DT_I8, KD_DT_U8, KD_DT_I32, KD_DT_I64 } kd_dtype;
const char *kd_dtype_name(kd_dtype t);
size_t kd_dtype_size(kd_dtype t);

typedef struct {
    char *name;
    kd_dtype dtype;
    int rank;
    uint64_t shape[KD_ST_MAX_RANK];
    uint64_t numel;
    uint64_t begin, end;       /* byte range within the data section */
    const uint8_t *data;       /* points into the file's data section */
} kd_st_tensor;

typedef struct {
    char *path;
    size_t n_tensors;
    kd_st_tensor *tensors;     /* in data-offset order */
    size_t n_meta;
    char **meta_keys, **meta_vals;
    uint8_t *blob;             /* whole file */
    size_t blob_size;
    size_t header_len;
} kd_st_file;

/* Reads and validates a whole file (every check of DESIGN.md section 3). KD_EINPUT with a
 * message naming the file and tensor; KD_EIO if it cannot be opened. */
kd_status kd_st_read(kd_st_file *f, const char *path, kd_err *err);
void kd_st_free(kd_st_file *f);  /* NULL-safe on a zeroed struct */
const kd_st_tensor *kd_st_find(const kd_st_file *f, const char *name);
const char *kd_st_meta(const kd_st_file *f, const char *key);
/* Converts any numeric tensor to float32 (F16/BF16/ints widened) into out (numel floats). */
void kd_st_to_f32(const kd_st_tensor *t, float *out);

/* A tensor to write: data holds numel * dtype_size bytes in native (little-endian) order. */
typedef struct {
    const char *name;
    kd_dtype dtype;
    int rank;
    uint64_t shape[KD_ST_MAX_RANK];
    const void *data;
} kd_st_out;

/* Writes tensors in the given order (offsets contiguous from 0) and metadata key/value string
 * pairs, header padded with spaces to a multiple of 8, atomically (kd_write_atomic). */
kd_status kd_st_write(const char *path, const kd_st_out *tensors, size_t n_tensors,
                      const char *const *meta_keys, const char *const *meta_vals, size_t n_meta,
                      kd_err *err);

#endif
