"""Small, dependency-light writer for self-contained HTML reports.

A report is a single ``.html`` file: inline CSS, figures embedded as base64 PNG ``data:`` URIs, no scripts,
no external fonts or links, so it can be mailed around or attached to a CI run as-is.

Figures are described declaratively (:class:`Scatter`, :class:`LinePlot`) and drawn with matplotlib's Agg
canvas on a bare :class:`matplotlib.figure.Figure`, so no global pyplot state is created or changed.
Rendering is deterministic: the same input gives byte-identical PNGs and HTML.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import importlib.resources
import io
import json
import math
import numbers
import pathlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LinePlot",
    "Scatter",
    "Table",
    "figure_png_base64",
    "render_figure",
    "write_report",
]

MISSING = "\u2014"  # em dash shown for None / missing cells
FIGSIZE = (5.0, 3.6)
DPI = 100
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")
_TAB10 = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)


# ----------------------------------------------------------------------------------------------- specs


def _length(values: Any, name: str) -> int:
    try:
        return len(values)
    except TypeError as exc:
        raise TypeError(f"{name} must be a sequence (list, tuple or array), got {type(values).__name__}") from exc


@dataclass(frozen=True)
class Scatter:
    """Scatter plot of ``y`` against ``x``.

    ``labels`` annotates each point with small text; ``groups`` colours points by group and adds a legend.
    Non-finite points (NaN, inf, None) are dropped and the number dropped is shown in the title. With
    ``fit_line`` a least-squares line (and Pearson r) is drawn when there are at least two distinct x values.
    """

    x: Sequence[float]
    y: Sequence[float]
    xlabel: str
    ylabel: str
    title: str
    labels: Sequence[str] | None = None
    groups: Sequence[str] | None = None
    fit_line: bool = True

    def __post_init__(self) -> None:
        n = _length(self.x, "Scatter.x")
        ny = _length(self.y, "Scatter.y")
        if ny != n:
            raise ValueError(f"Scatter {self.title!r}: x and y must have the same length, got len(x)={n} and len(y)={ny}")
        for name in ("labels", "groups"):
            value = getattr(self, name)
            if value is not None and _length(value, f"Scatter.{name}") != n:
                raise ValueError(
                    f"Scatter {self.title!r}: {name} must have one entry per point, "
                    f"got len({name})={len(value)} for {n} points"
                )


@dataclass(frozen=True)
class LinePlot:
    """One or more lines sharing an x axis. ``series`` maps a legend name to y values (same length as x)."""

    x: Sequence[float]
    series: Mapping[str, Sequence[float]]
    xlabel: str
    ylabel: str
    title: str
    logy: bool = False

    def __post_init__(self) -> None:
        n = _length(self.x, "LinePlot.x")
        if not isinstance(self.series, Mapping):
            raise TypeError(f"LinePlot {self.title!r}: series must be a mapping name -> y values")
        for name, ys in self.series.items():
            ny = _length(ys, f"LinePlot.series[{name!r}]")
            if ny != n:
                raise ValueError(
                    f"LinePlot {self.title!r}: series {name!r} has {ny} values but x has {n}; they must be equal"
                )


@dataclass(frozen=True)
class Table:
    """A table; floats are shown with 4 significant digits, None (or a missing key) as an em dash."""

    columns: Sequence[str]
    rows: Sequence[Mapping[str, object]]
    title: str = ""


# --------------------------------------------------------------------------------------------- figures


def _as_floats(values: Sequence[Any], name: str) -> list[float]:
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


def _escape_mpl(text: object) -> str:
    """Make data-derived text literal for matplotlib (no mathtext from stray ``$``)."""
    return str(text).replace("$", r"\$")


def _new_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="tight")
    FigureCanvasAgg(fig)
    return fig


def _no_data(ax, spec: Scatter | LinePlot, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", fontsize=14, color="#888888", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(spec.xlabel)
    ax.set_ylabel(spec.ylabel)


def _style_axes(ax) -> None:
    ax.grid(True, color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(which="both", labelsize=8)


def _draw_scatter(fig, spec: Scatter) -> None:
    import numpy as np

    ax = fig.add_subplot()
    xs = _as_floats(spec.x, "Scatter.x")
    ys = _as_floats(spec.y, "Scatter.y")
    keep = [i for i, (a, b) in enumerate(zip(xs, ys)) if math.isfinite(a) and math.isfinite(b)]
    dropped = len(xs) - len(keep)
    title = spec.title
    if dropped:
        title = f"{title}\n({dropped} non-finite point{'s' if dropped != 1 else ''} dropped)"
    if not keep:
        _no_data(ax, spec, title)
        return

    x = np.array([xs[i] for i in keep], dtype=float)
    y = np.array([ys[i] for i in keep], dtype=float)
    handles: list[Any] = []
    names: list[str] = []
    if spec.groups is not None:
        groups = [str(spec.groups[i]) for i in keep]
        order = list(dict.fromkeys(groups))  # first-appearance order: deterministic
        for k, group in enumerate(order):
            idx = [j for j, g in enumerate(groups) if g == group]
            h = ax.scatter(
                x[idx], y[idx], s=28, color=_TAB10[k % 10], marker=_MARKERS[(k // 10) % len(_MARKERS)],
                edgecolors="white", linewidths=0.5, zorder=3,
            )
            handles.append(h)
            names.append(_escape_mpl(group))
    else:
        ax.scatter(x, y, s=28, color=_TAB10[0], edgecolors="white", linewidths=0.5, zorder=3)

    if spec.labels is not None:
        for j, i in enumerate(keep):
            ax.annotate(
                str(spec.labels[i]), (x[j], y[j]), xytext=(3, 3), textcoords="offset points",
                fontsize=6, color="#444444", parse_math=False, zorder=4,
            )

    if spec.fit_line and len(np.unique(x)) >= 2:
        slope, intercept = np.polyfit(x, y, 1)
        xx = np.array([x.min(), x.max()])
        label = "least-squares fit"
        if np.ptp(y) > 0:
            r = float(np.corrcoef(x, y)[0, 1])
            label += f" (r = {r:.2f})"
        (line,) = ax.plot(xx, slope * xx + intercept, color="#555555", linestyle="--", linewidth=1.0, zorder=2)
        handles.append(line)
        names.append(label)

    ax.margins(0.08)  # room for point annotations at the edges
    if handles:
        # Explicit handles/labels so group names starting with "_" are not hidden by matplotlib.
        ax.legend(handles, names, fontsize=7, frameon=False, loc="best")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(spec.xlabel, fontsize=9)
    ax.set_ylabel(spec.ylabel, fontsize=9)
    _style_axes(ax)


def _draw_lines(fig, spec: LinePlot) -> None:
    import numpy as np

    ax = fig.add_subplot()
    x = np.array(_as_floats(spec.x, "LinePlot.x"), dtype=float)
    series = {str(k): np.array(_as_floats(v, f"LinePlot.series[{k!r}]"), dtype=float) for k, v in spec.series.items()}
    usable = {k: v for k, v in series.items() if np.isfinite(v).any()}
    if len(x) == 0 or not usable or not np.isfinite(x).any():
        _no_data(ax, spec, spec.title)
        return

    title = spec.title
    logy = spec.logy
    if logy and not any(((v > 0) & np.isfinite(v)).any() for v in usable.values()):
        logy = False
        title += "\n(no positive values: linear scale)"
    marker = "o" if len(x) <= 25 else None
    for k, (name, ys) in enumerate(series.items()):
        ax.plot(
            x, ys, color=_TAB10[k % 10], marker=marker, markersize=3,
            linewidth=1.4, linestyle=("-", "--", ":", "-.")[(k // 10) % 4],
        )
    if logy:
        ax.set_yscale("log", nonpositive="mask")
    # Explicit handles/labels so names starting with "_" are not hidden by matplotlib.
    ax.legend(ax.get_lines(), [_escape_mpl(n) for n in series], fontsize=7, frameon=False, loc="best")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(spec.xlabel, fontsize=9)
    ax.set_ylabel(spec.ylabel, fontsize=9)
    _style_axes(ax)


def figure_png_base64(fig) -> str:
    """Encode a matplotlib figure as a base64 PNG string (deterministic bytes) and close it."""
    buf = io.BytesIO()
    try:
        # metadata={"Software": None} drops the matplotlib version stamp so output is reproducible.
        fig.savefig(buf, format="png", dpi=fig.dpi, metadata={"Software": None}, facecolor="white")
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(fig)  # no-op for figures pyplot does not manage
        fig.clear()
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render_figure(spec: Scatter | LinePlot) -> str:
    """Draw a :class:`Scatter` or :class:`LinePlot` and return it as a base64 PNG string."""
    fig = _new_figure()
    try:
        if isinstance(spec, Scatter):
            _draw_scatter(fig, spec)
        elif isinstance(spec, LinePlot):
            _draw_lines(fig, spec)
        else:
            raise TypeError(f"render_figure expects a Scatter or LinePlot, got {type(spec).__name__}")
    except BaseException:
        fig.clear()
        raise
    return figure_png_base64(fig)


# ------------------------------------------------------------------------------------------------ HTML


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and type(v).__name__ != "bool_"


def format_value(v: object) -> str:
    """Format a scalar for display: floats to 4 significant digits, None as an em dash."""
    if v is None:
        return MISSING
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return str(int(v))
    if _is_number(v):
        return format(float(v), ".4g")
    return str(v)


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted((str(o) for o in obj))
    if isinstance(obj, Mapping):
        return dict(obj)
    return str(obj)


def _to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_json_default, ensure_ascii=False)


def _summary_node(value: Any) -> dict[str, Any]:
    """Turn a summary value into a tree the template renders: scalars, nested maps, or JSON text."""
    if isinstance(value, Mapping):
        if not value:
            return {"kind": "json", "text": "{}"}
        return {"kind": "map", "entries": [(str(k), _summary_node(v)) for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        if len(value) <= 12 and all(v is None or isinstance(v, (str, numbers.Number)) for v in value):
            return {"kind": "scalar", "text": ", ".join(format_value(v) for v in value) or "[]"}
        return {"kind": "json", "text": _to_json(value)}
    if value is None or isinstance(value, (str, numbers.Number)):
        return {"kind": "scalar", "text": format_value(value)}
    if hasattr(value, "tolist"):
        return _summary_node(value.tolist())
    return {"kind": "scalar", "text": str(value)}


def _table_context(table: Table) -> dict[str, Any]:
    columns = [str(c) for c in table.columns]
    raw = [[row.get(c) for c in table.columns] for row in table.rows]
    numeric = []
    for j in range(len(columns)):
        present = [r[j] for r in raw if r[j] is not None]
        numeric.append(bool(present) and all(_is_number(v) for v in present))
    return {
        "title": table.title,
        "columns": [{"name": c, "numeric": n} for c, n in zip(columns, numeric)],
        "rows": [[{"text": format_value(v), "numeric": numeric[j]} for j, v in enumerate(r)] for r in raw],
    }


@functools.lru_cache(maxsize=1)
def _template():
    import jinja2

    source = importlib.resources.files("transferlens").joinpath("templates").joinpath("report.html")
    env = jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env.from_string(source.read_text(encoding="utf-8"))


def write_report(
    path: str | pathlib.Path,
    *,
    title: str,
    intro: str = "",
    summary: Mapping[str, object] | None = None,
    tables: Sequence[Table] = (),
    figures: Sequence[Scatter | LinePlot] = (),
    config: Mapping[str, object] | None = None,
    notes: Sequence[str] = (),
) -> pathlib.Path:
    """Write a single self-contained HTML report to ``path`` (parent folders are created) and return it."""
    path = pathlib.Path(path)
    paragraphs = [" ".join(p.split()) for p in intro.split("\n\n") if p.strip()]
    html = _template().render(
        title=title,
        paragraphs=paragraphs,
        summary=[(str(k), _summary_node(v)) for k, v in (summary or {}).items()],
        tables=[_table_context(t) for t in tables],
        figures=[{"title": f.title, "png": render_figure(f)} for f in figures],
        config_json=_to_json(dict(config)) if config is not None else None,
        notes=[str(n) for n in notes],
        missing=MISSING,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
