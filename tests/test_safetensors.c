/* test_safetensors.c - half/bf16 rounding, safetensors round trip, interop with an independent
 * Python implementation, and a corpus of malformed files the reader must refuse by name. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_rng.h"
#include "kd_safetensors.h"
#include "kd_test.h"
#include "../src/core/test_hooks.h"

static float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}


/* ---- f16 / bf16 ------------------------------------------------------------------------- */

KD_TEST(f16_every_half_round_trips_exactly) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float x = kd_f16_to_f32((uint16_t)h);
        uint16_t back = kd_f32_to_f16(x);
        int is_nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff);
        if (is_nan ? !isnan(x) || !(((back >> 10) & 0x1f) == 0x1f && (back & 0x3ff))
                   : back != h) {
            if (bad++ < 5) kd_test_fail(__FILE__, __LINE__, "half 0x%04x -> %g -> 0x%04x", h, x, back);
        }
    }
    CHECK_EQ_INT(bad, 0);
    /* Decoding against hand-computed values. */
    CHECK(kd_f16_to_f32(0x3c00) == 1.0f);
    CHECK(kd_f16_to_f32(0xc000) == -2.0f);
    CHECK(kd_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(kd_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(kd_f16_to_f32(0x0400) == ldexpf(1.0f, -14));
    CHECK(isinf(kd_f16_to_f32(0xfc00)) && kd_f16_to_f32(0xfc00) < 0);
}

KD_TEST(f16_rounds_to_nearest_even) {
    /* Hand-computed cases around ties, overflow and the subnormal range. */
    CHECK_EQ_INT(kd_f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ_INT(kd_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);      /* tie -> even */
    CHECK_EQ_INT(kd_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02);  /* tie -> even (up) */
    CHECK_EQ_INT(kd_f32_to_f16(1.0f + ldexpf(1, -11) + ldexpf(1, -20)), 0x3c01);
    CHECK_EQ_INT(kd_f32_to_f16(65504.0f), 0x7bff);
    CHECK_EQ_INT(kd_f32_to_f16(65519.996f), 0x7bff);
    CHECK_EQ_INT(kd_f32_to_f16(65520.0f), 0x7c00);
    CHECK_EQ_INT(kd_f32_to_f16(-1e10f), 0xfc00);
    CHECK_EQ_INT(kd_f32_to_f16(ldexpf(1, -24)), 0x0001);
    CHECK_EQ_INT(kd_f32_to_f16(ldexpf(1, -25)), 0x0000);              /* tie -> 0 */
    CHECK_EQ_INT(kd_f32_to_f16(ldexpf(3, -25)), 0x0002);              /* 1.5 ulp tie -> 2 */
    CHECK_EQ_INT(kd_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);
    CHECK_EQ_INT(kd_f32_to_f16(-0.0f), 0x8000);
    CHECK_EQ_INT(kd_f32_to_f16(ldexpf(1, -14) - ldexpf(1, -26)), 0x0400); /* rounds up to normal */
    uint16_t n = kd_f32_to_f16(NAN);
    CHECK(((n >> 10) & 0x1f) == 0x1f && (n & 0x3ff) != 0);
    /* Property over random floats in and around the half range: the result is a nearest half,
     * and among two equally near ones the even one. Checked by decoding the neighbours. */
    kd_rng r;
    kd_rng_seed(&r, 11);
    int bad = 0;
    for (int i = 0; i < 200000; i++) {
        uint32_t e = 100 + (uint32_t)kd_rng_below(&r, 44); /* 2^-27 .. 2^16 */
        uint32_t u = (uint32_t)(kd_rng_u64(&r) & 0x807fffffu) | (e << 23);
        if (i % 4 == 0) u &= ~0x1fffu; /* many exact ties and exactly representable values */
        float x = bits_f32(u);
        uint16_t h = kd_f32_to_f16(x);
        double ax = fabs((double)x);
        uint16_t m = h & 0x7fff;
        double got = fabs((double)kd_f16_to_f32(h));
        int ok = 1;
        if (m >= 0x7c00) {
            ok = ax >= 65520.0;
        } else {
            double up = m < 0x7bff ? (double)kd_f16_to_f32((uint16_t)(m + 1)) : 65536.0;
            double down = m > 0 ? (double)kd_f16_to_f32((uint16_t)(m - 1)) : -1.0;
            double d = fabs(ax - got), du = fabs(up - ax), dd = m > 0 ? fabs(ax - down) : INFINITY;
            if (d > du || d > dd) ok = 0;
            if ((d == du || d == dd) && (m & 1)) ok = 0;
            if ((h & 0x8000) != (u & 0x80000000u) >> 16) ok = 0;
        }
        if (!ok && bad++ < 5) kd_test_fail(__FILE__, __LINE__, "f32 %a -> half 0x%04x", x, h);
    }
    CHECK_EQ_INT(bad, 0);
}

KD_TEST(bf16_rounds_to_nearest_even) {
    CHECK_EQ_INT(kd_f32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ_INT(kd_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80);      /* tie -> even */
    CHECK_EQ_INT(kd_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82);  /* tie -> even (up) */
    CHECK_EQ_INT(kd_f32_to_bf16(1.0f + ldexpf(1, -8) + ldexpf(1, -20)), 0x3f81);
    CHECK_EQ_INT(kd_f32_to_bf16(-2.0f), 0xc000);
    CHECK_EQ_INT(kd_f32_to_bf16(bits_f32(0x7f7fffffu)), 0x7f80); /* FLT_MAX rounds to Inf */
    uint16_t n = kd_f32_to_bf16(NAN);
    CHECK(isnan(kd_bf16_to_f32(n)));
    CHECK(isnan(kd_bf16_to_f32(kd_f32_to_bf16(bits_f32(0x7f800001u))))); /* low-payload NaN */
    CHECK(kd_bf16_to_f32(0x4049) == 3.140625f);
    for (uint32_t h = 0; h < 65536; h++) {
        float x = kd_bf16_to_f32((uint16_t)h);
        if (!isnan(x) && kd_f32_to_bf16(x) != h) {
            kd_test_fail(__FILE__, __LINE__, "bf16 0x%04x does not round trip", h);
            break;
        }
    }
}

KD_TEST(utf8_validator_rejects_overlongs_surrogates_and_big_code_points) {
    CHECK(kd_utf8_valid("plain", 5, NULL));
    CHECK(kd_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, NULL)); /* é € 😀 */
    CHECK(kd_utf8_valid("\xf4\x8f\xbf\xbf", 4, NULL));                   /* U+10FFFF */
    size_t off = 99;
    CHECK(!kd_utf8_valid("ab\xc0\xaf", 4, &off)); /* overlong '/' */
    CHECK_EQ_INT(off, 2);
    CHECK(!kd_utf8_valid("\xe0\x80\xaf", 3, NULL));     /* overlong 3-byte */
    CHECK(!kd_utf8_valid("\xed\xa0\x80", 3, NULL));     /* U+D800 surrogate */
    CHECK(!kd_utf8_valid("\xf4\x90\x80\x80", 4, NULL)); /* U+110000 */
    CHECK(!kd_utf8_valid("\xc3", 1, NULL));             /* truncated */
    CHECK(!kd_utf8_valid("\x80", 1, NULL));             /* lone continuation */
    CHECK(!kd_utf8_valid("\xc3\x28", 2, NULL));         /* bad continuation */
    CHECK(!kd_utf8_valid("\xff", 1, NULL));
}

/* ---- round trip ------------------------------------------------------------------------- */

KD_TEST(safetensors_round_trip_is_byte_identical) {
    char path[600];
    snprintf(path, sizeof path, "%s/rt.safetensors", kd_test_tmpdir());
    float w[6] = {1.5f, -2.25f, 3.0f, 0.1f, -0.0f, 1e-30f};
    uint16_t h[3] = {0x3c00, 0x8001, 0x7bff};
    uint16_t bf[2] = {0x3f80, 0xc049};
    int8_t q[4] = {-128, -1, 0, 127};
    uint8_t u[3] = {0, 200, 255};
    int32_t i32[2] = {-7, 2147483647};
    int64_t cnt = INT64_C(-9000000000);
    kd_st_out t[] = {
        {"0.weight", KD_DT_F32, 2, {2, 3}, w},   {"h", KD_DT_F16, 1, {3}, h},
        {"b", KD_DT_BF16, 2, {1, 2}, bf},        {"q", KD_DT_I8, 2, {2, 2}, q},
        {"u", KD_DT_U8, 1, {3}, u},              {"i", KD_DT_I32, 1, {2}, i32},
        {"1.num_batches_tracked", KD_DT_I64, 0, {0}, &cnt},
        {"empty", KD_DT_F32, 2, {0, 3}, w},
    };
    const size_t nt = sizeof t / sizeof t[0];
    const char *keys[] = {"format", "quote\"back\\slash", "uni"};
    const char *vals[] = {"distill/1", "line\nbreak\ttab\x01", "caf\xc3\xa9 \xe2\x82\xac"};
    kd_err err;
    kd_err_clear(&err);
    CHECK_EQ_INT(kd_st_write(path, t, nt, keys, vals, 3, &err), KD_OK);
    kd_st_file f;
    kd_status st = kd_st_read(&f, path, &err);
    CHECK_EQ_INT(st, KD_OK);
    if (st != KD_OK) {
        printf("  %s\n", err.msg);
        return;
    }
    CHECK_EQ_INT(f.n_tensors, nt);
    CHECK(f.blob[8] == '{');
    CHECK_EQ_INT((8 + f.header_len) % 8, 0);
    CHECK(f.header_len == 0 || f.blob[8 + f.header_len - 1] == ' ' ||
          f.blob[8 + f.header_len - 1] == '}');
    /* Stored in the given order (zero-byte "empty" shares its offset with the end). */
    uint64_t pos = 0;
    for (size_t i = 0; i < nt; i++) {
        const kd_st_tensor *g = kd_st_find(&f, t[i].name);
        CHECK(g != NULL);
        if (!g) continue;
        CHECK_EQ_INT(g->dtype, t[i].dtype);
        CHECK_EQ_INT(g->rank, t[i].rank);
        uint64_t numel = 1;
        for (int k = 0; k < t[i].rank; k++) {
            CHECK_EQ_INT(g->shape[k], t[i].shape[k]);
            numel *= t[i].shape[k];
        }
        CHECK_EQ_INT(g->numel, numel);
        CHECK_EQ_INT(g->begin, pos);
        size_t nbytes = (size_t)numel * kd_dtype_size(t[i].dtype);
        CHECK(nbytes == 0 || memcmp(g->data, t[i].data, nbytes) == 0);
        pos += nbytes;
    }
    CHECK_EQ_INT(f.blob_size, 8 + f.header_len + pos);
    CHECK_EQ_INT(f.n_meta, 3);
    for (int i = 0; i < 3; i++) {
        const char *v = kd_st_meta(&f, keys[i]);
        CHECK(v && strcmp(v, vals[i]) == 0);
    }
    CHECK(kd_st_meta(&f, "absent") == NULL);
    /* Conversions to float and to int64. */
    float out[6];
    kd_st_to_f32(kd_st_find(&f, "h"), out);
    CHECK(out[0] == 1.0f && out[1] == -ldexpf(1, -24) && out[2] == 65504.0f);
    kd_st_to_f32(kd_st_find(&f, "b"), out);
    CHECK(out[0] == 1.0f && out[1] == -3.140625f);
    kd_st_to_f32(kd_st_find(&f, "q"), out);
    CHECK(out[0] == -128.0f && out[3] == 127.0f);
    kd_st_to_f32(kd_st_find(&f, "u"), out);
    CHECK(out[1] == 200.0f && out[2] == 255.0f);
    CHECK(kd_st_get_i64(kd_st_find(&f, "1.num_batches_tracked"), 0) == INT64_C(-9000000000));
    CHECK(kd_st_get_i64(kd_st_find(&f, "i"), 1) == 2147483647);
    /* Writing what we read gives the same file, byte for byte. */
    char path2[620];
    snprintf(path2, sizeof path2, "%s.again", path);
    kd_st_out again[8];
    for (size_t i = 0; i < nt; i++) {
        const kd_st_tensor *g = kd_st_find(&f, t[i].name);
        again[i] = (kd_st_out){g->name, g->dtype, g->rank, {0}, g->data};
        memcpy(again[i].shape, g->shape, sizeof g->shape);
    }
    CHECK_EQ_INT(kd_st_write(path2, again, nt, keys, vals, 3, &err), KD_OK);
    kd_st_file f2;
    CHECK_EQ_INT(kd_st_read(&f2, path2, &err), KD_OK);
    CHECK(f2.blob_size == f.blob_size && memcmp(f2.blob, f.blob, f.blob_size) == 0);
    kd_st_free(&f2);
    kd_st_free(&f);
    kd_st_free(&f); /* idempotent */
}

KD_TEST(safetensors_writer_refuses_duplicates_and_bad_names) {
    char path[600];
    snprintf(path, sizeof path, "%s/dup.safetensors", kd_test_tmpdir());
    float w[2] = {1, 2};
    kd_st_out t[] = {{"a", KD_DT_F32, 1, {1}, w}, {"a", KD_DT_F32, 1, {1}, w + 1}};
    kd_err err;
    CHECK_EQ_INT(kd_st_write(path, t, 2, NULL, NULL, 0, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "\"a\" given twice");
    kd_st_out u[] = {{"bad\xff", KD_DT_F32, 1, {1}, w}};
    CHECK_EQ_INT(kd_st_write(path, u, 1, NULL, NULL, 0, &err), KD_EUSAGE);
    FILE *fp = fopen(path, "rb");
    CHECK(fp == NULL); /* nothing written */
    if (fp) fclose(fp);
    /* An empty file (no tensors, no metadata) is "{}" padded: the reference's exact bytes. */
    CHECK_EQ_INT(kd_st_write(path, NULL, 0, NULL, NULL, 0, &err), KD_OK);
    kd_st_file f;
    CHECK_EQ_INT(kd_st_read(&f, path, &err), KD_OK);
    static const uint8_t want[16] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    CHECK(f.blob_size == 16 && memcmp(f.blob, want, 16) == 0);
    kd_st_free(&f);
}

KD_TEST(safetensors_failed_write_keeps_previous_file) {
    const char *dir = kd_test_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/keep.safetensors", dir);
    float a[2] = {1, 2}, b[2] = {3, 4};
    kd_st_out ta[] = {{"x", KD_DT_F32, 1, {2}, a}}, tb[] = {{"x", KD_DT_F32, 1, {2}, b}};
    kd_err err;
    CHECK_EQ_INT(kd_st_write(path, ta, 1, NULL, NULL, 0, &err), KD_OK);
    kd_fault_write_after = 1;
    CHECK_EQ_INT(kd_st_write(path, tb, 1, NULL, NULL, 0, &err), KD_EIO);
    kd_fault_write_after = 0;
    CHECK_CONTAINS(err.msg, "write failed");
    kd_st_file f;
    CHECK_EQ_INT(kd_st_read(&f, path, &err), KD_OK);
    float got[2] = {0, 0};
    if (f.n_tensors == 1) kd_st_to_f32(&f.tensors[0], got);
    CHECK(got[0] == 1 && got[1] == 2);
    kd_st_free(&f);
    char cmd[700], out[256];
    snprintf(cmd, sizeof cmd, "ls -A '%s'", dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK(strcmp(out, "keep.safetensors\n") == 0); /* no temp file left behind */
}

/* The directory-fsync warning of kd_write_atomic reaches kd_st_write's caller beside KD_OK
 * (export prints it), and the file read back is the new one. */
KD_TEST(safetensors_dir_fsync_failure_is_a_warning_with_the_new_file) {
    const char *dir = kd_test_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/new.safetensors", dir);
    float a[2] = {1, 2}, b[2] = {3, 4};
    kd_st_out ta[] = {{"x", KD_DT_F32, 1, {2}, a}}, tb[] = {{"x", KD_DT_F32, 1, {2}, b}};
    kd_err err;
    CHECK_EQ_INT(kd_st_write(path, ta, 1, NULL, NULL, 0, &err), KD_OK);
    kd_fault_dirsync_after = 1;
    CHECK_EQ_INT(kd_st_write(path, tb, 1, NULL, NULL, 0, &err), KD_OK);
    kd_fault_dirsync_after = 0;
    CHECK_EQ_INT(err.code, KD_OK);
    CHECK_CONTAINS(err.msg, "fsync of its directory failed");
    kd_st_file f;
    CHECK_EQ_INT(kd_st_read(&f, path, &err), KD_OK);
    float got[2] = {0, 0};
    if (f.n_tensors == 1) kd_st_to_f32(&f.tensors[0], got);
    CHECK(got[0] == 3 && got[1] == 4);
    kd_st_free(&f);
}

/* ---- interop with the independent Python implementation ------------------------------------ */

/* The values of the script's line "tensor <name> v1 v2 ...". */
static size_t tensor_values(const char *out, const char *name, double *vals, size_t cap) {
    char key[128];
    snprintf(key, sizeof key, "tensor %s ", name);
    return kd_test_line_values(out, key, 0, vals, cap);
}

KD_TEST(safetensors_reads_python_written_files) {
    if (!kd_test_have_python()) {
        kd_test_skip("python3 not available");
        return;
    }
    static const char *const dts[] = {"F32", "F16", "BF16"};
    for (int d = 0; d < 3; d++) {
        char path[600], cmd[900], out[8192];
        snprintf(path, sizeof path, "%s/py_%s.safetensors", kd_test_tmpdir(), dts[d]);
        snprintf(cmd, sizeof cmd, "python3 tests/st_interop.py write '%s' --dtype %s%s", path,
                 dts[d], d == 0 ? " --meta" : "");
        CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
        kd_st_file f;
        kd_err err;
        kd_status st = kd_st_read(&f, path, &err);
        CHECK_EQ_INT(st, KD_OK);
        if (st != KD_OK) {
            printf("  %s\n", err.msg);
            return;
        }
        /* The reference layout sorts by name here (one dtype): 0.bias comes first. */
        CHECK_EQ_INT(f.n_tensors, 4);
        CHECK(strcmp(f.tensors[0].name, "0.bias") == 0 && f.tensors[0].begin == 0);
        CHECK(strcmp(f.tensors[3].name, "2.weight") == 0);
        if (d == 0) CHECK(kd_st_meta(&f, "format") && strcmp(kd_st_meta(&f, "format"), "pt") == 0);
        else CHECK_EQ_INT(f.n_meta, 0);
        const kd_st_tensor *w = kd_st_find(&f, "0.weight");
        CHECK(w && w->rank == 2 && w->shape[0] == 3 && w->shape[1] == 4);
        CHECK(w && strcmp(kd_dtype_name(w->dtype), dts[d]) == 0);
        for (size_t i = 0; w && i < f.n_tensors; i++) {
            float got[16];
            double want[16];
            kd_st_to_f32(&f.tensors[i], got);
            size_t n = tensor_values(out, f.tensors[i].name, want, 16);
            CHECK_EQ_INT(n, f.tensors[i].numel);
            for (size_t k = 0; k < n; k++) CHECK((double)got[k] == want[k]);
        }
        kd_st_free(&f);
    }
}

KD_TEST(safetensors_python_accepts_our_files) {
    if (!kd_test_have_python()) {
        kd_test_skip("python3 not available");
        return;
    }
    char path[600], cmd[900], out[4096];
    snprintf(path, sizeof path, "%s/ours.safetensors", kd_test_tmpdir());
    float w[12];
    for (int i = 0; i < 12; i++) w[i] = 0.5f * (float)i - 2.0f;
    uint16_t bf[3] = {kd_f32_to_bf16(1.5f), kd_f32_to_bf16(-0.1f), kd_f32_to_bf16(1e20f)};
    uint16_t hf[3] = {kd_f32_to_f16(1.5f), kd_f32_to_f16(-0.1f), kd_f32_to_f16(6e-8f)};
    int64_t cnt = 42;
    int8_t q[3] = {-5, 0, 5};
    kd_st_out t[] = {{"0.weight", KD_DT_F32, 2, {3, 4}, w},
                     {"1.num_batches_tracked", KD_DT_I64, 0, {0}, &cnt},
                     {"b", KD_DT_BF16, 1, {3}, bf},
                     {"h", KD_DT_F16, 1, {3}, hf},
                     {"q", KD_DT_I8, 1, {3}, q}};
    const char *keys[] = {"format", "arch"};
    const char *vals[] = {"distill/1", "{\"input\":[4],\"layers\":[]}"};
    kd_err err;
    CHECK_EQ_INT(kd_st_write(path, t, 5, keys, vals, 2, &err), KD_OK);
    snprintf(cmd, sizeof cmd, "python3 tests/st_interop.py check '%s' --require-meta format "
             "--require-meta arch --dump", path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "OK 5 tensors");
    double v[16];
    CHECK_EQ_INT(tensor_values(out, "0.weight", v, 16), 12);
    for (int i = 0; i < 12; i++) CHECK(v[i] == (double)w[i]);
    CHECK_EQ_INT(tensor_values(out, "1.num_batches_tracked", v, 16), 1);
    CHECK(v[0] == 42.0);
    CHECK_EQ_INT(tensor_values(out, "b", v, 16), 3);
    CHECK(v[0] == 1.5 && (float)v[1] == kd_bf16_to_f32(bf[1]) && (float)v[2] == kd_bf16_to_f32(bf[2]));
    /* Python's struct 'e' decodes our halves: an independent check of the encoding. */
    CHECK_EQ_INT(tensor_values(out, "h", v, 16), 3);
    CHECK(v[0] == 1.5);
    CHECK_CLOSE(v[1], -0.1, 1e-4, 0);
    CHECK_CLOSE(v[2], 6e-8, 3e-8, 0);
    CHECK(v[1] == (double)kd_f16_to_f32(hf[1]));
    CHECK_EQ_INT(tensor_values(out, "q", v, 16), 3);
    CHECK(v[0] == -5 && v[2] == 5);
    /* The Python checker is not a rubber stamp: it refuses a file with a trailing byte. */
    snprintf(cmd, sizeof cmd, "printf x >> '%s' && python3 tests/st_interop.py check '%s'", path,
             path);
    CHECK(kd_test_run(cmd, out, sizeof out) != 0);
    CHECK_CONTAINS(out, "expected");
}

/* ---- malformed files -------------------------------------------------------------------- */

typedef struct {
    const char *header;     /* header bytes */
    size_t header_bytes;    /* 0: strlen(header) */
    uint64_t len_field;     /* 0: the real header length */
    size_t data_bytes;      /* zero bytes appended after the header */
    long total;             /* >= 0: cut/define the whole file to this many bytes */
    const char *expect;     /* fragment of the error message */
} bad_case;

static const bad_case bad_cases[] = {
    /* Framing. */
    {"", 0, 0, 0, 5, "shorter than the 8-byte"},
    {"{}", 0, (uint64_t)1 << 40, 0, -1, "exceeds the"},
    {"{}      ", 0, 200, 0, -1, "header length 200 is larger than the 8 bytes"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 0, 8, 40,
     "larger than the"},
    /* Encoding and JSON. */
    {"{\"\xc0\xaf\":1}", 0, 0, 0, -1, "not valid UTF-8 (byte 0xc0 at file offset 10)"},
    {"{\"\xed\xa0\x80\":1}", 0, 0, 0, -1, "not valid UTF-8"},
    {"{\"\xf4\x90\x80\x80\":1}", 0, 0, 0, -1, "not valid UTF-8"},
    {"{\"a\":", 0, 0, 0, -1, "not valid JSON"},
    {"{} x", 0, 0, 0, -1, "unexpected data after the header object at file offset 11"},
    {"[1]", 0, 0, 0, -1, "starting with '{'"},
    {" {}", 0, 0, 0, -1, "starting with '{'"},
    {"{\"a\0b\":1}", 9, 0, 0, -1, "control byte 0x00 at file offset 11"},
    /* Entries. */
    {"{\"w\":3}", 0, 0, 0, -1, "tensor w: expected an object"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 0, 0, 0, -1, "tensor w: missing \"data_offsets\""},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"offsets\":1}}", 0, 0, 4, -1,
     "tensor w: unexpected key \"offsets\""},
    {"{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 0, 4,
     -1, "tensor w: key \"dtype\" appears twice"},
    {"{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 0, 0, 8, -1,
     "tensor w: unsupported dtype \"F64\" (supported: F32, F16, BF16, I8, U8, I32, I64)"},
    {"{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 0, 4, -1,
     "tensor w: dtype: expected a string"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[-3],\"data_offsets\":[0,4]}}", 0, 0, 4, -1,
     "tensor w: shape[0]: expected a non-negative integer <= 2^53, got -3"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1.5],\"data_offsets\":[0,4]}}", 0, 0, 4, -1,
     "tensor w: shape[1]: expected a non-negative integer"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[9223372036854775808],\"data_offsets\":[0,4]}}", 0, 0, 4,
     -1, "tensor w: shape[0]: expected a non-negative integer <= 2^53, got 9.223372036854775"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":\"[1]\",\"data_offsets\":[0,4]}}", 0, 0, 4, -1,
     "tensor w: shape: expected an array"},
    {"{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 0, 0, 1,
     -1, "tensor w: shape has 9 dimensions"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[67108864,67108864,67108864],\"data_offsets\":[0,4]}}",
     0, 0, 4, -1, "tensor w: shape [67108864, 67108864, 67108864] of F32 overflows"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 0, 0, 20, -1,
     "tensor w: shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 20] span 20"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 0, 0, 8, -1,
     "tensor w: data_offsets [8, 0]: begin is after end"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 0, 0, 4, -1,
     "tensor w: data_offsets: expected [begin, end]"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 0, 0, 4, -1,
     "tensor w: data_offsets[0]: expected a non-negative integer"},
    /* Layout. */
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 0, 12, -1,
     "tensor b: data_offsets [4, 12] overlap tensor a, which ends at 8"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 0, 0, 20, -1,
     "tensor b: data_offsets [12, 20] leave a hole: expected it to begin at 8"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 0, 12, -1,
     "tensor a: data_offsets [4, 12] leave a hole: expected it to begin at 0"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 0, 9, -1,
     "1 trailing bytes after the last tensor"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 0, 7, -1,
     "tensor a: file is truncated: the tensors need 8 data bytes but only 7"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 0, 0, 8, -1,
     "tensor a: name appears more than once"},
    /* Metadata. */
    {"{\"__metadata__\":{\"epoch\":3}}", 0, 0, 0, -1,
     "__metadata__ key \"epoch\": expected a string value, got 3"},
    {"{\"__metadata__\":[\"x\"]}", 0, 0, 0, -1, "__metadata__: expected an object"},
    {"{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, 0, 0, -1, "__metadata__ key \"k\" appears twice"},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, 0, 0, -1, "\"__metadata__\" appears 2 times"},
};

/* Builds the file of a case; returns its path. */
static const char *write_case(const bad_case *c, const char *dir, int i) {
    static char path[600];
    snprintf(path, sizeof path, "%s/bad%02d.safetensors", dir, i);
    size_t hn = c->header_bytes ? c->header_bytes : strlen(c->header);
    size_t n = 8 + hn + c->data_bytes;
    uint8_t *buf = calloc(n + 64, 1);
    uint64_t len = c->len_field ? c->len_field : hn;
    for (int k = 0; k < 8; k++) buf[k] = (uint8_t)(len >> (8 * k));
    memcpy(buf + 8, c->header, hn);
    if (c->total >= 0) n = (size_t)c->total;
    if (kd_test_write_file(path, buf, n) != 0) kd_test_fail(__FILE__, __LINE__, "cannot write %s", path);
    free(buf);
    return path;
}

KD_TEST(safetensors_malformed_corpus_is_refused_by_name) {
    const char *dir = kd_test_tmpdir();
    const size_t n = sizeof bad_cases / sizeof bad_cases[0];
    CHECK(n >= 20);
    for (size_t i = 0; i < n; i++) {
        const char *path = write_case(&bad_cases[i], dir, (int)i);
        kd_st_file f;
        kd_err err;
        kd_err_clear(&err);
        kd_status st = kd_st_read(&f, path, &err);
        if (st != KD_EINPUT)
            kd_test_fail(__FILE__, __LINE__, "case %zu: status %d (%s)", i, (int)st, err.msg);
        CHECK_CONTAINS(err.msg, path);
        if (!strstr(err.msg, bad_cases[i].expect))
            kd_test_fail(__FILE__, __LINE__, "case %zu: expected \"%s\" in: %s", i,
                         bad_cases[i].expect, err.msg);
        CHECK(f.tensors == NULL && f.blob == NULL && f.n_tensors == 0);
        kd_st_free(&f);
    }
}

KD_TEST(safetensors_reader_accepts_unusual_but_valid_files) {
    const char *dir = kd_test_tmpdir();
    /* Tensors listed out of offset order, padding with spaces, a zero-size tensor at the end,
     * metadata last, an escaped name: all legal. */
    static const bad_case ok[] = {
        {"{\"b\":{\"data_offsets\":[8,12],\"shape\":[],\"dtype\":\"F32\"},"
         "\"z\":{\"dtype\":\"I64\",\"shape\":[0,5],\"data_offsets\":[12,12]},"
         "\"a\\u00e9\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
         "\"__metadata__\":{\"k\":\"v\"}}      ", 0, 0, 12, -1, NULL},
        {"{}", 0, 0, 0, -1, NULL},
    };
    for (int i = 0; i < 2; i++) {
        const char *path = write_case(&ok[i], dir, i);
        kd_st_file f;
        kd_err err;
        kd_status st = kd_st_read(&f, path, &err);
        CHECK_EQ_INT(st, KD_OK);
        if (st != KD_OK) {
            printf("  %s\n", err.msg);
            continue;
        }
        if (i == 0) {
            CHECK_EQ_INT(f.n_tensors, 3);
            CHECK(strcmp(f.tensors[0].name, "a\xc3\xa9") == 0);
            CHECK(strcmp(f.tensors[1].name, "b") == 0 && f.tensors[1].rank == 0 &&
                  f.tensors[1].numel == 1);
            CHECK(strcmp(f.tensors[2].name, "z") == 0 && f.tensors[2].numel == 0);
            CHECK(strcmp(kd_st_meta(&f, "k"), "v") == 0);
        } else {
            CHECK_EQ_INT(f.n_tensors, 0);
        }
        kd_st_free(&f);
    }
    kd_st_file f;
    kd_err err;
    char missing[600];
    snprintf(missing, sizeof missing, "%s/nope.safetensors", dir);
    CHECK_EQ_INT(kd_st_read(&f, missing, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "nope.safetensors: cannot open");
}
