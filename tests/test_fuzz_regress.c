/* test_fuzz_regress.c - every input the fuzz targets (tests/fuzz/) found to crash, hang or break
 * an oracle, kept in tests/fuzz/regress/<target>/ in the target's own format (leading option
 * byte included; `make fuzz` replays them as seeds too) and run here through the same reader,
 * with the outcome it must have now: a clean refusal naming the file and what is wrong. */
#include <stdlib.h>
#include <string.h>

#include "../src/data/data_impl.h"
#include "kd_config.h"
#include "kd_test.h"

#define REGRESS "tests/fuzz/regress"

/* The input minus its option byte, as a file in the case's folder; returns its path. */
static const char *input_file(const char *name, unsigned char *opt) {
    static char path[1024];
    char src[512], *data = NULL;
    size_t len = 0;
    kd_err err;
    snprintf(src, sizeof src, REGRESS "/%s", name);
    snprintf(path, sizeof path, "%s/input", kd_test_tmpdir());
    if (kd_read_file(src, 1 << 20, &data, &len, &err) != KD_OK || len < 1) {
        kd_test_fail(__FILE__, __LINE__, "cannot read %s", src);
        free(data);
        return NULL;
    }
    *opt = (unsigned char)data[0];
    CHECK_EQ_INT(kd_test_write_file(path, data + 1, len - 1), 0);
    free(data);
    return path;
}

/* A CSV whose quoted first field spanned two lines was counted as one field too few, and the
 * real split wrote fields past the array (heap overflow). Its bytes also hold NULs, which are
 * now refused as not text. */
KD_TEST(fuzz_regress_csv_quoted_newline_in_first_record) {
    unsigned char opt;
    const char *path = input_file("csv/quoted-newline-count", &opt);
    if (!path) return;
    kd_data_source src;
    kd_data_source_defaults(&src);
    src.format = KD_FMT_CSV;
    snprintf(src.path, sizeof src.path, "%s", path);
    kd_data_mem m;
    kd_err err;
    CHECK_EQ_INT(kd_csv_load(&src, &m, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, path);
    CHECK_CONTAINS(err.msg, "byte 6: a NUL byte: not CSV text");
    /* The shape of the bug without NULs: a header whose quoted name holds a newline, then one
     * row. Three columns from the same rules for the first record as for every other. */
    static const char text[] = "\"a\nb\",c,label\n1,2,0\n3,4,1\n";
    CHECK_EQ_INT(kd_test_write_file(path, text, sizeof text - 1), 0);
    CHECK_EQ_INT(kd_csv_load(&src, &m, &err), KD_OK);
    CHECK_EQ_INT(m.n, 2);
    CHECK_EQ_INT(m.shape.d[0], 2);
    if (m.f32) CHECK(m.f32[2] == 3.0f && m.f32[3] == 4.0f);
    if (m.labels) CHECK(m.labels[1] == 1);
    kd_data_mem_free(&m);
    /* Line numbers count the lines a quoted field spans. */
    static const char bad[] = "x,\"y\nz\",label\n1,2,0\n3,oops,1\n";
    CHECK_EQ_INT(kd_test_write_file(path, bad, sizeof bad - 1), 0);
    CHECK_EQ_INT(kd_csv_load(&src, &m, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "line 4, column 2: expected a finite number, found \"oops\"");
}

static void expect_image_refused(const char *name, const char *why) {
    unsigned char opt;
    const char *path = input_file(name, &opt);
    if (!path) return;
    float out[3 * 32 * 32];
    kd_err err;
    CHECK_EQ_INT(kd_image_decode(path, 3, 8, 8, out, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, path);
    CHECK_CONTAINS(err.msg, why);
}

/* stb_image 2.27 wrote past a 257-entry array for a JPEG Huffman table of more than 256 codes
 * (UBSan: index 257 out of bounds), read out of bounds for a scan using an undefined table,
 * and copied to NULL for an empty first PNG IDAT. */
KD_TEST(fuzz_regress_images_stb_2_27_bugs_refused_before_decoding) {
    expect_image_refused("image/jpeg-dht-257", "cannot decode image: JPEG Huffman table at byte");
    expect_image_refused("image/jpeg-dht-257", "(at most 256)");
    expect_image_refused("image/png-empty-idat", "cannot decode image: PNG chunk IDAT at byte 33 "
                                                 "is empty");
    /* A scan naming a DC table no DHT defined: stb decoded with uninitialised memory
     * (UBSan: index -3210 out of bounds in stbi__jpeg_huff_decode). */
    expect_image_refused("image/jpeg-undefined-table", "JPEG scan at byte 593 uses Huffman table "
                                                       "DC 3, which no DHT defined before it");
    /* A baseline scan declaring no AC coefficients (Se = 0) and an AC table no DHT defined:
     * stb sets Se to 63 and decodes with the undefined table anyway (CI's 20 s fuzz run: UBSan
     * at stb_image.h:2115; valgrind: uninitialised values in stbi__jpeg_huff_decode). */
    expect_image_refused("image/jpeg-baseline-scan-undefined-ac", "JPEG scan at byte 593 uses "
                         "Huffman table AC 3, which no DHT defined before it");
    /* A component whose quantization table no DQT defined: stb dequantized with uninitialised
     * memory (valgrind: uninitialised values in stbi__YCbCr_to_RGB_simd). */
    expect_image_refused("image/jpeg-undefined-dqt", "JPEG scan at byte 593 uses quantization "
                         "table 2, which no DQT defined before it");
    /* The same table after 0xFF fill bytes before the SOI marker, which stb skips. */
    expect_image_refused("image/jpeg-fill-before-soi", "JPEG Huffman table at byte 37 declares 758 "
                                                       "codes (at most 256)");
}

/* A whole file that ends inside a scan header: stb reads the missing bytes as 0 (here the
 * spectral start and end) and decodes with the tables the scan names, so the check reads them
 * as 0 too and still refuses the undefined one. A prefix of a longer file (the index-time
 * check) that ends there is left to the whole-file check. */
KD_TEST(image_check_scan_header_cut_at_the_end_of_the_file) {
    char *data = NULL;
    size_t len = 0;
    kd_err err;
    CHECK_EQ_INT(kd_read_file(REGRESS "/image/jpeg-undefined-table", 1 << 20, &data, &len, &err),
                 KD_OK);
    if (!data) return;
    const unsigned char *jpeg = (const unsigned char *)data + 1;  /* past the option byte */
    size_t sos = 0;
    while (sos + 1 < len - 1 && !(jpeg[sos] == 0xFF && jpeg[sos + 1] == 0xDA)) sos++;
    const size_t cut = sos + 4 + 1 + 2 * 3;  /* marker, length, Ns, three selectors */
    CHECK(cut < len - 1);
    char why[256];
    int w, h;
    CHECK_EQ_INT(kd_image_header(jpeg, cut, 1, &w, &h, why, sizeof why), KD_IMAGE_BAD);
    CHECK_CONTAINS(why, "uses Huffman table DC 3, which no DHT defined before it");
    CHECK(kd_image_header(jpeg, cut, 0, &w, &h, why, sizeof why) != KD_IMAGE_BAD);
    CHECK(w == 33 && h == 20);
    free(data);
}

/* An 88-byte PNG declaring a 1.8 GB IDAT chunk made stb_image allocate 1.8 GB (libFuzzer:
 * out-of-memory) before finding the data missing. */
KD_TEST(fuzz_regress_png_chunk_longer_than_the_file) {
    expect_image_refused("image/png-huge-idat", "PNG chunk at byte 33 declares 1877278749 bytes, "
                                                "past the end of the 87-byte file");
}

/* optimizer.eps = 1e-49 passed "> 0" as a double but is 0 as the float it is stored in, so the
 * resolved config.json the run wrote was refused when loaded back. */
KD_TEST(fuzz_regress_config_float_underflow) {
    char *text = NULL;
    size_t len = 0;
    kd_err err;
    CHECK_EQ_INT(kd_read_file(REGRESS "/config/eps-underflow", 1 << 20, &text, &len, &err), KD_OK);
    kd_config c;
    CHECK_EQ_INT(kd_config_parse(&c, text, len, "eps.json", "/", NULL, 0, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "optimizer.eps: expected a number > 0, got 1e-49 (0 in single "
                            "precision)");
    free(text);
    static const char *const sets[] = {"optimizer.lr=1e-46", "data.preprocess.std=[1, 1e-50]"};
    static const char *const want[] = {"optimizer.lr: expected a number > 0, got 1e-46 (0 in "
                                       "single precision)",
                                       "data.preprocess.std[1]: expected a number > 0, got 1e-50 "
                                       "(0 in single precision)"};
    for (int i = 0; i < 2; i++) {
        const char *t = "{\"data\":{\"train\":{\"path\":\"x.idx\"},"
                        "\"preprocess\":{\"mean\":[0,0],\"std\":[1,1]}},"
                        "\"model\":{\"layers\":[{\"type\":\"dense\",\"units\":2}]}}";
        CHECK_EQ_INT(kd_config_parse(&c, t, strlen(t), "c.json", "/", &sets[i], 1, &err),
                     KD_EUSAGE);
        CHECK_CONTAINS(err.msg, want[i]);
    }
}

/* The config fuzzer (CI's 20 s run) found that writing whole numbers of 1e15 and more as exact
 * digits broke the resolved config's round trip: a layer field 9007199254740990.5 printed as
 * 9.00719925474099e+15, which reads back as a whole number and then printed as digits. Writing
 * a reloaded config must give the same text, and a seed that 15 digits cannot hold must keep
 * its digits. */
KD_TEST(fuzz_regress_config_resolved_big_number_round_trip) {
    char *text = NULL;
    size_t len = 0;
    kd_err err;
    CHECK_EQ_INT(kd_read_file(REGRESS "/config/resolved-big-number-round-trip", 1 << 20, &text,
                              &len, &err), KD_OK);
    kd_config c, c2;
    CHECK_EQ_INT(kd_config_parse(&c, text, strlen(text), "big.json", "/", NULL, 0, &err), KD_OK);
    char *json = kd_config_to_json(&c);
    CHECK(json != NULL);
    CHECK_EQ_INT(kd_config_parse(&c2, json, strlen(json), "resolved.json", "/", NULL, 0, &err),
                 KD_OK);
    char *json2 = kd_config_to_json(&c2);
    CHECK(json2 != NULL && strcmp(json, json2) == 0);
    free(json2);
    free(json);
    free(text);
    kd_config_free(&c);
    kd_config_free(&c2);
}
