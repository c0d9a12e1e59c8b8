"""Tests of the HTML report: the views, the SVG figures, the page, and the E1/E2 reports built from them.

The E1/E2 reports are built from fixture results (made-up numbers with the shape of the real ones), so
these tests need no training; tests/test_e1.py and tests/test_e2.py write reports of real runs.
"""

from __future__ import annotations

import html as html_lib
import math
import re
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import numpy as np
import pytest

from transferlens.evaluation import correlate, relative_top1
from transferlens.report import (
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
    git_commit,
    label,
    ordinal,
    render_figure,
    render_report,
    write_report,
)
from transferlens.report.svg import POINT_LABEL_SIZE, render_svg, text_width

SVG = re.compile(r"<svg\b.*?</svg>", re.S)
DATE = "2024-01-02"


def _inputs():
    table = Table(
        columns=["model", "accuracy", "params", "note"],
        rows=[
            {"model": "mlp", "accuracy": 0.912345678, "params": 12345, "note": "<script>alert(1)</script>"},
            {"model": "cnn", "accuracy": None, "params": 2048, "note": "a & b"},
            {"model": "rnn", "params": 7},  # missing keys render as an em dash
        ],
        title="Results <v1>",
    )
    scatter = Scatter(
        x=[0.1, 0.4, 0.5, 0.9, float("nan")],
        y=[0.2, 0.35, 0.6, 0.8, 0.1],
        xlabel="similarity",
        ylabel="transfer",
        title="Transfer vs similarity",
        labels=["a", "b", "c$", "d<", "e"],
        groups=["mlp", "cnn", "mlp", "_hidden?", "cnn"],
    )
    lines = LinePlot(
        x=[1, 2, 3, 4],
        series={"train": [1.0, 0.5, 0.25, 0.125], "test": [1.2, 0.7, 0.5, 0.45]},
        xlabel="epoch",
        ylabel="loss",
        title="Loss",
        logy=True,
    )
    return dict(
        title="Report <title>",
        intro="First paragraph.\n\nSecond paragraph with <b>markup</b>.",
        findings=[Finding("Best <metric>", "alpha1", "Spearman 0.900 over 5 models.")],
        summary={"n_models": 3, "mean_r": 0.812345, "nested": {"a": 1, "b": {"c": None}}, "list": [1, 2.5, None]},
        tables=[table],
        figures=[scatter, lines],
        config={"seed": 0, "lr": 1e-3, "models": ["mlp", "cnn"], "path": None},
        notes=["note with <i>html</i>"],
        run_seconds=12.34,
        generated=DATE,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("rep") / "sub" / "dir" / "report.html"
    out = write_report(path, **_inputs())
    return out, out.read_text(encoding="utf-8")


def _svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(s) for s in SVG.findall(html)]


# ------------------------------------------------------------------------------------------ the page


def test_report_written_and_self_contained(report):
    path, html = report
    assert path.exists() and path.name == "report.html"
    assert html.startswith("<!DOCTYPE html>")
    assert len(SVG.findall(html)) == 2  # one inline SVG per figure, no raster images
    assert "<img" not in html and "data:" not in html
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert "@import" not in html and "url(" not in html
    assert "<details" in html and "Configuration" in html
    assert '"lr": 0.001' in html_lib.unescape(html)


def test_html_is_escaped_and_none_is_dash(report):
    _, html = report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "a &amp; b" in html
    assert "Report &lt;title&gt;" in html and "Results &lt;v1&gt;" in html and "Best &lt;metric&gt;" in html
    assert "&lt;b&gt;markup&lt;/b&gt;" in html and "&lt;i&gt;html&lt;/i&gt;" in html
    assert any("d<" in (t.text or "") for svg in _svgs(html) for t in svg.iter("title"))  # escaped inside the SVG
    assert "\u2014" in html
    assert "0.912" in html and "0.9123" not in html  # three decimals
    assert "0.812" in html and "0.8123" not in html  # summary floats too
    assert '<td class="num">12345</td>' in html  # numeric column right-aligned, ints untouched


def test_page_leads_with_the_findings_and_ends_with_the_footer(report):
    _, html = report
    body = html[html.index("<body>"):]
    first_finding = body.index('class="finding"')
    assert first_finding < body.index("First paragraph") < body.index("<h2>")
    footer = body[body.index("<footer>"):]
    assert "transferlens " in footer and f"generated {DATE}" in footer and "run time 12.3 s" in footer
    assert "run time" not in body[: body.index("<footer>")]  # not a headline
    commit = git_commit()
    if commit is not None:
        assert re.fullmatch(r"[0-9a-f]{4,40}", commit) and f"commit {commit}" in footer
    else:
        assert "commit" not in footer


def test_embedded_figures_are_well_formed_svg(report):
    _, html = report
    for svg in _svgs(html):
        assert svg.tag == "svg" and svg.get("role") == "img" and svg.get("aria-label")
        w, h = float(svg.get("width")), float(svg.get("height"))
        assert w > 0 and h > 0 and svg.get("viewBox") == f"0 0 {svg.get('width')} {svg.get('height')}"
        assert svg.findall(".//title")  # hover text on the marks


def test_rendering_is_deterministic(tmp_path):
    a = write_report(tmp_path / "a.html", **_inputs()).read_text(encoding="utf-8")
    b = write_report(tmp_path / "b.html", **_inputs()).read_text(encoding="utf-8")
    assert a == b


def test_the_date_follows_source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    html = render_report(title="t")
    assert "generated 1970-01-02" in html


def test_sections_group_views_and_figures_share_a_grid():
    fig = Scatter(x=[1, 2, 3], y=[1, 3, 2], xlabel="x", ylabel="y", title="s")
    html = render_report(
        title="t",
        sections=[Section("First part", [fig, fig, Table(columns=["a"], rows=[{"a": 1}]), fig], intro="Why.")],
        generated=DATE,
    )
    assert html.count('<div class="figures">') == 2 and len(SVG.findall(html)) == 3
    assert '<section id="first-part">' in html and "Why." in html
    with pytest.raises(TypeError, match="not a report view"):
        render_report(title="t", sections=[Section("x", ["a string"])])  # type: ignore[list-item]


# ------------------------------------------------------------------------------------------ numbers and names


def test_format_value_three_decimals():
    assert format_value(0.912345678) == "0.912"
    assert format_value(1) == "1" and format_value(np.int64(7)) == "7"
    assert format_value(2.0) == "2.000"
    assert format_value(-0.0) == "0.000" and format_value(-4.7e-17) == "0.000"  # bootstrap noise: no "-0.000"
    assert format_value(-0.0015) == "-0.002" and format_value(12345678.9) == "1.235e+07"
    assert format_value(None) == "\u2014" and format_value(float("nan")) == "NaN"
    assert format_value(True) == "True" and format_value("x") == "x"
    assert fmt_ci((0.12345, 1.0)) == "[0.123, 1.000]" and fmt_ci(None) == "\u2014"


def test_readable_names():
    assert label("alpha1_t2s") == "alpha1 (target's attack on the source)"
    assert label("alpha1_s2t") == "alpha1 (source's attack on the target)"
    assert label("combined_t2s_level1") == "combined alpha (target's attack on the source), 2nd singular vector"
    assert label("grad_match_rel_s2t") == "gradient-matching distance, relative (source mapped onto target)"
    assert label("probe_accuracy") == "linear-probe accuracy on the target"
    assert label("unknown_key") == "unknown_key" and label("x", {"x": "ex"}) == "ex"
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st"
    ]


# ------------------------------------------------------------------------------------------ tables


def test_table_is_sorted_by_the_ground_truth_with_the_full_table_one_click_away():
    rows = [
        {"source": "a", "probe_accuracy": 0.5, "alpha1_t2s": 0.1, "extra": 1},
        {"source": "b", "probe_accuracy": None, "alpha1_t2s": 0.2, "extra": 2},
        {"source": "c", "probe_accuracy": 0.9, "alpha1_t2s": 0.3, "extra": 3},
    ]
    t = Table(columns=["source", "probe_accuracy", "alpha1_t2s"], rows=rows, sort_by="probe_accuracy", all_columns=list(rows[0]))
    assert [r["source"] for r in t.sorted_rows()] == ["c", "a", "b"]  # highest first, missing last
    asc = Table(columns=["source"], rows=rows, sort_by="probe_accuracy", descending=False)
    assert [r["source"] for r in asc.sorted_rows()] == ["a", "c", "b"]
    html = render_report(title="t", sections=[Section("S", [t])], generated=DATE)
    shown, full = html.split('<details class="full-table">')
    assert "linear-probe accuracy on the target" in shown and "alpha1 (target&#39;s attack on the source)" in shown
    assert ">extra<" not in shown  # only the chosen columns up front
    assert "All 4 columns, as in results.csv" in full and ">extra<" in full and ">probe_accuracy" in full
    assert shown.index(">c<") < shown.index(">a<") < shown.index(">b<")
    assert "Sorted by linear-probe accuracy on the target, highest first." in shown
    with pytest.raises(ValueError, match="sort key"):
        Table(columns=["a"], rows=[{"a": 1}], sort_by="b")


def _corr(scores, truth, **kw):
    return correlate(scores, truth, n_boot=50, seed=0, **kw)


def test_correlation_table_has_intervals_baselines_and_sorts_by_spearman():
    truth = [0.1, 0.4, 0.5, 0.9, 0.7]
    corr = {"alpha2_t2s": _corr([5, 4, 3, 1, 2], truth), "alpha1_t2s": _corr([0.1, 0.3, 0.6, 0.8, 0.7], truth)}
    base = {"source_accuracy": _corr([0.3, 0.1, 0.9, 0.2, 0.5], truth)}
    view = CorrelationTable(corr, "probe_accuracy", baselines=base, sort=True,
                            stats=("spearman", "spearman_ci", "pearson", "kendall_ci", "relative_top1"))
    html = render_report(title="t", sections=[Section("S", [view])], generated=DATE)
    body = html[html.index("<table"):]
    assert body.index("alpha1 (target") < body.index("source&#39;s own test accuracy (baseline)") < body.index("alpha2 (target")
    assert '<tr class="baseline">' in body
    assert fmt_ci(corr["alpha1_t2s"].spearman_ci) in body and fmt_ci(corr["alpha2_t2s"].kendall_ci) in body
    assert "Kendall \u03c4 95% CI" in body and ">95% CI<" in body  # named after its statistic unless next to it
    assert format_value(corr["alpha1_t2s"].relative_top1) in body


def test_best_metric_honours_the_expected_sign():
    truth = [1.0, 2.0, 3.0, 4.0]
    corr = {"up": _corr([1, 2, 4, 3], truth), "down": _corr([4, 3, 2, 1], truth), "flat": _corr([1, 1, 1, 1], truth)}
    assert corr["flat"].spearman is None
    assert best_metric(corr) == "up"
    assert best_metric(corr, sign={"up": -1, "down": -1}) == "down"
    assert best_metric({"flat": corr["flat"]}) is None


# ------------------------------------------------------------------------------------------ figures


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same length"):
        Scatter(x=[1, 2, 3], y=[1, 2], xlabel="x", ylabel="y", title="t")
    with pytest.raises(ValueError, match="labels"):
        Scatter(x=[1, 2], y=[1, 2], xlabel="x", ylabel="y", title="t", labels=["a"])
    with pytest.raises(ValueError, match="groups"):
        Scatter(x=[1, 2], y=[1, 2], xlabel="x", ylabel="y", title="t", groups=["a", "b", "c"])
    with pytest.raises(ValueError, match="series 'b'"):
        LinePlot(x=[1, 2], series={"a": [1, 2], "b": [1]}, xlabel="x", ylabel="y", title="t")
    with pytest.raises(ValueError, match="row 1"):
        HeatMap(values=[[1.0, 2.0], [1.0]], rows=["a", "b"], columns=["x", "y"], title="t")
    with pytest.raises(ValueError, match="vmin < vmax"):
        HeatMap(values=[[1.0]], rows=["a"], columns=["x"], title="t", vmin=1.0, vmax=1.0)
    with pytest.raises(ValueError, match="bins"):
        Histograms({"a": [1.0]}, xlabel="x", title="t", bins=0)
    with pytest.raises(TypeError, match="sequence"):
        Scatter(x=3, y=[1], xlabel="x", ylabel="y", title="t")  # type: ignore[arg-type]


def test_nan_points_dropped_and_empty_data():
    svg, notes = render_svg(
        Scatter(x=[1, float("nan"), 3, None], y=[1, 2, math.inf, 4], xlabel="x", ylabel="y", title="t",
                labels=["a", "b", "c", "d"], groups=["g", "g", "h", "h"])
    )
    ET.fromstring(svg)
    assert "3 non-finite points dropped" in notes
    # All dropped / empty inputs draw a "no data" figure instead of raising.
    for spec in (
        Scatter(x=[float("nan")], y=[1.0], xlabel="x", ylabel="y", title="all dropped"),
        Scatter(x=[], y=[], xlabel="x", ylabel="y", title="empty"),
        LinePlot(x=[], series={}, xlabel="x", ylabel="y", title="empty"),
        Histograms({}, xlabel="x", title="empty"),
    ):
        assert "no data" in render_figure(spec) or isinstance(spec, Histograms)
        ET.fromstring(render_figure(spec))
    for spec in (
        Scatter(x=[2.0, 2.0], y=[1.0, 3.0], xlabel="x", ylabel="y", title="one distinct x"),
        Histograms({"a": [], "b": [np.nan, 1.0, 2.0]}, xlabel="x", title="some empty"),
        HeatMap(values=[[None, 0.5], [float("nan"), 1.0]], rows=["r1", "r2"], columns=["c1", "c2"], title="gaps"),
    ):
        ET.fromstring(render_figure(spec))
    svg, notes = render_svg(LinePlot(x=[1, 2], series={"a": [0.0, -1.0]}, xlabel="x", ylabel="y", title="log", logy=True))
    assert "no positive values: linear scale" in notes
    ET.fromstring(svg)


def test_figure_rendering_is_deterministic_and_typed():
    spec = _inputs()["figures"][0]
    assert render_figure(spec) == render_figure(spec)
    with pytest.raises(TypeError):
        render_figure(Table(columns=["a"], rows=[]))  # type: ignore[arg-type]


def test_scatter_has_a_fit_line_and_legend():
    spec = Scatter(x=[0, 1, 2, 3], y=[0.1, 0.9, 2.1, 2.9], xlabel="x", ylabel="y", title="t", groups=["a", "b", "a", "b"])
    svg = render_figure(spec)
    r = np.corrcoef([0, 1, 2, 3], [0.1, 0.9, 2.1, 2.9])[0, 1]
    assert 'stroke-dasharray="5 3"' in svg and f"least-squares fit (Pearson r = {r:.3f})" in svg
    assert ">a</text>" in svg and ">b</text>" in svg  # group legend
    no_fit = render_figure(Scatter(x=[0, 1, 2], y=[1, 2, 3], xlabel="x", ylabel="y", title="t", fit_line=False))
    assert "least-squares" not in no_fit


def _label_boxes(svg: str) -> list[tuple[float, float, float, float]]:
    root = ET.fromstring(svg)
    boxes = []
    for t in root.iter("text"):
        if t.get("font-size") == f"{POINT_LABEL_SIZE:g}" and t.get("fill") == "#3d444d":
            x, y, w = float(t.get("x")), float(t.get("y")), text_width(t.text or "", POINT_LABEL_SIZE)
            boxes.append((x, y - POINT_LABEL_SIZE, x + w, y))
    return boxes


def test_point_labels_do_not_overlap():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=40), rng.normal(size=40)
    x[:10], y[:10] = 0.0, np.linspace(0, 0.01, 10)  # a dense cluster that cannot all be labelled
    names = [f"source-{i}" for i in range(40)]
    svg, notes = render_svg(Scatter(x=x.tolist(), y=y.tolist(), xlabel="x", ylabel="y", title="t", labels=names))
    boxes = _label_boxes(svg)
    assert 10 <= len(boxes) < 40
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] - 0.5 and b[0] < a[2] - 0.5 and a[1] < b[3] - 0.5 and b[1] < a[3] - 0.5), (a, b)
    assert any("left out to avoid overlap" in n for n in notes)
    assert svg.count("<title>") == 40  # every point still names itself on hover


def test_histograms_and_heat_map_draw_every_row():
    rng = np.random.default_rng(1)
    samples = {"first": rng.normal(0.8, 0.05, 500), "second": rng.normal(0.5, 0.1, 500).tolist()}
    svg = render_figure(Histograms(samples, xlabel="alpha1", title="h"))
    assert ">first</text>" in svg and ">second</text>" in svg
    assert f"first: mean {format_value(float(samples['first'].mean()))}" in svg
    outliers = {"a": np.concatenate([rng.normal(0.5, 0.01, 1000), [50.0]])}
    _, notes = render_svg(Histograms(outliers, xlabel="x", title="h"))
    assert any("not shown" in n for n in notes)
    hm = render_figure(HeatMap(values=[[0.25, None]], rows=["src"], columns=["t2s", "s2t"], title="h", vmax=0.5))
    assert ">0.250</text>" in hm and "\u2014" in hm and ">0.500</text>" in hm


# ------------------------------------------------------------------------------------------ E1 and E2 reports


def fake_e2_result(n_sources: int = 8, with_samples: bool = True):
    """An E2Result with made-up numbers in the shape of a real run (no training)."""
    from transferlens.experiments.e2 import METRICS, QUICK, E2Config, E2Result

    cfg = E2Config(**QUICK)
    rng = np.random.default_rng(0)
    domains = ["reference", "noisy", "sheared", "untranslated", "very-noisy", "shuffled"]
    rows = []
    for i in range(n_sources):
        domain, arch = domains[i % len(domains)], ("mlp", "cnn1d")[i // len(domains) % 2]
        probe = 0.3 + 0.6 * (i % 7) / 6 + 0.01 * i
        row = {"source": f"{arch}@{domain}-{i}", "domain": domain, "architecture": arch,
               "source_accuracy": float(rng.uniform(0.3, 1.0)), "source_accuracy_on_target": float(rng.uniform(0, 1))}
        for d in ("s2t", "t2s"):
            for k, m in enumerate(("alpha1", "alpha2", "combined")):
                row[f"{m}_{d}"] = float(probe * (1 - 0.3 * k) + rng.normal(0, 0.05))
        for d in ("s2t", "t2s"):
            row[f"n_used_{d}"] = 200
            for m in ("fooling_rate", "error_rate", "whitebox_rate"):
                row[f"{m}_{d}"] = float(rng.uniform(0, 0.1))
        row.update(probe_accuracy=probe, probe_loss=1 - probe, last_layer_accuracy=probe - 0.02, last_layer_loss=1.1 - probe)
        rows.append(row)
    rows[1]["fooling_rate_s2t"] = None

    def corr(truth):
        t = [r[truth] for r in rows]
        return {m: correlate([r[m] for r in rows], t, n_boot=cfg.n_boot, seed=0) for m in METRICS}

    sources = ()
    if with_samples:
        sources = tuple(
            SimpleNamespace(name=r["source"], transfer=SimpleNamespace(
                t2s=SimpleNamespace(alpha1_samples=rng.normal(r["alpha1_t2s"], 0.1, 200)),
                s2t=SimpleNamespace(alpha1_samples=rng.normal(r["alpha1_s2t"], 0.1, 200)),
            ))
            for r in rows
        )
    return E2Result(
        config=cfg,
        target={"task": {"description": "MNIST-1D default domain"}, "architecture": "cnn1d", "test_accuracy": 0.9,
                "n_eval": 200, "epochs_run": 5},
        source_rows=tuple(rows),
        correlations=corr("probe_accuracy"),
        correlations_last_layer=corr("last_layer_accuracy"),
        seconds=3.21,
        environment={"transferlens": "test"},
        sources=sources,  # type: ignore[arg-type]
        domain_descriptions={d: f"MNIST-1D {d}" for d in domains},
    )


def fake_e1_result(with_samples: bool = True):
    """An E1Result with made-up numbers in the shape of a real run (no training)."""
    from transferlens.experiments.e1 import ALPHAS, METRICS, QUICK, E1Config, E1Result

    cfg = E1Config(**QUICK)
    rng = np.random.default_rng(0)
    scales = [0.0, 0.1, 0.3, 0.6, 1.0]
    rows = []
    for i, s in enumerate(scales):
        a = math.exp(-2 * s)
        row = {"step": i, "scale": s}
        for m in ALPHAS:
            row[m] = a * (1 - 0.1 * ALPHAS.index(m) * s)
        for m in ("grad_match_s2t", "grad_match_t2s", "func_match_s2t", "func_match_t2s"):
            row[m] = 1 - a + 0.01 * i
        for d in ("s2t", "t2s"):
            row[f"grad_match_rel_{d}"] = 1 - a
            row[f"func_match_rel_{d}"] = (1 - a) * 0.9
        row["refit_rmse"] = 0.06 + 0.5 * (1 - a)
        row.update({f"{m}_level1": 0.1 + 0.02 * rng.normal() for m in ALPHAS})
        rows.append(row)
    rmse = [r["refit_rmse"] for r in rows]
    measurements = ()
    if with_samples:
        measurements = tuple(
            SimpleNamespace(t2s=SimpleNamespace(alpha1_samples=rng.normal(r["alpha1_t2s"], 0.05, 300)),
                            s2t=SimpleNamespace(alpha1_samples=rng.normal(r["alpha1_s2t"], 0.05, 300)))
            for r in rows
        )
    return E1Result(
        config=cfg, scales=tuple(scales), target_rmse=0.06, sweep_rows=tuple(rows), refit_rmse=tuple(rmse),
        correlations={m: correlate([r[m] for r in rows], rmse, n_boot=100, seed=0) for m in METRICS},
        ablation_correlations={m: correlate([r[f"{m}_level1"] for r in rows], rmse, n_boot=100, seed=0) for m in ALPHAS},
        seconds=1.5, environment={"transferlens": "test"}, measurements=measurements,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def e2_report(tmp_path_factory):
    from transferlens.experiments.e2 import write_e2

    result = fake_e2_result()
    paths = write_e2(result, tmp_path_factory.mktemp("e2"))
    return result, paths["report"].read_text(encoding="utf-8")


def test_e2_report_leads_with_the_finding(e2_report):
    result, html = e2_report
    rows = result.rows()
    corr = result.correlations
    best = best_metric(corr)
    findings = html_lib.unescape(html[html.index('id="findings"'):html.index("</section>")])
    assert html.index('id="findings"') < html.index('class="intro"')  # before the setup paragraph
    assert label(best) in findings and format_value(corr[best].spearman) in findings
    assert fmt_ci(corr[best].spearman_ci) in findings
    acc = [r["probe_accuracy"] for r in rows]
    scores = [r["alpha1_t2s"] for r in rows]
    assert f"relative top-1 {format_value(relative_top1(scores, acc))}" in findings
    assert rows[int(np.argmax(scores))]["source"] in findings
    base = correlate([r["source_accuracy"] for r in rows], acc, n_boot=result.config.n_boot, seed=result.config.seed)
    assert "trivial baseline" in findings.lower() and format_value(base.spearman) in findings
    assert "run time" not in html[: html.index("<footer>")]


def test_e2_report_views(e2_report):
    result, html = e2_report
    rows = result.rows()
    # sources table: sorted by probe accuracy, chosen columns, full table one click away
    section = html[html.index('<section id="sources">'):]
    shown, full = section.split('<details class="full-table">', 1)
    order = [r["source"] for r in sorted(rows, key=lambda r: -r["probe_accuracy"])]
    positions = [shown.index(f">{s}<") for s in order]
    assert positions == sorted(positions)
    assert f"All {len(rows[0])} columns" in full and ">whitebox_rate_t2s<" in full
    assert ">whitebox_rate_t2s<" not in shown
    # readable axis names, no raw keys as axis titles
    assert "alpha1 (target&#39;s attack on the source)" in html or "alpha1 (target's attack on the source)" in html
    assert ">alpha1_t2s</text>" not in html
    # figures: 6 metrics + the baseline scatter, the heat map, 2 histograms
    assert len(SVG.findall(html)) == 6 + 1 + 1 + 2
    assert "Per-sample alpha1 (target" in html and "Fooling rate per source" in html
    # three decimals throughout the tables
    assert not re.search(r'<td class="num">-?\d+\.\d{4,}</td>', html)


def test_e2_report_without_per_sample_arrays_says_so(tmp_path):
    from transferlens.experiments.e2 import write_e2

    html = write_e2(fake_e2_result(with_samples=False), tmp_path)["report"].read_text(encoding="utf-8")
    assert "Per-sample alpha1 (" not in html and "histograms are drawn when the measurements ran in this process" in html
    assert len(SVG.findall(html)) == 6 + 1 + 1


def test_e1_report(tmp_path):
    from transferlens.experiments.e1 import write_e1

    result = fake_e1_result()
    html = write_e1(result, tmp_path)["report"].read_text(encoding="utf-8")
    text = html_lib.unescape(html)
    # one name for the ablation everywhere
    assert "2nd singular vector" in text
    assert "singular vector 2" not in text and "level 1" not in text and "(level" not in text
    # a direct alpha-vs-RMSE scatter and the findings first
    assert "alpha1 (target's attack on the source) against the refit RMSE" in text
    assert html.index('id="findings"') < html.index("<h2>")
    assert "Ablation: the 2nd singular vector" in text
    # line plots, scatters and per-sample histograms
    assert len(SVG.findall(html)) == 2 + 5 + 2
    # the sweep table is sorted by the refit RMSE, lowest first
    assert "Sorted by refit RMSE (lower: better transfer), lowest first." in text
    no_samples = write_e1(fake_e1_result(with_samples=False), tmp_path / "b")["report"].read_text(encoding="utf-8")
    assert len(SVG.findall(no_samples)) == 2 + 5


def test_e2_report_with_undefined_correlations(tmp_path):
    """Constant metrics and a constant baseline: the findings say so instead of failing."""
    import dataclasses

    from transferlens.experiments.e2 import write_e2

    result = fake_e2_result(n_sources=4, with_samples=False)
    rows = tuple({**r, "source_accuracy": 0.5, "alpha1_t2s": 1.0} for r in result.source_rows)
    acc = [r["probe_accuracy"] for r in rows]
    flat = {m: correlate([1.0] * len(rows), acc, n_boot=20, seed=0) for m in result.correlations}
    result = dataclasses.replace(result, source_rows=rows, correlations=flat)
    html = html_lib.unescape(write_e2(result, tmp_path)["report"].read_text(encoding="utf-8"))
    assert "No alpha metric has a defined rank correlation" in html
    assert f"relative top-1 {format_value(relative_top1([1.0] * len(rows), acc))}" in html  # ties: the first source
    assert "Spearman \u2014" in html  # undefined values show as a dash in the scatter titles
