"""Tasks and trained models as cells, shared by the experiments (E2, the selection benchmark).

A *task spec* is plain data naming a generated task: ``{"generator": "mnist1d", "domain", "num_samples",
"draw", "seed"}`` or ``{"generator": "digits", "transform", "strength", "draw", "seed"}``; its data seed
derives from the spec, so a source drawn from the target's domain (``draw = "source"``) is another sample.
``"labels": "shuffled"`` permutes the training labels (a deliberately useless source). ``"classes": [ids]``
keeps only the samples of those classes (both splits), *after* generating the full task with the seed of the
spec without this key, so a restricted task is exactly a subset of the unrestricted one; labels keep their
original ids and ``num_classes`` is unchanged (a model trained on classes {0, 1, 2} still has a 10-way head, so
source and target outputs share one label space). A spec without ``"classes"`` gives the same task as before.

A *train cell* (kind ``"train"``) is ``{"task": task spec, "arch", "regime": {"name": ..., **regime options,
**TrainConfig}}`` with a regime of :mod:`transferlens.regimes` (``standard``, ``pgd_at``, ``trades``), or
``{"name": "untrained"}`` (the initialisation itself); its weights go into the store, so any experiment that
needs the same model reads them instead of training again. A regime may add ``"self_training":
{"labeled_fraction", "threshold", "rounds"}``: the model is then trained by :func:`transferlens.self_train`
with that regime (``rounds = 0`` is supervised training on the labeled part only). The labeled split derives
from the task spec and the labeled fraction alone, so every arm of a study that hides labels from the same
task hides the same ones.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any

import numpy as np
import torch

from .._torch import cpu_state, resolve_device
from ..data.digits import digits_task
from ..data.mnist1d import mnist1d_task
from ..data.task import Task
from ..models import build_model
from ..runs.context import CellOutput, Context
from ..runs.spec import Cell, canonical_json, derive_seed
from ..regimes import REGIMES, regime_from_dict
from ..selftrain import self_train
from ..training import TrainConfig, TrainingWarning, fit

__all__ = ["load_model", "task", "train_cell", "transfer_cell"]


def _shuffled(t: Task, seed: int) -> Task:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(t.y_train), generator=g)
    return Task(
        name=f"{t.name}-shuffled-labels", x_train=t.x_train, y_train=t.y_train[perm], x_test=t.x_test,
        y_test=t.y_test, num_classes=t.num_classes, bounds=t.bounds,
        description=f"{t.description} (training labels shuffled: nothing to learn)", meta={**t.meta, "labels": "shuffled"},
    )


def _restricted(t: Task, classes: Any) -> Task:
    """The samples of ``classes`` only (labels keep their ids, ``num_classes`` unchanged)."""
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (list, tuple)):
        raise ValueError(f"task spec 'classes' must be a list of class ids, got {classes!r}")
    ids = []
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, int):
            raise ValueError(f"task spec 'classes' must hold integer class ids, got {c!r} in {list(classes)!r}")
        if not 0 <= c < t.num_classes:
            raise ValueError(f"task spec 'classes': class {c} does not exist; {t.name} has classes 0..{t.num_classes - 1}")
        ids.append(int(c))
    if len(set(ids)) != len(ids) or len(ids) < 2:
        raise ValueError(f"task spec 'classes' must name at least 2 distinct classes, got {list(classes)!r}")
    keep = torch.tensor(sorted(ids))
    tr, te = torch.isin(t.y_train, keep), torch.isin(t.y_test, keep)
    for split, y, mask in (("train", t.y_train, tr), ("test", t.y_test, te)):
        missing = sorted(set(ids) - set(y[mask].tolist()))
        if missing:
            raise ValueError(f"task {t.name}: its {split} split has no sample of class(es) {missing}; generate more samples")
    tag = "".join(str(c) for c in sorted(ids)) if t.num_classes <= 10 else "-".join(str(c) for c in sorted(ids))
    return Task(
        name=f"{t.name}-c{tag}", x_train=t.x_train[tr], y_train=t.y_train[tr], x_test=t.x_test[te], y_test=t.y_test[te],
        num_classes=t.num_classes, bounds=t.bounds,
        description=f"{t.description}; classes {sorted(ids)} only (labels keep their ids, {t.num_classes}-way)",
        meta={**t.meta, "classes": sorted(ids)},
    )


def task(ctx: Context, spec: dict[str, Any]) -> Task:
    """The task of a spec, generated once per run (its seed derives from the spec without ``labels`` and
    ``classes``)."""
    key = ("task", canonical_json(spec))
    if key not in ctx.cache:
        base = {k: v for k, v in spec.items() if k not in ("labels", "classes")}
        seed = derive_seed(base, "data")
        if spec.get("generator", "mnist1d") == "mnist1d":
            t = mnist1d_task(spec["domain"], seed=seed, num_samples=spec["num_samples"])
        elif spec["generator"] == "digits":
            t = digits_task(spec["transform"], strength=spec["strength"], seed=seed, split_seed=seed)
        else:
            raise ValueError(f"unknown task generator {spec['generator']!r}")
        if "classes" in spec:
            t = _restricted(t, spec["classes"])
        if spec.get("labels") == "shuffled":
            t = _shuffled(t, derive_seed(base, "labels"))
        ctx.cache[key] = t
    return ctx.cache[key]


def train_cell(cell: Cell, ctx: Context) -> CellOutput:
    """Train (or, for regime ``untrained``, only initialise) the cell's model; keep its weights."""
    spec = cell.spec
    t = task(ctx, spec["task"])
    model = build_model(spec["arch"], t.input_shape, t.num_classes, seed=cell.seed("init"))
    regime = dict(spec["regime"])
    name = regime.pop("name")
    semi = regime.pop("self_training", None)
    if name == "untrained":
        model.to(resolve_device(ctx.device)).eval()
        x, y = t.x_test.to(resolve_device(ctx.device)), t.y_test.to(resolve_device(ctx.device))
        with torch.no_grad():
            acc = float((model(x).argmax(1) == y).float().mean())
        ctx.cache[("model", cell.key)] = model
        return CellOutput(results=[("test_accuracy", "", acc)], payload={"task": t.summary()},
                          weights={"weights": cpu_state(model)}, value=None)
    if name not in REGIMES:
        raise ValueError(f"unknown training regime {name!r}; choose one of {sorted(REGIMES)} or 'untrained'")
    own = {f.name for f in dataclasses.fields(REGIMES[name])}
    rg = regime_from_dict({"name": name, **{k: v for k, v in regime.items() if k in own}})
    train_options = {k: v for k, v in regime.items() if k not in own}
    with warnings.catch_warnings():
        if spec["task"].get("labels") == "shuffled":  # not improving is the point of this candidate
            warnings.simplefilter("ignore", TrainingWarning)
        config = TrainConfig(**{**train_options, "seed": cell.seed("train")})
        if semi is None:
            tr, extra, semi_payload = fit(model, t, config, device=ctx.device, regime=rg), [], {}
        else:
            st = _self_train(model, t, spec["task"], semi, config, rg, ctx.device)
            tr, semi_payload = st.train, {"self_training": st.to_dict()}
            last = st.rounds[-1] if st.rounds else {"n_pseudo": 0, "pseudo_accuracy": None}
            extra = [("n_labeled", "", float(st.n_labeled)), ("n_pseudo", "", float(last["n_pseudo"])),
                     ("pseudo_accuracy", "", last["pseudo_accuracy"])]
    ctx.cache[("model", cell.key)] = model
    return CellOutput(
        results=[
            ("test_accuracy", "", tr.test_accuracy), ("val_accuracy", "", tr.val_accuracy),
            ("epochs_run", "", float(tr.epochs_run)), ("best_epoch", "", float(tr.best_epoch)), *extra,
        ],
        payload={"task": t.summary(), "train_loss": list(tr.train_loss), "val_loss": list(tr.val_loss), **semi_payload},
        weights={"weights": cpu_state(model)},
        value=tr,
    )


def _self_train(model: torch.nn.Module, t: Task, task_spec: dict[str, Any], semi: Any, config: TrainConfig,
                regime: Any, device: str):
    if not isinstance(semi, dict) or set(semi) - {"labeled_fraction", "threshold", "rounds"}:
        raise ValueError(f"regime 'self_training' must be a dict of labeled_fraction, threshold, rounds; got {semi!r}")
    split_seed = derive_seed({"task": task_spec, "labeled_fraction": semi.get("labeled_fraction")}, "labeled-split")
    return self_train(model, t, config=config, regime=regime, seed=split_seed, device=device, **semi)


def load_model(ctx: Context, key: str, spec: dict[str, Any]) -> torch.nn.Module:
    """The model of a train cell: from this process, else rebuilt from the stored weights."""
    cached = ctx.cache.get(("model", key))
    if cached is not None:
        return cached
    t = task(ctx, spec["task"])
    model = build_model(spec["arch"], t.input_shape, t.num_classes)
    model.load_state_dict(ctx.weights(key))
    model.to(resolve_device(ctx.device)).eval()
    ctx.cache[("model", key)] = model
    return model


def transfer_cell(cell: Cell, ctx: Context) -> CellOutput:
    """Transfer a trained source (``cell.deps[0]``) to a target with a method of
    :mod:`transferlens.transfer_methods`: spec ``{"source": train spec, "target": task spec, "method", "options"}``
    (E4's specs carry ``probe_C`` and ``fine_tune_epochs`` instead of ``options``). The method's seed derives
    from the cell key and the method name."""
    from ..transfer_methods import transfer

    spec = cell.spec
    model = load_model(ctx, cell.deps[0], spec["source"])
    t = task(ctx, spec["target"])
    method = spec["method"]
    if "options" in spec:
        options = dict(spec["options"])
    else:
        options = {"linear_probe": {"C": spec["probe_C"]}, "fine_tune": {"epochs": spec["fine_tune_epochs"]}}.get(method, {})
    t0 = time.perf_counter()
    r = transfer(method, model, t, seed=cell.seed(method), device=ctx.device, **options)
    return CellOutput(
        results=[("accuracy", "", r.accuracy), ("loss", "", r.loss)],
        payload={"seconds": time.perf_counter() - t0, "options": r.options},
        arrays={"test_correct": np.asarray(r.test_correct, dtype=bool)},
    )
