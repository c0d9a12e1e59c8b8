"""Self-contained HTML reports built from views.

An experiment declares *what* to show with the views of :mod:`transferlens.report.views` (findings,
tables sorted by the ground truth, correlation tables with intervals, scatter plots with a fitted line,
line plots over a swept option, per-sample histograms, heat maps) and calls :func:`write_report`;
:mod:`transferlens.report.html` lays them out with a Jinja2 template and :mod:`transferlens.report.svg`
draws the figures as inline SVG (sharp at any resolution, no plotting library, milliseconds per figure).

The result is one ``.html`` file: inline CSS, inline SVG, no scripts, no external resources.
"""

from .html import git_commit, render_figure, render_report, write_report
from .views import (
    MISSING,
    CorrelationTable,
    Finding,
    HeatMap,
    Histograms,
    LinePlot,
    Scatter,
    Section,
    Table,
    best_metric,
    fmt_ci,
    format_value,
    label,
    ordinal,
)

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
    "best_metric",
    "fmt_ci",
    "format_value",
    "git_commit",
    "label",
    "ordinal",
    "render_figure",
    "render_report",
    "write_report",
]
