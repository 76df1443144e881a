/* harness.c - runs a header written by `distill export --format c` on a Cortex-M4 under QEMU
 * (tests/test_mcu.c builds it with arm-none-eabi-gcc -std=c99 -mcpu=cortex-m4 -mthumb -O2,
 * startup.c, mps2_an386.ld and --specs=rdimon.specs). Every file goes through newlib's
 * semihosting stdio, relative to QEMU's working folder:
 *
 *   images.idx  the raw images, an uncompressed u8 IDX file of rank 3 (INPUT_SIZE bytes each)
 *   xq.i8       qint8 only: the same images on the input's grid, given to NAME_forward_q
 *   m4_lq.i8    written, qint8 only: NAME_forward_q's int8 logits, every image
 *   m4_l.f32    written: NAME_forward's logits (N_CLASSES native floats) of the raw pixels as
 *               floats, the first FLOAT_N images only (soft float is slow under emulation)
 *
 * -DQINT8=1 for a qint8 header (NAME_ARENA_BYTES of arena, one byte past an aligned address:
 * the header assumes no alignment), 0 for an f32 one (NAME_SCRATCH_FLOATS of scratch; it
 * stops after FLOAT_N images). The
 * stack below main is painted before each batch of images and read back after it: the deepest
 * word the model's functions wrote is printed as "stack N bytes" (their frames and newlib's,
 * soft float and round() included), with the sample count and the code's buffers. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FORWARD CAT(MODEL, _forward)
#define FORWARD_Q CAT(MODEL, _forward_q)
#define INPUT_SIZE CAT(MODEL_UPPER, _INPUT_SIZE)
#define N_CLASSES CAT(MODEL_UPPER, _N_CLASSES)
#define ARENA_BYTES CAT(MODEL_UPPER, _ARENA_BYTES)
#define SCRATCH_FLOATS CAT(MODEL_UPPER, _SCRATCH_FLOATS)

#include MODEL_HEADER

#define BATCH 50
#define PAINT 0x5afe57acu

extern uint32_t __stack_bottom[];

static unsigned char pixels[BATCH * INPUT_SIZE];
static float raw[INPUT_SIZE], logits[BATCH * N_CLASSES];
#if QINT8
static signed char xq[BATCH * INPUT_SIZE], lq[BATCH * N_CLASSES];
static unsigned char arena_block[ARENA_BYTES + 1];
#else
static float scratch[SCRATCH_FLOATS];
#endif

static uintptr_t stack_pointer(void) {
    uintptr_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

/* Fills the free stack (below this function's own frame, where nothing is live) with PAINT. */
static __attribute__((noinline)) void paint(void) {
    volatile uint32_t *w = __stack_bottom;
    uintptr_t sp = stack_pointer();
    while ((uintptr_t)w < sp) *w++ = PAINT;
}

/* The lowest address written since paint(). */
static uintptr_t low_water(void) {
    const volatile uint32_t *w = __stack_bottom;
    while (*w == PAINT) w++;
    return (uintptr_t)w;
}

static int fail(const char *what) {
    printf("mcu harness: %s\n", what);
    return 1;
}

int main(void) {
    FILE *fp = fopen("images.idx", "rb"), *fl = fopen("m4_l.f32", "wb");
#if QINT8
    FILE *fx = fopen("xq.i8", "rb"), *flq = fopen("m4_lq.i8", "wb");
#endif
    unsigned long n = 0, depth = 0;
    size_t got, i, k, floats;
    unsigned char head[16];
    if (!fp || !fl) return fail("cannot open images.idx or m4_l.f32");
    if (fread(head, 1, 16, fp) != 16 || head[2] != 8 || head[3] != 3)
        return fail("images.idx: expected a u8 IDX file of rank 3");
#if QINT8
    if (!fx || !flq) return fail("cannot open xq.i8 or m4_lq.i8");
#endif
    while ((QINT8 || n < FLOAT_N) && (got = fread(pixels, INPUT_SIZE, BATCH, fp)) > 0) {
        uintptr_t sp, low;
#if QINT8
        if (fread(xq, INPUT_SIZE, got, fx) != got) return fail("xq.i8 is shorter than images.idx");
#endif
        floats = n >= FLOAT_N ? 0 : FLOAT_N - n < got ? FLOAT_N - n : got;
        paint();
        sp = stack_pointer();
        for (i = 0; i < got; i++) {
#if QINT8
            FORWARD_Q(xq + i * INPUT_SIZE, lq + i * N_CLASSES, arena_block + 1);
#endif
            if (i >= floats) continue;
            for (k = 0; k < INPUT_SIZE; k++) raw[k] = (float)pixels[i * INPUT_SIZE + k];
#if QINT8
            FORWARD(raw, logits + i * N_CLASSES, arena_block + 1);
#else
            FORWARD(raw, logits + i * N_CLASSES, scratch);
#endif
        }
        low = low_water();
        if (sp - low > depth) depth = (unsigned long)(sp - low);
        if (fwrite(logits, sizeof *logits * N_CLASSES, floats, fl) != floats)
            return fail("write failed");
#if QINT8
        if (fwrite(lq, N_CLASSES, got, flq) != got) return fail("write failed");
#endif
        n += (unsigned long)(QINT8 ? got : floats);
    }
#if QINT8
    if (fclose(fx) || fclose(flq)) return fail("close failed");
#endif
    if (fclose(fp) || fclose(fl)) return fail("close failed");
    printf("mcu: %lu samples, stack %lu bytes\n", n, depth);
    return 0;
}
