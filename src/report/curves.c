/* curves.c - training curves as SVG: a panel per metric, a line per run against the epoch, one
 * legend for all panels (every panel shows the same runs in the same colours). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "report_impl.h"

/* What a curve shows: a metrics.jsonl field, its panel title, its axis title, and whether it
 * is a fraction drawn as a percentage. */
typedef struct {
    const char *name, *title, *axis;
    int percent;
    int log;  /* a log axis when every value is > 0 (throughputs differ by orders) */
} curve;

static const curve curves[] = {
    {"loss", "loss (mean over the epoch)", "loss", 0, 0},
    {"val_acc", "validation accuracy", "accuracy", 1, 0},
    {"train_acc", "training accuracy (dropout on)", "accuracy", 1, 0},
    {"lr", "learning rate (last step of the epoch)", "learning rate", 0, 0},
    {"samples_per_s", "training throughput (log scale)", "samples/s", 0, 1},
    {"soft", "soft loss (teacher term)", "soft loss", 0, 0},
    {"hard", "hard loss (label term)", "hard loss", 0, 0},
    {"seconds", "epoch wall time", "seconds", 0, 0},
};
#define N_CURVES (sizeof curves / sizeof curves[0])
/* The default 2x2 grid: loss, validation accuracy, learning rate, throughput. Its loss panel
 * shows the hard term instead when a run has one: a teacher's loss is a cross-entropy, a
 * student's a distillation loss on another scale, their hard terms one quantity. */
static const size_t default_grid[] = {0, 1, 3, 4};
static const curve grid_ce = {"hard", "cross-entropy with the labels (each run's hard term)",
                              "cross-entropy", 0, 0};

/* Past this a value is a diverged run, not something an axis can show. */
#define MAX_PLOT_VALUE 1e100

/* Page geometry (pixels): width, panel margins inside each grid cell, cell heights. */
#define PAGE_W 960.0
#define MARGIN_L 78.0
#define MARGIN_R 24.0
#define MARGIN_T 34.0
#define MARGIN_B 48.0
#define CELL_H_GRID 300.0
#define CELL_H_SINGLE 440.0
/* Draw a marker on every epoch up to this many epochs. */
#define MAX_MARKED_EPOCHS 40

size_t kd_report_n_curves(void) { return N_CURVES; }

const char *kd_report_curve_name(size_t i) { return i < N_CURVES ? curves[i].name : NULL; }

/* The y range of one metric over all runs: *n_finite values, KD_EINPUT for a value too large. */
static kd_status metric_range(const kd_report_run *runs, size_t n_runs, const char *name,
                              double *lo, double *hi, size_t *n_finite, kd_err *err) {
    *lo = INFINITY;
    *hi = -INFINITY;
    *n_finite = 0;
    for (size_t r = 0; r < n_runs; r++)
        for (size_t i = 0; i < runs[r].n_rows; i++) {
            double v = kd_epoch_metric_get(&runs[r].rows[i], name);
            if (isnan(v)) continue;
            if (!(fabs(v) <= MAX_PLOT_VALUE))
                return kd_err_set(err, KD_EINPUT, "run %s: %s at epoch %zu is %g, too large to "
                                  "plot", runs[r].label, name, runs[r].rows[i].epoch, v);
            *lo = fmin(*lo, v);
            *hi = fmax(*hi, v);
            (*n_finite)++;
        }
    return KD_OK;
}

/* One panel: axes from the data, a line per run. xs, ys: scratch for the longest run. */
static kd_status draw_panel(kd_strbuf *b, const kd_report_run *runs, size_t n_runs,
                            const curve *c, const kd_panel *geom, const kd_axis *xa, double *xs,
                            double *ys, int markers, kd_err *err) {
    double lo, hi;
    size_t n_finite;
    kd_status st = metric_range(runs, n_runs, c->name, &lo, &hi, &n_finite, err);
    if (st) return st;
    kd_panel p = *geom;
    p.xa = *xa;
    const int log_axis = c->log && n_finite && lo > 0;
    if (log_axis) kd_axis_log(&p.ya, lo, hi, c->axis);
    else if (n_finite) kd_axis_linear(&p.ya, lo, hi, 6, 0, c->percent, c->axis);
    else kd_axis_linear(&p.ya, 0, 1, 6, 0, c->percent, c->axis);
    char title[160];
    int cached = 0;
    for (size_t r = 0; r < n_runs; r++) cached |= runs[r].teacher_cached;
    /* A throughput without the teacher's forward is not the same measure: say so. */
    snprintf(title, sizeof title, "%s%s", c->log && !log_axis ? "training throughput" : c->title,
             cached && strcmp(c->name, "samples_per_s") == 0
                 ? "; cached-teacher runs: teacher not run" : "");
    kd_svg_panel_open(b, &p, c->name, title, NULL);
    if (!n_finite) kd_svg_panel_note(b, &p, "no values recorded");
    for (size_t r = 0; r < n_runs; r++) {
        for (size_t i = 0; i < runs[r].n_rows; i++) {
            xs[i] = (double)runs[r].rows[i].epoch;
            ys[i] = kd_epoch_metric_get(&runs[r].rows[i], c->name);
        }
        kd_svg_mark_line(b, &p, xs, ys, runs[r].n_rows, r, runs[r].label, markers);
    }
    kd_svg_panel_close(b);
    return KD_OK;
}

kd_status kd_report_curves(const kd_report_run *runs, size_t n_runs, const char *metric,
                           kd_strbuf *svg, kd_err *err) {
    const curve *chosen[4];
    /* A named loss term ("loss.dkd.tckd"): a metric of the runs that have it, not of the table. */
    const curve term = {metric, metric, "loss term", 0, 0};
    size_t n_panels = 0, max_rows = 0, first_epoch = SIZE_MAX, last_epoch = 0;
    if (metric) {
        for (size_t i = 0; i < N_CURVES && !n_panels; i++)
            if (strcmp(curves[i].name, metric) == 0) chosen[n_panels++] = &curves[i];
        for (size_t r = 0; r < n_runs && !n_panels; r++)
            if (runs[r].n_rows && kd_epoch_term_find(&runs[r].rows[0], metric) >= 0)
                chosen[n_panels++] = &term;
        if (!n_panels) return kd_err_set(err, KD_EUSAGE, "unknown metric '%s'", metric);
    } else {
        for (size_t i = 0; i < 4; i++) chosen[n_panels++] = &curves[default_grid[i]];
        int hard = kd_epoch_field_find("hard");
        for (size_t r = 0; r < n_runs && chosen[0] != &grid_ce; r++)
            for (size_t i = 0; i < runs[r].n_rows; i++)
                if (isfinite(kd_epoch_field_get(&runs[r].rows[i], (size_t)hard)))
                    chosen[0] = &grid_ce;
    }
    for (size_t r = 0; r < n_runs; r++) {
        if (runs[r].n_rows > max_rows) max_rows = runs[r].n_rows;
        if (runs[r].n_rows == 0) continue;
        if (runs[r].rows[0].epoch < first_epoch) first_epoch = runs[r].rows[0].epoch;
        if (runs[r].rows[runs[r].n_rows - 1].epoch > last_epoch)
            last_epoch = runs[r].rows[runs[r].n_rows - 1].epoch;
    }
    if (max_rows == 0) return kd_err_set(err, KD_EINPUT, "no epochs to plot");
    kd_status st = KD_OK;
    double *xs = malloc(2 * max_rows * sizeof *xs);
    const char **names = malloc(n_runs * sizeof *names);
    if (!xs || !names) {
        st = kd_err_set(err, KD_EIO, "out of memory for %zu epochs", max_rows);
        goto cleanup;
    }
    for (size_t r = 0; r < n_runs; r++) names[r] = runs[r].label;

    /* Title, then the legend (its height depends on the names), then the grid of panels. */
    size_t cols = n_panels > 1 ? 2 : 1, rows = (n_panels + cols - 1) / cols;
    double cell_w = PAGE_W / (double)cols, cell_h = n_panels > 1 ? CELL_H_GRID : CELL_H_SINGLE;
    kd_strbuf legend = {0};
    double legend_h = kd_svg_legend(&legend, 20, 50, PAGE_W - 40, names, n_runs);
    double top = 50 + legend_h;
    kd_svg_begin(svg, PAGE_W, top + (double)rows * cell_h + 8, "distill: training curves");
    if (max_rows <= MAX_MARKED_EPOCHS) kd_svg_markers(svg, n_runs);
    kd_svg_text(svg, 20, 26, NULL, "heading", "font-size=\"15\" font-weight=\"bold\"",
                "training curves");
    kd_strbuf_put(svg, legend.s ? legend.s : "", legend.len);
    svg->oom |= legend.oom;
    kd_strbuf_free(&legend);

    kd_axis xa;
    kd_axis_linear(&xa, (double)first_epoch, (double)last_epoch, 6, 1, 0, "epoch");
    kd_axis_clip(&xa, (double)first_epoch, (double)last_epoch);
    for (size_t k = 0; k < n_panels && !st; k++) {
        kd_panel geom = {0};
        geom.x = (double)(k % cols) * cell_w + MARGIN_L;
        geom.y = top + (double)(k / cols) * cell_h + MARGIN_T;
        geom.w = cell_w - MARGIN_L - MARGIN_R;
        geom.h = cell_h - MARGIN_T - MARGIN_B;
        st = draw_panel(svg, runs, n_runs, chosen[k], &geom, &xa, xs, xs + max_rows,
                        max_rows <= MAX_MARKED_EPOCHS, err);
    }
    kd_svg_end(svg);
cleanup:
    free(xs);
    free(names);
    return st;
}
