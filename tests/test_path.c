/* test_path.c - the lexical path helpers: cleaning, resolving against a base, joining and
 * splitting, including the too-long cases. */
#include <string.h>

#include "kd_data.h"
#include "kd_path.h"
#include "kd_test.h"

static void check_clean(const char *in, const char *want) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", in);
    kd_path_clean(buf);
    if (strcmp(buf, want) != 0)
        kd_test_fail(__FILE__, __LINE__, "kd_path_clean(\"%s\") = \"%s\", want \"%s\"", in, buf, want);
}

KD_TEST(path_clean_folds_dots_and_slashes) {
    check_clean("/", "/");
    check_clean("/a/b/c", "/a/b/c");
    check_clean("//a///b/", "/a/b");
    check_clean("/a/./b/.", "/a/b");
    check_clean("/a/b/../c", "/a/c");
    check_clean("/a/b/../../..", "/");
    check_clean("/../x", "/x");
    check_clean("/a/..b/.c/...", "/a/..b/.c/...");  /* only "." and ".." are special */
    check_clean("/abc/de/../../fgh", "/fgh");
}

KD_TEST(path_resolve_against_base) {
    char out[64];
    kd_err err;
    CHECK_EQ_INT(kd_path_resolve(out, sizeof out, "/base/dir", "data/x.csv", &err), KD_OK);
    CHECK(strcmp(out, "/base/dir/data/x.csv") == 0);
    CHECK_EQ_INT(kd_path_resolve(out, sizeof out, "/base/dir", "../up/./y", &err), KD_OK);
    CHECK(strcmp(out, "/base/up/y") == 0);
    CHECK_EQ_INT(kd_path_resolve(out, sizeof out, "/base/dir", "/abs//z/", &err), KD_OK);
    CHECK(strcmp(out, "/abs/z") == 0);
    /* The joined path may be longer than out as long as the cleaned one fits. */
    char base[128];
    memset(base, 'b', sizeof base);
    base[0] = '/';
    base[sizeof base - 1] = '\0';
    CHECK_EQ_INT(kd_path_resolve(out, sizeof out, base, "../short", &err), KD_OK);
    CHECK(strcmp(out, "/short") == 0);
    CHECK_EQ_INT(kd_path_resolve(out, sizeof out, base, "x", &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "path too long after resolving (129 bytes)");
    CHECK_EQ_INT(kd_path_resolve(out, 8, "/", "abcdef", &err), KD_OK);  /* "/abcdef" fits 8 bytes */
    CHECK_EQ_INT(kd_path_resolve(out, 8, "/", "abcdefg", &err), KD_EUSAGE);
}

KD_TEST(path_join_and_split) {
    char out[16];
    CHECK_EQ_INT(kd_path_join(out, sizeof out, "/run", "best.st"), 0);
    CHECK(strcmp(out, "/run/best.st") == 0);
    CHECK_EQ_INT(kd_path_join(out, sizeof out, "/run/", "x"), 0);
    CHECK(strcmp(out, "/run/x") == 0);
    CHECK_EQ_INT(kd_path_join(out, sizeof out, "/", "x"), 0);
    CHECK(strcmp(out, "/x") == 0);
    CHECK_EQ_INT(kd_path_join(out, sizeof out, "/folder", "12345678"), -1);
    CHECK_EQ_INT(kd_path_join(out, sizeof out, "/folder", "1234567"), 0);  /* 15 bytes fit */

    CHECK_EQ_INT(kd_path_dirname(out, sizeof out, "configs/a.json"), 0);
    CHECK(strcmp(out, "configs") == 0);
    CHECK_EQ_INT(kd_path_dirname(out, sizeof out, "a.json"), 0);
    CHECK(strcmp(out, ".") == 0);
    CHECK_EQ_INT(kd_path_dirname(out, sizeof out, "/a.json"), 0);
    CHECK(strcmp(out, "/") == 0);
    CHECK_EQ_INT(kd_path_dirname(out, 4, "long/a.json"), -1);
    CHECK(strcmp(kd_path_basename("configs/tiny.json"), "tiny.json") == 0);
    CHECK(strcmp(kd_path_basename("tiny.json"), "tiny.json") == 0);
    CHECK(strcmp(kd_path_basename("dir/"), "") == 0);
}

/* Labels for columns and legends: the base name, one folder more where base names collide. */
KD_TEST(path_label_adds_a_folder_only_on_collisions) {
    const char *const paths[] = {"runs/teacher/best.safetensors", "runs/student/best.safetensors",
                                 "/abs/other.safetensors", "best.safetensors", "x/runs/teacher"};
    CHECK(strcmp(kd_path_label(paths, 5, 0), "teacher/best.safetensors") == 0);
    CHECK(strcmp(kd_path_label(paths, 5, 1), "student/best.safetensors") == 0);
    CHECK(strcmp(kd_path_label(paths, 5, 2), "other.safetensors") == 0);
    CHECK(strcmp(kd_path_label(paths, 5, 3), "best.safetensors") == 0);  /* no folder to add */
    CHECK(strcmp(kd_path_label(paths, 5, 4), "teacher") == 0);
    CHECK(strcmp(kd_path_label(paths, 2, 1), "student/best.safetensors") == 0);
    CHECK(strcmp(kd_path_label(paths + 1, 1, 0), "best.safetensors") == 0);
}

/* The one suffix test of predict, the data formats and image folders: exact or in any case,
 * never reading before the start of a name shorter than the suffix. */
KD_TEST(path_has_suffix_exact_and_folded) {
    CHECK(kd_path_has_suffix("data/train.csv", ".csv", 0));
    CHECK(!kd_path_has_suffix("data/train.CSV", ".csv", 0));
    CHECK(kd_path_has_suffix("data/train.CSV", ".csv", 1));
    CHECK(!kd_path_has_suffix("csv", ".csv", 1));
    CHECK(kd_path_has_suffix(".csv", ".csv", 0));
    CHECK(!kd_path_has_suffix("train.csv.gz", ".csv", 1));
    CHECK(kd_path_has_suffix("x-ubyte", "", 0));
    CHECK(kd_data_image_name("a/B.JPEG") && kd_data_image_name("c.png"));
    CHECK(!kd_data_image_name("photo.png/notes.txt") && !kd_data_image_name("x.jpgx"));
}
