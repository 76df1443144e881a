/* dtype.c - the table of export dtype codecs (kd_dtype.h): f32, f16, bf16 and int8 with per-row
 * scales, each an encode and a decode function. Stored values are read and written with memcpy
 * because they sit at any alignment in a file. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kd_dtype.h"

static void f32_encode(const float *x, size_t rows, size_t cols, void *q, float *scale) {
    (void)scale;
    memcpy(q, x, rows * cols * sizeof(float));
}

static void f32_decode(const void *q, const void *scale, size_t rows, size_t cols, float *x) {
    (void)scale;
    memcpy(x, q, rows * cols * sizeof(float));
}

/* The 16-bit formats differ only in the scalar conversion. */
static void encode16(const float *x, size_t n, uint8_t *q, uint16_t (*conv)(float)) {
    for (size_t i = 0; i < n; i++) {
        uint16_t h = conv(x[i]);
        memcpy(q + 2 * i, &h, 2);
    }
}

static void decode16(const uint8_t *q, size_t n, float *x, float (*conv)(uint16_t)) {
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, q + 2 * i, 2);
        x[i] = conv(h);
    }
}

static void f16_encode(const float *x, size_t rows, size_t cols, void *q, float *scale) {
    (void)scale;
    encode16(x, rows * cols, q, kd_f32_to_f16);
}

static void f16_decode(const void *q, const void *scale, size_t rows, size_t cols, float *x) {
    (void)scale;
    decode16(q, rows * cols, x, kd_f16_to_f32);
}

static void bf16_encode(const float *x, size_t rows, size_t cols, void *q, float *scale) {
    (void)scale;
    encode16(x, rows * cols, q, kd_f32_to_bf16);
}

static void bf16_decode(const void *q, const void *scale, size_t rows, size_t cols, float *x) {
    (void)scale;
    decode16(q, rows * cols, x, kd_bf16_to_f32);
}

static void int8_encode(const float *x, size_t rows, size_t cols, void *q, float *scale) {
    int8_t *out = q;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float mx = 0.0f;
        for (size_t c = 0; c < cols; c++)
            if (fabsf(xr[c]) > mx) mx = fabsf(xr[c]);
        /* An all-zero row gets scale 1 (not 0) so that q * scale stays exact and no reader
         * divides by zero; its q are all 0 anyway. */
        float s = mx > 0.0f ? mx / 127.0f : 1.0f;
        scale[r] = s;
        for (size_t c = 0; c < cols; c++) {
            float v = roundf(xr[c] / s);
            if (v > 127.0f) v = 127.0f;
            if (v < -127.0f) v = -127.0f;
            out[r * cols + c] = (int8_t)v;
        }
    }
}

static void int8_decode(const void *q, const void *scale, size_t rows, size_t cols, float *x) {
    const int8_t *in = q;
    for (size_t r = 0; r < rows; r++) {
        float s;
        memcpy(&s, (const uint8_t *)scale + r * sizeof s, sizeof s);
        for (size_t c = 0; c < cols; c++) x[r * cols + c] = (float)in[r * cols + c] * s;
    }
}

static const kd_codec codecs[] = {
    {"f32", KD_DT_F32, 0, NULL, f32_encode, f32_decode},
    {"f16", KD_DT_F16, 0, NULL, f16_encode, f16_decode},
    {"bf16", KD_DT_BF16, 0, NULL, bf16_encode, bf16_decode},
    {"int8", KD_DT_I8, 1, "int8 symmetric per output row; w = q * scale", int8_encode,
     int8_decode},
};
#define N_CODECS (sizeof codecs / sizeof codecs[0])

const kd_codec *kd_codec_find(const char *name) {
    for (size_t i = 0; i < N_CODECS; i++)
        if (strcmp(codecs[i].name, name) == 0) return &codecs[i];
    return NULL;
}

const kd_codec *kd_codec_for(kd_dtype t) {
    for (size_t i = 0; i < N_CODECS; i++)
        if (codecs[i].stored == t) return &codecs[i];
    return NULL;
}

const kd_codec *kd_codec_all(size_t *n) {
    *n = N_CODECS;
    return codecs;
}

void kd_codec_names(char *buf, size_t cap) {
    size_t len = 0;
    if (cap) buf[0] = '\0';
    for (size_t i = 0; i < N_CODECS && len < cap; i++) {
        const char *sep = i == 0 ? "" : i + 1 == N_CODECS ? " or " : ", ";
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", sep, codecs[i].name);
    }
}

int kd_codec_scale_name(const char *tensor, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "%s" KD_CODEC_SCALE_SUFFIX, tensor);
    return n >= 0 && (size_t)n < cap ? 0 : -1;
}
