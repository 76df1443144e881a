/* kd_dtype.h - the export dtypes in one table of codecs (src/io/dtype.c): how float values are
 * stored as f32, f16, bf16 or int8 and read back. The export writer (kd_export_write) encodes
 * with it and the checkpoint reader (kd_ckpt_load) decodes with it, so a dtype is one table row
 * plus its two functions.
 *
 * Each codec stores values in one safetensors dtype, its own (none shares one), so a file
 * tensor's dtype names the codec that decodes it. Errors of a round trip x -> encode -> decode:
 *   f32   exact.
 *   f16   IEEE half, round to nearest even: within 2^-11 relative for |x| in [2^-14, 65504];
 *         below that, within 2^-25 absolute (subnormals); above, infinity.
 *   bf16  bfloat16, round to nearest even: within 2^-8 relative for normal floats (the few
 *         within 2^-9 relative of FLT_MAX round to infinity).
 *   int8  symmetric per output row: scale[r] = max|x[r,:]| / 127 (1 for an all-zero row, so
 *         zeros stay exact), q = round(x / scale) clamped to [-127, 127], x' = q * scale[r]:
 *         within scale[r] / 2 (plus float rounding of the division and product). */
#ifndef KD_DTYPE_H
#define KD_DTYPE_H

#include <stddef.h>
#include "kd_safetensors.h"

/* A row-scaled tensor "<name>" keeps its scales, F32 [rows], in "<name>" KD_CODEC_SCALE_SUFFIX. */
#define KD_CODEC_SCALE_SUFFIX "_scale"

typedef struct {
    const char *name;       /* "f32", "f16", "bf16", "int8": `export --dtype`, metadata "dtype" */
    kd_dtype stored;        /* safetensors dtype of the stored values; bytes per value are
                               kd_dtype_size(stored) */
    int row_scales;         /* 1: the values of row r are decoded with scale[r] (x is viewed as
                               (rows, cols), rows = its first dimension) */
    const char *scheme;     /* metadata "quantization" written with the dtype, or NULL */
    /* x (rows * cols floats) -> q (rows * cols stored values, little-endian, any alignment) and,
     * for row_scales codecs, scale (rows floats; NULL otherwise). */
    void (*encode)(const float *x, size_t rows, size_t cols, void *q, float *scale);
    /* q (and scale: rows little-endian F32 values, for row_scales codecs) -> x. q and scale may
     * point into a file at any alignment. */
    void (*decode)(const void *q, const void *scale, size_t rows, size_t cols, float *x);
} kd_codec;

/* The codec named name ("int8"); NULL if none. */
const kd_codec *kd_codec_find(const char *name);
/* The codec that stores values as safetensors dtype t; NULL if none (U8, I32, I64). */
const kd_codec *kd_codec_for(kd_dtype t);
/* Every codec in table order, *n set to their count. */
const kd_codec *kd_codec_all(size_t *n);
/* The names for messages, "f32, f16, bf16 or int8", into buf (truncated to cap). */
void kd_codec_names(char *buf, size_t cap);
/* "<tensor>_scale" into buf; -1 if it does not fit in cap bytes. */
int kd_codec_scale_name(const char *tensor, char *buf, size_t cap);

#endif
