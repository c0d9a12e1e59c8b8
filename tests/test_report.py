"""Tests for the self-contained HTML report writer."""

from __future__ import annotations

import base64
import html as html_lib
import math
import re

import pytest

from transferlens.report import LinePlot, Scatter, Table, figure_png_base64, render_figure, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


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
        labels=["a", "b", "c$", "d", "e"],
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
        summary={"n_models": 3, "mean_r": 0.812345, "nested": {"a": 1, "b": {"c": None}}, "list": [1, 2.5, None]},
        tables=[table],
        figures=[scatter, lines],
        config={"seed": 0, "lr": 1e-3, "models": ["mlp", "cnn"], "path": None},
        notes=["note with <i>html</i>"],
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("rep") / "sub" / "dir" / "report.html"
    out = write_report(path, **_inputs())
    return out, out.read_text(encoding="utf-8")


def test_report_written_and_self_contained(report):
    path, html = report
    assert path.exists() and path.name == "report.html"
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("data:image/png;base64,") == 2
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert "@import" not in html and "url(" not in html
    assert "<details" in html and "Configuration" in html
    assert '"lr": 0.001' in html_lib.unescape(html)


def test_html_is_escaped_and_none_is_dash(report):
    _, html = report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "a &amp; b" in html
    assert "Report &lt;title&gt;" in html and "Results &lt;v1&gt;" in html
    assert "&lt;b&gt;markup&lt;/b&gt;" in html and "&lt;i&gt;html&lt;/i&gt;" in html
    assert "\u2014" in html
    assert "0.9123" in html and "0.912345678" not in html  # 4 significant digits
    assert "0.8123" in html  # summary floats too
    assert '<td class="num">12345</td>' in html  # numeric column right-aligned, ints untouched


def test_embedded_images_are_png(report):
    _, html = report
    payloads = DATA_URI.findall(html)
    assert len(payloads) == 2
    for payload in payloads:
        assert base64.b64decode(payload, validate=True).startswith(PNG_SIGNATURE)


def test_rendering_is_deterministic(tmp_path):
    a = write_report(tmp_path / "a.html", **_inputs()).read_text(encoding="utf-8")
    b = write_report(tmp_path / "b.html", **_inputs()).read_text(encoding="utf-8")
    assert a == b


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same length"):
        Scatter(x=[1, 2, 3], y=[1, 2], xlabel="x", ylabel="y", title="t")
    with pytest.raises(ValueError, match="labels"):
        Scatter(x=[1, 2], y=[1, 2], xlabel="x", ylabel="y", title="t", labels=["a"])
    with pytest.raises(ValueError, match="groups"):
        Scatter(x=[1, 2], y=[1, 2], xlabel="x", ylabel="y", title="t", groups=["a", "b", "c"])
    with pytest.raises(ValueError, match="series 'b'"):
        LinePlot(x=[1, 2], series={"a": [1, 2], "b": [1]}, xlabel="x", ylabel="y", title="t")


def test_nan_points_dropped_and_empty_data():
    png = render_figure(
        Scatter(x=[1, float("nan"), 3, None], y=[1, 2, math.inf, 4], xlabel="x", ylabel="y", title="t",
                labels=["a", "b", "c", "d"], groups=["g", "g", "h", "h"])
    )
    assert base64.b64decode(png).startswith(PNG_SIGNATURE)
    # All dropped / empty inputs draw a "no data" figure instead of raising.
    for spec in (
        Scatter(x=[float("nan")], y=[1.0], xlabel="x", ylabel="y", title="all dropped"),
        Scatter(x=[], y=[], xlabel="x", ylabel="y", title="empty"),
        Scatter(x=[2.0, 2.0], y=[1.0, 3.0], xlabel="x", ylabel="y", title="one distinct x"),
        LinePlot(x=[], series={}, xlabel="x", ylabel="y", title="empty"),
        LinePlot(x=[1, 2], series={"a": [0.0, -1.0]}, xlabel="x", ylabel="y", title="log, no positive", logy=True),
    ):
        assert base64.b64decode(render_figure(spec)).startswith(PNG_SIGNATURE)


def test_figure_png_base64_is_deterministic_and_closes():
    from matplotlib.figure import Figure

    def make():
        fig = Figure(figsize=(2, 2), dpi=50)
        fig.add_subplot().plot([0, 1], [1, 0])
        return fig

    fig = make()
    first = figure_png_base64(fig)
    assert not fig.axes  # cleared/closed
    assert first == figure_png_base64(make())
    assert base64.b64decode(first).startswith(PNG_SIGNATURE)


def test_bad_spec_type():
    with pytest.raises(TypeError):
        render_figure(Table(columns=["a"], rows=[]))  # type: ignore[arg-type]
