"""Import layering: data flows one way, data -> models -> attacks/scores -> transfer -> evaluation -> runs ->
experiments -> report -> cli. Every module's imports are read from its source (``ast``), not by importing it.

An import is *module level* when it runs on import (also inside a class body or an ``if`` block); one inside
a function body is *lazy*.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

import transferlens

PACKAGE_DIR = Path(transferlens.__file__).resolve().parent
PKG = "transferlens"


@dataclass(frozen=True)
class Import:
    target: str  # absolute dotted name: a module, or a module followed by a name imported from it
    lazy: bool  # inside a function body
    function: str | None  # the outermost enclosing function, for a lazy import
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PKG, *parts])


def _imports(path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, function or getattr(child, "name", "<lambda>"))
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(alias.name, function is not None, function, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    module = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    module = child.module or ""
                for alias in child.names:
                    # ``from . import report`` imports a module, ``from .x import y`` a name of module x.
                    found.append(Import(f"{module}.{alias.name}", function is not None, function, child.lineno))
            visit(child, function)

    visit(tree, None)
    return found


MODULES: dict[str, list[Import]] = {_module_name(p): _imports(p) for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _layer(dotted: str) -> str | None:
    """``transferlens.models.base.FeatureModel`` -> ``models``; ``None`` outside the package."""
    parts = dotted.split(".")
    if parts[0] != PKG or len(parts) < 2:
        return None
    return parts[1]


def _in(module: str, layer: str) -> bool:
    return _layer(module) == layer


def _violations(modules: list[str], forbidden: set[str], *, module_level_only: bool = False) -> list[str]:
    bad = []
    for m in modules:
        for imp in MODULES[m]:
            if module_level_only and imp.lazy:
                continue
            if _layer(imp.target) in forbidden:
                where = f" (lazy, in {imp.function})" if imp.lazy else ""
                bad.append(f"{m}:{imp.line} imports {imp.target}{where}")
    return bad


def test_the_import_parser_sees_the_modules_and_their_imports():
    assert {"transferlens.adversarial", "transferlens.alpha", "transferlens.exact", "transferlens.data.rbf",
            "transferlens.models.sigmoid", "transferlens.experiments.e2", "transferlens.cli"} <= set(MODULES)
    e2 = {i.target for i in MODULES["transferlens.experiments.e2"]}
    assert "transferlens.adversarial.transferability" in e2  # relative imports resolved
    assert "transferlens.exact.exact_transferability" in {i.target for i in MODULES["transferlens.experiments.e1"]}
    lazy = [i for i in MODULES["transferlens.exact"] if i.target == "transferlens.adversarial.transferability"]
    assert lazy and all(i.lazy and i.function == "check_consistency" for i in lazy)


DATA_FORBIDDEN = {
    "models", "attacks", "adversarial", "alpha", "exact", "krylov", "knowledge", "training", "training_regression",
    "evaluation", "experiments", "report", "runs", "cli",
}


def test_data_imports_no_layer_above_it():
    """Module level and lazy alike: the data layer stands on its own."""
    data = [m for m in MODULES if _in(m, "data")]
    assert len(data) >= 5
    assert _violations(data, DATA_FORBIDDEN) == []


def test_the_data_compatibility_names_resolve_to_their_new_homes():
    """``transferlens.data`` and ``transferlens.data.synthetic`` still offer the synthetic study's models,
    training and refit: looked up by name on first access (``MOVED``), never imported by the data layer."""
    from transferlens.data import synthetic

    assert all(_layer(home) not in (None, "data") for home in synthetic.MOVED.values())
    # the shim defines nothing of its own: everything it offers is imported from data or listed in MOVED
    tree = ast.parse(Path(synthetic.__file__).read_text())
    defined = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    assert defined <= {"moved", "__getattr__", "__dir__"}
    for name, home in synthetic.MOVED.items():
        obj = getattr(importlib.import_module(home), name)
        assert getattr(synthetic, name) is obj
    import transferlens.data as data

    for name in data.__all__:
        value = getattr(data, name)
        if name in synthetic.MOVED:
            assert value is getattr(importlib.import_module(synthetic.MOVED[name]), name)
    with pytest.raises(AttributeError):
        data.no_such_name  # noqa: B018
    with pytest.raises(AttributeError):
        synthetic.no_such_name  # noqa: B018


MODELS_FORBIDDEN = {
    "attacks", "adversarial", "alpha", "exact", "krylov", "knowledge", "training", "training_regression", "evaluation",
    "experiments", "report", "runs", "cli",
}


def test_models_import_no_layer_above_them():
    models = [m for m in MODULES if _in(m, "models")]
    assert len(models) >= 4
    assert _violations(models, MODELS_FORBIDDEN) == []


def test_the_alpha_kernel_depends_on_nothing_of_the_package():
    """The kernel shared by the attack-based and the exact path takes arrays: no attacks, no Jacobians."""
    assert [i.target for i in MODULES["transferlens.alpha"] if _layer(i.target) is not None] == []


def test_exact_does_not_import_adversarial_at_module_level():
    assert _violations(["transferlens.exact"], {"adversarial"}, module_level_only=True) == []


COMPUTING = (
    "data", "models", "attacks", "alpha", "adversarial", "exact", "krylov", "knowledge", "training", "training_regression",
    "evaluation", "_torch", "_validate",
)


def test_computing_modules_import_no_runs_experiments_report_or_cli():
    computing = [m for m in MODULES if _layer(m) in COMPUTING]
    assert _violations(computing, {"runs", "experiments", "report", "cli"}) == []


def test_only_the_cli_and_the_experiment_writers_import_the_report():
    """Module level: only ``cli`` may import the report. Lazily: only the ``write_*`` functions of experiments."""
    outside = [m for m in MODULES if not _in(m, "report") and m != "transferlens.cli"]
    assert _violations(outside, {"report"}, module_level_only=True) == []
    lazy = [
        f"{m}:{i.line} imports {i.target} in {i.function}"
        for m in outside
        for i in MODULES[m]
        if i.lazy and _layer(i.target) == "report" and not (_in(m, "experiments") and (i.function or "").startswith("write"))
    ]
    assert lazy == []


ESTIMATORS_ALLOWED = {"estimators", "_validate"}


def test_estimators_are_pure_array_kernels():
    """Estimators read arrays only: no models, attacks, training, runs, experiments or report (module level
    or lazy), so they can be used, and tested, on features from anywhere."""
    est = [m for m in MODULES if _in(m, "estimators")]
    assert len(est) >= 12
    layers = {_layer(i.target) for m in est for i in MODULES[m]} - {None}
    assert layers <= ESTIMATORS_ALLOWED, f"estimators import {sorted(layers - ESTIMATORS_ALLOWED)}"
