/* report_impl.h - private to src/report: the SVG drawing kit the two pictures share (axes with
 * "nice" ticks, panels, data marks, legend, text), written into a kd_strbuf.
 *
 * Every picture follows one markup contract, so a reader (tests/svg_decode.py) recovers the data
 * from what a viewer sees, without knowing how the picture was made:
 *   <g class="panel" data-name=N data-xscale=S data-yscale=S>   S: linear | log | category
 *     <rect class="frame" .../>                the plot area; every mark lies inside it
 *     <g class="xtick"><line x1=.../><text>LABEL</text></g>     LABEL: "0.25", "85%", "1.5e-4",
 *     <g class="ytick"><line y1=.../><text>LABEL</text></g>            "10k", "1M" (log axes)
 *     <text class="title|xlabel|ylabel">...</text>
 *     marks with data-kind and data-series (or inside a <g data-series>):   line (a <path>, "M x,y L x,y ... M" with a gap at a
 *       missing value), point (<circle>), interval (<line>: both ends), hbar (<rect>: its right
 *       edge is the value), vbar (<rect>: its top is the value), vspan (<rect>: both edges)
 * A category axis has one tick per category (top to bottom), labelled in the first panel of a
 * row (class "ycat"); a mark's row is the tick nearest to its centre. */
#ifndef KD_REPORT_IMPL_H
#define KD_REPORT_IMPL_H

#include <stddef.h>

#include "kd_report.h"
#include "kd_strbuf.h"

#define KD_SVG_FONT_PX 11.0
#define KD_SVG_CHAR_PX 6.2 /* average advance of a sans-serif character at KD_SVG_FONT_PX */

typedef enum { KD_AXIS_LINEAR, KD_AXIS_LOG, KD_AXIS_CATEGORY } kd_axis_kind;

typedef struct {
    kd_axis_kind kind;
    double lo, hi;       /* the value range the plot area spans (log: powers of ten) */
    double step;         /* linear: tick spacing, a "nice" 1, 2 or 5 times a power of ten */
    long first;          /* linear: the first tick is first * step (so ticks never drift) */
    size_t n_ticks;      /* linear and log ticks; category: the number of categories */
    int percent;         /* linear: fractions labelled as percentages */
    const char *label;   /* axis title (NULL: none) */
} kd_axis;

/* A linear axis whose ticks are round numbers and whose range [first * step, last tick] covers
 * [min, max] (Heckbert's "nice numbers", Graphics Gems 1990): about max_ticks ticks. A range of
 * zero width is widened (by 10% of |min|, or 1 around 0) so a constant still gets an axis.
 * integer_steps keeps the step >= 1 (epochs). min and max must be finite with min <= max. */
void kd_axis_linear(kd_axis *a, double min, double max, int max_ticks, int integer_steps,
                    int percent, const char *label);
/* A linear axis narrowed to exactly [min, max] (inside its range), keeping only the ticks in
 * it; unchanged when fewer than two would be left. The epoch axis ends at the last epoch. */
void kd_axis_clip(kd_axis *a, double min, double max);
/* A log10 axis from the power of ten at or below min to the one above max (at least one
 * decade); min and max finite and > 0. */
void kd_axis_log(kd_axis *a, double min, double max, const char *label);
/* n categories, drawn top to bottom (index 0 first). */
void kd_axis_category(kd_axis *a, size_t n, const char *label);
/* Value of tick i, and its label ("0.25", "85%", "1.5e-4", "10k") into buf. */
double kd_axis_tick(const kd_axis *a, size_t i);
void kd_axis_tick_label(const kd_axis *a, double v, char *buf, size_t cap);

/* A panel: its plot area in pixels (x, y the top-left corner) and its two axes. */
typedef struct {
    double x, y, w, h;
    kd_axis xa, ya;
} kd_panel;

/* Value to pixel. Log axes map log10(v); a category axis maps index i to the centre of its row
 * (y) or column (x). */
double kd_panel_px(const kd_panel *p, double v);
double kd_panel_py(const kd_panel *p, double v);

/* The document: <svg> with its size and a white background, and its closing tag. */
void kd_svg_begin(kd_strbuf *b, double w, double h, const char *title);
void kd_svg_end(kd_strbuf *b);
/* Point markers (one per series colour, n of them) that kd_svg_mark_line's markers use; once,
 * right after kd_svg_begin. */
void kd_svg_markers(kd_strbuf *b, size_t n);
/* Text with XML escaping; anchor NULL (the style's or "start") | "middle" | "end"; cls may be NULL; extra (may be
 * NULL) goes verbatim into the tag (a rotation, a size). */
void kd_svg_text(kd_strbuf *b, double x, double y, const char *anchor, const char *cls,
                 const char *extra, const char *text);
/* text into out (cap bytes), cut to about max_chars by dropping its start for an ellipsis. */
void kd_svg_fit(const char *text, size_t max_chars, char *out, size_t cap);
/* kd_svg_text of text cut to max_chars (kd_svg_fit). */
void kd_svg_text_fit(kd_strbuf *b, double x, double y, const char *anchor, const char *cls,
                     const char *text, size_t max_chars);
/* Opens <g class="panel"> with frame, grid, ticks, tick labels, axis titles and title; the
 * marks follow, then kd_svg_panel_close. cat_labels (may be NULL) labels a category y axis. */
void kd_svg_panel_open(kd_strbuf *b, const kd_panel *p, const char *name, const char *title,
                       const char *const *cat_labels);
void kd_svg_panel_close(kd_strbuf *b);
/* A centred note in an empty panel ("no values"). */
void kd_svg_panel_note(kd_strbuf *b, const kd_panel *p, const char *text);

/* The k-th series colour (colour-blind-safe palette, Okabe & Ito 2008) and dash pattern (solid
 * for the first round of colours, then dashed, so series stay distinguishable past 7). */
const char *kd_svg_color(size_t k);
const char *kd_svg_dash(size_t k);

/* Marks (see the contract above); series is the legend name, or NULL inside a group that
 * names it for all its marks (kd_svg_series_open ... kd_svg_series_close: smaller files). */
void kd_svg_series_open(kd_strbuf *b, const char *series);
void kd_svg_series_close(kd_strbuf *b);
/* A line through (x[i], y[i]) with a gap wherever y is NaN; markers: a dot on every vertex
 * (kd_svg_markers). Every isolated value also gets a point mark. */
void kd_svg_mark_line(kd_strbuf *b, const kd_panel *p, const double *x, const double *y, size_t n,
                      size_t color, const char *series, int markers);
void kd_svg_mark_point(kd_strbuf *b, const kd_panel *p, double x, double y, size_t color,
                       const char *series);
/* From (x0, y0) to (x1, y1), with end caps across the line (an error bar). */
void kd_svg_mark_interval(kd_strbuf *b, const kd_panel *p, double x0, double y0, double x1,
                          double y1, size_t color, const char *series);
/* Horizontal bar in category row `row` from the axis start to value v, with a hover text
 * (tooltip) and a printed number (value_text) when those are not NULL. */
void kd_svg_mark_hbar(kd_strbuf *b, const kd_panel *p, size_t row, double v, size_t color,
                      const char *series, const char *tooltip, const char *value_text);
/* A bar's number in category row `row`: after x_after (a bar's end, or a whisker's) when it
 * fits in the panel, else inside the bar (right-aligned at x_bar, in white) when it fits there,
 * else just after the bar on a white halo. */
void kd_svg_value_text(kd_strbuf *b, const kd_panel *p, double x_bar, double x_after, size_t row,
                       const char *text);
/* Vertical box over [x0, x1] from y0 to y1; kind "vbar" (y0 the axis start, y1 the value) or
 * "vspan" (both edges are values); cls its style ("bar", "gap"). */
void kd_svg_mark_box(kd_strbuf *b, const kd_panel *p, const char *kind, const char *cls,
                     double x0, double x1, double y0, double y1, const char *series,
                     const char *tooltip);

/* A legend row by row from (x, y) within width w: swatch and name per series. Returns the
 * height it took. */
double kd_svg_legend(kd_strbuf *b, double x, double y, double w, const char *const *names,
                     size_t n);

/* Pixel width of text at the document's font size (an estimate for layout: KD_SVG_CHAR_PX a
 * character). */
double kd_svg_text_width(const char *text);

#endif
