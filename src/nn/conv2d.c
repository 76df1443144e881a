/* conv2d.c - 2-D convolution, torch.nn.Conv2d layout (NCHW, weight [out, in/groups, kh, kw]),
 * lowered to sgemm through im2col, one sample at a time (one product per group): the batch is
 * cut into fixed pieces which the OpenMP team shares out, and each thread lowers a sample of
 * its piece into its own columns, multiplies them on its own (kd_sgemm_serial) straight into
 * the sample's NCHW output and, in backward, scatters the column gradient back, while the
 * columns are still in its cache. No reordering around the products and no columns kept
 * between forward and backward (backward lowers the sample again, cheaper than a pass over a
 * whole batch of columns in memory). A
 * depthwise layer (groups == in == out channels) runs direct plane kernels instead
 * (depthwise.c): its im2col would copy each input KH*KW times for products of one row. */
#include <cJSON.h>
#include <omp.h>
#include <string.h>

#include "conv2d_impl.h"
#include "conv_direct.h"
#include "conv_gemm.h"
#include "depthwise.h"
#include "fused.h"
#include "im2col.h"
#include "kd_gemm.h"
#include "layer_impl.h"
#include "winograd.h"
#include "../core/test_hooks.h"

/* Caps far above useful sizes, low enough that every product below fits in size_t. */
#define CONV_MAX_CHANNELS ((size_t)1 << 20)
#define CONV_MAX_KERNEL KD_SPEC_MAX_KERNEL

/* The batch is cut into at most CONV_PIECES pieces of consecutive samples, fixed by the batch
 * alone: each piece sums its samples' weight and bias gradients into its own part of the
 * workspace, and the parts are added in piece order at the end, so the bits never depend on the
 * thread count. Up to 16 threads share out the pieces; each lowers into its own columns. */
#define CONV_PIECES 16

typedef kd_conv_dims conv_dims;

static conv_dims dims_of(const kd_layer *l) {
    const conv_hp *hp = l->hp;
    conv_dims d;
    d.C = l->in.d[0], d.H = l->in.d[1], d.W = l->in.d[2];
    d.O = hp->channels, d.OH = l->out.d[1], d.OW = l->out.d[2];
    d.KH = hp->kh, d.KW = hp->kw, d.S = hp->stride, d.P = hp->padding, d.G = hp->groups;
    d.K = d.C * d.KH * d.KW, d.KG = d.K / d.G, d.OHW = d.OH * d.OW;
    return d;
}

/* One filter per channel (torch's depthwise case): the direct kernels of depthwise.c. A channel
 * multiplier (O = k * C) goes through the grouped im2col products. */
static int is_depthwise(const conv_dims *d) { return d->G > 1 && d->G == d->C && d->G == d->O; }
static kd_dw_dims dw_dims(const conv_dims *d) {
    return (kd_dw_dims){d->C, d->H, d->W, d->OH, d->OW, d->KH, d->KW, d->S, d->P};
}

/* Workspace: one column slot per thread (columns [K, OHW], column gradient [K, OHW] and one
 * sample's output gradient [O, OHW] when a kd_dy_source makes it), then one gradient part per
 * piece (weight [O, K], bias [O]); each buffer rounded up to 64 bytes so that every one sgemm
 * touches starts aligned. */
static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }
/* Whether inference runs this convolution directly (conv_direct.h): groups 1, a shape the
 * direct kernel takes (kd_conv_direct_fits), on a machine where it beats sgemm
 * (kd_conv_direct_wins). Tests: 0 never, 1 always, -1 that rule. */
#ifdef KD_TEST_HOOKS
int kd_direct_conv = -1;
#endif
/* Batches from this size run the direct kernel in groups (fewer run a sample per piece, on
 * the threads side by side). */
#define DIRECT_GROUP_MIN 4
static kd_cd_dims cd_dims(const conv_dims *d);
static int direct_on(const conv_dims *d, size_t B) {
    const int hook = KD_HOOK_VALUE(kd_direct_conv, -1);
    const kd_cd_dims cd = cd_dims(d);
    return hook < 0 ? kd_conv_direct_wins(&cd, B) : hook;
}
/* Whether inference multiplies by conv_gemm.h's kernel instead of sgemm: ungrouped layers
 * whose weights fit in L2 (256 KiB; the kernel reads them once per panel of 24 columns) and
 * whose sample's column matrix does too (512 KiB; a panel reads 96 bytes from each of its K
 * rows, too many streams for the prefetchers once they come from L3). Past either, sgemm's
 * packing and blocking win for a batch. One sample on the team takes the kernel whatever the
 * size: there sgemm's copy of the weights into its panels was a fifth of ResNet-18's forward
 * (one pass over 44 MB of weights for one sample), and the kernel's split by channel blocks
 * reads each weight row on one thread only (2 threads, best of 8 alternating runs: 8.3-9.9 ms
 * against 9.7-13.8 ms). */
#define OWN_MAX_WEIGHTS ((size_t)1 << 16)
/* A sample of at most one panel of output positions (ResNet-18's 4x4 layers) takes the kernel
 * whatever the size: each weight is read once either way, and sgemm copies all of them into
 * its panels first, for 16 columns (one thread, 512 x 16 x 4608: 39 GFLOP/s by sgemm, 56 by
 * the kernel). */
#define OWN_ONE_PANEL 24
#define OWN_MAX_COLUMNS ((size_t)1 << 17)
/* Samples from which a batch makes the transposed copy (its cost is one pass over the
 * weights; a narrow panel saves about that much per sample). */
#define OWN_TRANSPOSE_MIN 4
#ifdef KD_TEST_HOOKS
int kd_conv_gemm_own = -1;
#endif
/* For a product y (O, N) = W (O, K) cols (K, N) of one sample. */
static int own_product_on(size_t O, size_t K, size_t N, int team) {
    const int hook = KD_HOOK_VALUE(kd_conv_gemm_own, -1);
    if (hook >= 0) return hook;
    /* One sample on the team: past the limits too. sgemm copies the weights into its panels on
     * every call, a pass over all of them for one sample's columns (ResNet-18: 20% of its
     * one-sample forward); here each thread reads its channel blocks' rows once per panel. */
    return (team || N <= OWN_ONE_PANEL ||
            (O * K <= OWN_MAX_WEIGHTS && K * N <= OWN_MAX_COLUMNS)) &&
           kd_conv_gemm_wins() == KD_OWN_EVERY_PRODUCT;
}
/* Where OpenBLAS runs AVX-512 kernels too, a batch's im2col products within the L2 limits
 * (MobileNetV2's 1x1 layers: x0.25 at batch 1000 on 2 threads of a Xeon, 17.1-17.8k -> 20.0-
 * 21.5k samples/s; the CNN teacher and the small ResNet student unchanged, and one sample, or
 * Winograd's products, slower than by sgemm). */
static int own_gemm_on(const conv_dims *d, int team, size_t B) {
    if (d->G != 1) return 0;
    const int hook = KD_HOOK_VALUE(kd_conv_gemm_own, -1);
    if (hook < 0 && kd_conv_gemm_wins() == KD_OWN_BATCH_IM2COL)
        return !team && B >= OWN_TRANSPOSE_MIN && d->O * d->K <= OWN_MAX_WEIGHTS &&
               d->K * d->OHW <= OWN_MAX_COLUMNS;
    return own_product_on(d->O, d->K, d->OHW, team);
}

/* Whether inference runs this convolution by Winograd's F(2x2, 3x3) (winograd.h): 3x3,
 * stride 1, groups 1. Tests: 0 never, 1 wherever the shape allows, -1 the release rule. */
#ifdef KD_TEST_HOOKS
int kd_conv_winograd = -1;
#endif
static kd_wg_dims wg_dims(const conv_dims *d) {
    return (kd_wg_dims){d->C, d->H, d->W, d->O, d->OH, d->OW, d->P};
}
static int wg_shape(const conv_dims *d) {
    const kd_wg_dims wd = wg_dims(d);
    return d->G == 1 && d->S == 1 && d->KH == 3 && d->KW == 3 && kd_wg_fits(&wd);
}
/* The release rule: enough input channels for the products' sums (each of length C), enough
 * tiles per sample for their columns, and a batch over which the weights' transform (made on
 * every call: about as much work as one sample's products on a 7x7 plane) is shared. */
#define WG_MIN_CHANNELS 8
#define WG_MIN_TILES 12
#define WG_MIN_BATCH 4
static int direct_shape(const conv_dims *d);
static int wg_on(const conv_dims *d, size_t B) {
    const int hook = KD_HOOK_VALUE(kd_conv_winograd, -1);
    if (!wg_shape(d) || hook == 0) return 0;
    if (hook > 0) return 1;
    const kd_cd_dims cd = cd_dims(d);
    if (direct_shape(d) && KD_HOOK_VALUE(kd_direct_conv, -1) < 0 &&
        kd_conv_direct_beats_winograd(&cd))
        return 0;
    const kd_wg_dims wd = wg_dims(d);
    return B >= WG_MIN_BATCH && d->C >= WG_MIN_CHANNELS && d->O >= WG_MIN_CHANNELS &&
           kd_wg_tiles(&wd) >= WG_MIN_TILES;
}
static kd_cd_dims cd_dims(const conv_dims *d) {
    return (kd_cd_dims){d->C, d->H, d->W, d->O, d->OH, d->OW, d->KH, d->KW, d->P, d->S};
}
static int direct_shape(const conv_dims *d) {
    const kd_cd_dims cd = cd_dims(d);
    return d->G == 1 && kd_conv_direct_fits(&cd);
}
/* Samples per direct call in a batch: kd_conv_direct_group for a layer this machine's rule
 * runs directly in batches, else one (the workspace stays a sample's where the group would
 * never run; a test forcing the direct kernel gets one sample per call there). */
static size_t direct_group(const conv_dims *d) {
    const kd_cd_dims cd = cd_dims(d);
    return kd_conv_direct_wins(&cd, DIRECT_GROUP_MIN) ? kd_conv_direct_group(&cd) : 1;
}
static size_t col_slot(const conv_dims *d) {
    size_t slot = 2 * round16(d->K * d->OHW) + round16(d->O * d->OHW);
    const kd_wg_dims wd = wg_dims(d);
    if (wg_shape(d) && kd_wg_group_floats(&wd) > slot) slot = kd_wg_group_floats(&wd);
    if (!direct_shape(d)) return slot;
    const kd_cd_dims cd = cd_dims(d);
    const size_t direct = round16(kd_conv_direct_workspace(&cd, direct_group(d)));
    return direct > slot ? direct : slot;
}
static size_t part_slot(const conv_dims *d) { return round16(d->O * d->KG) + round16(d->O); }

/* Stride 1, ungrouped, square kernel: the input gradient is itself a stride-1 convolution, of
 * dY padded by KH - 1 - P with the weights flipped and transposed,
 *   dx[c, h, w] = sum over (o, i, j) of Wt[c, (o, i, j)] dYpad[o, h + i, w + j],
 *   Wt[c, (o, i, j)] = W[o, c, KH-1-i, KW-1-j],
 * one product (C, O KH KW) x (O KH KW, H W) written straight into dx[b], instead of the column
 * gradient (K, OHW) cleared, filled and folded back by col2im: on the small ResNet student's
 * 3x3 layers that clearing alone was 9% of a training step (sgemm_beta in `perf`). Used where
 * dY's columns fit the column gradient's slot (they are O/C times its size). */
static int transposed_dx(const conv_dims *d) {
    return d->G == 1 && d->S == 1 && d->KH == d->KW && d->P < d->KH &&
           d->O * d->KH * d->KW * d->H * d->W <= d->K * d->OHW;
}
static conv_dims transposed_dims(const conv_dims *d) {
    conv_dims t = {d->O, d->OH, d->OW, d->C, d->H,  d->W, d->KH, d->KW,
                   1,    d->KH - 1 - d->P, 1, 0,    0,    d->H * d->W};
    t.K = t.KG = t.C * t.KH * t.KW;
    return t;
}
static void flip_weights(const conv_dims *d, const float *w, float *wt) {
    const size_t kk = d->KH * d->KW;
    for (size_t o = 0; o < d->O; o++)
        for (size_t c = 0; c < d->C; c++)
            for (size_t k = 0; k < kk; k++)
                wt[(c * d->O + o) * kk + k] = w[(o * d->C + c) * kk + (kk - 1 - k)];
}
/* After the gradient parts: backward's flipped weights, or inference's transposed copy or
 * Winograd's transformed weights (16, O, C) and their 16 transposed copies. */
static size_t weight_slot(const conv_dims *d) {
    size_t n = transposed_dx(d) ? d->O * d->K : 0;
    const size_t wt = d->G == 1 ? kd_conv_gemm_transposed_floats(d->O, d->K) : 0;
    const kd_wg_dims wd = wg_dims(d);
    const size_t wg = wg_shape(d) ? kd_wg_weight_floats(&wd) : 0;
    if (wt > n) n = wt;
    return wg > n ? wg : n;
}
static size_t n_pieces(size_t B) { return B == 0 ? 1 : B < CONV_PIECES ? B : CONV_PIECES; }
/* Threads with a column slot: the machine's processors (fixed for the process, so the workspace
 * reserved stays right when the thread count changes later), at most one per piece. A larger
 * team set by hand runs the layer on this many. */
static size_t n_slots(size_t P) {
    static size_t procs;  /* read once (atomically: replicas may build models concurrently) */
    size_t n = __atomic_load_n(&procs, __ATOMIC_RELAXED);
    if (!n) {
        n = (size_t)omp_get_num_procs();
        __atomic_store_n(&procs, n, __ATOMIC_RELAXED);
    }
    return P < n ? P : n;
}
/* Where the gradient parts and the weight slot start in a layer's workspace for P pieces. */
static float *parts_at(const conv_dims *d, float *ws, size_t P) {
    return ws + n_slots(P) * col_slot(d);
}
static float *weight_slot_at(const conv_dims *d, float *ws, size_t P) {
    return parts_at(d, ws, P) + P * part_slot(d);
}
/* Last: inference's weights and bias with a batch norm folded in. */
static size_t fold_slot(const conv_dims *d) { return round16(d->O * d->KG) + round16(d->O); }
static size_t base_workspace(const conv_dims *d, size_t P);
static float *fold_slot_at(const conv_dims *d, float *ws, size_t P) {
    return ws + round16(base_workspace(d, P));
}

static kd_status conv_configure(kd_layer *l, const cJSON *spec, kd_err *err) {
    static const char *const fields[] = {"channels", "kernel", "stride", "padding", "groups",
                                         "bias", NULL};
    conv_hp *hp = l->hp;
    char buf[64];
    kd_status st = kd_spec_check_fields(l, spec, fields, err);
    if (!st)
        st = kd_spec_size(l, spec, "channels", 1, 0, 1, CONV_MAX_CHANNELS, &hp->channels, err);
    if (!st) st = kd_spec_kernel(l, spec, &hp->kh, &hp->kw, err);
    if (!st) st = kd_spec_size(l, spec, "stride", 0, 1, 1, CONV_MAX_KERNEL, &hp->stride, err);
    if (!st) st = kd_spec_size(l, spec, "padding", 0, 0, 0, CONV_MAX_KERNEL, &hp->padding, err);
    if (!st) st = kd_spec_size(l, spec, "groups", 0, 1, 1, CONV_MAX_CHANNELS, &hp->groups, err);
    if (!st) st = kd_spec_bool(l, spec, "bias", 1, &hp->bias, err);
    if (st) return st;
    if (l->in.rank != 3)
        return kd_layer_err(l, err, "expects a [C, H, W] input, got %s",
                            kd_shape_str(&l->in, buf, sizeof buf));
    size_t C = l->in.d[0], H = l->in.d[1], W = l->in.d[2];
    if (C % hp->groups || hp->channels % hp->groups)
        return kd_layer_err(l, err,
                            "groups: %zu must divide both the input channels (%zu) and "
                            "channels (%zu)", hp->groups, C, hp->channels);
    size_t kh = hp->kh, kw = hp->kw, s = hp->stride, p = hp->padding;
    if (C > CONV_MAX_CHANNELS || H > ((size_t)1 << 24) || W > ((size_t)1 << 24))
        return kd_layer_err(l, err, "input %s is too large", kd_shape_str(&l->in, buf, sizeof buf));
    if (kh > H + 2 * p || kw > W + 2 * p) {
        char kbuf[48];
        if (kh == kw) snprintf(kbuf, sizeof kbuf, "%zu", kh);
        else snprintf(kbuf, sizeof kbuf, "%zux%zu", kh, kw);
        return kd_layer_err(l, err, "kernel %s larger than padded input %zux%zu", kbuf, H + 2 * p,
                            W + 2 * p);
    }
    size_t OH = (H + 2 * p - kh) / s + 1, OW = (W + 2 * p - kw) / s + 1, n;
    /* Every size used later (weights, columns per sample, outputs) must fit. */
    if (kd_mul_size(C * kh, kw, &n) || kd_mul_size(n, hp->channels, &n) ||
        kd_mul_size(C * kh * kw, OH * OW, &n) || kd_mul_size(hp->channels, OH * OW, &n))
        return kd_layer_err(l, err, "sizes overflow for input %s",
                            kd_shape_str(&l->in, buf, sizeof buf));
    l->out.rank = 3;
    l->out.d[0] = hp->channels;
    l->out.d[1] = OH;
    l->out.d[2] = OW;
    return KD_OK;
}

static int conv_tensors(const kd_layer *l, kd_tensor_decl *out) {
    const conv_hp *hp = l->hp;
    out[CONV_W] = (kd_tensor_decl){
        "weight", KD_TENSOR_PARAM, {4, {hp->channels, l->in.d[0] / hp->groups, hp->kh, hp->kw}}, 1};
    out[CONV_B] = (kd_tensor_decl){"bias", KD_TENSOR_PARAM, {1, {hp->channels}}, 0};
    return hp->bias ? 2 : 1;
}

/* Everything but the fold slot, which follows it. */
static size_t base_workspace(const conv_dims *d, size_t P) {
    if (is_depthwise(d)) {
        const kd_dw_dims dd = dw_dims(d);
        return kd_depthwise_workspace(&dd, P, n_slots(P), n_slots(SIZE_MAX));
    }
    return n_slots(P) * col_slot(d) + P * part_slot(d) + round16(weight_slot(d));
}
static size_t conv_workspace(const kd_layer *l, size_t B) {
    const conv_dims d = dims_of(l);
    return round16(base_workspace(&d, n_pieces(B))) + fold_slot(&d) +
           kd_conv2d_frozen_workspace(l, B);
}

/* The team for P pieces of a layer that reserved n_slots(P) column slots, and the slot of the
 * calling thread (0 outside a parallel region). */
static int team_size(size_t P) {
    const size_t t = (size_t)omp_get_max_threads(), s = n_slots(P);
    return (int)(t < s ? t : s);
}
static float *thread_cols(const conv_dims *d, float *ws, size_t P, int par) {
    const size_t t = par ? (size_t)omp_get_thread_num() : 0;
    KD_ASSERT(t < n_slots(P));
    return ws + t * col_slot(d);
}

static void conv_init(kd_layer *l, kd_rng *rng, int xavier) {
    conv_dims d = dims_of(l);
    /* torch's fans: fan_in = (C / G) * KH * KW (a weight row), fan_out = O * KH * KW. */
    kd_init_fill(l->t[CONV_W], d.O * d.KG, d.KG, d.O * d.KH * d.KW, rng, xavier);
    if (((const conv_hp *)l->hp)->bias) memset(l->t[CONV_B], 0, d.O * sizeof(float));
}

/* The sgemm of a piece: on the calling thread when the pieces run on the team, else on the
 * whole team (a batch or layer too small to split). Which one runs depends on the batch and the
 * layer, never on the thread count. */
static void piece_sgemm(int serial, int ta, int tb, size_t M, size_t N, size_t K, const float *A,
                        size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    if (serial) kd_sgemm_serial(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    else kd_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* Samples [b0, b1) of piece p of P. */
static void piece_range(size_t B, size_t P, size_t p, size_t *b0, size_t *b1) {
    *b0 = B * p / P;
    *b1 = B * (p + 1) / P;
}

/* A one-sample product splits among the team from this many multiply-adds: waking the team
 * costs a few microseconds, and a product of 1M takes about 20 on one core. The small ResNet
 * student's 1.8M-multiply-add layers ran slower on the team than on one thread (Xeon, one
 * sample, 2 threads, alternating: 229-242 us with them on the team, 189-193 us without); the
 * CNN teacher's 3.6M and ResNet-18's layers keep it. */
#define TEAM_MIN_MACS ((size_t)1 << 21)

/* What every piece of a forward pass reads. */
typedef struct {
    conv_dims d;
    const float *x, *w, *wt, *bias;
    const float *u, *ut; /* Winograd's weights (16, O, C), their transposed copies or NULL */
    float *y, *ws;
    const kd_sample_sink *sink;
    size_t B, P;
    int par, direct, wg, own, team;
    int act; /* KD_ACT_* applied to every output (a folded batch norm's activation) */
} fwd_job;

/* Winograd's product xi of a group (kd_wg_product): own or sgemm, as the layer's rule says. */
static void wg_product(const void *arg, size_t xi, const float *v, float *m, size_t ld,
                       int serial) {
    const fwd_job *j = arg;
    const size_t O = j->d.O, C = j->d.C;
    const float *u = j->u + xi * O * C, *vx = v + xi * kd_wg_step(C, ld);
    float *mx = m + xi * kd_wg_step(O, ld);
    const float *ut = j->ut ? j->ut + xi * kd_conv_gemm_transposed_floats(O, C) : NULL;
    if (j->own) kd_conv_gemm(O, C, ld, u, ut, NULL, KD_ACT_NONE, vx, ld, mx, ld, 0);
    else piece_sgemm(serial, 0, 0, O, ld, C, u, C, vx, ld, 0.0f, mx, ld);
}

/* The batch by Winograd in groups of kd_wg_group_size samples (fixed by the batch alone), each
 * sample handed on after its group; the groups shared out like pieces. */
static void wg_group(const fwd_job *j, size_t k, size_t g, float *ws) {
    const kd_wg_dims wd = wg_dims(&j->d);
    const size_t in_n = j->d.C * j->d.H * j->d.W, out_n = j->d.O * j->d.OHW, b = k * g;
    const size_t n = j->B - b < g ? j->B - b : g;
    kd_wg_group(&wd, j->x + b * in_n, n, j->bias, j->act, j->y + b * out_n, ws, wg_product, j,
                j->par);
    for (size_t s = b; j->sink && s < b + n; s++) j->sink->fn(j->sink->arg, s, j->y + s * out_n);
}
static void wg_batch(const fwd_job *j) {
    const kd_wg_dims wd = wg_dims(&j->d);
    const size_t g = kd_wg_group_size(&wd), n = (j->B + g - 1) / g;
    if (j->par) {
#pragma omp parallel for schedule(static) num_threads(team_size(j->P))
        for (size_t k = 0; k < n; k++) wg_group(j, k, g, thread_cols(&j->d, j->ws, j->P, 1));
    } else {
        for (size_t k = 0; k < n; k++) wg_group(j, k, g, thread_cols(&j->d, j->ws, j->P, 0));
    }
}

/* A batch by the direct kernel in groups of kd_conv_direct_group samples (fixed by the layer),
 * each run as one tall image and handed on after its group; the groups shared out like
 * pieces. */
static void direct_run(const fwd_job *j, size_t b, size_t n, float *ws) {
    const kd_cd_dims cd = cd_dims(&j->d);
    const size_t in_n = j->d.C * j->d.H * j->d.W, out_n = j->d.O * j->d.OHW;
    kd_conv_direct(&cd, n, j->x + b * in_n, j->w, j->bias, j->y + b * out_n, ws, 0);
    kd_act_inplace(j->y + b * out_n, n * out_n, j->act);
    for (size_t s = b; j->sink && s < b + n; s++) j->sink->fn(j->sink->arg, s, j->y + s * out_n);
}
static void direct_batch(const fwd_job *j) {
    const size_t g = direct_group(&j->d), n = (j->B + g - 1) / g;
    if (j->par) {
#pragma omp parallel for schedule(static) num_threads(team_size(j->P))
        for (size_t k = 0; k < n; k++)
            direct_run(j, k * g, j->B - k * g < g ? j->B - k * g : g,
                       thread_cols(&j->d, j->ws, j->P, 1));
    } else {
        for (size_t k = 0; k < n; k++)
            direct_run(j, k * g, j->B - k * g < g ? j->B - k * g : g,
                       thread_cols(&j->d, j->ws, j->P, 0));
    }
}

/* kd_sample_cols for one sample whose product runs on the team: the team lowers it too, each
 * thread the rows of a block of input channels (a copy: the same floats either way). */
static const float *team_cols(const conv_dims *d, const float *x, float *col) {
    if (kd_cols_are_input(d)) return x;
    const size_t nblk = d->C < 8 ? d->C : 8;
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < nblk; k++)
        kd_im2col_channels(d, x, col, d->C * k / nblk, d->C * (k + 1) / nblk);
    return col;
}

/* x (B, C, H, W) -> y (B, O, OH, OW). Per sample b: col (K, OHW) = im2col(x[b]);
 * y[b] (O, OHW) = bias + W (O, K) col, the product written straight into y[b] (beta = 1 on top
 * of the bias, or beta = 0 without one), then handed to sink when there is one. With groups,
 * one product per group g: y[b] rows of g (O/G, OHW) = W rows of g (O/G, K/G) times the column
 * rows of g's input channels (K/G, OHW). */
static void forward_piece(const fwd_job *j, size_t p) {
    const conv_dims d = j->d;
    const size_t in_n = d.C * d.H * d.W, out_n = d.O * d.OHW, OG = d.O / d.G;
    const kd_cd_dims cd = cd_dims(&d);
    float *col = thread_cols(&d, j->ws, j->P, j->par);
    size_t b0, b1;
    piece_range(j->B, j->P, p, &b0, &b1);
    for (size_t b = b0; b < b1; b++) {
        float *yb = j->y + b * out_n;
        if (j->wg) {
            const kd_wg_dims wd = wg_dims(&d);
            kd_wg_sample(&wd, j->x + b * in_n, j->bias, j->act, yb, col, wg_product, j, j->team,
                         j->par);
        } else if (j->direct) {
            kd_conv_direct(&cd, 1, j->x + b * in_n, j->w, j->bias, yb, col,
                           j->team ? (size_t)team_size(SIZE_MAX) : 0);
            kd_act_inplace(yb, out_n, j->act);
        } else {
            const float *cols = j->team ? team_cols(&d, j->x + b * in_n, col)
                                        : kd_sample_cols(&d, j->x + b * in_n, col);
            if (j->own) {
                kd_conv_gemm(d.O, d.K, d.OHW, j->w, j->wt, j->bias, j->act, cols, d.OHW, yb,
                             d.OHW, j->team);
            } else {
                if (j->bias)
                    for (size_t o = 0; o < d.O; o++)
                        for (size_t q = 0; q < d.OHW; q++) yb[o * d.OHW + q] = j->bias[o];
                for (size_t g = 0; g < d.G; g++)
                    piece_sgemm(j->par, 0, 0, OG, d.OHW, d.KG, j->w + g * OG * d.KG, d.KG,
                                cols + g * d.KG * d.OHW, d.OHW, j->bias ? 1.0f : 0.0f,
                                yb + g * OG * d.OHW, d.OHW);
                kd_act_inplace(yb, out_n, j->act);
            }
        }
        if (j->sink) j->sink->fn(j->sink->arg, b, yb);
    }
}

/* A frozen layer's forward, its workspace past the fold slot, unless Winograd takes the batch
 * and the plane is larger than FROZEN_OVER_WG (conv2d_impl.h says why); 0 where it did not run. */
#define FROZEN_OVER_WG 64
static int frozen_ran(kd_layer *l, const conv_dims *d, const float *scale, const float *shift,
                      const float *res, int act, const float *x, float *y,
                      const kd_sample_sink *sink, size_t B, kd_ctx *ctx) {
    if (!l->frozen || ctx->training || (!ctx->bands && wg_on(d, B) && d->OHW > FROZEN_OVER_WG))
        return 0;
    float *ws = fold_slot_at(d, ctx->workspace, n_pieces(B)) + fold_slot(d);
    return kd_conv2d_frozen_forward(l, scale, shift, res, act, x, y, sink, B, ws, ctx);
}

/* The pieces of a pass run on the team, or in turn on the calling thread outside any parallel
 * region: an inactive region around them (`omp parallel if (0)`) would make every sgemm or team
 * kernel inside it a nested region, for which libgomp starts and joins a new thread on each
 * call (a one-sample ResNet-18 forward made about 800 threads a second, and ran 2x slower on
 * two threads than on one). */
static void forward_with(kd_layer *l, const float *w, const float *bias, int act, const float *x,
                         float *y, const kd_sample_sink *sink, size_t B, kd_ctx *ctx) {
    const conv_dims d = dims_of(l);
    if (frozen_ran(l, &d, NULL, bias, NULL, act, x, y, sink, B, ctx)) return;
    if (is_depthwise(&d)) {
        const kd_dw_dims dd = dw_dims(&d);
        kd_depthwise_forward(&dd, x, w, bias, act, y, sink, B, ctx->workspace,
                             n_slots(SIZE_MAX));
        return;
    }
    fwd_job j = {.d = d, .x = x, .w = w, .bias = bias, .y = y, .ws = ctx->workspace,
                 .sink = sink, .B = B, .P = n_pieces(B), .act = act};
    j.par = j.P > 1 && KD_PAR(B * d.K * d.OHW);
    j.wg = !ctx->training && wg_on(&d, B);
    j.direct = !ctx->training && !j.wg && direct_shape(&d) && direct_on(&d, B);
    /* one sample with the team free: the kernel splits its channels among the team */
    j.team = !j.par && !omp_in_parallel() && omp_get_max_threads() > 1 &&
             d.K * d.OHW * d.O >= TEAM_MIN_MACS;
    if (j.wg) {
        const kd_wg_dims wd = wg_dims(&d);
        float *u = weight_slot_at(&d, ctx->workspace, j.P);
        const size_t T = kd_wg_tiles(&wd), cols = j.team ? T : kd_wg_group_size(&wd) * T;
        j.own = own_product_on(d.O, d.C, cols, j.team);
        /* with the transposed copies for a narrow last panel (a group's last one may be) */
        j.ut = kd_wg_weights(&wd, w, u, j.own);
        j.u = u;
    } else {
        j.own = !ctx->training && !j.direct && own_gemm_on(&d, j.team, B);
    }
    /* the transposed copy for a narrow last panel, once for a batch */
    if (j.own && !j.wg && B >= OWN_TRANSPOSE_MIN && kd_conv_gemm_narrow_tail(d.OHW)) {
        float *wt = weight_slot_at(&d, ctx->workspace, j.P);
        kd_conv_gemm_transpose(d.O, d.K, w, wt);
        j.wt = wt;
    }
    if (j.wg && !j.team) {
        wg_batch(&j);
    } else if (j.direct && !j.team && B >= DIRECT_GROUP_MIN) {
        direct_batch(&j);
    } else if (j.par) {
#pragma omp parallel for schedule(static) num_threads(team_size(j.P))
        for (size_t p = 0; p < j.P; p++) forward_piece(&j, p);
    } else {
        for (size_t p = 0; p < j.P; p++) forward_piece(&j, p);
    }
}

static void forward_impl(kd_layer *l, const float *x, float *y, const kd_sample_sink *sink,
                         size_t B, kd_ctx *ctx) {
    const float *bias = ((const conv_hp *)l->hp)->bias ? l->t[CONV_B] : NULL;
    forward_with(l, l->t[CONV_W], bias, KD_ACT_NONE, x, y, sink, B, ctx);
}

static void conv_forward(kd_layer *l, const float *x, float *y, size_t B, kd_ctx *ctx) {
    forward_impl(l, x, y, NULL, B, ctx);
}

void kd_conv2d_forward_to(kd_layer *l, const float *x, float *y, const kd_sample_sink *sink,
                          size_t B, kd_ctx *ctx) {
    forward_impl(l, x, y, sink, B, ctx);
}

int kd_conv2d_forward_folded(kd_layer *l, const float *k, const float *mu, const float *beta,
                             int act, const float *res, const float *x, float *y, size_t B,
                             kd_ctx *ctx) {
    const conv_dims d = dims_of(l);
    const float *w = l->t[CONV_W], *b = ((const conv_hp *)l->hp)->bias ? l->t[CONV_B] : NULL;
    float *wf = fold_slot_at(&d, ctx->workspace, n_pieces(B)), *bf = wf + round16(d.O * d.KG);
    for (size_t o = 0; o < d.O; o++) bf[o] = k[o] * ((b ? b[o] : 0.0f) - mu[o]) + beta[o];
    if (frozen_ran(l, &d, k, bf, res, act, x, y, NULL, B, ctx)) return 1; /* k after the sums */
    for (size_t o = 0; o < d.O; o++)
        for (size_t q = 0; q < d.KG; q++) wf[o * d.KG + q] = k[o] * w[o * d.KG + q];
    forward_with(l, wf, bf, res ? KD_ACT_NONE : act, x, y, NULL, B, ctx);
    return 0;
}

/* What every piece of a backward pass reads. */
typedef struct {
    conv_dims d, td;
    const float *x, *dy, *w, *wt;
    const kd_dy_source *src;
    float *dx, *ws, *parts;
    int db, par, tdx;
    size_t B, P;
} bwd_job;

/* Per sample b of piece p, with dY = dy[b] (O, OHW), or made by src into the thread's slot,
 * and col = im2col(x[b]) rebuilt:
 *   dW_p (O, K) += dY col^T;  db_p (O) += row sums of dY;  dcol (K, OHW) = W^T dY;
 *   dx[b] = col2im(dcol)   (or, where transposed_dx: dx[b] = Wt im2col'(dY)).
 * With groups, each product per group as in forward: dW rows of g += dY rows of g times g's
 * column rows^T, g's dcol rows = W rows of g^T times dY rows of g. */
static void backward_piece(const bwd_job *j, size_t p) {
    const conv_dims d = j->d, td = j->td;
    const size_t in_n = d.C * d.H * d.W, out_n = d.O * d.OHW, kcols = round16(d.K * d.OHW),
                 OK = d.O * d.KG, OG = d.O / d.G;
    float *col = thread_cols(&d, j->ws, j->P, j->par), *dcol = col + kcols,
          *dy_b = dcol + kcols;
    float *dwp = j->parts + p * part_slot(&d), *dbp = dwp + round16(OK);
    size_t b0, b1;
    piece_range(j->B, j->P, p, &b0, &b1);
    for (size_t b = b0; b < b1; b++) {
        const float *g = j->dy + b * out_n;
        if (j->src) {
            j->src->fn(j->src->arg, b, dy_b);
            g = dy_b;
        }
        const float *cols = kd_sample_cols(&d, j->x + b * in_n, col);
        for (size_t k = 0; k < d.G; k++)
            piece_sgemm(j->par, 0, 1, OG, d.KG, d.OHW, g + k * OG * d.OHW, d.OHW,
                        cols + k * d.KG * d.OHW, d.OHW, b > b0 ? 1.0f : 0.0f,
                        dwp + k * OG * d.KG, d.KG);
        if (j->db)
            for (size_t o = 0; o < d.O; o++)
                dbp[o] = (b > b0 ? dbp[o] : 0.0f) + kd_row_sum(g + o * d.OHW, d.OHW);
        if (!j->dx) continue;
        if (j->tdx) {
            const float *gc = kd_sample_cols(&td, g, dcol);
            piece_sgemm(j->par, 0, 0, d.C, td.OHW, td.K, j->wt, td.K, gc, td.OHW, 0.0f,
                        j->dx + b * in_n, td.OHW);
            continue;
        }
        for (size_t k = 0; k < d.G; k++)
            piece_sgemm(j->par, 1, 0, d.KG, d.OHW, OG, j->w + k * OG * d.KG, d.KG,
                        g + k * OG * d.OHW, d.OHW, 0.0f, dcol + k * d.KG * d.OHW, d.OHW);
        kd_col2im(&d, dcol, j->dx + b * in_n);
    }
}

/* The pieces (on the team, or in turn outside any parallel region: see forward_impl), then
 * dW += dW_0 + dW_1 + ... in piece order (db likewise), split by element. */
static void backward_impl(kd_layer *l, const float *x, const float *dy, const kd_dy_source *src,
                          float *dx, size_t B, kd_ctx *ctx) {
    if (B == 0) return;
    const conv_dims d = dims_of(l);
    const size_t P = n_pieces(B), OK = d.O * d.KG, part = part_slot(&d);
    const float *w = l->t[CONV_W];
    float *dw = l->dt[CONV_W], *db = ((const conv_hp *)l->hp)->bias ? l->dt[CONV_B] : NULL;
    if (is_depthwise(&d)) {
        const kd_dw_dims dd = dw_dims(&d);
        kd_depthwise_backward(&dd, x, w, dy, src, dx, dw, db, B, ctx->workspace, P, n_slots(P));
        return;
    }
    float *parts = parts_at(&d, ctx->workspace, P), *wt = weight_slot_at(&d, ctx->workspace, P);
    const bwd_job j = {.d = d, .td = transposed_dims(&d), .x = x, .dy = dy, .w = w, .wt = wt,
                       .src = src, .dx = dx, .ws = ctx->workspace, .parts = parts,
                       .db = db != NULL, .par = P > 1 && KD_PAR(B * d.K * d.OHW),
                       .tdx = dx && transposed_dx(&d), .B = B, .P = P};
    if (j.tdx) flip_weights(&d, w, wt);
    if (j.par) {
#pragma omp parallel for schedule(static) num_threads(team_size(P))
        for (size_t p = 0; p < P; p++) backward_piece(&j, p);
    } else {
        for (size_t p = 0; p < P; p++) backward_piece(&j, p);
    }
    /* The pieces' sums, added in piece order by one thread per element. */
#pragma omp parallel for schedule(static) if (KD_PAR(P * OK))
    for (size_t i = 0; i < OK; i++) {
        float s = parts[i];
        for (size_t p = 1; p < P; p++) s += parts[p * part + i];
        dw[i] += s;
    }
    if (db) {
        const float *dbs = parts + round16(OK);
        for (size_t o = 0; o < d.O; o++) {
            float s = dbs[o];
            for (size_t p = 1; p < P; p++) s += dbs[p * part + o];
            db[o] += s;
        }
    }
}

static void conv_backward(kd_layer *l, const float *x, const float *y, const float *dy,
                          float *dx, size_t B, kd_ctx *ctx) {
    (void)y;
    backward_impl(l, x, dy, NULL, dx, B, ctx);
}

void kd_conv2d_backward_from(kd_layer *l, const float *x, const kd_dy_source *src, float *dx,
                             size_t B, kd_ctx *ctx) {
    backward_impl(l, x, NULL, src, dx, B, ctx);
}

static int conv_describe(const kd_layer *l, cJSON *obj) {
    const conv_hp *hp = l->hp;
    if (kd_spec_add_size(obj, "channels", hp->channels) || kd_spec_add_kernel(obj, hp->kh, hp->kw))
        return -1;
    if (hp->stride != 1 && kd_spec_add_size(obj, "stride", hp->stride)) return -1;
    if (hp->padding && kd_spec_add_size(obj, "padding", hp->padding)) return -1;
    if (hp->groups != 1 && kd_spec_add_size(obj, "groups", hp->groups)) return -1;
    return !hp->bias ? kd_spec_add_false(obj, "bias") : 0;
}

static size_t conv_macs(const kd_layer *l) {
    conv_dims d = dims_of(l);
    return d.O * d.OHW * d.KG;
}

const kd_layer_ops kd_layer_conv2d = {
    .type = "conv2d",
    .hp_size = sizeof(conv_hp),
    .configure = conv_configure,
    .tensors = conv_tensors,
    .workspace_floats = conv_workspace,
    .init = conv_init,
    .forward = conv_forward,
    .backward = conv_backward,
    .describe = conv_describe,
    .macs = conv_macs,
    .frozen_floats = kd_conv2d_frozen_floats,
    .freeze = kd_conv2d_freeze,
    .export_onnx = kd_conv2d_export_onnx,
    .export_c = kd_conv2d_export_c,
};
