/* kd_cache.h - the soft-target cache file: each teacher's logits for every training sample
 * (and every augmented view of it), keyed by the sample's index in the training source, so
 * shuffling, subsets and validation splits cannot misalign samples and targets. Written
 * atomically (temp file, fsync, rename); read with every size and checksum verified before a
 * single row is used.
 *
 * File layout (all integers little-endian):
 *   "KDCACHE1"                      8 bytes magic
 *   u32 header_len, u32 header_crc  the JSON header's byte length (<= KD_CACHE_MAX_HEADER) and
 *                                   its crc32
 *   header                          JSON object: the kd_cache_meta fields (below)
 *   index: n_rows x u32, u32 crc    the training-source index of each row, strictly ascending
 *   blocks                          the rows, view-major: row r of view v is entry
 *                                   v * n_rows + r; KD_CACHE_BLOCK_ROWS entries per block (the
 *                                   last may be shorter), each block followed by its u32 crc32
 * One entry holds n_teachers teacher rows in teacher order. A teacher row is n_classes logits
 * in the cache's dtype (f32 or f16), or with top_k K > 0: K u16 class indices (distinct, each
 * < n_classes), K logits in the dtype, then one f32: the log-sum-exp at temperature T of the
 * logits not kept, log sum_{j not kept} exp(z_j / T). The file's size is exactly what the
 * header implies. */
#ifndef KD_CACHE_H
#define KD_CACHE_H

#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"
#include "kd_loss.h"

#define KD_CACHE_MAGIC "KDCACHE1"
#define KD_CACHE_MAX_HEADER ((size_t)1 << 20)
#define KD_CACHE_BLOCK_ROWS 4096
#define KD_CACHE_MAX_TEACHERS KD_MAX_TEACHERS  /* an ensemble's limit (kd_loss.h) */
#define KD_CACHE_MAX_VIEWS 1024
#define KD_CACHE_MAX_FIELDS 32
#define KD_CACHE_MAX_CLASSES 65535   /* top-k class indices are u16 */

typedef enum { KD_CACHE_F32 = 0, KD_CACHE_F16 = 1 } kd_cache_dtype;

/* A named provenance string ("teacher[0].checkpoint_hash", "data.train", "preprocess", ...):
 * the caller decides what is recorded; the cache compares them by name and value. */
typedef struct {
    char name[64];
    char value[512];
} kd_cache_field;

/* What a cache holds and what it was made from. The builder fills it from the config; the
 * reader fills it from the file's header. */
typedef struct {
    size_t n_rows;                  /* training samples (each has `views` entries), 1 .. 2^32 */
    size_t n_classes;               /* 1 .. KD_CACHE_MAX_CLASSES */
    size_t n_teachers;              /* 1 .. KD_CACHE_MAX_TEACHERS */
    kd_cache_dtype dtype;
    size_t top_k;                   /* 0: all logits; else 1 .. n_classes - 1 */
    double temperature;             /* top_k > 0: the T of the stored log-sum-exp (> 0); 0 else
                                       (kd_cache_write stores 0 whatever it is given) */
    size_t views;                   /* 1 .. KD_CACHE_MAX_VIEWS */
    uint64_t view_seed;             /* view v of sample i is a function of (view_seed, i, v);
                                       at most 2^53 - 1 (a JSON number holds it exactly) */
    double weight[KD_CACHE_MAX_TEACHERS];  /* ensemble weights in [0, 1], summing to 1 */
    /* Informational (never compared): each teacher's and the mix's validation accuracy when
     * the cache was built, fractions in [0, 1], NaN when unknown (no labelled validation set). */
    double teacher_val_acc[KD_CACHE_MAX_TEACHERS];
    double ensemble_val_acc;
    size_t n_fields;
    kd_cache_field fields[KD_CACHE_MAX_FIELDS];
} kd_cache_meta;

/* "f32" / "f16"; kd_cache_dtype_find: 0 and *out for a known name, -1 otherwise. */
const char *kd_cache_dtype_name(kd_cache_dtype d);
int kd_cache_dtype_find(const char *name, kd_cache_dtype *out);
/* All names in enum order (*n set to their count), for the config's enum. */
const char *const *kd_cache_dtype_names(size_t *n);

/* Bytes of one entry (all teachers of one sample in one view) under meta. */
size_t kd_cache_entry_bytes(const kd_cache_meta *meta);

/* Appends a provenance field (KD_EUSAGE if there are KD_CACHE_MAX_FIELDS already, the name
 * or value does not fit, the name is empty or already recorded). Names and values are UTF-8
 * text (the header is JSON): kd_cache_write refuses others with KD_EUSAGE. */
kd_status kd_cache_meta_add(kd_cache_meta *meta, const char *name, const char *value,
                            kd_err *err);

/* ---- Writing ---- */

/* Fills logits (n_teachers, n, n_classes), teacher-major: teacher k's logits for the samples
 * idx[row .. row + n) seen in view `view`. */
typedef kd_status (*kd_cache_fill_fn)(void *user, size_t view, size_t row, size_t n,
                                      float *logits, kd_err *err);

/* Writes the cache for the training-source indices idx[0 .. meta->n_rows) (strictly
 * ascending, each < 2^32) to path atomically (kd_write_atomic: a failure leaves no file and an
 * existing file untouched). Rows are requested view by view, in chunks of at most `chunk`
 * samples. Logits that are NaN/Inf, or that the dtype cannot hold (f16: |z| > 65504), are
 * KD_ENUMERIC naming the teacher and the sample index; fill's own errors are passed on (the
 * message prefixed with the path when it lacks it). KD_EUSAGE for a meta out of its ranges,
 * idx not strictly ascending, or chunk 0. */
kd_status kd_cache_write(const char *path, const kd_cache_meta *meta, const size_t *idx,
                         size_t chunk, kd_cache_fill_fn fill, void *user, kd_err *err);

/* ---- Reading ---- */

typedef struct kd_cache kd_cache;  /* opaque */

/* The same cache built in memory instead of a file (nothing is written; the bytes are then
 * verified as kd_cache_open verifies a file): for targets that come from elsewhere
 * (teacher.logits), so that training reads every kind of stored target through one path. name
 * stands for the path in messages; errors as kd_cache_write's. kd_cache_close frees it. */
kd_status kd_cache_build(kd_cache **out, const char *name, const kd_cache_meta *meta,
                         const size_t *idx, size_t chunk, kd_cache_fill_fn fill, void *user,
                         kd_err *err);

/* Opens and verifies a whole cache file: magic, header (crc32, JSON, every field in range,
 * weights summing to 1 within 1e-6), the exact file size, the index (crc32, strictly
 * ascending), every block's crc32 and, with top_k, every class index. Errors are KD_EINPUT
 * "cache PATH: ..." naming the byte offset or header field and what was expected (a short
 * file says how many bytes it has and needs); KD_EIO for a file that cannot be read or memory. */
kd_status kd_cache_open(kd_cache **out, const char *path, kd_err *err);
/* The same over len bytes in memory (copied); name stands for the path in messages. */
kd_status kd_cache_open_mem(kd_cache **out, const void *data, size_t len, const char *name,
                            kd_err *err);
void kd_cache_close(kd_cache *c);  /* NULL-safe */
/* 1 if the file at path starts with KD_CACHE_MAGIC (how `distill info` tells a cache from a
 * checkpoint), else 0, also when it cannot be read. Verifies nothing else. */
int kd_cache_sniff(const char *path);
const kd_cache_meta *kd_cache_info(const kd_cache *c);
/* The sample indices of the rows (n_rows, ascending). */
const uint32_t *kd_cache_index(const kd_cache *c);
/* Row of training-source index `sample`, or -1 when the cache has none (binary search). */
long kd_cache_row(const kd_cache *c, size_t sample);

/* logits (n_teachers, n, n_classes), teacher-major, for the samples sample[0..n) in views
 * view[0..n) (view NULL: view 0). Full rows are converted from the dtype; a top-k row becomes
 * pseudo-logits whose softmax at the recorded T is exactly the stored target: kept classes
 * keep their logit, the others each get T * (lse_rest - log(C - K)), so they share the
 * remaining mass evenly. KD_EINPUT "cache PATH: no row for training sample I" (the run uses a
 * sample the cache was not built for) or "view V out of range". */
kd_status kd_cache_logits(const kd_cache *c, const size_t *sample, const uint32_t *view,
                          size_t n, float *logits, kd_err *err);

/* Compares what a run expects with what the file holds, in a fixed order: n_classes,
 * n_teachers, dtype, top_k, temperature (top_k > 0 only; within 1e-6 relative), views,
 * view_seed, the weights (1e-6), then every field of want by name (a field missing from the
 * file counts as different), then n_rows and the index against idx[0..n_idx). The first
 * difference is KD_EINPUT "cache PATH: FIELD differs: the file has X, this run has Y
 * (rebuild it: REBUILD)"; rebuild is the command to print (e.g. "distill logits --config
 * C.json --force"). */
kd_status kd_cache_check(const kd_cache *c, const kd_cache_meta *want, const size_t *idx,
                         size_t n_idx, const char *rebuild, kd_err *err);

/* A content hash of a file for provenance: "crc32:XXXXXXXX adler32:XXXXXXXX size:N" (zlib),
 * streamed in 1 MiB pieces. KD_EINPUT naming the file when it cannot be read. */
kd_status kd_file_hash(const char *path, char *out, size_t cap, kd_err *err);

#endif
