#!/usr/bin/env python3
"""svg_decode.py - reads a distill SVG picture back into numbers (stdlib only), for the tests.

It knows the markup contract of src/report/report_impl.h but not how distill computes its
layout: the mapping from pixels back to values comes from each axis's tick marks and their
printed labels ("0.25", "85%", "1.5e-4", "10k"), the way a reader of the picture takes it.

  svg_decode.py FILE.svg

Prints, one per line:
  panel NAME PX_X PX_Y XSCALE YSCALE   pixels per unit on each axis (per decade on a log
                              axis, per category on a category axis), and the scales
  mark PANEL KIND SERIES V... the values of one data mark:
      line      x1 y1 x2 y2 ...   one line per stretch of a <path> (a gap starts a new one)
      point     x y               interval  x1 y1 x2 y2
      hbar      row value         vbar      x_centre value     vspan  x_centre y_low y_high
    (on a category axis the value is the row index, 0 at the top)
  range PANEL XLO XHI YLO YHI  the values at the edges of the plot area (rows on a category axis)
  ece PANEL inside|outside TEXT  where an ECE label (class "ece") sits: inside the plot area,
                              bars can cover it
  legend SERIES
  ok N_PANELS N_MARKS
and exits 0; or prints "error: ..." and exits 1 when the file is not well-formed XML, a panel
lacks its frame, title or axis titles, an axis has fewer than two labelled ticks or ticks
that stray more than half a pixel from one linear (or log) scale, a series has more than one
line in a panel, a mark has a coordinate that is not finite or lies more than half a pixel
outside its panel's frame.
"""
import math
import re
import sys
import xml.etree.ElementTree as ET

TOL_PX = 0.5
KD_FONT_PX = 11  # the document's font size: a text's baseline is this far below its top
SUFFIX = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


class Bad(Exception):
    pass


def local(tag):
    return tag.rsplit("}", 1)[-1]


def num(s, what):
    try:
        v = float(s)
    except (TypeError, ValueError):
        raise Bad("%s: not a number: %r" % (what, s))
    if not math.isfinite(v):
        raise Bad("%s: not finite: %r" % (what, s))
    return v


def parse_label(t):
    t = t.strip()
    if t.endswith("%"):
        return float(t[:-1]) / 100
    if t and t[-1] in SUFFIX:
        return float(t[:-1]) * SUFFIX[t[-1]]
    return float(t)


def children(el, tag=None, cls=None):
    for c in el:
        if tag and local(c.tag) != tag:
            continue
        if cls and cls not in (c.get("class") or "").split():
            continue
        yield c


def text_of(el):
    return "".join(el.itertext()).strip()


class Axis:
    """Pixel <-> value for one axis, fitted to its ticks."""

    def __init__(self, panel, name, scale, ticks):
        self.scale = scale
        self.name = name
        if scale == "category":
            if not ticks:
                raise Bad("panel %s: %s axis has no category ticks" % (panel, name))
            self.cats = sorted(p for p, _ in ticks)
            self.per_unit = (self.cats[-1] - self.cats[0]) / (len(self.cats) - 1) \
                if len(self.cats) > 1 else 0.0
            return
        pts = [(p, math.log10(v) if scale == "log" else v) for p, v in ticks]
        if len({v for _, v in pts}) < 2:
            raise Bad("panel %s: %s axis needs two labelled ticks, has %d" % (panel, name, len(pts)))
        (p0, v0), (p1, v1) = min(pts, key=lambda t: t[1]), max(pts, key=lambda t: t[1])
        self.a = (p1 - p0) / (v1 - v0)  # pixels per unit
        self.b = p0 - self.a * v0
        for p, v in pts:
            if abs(self.a * v + self.b - p) > TOL_PX:
                raise Bad("panel %s: %s tick %g is at %g px, the scale puts it at %g px"
                          % (panel, name, 10 ** v if scale == "log" else v, p, self.a * v + self.b))
        self.per_unit = abs(self.a)

    def value(self, px):
        if self.scale == "category":
            return float(min(range(len(self.cats)), key=lambda i: abs(self.cats[i] - px)))
        v = (px - self.b) / self.a
        return 10 ** v if self.scale == "log" else v


def ticks_of(g, cls, coord):
    out = []
    for t in children(g, "g", cls):
        line = next(children(t, "line"), None)
        if line is None:
            raise Bad("%s without its line" % cls)
        p = num(line.get(coord), cls + " " + coord)
        label = next(children(t, "text"), None)
        if label is None or "ycat" in (label.get("class") or ""):
            out.append((p, None))
            continue
        try:
            out.append((p, parse_label(text_of(label))))
        except ValueError:
            raise Bad("%s label %r is not a number" % (cls, text_of(label)))
    return out


def mark_points(el, kind):
    """The pixel points of a mark: a list of stretches (each a list of (x, y))."""
    tag = local(el.tag)
    g = lambda k: num(el.get(k), "%s %s" % (kind, k))
    if kind == "line":
        if tag != "path":
            raise Bad("a line mark must be a <path>")
        stretches = []
        for cmd, x, y in re.findall(r"([ML])\s*([^\s,ML]+),([^\s,ML]+)", el.get("d") or ""):
            if cmd == "M" or not stretches:
                stretches.append([])
            stretches[-1].append((num(x, "path x"), num(y, "path y")))
        if not stretches:
            raise Bad("an empty line mark")
        return stretches
    if kind == "point":
        return [[(g("cx"), g("cy"))]]
    if kind == "interval":
        return [[(g("x1"), g("y1")), (g("x2"), g("y2"))]]
    x, y, w, h = g("x"), g("y"), g("width"), g("height")
    if w < 0 or h < 0:
        raise Bad("a %s with a negative size" % kind)
    if kind == "hbar":
        return [[(x + w, y + h / 2)]]
    if kind == "vbar":
        return [[(x + w / 2, y)]]
    if kind == "vspan":
        return [[(x + w / 2, y + h), (x + w / 2, y)]]
    raise Bad("unknown mark kind %r" % kind)


def walk_marks(el, series=None):
    for c in el:
        s = c.get("data-series", series)
        if c.get("data-kind"):
            yield c, s
        elif local(c.tag) == "g" and "xtick" not in (c.get("class") or "") \
                and "ytick" not in (c.get("class") or ""):
            yield from walk_marks(c, s)


def decode(path):
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise Bad("not well-formed XML: %s" % e)
    if local(root.tag) != "svg":
        raise Bad("root element is <%s>, not <svg>" % local(root.tag))
    lines, n_panels, n_marks = [], 0, 0
    for g in root.iter():
        if local(g.tag) == "g" and "legend-entry" in (g.get("class") or ""):
            lines.append("legend %s" % g.get("data-series", "").replace(" ", "_"))
    for panel in root.iter():
        if local(panel.tag) != "g" or "panel" not in (panel.get("class") or "").split():
            continue
        name = panel.get("data-name") or "?"
        n_panels += 1
        frame = next(children(panel, "rect", "frame"), None)
        if frame is None:
            raise Bad("panel %s: no frame" % name)
        fx, fy = num(frame.get("x"), "frame x"), num(frame.get("y"), "frame y")
        fw, fh = num(frame.get("width"), "frame width"), num(frame.get("height"), "frame height")
        texts = {}
        for t in children(panel, "text"):
            for c in (t.get("class") or "").split():
                texts[c] = text_of(t)
        yscale = panel.get("data-yscale", "linear")
        for need in ["title", "xlabel"] + (["ylabel"] if yscale != "category" else []):
            if not texts.get(need):
                raise Bad("panel %s: no %s" % (name, need))
        xa = Axis(name, "x", panel.get("data-xscale", "linear"), ticks_of(panel, "xtick", "x1"))
        ya = Axis(name, "y", yscale, ticks_of(panel, "ytick", "y1"))
        lines.append("panel %s %.9g %.9g %s %s" % (name, xa.per_unit, ya.per_unit, xa.scale,
                                                    ya.scale))
        lines.append("range %s %.9g %.9g %.9g %.9g" % (name, xa.value(fx), xa.value(fx + fw),
                                                      ya.value(fy + fh), ya.value(fy)))
        for t in children(panel, "text", "ece"):
            tx, ty = num(t.get("x"), "ece x"), num(t.get("y"), "ece y")
            inside = fx - 1 <= tx <= fx + fw + 1 and fy < ty <= fy + fh + KD_FONT_PX
            lines.append("ece %s %s %s" % (name, "inside" if inside else "outside",
                                           text_of(t).replace(" ", "_")))
        line_count = {}
        for el, series in walk_marks(panel):
            kind = el.get("data-kind")
            series = (series or "?").replace(" ", "_")
            if kind == "line":
                line_count[series] = line_count.get(series, 0) + 1
                if line_count[series] > 1:
                    raise Bad("panel %s: series %s has more than one line" % (name, series))
            for stretch in mark_points(el, kind):
                vals = []
                for px, py in stretch:
                    if not (fx - TOL_PX <= px <= fx + fw + TOL_PX and
                            fy - TOL_PX <= py <= fy + fh + TOL_PX):
                        raise Bad("panel %s: %s mark of %s at (%g, %g) lies outside the frame "
                                  "(%g, %g, %g x %g)" % (name, kind, series, px, py, fx, fy, fw, fh))
                    if kind == "hbar":
                        vals += [ya.value(py), xa.value(px)]
                    else:
                        vals += [xa.value(px), ya.value(py)]
                if kind in ("vbar",):
                    vals = vals[:2]
                elif kind == "vspan":
                    vals = [vals[0], vals[1], vals[3]]
                lines.append("mark %s %s %s %s" % (name, kind, series,
                                                   " ".join("%.9g" % v for v in vals)))
                n_marks += 1
    if n_panels == 0:
        raise Bad("no panels")
    lines.append("ok %d %d" % (n_panels, n_marks))
    return lines


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[0])
        return 2
    try:
        out = decode(sys.argv[1])
    except (Bad, OSError) as e:
        print("error: %s" % e)
        return 1
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
