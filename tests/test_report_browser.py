"""The reports in a real browser: headless Chromium opens the E1 quick report and an E2 report.

Each page must load without a console message or error, every ``<svg>``/``<img>`` must have a non-zero
rendered size, no text may stick out of its figure, and no two point labels may overlap, all measured
with the fonts the browser actually uses.

How: Chromium runs as a plain subprocess, ``chromium --headless --dump-dom FILE``. The reports carry no
scripts, so the test opens a copy of each page with a small probe script added at the top of ``<head>``:
it records console calls, script and resource errors and CSP violations from the start, and, once the
page has loaded, the rendered size of every figure; it writes all of it as JSON into the DOM, which
Chromium prints. Chromium's own console log (``--enable-logging=stderr``) is checked as well.

Skipped, with the reason, when no Chromium is installed (Debian: ``apt-get install chromium``); set
``TRANSFERLENS_CHROMIUM`` to a browser binary to use another one. Nothing is downloaded.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "chrome-headless-shell")


def _find_browser() -> str | None:
    override = os.environ.get("TRANSFERLENS_CHROMIUM")
    if override:
        return shutil.which(override) or (override if os.access(override, os.X_OK) else None)
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


BROWSER = _find_browser()
_WHY = (
    f"TRANSFERLENS_CHROMIUM={os.environ.get('TRANSFERLENS_CHROMIUM')!r} is not an executable"
    if os.environ.get("TRANSFERLENS_CHROMIUM")
    else f"no Chromium on PATH (looked for {', '.join(CANDIDATES)})"
)
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason=f"{_WHY}: install the Debian package (apt-get install chromium) or set TRANSFERLENS_CHROMIUM "
    "to a Chromium/Chrome binary",
)

PROBE = r"""<script>
(function () {
  var problems = [];
  function note(kind, text) { problems.push(kind + ": " + text); }
  ["error", "warn", "log", "info"].forEach(function (level) {
    var original = console[level];
    console[level] = function () {
      note("console." + level, Array.prototype.map.call(arguments, String).join(" "));
      return original.apply(console, arguments);
    };
  });
  window.addEventListener("error", function (e) {
    var t = e.target;
    note("error", e.message || (t && t.outerHTML ? t.outerHTML.slice(0, 160) : "a resource failed to load"));
  }, true);
  window.addEventListener("unhandledrejection", function (e) { note("unhandled rejection", String(e.reason)); });
  document.addEventListener("securitypolicyviolation", function (e) { note("csp", e.violatedDirective + " " + e.blockedURI); });
  function box(b) { return [b.x, b.y, b.x + b.width, b.y + b.height]; }
  window.addEventListener("load", function () {
    var figures = [];
    document.querySelectorAll("img, svg").forEach(function (el) {
      var r = el.getBoundingClientRect();
      var f = {tag: el.tagName.toLowerCase(), name: el.getAttribute("aria-label") || el.getAttribute("alt") || "",
               width: r.width, height: r.height, natural: el.tagName === "IMG" ? el.naturalWidth : null,
               outside: [], labels: []};
      if (f.tag === "svg") {
        el.querySelectorAll("text").forEach(function (t) {
          var b = t.getBoundingClientRect();  // on screen, after any rotation
          if (b.left < r.left - 2 || b.top < r.top - 2 || b.right > r.right + 2 || b.bottom > r.bottom + 2) {
            f.outside.push(t.textContent + " " + JSON.stringify(box(b)));
          }
          if (t.getAttribute("fill") === "#3d444d") { f.labels.push([t.textContent].concat(box(b))); }
        });
      }
      figures.push(f);
    });
    var out = document.createElement("pre");
    out.id = "tl-probe";
    out.textContent = JSON.stringify({title: document.title, ready: document.readyState, problems: problems, figures: figures});
    document.body.appendChild(out);
  });
})();
</script>
"""


def _open(page: Path, tmp_path: Path) -> tuple[dict, list[str]]:
    """Load ``page`` (a copy with the probe) in headless Chromium; return the probe's record and the
    console lines of Chromium's log."""
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text.lower(), "the report itself must carry no scripts"
    probed = tmp_path / f"probed-{page.parent.name}-{page.name}"
    probed.write_text(text.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    cmd = [
        BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--no-default-browser-check", "--disable-extensions", "--disable-background-networking", "--disable-sync",
        "--disable-component-update", "--mute-audio", "--hide-scrollbars", "--window-size=1280,2000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=5000", "--dump-dom", probed.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    match = re.search(r'<pre id="tl-probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"Chromium printed no probe record (exit {proc.returncode}); stderr:\n{proc.stderr[-3000:]}"
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(html_lib.unescape(match.group(1))), console


def _overlap(a: list, b: list, tol: float = 1.0) -> bool:
    return a[1] < b[3] - tol and b[1] < a[3] - tol and a[2] < b[4] - tol and b[2] < a[4] - tol


def _check(page: Path, tmp_path: Path, n_figures: int) -> None:
    record, console = _open(page, tmp_path)
    assert record["ready"] == "complete" and record["title"]
    assert record["problems"] == [] and console == [], (record["problems"], console)
    figures = record["figures"]
    assert len(figures) == n_figures
    for f in figures:
        assert f["width"] > 50 and f["height"] > 50, f"{f['tag']} {f['name']!r} renders at {f['width']}x{f['height']}"
        if f["tag"] == "img":
            assert f["natural"] > 0, f"image {f['name']!r} did not decode"
        assert f["outside"] == [], f"text outside figure {f['name']!r}: {f['outside']}"
        labels = f["labels"]
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                assert not _overlap(a, b), f"point labels overlap in {f['name']!r}: {a} and {b}"


@pytest.mark.slow
def test_e1_quick_report_in_chromium(tmp_path):
    from transferlens.experiments.e1 import QUICK, E1Config, run_e1, write_e1

    result = run_e1(E1Config(**QUICK))
    page = write_e1(result, tmp_path / "e1")["report"]
    # 2 alpha-vs-RMSE scatters, 5 line plots (the ablation included), 2 per-sample histograms
    _check(page, tmp_path, n_figures=9)


def test_e2_report_in_chromium(tmp_path):
    from test_report import fake_e2_result

    from transferlens.experiments.e2 import METRICS, write_e2

    page = write_e2(fake_e2_result(n_sources=12), tmp_path / "e2")["report"]
    # a scatter per metric and one for the baseline, the heat map, 2 per-sample histograms
    _check(page, tmp_path, n_figures=len(METRICS) + 1 + 1 + 2)


def test_generic_report_in_chromium(tmp_path):
    from test_report import _inputs

    from transferlens.report import write_report

    _check(write_report(tmp_path / "generic" / "report.html", **_inputs()), tmp_path, n_figures=2)


def test_the_probe_catches_what_it_should(tmp_path):
    """The check itself: a broken image, a console error and a zero-size figure are all reported."""
    bad = tmp_path / "bad" / "report.html"
    bad.parent.mkdir()
    bad.write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body>"
        '<img alt="missing" src="missing.png"><svg viewBox="0 0 10 10" style="width:0;height:0"></svg>'
        "<svg viewBox='0 0 10 10' width='100' height='100'><text x='0' y='8' font-size='10'>far too long a text</text></svg>"
        "</body></html>",
        encoding="utf-8",
    )
    record, _ = _open(bad, tmp_path)
    assert any("missing.png" in p for p in record["problems"])
    img, empty, long_text = record["figures"]
    assert img["natural"] == 0 and empty["width"] == 0 and long_text["outside"]


def test_select_report_in_chromium(tmp_path, monkeypatch):
    from transferlens.experiments.select import EXPERIMENT, Candidate, SelectConfig, write_select
    from transferlens.runs.runner import execute

    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root)
    cands = tuple(
        Candidate("examples.digits_models:small_mlp", f"examples/weights/{n}.safetensors", name=n)
        for n in ("plain", "blur", "untrained")
    )
    cfg = SelectConfig(target="examples/target_rotate.npz", candidates=cands, estimators=("logme", "gbc", "nc1"),
                       verified=("plain", "blur", "untrained"), n_boot=100)
    page = write_select(execute(EXPERIMENT, cfg).result, tmp_path / "select")["report"]
    _check(page, tmp_path, n_figures=1)  # the scatter of the ranking score against the verified accuracy


def test_selection_report_in_chromium(tmp_path):
    from transferlens.experiments.selection import EXPERIMENT, QUICK, SelectionConfig, write_selection
    from transferlens.runs.config import build_config
    from transferlens.runs.runner import execute

    cfg = build_config(SelectionConfig, defaults={**QUICK, "mnist1d_targets": [], "ground_truths": ["linear_probe"],
                                                  "alpha": False, "half_samples": 2})
    page = write_selection(execute(EXPERIMENT, cfg).result, tmp_path / "e4")["report"]
    _check(page, tmp_path, n_figures=1)  # the heat map of weighted tau (predictors x targets)


@pytest.mark.parametrize("name", ["robust", "overlap", "distill"])
def test_study_reports_in_chromium(tmp_path, name):
    """The quick E5, E3 and E6 reports: every figure the page declares renders, no console errors."""
    from transferlens.experiments import get_experiment
    from transferlens.runs.config import build_config
    from transferlens.runs.runner import execute

    exp = get_experiment(name)
    result = execute(exp, build_config(exp.config_cls, defaults=exp.variants["quick"])).result
    page = exp.write(result, tmp_path / name)["report"]
    declared = page.read_text().count("<svg")
    assert declared >= (0 if name == "robust" else 1)
    _check(page, tmp_path, n_figures=declared)
