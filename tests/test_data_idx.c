/* test_data_idx.c - the IDX reader: every element type read back exactly, raw and gzip, and
 * every way an IDX file can be broken rejected with file, byte offset and expected vs found. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../src/core/test_hooks.h"
#include "../src/data/data_impl.h"
#include "kd_test.h"

/* Builds an IDX file image in memory: magic, big-endian dims, then payload bytes as given. */
static size_t idx_bytes(unsigned char *buf, int type, int rank, const uint32_t *dims,
                        const void *payload, size_t payload_len) {
    buf[0] = 0;
    buf[1] = 0;
    buf[2] = (unsigned char)type;
    buf[3] = (unsigned char)rank;
    for (int i = 0; i < rank; i++) {
        buf[4 + 4 * i] = (unsigned char)(dims[i] >> 24);
        buf[5 + 4 * i] = (unsigned char)(dims[i] >> 16);
        buf[6 + 4 * i] = (unsigned char)(dims[i] >> 8);
        buf[7 + 4 * i] = (unsigned char)dims[i];
    }
    memcpy(buf + 4 + 4 * rank, payload, payload_len);
    return 4 + 4 * (size_t)rank + payload_len;
}

static int write_gz(const char *path, const void *data, size_t n) {
    gzFile f = gzopen(path, "wb");
    if (!f) return -1;
    int w = gzwrite(f, data, (unsigned)n);
    return (gzclose(f) == Z_OK && (size_t)w == n) ? 0 : -1;
}

/* Writes an IDX file (gzip-compressed when gz). */
static void write_idx(const char *path, int gz, int type, int rank, const uint32_t *dims,
                      const void *payload, size_t payload_len) {
    unsigned char *buf = malloc(32 + payload_len);
    size_t n = idx_bytes(buf, type, rank, dims, payload, payload_len);
    int rc = gz ? write_gz(path, buf, n) : kd_test_write_file(path, buf, n);
    CHECK(rc == 0);
    free(buf);
}

static void put_be(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
}

KD_TEST(data_idx_every_element_type_reads_back) {
    const char *dir = kd_test_tmpdir();
    char path[600];
    /* 2 x 3 values that every type represents exactly, negatives for the signed ones. */
    const double want[6] = {0, 1, -2, 100, -128, 127};
    const double want_u8[6] = {0, 1, 2, 100, 128, 255};
    const double want_i32[6] = {0, 1, -2, 100000, -16777216, 16777215};
    const double want_f[6] = {0.5, -1.25, 3.0e-3, 1.0e6, -7.0, 0.0};
    struct {
        int type, size;
        const double *v;
    } cases[] = {{0x08, 1, want_u8}, {0x09, 1, want}, {0x0B, 2, want},
                 {0x0C, 4, want_i32}, {0x0D, 4, want_f}, {0x0E, 8, want_f}};
    for (int c = 0; c < 6; c++) {
        for (int gz = 0; gz < 2; gz++) {
            unsigned char payload[48];
            for (int i = 0; i < 6; i++) {
                unsigned char *p = payload + i * cases[c].size;
                double v = cases[c].v[i];
                if (cases[c].type == 0x0D) {
                    float f = (float)v;
                    uint32_t u;
                    memcpy(&u, &f, 4);
                    put_be(p, u, 4);
                } else if (cases[c].type == 0x0E) {
                    uint64_t u;
                    memcpy(&u, &v, 8);
                    put_be(p, u, 8);
                } else {
                    put_be(p, (uint64_t)(int64_t)v, cases[c].size);
                }
            }
            snprintf(path, sizeof path, "%s/t%d%s", dir, c, gz ? ".gz" : "");
            uint32_t dims[2] = {2, 3};
            write_idx(path, gz, cases[c].type, 2, dims, payload, 6 * (size_t)cases[c].size);
            kd_idx x;
            kd_err err;
            kd_err_clear(&err);
            kd_status st = kd_idx_read(path, &x, &err);
            CHECK_EQ_INT(st, KD_OK);
            if (st) {
                printf("    %s\n", err.msg);
                continue;
            }
            CHECK_EQ_INT(x.type, cases[c].type);
            CHECK_EQ_INT(x.rank, 2);
            CHECK_EQ_INT(x.dims[0], 2);
            CHECK_EQ_INT(x.dims[1], 3);
            CHECK((x.u8 != NULL) == (cases[c].type == 0x08));
            for (int i = 0; i < 6; i++) {
                double got = x.u8 ? x.u8[i] : x.f32[i];
                CHECK_CLOSE(got, (float)cases[c].v[i], 0, 0);
            }
            kd_idx_free(&x);
        }
    }
}

KD_TEST(data_idx_images_and_labels_through_dataset) {
    const char *dir = kd_test_tmpdir();
    char img[600], lab[600];
    snprintf(img, sizeof img, "%s/img.gz", dir);
    snprintf(lab, sizeof lab, "%s/lab.gz", dir);
    /* 5 images of 2x3, pixel value = 10*i + k. */
    unsigned char px[30], lb[5] = {3, 0, 1, 3, 2};
    for (int i = 0; i < 5; i++)
        for (int k = 0; k < 6; k++) px[i * 6 + k] = (unsigned char)(10 * i + k);
    uint32_t dims[3] = {5, 2, 3}, ldims[1] = {5};
    write_idx(img, 1, 0x08, 3, dims, px, 30);
    write_idx(lab, 1, 0x08, 1, ldims, lb, 5);
    kd_data_source src;
    kd_data_source_defaults(&src);
    snprintf(src.path, sizeof src.path, "%s", img);
    snprintf(src.labels_path, sizeof src.labels_path, "%s", lab);
    kd_dataset *ds = NULL;
    kd_err err;
    kd_err_clear(&err);
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, NULL, &err), KD_OK);
    if (!ds) {
        printf("    %s\n", err.msg);
        return;
    }
    const kd_data_info *info = kd_dataset_info(ds);
    CHECK_EQ_INT(info->n, 5);
    CHECK_EQ_INT(info->shape.rank, 3);
    CHECK_EQ_INT(info->shape.d[0], 1);
    CHECK_EQ_INT(info->shape.d[1], 2);
    CHECK_EQ_INT(info->shape.d[2], 3);
    CHECK_EQ_INT(info->has_labels, 1);
    CHECK_EQ_INT(info->n_classes, 4);  /* max label 3 + 1 */
    CHECK(info->class_names && strcmp(info->class_names[3], "3") == 0);
    CHECK_CLOSE(kd_dataset_preprocess(ds)->scale, 1.0f / 255.0f, 0, 0);
    size_t idx[2] = {4, 1};
    float x[12];
    int32_t y[2];
    CHECK_EQ_INT(kd_dataset_get(ds, idx, 2, x, y, NULL, &err), KD_OK);
    for (int k = 0; k < 6; k++) {
        CHECK_CLOSE(x[k], (40 + k) * (1.0f / 255.0f), 1e-7, 0);
        CHECK_CLOSE(x[6 + k], (10 + k) * (1.0f / 255.0f), 1e-7, 0);
    }
    CHECK_EQ_INT(y[0], 2);
    CHECK_EQ_INT(y[1], 0);
    kd_dataset_close(ds);

    /* Mean/std and flatten: x = (raw/255 - 0.5) / 0.25, shape [6]. */
    kd_preprocess pp;
    kd_preprocess_defaults(&pp);
    pp.n_channels = 1;
    pp.mean[0] = 0.5f;
    pp.std[0] = 0.25f;
    pp.flatten = 1;
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, &pp, &err), KD_OK);
    if (!ds) return;
    CHECK_EQ_INT(kd_dataset_info(ds)->shape.rank, 1);
    CHECK_EQ_INT(kd_dataset_info(ds)->shape.d[0], 6);
    CHECK_EQ_INT(kd_dataset_get(ds, idx, 1, x, NULL, NULL, &err), KD_OK);
    CHECK_CLOSE(x[5], (45.0 / 255.0 - 0.5) / 0.25, 1e-6, 0);
    kd_dataset_close(ds);

    /* Unlabeled: labels -1. */
    src.labels_path[0] = '\0';
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, NULL, &err), KD_OK);
    if (!ds) return;
    CHECK_EQ_INT(kd_dataset_info(ds)->has_labels, 0);
    y[0] = 7;
    CHECK_EQ_INT(kd_dataset_get(ds, idx, 1, x, y, NULL, &err), KD_OK);
    CHECK_EQ_INT(y[0], -1);
    kd_dataset_close(ds);
}

/* Opens path as an IDX image file (with optional labels) and expects a rejection whose
 * message names the file and contains each fragment. */
static void expect_reject(const char *path, const char *labels, size_t n_classes, kd_status code,
                          const char *frag1, const char *frag2) {
    kd_data_source src;
    kd_data_source_defaults(&src);
    snprintf(src.path, sizeof src.path, "%s", path);
    if (labels) snprintf(src.labels_path, sizeof src.labels_path, "%s", labels);
    src.n_classes = n_classes;
    kd_dataset *ds = (kd_dataset *)1;
    kd_err err;
    kd_err_clear(&err);
    kd_status st = kd_dataset_open(&ds, &src, NULL, &err);
    CHECK_EQ_INT(st, code);
    CHECK(ds == NULL);
    CHECK_CONTAINS(err.msg, labels && strstr(err.msg, labels) ? labels : path);
    CHECK_CONTAINS(err.msg, frag1);
    if (frag2) CHECK_CONTAINS(err.msg, frag2);
}

KD_TEST(data_idx_rejects_broken_headers) {
    const char *dir = kd_test_tmpdir();
    char p[600];
    unsigned char buf[256];
    uint32_t dims[3] = {2, 2, 2};
    unsigned char px[8] = {1, 2, 3, 4, 5, 6, 7, 8};

    snprintf(p, sizeof p, "%s/magic", dir);
    size_t n = idx_bytes(buf, 0x08, 3, dims, px, 8);
    buf[1] = 0x07;
    kd_test_write_file(p, buf, n);
    expect_reject(p, NULL, 0, KD_EINPUT, "byte 0: bad IDX magic", "found 00 07 08 03");

    snprintf(p, sizeof p, "%s/type", dir);
    n = idx_bytes(buf, 0x0A, 3, dims, px, 8);
    kd_test_write_file(p, buf, n);
    expect_reject(p, NULL, 0, KD_EINPUT, "byte 2: unknown IDX type code 0x0a", "expected 0x08 u8");

    snprintf(p, sizeof p, "%s/rank0", dir);
    n = idx_bytes(buf, 0x08, 0, dims, px, 8);
    kd_test_write_file(p, buf, n);
    expect_reject(p, NULL, 0, KD_EINPUT, "byte 3: IDX rank 0", "expected 1 to 4");

    snprintf(p, sizeof p, "%s/rank5", dir);
    uint32_t d5[5] = {1, 1, 1, 1, 8};
    n = idx_bytes(buf, 0x08, 5, d5, px, 8);
    kd_test_write_file(p, buf, n);
    expect_reject(p, NULL, 0, KD_EINPUT, "IDX rank 5", "expected 1 to 4");

    snprintf(p, sizeof p, "%s/zerodim", dir);
    uint32_t dz[3] = {2, 0, 2};
    n = idx_bytes(buf, 0x08, 3, dz, px, 0);
    kd_test_write_file(p, buf, n);
    expect_reject(p, NULL, 0, KD_EINPUT, "byte 8: IDX dimension 1 is 0", "expected 1 to");

    /* Each dimension plausible, the product absurd: rejected by the byte cap. */
    snprintf(p, sizeof p, "%s/huge", dir);
    uint32_t dh[3] = {100000, 10000, 10000};
    n = idx_bytes(buf, 0x08, 3, dh, px, 8);
    kd_test_write_file(p, buf, n);
    expect_reject(p, NULL, 0, KD_EINPUT, "byte 4", "cap");

    snprintf(p, sizeof p, "%s/short", dir);
    n = idx_bytes(buf, 0x08, 3, dims, px, 5);
    kd_test_write_file(p, buf, n);
    expect_reject(p, NULL, 0, KD_EINPUT, "byte 21: data shorter than the header says",
                  "expected 8 bytes of u8 data (24 bytes in all), found 5");

    snprintf(p, sizeof p, "%s/long", dir);
    unsigned char px2[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    n = idx_bytes(buf, 0x08, 3, dims, px2, 10);
    kd_test_write_file(p, buf, n);
    expect_reject(p, NULL, 0, KD_EINPUT, "byte 24: data longer than the header says",
                  "expected 24 bytes in all, found 26");

    snprintf(p, sizeof p, "%s/missing", dir);
    expect_reject(p, NULL, 0, KD_EINPUT, "cannot open", NULL);
}

KD_TEST(data_idx_small_file_claiming_60000x28x28_does_not_allocate_it) {
    const char *dir = kd_test_tmpdir();
    char p[600];
    unsigned char buf[64], px[24] = {0};
    uint32_t dims[3] = {60000, 28, 28};
    for (int gz = 0; gz < 2; gz++) {
        snprintf(p, sizeof p, "%s/claim%s", dir, gz ? ".gz" : "");
        size_t n = idx_bytes(buf, 0x08, 3, dims, px, 24);
        CHECK_EQ_INT(n, 40);
        CHECK(gz ? write_gz(p, buf, n) == 0 : kd_test_write_file(p, buf, n) == 0);
        expect_reject(p, NULL, 0, KD_EINPUT, "data shorter than the header says",
                      "expected 47040000 bytes of u8 data");
        /* The buffer only grows as data arrives: at most one 1 MiB chunk, never 47 MB. */
        CHECK(kd_idx_last_alloc <= ((size_t)1 << 20));
        CHECK(kd_idx_last_alloc > 0);
    }
}

KD_TEST(data_idx_rejects_truncated_and_corrupt_gzip) {
    const char *dir = kd_test_tmpdir();
    char p[600], cut[600], bad[600];
    /* Incompressible-ish payload so the .gz is long enough to cut meaningfully. */
    enum { N = 20000 };
    unsigned char *px = malloc(N);
    uint32_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 1103515245u + 12345u;
        px[i] = (unsigned char)(s >> 16);
    }
    uint32_t dims[2] = {20, 1000};
    snprintf(p, sizeof p, "%s/ok.gz", dir);
    write_idx(p, 1, 0x08, 2, dims, px, N);
    char *gzdata = NULL;
    size_t gzlen = 0;
    kd_err err;
    CHECK_EQ_INT(kd_read_file(p, 1 << 24, &gzdata, &gzlen, &err), KD_OK);
    CHECK(gzlen > 1000);

    snprintf(cut, sizeof cut, "%s/cut.gz", dir);
    kd_test_write_file(cut, gzdata, gzlen / 2);
    expect_reject(cut, NULL, 0, KD_EINPUT, "truncated gzip stream", NULL);

    /* Cutting only the 8-byte trailer (CRC + length) leaves all the data readable: zlib
     * notices only at the end of the stream. */
    snprintf(cut, sizeof cut, "%s/notrailer.gz", dir);
    kd_test_write_file(cut, gzdata, gzlen - 4);
    expect_reject(cut, NULL, 0, KD_EINPUT, "gzip stream", NULL);

    snprintf(bad, sizeof bad, "%s/crc.gz", dir);
    gzdata[gzlen - 6] ^= 0x5a;  /* inside the CRC32 */
    kd_test_write_file(bad, gzdata, gzlen);
    expect_reject(bad, NULL, 0, KD_EINPUT, "gzip stream", NULL);
    gzdata[gzlen - 6] ^= 0x5a;

    snprintf(bad, sizeof bad, "%s/body.gz", dir);
    gzdata[gzlen / 2] ^= 0xff;  /* inside the deflate data */
    kd_test_write_file(bad, gzdata, gzlen);
    expect_reject(bad, NULL, 0, KD_EINPUT, "gzip stream", NULL);
    free(gzdata);
    free(px);
}

KD_TEST(data_idx_rejects_bad_labels) {
    const char *dir = kd_test_tmpdir();
    char img[600], lab[600];
    unsigned char px[12] = {0};
    uint32_t dims[3] = {3, 2, 2};
    snprintf(img, sizeof img, "%s/img", dir);
    write_idx(img, 0, 0x08, 3, dims, px, 12);

    snprintf(lab, sizeof lab, "%s/count", dir);
    unsigned char l4[4] = {0, 1, 2, 3};
    uint32_t d4[1] = {4};
    write_idx(lab, 0, 0x08, 1, d4, l4, 4);
    expect_reject(img, lab, 0, KD_EINPUT, "4 labels, but the images file", "holds 3 images");

    snprintf(lab, sizeof lab, "%s/range", dir);
    unsigned char l3[3] = {0, 9, 10};
    uint32_t d3[1] = {3};
    write_idx(lab, 0, 0x08, 1, d3, l3, 3);
    expect_reject(img, lab, 10, KD_EINPUT, "byte 10: label of sample 2 is 10", "expected 0 to 9");

    snprintf(lab, sizeof lab, "%s/neg", dir);
    unsigned char ln[3] = {0, 0xff, 1};  /* i8 -1 */
    write_idx(lab, 0, 0x09, 1, d3, ln, 3);
    expect_reject(img, lab, 0, KD_EINPUT, "label of sample 1 is -1", NULL);

    snprintf(lab, sizeof lab, "%s/rank2", dir);
    uint32_t d31[2] = {3, 1};
    write_idx(lab, 0, 0x08, 2, d31, l3, 3);
    expect_reject(img, lab, 0, KD_EINPUT, "labels file needs rank 1", "found rank 2");

    snprintf(lab, sizeof lab, "%s/float", dir);
    unsigned char lf[12] = {0};
    write_idx(lab, 0, 0x0D, 1, d3, lf, 12);
    expect_reject(img, lab, 0, KD_EINPUT, "integer type", "found f32");

    /* An images file of rank 1 is not images. */
    snprintf(lab, sizeof lab, "%s/rank1img", dir);
    write_idx(lab, 0, 0x08, 1, d3, l3, 3);
    expect_reject(lab, NULL, 0, KD_EINPUT, "images file needs rank 2", "found rank 1");

    /* Bad preprocessing settings are usage errors. */
    kd_data_source src;
    kd_data_source_defaults(&src);
    snprintf(src.path, sizeof src.path, "%s", img);
    kd_preprocess pp;
    kd_preprocess_defaults(&pp);
    pp.n_channels = 1;
    pp.std[0] = 0;
    kd_dataset *ds = NULL;
    kd_err err;
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, &pp, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "preprocess.std[0]");
    pp.n_channels = 3;
    pp.std[0] = pp.std[1] = pp.std[2] = 1;
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, &pp, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "3 values given, but the data has 1 channel");
    pp.n_channels = 0;
    pp.scale = -1;
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, &pp, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "preprocess.scale");
    CHECK(ds == NULL);
}
