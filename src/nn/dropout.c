/* dropout.c - inverted dropout: in training each element is zeroed with probability p and the
 * survivors are scaled by 1 / (1 - p), so evaluation is the identity with no rescaling. The mask
 * is counter-based (draw_mask), so the OpenMP team draws and applies it block by block. */
#include <cJSON.h>
#include <math.h>
#include <string.h>

#include "layer_impl.h"

typedef struct {
    float p;  /* drop probability in [0, 1) (default 0.5) */
} dropout_hp;

static kd_status dropout_configure(kd_layer *l, const cJSON *spec, kd_err *err) {
    static const char *const fields[] = {"p", NULL};
    dropout_hp *hp = l->hp;
    kd_status st = kd_spec_check_fields(l, spec, fields, err);
    if (!st) st = kd_spec_float(l, spec, "p", 0.5f, 0.0, 1.0, 1, &hp->p, err);
    if (st) return st;
    l->out = l->in;
    return KD_OK;
}

/* out = a * b elementwise (restrict + KD_VEC_FOR: vectorised at -O2), and a *= b. */
static void mul_kernel(const float *restrict a, const float *restrict b, float *restrict out,
                       size_t n) {
    KD_VEC_FOR(i, n, out[i] = a[i] * b[i]);
}
static void mul_in_place_kernel(float *restrict a, const float *restrict b, size_t n) {
    KD_VEC_FOR(i, n, a[i] *= b[i]);
}

/* The mask (scale or 0 per element) is kept from forward to backward. */
static size_t dropout_cache(const kd_layer *l, size_t B) { return B * kd_shape_numel(&l->in); }

/* The mask is counter-based: one 64-bit key per forward from the run's RNG (one draw, so the
 * run's RNG advances the same on every rank and a resumed run repeats it), and element e of the
 * global batch's mask from mix(key + (e / 2 + 1) * golden), splitmix64's output function on a
 * Weyl sequence (as Java's SplittableRandom): bits 40-63 for even e, 16-39 for odd e, two
 * 24-bit uniforms u per word. An element keeps its input (scale) when u >= keep_from =
 * ceil(p * 2^24), i.e. u / 2^24 >= p, compared as integers. Any element can be drawn on its
 * own, so the team draws the mask in blocks, and a data-parallel shard draws just its rows of
 * the global batch's mask: the same bits on any thread count and any number of ranks. */
static uint64_t mask_word(uint64_t key, uint64_t w) {
    uint64_t z = key + (w + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* mask[0..n) = elements [e0, e0 + n) of the mask: one word per pair of elements. */
static void draw_mask(float *mask, uint64_t e0, size_t n, uint64_t key, uint64_t keep_from,
                      float scale) {
    size_t i = 0;
    if (n && e0 % 2) {  /* an odd first element: the second half of its word */
        mask[i++] = kd_float_if(((mask_word(key, e0 / 2) >> 16) & 0xffffff) >= keep_from, scale);
    }
    for (; i + 1 < n; i += 2) {
        const uint64_t r = mask_word(key, (e0 + i) / 2);
        mask[i] = kd_float_if((r >> 40) >= keep_from, scale);
        mask[i + 1] = kd_float_if(((r >> 16) & 0xffffff) >= keep_from, scale);
    }
    if (i < n) mask[i] = kd_float_if((mask_word(key, (e0 + i) / 2) >> 40) >= keep_from, scale);
}

static void dropout_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    const size_t F = kd_shape_numel(&l->in), n = B * F;
    const dropout_hp *hp = l->hp;
    const float p = hp->p;
    if (!ctx->training || p == 0.0f) {
        kd_par_copy(y, x, n);
        return;
    }
    /* A data-parallel shard takes its rows of the global batch's mask (elements from begin). */
    const uint64_t begin = l->shard ? (uint64_t)l->shard->row0 * F : 0;
    const uint64_t keep_from = (uint64_t)ceil((double)p * 16777216.0);
    const uint64_t key = kd_rng_u64(ctx->rng);
    const float scale = 1.0f / (1.0f - p);
    float *mask = l->cache;
    /* Each block's mask drawn and applied while it is in cache. */
    KD_PAR_BLOCKS(n, o, k, {
        draw_mask(mask + o, begin + o, k, key, keep_from, scale);
        if (x == y) mul_in_place_kernel(y + o, mask + o, k);
        else mul_kernel(x + o, mask + o, y + o, k);
    });
}

static void dropout_backward(kd_layer *l, const float *x, const float *y, const float *dy,
                             float *dx, size_t B, kd_ctx *ctx) {
    (void)x;
    (void)y;
    if (!dx) return;
    const size_t n = B * kd_shape_numel(&l->in);
    const dropout_hp *hp = l->hp;
    if (!ctx->training || hp->p == 0.0f) {
        kd_par_copy(dx, dy, n);
        return;
    }
    const float *mask = l->cache;
    KD_PAR_BLOCKS(n, o, k, mul_kernel(dy + o, mask + o, dx + o, k));
}

static int dropout_describe(const kd_layer *l, cJSON *obj) {
    const dropout_hp *hp = l->hp;
    return kd_spec_add_float(obj, "p", hp->p);
}

/* Deployment: inference is the identity (inverted dropout scaled during training), so the layer
 * emits nothing and its input flows on. */
static kd_status dropout_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    (void)l;
    (void)em;
    (void)err;
    return KD_OK;
}

static kd_status dropout_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    (void)l;
    (void)em;
    (void)err;
    return KD_OK;
}

const kd_layer_ops kd_layer_dropout = {
    .type = "dropout",
    .hp_size = sizeof(dropout_hp),
    .configure = dropout_configure,
    .cache_floats = dropout_cache,
    .forward = dropout_forward,
    .backward = dropout_backward,
    .describe = dropout_describe,
    .export_onnx = dropout_export_onnx,
    .export_c = dropout_export_c,
    .in_place = 1,  /* backward reads only the mask */
    .eval_identity = 1,
};
