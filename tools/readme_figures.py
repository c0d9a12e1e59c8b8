"""Regenerate the README's measured figures from experiment runs, never by hand.

Every table of measured numbers in README.md sits between two markers::

    <!-- figures:NAME -->
    ...generated...
    <!-- /figures:NAME -->

and is rebuilt from the ``summary.json`` / ``results.csv`` of a run folder. ``make readme-figures`` runs
the experiments and calls this script; ``--check`` only reports whether the README is up to date.

    python tools/readme_figures.py --e2 runs/readme-e2 --e2-paper runs/readme-e2-paper --e1 runs/readme-e1 \\
        --select runs/readme-select --e4 runs/readme-e4 --e5 runs/readme-e5 \\
        --e3 runs/readme-e3 --e6 runs/readme-e6
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

E2_METRICS = ("alpha1_t2s", "alpha2_t2s", "combined_t2s", "alpha1_s2t", "alpha2_s2t", "combined_s2t")
E1_COLUMNS = (
    ("scale", "scale", "{:g}"),
    ("alpha1_s2t", "alpha1_s2t", "{:.3f}"),
    ("alpha1_t2s", "alpha1_t2s", "{:.3f}"),
    ("combined_s2t", "combined_s2t", "{:.3f}"),
    ("grad. matching (relative)", "grad_match_rel_s2t", "{:.3f}"),
    ("refit RMSE", "refit_rmse", "{:.3f}"),
)
MARKER = re.compile(r"(<!-- figures:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=name) -->)", re.S)


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """``summary.json`` and the rows of ``results.csv`` of a run folder."""
    run = Path(run_dir)
    summary_path, results_path = run / "summary.json", run / "results.csv"
    for p in (summary_path, results_path):
        if not p.is_file():
            raise SystemExit(f"{p} not found: pass the folder of a finished run (transferlens run --out DIR)")
    summary = json.loads(summary_path.read_text())
    with results_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return summary, rows


def _num(value: Any, fmt: str = "{:.3f}") -> str:
    if value in (None, ""):
        return "-"
    return fmt.format(float(value))


def _ci(ci: Any) -> str:
    return "-" if not ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _run_line(summary: dict[str, Any]) -> str:
    cfg, env = summary["config"], summary.get("environment", {})
    threads = env.get("threads")
    parts = [f"seed {cfg['seed']}"]
    if "preset" in cfg:
        parts.append(f"preset `{cfg['preset']}`")
    if threads is not None:
        parts.append(f"{threads} thread{'s' if threads != 1 else ''}")
    parts.append(f"torch {env.get('torch', '?')}")
    return f"_Generated from a run's `summary.json` ({', '.join(parts)})._\n"


def correlation_table(summary: dict[str, Any]) -> str:
    """The headline table: every alpha metric against the ground truth."""
    rows = []
    for m in E2_METRICS:
        c = summary["correlations"][m]
        rows.append([m, _num(c["spearman"]), _ci(c["spearman_ci"]), _num(c["pearson"]), _num(c["kendall"])])
    return _table(["metric", "Spearman", "95% CI", "Pearson", "Kendall"], rows) + "\n" + _run_line(summary)


def source_table(summary: dict[str, Any], rows: list[dict[str, str]]) -> str:
    """Every source, sorted by the ground truth (best first)."""
    truth = summary.get("ground_truth", "probe_accuracy")
    ordered = sorted(rows, key=lambda r: float(r[truth]), reverse=True)
    body = [
        [r["source"], _num(r["source_accuracy"]), _num(r["alpha1_t2s"]), _num(r["alpha1_s2t"]), _num(r[truth])]
        for r in ordered
    ]
    header = ["source", "accuracy on its own domain", "alpha1_t2s", "alpha1_s2t", "linear-probe accuracy on the target"]
    target = summary.get("target", {})
    line = ""
    if "test_accuracy" in target:
        line = f"\nTarget model ({target.get('architecture', '?')}) test accuracy: {_num(target['test_accuracy'])}.\n"
    return _table(header, body) + line


def e1_table(summary: dict[str, Any], rows: list[dict[str, str]]) -> str:
    """The sweep (every other scale and the last) with the ablation column, then the correlations."""
    level = summary.get("ablation_level")
    pick = [r for i, r in enumerate(rows) if i % 2 == 0 or i == len(rows) - 1]
    header = [name for name, _, _ in E1_COLUMNS]
    abl_key = f"alpha1_t2s_level{level}" if level is not None else None
    if abl_key and abl_key in rows[0]:
        header.append(f"alpha1_t2s, singular vector {level + 1}")
    body = []
    for r in pick:
        line = [_num(r[key], fmt) for _, key, fmt in E1_COLUMNS]
        if len(header) > len(E1_COLUMNS):
            line.append(_num(r[abl_key]))
        body.append(line)
    corr = summary["correlations"]
    text = _table(header, body)
    text += (
        f"\nTarget alone: RMSE {summary['target_rmse']:.3f}. Spearman with the refit RMSE: "
        + ", ".join(f"{m} {_num(corr[m]['spearman'], '{:+.2f}')}" for m in E2_METRICS)
        + "."
    )
    abl = summary.get("ablation_correlations") or {}
    if abl:
        text += (
            f" With singular vector {level + 1} instead of the top one: "
            + ", ".join(f"{m} {_num(abl[m]['spearman'], '{:+.2f}')}" for m in ("alpha1_s2t", "alpha1_t2s", "combined_s2t"))
            + "."
        )
    return text + "\n\n" + _run_line(summary)


def paper_table(summary: dict[str, Any]) -> str:
    rows = [[m, _num(summary["correlations"][m]["spearman"]), _ci(summary["correlations"][m]["spearman_ci"])] for m in E2_METRICS]
    return _table(["metric (paper preset)", "Spearman", "95% CI"], rows) + "\n" + _run_line(summary)


def _score(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    if v.is_integer() and abs(v) >= 100:
        return str(int(v))
    return f"{v:.3g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3) else f"{v:.3f}"


def select_table(summary: dict[str, Any]) -> str:
    """`transferlens select`: one row per estimator, candidates as columns (best first by rank_by)."""
    ranking = summary["ranking"]
    header = ["estimator", "better", *[r["name"] for r in ranking], "time (s)"]
    body = []
    for e in summary["estimators"]:
        n = e["name"]
        cells = [f"{_score(r['scores'].get(n))} ({r['ranks'].get(n, '-')})" if r["scores"].get(n) is not None else "-"
                 for r in ranking]
        body.append([n, "higher" if e["greater_is_better"] else "lower", *cells, f"{e['seconds']:.2f}"])
    if any(r["verified_accuracy"] is not None for r in ranking):
        body.append(["**verified accuracy**", "higher", *[_num(r["verified_accuracy"]) for r in ranking], ""])
    return _table(header, body) + "\n" + _run_line(summary)


def e4_table(summary: dict[str, Any]) -> str:
    """E4: weighted tau per target (linear probe) with its half-sample interval, the mean over targets for
    each ground truth, and each predictor's time."""
    targets = [t["name"] for t in summary["targets"]]
    gts = summary["config"]["ground_truths"]
    judged = {(j["target"], j["ground_truth"], j["predictor"]): j for j in summary["judged"]}
    predictors = list(dict.fromkeys(j["predictor"] for j in summary["judged"]))
    header = ["predictor", *[f"{t} (probe)" for t in targets], *[f"mean, {g.replace('_', ' ')}" for g in gts], "time (s)"]
    body = []
    for p in predictors:
        row = [p]
        for t in targets:
            j = judged.get((t, gts[0], p)) or {}
            ci = j.get("weighted_tau_ci")
            row.append(_num(j.get("weighted_tau")) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
        for g in gts:
            vals = [judged.get((t, g, p), {}).get("weighted_tau") for t in targets]
            row.append("-" if any(v is None for v in vals) else _num(sum(vals) / len(vals)))
        row.append(f"{summary['seconds_per_predictor'].get(p, 0.0):.1f}")
        body.append(row)
    sizes = ", ".join(f"{t}: {n}" for t, n in summary["n_candidates"].items())
    text = _table(header, body)
    text += f"\nCandidates per target: {sizes}. Weighted tau (scipy's default weights), signed so that higher is better.\n"
    return text + "\n" + _run_line(summary)


def robust_table(summary: dict[str, Any]) -> str:
    """E5: per regime and target, means over seeds with their intervals; then each arm vs its baseline; then the
    semi-supervised claims."""
    def cell(m: dict[str, Any], k: str) -> str:
        lo, hi = m[f"{k}_ci"]
        return f"{m[k]:.3f} [{lo:.3f}, {hi:.3f}]"

    keys = ("source_accuracy", "robust_accuracy", "probe_accuracy", "fine_tune_accuracy", "alpha1_t2s")
    header = ["regime", "target", "clean accuracy (source)", "PGD accuracy (source)", "linear probe", "fine-tune",
              "alpha1_t2s"]
    body = [[m["regime"], m["target"], *[cell(m, k) for k in keys]] for m in summary["means"]]
    text = _table(header, body)
    comp = [[c["regime"], c.get("baseline", "standard"), c["target"], c["metric"].replace("_", " "),
             f"{c['difference']:+.3f}", f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]", c["verdict"]]
            for c in summary["comparisons"]]
    text += "\n" + _table(["arm", "baseline", "target", "metric", "difference", "95% interval", "higher than baseline?"], comp)
    claims = [[c["target"], c["metric"].replace("_", " "), c["self_training_helps"], c["self_training_helps_robust"],
               c["robust_helps_self_trained"], f"**{c['complementary']}**"] for c in summary.get("claims", [])]
    if claims:
        text += "\n" + _table(["target", "transfer", "self-training helps", "self-training helps PGD-AT",
                               "PGD-AT helps self-training", "complementary"], claims)
    return text + "\n" + _run_line(summary)


def overlap_table(summary: dict[str, Any]) -> str:
    """E3: per overlap level, means over seeds with intervals; then Spearman with overlap and the verdicts."""
    keys = ("probe_accuracy", "last_layer_accuracy", "alpha1_s2t", "alpha1_t2s", "combined_s2t", "combined_t2s")

    def cell(lv: dict[str, Any], k: str) -> str:
        ci = lv.get(f"{k}_ci")
        return "-" if lv.get(k) is None else f"{lv[k]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    body = [[f"{lv['overlap']:g}", *[cell(lv, k) for k in keys]] for lv in summary["levels"]]
    text = _table(["overlap", *keys], body)
    corr, verdicts = summary["correlations_with_overlap"], summary["verdicts"]
    rows = [[m, _num(c["spearman"]), _ci(c["spearman_ci"]), verdicts.get(m, "-")] for m, c in corr.items()]
    text += "\n" + _table(["metric", "Spearman with overlap", "95% CI", "verdict"], rows)
    t = summary["target"]
    text += (f"\nTarget classes {t.get('classes', '?')}; overlap = |S & T| / |T|; claim: **{summary['claim']['verdict']}**.\n")
    return text + "\n" + _run_line(summary)


def distill_table(summary: dict[str, Any]) -> str:
    """E6: per setting (divergence x temperature, and the hard-label baseline), means over seeds with their
    t-intervals; forward - reverse accuracy per temperature; how alpha1 tracks agreement."""
    def cell(st: dict[str, Any], k: str) -> str:
        ci = st.get(f"{k}_ci")
        return f"{st[k]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    keys = ("accuracy", "agreement", "kl_test", "alpha1_s2t", "alpha1_t2s")
    body = [[st["setting"], *[cell(st, k) for k in keys]] for st in summary["settings"]]
    text = _table(["setting", *keys], body)
    comp = [[f"{c['temperature']:g}", c["metric"], f"{c['difference']:+.3f}",
             f"[{c['difference_ci'][0]:+.3f}, {c['difference_ci'][1]:+.3f}]", c["verdict"]]
            for c in summary["comparisons"]]
    text += "\n" + _table(["T", "forward - reverse", "difference", "95% interval", "verdict"], comp)
    corr = [[c["metric"], c["truth"], _num(c["spearman"]), _ci(c["spearman_ci"])] for c in summary["correlations"]
            if c["metric"].startswith("alpha1")]
    text += "\n" + _table(["metric", "against", "Spearman (all students)", "95% CI"], corr)
    t = summary["teacher"]
    text += f"\nTeacher: {t['architecture']}, test accuracy {t['test_accuracy']:.3f}.\n"
    return text + "\n" + _run_line(summary)


def replace_blocks(text: str, blocks: dict[str, str]) -> tuple[str, list[str]]:
    """Replace the body of every ``figures:NAME`` block named in ``blocks``; returns the new text and the
    names found in the text that ``blocks`` did not cover."""
    untouched: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in blocks:
            untouched.append(name)
            return m.group(0)
        body = blocks[name] if blocks[name].endswith("\n") else blocks[name] + "\n"
        return m.group(1) + body + m.group(4)

    return MARKER.sub(sub, text), untouched


def block_names(text: str) -> list[str]:
    return [m.group("name") for m in MARKER.finditer(text)]


GENERATORS: dict[str, tuple[str, Callable[..., str]]] = {
    "e2-correlations": ("e2", lambda s, r: correlation_table(s)),
    "e2-sources": ("e2", source_table),
    "e2-paper": ("e2_paper", lambda s, r: paper_table(s)),
    "e1-sweep": ("e1", e1_table),
    "select-example": ("select", lambda s, r: select_table(s)),
    "e4-selection": ("e4", lambda s, r: e4_table(s)),
    "e5-robust": ("e5", lambda s, r: robust_table(s)),
    "e3-overlap": ("e3", lambda s, r: overlap_table(s)),
    "e6-distill": ("e6", lambda s, r: distill_table(s)),
}


def build_blocks(runs: dict[str, str | Path | None]) -> dict[str, str]:
    blocks = {}
    loaded = {k: load_run(v) for k, v in runs.items() if v}
    for name, (run_key, fn) in GENERATORS.items():
        if run_key in loaded:
            blocks[name] = fn(*loaded[run_key])
    return blocks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readme", default=str(Path(__file__).resolve().parents[1] / "README.md"))
    ap.add_argument("--e2", help="folder of a default E2 run (transferlens run)")
    ap.add_argument("--e2-paper", help="folder of an E2 run with --preset paper")
    ap.add_argument("--e1", help="folder of an E1 run (transferlens run synthetic)")
    ap.add_argument("--select", help="folder of the README's transferlens select example run")
    ap.add_argument("--e4", help="folder of an E4 run (transferlens run selection)")
    ap.add_argument("--e5", help="folder of an E5 run (transferlens run robust)")
    ap.add_argument("--e3", help="folder of an E3 run (transferlens run overlap)")
    ap.add_argument("--e6", help="folder of an E6 run (transferlens run distill)")
    ap.add_argument("--check", action="store_true", help="only report whether the README matches the runs")
    args = ap.parse_args(argv)
    readme = Path(args.readme)
    text = readme.read_text()
    blocks = build_blocks({"e2": args.e2, "e2_paper": args.e2_paper, "e1": args.e1, "select": args.select, "e4": args.e4, "e5": args.e5, "e3": args.e3, "e6": args.e6})
    if not blocks:
        ap.error("pass at least one run folder (--e2, --e2-paper, --e1, --select, --e4)")
    new, untouched = replace_blocks(text, blocks)
    missing = sorted(set(blocks) - set(block_names(text)))
    if missing:
        print(f"README has no block for {missing}", file=sys.stderr)
    if args.check:
        stale = new != text
        print("README figures are " + ("STALE: run make readme-figures" if stale else "up to date"))
        return 1 if stale else 0
    readme.write_text(new)
    print(f"updated {sorted(set(blocks) & set(block_names(text)))} in {readme}" + (f"; left {untouched}" if untouched else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
