/* test_predict.c - `distill predict` on generated PNGs of known brightness with a hand-made
 * model whose probabilities are known exactly, on IDX and CSV inputs, on a Fashion-MNIST test
 * image with a trained student, and on bad inputs (exit 3 naming the file). */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "kd_checkpoint.h"
#include "kd_test.h"

/* ---- a minimal PNG writer (8-bit grey or RGB, filter 0, zlib), independent of stb ---- */

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void write_chunk(FILE *f, const char *type, const unsigned char *data, uint32_t n) {
    unsigned char len[4], crcb[4];
    put32(len, n);
    fwrite(len, 1, 4, f);
    fwrite(type, 1, 4, f);
    if (n) fwrite(data, 1, n, f);
    uLong crc = crc32(0L, (const Bytef *)type, 4);
    if (n) crc = crc32(crc, data, n);
    put32(crcb, (uint32_t)crc);
    fwrite(crcb, 1, 4, f);
}

/* pix: h rows of w * ch bytes. */
static int write_png(const char *path, const unsigned char *pix, int w, int h, int ch) {
    size_t row = (size_t)w * (size_t)ch, raw_n = (row + 1) * (size_t)h;
    unsigned char *raw = malloc(raw_n);
    uLongf zn = compressBound(raw_n);
    unsigned char *z = malloc(zn);
    FILE *f = fopen(path, "wb");
    int rc = -1;
    if (!raw || !z || !f) goto cleanup;
    for (int y = 0; y < h; y++) {
        raw[(size_t)y * (row + 1)] = 0;
        memcpy(raw + (size_t)y * (row + 1) + 1, pix + (size_t)y * row, row);
    }
    if (compress2(z, &zn, raw, raw_n, 9) != Z_OK) goto cleanup;
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    unsigned char ihdr[13];
    put32(ihdr, (uint32_t)w);
    put32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8;
    ihdr[9] = ch == 3 ? 2 : 0;
    ihdr[10] = ihdr[11] = ihdr[12] = 0;
    fwrite(sig, 1, 8, f);
    write_chunk(f, "IHDR", ihdr, 13);
    write_chunk(f, "IDAT", z, (uint32_t)zn);
    write_chunk(f, "IEND", NULL, 0);
    rc = 0;
cleanup:
    if (f && fclose(f) != 0) rc = -1;
    free(raw);
    free(z);
    return rc;
}

static void write_uniform_png(const char *path, int w, int h, int ch, unsigned char v) {
    unsigned char *pix = malloc((size_t)w * h * ch);
    memset(pix, v, (size_t)w * h * ch);
    CHECK(write_png(path, pix, w, h, ch) == 0);
    free(pix);
}

/* Brightness model on [1, 4, 4]: logit(dark) = 8 - sum(x), logit(bright) = sum(x) - 8, with x
 * the pixels scaled by 1/255. So p(bright) = sigmoid(2 (sum(x) - 8)). */
static void write_brightness_model(const char *path) {
    kd_model m;
    kd_err err = {0};
    const char *arch = "{\"input\":[1,4,4],\"layers\":[{\"type\":\"flatten\"},"
                       "{\"type\":\"dense\",\"units\":2}]}";
    CHECK(kd_model_init_arch(&m, arch, 0, &err) == KD_OK);
    kd_tensor *w = kd_model_tensor(&m, "1.weight"), *b = kd_model_tensor(&m, "1.bias");
    CHECK(w && b);
    if (!w || !b) return;
    for (size_t j = 0; j < 16; j++) {
        w->data[j] = -1.0f;
        w->data[16 + j] = 1.0f;
    }
    b->data[0] = 8.0f;
    b->data[1] = -8.0f;
    char *names[2] = {"dark", "bright"};
    kd_preprocess pp;
    kd_preprocess_defaults(&pp);
    pp.scale = 1.0f / 255.0f;
    kd_ckpt_meta meta = {names, 2, &pp, NULL};
    CHECK(kd_ckpt_save(path, &m, &meta, NULL, &err) == KD_OK);
    kd_model_free(&m);
}

static double p_bright(double pixel) { return 1.0 / (1.0 + exp(-2.0 * (16.0 * pixel / 255.0 - 8.0))); }

/* The p of class `name` in the JSON prediction number k; NAN if absent. */
static double json_p(const cJSON *root, int k, const char *name) {
    const cJSON *pr = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "predictions"), k);
    const cJSON *top = cJSON_GetObjectItemCaseSensitive(pr, "top"), *e;
    cJSON_ArrayForEach(e, top) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "name");
        if (cJSON_IsString(n) && !strcmp(n->valuestring, name))
            return cJSON_GetObjectItemCaseSensitive(e, "p")->valuedouble;
    }
    return NAN;
}

KD_TEST(predict_pngs_of_known_brightness) {
    const char *dir = kd_test_tmpdir();
    char model[512], cmd[4096], p[4][512];
    static char out[1 << 16];
    snprintf(model, sizeof model, "%s/bright.safetensors", dir);
    write_brightness_model(model);
    snprintf(p[0], sizeof p[0], "%s/white.png", dir);
    snprintf(p[1], sizeof p[1], "%s/black.png", dir);
    snprintf(p[2], sizeof p[2], "%s/grey.png", dir);
    snprintf(p[3], sizeof p[3], "%s/white-rgb.png", dir);
    write_uniform_png(p[0], 8, 8, 1, 255);  /* resized 8x8 -> 4x4: uniform stays uniform */
    write_uniform_png(p[1], 4, 4, 1, 0);
    write_uniform_png(p[2], 12, 6, 1, 136); /* non-square source */
    write_uniform_png(p[3], 5, 5, 3, 255);  /* RGB converted to the model's one channel */
    snprintf(cmd, sizeof cmd, "%s predict --model %s %s %s %s %s", kd_test_distill(), model, p[0],
             p[1], p[2], p[3]);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "white.png: bright (p=1.0000), dark (p=0.0000)");
    CHECK_CONTAINS(out, "black.png: dark (p=1.0000), bright (p=0.0000)");
    /* grey 136: sum = 16 * 136 / 255 = 8.533, p(bright) = sigmoid(1.0667) = 0.7440. */
    char want[128];
    snprintf(want, sizeof want, "grey.png: bright (p=%.4f), dark (p=%.4f)", p_bright(136),
             1 - p_bright(136));
    CHECK_CONTAINS(out, want);
    CHECK_CONTAINS(out, "white-rgb.png: bright (p=1.0000)");

    snprintf(cmd, sizeof cmd, "%s predict --model %s --json --top 1 %s %s", kd_test_distill(),
             model, p[2], p[1]);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    cJSON *j = cJSON_Parse(out);
    CHECK(j != NULL);
    if (j) {
        CHECK_CLOSE(json_p(j, 0, "bright"), p_bright(136), 1e-5, 0);
        CHECK_CLOSE(json_p(j, 1, "dark"), 1 - p_bright(0), 1e-6, 0);
        const cJSON *pr = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "predictions"), 0);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(pr, "top")) == 1);
        CHECK(!strcmp(cJSON_GetObjectItemCaseSensitive(pr, "input")->valuestring, p[2]));
        cJSON_Delete(j);
    }
}

static void be32(unsigned char *b, uint32_t v) { put32(b, v); }

KD_TEST(predict_idx_and_csv_inputs) {
    const char *dir = kd_test_tmpdir();
    char model[512], cmd[4096], path[512];
    static char out[1 << 16];
    snprintf(model, sizeof model, "%s/bright.safetensors", dir);
    write_brightness_model(model);
    /* Three 4x4 images: all 0, all 255, all 136; labels dark, bright, bright. */
    unsigned char img[16 + 48], lab[8 + 3] = {0};
    be32(img, 0x803);
    be32(img + 4, 3);
    be32(img + 8, 4);
    be32(img + 12, 4);
    memset(img + 16, 0, 16);
    memset(img + 32, 255, 16);
    memset(img + 48, 136, 16);
    be32(lab, 0x801);
    be32(lab + 4, 3);
    lab[9] = lab[10] = 1;
    snprintf(path, sizeof path, "%s/x.idx", dir);
    CHECK(kd_test_write_file(path, img, sizeof img) == 0);
    snprintf(path, sizeof path, "%s/y.idx", dir);
    CHECK(kd_test_write_file(path, lab, sizeof lab) == 0);
    snprintf(cmd, sizeof cmd, "%s predict --model %s --labels %s/y.idx %s/x.idx", kd_test_distill(),
             model, dir, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "x.idx[0] (label: dark): dark (p=1.0000)");
    CHECK_CONTAINS(out, "x.idx[1] (label: bright): bright (p=1.0000)");
    char want[128];
    snprintf(want, sizeof want, "x.idx[2] (label: bright): bright (p=%.4f)", p_bright(136));
    CHECK_CONTAINS(out, want);
    snprintf(cmd, sizeof cmd, "%s predict --model %s --index 2 %s/x.idx", kd_test_distill(), model, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "x.idx[2]: bright");
    CHECK(strstr(out, "x.idx[0]") == NULL);
    snprintf(cmd, sizeof cmd, "%s predict --model %s --index 3 %s/x.idx", kd_test_distill(), model, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);

    /* CSV: 16 features per row (raw 0..255, the checkpoint's 1/255 scale applies); a 17th
     * column is the label. */
    snprintf(path, sizeof path, "%s/rows.csv", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    for (int r = 0; r < 2; r++) {
        for (int c = 0; c < 16; c++) fprintf(f, "%s%d", c ? "," : "", r ? 136 : 0);
        fprintf(f, "\n");
    }
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s predict --model %s %s", kd_test_distill(), model, path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "rows.csv[0]: dark (p=1.0000)");
    snprintf(want, sizeof want, "rows.csv[1]: bright (p=%.4f)", p_bright(136));
    CHECK_CONTAINS(out, want);
    snprintf(path, sizeof path, "%s/labelled.csv", dir);
    f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    for (int c = 0; c < 16; c++) fprintf(f, "%d,", 255);
    fprintf(f, "0\n");
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s predict --model %s %s", kd_test_distill(), model, path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "labelled.csv[0] (label: dark): bright (p=1.0000)");
}

KD_TEST(predict_bad_inputs_exit_3_naming_the_file) {
    const char *dir = kd_test_tmpdir();
    char model[512], cmd[4096], path[512];
    static char out[1 << 16];
    snprintf(model, sizeof model, "%s/bright.safetensors", dir);
    write_brightness_model(model);
    /* Missing model. */
    snprintf(path, sizeof path, "%s/a.png", dir);
    write_uniform_png(path, 4, 4, 1, 10);
    snprintf(cmd, sizeof cmd, "%s predict --model %s/absent.safetensors %s", kd_test_distill(), dir, path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "absent.safetensors");
    /* Undecodable image (PNG by name, garbage inside) and a truncated real PNG. */
    snprintf(path, sizeof path, "%s/broken.png", dir);
    CHECK(kd_test_write_file(path, "this is not an image", 20) == 0);
    snprintf(cmd, sizeof cmd, "%s predict --model %s %s", kd_test_distill(), model, path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "broken.png");
    static const unsigned char trunc[] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0};
    snprintf(path, sizeof path, "%s/trunc.png", dir);
    CHECK(kd_test_write_file(path, trunc, sizeof trunc) == 0);
    snprintf(cmd, sizeof cmd, "%s predict --model %s %s", kd_test_distill(), model, path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "trunc.png");
    /* Missing input and an unrecognised one. */
    snprintf(cmd, sizeof cmd, "%s predict --model %s %s/nothere.png", kd_test_distill(), model, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "nothere.png");
    snprintf(path, sizeof path, "%s/data.bin", dir);
    CHECK(kd_test_write_file(path, "\x01\x02\x03\x04\x05", 5) == 0);
    snprintf(cmd, sizeof cmd, "%s predict --model %s %s", kd_test_distill(), model, path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "data.bin");
    /* An IDX whose samples do not fit the model: 2x2 images for a [1, 4, 4] input. */
    unsigned char img[16 + 4] = {0};
    put32(img, 0x803);
    put32(img + 4, 1);
    put32(img + 8, 2);
    put32(img + 12, 2);
    snprintf(path, sizeof path, "%s/small.idx", dir);
    CHECK(kd_test_write_file(path, img, sizeof img) == 0);
    snprintf(cmd, sizeof cmd, "%s predict --model %s %s", kd_test_distill(), model, path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "small.idx");
    CHECK_CONTAINS(out, "bright.safetensors");
    CHECK_CONTAINS(out, "[1, 4, 4]");
    /* Usage errors. */
    snprintf(cmd, sizeof cmd, "%s predict %s", kd_test_distill(), path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "%s predict --model %s --top 0 %s", kd_test_distill(), model, path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "%s help predict", kd_test_distill());
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "--top K");
}

/* predict takes --opt=value (it once rejected it) and "--" before the inputs. */
KD_TEST(predict_accepts_opt_equals_value) {
    const char *dir = kd_test_tmpdir();
    char model[512], cmd[4096], png[512];
    static char out[1 << 16];
    snprintf(model, sizeof model, "%s/bright.safetensors", dir);
    write_brightness_model(model);
    snprintf(png, sizeof png, "%s/white.png", dir);
    write_uniform_png(png, 4, 4, 1, 255);
    snprintf(cmd, sizeof cmd, "%s predict --model=%s --top=1 -- %s", kd_test_distill(), model, png);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "white.png: bright (p=1.0000)\n"); /* one class only: --top=1 */
    snprintf(cmd, sizeof cmd, "%s predict --model=%s --top=0 %s", kd_test_distill(), model, png);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);
    CHECK_CONTAINS(out, "--top needs an integer in 1..65536, got \"0\"");
}

/* Defined in test_export.c: trains and saves a small Fashion-MNIST student. */
int kd_test_eval_train_fmnist(const char *path, size_t n_train);

KD_TEST(predict_fashion_mnist_test_image_with_trained_student) {
    const char *dir = kd_test_tmpdir();
    char model[512], cmd[4096];
    static char out[1 << 16];
    snprintf(model, sizeof model, "%s/student.safetensors", dir);
    int tr = kd_test_eval_train_fmnist(model, 10000);
    if (tr < 0) {
        kd_test_skip("Fashion-MNIST is not installed");
        return;
    }
    CHECK_EQ_INT(tr, 0);
    if (tr) return;
    /* Test image 0 is an ankle boot (label 9). */
    const char *d = "/usr/share/datasets/fashion-mnist";
    snprintf(cmd, sizeof cmd, "%s predict --model %s --top 3 --index 0 --labels %s/t10k-labels-idx1-ubyte.gz "
             "%s/t10k-images-idx3-ubyte.gz", kd_test_distill(), model, d, d);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "t10k-images-idx3-ubyte.gz[0] (label: Ankle boot): ");
    /* Three "NAME (p=0.dddd)" entries, probabilities descending and summing to at most 1. */
    const char *s = strstr(out, "): ");
    double prev = 2.0, sum = 0.0;
    int n = 0;
    while (s && (s = strstr(s, "(p=")) != NULL) {
        double p = strtod(s + 3, NULL);
        CHECK(p >= 0.0 && p <= 1.0 && p <= prev);
        CHECK(s[4] == '.' && s[9] == ')');
        prev = p;
        sum += p;
        n++;
        s += 3;
    }
    CHECK_EQ_INT(n, 3);
    CHECK(sum <= 1.0001);
    /* A trained student ranks the true class among its top 3 for this easy image. */
    CHECK_CONTAINS(out, "Ankle boot (p=");
    /* The same through --json, and through an int8 export. */
    snprintf(cmd, sizeof cmd, "%s export %s %s/s8.safetensors --dtype int8 >/dev/null && "
             "%s predict --json --model %s/s8.safetensors --index 0 %s/t10k-images-idx3-ubyte.gz",
             kd_test_distill(), model, dir, kd_test_distill(), dir, d);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    cJSON *j = cJSON_Parse(out);
    CHECK(j != NULL);
    if (j) {
        const cJSON *pr = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "predictions"), 0);
        CHECK(cJSON_GetObjectItemCaseSensitive(pr, "index")->valuedouble == 0);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(pr, "top")) == 5);
        cJSON_Delete(j);
    }
}

/* A bad input among good ones is reported and the rest still predicted (exit 3 at the end);
 * a folder is its images in name order, and those of its class subfolders. */
KD_TEST(predict_goes_on_after_a_bad_input_and_reads_folders) {
    const char *dir = kd_test_tmpdir();
    char model[512], cmd[4096], p[512];
    static char out[1 << 16];
    snprintf(model, sizeof model, "%s/bright.safetensors", dir);
    write_brightness_model(model);
    snprintf(cmd, sizeof cmd, "mkdir -p %s/imgs/a %s/imgs/b && echo hi > %s/imgs/notes.txt",
             dir, dir, dir);
    CHECK_EQ_INT(kd_test_run(cmd, NULL, 0), 0);
    snprintf(p, sizeof p, "%s/imgs/a/white.png", dir);
    write_uniform_png(p, 4, 4, 1, 255);
    snprintf(p, sizeof p, "%s/imgs/b/black.png", dir);
    write_uniform_png(p, 4, 4, 1, 0);
    snprintf(p, sizeof p, "%s/imgs/c-grey.png", dir);
    write_uniform_png(p, 4, 4, 1, 136);
    snprintf(p, sizeof p, "%s/broken.png", dir);
    CHECK_EQ_INT(kd_test_write_file(p, "\x89PNG broken", 11), 0);
    snprintf(cmd, sizeof cmd, "%s predict --model %s --top 1 %s/broken.png %s/none.png %s/imgs",
             kd_test_distill(), model, dir, dir, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "broken.png");
    CHECK_CONTAINS(out, "none.png");
    CHECK_CONTAINS(out, "2 inputs could not be predicted");
    /* After both bad ones, the folder in name order: a/white, b/black, c-grey. */
    const char *w = strstr(out, "imgs/a/white.png: bright (p=1.0000)");
    const char *b = strstr(out, "imgs/b/black.png: dark (p=1.0000)");
    const char *g = strstr(out, "imgs/c-grey.png: bright");
    CHECK(w && b && g && w < b && b < g);
    CHECK(strstr(out, "notes.txt") == NULL);
}
