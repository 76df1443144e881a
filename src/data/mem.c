/* mem.c - the reader shared by the formats that decode a whole source at open (IDX, CSV): the
 * compact values (bytes kept as bytes) and one sample at a time converted to floats. */
#include <stdlib.h>
#include <string.h>

#include "data_impl.h"

void kd_data_mem_free(kd_data_mem *m) {
    if (!m) return;
    free(m->u8);
    free(m->f32);
    free(m->labels);
    if (m->class_names)
        for (size_t i = 0; i < m->n_classes; i++) free(m->class_names[i]);
    free(m->class_names);
    memset(m, 0, sizeof *m);
}

kd_status kd_data_mem_open(const kd_data_source *src,
                           kd_status (*load)(const kd_data_source *, kd_data_mem *, kd_err *),
                           void **handle, kd_reader_info *info, kd_err *err) {
    *handle = NULL;
    kd_data_mem *m = calloc(1, sizeof *m);
    if (!m) return kd_err_set(err, KD_EIO, "out of memory");
    kd_status st = load(src, m, err);
    if (st) {
        free(m);
        return st;
    }
    memset(info, 0, sizeof *info);
    info->n = m->n;
    info->shape = m->shape;
    info->labels = m->labels;
    info->n_classes = m->n_classes;
    info->class_names = m->class_names;
    info->u8 = m->u8 != NULL;
    *handle = m;
    return KD_OK;
}

kd_status kd_data_mem_read(const void *handle, size_t s, float *out, kd_err *err) {
    (void)err;
    const kd_data_mem *m = handle;
    size_t D = kd_shape_numel(&m->shape);
    if (m->u8) {
        const uint8_t *src = m->u8 + s * D;
        for (size_t k = 0; k < D; k++) out[k] = (float)src[k];
    } else {
        memcpy(out, m->f32 + s * D, D * sizeof(float));
    }
    return KD_OK;
}

void kd_data_mem_close(void *handle) {
    kd_data_mem_free(handle);
    free(handle);
}
