/* test_main.c - runs every registered test case (optionally those whose name contains argv[1])
 * and prints "N passed, N failed, N skipped". Exit status 1 if any case failed. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kd_safetensors.h"
#include "kd_test.h"

#define MAX_TESTS 1024

typedef struct {
    const char *name, *file;
    kd_test_fn fn;
} test_case;

static test_case g_tests[MAX_TESTS];
static int g_n_tests;
static int g_cur_failed, g_cur_skipped;
static char g_tmpdir[512];

void kd_test_register(const char *name, const char *file, kd_test_fn fn) {
    if (g_n_tests == MAX_TESTS) {
        fprintf(stderr, "too many tests\n");
        exit(2);
    }
    g_tests[g_n_tests++] = (test_case){name, file, fn};
}

void kd_test_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    if (g_cur_failed < 20) {
        fprintf(stdout, "    %s:%d: ", file, line);
        va_start(ap, fmt);
        vfprintf(stdout, fmt, ap);
        va_end(ap);
        fputc('\n', stdout);
    }
    g_cur_failed++;
}

void kd_test_skip(const char *fmt, ...) {
    va_list ap;
    fprintf(stdout, "    skipped: ");
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    g_cur_skipped = 1;
}

int kd_test_failed_now(void) { return g_cur_failed > 0; }

int kd_check_floats(const char *file, int line, const char *what, const float *got,
                    const float *want, size_t n, double atol, double rtol) {
    size_t first = n, worst = 0;
    double worst_diff = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        int bad = !(d <= atol + rtol * fabs((double)want[i]));
        if (bad && first == n) first = i;
        if (d > worst_diff || d != d) {
            worst_diff = d;
            worst = i;
        }
    }
    if (first == n) return 1;
    kd_test_fail(file, line, "%s: first mismatch at [%zu]: %.9g vs %.9g; largest diff %.3g at [%zu]",
                 what, first, got[first], want[first], worst_diff, worst);
    return 0;
}

static int rm_rf(const char *path) {
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    return system(cmd);
}

const char *kd_test_tmpdir(void) {
    static int counter;
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    if (g_tmpdir[0]) rm_rf(g_tmpdir);
    snprintf(g_tmpdir, sizeof g_tmpdir, "%s/kdtest.%ld.%d", base, (long)getpid(), ++counter);
    rm_rf(g_tmpdir);
    if (mkdir(g_tmpdir, 0700) != 0) {
        perror(g_tmpdir);
        exit(2);
    }
    return g_tmpdir;
}

int kd_test_run(const char *cmd, char *out, size_t cap) {
    char full[8192];
    snprintf(full, sizeof full, "(%s) 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t len = 0;
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, p)) > 0) {
        if (out && len + 1 < cap) {
            size_t take = got < cap - 1 - len ? got : cap - 1 - len;
            memcpy(out + len, buf, take);
            len += take;
        }
    }
    if (out && cap) out[len] = '\0';
    int status = pclose(p);
    if (status == -1) return -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

int kd_test_run_ok(const char *cmd) {
    static char out[1 << 16];
    int rc = kd_test_run(cmd, out, sizeof out);
    if (rc != 0) kd_test_fail(__FILE__, __LINE__, "exit %d: %s\n%s", rc, cmd, out);
    return rc == 0;
}

const char *kd_test_distill(void) {
    const char *p = getenv("KD_DISTILL");
    return p && *p ? p : "./distill";
}

int kd_test_distillf(char *out, size_t cap, const char *env, const char *fmt, ...) {
    char cmd[8192];
    int n = snprintf(cmd, sizeof cmd, "%s %s ", env, kd_test_distill());
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof cmd) vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
    va_end(ap);
    return kd_test_run(cmd, out, cap);
}

#define KD_TEST_FMNIST_TRAIN "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
int kd_test_have_tiny(void) {
    if (access(KD_TEST_FMNIST_TRAIN, R_OK) == 0 && access("configs/tiny.json", R_OK) == 0)
        return 1;
    kd_test_skip("%s or configs/tiny.json is absent", KD_TEST_FMNIST_TRAIN);
    return 0;
}

int kd_test_missing(const char *what) {
    const char *ci = getenv("CI");
    if (ci && !strcmp(ci, "true"))
        kd_test_fail(__FILE__, __LINE__, "%s (CI=true: this test must run)", what);
    else
        kd_test_skip("%s", what);
    return 0;
}

int kd_test_have_python(void) { return kd_test_run("command -v python3", NULL, 0) == 0; }

size_t kd_test_line_values(const char *out, const char *prefix, int k, double *vals, size_t cap) {
    const char *p = out;
    size_t plen = strlen(prefix);
    for (;;) {
        if (strncmp(p, prefix, plen) == 0 && k-- == 0) break;
        p = strchr(p, '\n');
        if (!p) return 0;
        p++;
    }
    p += plen;
    size_t n = 0;
    while (n < cap && *p != '\n' && *p) {
        char *end;
        double v = strtod(p, &end);
        if (end == p) break;
        vals[n++] = v;
        p = end;
    }
    return n;
}

int kd_test_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

double kd_test_summary(const char *out, const char *key) {
    const char *s = strstr(out, "summary:");
    if (!s) return -1;
    char pat[64];
    snprintf(pat, sizeof pat, " %s ", key);
    const char *p = strstr(s, pat);
    if (!p) return -1;
    char *end;
    double v = strtod(p + strlen(pat), &end);
    return end == p + strlen(pat) ? -1 : v;
}

int kd_test_same_tensors(const char *a, const char *b) {
    kd_st_file fa = {0}, fb = {0};
    kd_err err;
    int ok = kd_st_read(&fa, a, &err) == KD_OK && kd_st_read(&fb, b, &err) == KD_OK &&
             fa.n_tensors == fb.n_tensors;
    for (size_t i = 0; ok && i < fa.n_tensors; i++) {
        const kd_st_tensor *t = &fa.tensors[i], *u = kd_st_find(&fb, t->name);
        ok = u && u->end - u->begin == t->end - t->begin &&
             memcmp(t->data, u->data, t->end - t->begin) == 0;
        if (!ok) kd_test_fail(__FILE__, __LINE__, "tensor %s differs between %s and %s", t->name, a, b);
    }
    kd_st_free(&fa);
    kd_st_free(&fb);
    return ok;
}

int kd_test_svg_decode(const char *svg, char *out, size_t cap) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 tests/svg_decode.py '%s'", svg);
    return kd_test_run(cmd, out, cap);
}

/* The start of the first line of out that begins with prefix, or NULL. */
static const char *find_line(const char *out, const char *prefix) {
    size_t n = strlen(prefix);
    for (const char *p = out; p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, prefix, n) == 0) return p;
    return NULL;
}

int kd_test_svg_check_mark(const char *file, int line, const char *out, const char *panel,
                           const char *kind, const char *series, int k, const double *want,
                           size_t n) {
    char prefix[512], scale[2][16];
    double px[2];
    snprintf(prefix, sizeof prefix, "panel %s ", panel);
    const char *pl = find_line(out, prefix);
    if (!pl || sscanf(pl + strlen(prefix), "%lf %lf %15s %15s", &px[0], &px[1], scale[0],
                      scale[1]) != 4) {
        kd_test_fail(file, line, "no decoded panel %s in: %.300s", panel, out);
        return 0;
    }
    /* Which axis each value is on: hbar (row, x value), vbar (x, y), vspan (x, y, y), and
     * x, y pairs for the rest. */
    const char *axes = strcmp(kind, "hbar") == 0 ? "yx" : strcmp(kind, "vbar") == 0 ? "xy"
                       : strcmp(kind, "vspan") == 0 ? "xyy" : NULL;
    double *got = malloc((n + 1) * sizeof *got);
    snprintf(prefix, sizeof prefix, "mark %s %s %s ", panel, kind, series);
    size_t m = got ? kd_test_line_values(out, prefix, k, got, n + 1) : 0;
    int ok = m == n;
    if (!ok)
        kd_test_fail(file, line, "%s #%d: %zu values decoded, expected %zu", prefix, k, m, n);
    for (size_t i = 0; ok && i < n; i++) {
        int ax = axes ? axes[i % strlen(axes)] == 'y' : (int)(i % 2);
        double d = fabs(got[i] - want[i]);
        if (strcmp(scale[ax], "log") == 0) d = fabs(log10(got[i]) - log10(want[i]));
        double off = strcmp(scale[ax], "category") == 0 ? (d > 1e-9 ? 1e9 : 0) : d * px[ax];
        if (!(off <= 0.5 + 1e-6)) {
            kd_test_fail(file, line, "%s #%d value %zu: decoded %.9g, expected %.9g (%.3g px off)",
                         prefix, k, i, got[i], want[i], off);
            ok = 0;
        }
    }
    free(got);
    return ok;
}

static int cmp_case(const void *a, const void *b) {
    const test_case *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

/* A case runs when no filter is given or one of them is part of its name or file. */
static int selected(const test_case *t, int n_filters, char **filters) {
    for (int k = 0; k < n_filters; k++)
        if (strstr(t->name, filters[k]) || strstr(t->file, filters[k])) return 1;
    return n_filters == 0;
}

int main(int argc, char **argv) {
    int passed = 0, failed = 0, skipped = 0;
    qsort(g_tests, (size_t)g_n_tests, sizeof g_tests[0], cmp_case);
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < g_n_tests; i++) {
        test_case *t = &g_tests[i];
        if (!selected(t, argc - 1, argv + 1)) continue;
        g_cur_failed = 0;
        g_cur_skipped = 0;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        t->fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        const char *verdict = g_cur_failed ? "FAIL" : g_cur_skipped ? "skip" : "ok";
        printf("%-4s %s (%s, %.2fs)\n", verdict, t->name, t->file, secs);
        if (g_cur_failed) failed++;
        else if (g_cur_skipped) skipped++;
        else passed++;
    }
    if (g_tmpdir[0]) rm_rf(g_tmpdir);
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
