/* test_onnx_import.c - ONNX teachers (src/onnx): the fixtures of tests/onnx_fixtures.py (one
 * small model per group of operators, reduced resnet18 and mobilenet_v2 at opsets 13 and 17,
 * all with a dynamic batch) give torch's logits and ONNX Runtime's within 1e-4; the name
 * mapping; every cap at its limit and one past it; every malformed file of the list is
 * refused (KD_EINPUT naming the node or tensor), built here with protobuf-c from a small valid
 * model; the affine layer's gradients. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "export_fixture.h"
#include "kd_export.h"
#include "kd_gradcheck.h"
#include "kd_onnx.h"
#include "kd_teacher.h"
#include "kd_test.h"
#include "onnx.pb-c.h"

#define FIX "tests/fixtures/onnx"
#define TOL 1e-4  /* absolute and relative, as the issue asks */

/* n floats from a file (little-endian f32), or the values of a float32 IDX file (big-endian,
 * after its header) when idx; NULL on error. *n_out the count. */
static float *read_f32(const char *path, int idx, size_t *n_out) {
    char *buf = NULL;
    size_t len = 0, off = 0;
    kd_err err;
    if (kd_read_file(path, 1 << 26, &buf, &len, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return NULL;
    }
    if (idx) off = 4 + 4 * (size_t)(unsigned char)buf[3];
    const size_t n = (len - off) / 4;
    float *x = malloc((n + 1) * sizeof *x);
    for (size_t i = 0; x && i < n; i++) {
        const unsigned char *p = (const unsigned char *)buf + off + 4 * i;
        uint32_t u = idx ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
                         : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
        memcpy(&x[i], &u, 4);
    }
    free(buf);
    *n_out = n;
    return x;
}

/* Softmax (or log-softmax) of each row of z (B, C) in place, in double. */
static void softmax_rows(float *z, size_t B, size_t C, int log_form) {
    for (size_t i = 0; i < B; i++) {
        float *r = z + i * C;
        double mx = r[0], s = 0.0;
        for (size_t c = 1; c < C; c++) mx = r[c] > mx ? r[c] : mx;
        for (size_t c = 0; c < C; c++) s += exp((double)r[c] - mx);
        for (size_t c = 0; c < C; c++)
            r[c] = (float)(log_form ? (double)r[c] - mx - log(s) : exp((double)r[c] - mx) / s);
    }
}

/* Loads fixture name, runs its 8 samples, compares with torch's logits and, when ONNX Runtime
 * is there, with its logits on the same samples. */
static void check_fixture(const char *name, size_t n_layers_min) {
    char onnx[256], xp[256], zp[256], out[256];
    snprintf(onnx, sizeof onnx, FIX "/%s.onnx", name);
    snprintf(xp, sizeof xp, FIX "/%s.x.idx", name);
    snprintf(zp, sizeof zp, FIX "/%s.torch.f32", name);
    kd_model m;
    kd_onnx_info info;
    kd_err err;
    const kd_onnx_opts opt = {.output = NULL};
    size_t nx, nz, no;
    if (kd_onnx_load(onnx, &opt, &m, &info, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s: %s", name, err.msg);
        return;
    }
    float *x = read_f32(xp, 1, &nx), *z = read_f32(zp, 0, &nz), *zo = NULL;
    const size_t B = 8, C = m.n_classes;
    CHECK(m.n_layers >= n_layers_min);
    CHECK(x && z && nz == B * C && nx == B * kd_shape_numel(&m.input));
    if (!x || !z || nz != B * C || kd_model_reserve(&m, B, &err)) goto cleanup;
    kd_ctx ctx = {0, NULL, NULL, 0, 0, 0};
    float *y = (float *)kd_model_forward(&m, x, B, &ctx);
    /* The reader removed a final (Log)Softmax, which torch and ORT still apply. */
    if (strstr(info.note, "final Softmax") || strstr(info.note, "final LogSoftmax"))
        softmax_rows(y, B, C, strstr(info.note, "LogSoftmax") != NULL);
    if (!CHECK_FLOATS(y, z, B * C, TOL, TOL)) kd_test_fail(__FILE__, __LINE__, "%s vs torch", name);
    if (!kd_test_ort_module()) {
        kd_test_missing("ONNX Runtime not installed: run bash tests/export/ort_install.sh");
        goto cleanup;
    }
    snprintf(out, sizeof out, "%s/%s.ort.f32", kd_test_tmpdir(), name);
    if (!kd_test_ort_run("'%s' '%s' --n %zu --logits '%s'", onnx, xp, B, out)) goto cleanup;
    if ((zo = read_f32(out, 0, &no)) && no == B * C) {
        if (!CHECK_FLOATS(y, zo, B * C, TOL, TOL)) kd_test_fail(__FILE__, __LINE__, "%s vs ORT", name);
    } else {
        kd_test_fail(__FILE__, __LINE__, "%s: ORT gave %zu values", name, no);
    }
cleanup:
    free(x);
    free(z);
    free(zo);
    kd_onnx_info_free(&info);
    kd_model_free(&m);
}

KD_TEST(onnx_ops_conv_gemm_tanh) { check_fixture("conv_mlp", 6); }
KD_TEST(onnx_ops_groups_bn_clip_hardswish_hardsigmoid_softmax) { check_fixture("groups_bn", 10); }
KD_TEST(onnx_ops_pools_leaky_sigmoid_shape_subgraph) { check_fixture("pools_shape", 7); }
KD_TEST(onnx_ops_matmul_bias_gelu_dropout) { check_fixture("gelu_matmul", 4); }
KD_TEST(onnx_ops_affine_concat_reducemean_squeeze_logsoftmax) { check_fixture("affine_concat", 8); }
KD_TEST(onnx_resnet18_small_opset13) { check_fixture("resnet_o13", 40); }
KD_TEST(onnx_resnet18_small_opset17) { check_fixture("resnet_o17", 40); }
KD_TEST(onnx_mobilenet_v2_small_opset13) { check_fixture("mobilenet_o13", 30); }
KD_TEST(onnx_mobilenet_v2_small_opset17) { check_fixture("mobilenet_o17", 30); }

/* What the translation made of a fixture: the final softmax removed with a note, the layer
 * types, the names and the values info lists. */
KD_TEST(onnx_translation_described) {
    kd_model m;
    kd_onnx_info info;
    kd_err err;
    const kd_onnx_opts opt = {.output = NULL};
    if (kd_onnx_load(FIX "/groups_bn.onnx", &opt, &m, &info, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    CHECK_CONTAINS(info.note, "final Softmax");
    CHECK_CONTAINS(info.ops, "HardSigmoid x2");
    CHECK_EQ_INT(info.opset, 13);
    CHECK(!info.from_distill);
    CHECK(!strcmp(info.input, "input") && !strcmp(info.output, "/fc/Gemm_output_0"));
    /* x * HardSigmoid(x) is one hardswish; the other HardSigmoid three layers. */
    int hswish = 0, affine = 0, relu6 = 0;
    for (size_t i = 0; i < m.n_layers; i++) {
        hswish += !strcmp(kd_model_layer_type(&m, i), "hardswish");
        affine += !strcmp(kd_model_layer_type(&m, i), "affine");
        relu6 += !strcmp(kd_model_layer_type(&m, i), "relu6");
    }
    CHECK_EQ_INT(hswish, 1);
    CHECK_EQ_INT(affine, 2);
    CHECK_EQ_INT(relu6, 2);
    CHECK(!strcmp(kd_model_layer_name(&m, 0), "conv_Conv_output_0"));
    CHECK(kd_model_tensor(&m, "bn_BatchNormalization_output_0.running_var") != NULL ||
          kd_model_tensor(&m, "conv_Conv_output_0.weight") != NULL);
    int found = 0;
    for (size_t k = 0; k < info.n_values; k++)
        if (!strcmp(info.values[k].onnx, "/conv/Conv_output_0"))
            found = info.values[k].distill && !strcmp(info.values[k].distill, "conv_Conv_output_0") &&
                    info.values[k].shape.rank == 3 && info.values[k].shape.d[0] == 6;
    CHECK(found);
    kd_onnx_info_free(&info);
    kd_model_free(&m);
}

KD_TEST(onnx_name_mapping) {
    static const char *const cases[][2] = {
        {"/layer1/layer1.0/conv1/Conv_output_0", "layer1_layer1.0_conv1_Conv_output_0"},
        {"onnx::Conv_192", "onnx__Conv_192"},
        {"dense/MatMul:0", "dense_MatMul_0"},
        {"192", "_192"},
        {"3.weight", "_3.weight"},
        {"input", "_input"},
        {"optim.m", "_optim.m"},
        {"a..b.", "a._b_"},
        {".x", "_.x"},
        {"", "_"},
    };
    char out[KD_LAYER_NAME_MAX + 8];
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        kd_onnx_name(cases[k][0], out, sizeof out);
        if (strcmp(out, cases[k][1]))
            kd_test_fail(__FILE__, __LINE__, "'%s' -> '%s', expected '%s'", cases[k][0], out,
                         cases[k][1]);
    }
    char longname[300];
    memset(longname, 'a', 299);
    longname[299] = '\0';
    kd_onnx_name(longname, out, sizeof out);
    CHECK_EQ_INT(strlen(out), KD_LAYER_NAME_MAX);
}

/* ---- a small model built with protobuf-c, and its broken variants ---- */

/* input "x" [N, 4] -> Gemm(x, W [3, 4], transB) -> "h" -> Relu -> "logits". */
typedef struct {
    Onnx__ModelProto mp;
    Onnx__GraphProto g;
    Onnx__OperatorSetIdProto ops, *opsv[1];
    Onnx__NodeProto nodes[4], *nodev[4];
    Onnx__AttributeProto transb, *attrv[1];
    char *gin[2], *gout[1], *rin[1], *rout[1];
    Onnx__TensorProto w, *initv[1];
    int64_t wdims[2];
    float wdata[12];
    Onnx__ValueInfoProto in[2], *inv[2], out, *outv[1];
    Onnx__TypeProto ty;
    Onnx__TypeProto__Tensor tt;
    Onnx__TensorShapeProto shape;
    Onnx__TensorShapeProto__Dimension dims[2], *dimv[2];
    Onnx__StringStringEntryProto ext[1], *extv[1];
} mini;

static void mini_init(mini *s) {
    memset(s, 0, sizeof *s);
    s->mp = (Onnx__ModelProto)ONNX__MODEL_PROTO__INIT;
    s->g = (Onnx__GraphProto)ONNX__GRAPH_PROTO__INIT;
    s->ops = (Onnx__OperatorSetIdProto)ONNX__OPERATOR_SET_ID_PROTO__INIT;
    s->ops.has_version = 1;
    s->ops.version = 13;
    s->opsv[0] = &s->ops;
    s->mp.has_ir_version = 1;
    s->mp.ir_version = 7;
    s->mp.n_opset_import = 1;
    s->mp.opset_import = s->opsv;
    s->mp.graph = &s->g;
    for (int k = 0; k < 12; k++) s->wdata[k] = (float)(k % 5) * 0.25f - 0.5f;
    s->w = (Onnx__TensorProto)ONNX__TENSOR_PROTO__INIT;
    s->w.name = "W";
    s->w.n_dims = 2;
    s->wdims[0] = 3;
    s->wdims[1] = 4;
    s->w.dims = s->wdims;
    s->w.has_data_type = 1;
    s->w.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    s->w.n_float_data = 12;
    s->w.float_data = s->wdata;
    s->initv[0] = &s->w;
    s->g.n_initializer = 1;
    s->g.initializer = s->initv;
    s->transb = (Onnx__AttributeProto)ONNX__ATTRIBUTE_PROTO__INIT;
    s->transb.name = "transB";
    s->transb.has_type = 1;
    s->transb.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    s->transb.has_i = 1;
    s->transb.i = 1;
    s->attrv[0] = &s->transb;
    s->gin[0] = "x";
    s->gin[1] = "W";
    s->gout[0] = "h";
    s->rin[0] = "h";
    s->rout[0] = "logits";
    for (int k = 0; k < 4; k++) {
        s->nodes[k] = (Onnx__NodeProto)ONNX__NODE_PROTO__INIT;
        s->nodev[k] = &s->nodes[k];
    }
    s->nodes[0].name = "gemm";
    s->nodes[0].op_type = "Gemm";
    s->nodes[0].n_input = 2;
    s->nodes[0].input = s->gin;
    s->nodes[0].n_output = 1;
    s->nodes[0].output = s->gout;
    s->nodes[0].n_attribute = 1;
    s->nodes[0].attribute = s->attrv;
    s->nodes[1].name = "relu";
    s->nodes[1].op_type = "Relu";
    s->nodes[1].n_input = 1;
    s->nodes[1].input = s->rin;
    s->nodes[1].n_output = 1;
    s->nodes[1].output = s->rout;
    s->g.n_node = 2;
    s->g.node = s->nodev;
    for (int k = 0; k < 2; k++) {
        s->dims[k] = (Onnx__TensorShapeProto__Dimension)ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
        s->dimv[k] = &s->dims[k];
    }
    s->dims[0].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
    s->dims[0].dim_param = "N";
    s->dims[1].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
    s->dims[1].dim_value = 4;
    s->shape = (Onnx__TensorShapeProto)ONNX__TENSOR_SHAPE_PROTO__INIT;
    s->shape.n_dim = 2;
    s->shape.dim = s->dimv;
    s->tt = (Onnx__TypeProto__Tensor)ONNX__TYPE_PROTO__TENSOR__INIT;
    s->tt.has_elem_type = 1;
    s->tt.elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    s->tt.shape = &s->shape;
    s->ty = (Onnx__TypeProto)ONNX__TYPE_PROTO__INIT;
    s->ty.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    s->ty.tensor_type = &s->tt;
    for (int k = 0; k < 2; k++) {
        s->in[k] = (Onnx__ValueInfoProto)ONNX__VALUE_INFO_PROTO__INIT;
        s->in[k].type = &s->ty;
        s->inv[k] = &s->in[k];
    }
    s->in[0].name = "x";
    s->in[1].name = "y";
    s->g.n_input = 1;
    s->g.input = s->inv;
    s->out = (Onnx__ValueInfoProto)ONNX__VALUE_INFO_PROTO__INIT;
    s->out.name = "logits";
    s->outv[0] = &s->out;
    s->g.n_output = 1;
    s->g.output = s->outv;
}

static uint8_t *mini_pack(const mini *s, size_t *len) {
    *len = onnx__model_proto__get_packed_size(&s->mp);
    uint8_t *buf = malloc(*len + 1);
    if (buf) onnx__model_proto__pack(&s->mp, buf);
    return buf;
}

/* Loads the bytes with caps (NULL: defaults) from folder dir; the status, err filled. */
static kd_status load_bytes(const uint8_t *buf, size_t len, const char *dir,
                            const kd_onnx_caps *caps, kd_err *err) {
    kd_model m;
    const kd_onnx_opts opt = {.caps = caps};
    kd_status st = kd_onnx_load_buf(buf, len, dir, &opt, &m, NULL, err);
    if (!st) {
        /* relu(W x) on x = [4, 3, 2, 1], W's entries (k % 5) / 4 - 1/2 row by row:
         * [-.5 -.25 0 .25] -> -2 - .75 + 0 + .25 = -2.5 -> 0; [.5 -.5 -.25 0] -> 2 - 1.5 - .5 = 0;
         * [.25 .5 -.5 -.25] -> 1 + 1.5 - 1 - .25 = 1.25 */
        const float x[4] = {4, 3, 2, 1};
        const float want[3] = {0.0f, 0.0f, 1.25f};
        kd_ctx ctx = {0, NULL, NULL, 0, 0, 0};
        if (kd_model_reserve(&m, 1, err) == KD_OK) CHECK_FLOATS(kd_model_forward(&m, x, 1, &ctx), want, 3, 1e-6, 0);
        kd_model_free(&m);
    }
    return st;
}

/* The mini model after mutate(s) must be refused with KD_EINPUT and a message holding want. */
static void refused(mini *s, const char *want) {
    size_t len;
    uint8_t *buf = mini_pack(s, &len);
    kd_err err;
    kd_status st = load_bytes(buf, len, NULL, NULL, &err);
    CHECK_EQ_INT(st, KD_EINPUT);
    if (st) CHECK_CONTAINS(err.msg, want);
    free(buf);
}

KD_TEST(onnx_mini_model_loads) {
    mini s;
    mini_init(&s);
    size_t len;
    uint8_t *buf = mini_pack(&s, &len);
    kd_err err;
    CHECK_EQ_INT(load_bytes(buf, len, NULL, NULL, &err), KD_OK);
    /* A second hand-checked input: x = [1, 0, 0, 0] gives W's first column, relu'd:
     * [-.5, .5, .25] -> [0, .5, .25]. */
    kd_model m;
    const kd_onnx_opts opt = {.output = NULL};
    if (kd_onnx_load_buf(buf, len, NULL, &opt, &m, NULL, &err) == KD_OK &&
        kd_model_reserve(&m, 1, &err) == KD_OK) {
        const float x[4] = {1, 0, 0, 0}, want[3] = {0.0f, 0.5f, 0.25f};
        kd_ctx ctx = {0, NULL, NULL, 0, 0, 0};
        CHECK_FLOATS(kd_model_forward(&m, x, 1, &ctx), want, 3, 1e-6, 0);
        CHECK(!strcmp(kd_model_layer_type(&m, 0), "dense") && !strcmp(kd_model_layer_name(&m, 0), "h"));
    }
    kd_model_free(&m);
    free(buf);
    /* Two values whose names map to the same distill name: the second gets "_2". */
    mini_init(&s);
    s.gout[0] = s.rin[0] = "a:b";
    s.rout[0] = s.out.name = "a/b";
    buf = mini_pack(&s, &len);
    if (kd_onnx_load_buf(buf, len, NULL, &opt, &m, NULL, &err) == KD_OK) {
        CHECK(!strcmp(kd_model_layer_name(&m, 0), "a_b") && !strcmp(kd_model_layer_name(&m, 1), "a_b_2"));
        CHECK(kd_model_tensor(&m, "a_b.weight") != NULL);
    } else {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
    }
    kd_model_free(&m);
    free(buf);
}

KD_TEST(onnx_malformed_files_refused) {
    mini s;
    size_t len;
    kd_err err;
    /* truncated, garbage, empty */
    mini_init(&s);
    uint8_t *buf = mini_pack(&s, &len);
    for (size_t cut = 1; cut < len; cut += 7) {
        kd_status st = load_bytes(buf, cut, NULL, NULL, &err);
        if (st != KD_EINPUT) kd_test_fail(__FILE__, __LINE__, "cut at %zu: status %d", cut, st);
    }
    free(buf);
    const uint8_t garbage[] = "\xff\xff\xff\xff garbage that is not protobuf";
    CHECK_EQ_INT(load_bytes(garbage, sizeof garbage, NULL, NULL, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "not a valid ONNX file");
    /* wrong types: the graph field (7) as a varint */
    const uint8_t wrongtype[] = {0x08, 0x07, 0x38, 0x05};
    CHECK_EQ_INT(load_bytes(wrongtype, sizeof wrongtype, NULL, NULL, &err), KD_EINPUT);
    /* a cycle: relu reads its own output's successor */
    mini_init(&s);
    s.gin[0] = "logits";
    refused(&s, "node 0 'gemm' (Gemm): reads 'logits'");
    /* a node reading an undefined value */
    mini_init(&s);
    s.rin[0] = "nowhere";
    refused(&s, "node 1 'relu' (Relu): reads 'nowhere'");
    /* an initializer whose values disagree with its shape */
    mini_init(&s);
    s.w.n_float_data = 11;
    refused(&s, "tensor 'W': 11 values stored, its shape needs 12");
    /* raw bytes that disagree */
    mini_init(&s);
    s.w.n_float_data = 0;
    s.w.has_raw_data = 1;
    s.w.raw_data.len = 47;
    s.w.raw_data.data = (uint8_t *)s.wdata;
    refused(&s, "tensor 'W': raw data holds 47 bytes, its shape needs 48");
    /* dims of 2^40 */
    mini_init(&s);
    s.wdims[0] = (int64_t)1 << 40;
    refused(&s, "tensor 'W': dimension 0 is 1099511627776");
    /* an unsupported operator */
    mini_init(&s);
    s.nodes[1].op_type = "Softplus";
    refused(&s, "node 1 'relu' (Softplus): operator Softplus is not supported; distill translates Conv");
    /* a missing output */
    mini_init(&s);
    s.out.name = "absent";
    refused(&s, "output 'absent' is not computed by any node");
    /* two inputs */
    mini_init(&s);
    s.g.n_input = 2;
    refused(&s, "two inputs, 'x' and 'y'");
    /* an opset below 11 */
    mini_init(&s);
    s.ops.version = 10;
    refused(&s, "opset 10");
    /* two producers of one value */
    mini_init(&s);
    s.rout[0] = "h";
    s.out.name = "h";
    refused(&s, "writes 'h', which is already defined");
}

/* External data only from inside the model's folder: a relative path leaving it and an
 * absolute one are refused; a file inside it loads. */
KD_TEST(onnx_external_data_confined) {
    mini s;
    size_t len;
    kd_err err;
    const char *dir = kd_test_tmpdir();
    char sub[512], path[600];
    snprintf(sub, sizeof sub, "%s/model", dir);
    snprintf(path, sizeof path, "mkdir -p '%s'", sub);
    CHECK_EQ_INT(kd_test_run(path, NULL, 0), 0);
    uint8_t raw[48];
    for (int k = 0; k < 12; k++) {  /* little-endian floats */
        uint32_t u;
        const float f = (float)(k % 5) * 0.25f - 0.5f;
        memcpy(&u, &f, 4);
        for (int b = 0; b < 4; b++) raw[4 * k + b] = (uint8_t)(u >> (8 * b));
    }
    snprintf(path, sizeof path, "%s/w.bin", sub);
    CHECK_EQ_INT(kd_test_write_file(path, raw, sizeof raw), 0);
    snprintf(path, sizeof path, "%s/outside.bin", dir);
    CHECK_EQ_INT(kd_test_write_file(path, raw, sizeof raw), 0);
    const char *locs[] = {"w.bin", "../outside.bin", path};
    const kd_status want[] = {KD_OK, KD_EINPUT, KD_EINPUT};
    const char *msgs[] = {NULL, "outside the model's folder", "is an absolute path"};
    for (int k = 0; k < 3; k++) {
        mini_init(&s);
        s.w.n_float_data = 0;
        s.w.has_data_location = 1;
        s.w.data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
        s.ext[0] = (Onnx__StringStringEntryProto)ONNX__STRING_STRING_ENTRY_PROTO__INIT;
        s.ext[0].key = "location";
        s.ext[0].value = (char *)locs[k];
        s.extv[0] = &s.ext[0];
        s.w.n_external_data = 1;
        s.w.external_data = s.extv;
        uint8_t *buf = mini_pack(&s, &len);
        kd_status st = load_bytes(buf, len, sub, NULL, &err);
        CHECK_EQ_INT(st, want[k]);
        if (st && msgs[k]) {
            CHECK_CONTAINS(err.msg, msgs[k]);
            CHECK_CONTAINS(err.msg, "tensor 'W'");
        }
        free(buf);
    }
}

/* Each cap at the mini model's own count passes and one below refuses: bytes, depth (Model >
 * Graph > ValueInfo > Type > Tensor > Shape > Dimension = 7), nodes (2), integers in repeated
 * fields (W's two dims), elements of one tensor (W's 12). */
KD_TEST(onnx_caps_at_limit) {
    mini s;
    size_t len;
    kd_err err;
    mini_init(&s);
    uint8_t *buf = mini_pack(&s, &len);
    kd_onnx_caps c = kd_onnx_default_caps;
    c.max_bytes = len;
    CHECK_EQ_INT(load_bytes(buf, len, NULL, &c, &err), KD_OK);
    c.max_bytes = len - 1;
    CHECK_EQ_INT(load_bytes(buf, len, NULL, &c, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "limit");
    c = kd_onnx_default_caps;
    c.max_depth = 7;
    CHECK_EQ_INT(load_bytes(buf, len, NULL, &c, &err), KD_OK);
    c.max_depth = 6;
    CHECK_EQ_INT(load_bytes(buf, len, NULL, &c, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "nested more than 6 deep");
    c = kd_onnx_default_caps;
    c.max_nodes = 2;
    CHECK_EQ_INT(load_bytes(buf, len, NULL, &c, &err), KD_OK);
    c.max_nodes = 1;
    CHECK_EQ_INT(load_bytes(buf, len, NULL, &c, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "more than 1 nodes");
    c = kd_onnx_default_caps;
    c.max_varints = 2;
    CHECK_EQ_INT(load_bytes(buf, len, NULL, &c, &err), KD_OK);
    c.max_varints = 1;
    CHECK_EQ_INT(load_bytes(buf, len, NULL, &c, &err), KD_EINPUT);
    c = kd_onnx_default_caps;
    c.max_tensor_elems = 12;
    CHECK_EQ_INT(load_bytes(buf, len, NULL, &c, &err), KD_OK);
    c.max_tensor_elems = 11;
    CHECK_EQ_INT(load_bytes(buf, len, NULL, &c, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "tensor 'W'");
    /* Messages: the count that passes, and one fewer refuses. */
    size_t lo = 1;
    c = kd_onnx_default_caps;
    for (c.max_messages = 1; c.max_messages < 100; c.max_messages++)
        if (kd_onnx_scan(buf, len, &c, &err) == KD_OK) break;
    lo = c.max_messages;
    CHECK(lo > 10 && lo < 100);
    c.max_messages = lo - 1;
    CHECK_EQ_INT(kd_onnx_scan(buf, len, &c, &err), KD_EINPUT);
    free(buf);
}

/* Graphs nested 10,000 deep inside attributes (If/Loop bodies): refused by the scan, before
 * protobuf-c's unbounded recursion would overflow the stack. */
KD_TEST(onnx_deep_nesting_refused) {
    const size_t depth = 10000;
    size_t cap = depth * 16 + 64, len = 0;
    uint8_t *a = malloc(cap), *b = malloc(cap);
    /* Inside out: graph { node { attribute { g: graph { ... } } } } */
    for (size_t k = 0; k < depth; k++) {
        const uint8_t fields[3] = {0x32 /* Attribute.g = 6 */, 0x2a /* Node.attribute = 5 */,
                                   0x0a /* Graph.node = 1 */};
        for (int f = 0; f < 3; f++) {
            size_t n = 0;
            b[n++] = fields[f];
            size_t v = len;
            do {
                b[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
                v >>= 7;
            } while (v);
            memcpy(b + n, a, len);
            len += n;
            uint8_t *t = a;
            a = b;
            b = t;
        }
    }
    /* Model.graph = 7 */
    memmove(a + 6, a, len);
    size_t v = len, n = 0;
    a[n++] = 0x3a;
    do {
        a[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    memmove(a + n, a + 6, len);
    len += n;
    kd_err err;
    CHECK_EQ_INT(load_bytes(a, len, NULL, NULL, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "nested more than 32 deep");
    free(a);
    free(b);
}

/* The affine layer (per-channel x * w + b): finite-difference gradients alone and in a stack,
 * on [C, H, W] and [D] samples. */
KD_TEST(onnx_affine_layer_gradcheck) {
    const kd_shape img = {3, {3, 2, 2}}, vec = {1, {5}};
    CHECK_EQ_INT(kd_gradcheck(&img, "[{\"type\":\"affine\"},{\"type\":\"flatten\"}]", 2, 51, 0, 1e-2), 0);
    CHECK_EQ_INT(kd_gradcheck(&vec, "[{\"type\":\"affine\"}]", 3, 52, 0, 1e-2), 0);
    CHECK_EQ_INT(kd_gradcheck(&img,
                              "[{\"type\":\"conv2d\",\"channels\":2,\"kernel\":1},{\"type\":\"affine\"},"
                              "{\"type\":\"relu\"},{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]",
                              2, 53, 0, 1e-2), 0);
}

/* A model distill exported (preprocessing inside, metadata naming distill) loads back as a
 * teacher fed the raw sample: given the data preprocessed as recorded, the loaded model's
 * logits equal the original's. Also with teacher.preprocess "raw" on a graph that expects raw
 * values, and a given preprocessing, each checked against the original model. */
KD_TEST(onnx_distill_export_loads_back) {
    const kd_shape in = {3, {1, 8, 8}};
    const char *layers =
        "[{\"type\":\"conv2d\",\"channels\":3,\"kernel\":3,\"padding\":1},{\"type\":\"batchnorm\"},"
        "{\"type\":\"relu\"},{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"flatten\"},"
        "{\"type\":\"dense\",\"units\":5}]";
    kd_model m, t;
    kd_err err;
    kd_rng rng;
    kd_onnx_info info;
    kd_preprocess pp;
    memset(&t, 0, sizeof t);
    kd_preprocess_defaults(&pp);
    pp.scale = 1.0f / 255.0f;
    pp.n_channels = 1;
    pp.mean[0] = 0.286f;
    pp.std[0] = 0.353f;
    if (kd_model_init(&m, &in, layers, 0, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    kd_rng_seed(&rng, 9);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    for (size_t k = 0; k < m.n_tensors; k++)  /* running statistics away from 0 and 1 */
        if (m.tensors[k].kind == KD_TENSOR_BUFFER)
            for (size_t j = 0; j < m.tensors[k].numel; j++)
                m.tensors[k].data[j] = 0.5f + 0.25f * (float)j;
    char path[600];
    snprintf(path, sizeof path, "%s/m.onnx", kd_test_tmpdir());
    const kd_export_info ei = {.pp = &pp};
    float x[4 * 64], raw[4 * 64];
    for (size_t i = 0; i < 4 * 64; i++) {
        raw[i] = (float)((i * 37) % 256);
        x[i] = (raw[i] * pp.scale - pp.mean[0]) / pp.std[0];
    }
    kd_ctx ctx = {0, NULL, NULL, 0, 0, 0};
    if (kd_export_onnx(path, &m, &ei, &err) || kd_model_reserve(&m, 4, &err) ||
        kd_teacher_load_onnx(path, NULL, KD_TEACHER_PP_DATA, NULL, &pp, &t, &info, &err) ||
        kd_model_reserve(&t, 4, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        goto cleanup;
    }
    CHECK(info.from_distill);
    CHECK(!strcmp(info.output, "logits"));
    /* The data-to-raw map and the file's own preprocessing fold into one affine layer. */
    CHECK(!strcmp(kd_model_layer_type(&t, 0), "affine") && strcmp(kd_model_layer_type(&t, 1), "affine"));
    const float *want = kd_model_forward(&m, x, 4, &ctx);
    float w[20];
    memcpy(w, want, sizeof w);
    CHECK_FLOATS(kd_model_forward(&t, x, 4, &ctx), w, 20, TOL, TOL);
    /* teacher.preprocess "raw" gives the same teacher here (the file wants raw values). */
    kd_model_free(&t);
    kd_onnx_info_free(&info);
    if (!kd_teacher_load_onnx(path, NULL, KD_TEACHER_PP_RAW, NULL, &pp, &t, &info, &err) &&
        !kd_model_reserve(&t, 4, &err))
        CHECK_FLOATS(kd_model_forward(&t, x, 4, &ctx), w, 20, TOL, TOL);
    else
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
    /* Given as its own preprocessing (scale 1, mean 0, std 1 = raw), from data scaled 1/255
     * only: the same logits from those inputs. */
    kd_model_free(&t);
    kd_onnx_info_free(&info);
    kd_preprocess given, data;
    kd_preprocess_defaults(&given);
    given.scale = 1.0f;
    kd_preprocess_defaults(&data);
    data.scale = 1.0f / 255.0f;
    float xs[4 * 64];
    for (size_t i = 0; i < 4 * 64; i++) xs[i] = raw[i] / 255.0f;
    if (!kd_teacher_load_onnx(path, NULL, KD_TEACHER_PP_GIVEN, &given, &data, &t, &info, &err) &&
        !kd_model_reserve(&t, 4, &err))
        CHECK_FLOATS(kd_model_forward(&t, xs, 4, &ctx), w, 20, TOL, TOL);
    else
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
cleanup:
    kd_onnx_info_free(&info);
    kd_model_free(&t);
    kd_model_free(&m);
}

/* ---- end to end on the real binary ---- */

#define TINY "configs/tiny.json"
#define E2E_OUT 65536
static char g_out[E2E_OUT];

/* `distill ARGS`; output in g_out; the exit status. */
#define run_distill(...) kd_test_distillf(g_out, sizeof g_out, "", __VA_ARGS__)

/* A teacher trained by distill, exported to ONNX: `info` describes the file, `eval` gives the
 * checkpoint's accuracy for it, and a student distilled from it (online) ends with the same
 * weights' accuracy as one distilled from the checkpoint; teacher.output on a checkpoint
 * teacher is a config error (2); a broken .onnx file exits 3 naming the tensor. */
KD_TEST(onnx_teacher_end_to_end) {
    if (kd_test_run("test -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", NULL, 0)) {
        kd_test_missing("Fashion-MNIST not installed (Debian package dataset-fashion-mnist)");
        return;
    }
    const char *d = kd_test_tmpdir();
    CHECK_EQ_INT(run_distill("train --config " TINY " --out %s/t --epochs 2 --quiet --set "
                             "'model.layers=[{\"type\":\"dense\",\"units\":64},{\"type\":\"relu\"},"
                             "{\"type\":\"dense\",\"units\":10}]'", d), 0);
    CHECK_EQ_INT(run_distill("export %s/t/best.safetensors %s/t.onnx --format onnx", d, d), 0);
    CHECK_EQ_INT(run_distill("info %s/t.onnx", d), 0);
    CHECK_CONTAINS(g_out, "written by distill export: fed the raw sample");
    CHECK_CONTAINS(g_out, "outputs: logits (used) probabilities");
    CHECK_CONTAINS(g_out, "  0.weight -> (constant) [64, 784]");
    CHECK_EQ_INT(run_distill("info --json %s/t.onnx", d), 0);
    CHECK_CONTAINS(g_out, "\"format\":\t\"onnx\"");
    /* eval: the same top-1 for both files, the second column agreeing 100% with the first. */
    CHECK_EQ_INT(run_distill("eval --config " TINY " --json %s/t/best.safetensors %s/t.onnx 2>/dev/null", d, d), 0);
    cJSON *root = cJSON_Parse(g_out), *models = cJSON_GetObjectItemCaseSensitive(root, "models");
    const cJSON *m0 = cJSON_GetArrayItem(models, 0), *m1 = cJSON_GetArrayItem(models, 1);
    CHECK(m0 && m1);
    if (m0 && m1) {
        CHECK_CLOSE(cJSON_GetObjectItemCaseSensitive(m1, "top1")->valuedouble,
                    cJSON_GetObjectItemCaseSensitive(m0, "top1")->valuedouble, 0, 0);
        CHECK_CLOSE(cJSON_GetObjectItemCaseSensitive(m1, "agreement")->valuedouble, 1.0, 0, 0);
    }
    cJSON_Delete(root);
    /* Distillation from each: the same student. */
    double acc[2];
    const char *teachers[2] = {"t/best.safetensors", "t.onnx"};
    for (int k = 0; k < 2; k++) {
        CHECK_EQ_INT(run_distill("train --config " TINY " --out %s/s%d --epochs 1 --set "
                                 "'teacher={\"checkpoint\":\"%s/%s\"}'", d, k, d, teachers[k]), 0);
        CHECK_CONTAINS(g_out, "teacher validation accuracy: ");
        acc[k] = kd_test_summary(g_out, "test_acc");
    }
    CHECK(acc[0] > 0.3);
    CHECK_CLOSE(acc[1], acc[0], 1e-9, 0);
    /* Through the cache: built from the ONNX teacher fed raw (the same as the default for a
     * distill export), the same student; a run feeding it otherwise is refused (exit 3). */
    CHECK_EQ_INT(run_distill("train --config " TINY " --out %s/c1 --epochs 1 --set 'teacher="
                             "{\"checkpoint\":\"%s/t.onnx\",\"preprocess\":\"raw\",\"cache\":"
                             "{\"path\":\"%s/c.kdc\"}}'", d, d, d), 0);
    CHECK_CLOSE(kd_test_summary(g_out, "test_acc"), acc[0], 1e-9, 0);
    CHECK_EQ_INT(run_distill("train --config " TINY " --out %s/c2 --epochs 1 --set 'teacher="
                             "{\"checkpoint\":\"%s/t.onnx\",\"cache\":{\"path\":\"%s/c.kdc\"}}'",
                             d, d, d), 3);
    CHECK_CONTAINS(g_out, "teacher[0].preprocess differs");
    CHECK_EQ_INT(run_distill("train --config " TINY " --out %s/s9 --epochs 1 --set "
                             "'teacher={\"checkpoint\":\"%s/t/best.safetensors\",\"output\":\"x\"}'",
                             d, d), 2);
    CHECK_CONTAINS(g_out, "teacher.output: only for an ONNX teacher");
    CHECK_EQ_INT(run_distill("train --config " TINY " --out %s/s9 --epochs 1 --set "
                             "'teacher={\"checkpoint\":\"%s/t.onnx\",\"output\":\"nope\"}'", d, d), 2);
    CHECK_CONTAINS(g_out, "teacher.output \"nope\" is not an output of the graph");
    /* A truncated file. */
    CHECK_EQ_INT(run_distill("info %s/t.onnx > /dev/null && head -c 1000 %s/t.onnx > %s/cut.onnx"
                             " && %s info %s/cut.onnx", d, d, d, kd_test_distill(), d), 3);
    CHECK_CONTAINS(g_out, "cut.onnx: not a valid ONNX file");
}
