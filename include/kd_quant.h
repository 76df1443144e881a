/* kd_quant.h - full-integer (qint8) models: post-training quantization of a float model (batch
 * norm folded into the convolution or dense layer before it, ReLU and ReLU6 folded into their
 * producer's clamp, activation ranges calibrated on samples) and the integer reference that
 * runs it with the kernels of kd_qint.h. docs/integer.md describes the arithmetic. */
#ifndef KD_QUANT_H
#define KD_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "kd_common.h"
#include "kd_nn.h"
#include "kd_qint.h"
#include "kd_safetensors.h"

#define KD_QOP_MAX_IN 16

typedef enum {
    KD_QOP_DENSE,
    KD_QOP_CONV,
    KD_QOP_MAXPOOL,
    KD_QOP_AVGPOOL,   /* also global average pooling: the window is the plane */
    KD_QOP_ADD,
    KD_QOP_CONCAT,
    KD_QOP_CLAMP,     /* a ReLU / ReLU6 that could not be folded: same scale in and out */
    KD_QOP_LUT,       /* sigmoid, tanh, gelu, hardswish, leaky_relu */
} kd_qop_kind;

/* A quantized value: real = scale * (q - zp). */
typedef struct {
    float scale;
    int32_t zp;
    size_t numel;  /* per sample */
} kd_qvalue;

typedef struct {
    kd_qop_kind kind;
    size_t layer;              /* the float model's layer it came from */
    char name[KD_LAYER_NAME_MAX]; /* that layer's name, or its index: its tensors' prefix */
    size_t n_in, in[KD_QOP_MAX_IN], out;  /* value indices; value 0 is the model's input */
    kd_qout o;
    /* dense (in_features -> n_ch) and conv (g): weights [n_ch, ...], bias, per-channel
     * multipliers; pools (g) and CLAMP use m / o only. */
    size_t n_ch, in_features;
    kd_qconv_geom g;
    int8_t *w;
    int32_t *bias;
    kd_qmul *mult;
    kd_qmul m;
    kd_qmul m_in[KD_QOP_MAX_IN]; /* add: per input; concat: per input's rescale */
    int8_t lut[256];
} kd_qop;

typedef struct {
    size_t n_values;
    kd_qvalue *values;
    size_t n_ops;
    kd_qop *ops;
    size_t output;            /* the value holding the logits */
    size_t n_classes;
    /* Batch memory of the reference (kd_qmodel_forward), one buffer per value. */
    size_t batch_cap;
    int8_t **buf;
} kd_qmodel;

/* Quantizes m (a float model in evaluation, not yet reserved: calibration observes its values)
 * with activation ranges from x (n samples, preprocessed as in training). Layers without an
 * integer form (layernorm, a batch norm that follows no convolution or dense layer) are
 * refused with KD_EUSAGE naming the layer. m is reserved and run by the call. */
kd_status kd_quant_build(kd_model *m, const float *x, size_t n, kd_qmodel *q, kd_err *err);
void kd_qmodel_free(kd_qmodel *q);

/* Makes room for batches of up to B samples (kd_qmodel_forward then allocates nothing). */
kd_status kd_qmodel_reserve(kd_qmodel *q, size_t B, kd_err *err);
/* The integer reference: x (B, input numel) preprocessed floats, quantized with the input's
 * scale and zero point; logits_q (B, n_classes) the int8 logits; logits (may be NULL) them
 * dequantized. */
kd_status kd_qmodel_forward(kd_qmodel *q, const float *x, size_t B, int8_t *logits_q,
                            float *logits, kd_err *err);

/* The qint8 safetensors file (docs/integer.md, "The file"), with the given metadata pairs
 * (the float checkpoint's classes and preprocessing) besides its own; atomic. */
kd_status kd_qmodel_write(const char *path, const kd_qmodel *q, const char *const *keys,
                          const char *const *vals, size_t n_meta, kd_err *err);
/* Reads f (already read and checked as safetensors) into q, checking every index, size, range
 * and multiplier: KD_EINPUT naming the file and the op or tensor. */
kd_status kd_qmodel_read(const kd_st_file *f, kd_qmodel *q, kd_err *err);

/* real -> int8 with a value's scale and zero point (round half away from zero, saturated). */
int8_t kd_quant_value(float r, const kd_qvalue *v);

#endif
