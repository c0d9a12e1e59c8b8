"""Tests for ``transferlens.distill``: knowledge distillation with forward or reverse KL."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import transferlens as tl
from transferlens.data.task import Task
from transferlens.distill import DistillResult, _objective, distill, forward_kl, reverse_kl

from helpers import same_state

CPU = {"device": "cpu"}


@pytest.fixture(scope="module")
def task() -> Task:
    return tl.digits_task("none")


@pytest.fixture(scope="module")
def teacher(task: Task) -> nn.Module:
    """An MLP trained on the task (about 94% test accuracy)."""
    model = tl.build_model("mlp", task.input_shape, 10, seed=0)
    tl.fit(model, task, epochs=5, lr=1e-2, device="cpu")
    return model


@pytest.fixture(scope="module")
def small(task: Task) -> Task:
    """400 training and 150 test digits."""
    return Task("digits-small", task.x_train[:400], task.y_train[:400], task.x_test[:150], task.y_test[:150], 10)


def _student(task: Task, seed: int = 1, **kw: object) -> nn.Module:
    return tl.build_model("mlp", task.input_shape, 10, seed=seed, **kw)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _snapshot(model: nn.Module) -> tuple:
    return (
        _state(model),
        [(n, m.training) for n, m in model.named_modules()],
        [(n, p.requires_grad) for n, p in model.named_parameters()],
    )


def _same_snapshot(a: tuple, b: tuple) -> bool:
    return same_state(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]


def _logits(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# ------------------------------------------------------------------------------------------ divergences


def test_hand_computed_values_two_and_three_classes() -> None:
    # sample 0: p = (1/4, 3/4) from the teacher, q = (1/2, 1/2) from the student
    # sample 1: p = (3/4, 1/4), q = (1/5, 4/5)
    teacher = _logits([0.0, math.log(3)], [math.log(3), 0.0])
    student = _logits([0.0, 0.0], [0.0, math.log(4)])
    fwd = [0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5),
           0.75 * math.log(0.75 / 0.2) + 0.25 * math.log(0.25 / 0.8)]
    rev = [0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75),
           0.2 * math.log(0.2 / 0.75) + 0.8 * math.log(0.8 / 0.25)]
    f, r = forward_kl(teacher, student, 1.0), reverse_kl(teacher, student, 1.0)
    assert f.shape == (2,) and r.shape == (2,)
    assert f.tolist() == pytest.approx(fwd, rel=1e-12)
    assert r.tolist() == pytest.approx(rev, rel=1e-12)

    # three classes at T = 2: teacher logits 2*log(1, 2, 1) give p = (1/4, 1/2, 1/4); a constant student
    # gives q = (1/3, 1/3, 1/3)
    t3 = _logits([0.0, 2 * math.log(2), 0.0])
    s3 = _logits([5.0, 5.0, 5.0])
    fwd3 = 2 * 0.25 * math.log(0.25 * 3) + 0.5 * math.log(0.5 * 3)
    rev3 = (2 * math.log((1 / 3) / 0.25) + math.log((1 / 3) / 0.5)) / 3
    assert float(forward_kl(t3, s3, 2.0)) == pytest.approx(fwd3, rel=1e-12)
    assert float(reverse_kl(t3, s3, 2.0)) == pytest.approx(rev3, rel=1e-12)


def test_zero_for_identical_distributions_and_nonnegative() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 7, generator=g, dtype=torch.float64) * 3
    b = torch.randn(50, 7, generator=g, dtype=torch.float64) * 3
    for kl in (forward_kl, reverse_kl):
        assert kl(a, a, 1.5).abs().max() < 1e-12
        assert kl(a, a + 4.0, 1.5).abs().max() < 1e-12  # a shift of every logit leaves softmax unchanged
        assert bool((kl(a, b, 1.5) > 0).all())
    assert not torch.allclose(forward_kl(a, b, 1.0), reverse_kl(a, b, 1.0))
    # reverse is forward with the roles swapped
    assert torch.allclose(reverse_kl(a, b, 2.0), forward_kl(b, a, 2.0), rtol=1e-12, atol=0)


def test_temperature_divides_logits_and_no_t_squared_inside() -> None:
    """The functions are the plain KL at temperature T: KL_T(a, b) == KL_1(a / T, b / T) (no T**2 factor)."""
    g = torch.Generator().manual_seed(1)
    a, b = (torch.randn(20, 5, generator=g, dtype=torch.float64) * 4 for _ in range(2))
    for kl in (forward_kl, reverse_kl):
        for t in (0.5, 3.0, 10.0):
            assert torch.allclose(kl(a, b, t), kl(a / t, b / t, 1.0), rtol=1e-10, atol=1e-14)
    # and higher temperatures soften: the divergence shrinks towards 0
    assert float(forward_kl(a, b, 100.0).mean()) < 1e-2 * float(forward_kl(a, b, 1.0).mean())


def test_training_objective_applies_t_squared_and_alpha() -> None:
    teacher = _logits([0.0, math.log(3)], [math.log(3), 0.0])
    student = _logits([0.0, 0.0], [0.0, math.log(4)])
    y = torch.tensor([1, 0])
    t = 2.0
    fwd = forward_kl(teacher, student, t).mean()
    rev = reverse_kl(teacher, student, t).mean()
    ce = F.cross_entropy(student, y)
    # hand-written cross-entropy: -log q_y at T = 1
    assert float(ce) == pytest.approx((math.log(2) - math.log(0.2)) / 2, rel=1e-12)
    assert float(_objective(teacher, student, y, "forward", t, 0.0)) == pytest.approx(4 * float(fwd), rel=1e-12)
    assert float(_objective(teacher, student, y, "reverse", t, 0.0)) == pytest.approx(4 * float(rev), rel=1e-12)
    assert float(_objective(teacher, student, y, "forward", t, 0.25)) == pytest.approx(
        0.75 * 4 * float(fwd) + 0.25 * float(ce), rel=1e-12
    )
    assert float(_objective(teacher, student, y, "reverse", t, 1.0)) == pytest.approx(float(ce), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("t", [1.0, 0.01, 4.0])
def test_extreme_logits_are_finite(dtype: torch.dtype, t: float) -> None:
    teacher = torch.tensor([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    student = torch.tensor([[-1e4, 1e4, 0.0], [1e4, -1e4, 0.0], [1e4, -1e4, 0.0]], dtype=dtype, requires_grad=True)
    for kl in (forward_kl, reverse_kl):
        v = kl(teacher, student, t)
        assert bool(torch.isfinite(v).all()), (kl.__name__, v)
        assert float(v[1].detach()) == 0.0  # identical rows
        (grad,) = torch.autograd.grad(v.sum(), student)
        assert bool(torch.isfinite(grad).all())
    if t == 1.0:  # p = (1, 0, ~0), q = (0, 1, ~0): each divergence is the 2e4 gap in log-probability
        assert float(forward_kl(teacher, student.detach(), t)[0]) == pytest.approx(2e4, rel=1e-6)
        assert float(reverse_kl(teacher, student.detach(), t)[0]) == pytest.approx(2e4, rel=1e-6)


def test_divergence_input_checks() -> None:
    a = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        forward_kl(a, a, 0.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        reverse_kl(a, a, -1.0)
    with pytest.raises(ValueError, match="same shape"):
        forward_kl(a, torch.zeros(3, 5), 1.0)
    with pytest.raises(ValueError, match="2-D"):
        reverse_kl(torch.zeros(4), torch.zeros(4), 1.0)
    with pytest.raises(ValueError, match="NaN/Inf"):
        forward_kl(torch.full((1, 2), math.inf), torch.zeros(1, 2), 1.0)


# ---------------------------------------------------------------------------------------------- distill


def test_student_learns_teacher_and_models_are_untouched(task: Task, teacher: nn.Module) -> None:
    student = _student(task)
    student.train()
    teacher.train()  # a caller's mode is left as it was
    before_s, before_t = _snapshot(student), _snapshot(teacher)
    try:
        r = distill(teacher, student, task, **CPU)
    finally:
        after_t = _snapshot(teacher)
        teacher.eval()
    assert _same_snapshot(_snapshot(student), before_s) and _same_snapshot(after_t, before_t)
    assert r.teacher_accuracy > 0.85
    assert r.agreement > 0.8 and r.accuracy > 0.9 * r.teacher_accuracy
    assert r.divergence == "forward" and r.temperature == 4.0 and r.kl_test >= 0
    assert r.student is not student and not r.student.training
    assert not same_state(_state(r.student), before_s[0])
    o = r.options
    assert (o["alpha"], o["epochs"], o["lr"], o["batch_size"], o["val_fraction"], o["patience"], o["seed"]) == (
        0.0, 20, 1e-3, 128, 0.2, 3, 0
    )
    assert 1 <= o["best_epoch"] <= o["epochs_run"] <= 20 and o["n_train"] + o["n_val"] == len(task.x_train)
    # the reported numbers are what the returned student does on the test split
    with torch.no_grad():
        s_te, t_te = r.student(task.x_test), teacher(task.x_test)
    assert r.accuracy == pytest.approx(float((s_te.argmax(1) == task.y_test).double().mean()), abs=1e-12)
    assert r.agreement == pytest.approx(float((s_te.argmax(1) == t_te.argmax(1)).double().mean()), abs=1e-12)
    assert r.kl_test == pytest.approx(float(forward_kl(t_te.double(), s_te.double(), 4.0).mean()), rel=1e-4)
    d = r.to_dict()
    assert "student" not in d and json.loads(json.dumps(d)) == d


def test_same_seed_same_result(small: Task, teacher: nn.Module) -> None:
    opts = dict(epochs=4, batch_size=32, **CPU)
    a = distill(teacher, _student(small), small, seed=3, **opts)
    b = distill(teacher, _student(small), small, seed=3, **opts)
    assert a == b and a.student is not b.student
    assert same_state(_state(a.student), _state(b.student))
    c = distill(teacher, _student(small), small, seed=4, **opts)
    assert not same_state(_state(a.student), _state(c.student))


def test_forward_and_reverse_give_different_students(small: Task, teacher: nn.Module) -> None:
    opts = dict(epochs=4, batch_size=32, **CPU)
    f = distill(teacher, _student(small), small, divergence="forward", **opts)
    r = distill(teacher, _student(small), small, divergence="reverse", **opts)
    assert r.divergence == "reverse" and r.options["divergence"] == "reverse"
    assert not same_state(_state(f.student), _state(r.student))
    assert f != r


def test_alpha_one_ignores_the_teacher(small: Task, teacher: nn.Module) -> None:
    other = tl.build_model("mlp", small.input_shape, 10, seed=7)  # untrained: a very different teacher
    # a high learning rate, so early stopping (on a validation loss that must not see the teacher either) fires
    opts = dict(epochs=30, lr=0.05, batch_size=32, patience=1, **CPU)
    a = distill(teacher, _student(small, hidden=(32,)), small, alpha=1.0, **opts)
    b = distill(other, _student(small, hidden=(32,)), small, alpha=1.0, **opts)
    assert a.teacher_accuracy != b.teacher_accuracy
    assert a.options["epochs_run"] < 30
    assert same_state(_state(a.student), _state(b.student))
    assert (a.accuracy, a.options) == (b.accuracy, b.options)
    # while any weight on the KL term makes the teacher matter
    c = distill(teacher, _student(small, hidden=(32,)), small, alpha=0.99, **opts)
    d = distill(other, _student(small, hidden=(32,)), small, alpha=0.99, **opts)
    assert not same_state(_state(c.student), _state(d.student))


def _reference(teacher: nn.Module, student: nn.Module, task: Task, *, divergence: str, temperature: float,
               alpha: float, epochs: int, lr: float, batch_size: int, val_fraction: float, patience: int,
               seed: int) -> tuple[nn.Module, int, int]:
    """distill written out slowly: same split, batch order, loss and early stopping."""
    t_all = teacher(task.x_train).detach()
    s = copy.deepcopy(student)
    gen = torch.Generator().manual_seed(seed)
    n = len(task.x_train)
    perm = torch.randperm(n, generator=gen)
    n_val = round(val_fraction * n)
    val, tr = perm[:n_val], perm[n_val:]
    opt = torch.optim.Adam(s.parameters(), lr=lr)

    def loss_fn(t_logits: torch.Tensor, s_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(t_logits / temperature, 1)
        q = torch.softmax(s_logits / temperature, 1)
        kl = (p * (p.log() - q.log())).sum(1) if divergence == "forward" else (q * (q.log() - p.log())).sum(1)
        return (1 - alpha) * temperature**2 * kl.mean() + alpha * F.cross_entropy(s_logits, y)

    best, best_state, best_epoch, bad, run = math.inf, None, 0, 0, 0
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(tr), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = tr[order[i : i + batch_size]]
            loss = loss_fn(t_all[idx], s(task.x_train[idx]), task.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        run = epoch
        with torch.no_grad():
            v = float(loss_fn(t_all[val].double(), s(task.x_train[val]).double(), task.y_train[val]))
        if v < best - 1e-6:
            best, best_epoch, bad = v, epoch, 0
            best_state = copy.deepcopy(s.state_dict())
        else:
            bad += 1
            if bad >= patience:
                break
    s.load_state_dict(best_state)
    return s, run, best_epoch


@pytest.mark.parametrize("divergence", ["forward", "reverse"])
def test_matches_a_written_out_reference(small: Task, teacher: nn.Module, divergence: str) -> None:
    """Known answer, with alpha mixing both terms (so the T**2 weighting matters even under Adam) and a
    learning rate high enough that early stopping happens after the best epoch (so restoring it matters)."""
    opts = dict(divergence=divergence, temperature=2.0, alpha=0.3, epochs=30, lr=0.1, batch_size=32,
                val_fraction=0.25, patience=2, seed=5)
    student = _student(small, hidden=(32,))
    r = distill(teacher, student, small, **opts, **CPU)
    ref, run, best = _reference(teacher, student, small, **opts)
    assert best < run < 30
    assert (r.options["epochs_run"], r.options["best_epoch"]) == (run, best)
    for (k, v), (k2, v2) in zip(r.student.state_dict().items(), ref.state_dict().items()):
        assert k == k2 and torch.allclose(v, v2, rtol=1e-3, atol=1e-4), k
    with torch.no_grad():
        s_te, t_te = ref(small.x_test), teacher(small.x_test)
    kl = forward_kl if divergence == "forward" else reverse_kl
    assert r.kl_test == pytest.approx(float(kl(t_te.double(), s_te.double(), 2.0).mean()), rel=1e-3)
    assert r.accuracy == pytest.approx(float((s_te.argmax(1) == small.y_test).double().mean()), abs=1.5 / 150)


def test_float64_student_and_teacher_in_other_dtypes(small: Task, teacher: nn.Module) -> None:
    student = _student(small, hidden=(16,)).double()
    r = distill(teacher, student, small, epochs=2, **CPU)
    assert all(p.dtype == torch.float64 for p in r.student.parameters())
    assert all(p.dtype == torch.float64 for p in student.parameters())
    assert math.isfinite(r.kl_test)


# --------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to build the optimizer fails the test: errors must come before training."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started before the input was refused")

    monkeypatch.setattr(torch.optim, "Adam", boom)


@pytest.mark.parametrize(
    ("option", "value", "error", "match"),
    [
        ("temperature", 0, ValueError, "temperature must be > 0"),
        ("temperature", -1.0, ValueError, "temperature must be > 0"),
        ("temperature", float("inf"), ValueError, "temperature"),
        ("temperature", "4", TypeError, "temperature"),
        ("alpha", 1.5, ValueError, r"alpha must be in \[0, 1\]"),
        ("alpha", -0.1, ValueError, r"alpha must be in \[0, 1\]"),
        ("divergence", "sideways", ValueError, "divergence must be one of"),
        ("divergence", None, ValueError, "divergence must be one of"),
        ("epochs", 0, ValueError, "epochs"),
        ("epochs", 2.0, TypeError, "epochs"),
        ("lr", 0.0, ValueError, "lr"),
        ("lr", float("nan"), ValueError, "lr"),
        ("batch_size", 0, ValueError, "batch_size"),
        ("val_fraction", 0.0, ValueError, "val_fraction"),
        ("val_fraction", 1.0, ValueError, "val_fraction"),
        ("patience", 0, ValueError, "patience"),
        ("patience", True, TypeError, "patience"),
        ("seed", -1, ValueError, "seed"),
        ("seed", 1.5, TypeError, "seed"),
        ("device", "tpu", ValueError, "device"),
    ],
)
def test_bad_options(small: Task, teacher: nn.Module, no_training: None, option: str, value: object,
                     error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        distill(teacher, _student(small), small, **{"epochs": 1, **CPU, option: value})


def test_class_count_mismatch_is_refused_before_training(small: Task, teacher: nn.Module, no_training: None) -> None:
    three = tl.build_model("mlp", small.input_shape, 3, seed=0)
    with pytest.raises(ValueError, match="same number of classes.*teacher returns 10.*student 3"):
        distill(teacher, three, small, **CPU)
    with pytest.raises(ValueError, match="same number of classes.*teacher returns 3.*student 10"):
        distill(three, _student(small), small, **CPU)
    # the same count, but fewer than the task's classes
    with pytest.raises(ValueError, match="3 logits per sample but task 'digits-small' has 10 classes"):
        distill(three, tl.build_model("mlp", small.input_shape, 3, seed=1), small, **CPU)


def test_bad_models_and_task(small: Task, teacher: nn.Module, no_training: None) -> None:
    with pytest.raises(TypeError, match="teacher must be a torch.nn.Module"):
        distill(lambda x: x, _student(small), small, **CPU)
    with pytest.raises(TypeError, match="student must be a torch.nn.Module"):
        distill(teacher, None, small, **CPU)
    with pytest.raises(TypeError, match="task must be a transferlens Task"):
        distill(teacher, _student(small), (small.x_train, small.y_train), **CPU)
    with pytest.raises(ValueError, match="student could not process inputs"):
        distill(teacher, tl.build_model("mlp", (5,), 10), small, **CPU)


def test_too_few_samples_for_a_validation_split() -> None:
    x = torch.rand(2, 4, generator=torch.Generator().manual_seed(0))
    tiny = Task("tiny", x[:1], torch.tensor([0]), x, torch.tensor([0, 1]), 2)
    m = tl.build_model("mlp", (4,), 2)
    with pytest.raises(ValueError, match="too few training samples"):
        distill(m, m, tiny, **CPU)


def test_result_is_a_frozen_dataclass_without_student_in_equality(small: Task, teacher: nn.Module) -> None:
    r = distill(teacher, _student(small, hidden=(8,)), small, epochs=1, **CPU)
    assert isinstance(r, DistillResult)
    with pytest.raises(AttributeError):
        r.accuracy = 1.0  # type: ignore[misc]
    other = DistillResult(**{**r.__dict__, "student": nn.Linear(1, 1)})
    assert other == r and "student" not in repr(r)
