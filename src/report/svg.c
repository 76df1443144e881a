/* svg.c - the SVG drawing kit of src/report (report_impl.h): nice axes, panels, marks, legend,
 * escaped text, and the atomic save of a finished picture. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kd_safetensors.h"
#include "report_impl.h"

/* Series colours: the colour-blind-safe palette of Okabe & Ito (2008). */
static const char *const palette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                      "#E69F00", "#56B4E9", "#000000"};
#define N_PALETTE (sizeof palette / sizeof palette[0])

/* ---- Axes ---------------------------------------------------------------------------------- */

/* Heckbert's nice number: 1, 2, 5 or 10 times a power of ten near x (> 0); rounded to the
 * nearest when `round`, else the smallest one >= x (give or take a rounding error: 0.55 - 0.45
 * is 0.10000000000000003, and its nice number is still 0.1). */
static double nice_num(double x, int round) {
    double e = floor(log10(x)), f = x / pow(10.0, e), nf, slack = 1 + 1e-9;
    if (round) nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    else nf = f <= slack ? 1 : f <= 2 * slack ? 2 : f <= 5 * slack ? 5 : 10;
    return nf * pow(10.0, e);
}

void kd_axis_linear(kd_axis *a, double min, double max, int max_ticks, int integer_steps,
                    int percent, const char *label) {
    memset(a, 0, sizeof *a);
    a->kind = KD_AXIS_LINEAR;
    a->percent = percent;
    a->label = label;
    if (!(max - min > 1e-12 * fmax(fabs(min), fabs(max)))) {
        double pad = min != 0 ? 0.1 * fabs(min) : 1.0;
        min -= pad;
        max += pad;
    }
    /* Nice step for about max_ticks ticks over a nice-rounded range. */
    double step = nice_num(nice_num(max - min, 0) / (max_ticks > 2 ? max_ticks - 1 : 1), 1);
    if (integer_steps && step < 1) step = 1;
    long first = (long)floor(min / step), last = (long)ceil(max / step);
    /* The division may land an ulp off: make sure the ticks really enclose [min, max]. */
    if ((double)first * step > min) first--;
    if ((double)last * step < max) last++;
    if (last == first) last++;
    a->step = step;
    a->first = first;
    a->n_ticks = (size_t)(last - first) + 1;
    a->lo = (double)first * step;
    a->hi = (double)last * step;
}

void kd_axis_clip(kd_axis *a, double min, double max) {
    if (a->kind != KD_AXIS_LINEAR || !(max > min) || min < a->lo || max > a->hi) return;
    long first = (long)ceil(min / a->step - 1e-9), last = (long)floor(max / a->step + 1e-9);
    if (last - first < 1) return;  /* fewer than two ticks would be left: keep the nice range */
    a->first = first;
    a->n_ticks = (size_t)(last - first) + 1;
    a->lo = min;
    a->hi = max;
}

void kd_axis_log(kd_axis *a, double min, double max, const char *label) {
    memset(a, 0, sizeof *a);
    a->kind = KD_AXIS_LOG;
    a->label = label;
    long e0 = (long)floor(log10(min)), e1 = (long)ceil(log10(max));
    if (pow(10.0, (double)e0) > min) e0--;
    if (pow(10.0, (double)e1) < max) e1++;
    if (e1 == e0) e1++;
    a->first = e0;
    a->n_ticks = (size_t)(e1 - e0) + 1;
    a->lo = pow(10.0, (double)e0);
    a->hi = pow(10.0, (double)e1);
}

void kd_axis_category(kd_axis *a, size_t n, const char *label) {
    memset(a, 0, sizeof *a);
    a->kind = KD_AXIS_CATEGORY;
    a->label = label;
    a->n_ticks = n;
    a->lo = -0.5;
    a->hi = (double)n - 0.5;
}

double kd_axis_tick(const kd_axis *a, size_t i) {
    switch (a->kind) {
    case KD_AXIS_LINEAR: return (double)(a->first + (long)i) * a->step;
    case KD_AXIS_LOG: return pow(10.0, (double)(a->first + (long)i));
    default: return (double)i;
    }
}

void kd_axis_tick_label(const kd_axis *a, double v, char *buf, size_t cap) {
    if (a->kind == KD_AXIS_LOG) {
        /* Powers of ten with SI suffixes: 1, 10, 100, 1k, ..., 1M, 1G. */
        static const char *const suffix[] = {"", "k", "M", "G", "T"};
        int e = (int)lround(log10(v));
        if (e >= 0 && e < 15) snprintf(buf, cap, "%.0f%s", pow(10.0, e % 3), suffix[e / 3]);
        else snprintf(buf, cap, "%g", v);
        return;
    }
    if (a->kind == KD_AXIS_CATEGORY) {
        snprintf(buf, cap, "%.0f", v);
        return;
    }
    double s = a->step, big = fmax(fabs(a->lo), fabs(a->hi));
    if (a->percent) {
        v *= 100;
        s *= 100;
        big *= 100;
    }
    if (fabs(v) < 1e-9 * s) v = 0; /* no "-0" or "1e-17" at the origin */
    /* Digits after the point: as many as the step has (0.05 -> 2). */
    int dec = s >= 1 ? 0 : (int)ceil(-log10(s) - 1e-9);
    if (!a->percent && (dec > 5 || big >= 1e6)) {
        /* Scientific with one exponent for the whole axis: 0.90e-6, 0.95e-6, 1.00e-6. */
        int e = (int)floor(log10(big));
        int mdec = e - (int)floor(log10(s) + 1e-9);
        snprintf(buf, cap, "%.*fe%d", mdec > 0 ? mdec : 0, v / pow(10.0, e), e);
        return;
    }
    snprintf(buf, cap, "%.*f%s", dec, v, a->percent ? "%" : "");
}

static double axis_frac(const kd_axis *a, double v) {
    if (a->kind == KD_AXIS_LOG) return (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo));
    return (v - a->lo) / (a->hi - a->lo);
}

double kd_panel_px(const kd_panel *p, double v) { return p->x + axis_frac(&p->xa, v) * p->w; }

double kd_panel_py(const kd_panel *p, double v) {
    /* Values grow upwards; categories run top to bottom. */
    double f = axis_frac(&p->ya, v);
    return p->ya.kind == KD_AXIS_CATEGORY ? p->y + f * p->h : p->y + p->h - f * p->h;
}

/* ---- Text and the document ----------------------------------------------------------------- */

/* XML-escaped text (element content and attribute values alike). A name that is not valid
 * UTF-8 (a file name in another encoding) would make the whole document unreadable: its
 * non-ASCII bytes become '?'. */
static void put_escaped(kd_strbuf *b, const char *s) {
    int ascii_only = !kd_utf8_valid(s, strlen(s), NULL);
    for (; *s; s++) {
        if (ascii_only && (unsigned char)*s >= 0x80) {
            kd_strbuf_puts(b, "?");
            continue;
        }
        switch (*s) {
        case '&': kd_strbuf_puts(b, "&amp;"); break;
        case '<': kd_strbuf_puts(b, "&lt;"); break;
        case '>': kd_strbuf_puts(b, "&gt;"); break;
        case '"': kd_strbuf_puts(b, "&quot;"); break;
        case '\'': kd_strbuf_puts(b, "&apos;"); break;
        default:
            /* XML 1.0 forbids most control characters even as references: drop them. */
            if ((unsigned char)*s >= 0x20 || *s == '\t') kd_strbuf_put(b, s, 1);
        }
    }
}

double kd_svg_text_width(const char *text) {
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) n += (*p & 0xC0) != 0x80;
    return (double)n * KD_SVG_CHAR_PX;
}

void kd_svg_begin(kd_strbuf *b, double w, double h, const char *title) {
    kd_strbuf_printf(b,
                     "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                     "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                     "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"%.0f\">\n",
                     w, h, w, h, KD_SVG_FONT_PX);
    kd_strbuf_puts(b, "<title>");
    put_escaped(b, title);
    /* Shared presentation in one style sheet keeps the file small: a tick's line doubles as
     * its grid line. */
    kd_strbuf_printf(b, "</title>\n<style>.frame{fill:none;stroke:#999}"
                     ".xtick line,.ytick line{stroke:#e0e0e0}.xtick text{text-anchor:middle}"
                     ".ytick text{text-anchor:end}.title{font-weight:bold}.note{fill:#777}"
                     ".bar{fill:#0072B2;fill-opacity:.75}"
                     ".gap{fill:#E41A1C;fill-opacity:.25;stroke:#E41A1C}"
                     ".bar.sparse{fill:#bbb}.gap.sparse{fill:#ddd;stroke:#bbb}</style>\n"
                     "<rect width=\"%.0f\" height=\"%.0f\" fill=\"#fff\"/>\n", w, h);
}

void kd_svg_markers(kd_strbuf *b, size_t n) {
    if (n > N_PALETTE) n = N_PALETTE;
    kd_strbuf_puts(b, "<defs>");
    for (size_t k = 0; k < n; k++)
        kd_strbuf_printf(b, "<marker id=\"m%zu\" viewBox=\"0 0 6 6\" refX=\"3\" refY=\"3\" "
                         "markerWidth=\"6\" markerHeight=\"6\" markerUnits=\"userSpaceOnUse\">"
                         "<circle cx=\"3\" cy=\"3\" r=\"2.6\" fill=\"%s\"/></marker>", k,
                         kd_svg_color(k));
    kd_strbuf_puts(b, "</defs>\n");
}

void kd_svg_end(kd_strbuf *b) { kd_strbuf_puts(b, "</svg>\n"); }

void kd_svg_text(kd_strbuf *b, double x, double y, const char *anchor, const char *cls,
                 const char *extra, const char *text) {
    kd_strbuf_printf(b, "<text x=\"%.6g\" y=\"%.6g\"", x, y);
    if (anchor && strcmp(anchor, "start") != 0)
        kd_strbuf_printf(b, " text-anchor=\"%s\"", anchor);
    if (cls) kd_strbuf_printf(b, " class=\"%s\"", cls);
    if (extra) kd_strbuf_printf(b, " %s", extra);
    kd_strbuf_puts(b, ">");
    put_escaped(b, text);
    kd_strbuf_puts(b, "</text>\n");
}

void kd_svg_fit(const char *text, size_t max_chars, char *out, size_t cap) {
    size_t n = (size_t)(kd_svg_text_width(text) / KD_SVG_CHAR_PX + 0.5);
    if (n <= max_chars || max_chars < 2) {
        snprintf(out, cap, "%s", text);
        return;
    }
    /* Keep the end (a path's distinctive part: "...student/best.safetensors"); skip whole
     * UTF-8 characters. */
    const char *p = text;
    for (size_t skip = n - (max_chars - 1); skip > 0 && *p; skip--)
        do p++;
        while ((*p & 0xC0) == 0x80);
    snprintf(out, cap, "\xe2\x80\xa6%s", p);
}

void kd_svg_text_fit(kd_strbuf *b, double x, double y, const char *anchor, const char *cls,
                     const char *text, size_t max_chars) {
    char cut[512];
    kd_svg_fit(text, max_chars, cut, sizeof cut);
    kd_svg_text(b, x, y, anchor, cls, NULL, cut);
}

/* ---- Panels -------------------------------------------------------------------------------- */

static const char *scale_name(const kd_axis *a) {
    return a->kind == KD_AXIS_LOG ? "log" : a->kind == KD_AXIS_CATEGORY ? "category" : "linear";
}

/* Ticks of one axis (vertical = the y axis): a line across the plot area that sticks out 4 px
 * as the tick mark, and its label. A category axis gets only the marks, and the category
 * names when cat_labels is given. */
static void panel_ticks(kd_strbuf *b, const kd_panel *p, int vertical,
                        const char *const *cat_labels) {
    const kd_axis *a = vertical ? &p->ya : &p->xa;
    int cat = a->kind == KD_AXIS_CATEGORY;
    char label[64];
    for (size_t i = 0; i < a->n_ticks; i++) {
        double v = kd_axis_tick(a, i);
        kd_axis_tick_label(a, v, label, sizeof label);
        if (vertical) {
            double y = kd_panel_py(p, v);
            kd_strbuf_printf(b, "<g class=\"ytick\"><line x1=\"%.6g\" y1=\"%.6g\" x2=\"%.6g\" "
                             "y2=\"%.6g\"/>", p->x - 4, y, cat ? p->x : p->x + p->w, y);
            if (!cat)
                kd_svg_text(b, p->x - 7, y + 4, NULL, NULL, NULL, label);
            else if (cat_labels)
                kd_svg_text_fit(b, p->x - 8, y + 4, NULL, "ycat", cat_labels[i],
                                (size_t)fmax(p->x / KD_SVG_CHAR_PX - 3, 4));
        } else {
            double x = kd_panel_px(p, v);
            kd_strbuf_printf(b, "<g class=\"xtick\"><line x1=\"%.6g\" y1=\"%.6g\" x2=\"%.6g\" "
                             "y2=\"%.6g\"/>", x, cat ? p->y + p->h : p->y, x, p->y + p->h + 4);
            kd_svg_text(b, x, p->y + p->h + 16, NULL, NULL, NULL, label);
        }
        kd_strbuf_puts(b, "</g>\n");
    }
}

void kd_svg_panel_open(kd_strbuf *b, const kd_panel *p, const char *name, const char *title,
                       const char *const *cat_labels) {
    kd_strbuf_puts(b, "<g class=\"panel\" data-name=\"");
    put_escaped(b, name);
    kd_strbuf_printf(b, "\" data-xscale=\"%s\" data-yscale=\"%s\">\n", scale_name(&p->xa),
                     scale_name(&p->ya));
    panel_ticks(b, p, 0, NULL);
    panel_ticks(b, p, 1, cat_labels);
    /* The frame after the grid, so it is drawn over it. */
    kd_strbuf_printf(b, "<rect class=\"frame\" x=\"%.6g\" y=\"%.6g\" width=\"%.6g\" "
                     "height=\"%.6g\"/>\n", p->x, p->y, p->w, p->h);
    kd_svg_text(b, p->x, p->y - 9, NULL, "title", NULL, title);
    if (p->xa.label)
        kd_svg_text(b, p->x + p->w / 2, p->y + p->h + 33, "middle", "xlabel", NULL, p->xa.label);
    if (p->ya.label) {
        char rot[64];
        double x = p->x - 58, y = p->y + p->h / 2;
        snprintf(rot, sizeof rot, "transform=\"rotate(-90 %.6g %.6g)\"", x, y);
        kd_svg_text(b, x, y, "middle", "ylabel", rot, p->ya.label);
    }
}

void kd_svg_panel_close(kd_strbuf *b) { kd_strbuf_puts(b, "</g>\n"); }

void kd_svg_panel_note(kd_strbuf *b, const kd_panel *p, const char *text) {
    kd_svg_text(b, p->x + p->w / 2, p->y + p->h / 2, "middle", "note", NULL, text);
}

/* ---- Marks --------------------------------------------------------------------------------- */

const char *kd_svg_color(size_t k) { return palette[k % N_PALETTE]; }

const char *kd_svg_dash(size_t k) {
    static const char *const dash[] = {"none", "6 3", "2 2", "8 3 2 3"};
    return dash[(k / N_PALETTE) % (sizeof dash / sizeof dash[0])];
}

/* The attributes of a data mark; series NULL when an enclosing group names it. */
static void mark_attrs(kd_strbuf *b, const char *kind, const char *series) {
    kd_strbuf_printf(b, " data-kind=\"%s\"", kind);
    if (!series) return;
    kd_strbuf_puts(b, " data-series=\"");
    put_escaped(b, series);
    kd_strbuf_puts(b, "\"");
}

void kd_svg_series_open(kd_strbuf *b, const char *series) {
    kd_strbuf_puts(b, "<g data-series=\"");
    put_escaped(b, series);
    kd_strbuf_puts(b, "\">\n");
}

void kd_svg_series_close(kd_strbuf *b) { kd_strbuf_puts(b, "</g>\n"); }

/* Closes a mark's tag, with a hover text when there is one. */
static void mark_close(kd_strbuf *b, const char *tag, const char *tooltip) {
    if (!tooltip) {
        kd_strbuf_puts(b, "/>\n");
        return;
    }
    kd_strbuf_puts(b, "><title>");
    put_escaped(b, tooltip);
    kd_strbuf_printf(b, "</title></%s>\n", tag);
}

void kd_svg_mark_point(kd_strbuf *b, const kd_panel *p, double x, double y, size_t color,
                       const char *series) {
    kd_strbuf_printf(b, "<circle cx=\"%.6g\" cy=\"%.6g\" r=\"2.6\" fill=\"%s\"",
                     kd_panel_px(p, x), kd_panel_py(p, y), kd_svg_color(color));
    mark_attrs(b, "point", series);
    kd_strbuf_puts(b, "/>\n");
}

void kd_svg_mark_line(kd_strbuf *b, const kd_panel *p, const double *x, const double *y, size_t n,
                      size_t color, const char *series, int markers) {
    int open = 0, pen_down = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(y[i])) {
            pen_down = 0;
            continue;
        }
        if (!open) {
            kd_strbuf_printf(b, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\"",
                             kd_svg_color(color));
            if (color >= N_PALETTE)
                kd_strbuf_printf(b, " stroke-dasharray=\"%s\"", kd_svg_dash(color));
            if (markers)
                kd_strbuf_printf(b, " marker-start=\"url(#m%zu)\" marker-mid=\"url(#m%zu)\" "
                                 "marker-end=\"url(#m%zu)\"", color % N_PALETTE,
                                 color % N_PALETTE, color % N_PALETTE);
            mark_attrs(b, "line", series);
            kd_strbuf_puts(b, " d=\"");
            open = 1;
        }
        kd_strbuf_printf(b, "%s%.6g,%.6g", pen_down ? " L" : (i ? " M" : "M"),
                         kd_panel_px(p, x[i]), kd_panel_py(p, y[i]));
        pen_down = 1;
    }
    if (open) kd_strbuf_puts(b, "\"/>\n");
    /* A lone value draws nothing as a line (and a path of one "M" may show no marker either):
     * give it a point. */
    for (size_t i = 0; i < n; i++) {
        int lone = (i == 0 || isnan(y[i - 1])) && (i + 1 == n || isnan(y[i + 1]));
        if (!isnan(y[i]) && lone) kd_svg_mark_point(b, p, x[i], y[i], color, series);
    }
}

void kd_svg_mark_interval(kd_strbuf *b, const kd_panel *p, double x0, double y0, double x1,
                          double y1, size_t color, const char *series) {
    double px0 = kd_panel_px(p, x0), py0 = kd_panel_py(p, y0);
    double px1 = kd_panel_px(p, x1), py1 = kd_panel_py(p, y1);
    const char *c = kd_svg_color(color);
    kd_strbuf_printf(b, "<line x1=\"%.6g\" y1=\"%.6g\" x2=\"%.6g\" y2=\"%.6g\" stroke=\"%s\" "
                     "stroke-width=\"1.5\"", px0, py0, px1, py1, c);
    mark_attrs(b, "interval", series);
    kd_strbuf_puts(b, "/>\n");
    /* End caps across the interval, 4 px to each side. */
    double len = hypot(px1 - px0, py1 - py0), nx = 0, ny = 4;
    if (len > 0) {
        nx = -(py1 - py0) / len * 4;
        ny = (px1 - px0) / len * 4;
    }
    kd_strbuf_printf(b, "<path class=\"cap\" stroke=\"%s\" stroke-width=\"1.5\" d=\"M%.6g,%.6g "
                     "L%.6g,%.6g M%.6g,%.6g L%.6g,%.6g\"/>\n", c, px0 - nx, py0 - ny, px0 + nx,
                     py0 + ny, px1 - nx, py1 - ny, px1 + nx, py1 + ny);
}

void kd_svg_mark_hbar(kd_strbuf *b, const kd_panel *p, size_t row, double v, size_t color,
                      const char *series, const char *tooltip, const char *value_text) {
    double band = p->h / (double)(p->ya.n_ticks ? p->ya.n_ticks : 1);
    double yc = kd_panel_py(p, (double)row), x1 = kd_panel_px(p, v);
    kd_strbuf_printf(b, "<rect x=\"%.6g\" y=\"%.6g\" width=\"%.6g\" height=\"%.6g\" "
                     "fill=\"%s\" fill-opacity=\"0.75\"", p->x, yc - band * 0.3,
                     x1 > p->x ? x1 - p->x : 0.0, band * 0.6, kd_svg_color(color));
    mark_attrs(b, "hbar", series);
    mark_close(b, "rect", tooltip);
    if (value_text) kd_svg_value_text(b, p, x1, x1, row, value_text);
}

void kd_svg_value_text(kd_strbuf *b, const kd_panel *p, double x_bar, double x_after, size_t row,
                       const char *text) {
    double y = kd_panel_py(p, (double)row) + 4, w = kd_svg_text_width(text);
    if (x_after + 6 + w <= p->x + p->w)
        kd_svg_text(b, x_after + 6, y, NULL, "value", NULL, text);
    else if (x_bar - p->x >= w + 8)
        kd_svg_text(b, x_bar - 4, y, "end", "value", "fill=\"#fff\"", text);
    else /* over the whisker, on a white halo */
        kd_svg_text(b, x_bar + 4, y, NULL, "value",
                    "stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\"", text);
}

void kd_svg_mark_box(kd_strbuf *b, const kd_panel *p, const char *kind, const char *cls,
                     double x0, double x1, double y0, double y1, const char *series,
                     const char *tooltip) {
    double px0 = kd_panel_px(p, x0), px1 = kd_panel_px(p, x1);
    double py0 = kd_panel_py(p, y0), py1 = kd_panel_py(p, y1);
    kd_strbuf_printf(b, "<rect class=\"%s\" x=\"%.6g\" y=\"%.6g\" width=\"%.6g\" "
                     "height=\"%.6g\"", cls, fmin(px0, px1), fmin(py0, py1), fabs(px1 - px0),
                     fabs(py1 - py0));
    mark_attrs(b, kind, series);
    mark_close(b, "rect", tooltip);
}

double kd_svg_legend(kd_strbuf *b, double x, double y, double w, const char *const *names,
                     size_t n) {
    double cx = x, row_h = 18, h = n ? row_h : 0;
    kd_strbuf_puts(b, "<g class=\"legend\">\n");
    for (size_t k = 0; k < n; k++) {
        double ew = 28 + kd_svg_text_width(names[k]) + 18;
        if (cx > x && cx + ew > x + w) {
            cx = x;
            y += row_h;
            h += row_h;
        }
        kd_strbuf_puts(b, "<g class=\"legend-entry\" data-series=\"");
        put_escaped(b, names[k]);
        kd_strbuf_printf(b, "\"><line x1=\"%.6g\" y1=\"%.6g\" x2=\"%.6g\" y2=\"%.6g\" "
                         "stroke=\"%s\" stroke-width=\"2.5\" stroke-dasharray=\"%s\"/>",
                         cx, y - 4, cx + 22, y - 4, kd_svg_color(k), kd_svg_dash(k));
        kd_svg_text(b, cx + 28, y, "start", NULL, NULL, names[k]);
        kd_strbuf_puts(b, "</g>\n");
        cx += ew;
    }
    kd_strbuf_puts(b, "</g>\n");
    return h;
}

/* ---- Saving -------------------------------------------------------------------------------- */

static kd_status write_svg(FILE *f, void *ctx, kd_err *err) {
    const kd_strbuf *svg = ctx;
    if (fwrite(svg->s, 1, svg->len, f) != svg->len)
        return kd_err_set(err, KD_EIO, "write failed: %s", strerror(errno));
    return KD_OK;
}

kd_status kd_report_save(const char *path, const kd_strbuf *svg, kd_err *err) {
    if (svg->oom || !svg->s)
        return kd_err_set(err, KD_EIO, "%s: out of memory drawing the picture", path);
    kd_status st = kd_write_atomic(path, write_svg, (void *)svg, err);
    if (st && !strstr(err->msg, path)) kd_err_prefix(err, "%s", path);
    return st;
}
