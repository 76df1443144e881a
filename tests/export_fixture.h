/* export_fixture.h - what the export tests share (test_deploy.c, test_qdq.c, test_onnx_import.c,
 * test_standardize.c, test_quant_eval.c): the tools they need (ONNX Runtime from npm, installed
 * by tests/export/ort_install.sh, run through tests/export/ort_run.js), float files, and
 * distill's integer reference of a qint8 file on Fashion-MNIST's test images. Defined in
 * tests/export_fixture.c. */
#ifndef KD_EXPORT_FIXTURE_H
#define KD_EXPORT_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#define KD_TEST_FMNIST_DIR "/usr/share/datasets/fashion-mnist"
#define KD_TEST_T10K_IMAGES KD_TEST_FMNIST_DIR "/t10k-images-idx3-ubyte.gz"
#define KD_TEST_T10K_LABELS KD_TEST_FMNIST_DIR "/t10k-labels-idx1-ubyte.gz"

/* The onnxruntime-node module folder ($KD_ORT_DIR, default ~/.cache/distill-ort/VERSION, as
 * ort_install.sh puts it), or NULL when it is not installed or node is missing. */
const char *kd_test_ort_module(void);
/* Runs `node tests/export/ort_run.js ARGS` (printf-formatted) with the module of
 * kd_test_ort_module; a failure is reported with its output. 1 if it exited 0. */
int kd_test_ort_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Fashion-MNIST's test images, python3-onnx and, when want_ort, ONNX Runtime: 1 if all are
 * there, else 0 after kd_test_missing (a skip, or a failure when CI=true) naming the first
 * one missing. */
int kd_test_have_export_tools(int want_ort);

/* n floats from a file of exactly that size; malloc'd, NULL (after a failure) otherwise. */
float *kd_test_read_floats(const char *path, size_t n);

/* distill's integer reference (kd_qmodel_forward) of the qint8 file path on the first n
 * Fashion-MNIST test images, with the preprocessing the file records (a file without one
 * fails): the dequantized logits (n x *C, malloc'd), *step the output's scale (one
 * quantization step); the labels into y (n values) unless y is NULL. NULL after a failure. */
float *kd_test_qint8_reference(const char *path, size_t n, int32_t *y, size_t *C, double *step);

#endif
