/* shape.c - per-sample shapes: element counts and the "[1, 28, 28]" text used in messages. */
#include <stdio.h>

#include "kd_shape.h"

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
