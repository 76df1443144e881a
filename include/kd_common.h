/* kd_common.h - status codes, error messages, checked sizes and aligned memory shared by every module. */
#ifndef KD_COMMON_H
#define KD_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define KD_VERSION "0.1.0"

/* Status codes double as the process exit codes (README "Exit codes"). */
typedef enum {
    KD_OK = 0,
    KD_EIO = 1,      /* internal or I/O failure (out of memory, disk full, write failed) */
    KD_EUSAGE = 2,   /* usage or config error */
    KD_EINPUT = 3,   /* bad input file: dataset, checkpoint, image */
    KD_ENUMERIC = 4  /* NaN/Inf in loss, gradients or teacher logits */
} kd_status;

/* An error: a status plus a message for the user. Functions that can fail take a
 * `kd_err *` (never NULL), set it on failure and return the status. Only main prints. */
typedef struct {
    kd_status code;
    char msg[1024];
} kd_err;

/* Sets err->code and formats err->msg; returns code so callers can `return kd_err_set(...)`. */
kd_status kd_err_set(kd_err *err, kd_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepends "prefix: " to an existing message (adds context as the error travels up). */
void kd_err_prefix(kd_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kd_err_clear(kd_err *err);

/* Internal invariant check; never compiled out; never used for user input. */
#define KD_ASSERT(cond)                                                                    \
    do {                                                                                   \
        if (!(cond)) kd_assert_fail(#cond, __FILE__, __LINE__);                            \
    } while (0)
void kd_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

/* Overflow-checked size arithmetic: return 0 on success, -1 on overflow. */
int kd_mul_size(size_t a, size_t b, size_t *out);
int kd_add_size(size_t a, size_t b, size_t *out);

/* 64-byte aligned allocation of n floats/bytes, zero-filled; NULL on overflow or OOM.
 * Free with kd_free_aligned (NULL is a no-op). */
void *kd_alloc_aligned(size_t n_bytes);
float *kd_alloc_floats(size_t n);
void kd_free_aligned(void *p);

/* Reads a whole file, refusing files larger than max_bytes. *out is malloc'd (caller frees),
 * NUL-terminated for convenience (the NUL is not counted in *len). */
kd_status kd_read_file(const char *path, size_t max_bytes, char **out, size_t *len, kd_err *err);

/* Atomic, durable write: the callback writes to a temp file in path's directory; then fsync,
 * rename over path, fsync the directory.
 * - Failure (any step up to the rename): the temp file is removed, an existing file at path is
 *   untouched, and err says what failed.
 * - KD_OK: path holds the complete new data. err is cleared, except when only the final fsync
 *   of the directory failed: then err->code is KD_OK and err->msg is a warning (the data are
 *   written and in place, but a power loss could still bring back the old file). That is not a
 *   failure, because undoing the rename is impossible and retrying gains nothing; a caller
 *   that talks to the user shows the warning (the CLI: kd_cli_warn_if_any). */
typedef kd_status (*kd_write_fn)(FILE *f, void *ctx, kd_err *err);
kd_status kd_write_atomic(const char *path, kd_write_fn fn, void *ctx, kd_err *err);

/* JSON nesting cap of the files we read (configs, --set values, safetensors headers): far above
 * any real one (a config nests 5 deep), and a clear message instead of cJSON's generic failure
 * at its own recursion limit (1000). The outermost value is depth 1. */
#define KD_JSON_MAX_DEPTH 64
/* 0 when no object or array in the JSON text[0..len) is nested deeper than max_depth; else -1
 * and *offset = the byte that opens the first level too deep. Brackets inside strings do not
 * count. Does not validate the JSON otherwise. */
int kd_json_depth_check(const char *text, size_t len, int max_depth, size_t *offset);

/* Monotonic seconds. */
double kd_now(void);

/* The shortest decimal that reads back as the same float, as a double (0.1f -> 0.1, not
 * 0.10000000149011612), so JSON written from floats stays readable and round-trips exactly. */
double kd_float_shortest(float v);
/* The shortest text ("%.15g" to "%.17g") that reads back as exactly d, into buf (cap >= 32);
 * returns buf. cJSON's printer keeps 15 digits whenever they read back within about one unit in
 * the last place, so exact numbers go into JSON as this raw text. */
const char *kd_double_text(double d, char *buf, size_t cap);

/* Returns 1 if every value is finite. */
int kd_all_finite(const float *x, size_t n);

#endif
