/* export_qint8.c - `distill export IN OUT --dtype qint8 --calibrate N --config C`: post-training
 * quantization of IN into a full-integer model (kd_quant.h), activation ranges from the first
 * N samples of C's training split (after the validation hold-out, in file order, preprocessed
 * as in training), written as a qint8 safetensors file; then the float and integer models'
 * accuracy on C's evaluation split, side by side. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kd_checkpoint.h"
#include "kd_data.h"
#include "kd_eval.h"
#include "kd_export.h"
#include "kd_quant.h"

/* The first n samples of d's order into a new (n, numel) buffer. */
static kd_status take_samples(kd_eval_data *d, const kd_preprocess *pp, const kd_model *m,
                              const char *in, size_t *n, float **x, kd_err *err) {
    kd_dataset *ds = NULL;
    kd_status st = kd_eval_data_open(d, pp, &ds, err);
    if (!st) st = kd_eval_check_fit(m, in, kd_dataset_info(ds), d->src.path, err);
    if (!st && *n > d->n) *n = d->n;
    size_t numel = kd_shape_numel(&m->input), cells;
    if (!st && (kd_mul_size(*n, numel, &cells) || !(*x = malloc((cells ? cells : 1) * sizeof **x))))
        st = kd_err_set(err, KD_EIO, "out of memory for %zu calibration samples", *n);
    if (!st) st = kd_dataset_get(ds, d->order, *n, *x, NULL, NULL, err);
    kd_dataset_close(ds);
    return st;
}

/* Top-1 accuracy of the float model m and the integer model q on d, and their agreement. */
static kd_status compare(kd_eval_data *d, const kd_preprocess *pp, kd_model *m, kd_qmodel *q,
                         size_t batch, kd_err *err) {
    kd_dataset *ds = NULL;
    size_t C = m->n_classes, numel = kd_shape_numel(&m->input);
    float *zf = NULL, *zq = NULL, *x = NULL;
    int32_t *y = NULL;
    int8_t *q8 = NULL;
    kd_status st = kd_eval_data_open(d, pp, &ds, err);
    if (!st && !kd_dataset_info(ds)->has_labels)
        st = kd_err_set(err, KD_EINPUT, "%s: no labels to measure accuracy with", d->src.path);
    if (!st && (!(zf = malloc(d->n * C * sizeof *zf)) || !(zq = malloc(d->n * C * sizeof *zq)) ||
                !(y = malloc(d->n * sizeof *y)) || !(x = malloc(batch * numel * sizeof *x)) ||
                !(q8 = malloc(batch * C))))
        st = kd_err_set(err, KD_EIO, "out of memory for %zu samples", d->n);
    if (!st) st = kd_eval_forward_all(m, ds, d->order, d->n, batch, zf, y, NULL, err);
    for (size_t off = 0; !st && off < d->n; off += batch) {
        size_t B = d->n - off < batch ? d->n - off : batch;
        st = kd_dataset_get(ds, d->order + off, B, x, NULL, NULL, err);
        if (!st) st = kd_qmodel_forward(q, x, B, q8, zq + off * C, err);
    }
    if (!st) {
        double af = kd_topk_accuracy(zf, y, d->n, C, 1), aq = kd_topk_accuracy(zq, y, d->n, C, 1);
        printf("accuracy  %s split, %zu samples: float %.2f%%, qint8 %.2f%% (%+.2f points), "
               "agreement %.2f%%\n", d->split, d->n, 100 * af, 100 * aq, 100 * (aq - af),
               100 * kd_agreement(zf, zq, d->n, C));
    }
    kd_dataset_close(ds);
    free(zf), free(zq), free(x), free(y), free(q8);
    return st;
}

static void print_sizes(const char *out, const kd_qmodel *q, size_t n_cal) {
    size_t weights = 0, other = 0;
    for (size_t i = 0; i < q->n_ops; i++) {
        const kd_qop *op = &q->ops[i];
        size_t row = op->kind == KD_QOP_CONV ? op->g.C / op->g.groups * op->g.kh * op->g.kw
                                             : op->in_features;
        if (op->w) weights += op->n_ch * row, other += op->n_ch * 12;
        if (op->kind == KD_QOP_LUT) weights += 256;
    }
    printf("exported  %s: %zu integer ops, ranges from %zu calibration samples; %zu int8 weight "
           "bytes, %zu bytes of int32 bias and multipliers\n", out, q->n_ops, n_cal, weights,
           other);
}

/* The integer model as a C header or an ONNX QDQ model, with the checkpoint's preprocessing,
 * class names (and, for ONNX, its metadata). */
static kd_status write_deployment(const kd_cli_qint8 *job, const kd_qmodel *q, const kd_model *m,
                                  const kd_preprocess *pp, char **classes, size_t n_classes,
                                  kd_err *err) {
    const kd_export_info info = {NULL, pp, classes, n_classes, job->in, job->keys, job->vals,
                                 job->n_md};
    size_t arena = 0;
    kd_status st;
    if (!strcmp(job->format, "onnx")) {
        st = kd_export_onnx_qint8(job->out, q, &m->input, &info, err);
        if (!st) printf("exported  %s: ONNX QDQ model\n", job->out);
        return st;
    }
    st = kd_export_c_qint8(job->out, q, &m->input, job->c_name, &info, &arena, err);
    if (!st) printf("exported  %s: C header, %zu bytes of arena\n", job->out, arena);
    return st;
}

kd_status kd_cli_export_qint8(const kd_cli_qint8 *job, kd_err *err) {
    kd_eval_data cal, test;
    kd_model m;
    kd_preprocess pp;
    kd_qmodel q;
    int has_pp = 0;
    float *x = NULL;
    char **classes = NULL;
    size_t n_classes = 0, n = job->calibrate;
    memset(&cal, 0, sizeof cal), memset(&test, 0, sizeof test), memset(&m, 0, sizeof m);
    memset(&q, 0, sizeof q);
    kd_status st = kd_eval_data_from_config(&cal, job->config, NULL, 0, "train", err);
    if (!st) st = kd_eval_data_from_config(&test, job->config, NULL, 0, job->split, err);
    if (!st)
        st = kd_eval_load_model(job->in, &cal, NULL, &m, &pp, &has_pp, &classes, &n_classes, err);
    const kd_preprocess *use = has_pp ? &pp : &cal.pp;
    if (!st) st = take_samples(&cal, use, &m, job->in, &n, &x, err);
    if (!st && (st = kd_quant_build(&m, x, n, &q, err))) kd_err_prefix(err, "%s", job->in);
    if (!st && strcmp(job->format, "safetensors"))
        st = write_deployment(job, &q, &m, use, classes, n_classes, err);
    else if (!st) st = kd_qmodel_write(job->out, &q, job->keys, job->vals, job->n_md, err);
    if (!st) {
        kd_cli_warn_if_any(err);
        print_sizes(job->out, &q, n);
        st = compare(&test, use, &m, &q, job->batch, err);
    }
    free(x);
    kd_free_strings(classes, n_classes);
    kd_qmodel_free(&q);
    kd_model_free(&m);
    if (has_pp) kd_preprocess_free(&pp);
    kd_eval_data_free(&cal), kd_eval_data_free(&test);
    return st;
}
