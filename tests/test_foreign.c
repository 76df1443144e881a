/* test_foreign.c - files that are not safetensors named as what they are (ONNX, a PyTorch zip,
 * a pickle, CSV) by the checkpoint reader and by `distill info`, a PyTorch state_dict whose
 * names share one prefix ("module.") loaded with the prefix named, and a missing tensor's
 * message listing the names the file has. */
#include <stdlib.h>
#include <string.h>

#include "kd_checkpoint.h"
#include "kd_filekind.h"
#include "kd_safetensors.h"
#include "kd_test.h"

/* First bytes as each producer writes them: onnx.save (ir_version 8, producer "pytorch"),
 * torch.save since 1.6 (a zip whose first entry is archive/data.pkl), torch.save with
 * _use_new_zipfile_serialization=False (pickle protocol 2), and a CSV. */
static const uint8_t onnx_head[] = {0x08, 0x08, 0x12, 0x07, 'p', 'y', 't', 'o', 'r', 'c', 'h',
                                    0x1a, 0x05, '2', '.', '1', '.', '0', 0x3a, 0x10};
static const uint8_t zip_head[] = {'P', 'K', 3, 4, 0, 0, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                   0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 'a', 'r', 'c', 'h',
                                   'i', 'v', 'e', '/', 'd', 'a', 't', 'a', '.', 'p', 'k', 'l'};
static const uint8_t pickle_head[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20,
                                      0x6a, 0xa8, 0x50, 0x19, 0x2e};
static const char csv_text[] = "f1,f2,f3,label\n0.5,1.25,3,0\n1.5,0.25,2,1\n";

typedef struct {
    const char *file;
    const void *bytes;
    size_t n;
    const char *what;   /* the kind named */
    const char *hint;   /* a word of the advice */
} foreign_case;

static const foreign_case cases[] = {
    /* named .bin: a .onnx name is read as an ONNX model (src/onnx) */
    {"model.bin", onnx_head, sizeof onnx_head, "an ONNX model", "named *.onnx"},
    {"model.pt", zip_head, sizeof zip_head, "a PyTorch zip archive", "safetensors.torch.save_file"},
    {"old.pt", pickle_head, sizeof pickle_head, "a Python pickle", "model.state_dict()"},
    {"data.csv", csv_text, sizeof csv_text - 1, "a CSV text file", "format \"csv\""},
};

KD_TEST(foreign_files_are_named_by_reader_and_info) {
    const char *dir = kd_test_tmpdir();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const foreign_case *c = &cases[i];
        char path[700], cmd[1500], out[4096];
        snprintf(path, sizeof path, "%s/%s", dir, c->file);
        CHECK_EQ_INT(kd_test_write_file(path, c->bytes, c->n), 0);
        kd_file_kind k = kd_file_sniff(c->bytes, c->n);
        CHECK(k.what && strstr(k.what, c->what));
        kd_st_file f;
        kd_err err;
        CHECK_EQ_INT(kd_st_read(&f, path, &err), KD_EINPUT);
        CHECK_CONTAINS(err.msg, "not a safetensors file: this is ");
        CHECK_CONTAINS(err.msg, c->what);
        CHECK_CONTAINS(err.msg, c->hint);
        CHECK(strstr(err.msg, "header length") == NULL);
        snprintf(cmd, sizeof cmd, "'%s' info '%s'", kd_test_distill(), path);
        CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
        CHECK_CONTAINS(out, c->what);
        CHECK_CONTAINS(out, c->hint);
    }
    /* Unrecognised bytes keep the reader's own message. */
    const uint8_t junk[16] = {0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8, 1, 2, 3};
    kd_file_kind k = kd_file_sniff(junk, sizeof junk);
    CHECK(k.what == NULL);
}

/* A state_dict of a 4-3-2 MLP as torch writes it from a wrapper (names "<prefix>0.weight"). */
static void write_state_dict(const char *path, const char *prefix, int with_last) {
    static float w0[12], b0[3], w2[6], b2[2];
    for (int i = 0; i < 12; i++) w0[i] = 0.1f * (float)i;
    for (int i = 0; i < 6; i++) w2[i] = -0.2f * (float)i;
    char names[4][64];
    const char *own[4] = {"0.weight", "0.bias", "2.weight", "2.bias"};
    for (int i = 0; i < 4; i++) snprintf(names[i], sizeof names[i], "%s%s", prefix, own[i]);
    kd_st_out t[4] = {
        {names[0], KD_DT_F32, 2, {3, 4}, w0}, {names[1], KD_DT_F32, 1, {3}, b0},
        {names[2], KD_DT_F32, 2, {2, 3}, w2}, {names[3], KD_DT_F32, 1, {2}, b2},
    };
    kd_err err;
    if (kd_st_write(path, t, with_last ? 4 : 3, NULL, NULL, 0, &err) != KD_OK)
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
}

static const char *MLP = "{\"input\":[4],\"layers\":[{\"type\":\"dense\",\"units\":3},"
                         "{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":2}]}";

KD_TEST(foreign_state_dict_prefix_is_stripped_and_named) {
    const char *dir = kd_test_tmpdir();
    char path[700];
    kd_model m;
    kd_err err;
    kd_err_clear(&err);
    snprintf(path, sizeof path, "%s/dp.safetensors", dir);
    write_state_dict(path, "module.net.", 1);
    CHECK_EQ_INT(kd_ckpt_load(path, MLP, 0, 0, &m, NULL, NULL, NULL, NULL, &err), KD_OK);
    CHECK_EQ_INT(err.code, KD_OK);
    CHECK_CONTAINS(err.msg, "starts with \"module.net.\"");
    kd_tensor *w = kd_model_tensor(&m, "2.weight");
    CHECK(w && w->data[5] == -0.2f * 5.0f);
    kd_model_free(&m);
    /* A prefix that not every tensor carries is no prefix: the missing tensor is reported,
     * with the names the file has. */
    kd_st_out t[2] = {{"module.0.weight", KD_DT_F32, 2, {3, 4}, NULL},
                      {"0.bias", KD_DT_F32, 1, {3}, NULL}};
    static float zeros[12];
    t[0].data = t[1].data = zeros;
    snprintf(path, sizeof path, "%s/mixed.safetensors", dir);
    CHECK_EQ_INT(kd_st_write(path, t, 2, NULL, NULL, 0, &err), KD_OK);
    CHECK_EQ_INT(kd_ckpt_load(path, MLP, 0, 0, &m, NULL, NULL, NULL, NULL, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "tensor 0.weight: missing");
    CHECK_CONTAINS(err.msg, "the file has: module.0.weight, 0.bias");
    /* With the prefix but a tensor short: the message names the prefixed tensor. */
    snprintf(path, sizeof path, "%s/short.safetensors", dir);
    write_state_dict(path, "net.", 0);
    CHECK_EQ_INT(kd_ckpt_load(path, MLP, 0, 0, &m, NULL, NULL, NULL, NULL, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "tensor net.2.bias: missing");
    CHECK_CONTAINS(err.msg, "net.0.weight, net.0.bias, net.2.weight");
}
