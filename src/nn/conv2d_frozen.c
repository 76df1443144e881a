/* conv2d_frozen.c - a frozen model's conv2d (kd_model_freeze): its weights packed once for
 * conv_packed.c's kernel (and, where Winograd's F(2x2, 3x3) runs one sample faster, transformed
 * once for wg_frozen.c's), and the forward that runs it on one sample (the team splitting the
 * layer) or on a batch (groups of samples shared out among the threads). */
#include <omp.h>

#include "conv2d_impl.h"
#include "conv_packed.h"
#include "fused.h"
#include "wg_frozen.h"

/* A sample runs on the team from this many multiply-adds (the small ResNet student's 1.8M
 * layers gain: one sample on 2 threads of a Xeon, alternating, 172-179 us against 179-185 with
 * conv2d.c's 2M; its 0.9M stride-2 layers measured the same either way). */
#define FROZEN_TEAM_MACS ((size_t)1 << 20)

static kd_cd_dims cd_of(const kd_layer *l) {
    const conv_hp *hp = l->hp;
    return (kd_cd_dims){l->in.d[0], l->in.d[1], l->in.d[2], hp->channels, l->out.d[1],
                        l->out.d[2], hp->kh, hp->kw, hp->padding, hp->stride};
}

/* The frozen copy: a header of 16 floats (its first 1 where Winograd's weights follow the packed
 * ones), the packed weights, then Winograd's (wg_frozen.h) for a one-sample forward. The header
 * keeps what freezing decided with the copy. */
#define FROZEN_HEAD 16
static size_t packed_floats(const kd_cd_dims *d) {
    return (kd_conv_packed_floats(d) + 15) & ~(size_t)15;
}
size_t kd_conv2d_frozen_floats(const kd_layer *l) {
    const kd_cd_dims d = cd_of(l);
    if (((const conv_hp *)l->hp)->groups != 1 || !kd_conv_packed_part_fits(&d)) return 0;
    return FROZEN_HEAD + packed_floats(&d) + (kd_wgf_fits(&d) ? kd_wgf_floats(&d) : 0);
}
void kd_conv2d_freeze(const kd_layer *l, float *dst) {
    const kd_cd_dims d = cd_of(l);
    const int wg = kd_wgf_fits(&d);
    for (size_t i = 0; i < FROZEN_HEAD; i++) dst[i] = 0.0f;
    dst[0] = wg ? 1.0f : 0.0f;
    kd_conv_packed_pack(&d, l->t[CONV_W], dst + FROZEN_HEAD);
    if (wg) kd_wgf_pack(&d, l->t[CONV_W], dst + FROZEN_HEAD + packed_floats(&d));
}
static const float *packed_of(const kd_layer *l) { return l->frozen + FROZEN_HEAD; }
static const float *wg_of(const kd_layer *l, const kd_cd_dims *d) {
    return l->frozen[0] != 0.0f ? l->frozen + FROZEN_HEAD + packed_floats(d) : NULL;
}

/* Threads with a workspace slot: the machine's processors (fixed for the process, so the
 * workspace reserved stays right when the thread count changes), at most one per sample; and
 * the samples per call, so that a batch gives every slot a call. */
static size_t n_slots(size_t B) {
    const size_t procs = (size_t)omp_get_num_procs();
    return B < procs ? (B ? B : 1) : procs;
}
static size_t group_of(const kd_cd_dims *d, size_t B) {
    const size_t g = kd_conv_packed_group(d), even = (B + n_slots(B) - 1) / n_slots(B);
    return g < even ? g : even;
}
static size_t slot_floats(const kd_cd_dims *d, size_t B) {
    return (kd_conv_packed_workspace(d, group_of(d, B)) + 15) & ~(size_t)15;
}
size_t kd_conv2d_frozen_workspace(const kd_layer *l, size_t B) {
    if (!l->frozen) return 0;
    const kd_cd_dims d = cd_of(l);
    const size_t wg = wg_of(l, &d) ? kd_wgf_workspace(&d) : 0;
    const size_t n = kd_conv_packed_fits(&d) ? n_slots(B) * slot_floats(&d, B)
                                              : kd_conv_packed_workspace(&d, 1); /* banded only */
    return n > wg ? n : wg;
}

typedef struct {
    const kd_layer *l;
    const kd_cd_dims *d;
    kd_cp_out out; /* sample 0's */
    const float *x;
    const kd_sample_sink *sink;
    size_t B, g;
} frozen_job;

/* Samples [k g, k g + g) of the batch, each handed on after the call. */
static void run_group(const frozen_job *j, size_t k, float *ws) {
    const kd_cd_dims *d = j->d;
    const size_t in_n = d->C * d->H * d->W, out_n = d->O * d->OH * d->OW, b = k * j->g;
    const size_t m = j->B - b < j->g ? j->B - b : j->g;
    kd_cp_out o = j->out;
    o.y += b * out_n;
    if (o.res) o.res += b * out_n;
    kd_conv_packed(d, m, j->x + b * in_n, packed_of(j->l), &o, ws, 0);
    for (size_t s = b; j->sink && s < b + m; s++)
        j->sink->fn(j->sink->arg, s, o.y + (s - b) * out_n);
}

/* In a banded forward, a layer whose weights outweigh its planes (input and output) twice or
 * more splits its blocks of output channels among the team, each thread reading its share of
 * the weights, rather than its rows (each thread reading them all): ResNet-18's 512-channel 7x7
 * layers, one sample on 2 threads of a Xeon, 450-460 us by rows, 345-380 by blocks. The
 * planes are small there, so that the next layer's rows reading every channel costs little. */
static int by_blocks(const kd_cd_dims *d, size_t w, size_t G, size_t n) {
    return G >= n && w >= 2 * (d->C * d->H * d->W + d->O * d->OH * d->OW);
}

int kd_conv2d_frozen_takes(const kd_layer *l, const kd_ctx *ctx) {
    if (!l->frozen || ctx->training) return 0;
    const kd_cd_dims d = cd_of(l);
    return ctx->bands > 1 || kd_conv_packed_fits(&d);
}

/* This thread's part of a banded forward's one sample: tile rows of Winograd's, or positions of
 * the packed kernel's, or blocks of output channels of either where the weights outweigh the
 * planes (by_blocks). */
static void band_part(const kd_layer *l, const kd_cd_dims *d, const kd_cp_out *out,
                      const float *x, float *ws, size_t k, size_t n) {
    const float *u = wg_of(l, d);
    if (u) {
        const size_t TR = kd_wgf_tile_rows(d), G = d->O / 8;
        if (by_blocks(d, kd_wgf_floats(d), G, n))
            kd_wgf_part(d, x, u, out, ws, 0, TR, 8 * (G * k / n), 8 * (G * (k + 1) / n));
        else
            kd_wgf_part(d, x, u, out, ws, TR * k / n, TR * (k + 1) / n, 0, d->O);
        return;
    }
    const size_t G = kd_conv_packed_blocks(d), Q = d->OH * d->OW;
    if (by_blocks(d, d->O * d->C * d->KH * d->KW, G, n))
        kd_conv_packed_part(d, x, packed_of(l), out, ws, 0, Q, G * k / n, G * (k + 1) / n);
    else if (Q * k / n < Q * (k + 1) / n)
        kd_conv_packed_part(d, x, packed_of(l), out, ws, Q * k / n, Q * (k + 1) / n, 0, G);
}

int kd_conv2d_frozen_forward(const kd_layer *l, const float *scale, const float *shift,
                             const float *res, int act, const float *x, float *y,
                             const kd_sample_sink *sink, size_t B, float *ws, const kd_ctx *ctx) {
    const kd_cd_dims d = cd_of(l);
    const kd_cp_out out = {scale, shift, res, act, y};
    if (ctx->bands > 1) {
        KD_ASSERT(B == 1 && !sink);
        band_part(l, &d, &out, x, ws, ctx->band, ctx->bands);
        return 1;
    }
    if (!kd_conv2d_frozen_takes(l, ctx)) return 0;
    if (B == 1) {
        const int team = !omp_in_parallel() && omp_get_max_threads() > 1 &&
                         d.O * d.C * d.KH * d.KW * d.OH * d.OW >= FROZEN_TEAM_MACS;
        if (!team && wg_of(l, &d))
            kd_wgf_part(&d, x, wg_of(l, &d), &out, ws, 0, kd_wgf_tile_rows(&d), 0, d.O);
        else
            kd_conv_packed(&d, 1, x, packed_of(l), &out, ws,
                           team ? (size_t)omp_get_max_threads() : 0);
        if (sink) sink->fn(sink->arg, 0, y);
        return 1;
    }
    const size_t g = group_of(&d, B), n = (B + g - 1) / g, slot = slot_floats(&d, B);
    const size_t slots = n_slots(B), threads = (size_t)omp_get_max_threads();
    const frozen_job j = {l, &d, out, x, sink, B, g};
    if (slots > 1 && threads > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(static) num_threads((int)(threads < slots ? threads : slots))
        for (size_t k = 0; k < n; k++) run_group(&j, k, ws + (size_t)omp_get_thread_num() * slot);
    } else {
        for (size_t k = 0; k < n; k++) run_group(&j, k, ws);
    }
    return 1;
}
