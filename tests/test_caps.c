/* test_caps.c - every size cap of the readers, exactly at the limit (accepted, or failing later
 * for another reason that proves the cap let it through) and at limit + 1 (refused by the cap,
 * with its message): safetensors header bytes, JSON nesting depth, IDX dimensions and payload,
 * image side and pixel count, CSV record length and column count, per-sample sizes and tensors
 * (BLAS' 32-bit ints), and a checkpoint's arch against its own data. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "../src/core/test_hooks.h"
#include "../src/data/data_impl.h"
#include "kd_checkpoint.h"
#include "kd_config.h"
#include "kd_nn.h"
#include "kd_safetensors.h"
#include "kd_test.h"

/* Writes a safetensors file: 8-byte length, then header padded with spaces to n bytes. */
static int write_st(const char *path, const char *header, size_t n) {
    size_t hl = strlen(header);
    if (hl > n) return -1;
    unsigned char *buf = malloc(8 + n);
    if (!buf) return -1;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, header, hl);
    memset(buf + 8 + hl, ' ', n - hl);
    int rc = kd_test_write_file(path, buf, 8 + n);
    free(buf);
    return rc;
}

KD_TEST(caps_safetensors_header_length) {
    char path[600];
    /* 100 MiB: in memory (/dev/shm) where there is one, so the test does not wait on a disk. */
    if (access("/dev/shm", W_OK) == 0)
        snprintf(path, sizeof path, "/dev/shm/kd-caps-%ld.safetensors", (long)getpid());
    else
        snprintf(path, sizeof path, "%s/h.safetensors", kd_test_tmpdir());
    kd_st_file f;
    kd_err err;
    /* At the limit: a 100 MiB header (an empty object and spaces) is read. */
    CHECK_EQ_INT(write_st(path, "{}", KD_ST_MAX_HEADER), 0);
    CHECK_EQ_INT(kd_st_read(&f, path, &err), KD_OK);
    CHECK_EQ_INT(f.header_len, KD_ST_MAX_HEADER);
    kd_st_free(&f);
    /* One byte more is refused from the length alone (the 8 bytes are the whole file). */
    unsigned char len8[8];
    uint64_t n = (uint64_t)KD_ST_MAX_HEADER + 1;
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(n >> (8 * i));
    CHECK_EQ_INT(kd_test_write_file(path, len8, 8), 0);
    CHECK_EQ_INT(kd_st_read(&f, path, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "header length 104857601 exceeds the 104857600-byte limit");
    remove(path);
}

/* "[[...[0]...]]" nested depth deep. */
static char *nested(int depth) {
    char *s = malloc(2 * (size_t)depth + 2);
    if (!s) return NULL;
    memset(s, '[', (size_t)depth);
    s[depth] = '0';
    memset(s + depth + 1, ']', (size_t)depth);
    s[2 * depth + 1] = '\0';
    return s;
}

KD_TEST(caps_json_nesting_depth) {
    kd_config c;
    kd_err err;
    char text[1024], *deep;
    /* A config: the root object, "model", "layers", the layer object = 4 levels; the layer's
     * field adds the rest (layer fields are the model's to judge, so at the limit it parses). */
    for (int extra = KD_JSON_MAX_DEPTH - 4; extra <= KD_JSON_MAX_DEPTH - 3; extra++) {
        if (!(deep = nested(extra))) return;
        snprintf(text, sizeof text, "{\"data\":{\"train\":{\"path\":\"x.idx\"}},\"model\":{"
                 "\"layers\":[{\"type\":\"dense\",\"units\":2,\"x\":%s}]}}", deep);
        kd_status st = kd_config_parse(&c, text, strlen(text), "deep.json", "/", NULL, 0, &err);
        if (extra + 4 <= KD_JSON_MAX_DEPTH) {
            CHECK_EQ_INT(st, KD_OK);
            kd_config_free(&c);
        } else {
            CHECK_EQ_INT(st, KD_EUSAGE);
            CHECK_CONTAINS(err.msg, "deep.json: line 1, column ");
            CHECK_CONTAINS(err.msg, "JSON nested deeper than 64 levels");
        }
        free(deep);
    }
    /* A --set value: 64 levels of its own are fine, 65 refused (not turned into a string). */
    const char *t = "{\"data\":{\"train\":{\"path\":\"x.idx\"}},\"model\":{\"layers\":[]}}";
    char ov[256];
    for (int d = KD_JSON_MAX_DEPTH; d <= KD_JSON_MAX_DEPTH + 1; d++) {
        if (!(deep = nested(d))) return;
        snprintf(ov, sizeof ov, "model.layers=%s", deep);
        const char *ovs[1] = {ov};
        kd_status st = kd_config_parse(&c, t, strlen(t), "c.json", "/", ovs, 1, &err);
        CHECK_EQ_INT(st, KD_EUSAGE);
        if (d == KD_JSON_MAX_DEPTH) {
            /* Past the nesting check, refused for what it is. */
            CHECK_CONTAINS(err.msg, "model.layers[0]: expected a layer object");
        } else {
            CHECK_CONTAINS(err.msg, "the value is nested deeper than 64 levels");
        }
        free(deep);
    }
    /* A safetensors header: the header object is level 1, "__metadata__" 2, then the array. At
     * the limit the reader gets past the check (and refuses the non-string value); one more
     * level is the nesting error. */
    char path[600], hdr[512];
    snprintf(path, sizeof path, "%s/deep.safetensors", kd_test_tmpdir());
    for (int d = KD_JSON_MAX_DEPTH - 2; d <= KD_JSON_MAX_DEPTH - 1; d++) {
        if (!(deep = nested(d))) return;
        snprintf(hdr, sizeof hdr, "{\"__metadata__\":{\"k\":%s}}", deep);
        CHECK_EQ_INT(write_st(path, hdr, (strlen(hdr) + 7) / 8 * 8), 0);
        kd_st_file f;
        CHECK_EQ_INT(kd_st_read(&f, path, &err), KD_EINPUT);
        if (d + 2 <= KD_JSON_MAX_DEPTH)
            CHECK_CONTAINS(err.msg, "__metadata__ key \"k\": expected a string value");
        else
            CHECK_CONTAINS(err.msg, "header JSON is nested deeper than 64 levels (at file offset 91)");
        free(deep);
    }
}

/* An IDX header (u8 unless type given) declaring dims; no payload follows. */
static const char *idx_header(int type, int rank, const uint32_t *dims) {
    static char path[600];
    unsigned char h[4 + 16] = {0, 0, (unsigned char)type, (unsigned char)rank};
    for (int i = 0; i < rank; i++)
        for (int k = 0; k < 4; k++) h[4 + 4 * i + k] = (unsigned char)(dims[i] >> (24 - 8 * k));
    snprintf(path, sizeof path, "%s/caps.idx", kd_test_tmpdir());
    CHECK_EQ_INT(kd_test_write_file(path, h, 4 + 4 * (size_t)rank), 0);
    return path;
}

KD_TEST(caps_idx_dimensions_and_payload) {
    kd_idx x;
    kd_err err;
    /* One dimension at its cap (2^30): accepted by the header checks; the file then ends. */
    uint32_t d1[1] = {1u << 30};
    CHECK_EQ_INT(kd_idx_read(idx_header(0x08, 1, d1), &x, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "data shorter than the header says: expected 1073741824 bytes");
    CHECK(kd_idx_last_alloc <= (size_t)1 << 20);  /* the claim alone allocated 1 MiB at most */
    d1[0]++;
    CHECK_EQ_INT(kd_idx_read(idx_header(0x08, 1, d1), &x, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "byte 4: IDX dimension 0 is 1073741825: expected 1 to 1073741824");
    /* The payload cap (2 GiB): exactly 2^31 bytes passes, 2^31 + 1 does not. */
    uint32_t d2[2] = {1u << 30, 2};
    CHECK_EQ_INT(kd_idx_read(idx_header(0x08, 2, d2), &x, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "data shorter than the header says: expected 2147483648 bytes");
    uint32_t d3[2] = {3, 715827883};  /* 2147483649 bytes */
    CHECK_EQ_INT(kd_idx_read(idx_header(0x08, 2, d3), &x, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "byte 4: IDX dimensions declare more than the 2147483648-byte cap");
}

/* A PNG signature and IHDR of w x h, 8-bit grey (what stbi_info reads). */
static size_t png_ihdr(unsigned char *b, uint32_t w, uint32_t h) {
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char body[17] = {'I', 'H', 'D', 'R'};
    for (int k = 0; k < 4; k++) {
        body[4 + k] = (unsigned char)(w >> (24 - 8 * k));
        body[8 + k] = (unsigned char)(h >> (24 - 8 * k));
    }
    body[12] = 8;  /* bit depth; colour type 0, compression 0, filter 0, interlace 0 */
    memcpy(b, sig, 8);
    b[8] = b[9] = b[10] = 0, b[11] = 13;
    memcpy(b + 12, body, 17);
    uLong crc = crc32(0, body, 17);
    for (int k = 0; k < 4; k++) b[29 + k] = (unsigned char)(crc >> (24 - 8 * k));
    return 33;
}

KD_TEST(caps_image_side_and_pixel_count) {
    unsigned char b[64];
    char why[256];
    int w, h;
    static const struct {
        uint32_t w, h;
        kd_image_verdict v;
    } cases[] = {
        {8192, 1, KD_IMAGE_OK},           {8193, 1, KD_IMAGE_TOO_LARGE},
        {1, 8192, KD_IMAGE_OK},           {1, 8193, KD_IMAGE_TOO_LARGE},
        {4096, 4096, KD_IMAGE_OK},        {4097, 4096, KD_IMAGE_TOO_LARGE},
        {8192, 2048, KD_IMAGE_OK},        {8192, 2049, KD_IMAGE_TOO_LARGE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = png_ihdr(b, cases[i].w, cases[i].h);
        CHECK_EQ_INT(kd_image_header(b, n, 0, &w, &h, why, sizeof why), cases[i].v);
        if (cases[i].v == KD_IMAGE_TOO_LARGE) {
            CHECK_CONTAINS(why, "expected sides of 1 to 8192 and at most 16777216 pixels");
        } else {
            CHECK_EQ_INT(w, cases[i].w);
            CHECK_EQ_INT(h, cases[i].h);
        }
    }
}

/* Writes text to a CSV file in a fresh folder; returns the source for it. */
static kd_data_source csv_source(const char *text, size_t len) {
    kd_data_source src;
    kd_data_source_defaults(&src);
    src.format = KD_FMT_CSV;
    src.has_header = 0;
    snprintf(src.path, sizeof src.path, "%s/caps.csv", kd_test_tmpdir());
    CHECK_EQ_INT(kd_test_write_file(src.path, text, len), 0);
    return src;
}

KD_TEST(caps_csv_record_length_and_columns) {
    kd_data_mem m;
    kd_err err;
    /* Columns: 2^20 fields ("0,0,...,0\n", the last one the label) pass, one more does not. */
    for (size_t cols = KD_CSV_MAX_COLUMNS; cols <= KD_CSV_MAX_COLUMNS + 1; cols++) {
        char *t = malloc(2 * cols);
        if (!t) return;
        for (size_t i = 0; i < cols; i++) t[2 * i] = '0', t[2 * i + 1] = i + 1 < cols ? ',' : '\n';
        kd_data_source src = csv_source(t, 2 * cols);
        free(t);
        kd_status st = kd_csv_load(&src, &m, &err);
        if (cols == KD_CSV_MAX_COLUMNS) {
            CHECK_EQ_INT(st, KD_OK);
            CHECK_EQ_INT(m.shape.d[0], KD_CSV_MAX_COLUMNS - 1);
            kd_data_mem_free(&m);
        } else {
            CHECK_EQ_INT(st, KD_EINPUT);
            CHECK_CONTAINS(err.msg, "caps.csv: line 1: 1048577 columns, more than the limit of "
                                    "1048576");
        }
    }
    /* Length: a record of exactly 16 MiB (its newline included) passes, one byte more does not:
     * "1" padded with spaces (a number may be), then ",0\n". */
    for (size_t len = KD_CSV_MAX_LINE; len <= KD_CSV_MAX_LINE + 1; len++) {
        char *t = malloc(len + 6);
        if (!t) return;
        memset(t, ' ', len);
        t[0] = '1';
        memcpy(t + len - 3, ",0\n", 3);
        memcpy(t + len, "2,1\n", 4);  /* a short second record */
        kd_data_source src = csv_source(t, len + 4);
        free(t);
        kd_status st = kd_csv_load(&src, &m, &err);
        if (len == KD_CSV_MAX_LINE) {
            CHECK_EQ_INT(st, KD_OK);
            CHECK_EQ_INT(m.n, 2);
            kd_data_mem_free(&m);
        } else {
            CHECK_EQ_INT(st, KD_EINPUT);
            CHECK_CONTAINS(err.msg, "caps.csv: line 1: 16777217 bytes long, more than the "
                                    "16777216-byte limit of a CSV line");
        }
    }
}

/* BLAS takes 32-bit int dimensions: a per-sample size or a tensor of INT_MAX values builds
 * (nothing of that size is allocated by a relu or a flatten), INT_MAX + 1 is refused with a
 * message instead of a silent narrowing in gemm. */
KD_TEST(caps_model_sizes_fit_blas_ints) {
    kd_model m;
    kd_err err;
    kd_shape at = {1, {(size_t)INT_MAX}}, over = {1, {(size_t)INT_MAX + 1}};
    CHECK_EQ_INT(kd_model_init(&m, &at, "[{\"type\":\"relu\"}]", 0, &err), KD_OK);
    kd_model_free(&m);
    CHECK_EQ_INT(kd_model_init(&m, &over, "[{\"type\":\"relu\"}]", 0, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "at most 2147483647 values");
    /* A layer whose output passes the limit: [46341, 46341] -> flatten is 2147488281 values. */
    kd_shape sq = {2, {46341, 46341}}, ok = {2, {46340, 46340}};
    CHECK_EQ_INT(kd_model_init(&m, &sq, "[{\"type\":\"flatten\"}]", 0, &err), KD_EUSAGE);
    CHECK_EQ_INT(kd_model_init(&m, &ok, "[{\"type\":\"flatten\"}]", 0, &err), KD_OK);
    kd_model_free(&m);
    /* A weight of 2^24 x 128 = 2^31 values: one past INT_MAX. */
    kd_shape in = {1, {128}};
    CHECK_EQ_INT(kd_model_init(&m, &in, "[{\"type\":\"dense\",\"units\":16777216}]", 0, &err),
                 KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "0.weight is too large (more than 2147483647 values");
}

/* A checkpoint's arch may not declare more values than its data section holds: a 300-byte
 * file describing a 10^9-parameter model is refused before anything is allocated for it. */
KD_TEST(caps_checkpoint_arch_within_its_data) {
    char path[600];
    snprintf(path, sizeof path, "%s/big-arch.safetensors", kd_test_tmpdir());
    float w[6] = {0};
    kd_st_out t[] = {{"0.weight", KD_DT_F32, 2, {2, 3}, w}};
    const char *k[] = {"arch"};
    const char *big[] = {"{\"input\":[100000],\"layers\":[{\"type\":\"dense\",\"units\":10000}]}"};
    kd_err err;
    CHECK_EQ_INT(kd_st_write(path, t, 1, k, big, 1, &err), KD_OK);
    kd_model m;
    CHECK_EQ_INT(kd_ckpt_load(path, NULL, 0, 0, &m, NULL, NULL, NULL, NULL, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "metadata: arch: declares 1000010000 parameter and buffer values, "
                            "more than the 24 its tensor data can hold");
    /* At the limit (2x3 weight, no bias: 6 values, 24 bytes) the file loads. */
    const char *fits[] = {"{\"input\":[3],\"layers\":[{\"type\":\"dense\",\"units\":2,\"bias\":false}]}"};
    CHECK_EQ_INT(kd_st_write(path, t, 1, k, fits, 1, &err), KD_OK);
    CHECK_EQ_INT(kd_ckpt_load(path, NULL, 0, 0, &m, NULL, NULL, NULL, NULL, &err), KD_OK);
    kd_model_free(&m);
}
