"""Draw the figure views as inline SVG, in plain Python.

Vector output is sharp at any zoom and on HiDPI screens, its text stays text (searchable, selectable),
and drawing needs no plotting library: a whole report renders in milliseconds. Output is deterministic
(the same view gives the same bytes). Every data-derived string is XML-escaped; every mark carries a
``<title>`` so hovering a point shows its name and values.

Layout uses an estimate of text widths (a system sans-serif font at the given size), enough to keep
tick labels, legends and point labels from running into each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

from .views import FIGURES, HeatMap, Histograms, LinePlot, Scatter, format_value

__all__ = ["render_svg"]

WIDTH = 480
PLOT_HEIGHT = 250  # height of the plotting area of scatter and line plots
TEXT = "#1f2328"
MUTED = "#59636e"
GRID = "#e6e9ed"
AXIS = "#8c959f"
TAB10 = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)
MARKERS = ("circle", "square", "triangle", "diamond", "triangle-down")
DASHES = ("", "6 3", "2 2", "6 2 2 2")
TICK_SIZE = 10
LABEL_SIZE = 11
POINT_LABEL_SIZE = 10


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _n(v: float) -> str:
    """A coordinate: one decimal, no trailing zeros."""
    s = f"{v:.1f}"
    if s.endswith(".0"):
        s = s[:-2]
    return "0" if s == "-0" else s


_NARROW = set("il.,:;'|!jI")
_SEMI = set("ft()[] -r/")
_WIDE = set("mwMW@%")


def text_width(text: str, size: float) -> float:
    """Estimated width of ``text`` in a sans-serif font of ``size`` px: calibrated on DejaVu Sans, one of
    the widest common defaults, so that layouts computed with it leave room in narrower fonts too."""
    w = 0.0
    for ch in text:
        if ch in _NARROW:
            w += 0.30
        elif ch in _SEMI:
            w += 0.40
        elif ch in _WIDE:
            w += 0.95
        elif ch.isdigit():
            w += 0.64
        elif ch.isupper():
            w += 0.70
        else:
            w += 0.60
    return w * size


def _floats(values: Sequence[Any], name: str) -> list[float]:
    out: list[float] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(math.nan)
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}[{i}] is not a number: {v!r}") from exc
    return out


# ------------------------------------------------------------------------------------------------ axes


class _Axis:
    """A linear or log10 mapping from data values to pixels, with its ticks."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, log: bool = False) -> None:
        self.lo, self.hi, self.p0, self.p1, self.log = lo, hi, p0, p1, log
        self._a = math.log10(lo) if log else lo
        self._b = math.log10(hi) if log else hi

    def __call__(self, v: float) -> float:
        t = ((math.log10(v) if self.log else v) - self._a) / (self._b - self._a)
        return self.p0 + t * (self.p1 - self.p0)

    def ticks(self, target: int = 5) -> list[tuple[float, str]]:
        return _log_ticks(self.lo, self.hi) if self.log else _linear_ticks(self.lo, self.hi, target)


def _limits(values: Sequence[float], log: bool = False, pad: float = 0.06) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
    if not finite:
        return (1.0, 10.0) if log else (0.0, 1.0)
    lo, hi = min(finite), max(finite)
    if log:
        a, b = math.log10(lo), math.log10(hi)
        if a == b:
            a, b = a - 0.5, b + 0.5
        span = b - a
        return 10 ** (a - pad * span), 10 ** (b + pad * span)
    if lo == hi:
        d = abs(lo) * 0.1 or 0.5
        return lo - d, hi + d
    span = hi - lo
    return lo - pad * span, hi + pad * span


def _linear_ticks(lo: float, hi: float, target: int = 5) -> list[tuple[float, str]]:
    span = hi - lo
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = mag
    for m in (1, 2, 2.5, 5, 10):
        step = m * mag
        if span / step <= target:
            break
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if abs(round(step * 10**decimals) - step * 10**decimals) > 1e-6:
        decimals += 1
    decimals = min(decimals, 8)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    ticks = []
    for k in range(first, last + 1):
        v = k * step
        text = f"{v:.{decimals}f}"
        if text.startswith("-") and float(text) == 0:
            text = text[1:]
        ticks.append((v, text))
    return ticks


def _log_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    a, b = math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9)
    values = [10.0**k for k in range(a, b + 1)]
    if len(values) < 2:
        values = sorted({m * 10.0**k for k in range(a - 1, b + 1) for m in (1, 2, 5) if lo <= m * 10.0**k <= hi})
    if len(values) > 8:  # many decades: at most about 6 of them labelled
        values = values[:: math.ceil(len(values) / 6)]
    return [(v, f"{v:g}") for v in values]


class _Canvas:
    """An SVG document being assembled."""

    def __init__(self, width: float, height: float, title: str) -> None:
        self.width, self.height, self.title = width, height, title
        self.parts: list[str] = []

    def add(self, s: str) -> None:
        self.parts.append(s)

    def text(self, x: float, y: float, s: str, size: float = TICK_SIZE, anchor: str = "start",
             fill: str = MUTED, extra: str = "", tip: str = "") -> None:
        a = "" if anchor == "start" else f' text-anchor="{anchor}"'
        t = f"<title>{_e(tip)}</title>" if tip and tip != s else ""
        self.add(f'<text x="{_n(x)}" y="{_n(y)}" font-size="{size:g}" fill="{fill}"{a}{extra}>{t}{_e(s)}</text>')

    def svg(self) -> str:
        head = (
            f'<svg viewBox="0 0 {_n(self.width)} {_n(self.height)}" '
            f'width="{_n(self.width)}" height="{_n(self.height)}" role="img" aria-label="{_e(self.title)}" '
            'class="chart" font-family="system-ui, -apple-system, \'Segoe UI\', Roboto, \'Helvetica Neue\', Arial, '
            '\'Liberation Sans\', sans-serif">'
        )
        return head + "".join(self.parts) + "</svg>"


def _marker(shape: str, x: float, y: float, colour: str, r: float = 4.5, tip: str = "") -> str:
    t = f"<title>{_e(tip)}</title>" if tip else ""
    style = f'fill="{colour}" stroke="#ffffff" stroke-width="0.8"'
    if shape == "circle":
        return f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{r:g}" {style}>{t}</circle>'
    if shape == "square":
        s = r * 0.9
        return f'<rect x="{_n(x - s)}" y="{_n(y - s)}" width="{_n(2 * s)}" height="{_n(2 * s)}" {style}>{t}</rect>'
    if shape == "triangle":
        pts = f"{_n(x)},{_n(y - r * 1.15)} {_n(x - r)},{_n(y + r * 0.75)} {_n(x + r)},{_n(y + r * 0.75)}"
    elif shape == "triangle-down":
        pts = f"{_n(x)},{_n(y + r * 1.15)} {_n(x - r)},{_n(y - r * 0.75)} {_n(x + r)},{_n(y - r * 0.75)}"
    else:  # diamond
        pts = f"{_n(x)},{_n(y - r * 1.2)} {_n(x + r)},{_n(y)} {_n(x)},{_n(y + r * 1.2)} {_n(x - r)},{_n(y)}"
    return f'<polygon points="{pts}" {style}>{t}</polygon>'


def _legend_layout(items: Sequence[tuple[str, str]], width: float) -> list[list[tuple[float, int]]]:
    """Flow legend entries into rows: [(x offset, item index)] per row."""
    rows: list[list[tuple[float, int]]] = [[]]
    x = 0.0
    for i, (_, name) in enumerate(items):
        w = 18 + text_width(_wrap_label(name, width - 32, TICK_SIZE), TICK_SIZE) + 14
        if rows[-1] and x + w > width:
            rows.append([])
            x = 0.0
        rows[-1].append((x, i))
        x += w
    return rows if rows[0] else []


def _draw_legend(c: _Canvas, items: Sequence[tuple[str, str]], kinds: Sequence[str], left: float, top: float,
                 width: float) -> None:
    """``items``: (colour, name); ``kinds``: a marker shape, or "line"/"line:DASH" for a line sample."""
    for r, row in enumerate(_legend_layout(items, width)):
        y = top + r * 16 + 8
        for dx, i in row:
            colour, name = items[i]
            x = left + dx
            kind = kinds[i]
            if kind.startswith("line"):
                dash = kind.partition(":")[2]
                d = f' stroke-dasharray="{dash}"' if dash else ""
                c.add(f'<line x1="{_n(x)}" y1="{_n(y)}" x2="{_n(x + 14)}" y2="{_n(y)}" stroke="{colour}" stroke-width="1.6"{d}/>')
            else:
                c.add(_marker(kind, x + 7, y, colour, r=4))
            c.text(x + 18, y + 3.5, _wrap_label(name, width - 32, TICK_SIZE), TICK_SIZE, fill=TEXT, tip=name)


def _frame(c: _Canvas, xa: _Axis, ya: _Axis, left: float, top: float, right: float, bottom: float,
           xlabel: str, ylabel: str, ytick_w: float) -> None:
    """Grid, axes, tick labels and axis titles (shortened with an ellipsis when they do not fit; the full
    title shows on hover)."""
    for v, _ in ya.ticks():
        y = ya(v)
        c.add(f'<line x1="{_n(left)}" y1="{_n(y)}" x2="{_n(right)}" y2="{_n(y)}" stroke="{GRID}" stroke-width="1"/>')
    for v, _ in xa.ticks():
        x = xa(v)
        c.add(f'<line x1="{_n(x)}" y1="{_n(top)}" x2="{_n(x)}" y2="{_n(bottom)}" stroke="{GRID}" stroke-width="1"/>')
    c.add(f'<path d="M{_n(left)},{_n(top)}V{_n(bottom)}H{_n(right)}" fill="none" stroke="{AXIS}" stroke-width="1"/>')
    for v, t in ya.ticks():
        c.text(left - 5, ya(v) + 3.5, t, TICK_SIZE, anchor="end")
    for v, t in xa.ticks():
        c.text(xa(v), bottom + 14, t, TICK_SIZE, anchor="middle")
    c.text((left + right) / 2, bottom + 31, _wrap_label(xlabel, right - left), LABEL_SIZE, anchor="middle",
           fill=TEXT, tip=xlabel)
    cy = (top + bottom) / 2
    x = left - ytick_w - 12
    c.text(x, cy, _wrap_label(ylabel, bottom - top), LABEL_SIZE, anchor="middle", fill=TEXT,
           extra=f' transform="rotate(-90 {_n(x)} {_n(cy)})"', tip=ylabel)


def _no_data(c: _Canvas, left: float, top: float, right: float, bottom: float) -> None:
    c.add(f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(right - left)}" height="{_n(bottom - top)}" fill="#fafbfc" stroke="{GRID}"/>')
    c.text((left + right) / 2, (top + bottom) / 2 + 5, "no data", 14, anchor="middle")


def _wrap_label(label: str, limit: float, size: float = LABEL_SIZE) -> str:
    """Shorten a label that does not fit ``limit`` px with an ellipsis (callers keep the full text as hover
    text)."""
    if text_width(label, size) <= limit:
        return label
    out = label
    while out and text_width(out + "\u2026", size) > limit:
        out = out[:-1]
    return out.rstrip() + "\u2026"


def _xy_layout(yticks: list[tuple[float, str]]) -> tuple[float, float, float, float, float]:
    ytick_w = max((text_width(t, TICK_SIZE) for _, t in yticks), default=10)
    left = 8 + LABEL_SIZE + 8 + ytick_w + 6
    top = 10
    right = WIDTH - 16
    bottom = top + PLOT_HEIGHT
    return left, top, right, bottom, ytick_w


# --------------------------------------------------------------------------------------------- scatter


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _place_labels(points: list[tuple[float, float, str]], box: tuple[float, float, float, float],
                  avoid: list[tuple[float, float, float, float]]) -> tuple[list[tuple[float, float, str, str]], int]:
    """Greedy label placement: the points farthest from the centre first, each label in the first of eight
    positions around its point that stays inside ``box`` and overlaps no placed label and no point.
    Returns (x, y, anchor, text) per placed label and how many labels did not fit."""
    size = POINT_LABEL_SIZE
    h = size * 1.15
    cx = sum(p[0] for p in points) / len(points) if points else 0
    cy = sum(p[1] for p in points) / len(points) if points else 0
    order = sorted(range(len(points)), key=lambda i: (-((points[i][0] - cx) ** 2 + (points[i][1] - cy) ** 2), i))
    placed: list[tuple[float, float, float, float]] = []
    out: list[tuple[float, float, str, str]] = []
    skipped = 0
    r = 6.5
    for i in order:
        px, py, text = points[i]
        if not text:
            continue
        w = text_width(text, size)
        candidates = [
            (px + r, py - h / 2), (px - r - w, py - h / 2),  # right, left
            (px + r * 0.7, py - r * 0.7 - h), (px - r * 0.7 - w, py - r * 0.7 - h),  # upper right/left
            (px + r * 0.7, py + r * 0.7), (px - r * 0.7 - w, py + r * 0.7),  # lower right/left
            (px - w / 2, py - r - h), (px - w / 2, py + r),  # above, below
        ]
        for x0, y0 in candidates:
            rect = (x0, y0, x0 + w, y0 + h)
            if rect[0] < box[0] or rect[2] > box[2] or rect[1] < box[1] or rect[3] > box[3]:
                continue
            if any(_overlaps(rect, o) for o in placed) or any(_overlaps(rect, o) for o in avoid):
                continue
            placed.append(rect)
            out.append((x0, y0 + h * 0.8, "start", text))
            break
        else:
            skipped += 1
    return out, skipped


def _scatter(spec: Scatter) -> tuple[str, list[str]]:
    notes: list[str] = []
    xs = _floats(spec.x, "Scatter.x")
    ys = _floats(spec.y, "Scatter.y")
    keep = [i for i, (a, b) in enumerate(zip(xs, ys)) if math.isfinite(a) and math.isfinite(b)]
    dropped = len(xs) - len(keep)
    if dropped:
        notes.append(f"{dropped} non-finite point{'s' if dropped != 1 else ''} dropped")
    groups = [str(spec.groups[i]) for i in keep] if spec.groups is not None else []
    order = list(dict.fromkeys(groups))
    x = [xs[i] for i in keep]
    y = [ys[i] for i in keep]

    legend: list[tuple[str, str]] = [(TAB10[k % 10], g) for k, g in enumerate(order)]
    kinds = [MARKERS[(k // 10 + k) % len(MARKERS)] for k in range(len(order))]
    fit = None
    if spec.fit_line and len(set(x)) >= 2:
        n = len(x)
        mx, my = sum(x) / n, sum(y) / n
        sxx = sum((a - mx) ** 2 for a in x)
        sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
        syy = sum((b - my) ** 2 for b in y)
        slope = sxy / sxx
        fit = (slope, my - slope * mx)
        name = "least-squares fit"
        if syy > 0:
            name += f" (Pearson r = {format_value(sxy / math.sqrt(sxx * syy))})"
        legend.append(("#57606a", name))
        kinds.append("line:5 3")

    yr = _limits(y)
    ya_probe = _Axis(*yr, 0, 1)
    left, top, right, bottom, ytick_w = _xy_layout(ya_probe.ticks())
    legend_rows = len(_legend_layout(legend, right - left))
    height = bottom + 44 + legend_rows * 16 + 4
    c = _Canvas(WIDTH, height, spec.title)
    xa = _Axis(*_limits(x), left, right)
    ya = _Axis(*yr, bottom, top)
    _frame(c, xa, ya, left, top, right, bottom, spec.xlabel, spec.ylabel, ytick_w)
    if not keep:
        _no_data(c, left, top, right, bottom)
    else:
        if fit is not None:
            x0, x1 = min(x), max(x)
            c.add(
                f'<line x1="{_n(xa(x0))}" y1="{_n(ya(fit[0] * x0 + fit[1]))}" x2="{_n(xa(x1))}" '
                f'y2="{_n(ya(fit[0] * x1 + fit[1]))}" stroke="#57606a" stroke-width="1.2" stroke-dasharray="5 3"/>'
            )
        pts = []
        for j, i in enumerate(keep):
            name = str(spec.labels[i]) if spec.labels is not None else ""
            k = order.index(groups[j]) if groups else 0
            px, py = xa(x[j]), ya(y[j])
            who = " ".join(p for p in (name, f"({groups[j]})" if groups else "") if p)
            tip = f"{who + ': ' if who else ''}{spec.xlabel} {format_value(x[j])}, {spec.ylabel} {format_value(y[j])}"
            c.add(_marker(kinds[k] if groups else "circle", px, py, TAB10[k % 10], tip=tip))
            pts.append((px, py, name))
        if spec.labels is not None:
            avoid = [(px - 5, py - 5, px + 5, py + 5) for px, py, _ in pts]
            placed, skipped = _place_labels(pts, (left + 2, top, right, bottom - 2), avoid)
            for lx, ly, _, text in placed:
                c.text(lx, ly, text, POINT_LABEL_SIZE, fill="#3d444d")
            if skipped:
                notes.append(
                    f"{skipped} point label{'s' if skipped != 1 else ''} left out to avoid overlap (hover a point for its name)"
                )
    if legend:
        _draw_legend(c, legend, kinds, left, bottom + 40, right - left)
    return c.svg(), notes


# ----------------------------------------------------------------------------------------------- lines


def _lines(spec: LinePlot) -> tuple[str, list[str]]:
    notes: list[str] = []
    x = _floats(spec.x, "LinePlot.x")
    series = {str(k): _floats(v, f"LinePlot.series[{k!r}]") for k, v in spec.series.items()}
    logy = spec.logy
    values = [v for ys in series.values() for v in ys]
    if logy and not any(math.isfinite(v) and v > 0 for v in values):
        logy = False
        notes.append("no positive values: linear scale")
    ok = lambda v: math.isfinite(v) and (v > 0 or not logy)  # noqa: E731
    usable = bool(x) and any(math.isfinite(v) for v in x) and any(ok(v) for v in values)

    legend = [(TAB10[k % 10], name) for k, name in enumerate(series)]
    kinds = [f"line:{DASHES[(k // 10) % len(DASHES)]}" if (k // 10) % len(DASHES) else "line" for k in range(len(series))]
    yr = _limits(values, log=logy)
    ya_probe = _Axis(*yr, 0, 1, log=logy)
    left, top, right, bottom, ytick_w = _xy_layout(ya_probe.ticks())
    legend_rows = len(_legend_layout(legend, right - left))
    height = bottom + 44 + legend_rows * 16 + 4
    c = _Canvas(WIDTH, height, spec.title)
    xa = _Axis(*_limits(x, pad=0.03), left, right)
    ya = _Axis(*yr, bottom, top, log=logy)
    _frame(c, xa, ya, left, top, right, bottom, spec.xlabel, spec.ylabel, ytick_w)
    if not usable:
        _no_data(c, left, top, right, bottom)
    else:
        markers = len(x) <= 25
        for k, (name, ys) in enumerate(series.items()):
            colour = TAB10[k % 10]
            dash = DASHES[(k // 10) % len(DASHES)]
            segments: list[list[tuple[float, float]]] = [[]]
            for a, b in zip(x, ys):
                if math.isfinite(a) and ok(b):
                    segments[-1].append((xa(a), ya(b)))
                elif segments[-1]:
                    segments.append([])
            d = "".join("M" + "L".join(f"{_n(px)},{_n(py)}" for px, py in seg) for seg in segments if seg)
            if d:
                dd = f' stroke-dasharray="{dash}"' if dash else ""
                c.add(f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.6" stroke-linejoin="round"{dd}/>')
            if markers:
                for a, b in zip(x, ys):
                    if math.isfinite(a) and ok(b):
                        tip = f"{name}: {spec.xlabel} {format_value(a)}, {format_value(b)}"
                        c.add(f'<circle cx="{_n(xa(a))}" cy="{_n(ya(b))}" r="2.6" fill="{colour}"><title>{_e(tip)}</title></circle>')
    if legend:
        _draw_legend(c, legend, kinds, left, bottom + 40, right - left)
    return c.svg(), notes


# ------------------------------------------------------------------------------------------ histograms


def _histograms(spec: Histograms) -> tuple[str, list[str]]:
    import numpy as np

    notes: list[str] = []
    names = [str(k) for k in spec.samples]
    arrays = []
    dropped = 0
    for v in spec.samples.values():
        a = np.asarray(_floats(list(v), "Histograms.samples"), dtype=float) if not hasattr(v, "dtype") else np.asarray(v, dtype=float).ravel()
        fin = a[np.isfinite(a)]
        dropped += int(a.size - fin.size)
        arrays.append(fin)
    if dropped:
        notes.append(f"{dropped} non-finite value{'s' if dropped != 1 else ''} dropped")
    pooled = np.concatenate(arrays) if arrays else np.zeros(0)
    row_h = 24.0
    label_w = max((text_width(n, TICK_SIZE) for n in names), default=20)
    left = 10 + min(label_w, 170) + 8
    right = WIDTH - 16
    top = 8
    bottom = top + max(len(names), 1) * row_h
    height = bottom + 44
    c = _Canvas(WIDTH, height, spec.title)
    if pooled.size == 0:
        xa = _Axis(0.0, 1.0, left, right)
    else:
        lo, hi = float(pooled.min()), float(pooled.max())
        q_lo, q_hi = (float(q) for q in np.quantile(pooled, [0.005, 0.995]))
        if hi - lo > 2 * (q_hi - q_lo) > 0:  # a few far outliers would squash every histogram: show 99%
            outside = int(((pooled < q_lo) | (pooled > q_hi)).sum())
            lo, hi = q_lo, q_hi
            notes.append(f"{outside} extreme value{'s' if outside != 1 else ''} (outside the central 99%) not shown")
        xa = _Axis(*_limits([lo, hi], pad=0.02), left, right)
    ticks = xa.ticks()
    for v, _ in ticks:
        c.add(f'<line x1="{_n(xa(v))}" y1="{_n(top)}" x2="{_n(xa(v))}" y2="{_n(bottom)}" stroke="{GRID}" stroke-width="1"/>')
    edges = np.linspace(xa.lo, xa.hi, spec.bins + 1)
    for r, (name, a) in enumerate(zip(names, arrays)):
        base = top + (r + 1) * row_h
        colour = TAB10[r % 10]
        c.add(f'<line x1="{_n(left)}" y1="{_n(base)}" x2="{_n(right)}" y2="{_n(base)}" stroke="{GRID}" stroke-width="1"/>')
        c.text(left - 6, base - row_h / 2 + 3.5, _wrap_label(name, 170, TICK_SIZE), TICK_SIZE, anchor="end", fill=TEXT, tip=name)
        if a.size == 0:
            c.text(left + 4, base - row_h / 2 + 3.5, "no samples", TICK_SIZE)
            continue
        counts, _ = np.histogram(a, bins=edges)
        peak = counts.max()
        scale = (row_h - 3) / peak if peak > 0 else 0.0
        d = [f"M{_n(xa(edges[0]))},{_n(base)}"]
        for k, n in enumerate(counts):
            yk = base - n * scale
            d.append(f"V{_n(yk)}H{_n(xa(edges[k + 1]))}")
        d.append(f"V{_n(base)}Z")
        mean = float(a.mean())
        tip = f"{name}: mean {format_value(mean)}, median {format_value(float(np.median(a)))}, n = {a.size}"
        c.add(f'<path d="{"".join(d)}" fill="{colour}" fill-opacity="0.55" stroke="{colour}" stroke-width="0.8"><title>{_e(tip)}</title></path>')
        if xa.lo <= mean <= xa.hi:
            mx = xa(mean)
            c.add(f'<line x1="{_n(mx)}" y1="{_n(base - row_h + 2)}" x2="{_n(mx)}" y2="{_n(base)}" stroke="{TEXT}" stroke-width="1.4"><title>{_e(tip)}</title></line>')
    c.add(f'<path d="M{_n(left)},{_n(top)}V{_n(bottom)}H{_n(right)}" fill="none" stroke="{AXIS}" stroke-width="1"/>')
    for v, t in ticks:
        c.text(xa(v), bottom + 14, t, TICK_SIZE, anchor="middle")
    c.text((left + right) / 2, bottom + 31, _wrap_label(spec.xlabel, right - left), LABEL_SIZE, anchor="middle",
           fill=TEXT, tip=spec.xlabel)
    notes.append("dark tick: mean")
    return c.svg(), notes


# --------------------------------------------------------------------------------------------- heat map

_BLUES = ((247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107))


def _ramp(t: float) -> tuple[str, bool]:
    """Colour for t in [0, 1] (light to dark blue) and whether text on it should be white."""
    t = min(max(t, 0.0), 1.0)
    pos = t * (len(_BLUES) - 1)
    k = min(int(pos), len(_BLUES) - 2)
    f = pos - k
    rgb = tuple(round(a + (b - a) * f) for a, b in zip(_BLUES[k], _BLUES[k + 1]))
    return "#{:02x}{:02x}{:02x}".format(*rgb), t > 0.55


def _heatmap(spec: HeatMap) -> tuple[str, list[str]]:
    rows = [str(r) for r in spec.rows]
    cols = [str(col) for col in spec.columns]
    row_h = 24.0
    label_w = min(max((text_width(r, TICK_SIZE) for r in rows), default=20), 170)
    left = 10 + label_w + 8
    right = WIDTH - 16
    ncol = max(len(cols), 1)
    cell_w = (right - left) / ncol
    col_lines = [_wrap_label(col, cell_w - 6, TICK_SIZE) for col in cols]
    top = 8 + 18
    bottom = top + max(len(rows), 1) * row_h
    height = bottom + 30
    c = _Canvas(WIDTH, height, spec.title)
    for j, text in enumerate(col_lines):
        c.text(left + (j + 0.5) * cell_w, top - 8, text, TICK_SIZE, anchor="middle", fill=TEXT, tip=cols[j])
    span = spec.vmax - spec.vmin
    for i, name in enumerate(rows):
        y = top + i * row_h
        c.text(left - 6, y + row_h / 2 + 3.5, _wrap_label(name, 170, TICK_SIZE), TICK_SIZE, anchor="end", fill=TEXT, tip=name)
        for j in range(len(cols)):
            v = spec.values[i][j]
            x = left + j * cell_w
            if v is None or not math.isfinite(float(v)):
                colour, white, text = "#f0f2f4", False, format_value(None if v is None else float(v))
            else:
                colour, white = _ramp((float(v) - spec.vmin) / span)
                text = format_value(float(v))
            tip = f"{name}, {cols[j]}: {text}"
            c.add(
                f'<rect x="{_n(x + 1)}" y="{_n(y + 1)}" width="{_n(cell_w - 2)}" height="{_n(row_h - 2)}" '
                f'fill="{colour}"><title>{_e(tip)}</title></rect>'
            )
            c.text(x + cell_w / 2, y + row_h / 2 + 4, text, 11, anchor="middle", fill="#ffffff" if white else TEXT)
    # a small colour key
    key_w = 120.0
    kx, ky = right - key_w - text_width(format_value(spec.vmax), TICK_SIZE) - 6, bottom + 10
    steps = 12
    for s in range(steps):
        colour, _ = _ramp(s / (steps - 1))
        c.add(f'<rect x="{_n(kx + s * key_w / steps)}" y="{_n(ky)}" width="{_n(key_w / steps + 0.3)}" height="8" fill="{colour}"/>')
    c.text(kx - 4, ky + 8, format_value(spec.vmin), TICK_SIZE, anchor="end")
    c.text(kx + key_w + 4, ky + 8, format_value(spec.vmax), TICK_SIZE)
    if spec.value_label:
        c.text(left, ky + 8, spec.value_label, TICK_SIZE, fill=TEXT)
    return c.svg(), []


def render_svg(spec: Any) -> tuple[str, list[str]]:
    """Draw a figure view; return ``(svg markup, notes)`` where notes are short remarks for the caption
    (points dropped, labels left out, ...)."""
    if isinstance(spec, Scatter):
        return _scatter(spec)
    if isinstance(spec, LinePlot):
        return _lines(spec)
    if isinstance(spec, Histograms):
        return _histograms(spec)
    if isinstance(spec, HeatMap):
        return _heatmap(spec)
    raise TypeError(f"render_svg expects one of {[t.__name__ for t in FIGURES]}, got {type(spec).__name__}")
