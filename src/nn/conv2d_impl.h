/* conv2d_impl.h - private to conv2d.c, conv2d_export.c and conv2d_frozen.c: the layer's
 * hyperparameters, its exporters and its frozen forward. */
#ifndef KD_CONV2D_IMPL_H
#define KD_CONV2D_IMPL_H

#include "fused.h"
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

/* A frozen model's layer (kd_model_freeze; conv2d_frozen.c): the ops' frozen_floats and freeze
 * (groups 1 on a CPU that runs conv_packed.h's kernel: its packed weights), the workspace
 * floats a batch of B needs past the layer's others (0 unless frozen), and the forward
 * y = act(scale conv(x) + shift) (scale NULL: 1; shift NULL: 0; the bias or a folded batch
 * norm's), each sample handed to sink (or NULL) when done. A batch Winograd's rule takes keeps
 * Winograd where the output plane is larger than 8x8 (it does 2.25x fewer multiply-adds: on 2
 * threads of a Xeon, ResNet-18 at batch 256 spent 17.9 ms in each 28x28 layer by Winograd, 26.3
 * packed; the small ResNet student at batch 1000, its 32-channel 14x14 layer 1.8 and 2.3 ms),
 * not on the small planes, whose 2x2 tiles pad (its 64-channel 7x7 layer: 3.0 ms by Winograd,
 * 2.0 packed). */
size_t kd_conv2d_frozen_floats(const kd_layer *l);
void kd_conv2d_freeze(const kd_layer *l, float *dst);
size_t kd_conv2d_frozen_workspace(const kd_layer *l, size_t B);
int kd_conv2d_frozen_forward(const kd_layer *l, const float *scale, const float *shift,
                             const float *res, int act, const float *x, float *y,
                             const kd_sample_sink *sink, size_t B, float *ws, const kd_ctx *ctx);

#endif
