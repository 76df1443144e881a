/* test_mcu.c - the C headers on a microcontroller: the qint8 header of a briefly trained compact
 * student (784-128-10) and of a small CNN student (fmnist-cnn-small's layers) is built for a
 * Cortex-M4 with arm-none-eabi-gcc -std=c99 -mcpu=cortex-m4 -mthumb -O2 and newlib's
 * semihosting (tests/mcu/), run under QEMU's mps2-an386, and every int8 logit is compared with
 * the host build of the same header, which is itself compared with distill's integer reference
 * (the qint8 safetensors file of the same calibration). The f32 header runs on the M4 too, on
 * the first images (soft float is slow under emulation). Sizes: arm-none-eabi-size of each
 * header's object (code apart from the constants), the arena, and the stack the model's
 * functions reach (painted). A developer machine without the Arm toolchain or QEMU skips with
 * the reason; CI (CI=true) fails. Never under ASan: the M4 code runs in an emulator, which no
 * host sanitizer sees, and the test binary's own part is the same as in the plain suite. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_data.h"
#include "kd_eval.h"
#include "kd_quant.h"
#include "kd_test.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"
#define TEST_IMAGES FMNIST "/t10k-images-idx3-ubyte.gz"
#define ARM_CC "arm-none-eabi-gcc -std=c99 -mcpu=cortex-m4 -mthumb -O2 -Wall -Wextra -Werror"

typedef struct {
    const char *name;   /* the header's C prefix */
    const char *layers; /* model.layers of the config */
    int flatten;
    size_t n_int;       /* test images through _forward_q on the M4 (plus the ramp image) */
    int n_float;        /* the first images through _forward, qint8 and f32 (plus the ramp) */
} student;

/* The first image of every input file: the bytes 0..255 over and over, so the M4's float
 * quantization of the raw input meets every pixel value, whichever images follow. */
#define RAMP 1

static int have_tools(void) {
#if defined(__SANITIZE_ADDRESS__)
    kd_test_skip("not under ASan: the Cortex-M4 code runs in QEMU, out of the sanitizer's sight");
    return 0;
#endif
    if (access(TEST_IMAGES, R_OK))
        return kd_test_missing(FMNIST " not installed (Debian package dataset-fashion-mnist)");
    if (kd_test_run("command -v arm-none-eabi-gcc && command -v arm-none-eabi-size && "
                    "test -f \"$(arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb "
                    "-print-file-name=librdimon.a)\"", NULL, 0))
        return kd_test_missing("arm-none-eabi-gcc or newlib's librdimon.a is missing (Debian "
                               "packages gcc-arm-none-eabi, libnewlib-arm-none-eabi; bash "
                               ".ci/setup.sh)");
    if (kd_test_run("command -v qemu-system-arm", NULL, 0))
        return kd_test_missing("qemu-system-arm is missing (Debian package qemu-system-arm; "
                               "bash .ci/setup.sh)");
    return 1;
}

/* Runs cmd in the case's folder; a failure reports its output. out may be NULL. */
static int run_in(const char *dir, const char *cmd, char *out, size_t cap) {
    char full[8192], buf[8192];
    snprintf(full, sizeof full, "cd '%s' && %s", dir, cmd);
    int rc = kd_test_run(full, out ? out : buf, out ? cap : sizeof buf);
    if (rc) kd_test_fail(__FILE__, __LINE__, "exit %d: %s\n%s", rc, cmd, out ? out : buf);
    return rc == 0;
}

/* The student trained for one epoch on 1,500 images (a few seconds): trained weights spread
 * the activations over their grids as a shipped model does, which random ones do not; the
 * config also serves the export's calibration (500 images after the hold-out). */
static int train_student(const char *dir, const student *s) {
    char config[4096], path[1100], cmd[2048];
    snprintf(config, sizeof config, "{\"data\": {\"train\": {\"format\": \"idx\", \"path\": \""
             FMNIST "/train-images-idx3-ubyte.gz\", \"labels\": \"" FMNIST
             "/train-labels-idx1-ubyte.gz\", \"subset\": 2000}, \"test\": {\"format\": \"idx\", "
             "\"path\": \"" TEST_IMAGES "\", \"labels\": \"" FMNIST "/t10k-labels-idx1-ubyte.gz"
             "\", \"subset\": 200}, \"validation_split\": 500, \"preprocess\": {\"mean\": "
             "[0.286], \"std\": [0.353], \"flatten\": %s}}, \"model\": {\"layers\": %s}, "
             "\"optimizer\": {\"name\": \"adam\", \"lr\": 0.003}, \"train\": {\"epochs\": 1, "
             "\"batch_size\": 128, \"seed\": 1}}", s->flatten ? "true" : "false", s->layers);
    snprintf(path, sizeof path, "%s/c.json", dir);
    if (kd_test_write_file(path, config, strlen(config))) return 0;
    snprintf(cmd, sizeof cmd, "%s train --config c.json --out run --quiet", kd_test_distill());
    return run_in(dir, cmd, NULL, 0);
}

/* The qint8 file and header (same calibration), and the f32 header; the arena export prints. */
static int export_student(const char *dir, const student *s, size_t *arena) {
    char cmd[2048], out[8192];
    snprintf(cmd, sizeof cmd, "%s export run/best.safetensors q.safetensors --dtype qint8 "
             "--calibrate 500 --config c.json", kd_test_distill());
    if (!run_in(dir, cmd, NULL, 0)) return 0;
    snprintf(cmd, sizeof cmd, "%s export run/best.safetensors %s_q.h --format c --dtype qint8 "
             "--calibrate 500 --config c.json --name %s_q", kd_test_distill(), s->name, s->name);
    if (!run_in(dir, cmd, out, sizeof out)) return 0;
    CHECK_CONTAINS(out, "int8 weight bytes");
    const char *a = strstr(out, "C header, ");
    *arena = a ? strtoul(a + 10, NULL, 10) : 0;
    CHECK(*arena > 0);
    snprintf(cmd, sizeof cmd, "%s export run/best.safetensors %s_f.h --format c --name %s_f",
             kd_test_distill(), s->name, s->name);
    return run_in(dir, cmd, NULL, 0) && *arena > 0;
}

/* images.idx: the ramp image, then the first n test images (an uncompressed u8 IDX file);
 * labels.idx: zeros, for the dataset reader. */
static int write_images(const char *dir, size_t n) {
    char cmd[2048], path[1100];
    snprintf(cmd, sizeof cmd, "zcat " TEST_IMAGES " | head -c %zu | tail -c %zu > t10k.u8",
             16 + n * 784, n * 784);
    if (!run_in(dir, cmd, NULL, 0)) return 0;
    unsigned char *b = malloc(16 + (n + RAMP) * 784), *lab = calloc(8 + n + RAMP, 1);
    size_t total = n + RAMP;
    unsigned char head[16] = {0, 0, 8, 3, (unsigned char)(total >> 24), (unsigned char)(total >> 16),
                              (unsigned char)(total >> 8), (unsigned char)total, 0, 0, 0, 28,
                              0, 0, 0, 28};
    snprintf(path, sizeof path, "%s/t10k.u8", dir);
    FILE *f = fopen(path, "rb");
    int ok = b && lab && f && fread(b + 16 + RAMP * 784, 784, n, f) == n;
    if (f) fclose(f);
    if (ok) {
        memcpy(b, head, 16), memcpy(lab, head, 8);
        lab[3] = 1;
        for (size_t i = 0; i < RAMP * 784; i++) b[16 + i] = (unsigned char)i;
        snprintf(path, sizeof path, "%s/images.idx", dir);
        ok = !kd_test_write_file(path, b, 16 + total * 784);
        snprintf(path, sizeof path, "%s/labels.idx", dir);
        ok = ok && !kd_test_write_file(path, lab, 8 + total);
    }
    if (!ok) kd_test_fail(__FILE__, __LINE__, "cannot write the images of %s", dir);
    free(b), free(lab);
    return ok;
}

/* distill's integer reference on images.idx (preprocessed by the dataset reader as the
 * checkpoint records): the int8 inputs into xq.i8, the raw pixels as floats into raw.f32, the
 * int8 and dequantized logits into *lq and *l (malloc'd). */
static int reference(const char *dir, size_t n, int8_t **lq, float **l) {
    char path[1100];
    kd_model m = {0};
    kd_preprocess pp;
    kd_data_source src;
    kd_dataset *ds = NULL;
    kd_st_file f = {0};
    kd_qmodel q = {0};
    kd_err err = {0};
    int has_pp = 0, ok = 0;
    size_t d = 784, *idx = malloc(n * sizeof *idx);
    float *x = malloc(n * d * sizeof *x), *raw = malloc(n * d * sizeof *raw);
    int8_t *xq = malloc(n * d);
    *lq = malloc(n * 10), *l = malloc(n * 10 * sizeof **l);
    snprintf(path, sizeof path, "%s/run/best.safetensors", dir);
    kd_status st = kd_eval_load_model(path, NULL, NULL, &m, &pp, &has_pp, NULL, NULL, &err);
    kd_data_source_defaults(&src);
    src.format = KD_FMT_IDX;
    snprintf(src.path, sizeof src.path, "%s/images.idx", dir);
    snprintf(src.labels_path, sizeof src.labels_path, "%s/labels.idx", dir);
    if (!st) st = kd_dataset_open(&ds, &src, &pp, &err);
    for (size_t i = 0; i < n; i++) idx[i] = i;
    if (!st) st = kd_dataset_get(ds, idx, n, x, NULL, NULL, &err);
    snprintf(path, sizeof path, "%s/q.safetensors", dir);
    if (!st) st = kd_st_read(&f, path, &err);
    if (!st) st = kd_qmodel_read(&f, &q, &err);
    if (!st) st = kd_qmodel_forward(&q, x, n, *lq, *l, &err);
    if (!st) {
        kd_preprocess none = {.scale = 1};
        kd_dataset_close(ds), ds = NULL;
        for (size_t i = 0; i < n * d; i++) xq[i] = kd_quant_value(x[i], &q.values[0]);
        st = kd_dataset_open(&ds, &src, &none, &err);
        if (!st) st = kd_dataset_get(ds, idx, n, raw, NULL, NULL, &err);
        snprintf(path, sizeof path, "%s/xq.i8", dir);
        ok = !st && !kd_test_write_file(path, xq, n * d);
        snprintf(path, sizeof path, "%s/raw.f32", dir);
        ok = ok && !kd_test_write_file(path, raw, n * d * sizeof *raw);
    }
    if (st || !ok) kd_test_fail(__FILE__, __LINE__, "reference of %s: %s", dir, err.msg);
    if (ds) kd_dataset_close(ds);
    if (has_pp) kd_preprocess_free(&pp);
    kd_st_free(&f), kd_qmodel_free(&q), kd_model_free(&m);
    free(idx), free(x), free(raw), free(xq);
    return ok;
}

/* n_bytes of the file dir/name, malloc'd; NULL (after a failure) when its size differs. */
static void *slurp(const char *dir, const char *name, size_t n_bytes) {
    char path[1100], *text = NULL;
    size_t got = 0;
    kd_err err = {0};
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (kd_read_file(path, 1 << 28, &text, &got, &err) || got != n_bytes) {
        kd_test_fail(__FILE__, __LINE__, "%s: %zu bytes, expected %zu %s", path, got, n_bytes,
                     err.msg);
        free(text);
        return NULL;
    }
    return text;
}

/* Compares n bytes; reports the first differing sample (of `per` bytes). */
static int same_bytes(const char *what, const void *a, const void *b, size_t n, size_t per) {
    if (!a || !b) return 0;
    for (size_t i = 0; i < n; i++)
        if (((const unsigned char *)a)[i] != ((const unsigned char *)b)[i]) {
            kd_test_fail(__FILE__, __LINE__, "%s: sample %zu differs (byte %zu)", what, i / per,
                         i % per);
            return 0;
        }
    return 1;
}

/* The host builds of both headers: the qint8 one through tests/export/qint8_harness.c on every
 * image (h_lq.i8, h_l.f32), the f32 one through tests/export/c_harness.c on the first
 * n_float + RAMP (h_f.f32). Plain -O2, as an application would build them. */
static int host_run(const char *dir, const char *repo, const student *s, size_t n) {
    char cmd[4096];
    const char *N = s->name;
    snprintf(cmd, sizeof cmd, "cc -std=c99 -pedantic -Wall -Wextra -Werror -O2 -I. -DMODEL=%s_q "
             "-DMODEL_UPPER=$(echo %s_Q | tr a-z A-Z) '-DMODEL_HEADER=\"%s_q.h\"' "
             "-D$(echo %s_Q | tr a-z A-Z)_IMPLEMENTATION '%s/tests/export/qint8_harness.c' -lm "
             "-o hq && ./hq %zu xq.i8 h_lq.i8 raw.f32 h_l.f32", N, N, N, N, repo, n);
    if (!run_in(dir, cmd, NULL, 0)) return 0;
    snprintf(cmd, sizeof cmd, "printf '#define %%s_IMPLEMENTATION\\n#include \"%s_f.h\"\\n' "
             "$(echo %s_F | tr a-z A-Z) > impl_f.c && cc -std=c99 -O2 -c impl_f.c -o impl_f.o && "
             "cc -std=c99 -O2 -I. -DMODEL=%s_f -DMODEL_UPPER=$(echo %s_F | tr a-z A-Z) "
             "'-DMODEL_HEADER=\"%s_f.h\"' '%s/tests/export/c_harness.c' impl_f.o -lm -o hf && "
             "./hf images.idx %d h_f.f32", N, N, N, N, N, repo, s->n_float + RAMP);
    return run_in(dir, cmd, NULL, 0);
}

/* Builds tests/mcu/harness.c with the header `kind` ("q" or "f") for the Cortex-M4, runs it
 * under QEMU (m4_lq.i8, m4_l.f32) and returns the stack depth it printed (0 on failure). */
static unsigned long m4_run(const char *dir, const char *repo, const student *s, const char *kind) {
    char cmd[4096], out[8192], upper[80];
    snprintf(upper, sizeof upper, "%s_%s", s->name, kind);
    for (char *c = upper; *c; c++) *c = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
    snprintf(cmd, sizeof cmd, ARM_CC " -I. -DQINT8=%d -DFLOAT_N=%d -DMODEL=%s_%s "
             "-DMODEL_UPPER=%s '-DMODEL_HEADER=\"%s_%s.h\"' -D%s_IMPLEMENTATION --specs=rdimon.specs "
             "-nostartfiles -T '%s/tests/mcu/mps2_an386.ld' '%s/tests/mcu/harness.c' "
             "'%s/tests/mcu/startup.c' -lm -o m4_%s.elf && timeout 300 qemu-system-arm -M "
             "mps2-an386 -nographic -semihosting -kernel m4_%s.elf < /dev/null",
             *kind == 'q', s->n_float + RAMP, s->name, kind, upper, s->name, kind, upper, repo, repo, repo,
             kind, kind);
    if (!run_in(dir, cmd, out, sizeof out)) return 0;
    const char *at = strstr(out, "stack ");
    if (!at) kd_test_fail(__FILE__, __LINE__, "no stack depth in: %s", out);
    return at ? strtoul(at + 6, NULL, 10) : 0;
}

/* arm-none-eabi-size of the header's object alone (impl_<kind>.c, the same flags): the
 * Berkeley text/data/bss, and .text (code) and .rodata (weights, tables) apart. */
static int m4_size(const char *dir, const student *s, const char *kind, unsigned long v[5]) {
    char cmd[4096], out[8192];
    snprintf(cmd, sizeof cmd, "printf '#define %%s_IMPLEMENTATION\\n#include \"%s_%s.h\"\\n' "
             "$(echo %s_%s | tr a-z A-Z) > m4_impl_%s.c && " ARM_CC " -c m4_impl_%s.c -o "
             "m4_impl_%s.o && arm-none-eabi-size m4_impl_%s.o | tail -1 && arm-none-eabi-size -A "
             "m4_impl_%s.o | grep -E '^\\.(text|rodata) ' | tr -s ' ' | cut -d' ' -f2 | tr '\\n' ' '",
             s->name, kind, s->name, kind, kind, kind, kind, kind, kind);
    if (!run_in(dir, cmd, out, sizeof out)) return 0;
    int got = sscanf(out, "%lu %lu %lu %*u %*x %*s %lu %lu", &v[0], &v[1], &v[2], &v[3], &v[4]);
    if (got != 5) kd_test_fail(__FILE__, __LINE__, "arm-none-eabi-size said: %s", out);
    return got == 5;
}

/* The SCRATCH_FLOATS of the f32 header. */
static unsigned long scratch_floats(const char *dir, const student *s) {
    char name[1100], *text = NULL, *at;
    size_t n = 0;
    kd_err err = {0};
    snprintf(name, sizeof name, "%s/%s_f.h", dir, s->name);
    unsigned long v = 0;
    if (!kd_read_file(name, 1 << 28, &text, &n, &err) && (at = strstr(text, "_SCRATCH_FLOATS ")))
        v = strtoul(at + 16, NULL, 10);
    free(text);
    CHECK(v > 0);
    return v;
}

/* The whole check for one student on n test images (plus the ramp). */
static void mcu_check(const student *s, size_t n) {
    char dir[1024], repo[1024];
    size_t arena = 0, N = n + RAMP, C = 10, F = (size_t)s->n_float + RAMP;
    snprintf(dir, sizeof dir, "%s", kd_test_tmpdir());
    if (!getcwd(repo, sizeof repo) || !train_student(dir, s) || !export_student(dir, s, &arena) ||
        !write_images(dir, n))
        return;
    int8_t *ref_q = NULL;
    float *ref = NULL;
    if (!reference(dir, N, &ref_q, &ref) || !host_run(dir, repo, s, N)) {
        free(ref_q), free(ref);
        return;
    }
    /* x86: the host build of the header against distill's integer reference, every image. */
    void *h_lq = slurp(dir, "h_lq.i8", N * C), *h_l = slurp(dir, "h_l.f32", N * C * 4);
    CHECK(same_bytes("x86 header vs reference, int8 logits", h_lq, ref_q, N * C, C));
    CHECK(same_bytes("x86 header vs reference, float logits", h_l, ref, N * C * 4, C * 4));
    /* The Cortex-M4 against the host: int8 logits of every image, float of the first. */
    unsigned long stack_q = m4_run(dir, repo, s, "q");
    void *m_lq = slurp(dir, "m4_lq.i8", N * C), *m_l = slurp(dir, "m4_l.f32", F * C * 4);
    CHECK(same_bytes("M4 vs x86, qint8 _forward_q", m_lq, h_lq, N * C, C));
    CHECK(same_bytes("M4 vs x86, qint8 _forward", m_l, h_l, F * C * 4, C * 4));
    free(m_l);
    unsigned long stack_f = m4_run(dir, repo, s, "f");
    /* The f32 header: plain loops of float products and sums in the same order, no library
     * function on this path (ReLU only), IEEE single on both: the same bits. */
    void *h_f = slurp(dir, "h_f.f32", F * C * 4);
    m_l = slurp(dir, "m4_l.f32", F * C * 4);
    CHECK(same_bytes("M4 vs x86, f32 _forward", m_l, h_f, F * C * 4, C * 4));
    unsigned long sq[5] = {0}, sf[5] = {0}, scratch = scratch_floats(dir, s) * 4;
    if (m4_size(dir, s, "q", sq) && m4_size(dir, s, "f", sf))
        printf("    %s on the M4: %zu images bit-exact (int8), %zu (float)\n"
               "      qint8: text %lu data %lu bss %lu (code %lu, constants %lu), arena %zu B, "
               "stack %lu B\n      f32:   text %lu data %lu bss %lu (code %lu, constants %lu), "
               "scratch %lu B, stack %lu B; arena / scratch %.3f\n", s->name, N, F,
               sq[0], sq[1], sq[2], sq[3], sq[4], arena, stack_q, sf[0], sf[1], sf[2], sf[3],
               sf[4], scratch, stack_f, (double)arena / (double)scratch);
    CHECK(stack_q > 0 && stack_f > 0);
    CHECK(arena * 10 <= scratch * 3); /* the "arena <= 0.3x the float scratch" */
    free(ref_q), free(ref), free(h_lq), free(h_l), free(m_lq), free(m_l), free(h_f);
}

KD_TEST(mcu_compact_student_is_bit_exact_on_a_cortex_m4) {
    static const student s = {"compact", "[{\"type\": \"dense\", \"units\": 128}, {\"type\": "
                              "\"relu\"}, {\"type\": \"dense\", \"units\": 10}]", 1, 10000,
                              100};
    if (have_tools()) mcu_check(&s, s.n_int);
}

KD_TEST(mcu_cnn_student_is_bit_exact_on_a_cortex_m4) {
    static const student s = {"cnn", "[{\"type\": \"conv2d\", \"channels\": 16, \"kernel\": 3, "
                              "\"padding\": 1}, {\"type\": \"maxpool2d\", \"kernel\": 2}, "
                              "{\"type\": \"relu\"}, {\"type\": \"conv2d\", \"channels\": 32, "
                              "\"kernel\": 3, \"padding\": 1}, {\"type\": \"maxpool2d\", "
                              "\"kernel\": 2}, {\"type\": \"relu\"}, {\"type\": \"flatten\"}, "
                              "{\"type\": \"dense\", \"units\": 10}]", 0, 100, 20};
    if (have_tools()) mcu_check(&s, s.n_int);
}
