"""Packaging: ``python -m transferlens``, one version (pyproject's, read from the metadata), py.typed, the
licence, declared dependencies, and what summary.json records about the environment."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import torch

import transferlens
from transferlens.experiments._output import environment

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_python_dash_m_prints_the_installed_version():
    res = subprocess.run([sys.executable, "-m", "transferlens", "--version"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"transferlens {version('transferlens')}"


def test_version_is_declared_once_in_pyproject():
    assert transferlens.__version__ == version("transferlens") == PYPROJECT["project"]["version"]
    init = (ROOT / "src" / "transferlens" / "__init__.py").read_text()
    assert not re.search(r"^__version__\s*=\s*['\"]", init, re.M), "__init__.py must not hard-code the version"


def test_py_typed_is_shipped():
    assert (Path(transferlens.__file__).parent / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["transferlens"]


def test_license_file():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the transferlens authors" in text
    assert PYPROJECT["project"]["license"] == "MIT" and PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert any(r.replace(" ", "").startswith("setuptools>=77") for r in PYPROJECT["build-system"]["requires"])


def test_dependencies_declared():
    deps = [re.split(r"[<>=!~; ]", d, maxsplit=1)[0].lower() for d in PYPROJECT["project"]["dependencies"]]
    assert "threadpoolctl" in deps  # the CLI limits BLAS/OpenMP threads with it
    test_extra = [re.split(r"[<>=!~; ]", d, maxsplit=1)[0].lower() for d in PYPROJECT["project"]["optional-dependencies"]["test"]]
    assert "pytest-xdist" not in test_extra


def test_environment_records_versions_and_threads():
    import numpy
    import scipy
    import sklearn

    env = environment()
    assert env["transferlens"] == transferlens.__version__
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["torch"] == torch.__version__
    assert env["numpy"] == numpy.__version__ and env["scipy"] == scipy.__version__ and env["scikit-learn"] == sklearn.__version__
    assert env["threads"] == torch.get_num_threads()
    assert env["blas_threads"] is None or env["blas_threads"] >= 1
