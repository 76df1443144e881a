/* export_fixture.c - the export tests' shared tools (export_fixture.h). */
#include "export_fixture.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_checkpoint.h"
#include "kd_data.h"
#include "kd_quant.h"
#include "kd_test.h"

#define ORT_VERSION "1.30.0"  /* the version tests/export/ort_install.sh installs */

const char *kd_test_ort_module(void) {
    static char path[1024];
    char probe[1100];
    const char *dir = getenv("KD_ORT_DIR"), *home = getenv("HOME");
    if (dir && *dir) snprintf(path, sizeof path, "%s", dir);
    else snprintf(path, sizeof path, "%s/.cache/distill-ort/" ORT_VERSION, home ? home : "");
    snprintf(probe, sizeof probe, "test -f '%s/.complete' && command -v node", path);
    if (kd_test_run(probe, NULL, 0) != 0) return NULL;
    strcat(path, "/node_modules/onnxruntime-node");
    return path;
}

int kd_test_ort_run(const char *fmt, ...) {
    char cmd[8192];
    int n = snprintf(cmd, sizeof cmd, "KD_ORT_MODULE='%s' node tests/export/ort_run.js ",
                     kd_test_ort_module());
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof cmd) vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
    va_end(ap);
    return kd_test_run_ok(cmd);
}

int kd_test_have_export_tools(int want_ort) {
    if (kd_test_run("test -r " KD_TEST_T10K_IMAGES, NULL, 0) != 0)
        return kd_test_missing(KD_TEST_FMNIST_DIR " not installed (Debian package "
                               "dataset-fashion-mnist)");
    if (kd_test_run("/usr/bin/python3 -c 'import onnx'", NULL, 0) != 0)
        return kd_test_missing("/usr/bin/python3 cannot import onnx (Debian package python3-onnx)");
    if (want_ort && !kd_test_ort_module())
        return kd_test_missing("ONNX Runtime not installed: run bash tests/export/ort_install.sh");
    return 1;
}

float *kd_test_read_floats(const char *path, size_t n) {
    FILE *f = fopen(path, "rb");
    float *v = malloc(n * sizeof *v);
    size_t got = f && v ? fread(v, sizeof *v, n, f) : 0;
    int extra = f && fgetc(f) != EOF;
    if (f) fclose(f);
    if (got != n || extra) {
        kd_test_fail(__FILE__, __LINE__, "%s: expected %zu floats", path, n);
        free(v);
        return NULL;
    }
    return v;
}

float *kd_test_qint8_reference(const char *path, size_t n, int32_t *y, size_t *C, double *step) {
    kd_st_file f;
    kd_qmodel q;
    kd_preprocess pp;
    int has_pp = 0;
    kd_err err = {0};
    kd_dataset *ds = NULL;
    kd_data_source src;
    float *z = NULL, *x = NULL;
    int8_t *zq = NULL;
    size_t *idx = NULL;
    memset(&q, 0, sizeof q);
    if (kd_st_read(&f, path, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return NULL;
    }
    kd_status st = kd_qmodel_read(&f, &q, &err);
    if (!st) st = kd_ckpt_read_meta(&f, &pp, &has_pp, NULL, NULL, &err);
    kd_st_free(&f);
    if (!st && !has_pp) st = kd_err_set(&err, KD_EINPUT, "no preprocessing recorded");
    kd_data_source_defaults(&src);
    src.format = KD_FMT_IDX;
    snprintf(src.path, sizeof src.path, "%s", KD_TEST_T10K_IMAGES);
    if (y) snprintf(src.labels_path, sizeof src.labels_path, "%s", KD_TEST_T10K_LABELS);
    if (!st) st = kd_dataset_open(&ds, &src, &pp, &err);
    const size_t D = q.values ? q.values[0].numel : 0, B = 500;
    *C = q.values ? q.values[q.output].numel : 0;
    *step = q.values ? q.values[q.output].scale : 0;
    if (!st && (!(z = malloc(n * *C * sizeof *z)) || !(x = malloc(B * D * sizeof *x)) ||
                !(zq = malloc(B * *C)) || !(idx = malloc(n * sizeof *idx))))
        st = KD_EIO;
    for (size_t i = 0; !st && i < n; i++) idx[i] = i;
    for (size_t off = 0; !st && off < n; off += B) {
        const size_t b = n - off < B ? n - off : B;
        st = kd_dataset_get(ds, idx + off, b, x, y ? y + off : NULL, NULL, &err);
        if (!st) st = kd_qmodel_forward(&q, x, b, zq, z + off * *C, &err);
    }
    if (st) {
        kd_test_fail(__FILE__, __LINE__, "reference of %s: %s", path, err.msg);
        free(z);
        z = NULL;
    }
    if (has_pp) kd_preprocess_free(&pp);
    kd_dataset_close(ds);
    kd_qmodel_free(&q);
    free(x), free(zq), free(idx);
    return z;
}
