/* flatten.c - reshapes [C, H, W] (or any per-sample shape) to [C * H * W], like
 * torch.nn.Flatten(); the data is already contiguous, so forward and backward are copies. */
#include <cJSON.h>
#include <string.h>

#include "layer_impl.h"

static kd_status flatten_configure(kd_layer *l, const cJSON *spec, kd_err *err) {
    static const char *const none[] = {NULL};
    kd_status st = kd_spec_check_fields(l, spec, none, err);
    if (st) return st;
    l->out.rank = 1;
    memset(l->out.d, 0, sizeof l->out.d);
    l->out.d[0] = kd_shape_numel(&l->in);  /* the model has checked numel(in) for overflow */
    return KD_OK;
}

/* In place (y == x) the values are already where they belong: nothing to do. */
static void flatten_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    (void)ctx;
    kd_par_copy(y, x, B * l->out.d[0]);
}

static void flatten_backward(kd_layer *l, const float *x, const float *y, const float *dy,
                             float *dx, size_t B, kd_ctx *ctx) {
    (void)x;
    (void)y;
    (void)ctx;
    if (dx) kd_par_copy(dx, dy, B * l->out.d[0]);
}

/* ONNX: Flatten(axis = 1), [N, C, H, W] -> [N, C*H*W]. In C the sample is already one
 * contiguous run of values: no code. */
static kd_status flatten_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    (void)l;
    const char *x = kd_onnx_current(em);
    const kd_onnx_attr axis = KD_ONNX_INT("axis", 1);
    return kd_onnx_node(em, "Flatten", &x, 1, &axis, 1, NULL, err);
}

static kd_status flatten_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    (void)l;
    (void)em;
    (void)err;
    return KD_OK;
}

const kd_layer_ops kd_layer_flatten = {
    .type = "flatten",
    .configure = flatten_configure,
    .forward = flatten_forward,
    .backward = flatten_backward,
    .export_onnx = flatten_export_onnx,
    .export_c = flatten_export_c,
    .in_place = 1,
    .view = 1,
    .eval_identity = 1,
};
