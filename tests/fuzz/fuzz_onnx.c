/* fuzz_onnx.c - libFuzzer target: the ONNX reader (src/onnx), whole file in: the wire-format
 * scan, protobuf-c's unpacking, the graph checks and the translation onto a distill model. A
 * file is either refused with a clean error (KD_EINPUT with a message) or gives a model whose
 * description is consistent, and which runs a forward pass when it is small. */
#include "fuzz_common.h"  /* first: it defines _GNU_SOURCE */
#include "kd_onnx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kd_model m;
    kd_onnx_info info;
    kd_err err;
    kd_err_clear(&err);
    const kd_onnx_opts opt = {.output = NULL};
    kd_status st = kd_onnx_load_buf(data, size, NULL, &opt, &m, &info, &err);
    if (st != KD_OK) {
        /* Only bad input (or out of memory) with a message; nothing left allocated. */
        FUZZ_CHECK(st == KD_EINPUT || st == KD_EIO || st == KD_EUSAGE);
        FUZZ_CHECK(err.msg[0] != '\0');
        FUZZ_CHECK(m.n_layers == 0 && m.params == NULL && info.values == NULL);
        return 0;
    }
    FUZZ_CHECK(m.n_layers >= 1 && m.n_classes >= 1);
    FUZZ_CHECK(info.opset >= 11 && info.opset <= 17 && info.output[0]);
    for (size_t k = 0; k < info.n_values; k++) FUZZ_CHECK(info.values[k].onnx != NULL);
    size_t biggest = kd_shape_numel(&m.input);
    for (size_t i = 0; i < m.n_layers; i++) {
        kd_shape s = kd_model_layer_out(&m, i);
        size_t n = kd_shape_numel(&s);
        if (n > biggest) biggest = n;
    }
    /* Small enough to stay far within the 1 s per input of an instrumented build. */
    if (biggest <= ((size_t)1 << 14) && kd_model_macs(&m) <= ((size_t)1 << 18) &&
        kd_model_reserve(&m, 2, &err) == KD_OK) {
        float *x = calloc(2 * kd_shape_numel(&m.input), sizeof *x);
        FUZZ_CHECK(x != NULL);
        kd_ctx ctx = {0, NULL, NULL, 0, 0, 0};
        const float *y = kd_model_forward(&m, x, 2, &ctx);
        FUZZ_CHECK(y != NULL);
        volatile float sink = 0.0f;
        for (size_t i = 0; i < 2 * m.n_classes; i++) sink += y[i];
        (void)sink;
        free(x);
    }
    kd_onnx_info_free(&info);
    kd_model_free(&m);
    return 0;
}
