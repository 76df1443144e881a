/* conv2d_export.c - the conv2d layer's exporters (conv2d_impl.h): ONNX and the C header. */
#include <stdio.h>

#include "conv2d_impl.h"

/* ONNX: Conv(x, W, b) with the same kernel, stride and symmetric zero padding. */
kd_status kd_conv2d_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    const conv_hp *hp = l->hp;
    const char *x = kd_onnx_current(em), *w, *b = NULL;
    kd_status st = kd_layer_onnx_tensor(l, em, CONV_W, &w, err);
    if (!st && hp->bias) st = kd_layer_onnx_tensor(l, em, CONV_B, &b, err);
    if (st) return st;
    const int64_t s = (int64_t)hp->stride, p = (int64_t)hp->padding;
    /* "group" only when there are groups: an ungrouped layer's file stays as it was. */
    const kd_onnx_attr attrs[] = {KD_ONNX_INTS2("kernel_shape", (int64_t)hp->kh, (int64_t)hp->kw),
                                  KD_ONNX_INTS2("strides", s, s), KD_ONNX_INTS4("pads", p, p, p, p),
                                  KD_ONNX_INT("group", (int64_t)hp->groups)};
    return kd_onnx_node(em, "Conv", (const char *[]){x, w, b}, hp->bias ? 3 : 2, attrs,
                        hp->groups != 1 ? 4 : 3, NULL, err);
}

/* C: a direct convolution (no im2col buffer, so scratch stays two activations), output o of
 * group g = o / (O/G) reading that group's C/G input channels:
 *   y[o, oh, ow] = b[o] + sum_{c,i,j} w[o, c, i, j] x[g*C/G + c, oh*S - P + i, ow*S - P + j]
 * over the taps inside the input (zero padding contributes nothing); int8 rows:
 * b[o] + scale[o] * sum q x. A depthwise layer's sums are those of depthwise.c term for term.
 * Each output sums its taps in (c, i, j) order; the loops run along an output row, each tap
 * added to every output whose window holds it (a branch-free loop along the row), so the row
 * of y holds the running sums. */
static const char conv_c_helper[] =
    "static void $conv2d(const float *x, float *y, const float *w, const signed char *q,\n"
    "                    const float *scale, const float *b, long C, long H, long W, long O,\n"
    "                    long G, long KH, long KW, long S, long P, long OH, long OW) {\n"
    "    const long CG = C / G, OG = O / G;\n"
    "    long o, oh, ow, c, i, j;\n"
    "    for (o = 0; o < O; o++)\n"
    "        for (oh = 0; oh < OH; oh++) {\n"
    "            float *yr = y + (o * OH + oh) * OW;\n"
    "            for (ow = 0; ow < OW; ow++) yr[ow] = 0.0f;\n"
    "            for (c = 0; c < CG; c++)\n"
    "                for (i = 0; i < KH; i++) {\n"
    "                    const long h = oh * S - P + i, k = ((o * CG + c) * KH + i) * KW;\n"
    "                    const float *xr;\n"
    "                    if (h < 0 || h >= H) continue;\n"
    "                    xr = x + ((o / OG * CG + c) * H + h) * W;\n"
    "                    for (j = 0; j < KW; j++) {\n"
    "                        /* the outputs whose tap j falls inside the row: ow * S - P + j\n"
    "                         * in [0, W) */\n"
    "                        const float wv = q ? (float)q[k + j] : w[k + j];\n"
    "                        const long lo = P > j ? (P - j + S - 1) / S : 0;\n"
    "                        const long last = W - 1 + P - j;\n"
    "                        const long hi = last < 0 ? 0 : last / S + 1 < OW ? last / S + 1 : OW;\n"
    "                        for (ow = lo; ow < hi; ow++) yr[ow] += wv * xr[ow * S - P + j];\n"
    "                    }\n"
    "                }\n"
    "            for (ow = 0; ow < OW; ow++) {\n"
    "                float s = yr[ow];\n"
    "                if (q) s *= scale[o];\n"
    "                yr[ow] = b ? s + b[o] : s;\n"
    "            }\n"
    "        }\n"
    "}\n";

kd_status kd_conv2d_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    const conv_hp *hp = l->hp;
    const char *w, *b = "0";
    char wq[160];
    int q, qb;
    kd_status st = kd_layer_c_tensor(l, em, CONV_W, &w, &q, err);
    if (!st && hp->bias) st = kd_layer_c_tensor(l, em, CONV_B, &b, &qb, err);
    if (!st) st = kd_c_helper(em, "conv2d", conv_c_helper, err);
    if (st) return st;
    if (q) snprintf(wq, sizeof wq, "0, %s, %s_scale", w, w);
    else snprintf(wq, sizeof wq, "%s, 0, 0", w);
    return kd_c_code(em, 0, err,
                     "$conv2d(x, y, %s, %s, %zuL, %zuL, %zuL, %zuL, %zuL, %zuL, %zuL, %zuL, %zuL, "
                     "%zuL, %zuL);", wq, b, l->in.d[0], l->in.d[1], l->in.d[2], hp->channels,
                     hp->groups, hp->kh, hp->kw, hp->stride, hp->padding, l->out.d[1], l->out.d[2]);
}
