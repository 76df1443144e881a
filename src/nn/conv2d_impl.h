/* conv2d_impl.h - private to conv2d.c and conv2d_export.c: the layer's hyperparameters and
 * its exporters. */
#ifndef KD_CONV2D_IMPL_H
#define KD_CONV2D_IMPL_H

#include "layer_impl.h"

typedef struct {
    size_t channels;         /* output channels */
    size_t kh, kw;           /* kernel */
    size_t stride, padding;
    size_t groups;           /* channel groups (default 1); divides in and out channels */
    int bias;                /* has a bias (default true) */
} conv_hp;

/* Declared tensors, by position. */
enum { CONV_W, CONV_B };

/* The layer as an ONNX Conv node, and as a call of the C header's direct convolution. */
kd_status kd_conv2d_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err);
kd_status kd_conv2d_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err);

#endif
