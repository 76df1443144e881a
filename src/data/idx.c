/* idx.c - IDX reader (raw or gzip via zlib) with every size checked before it is trusted, and
 * the images + labels pairing used by MNIST-style datasets: the "idx" format (its ops at the
 * end, over the shared in-memory reader of mem.c). */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../core/test_hooks.h"
#include "data_impl.h"

/* Bytes per element of an IDX type code, 0 if unknown. */
static size_t idx_elem_size(int type) {
    switch (type) {
    case 0x08: case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C: case 0x0D: return 4;
    case 0x0E: return 8;
    default: return 0;
    }
}

static const char *idx_type_name(int type) {
    switch (type) {
    case 0x08: return "u8";
    case 0x09: return "i8";
    case 0x0B: return "i16";
    case 0x0C: return "i32";
    case 0x0D: return "f32";
    case 0x0E: return "f64";
    default: return "?";
    }
}

/* Reads exactly n bytes or reports why not. zlib only notices a truncated or corrupt stream
 * while reading (short count / -1 with gzerror), so both are turned into messages here. */
static kd_status gz_read_exact(gzFile f, const char *path, void *buf, size_t n, size_t offset,
                               const char *what, size_t *n_got, kd_err *err) {
    size_t got = 0;
    *n_got = 0;
    while (got < n) {
        size_t want = n - got;
        if (want > (1u << 30)) want = 1u << 30;
        int r = gzread(f, (char *)buf + got, (unsigned)want);
        if (r < 0) {
            int zerr;
            const char *m = kd_gz_msg(f, path, &zerr);
            return kd_err_set(err, KD_EINPUT,
                              "%s: byte %zu: corrupt or truncated gzip stream while reading %s: %s",
                              path, offset + got, what, m);
        }
        if (r == 0) break;
        got += (size_t)r;
        *n_got = got;
    }
    if (got < n) {
        int zerr = Z_OK;
        const char *m = kd_gz_msg(f, path, &zerr);
        if (zerr != Z_OK)
            return kd_err_set(err, KD_EINPUT,
                              "%s: byte %zu: corrupt or truncated gzip stream while reading %s: %s",
                              path, offset + got, what, m);
        return kd_err_set(err, KD_EINPUT,
                          "%s: byte %zu: file ends early: expected %zu bytes of %s, found %zu",
                          path, offset + got, n, what, got);
    }
    return KD_OK;
}

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Converts n big-endian elements of type to float. */
static void idx_to_float(int type, const unsigned char *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        switch (type) {
        case 0x08: dst[i] = (float)src[i]; break;
        case 0x09: dst[i] = (float)(int8_t)src[i]; break;
        case 0x0B: {
            uint16_t v = (uint16_t)((src[2 * i] << 8) | src[2 * i + 1]);
            dst[i] = (float)(int16_t)v;
            break;
        }
        case 0x0C: dst[i] = (float)(int32_t)be32(src + 4 * i); break;
        case 0x0D: {
            uint32_t v = be32(src + 4 * i);
            float f;
            memcpy(&f, &v, 4);
            dst[i] = f;
            break;
        }
        case 0x0E: {
            uint64_t v = ((uint64_t)be32(src + 8 * i) << 32) | be32(src + 8 * i + 4);
            double d;
            memcpy(&d, &v, 8);
            dst[i] = (float)d;
            break;
        }
        default: dst[i] = 0; break;
        }
    }
}

#ifdef KD_TEST_HOOKS
size_t kd_idx_last_alloc;
#endif

void kd_idx_free(kd_idx *x) {
    if (!x) return;
    free(x->u8);
    free(x->f32);
    memset(x, 0, sizeof *x);
}

/* The header: magic, type, rank and dimensions, each checked, into out (type, rank, dims);
 * *bytes is the payload's size, which the caps bound before anything is allocated for it. */
static kd_status read_header(gzFile f, const char *path, kd_idx *out, size_t *numel,
                             size_t *bytes, kd_err *err) {
    unsigned char hdr[4 + 16];
    size_t n_got;
    kd_status st = gz_read_exact(f, path, hdr, 4, 0, "the IDX magic", &n_got, err);
    if (st) return st;
    if (hdr[0] != 0 || hdr[1] != 0)
        return kd_err_set(err, KD_EINPUT,
                          "%s: byte 0: bad IDX magic: expected 00 00 <type> <rank>, found %02x "
                          "%02x %02x %02x",
                          path, hdr[0], hdr[1], hdr[2], hdr[3]);
    int type = hdr[2], rank = hdr[3];
    size_t esize = idx_elem_size(type);
    if (!esize)
        return kd_err_set(err, KD_EINPUT,
                          "%s: byte 2: unknown IDX type code 0x%02x (expected 0x08 u8, 0x09 i8, "
                          "0x0B i16, 0x0C i32, 0x0D f32 or 0x0E f64)",
                          path, type);
    if (rank < 1 || rank > 4)
        return kd_err_set(err, KD_EINPUT, "%s: byte 3: IDX rank %d: expected 1 to 4", path, rank);
    st = gz_read_exact(f, path, hdr + 4, 4 * (size_t)rank, 4, "the IDX dimensions", &n_got, err);
    if (st) return st;
    *numel = 1;
    for (int i = 0; i < rank; i++) {
        size_t d = be32(hdr + 4 + 4 * i);
        if (d == 0 || d > KD_IDX_MAX_DIM)
            return kd_err_set(err, KD_EINPUT, "%s: byte %d: IDX dimension %d is %zu: expected 1 "
                              "to %zu", path, 4 + 4 * i, i, d, KD_IDX_MAX_DIM);
        out->dims[i] = d;
        if (kd_mul_size(*numel, d, numel)) *numel = SIZE_MAX;
    }
    if (kd_mul_size(*numel, esize, bytes) || *bytes > KD_DATA_MAX_BYTES)
        return kd_err_set(err, KD_EINPUT,
                          "%s: byte 4: IDX dimensions declare more than the %zu-byte cap", path,
                          KD_DATA_MAX_BYTES);
    out->type = type;
    out->rank = rank;
    return KD_OK;
}

/* The payload: bytes bytes from offset data_off into *raw. The header alone is not trusted: the
 * buffer grows as data actually arrives, so a tiny file that claims a huge payload costs at
 * most one chunk before it is rejected. */
static kd_status read_payload(gzFile f, const char *path, int type, size_t data_off, size_t bytes,
                              unsigned char **raw, kd_err *err) {
    size_t cap = bytes < ((size_t)1 << 20) ? bytes : ((size_t)1 << 20), got = 0, n_got;
    *raw = malloc(cap ? cap : 1);
    KD_HOOK_RUN(kd_idx_last_alloc = cap);
    if (!*raw) return kd_err_set(err, KD_EIO, "%s: out of memory", path);
    while (got < bytes) {
        if (got == cap) {
            size_t ncap = cap * 2 < bytes ? cap * 2 : bytes;
            unsigned char *nr = realloc(*raw, ncap);
            if (!nr) return kd_err_set(err, KD_EIO, "%s: out of memory (%zu bytes)", path, ncap);
            *raw = nr;
            cap = ncap;
            KD_HOOK_RUN(kd_idx_last_alloc = cap);
        }
        size_t want = cap - got;
        kd_status st = gz_read_exact(f, path, *raw + got, want, data_off + got, "IDX data",
                                     &n_got, err);
        /* Report a short file against the whole declared payload, not the chunk. */
        if (st && strstr(err->msg, "file ends early"))
            return kd_err_set(err, KD_EINPUT,
                              "%s: byte %zu: data shorter than the header says: expected %zu "
                              "bytes of %s data (%zu bytes in all), found %zu",
                              path, data_off + got + n_got, bytes, idx_type_name(type),
                              data_off + bytes, got + n_got);
        if (st) return st;
        got += want;
    }
    return KD_OK;
}

/* Nothing may follow the payload, which ends at byte end; reading on to the end is also what
 * makes zlib check the gzip trailer (CRC and length). */
static kd_status check_end(gzFile f, const char *path, size_t end, kd_err *err) {
    unsigned char extra[64];
    int zerr = Z_OK, r = gzread(f, extra, sizeof extra);
    if (r > 0) {
        size_t total = end + (size_t)r;
        while ((r = gzread(f, extra, sizeof extra)) > 0) total += (size_t)r;
        return kd_err_set(err, KD_EINPUT,
                          "%s: byte %zu: data longer than the header says: expected %zu bytes in "
                          "all, found %s%zu",
                          path, end, end, r < 0 ? "at least " : "", total);
    }
    const char *m = kd_gz_msg(f, path, &zerr);
    if (r < 0 || zerr != Z_OK)
        return kd_err_set(err, KD_EINPUT, "%s: byte %zu: corrupt or truncated gzip stream: %s",
                          path, end, m);
    return KD_OK;
}

kd_status kd_idx_read(const char *path, kd_idx *out, kd_err *err) {
    kd_status st = KD_OK;
    unsigned char *raw = NULL;
    size_t numel = 0, bytes = 0;
    memset(out, 0, sizeof *out);
    KD_HOOK_RUN(kd_idx_last_alloc = 0);
    /* gzopen reads uncompressed files transparently, so one path serves raw and .gz. */
    gzFile f = gzopen(path, "rb");
    if (!f) return kd_err_set(err, KD_EINPUT, "%s: cannot open", path);
    gzbuffer(f, 1 << 17);
    if ((st = read_header(f, path, out, &numel, &bytes, err))) goto cleanup;
    const size_t data_off = 4 + 4 * (size_t)out->rank;
    if ((st = read_payload(f, path, out->type, data_off, bytes, &raw, err)) ||
        (st = check_end(f, path, data_off + bytes, err)))
        goto cleanup;
    if (out->type == 0x08) {
        out->u8 = raw;
        raw = NULL;
    } else {
        out->f32 = malloc(numel * sizeof(float));
        if (!out->f32) {
            st = kd_err_set(err, KD_EIO, "%s: out of memory", path);
            goto cleanup;
        }
        idx_to_float(out->type, raw, out->f32, numel);
    }

cleanup:
    free(raw);
    int zr = gzclose(f);
    if (st == KD_OK && zr != Z_OK)
        st = kd_err_set(err, KD_EINPUT, "%s: corrupt or truncated gzip stream (zlib error %d at "
                        "close)", path, zr);
    if (st) kd_idx_free(out);
    return st;
}

kd_status kd_idx_load(const kd_data_source *src, kd_data_mem *out, kd_err *err) {
    kd_status st = KD_OK;
    kd_idx img = {0}, lab = {0};
    memset(out, 0, sizeof *out);
    if ((st = kd_idx_read(src->path, &img, err))) goto cleanup;
    if (img.rank < 2 || img.rank > 4) {
        st = kd_err_set(err, KD_EINPUT,
                        "%s: byte 3: an IDX images file needs rank 2 ([N, D]), 3 ([N, H, W]) or "
                        "4 ([N, C, H, W]), found rank %d",
                        src->path, img.rank);
        goto cleanup;
    }
    out->n = img.dims[0];
    if (img.rank == 2) {
        out->shape.rank = 1;
        out->shape.d[0] = img.dims[1];
    } else if (img.rank == 3) {
        out->shape.rank = 3;
        out->shape.d[0] = 1;
        out->shape.d[1] = img.dims[1];
        out->shape.d[2] = img.dims[2];
    } else {
        out->shape.rank = 3;
        for (int i = 0; i < 3; i++) out->shape.d[i] = img.dims[i + 1];
    }
    if (src->labels_path[0]) {
        if ((st = kd_idx_read(src->labels_path, &lab, err))) goto cleanup;
        if (lab.rank != 1) {
            st = kd_err_set(err, KD_EINPUT, "%s: byte 3: an IDX labels file needs rank 1, found rank %d",
                            src->labels_path, lab.rank);
            goto cleanup;
        }
        if (lab.type != 0x08 && lab.type != 0x09 && lab.type != 0x0B && lab.type != 0x0C) {
            st = kd_err_set(err, KD_EINPUT,
                            "%s: byte 2: IDX labels must be an integer type (u8, i8, i16, i32), "
                            "found %s",
                            src->labels_path, idx_type_name(lab.type));
            goto cleanup;
        }
        if (lab.dims[0] != out->n) {
            st = kd_err_set(err, KD_EINPUT,
                            "%s: byte 4: %zu labels, but the images file %s holds %zu images",
                            src->labels_path, lab.dims[0], src->path, out->n);
            goto cleanup;
        }
        out->labels = malloc(out->n * sizeof(int32_t));
        if (!out->labels) {
            st = kd_err_set(err, KD_EIO, "out of memory");
            goto cleanup;
        }
        size_t limit = src->n_classes ? src->n_classes : KD_MAX_CLASSES;
        size_t esize = idx_elem_size(lab.type);
        int32_t maxl = -1;
        for (size_t i = 0; i < out->n; i++) {
            double v = lab.u8 ? (double)lab.u8[i] : (double)lab.f32[i];
            if (v < 0 || v >= (double)limit) {
                st = kd_err_set(err, KD_EINPUT,
                                "%s: byte %zu: label of sample %zu is %.0f: expected 0 to %zu",
                                src->labels_path, 8 + i * esize, i, v, limit - 1);
                goto cleanup;
            }
            out->labels[i] = (int32_t)v;
            if (out->labels[i] > maxl) maxl = out->labels[i];
        }
        out->n_classes = src->n_classes ? src->n_classes : (size_t)maxl + 1;
        if ((st = kd_data_name_classes(out, NULL, 0, err))) goto cleanup;
    }
    out->u8 = img.u8;
    out->f32 = img.f32;
    img.u8 = NULL;
    img.f32 = NULL;

cleanup:
    kd_idx_free(&img);
    kd_idx_free(&lab);
    if (st) kd_data_mem_free(out);
    return st;
}

static kd_status idx_open(const kd_data_source *src, void **handle, kd_reader_info *info,
                          kd_err *err) {
    return kd_data_mem_open(src, kd_idx_load, handle, info, err);
}

const kd_format_ops kd_idx_format_ops = {idx_open, kd_data_mem_read, kd_data_mem_close, 0};
