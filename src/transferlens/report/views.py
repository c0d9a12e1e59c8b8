"""What a report shows, declared as data: the views an experiment picks, never how they are drawn.

An experiment's ``write`` function builds a list of views and hands them to
:func:`transferlens.report.write_report`; the HTML layer lays them out and :mod:`transferlens.report.svg`
draws the figures. The views are generic (nothing here knows E1 or E2):

* :class:`Finding` -- one headline number with a sentence, shown first on the page;
* :class:`Table` -- a table of cells sorted by the ground truth, a few chosen columns shown and the full
  table one click away;
* :class:`CorrelationTable` -- how well each metric agrees with the ground truth, with intervals;
* :class:`Scatter` -- a metric against the ground truth, with a least-squares line;
* :class:`LinePlot` -- lines over a swept option;
* :class:`Histograms` -- one distribution per cell (per-sample values), stacked on a shared axis;
* :class:`HeatMap` -- a grid of values in [vmin, vmax] (e.g. transfer success rates per source and direction);
* :class:`Section` -- a titled group of views.

Numbers are shown with three decimals (:func:`format_value`); metric keys get readable names from
:func:`label` (``alpha1_t2s`` -> "alpha1 (target's attack on the source)").
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

__all__ = [
    "MISSING",
    "CorrelationTable",
    "Finding",
    "HeatMap",
    "Histograms",
    "LinePlot",
    "Scatter",
    "Section",
    "Table",
    "View",
    "best_metric",
    "fmt_ci",
    "format_value",
    "label",
    "ordinal",
]

MISSING = "\u2014"  # em dash shown for None / missing cells
DECIMALS = 3


# --------------------------------------------------------------------------------------------- numbers


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and type(v).__name__ != "bool_"


def format_value(v: object) -> str:
    """A scalar for display: floats with three decimals (``-0.000`` shown as ``0.000``; a huge float,
    |v| >= 1e6, in scientific notation), ints as they are, None as an em dash."""
    if v is None:
        return MISSING
    if isinstance(v, numbers.Integral) and not isinstance(v, bool) and type(v).__name__ != "bool_":
        return str(int(v))
    if _is_number(v):
        f = float(v)
        if math.isnan(f):
            return "NaN"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        if abs(f) >= 1e6:
            return f"{f:.3e}"
        text = f"{f:.{DECIMALS}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"
    return str(v)


def fmt_ci(ci: Sequence[float] | None) -> str:
    """A confidence interval as ``[low, high]`` with three decimals (an em dash when there is none)."""
    if ci is None:
        return MISSING
    return f"[{format_value(float(ci[0]))}, {format_value(float(ci[1]))}]"


# ------------------------------------------------------------------------------------------------ names


def ordinal(n: int) -> str:
    """1 -> "1st", 2 -> "2nd", 11 -> "11th", 23 -> "23rd"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


DIRECTIONS = {"t2s": "target's attack on the source", "s2t": "source's attack on the target"}
_MATCH_DIRECTIONS = {"t2s": "target mapped onto source", "s2t": "source mapped onto target"}
_DIRECTED = {
    "alpha1": "alpha1",
    "alpha1_median": "median alpha1",
    "alpha2": "alpha2",
    "combined": "combined alpha",
    "fooling_rate": "fooling rate",
    "error_rate": "error rate",
    "whitebox_rate": "white-box success rate",
    "conditional_rate": "conditional fooling rate",
    "n_used": "samples measured",
    "n_degenerate": "degenerate samples",
    "n_filtered": "samples filtered out",
    "saturation": "saturation",
}
_MATCHING = {
    "grad_match": "gradient-matching distance",
    "grad_match_rel": "gradient-matching distance, relative",
    "func_match": "function-matching distance",
    "func_match_rel": "function-matching distance, relative",
}
NAMES: dict[str, str] = {
    "probe_accuracy": "linear-probe accuracy on the target",
    "probe_loss": "linear-probe loss on the target",
    "last_layer_accuracy": "last-layer retraining accuracy on the target",
    "last_layer_loss": "last-layer retraining loss on the target",
    "source_accuracy": "source's own test accuracy",
    "source_accuracy_on_target": "source's accuracy on the target's test inputs",
    "target_accuracy": "target's test accuracy",
    "refit_rmse": "refit RMSE (lower: better transfer)",
    "target_rmse": "target RMSE",
    "scale": "deviation scale",
    "step": "step",
    "source": "source",
    "domain": "source domain",
    "architecture": "architecture",
}


def label(key: str, names: Mapping[str, str] | None = None) -> str:
    """A readable name for a result key: ``names`` first, then the library's metric names, else the key.

    ``alpha1_t2s`` -> "alpha1 (target's attack on the source)"; ``alpha1_t2s_level1`` -> "alpha1 (target's
    attack on the source), 2nd singular vector"; ``grad_match_rel_s2t`` -> "gradient-matching distance,
    relative (source mapped onto target)".
    """
    if names and key in names:
        return names[key]
    if key in NAMES:
        return NAMES[key]
    base, _, level = key.rpartition("_level")
    if base and level.isdigit():
        return f"{label(base, names)}, {ordinal(int(level) + 1)} singular vector"
    stem, _, direction = key.rpartition("_")
    if direction in DIRECTIONS:
        if stem in _DIRECTED:
            return f"{_DIRECTED[stem]} ({DIRECTIONS[direction]})"
        if stem in _MATCHING:
            return f"{_MATCHING[stem]} ({_MATCH_DIRECTIONS[direction]})"
    return key


# ------------------------------------------------------------------------------------------------ views


def _length(values: Any, name: str) -> int:
    try:
        return len(values)
    except TypeError as exc:
        raise TypeError(f"{name} must be a sequence (list, tuple or array), got {type(values).__name__}") from exc


@dataclass(frozen=True)
class Finding:
    """One headline: a short ``title`` ("Best predictor"), the ``value`` it leads with (a name or a number,
    shown large) and a sentence of ``detail`` that says what it means."""

    title: str
    value: str
    detail: str = ""


@dataclass(frozen=True)
class Table:
    """Rows of cells. ``columns`` are shown (headers from :func:`label`, overridable with ``names``); with
    ``all_columns`` the full table (headers: the raw keys, as in results.csv) follows in a collapsed
    ``<details>``. ``sort_by`` orders the rows by that key (``descending`` first; None last)."""

    columns: Sequence[str]
    rows: Sequence[Mapping[str, object]]
    title: str = ""
    caption: str = ""
    sort_by: str | None = None
    descending: bool = True
    all_columns: Sequence[str] | None = None
    names: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _length(self.columns, "Table.columns")
        _length(self.rows, "Table.rows")
        if self.sort_by is not None and not any(self.sort_by in r for r in self.rows) and self.rows:
            raise ValueError(f"Table {self.title!r}: no row has the sort key {self.sort_by!r}")

    def sorted_rows(self) -> list[Mapping[str, object]]:
        rows = list(self.rows)
        if self.sort_by is None:
            return rows
        key = self.sort_by

        def rank(r: Mapping[str, object]) -> tuple[int, float]:
            v = r.get(key)
            if not _is_number(v) or math.isnan(float(v)):  # type: ignore[arg-type]
                return (1, 0.0)
            f = float(v)  # type: ignore[arg-type]
            return (0, -f if self.descending else f)

        return sorted(rows, key=rank)  # stable: ties keep their order


@dataclass(frozen=True)
class CorrelationTable:
    """How well each metric agrees with a ground truth: one row per entry of ``correlations`` (a mapping
    metric key -> :class:`transferlens.evaluation.Correlation`), with Spearman and its interval first.

    ``baselines`` are extra rows (e.g. the source's own accuracy) marked as such. ``stats`` picks the
    statistic columns; ``sort`` orders rows by Spearman (highest first, undefined last)."""

    correlations: Mapping[str, Any]
    truth: str
    title: str = ""
    baselines: Mapping[str, Any] = field(default_factory=dict)
    stats: Sequence[str] = ("spearman", "spearman_ci", "pearson", "kendall", "weighted_tau")
    sort: bool = False
    caption: str = ""
    names: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Scatter:
    """Scatter plot of ``y`` against ``x``.

    ``labels`` names each point (placed next to it where it does not overlap another label or point; every
    point also shows its name on hover); ``groups`` colours points by group and adds a legend. Non-finite
    points (NaN, inf, None) are dropped and counted in the caption. With ``fit_line`` a least-squares line
    (with Pearson r in the legend) is drawn when there are at least two distinct x values.
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
class Histograms:
    """One histogram per entry of ``samples`` (name -> per-sample values), stacked on a shared x axis in
    the mapping's order, each with its mean marked. Non-finite values are dropped (and counted)."""

    samples: Mapping[str, Sequence[float]]
    xlabel: str
    title: str
    bins: int = 40

    def __post_init__(self) -> None:
        if not isinstance(self.samples, Mapping):
            raise TypeError(f"Histograms {self.title!r}: samples must be a mapping name -> values")
        for name, values in self.samples.items():
            _length(values, f"Histograms.samples[{name!r}]")
        if not isinstance(self.bins, int) or self.bins < 1:
            raise ValueError(f"Histograms {self.title!r}: bins must be a positive int, got {self.bins!r}")


@dataclass(frozen=True)
class HeatMap:
    """A grid of values (``values[i][j]`` for row ``rows[i]`` and column ``columns[j]``; None for missing),
    coloured from ``vmin`` (light) to ``vmax`` (dark), each cell printed with three decimals."""

    values: Sequence[Sequence[float | None]]
    rows: Sequence[str]
    columns: Sequence[str]
    title: str
    value_label: str = ""
    vmin: float = 0.0
    vmax: float = 1.0

    def __post_init__(self) -> None:
        if _length(self.values, "HeatMap.values") != _length(self.rows, "HeatMap.rows"):
            raise ValueError(f"HeatMap {self.title!r}: one row of values per row label, got {len(self.values)} and {len(self.rows)}")
        nc = _length(self.columns, "HeatMap.columns")
        for i, row in enumerate(self.values):
            if _length(row, f"HeatMap.values[{i}]") != nc:
                raise ValueError(f"HeatMap {self.title!r}: row {i} has {len(row)} values for {nc} columns")
        if not (math.isfinite(self.vmin) and math.isfinite(self.vmax) and self.vmax > self.vmin):
            raise ValueError(f"HeatMap {self.title!r}: need finite vmin < vmax, got {self.vmin} and {self.vmax}")


Figure = Union[Scatter, LinePlot, Histograms, HeatMap]
FIGURES = (Scatter, LinePlot, Histograms, HeatMap)


@dataclass(frozen=True)
class Section:
    """A titled part of the page: an optional paragraph, then its views in order (consecutive figures are
    laid out side by side)."""

    title: str
    views: Sequence["View"]
    intro: str = ""


View = Union[Table, CorrelationTable, Scatter, LinePlot, Histograms, HeatMap]


# ------------------------------------------------------------------------------------------- selection


def best_metric(correlations: Mapping[str, Any], sign: Mapping[str, int] | None = None) -> str | None:
    """The key whose Spearman correlation agrees best with the truth: the largest ``sign[m] * spearman``
    (``sign`` defaults to +1: higher metric, higher truth); ties go to the larger such Pearson, then to the
    first. None when no Spearman is defined."""
    best, best_rank = None, None
    for m, c in correlations.items():
        s = 1 if sign is None else sign.get(m, 1)
        if c.spearman is None:
            continue
        rank = (round(s * c.spearman, 12), round(s * c.pearson, 12) if c.pearson is not None else -math.inf)
        if best_rank is None or rank > best_rank:
            best, best_rank = m, rank
    return best
