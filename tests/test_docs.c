/* test_docs.c - what a newcomer reads and installs: the README and docs/ name only links, make
 * targets, commands, options and files that exist and carry no dated history
 * (tests/doc_check.py, which is itself shown to catch each kind of mistake); `make install`
 * into a temporary DESTDIR gives a working binary, a man page in step with the help texts and
 * a working completion (tests/install_test.sh); `distill --version` names the libraries it
 * runs with, at the versions the system's pkg-config reports. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_test.h"

/* Counts the lines of out that start with prefix. */
static int count_lines(const char *out, const char *prefix) {
    int n = 0;
    size_t len = strlen(prefix);
    for (const char *p = out; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, prefix, len) == 0) n++;
    return n;
}

KD_TEST(docs_name_only_what_exists) {
    if (!kd_test_have_python()) {
        kd_test_missing("python3 not available");
        return;
    }
    static char out[1 << 16];
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 tests/doc_check.py --distill '%s'", kd_test_distill());
    int rc = kd_test_run(cmd, out, sizeof out);
    if (rc != 0) kd_test_fail(__FILE__, __LINE__, "doc_check found problems:\n%s", out);
    CHECK_CONTAINS(out, "doc_check: ");
    CHECK_CONTAINS(out, " 0 problems");
}

/* A small repository with one mistake of each kind the checker looks for, beside a correct
 * use of each: every mistake is reported, with its line, and nothing else is. */
KD_TEST(docs_check_finds_each_kind_of_mistake) {
    if (!kd_test_have_python()) {
        kd_test_missing("python3 not available");
        return;
    }
    const char *dir = kd_test_tmpdir();
    char path[1024], cmd[2048];
    static char out[1 << 16];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/docs' '%s/configs' && touch '%s/configs/real.json'",
             dir, dir, dir);
    CHECK_EQ_INT(kd_test_run(cmd, NULL, 0), 0);
    snprintf(path, sizeof path, "%s/Makefile", dir);
    const char *mk = ".PHONY: build\nbuild:\n\ttrue\n";
    CHECK_EQ_INT(kd_test_write_file(path, mk, strlen(mk)), 0);
    const char *good =
        "# Guide\n\n## Real part\n\n"
        "See [the part](#real-part) and [the config](../configs/real.json).\n"
        "Run `make build` and `./distill train --config configs/real.json --epochs 3`.\n"
        "```json\n{\"path\": \"../configs/real.json\"}\n```\n";
    snprintf(path, sizeof path, "%s/docs/good.md", dir);
    CHECK_EQ_INT(kd_test_write_file(path, good, strlen(good)), 0);
    snprintf(cmd, sizeof cmd, "python3 tests/doc_check.py --root '%s' --distill '%s' '%s'", dir,
             kd_test_distill(), path);
    int rc = kd_test_run(cmd, out, sizeof out);
    CHECK_EQ_INT(rc, 0);
    CHECK_CONTAINS(out, "1 files, 0 problems");

    const char *bad =
        "# Guide\n\n"
        "A [broken link](nowhere.md) and [a missing heading](#no-such-part).\n"     /* line 3 */
        "Run `make no-such-target`.\n"                                              /* 4 */
        "Run `distill trian --config x.json`.\n"                                    /* 5 */
        "Run `distill train --no-such-option 3`.\n"                                 /* 6 */
        "Edit configs/missing.json first.\n"                                        /* 7 */
        "In the last session we fixed it.\n"                                        /* 8 */
        "As issue 12 asked.\n"                                                      /* 9 */
        "```json\n{\"labels\": \"../data/none.gz\"}\n```\n";                        /* 11 */
    snprintf(path, sizeof path, "%s/docs/bad.md", dir);
    CHECK_EQ_INT(kd_test_write_file(path, bad, strlen(bad)), 0);
    snprintf(cmd, sizeof cmd, "python3 tests/doc_check.py --root '%s' --distill '%s' '%s'", dir,
             kd_test_distill(), path);
    rc = kd_test_run(cmd, out, sizeof out);
    CHECK_EQ_INT(rc, 1);
    CHECK_CONTAINS(out, "docs/bad.md:3: link to nowhere.md: no such file");
    CHECK_CONTAINS(out, "docs/bad.md:3: link to #no-such-part: no heading #no-such-part there");
    CHECK_CONTAINS(out, "docs/bad.md:4: make no-such-target: no such Makefile target");
    CHECK_CONTAINS(out, "docs/bad.md:5: distill trian: no such command");
    CHECK_CONTAINS(out, "docs/bad.md:6: distill train --no-such-option: no such option");
    CHECK_CONTAINS(out, "docs/bad.md:7: configs/missing.json: no such file or folder");
    CHECK_CONTAINS(out, "docs/bad.md:8: \"session\": dated history");
    CHECK_CONTAINS(out, "docs/bad.md:9: \"issue 12\": dated history");
    CHECK_CONTAINS(out, "docs/bad.md:11: labels ../data/none.gz: no such file");
    CHECK_EQ_INT(count_lines(out, "docs/bad.md:"), 9);
    CHECK_CONTAINS(out, "1 files, 9 problems");
}

KD_TEST(install_puts_three_files_that_work) {
    if (kd_test_run("command -v groff && command -v man && command -v col", NULL, 0) != 0) {
        kd_test_missing("groff or man not installed (groff-base, man-db: bash .ci/setup.sh)");
        return;
    }
    static char out[1 << 16];
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash tests/install_test.sh '%s'", kd_test_distill());
    int rc = kd_test_run(cmd, out, sizeof out);
    if (rc != 0) kd_test_fail(__FILE__, __LINE__, "install test (exit %d):\n%s", rc, out);
    CHECK_CONTAINS(out, "install test: ok");
}

/* The version line of lib in out ("cJSON 1.7.15"), checked against pkg-config's version of
 * pc (from pc_dir when given). */
static void check_version(const char *out, const char *lib, const char *pc, const char *pc_dir) {
    char cmd[512], want[128] = "", line[256];
    snprintf(cmd, sizeof cmd, "%s%s%spkg-config --modversion %s",
             pc_dir ? "PKG_CONFIG_LIBDIR=" : "", pc_dir ? pc_dir : "", pc_dir ? " " : "", pc);
    if (kd_test_run(cmd, want, sizeof want) != 0) {
        kd_test_fail(__FILE__, __LINE__, "pkg-config knows no %s", pc);
        return;
    }
    want[strcspn(want, "\n")] = '\0';
    snprintf(line, sizeof line, "\n%s %s", lib, want);
    CHECK_CONTAINS(out, line);
}

KD_TEST(version_names_the_libraries_it_runs) {
    static char out[4096];
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' --version", kd_test_distill());
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    CHECK(strncmp(out, "distill ", 8) == 0);
    check_version(out, "OpenBLAS", "openblas",
                  "/usr/lib/x86_64-linux-gnu/openblas-openmp/pkgconfig");
    CHECK_CONTAINS(out, "(OpenMP build)\n");
    check_version(out, "cJSON", "libcjson", NULL);
    check_version(out, "zlib", "zlib", NULL);
    check_version(out, "protobuf-c", "libprotobuf-c", NULL);
    /* The default build has no MPI: no MPI line. */
    CHECK(strstr(out, "MPI") == NULL);
    CHECK_EQ_INT(count_lines(out, ""), 5);
}
