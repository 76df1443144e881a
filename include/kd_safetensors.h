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
#define KD_DT_COUNT 7
const char *kd_dtype_name(kd_dtype t);
size_t kd_dtype_size(kd_dtype t);
/* Parses a safetensors dtype name ("F32"); returns 0 and sets *t, or -1 if unknown. */
int kd_dtype_parse(const char *name, kd_dtype *t);
/* Comma-separated supported dtype names, for messages. */
const char *kd_dtype_list(void);

/* Returns 1 if s[0..n) is valid UTF-8 (no overlongs, surrogates or code points > U+10FFFF);
 * else 0 and *bad_offset = offset of the first bad byte (bad_offset may be NULL). */
int kd_utf8_valid(const void *s, size_t n, size_t *bad_offset);

/* IEEE half and bfloat16 conversions (half.c). float -> 16 bits rounds to nearest, ties to
 * even; overflow gives infinity; NaN stays NaN (quiet); f16 subnormals are exact. */
uint16_t kd_f32_to_f16(float x);
float kd_f16_to_f32(uint16_t h);
uint16_t kd_f32_to_bf16(float x);
float kd_bf16_to_f32(uint16_t h);

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

/* Reads and validates a whole file (every check of docs/design.md). KD_EINPUT with a
 * message naming the file and tensor (also when it cannot be opened, as kd_read_file);
 * KD_EIO for out of memory / read errors. On failure *f is zeroed (kd_st_free is a no-op). */
kd_status kd_st_read(kd_st_file *f, const char *path, kd_err *err);
void kd_st_free(kd_st_file *f);  /* NULL-safe on a zeroed struct */
const kd_st_tensor *kd_st_find(const kd_st_file *f, const char *name);
const char *kd_st_meta(const kd_st_file *f, const char *key);
/* t's shape as "[2, 3]" ("[]" for a scalar) into buf (truncated to cap); returns buf. */
const char *kd_st_shape_str(const kd_st_tensor *t, char *buf, size_t cap);
/* Converts any numeric tensor to float32 (F16/BF16/ints widened) into out (numel floats). */
void kd_st_to_f32(const kd_st_tensor *t, float *out);
/* Reads element i of a tensor as int64 (floats truncated toward 0; NaN / out of range give 0). */
int64_t kd_st_get_i64(const kd_st_tensor *t, uint64_t i);

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
