/* qnet.c - a full-integer (qint8) file as something eval and predict run: the integer
 * reference (kd_qmodel_forward) behind the evaluation loop's net interface, its int8 logits
 * dequantized, with the source checkpoint's preprocessing, class names and input shape. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kd_checkpoint.h"

/* Only the header is read: the whole file is read once, by whichever loader it goes to (a
 * malformed file is that loader's to report). */
int kd_cli_is_qint8(const char *path) {
    FILE *f = fopen(path, "rb");
    unsigned char len8[8];
    char *json = NULL;
    cJSON *h = NULL;
    uint64_t n = 0;
    int yes = 0;
    if (!f || fread(len8, 1, 8, f) != 8) goto cleanup;
    for (int i = 7; i >= 0; i--) n = n << 8 | len8[i];
    if (n == 0 || n > KD_ST_MAX_HEADER || !(json = malloc((size_t)n + 1)) ||
        fread(json, 1, (size_t)n, f) != (size_t)n)
        goto cleanup;
    json[n] = '\0';
    h = cJSON_Parse(json);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(h, "__metadata__"), "dtype");
    yes = cJSON_IsString(dtype) && strcmp(dtype->valuestring, "qint8") == 0;
cleanup:
    cJSON_Delete(h);
    if (f) fclose(f);
    free(json);
    return yes;
}

static kd_status qnet_reserve(void *self, size_t B, kd_err *err) {
    kd_cli_qnet *qn = self;
    kd_status st = kd_qmodel_reserve(&qn->q, B, err);
    if (st || B <= qn->cap) return st;
    size_t C = qn->net.n_classes;
    float *z = realloc(qn->logits, B * C * sizeof *z);
    if (z) qn->logits = z;
    int8_t *zq = realloc(qn->logits_q, B * C);
    if (zq) qn->logits_q = zq;
    if (!z || !zq) return kd_err_set(err, KD_EIO, "out of memory for %zu x %zu logits", B, C);
    qn->cap = B;
    return KD_OK;
}

static const float *qnet_forward(void *self, const float *x, size_t B) {
    kd_cli_qnet *qn = self;
    kd_err err;
    /* Reserved for B: the reference allocates nothing and cannot fail. */
    kd_qmodel_forward(&qn->q, x, B, qn->logits_q, qn->logits, &err);
    return qn->logits;
}

/* The input shape from the recorded arch's "input" (as the float model took it); without one,
 * the first convolution's [C, H, W], else the input's size as a vector. */
static void input_shape(const kd_st_file *f, const kd_qmodel *q, kd_shape *s) {
    cJSON *arch = cJSON_Parse(kd_st_meta(f, "arch") ? kd_st_meta(f, "arch") : "null");
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(arch, "input");
    size_t numel = 1;
    memset(s, 0, sizeof *s);
    int n = cJSON_IsArray(in) ? cJSON_GetArraySize(in) : 0;
    for (const cJSON *d = in ? in->child : NULL; n <= KD_MAX_RANK && d; d = d->next)
        if (cJSON_IsNumber(d) && d->valuedouble >= 1 && d->valuedouble < 1e9)
            s->d[s->rank++] = (size_t)d->valuedouble, numel *= (size_t)d->valuedouble;
    cJSON_Delete(arch);
    if (s->rank && s->rank == n && numel == q->values[0].numel) return;
    memset(s, 0, sizeof *s);
    if (q->n_ops && q->ops[0].kind == KD_QOP_CONV && q->ops[0].in[0] == 0)
        *s = (kd_shape){3, {q->ops[0].g.C, q->ops[0].g.H, q->ops[0].g.W}};
    else
        *s = (kd_shape){1, {q->values[0].numel}};
}

kd_status kd_cli_qnet_load(const char *path, kd_cli_qnet *qn, kd_preprocess *pp, int *has_pp,
                           char ***classes, size_t *n_classes, kd_err *err) {
    kd_st_file f;
    memset(qn, 0, sizeof *qn);
    kd_status st = kd_st_read(&f, path, err);
    if (st) return st;
    if (!(st = kd_qmodel_read(&f, &qn->q, err)))
        st = kd_ckpt_read_meta(&f, pp, has_pp, classes, n_classes, err);
    if (!st) {
        input_shape(&f, &qn->q, &qn->net.input);
        qn->net.n_classes = qn->q.values[qn->q.output].numel;
        qn->net.self = qn;
        qn->net.reserve = qnet_reserve;
        qn->net.forward = qnet_forward;
        for (size_t i = 0; i < qn->q.n_ops; i++) {
            const kd_qop *op = &qn->q.ops[i];
            size_t row = op->kind == KD_QOP_CONV
                             ? op->g.C / op->g.groups * op->g.kh * op->g.kw : op->in_features;
            qn->n_weights += op->w ? op->n_ch * row : 0;
        }
    }
    kd_st_free(&f);
    if (st) kd_cli_qnet_free(qn);
    return st;
}

void kd_cli_qnet_free(kd_cli_qnet *qn) {
    if (!qn) return;
    kd_qmodel_free(&qn->q);
    free(qn->logits), free(qn->logits_q);
    memset(qn, 0, sizeof *qn);
}
