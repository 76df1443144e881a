/* test_infer_speedpath.c - inference's fast paths: the note `train`, `eval` and `logits` print
 * when OPENBLAS_CORETYPE holds OpenBLAS below the CPU, the kernels `--version` names, and the
 * tuned forward products against the plain path they replace. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_test.h"

/* 1 when /proc/cpuinfo lists every flag of the space-separated list (read independently of
 * the __builtin_cpu_supports calls gemm.c makes); -1 when it cannot be read. */
static int cpu_has_flags(const char *flags) {
    static char line[8192];
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return -1;
    int found = -1;
    while (found < 0 && fgets(line, sizeof line, f))
        if (strncmp(line, "flags", 5) == 0) found = 1;
    fclose(f);
    if (found < 0) return -1;
    char want[256];
    snprintf(want, sizeof want, "%s", flags);
    for (char *save = NULL, *w = strtok_r(want, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        char pat[64];
        snprintf(pat, sizeof pat, " %s ", w);
        char *nl = strchr(line, '\n');
        if (nl) *nl = ' ';
        if (!strstr(line, pat)) return 0;
    }
    return 1;
}

/* distill ARGS with OPENBLAS_CORETYPE set to pin (unset when NULL) in the child only. */
static int run_pinned(const char *pin, const char *args, char *out, size_t cap) {
    char cmd[1024];
    if (pin)
        snprintf(cmd, sizeof cmd, "OPENBLAS_CORETYPE=%s '%s' %s", pin, kd_test_distill(), args);
    else
        snprintf(cmd, sizeof cmd, "env -u OPENBLAS_CORETYPE '%s' %s", kd_test_distill(), args);
    return kd_test_run(cmd, out, cap);
}

KD_TEST(blas_pin_note_names_the_kernels) {
    static char out[16384];
    const int avx = cpu_has_flags("avx"), avx512 = cpu_has_flags("avx512f avx512bw avx512vl avx512dq");
    if (avx < 0) {
        kd_test_skip("/proc/cpuinfo has no flags line");
        return;
    }
    /* Prescott (SSE3) is below every CPU with AVX: eval (a usage error here, exit 2) says so
     * in one line, naming the pin and the kernels that run. */
    CHECK_EQ_INT(run_pinned("Prescott", "eval", out, sizeof out), 2);
    if (avx) {
        CHECK_CONTAINS(out, "note: OPENBLAS_CORETYPE=Prescott: OpenBLAS runs its Prescott kernels");
        CHECK_CONTAINS(out, avx512 ? "SkylakeX" : cpu_has_flags("avx2 fma") ? "Haswell" : "Sandybridge");
        const char *note = strstr(out, "note: ");
        CHECK(note && !strstr(note + 1, "note: "));  /* once */
    } else {
        CHECK(!strstr(out, "note: OPENBLAS"));
    }
    /* train and logits too; their help does not change. */
    CHECK_EQ_INT(run_pinned("Prescott", "train", out, sizeof out), 2);
    CHECK(!avx || strstr(out, "note: OPENBLAS_CORETYPE=Prescott"));
    CHECK_EQ_INT(run_pinned("Prescott", "logits", out, sizeof out), 2);
    CHECK(!avx || strstr(out, "note: OPENBLAS_CORETYPE=Prescott"));
    CHECK_EQ_INT(run_pinned("Prescott", "eval --help", out, sizeof out), 0);
    CHECK(!strstr(out, "note: "));
    /* --quiet and --json output stays as it was (callers read it with stderr merged). */
    CHECK_EQ_INT(run_pinned("Prescott", "eval --json", out, sizeof out), 2);
    CHECK(!strstr(out, "note: "));
    CHECK_EQ_INT(run_pinned("Prescott", "train -q", out, sizeof out), 2);
    CHECK(!strstr(out, "note: "));
    CHECK_EQ_INT(run_pinned("Prescott", "info", out, sizeof out), 2);
    CHECK(!strstr(out, "note: OPENBLAS"));  /* info runs no product */
    /* No pin, no note: OpenBLAS's own detection picks the CPU's kernels. */
    CHECK_EQ_INT(run_pinned(NULL, "eval", out, sizeof out), 2);
    CHECK(!strstr(out, "note: OPENBLAS"));
    /* A pin at the CPU's own level says nothing. */
    if (avx512) {
        CHECK_EQ_INT(run_pinned("SkylakeX", "eval", out, sizeof out), 2);
        CHECK(!strstr(out, "note: OPENBLAS"));
    }
}

KD_TEST(blas_version_names_the_kernels) {
    static char out[4096];
    CHECK_EQ_INT(run_pinned("Prescott", "--version", out, sizeof out), 0);
    CHECK_CONTAINS(out, "OpenBLAS Prescott kernels (OpenMP build, OPENBLAS_CORETYPE=Prescott");
    CHECK_EQ_INT(run_pinned("Haswell", "--version", out, sizeof out), 0);
    CHECK_CONTAINS(out, "OpenBLAS Haswell kernels");
    CHECK_EQ_INT(run_pinned(NULL, "--version", out, sizeof out), 0);
    CHECK_CONTAINS(out, "OpenBLAS ");
    CHECK(!strstr(out, "OPENBLAS_CORETYPE"));
}
