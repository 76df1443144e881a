/* common.c - error messages, checked sizes, aligned memory, whole-file reads, atomic writes,
 * the JSON nesting check. */
#define _GNU_SOURCE
#include "kd_common.h"
#include "test_hooks.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

kd_status kd_err_set(kd_err *err, kd_status code, const char *fmt, ...) {
    va_list ap;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

void kd_err_prefix(kd_err *err, const char *fmt, ...) {
    char prefix[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
}

void kd_err_clear(kd_err *err) {
    err->code = KD_OK;
    err->msg[0] = '\0';
}

void kd_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "distill: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
    abort();
}

int kd_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

int kd_add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return -1;
    *out = a + b;
    return 0;
}

void *kd_alloc_aligned(size_t n_bytes) {
    size_t rounded;
    if (kd_add_size(n_bytes, 63, &rounded)) return NULL;
    rounded &= ~(size_t)63;
    if (rounded == 0) rounded = 64;
    void *p = aligned_alloc(64, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

float *kd_alloc_floats(size_t n) {
    size_t bytes;
    if (kd_mul_size(n, sizeof(float), &bytes)) return NULL;
    return kd_alloc_aligned(bytes);
}

void kd_free_aligned(void *p) { free(p); }

kd_status kd_read_file(const char *path, size_t max_bytes, char **out, size_t *len, kd_err *err) {
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return kd_err_set(err, KD_EINPUT, "%s: cannot open: %s", path, strerror(errno));
    kd_status st = KD_OK;
    char *buf = NULL;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = kd_err_set(err, KD_EINPUT, "%s: not a regular file", path);
        goto cleanup;
    }
    if ((uint64_t)sb.st_size > max_bytes) {
        st = kd_err_set(err, KD_EINPUT, "%s: file is %lld bytes, larger than the %zu-byte limit",
                        path, (long long)sb.st_size, max_bytes);
        goto cleanup;
    }
    size_t size = (size_t)sb.st_size;
    buf = malloc(size + 1);
    if (!buf) {
        st = kd_err_set(err, KD_EIO, "%s: out of memory reading %zu bytes", path, size);
        goto cleanup;
    }
    if (size > 0 && fread(buf, 1, size, f) != size) {
        st = kd_err_set(err, KD_EIO, "%s: read failed", path);
        goto cleanup;
    }
    buf[size] = '\0';
    *out = buf;
    *len = size;
    buf = NULL;
cleanup:
    free(buf);
    fclose(f);
    return st;
}

#ifdef KD_TEST_HOOKS
int kd_fault_write_after = 0;
int kd_fault_dirsync_after = 0;
int kd_fault_fsync_after = 0;
int kd_fault_create_after = 0;

int kd_fault_now(int *hook) { return *hook > 0 && --*hook == 0; }
#endif

static int fsync_dir_of(const char *path) {
    if (KD_FAULT(kd_fault_dirsync_after)) {
        errno = EIO;
        return -1;
    }
    char *copy = strdup(path);
    if (!copy) return -1;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    free(copy);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

kd_status kd_write_atomic(const char *path, kd_write_fn fn, void *ctx, kd_err *err) {
    kd_err_clear(err);
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp) return kd_err_set(err, KD_EIO, "%s: out of memory", path);
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    kd_status st = KD_OK;
    FILE *f = KD_FAULT(kd_fault_create_after) ? (errno = EACCES, NULL) : fopen(tmp, "wb");
    if (!f) {
        int e = errno;
        struct stat sb;
        char *dir = strdup(path);
        /* The usual reason for ENOENT here: the output folder was deleted during the run. */
        int gone = e == ENOENT && dir && stat(dirname(dir), &sb) != 0;
        st = kd_err_set(err, KD_EIO, "%s: cannot create temporary file %s: %s%s", path, tmp,
                        strerror(e), gone ? " (its folder no longer exists)" : "");
        free(dir);
        free(tmp);
        return st;
    }
    st = fn(f, ctx, err);
    /* Callbacks name what they write; the message must name the file too. */
    if (st != KD_OK && !strstr(err->msg, path)) kd_err_prefix(err, "%s", path);
    if (st == KD_OK && KD_FAULT(kd_fault_write_after))
        st = kd_err_set(err, KD_EIO, "%s: write failed: %s (injected)", path, strerror(ENOSPC));
    if (st == KD_OK && (fflush(f) != 0 || ferror(f)))
        st = kd_err_set(err, KD_EIO, "%s: write failed: %s", path, strerror(errno));
    if (st == KD_OK && KD_FAULT(kd_fault_fsync_after))
        st = kd_err_set(err, KD_EIO, "%s: fsync failed: %s (injected)", path, strerror(EIO));
    if (st == KD_OK && fsync(fileno(f)) != 0)
        st = kd_err_set(err, KD_EIO, "%s: fsync failed: %s", path, strerror(errno));
    if (fclose(f) != 0 && st == KD_OK)
        st = kd_err_set(err, KD_EIO, "%s: close failed: %s", path, strerror(errno));
    if (st == KD_OK && rename(tmp, path) != 0)
        st = kd_err_set(err, KD_EIO, "%s: rename from %s failed: %s", path, tmp, strerror(errno));
    if (st != KD_OK) unlink(tmp);
    free(tmp);
    /* After the rename the new file is in place and the temp name gone: a failed directory
     * fsync can only be reported, not undone (see kd_common.h). */
    if (st == KD_OK && fsync_dir_of(path) != 0)
        kd_err_set(err, KD_OK, "%s: written, but the fsync of its directory failed (%s): the "
                   "new file may not survive a power loss", path, strerror(errno));
    return st;
}

int kd_json_depth_check(const char *text, size_t len, int max_depth, size_t *offset) {
    int depth = 0, in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = text[i];
        if (in_string) {
            if (ch == '\\') i++;  /* the escaped character, whatever it is */
            else if (ch == '"') in_string = 0;
        } else if (ch == '"') {
            in_string = 1;
        } else if (ch == '{' || ch == '[') {
            if (++depth > max_depth) {
                *offset = i;
                return -1;
            }
        } else if ((ch == '}' || ch == ']') && depth > 0) {
            depth--;
        }
    }
    return 0;
}

double kd_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double kd_float_shortest(float v) {
    char buf[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)v);
        if ((float)strtod(buf, NULL) == v) break;
    }
    return strtod(buf, NULL);
}

const char *kd_double_text(double d, char *buf, size_t cap) {
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, cap, "%.*g", digits, d);
        if (strtod(buf, NULL) == d) break;
    }
    return buf;
}

int kd_all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}
