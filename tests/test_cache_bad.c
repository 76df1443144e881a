/* test_cache_bad.c - malformed cache files: one byte changed in the header, the index and each
 * block, truncations and an appended byte, every header field out of range, unknown and
 * missing keys, bad top-k classes and non-finite values behind valid checksums, and every
 * single-byte change of a small file. Each is refused with KD_EINPUT and a message naming the
 * file and what is wrong; none crashes (the asan run checks that). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <zlib.h>

#include "../src/cache/cache_impl.h"
#include "cache_fixture.h"

static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Writes a cache into the case's folder and returns its bytes (*len); *path its path. */
static unsigned char *make(size_t n_rows, size_t views, size_t C, size_t nt, kd_cache_dtype dt,
                           size_t top_k, size_t *len, char *path, size_t cap) {
    snprintf(path, cap, "%s/c.kdcache", kd_test_tmpdir());
    size_t *idx = cache_fx_index(n_rows);
    kd_cache_meta m = cache_fx_meta(n_rows, C, nt, views, dt, top_k, top_k ? 2.0 : 0.0);
    cache_fx fx = {0};
    kd_err err;
    kd_status st = cache_fx_write(path, &m, idx, &fx, 1000, &err);
    free(idx);
    CHECK_EQ_INT(st, KD_OK);
    return st == KD_OK ? cache_fx_read(path, len) : NULL;
}

/* data[0..len) is refused, as a file and from memory, with a message holding want. */
static void refused(const char *file, int line, const unsigned char *data, size_t len,
                    const char *want) {
    char path[600];
    snprintf(path, sizeof path, "%s/bad.kdcache", kd_test_tmpdir());
    kd_test_write_file(path, data, len);
    kd_cache *c = NULL;
    kd_err err;
    kd_status st = kd_cache_open(&c, path, &err);
    if (st != KD_EINPUT || !strstr(err.msg, want) || !strstr(err.msg, path))
        kd_test_fail(file, line, "file: status %d, expected 3 and \"%s\" in: %s", st, want,
                     err.msg);
    kd_cache_close(c);
    st = kd_cache_open_mem(&c, data, len, "in-memory", &err);
    if (st != KD_EINPUT || !strstr(err.msg, want) || !strstr(err.msg, "cache in-memory: "))
        kd_test_fail(file, line, "memory: status %d, expected 3 and \"%s\" in: %s", st, want,
                     err.msg);
    kd_cache_close(c);
}
#define REFUSED(data, len, want) refused(__FILE__, __LINE__, (data), (len), (want))

/* The offsets kd_cache.h's layout gives, derived here on their own. */
typedef struct {
    size_t hl, index_off, blocks_off, stride, size;
} offsets;

static offsets offsets_of(const unsigned char *d, size_t len, size_t n_rows, size_t entry) {
    offsets o = {.hl = get32(d + 8), .size = len};
    o.index_off = 16 + o.hl;
    o.blocks_off = o.index_off + 4 * n_rows + 4;
    o.stride = 4096 * entry + 4;
    return o;
}

KD_TEST(cache_bad_one_byte_changed_names_the_part) {
    char path[600];
    size_t len, n = 5000;
    unsigned char *d = make(n, 2, 3, 1, KD_CACHE_F32, 0, &len, path, sizeof path);
    if (!d) return;
    offsets o = offsets_of(d, len, n, 12); /* 10000 entries of 12 bytes: blocks of 4096 */
    CHECK_EQ_INT(len, o.blocks_off + 10000 * 12 + 3 * 4);
    char want[200];
    struct {
        size_t at;
        const char *want;
    } cases[] = {
        {0, "byte 0: not a distill cache file (expected it to start with \"KDCACHE1\")"},
        {12, "header (bytes 16.."},
        {16 + 10, "header (bytes 16.."},
        {o.index_off + 4 * 1234 + 1, "index (bytes "},
        {o.blocks_off - 2, "index (bytes "},
        {o.blocks_off, "block 0 (bytes "},
        {o.blocks_off + o.stride + 2048 * 12 + 5, "block 1 (bytes "},
        {len - 5, "block 2 (bytes "},
        {len - 1, "block 2 (bytes "}, /* its checksum */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        d[cases[i].at] ^= 0x10;
        REFUSED(d, len, cases[i].want);
        d[cases[i].at] ^= 0x10;
    }
    snprintf(want, sizeof want, "block 1 (bytes %zu..%zu) checksum mismatch: the file is corrupt",
             o.blocks_off + o.stride, o.blocks_off + 2 * o.stride);
    d[o.blocks_off + o.stride + 7] ^= 1;
    REFUSED(d, len, want);
    d[o.blocks_off + o.stride + 7] ^= 1;
    snprintf(want, sizeof want, "index (bytes %zu..%zu) checksum mismatch: the file is corrupt",
             o.index_off, o.blocks_off);
    d[o.index_off] ^= 1;
    REFUSED(d, len, want);
    free(d);
}

KD_TEST(cache_bad_truncated_or_longer_says_the_byte_counts) {
    char path[600], want[200];
    size_t len, n = 5000;
    unsigned char *d = make(n, 2, 3, 1, KD_CACHE_F32, 0, &len, path, sizeof path);
    if (!d) return;
    offsets o = offsets_of(d, len, n, 12);
    REFUSED(d, 0, "the file is 0 bytes, shorter than the 16 bytes of a cache's magic");
    REFUSED(d, 7, "the file is 7 bytes, shorter than the 16 bytes");
    REFUSED(d, 8, "the file is 8 bytes, shorter than the 16 bytes");
    snprintf(want, sizeof want, "the file is %zu bytes, shorter than its %zu-byte header needs "
             "(%zu bytes and more): truncated", 16 + o.hl / 2, o.hl, 16 + o.hl);
    REFUSED(d, 16 + o.hl / 2, want);
    size_t cuts[] = {o.index_off + 4 * 2500, o.blocks_off + o.stride + 100, len - 1};
    for (int i = 0; i < 3; i++) {
        snprintf(want, sizeof want, "the file is %zu bytes, its header implies %zu: truncated",
                 cuts[i], len);
        REFUSED(d, cuts[i], want);
    }
    unsigned char *longer = malloc(len + 1);
    memcpy(longer, d, len);
    longer[len] = 0;
    snprintf(want, sizeof want, "the file is %zu bytes, its header implies %zu: data after the "
             "end", len + 1, len);
    REFUSED(longer, len + 1, want);
    free(longer);
    free(d);
}

/* The file with its header replaced by text (length and checksum made to match). */
static unsigned char *with_header(const unsigned char *d, size_t len, const char *text,
                                  size_t *out_len) {
    size_t hl = get32(d + 8), nl = strlen(text), rest = len - 16 - hl;
    unsigned char *o = malloc(16 + nl + rest);
    memcpy(o, d, 8);
    put32(o + 8, (uint32_t)nl);
    put32(o + 12, (uint32_t)crc32(0, (const Bytef *)text, (uInt)nl));
    memcpy(o + 16, text, nl);
    memcpy(o + 16 + nl, d + 16 + hl, rest);
    *out_len = 16 + nl + rest;
    return o;
}

/* The header with key set to the JSON value (NULL: removed; a new key: added). */
static void header_case(const char *file, int line, const unsigned char *d, size_t len,
                        const char *key, const char *value, const char *want) {
    char *text = strndup((const char *)d + 16, get32(d + 8));
    cJSON *h = cJSON_Parse(text);
    free(text);
    if (value) {
        cJSON *v = cJSON_CreateRaw(value); /* verbatim: cJSON would reprint numbers */
        if (cJSON_HasObjectItem(h, key)) cJSON_ReplaceItemInObjectCaseSensitive(h, key, v);
        else cJSON_AddItemToObject(h, key, v);
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(h, key);
    }
    text = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    size_t n;
    unsigned char *o = with_header(d, len, text, &n);
    refused(file, line, o, n, want);
    free(o);
    cJSON_free(text);
}
#define HEADER(key, value, want) header_case(__FILE__, __LINE__, d, len, (key), (value), (want))

KD_TEST(cache_bad_header_fields_are_named) {
    char path[600];
    size_t len;
    unsigned char *d = make(4, 1, 3, 2, KD_CACHE_F32, 0, &len, path, sizeof path);
    if (!d) return;
    HEADER("n_rows", "0", "header field n_rows: expected an integer in 1..4294967296, got 0");
    HEADER("n_rows", "4294967297", "header field n_rows: expected an integer in 1..4294967296, "
                                   "got 4294967297");
    HEADER("n_rows", "2.5", "header field n_rows: expected a whole number in 0..2^53-1, got 2.5");
    HEADER("n_rows", "\"4\"", "header field n_rows: expected a whole number in 0..2^53-1, got "
                            "\"4\"");
    HEADER("n_rows", "-1", "header field n_rows: expected a whole number");
    HEADER("n_classes", "0", "header field n_classes: expected an integer in 1..65535, got 0");
    HEADER("n_classes", "65536", "header field n_classes: expected an integer in 1..65535, got "
                                 "65536");
    HEADER("n_teachers", "0", "header field n_teachers: expected an integer in 1..16, got 0");
    HEADER("n_teachers", "17", "header field n_teachers: expected an integer in 1..16, got 17");
    HEADER("top_k", "3", "header field top_k: expected 0 (all logits) or 1..2 (fewer than the 3 "
                         "classes), got 3");
    HEADER("temperature", "0.5", "header field temperature: expected 0 (a cache of all logits "
                                 "holds no T), got 0.5");
    HEADER("temperature", "null", "header field temperature: expected a number, got null");
    HEADER("views", "0", "header field views: expected an integer in 1..1024, got 0");
    HEADER("views", "1025", "header field views: expected an integer in 1..1024, got 1025");
    HEADER("view_seed", "9007199254740992", "header field view_seed: expected a whole number in "
                                            "0..2^53-1, got 9007199254740992");
    HEADER("view_seed", "-1", "header field view_seed: expected a whole number");
    HEADER("weights", "[0.5, 0.4]", "header field weights: expected 2 weights summing to 1 "
                                    "(within 1e-6), got a sum of 0.9");
    HEADER("weights", "[1.5, -0.5]", "header field weights[0]: expected a number in [0, 1], got "
                                     "1.5");
    HEADER("weights", "[1]", "header field weights: expected an array of 2 numbers (one per "
                             "teacher), got an array of 1");
    HEADER("weights", "[0.5, \"x\"]", "header field weights: expected an array of 2 numbers");
    HEADER("teacher_val_acc", "[0.9, 1.5]", "header field teacher_val_acc[1]: expected a fraction "
                                            "in [0, 1] or null, got 1.5");
    HEADER("ensemble_val_acc", "-0.1", "header field ensemble_val_acc: expected a fraction in "
                                       "[0, 1] or null, got -0.1");
    HEADER("ensemble_val_acc", "\"high\"", "header field ensemble_val_acc: expected a number or "
                                           "null, got \"high\"");
    HEADER("dtype", "\"bf16\"", "header field dtype: expected \"f32\" or \"f16\", got \"bf16\"");
    HEADER("format", "\"distill-cache/2\"", "header field format: expected \"distill-cache/1\", "
                                            "got \"distill-cache/2\"");
    HEADER("fields", "{\"a\": 1}", "header field fields.a: expected a string, got 1");
    HEADER("fields", "[]", "header field fields: expected an object of strings, got an array");
    HEADER("extra", "1", "header field \"extra\": unknown key");
    HEADER("view_sed", "1", "header field \"view_sed\": unknown key (did you mean view_seed?)");
    HEADER("fields", NULL, "header field fields: missing");
    HEADER("n_rows", NULL, "header field n_rows: missing");
    char many[4096] = "{";
    for (int i = 0; i < 33; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%s\"f%d\":\"v\"", i ? "," : "",
                 i);
    strcat(many, "}");
    HEADER("fields", many, "header field fields.f32: a cache records at most 32 fields");
    /* The largest sizes the ranges allow (2^32 rows, 1024 views, 16 teachers, 65535 classes,
     * 2^64 - 2^48 bytes of entries) and 2^32 rows of small entries: refused from the header
     * and the file's size alone, before any allocation (which ASan would report). */
    free(d);
    d = make(4, 1, 3, 1, KD_CACHE_F32, 0, &len, path, sizeof path);
    if (!d) return;
    const char *huge = "{\"format\":\"distill-cache/1\",\"n_rows\":4294967296,\"n_classes\":65535,"
                       "\"n_teachers\":16,\"dtype\":\"f32\",\"top_k\":0,\"temperature\":0,"
                       "\"views\":1024,\"view_seed\":1,\"weights\":[%s],\"teacher_val_acc\":[%s],"
                       "\"ensemble_val_acc\":null,\"fields\":{}}";
    char text[2048], w[400] = "", a[400] = "";
    for (int k = 0; k < 16; k++) {
        strcat(w, k ? ",0.0625" : "0.0625");
        strcat(a, k ? ",null" : "null");
    }
    snprintf(text, sizeof text, huge, w, a);
    size_t n;
    unsigned char *o = with_header(d, len, text, &n);
    REFUSED(o, n, "its header implies 18446462620207677");
    free(o);
    HEADER("n_rows", "4294967296", "its header implies 68723671");
    free(d);
}

KD_TEST(cache_bad_header_text) {
    char path[600];
    size_t len, n;
    unsigned char *d = make(4, 1, 3, 1, KD_CACHE_F32, 0, &len, path, sizeof path);
    if (!d) return;
    struct {
        const char *text, *want;
    } cases[] = {
        {"{\"format\":", "byte 25: the header is not valid JSON"},
        {"[1, 2]", "byte 16: the header is not a JSON object"},
        {"{} x", "byte 18: data after the header object"},
        {"{\"a\":\"\x01\"}", "byte 22: control byte 0x01 in the header"},
        {"{\"a\":\"\xff\"}", "byte 22: the header is not valid UTF-8"},
        {"{}", "header field format: missing"},
        {"{\"views\":1,\"views\":1}", "header field views: appears twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        unsigned char *o = with_header(d, len, cases[i].text, &n);
        REFUSED(o, n, cases[i].want);
        free(o);
    }
    char deep[200] = "{\"a\":";
    for (int i = 0; i < 70; i++) strcat(deep, "[");
    unsigned char *o = with_header(d, len, deep, &n);
    REFUSED(o, n, "byte 84: the header's JSON is nested deeper than 64 levels");
    free(o);
    put32(d + 8, (uint32_t)KD_CACHE_MAX_HEADER + 1);
    REFUSED(d, len, "byte 8: header length 1048577 exceeds the 1048576-byte limit");
    free(d);
}

KD_TEST(cache_bad_values_behind_valid_checksums) {
    char path[600];
    size_t len;
    /* top-k 2 of 5 classes, f16, 2 teachers: rows of 2 * (2 + 2 + 2) + 4 = 12 bytes... */
    unsigned char *d = make(6, 2, 5, 2, KD_CACHE_F16, 2, &len, path, sizeof path);
    if (!d) return;
    size_t row = 2 * 2 + 2 * 2 + 4, entry = 2 * row;
    offsets o = offsets_of(d, len, 6, entry);
    CHECK_EQ_INT(len, o.blocks_off + 12 * entry + 4);
    size_t e7 = o.blocks_off + 7 * entry + row; /* view 1, row 1 (sample 4), teacher 1 */
    unsigned char save[16];
    memcpy(save, d + e7, row);
    d[e7] = 5, d[e7 + 1] = 0;
    kd_cache_fix_checksums(d, len);
    char want[200];
    snprintf(want, sizeof want, "byte %zu: view 1, row 1 (training sample 4), teacher 1: class "
             "index 5 is not below n_classes 5", e7);
    REFUSED(d, len, want);
    d[e7] = d[e7 + 2], d[e7 + 1] = d[e7 + 3];
    kd_cache_fix_checksums(d, len);
    snprintf(want, sizeof want, "byte %zu: view 1, row 1 (training sample 4), teacher 1: class "
             "index %u appears twice", e7 + 2, d[e7 + 2] | d[e7 + 3] << 8);
    REFUSED(d, len, want);
    memcpy(d + e7, save, row);
    put32(d + e7 + 8, 0x7fc00000u); /* lse_rest: NaN */
    kd_cache_fix_checksums(d, len);
    REFUSED(d, len, "view 1, row 1 (training sample 4), teacher 1: a logit is not finite");
    memcpy(d + e7, save, row);
    d[e7 + 4] = 0x00, d[e7 + 5] = 0x7c; /* a kept value: f16 infinity */
    kd_cache_fix_checksums(d, len);
    REFUSED(d, len, "view 1, row 1 (training sample 4), teacher 1: a logit is not finite");
    memcpy(d + e7, save, row);
    kd_cache_fix_checksums(d, len);
    kd_cache *c = NULL;
    kd_err err;
    CHECK_EQ_INT(kd_cache_open_mem(&c, d, len, "restored", &err), KD_OK);
    kd_cache_close(c);
    /* The index out of order: samples 4 and 7 swapped. */
    put32(d + o.index_off + 4, 7);
    put32(d + o.index_off + 8, 4);
    kd_cache_fix_checksums(d, len);
    snprintf(want, sizeof want, "byte %zu: index[2] = 4 is not above index[1] = 7 (expected "
             "strictly ascending training-sample indices)", o.index_off + 8);
    REFUSED(d, len, want);
    free(d);
    /* An f32 logit of a full row: infinity. */
    d = make(3, 1, 4, 1, KD_CACHE_F32, 0, &len, path, sizeof path);
    if (!d) return;
    o = offsets_of(d, len, 3, 16);
    put32(d + o.blocks_off + 16 + 12, 0x7f800000u);
    kd_cache_fix_checksums(d, len);
    REFUSED(d, len, "view 0, row 1 (training sample 4), teacher 0: a logit is not finite "
                    "(class 3)");
    free(d);
}

/* Every single-byte change of a small top-k cache is caught by a checksum or a check; with the
 * checksums repaired, each change is refused or gives a cache whose rows all read back finite
 * (kd_cache_logits) and whose own meta and index pass kd_cache_check. */
KD_TEST(cache_bad_every_byte_changed) {
    char path[600];
    size_t len;
    unsigned char *d = make(3, 2, 4, 2, KD_CACHE_F16, 1, &len, path, sizeof path);
    if (!d) return;
    unsigned char *m = malloc(len);
    size_t caught = 0, accepted = 0, refused_fixed = 0;
    for (size_t at = 0; at < len; at++)
        for (int fix = 0; fix < 2; fix++) {
            memcpy(m, d, len);
            m[at] ^= 0x41;
            if (fix) kd_cache_fix_checksums(m, len);
            kd_cache *c = NULL;
            kd_err err;
            kd_status st = kd_cache_open_mem(&c, m, len, "flip", &err);
            CHECK(st == KD_OK || (st == KD_EINPUT && strstr(err.msg, "cache flip: ")));
            if (!fix) caught += st == KD_EINPUT;
            if (fix) refused_fixed += st != KD_OK;
            if (st != KD_OK) continue;
            accepted++;
            const kd_cache_meta *meta = kd_cache_info(c);
            size_t nr = meta->n_rows, C = meta->n_classes, nt = meta->n_teachers;
            size_t s[3];
            uint32_t v[3];
            float out[2 * 3 * 4];
            CHECK(nr <= 3 && nt * C <= 8); /* the sizes are fixed by the file's length */
            if (nr > 3 || nt * C > 8) {
                kd_cache_close(c);
                continue;
            }
            for (size_t r = 0; r < nr; r++) s[r] = kd_cache_index(c)[r];
            for (size_t view = 0; view < meta->views; view++) {
                for (size_t r = 0; r < nr; r++) v[r] = (uint32_t)view;
                CHECK_EQ_INT(kd_cache_logits(c, s, v, nr, out, &err), KD_OK);
                for (size_t i = 0; i < nt * nr * C; i++) CHECK(isfinite(out[i]));
            }
            CHECK_EQ_INT(kd_cache_check(c, meta, s, nr, "rebuild", &err), KD_OK);
            kd_cache_close(c);
        }
    CHECK_EQ_INT(caught, len);
    printf("    %zu bytes: every change caught; with checksums repaired %zu refused, %zu "
           "accepted\n", len, refused_fixed, accepted);
    free(m);
    free(d);
}
