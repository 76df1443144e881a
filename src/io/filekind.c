/* filekind.c - recognises the files people give where a safetensors checkpoint belongs, by
 * their first bytes, so the message names the file's kind and the way to a checkpoint instead
 * of reporting a safetensors header length made of someone else's magic number. */
#include <stdio.h>
#include <string.h>

#include "kd_filekind.h"

static const char st_hint[] =
    "save the weights with safetensors instead (PyTorch: safetensors.torch.save_file("
    "model.state_dict(), \"model.safetensors\"))";

static int starts(const uint8_t *b, size_t n, const char *magic, size_t len) {
    return n >= len && memcmp(b, magic, len) == 0;
}

static int contains(const uint8_t *b, size_t n, const char *s) {
    size_t len = strlen(s);
    for (size_t i = 0; i + len <= n; i++)
        if (memcmp(b + i, s, len) == 0) return 1;
    return 0;
}

/* An ONNX ModelProto: field 1 (ir_version, a small varint) first, then a string or message
 * field: producer_name (2), producer_version (3), domain (4), doc_string (6), graph (7),
 * opset_import (8). */
static int is_onnx(const uint8_t *b, size_t n) {
    if (n < 4 || b[0] != 0x08 || b[1] < 1 || b[1] > 15) return 0;
    return b[2] == 0x12 || b[2] == 0x1a || b[2] == 0x22 || b[2] == 0x32 || b[2] == 0x3a ||
           b[2] == 0x42;
}

/* Printable text (UTF-8 bytes >= 0x80 allowed) over the bytes seen. */
static int is_text(const uint8_t *b, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (b[i] < 0x20 && b[i] != '\n' && b[i] != '\r' && b[i] != '\t') return 0;
    return 1;
}

static kd_file_kind text_kind(const uint8_t *b, size_t n) {
    size_t line = 0;
    while (line < n && b[line] != '\n') line++;
    if (b[0] == '{' || b[0] == '[')
        return (kd_file_kind){"a JSON text file", "a config goes to --config; a checkpoint is a "
                              ".safetensors file written by distill train or by safetensors"};
    if (memchr(b, ',', line))
        return (kd_file_kind){"a CSV text file (a dataset?)",
                              "give a dataset in the config's data section (format \"csv\"); "
                              "a model is a .safetensors checkpoint"};
    return (kd_file_kind){"a text file", "a model is a .safetensors checkpoint"};
}

kd_file_kind kd_file_sniff(const uint8_t *b, size_t n) {
    if (n > KD_SNIFF_BYTES) n = KD_SNIFF_BYTES;
    if (starts(b, n, "PK\x03\x04", 4))
        return contains(b, n, "data.pkl") || contains(b, n, "/version")
                   ? (kd_file_kind){"a PyTorch zip archive (torch.save)", st_hint}
                   : (kd_file_kind){"a ZIP archive (a PyTorch .pt/.pth file?)", st_hint};
    if (n >= 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5)
        return (kd_file_kind){"a Python pickle (a PyTorch .pt/.pth file from torch.save?)",
                              st_hint};
    if (is_onnx(b, n))
        return (kd_file_kind){"an ONNX model", "distill reads ONNX models from files named "
                              "*.onnx (teacher.checkpoint, eval, predict, info): rename it"};
    if (starts(b, n, "\x89HDF\r\n\x1a\n", 8))
        return (kd_file_kind){"an HDF5 file (a Keras .h5 model?)", "save the weights as "
                              "safetensors with torch.nn.Sequential names"};
    if (starts(b, n, "\x93NUMPY", 6))
        return (kd_file_kind){"a NumPy .npy array", "save the weights as safetensors "
                              "(safetensors.numpy.save_file)"};
    if (n >= 8 && memcmp(b + 4, "TFL3", 4) == 0)
        return (kd_file_kind){"a TensorFlow Lite model", "export the weights as safetensors"};
    if (starts(b, n, "GGUF", 4))
        return (kd_file_kind){"a GGUF model file", "export the weights as safetensors"};
    if (starts(b, n, "\x1f\x8b", 2))
        return (kd_file_kind){"a gzip-compressed file (an IDX dataset .gz?)",
                              "a dataset goes in the config's data section"};
    if (starts(b, n, "\x89PNG", 4) || starts(b, n, "\xff\xd8\xff", 3))
        return (kd_file_kind){"an image", "to classify an image, give it to distill predict "
                              "--model CHECKPOINT IMAGE"};
    if (n >= 4 && b[0] == 0 && b[1] == 0 && b[2] >= 0x08 && b[2] <= 0x0e && b[3] >= 1 &&
        b[3] <= 4)
        return (kd_file_kind){"an IDX dataset file", "a dataset goes in the config's data "
                              "section (format \"idx\")"};
    if (is_text(b, n)) return text_kind(b, n);
    return (kd_file_kind){NULL, NULL};
}

kd_file_kind kd_file_sniff_path(const char *path) {
    uint8_t head[KD_SNIFF_BYTES];
    FILE *f = fopen(path, "rb");
    if (!f) return (kd_file_kind){NULL, NULL};
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    return kd_file_sniff(head, n);
}
