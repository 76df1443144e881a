/* test_depthwise.c - conv2d's groups: grouped and depthwise convolutions forward and backward
 * against a double-precision reference written here from torch.nn.Conv2d's definition, finite-
 * difference gradients, the same bits on 1 and 2 threads, torch's weight shape and
 * initialisation fans, the arch string, and the configuration errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_gradcheck.h"
#include "kd_nn.h"
#include "kd_rng.h"
#include "kd_test.h"
#include "kd_threads.h"

#define GC_TOL 1e-2

typedef struct {
    size_t C, H, W, O, G, KH, KW, S, P;
    int bias;
    size_t B;
} gconv_case;

static size_t out_len(size_t n, size_t k, size_t s, size_t p) { return (n + 2 * p - k) / s + 1; }

static void gconv_json(const gconv_case *c, char *buf, size_t cap) {
    snprintf(buf, cap,
             "[{\"type\":\"conv2d\",\"channels\":%zu,\"kernel\":[%zu,%zu],\"stride\":%zu,"
             "\"padding\":%zu,\"groups\":%zu,\"bias\":%s}]",
             c->O, c->KH, c->KW, c->S, c->P, c->G, c->bias ? "true" : "false");
}

/* torch.nn.Conv2d with groups, in double: output channel o belongs to group g = o / (O/G) and
 * reads input channels g*(C/G) + ci, ci < C/G, through weight [o, ci, i, j]:
 *   y[b, o, oh, ow] = bias[o] + sum_{ci, i, j} w[o, ci, i, j] x[b, g*C/G + ci, oh*S-P+i, ow*S-P+j]
 * and the adjoint of that sum for dw, db, dx (zero padding contributes nothing). */
static void naive_gconv(const gconv_case *c, const float *x, const float *w, const float *bias,
                        const float *dy, double *y, double *dw, double *db, double *dx) {
    const size_t OH = out_len(c->H, c->KH, c->S, c->P), OW = out_len(c->W, c->KW, c->S, c->P);
    const size_t CG = c->C / c->G, OG = c->O / c->G;
    memset(dw, 0, c->O * CG * c->KH * c->KW * sizeof *dw);
    memset(db, 0, c->O * sizeof *db);
    memset(dx, 0, c->B * c->C * c->H * c->W * sizeof *dx);
    for (size_t b = 0; b < c->B; b++)
        for (size_t o = 0; o < c->O; o++)
            for (size_t oh = 0; oh < OH; oh++)
                for (size_t ow = 0; ow < OW; ow++) {
                    const size_t yi = ((b * c->O + o) * OH + oh) * OW + ow;
                    double acc = bias ? bias[o] : 0.0, g = dy[yi];
                    db[o] += g;
                    for (size_t ci = 0; ci < CG; ci++)
                        for (size_t i = 0; i < c->KH; i++)
                            for (size_t j = 0; j < c->KW; j++) {
                                long ih = (long)(oh * c->S + i) - (long)c->P;
                                long iw = (long)(ow * c->S + j) - (long)c->P;
                                if (ih < 0 || iw < 0 || ih >= (long)c->H || iw >= (long)c->W)
                                    continue;
                                size_t wi = ((o * CG + ci) * c->KH + i) * c->KW + j;
                                size_t xc = o / OG * CG + ci;
                                size_t xi =
                                    ((b * c->C + xc) * c->H + (size_t)ih) * c->W + (size_t)iw;
                                acc += (double)w[wi] * x[xi];
                                dw[wi] += g * x[xi];
                                dx[xi] += g * w[wi];
                            }
                    y[yi] = acc;
                }
}

/* The depthwise forward in float, in the order the C header's $conv2d adds (every tap inside
 * the input in (i, j) order from 0, then the bias): the kernels promise these exact bits. */
static void ordered_depthwise(const gconv_case *c, const float *x, const float *w,
                              const float *bias, float *y) {
    const size_t OH = out_len(c->H, c->KH, c->S, c->P), OW = out_len(c->W, c->KW, c->S, c->P);
    for (size_t q = 0; q < c->B * c->C; q++)
        for (size_t oh = 0; oh < OH; oh++)
            for (size_t ow = 0; ow < OW; ow++) {
                const size_t ch = q % c->C;
                float s = 0.0f;
                for (size_t i = 0; i < c->KH; i++)
                    for (size_t j = 0; j < c->KW; j++) {
                        long ih = (long)(oh * c->S + i) - (long)c->P;
                        long iw = (long)(ow * c->S + j) - (long)c->P;
                        if (ih < 0 || iw < 0 || ih >= (long)c->H || iw >= (long)c->W) continue;
                        const float p = w[(ch * c->KH + i) * c->KW + j] *
                                        x[(q * c->H + (size_t)ih) * c->W + (size_t)iw];
                        s += p;
                    }
                y[(q * OH + oh) * OW + ow] = bias ? s + bias[ch] : s;
            }
}

static void to_float(const double *d, float *f, size_t n) {
    for (size_t i = 0; i < n; i++) f[i] = (float)d[i];
}

static void fill(kd_rng *r, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * kd_rng_uniform(r) - 1.0f;
}

/* One grouped layer forward and backward (the layer's own backward, so dx is produced),
 * against naive_gconv. */
static void check_gconv(const gconv_case *c, uint64_t seed) {
    char json[256];
    gconv_json(c, json, sizeof json);
    const kd_shape in = {3, {c->C, c->H, c->W}};
    kd_model m = {0};
    kd_err err;
    if (kd_model_init(&m, &in, json, 1, &err) || kd_model_reserve(&m, c->B, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s: %s", json, err.msg);
        kd_model_free(&m);
        return;
    }
    const size_t OH = out_len(c->H, c->KH, c->S, c->P), OW = out_len(c->W, c->KW, c->S, c->P);
    const size_t nx = c->B * c->C * c->H * c->W, ny = c->B * c->O * OH * OW;
    const size_t nw = c->O * (c->C / c->G) * c->KH * c->KW;
    kd_layer *l = &m.layers[0];
    CHECK_EQ_INT(m.n_params, nw + (c->bias ? c->O : 0));
    kd_rng r;
    kd_rng_seed(&r, seed);
    fill(&r, m.params, m.n_params);
    float *x = malloc(nx * sizeof *x), *dy = malloc(ny * sizeof *dy), *dx = malloc(nx * sizeof *dx);
    size_t nf = nx > ny ? nx : ny;
    if (nw > nf) nf = nw;  /* a tiny plane has more weights than values */
    float *f = malloc(nf * sizeof *f);
    double *yd = malloc(ny * sizeof *yd), *dwd = malloc(nw * sizeof *dwd);
    double *dbd = malloc(c->O * sizeof *dbd), *dxd = malloc(nx * sizeof *dxd);
    fill(&r, x, nx);
    fill(&r, dy, ny);
    for (size_t i = 0; i < nx; i++) dx[i] = 1e6f;  /* backward writes dx, never adds to it */
    kd_ctx ctx = {1, NULL, NULL, 0, 0, 0};
    const float *y = kd_model_forward(&m, x, c->B, &ctx);
    naive_gconv(c, x, l->t[0], c->bias ? l->t[1] : NULL, dy, yd, dwd, dbd, dxd);
    to_float(yd, f, ny);
    if (!CHECK_FLOATS(y, f, ny, 1e-5, 1e-4)) printf("    (%s, y)\n", json);
    if (c->G == c->C && c->G == c->O) {
        ordered_depthwise(c, x, l->t[0], c->bias ? l->t[1] : NULL, f);
        if (!CHECK_FLOATS(y, f, ny, 0, 0)) printf("    (%s, y bit for bit)\n", json);
    }
    kd_model_zero_grad(&m);
    for (size_t i = 0; i < nw; i++) l->dt[0][i] = 0.5f;  /* backward adds to the gradients */
    l->ops->backward(l, x, y, dy, dx, c->B, &ctx);
    for (size_t i = 0; i < nw; i++) f[i] = (float)(dwd[i] + 0.5);
    if (!CHECK_FLOATS(l->dt[0], f, nw, 1e-4, 1e-4)) printf("    (%s, dw)\n", json);
    if (c->bias) {
        to_float(dbd, f, c->O);
        if (!CHECK_FLOATS(l->dt[1], f, c->O, 1e-4, 1e-4)) printf("    (%s, db)\n", json);
    }
    to_float(dxd, f, nx);
    if (!CHECK_FLOATS(dx, f, nx, 1e-5, 1e-4)) printf("    (%s, dx)\n", json);
    free(x);
    free(dy);
    free(dx);
    free(f);
    free(yd);
    free(dwd);
    free(dbd);
    free(dxd);
    kd_model_free(&m);
}

KD_TEST(conv_groups_forward_backward_match_naive_loops) {
    static const gconv_case cases[] = {
        /* C, H, W, O, G, KH, KW, S, P, bias, B */
        /* Depthwise (G == C == O): the direct kernels, every stride / padding path. */
        {3, 7, 9, 3, 3, 3, 3, 1, 1, 1, 2},
        {4, 8, 8, 4, 4, 3, 3, 2, 1, 1, 3},
        {2, 9, 7, 2, 2, 5, 5, 1, 2, 0, 2},
        {2, 9, 11, 2, 2, 5, 5, 2, 0, 1, 2},
        {3, 6, 5, 3, 3, 2, 3, 3, 2, 1, 2},   /* stride 3, generic strided loops */
        {2, 4, 4, 2, 2, 3, 3, 1, 3, 1, 2},   /* padding beyond the kernel: all-zero taps */
        {2, 5, 21, 2, 2, 1, 3, 1, 0, 1, 2},  /* rows longer than a vector block */
        {5, 12, 12, 5, 5, 3, 3, 1, 1, 1, 37}, /* 37 samples in 16 pieces */
        /* The 3x3 padding-1 kernels: flat stride 1 at its smallest planes and a long one, stride
         * 2 on odd planes (its last row and column on the border path) and on even ones. */
        {2, 3, 3, 2, 2, 3, 3, 1, 1, 0, 2},
        {2, 3, 17, 2, 2, 3, 3, 1, 1, 1, 2},
        {2, 19, 4, 2, 2, 3, 3, 1, 1, 1, 2},
        {3, 7, 9, 3, 3, 3, 3, 2, 1, 0, 2},
        {2, 14, 14, 2, 2, 3, 3, 2, 1, 1, 2},
        {2, 3, 3, 2, 2, 3, 3, 2, 1, 1, 2},
        {3, 2, 2, 3, 3, 3, 3, 1, 1, 1, 2},   /* planes under 3: every point on the border */
        {2, 1, 5, 2, 2, 3, 3, 1, 1, 0, 2},
        {2, 2, 2, 2, 2, 3, 3, 2, 1, 1, 2},
        /* Grouped im2col: 2 and 4 groups, a channel multiplier (G == C, O = 2C). */
        {4, 6, 7, 6, 2, 3, 3, 1, 1, 1, 2},
        {8, 5, 5, 4, 4, 3, 2, 2, 1, 0, 3},
        {3, 6, 6, 6, 3, 3, 3, 1, 1, 1, 2},
        {4, 9, 9, 8, 2, 3, 3, 1, 1, 1, 20},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_gconv(&cases[i], 300 + i);
}

KD_TEST(conv_groups_gradcheck) {
    static const gconv_case cases[] = {
        /* Depthwise: stride 1 and 2, padding 0 and 1, kernel 3 and 5, with and without bias. */
        {3, 6, 6, 3, 3, 3, 3, 1, 1, 1, 2},
        {3, 7, 7, 3, 3, 3, 3, 2, 0, 0, 2},
        {2, 7, 6, 2, 2, 5, 5, 1, 1, 0, 2},
        {2, 9, 9, 2, 2, 5, 5, 2, 1, 1, 2},
        {2, 5, 5, 2, 2, 3, 3, 1, 0, 0, 3},
        {2, 6, 6, 2, 2, 3, 3, 2, 1, 1, 2},
        /* Grouped: 2 and 4 groups. */
        {4, 5, 5, 6, 2, 3, 3, 1, 1, 1, 2},
        {4, 6, 5, 8, 4, 3, 3, 2, 1, 0, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[256];
        gconv_json(&cases[i], json, sizeof json);
        const kd_shape in = {3, {cases[i].C, cases[i].H, cases[i].W}};
        if (kd_gradcheck(&in, json, cases[i].B, 50 + i, 1, GC_TOL) != 0) printf("    (%s)\n", json);
    }
    /* MobileNet's block (pointwise, depthwise, pointwise), and a depthwise layer before the
     * batchnorm -> maxpool -> relu group that the model runs fused with the convolution (the
     * sample sink and per-sample output gradient paths). */
    const kd_shape img = {3, {2, 8, 8}};
    CHECK_EQ_INT(kd_gradcheck(&img,
                              "[{\"type\":\"conv2d\",\"channels\":4,\"kernel\":1},"
                              "{\"type\":\"relu6\"},"
                              "{\"type\":\"conv2d\",\"channels\":4,\"kernel\":3,\"padding\":1,"
                              "\"groups\":4,\"bias\":false},{\"type\":\"hardswish\"},"
                              "{\"type\":\"conv2d\",\"channels\":3,\"kernel\":1}]",
                              3, 61, 1, GC_TOL), 0);
    CHECK_EQ_INT(kd_gradcheck(&img,
                              "[{\"type\":\"conv2d\",\"channels\":2,\"kernel\":3,\"padding\":1,"
                              "\"groups\":2},{\"type\":\"batchnorm\"},"
                              "{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"relu\"},"
                              "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]",
                              3, 62, 1, GC_TOL), 0);
}

/* One layer's forward and backward on a fixed batch of LB samples: y, dx and the parameter
 * gradients, concatenated into out. */
#define LB 19
static size_t run_layer(const char *layers, const kd_shape *in, float *out, size_t cap) {
    kd_model m = {0};
    kd_err err;
    if (kd_model_init(&m, in, layers, 1, &err) || kd_model_reserve(&m, LB, &err)) {
        kd_test_fail(__FILE__, __LINE__, "%s: %s", layers, err.msg);
        kd_model_free(&m);
        return 0;
    }
    kd_rng rng;
    kd_rng_seed(&rng, 9);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    kd_model_zero_grad(&m);
    kd_layer *l = &m.layers[0];
    const size_t nx = LB * kd_shape_numel(in), ny = LB * kd_shape_numel(&l->out);
    float *x = kd_alloc_floats(nx), *dy = kd_alloc_floats(ny), *dx = kd_alloc_floats(nx);
    for (size_t i = 0; i < nx; i++) x[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < ny; i++) dy[i] = kd_rng_normal(&rng);
    kd_ctx ctx = {1, &rng, m.workspace, 0, 0, 0};
    l->ops->forward(l, x, m.acts[0], LB, &ctx);
    l->ops->backward(l, x, m.acts[0], dy, dx, LB, &ctx);
    size_t n = 0;
    const float *parts[] = {m.acts[0], dx, m.grads};
    const size_t sizes[] = {ny, nx, m.n_params};
    for (int k = 0; k < 3; k++) {
        KD_ASSERT(n + sizes[k] <= cap);
        memcpy(out + n, parts[k], sizes[k] * sizeof *out);
        n += sizes[k];
    }
    kd_free_aligned(x);
    kd_free_aligned(dy);
    kd_free_aligned(dx);
    kd_model_free(&m);
    return n;
}

KD_TEST(conv_groups_same_bits_on_one_and_two_threads) {
    static const char *const specs[] = {
        "[{\"type\":\"conv2d\",\"channels\":6,\"kernel\":3,\"padding\":1,\"groups\":6}]",
        "[{\"type\":\"conv2d\",\"channels\":6,\"kernel\":5,\"stride\":2,\"padding\":2,"
        "\"groups\":6,\"bias\":false}]",
        "[{\"type\":\"conv2d\",\"channels\":4,\"kernel\":3,\"padding\":1,\"groups\":2}]",
        "[{\"type\":\"relu6\"}]",
        "[{\"type\":\"hardswish\"}]",
    };
    const kd_shape in = {3, {6, 11, 13}};
    const size_t cap = 3 * LB * 6 * 11 * 13 + 4096;
    float *ref = malloc(cap * sizeof *ref), *got = malloc(cap * sizeof *got);
    const int def = kd_threads_get();
    kd_par_min = 1;  /* every parallel loop forks on these small shapes */
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        kd_threads_set(1);
        const size_t n = run_layer(specs[s], &in, ref, cap);
        CHECK(n > 0);
        kd_threads_set(2);
        CHECK_EQ_INT(run_layer(specs[s], &in, got, cap), n);
        if (memcmp(ref, got, n * sizeof *ref) != 0)
            kd_test_fail(__FILE__, __LINE__, "%s: 2 threads differ from 1 thread", specs[s]);
    }
    kd_par_min = KD_PAR_MIN;
    kd_threads_set(def);
    free(ref);
    free(got);
}

KD_TEST(conv_groups_weight_shape_init_and_arch) {
    const kd_shape in = {3, {64, 8, 8}};
    kd_model m = {0}, m2 = {0};
    kd_err err;
    CHECK(kd_model_init(&m, &in,
                        "[{\"type\":\"conv2d\",\"channels\":64,\"kernel\":3,\"padding\":1,"
                        "\"groups\":64},"
                        "{\"type\":\"conv2d\",\"channels\":32,\"kernel\":3,\"groups\":4,"
                        "\"bias\":false},{\"type\":\"conv2d\",\"channels\":8,\"kernel\":1}]",
                        1, &err) == KD_OK);
    if (m.n_layers != 3) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    /* torch's weight shapes [out, in / groups, kh, kw] and MACs out * OH * OW * in/groups * k. */
    const kd_tensor *w0 = kd_model_tensor(&m, "0.weight"), *w1 = kd_model_tensor(&m, "1.weight");
    CHECK(w0 && w0->shape.rank == 4 && w0->shape.d[0] == 64 && w0->shape.d[1] == 1 &&
          w0->shape.d[2] == 3 && w0->shape.d[3] == 3);
    CHECK(w1 && w1->shape.d[0] == 32 && w1->shape.d[1] == 16);
    CHECK_EQ_INT(kd_model_macs(&m), 64 * 64 * 9 + 32 * 36 * 16 * 9 + 8 * 36 * 32);
    /* He init with torch's fan_in (in / groups) * kh * kw: variance 2/9 for the depthwise
     * weights (576 draws), 2/144 for the grouped ones (4608), not 2/576 and 2/576. */
    kd_rng rng;
    kd_rng_seed(&rng, 3);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    const kd_tensor *ws[] = {w0, w1};
    const double want[] = {2.0 / 9, 2.0 / 144};
    for (int k = 0; k < 2 && w0 && w1; k++) {
        double s2 = 0;
        for (size_t i = 0; i < ws[k]->numel; i++) s2 += (double)ws[k]->data[i] * ws[k]->data[i];
        CHECK_CLOSE(s2 / (double)ws[k]->numel, want[k], 0, 0.15);
    }
    /* "groups" in the arch only where it is not 1; the arch rebuilds the same layers. */
    char *arch = kd_model_arch_json(&m);
    CHECK(arch != NULL);
    if (arch) {
        CHECK_CONTAINS(arch, "\"groups\":64");
        CHECK_CONTAINS(arch, "\"groups\":4");
        const char *last = strstr(arch, "\"channels\":8");
        CHECK(last && !strstr(last, "groups"));
        CHECK(kd_model_init_arch(&m2, arch, 0, &err) == KD_OK);
        CHECK_EQ_INT(m2.n_params, m.n_params);
        if (m2.n_layers == 3) {
            CHECK_EQ_INT(kd_test_layer_field(&m2.layers[0], "groups"), 64);
            CHECK_EQ_INT(kd_test_layer_field(&m2.layers[1], "groups"), 4);
            CHECK(isnan(kd_test_layer_field(&m2.layers[2], "groups")));
        }
    }
    free(arch);
    kd_model_free(&m2);
    kd_model_free(&m);
}

static void expect_error(const kd_shape *in, const char *json, const char *want) {
    kd_model m = {0};
    kd_err err;
    kd_err_clear(&err);
    kd_status st = kd_model_init(&m, in, json, 1, &err);
    if (st != KD_EUSAGE)
        kd_test_fail(__FILE__, __LINE__, "%s: status %d, want KD_EUSAGE", json, (int)st);
    CHECK_CONTAINS(err.msg, want);
    kd_model_free(&m);
}

KD_TEST(conv_groups_config_errors_name_the_layer) {
    const kd_shape img = {3, {4, 8, 8}}, flat = {1, {16}};
    expect_error(&img, "[{\"type\":\"conv2d\",\"channels\":6,\"kernel\":3,\"groups\":3}]",
                 "layer 0 (conv2d): groups: 3 must divide both the input channels (4) and "
                 "channels (6)");
    expect_error(&img, "[{\"type\":\"relu\"},{\"type\":\"conv2d\",\"channels\":5,\"kernel\":3,"
                       "\"groups\":2}]",
                 "layer 1 (conv2d): groups: 2 must divide both the input channels (4) and "
                 "channels (5)");
    expect_error(&img, "[{\"type\":\"conv2d\",\"channels\":8,\"kernel\":3,\"groups\":8}]",
                 "groups: 8 must divide both the input channels (4)");
    expect_error(&img, "[{\"type\":\"conv2d\",\"channels\":4,\"kernel\":3,\"groups\":0}]",
                 "layer 0 (conv2d): groups");
    expect_error(&img, "[{\"type\":\"conv2d\",\"channels\":4,\"kernel\":3,\"groups\":1.5}]",
                 "layer 0 (conv2d): groups");
    /* Only conv2d takes groups. */
    expect_error(&img, "[{\"type\":\"maxpool2d\",\"kernel\":2,\"groups\":2}]",
                 "layer 0 (maxpool2d): unknown field \"groups\"");
    expect_error(&flat, "[{\"type\":\"dense\",\"units\":4,\"groups\":2}]",
                 "layer 0 (dense): unknown field \"groups\"");
    expect_error(&flat, "[{\"type\":\"relu6\",\"groups\":2}]",
                 "layer 0 (relu6): unknown field \"groups\" (this type takes none)");
}
