/* test_firsthour.c - what a new user meets in the first hour (the real binary on the tiny
 * Fashion-MNIST config): --quiet keeps one line per epoch and the resolved config is printed
 * only with --verbose; --epochs 0 refused by its own range; "1 epoch"; a teacher whose class
 * names differ warned about; eval --set; no top-5 row for 5 classes or fewer; a folder of 32x32
 * RGB PNGs, given by path alone, trains as [3, 32, 32]. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kd_common.h"
#include "kd_image_write.h"
#include "kd_test.h"

#define TINY "configs/tiny.json"

static char g_out[65536];

/* `distill ARGS`; output in g_out; the exit status. */
#define distill(...) kd_test_distillf(g_out, sizeof g_out, "", __VA_ARGS__)

static size_t count(const char *s, const char *sub) {
    size_t n = 0;
    for (const char *p = strstr(s, sub); p; p = strstr(p + 1, sub)) n++;
    return n;
}

KD_TEST(firsthour_quiet_keeps_epoch_lines_and_verbose_prints_config) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/q --epochs 2 --quiet", dir), 0);
    CHECK_EQ_INT(count(g_out, "epoch 1/2  loss"), 1);
    CHECK_EQ_INT(count(g_out, "epoch 2/2  loss"), 1);
    CHECK_CONTAINS(g_out, "summary: ");
    CHECK(strstr(g_out, "\"optimizer\"") == NULL);
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/d --epochs 1", dir), 0);
    CHECK_CONTAINS(g_out, "resolved config: ");
    CHECK_CONTAINS(g_out, "/d/config.json (--verbose prints it)");
    CHECK(strstr(g_out, "\"optimizer\"") == NULL);
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/v --epochs 1 --verbose", dir), 0);
    CHECK_CONTAINS(g_out, "\"optimizer\":");
    /* --epochs 0 is refused by the option's own range, which does not include 0. */
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/z --epochs 0", dir), 2);
    CHECK_CONTAINS(g_out, "--epochs");
    CHECK(strstr(g_out, "[0,") == NULL && strstr(g_out, "0..") == NULL);
    /* "1 epoch", not "1 epochs". */
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "KD_TRAIN_STOP_AFTER_STEPS=13 %s train --config " TINY
             " --out %s/cut --epochs 3 --quiet", kd_test_distill(), dir);
    CHECK_EQ_INT(kd_test_run(cmd, g_out, sizeof g_out), 130);
    CHECK_CONTAINS(g_out, "interrupted after 1 epoch, step 13");
}

KD_TEST(firsthour_teacher_class_names_warned_and_eval_set) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    const char *names_a = "--set 'data.classes=[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\","
                          "\"i\",\"j\"]'";
    const char *names_b = "--set 'data.classes=[\"a\",\"b\",\"zebra\",\"d\",\"e\",\"f\",\"g\","
                          "\"h\",\"i\",\"j\"]'";
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/t --epochs 1 --quiet %s", dir,
                         names_a), 0);
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/s --epochs 1 --quiet %s --set "
                         "'teacher={\"checkpoint\":\"%s/t/best.safetensors\"}'", dir, names_b,
                         dir), 0);
    CHECK_CONTAINS(g_out, "names class 2 \"c\" but the data calls it \"zebra\"");
    /* The same names: no warning. */
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/s2 --epochs 1 --quiet %s --set "
                         "'teacher={\"checkpoint\":\"%s/t/best.safetensors\"}'", dir, names_a,
                         dir), 0);
    CHECK(strstr(g_out, "names class") == NULL);
    /* eval --set: the config's test subset overridden (200 samples instead of 1000). */
    CHECK_EQ_INT(distill("eval --run %s/t --set data.test.subset=200 %s/t/best.safetensors",
                         dir, dir), 0);
    CHECK_CONTAINS(g_out, "200 samples");
    CHECK_CONTAINS(g_out, "top-5 accuracy");
    CHECK_EQ_INT(distill("eval --run %s/t --set nonsense %s/t/best.safetensors", dir, dir), 2);
    CHECK_CONTAINS(g_out, "expected PATH=VALUE");
}

/* A relative teacher path resolves against the config's folder (the documented rule): when the
 * file is not there but is relative to the current folder, the message names both folders and
 * the path to write. */
KD_TEST(firsthour_missing_teacher_names_the_folder_and_the_path_found) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    char cwd[4096];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK_EQ_INT(distill("train --config " TINY " --out %s/t --epochs 1 --quiet", dir), 0);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/sub && cp %s/" TINY " %s/sub/kd.json && cd %s && "
             "%s train --config sub/kd.json --out s --epochs 1 --quiet --set "
             "teacher.checkpoint=t/best.safetensors", dir, cwd, dir, dir, kd_test_distill());
    CHECK_EQ_INT(kd_test_run(cmd, g_out, sizeof g_out), 3);
    CHECK_CONTAINS(g_out, "resolved against the config's folder");
    CHECK_CONTAINS(g_out, "/sub, not the current folder");
    CHECK_CONTAINS(g_out, "the file is at t/best.safetensors");
    CHECK_CONTAINS(g_out, "write \"../t/best.safetensors\"");
    CHECK(strstr(g_out, "fmnist-teacher") == NULL);
    /* The path it suggests works. */
    snprintf(cmd, sizeof cmd, "cd %s && %s train --config sub/kd.json --out s --epochs 1 "
             "--quiet --set teacher.checkpoint=../t/best.safetensors", dir, kd_test_distill());
    CHECK_EQ_INT(kd_test_run(cmd, g_out, sizeof g_out), 0);
}

/* A folder of 32x32 RGB PNGs given by its path alone: an image source, samples [3, 32, 32]
 * from the first image (said in the output), recorded as the model's input. */
KD_TEST(firsthour_image_folder_shape_from_first_image) {
    const char *dir = kd_test_tmpdir();
    char p[1200], cmd[4096];
    static unsigned char px[32 * 32 * 3];
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/imgs/%s", dir, k ? "blue" : "red");
        snprintf(cmd, sizeof cmd, "mkdir -p %s", p);
        CHECK_EQ_INT(kd_test_run(cmd, NULL, 0), 0);
        for (int i = 0; i < 8; i++) {
            for (int q = 0; q < 32 * 32; q++) {
                px[3 * q + 0] = (unsigned char)(k ? 20 + i : 200 + i);
                px[3 * q + 1] = (unsigned char)(40 + q % 7);
                px[3 * q + 2] = (unsigned char)(k ? 210 - i : 30 + i);
            }
            snprintf(p, sizeof p, "%s/imgs/%s/%d.png", dir, k ? "blue" : "red", i);
            CHECK(stbi_write_png(p, 32, 32, 3, px, 32 * 3) != 0);
        }
    }
    snprintf(p, sizeof p, "%s/c.json", dir);
    const char *cfg = "{\"data\": {\"train\": {\"path\": \"imgs\"}, \"validation_split\": 0},"
                      " \"model\": {\"layers\": [{\"type\": \"flatten\"},"
                      " {\"type\": \"dense\", \"units\": 2}]},"
                      " \"train\": {\"epochs\": 2, \"batch_size\": 4}}";
    CHECK_EQ_INT(kd_test_write_file(p, cfg, strlen(cfg)), 0);
    CHECK_EQ_INT(distill("train --config %s --out %s/run", p, dir), 0);
    CHECK_CONTAINS(g_out, "/imgs: samples [3, 32, 32] (channels, height and width of its first image");
    CHECK_EQ_INT(distill("info %s/run/best.safetensors", dir), 0);
    CHECK_CONTAINS(g_out, "[3, 32, 32]");
    /* The resolved config says it is an image folder and loads again. */
    CHECK_EQ_INT(distill("train --config %s/run/config.json --out %s/again --quiet", dir, dir), 0);
    snprintf(p, sizeof p, "%s/run/config.json", dir);
    char *text = NULL;
    size_t len = 0;
    kd_err err;
    CHECK_EQ_INT(kd_read_file(p, 1 << 20, &text, &len, &err), KD_OK);
    CHECK(text && strstr(text, "\"format\":\t\"images\""));
    free(text);
}
