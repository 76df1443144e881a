/* layer.c - the table of layer types and shape helpers. */
#include <stdio.h>
#include <string.h>

#include "kd_nn.h"

/* Weak while the layer files are written in parallel; a missing type is simply unknown. */
#define KD_LAYER_DECL(x) extern const kd_layer_ops x __attribute__((weak))
KD_LAYER_DECL(kd_layer_dense);
KD_LAYER_DECL(kd_layer_relu);
KD_LAYER_DECL(kd_layer_leaky_relu);
KD_LAYER_DECL(kd_layer_tanh);
KD_LAYER_DECL(kd_layer_sigmoid);
KD_LAYER_DECL(kd_layer_gelu);
KD_LAYER_DECL(kd_layer_dropout);
KD_LAYER_DECL(kd_layer_flatten);
KD_LAYER_DECL(kd_layer_conv2d);
KD_LAYER_DECL(kd_layer_maxpool2d);
KD_LAYER_DECL(kd_layer_avgpool2d);
KD_LAYER_DECL(kd_layer_global_avgpool);
KD_LAYER_DECL(kd_layer_batchnorm);

static const kd_layer_ops *const layer_types[] = {
    &kd_layer_dense,     &kd_layer_relu,      &kd_layer_leaky_relu, &kd_layer_tanh,
    &kd_layer_sigmoid,   &kd_layer_gelu,      &kd_layer_dropout,    &kd_layer_flatten,
    &kd_layer_conv2d,    &kd_layer_maxpool2d, &kd_layer_avgpool2d,  &kd_layer_global_avgpool,
    &kd_layer_batchnorm,
};
#define N_LAYER_TYPES (sizeof layer_types / sizeof layer_types[0])

const kd_layer_ops *kd_layer_find(const char *type) {
    for (size_t i = 0; i < N_LAYER_TYPES; i++)
        if (layer_types[i] && strcmp(layer_types[i]->type, type) == 0) return layer_types[i];
    return NULL;
}

const char *kd_layer_type_list(void) {
    static char list[512];
    if (list[0]) return list;
    size_t len = 0;
    for (size_t i = 0; i < N_LAYER_TYPES; i++) {
        if (!layer_types[i]) continue;
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "",
                                layer_types[i]->type);
    }
    return list;
}

size_t kd_shape_numel(const kd_shape *s) {
    size_t n = 1;
    for (int i = 0; i < s->rank; i++) n *= s->d[i];
    return n;
}

const char *kd_shape_str(const kd_shape *s, char *buf, size_t cap) {
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < s->rank && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%zu", i ? ", " : "", s->d[i]);
    if (len < cap) snprintf(buf + len, cap - len, "]");
    return buf;
}
