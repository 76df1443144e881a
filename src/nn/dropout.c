/* dropout.c - inverted dropout: in training each element is zeroed with probability p and the
 * survivors are scaled by 1 / (1 - p), so evaluation is the identity with no rescaling. The mask
 * is drawn serially (one RNG stream); applying it runs on the OpenMP team. */
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

/* Elements [begin, end) of a mask of `total` elements into mask[0..end - begin). Element e
 * comes from draw e / 2 of rng, bits 40-63 when e is even and 16-39 when odd (two 24-bit
 * uniforms u per 64-bit draw); it keeps its input (scale) when u >= keep_from = ceil(p * 2^24),
 * i.e. u / 2^24 >= p, compared as integers. Every draw of the whole mask is taken, so rng ends
 * where one process drawing all `total` elements leaves it (data-parallel shards draw the rows
 * of the other ranks too, and skip them). */
static void draw_mask(float *mask, size_t begin, size_t end, size_t total, uint64_t keep_from,
                      float scale, kd_rng *state) {
    kd_rng rng = *state;  /* a local copy stays in registers */
    size_t e = begin - begin % 2;  /* the first element of begin's draw */
    for (size_t d = 0; d < e / 2; d++) (void)kd_rng_u64(&rng);
    if (begin < end) {
        size_t i = 0;
        if (begin % 2) {
            mask[i++] = kd_float_if(((kd_rng_u64(&rng) >> 16) & 0xffffff) >= keep_from, scale);
            e += 2;
        }
        for (; e + 1 < end; e += 2, i += 2) {
            uint64_t r = kd_rng_u64(&rng);
            mask[i] = kd_float_if((r >> 40) >= keep_from, scale);
            mask[i + 1] = kd_float_if(((r >> 16) & 0xffffff) >= keep_from, scale);
        }
        if (e < end) {
            mask[i] = kd_float_if((kd_rng_u64(&rng) >> 40) >= keep_from, scale);
            e += 2;
        }
    }
    for (; e < total; e += 2) (void)kd_rng_u64(&rng);
    *state = rng;
}

static void dropout_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    const size_t F = kd_shape_numel(&l->in), n = B * F;
    const dropout_hp *hp = l->hp;
    const float p = hp->p;
    if (!ctx->training || p == 0.0f) {
        kd_par_copy(y, x, n);
        return;
    }
    /* Draw the mask first (one RNG stream: serial, and cheap next to the layers around it),
     * then apply it in parallel blocks. A data-parallel shard takes its rows of the global
     * batch's mask. */
    const size_t begin = l->shard ? l->shard->row0 * F : 0;
    const size_t total = l->shard ? l->shard->rows * F : n;
    KD_ASSERT(begin + n <= total);
    const uint64_t keep_from = (uint64_t)ceil((double)p * 16777216.0);
    draw_mask(l->cache, begin, begin + n, total, keep_from, 1.0f / (1.0f - p), ctx->rng);
    const float *mask = l->cache;
    if (x == y) KD_PAR_BLOCKS(n, o, k, mul_in_place_kernel(y + o, mask + o, k));
    else KD_PAR_BLOCKS(n, o, k, mul_kernel(x + o, mask + o, y + o, k));
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
};
