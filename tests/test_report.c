/* test_report.c - the pictures: nice axis ticks, the metrics.jsonl reader (against the trainer's
 * own writer and every way a line can be broken), and `distill plot` end to end, its SVG read
 * back by tests/svg_decode.py through the printed tick labels and compared with the
 * metrics.jsonl values that went in, within half a pixel. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kd_report.h"
#include "kd_rng.h"
#include "kd_test.h"
#include "../src/report/report_impl.h"
#include "../src/train/train_impl.h"

/* ---- axes ---- */

/* Heckbert's worked cases: range nice(max - min), step nice(range / (ticks - 1)) rounded,
 * ticks from floor(min / step) to ceil(max / step). */
KD_TEST(report_axis_nice_ticks_hand_computed) {
    kd_axis a;
    char label[64];
    /* [0.37, 1.69]: range nice(1.32) = 2, step nice(0.4) = 0.5: 0, 0.5, ..., 2. */
    kd_axis_linear(&a, 0.37, 1.69, 5, 0, 0, NULL);
    CHECK_CLOSE(a.step, 0.5, 0, 0);
    CHECK_EQ_INT(a.n_ticks, 5);
    CHECK_CLOSE(a.lo, 0.0, 0, 0);
    CHECK_CLOSE(a.hi, 2.0, 0, 0);
    kd_axis_tick_label(&a, kd_axis_tick(&a, 3), label, sizeof label);
    CHECK(strcmp(label, "1.5") == 0);
    /* Accuracies [0.692, 0.806] as percentages: step 0.05, 65% .. 85%. */
    kd_axis_linear(&a, 0.692, 0.806, 5, 0, 1, NULL);
    CHECK_CLOSE(a.step, 0.05, 1e-15, 0);
    CHECK_CLOSE(a.lo, 0.65, 1e-12, 0);
    CHECK_CLOSE(a.hi, 0.85, 1e-12, 0);
    kd_axis_tick_label(&a, kd_axis_tick(&a, 0), label, sizeof label);
    CHECK(strcmp(label, "65%") == 0);
    /* A constant gets a range: 0.5 +- 10% -> step 0.02, 0.44 .. 0.56. */
    kd_axis_linear(&a, 0.5, 0.5, 6, 0, 0, NULL);
    CHECK_CLOSE(a.step, 0.02, 1e-15, 0);
    CHECK(a.lo < 0.5 && a.hi > 0.5);
    kd_axis_tick_label(&a, kd_axis_tick(&a, 0), label, sizeof label);
    CHECK(strcmp(label, "0.44") == 0);
    /* Epochs: integer steps; one epoch still gets two ticks around it. */
    kd_axis_linear(&a, 1, 1, 6, 1, 0, NULL);
    CHECK(a.step >= 1 && a.n_ticks >= 2 && a.lo < 1 && a.hi > 1);
    kd_axis_linear(&a, 1, 1000, 6, 1, 0, NULL);
    CHECK_CLOSE(a.step, 200, 0, 0);
    CHECK_CLOSE(a.lo, 0, 0, 0);
    CHECK_CLOSE(a.hi, 1000, 0, 0);
    /* Learning rates: fixed decimals down to a step of 1e-5, then scientific with one
     * exponent for the axis. */
    kd_axis_linear(&a, 0, 1e-3, 6, 0, 0, NULL);
    kd_axis_tick_label(&a, kd_axis_tick(&a, a.n_ticks - 1), label, sizeof label);
    CHECK(strcmp(label, "0.0010") == 0);
    kd_axis_linear(&a, 1e-6, 3e-6, 5, 0, 0, NULL);
    kd_axis_tick_label(&a, kd_axis_tick(&a, a.n_ticks - 1), label, sizeof label);
    CHECK(strcmp(label, "3.0e-6") == 0);
    CHECK_CLOSE(strtod(label, NULL), a.hi, 1e-18, 0);
    /* Log axes: decades around the data, SI labels. */
    kd_axis_log(&a, 12730, 50890, NULL);
    CHECK_CLOSE(a.lo, 1e4, 0, 0);
    CHECK_CLOSE(a.hi, 1e5, 1e-6, 0);
    kd_axis_tick_label(&a, kd_axis_tick(&a, 1), label, sizeof label);
    CHECK(strcmp(label, "100k") == 0);
    kd_axis_log(&a, 15, 15, NULL);
    CHECK(a.lo == 10 && a.n_ticks == 2);
    kd_axis_log(&a, 0.63, 2.2, NULL);
    CHECK_EQ_INT(a.n_ticks, 3);
    kd_axis_tick_label(&a, kd_axis_tick(&a, 0), label, sizeof label);
    CHECK(strcmp(label, "0.1") == 0);
}

/* Over seeded ranges of every magnitude: the ticks are round (1, 2 or 5 times a power of ten),
 * enclose the data, stay between 2 and 12, and every label reads back as its tick value. */
KD_TEST(report_axis_ticks_enclose_and_read_back) {
    kd_rng r;
    kd_rng_seed(&r, 17);
    for (int t = 0; t < 2000; t++) {
        double mag = pow(10.0, (double)kd_rng_below(&r, 24) - 12);
        double a0 = ((double)kd_rng_uniform(&r) * 2 - 1) * mag;
        double w = (double)kd_rng_uniform(&r) * mag * (t % 3 ? 1 : 1e-3);
        int percent = t % 5 == 0;
        kd_axis a;
        kd_axis_linear(&a, a0, a0 + w, 6, 0, percent, NULL);
        double m = a.step / pow(10.0, floor(log10(a.step)));
        int round_step = fabs(m - 1) < 1e-9 || fabs(m - 2) < 1e-9 || fabs(m - 5) < 1e-9 ||
                         fabs(m - 10) < 1e-9;
        if (!round_step || !(a.lo <= a0 && a.hi >= a0 + w) || a.n_ticks < 2 || a.n_ticks > 12) {
            kd_test_fail(__FILE__, __LINE__, "[%.17g, %.17g]: step %g, ticks %zu, range [%g, %g]",
                         a0, a0 + w, a.step, a.n_ticks, a.lo, a.hi);
            return;
        }
        for (size_t i = 0; i < a.n_ticks; i++) {
            char label[64];
            double v = kd_axis_tick(&a, i);
            kd_axis_tick_label(&a, v, label, sizeof label);
            double back = strtod(label, NULL) / (percent ? 100 : 1);
            if (!(fabs(back - v) <= 1e-6 * a.step)) {
                kd_test_fail(__FILE__, __LINE__, "tick %.17g (step %g) printed as \"%s\"", v,
                             a.step, label);
                return;
            }
        }
    }
}

/* ---- metrics.jsonl ---- */

static const char *const k_fields[] = {"loss", "soft", "hard", "train_acc", "val_acc",
                                       "lr", "samples_per_s", "seconds", "skipped"};
#define N_FIELDS 9  /* the 9th, skipped, is 0 in every made-up run */

/* A metric's value for a made-up run; NaN is written as null. */
typedef double (*metric_fn)(size_t epoch, size_t field);

/* Writes DIR/metrics.jsonl for epochs 1..n, as the trainer does (17 digits, null for NaN). */
static void write_metrics(const char *dir, size_t n, metric_fn f) {
    char path[1024];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    mkdir(dir, 0777);
    FILE *out = fopen(path, "w");
    CHECK(out != NULL);
    if (!out) return;
    for (size_t e = 1; e <= n; e++) {
        fprintf(out, "{\"epoch\":%zu", e);
        for (size_t i = 0; i < N_FIELDS; i++) {
            double v = f(e, i);
            if (isnan(v)) fprintf(out, ",\"%s\":null", k_fields[i]);
            else fprintf(out, ",\"%s\":%.17g", k_fields[i], v);
        }
        fprintf(out, "}\n");
    }
    CHECK(fclose(out) == 0);
}

/* The teacher: a falling loss, rising accuracy, a halving learning rate. */
static double teacher_metric(size_t e, size_t f) {
    double x = (double)e;
    double v[N_FIELDS] = {2.0 / x + 0.1, 0, 2.0 / x + 0.1, 0.4 + 0.09 * x, 0.5 + 0.08 * x,
                          0.01 * pow(0.5, x - 1), 1000 + 37 * x, 1.5};
    return v[f];
}

/* The student: longer, with no validation accuracy at epochs 3 and 5 (epoch 4 stands alone). */
static double student_metric(size_t e, size_t f) {
    double x = (double)e;
    double v[N_FIELDS] = {3.0 / x, 1.0 / x, 2.0 / x, 0.3 + 0.05 * x, 0.45 + 0.06 * x,
                          1e-3, 2500 - 11 * x, 0.8};
    if (f == 4 && (e == 3 || e == 5)) return NAN;
    return v[f];
}

static double constant_metric(size_t e, size_t f) {
    (void)e;
    double v[N_FIELDS] = {0.5, 0, 0.5, 0.9, 0.9, 1e-3, 5000, 1};
    return v[f];
}

/* 1000 epochs: cosine learning rate, slowly saturating accuracy, a jittery throughput. */
static double long_metric(size_t e, size_t f) {
    double x = (double)e;
    double v[N_FIELDS] = {1 / sqrt(x), 0, 1 / sqrt(x), 0.95 - 0.5 * exp(-x / 50),
                          0.9 - 0.5 * exp(-x / 100), 0.5e-3 * (1 + cos(3.14159265358979323846 * x / 1000)),
                          1000 + (double)(e % 7), 0.25};
    return v[f];
}

/* No validation set: val_acc null throughout. */
static double no_val_metric(size_t e, size_t f) {
    return f == 4 ? NAN : teacher_metric(e, f);
}

/* What the trainer writes, the reader reads back: same fields, NaN as null, same epochs. */
KD_TEST(report_metrics_read_round_trips_the_trainer_writer) {
    const char *dir = kd_test_tmpdir();
    kd_runfolder rf;
    kd_err err = {0};
    CHECK(kd_runfolder_init(&rf, dir, &err) == KD_OK);
    kd_epoch_metrics in[3];
    for (size_t e = 0; e < 3; e++) {
        memset(&in[e], 0, sizeof in[e]);
        in[e].epoch = e + 1;
        for (size_t i = 0; i < kd_n_epoch_fields; i++)
            *(double *)((char *)&in[e] + kd_epoch_fields[i].offset) = 0.1 * (double)(i + 1) / 3.0 + (double)e;
        if (e == 1) in[e].val_acc = NAN;
        CHECK(kd_runfolder_add_metrics(&rf, &in[e], &err) == KD_OK);
    }
    kd_runfolder_free(&rf);
    kd_epoch_metrics *rows = NULL;
    size_t n = 0;
    char path[1024];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    CHECK(kd_metrics_read(path, &rows, &n, &err) == KD_OK);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(kd_n_epoch_fields, N_FIELDS);
    for (size_t e = 0; e < n && e < 3; e++) {
        CHECK_EQ_INT(rows[e].epoch, e + 1);
        for (size_t i = 0; i < kd_n_epoch_fields; i++) {
            CHECK(strcmp(kd_epoch_fields[i].name, k_fields[i]) == 0);
            double want = kd_epoch_field_get(&in[e], i), got = kd_epoch_field_get(&rows[e], i);
            if (isnan(want)) CHECK(isnan(got));
            else CHECK_CLOSE(got, want, 0, 1e-14);
        }
    }
    CHECK_EQ_INT(kd_epoch_field_find("samples_per_s"), 6);
    CHECK_EQ_INT(kd_epoch_field_find("val_ac"), -1);
    free(rows);
}

/* Each broken file is KD_EINPUT naming the file and the line (and field). */
KD_TEST(report_metrics_read_rejects_broken_files) {
    static const struct {
        const char *text, *want1, *want2;
    } cases[] = {
        {"{\"epoch\":1,\"loss\":1}\n{\"epoch\":2,\"loss\":0.5,\"va", "line 2", "truncated"},
        {"{\"epoch\":1}\n{\"epoch\":1}\n", "line 2", "epoch"},
        {"{\"epoch\":2}\n{\"epoch\":1}\n", "line 2", "epoch"},
        {"{\"epoch\":1.5}\n", "line 1", "epoch"},
        {"{\"loss\":1}\n", "line 1", "epoch"},
        {"{\"epoch\":1,\"loss\":\"low\"}\n", "line 1", "loss"},
        {"[1,2]\n", "line 1", "JSON object"},
        {"{\"epoch\":1} trailing\n", "line 1", "JSON object"},
        {"", "no epochs", "metrics.jsonl"},
        {"\n\n", "no epochs", "metrics.jsonl"},
    };
    const char *dir = kd_test_tmpdir();
    char path[1024];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        CHECK(kd_test_write_file(path, cases[c].text, strlen(cases[c].text)) == 0);
        kd_epoch_metrics *rows = NULL;
        size_t n = 7;
        kd_err err = {0};
        CHECK_EQ_INT(kd_metrics_read(path, &rows, &n, &err), KD_EINPUT);
        CHECK(rows == NULL && n == 0);
        CHECK_CONTAINS(err.msg, cases[c].want1);
        CHECK_CONTAINS(err.msg, cases[c].want2);
        CHECK_CONTAINS(err.msg, path);
    }
    /* Blank lines, a CRLF-free last line without newline, absent fields and unknown keys are
     * fine: absent reads as NaN. */
    const char *ok = "{\"epoch\":1,\"loss\":2,\"ensemble\":0.5}\n\n{\"epoch\":3,\"loss\":null}";
    CHECK(kd_test_write_file(path, ok, strlen(ok)) == 0);
    kd_epoch_metrics *rows = NULL;
    size_t n = 0;
    kd_err err = {0};
    CHECK(kd_metrics_read(path, &rows, &n, &err) == KD_OK);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        CHECK(rows[0].loss == 2 && isnan(rows[0].val_acc) && rows[1].epoch == 3);
        CHECK(isnan(rows[1].loss));
    }
    free(rows);
    snprintf(path, sizeof path, "%s/missing/metrics.jsonl", dir);
    CHECK_EQ_INT(kd_metrics_read(path, &rows, &n, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, path);
}

/* ---- distill plot ---- */

static char g_out[1 << 20];

/* Runs `distill plot ARGS` (rc), then decodes OUT_SVG into g_out (returns the decoder's rc). */
static int plot_and_decode(const char *args, const char *svg, int *plot_rc) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s plot %s", kd_test_distill(), args);
    *plot_rc = kd_test_run(cmd, g_out, sizeof g_out);
    if (*plot_rc != 0) {
        kd_test_fail(__FILE__, __LINE__, "plot failed (%d): %s", *plot_rc, g_out);
        return -1;
    }
    int rc = kd_test_svg_decode(svg, g_out, sizeof g_out);
    if (rc != 0) kd_test_fail(__FILE__, __LINE__, "decoder (%d): %.500s", rc, g_out);
    return rc;
}

/* Epochs first..last of a metric as the (epoch, value) pairs of a decoded line. */
static size_t pairs(metric_fn f, size_t field, size_t first, size_t last, double *out) {
    size_t n = 0;
    for (size_t e = first; e <= last; e++) {
        out[n++] = (double)e;
        out[n++] = f(e, field);
    }
    return n;
}

KD_TEST(plot_lines_map_back_to_metrics_within_half_a_pixel) {
    if (!kd_test_have_python()) {
        kd_test_skip("python3 not available");
        return;
    }
    const char *dir = kd_test_tmpdir();
    char t[1024], s[1024], svg[1024], args[4096];
    snprintf(t, sizeof t, "%s/teacher", dir);
    snprintf(s, sizeof s, "%s/student/", dir); /* a trailing slash is still "student" */
    snprintf(svg, sizeof svg, "%s/curves.svg", dir);
    write_metrics(t, 5, teacher_metric);
    write_metrics(s, 7, student_metric);
    snprintf(args, sizeof args, "%s %s --out %s", t, s, svg);
    int rc;
    if (plot_and_decode(args, svg, &rc) != 0) return;
    CHECK_CONTAINS(g_out, "ok 4 ");
    CHECK_CONTAINS(g_out, "legend teacher\nlegend student\n");
    double want[64];
    /* Panels of the default grid, field indices into k_fields. */
    /* The first shows each run's hard term (the student's differs from its loss). */
    static const char *const panels[] = {"hard", "val_acc", "lr", "samples_per_s"};
    static const size_t fields[] = {2, 4, 5, 6};
    for (size_t p = 0; p < 4; p++) {
        CHECK_SVG_MARK(g_out, panels[p], "line", "teacher", 0, want,
                       pairs(teacher_metric, fields[p], 1, 5, want));
        if (fields[p] == 4) continue;
        CHECK_SVG_MARK(g_out, panels[p], "line", "student", 0, want,
                       pairs(student_metric, fields[p], 1, 7, want));
    }
    /* The student's validation accuracy: epochs 1-2, a gap, 4 alone (a point), a gap, 6-7. */
    CHECK_SVG_MARK(g_out, "val_acc", "line", "student", 0, want, pairs(student_metric, 4, 1, 2, want));
    CHECK_SVG_MARK(g_out, "val_acc", "line", "student", 1, want, pairs(student_metric, 4, 4, 4, want));
    CHECK_SVG_MARK(g_out, "val_acc", "line", "student", 2, want, pairs(student_metric, 4, 6, 7, want));
    CHECK_SVG_MARK(g_out, "val_acc", "point", "student", 0, want, pairs(student_metric, 4, 4, 4, want));

    /* One metric alone, written to METRIC.svg in the current folder by default. */
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd %s && %s plot teacher student --metric=train_acc", dir,
             kd_test_distill());
    CHECK_EQ_INT(kd_test_run(cmd, g_out, sizeof g_out), 0);
    CHECK_CONTAINS(g_out, "train_acc.svg");
    snprintf(svg, sizeof svg, "%s/train_acc.svg", dir);
    CHECK_EQ_INT(kd_test_svg_decode(svg, g_out, sizeof g_out), 0);
    CHECK_CONTAINS(g_out, "ok 1 2");
    CHECK_SVG_MARK(g_out, "train_acc", "line", "student", 0, want, pairs(student_metric, 3, 1, 7, want));
    /* A metrics.jsonl given as a file is named after its folder. */
    snprintf(args, sizeof args, "%s/metrics.jsonl -o %s/one.svg", t, dir);
    snprintf(svg, sizeof svg, "%s/one.svg", dir);
    if (plot_and_decode(args, svg, &rc) == 0)
        CHECK_SVG_MARK(g_out, "hard", "line", "teacher", 0, want, pairs(teacher_metric, 2, 1, 5, want));
}

/* One epoch, constant values, 1,000 epochs and a metric never recorded all draw inside the
 * panels with finite coordinates (the decoder checks every mark against its frame). */
KD_TEST(plot_edge_runs_stay_inside_their_panels) {
    if (!kd_test_have_python()) {
        kd_test_skip("python3 not available");
        return;
    }
    const char *dir = kd_test_tmpdir();
    char one[1024], flat[1024], lng[1024], noval[1024], svg[1024], args[8192];
    snprintf(one, sizeof one, "%s/one", dir);
    snprintf(flat, sizeof flat, "%s/flat", dir);
    snprintf(lng, sizeof lng, "%s/long", dir);
    snprintf(noval, sizeof noval, "%s/noval", dir);
    snprintf(svg, sizeof svg, "%s/p.svg", dir);
    write_metrics(one, 1, teacher_metric);
    write_metrics(flat, 10, constant_metric);
    write_metrics(lng, 1000, long_metric);
    write_metrics(noval, 3, no_val_metric);
    static double want[2100];
    int rc;
    /* Each alone. */
    snprintf(args, sizeof args, "%s -o %s", one, svg);
    if (plot_and_decode(args, svg, &rc) == 0) {
        CHECK_SVG_MARK(g_out, "hard", "point", "one", 0, want, pairs(teacher_metric, 2, 1, 1, want));
        CHECK_SVG_MARK(g_out, "lr", "point", "one", 0, want, pairs(teacher_metric, 5, 1, 1, want));
    }
    snprintf(args, sizeof args, "%s -o %s", flat, svg);
    if (plot_and_decode(args, svg, &rc) == 0) {
        CHECK_SVG_MARK(g_out, "hard", "line", "flat", 0, want, pairs(constant_metric, 2, 1, 10, want));
        CHECK_SVG_MARK(g_out, "lr", "line", "flat", 0, want, pairs(constant_metric, 5, 1, 10, want));
        CHECK_SVG_MARK(g_out, "val_acc", "line", "flat", 0, want, pairs(constant_metric, 4, 1, 10, want));
    }
    snprintf(args, sizeof args, "%s -o %s", lng, svg);
    if (plot_and_decode(args, svg, &rc) == 0) {
        CHECK_SVG_MARK(g_out, "lr", "line", "long", 0, want, pairs(long_metric, 5, 1, 1000, want));
        CHECK_SVG_MARK(g_out, "samples_per_s", "line", "long", 0, want,
                       pairs(long_metric, 6, 1, 1000, want));
    }
    snprintf(args, sizeof args, "%s -o %s --metric val_acc", noval, svg);
    if (plot_and_decode(args, svg, &rc) == 0) CHECK_CONTAINS(g_out, "ok 1 0");
    char *text = NULL;
    size_t len = 0;
    kd_err err = {0};
    CHECK(kd_read_file(svg, 1 << 20, &text, &len, &err) == KD_OK);
    CHECK_CONTAINS(text, "no values recorded");
    free(text);
    /* Names that need escaping, or are not UTF-8, still make a well-formed document. */
    char odd[1024], latin1[1024];
    snprintf(odd, sizeof odd, "%s/a&b<c>", dir);
    snprintf(latin1, sizeof latin1, "%s/caf\xe9", dir);
    write_metrics(odd, 2, teacher_metric);
    write_metrics(latin1, 2, teacher_metric);
    snprintf(args, sizeof args, "\"%s\" \"%s\" -o %s", odd, latin1, svg);
    if (plot_and_decode(args, svg, &rc) == 0) {
        CHECK_CONTAINS(g_out, "legend a&b<c>\nlegend caf?\n");
        CHECK_SVG_MARK(g_out, "hard", "line", "a&b<c>", 0, want, pairs(teacher_metric, 2, 1, 2, want));
    }
    /* All together: each keeps its own values on the shared axes. */
    snprintf(args, sizeof args, "%s %s %s %s -o %s", one, flat, lng, noval, svg);
    if (plot_and_decode(args, svg, &rc) == 0) {
        CHECK_CONTAINS(g_out, "ok 4 ");
        CHECK_SVG_MARK(g_out, "hard", "point", "one", 0, want, pairs(teacher_metric, 2, 1, 1, want));
        CHECK_SVG_MARK(g_out, "hard", "line", "flat", 0, want, pairs(constant_metric, 2, 1, 10, want));
        CHECK_SVG_MARK(g_out, "val_acc", "line", "long", 0, want, pairs(long_metric, 4, 1, 1000, want));
        CHECK_SVG_MARK(g_out, "hard", "line", "noval", 0, want, pairs(no_val_metric, 2, 1, 3, want));
    }
}

/* The x axis ends at the last epoch (13, where nice ticks would run to 14), throughput is on
 * a log axis, and a run that read its teacher's logits from the cache says so in the legend
 * and the throughput title. */
KD_TEST(plot_epoch_axis_log_throughput_and_cached_teacher) {
    if (!kd_test_have_python()) {
        kd_test_skip("python3 not available");
        return;
    }
    const char *dir = kd_test_tmpdir();
    char a[1024], b[1024], svg[1024], args[4096], cfg[1100];
    snprintf(a, sizeof a, "%s/online", dir);
    snprintf(b, sizeof b, "%s/cached", dir);
    snprintf(svg, sizeof svg, "%s/c.svg", dir);
    write_metrics(a, 13, teacher_metric);
    write_metrics(b, 13, student_metric);
    snprintf(cfg, sizeof cfg, "%s/config.json", b);
    const char *json = "{\"teacher\": {\"checkpoint\": \"/t\", \"cache\": {\"path\": \"/c\"}}}";
    CHECK_EQ_INT(kd_test_write_file(cfg, json, strlen(json)), 0);
    snprintf(args, sizeof args, "%s %s -o %s", a, b, svg);
    int rc;
    if (plot_and_decode(args, svg, &rc) != 0) return;
    double r[4];
    CHECK_EQ_INT(kd_test_line_values(g_out, "range hard ", 0, r, 4), 4);
    CHECK_CLOSE(r[0], 1, 0.02, 0);
    CHECK_CLOSE(r[1], 13, 0.02, 0);
    CHECK_CONTAINS(g_out, "panel samples_per_s ");
    CHECK_CONTAINS(g_out, " linear log\n");
    CHECK_CONTAINS(g_out, "legend online\nlegend cached_(cached_teacher)\n");
    double want[64];
    CHECK_SVG_MARK(g_out, "samples_per_s", "line", "cached_(cached_teacher)", 0, want,
                   pairs(student_metric, 6, 1, 13, want));
    char *text = NULL;
    size_t len = 0;
    kd_err err = {0};
    CHECK(kd_read_file(svg, 1 << 20, &text, &len, &err) == KD_OK);
    CHECK_CONTAINS(text, "training throughput (log scale); cached-teacher runs: teacher not run");
    free(text);
}

KD_TEST(plot_bad_input_exit_3_and_writes_nothing) {
    const char *dir = kd_test_tmpdir();
    char cmd[4096], run[1024], svg[1024], path[1024];
    static char out[1 << 16];
    struct stat sb;
    snprintf(svg, sizeof svg, "%s/never.svg", dir);
    /* A folder without metrics.jsonl. */
    snprintf(run, sizeof run, "%s/empty", dir);
    mkdir(run, 0777);
    snprintf(cmd, sizeof cmd, "%s plot %s -o %s", kd_test_distill(), run, svg);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, run);
    CHECK_CONTAINS(out, "no metrics.jsonl");
    /* No such folder. */
    snprintf(cmd, sizeof cmd, "%s plot %s/nope -o %s", kd_test_distill(), dir, svg);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "nope");
    /* A truncated last line, after a good run given first. */
    snprintf(run, sizeof run, "%s/good", dir);
    write_metrics(run, 2, teacher_metric);
    snprintf(run, sizeof run, "%s/cut", dir);
    write_metrics(run, 3, teacher_metric);
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    CHECK(truncate(path, (off_t)(stat(path, &sb) == 0 ? sb.st_size - 40 : 0)) == 0);
    snprintf(cmd, sizeof cmd, "%s plot %s/good %s -o %s", kd_test_distill(), dir, run, svg);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, path);
    CHECK_CONTAINS(out, "line 3");
    CHECK_CONTAINS(out, "truncated");
    CHECK(stat(svg, &sb) != 0 && errno == ENOENT);
    /* A diverged value no axis can show. */
    snprintf(run, sizeof run, "%s/diverged", dir);
    mkdir(run, 0777);
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    const char *huge = "{\"epoch\":1,\"loss\":1}\n{\"epoch\":2,\"loss\":1e200}\n";
    CHECK(kd_test_write_file(path, huge, strlen(huge)) == 0);
    snprintf(cmd, sizeof cmd, "%s plot %s -o %s", kd_test_distill(), run, svg);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 3);
    CHECK_CONTAINS(out, "loss at epoch 2");
    CHECK_CONTAINS(out, "too large");
    CHECK(stat(svg, &sb) != 0 && errno == ENOENT);
    /* Usage errors: no run, an unknown metric (with a suggestion). */
    snprintf(cmd, sizeof cmd, "%s plot -o %s", kd_test_distill(), svg);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);
    CHECK_CONTAINS(out, "RUN");
    snprintf(cmd, sizeof cmd, "%s plot %s/good --metric val_ac", kd_test_distill(), dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 2);
    CHECK_CONTAINS(out, "val_acc");
    /* A picture that cannot be written: exit 1 naming it. */
    snprintf(cmd, sizeof cmd, "%s plot %s/good -o %s/no/such/dir.svg", kd_test_distill(), dir, dir);
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 1);
    CHECK_CONTAINS(out, "dir.svg");
    /* The help names every metric the table offers. */
    snprintf(cmd, sizeof cmd, "%s help plot", kd_test_distill());
    CHECK_EQ_INT(kd_test_run(cmd, out, sizeof out), 0);
    for (size_t i = 0; kd_report_curve_name(i); i++) CHECK_CONTAINS(out, kd_report_curve_name(i));
    CHECK_EQ_INT(kd_report_n_curves(), 8);
}

/* The README's committed examples still keep to the markup contract (and so still read back). */
KD_TEST(plot_committed_examples_decode) {
    if (!kd_test_have_python()) {
        kd_test_skip("python3 not available");
        return;
    }
    CHECK_EQ_INT(kd_test_svg_decode("data/example-curves.svg", g_out, sizeof g_out), 0);
    CHECK_CONTAINS(g_out, "legend fmnist-teacher\nlegend fmnist-student\n");
    CHECK_CONTAINS(g_out, "mark val_acc line fmnist-student ");
    CHECK_EQ_INT(kd_test_svg_decode("data/example-report.svg", g_out, sizeof g_out), 0);
    CHECK_CONTAINS(g_out, "mark top1 interval fmnist-teacher/best.safetensors ");
    CHECK_CONTAINS(g_out, "mark reliability-1 vbar fmnist-student/best.safetensors ");
}
