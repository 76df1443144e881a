/* c_qint8.c - a full-integer model (kd_quant.h) as one C99 header: int8 weights and activations,
 * int32 accumulators, the requantization of docs/integer.md written out in plain integer C, so
 * every C99 compiler gives the bytes distill's reference gives. Float appears only to quantize
 * the raw input and to dequantize the logits. Values live in a caller's byte arena, placed by
 * liveness (first fit), so <NAME>_ARENA_BYTES is the exact peak; nothing assumes its alignment. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export_impl.h"
#include "kd_quant.h"

/* The integer kernels, one copy per header with the model's prefix for "@" (so two models can
 * share a program). The same arithmetic as src/qint (tests/test_qint.c checks that one). A
 * header holds only the kernels its ops call: an unused static function is a -Wall warning. */
static const char kernel_core[] =
    "static int32_t @hmul(int32_t a, int32_t b) {\n"
    "    int64_t ab, nudge;\n"
    "    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;\n"
    "    ab = (int64_t)a * b;\n"
    "    nudge = ab >= 0 ? (1 << 30) : 1 - (1 << 30);\n"
    "    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));\n"
    "}\n"
    "static int32_t @dpot(int32_t x, int e) {\n"
    "    int32_t mask = (int32_t)(((int64_t)1 << e) - 1), rem = x & mask;\n"
    "    int32_t thr = (mask >> 1) + (x < 0 ? 1 : 0);\n"
    "    return (int32_t)((x >> e) + (rem > thr ? 1 : 0));\n"
    "}\n"
    "static int32_t @apply(int32_t x, int32_t mult, int shift) {\n"
    "    if (shift > 0) {\n"
    "        int64_t s = (int64_t)x * ((int64_t)1 << shift);\n"
    "        x = s > INT32_MAX ? INT32_MAX : s < INT32_MIN ? INT32_MIN : (int32_t)s;\n"
    "    }\n"
    "    x = @hmul(x, mult);\n"
    "    return shift < 0 ? @dpot(x, -shift) : x;\n"
    "}\n"
    "static signed char @store(int32_t acc, int32_t mult, int shift, int zp, int lo, int hi) {\n"
    "    int32_t y = zp + @apply(acc, mult, shift);\n"
    "    return (signed char)(y < lo ? lo : y > hi ? hi : y);\n"
    "}\n";
/* Dense and convolution share one product loop: each output channel's accumulator starts at
 * its bias with the input's zero point folded in (bias - x_zp * sum of the row's weights,
 * computed by the exporter), so the loop is a plain dot product of the int8 input and weights.
 * Four rows at a time reuse one int16 copy of 32 (then 16) inputs; the counted loops of int16
 * products summed in int32 are what compilers vectorise (pmaddwd on SSE2). Integer sums are
 * exact in any order and the reader bounds them below 2^31, so every compiler gives the same
 * bytes. */
static const char kernel_dot[] =
    "static void @dot4(const signed char *x, const signed char *w, long n, int32_t *a) {\n"
    "    const signed char *w1 = w + n, *w2 = w1 + n, *w3 = w2 + n;\n"
    "    long c, k, e32 = n - n % 32, e16 = n - n % 16;\n"
    "    for (c = 0; c < e32; c += 32) {\n"
    "        int16_t v[32];\n"
    "        int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;\n"
    "        for (k = 0; k < 32; k++) v[k] = x[c + k];\n"
    "        for (k = 0; k < 32; k++) s0 += v[k] * w[c + k];\n"
    "        for (k = 0; k < 32; k++) s1 += v[k] * w1[c + k];\n"
    "        for (k = 0; k < 32; k++) s2 += v[k] * w2[c + k];\n"
    "        for (k = 0; k < 32; k++) s3 += v[k] * w3[c + k];\n"
    "        a[0] += s0, a[1] += s1, a[2] += s2, a[3] += s3;\n"
    "    }\n"
    "    for (c = e32; c < e16; c += 16) {\n"
    "        int16_t v[16];\n"
    "        int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;\n"
    "        for (k = 0; k < 16; k++) v[k] = x[c + k];\n"
    "        for (k = 0; k < 16; k++) s0 += v[k] * w[c + k];\n"
    "        for (k = 0; k < 16; k++) s1 += v[k] * w1[c + k];\n"
    "        for (k = 0; k < 16; k++) s2 += v[k] * w2[c + k];\n"
    "        for (k = 0; k < 16; k++) s3 += v[k] * w3[c + k];\n"
    "        a[0] += s0, a[1] += s1, a[2] += s2, a[3] += s3;\n"
    "    }\n"
    "    for (c = e16; c < n; c++) {\n"
    "        int32_t v = x[c];\n"
    "        a[0] += v * w[c], a[1] += v * w1[c], a[2] += v * w2[c], a[3] += v * w3[c];\n"
    "    }\n"
    "}\n"
    "static int32_t @dot1(const signed char *x, const signed char *w, long n) {\n"
    "    long c, k, e32 = n - n % 32;\n"
    "    int32_t a = 0;\n"
    "    for (c = 0; c < e32; c += 32) {\n"
    "        int32_t s = 0;\n"
    "        for (k = 0; k < 32; k++) s += (int16_t)x[c + k] * w[c + k];\n"
    "        a += s;\n"
    "    }\n"
    "    for (c = e32; c < n; c++) a += (int32_t)x[c] * w[c];\n"
    "    return a;\n"
    "}\n"
    "/* y[r * ys] = the requantized b[r] + x . w[r], for the `rows` rows of n weights. */\n"
    "static void @rows(const signed char *x, const signed char *w, const int32_t *b,\n"
    "                  const int32_t *m, const int32_t *s, long n, long rows, long ys, int zp,\n"
    "                  int lo, int hi, signed char *y) {\n"
    "    long r, t, e4 = rows - rows % 4;\n"
    "    for (r = 0; r < e4; r += 4) {\n"
    "        int32_t a[4];\n"
    "        for (t = 0; t < 4; t++) a[t] = b[r + t];\n"
    "        @dot4(x, w + r * n, n, a);\n"
    "        for (t = 0; t < 4; t++)\n"
    "            y[(r + t) * ys] = @store(a[t], m[r + t], (int)s[r + t], zp, lo, hi);\n"
    "    }\n"
    "    for (r = e4; r < rows; r++)\n"
    "        y[r * ys] = @store(b[r] + @dot1(x, w + r * n, n), m[r], (int)s[r], zp, lo, hi);\n"
    "}\n";
static const char kernel_conv[] =
    "/* g: C, H, W, K, kh, kw, stride, pad, groups, OH, OW. For each output position and group,\n"
    "   the input patch is copied into col (a padded tap holds xzp, which the folded bias\n"
    "   cancels), then the group's output channels are dot products with it. */\n"
    "static void @conv(const signed char *x, int xzp, const signed char *w, const int32_t *b,\n"
    "                  const int32_t *m, const int32_t *s, const long *g, int zp, int lo, int hi,\n"
    "                  signed char *col, signed char *y) {\n"
    "    long cg = g[0] / g[8], kg = g[3] / g[8], n = cg * g[4] * g[5], p, oh, ow, c, r, t;\n"
    "    for (p = 0; p < g[8]; p++)\n"
    "        for (oh = 0; oh < g[9]; oh++)\n"
    "            for (ow = 0; ow < g[10]; ow++) {\n"
    "                signed char *o = col;\n"
    "                for (c = p * cg; c < (p + 1) * cg; c++)\n"
    "                    for (r = 0; r < g[4]; r++) {\n"
    "                        long ih = oh * g[6] + r - g[7];\n"
    "                        for (t = 0; t < g[5]; t++) {\n"
    "                            long iw = ow * g[6] + t - g[7];\n"
    "                            *o++ = ih < 0 || ih >= g[1] || iw < 0 || iw >= g[2]\n"
    "                                       ? (signed char)xzp : x[(c * g[1] + ih) * g[2] + iw];\n"
    "                        }\n"
    "                    }\n"
    "                @rows(col, w + p * kg * n, b + p * kg, m + p * kg, s + p * kg, n, kg,\n"
    "                      g[9] * g[10], zp, lo, hi, y + (p * kg * g[9] + oh) * g[10] + ow);\n"
    "            }\n"
    "}\n";
static const char kernel_pool[] =
    "/* avg = 0: the largest byte of each window; avg = 1: sum (x - xzp), requantized. */\n"
    "static void @pool(const signed char *x, int avg, int xzp, int32_t mult, int shift,\n"
    "                  const long *g, int zp, int lo, int hi, signed char *y) {\n"
    "    long p, oh, ow, r, t;\n"
    "    for (p = 0; p < g[0]; p++)\n"
    "        for (oh = 0; oh < g[9]; oh++)\n"
    "            for (ow = 0; ow < g[10]; ow++) {\n"
    "                long r0 = oh * g[6] - g[7], t0 = ow * g[6] - g[7];\n"
    "                long r1 = r0 + g[4], t1 = t0 + g[5];\n"
    "                int32_t acc = 0;\n"
    "                signed char best = -128;\n"
    "                if (r0 < 0) r0 = 0;\n"
    "                if (t0 < 0) t0 = 0;\n"
    "                if (r1 > g[1]) r1 = g[1];\n"
    "                if (t1 > g[2]) t1 = g[2];\n"
    "                for (r = r0; r < r1; r++)\n"
    "                    for (t = t0; t < t1; t++) {\n"
    "                        signed char v = x[(p * g[1] + r) * g[2] + t];\n"
    "                        acc += (int32_t)v - xzp;\n"
    "                        if (v > best) best = v;\n"
    "                    }\n"
    "                y[(p * g[9] + oh) * g[10] + ow] =\n"
    "                    avg ? @store(acc, mult, shift, zp, lo, hi) : best;\n"
    "            }\n"
    "}\n";
static const char kernel_rescale[] =
    "static void @rescale(const signed char *x, int xzp, int32_t mult, int shift, long n, int zp,\n"
    "                     int lo, int hi, signed char *y) {\n"
    "    long i;\n"
    "    for (i = 0; i < n; i++) y[i] = @store((int32_t)x[i] - xzp, mult, shift, zp, lo, hi);\n"
    "}\n";
static const char kernel_lut[] =
    "static void @lut(const signed char *t, const signed char *x, long n, signed char *y) {\n"
    "    long i;\n"
    "    for (i = 0; i < n; i++) y[i] = t[(unsigned char)x[i]];\n"
    "}\n";

typedef struct {
    const kd_qmodel *q;
    const kd_export_info *info;
    const char *name, *path;
    char lower[64], upper[64];
    size_t *off, arena;        /* per value: its place in the arena; the arena's size */
    size_t *col;               /* per op: the place of a conv op's patch */
    kd_export_pre pre;
} qheader;

/* Bytes of the patch a conv op copies for one output position (0 for other ops). */
static size_t col_bytes(const kd_qop *op) {
    return op->kind == KD_QOP_CONV ? op->g.C / op->g.groups * op->g.kh * op->g.kw : 0;
}

/* Places every value, and each conv op's patch, in the arena by first fit. Times: the input is
 * made at 0, op i runs at i + 1; a value lives from the op that makes it to the last op that
 * reads it (the output to the end), a patch during its op only. */
static int plan_arena(qheader *h) {
    const kd_qmodel *q = h->q;
    size_t n = 2 * q->n_ops + 1, items = 0;
    size_t *last = calloc(q->n_values, sizeof *last);
    struct item { size_t size, from, to, *at; } *it = calloc(n, sizeof *it);
    h->off = calloc(q->n_values, sizeof *h->off), h->col = calloc(q->n_ops, sizeof *h->col);
    if (!last || !it || !h->off || !h->col) return free(last), free(it), -1;
    for (size_t i = 0; i < q->n_ops; i++)
        for (size_t k = 0; k < q->ops[i].n_in; k++) last[q->ops[i].in[k]] = i + 1;
    last[q->output] = q->n_ops + 1;
    it[items++] = (struct item){q->values[0].numel, 0, last[0], &h->off[0]};
    for (size_t i = 0; i < q->n_ops; i++) {
        size_t v = q->ops[i].out;
        it[items++] = (struct item){q->values[v].numel, i + 1, last[v], &h->off[v]};
        if (col_bytes(&q->ops[i]))
            it[items++] = (struct item){col_bytes(&q->ops[i]), i + 1, i + 1, &h->col[i]};
    }
    for (size_t i = 0; i < items; i++) {
        size_t at = 0;
        for (int moved = 1; moved;) { /* the lowest place no item alive with it overlaps */
            moved = 0;
            for (size_t j = 0; j < i; j++) {
                const struct item *u = &it[j];
                if (u->to < it[i].from || it[i].to < u->from) continue;
                if (at < *u->at + u->size && *u->at < at + it[i].size)
                    at = *u->at + u->size, moved = 1;
            }
        }
        *it[i].at = at;
        if (at + it[i].size > h->arena) h->arena = at + it[i].size;
    }
    free(last), free(it);
    return 0;
}

static void put_ints(FILE *f, const char *type, const char *name, const void *v, size_t n,
                     int bytes) {
    fprintf(f, "static const %s %s[%zu] = {", type, name, n);
    for (size_t i = 0; i < n; i++) {
        long x = bytes == 1 ? ((const int8_t *)v)[i] : ((const int32_t *)v)[i];
        fprintf(f, "%s%s%ld", i ? "," : "", i % 24 ? "" : "\n    ", x);
    }
    fputs("};\n", f);
}

/* Weights per output channel of a dense or conv op. */
static size_t row_len(const kd_qop *op) {
    return op->kind == KD_QOP_CONV ? op->g.C / op->g.groups * op->g.kh * op->g.kw
                                   : op->in_features;
}

/* Channel k's bias with the input zero point folded in: bias - xzp * sum of the row, so that
 * bias + sum (x - xzp) w = folded + sum x w. */
static long long folded_bias(const kd_qop *op, int xzp, size_t k, size_t row) {
    long long sum = 0;
    for (size_t i = 0; i < row; i++) sum += op->w[k * row + i];
    return op->bias[k] - (long long)xzp * sum;
}

/* The header's sums stay in int32: the folded bias plus up to 128 * 127 per product. The
 * reader's bounds (|bias| and 255 * 127 per product each below 2^30) imply it; checked anyway,
 * as a model handed over in memory has not been through the reader. */
static kd_status check_sums(const kd_qmodel *q, kd_err *err) {
    for (size_t i = 0; i < q->n_ops; i++) {
        const kd_qop *op = &q->ops[i];
        if (!op->w) continue;
        size_t row = row_len(op);
        for (size_t k = 0; k < op->n_ch; k++)
            if (llabs(folded_bias(op, q->values[op->in[0]].zp, k, row)) +
                    (long long)row * 128 * 127 >= (1LL << 31))
                return kd_err_set(err, KD_EINPUT, "C export: op %zu (layer %s), channel %zu: "
                                  "the sums could overflow int32", i, op->name, k);
    }
    return KD_OK;
}

/* One op's constant arrays. */
static void put_weights(FILE *f, const qheader *h, size_t i) {
    const kd_qop *op = &h->q->ops[i];
    char name[96];
    if (op->kind == KD_QOP_LUT) {
        snprintf(name, sizeof name, "%st%zu", h->lower, i);
        put_ints(f, "signed char", name, op->lut, 256, 1);
    }
    if (op->kind == KD_QOP_CONV || op->kind == KD_QOP_MAXPOOL || op->kind == KD_QOP_AVGPOOL) {
        const kd_qconv_geom *g = &op->g;
        fprintf(f, "static const long %sg%zu[11] = {%zu, %zu, %zu, %zu, %zu, %zu, %zu, %zu, %zu, "
                "%zu, %zu};\n", h->lower, i, g->C, g->H, g->W, g->K, g->kh, g->kw, g->stride,
                g->pad, g->groups, g->OH, g->OW);
    }
    if (!op->w) return;
    size_t row = row_len(op);
    int32_t *m = malloc(op->n_ch * sizeof *m), *s = malloc(op->n_ch * sizeof *s);
    int32_t *b = malloc(op->n_ch * sizeof *b);
    for (size_t k = 0; m && s && b && k < op->n_ch; k++)
        m[k] = op->mult[k].mult, s[k] = op->mult[k].shift,
        b[k] = (int32_t)folded_bias(op, h->q->values[op->in[0]].zp, k, row);
    snprintf(name, sizeof name, "%sw%zu", h->lower, i);
    put_ints(f, "signed char", name, op->w, op->n_ch * row, 1);
    snprintf(name, sizeof name, "%sb%zu", h->lower, i);
    if (b) put_ints(f, "int32_t", name, b, op->n_ch, 4);
    snprintf(name, sizeof name, "%sm%zu", h->lower, i);
    if (m) put_ints(f, "int32_t", name, m, op->n_ch, 4);
    snprintf(name, sizeof name, "%ss%zu", h->lower, i);
    if (s) put_ints(f, "int32_t", name, s, op->n_ch, 4);
    free(m), free(s), free(b);
}

/* Where value v is: the caller's input, or its place in the arena. */
static const char *at(const qheader *h, size_t v, char *buf, size_t cap) {
    if (v == 0) snprintf(buf, cap, "input_q");
    else snprintf(buf, cap, "((signed char *)(arena + %zu))", h->off[v]);
    return buf;
}

static void put_op(FILE *f, const qheader *h, size_t i) {
    const kd_qop *op = &h->q->ops[i];
    const kd_qvalue *V = h->q->values;
    const char *L = h->lower;
    char x[64], y[64];
    at(h, op->in[0], x, sizeof x), at(h, op->out, y, sizeof y);
    int xzp = V[op->in[0]].zp;
    fprintf(f, "    /* op %zu, layer %s */\n", i, op->name);
    switch (op->kind) {
    case KD_QOP_DENSE:
        fprintf(f, "    %srows(%s, %sw%zu, %sb%zu, %sm%zu, %ss%zu, %zu, %zu, 1, %d, %d, %d, %s);\n",
                L, x, L, i, L, i, L, i, L, i, op->in_features, op->n_ch, op->o.zp, op->o.lo,
                op->o.hi, y);
        break;
    case KD_QOP_CONV:
        fprintf(f, "    %sconv(%s, %d, %sw%zu, %sb%zu, %sm%zu, %ss%zu, %sg%zu, %d, %d, %d,\n"
                "           (signed char *)(arena + %zu), %s);\n", L, x, xzp, L, i, L, i, L, i, L,
                i, L, i, op->o.zp, op->o.lo, op->o.hi, h->col[i], y);
        break;
    case KD_QOP_MAXPOOL:
    case KD_QOP_AVGPOOL:
        fprintf(f, "    %spool(%s, %d, %d, %d, %d, %sg%zu, %d, %d, %d, %s);\n", L, x,
                op->kind == KD_QOP_AVGPOOL, xzp, op->m.mult, op->m.shift, L, i, op->o.zp, op->o.lo,
                op->o.hi, y);
        break;
    case KD_QOP_ADD: /* each input shifted and rescaled, summed, requantized */
        fprintf(f, "    {\n        long i;\n        for (i = 0; i < %zu; i++) {\n"
                   "            int32_t sum = 0;\n", V[op->out].numel);
        for (size_t k = 0; k < op->n_in; k++)
            fprintf(f, "            sum += %sapply(((int32_t)%s[i] - %d) * (1 << %d), %d, %d);\n",
                    L, at(h, op->in[k], x, sizeof x), V[op->in[k]].zp, KD_QADD_SHIFT,
                    op->m_in[k].mult, op->m_in[k].shift);
        fprintf(f, "            %s[i] = %sstore(sum, %d, %d, %d, %d, %d);\n        }\n    }\n", y, L,
                op->m.mult, op->m.shift, op->o.zp, op->o.lo, op->o.hi);
        break;
    case KD_QOP_CONCAT: {
        size_t o = 0;
        for (size_t k = 0; k < op->n_in; k++) {
            fprintf(f, "    %srescale(%s, %d, %d, %d, %zu, %d, %d, %d, (signed char *)(arena + %zu));\n",
                    L, at(h, op->in[k], x, sizeof x), V[op->in[k]].zp, op->m_in[k].mult,
                    op->m_in[k].shift, V[op->in[k]].numel, op->o.zp, op->o.lo, op->o.hi,
                    h->off[op->out] + o);
            o += V[op->in[k]].numel;
        }
        break;
    }
    case KD_QOP_CLAMP: /* through an int: a bound of 127 on a signed char is -Wtype-limits */
        fprintf(f, "    {\n        long i;\n        for (i = 0; i < %zu; i++) {\n"
                   "            int v = %s[i];\n"
                   "            %s[i] = (signed char)(v < %d ? %d : v > %d ? %d : v);\n        }\n    }\n",
                V[op->out].numel, x, y, op->o.lo, op->o.lo, op->o.hi, op->o.hi);
        break;
    case KD_QOP_LUT:
        fprintf(f, "    %slut(%st%zu, %s, %zu, %s);\n", L, L, i, x, V[op->out].numel, y);
        break;
    }
}

static void put_declarations(FILE *f, const qheader *h) {
    const kd_qmodel *q = h->q;
    const char *L = h->lower, *U = h->upper, *base = strrchr(h->path, '/');
    const kd_qvalue *in = &q->values[0], *out = &q->values[q->output];
    fprintf(f, "/* %s - the full-integer (qint8) model %s as one C99 header, generated by distill "
            "%s.\n *\n", base ? base + 1 : h->path, h->name, KD_VERSION);
    fprintf(f, " * int8 weights and activations, int32 accumulators, TFLite's requantization\n"
               " * (docs/integer.md of distill); %zu ops; the caller passes %s_ARENA_BYTES bytes\n"
               " * of arena (any alignment). In ONE C file: #define %s_IMPLEMENTATION before the\n"
               " * include. %sforward_q takes the quantized input and uses no float at all;\n"
               " * %sforward takes the raw sample (the recorded preprocessing is inside). */\n",
            q->n_ops, U, U, L, L);
    fprintf(f, "#ifndef %s_H\n#define %s_H\n#include <stdint.h>\n\n", U, U);
    fprintf(f, "#define %s_INPUT_SIZE %zu\n#define %s_N_CLASSES %zu\n#define %s_ARENA_BYTES %zu\n",
            U, in->numel, U, q->n_classes, U, h->arena);
    char num[40];
    fprintf(f, "#define %s_INPUT_SCALE %s\n#define %s_INPUT_ZERO_POINT %d\n", U,
            kd_c_float(in->scale, num, sizeof num), U, in->zp);
    fprintf(f, "#define %s_OUTPUT_SCALE %s\n#define %s_OUTPUT_ZERO_POINT %d\n\n", U,
            kd_c_float(out->scale, num, sizeof num), U, out->zp);
    fputs("#ifdef __cplusplus\nextern \"C\" {\n#endif\n", f);
    fprintf(f, "extern const char *const %sclass_names[%s_N_CLASSES];\n", L, U);
    fprintf(f, "void %sforward_q(const signed char *input_q, signed char *logits_q, "
               "unsigned char *arena);\n", L);
    fprintf(f, "void %sforward(const float *raw_input, float *logits, unsigned char *arena);\n", L);
    fprintf(f, "int %spredict(const float *raw_input, unsigned char *arena);\n", L);
    fprintf(f, "#ifdef __cplusplus\n}\n#endif\n#endif /* %s_H */\n\n", U);
}

/* forward: raw -> preprocessing (float, as the dataset computes it) -> the input's grid. */
static void put_forward(FILE *f, const qheader *h) {
    const kd_qmodel *q = h->q;
    const char *L = h->lower, *U = h->upper;
    fprintf(f, "\nvoid %sforward(const float *raw_input, float *logits, unsigned char *arena) {\n"
               "    signed char *xq = (signed char *)(arena + %zu);\n"
               "    signed char *lq = (signed char *)(arena + %zu);\n    long c, i;\n",
            L, h->off[0], h->off[q->output]);
    fprintf(f, "    for (c = 0; c < %zu; c++)\n        for (i = 0; i < %zu; i++) {\n"
               "            /* two roundings, as distill computes it: a volatile product\n"
               "               cannot be contracted into a fused multiply-add */\n"
               "            volatile float p = raw_input[c * %zu + i] * %spre_mul[c];\n"
               "            float x = p + %spre_add[c];\n"
               "            double t = (double)x / (double)%s_INPUT_SCALE;\n            long n;\n"
               "            /* round(t), halves away from zero, without a library call: beyond\n"
               "               256 steps the clamp below decides; t - n is exact */\n"
               "            t = t < -256.0 ? -256.0 : t > 256.0 ? 256.0 : t;\n"
               "            n = (long)t;\n            t -= (double)n;\n"
               "            n += (t >= 0.5 ? 1 : 0) - (t <= -0.5 ? 1 : 0) + %s_INPUT_ZERO_POINT;\n"
               "            xq[c * %zu + i] = (signed char)(n < -128 ? -128 : n > 127 ? 127 : n);\n"
               "        }\n", h->pre.n_ch, h->pre.plane, h->pre.plane, L, L, U, U, h->pre.plane);
    fprintf(f, "    %sforward_q(xq, lq, arena);\n    for (i = 0; i < %s_N_CLASSES; i++)\n"
               "        logits[i] = %s_OUTPUT_SCALE * (float)(lq[i] - %s_OUTPUT_ZERO_POINT);\n}\n",
            L, U, U, U);
    fprintf(f, "\nint %spredict(const float *raw_input, unsigned char *arena) {\n"
               "    float logits[%s_N_CLASSES];\n    int best = 0, i;\n"
               "    %sforward(raw_input, logits, arena);\n"
               "    for (i = 1; i < %s_N_CLASSES; i++)\n"
               "        if (logits[i] > logits[best]) best = i;\n    return best;\n}\n", L, U, L, U);
}

/* The kernels q's ops call (the core requantization unless only tables, clamps and max-pools
 * run), "@" replaced by the model's prefix. */
static void put_kernels(FILE *f, const qheader *h) {
    int uses[8] = {0}, core = 0;
    for (size_t i = 0; i < h->q->n_ops; i++) uses[h->q->ops[i].kind] = 1;
    for (int k = 0; k < 8; k++)
        core |= uses[k] && k != KD_QOP_LUT && k != KD_QOP_CLAMP;
    const char *parts[] = {core ? kernel_core : "",
                           uses[KD_QOP_DENSE] || uses[KD_QOP_CONV] ? kernel_dot : "",
                           uses[KD_QOP_CONV] ? kernel_conv : "",
                           uses[KD_QOP_MAXPOOL] || uses[KD_QOP_AVGPOOL] ? kernel_pool : "",
                           uses[KD_QOP_CONCAT] ? kernel_rescale : "",
                           uses[KD_QOP_LUT] ? kernel_lut : ""};
    for (size_t p = 0; p < sizeof parts / sizeof *parts; p++)
        for (const char *k = parts[p]; *k; k++)
            if (*k == '@') fputs(h->lower, f);
            else fputc(*k, f);
}

static kd_status write_qheader(FILE *f, void *ctx, kd_err *err) {
    const qheader *h = ctx;
    const kd_qmodel *q = h->q;
    const char *L = h->lower, *U = h->upper;
    put_declarations(f, h);
    fprintf(f, "#if defined(%s_IMPLEMENTATION) && !defined(%s_IMPLEMENTED)\n#define %s_IMPLEMENTED\n\n",
            U, U, U);
    put_kernels(f, h);
    char num[40];
    fprintf(f, "static const float %spre_mul[%zu] = {", L, h->pre.n_ch);
    for (size_t c = 0; c < h->pre.n_ch; c++)
        fprintf(f, "%s%s", c ? ", " : "", kd_c_float(h->pre.mul[c], num, sizeof num));
    fprintf(f, "};\nstatic const float %spre_add[%zu] = {", L, h->pre.n_ch);
    for (size_t c = 0; c < h->pre.n_ch; c++)
        fprintf(f, "%s%s", c ? ", " : "", kd_c_float(h->pre.add[c], num, sizeof num));
    fputs("};\n", f);
    for (size_t i = 0; i < q->n_ops; i++) put_weights(f, h, i);
    fprintf(f, "const char *const %sclass_names[%s_N_CLASSES] = {", L, U);
    for (size_t k = 0; k < q->n_classes; k++) {
        char index[24];
        snprintf(index, sizeof index, "%zu", k);
        fputs(k ? ", " : "", f);
        kd_export_c_string(f, h->info->class_names && k < h->info->n_classes &&
                                      h->info->class_names[k] ? h->info->class_names[k] : index);
    }
    fprintf(f, "};\n\nvoid %sforward_q(const signed char *input_q, signed char *logits_q, "
               "unsigned char *arena) {\n    long i;\n", L);
    for (size_t i = 0; i < q->n_ops; i++) put_op(f, h, i);
    fprintf(f, "    for (i = 0; i < %s_N_CLASSES; i++) logits_q[i] = ((signed char *)(arena + %zu))[i];\n}\n",
            U, h->off[q->output]);
    put_forward(f, h);
    fprintf(f, "#endif /* %s_IMPLEMENTATION */\n", U);
    return ferror(f) ? kd_err_set(err, KD_EIO, "write failed") : KD_OK;
}

kd_status kd_export_c_qint8(const char *path, const kd_qmodel *q, const kd_shape *input,
                            const char *name, const kd_export_info *info, size_t *arena,
                            kd_err *err) {
    qheader h;
    memset(&h, 0, sizeof h);
    h.q = q, h.info = info, h.name = name, h.path = path;
    if (!kd_export_c_name_ok(name))
        return kd_err_set(err, KD_EUSAGE, "%s: name \"%s\" is not a C identifier of at most 48 "
                          "characters ([A-Za-z_][A-Za-z0-9_]*)", path, name);
    for (size_t i = 0; name[i]; i++)
        h.lower[i] = (char)tolower((unsigned char)name[i]),
        h.upper[i] = (char)toupper((unsigned char)name[i]);
    strcat(h.lower, "_");
    kd_status st = kd_export_pre_init(&h.pre, info->pp, input, err);
    if (st) return st;
    if (plan_arena(&h)) st = kd_err_set(err, KD_EIO, "C export: out of memory");
    if (!st) st = check_sums(q, err);
    if (!st) st = kd_write_atomic(path, write_qheader, &h, err);
    if (!st && arena) *arena = h.arena;
    kd_export_pre_free(&h.pre);
    free(h.off), free(h.col);
    return st;
}
