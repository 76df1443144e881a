/* test_infer_speedpath.c - inference's fast paths: the note `train`, `eval` and `logits` print
 * when OPENBLAS_CORETYPE holds OpenBLAS below the CPU, the kernels `--version` names, and the
 * tuned forward products against the plain path they replace. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "../src/core/test_hooks.h"
#include "kd_eval.h"
#include "kd_gemm.h"
#include "kd_test.h"
#include "kd_threads.h"

#define FMNIST_TEST_IMAGES "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"

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
        CHECK_CONTAINS(out, avx512 ? "this CPU supports AVX-512 (SkylakeX kernels)"
                            : cpu_has_flags("avx2 fma") ? "this CPU supports AVX2 (Haswell kernels)"
                                                        : "this CPU supports AVX (Sandybridge");
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
    CHECK_CONTAINS(out, ", running its Prescott kernels (pinned by OPENBLAS_CORETYPE=Prescott; "
                        "this CPU supports ");
    CHECK_CONTAINS(out, ") (OpenMP build)\n");
    CHECK_EQ_INT(run_pinned("Haswell", "--version", out, sizeof out), 0);
    CHECK_CONTAINS(out, "running its Haswell kernels (pinned by OPENBLAS_CORETYPE=Haswell");
    /* Unpinned: OpenBLAS's own choice, whatever this CPU makes it. */
    CHECK_EQ_INT(run_pinned(NULL, "--version", out, sizeof out), 0);
    CHECK_CONTAINS(out, " kernels (chosen by OpenBLAS; this CPU supports ");
    CHECK(!strstr(out, "OPENBLAS_CORETYPE"));
}

/* ---- The row-split dense product against the team's sgemm (the path before it) ---- */

static size_t n_serial;  /* products run by one thread inside a split (kd_sgemm_serial) */

static void count_serial(int ta, int tb, size_t M, size_t N, size_t K, int serial) {
    (void)ta, (void)tb, (void)M, (void)N, (void)K;
    if (serial) {
#pragma omp critical(speedpath_count)
        n_serial++;
    }
}

/* The config's model with seeded weights on its first n test images, two threads: logits of
 * the plain path (the team runs each layer, its dense products unsplit, its convolutions
 * through im2col and sgemm: the code before these fast paths) against the row split with the
 * direct convolution, against the release rules (on AVX2 machines the convolutions' own
 * product, conv_gemm.h), and against inference replicas too (each thread the whole model over its
 * samples, the path eval takes), within |a - b| <= 1e-5 (1 + |b|); the replica path
 * bit-identical on a second run; four samples one at a time, within the same bound; then the
 * model frozen (kd_model_freeze), the batch and four samples, within it too. want_split:
 * whether some dense product of this model is split at batch n. tol: 1e-5, or for the two deep models 2e-5. Seeded (untrained) weights amplify a
 * rounding in the first layers to about 1e-5 at their logits: the plain path itself moves by
 * 1.04e-5 (MobileNetV2) and 1.25e-5 (ResNet-18) between OpenBLAS's Haswell and Cooperlake
 * kernels on these weights (bench_ort --direct 0, pinned against unpinned, 2026-12-06). Each
 * convolution alone: tests/test_conv.c. */
static void check_split(const char *config, size_t n, int want_split, float tol) {
    kd_err err = {0};
    kd_model m = {0};
    kd_eval_data d = {0};
    kd_dataset *ds = NULL;
    kd_rng rng;
    float *x = NULL, *ref = NULL, *got = NULL;
    size_t *idx = NULL;
    const int threads0 = kd_threads_get();
    if (access(FMNIST_TEST_IMAGES, R_OK) != 0) {
        kd_test_skip("%s not installed (Debian package dataset-fashion-mnist)", FMNIST_TEST_IMAGES);
        return;
    }
    kd_status st = kd_eval_data_from_config(&d, config, NULL, 0, "test", &err);
    if (!st) st = kd_eval_data_open(&d, &d.pp, &ds, &err);
    char *arch = st ? NULL : kd_eval_data_arch(&d, 0, &kd_dataset_info(ds)->shape);
    if (!st && arch) st = kd_model_init_arch(&m, arch, 0, &err);
    free(arch);
    if (!st) st = kd_model_reserve(&m, n, &err);
    CHECK_EQ_INT(st, KD_OK);
    if (st) {
        printf("    %s: %s\n", config, err.msg);
        goto cleanup;
    }
    kd_rng_seed(&rng, 5);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    const size_t D = kd_shape_numel(&m.input), C = m.n_classes;
    x = malloc(n * D * sizeof *x);
    idx = malloc(n * sizeof *idx);
    ref = malloc(n * C * sizeof *ref);
    got = malloc(n * C * sizeof *got);
    if (!x || !idx || !ref || !got) goto cleanup;
    for (size_t i = 0; i < n; i++) idx[i] = i;
    CHECK_EQ_INT(kd_dataset_get(ds, idx, n, x, NULL, NULL, &err), KD_OK);
    kd_threads_set(2);
    kd_infer_replicas = 0;
    kd_gemm_row_split = 0;
    kd_direct_conv = 0;
    kd_conv_gemm_own = 0;
    kd_conv_winograd = 0;
    n_serial = 0;
    kd_hook_gemm_shape = count_serial;
    memcpy(ref, kd_model_forward(&m, x, n, NULL), n * C * sizeof *ref);
    const size_t serial_off = n_serial;
    kd_gemm_row_split = 1;
    kd_direct_conv = 1;
    n_serial = 0;
    memcpy(got, kd_model_forward(&m, x, n, NULL), n * C * sizeof *got);
    kd_hook_gemm_shape = NULL;
    /* The split runs one one-thread product per thread where the model has a product for it. */
    CHECK_EQ_INT(n_serial > serial_off, want_split);
    CHECK_FLOATS(got, ref, n * C, tol, tol);
    kd_direct_conv = -1; /* the release rules: the own product on AVX2 machines, Winograd */
    kd_conv_gemm_own = -1;
    kd_conv_winograd = -1;
    memcpy(got, kd_model_forward(&m, x, n, NULL), n * C * sizeof *got);
    CHECK_FLOATS(got, ref, n * C, tol, tol);
    kd_infer_replicas = 1;
    const unsigned long passes = kd_hook_replica_passes;
    memcpy(got, kd_model_forward(&m, x, n, NULL), n * C * sizeof *got);
    CHECK_EQ_INT(kd_hook_replica_passes, passes + 1);  /* this model ran as replicas */
    CHECK_FLOATS(got, ref, n * C, tol, tol);
    CHECK(memcmp(kd_model_forward(&m, x, n, NULL), got, n * C * sizeof *got) == 0);
    /* One sample at a time, the one-sample rules: the calling thread alone for a small model,
     * else the convolutions' larger products on the team (the own product's channel blocks). */
    for (size_t i = 0; i < 4; i++)
        CHECK_FLOATS(kd_model_forward(&m, x + i * D, 1, NULL), ref + i * C, C, tol, tol);
    /* Frozen, as eval, predict and teachers run it (kd_model_freeze: on AVX-512 CPUs the packed
     * convolutions), the batch and one sample at a time. */
    CHECK_EQ_INT(kd_model_freeze(&m, &err), KD_OK);
    memcpy(got, kd_model_forward(&m, x, n, NULL), n * C * sizeof *got);
    CHECK_FLOATS(got, ref, n * C, tol, tol);
    for (size_t i = 0; i < 4; i++)
        CHECK_FLOATS(kd_model_forward(&m, x + i * D, 1, NULL), ref + i * C, C, tol, tol);
cleanup:
    kd_infer_replicas = 1;
    kd_gemm_row_split = 1;
    kd_direct_conv = -1;
    kd_conv_gemm_own = -1;
    kd_conv_winograd = -1;
    kd_hook_gemm_shape = NULL;
    kd_threads_set(threads0);
    free(x);
    free(idx);
    free(ref);
    free(got);
    kd_dataset_close(ds);
    kd_eval_data_free(&d);
    kd_model_free(&m);
}

KD_TEST(speedpath_compact_student_split_matches_team) {
    check_split("configs/fmnist-compact.json", 1000, 1, 1e-5f);
}

KD_TEST(speedpath_mlp_teacher_split_matches_team) {
    /* 784-1200 and 1200-1200 are over the weights' cache cap; 1200-10 is split. */
    check_split("configs/fmnist-teacher.json", 1000, 1, 1e-5f);
}

KD_TEST(speedpath_mlp_student_split_matches_team) {
    check_split("configs/fmnist-student.json", 1000, 1, 1e-5f);
}

KD_TEST(speedpath_cnn_teacher_split_matches_team) {
    check_split("configs/fmnist-cnn-teacher.json", 1000, 0, 1e-5f);
}

KD_TEST(speedpath_resnet_student_split_matches_team) {
    check_split("configs/fmnist-resnet-student.json", 256, 0, 1e-5f);  /* a minute under ASan at 1000 */
}

KD_TEST(speedpath_mobilenetv2_split_matches_team) {
    check_split("configs/fmnist-mobilenetv2.json", 256, 0, 2e-5f);
}

KD_TEST(speedpath_resnet18_split_matches_team) {
    check_split("configs/resnet18.json", 16, 0, 2e-5f);  /* 0.4 G multiply-adds a sample */
}
