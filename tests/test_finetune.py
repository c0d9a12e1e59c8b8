"""Tests for ``transferlens.finetune``: full fine-tuning and k-NN transfer as knowledge-transfer methods."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import transferlens as tl
from transferlens import finetune as ft_module
from transferlens.data.task import Task
from transferlens.estimators.knn import knn_accuracy
from transferlens.finetune import fine_tune, knn_transfer
from transferlens.knowledge import KnowledgeResult, extract_features
from transferlens.models import FeatureModel

from helpers import same_state

FAST = {"epochs": 3, "batch_size": 32, "device": "cpu"}


@pytest.fixture(scope="module")
def digits() -> Task:
    return tl.digits_task("rotate", strength=0.3)


@pytest.fixture(scope="module")
def small(digits: Task) -> Task:
    """400 training and 200 test digits: enough to learn, quick to train on."""
    return Task(
        "digits-small", digits.x_train[:400], digits.y_train[:400], digits.x_test[:200], digits.y_test[:200], 10
    )


@pytest.fixture(scope="module")
def source(digits: Task) -> FeatureModel:
    """An MLP trained on the task itself."""
    model = tl.build_model("mlp", digits.input_shape, 10, seed=0)
    tl.fit(model, digits, epochs=6, lr=1e-2, device="cpu")
    return model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _modes(model: nn.Module) -> list[tuple[str, bool]]:
    return [(name, m.training) for name, m in model.named_modules()]


def _grad_flags(model: nn.Module) -> list[tuple[str, bool]]:
    return [(name, p.requires_grad) for name, p in model.named_parameters()]


# ------------------------------------------------------------------------------------------- fine_tune


def test_untrained_source_beats_chance(digits: Task) -> None:
    model = tl.build_model("cnn2d", digits.input_shape, 10, seed=0)
    r = fine_tune(model, digits, **FAST)
    assert isinstance(r, KnowledgeResult) and r.method == "fine_tune"
    assert r.accuracy > 0.6  # chance is 0.1
    assert r.train_accuracy > 0.6
    assert 0 < r.loss < math.log(10)  # better than the uniform prediction
    assert r.feature_dim == 64
    assert r.to_dict()["method"] == "fine_tune"


def test_source_trained_on_the_task_fine_tunes_to_high_accuracy(digits: Task, source: FeatureModel) -> None:
    r = fine_tune(source, digits, epochs=2, lr_backbone=1e-4, device="cpu")
    assert r.accuracy > 0.9 and r.train_accuracy > 0.9
    assert r.loss < 0.4


def test_caller_model_is_untouched(small: Task) -> None:
    model = tl.build_model("cnn2d", small.input_shape, 10, seed=0)
    model.train()
    model.body[0].eval()  # a mixed mode must survive as it is
    model.body[0].weight.requires_grad_(False)  # so must a frozen parameter
    head = model.head
    before, modes, flags = _state(model), _modes(model), _grad_flags(model)
    r = fine_tune(model, small, **FAST)
    assert r.accuracy > 0.3
    assert same_state(_state(model), before)
    assert _modes(model) == modes and _grad_flags(model) == flags
    assert model.head is head and model.head.out_features == 10
    assert all(p.device.type == "cpu" and p.grad is None for p in model.parameters())


def test_same_seed_same_result_and_seed_matters(small: Task) -> None:
    model = tl.build_model("mlp", small.input_shape, 10, seed=0)
    a = fine_tune(model, small, seed=5, **FAST)
    b = fine_tune(model, small, seed=5, **FAST)
    c = fine_tune(model, small, seed=6, **FAST)
    assert a == b
    assert (c.accuracy, c.loss) != (a.accuracy, a.loss)


def test_global_rng_untouched(small: Task) -> None:
    model = tl.build_model("mlp", small.input_shape, 10, seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fine_tune(model, small, epochs=1, device="cpu")
    assert torch.equal(torch.rand(3), expected)


def test_options_recorded(small: Task) -> None:
    model = tl.build_model("mlp", small.input_shape, 10, seed=0)
    r = fine_tune(
        model, small, epochs=4, lr_backbone=2e-3, lr_head=5e-3, batch_size=64, weight_decay=1e-4,
        val_fraction=0.25, patience=2, seed=1, device="cpu",
    )
    assert r.options == {
        "epochs": 4, "lr_backbone": 2e-3, "lr_head": 5e-3, "batch_size": 64, "weight_decay": 1e-4,
        "val_fraction": 0.25, "patience": 2, "seed": 1, "device": "cpu",
        "epochs_run": r.options["epochs_run"], "best_epoch": r.options["best_epoch"], "n_train": 300, "n_val": 100,
    }
    assert 1 <= r.options["best_epoch"] <= r.options["epochs_run"] <= 4
    # numpy scalars are accepted and stored as plain Python numbers
    r2 = fine_tune(model, small, epochs=np.int64(1), lr_head=np.float32(0.01), device="cpu")
    assert type(r2.options["epochs"]) is int and type(r2.options["lr_head"]) is float


def test_early_stopping_keeps_the_best_epoch(small: Task) -> None:
    # a head learning rate far too high: the validation loss gets worse after the first epochs
    model = tl.build_model("mlp", small.input_shape, 10, seed=0)
    r = fine_tune(model, small, epochs=40, lr_backbone=1e-2, lr_head=1.0, batch_size=16, patience=2, device="cpu")
    run, best = r.options["epochs_run"], r.options["best_epoch"]
    assert run < 40 and run - best == 2


def test_wrapped_sequential(small: Task) -> None:
    seq = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(64, 32), nn.ReLU()), nn.Linear(32, 5))
    seq.train()
    before, modes = _state(seq), _modes(seq)
    old_head = seq[2]
    r = fine_tune(tl.wrap_model(seq, "2"), small, **FAST)  # 5 source outputs, 10 target classes
    assert r.feature_dim == 32 and r.accuracy > 0.3
    assert same_state(_state(seq), before) and _modes(seq) == modes
    assert seq[2] is old_head and seq[2].out_features == 5


def test_wrapped_nested_head(small: Task) -> None:
    seq = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 3)))
    before = _state(seq)
    r = fine_tune(tl.wrap_model(seq, "3.0"), small, **FAST)
    assert r.feature_dim == 16 and r.accuracy > 0.3
    assert same_state(_state(seq), before) and seq[3][0].out_features == 3


def test_float64_model(small: Task) -> None:
    model = tl.build_model("mlp", small.input_shape, 10, seed=0).double()
    r = fine_tune(model, small, **FAST)
    assert r.accuracy > 0.3 and all(p.dtype == torch.float64 for p in model.parameters())


class _ConvHead(FeatureModel):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Flatten()
        self.head = nn.Sequential(nn.Linear(64, 10))


class _NoHeadUse(nn.Module):
    """Has the contract's attributes, but forward does not go through the head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Flatten()
        self.head = nn.Linear(64, 10)
        self.other = nn.Linear(64, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.other(self.body(x))


def test_contract_violations(small: Task) -> None:
    with pytest.raises(TypeError, match="head must be an nn.Linear"):
        fine_tune(_ConvHead(), small, **FAST)
    with pytest.raises(TypeError, match=r"features\(x\) method.*wrap_model"):
        fine_tune(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), small, **FAST)
    with pytest.raises(ValueError, match=r"head\(features\(x\)\)"):
        fine_tune(_NoHeadUse(), small, **FAST)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fine_tune(lambda x: x, small, **FAST)
    with pytest.raises(TypeError, match="task must be a transferlens Task"):
        fine_tune(tl.build_model("mlp", (1, 8, 8), 10), (small.x_train, small.y_train), **FAST)
    with pytest.raises(ValueError, match="could not process inputs"):
        fine_tune(tl.build_model("mlp", (5,), 10), small, **FAST)


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("epochs", 0, ValueError),
        ("epochs", 2.0, TypeError),
        ("lr_backbone", -1e-3, ValueError),
        ("lr_backbone", float("nan"), ValueError),
        ("lr_head", -1e-3, ValueError),
        ("lr_head", "0.01", TypeError),
        ("batch_size", 0, ValueError),
        ("weight_decay", -1e-4, ValueError),
        ("val_fraction", 0.0, ValueError),
        ("val_fraction", 1.0, ValueError),
        ("patience", 0, ValueError),
        ("patience", True, TypeError),
        ("seed", -1, ValueError),
        ("device", "tpu", ValueError),
    ],
)
def test_bad_options(small: Task, option: str, value: object, error: type) -> None:
    model = tl.build_model("mlp", small.input_shape, 10)
    with pytest.raises(error, match=option):
        fine_tune(model, small, **{**FAST, option: value})


def test_too_few_samples_for_a_validation_split() -> None:
    x = torch.rand(2, 4)
    task = Task("tiny", x[:1], torch.tensor([0]), x, torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="too few training samples"):
        fine_tune(tl.build_model("mlp", (4,), 2), task, **FAST)


def _frozen_head_reference(model: nn.Module, task: Task, *, epochs: int, lr: float, batch_size: int,
                           val_fraction: float, patience: int, seed: int) -> tuple[float, float, float, int, int]:
    """What fine_tune does when the backbone does not move: a new linear head trained with Adam on frozen
    features, same split, batch order, head initialisation and early stopping; written out here."""
    f_tr, f_te = extract_features(model, task.x_train), extract_features(model, task.x_test)
    gen = torch.Generator().manual_seed(seed)
    n = len(f_tr)
    perm = torch.randperm(n, generator=gen)
    n_val = round(val_fraction * n)
    val, tr = perm[:n_val], perm[n_val:]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = nn.Linear(f_tr.shape[1], task.num_classes)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    best, best_state, best_epoch, bad, run = math.inf, None, 0, 0, 0
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(tr), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = tr[order[i : i + batch_size]]
            loss = F.cross_entropy(head(f_tr[idx]), task.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        run = epoch
        with torch.no_grad():
            v = float(F.cross_entropy(head(f_tr[val]).double(), task.y_train[val]))
        if v < best - 1e-6:
            best, best_epoch, bad = v, epoch, 0
            best_state = {k: t.clone() for k, t in head.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    head.load_state_dict(best_state)
    with torch.no_grad():
        logits = head(f_te).double()
        train_acc = float((head(f_tr[tr]).argmax(1) == task.y_train[tr]).double().mean())
    acc = float((logits.argmax(1) == task.y_test).double().mean())
    return acc, float(F.cross_entropy(logits, task.y_test)), train_acc, run, best_epoch


def test_frozen_backbone_equals_a_new_head_on_frozen_features(small: Task) -> None:
    """Known answer: with lr_backbone 0 the backbone stays bit-identical, so fine-tuning is exactly "train a
    fresh head on frozen features" (and a tiny lr, 1e-12, moves it by less than float32 resolution)."""
    model = tl.build_model("mlp", small.input_shape, 10, seed=1)
    opts = dict(epochs=30, batch_size=32, val_fraction=0.2, patience=2, seed=3)
    tiny = fine_tune(model, small, lr_backbone=1e-12, lr_head=0.5, device="cpu", **opts)
    r = fine_tune(model, small, lr_backbone=0.0, lr_head=0.5, device="cpu", **opts)
    assert (tiny.accuracy, tiny.train_accuracy) == (r.accuracy, r.train_accuracy)
    acc, loss, train_acc, run, best = _frozen_head_reference(model, small, lr=0.5, **opts)
    assert best < run < 30  # early stopping happened after the best epoch, so restoring it matters
    assert (r.options["epochs_run"], r.options["best_epoch"]) == (run, best)
    assert r.accuracy == pytest.approx(acc, abs=1 / 200 + 1e-12)  # at most one borderline test sample
    assert r.loss == pytest.approx(loss, rel=1e-5)
    assert r.train_accuracy == pytest.approx(train_acc, abs=1 / 320 + 1e-12)  # the 320 samples trained on
    # and the backbone does move when it may: a different answer
    moved = fine_tune(model, small, lr_backbone=1e-2, lr_head=0.5, device="cpu", **opts)
    assert moved.loss != pytest.approx(loss, rel=1e-3)


# ---------------------------------------------------------------------------------------- knn_transfer


def _knn_reference(f_tr: torch.Tensor, y_tr: torch.Tensor, f_q: torch.Tensor, k: int, c: int,
                   leave_one_out: bool = False) -> tuple[list[int], list[int]]:
    """Per query, slowly: predicted class and number of neighbours with each class (as a list of counts)."""
    preds, votes = [], []
    a, ya = f_tr.double().tolist(), y_tr.tolist()
    for i, q in enumerate(f_q.double().tolist()):
        dists = []
        for j, row in enumerate(a):
            if leave_one_out and j == i:
                continue
            dists.append((math.sqrt(sum((u - v) ** 2 for u, v in zip(q, row))), j))
        nbrs = [ya[j] for _, j in sorted(dists)[:k]]
        counts = [nbrs.count(cls) for cls in range(c)]
        top = max(counts)
        preds.append(next(cls for cls in nbrs if counts[cls] == top))
        votes.append(counts)
    return preds, votes


def _identity_features(d: int, c: int) -> nn.Module:
    """A wrapped model whose features are its (flattened) inputs."""
    return tl.wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(d, c)), "1")


def _check_against_reference(model: nn.Module, task: Task, k: int) -> KnowledgeResult:
    r = knn_transfer(model, task, k=k)
    f_tr, f_te = extract_features(model, task.x_train), extract_features(model, task.x_test)
    c = task.num_classes
    pred, votes = _knn_reference(f_tr, task.y_train, f_te, k, c)
    y_te = task.y_test.tolist()
    assert r.accuracy == pytest.approx(np.mean([p == y for p, y in zip(pred, y_te)]), abs=1e-12)
    loss = np.mean([-math.log((v[y] + 1) / (k + c)) for v, y in zip(votes, y_te)])
    assert r.loss == pytest.approx(loss, rel=1e-12)
    pred_tr, _ = _knn_reference(f_tr, task.y_train, f_tr, k, c, leave_one_out=True)
    assert r.train_accuracy == pytest.approx(np.mean([p == y for p, y in zip(pred_tr, task.y_train.tolist())]))
    assert r.feature_dim == f_tr.shape[1] and r.options["k"] == k and r.method == "knn"
    return r


@pytest.mark.parametrize("k", [1, 4, 7])
def test_knn_matches_slow_reference_with_ties(k: int) -> None:
    """Integer inputs on a small grid: many exactly tied distances and tied votes."""
    g = torch.Generator().manual_seed(k)
    x_tr = torch.randint(0, 3, (60, 3), generator=g).float()
    x_te = torch.cat([torch.randint(0, 3, (30, 3), generator=g).float(), x_tr[:5]])  # some exact matches
    y_tr, y_te = torch.randint(0, 4, (60,), generator=g), torch.randint(0, 4, (35,), generator=g)
    task = Task("grid", x_tr, y_tr, x_te, y_te, 4)
    _check_against_reference(_identity_features(3, 4), task, k)


def test_knn_matches_slow_reference_on_digits_features(small: Task) -> None:
    sub = Task("sub", small.x_train[:150], small.y_train[:150], small.x_test[:40], small.y_test[:40], 10)
    model = tl.build_model("cnn2d", sub.input_shape, 10, seed=0)
    r = _check_against_reference(model, sub, 5)
    assert r.accuracy > 0.5
    # the leave-one-out train accuracy is the knn_accuracy estimator's definition
    f_tr = extract_features(model, sub.x_train)
    assert r.train_accuracy == pytest.approx(knn_accuracy(f_tr, sub.y_train, k=5), abs=1e-12)


def test_knn_blocks_do_not_change_the_result(small: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tl.build_model("mlp", small.input_shape, 10, seed=0)
    whole = knn_transfer(model, small, k=3)
    monkeypatch.setattr(ft_module, "_BLOCK_ELEMS", 1000)  # 2 queries per block
    assert knn_transfer(model, small, k=3) == whole


def test_knn_on_digits_is_good_and_leaves_model_alone(small: Task) -> None:
    model = tl.build_model("mlp", small.input_shape, 10, seed=0)
    model.train()
    before, modes = _state(model), _modes(model)
    r = knn_transfer(model, small)
    assert r.options["k"] == 5 and r.accuracy > 0.8
    assert math.log((5 + 10) / 6) <= r.loss <= math.log(15)
    assert same_state(_state(model), before) and _modes(model) == modes


@pytest.mark.parametrize(("k", "error", "match"), [(0, ValueError, "k must be"), (2.5, TypeError, "k must be"),
                                                   (60, ValueError, "smaller than the number of training"),
                                                   (61, ValueError, "smaller than the number of training")])
def test_knn_bad_k(k: object, error: type, match: str) -> None:
    x = torch.rand(60, 3, generator=torch.Generator().manual_seed(0))
    task = Task("t", x, torch.arange(60) % 2, x[:10], torch.arange(10) % 2, 2)
    model = _identity_features(3, 2)
    knn_transfer(model, task, k=59)  # the largest k allowed
    with pytest.raises(error, match=match):
        knn_transfer(model, task, k=k)


def test_knn_bad_model_and_task(small: Task) -> None:
    with pytest.raises(TypeError, match="task must be a transferlens Task"):
        knn_transfer(_identity_features(64, 10), None)
    with pytest.raises(TypeError, match=r"features\(x\) method"):
        knn_transfer(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), small)


def test_every_transfer_method_reports_its_per_sample_correctness():
    """test_correct (used to resample the test set for intervals) is consistent with the accuracy."""
    import numpy as np

    import transferlens as tl
    from transferlens.finetune import fine_tune, knn_transfer

    task = tl.digits_task("rotate", strength=0.3)
    model = tl.build_model("mlp", task.input_shape, 10, seed=0)
    for r in (tl.linear_probe(model, task), tl.retrain_last_layer(model, task, steps=20),
              fine_tune(model, task, epochs=1), knn_transfer(model, task)):
        assert r.test_correct is not None and r.test_correct.shape == (len(task.y_test),), r.method
        assert r.test_correct.dtype == bool
        assert float(np.mean(r.test_correct)) == pytest.approx(r.accuracy, abs=1e-7), r.method
