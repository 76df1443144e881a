/* concat.c - values joined along their first per-sample axis: channels for [C, H, W] values,
 * features for [D] (torch.cat(dim=1) on a batch). A sample's output is its inputs' samples one
 * after another, so forward and backward are copies of contiguous runs. */
#include <cJSON.h>
#include <omp.h>
#include <string.h>

#include "kd_strbuf.h"
#include "layer_impl.h"

static kd_status concat_configure(kd_layer *l, const cJSON *spec, kd_err *err) {
    static const char *const none[] = {NULL};
    char a[64], b[64];
    kd_status st = kd_spec_check_fields(l, spec, none, err);
    if (st) return st;
    l->out = l->ins[0];
    for (size_t k = 1; k < l->n_in; k++) {
        const kd_shape *s = &l->ins[k];
        int same = s->rank == l->ins[0].rank;
        for (int d = 1; same && d < s->rank; d++) same = s->d[d] == l->ins[0].d[d];
        if (!same)
            return kd_layer_err(l, err, "from: input %zu is %s but input 0 is %s; concat joins "
                                "values that differ only in their first axis", k,
                                kd_shape_str(s, a, sizeof a), kd_shape_str(&l->ins[0], b, sizeof b));
        if (kd_add_size(l->out.d[0], s->d[0], &l->out.d[0]))
            return kd_layer_err(l, err, "the joined axis is too large");
    }
    return KD_OK;
}

/* Offset of input k inside a sample's output, and its per-sample size. */
static size_t part_of(const kd_layer *l, size_t k, size_t *n) {
    size_t off = 0;
    for (size_t j = 0; j < k; j++) off += kd_shape_numel(&l->ins[j]);
    *n = kd_shape_numel(&l->ins[k]);
    return off;
}

static void concat_forward(kd_layer *l, const float *const *x, float *y, size_t B, kd_ctx *ctx) {
    (void)ctx;
    const size_t out = kd_shape_numel(&l->out), n_in = l->n_in;
    const int par = KD_PAR(B * out);
    #pragma omp parallel for schedule(static) if (par)
    for (size_t b = 0; b < B; b++) {
        size_t off = 0;
        for (size_t k = 0; k < n_in; k++) {
            const size_t n = kd_shape_numel(&l->ins[k]);
            memcpy(y + b * out + off, x[k] + b * n, n * sizeof *y);
            off += n;
        }
    }
}

static void concat_backward(kd_layer *l, size_t k, const float *dy, float *dx, int accumulate,
                            size_t B, kd_ctx *ctx) {
    (void)ctx;
    size_t n;
    const size_t out = kd_shape_numel(&l->out), off = part_of(l, k, &n);
    const int par = KD_PAR(B * n);
    #pragma omp parallel for schedule(static) if (par)
    for (size_t b = 0; b < B; b++) {
        const float *restrict src = dy + b * out + off;
        float *restrict dst = dx + b * n;
        if (accumulate) KD_VEC_FOR(i, n, dst[i] += src[i]);
        else memcpy(dst, src, n * sizeof *dst);
    }
}

static kd_status concat_export_onnx(const kd_layer *l, kd_onnx_emitter *em, kd_err *err) {
    const char *in[64];
    if (l->n_in > sizeof in / sizeof in[0])
        return kd_layer_err(l, err, "ONNX export joins at most 64 values in one concat");
    for (size_t k = 0; k < l->n_in; k++) in[k] = kd_onnx_input(em, k);
    const kd_onnx_attr axis = KD_ONNX_INT("axis", 1);
    return kd_onnx_node(em, "Concat", in, l->n_in, &axis, 1, NULL, err);
}

static kd_status concat_export_c(const kd_layer *l, kd_c_emitter *em, kd_err *err) {
    kd_strbuf code = {0};
    kd_strbuf_puts(&code, "long i;\nfloat *o = y;\n(void)x;");
    for (size_t k = 0; k < l->n_in; k++) {
        const size_t n = kd_shape_numel(&l->ins[k]);
        kd_strbuf_printf(&code, "\nfor (i = 0; i < %zuL; i++) o[i] = xs[%zu][i];\no += %zu;", n,
                         k, n);
    }
    kd_status st = code.oom ? kd_err_set(err, KD_EIO, "C export: out of memory")
                            : kd_c_code(em, 0, err, "%s", code.s);
    kd_strbuf_free(&code);
    return st;
}

const kd_layer_ops kd_layer_concat = {
    .type = "concat",
    .configure = concat_configure,
    .forward_merge = concat_forward,
    .backward_merge = concat_backward,
    .export_onnx = concat_export_onnx,
    .export_c = concat_export_c,
};
