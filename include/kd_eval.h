/* kd_eval.h - evaluation metrics (top-k accuracy, Wilson interval, agreement, KL, ECE,
 * confusion matrix) as pure functions plus a streaming accumulator, and the weight formats of
 * `distill export` (int8 symmetric per output row, f16, bf16). No command-line knowledge. */
#ifndef KD_EVAL_H
#define KD_EVAL_H

#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"
#include "kd_data.h"
#include "kd_nn.h"
#include "kd_safetensors.h"

#define KD_ECE_BINS 15

/* ---- Pure metric functions over logits z (B, C) ---- */

/* Index of the largest entry of row (first one on ties). */
size_t kd_argmax(const float *row, size_t C);
/* 1 if label is among the k largest entries of row. Ties are broken towards the lower index
 * (an entry outranks the label if it is larger, or equal and earlier). k >= C is always a hit. */
int kd_topk_hit(const float *row, size_t C, int32_t label, size_t k);
/* Fraction of rows whose label is in the top k; labels < 0 are skipped (0 if none counted). */
double kd_topk_accuracy(const float *z, const int32_t *y, size_t B, size_t C, size_t k);

/* Wilson score interval for k successes in n trials at 95% (z = 1.959964):
 *   centre = (p + z^2/2n) / (1 + z^2/n),  half = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n).
 * n == 0 gives [0, 1]. */
void kd_wilson95(size_t k, size_t n, double *lo, double *hi);

/* Top-1 agreement between two models' logits: fraction of rows with the same argmax. */
double kd_agreement(const float *za, const float *zb, size_t B, size_t C);
/* KL(softmax(zt) || softmax(zs)) of one row at T = 1, computed in double with stable
 * log-softmax. */
double kd_kl_row(const float *zt, const float *zs, size_t C);
/* Mean over rows of kd_kl_row. */
double kd_kl_mean(const float *zt, const float *zs, size_t B, size_t C);

/* Expected calibration error with KD_ECE_BINS equal-width confidence bins:
 *   ECE = sum_b (n_b / N) |acc_b - conf_b|,
 * confidence = max softmax probability; bin b holds confidences in (b/15, (b+1)/15] (bin 0 also
 * takes 0). Rows with label < 0 are skipped. */
double kd_ece(const float *z, const int32_t *y, size_t B, size_t C);
/* Bin index of a confidence in [0, 1] (as above). */
int kd_ece_bin(double conf);

/* ---- Streaming accumulator (one model, optionally against a reference model) ---- */
typedef struct {
    size_t n_classes;
    size_t n;                         /* labelled rows seen */
    size_t n_rows;                    /* all rows seen */
    size_t top1, top5;                /* hits */
    size_t n_ref, agree;              /* rows compared with a reference, matches */
    double kl_sum;                    /* sum of KL(ref || model) */
    double bin_conf[KD_ECE_BINS];     /* sum of confidences per bin */
    size_t bin_hits[KD_ECE_BINS];     /* correct rows per bin */
    size_t bin_n[KD_ECE_BINS];
    size_t *confusion;                /* (n_classes, n_classes): [true][predicted] */
    size_t *class_n, *class_hits;     /* (n_classes) per-class counts and top-1 hits */
} kd_metrics;

/* Allocates the confusion matrix and per-class counters (KD_EIO on overflow/OOM). */
kd_status kd_metrics_init(kd_metrics *m, size_t n_classes, kd_err *err);
void kd_metrics_free(kd_metrics *m);  /* NULL-safe, idempotent */
/* Adds B rows of logits z (B, C); y may be NULL (unlabeled) and entries < 0 are unlabeled;
 * ref (B, C) may be NULL. Labels must be < C (the caller checks). */
void kd_metrics_add(kd_metrics *m, const float *z, const float *ref, const int32_t *y, size_t B);
double kd_metrics_ece(const kd_metrics *m);

/* ---- Weight formats for export (the codecs of kd_dtype.h; these are array shorthands) ---- */

/* int8 symmetric per output row: scale[r] = max|w[r,:]| / 127 (1 if the row is all zero, so
 * dequantization gives exact zeros), q = round(w / scale) clamped to [-127, 127]. Every
 * dequantized weight q * scale is within scale / 2 of w. w is (rows, cols). */
void kd_quant_int8_rows(const float *w, size_t rows, size_t cols, int8_t *q, float *scale);
void kd_dequant_int8_rows(const int8_t *q, const float *scale, size_t rows, size_t cols, float *w);
/* Array conversions to / from IEEE half and bfloat16 (round to nearest even). */
void kd_quant_f16(const float *x, uint16_t *h, size_t n);
void kd_quant_bf16(const float *x, uint16_t *h, size_t n);
void kd_dequant_f16(const uint16_t *h, float *x, size_t n);
void kd_dequant_bf16(const uint16_t *h, float *x, size_t n);

/* Parses a codec name ("f32" | "f16" | "bf16" | "int8") into the dtype it stores
 * (KD_DT_F32/F16/BF16/I8); -1 if unknown. */
int kd_export_dtype_parse(const char *s, kd_dtype *out);

/* Writes model m's weights (no optimizer or training state) to path in the codec storing dtype
 * (kd_codec_for), in state_dict order, atomically. Codecs without row scales (f32, f16, bf16):
 * trainable parameters converted, batch-norm running statistics stay F32. Row-scaled (int8):
 * weights of dense and conv2d layers become I8 "<name>" plus F32 "<name>_scale" [out]; every
 * other float tensor stays F32. num_batches_tracked counters are I64. KD_EUSAGE for a dtype
 * no codec stores.
 * Metadata: the given pairs (copied by the caller: arch, classes, preprocess, ...) plus
 * "format", "dtype" and, for int8, "quantization"; "arch" defaults to the model's own arch.
 * Keys "format", "dtype", "quantization" in the given pairs are ignored. */
kd_status kd_export_write(const char *path, const kd_model *m, kd_dtype dtype,
                          const char *const *meta_keys, const char *const *meta_vals,
                          size_t n_meta, kd_err *err);

/* ---- Evaluation runs shared by `eval` and `export` (src/eval/run.c) ---- */
/* Where the evaluation data comes from and which samples are used. */
typedef struct {
    kd_data_source src;
    kd_preprocess pp;          /* the config's preprocessing, or defaults */
    int has_config;
    char split[16];            /* "test", "validation" or "train" */
    /* Validation split held out of the training source (as the trainer does): */
    int split_from_train;
    int train_part;            /* split "train": the samples the trainer trains on, the ones
                                  left after that hold-out (calibration of qint8 export) */
    size_t val_count;
    double val_fraction;
    int threads;               /* the config's thread count (0 = default) */
    char *layers_json;         /* config model layers (for files without "arch"), or NULL */
    char *teacher_layers_json; /* config teacher layers, or NULL */
    int has_input;
    kd_shape input;
    /* Filled by kd_eval_data_open: */
    size_t *order;             /* sample indices to evaluate (ascending) */
    size_t n;
} kd_eval_data;

/* From a config file (a run folder passes DIR/config.json) with n_over `--set PATH=VALUE`
 * overrides, and a split ("test" when NULL; "train": the training source less the validation
 * hold-out, in file order). KD_EUSAGE when the config has no data for it. */
kd_status kd_eval_data_from_config(kd_eval_data *d, const char *config_path,
                                   const char *const *over, size_t n_over, const char *split,
                                   kd_err *err);
/* From explicit IDX images (+ labels, may be NULL) files. */
kd_status kd_eval_data_from_idx(kd_eval_data *d, const char *images, const char *labels,
                                kd_err *err);
void kd_eval_data_free(kd_eval_data *d);  /* NULL-safe */
/* Opens the dataset with preprocessing pp and (first time) computes d->order / d->n. */
kd_status kd_eval_data_open(kd_eval_data *d, const kd_preprocess *pp, kd_dataset **ds,
                            kd_err *err);
/* An arch JSON string for a file without "arch" (config layers, or the teacher's when
 * teacher = 1), with the config's input or else data_shape; malloc'd; NULL if none. */
char *kd_eval_data_arch(const kd_eval_data *d, int teacher, const kd_shape *data_shape);

/* Loads a checkpoint for inference, building it from its own arch or else from the config's
 * student or teacher layers. pp_out gets the checkpoint's preprocessing when recorded
 * (*has_pp = 1). Class names optional (may be NULL). */
kd_status kd_eval_load_model(const char *path, const kd_eval_data *d, const kd_shape *data_shape,
                             kd_model *m, kd_preprocess *pp_out, int *has_pp, char ***classes,
                             size_t *n_classes, kd_err *err);

/* What the evaluation loop runs: a float model, or anything else that maps a batch of
 * preprocessed inputs to float logits (a full-integer model through its integer reference,
 * its int8 logits dequantized). The loop sees only an input shape, a class count and these. */
typedef struct {
    kd_shape input;
    size_t n_classes;
    void *self;
    /* Makes room for batches of up to B samples. */
    kd_status (*reserve)(void *self, size_t B, kd_err *err);
    /* Logits (B, n_classes) of x (B, numel(input)), B within the reservation; valid until the
     * next call. */
    const float *(*forward)(void *self, const float *x, size_t B);
} kd_eval_net;
/* A float model as a net (borrowed: m outlives it). */
kd_eval_net kd_eval_net_model(kd_model *m);

/* KD_EINPUT unless the model's input shape matches the data's per-sample shape (equal, or the
 * same number of values when either is flat) and every label fits the model's classes. The
 * message names the model file, the data file and both shapes / class counts. */
kd_status kd_eval_check_fit(const kd_model *m, const char *model_path, const kd_data_info *info,
                            const char *data_path, kd_err *err);
kd_status kd_eval_check_fit_net(const kd_eval_net *net, const char *model_path,
                                const kd_data_info *info, const char *data_path, kd_err *err);

/* One batch of the evaluation loop: logits z (n, n_classes) of the samples at positions
 * done .. done + n of the index list, and their labels y (n; -1 where unlabeled). Both are
 * valid only during the call. A status other than KD_OK stops the loop and is returned. */
typedef kd_status (*kd_eval_batch_fn)(void *user, size_t done, const float *z, const int32_t *y,
                                      size_t n, kd_err *err);

/* THE evaluation loop (src/eval/forward.c), shared by the trainer's accuracy, eval, export and
 * predict: runs m in inference mode over samples idx[0..n) of ds (idx NULL = 0..n-1), in order,
 * in batches of at most `batch` (m is reserved for it), and hands each batch to fn.
 * *fwd_seconds (may be NULL) = time in forward passes only (no data decoding). Samples that
 * cannot be decoded (image folders with data.skip_bad) are left out and counted in *n_skipped,
 * fn never sees them and `done` counts only the samples handed over; with n_skipped NULL (the
 * callers that need every position) they are an error (KD_EINPUT naming the first file).
 * KD_EIO if the loader delivers more or fewer than n samples. */
kd_status kd_eval_forward(kd_model *m, kd_dataset *ds, const size_t *idx, size_t n, size_t batch,
                          kd_eval_batch_fn fn, void *user, double *fwd_seconds, size_t *n_skipped,
                          kd_err *err);
/* The same loop over any net. */
kd_status kd_eval_forward_net(const kd_eval_net *net, kd_dataset *ds, const size_t *idx, size_t n,
                              size_t batch, kd_eval_batch_fn fn, void *user, double *fwd_seconds,
                              size_t *n_skipped, kd_err *err);

/* kd_eval_forward writing logits (n, n_classes) and labels (n) (labels may be NULL), every
 * sample decoded; KD_ENUMERIC if any logit is NaN or Inf. */
kd_status kd_eval_forward_all(kd_model *m, kd_dataset *ds, const size_t *order, size_t n,
                              size_t batch, float *logits, int32_t *labels, double *fwd_seconds,
                              kd_err *err);
kd_status kd_eval_forward_all_net(const kd_eval_net *net, kd_dataset *ds, const size_t *order,
                                  size_t n, size_t batch, float *logits, int32_t *labels,
                                  double *fwd_seconds, kd_err *err);

/* Forward throughput at batch min(batch, n) on the first samples of order, repeated for about
 * budget_s seconds after two warm-up passes (3 to 50 timed passes): samples per second. */
kd_status kd_eval_throughput(kd_model *m, kd_dataset *ds, const size_t *order, size_t n,
                             size_t batch, double budget_s, double *samples_per_s, kd_err *err);
kd_status kd_eval_throughput_net(const kd_eval_net *net, kd_dataset *ds, const size_t *order,
                                 size_t n, size_t batch, double budget_s, double *samples_per_s,
                                 kd_err *err);

/* Single-sample forward latency over up to 64 distinct samples of the dataset, repeated for
 * about budget_s seconds (50 to 2000 timed calls after warm-up); p50 and p99 in microseconds. */
kd_status kd_eval_latency(kd_model *m, kd_dataset *ds, const size_t *order, size_t n,
                          double budget_s, double *p50_us, double *p99_us, kd_err *err);
kd_status kd_eval_latency_net(const kd_eval_net *net, kd_dataset *ds, const size_t *order,
                              size_t n, double budget_s, double *p50_us, double *p99_us,
                              kd_err *err);

#endif
