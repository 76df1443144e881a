/* mem.c - the reader shared by the formats that decode a whole source at open (IDX, CSV): the
 * compact values (bytes kept as bytes) and one sample at a time converted to floats. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "data_impl.h"

const char *kd_gz_msg(gzFile f, const char *path, int *zerr) {
    const char *m = gzerror(f, zerr);
    if (!m) return "unknown zlib error";
    size_t pl = strlen(path);
    if (strncmp(m, path, pl) == 0 && m[pl] == ':' && m[pl + 1] == ' ') m += pl + 2;
    return m;
}

kd_status kd_data_read_all(const char *path, size_t max_bytes, char **out, size_t *len,
                           int *compressed, kd_err *err) {
    kd_status st = KD_OK;
    char *buf = NULL;
    size_t cap = 1 << 16, got = 0;
    *out = NULL;
    *len = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) return kd_err_set(err, KD_EINPUT, "%s: cannot open", path);
    gzbuffer(f, 1 << 17);
    if (!(buf = malloc(cap + 1))) {
        st = kd_err_set(err, KD_EIO, "%s: out of memory", path);
        goto cleanup;
    }
    for (;;) {
        if (got == cap) {
            if (cap > max_bytes) {
                st = kd_err_set(err, KD_EINPUT, "%s: more than the %zu-byte limit of data", path,
                                max_bytes);
                goto cleanup;
            }
            size_t ncap = cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                st = kd_err_set(err, KD_EIO, "%s: out of memory (%zu bytes)", path, ncap);
                goto cleanup;
            }
            buf = nb;
            cap = ncap;
        }
        size_t want = cap - got;
        if (want > (1u << 30)) want = 1u << 30;
        int r = gzread(f, buf + got, (unsigned)want);
        if (r < 0) {
            int zerr;
            const char *m = kd_gz_msg(f, path, &zerr);
            st = kd_err_set(err, KD_EINPUT, "%s: byte %zu of the decompressed data: corrupt or "
                            "truncated gzip stream: %s", path, got, m);
            goto cleanup;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    if (got > max_bytes) {
        st = kd_err_set(err, KD_EINPUT, "%s: more than the %zu-byte limit of data", path, max_bytes);
        goto cleanup;
    }
    int zerr = Z_OK;
    const char *m = kd_gz_msg(f, path, &zerr);
    if (zerr != Z_OK) {
        st = kd_err_set(err, KD_EINPUT, "%s: byte %zu of the decompressed data: corrupt or "
                        "truncated gzip stream: %s", path, got, m);
        goto cleanup;
    }
    if (compressed) *compressed = !gzdirect(f);
    buf[got] = '\0';
    *out = buf;
    *len = got;
    buf = NULL;
cleanup:
    free(buf);
    int zr = gzclose(f);
    if (st == KD_OK && zr != Z_OK) {
        free(*out);
        *out = NULL;
        *len = 0;
        st = kd_err_set(err, KD_EINPUT, "%s: corrupt or truncated gzip stream (zlib error %d at "
                        "close)", path, zr);
    }
    return st;
}

kd_status kd_data_name_classes(kd_data_mem *m, char *const *names, size_t k, kd_err *err) {
    m->class_names = calloc(m->n_classes ? m->n_classes : 1, sizeof(char *));
    if (!m->class_names) return kd_err_set(err, KD_EIO, "out of memory");
    for (size_t c = 0; c < m->n_classes; c++) {
        char buf[32];
        snprintf(buf, sizeof buf, "%zu", c);
        if (!(m->class_names[c] = strdup(c < k ? names[c] : buf)))
            return kd_err_set(err, KD_EIO, "out of memory");
    }
    return KD_OK;
}

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
