/* wg_frozen.c - a frozen model's 3x3 convolution of one sample by Winograd's F(2x2, 3x3)
 * (wg_frozen.h).
 *
 * A call walks its tile rows in chunks of about WGF_CHUNK_TILES tiles: the chunk's input
 * transform v (16, C, ld) (kd_wg_input_rows), its 16 products m[xi] (O, ld) = u[xi] (O, C)
 * v[xi] (C, ld) for the call's output channels, then the output transform with the epilogue
 * (kd_wg_output_rows). A chunk's v and m stay in L2 and v[xi] in L1 while its products read it;
 * the whole sample's at once (ResNet-18's 64-channel 28x28 layer: 1.7 MB) spill (one thread of
 * a Xeon: 221-227 us in chunks, 354-379 whole). A product tile keeps 8 output channels by 48 tiles (3 vectors) in 24 AVX-512
 * registers: per input channel 3 loads of v and 8 broadcasts of u for 24 FMAs, as
 * conv_packed.c's grid tiles. */
#include "wg_frozen.h"

#include <string.h>

#include "../core/test_hooks.h"
#include "kd_common.h"
#include "winograd.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define WGF_X86 1
#endif

#ifdef KD_TEST_HOOKS
int kd_wg_frozen_on = -1;
unsigned long kd_hook_wgf_parts;
#endif

/* Tiles per chunk (whole tile rows, at least one). */
#define WGF_CHUNK_TILES 112
/* The release rule's limits. One thread of a Xeon, a whole sample against the packed kernel:
 * 64 channels at 28x28 210 against 332 us, 128 at 14x14 263 against 344, 16 at 28x28 23 against
 * 26, 32 at 14x14 23 and 23; 64 at 7x7 25 against 24 (49 tiles pad to 64), 256 at 7x7 390
 * against 385, and in a model its 4 MB of transformed weights stream from memory. */
#define WGF_MIN_CHANNELS 16
#define WGF_MIN_PLANE 100
#define WGF_MAX_WEIGHTS ((size_t)1 << 18)

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }
static kd_wg_dims wg_of(const kd_cd_dims *d) {
    return (kd_wg_dims){d->C, d->H, d->W, d->O, d->OH, d->OW, d->P};
}

int kd_wgf_shape(const kd_cd_dims *d) {
    const kd_wg_dims wd = wg_of(d);
    if (d->KH != 3 || d->KW != 3 || d->S != 1 || d->O % 8 || !kd_wg_fits(&wd)) return 0;
#ifdef WGF_X86
    __builtin_cpu_init();
    return !!__builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

int kd_wgf_fits(const kd_cd_dims *d) {
    const int hook = KD_HOOK_VALUE(kd_wg_frozen_on, -1);
    if (!hook || !kd_wgf_shape(d)) return 0;
    return hook > 0 || (d->C >= WGF_MIN_CHANNELS && d->OH * d->OW >= WGF_MIN_PLANE &&
                        kd_wgf_floats(d) <= WGF_MAX_WEIGHTS);
}

size_t kd_wgf_floats(const kd_cd_dims *d) { return 16 * d->O * d->C; }

void kd_wgf_pack(const kd_cd_dims *d, const float *w, float *u) {
    const kd_wg_dims wd = wg_of(d);
    kd_wg_weights(&wd, w, u, 0);
}

size_t kd_wgf_tile_rows(const kd_cd_dims *d) { return (d->OH + 1) / 2; }

/* Tile rows per chunk, and a chunk's columns (its tiles rounded up to whole vectors). */
static size_t chunk_rows(const kd_cd_dims *d) {
    const size_t TW = (d->OW + 1) / 2, n = WGF_CHUNK_TILES / TW;
    return n ? n : 1;
}
static size_t chunk_ld(const kd_cd_dims *d) { return round16(chunk_rows(d) * ((d->OW + 1) / 2)); }
static size_t v_step(const kd_cd_dims *d) { return kd_wg_step(d->C, chunk_ld(d)); }
static size_t m_step(const kd_cd_dims *d) { return kd_wg_step(d->O, chunk_ld(d)); }

size_t kd_wgf_workspace(const kd_cd_dims *d) { return 16 * (v_step(d) + m_step(d)); }

#ifdef WGF_X86
/* m rows [o, o + 8) at columns [t, t + 16 NV) = u[xi]'s rows times v[xi]: the sum over c in
 * order. u: row o of u[xi] (rows C apart); v: column t of v[xi] (rows ld apart); m likewise. */
#define WGF_TILE(NAME, NV)                                                                       \
    __attribute__((target("avx512f"))) static void NAME(const float *u, size_t C,              \
                                                        const float *v, size_t ld, float *m) {  \
        __m512 acc[8][NV];                                                                       \
        for (size_t r = 0; r < 8; r++)                                                           \
            for (size_t k = 0; k < NV; k++) acc[r][k] = _mm512_setzero_ps();                     \
        for (size_t c = 0; c < C; c++) {                                                         \
            __m512 xv[NV];                                                                       \
            for (size_t k = 0; k < NV; k++) xv[k] = _mm512_loadu_ps(v + c * ld + 16 * k);        \
            for (size_t r = 0; r < 8; r++) {                                                     \
                const __m512 b = _mm512_set1_ps(u[r * C + c]);                                   \
                for (size_t k = 0; k < NV; k++) acc[r][k] = _mm512_fmadd_ps(b, xv[k], acc[r][k]); \
            }                                                                                    \
        }                                                                                        \
        for (size_t r = 0; r < 8; r++)                                                           \
            for (size_t k = 0; k < NV; k++) _mm512_storeu_ps(m + r * ld + 16 * k, acc[r][k]);    \
    }
WGF_TILE(tile_8x3, 3)
WGF_TILE(tile_8x2, 2)
WGF_TILE(tile_8x1, 1)

/* The chunk's products for output channels [o0, o1) over columns [0, n) (whole vectors). */
static void products(const kd_cd_dims *d, const float *u, const float *v, float *m, size_t ld,
                     size_t n, size_t o0, size_t o1) {
    const size_t C = d->C, O = d->O;
    for (size_t xi = 0; xi < 16; xi++) {
        const float *vx = v + xi * v_step(d);
        for (size_t o = o0; o < o1; o += 8) {
            const float *uo = u + (xi * O + o) * C;
            float *mo = m + xi * m_step(d) + o * ld;
            /* threes of vectors, the last four as two twos (one vector alone: a broadcast per
             * FMA; 14x14 planes, 49 tiles in 4 vectors, 3 + 1 took 20% longer than 2 + 2) */
            size_t t = 0, left = n / 16;
            for (; left >= 3 && left != 4; left -= 3, t += 48) tile_8x3(uo, C, vx + t, ld, mo + t);
            for (; left >= 2; left -= 2, t += 32) tile_8x2(uo, C, vx + t, ld, mo + t);
            if (left) tile_8x1(uo, C, vx + t, ld, mo + t);
        }
    }
}

/* Columns [nt, n) of every row of v: zeros (the products read whole vectors; what they make
 * there is never stored, but stale floats could be NaN or subnormal, and slow). */
__attribute__((target("avx512f"))) static void zero_tail(const kd_cd_dims *d, float *v,
                                                         size_t ld, size_t nt, size_t n) {
    if (nt == n) return;
    const __mmask16 keep = (__mmask16)(0xFFFFu << (nt % 16));
    for (size_t xi = 0; xi < 16; xi++)
        for (size_t c = 0; c < d->C; c++)
            _mm512_mask_storeu_ps(v + xi * v_step(d) + c * ld + nt / 16 * 16, keep,
                                  _mm512_setzero_ps());
}
#endif

void kd_wgf_part(const kd_cd_dims *d, const float *x, const float *u, const kd_cp_out *out,
                 float *ws, size_t r0, size_t r1, size_t o0, size_t o1) {
#ifdef WGF_X86
    const kd_wg_dims wd = wg_of(d);
    const size_t TW = (d->OW + 1) / 2, rc = chunk_rows(d), ld = chunk_ld(d);
    KD_ASSERT(r0 <= r1 && r1 <= kd_wgf_tile_rows(d) && o0 % 8 == 0 && o1 % 8 == 0 &&
              o0 <= o1 && o1 <= d->O);
    float *v = ws, *m = ws + 16 * v_step(d);
    KD_HOOK_RUN(__atomic_add_fetch(&kd_hook_wgf_parts, 1, __ATOMIC_RELAXED));
    for (size_t r = r0; r < r1 && o0 < o1; r += rc) {
        const size_t re = r1 - r < rc ? r1 : r + rc, nt = (re - r) * TW, n = round16(nt);
        kd_wg_input_rows(&wd, x, v, ld, v_step(d), 0, d->C, r, re);
        zero_tail(d, v, ld, nt, n);
        products(d, u, v, m, ld, n, o0, o1);
        kd_wg_output_rows(&wd, m, ld, m_step(d), out->scale, out->shift, out->res, out->act,
                          out->y, o0, o1, r, re);
    }
#else
    (void)d, (void)x, (void)u, (void)out, (void)ws, (void)r0, (void)r1, (void)o0, (void)o1;
    KD_ASSERT(!"wg_frozen: no AVX-512 kernel on this architecture");
#endif
}
