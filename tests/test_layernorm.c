/* test_layernorm.c - layernorm (torch.nn.LayerNorm over the last dimension): finite-difference
 * gradients, a hand-computed case, forward and backward against a double-precision reference
 * written here (backward through the explicit Jacobian), a PyTorch-layout checkpoint round trip,
 * int8 export leaving its tensors in F32, and its configuration errors. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_checkpoint.h"
#include "kd_eval.h"
#include "kd_gradcheck.h"
#include "kd_nn.h"
#include "kd_test.h"

/* A model from a JSON literal, reserved for B samples; fails the case on error. */
static int build(kd_model *m, const kd_shape *in, const char *json, size_t B) {
    kd_err err;
    kd_status st = kd_model_init(m, in, json, 1, &err);
    if (!st) st = kd_model_reserve(m, B, &err);
    if (st) kd_test_fail(__FILE__, __LINE__, "%s: %s", json, err.msg);
    return st == KD_OK;
}

KD_TEST(layernorm_gradcheck) {
    const kd_shape vec6 = {1, {6}}, img = {3, {2, 3, 4}}, row = {2, {3, 5, 0}};
    /* Alone (input, weight, bias), on a [D] sample and over the last axis of [C, H, W]. */
    CHECK_EQ_INT(kd_gradcheck(&vec6, "[{\"type\":\"layernorm\"}]", 3, 41, 0, 1e-2), 0);
    CHECK_EQ_INT(kd_gradcheck(&img, "[{\"type\":\"layernorm\",\"eps\":0.01}]", 2, 42, 1, 1e-2), 0);
    CHECK_EQ_INT(kd_gradcheck(&row, "[{\"type\":\"layernorm\"},{\"type\":\"flatten\"}]", 3, 43, 0, 1e-2), 0);
    /* Inside stacks: its dx feeds the layer before it. */
    CHECK_EQ_INT(kd_gradcheck(&vec6,
                              "[{\"type\":\"dense\",\"units\":7},{\"type\":\"layernorm\"},"
                              "{\"type\":\"gelu\"},{\"type\":\"dense\",\"units\":3}]",
                              4, 44, 0, 1e-2), 0);
    const kd_shape small = {3, {1, 4, 5}};
    CHECK_EQ_INT(kd_gradcheck(&small,
                              "[{\"type\":\"conv2d\",\"channels\":2,\"kernel\":3,\"padding\":1},"
                              "{\"type\":\"layernorm\"},{\"type\":\"flatten\"},"
                              "{\"type\":\"dense\",\"units\":3}]",
                              2, 45, 0, 1e-2), 0);
}

KD_TEST(layernorm_hand_computed) {
    /* Samples of shape [2, 4]: two rows of 4, each normalised on its own, with eps 0.5625 so
     * that a row with deviations +-1 (variance 1) has 1/sqrt(1 + eps) = 1/1.25 = 0.8. */
    const kd_shape in = {2, {2, 4}};
    kd_model m;
    if (!build(&m, &in, "[{\"type\":\"layernorm\",\"eps\":0.5625}]", 2)) return;
    CHECK_EQ_INT(m.n_tensors, 2);
    const kd_tensor *w = kd_model_tensor(&m, "0.weight"), *b = kd_model_tensor(&m, "0.bias");
    CHECK(w && w->shape.rank == 1 && w->shape.d[0] == 4 && w->kind == KD_TENSOR_PARAM);
    CHECK(b && b->shape.rank == 1 && b->shape.d[0] == 4 && b->kind == KD_TENSOR_PARAM);
    if (!w || !b) {
        kd_model_free(&m);
        return;
    }
    /* torch's init: weight 1, bias 0. */
    kd_rng rng;
    kd_rng_seed(&rng, 1);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    const float ones[] = {1, 1, 1, 1}, zeros[] = {0, 0, 0, 0};
    CHECK_FLOATS(w->data, ones, 4, 0, 0);
    CHECK_FLOATS(b->data, zeros, 4, 0, 0);
    const float W[] = {1, 2, 3, 4}, Bv[] = {0.5f, 0, -0.5f, 1};
    memcpy(w->data, W, sizeof W);
    memcpy(b->data, Bv, sizeof Bv);
    const float x[] = {2, 0, 2, 0, 5, 7, 7, 5,      /* means 1 and 6: xhat +-0.8 */
                       1, 1, 1, 1, -2, 0, -2, 0};   /* a constant row (xhat 0), mean -1 */
    /* y = W * xhat + B:
     *   [ .8, -.8,  .8, -.8] -> [1.3, -1.6,  1.9, -2.2];  [-.8, .8, .8, -.8] -> [-.3, 1.6,  1.9, -2.2]
     *   [  0,   0,   0,   0] -> [ .5,    0,  -.5,    1];  [-.8, .8, -.8, .8] -> [-.3, 1.6, -2.9,  4.2] */
    const float want[] = {1.3f, -1.6f, 1.9f, -2.2f, -0.3f, 1.6f, 1.9f, -2.2f,
                          0.5f, 0.0f, -0.5f, 1.0f, -0.3f, 1.6f, -2.9f, 4.2f};
    kd_ctx train = {1, NULL, NULL, 0, 0, 0}, eval = {0, NULL, NULL, 0, 0, 0};
    CHECK_FLOATS(kd_model_forward(&m, x, 2, &train), want, 16, 1e-6, 1e-6);
    /* No running statistics: evaluation computes the same. */
    CHECK_FLOATS(kd_model_forward(&m, x, 2, &eval), want, 16, 1e-6, 1e-6);
    kd_model_free(&m);
}

/* Double-precision LayerNorm over rows of D: y, and for an upstream gradient dy the input
 * gradient through the explicit Jacobian
 *   d xhat_i / d x_j = rs * (delta_ij - 1/D) - xhat_i * xhat_j * rs / D,
 * and dweight = sum over rows of dy * xhat, dbias = sum over rows of dy. */
static void ref_layernorm(const float *x, const float *w, const float *b, const float *dy,
                          size_t rows, size_t D, double eps, double *y, double *dx, double *dw,
                          double *db) {
    double xhat[16];
    for (size_t j = 0; j < D; j++) dw[j] = db[j] = 0.0;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * D, *g = dy + r * D;
        double mean = 0.0, var = 0.0;
        for (size_t j = 0; j < D; j++) mean += xr[j];
        mean /= (double)D;
        for (size_t j = 0; j < D; j++) var += (xr[j] - mean) * (xr[j] - mean);
        var /= (double)D;
        const double rs = 1.0 / sqrt(var + eps);
        for (size_t j = 0; j < D; j++) {
            xhat[j] = (xr[j] - mean) * rs;
            y[r * D + j] = w[j] * xhat[j] + b[j];
            dw[j] += g[j] * xhat[j];
            db[j] += g[j];
        }
        for (size_t j = 0; j < D; j++) {
            double s = 0.0;
            for (size_t i = 0; i < D; i++)
                s += g[i] * w[i] * (rs * ((i == j) - 1.0 / (double)D) - xhat[i] * xhat[j] * rs / (double)D);
            dx[r * D + j] = s;
        }
    }
}

static void to_float(const double *d, float *f, size_t n) {
    for (size_t i = 0; i < n; i++) f[i] = (float)d[i];
}

KD_TEST(layernorm_matches_double_reference) {
    /* [C, H, W] = [2, 3, 5]: torch.nn.LayerNorm(5) normalises each of the 6 rows of W values. */
    enum { B = 3, C = 2, H = 3, D = 5, N = B * C * H * D, ROWS = B * C * H };
    const kd_shape in = {3, {C, H, D}};
    kd_model m;
    if (!build(&m, &in, "[{\"type\":\"layernorm\",\"eps\":0.001}]", B)) return;
    kd_rng rng;
    kd_rng_seed(&rng, 77);
    float x[N], dy[N], dx[N], f[N];
    double y_ref[N], dx_ref[N], dw_ref[D], db_ref[D];
    float *w = kd_model_tensor(&m, "0.weight")->data, *b = kd_model_tensor(&m, "0.bias")->data;
    for (int j = 0; j < D; j++) {
        w[j] = 0.5f + kd_rng_uniform(&rng);
        b[j] = kd_rng_uniform(&rng) - 0.5f;
    }
    /* Offset and scale vary by row so the per-row statistics differ; far from zero mean. */
    for (int i = 0; i < N; i++)
        x[i] = 3.0f + (float)(i / D % 4) + (1.0f + (float)(i / D % 3)) * (2.0f * kd_rng_uniform(&rng) - 1.0f);
    for (int i = 0; i < N; i++) dy[i] = 2.0f * kd_rng_uniform(&rng) - 1.0f;
    ref_layernorm(x, w, b, dy, ROWS, D, 1e-3, y_ref, dx_ref, dw_ref, db_ref);

    kd_ctx train = {1, NULL, NULL, 0, 0, 0};
    const float *y = kd_model_forward(&m, x, B, &train);
    to_float(y_ref, f, N);
    CHECK_FLOATS(y, f, N, 1e-5, 1e-5);

    /* The layer's own backward (so the input gradient is produced), accumulating into zeroed
     * gradients; dx starts as garbage: backward must overwrite it. */
    for (int i = 0; i < N; i++) dx[i] = 1e6f;
    kd_model_zero_grad(&m);
    kd_layer *l = &m.layers[0];
    train.workspace = m.workspace;
    l->ops->backward(l, x, y, dy, dx, B, &train);
    to_float(dx_ref, f, N);
    CHECK_FLOATS(dx, f, N, 1e-5, 1e-4);
    to_float(dw_ref, f, D);
    const float *dw = m.grads + kd_model_tensor(&m, "0.weight")->offset;
    const float *db = m.grads + kd_model_tensor(&m, "0.bias")->offset;
    CHECK_FLOATS(dw, f, D, 1e-5, 1e-5);
    to_float(db_ref, f, D);
    CHECK_FLOATS(db, f, D, 1e-5, 1e-5);
    /* A second backward (without dx, as for a first layer) accumulates. */
    l->ops->backward(l, x, y, dy, NULL, B, &train);
    CHECK_CLOSE(dw[1], 2.0 * dw_ref[1], 1e-5, 1e-5);
    CHECK_CLOSE(db[0], 2.0 * db_ref[0], 1e-5, 1e-5);
    kd_model_free(&m);
}

#define LN_ARCH                                                                             \
    "{\"input\":[6],\"layers\":[{\"type\":\"dense\",\"units\":5},{\"type\":\"layernorm\"},"  \
    "{\"type\":\"dense\",\"units\":3}]}"

/* The LN_ARCH model with seeded weights and a non-trivial layernorm weight and bias. */
static int seeded_model(kd_model *m) {
    kd_err err;
    kd_rng rng;
    if (kd_model_init_arch(m, LN_ARCH, 0, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return 0;
    }
    kd_rng_seed(&rng, 8);
    kd_model_init_weights(m, &rng, KD_INIT_HE);
    for (size_t i = 0; i < 5; i++) {
        kd_model_tensor(m, "1.weight")->data[i] = 0.75f + 0.125f * (float)i;
        kd_model_tensor(m, "1.bias")->data[i] = 0.25f - 0.1f * (float)i;
    }
    return 1;
}

KD_TEST(layernorm_checkpoint_round_trip_pytorch_names) {
    const char *dir = kd_test_tmpdir();
    char path[600], plain[600];
    snprintf(path, sizeof path, "%s/ln.safetensors", dir);
    snprintf(plain, sizeof plain, "%s/ln-torch.safetensors", dir);
    kd_model m, back, back2;
    kd_err err;
    kd_st_file f;
    memset(&back, 0, sizeof back);
    memset(&back2, 0, sizeof back2);
    memset(&f, 0, sizeof f);
    if (!seeded_model(&m)) return;
    CHECK_EQ_INT(kd_ckpt_save(path, &m, NULL, NULL, &err), KD_OK);

    /* The file holds nn.Sequential(Linear(6,5), LayerNorm(5), Linear(5,3)).state_dict(). */
    static const char *const names[] = {"0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"};
    CHECK_EQ_INT(kd_st_read(&f, path, &err), KD_OK);
    CHECK_EQ_INT(f.n_tensors, 6);
    for (size_t i = 0; i < 6; i++) {
        const kd_st_tensor *t = kd_st_find(&f, names[i]);
        const kd_tensor *mt = kd_model_tensor(&m, names[i]);
        CHECK(t && t->dtype == KD_DT_F32 && t->numel == mt->numel);
        if (t && t->numel == mt->numel) CHECK(memcmp(t->data, mt->data, mt->numel * 4) == 0);
    }
    const kd_st_tensor *lw = kd_st_find(&f, "1.weight");
    CHECK(lw && lw->rank == 1 && lw->shape[0] == 5);

    /* Back through kd_ckpt_load: the same architecture and bitwise the same values. */
    CHECK_EQ_INT(kd_ckpt_load(path, NULL, 0, 0, &back, NULL, NULL, NULL, NULL, &err), KD_OK);
    CHECK_EQ_INT(back.n_params, m.n_params);
    CHECK(back.n_layers == 3 && strcmp(back.layers[1].ops->type, "layernorm") == 0);
    if (back.n_params == m.n_params)
        CHECK(memcmp(back.params, m.params, m.n_params * sizeof *m.params) == 0);

    /* As a PyTorch export writes it (the same tensors, no metadata): loads with the
     * architecture supplied, as a config's teacher.layers would. */
    kd_st_out outs[6];
    memset(outs, 0, sizeof outs);
    for (size_t i = 0; i < 6; i++) {
        const kd_tensor *mt = kd_model_tensor(&m, names[i]);
        outs[i].name = names[i];
        outs[i].dtype = KD_DT_F32;
        outs[i].rank = mt->shape.rank;
        for (int d = 0; d < mt->shape.rank; d++) outs[i].shape[d] = mt->shape.d[d];
        outs[i].data = mt->data;
    }
    CHECK_EQ_INT(kd_st_write(plain, outs, 6, NULL, NULL, 0, &err), KD_OK);
    CHECK_EQ_INT(kd_ckpt_load(plain, LN_ARCH, 0, 0, &back2, NULL, NULL, NULL, NULL, &err), KD_OK);
    CHECK_EQ_INT(back2.n_params, m.n_params);
    if (back2.n_params == m.n_params)
        CHECK(memcmp(back2.params, m.params, m.n_params * sizeof *m.params) == 0);
    kd_st_free(&f);
    kd_model_free(&back2);
    kd_model_free(&back);
    kd_model_free(&m);
}

KD_TEST(layernorm_int8_export_keeps_its_tensors_f32) {
    const char *dir = kd_test_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/ln-int8.safetensors", dir);
    kd_model m;
    kd_err err;
    kd_st_file f;
    memset(&f, 0, sizeof f);
    if (!seeded_model(&m)) return;
    CHECK(!kd_model_tensor(&m, "1.weight")->quantize && kd_model_tensor(&m, "0.weight")->quantize);
    CHECK_EQ_INT(kd_export_write(path, &m, KD_DT_I8, NULL, NULL, 0, &err), KD_OK);
    CHECK_EQ_INT(kd_st_read(&f, path, &err), KD_OK);
    /* Dense weights become I8 rows with scales; layernorm's weight and bias stay F32, exact,
     * as batch norm's do. */
    static const struct {
        const char *name;
        kd_dtype dtype;
    } want[] = {{"0.weight", KD_DT_I8}, {"0.weight_scale", KD_DT_F32}, {"0.bias", KD_DT_F32},
                {"1.weight", KD_DT_F32}, {"1.bias", KD_DT_F32}, {"2.weight", KD_DT_I8},
                {"2.weight_scale", KD_DT_F32}, {"2.bias", KD_DT_F32}};
    CHECK_EQ_INT(f.n_tensors, 8);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const kd_st_tensor *t = kd_st_find(&f, want[i].name);
        if (!t || t->dtype != want[i].dtype)
            kd_test_fail(__FILE__, __LINE__, "%s: missing or %s", want[i].name,
                         t ? kd_dtype_name(t->dtype) : "absent");
    }
    CHECK(kd_st_find(&f, "1.weight_scale") == NULL);
    const kd_st_tensor *lw = kd_st_find(&f, "1.weight");
    if (lw) CHECK(memcmp(lw->data, kd_model_tensor(&m, "1.weight")->data, 5 * sizeof(float)) == 0);
    kd_st_free(&f);
    kd_model_free(&m);
}

KD_TEST(layernorm_config_errors_and_arch_round_trip) {
    const kd_shape in = {1, {4}};
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"[{\"type\":\"layernorm\",\"eps\":0}]", "layer 0 (layernorm): eps: expected a number > 0"},
        {"[{\"type\":\"layernorm\",\"eps\":2}]", "layer 0 (layernorm): eps: expected a number in [0, 1]"},
        {"[{\"type\":\"layernorm\",\"epsilon\":0.1}]",
         "layer 0 (layernorm): unknown field \"epsilon\" (did you mean \"eps\"?)"},
        {"[{\"type\":\"layernorm\",\"units\":3}]", "unknown field \"units\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kd_model m;
        kd_err err;
        kd_err_clear(&err);
        CHECK_EQ_INT(kd_model_init(&m, &in, cases[i].json, 1, &err), KD_EUSAGE);
        CHECK_CONTAINS(err.msg, cases[i].want);
        kd_model_free(&m);
    }
    /* A non-default eps is written into the arch string and read back; the default is not. */
    kd_model a, b;
    kd_err err;
    memset(&b, 0, sizeof b);
    if (!build(&a, &in, "[{\"type\":\"layernorm\",\"eps\":0.01},{\"type\":\"layernorm\"}]", 1)) return;
    char *arch = kd_model_arch_json(&a);
    CHECK_CONTAINS(arch, "{\"type\":\"layernorm\",\"eps\":0.01},{\"type\":\"layernorm\"}");
    CHECK_EQ_INT(kd_model_init_arch(&b, arch, 0, &err), KD_OK);
    CHECK((float)kd_test_layer_field(&b.layers[0], "eps") == 0.01f);
    CHECK(isnan(kd_test_layer_field(&b.layers[1], "eps")));
    free(arch);
    kd_model_free(&b);
    kd_model_free(&a);
}
