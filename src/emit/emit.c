/* emit.c - the parts of the emitter interface (kd_emit.h) that are the same for every
 * exporter: formatting a C block before handing it to the exporter, and C float literals. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_emit.h"

kd_status kd_c_code(kd_c_emitter *em, int in_place, kd_err *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *text = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!text) return kd_err_set(err, KD_EIO, "C export: out of memory");
    va_start(ap, fmt);
    vsnprintf(text, (size_t)n + 1, fmt, ap);
    va_end(ap);
    kd_status st = em->ops->code(em, in_place, text, err);
    free(text);
    return st;
}

const char *kd_c_float(float v, char *buf, size_t cap) {
    /* "%.9g" always round-trips a float; an integral value needs a point before the suffix. */
    int n = snprintf(buf, cap, "%.9g", (double)v);
    if (n > 0 && (size_t)n + 3 < cap) {
        if (!strpbrk(buf, ".e")) strcat(buf, ".0");
        strcat(buf, "f");
    }
    return buf;
}
