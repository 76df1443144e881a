/* test_cnn_interop.c - a PyTorch-layout CNN checkpoint written by tests/cnn_reference.py (conv,
 * batch norm with running statistics and an I64 num_batches_tracked, relu, max-pool, flatten,
 * linear) loads with the architecture supplied and gives the logits Python computed by hand. */
#include <stdlib.h>
#include <string.h>

#include "kd_checkpoint.h"
#include "kd_nn.h"
#include "kd_test.h"

#define CNN_ARCH                                                                            \
    "{\"input\":[1,4,4],\"layers\":["                                                       \
    "{\"type\":\"conv2d\",\"channels\":2,\"kernel\":3,\"padding\":1},"                      \
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},{\"type\":\"maxpool2d\",\"kernel\":2},"    \
    "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]}"

KD_TEST(cnn_pytorch_checkpoint_logits_match_python) {
    char out[8192];
    if (kd_test_run("python3 -c pass", out, sizeof out) != 0) {
        kd_test_skip("python3 not available");
        return;
    }
    char path[600], cmd[900];
    snprintf(path, sizeof path, "%s/cnn.safetensors", kd_test_tmpdir());
    snprintf(cmd, sizeof cmd, "python3 tests/cnn_reference.py write '%s'", path);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);

    kd_model m;
    kd_err err;
    memset(&m, 0, sizeof m);
    kd_status st = kd_ckpt_load(path, CNN_ARCH, 0, 0, &m, NULL, NULL, NULL, NULL, &err);
    CHECK_EQ_INT(st, KD_OK);
    if (st != KD_OK) {
        printf("    %s\n", err.msg);
        kd_model_free(&m);
        return;
    }
    const kd_tensor *nbt = kd_model_tensor(&m, "1.num_batches_tracked");
    const kd_tensor *var = kd_model_tensor(&m, "1.running_var");
    CHECK(nbt && *nbt->counter == 7);
    CHECK(var && var->data[1] == 0.8f);
    CHECK((st = kd_model_reserve(&m, 3, &err)) == KD_OK);
    if (st == KD_OK) {
        float x[3 * 16];
        double want[3 * 3];
        int ok = 1;
        for (int s = 0; s < 3; s++) {
            double v[16];
            ok &= kd_test_line_values(out, "input ", s, v, 16) == 16;
            for (int i = 0; i < 16; i++) x[s * 16 + i] = (float)v[i];
            ok &= kd_test_line_values(out, "logits ", s, want + 3 * s, 3) == 3;
        }
        CHECK(ok);
        kd_ctx eval = {0, NULL, NULL, 0, 0, 0};
        const float *z = kd_model_forward(&m, x, 3, &eval);
        float wantf[9];
        for (int i = 0; i < 9; i++) wantf[i] = (float)want[i];
        CHECK_FLOATS(z, wantf, 9, 1e-4, 0);
        /* Eval mode leaves the loaded statistics alone. */
        CHECK(nbt && *nbt->counter == 7);
    }
    kd_model_free(&m);
}
