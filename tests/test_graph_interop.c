/* test_graph_interop.c - graph models against the real torchvision code, without torch: the
 * fixtures tests/graph_interop.py wrote (torchvision's ResNet-18 and MobileNetV2 adapted to
 * 28x28 grey images, at reduced widths, and a small ResNet student trained by distill and loaded
 * into a torch module with strict=True) load with the layer lists of configs/
 * make_graph_configs.py and give torch's logits on the first 64 Fashion-MNIST test images.
 * KD_GRAPH_FIXTURES names another folder of the same files (the script's full-size check). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "kd_checkpoint.h"
#include "kd_nn.h"
#include "kd_test.h"

#define TEST_IMAGES "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
enum { N = 64, D = 784, C = 10 };

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s) s[n] = '\0';
    fclose(f);
    return s;
}

/* The first N test images as the script preprocesses them: (u8 / 255 - 0.286) / 0.353. */
static int load_images(float *x) {
    unsigned char head[16], px[N * D];
    gzFile g = gzopen(TEST_IMAGES, "rb");
    if (!g) return -1;
    int ok = gzread(g, head, 16) == 16 && gzread(g, px, N * D) == N * D;
    gzclose(g);
    for (size_t i = 0; ok && i < N * D; i++)
        x[i] = ((float)px[i] / 255.0f - 0.286f) / 0.353f;
    return ok ? 0 : -1;
}

/* name.logits: N lines of C numbers. */
static int load_logits(const char *path, float *z) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = 0;
    while (n < N * C && fscanf(f, "%f", &z[n]) == 1) n++;
    fclose(f);
    return n == N * C ? 0 : -1;
}

static void check_fixture(const char *dir, const char *name, const float *x) {
    char path[512], arch_path[512], logits_path[512];
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    snprintf(arch_path, sizeof arch_path, "%s/%s.json", dir, name);
    snprintf(logits_path, sizeof logits_path, "%s/%s.logits", dir, name);
    char *arch = read_text(arch_path);
    float *want = malloc(N * C * sizeof *want);
    kd_model m;
    kd_err err;
    memset(&m, 0, sizeof m);
    if (!arch || !want || load_logits(logits_path, want)) {
        kd_test_fail(__FILE__, __LINE__, "%s: fixture files missing or unreadable", name);
        goto cleanup;
    }
    if (kd_ckpt_load(path, arch, 0, 0, &m, NULL, NULL, NULL, NULL, &err) ||
        kd_model_reserve(&m, N, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s: %s", name, err.msg);
        goto cleanup;
    }
    const float *z = kd_model_forward(&m, x, N, NULL);
    if (!CHECK_FLOATS(z, want, N * C, 1e-4, 1e-4)) printf("    (%s)\n", name);
cleanup:
    kd_model_free(&m);
    free(want);
    free(arch);
}

KD_TEST(graph_interop_torchvision) {
    if (access(TEST_IMAGES, R_OK) != 0) {
        kd_test_skip("%s is absent (dataset-fashion-mnist)", TEST_IMAGES);
        return;
    }
    const char *dir = getenv("KD_GRAPH_FIXTURES");
    float *x = malloc(N * D * sizeof *x);
    if (!x || load_images(x)) {
        kd_test_fail(__FILE__, __LINE__, "cannot read %s", TEST_IMAGES);
        free(x);
        return;
    }
    static const char *const names[] = {"resnet18", "mobilenetv2", "student"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        char probe[512];
        snprintf(probe, sizeof probe, "%s/%s.json", dir ? dir : "tests/fixtures/graph", names[k]);
        if (dir && access(probe, R_OK) != 0) continue;  /* the full-size check has no student */
        check_fixture(dir ? dir : "tests/fixtures/graph", names[k], x);
    }
    free(x);
}
