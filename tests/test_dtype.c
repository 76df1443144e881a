/* test_dtype.c - the export dtype codecs (kd_dtype.h): the table's rows, every codec's round
 * trip within its documented error from unaligned buffers, int8 scales and values exactly as the
 * reference rule gives them, and files written by kd_export_write in each dtype loading through
 * kd_ckpt_load to exactly the values decoded by hand from the file's bytes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_checkpoint.h"
#include "kd_dtype.h"
#include "kd_eval.h"
#include "kd_test.h"

KD_TEST(dtype_codec_table_rows) {
    size_t n;
    const kd_codec *all = kd_codec_all(&n);
    CHECK_EQ_INT(n, 4);
    const char *want[4] = {"f32", "f16", "bf16", "int8"};
    for (size_t i = 0; i < n && i < 4; i++) {
        const kd_codec *c = &all[i];
        CHECK(strcmp(c->name, want[i]) == 0);
        CHECK(kd_codec_find(c->name) == c);
        CHECK(kd_codec_for(c->stored) == c);  /* one codec per stored dtype */
        CHECK(kd_dtype_size(c->stored) > 0);
        CHECK(c->encode && c->decode);
        /* Only int8 keeps per-row scales, and a scheme note goes with them. */
        CHECK_EQ_INT(c->row_scales, c->stored == KD_DT_I8);
        CHECK_EQ_INT(c->scheme != NULL, c->row_scales);
        kd_dtype t;
        CHECK(kd_export_dtype_parse(c->name, &t) == 0 && t == c->stored);
    }
    CHECK(kd_codec_for(KD_DT_U8) == NULL && kd_codec_for(KD_DT_I32) == NULL &&
          kd_codec_for(KD_DT_I64) == NULL);
    CHECK(kd_codec_find("f64") == NULL && kd_codec_find("F32") == NULL);
    char buf[64];
    kd_codec_names(buf, sizeof buf);
    CHECK(strcmp(buf, "f32, f16, bf16 or int8") == 0);
    kd_codec_names(buf, 6);
    CHECK(strcmp(buf, "f32, ") == 0);  /* truncated, still a string */
    CHECK(kd_codec_scale_name("3.weight", buf, sizeof buf) == 0 &&
          strcmp(buf, "3.weight_scale") == 0);
    CHECK(kd_codec_scale_name("3.weight", buf, 14) == -1);
}

enum { R = 6, C = 37 };

/* Values over many magnitudes (half subnormals to 2^15), both signs, with an
 * all-zero row (2) and a row with one outlier (4). */
static void fill(float *x) {
    kd_rng rng;
    kd_rng_seed(&rng, 21);
    for (int i = 0; i < R * C; i++) {
        float mag = ldexpf(1.0f + kd_rng_uniform(&rng), (int)kd_rng_below(&rng, 39) - 24);
        x[i] = (i % 3) ? -mag : mag;
    }
    for (int c = 0; c < C; c++) x[2 * C + c] = 0.0f;
    x[4 * C + 7] = 60000.0f;
    x[5 * C + 3] = 0.0f;
}

/* The documented bound of kd_dtype.h for value x decoded as y. */
static int within(const kd_codec *c, float x, float y, float scale) {
    double e = fabs((double)y - (double)x), ax = fabs((double)x);
    switch (c->stored) {
    case KD_DT_F32: return y == x;
    case KD_DT_F16: return ax >= ldexp(1, -14) ? e <= ldexp(ax, -11) : e <= ldexp(1, -25);
    case KD_DT_BF16: return e <= ldexp(ax, -8);
    case KD_DT_I8: return e <= scale * 0.5 * (1 + 1e-5) + 1e-7;
    default: return 0;
    }
}

KD_TEST(dtype_every_codec_round_trips_within_its_documented_error) {
    float x[R * C], back[R * C], back2[R * C], scale[R], scale2[R];
    fill(x);
    size_t n;
    const kd_codec *all = kd_codec_all(&n);
    for (size_t i = 0; i < n; i++) {
        const kd_codec *c = &all[i];
        size_t vs = kd_dtype_size(c->stored);
        /* Stored bytes at an odd address, as they can sit in a file; scales too. */
        uint8_t *q = malloc(R * C * vs + 1), *qa = malloc(R * C * vs);
        uint8_t sbytes[R * sizeof(float) + 1];
        size_t rows = c->row_scales ? R : 1, cols = R * C / rows;
        c->encode(x, rows, cols, q + 1, c->row_scales ? scale : NULL);
        c->encode(x, rows, cols, qa, c->row_scales ? scale2 : NULL);
        CHECK(memcmp(q + 1, qa, R * C * vs) == 0);  /* alignment changes nothing */
        if (c->row_scales) {
            CHECK(memcmp(scale, scale2, sizeof scale) == 0);
            memcpy(sbytes + 1, scale, sizeof scale);
        }
        c->decode(q + 1, c->row_scales ? sbytes + 1 : NULL, rows, cols, back);
        c->decode(qa, c->row_scales ? (const void *)scale : NULL, rows, cols, back2);
        CHECK(memcmp(back, back2, sizeof back) == 0);
        for (int k = 0; k < R * C; k++)
            if (!within(c, x[k], back[k], c->row_scales ? scale[k / C] : 0))
                kd_test_fail(__FILE__, __LINE__, "%s value %d: %.9g -> %.9g", c->name, k, x[k],
                             back[k]);
        /* Zeros stay exact in every codec. */
        for (int k = 0; k < C; k++) CHECK(back[2 * C + k] == 0.0f);
        CHECK(back[5 * C + 3] == 0.0f);
        /* The 16-bit codecs store exactly the scalar conversions, little-endian. */
        for (int k = 0; k < R * C && vs == 2; k++) {
            uint16_t h;
            memcpy(&h, q + 1 + 2 * k, 2);
            uint16_t want = c->stored == KD_DT_F16 ? kd_f32_to_f16(x[k]) : kd_f32_to_bf16(x[k]);
            if (h != want)
                kd_test_fail(__FILE__, __LINE__, "%s value %d stored 0x%04x, expected 0x%04x",
                             c->name, k, h, want);
        }
        free(q);
        free(qa);
    }
}

KD_TEST(dtype_int8_scales_and_values_exactly_as_the_reference_rule) {
    float x[R * C], back[R * C], scale[R];
    int8_t q[R * C];
    fill(x);
    const kd_codec *c = kd_codec_find("int8");
    if (!c) {
        kd_test_fail(__FILE__, __LINE__, "no int8 codec");
        return;
    }
    c->encode(x, R, C, q, scale);
    c->decode(q, scale, R, C, back);
    for (int r = 0; r < R; r++) {
        /* Reference, written out independently: scale = max|x| / 127 (1 for a zero row),
         * q = round half away from zero of x / scale, clamped to +-127. */
        float mx = 0;
        for (int k = 0; k < C; k++) mx = fmaxf(mx, fabsf(x[r * C + k]));
        float s = mx > 0 ? mx / 127.0f : 1.0f;
        CHECK(scale[r] == s);
        for (int k = 0; k < C; k++) {
            float v = roundf(x[r * C + k] / s);
            int want = v > 127 ? 127 : v < -127 ? -127 : (int)v;
            if (q[r * C + k] != want || back[r * C + k] != (float)want * s)
                kd_test_fail(__FILE__, __LINE__, "row %d col %d: q %d (want %d), %.9g", r, k,
                             q[r * C + k], want, back[r * C + k]);
        }
    }
    CHECK(scale[2] == 1.0f);
    CHECK(q[4 * C + 7] == 127 && back[4 * C + 7] == 60000.0f);
    /* The kd_eval.h shorthands are the same codec. */
    int8_t q2[R * C];
    float scale2[R], back2[R * C];
    kd_quant_int8_rows(x, R, C, q2, scale2);
    kd_dequant_int8_rows(q2, scale2, R, C, back2);
    CHECK(memcmp(q, q2, sizeof q) == 0 && memcmp(scale, scale2, sizeof scale) == 0 &&
          memcmp(back, back2, sizeof back) == 0);
}

/* conv2d + batchnorm + dense: int8 per output channel and per row, F32 batch-norm statistics,
 * an I64 counter. */
static const char *k_arch =
    "{\"input\":[2,5,5],\"layers\":[{\"type\":\"conv2d\",\"channels\":3,\"kernel\":3},"
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},{\"type\":\"flatten\"},"
    "{\"type\":\"dense\",\"units\":4}]}";

/* Decodes file tensor s by hand from its bytes (scales from sc for I8). */
static void decode_by_hand(const kd_st_tensor *s, const kd_st_tensor *sc, size_t rows,
                           float *out) {
    size_t n = (size_t)s->numel;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = s->data;
        uint16_t h;
        float f;
        switch (s->dtype) {
        case KD_DT_F32: memcpy(&f, p + 4 * i, 4); out[i] = f; break;
        case KD_DT_F16: memcpy(&h, p + 2 * i, 2); out[i] = kd_f16_to_f32(h); break;
        case KD_DT_BF16: memcpy(&h, p + 2 * i, 2); out[i] = kd_bf16_to_f32(h); break;
        case KD_DT_I8:
            memcpy(&f, sc->data + 4 * (i / (n / rows)), 4);
            out[i] = (float)(int8_t)p[i] * f;
            break;
        default: out[i] = NAN; break;
        }
    }
}

KD_TEST(dtype_exports_load_through_the_checkpoint_reader_as_decoded_by_hand) {
    const char *dir = kd_test_tmpdir();
    kd_model m = {0};
    kd_err err;
    kd_rng rng;
    CHECK_EQ_INT(kd_model_init_arch(&m, k_arch, 0, &err), KD_OK);
    kd_rng_seed(&rng, 4);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    for (size_t i = 0; i < m.n_buffers; i++) m.buffers[i] = 0.3f + 0.07f * (float)i;
    size_t n;
    const kd_codec *all = kd_codec_all(&n);
    for (size_t ci = 0; ci < n; ci++) {
        const kd_codec *c = &all[ci];
        char path[600];
        snprintf(path, sizeof path, "%s/%s.safetensors", dir, c->name);
        CHECK_EQ_INT(kd_export_write(path, &m, c->stored, NULL, NULL, 0, &err), KD_OK);
        kd_st_file f = {0};
        kd_model lm = {0};
        if (kd_st_read(&f, path, &err) != KD_OK ||
            kd_ckpt_load(path, NULL, 0, 0, &lm, NULL, NULL, NULL, NULL, &err) != KD_OK) {
            kd_test_fail(__FILE__, __LINE__, "%s: %s", c->name, err.msg);
            kd_st_free(&f);
            continue;
        }
        CHECK(strcmp(kd_st_meta(&f, "dtype"), c->name) == 0);
        const char *qz = kd_st_meta(&f, "quantization");
        CHECK(c->scheme ? qz && strcmp(qz, c->scheme) == 0 : qz == NULL);
        for (size_t i = 0; i < m.n_tensors; i++) {
            const kd_tensor *t = &m.tensors[i];
            const kd_st_tensor *s = kd_st_find(&f, t->name);
            CHECK(s != NULL);
            if (!s || t->kind == KD_TENSOR_COUNTER) {
                if (s) CHECK_EQ_INT(s->dtype, KD_DT_I64);
                continue;
            }
            /* Which tensors the codec takes: every trainable one, or for int8 the weight
             * matrices; running statistics stay F32. */
            int coded = t->kind == KD_TENSOR_PARAM && (!c->row_scales || t->shape.rank >= 2);
            CHECK_EQ_INT(s->dtype, coded ? c->stored : KD_DT_F32);
            char sname[80];
            kd_codec_scale_name(t->name, sname, sizeof sname);
            const kd_st_tensor *sc = kd_st_find(&f, sname);
            CHECK((sc != NULL) == (s->dtype == KD_DT_I8));
            float *want = malloc(t->numel * sizeof(float));
            decode_by_hand(s, sc, t->shape.d[0], want);
            const kd_tensor *lt = kd_model_tensor(&lm, t->name);
            if (lt) CHECK_FLOATS(lt->data, want, t->numel, 0, 0);
            /* ... and within the codec's error of the model's own values. */
            for (size_t k = 0; k < t->numel && s->dtype != KD_DT_I8; k++)
                if (!within(kd_codec_for(s->dtype), t->data[k], want[k], 0))
                    kd_test_fail(__FILE__, __LINE__, "%s %s[%zu]: %.9g -> %.9g", c->name,
                                 t->name, k, t->data[k], want[k]);
            free(want);
        }
        kd_model_free(&lm);
        kd_st_free(&f);
    }
    /* A dtype no codec stores is refused. */
    char path[600];
    snprintf(path, sizeof path, "%s/u8.safetensors", dir);
    CHECK_EQ_INT(kd_export_write(path, &m, KD_DT_U8, NULL, NULL, 0, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "cannot export as U8");
    kd_model_free(&m);
}
