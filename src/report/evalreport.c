/* evalreport.c - the evaluation report as SVG: a row per model across three panels (top-1 with
 * its Wilson interval, parameters, latency), then a reliability diagram per model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report_impl.h"

#define PAGE_W 960.0
#define ROW_PX 26.0          /* height of one model's row in the top panels */
#define MARGIN_T 34.0        /* room for a panel title */
#define MARGIN_B 48.0        /* room for tick labels and the axis title */
#define GAP 16.0             /* between the top panels */
/* Reliability diagrams: square plot areas, three to a row. */
#define REL_PER_ROW 3
#define REL_SIDE 210.0
#define REL_MARGIN_L 70.0
#define COUNT_H 56.0         /* the samples-per-bin strip under each reliability diagram */
#define FILL_LEGEND_H 24.0   /* the row that says what the diagrams' fills mean */
/* A bin holding less than this share of the samples is greyed: its accuracy is noise. */
#define SPARSE_SHARE 0.01

/* The top-1 panel: the Wilson 95% interval as an error bar and the accuracy as a point. */
static void panel_top1(kd_strbuf *b, kd_panel *p, const kd_report_model *m, size_t n,
                       const char *const *labels) {
    double lo_all = 1, hi_all = 0, lo, hi;
    int labelled = 0;
    for (size_t k = 0; k < n; k++) {
        if (!m[k].met->n) continue;
        kd_wilson95(m[k].met->top1, m[k].met->n, &lo, &hi);
        lo_all = fmin(lo_all, lo);
        hi_all = fmax(hi_all, hi);
        labelled = 1;
    }
    if (!labelled) {
        lo_all = 0;
        hi_all = 1;
    }
    kd_axis_linear(&p->xa, lo_all, hi_all, 5, 0, 1, "top-1 accuracy, 95% Wilson interval");
    kd_svg_panel_open(b, p, "top1", "top-1 accuracy", labels);
    if (!labelled) kd_svg_panel_note(b, p, "no labels: accuracy not measured");
    for (size_t k = 0; k < n && labelled; k++) {
        const kd_metrics *met = m[k].met;
        if (!met->n) continue;
        kd_wilson95(met->top1, met->n, &lo, &hi);
        kd_svg_mark_interval(b, p, lo, (double)k, hi, (double)k, k, m[k].label);
        kd_svg_mark_point(b, p, (double)met->top1 / (double)met->n, (double)k, k, m[k].label);
    }
    kd_svg_panel_close(b);
}

/* n with thousands separators: 2,395,210. */
static void group_digits(size_t n, char *out, size_t cap) {
    char digits[32];
    size_t len = (size_t)snprintf(digits, sizeof digits, "%zu", n), o = 0;
    for (size_t i = 0; i < len && o + 2 < cap; i++) {
        if (i && (len - i) % 3 == 0) out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

/* The parameters panel: a bar per model on a log scale. */
static void panel_params(kd_strbuf *b, kd_panel *p, const kd_report_model *m, size_t n) {
    double lo = INFINITY, hi = 0;
    for (size_t k = 0; k < n; k++) {
        double v = m[k].params ? (double)m[k].params : 1;
        lo = fmin(lo, v);
        hi = fmax(hi, v);
    }
    /* A decade below the smallest model, so its bar has a length to compare. */
    kd_axis_log(&p->xa, lo / 10, hi, "parameters (log scale)");
    kd_svg_panel_open(b, p, "params", "parameters", NULL);
    for (size_t k = 0; k < n; k++) {
        char value[32];
        group_digits(m[k].params, value, sizeof value);
        kd_svg_mark_hbar(b, p, k, m[k].params ? (double)m[k].params : 1, k, m[k].label, NULL,
                         value);
    }
    kd_svg_panel_close(b);
}

static int latency_ok(const kd_report_model *m) {
    return isfinite(m->latency_p50_us) && isfinite(m->latency_p99_us) && m->latency_p50_us > 0 &&
           m->latency_p99_us >= m->latency_p50_us;
}

/* The latency panel: p50 as a bar, a whisker from p50 to p99, log scale. */
static void panel_latency(kd_strbuf *b, kd_panel *p, const kd_report_model *m, size_t n) {
    double lo = INFINITY, hi = 0;
    for (size_t k = 0; k < n; k++) {
        if (!latency_ok(&m[k])) continue;
        lo = fmin(lo, m[k].latency_p50_us);
        hi = fmax(hi, m[k].latency_p99_us);
    }
    int any = hi > 0;
    kd_axis_log(&p->xa, any ? lo : 1, any ? hi : 10, "microseconds (log): bar p50, whisker p99");
    kd_svg_panel_open(b, p, "latency", "single-sample latency", NULL);
    if (!any) kd_svg_panel_note(b, p, "not measured");
    for (size_t k = 0; k < n; k++) {
        if (!latency_ok(&m[k])) continue;
        char tip[160], value[32];
        snprintf(tip, sizeof tip, "%s: p50 %.1f us, p99 %.1f us", m[k].label, m[k].latency_p50_us,
                 m[k].latency_p99_us);
        snprintf(value, sizeof value, "%.3g us", m[k].latency_p50_us);
        kd_svg_mark_hbar(b, p, k, m[k].latency_p50_us, k, m[k].label, tip, NULL);
        kd_svg_mark_interval(b, p, m[k].latency_p50_us, (double)k, m[k].latency_p99_us,
                             (double)k, k, m[k].label);
        kd_svg_value_text(b, p, kd_panel_px(p, m[k].latency_p50_us),
                          kd_panel_px(p, m[k].latency_p99_us), k, value);
    }
    kd_svg_panel_close(b);
}

/* One model's reliability diagram: per confidence bin b (width 1/KD_ECE_BINS) with n_b > 0,
 * a bar up to its accuracy acc_b = hits_b / n_b and a shaded gap from acc_b to its mean
 * confidence conf_b = sum conf / n_b; ECE = sum_b (n_b / N) |acc_b - conf_b|. Bins with under
 * 1% of the samples are grey. The ECE sits above the plot, right of the title, where no bar
 * can cover it. */
static void panel_reliability(kd_strbuf *b, kd_panel *p, const kd_report_model *m, size_t k) {
    const kd_metrics *met = m->met;
    char name[32], title[128], ece[32];
    snprintf(name, sizeof name, "reliability-%zu", k);
    /* The title shares its line with the ECE ("ECE 0.0000", 10 characters) and is bold (about
     * a tenth wider than the average advance): it keeps to the room left of it, without the
     * ".safetensors" every checkpoint's name ends in. */
    char base[128];
    snprintf(base, sizeof base, "%s", m->label);
    size_t len = strlen(base), ext = strlen(".safetensors");
    if (len > ext && strcmp(base + len - ext, ".safetensors") == 0) base[len - ext] = '\0';
    kd_svg_fit(base, (size_t)((p->w - 14 * KD_SVG_CHAR_PX) / (1.1 * KD_SVG_CHAR_PX)), title,
               sizeof title);
    kd_axis_linear(&p->xa, 0, 1, 6, 0, 0, "confidence (max softmax probability)");
    kd_axis_linear(&p->ya, 0, 1, 6, 0, 0, "accuracy");
    kd_svg_panel_open(b, p, name, title, NULL);
    if (met->n) {
        snprintf(ece, sizeof ece, "ECE %.4f", kd_metrics_ece(met));
        kd_svg_text(b, p->x + p->w, p->y - 9, "end", "ece", NULL, ece);
    }
    kd_strbuf_printf(b, "<line class=\"diagonal\" x1=\"%.6g\" y1=\"%.6g\" x2=\"%.6g\" y2=\"%.6g\" "
                     "stroke=\"#888\" stroke-dasharray=\"4 3\"/>\n", kd_panel_px(p, 0),
                     kd_panel_py(p, 0), kd_panel_px(p, 1), kd_panel_py(p, 1));
    if (!met->n) kd_svg_panel_note(b, p, "no labels: calibration not measured");
    kd_svg_series_open(b, m->label);
    for (size_t bin = 0; bin < KD_ECE_BINS && met->n; bin++) {
        if (!met->bin_n[bin]) continue;
        double n_b = (double)met->bin_n[bin];
        double acc = (double)met->bin_hits[bin] / n_b, conf = met->bin_conf[bin] / n_b;
        double x0 = (double)bin / KD_ECE_BINS, x1 = (double)(bin + 1) / KD_ECE_BINS;
        int sparse = n_b < SPARSE_SHARE * (double)met->n;
        char tip[128];
        snprintf(tip, sizeof tip, "n %zu (%.1f%% of the samples), accuracy %.1f%%, confidence "
                 "%.1f%%", met->bin_n[bin], 100 * n_b / (double)met->n, 100 * acc, 100 * conf);
        kd_svg_mark_box(b, p, "vbar", sparse ? "bar sparse" : "bar", x0, x1, 0, acc, NULL, tip);
        kd_svg_mark_box(b, p, "vspan", sparse ? "gap sparse" : "gap", x0, x1, acc, conf, NULL,
                        NULL);
    }
    kd_svg_series_close(b);
    kd_svg_panel_close(b);
}

/* Under a reliability diagram: the samples in each of its bins (grey: under 1%), on a log
 * axis from half the smallest count, so a bin of a few samples still shows a bar. */
static void panel_counts(kd_strbuf *b, kd_panel *p, const kd_report_model *m, size_t k) {
    const kd_metrics *met = m->met;
    char name[32];
    size_t most = 0, least = SIZE_MAX;
    for (size_t bin = 0; bin < KD_ECE_BINS; bin++) {
        if (met->bin_n[bin] > most) most = met->bin_n[bin];
        if (met->bin_n[bin] && met->bin_n[bin] < least) least = met->bin_n[bin];
    }
    snprintf(name, sizeof name, "counts-%zu", k);
    kd_axis_linear(&p->xa, 0, 1, 6, 0, 0, "confidence");
    kd_axis_log(&p->ya, most ? 0.5 * (double)least : 0.5, most ? (double)most : 10,
                "samples (log)");
    kd_svg_panel_open(b, p, name, "samples per bin", NULL);
    kd_svg_series_open(b, m->label);
    for (size_t bin = 0; bin < KD_ECE_BINS && met->n; bin++) {
        if (!met->bin_n[bin]) continue;
        double n_b = (double)met->bin_n[bin];
        char tip[64];
        snprintf(tip, sizeof tip, "%zu samples (%.1f%%)", met->bin_n[bin],
                 100 * n_b / (double)met->n);
        kd_svg_mark_box(b, p, "vbar", n_b < SPARSE_SHARE * (double)met->n ? "bar sparse" : "bar",
                        (double)bin / KD_ECE_BINS, (double)(bin + 1) / KD_ECE_BINS, p->ya.lo, n_b,
                        NULL, tip);
    }
    kd_svg_series_close(b);
    kd_svg_panel_close(b);
}

/* What the reliability diagrams' fills and line mean, once above them. */
static void fill_legend(kd_strbuf *b, double x, double y) {
    static const char *const cls[] = {"bar", "gap", "bar sparse"};
    static const char *const what[] = {"accuracy of the bin", "gap to its mean confidence",
                                       "bin with under 1% of the samples"};
    kd_strbuf_puts(b, "<g class=\"fill-legend\">\n");
    for (int i = 0; i < 3; i++) {
        kd_strbuf_printf(b, "<rect class=\"%s\" x=\"%.6g\" y=\"%.6g\" width=\"14\" "
                         "height=\"10\"/>\n", cls[i], x, y - 9);
        kd_svg_text(b, x + 19, y, NULL, NULL, NULL, what[i]);
        x += 19 + kd_svg_text_width(what[i]) + 22;
    }
    kd_strbuf_printf(b, "<line x1=\"%.6g\" y1=\"%.6g\" x2=\"%.6g\" y2=\"%.6g\" stroke=\"#888\" "
                     "stroke-dasharray=\"4 3\"/>\n", x, y - 4, x + 18, y - 4);
    kd_svg_text(b, x + 23, y, NULL, NULL, NULL, "perfect calibration");
    kd_strbuf_puts(b, "</g>\n");
}

kd_status kd_report_eval(const kd_report_model *models, size_t n, const char *subtitle,
                         kd_strbuf *svg, kd_err *err) {
    if (n == 0) return kd_err_set(err, KD_EUSAGE, "no models to report");
    const char **labels = malloc(n * sizeof *labels);
    if (!labels) return kd_err_set(err, KD_EIO, "out of memory");
    /* The model names sit left of the first panel: as wide as the longest, within reason. */
    double label_w = 90;
    for (size_t k = 0; k < n; k++) {
        labels[k] = models[k].label;
        label_w = fmax(label_w, kd_svg_text_width(models[k].label) + 24);
    }
    label_w = fmin(label_w, 260);
    double top = 64, rows_h = fmax(ROW_PX * (double)n, 2 * ROW_PX);
    double rel_top = top + MARGIN_T + rows_h + MARGIN_B + 12;
    double rel_cell_w = PAGE_W / REL_PER_ROW;
    double rel_cell_h = MARGIN_T + REL_SIDE + MARGIN_B + MARGIN_T + COUNT_H + MARGIN_B;
    size_t rel_rows = (n + REL_PER_ROW - 1) / REL_PER_ROW;
    kd_svg_begin(svg, PAGE_W, rel_top + FILL_LEGEND_H + (double)rel_rows * rel_cell_h + 8,
                 "distill: evaluation report");
    kd_svg_text(svg, 20, 26, NULL, "heading", "font-size=\"15\" font-weight=\"bold\"",
                "evaluation report");
    kd_svg_text(svg, 20, 45, NULL, "subtitle", "fill=\"#555\"", subtitle ? subtitle : "");

    /* Three panels sharing the model rows. */
    double cell_w = (PAGE_W - label_w - 8) / 3;
    kd_panel p[3];
    for (int i = 0; i < 3; i++) {
        memset(&p[i], 0, sizeof p[i]);
        p[i].x = label_w + (double)i * cell_w + (i ? GAP : 0);
        p[i].y = top + MARGIN_T;
        p[i].w = cell_w - GAP - (i ? GAP : 0);
        p[i].h = rows_h;
        kd_axis_category(&p[i].ya, n, NULL);
    }
    panel_top1(svg, &p[0], models, n, labels);
    panel_params(svg, &p[1], models, n);
    panel_latency(svg, &p[2], models, n);

    for (size_t k = 0; k < n; k++) {
        kd_panel r = {0};
        r.x = (double)(k % REL_PER_ROW) * rel_cell_w + REL_MARGIN_L;
        r.y = rel_top + FILL_LEGEND_H + (double)(k / REL_PER_ROW) * rel_cell_h + MARGIN_T;
        r.w = r.h = REL_SIDE;
        panel_reliability(svg, &r, &models[k], k);
        kd_panel c = r;
        c.y = r.y + REL_SIDE + MARGIN_B + MARGIN_T;
        c.h = COUNT_H;
        panel_counts(svg, &c, &models[k], k);
    }
    /* Between the top panels' axis titles and the diagrams' titles, clear of both. */
    fill_legend(svg, 20, rel_top + 4);
    kd_svg_end(svg);
    free(labels);
    return KD_OK;
}
