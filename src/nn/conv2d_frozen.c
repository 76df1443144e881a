/* conv2d_frozen.c - a frozen model's conv2d (kd_model_freeze): its weights packed once for
 * conv_packed.c's kernel, and the forward that runs it on one sample (the team splitting the
 * layer) or on a batch (groups of samples shared out among the threads). */
#include <omp.h>

#include "conv2d_impl.h"
#include "conv_packed.h"
#include "fused.h"

/* A sample runs on the team from this many multiply-adds (the small ResNet student's 1.8M
 * layers gain: one sample on 2 threads of a Xeon, alternating, 172-179 us against 179-185 with
 * conv2d.c's 2M; its 0.9M stride-2 layers measured the same either way). */
#define FROZEN_TEAM_MACS ((size_t)1 << 20)

static kd_cd_dims cd_of(const kd_layer *l) {
    const conv_hp *hp = l->hp;
    return (kd_cd_dims){l->in.d[0], l->in.d[1], l->in.d[2], hp->channels, l->out.d[1],
                        l->out.d[2], hp->kh, hp->kw, hp->padding, hp->stride};
}

size_t kd_conv2d_frozen_floats(const kd_layer *l) {
    const kd_cd_dims d = cd_of(l);
    return ((const conv_hp *)l->hp)->groups == 1 && kd_conv_packed_fits(&d)
               ? kd_conv_packed_floats(&d)
               : 0;
}
void kd_conv2d_freeze(const kd_layer *l, float *dst) {
    const kd_cd_dims d = cd_of(l);
    kd_conv_packed_pack(&d, l->t[CONV_W], dst);
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
    return n_slots(B) * slot_floats(&d, B);
}

typedef struct {
    const kd_layer *l;
    const kd_cd_dims *d;
    const float *scale, *shift;
    int act;
    const float *x;
    float *y;
    const kd_sample_sink *sink;
    size_t B, g;
} frozen_job;

/* Samples [k g, k g + g) of the batch, each handed on after the call. */
static void run_group(const frozen_job *j, size_t k, float *ws) {
    const kd_cd_dims *d = j->d;
    const size_t in_n = d->C * d->H * d->W, out_n = d->O * d->OH * d->OW, b = k * j->g;
    const size_t m = j->B - b < j->g ? j->B - b : j->g;
    kd_conv_packed(d, m, j->x + b * in_n, j->l->frozen, j->scale, j->shift, j->act,
                   j->y + b * out_n, ws, 0);
    for (size_t s = b; j->sink && s < b + m; s++) j->sink->fn(j->sink->arg, s, j->y + s * out_n);
}

void kd_conv2d_frozen_forward(const kd_layer *l, const float *scale, const float *shift, int act,
                              const float *x, float *y, const kd_sample_sink *sink, size_t B,
                              float *ws) {
    const kd_cd_dims d = cd_of(l);
    if (B == 1) {
        const int team = !omp_in_parallel() && omp_get_max_threads() > 1 &&
                         d.O * d.C * d.KH * d.KW * d.OH * d.OW >= FROZEN_TEAM_MACS;
        kd_conv_packed(&d, 1, x, l->frozen, scale, shift, act, y, ws,
                       team ? (size_t)omp_get_max_threads() : 0);
        if (sink) sink->fn(sink->arg, 0, y);
        return;
    }
    const size_t g = group_of(&d, B), n = (B + g - 1) / g, slot = slot_floats(&d, B);
    const size_t slots = n_slots(B), threads = (size_t)omp_get_max_threads();
    const frozen_job j = {l, &d, scale, shift, act, x, y, sink, B, g};
    if (slots > 1 && threads > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(static) num_threads((int)(threads < slots ? threads : slots))
        for (size_t k = 0; k < n; k++) run_group(&j, k, ws + (size_t)omp_get_thread_num() * slot);
    } else {
        for (size_t k = 0; k < n; k++) run_group(&j, k, ws);
    }
}
