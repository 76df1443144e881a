/* kd_teacher.h - where a distillation step's teacher logits come from: one or several teacher
 * models run on the batch (online), or the soft-target cache, read by sample index and view
 * (kd_cache.h), which imported logits (teacher.logits) also become. Also loading a config's
 * teachers, their validation accuracy (each and mixed), and what a cache built from a config
 * must record (its provenance). */
#ifndef KD_TEACHER_H
#define KD_TEACHER_H

#include <stddef.h>
#include <stdint.h>
#include "kd_cache.h"
#include "kd_config.h"
#include "kd_data.h"
#include "kd_nn.h"
#include "kd_onnx.h"

/* The teachers of a step. The mixed target at T is sum_k weight[k] softmax(z_k / T). */
typedef struct {
    size_t n;                          /* teachers, 1 .. KD_MAX_TEACHERS */
    size_t n_classes;
    size_t batch_cap;
    float weight[KD_MAX_TEACHERS];     /* summing to 1 */
    kd_model *model[KD_MAX_TEACHERS];  /* online teachers (borrowed); unused with a cache */
    const kd_cache *cache;             /* borrowed, or NULL: logits come from the file */
    size_t views;                      /* the cache's views (1 online) */
    uint64_t view_seed;
    float *buf;                        /* (n, batch_cap, n_classes) cache rows; owned */
} kd_teacher_set;

/* n online models (weights NULL: equal), each reserved for batch_cap. KD_EUSAGE when their
 * class counts differ. */
kd_status kd_teacher_set_online(kd_teacher_set *ts, kd_model *const *models, const float *weights,
                                size_t n, size_t batch_cap, kd_err *err);
/* Logits from an open cache (its weights, views and seed). */
kd_status kd_teacher_set_cached(kd_teacher_set *ts, const kd_cache *cache, size_t batch_cap,
                                kd_err *err);
void kd_teacher_set_free(kd_teacher_set *ts);  /* NULL-safe; leaves it zeroed */

/* The batch's logits zt[k] (n, n_classes) per teacher. Online: each model's eval-mode forward
 * of x; NaN/Inf is KD_ENUMERIC "teacher logits contain NaN/Inf" (with the teacher's number in
 * an ensemble). Cached: the rows of training samples idx[0..n) in views view[0..n) (view NULL:
 * view 0); x is not read. Pointers stay valid until the next call. */
kd_status kd_teacher_logits(kd_teacher_set *ts, const float *x, const size_t *idx,
                            const uint32_t *view, size_t n, const float **zt, kd_err *err);

/* How a config names teacher i in messages: "teacher PATH" or "teacher.ensemble[i] PATH". */
const char *kd_teacher_name(const kd_config *cfg, size_t i, char *buf, size_t cap);

/* Loads the config's teacher i (inference only, frozen: kd_model_freeze) for samples shaped
 * `shape` with `n_data_classes` classes (0: unknown) and checks it fits: the same number of
 * input values, exactly the data's classes, exactly n_classes outputs (the model being
 * trained; 0: not checked). A checkpoint
 * whose recorded preprocessing or class names (names: the run's, n_names of them, or NULL)
 * differ writes a warning into `warning` (else ""), as does a tensor-name prefix stripped. Errors
 * are KD_EINPUT naming the teacher (kd_teacher_name) and what did not fit. */
kd_status kd_teacher_load(const kd_config *cfg, size_t i, const kd_shape *shape,
                          size_t n_data_classes, char *const *names, size_t n_names,
                          const kd_preprocess *pp, size_t n_classes, kd_model *m, char *warning,
                          size_t warning_cap, kd_err *err);

/* Loads the ONNX file at path (src/onnx) as an inference-only, frozen model that takes the data
 * as preprocessed by data_pp: output the graph output to use (NULL or "": the default), pp_mode
 * (KD_TEACHER_PP_*) what the graph expects (given: the raw sample under `given`). A file
 * written by `distill export` in the default mode is fed the raw sample. A first affine layer
 * maps the data's values onto the expected ones when they differ. info is filled (caller frees
 * with kd_onnx_info_free). Errors name the file: KD_EINPUT for the file, KD_EUSAGE when the
 * preprocessing does not fit its input. */
kd_status kd_teacher_load_onnx(const char *path, const char *output, int pp_mode,
                               const kd_preprocess *given, const kd_preprocess *data_pp,
                               kd_model *m, kd_onnx_info *info, kd_err *err);

/* Validation accuracy of each online teacher (acc[k]) and of their mixture at T = 1 (argmax of
 * sum_k w_k softmax(z_k)) on samples idx[0..n) of ds (idx NULL: all), in batches of at most
 * ts->batch_cap. NaN without labelled samples. */
kd_status kd_teacher_accuracy(kd_teacher_set *ts, kd_dataset *ds, const size_t *idx, size_t n,
                              double *acc, double *mix_acc, kd_err *err);

/* What a cache of this config must hold and record: counts, dtype, top-k (with T), views,
 * weights, and the provenance fields (each teacher checkpoint's hash and given layers, the
 * training data files' hashes, preprocessing, subset and augmentation). n_rows is the number of
 * training samples; the accuracies are left NaN. Reads every teacher checkpoint and data file
 * to hash them; KD_EINPUT naming one that cannot be read. */
kd_status kd_teacher_cache_meta(const kd_config *cfg, const kd_preprocess *pp, size_t n_rows,
                                size_t n_classes, kd_cache_meta *meta, kd_err *err);

/* teacher.logits: reads the safetensors file at path (tensor "logits" [N, n_classes] in F32,
 * F16 or BF16, row s the logits of source sample s of ds, N = its n_source, counted before
 * subset and validation split; optionally "index" I64 [N], row r then holding sample index[r])
 * and checks all of it: no other tensor, the dtypes, the shapes, every sample indexed exactly
 * once, every logit finite. Then builds *out, an in-memory cache (kd_cache_build) of one
 * teacher of weight 1, f32, one view, whose rows are the training samples idx[0..n) (dataset
 * indices, strictly ascending) and whose field "teacher.logits" is the file's hash
 * (kd_file_hash), also copied into hash. Errors: KD_EINPUT "teacher.logits PATH: tensor T: ..."
 * naming the first bad row (data_path names the training data in the row-count message). */
kd_status kd_teacher_import_logits(kd_cache **out, const char *path, const kd_dataset *ds,
                                   const char *data_path, const size_t *idx, size_t n,
                                   size_t n_classes, char *hash, size_t hash_cap, kd_err *err);

#endif
