"""Lay the views out as one self-contained HTML page (Jinja2 template ``templates/report.html``).

The page has inline CSS, figures as inline SVG, no scripts, no external fonts or links, so it can be
mailed around or attached to a CI run as-is. It leads with the findings, then the sections the
experiment declared, then notes, the configuration (collapsed) and a footer with the library version,
the git commit (when the package runs from a git checkout) and the date.

Rendering is deterministic for a given date: the same views give byte-identical HTML. The date is today's
(UTC), or that of ``SOURCE_DATE_EPOCH`` when set, or the ``generated`` argument.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import importlib.resources
import json
import numbers
import os
import pathlib
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from .svg import render_svg
from .views import (
    FIGURES,
    MISSING,
    CorrelationTable,
    Finding,
    Section,
    Table,
    _is_number,
    fmt_ci,
    format_value,
    label,
)

__all__ = ["render_figure", "render_report", "write_report"]

STAT_NAMES = {
    "spearman": "Spearman \u03c1",
    "pearson": "Pearson r",
    "kendall": "Kendall \u03c4",
    "weighted_tau": "weighted \u03c4",
    "relative_top1": "relative top-1",
    "n": "n",
}


def render_figure(spec: Any) -> str:
    """Draw one figure view (:class:`Scatter`, :class:`LinePlot`, :class:`Histograms`, :class:`HeatMap`)
    and return its SVG markup."""
    return render_svg(spec)[0]


# ----------------------------------------------------------------------------------------- footer info


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The short commit of the git checkout this package runs from, else None (an installed copy in
    site-packages, no git, or git refusing the repository all give None)."""
    here = pathlib.Path(__file__).resolve().parent
    if any(part in ("site-packages", "dist-packages") for part in here.parts):
        return None
    root = next((d for d in here.parents if (d / ".git").exists()), None)
    git = shutil.which("git")
    if root is None or git is None:
        return None
    try:
        out = subprocess.run(
            [git, "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{4,40}", commit) else None


def _today() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        return _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc).date().isoformat()
    return _dt.datetime.now(_dt.timezone.utc).date().isoformat()


def _version() -> str:
    from .. import __version__

    return str(__version__)


# ------------------------------------------------------------------------------------------- contexts


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
    """A summary value as a tree the template renders: scalars, nested maps, or JSON text."""
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


def _grid(columns: list[dict[str, Any]], raw: list[list[Any]], row_classes: list[str] | None = None) -> dict[str, Any]:
    """Header and body cells; a column is numeric (right-aligned) when all its present values are."""
    for j, col in enumerate(columns):
        col.setdefault("tip", "")
        col.setdefault("sorted", False)
        col.setdefault("wrap", len(str(col["name"])) > 18)
        if "numeric" not in col:
            present = [r[j] for r in raw if r[j] is not None]
            col["numeric"] = bool(present) and all(_is_number(v) for v in present)
    rows = []
    for i, r in enumerate(raw):
        cells = [{"text": format_value(v), "numeric": columns[j]["numeric"]} for j, v in enumerate(r)]
        rows.append({"cells": cells, "cls": row_classes[i] if row_classes else ""})
    return {"columns": columns, "rows": rows}


def _table_context(table: Table) -> dict[str, Any]:
    rows = table.sorted_rows()
    names = dict(table.names)
    shown = [str(c) for c in table.columns]
    grid = _grid(
        [{"name": label(c, names), "tip": c, "sorted": c == table.sort_by} for c in shown],
        [[row.get(c) for c in shown] for row in rows],
    )
    full = None
    if table.all_columns is not None:
        keys = [str(c) for c in table.all_columns]
        full = _grid([{"name": c, "tip": label(c, names), "sorted": c == table.sort_by} for c in keys],
                     [[row.get(c) for c in keys] for row in rows])
    caption = table.caption
    if table.sort_by is not None:
        order = "highest" if table.descending else "lowest"
        caption = (caption + " " if caption else "") + f"Sorted by {label(table.sort_by, names)}, {order} first."
    return {"kind": "table", "title": table.title, "caption": caption, **grid, "full": full}


def _correlation_context(view: CorrelationTable) -> dict[str, Any]:
    entries = [(m, c, False) for m, c in view.correlations.items()] + [(m, c, True) for m, c in view.baselines.items()]
    if view.sort:
        entries.sort(key=lambda e: (e[1].spearman is None, -(e[1].spearman or 0.0)))
    names = dict(view.names)
    confidence = next((c.confidence for _, c, _ in entries), 0.95)
    columns: list[dict[str, Any]] = [{"name": "metric", "tip": "", "numeric": False}]
    previous = None
    for s in view.stats:
        if s.endswith("_ci"):
            ci = f"{round(confidence * 100)}% CI"
            name = ci if previous == s[:-3] else f"{STAT_NAMES.get(s[:-3], s[:-3])} {ci}"
            columns.append({"name": name, "tip": f"{s[:-3]} {ci}", "numeric": True, "wrap": False})
            previous = s
        else:
            columns.append({"name": STAT_NAMES.get(s, s), "tip": s, "numeric": True, "wrap": False})
            previous = s
    raw, classes = [], []
    for m, c, baseline in entries:
        name = label(m, names) + (" (baseline)" if baseline else "")
        row: list[Any] = [name]
        for s in view.stats:
            v = getattr(c, s)
            row.append(fmt_ci(v) if s.endswith("_ci") else v)
        raw.append(row)
        classes.append("baseline" if baseline else "")
    grid = _grid(columns, raw, classes)
    return {"kind": "table", "title": view.title, "caption": view.caption, **grid, "full": None}


def _figure_context(spec: Any) -> dict[str, Any]:
    svg, notes = render_svg(spec)
    from markupsafe import Markup

    return {"title": spec.title, "svg": Markup(svg), "notes": notes}


def _blocks(views: Sequence[Any]) -> list[dict[str, Any]]:
    """Views in order; consecutive figures share one grid block."""
    blocks: list[dict[str, Any]] = []
    for v in views:
        if isinstance(v, FIGURES):
            if not blocks or blocks[-1]["kind"] != "figures":
                blocks.append({"kind": "figures", "figures": []})
            blocks[-1]["figures"].append(_figure_context(v))
        elif isinstance(v, CorrelationTable):
            blocks.append(_correlation_context(v))
        elif isinstance(v, Table):
            blocks.append(_table_context(v))
        else:
            raise TypeError(f"not a report view: {type(v).__name__}")
    return blocks


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def _slug(text: str, seen: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, k = base, 2
    while slug in seen:
        slug, k = f"{base}-{k}", k + 1
    seen.add(slug)
    return slug


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


def render_report(
    *,
    title: str,
    intro: str = "",
    findings: Sequence[Finding] = (),
    sections: Sequence[Section] = (),
    summary: Mapping[str, object] | None = None,
    tables: Sequence[Table] = (),
    figures: Sequence[Any] = (),
    config: Mapping[str, object] | None = None,
    notes: Sequence[str] = (),
    run_seconds: float | None = None,
    generated: str | _dt.date | None = None,
) -> str:
    """The report as an HTML string (see :func:`write_report`)."""
    seen: set[str] = set()
    section_ctx = []
    all_sections = list(sections)
    if tables:
        all_sections.append(Section("Tables", list(tables)))
    if figures:
        all_sections.append(Section("Figures", list(figures)))
    for s in all_sections:
        section_ctx.append({"title": s.title, "id": _slug(s.title, seen), "paragraphs": _paragraphs(s.intro),
                            "blocks": _blocks(s.views)})
    if isinstance(generated, _dt.date):
        generated = generated.isoformat()
    footer = {
        "version": _version(),
        "commit": git_commit(),
        "date": generated or _today(),
        "run_time": f"{run_seconds:.1f} s" if run_seconds else None,
    }
    return _template().render(
        title=title,
        paragraphs=_paragraphs(intro),
        findings=[{"title": f.title, "value": f.value, "detail": f.detail} for f in findings],
        summary=[(str(k), _summary_node(v)) for k, v in (summary or {}).items()],
        sections=section_ctx,
        config_json=_to_json(dict(config)) if config is not None else None,
        notes=[str(n) for n in notes],
        footer=footer,
        missing=MISSING,
    )


def write_report(path: str | pathlib.Path, **kwargs: Any) -> pathlib.Path:
    """Write one self-contained HTML report to ``path`` (parent folders are created) and return the path.

    Keyword arguments: ``title``; ``intro`` (paragraphs separated by blank lines); ``findings`` (the
    :class:`Finding` headlines the page opens with); ``sections`` (:class:`Section` s of views); ``summary``
    (a key -> value mapping shown as a small table); ``tables`` and ``figures`` (views shown in sections
    "Tables" and "Figures" after the declared ones); ``config`` (shown as JSON, collapsed); ``notes``;
    ``run_seconds`` (shown in the footer); ``generated`` (the footer's date, default today).
    """
    path = pathlib.Path(path)
    html = render_report(**kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
