/* kd_test.h - the test harness: self-registering test cases and check macros. A case passes
 * when all its checks pass; the runner prints "N passed, N failed[, N skipped]" last.
 *
 *   KD_TEST(gemm_matches_reference) { CHECK(x == 1); CHECK_CLOSE(a, b, 1e-6, 1e-5); }
 */
#ifndef KD_TEST_H
#define KD_TEST_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>

typedef void (*kd_test_fn)(void);
void kd_test_register(const char *name, const char *file, kd_test_fn fn);
void kd_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Marks the current case as skipped (with a reason shown in the output); return after it. */
void kd_test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int kd_test_failed_now(void);

#define KD_TEST(name)                                                                      \
    static void name(void);                                                                \
    __attribute__((constructor)) static void kd_reg_##name(void) {                         \
        kd_test_register(#name, __FILE__, name);                                           \
    }                                                                                      \
    static void name(void)

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) kd_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                 \
    } while (0)

/* |a - b| <= atol + rtol * |b| (NaN fails). */
#define CHECK_CLOSE(a, b, atol, rtol)                                                      \
    do {                                                                                   \
        double kd_a_ = (double)(a), kd_b_ = (double)(b);                                   \
        if (!(fabs(kd_a_ - kd_b_) <= (atol) + (rtol)*fabs(kd_b_)))                         \
            kd_test_fail(__FILE__, __LINE__, "CHECK_CLOSE(%s, %s): %.9g vs %.9g (diff %.3g)", \
                         #a, #b, kd_a_, kd_b_, fabs(kd_a_ - kd_b_));                       \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                 \
    do {                                                                                   \
        long long kd_a_ = (long long)(a), kd_b_ = (long long)(b);                          \
        if (kd_a_ != kd_b_)                                                                \
            kd_test_fail(__FILE__, __LINE__, "CHECK_EQ_INT(%s, %s): %lld vs %lld", #a, #b,  \
                         kd_a_, kd_b_);                                                    \
    } while (0)

/* Checks that string s contains sub. */
#define CHECK_CONTAINS(s, sub)                                                             \
    do {                                                                                   \
        const char *kd_s_ = (s);                                                           \
        if (!kd_s_ || !strstr(kd_s_, (sub)))                                               \
            kd_test_fail(__FILE__, __LINE__, "expected \"%s\" in: %s", (sub),              \
                         kd_s_ ? kd_s_ : "(null)");                                        \
    } while (0)

/* Compares n floats; on failure prints the first mismatch and the largest difference.
 * Returns 1 if all close. */
int kd_check_floats(const char *file, int line, const char *what, const float *got,
                    const float *want, size_t n, double atol, double rtol);
#define CHECK_FLOATS(got, want, n, atol, rtol)                                             \
    kd_check_floats(__FILE__, __LINE__, #got, (got), (want), (n), (atol), (rtol))

/* Test utilities. */
/* A fresh empty directory for this case (under $TMPDIR); path valid until the next call. */
const char *kd_test_tmpdir(void);
/* Runs a shell command, capturing stdout+stderr (truncated to cap) into out; returns the exit
 * status (or -1 if it could not run / 128+signal if killed). */
int kd_test_run(const char *cmd, char *out, size_t cap);
/* Runs a shell command; a failure is reported with its exit status and output. 1 if it
 * exited 0. */
int kd_test_run_ok(const char *cmd);
/* Path of the distill binary under test (env KD_DISTILL, default ./distill). */
const char *kd_test_distill(void);
/* Runs `ENV DISTILL ARGS` (env: variable assignments or ""; ARGS printf-formatted) like
 * kd_test_run, its output into out; returns the exit status. A file wraps it once, e.g.
 *   #define train(...) kd_test_distillf(g_out, sizeof g_out, "", "train " __VA_ARGS__) */
int kd_test_distillf(char *out, size_t cap, const char *env, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* 1 if Fashion-MNIST's training images (Debian package dataset-fashion-mnist) and
 * configs/tiny.json are there; otherwise marks the case skipped and returns 0. */
int kd_test_have_tiny(void);
/* A tool the case needs is missing: skips it with the reason, or fails it when CI=true (CI
 * must run it). Returns 0. */
int kd_test_missing(const char *what);
/* 1 if python3 can be run (the reference scripts need it). */
int kd_test_have_python(void);
/* Parses the numbers that follow `prefix` on the k-th line (0-based) of out that starts with
 * `prefix` (include the trailing space: "logits "); stores up to cap; returns how many. */
size_t kd_test_line_values(const char *out, const char *prefix, int k, double *vals, size_t cap);
/* A number from the line "summary: ... KEY VALUE ..." of out; -1 if absent or n/a. */
double kd_test_summary(const char *out, const char *key);
/* 1 if the safetensors files a and b hold the same tensors byte for byte (a differing tensor
 * is reported as a failure naming it). */
int kd_test_same_tensors(const char *a, const char *b);
/* Writes bytes to a file; returns 0 on success. */
int kd_test_write_file(const char *path, const void *data, size_t n);

/* SVG pictures (`distill plot`, `eval --report`) read back by tests/svg_decode.py, which fits
 * each axis to its printed tick labels. Runs it on svg: its exit status, its output in out
 * ("error: ..." when the picture breaks the markup contract). Needs python3. */
int kd_test_svg_decode(const char *svg, char *out, size_t cap);
/* Checks the k-th decoded "mark PANEL KIND SERIES v..." line of out: exactly n values, each
 * within half a pixel of want[i] on its axis (log axes compared in log10, category rows
 * exactly). On failure reports the first value off and by how many pixels; returns 1 if all
 * agree. */
int kd_test_svg_check_mark(const char *file, int line, const char *out, const char *panel,
                           const char *kind, const char *series, int k, const double *want,
                           size_t n);
#define CHECK_SVG_MARK(out, panel, kind, series, k, want, n)                               \
    kd_test_svg_check_mark(__FILE__, __LINE__, (out), (panel), (kind), (series), (k), (want), (n))

#endif
