"""Silent wrong answers and unhelpful errors found by trying the library as a demanding new user would.
Each test here failed before the fix it guards."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import transferlens as tl
from transferlens._torch import frozen_eval
from helpers import mlp, rand, randn


class _FirstOpInPlace(nn.Module):
    """``ReLU(inplace=True)`` (or ``clamp_``) applied straight to the input, then a linear map."""

    def __init__(self, inplace: bool = True, clamp: bool = False, seed: int = 0, dtype=torch.float32) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.inplace, self.clamp = inplace, clamp
        self.hidden = nn.Linear(4, 8).to(dtype)
        self.head = nn.Linear(8, 3).to(dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.clamp:
            x = x.clamp_(-0.5, 0.5) if self.inplace else x.clamp(-0.5, 0.5)
        else:
            x = torch.relu_(x) if self.inplace else torch.relu(x)
        return torch.tanh(self.hidden(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _pair(clamp: bool, dtype=torch.float32):
    """The same weights with and without the in-place first op."""
    a = _FirstOpInPlace(True, clamp, dtype=dtype)
    b = _FirstOpInPlace(False, clamp, dtype=dtype)
    b.load_state_dict(a.state_dict())
    return a, b


def _task(n_train: int = 40, n_test: int = 20, seed: int = 0) -> tl.Task:
    """Labels from a fixed linear rule of the inputs: learnable."""
    g = torch.Generator().manual_seed(seed)
    rule = torch.randn(4, 3, generator=g)
    x_tr, x_te = torch.randn(n_train, 4, generator=g), torch.randn(n_test, 4, generator=g)
    return tl.Task("tiny", x_tr, (x_tr @ rule).argmax(1), x_te, (x_te @ rule).argmax(1), 3)


@pytest.mark.parametrize("clamp", [False, True], ids=["relu_", "clamp_"])
def test_a_model_working_in_place_on_its_input_never_modifies_the_callers_tensor(clamp: bool) -> None:
    inplace, plain = _pair(clamp)
    x = randn(12, 4, seed=3)
    y = torch.arange(12) % 3
    before = x.clone()
    threat = tl.ThreatModel(norm="l2", eps=0.3, steps=3)
    for objective in ("deviation", "ce", "kl"):
        d_in = tl.pgd(inplace, x, threat, objective)
        assert torch.equal(x, before), objective
        # and the numbers are those of the same model without the in-place op
        assert torch.allclose(d_in, tl.pgd(plain, x, threat, objective), atol=1e-6), objective
    r_in = tl.transferability(inplace, mlp(4, 3), x, y, threat=threat)
    r_in2 = tl.transferability(mlp(4, 3), inplace, x, y, threat=threat)
    assert torch.equal(x, before)
    r_pl = tl.transferability(plain, mlp(4, 3), x, y, threat=threat)
    r_pl2 = tl.transferability(mlp(4, 3), plain, x, y, threat=threat)
    for a, b in ((r_in, r_pl), (r_in2, r_pl2)):
        for k, v in a.metrics().items():
            assert v == pytest.approx(b.metrics()[k], abs=1e-6), k
    assert tl.accuracy(inplace, x, y) == tl.accuracy(plain, x, y)
    assert torch.equal(x, before)


@pytest.mark.filterwarnings("ignore::transferlens.TrainingWarning")
def test_in_place_models_leave_task_data_alone_in_training_and_probes() -> None:
    inplace, plain = _pair(False)
    task = _task()
    snapshot = (task.x_train.clone(), task.x_test.clone())
    assert tl.linear_probe(inplace, task).accuracy == tl.linear_probe(plain, task).accuracy
    tl.retrain_last_layer(inplace, task, steps=3)
    tl.extract_features(inplace, task.x_test)
    tl.fit(inplace, task, epochs=2, device="cpu")
    assert torch.equal(task.x_train, snapshot[0]) and torch.equal(task.x_test, snapshot[1])


@pytest.mark.filterwarnings("ignore:There is a performance drop")
def test_exact_metrics_with_an_in_place_model_leave_x_alone() -> None:
    inplace, plain = _pair(True, dtype=torch.float64)
    x = randn(6, 4, seed=2, dtype=torch.float64)
    before = x.clone()
    j_in = tl.jacobians(inplace, x)
    assert torch.equal(x, before)
    assert torch.allclose(j_in, tl.jacobians(plain, x))
    tl.exact_transferability(inplace, mlp(4, 3, dtype=torch.float64), x)
    assert torch.equal(x, before)


def test_complex_inputs_are_refused_instead_of_losing_their_imaginary_part() -> None:
    x = torch.randn(4, 4, dtype=torch.complex64)
    with pytest.raises(TypeError, match="complex"):
        tl.pgd(mlp(4, 3), x, tl.ThreatModel())
    with pytest.raises(TypeError, match="complex"):
        tl.transferability(mlp(4, 3), mlp(4, 3, seed=1), x)
    with pytest.raises(TypeError, match="complex"):
        tl.Task("c", x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4, dtype=torch.long), 2)


def test_training_that_blows_up_without_overflowing_is_reported_as_divergence() -> None:
    """lr=1e6 drives the loss to ~1e13 while it stays finite; that is not a trained model."""
    with pytest.raises(ValueError, match=r"diverged in epoch \d+: the training loss is .* up from .*lower lr"):
        tl.fit(mlp(4, 3), _task(), epochs=5, lr=1e6, device="cpu")


def test_training_that_does_not_improve_on_the_untrained_model_warns() -> None:
    model = mlp(4, 3)
    with pytest.warns(tl.TrainingWarning, match="did not improve on the untrained model"):
        r = tl.fit(model, _task(), epochs=3, patience=1, lr=1e-12, device="cpu")
    assert r.initial_val_loss is not None and r.initial_val_loss > 0
    # a real training run stays silent
    with warnings.catch_warnings():
        warnings.simplefilter("error", tl.TrainingWarning)
        tl.fit(mlp(4, 3), _task(n_train=90), epochs=20, lr=1e-2, device="cpu")


def test_unknown_training_options_are_named() -> None:
    with pytest.raises(TypeError, match=r"unknown training option\(s\) \['learning_rate'\]; valid options"):
        tl.fit(mlp(4, 3), _task(), learning_rate=0.1)


def test_a_huge_radius_that_pins_the_attack_to_the_input_box_is_flagged() -> None:
    x = rand(16, 4, seed=4)
    big = tl.ThreatModel(norm="l2", eps=1e6, steps=3, bounds=(0.0, 1.0))
    with pytest.warns(tl.SaturationWarning, match="pinned .* to the input bounds"):
        r = tl.transferability(mlp(4, 3), mlp(4, 3, seed=1), x, threat=big)
    assert r.s2t.saturation > 0.5 and r.t2s.saturation > 0.5
    small = tl.ThreatModel(norm="l2", eps=0.05, steps=3, bounds=(0.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", tl.SaturationWarning)
        r = tl.transferability(mlp(4, 3), mlp(4, 3, seed=1), x * 0.5 + 0.25, threat=small)
    assert r.s2t.saturation == 0.0
    assert tl.transferability(mlp(4, 3), mlp(4, 3, seed=1), x, threat=tl.ThreatModel(eps=0.1)).s2t.saturation is None
    assert r.to_dict()["s2t"]["saturation"] == 0.0


def test_check_consistency_refuses_an_empty_eps_sequence() -> None:
    m = mlp(4, 3, dtype=torch.float64)
    x = randn(4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="at least one radius"):
        tl.check_consistency(m, mlp(4, 3, seed=1, dtype=torch.float64), x, eps=())
    with pytest.raises(ValueError, match="each eps must be a finite number > 0"):
        tl.check_consistency(m, m, x, eps=(0.1, -1.0))


def test_one_seed_rule_everywhere() -> None:
    for call in (
        lambda s: tl.build_model("mlp", (4,), 3, seed=s),
        lambda s: tl.TrainConfig(seed=s),
        lambda s: tl.transferability(mlp(4, 3), mlp(4, 3), randn(3, 4), seed=s),
        lambda s: tl.mnist1d_task(seed=s, num_samples=40),
        lambda s: tl.rbf_regression(20, 3, 2, 4, n_clusters=2, seed=s),
    ):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*(63|32)\), got -1"):
            call(-1)
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*(63|32)\)"):
            call(2**70)
    # mnist1d seeds numpy's legacy RNG, whose range is [0, 2**32)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\), got 4294967296"):
        tl.mnist1d_task(seed=2**32, num_samples=40)
    # the normalised value is what is used: a numpy seed gives the same model as the int
    a = tl.build_model("mlp", (4,), 3, seed=np.int64(5))
    b = tl.build_model("mlp", (4,), 3, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_wrong_object_types_say_what_is_expected() -> None:
    x = randn(3, 4)
    with pytest.raises(TypeError, match=r"threat must be a ThreatModel .*ThreatModel\(\*\*that_dict\)"):
        tl.pgd(mlp(4, 3), x, {"norm": "l2", "eps": 0.1})
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got function; wrap a function"):
        tl.pgd(lambda z: z, x, tl.ThreatModel())
    with pytest.raises(TypeError, match="source must be a torch.nn.Module, got NoneType"):
        tl.transferability(None, mlp(4, 3), x)
    with pytest.raises(TypeError, match="task must be a transferlens Task, got tuple"):
        tl.fit(mlp(4, 3), (x, torch.zeros(3, dtype=torch.long)))
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        tl.fit(mlp(4, 3), _task(), {"epochs": 2})


def test_outputs_lost_to_rounding_are_not_blamed_on_eps() -> None:
    """Inputs scaled by 1e20: the outputs are so large that the attack's change rounds to 0. The message
    says so; it must not send the user to increase eps."""
    x = randn(8, 4, seed=5) * 1e20
    with pytest.raises(ValueError, match="floating-point resolution") as info:
        tl.transferability(mlp(4, 3), mlp(4, 3, seed=1), x)
    assert "Increase eps" not in str(info.value) and "Rescale the inputs" in str(info.value)


class _BatchNormalised(nn.Module):
    """Output normalised over the batch: a sample's output depends on the other samples."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.lin(x)
        return z - z.mean(0, keepdim=True)


def test_a_model_whose_outputs_depend_on_the_batch_is_refused_with_the_reason() -> None:
    x = randn(8, 4)
    for call in (
        lambda m: tl.transferability(m, mlp(4, 3), x),
        lambda m: tl.pgd(m, x, tl.ThreatModel()),
        lambda m: tl.jacobians(m, x),
    ):
        with pytest.raises(ValueError, match="changes with the other samples in the batch"):
            call(_BatchNormalised())


class _SlightlyCoupled(nn.Module):
    """Each output moves by 1e-3 of its size with the rest of the batch: too much for float32 rounding."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.lin(x)
        return z * (1 + 1e-3 * (len(x) - 1))


def test_a_slight_batch_coupling_is_refused_on_the_cpu_with_its_size() -> None:
    with pytest.raises(ValueError, match=r"by 0.001 of its largest value, more than the 1e-04 rounding allows"):
        tl.pgd(_SlightlyCoupled(), randn(8, 4), tl.ThreatModel())


def test_batch_tolerance_follows_the_arithmetic() -> None:
    from transferlens._validate import batch_tolerance

    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32

    assert batch_tolerance(torch.float32, "cpu") == batch_tolerance(torch.float64, "cpu") == 1e-4
    assert batch_tolerance(torch.float16, "cpu") == pytest.approx(8 * 2.0**-10)
    assert batch_tolerance(torch.bfloat16, "cuda") == pytest.approx(8 * 2.0**-7)
    try:
        for matmul, cudnn, tol in ((True, False, 1e-2), (False, True, 1e-2), (False, False, 1e-4)):
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
            assert batch_tolerance(torch.float32, "cuda") == tol
            assert batch_tolerance(torch.float32, "cpu") == 1e-4  # TF32 is a CUDA matter
            assert batch_tolerance(torch.float64, "cuda") == 1e-4  # float64 has no TF32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def test_model_modes_are_restored_per_submodule() -> None:
    """A model in train mode holding a frozen (eval-mode) BatchNorm keeps exactly that mix after a call."""
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3))
    model.train()
    model[1].eval()
    modes = [m.training for m in model.modules()]
    stats = model[1].running_mean.clone()
    with frozen_eval(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == modes
    tl.transferability(model, mlp(4, 3), randn(8, 4), threat=tl.ThreatModel(norm="l2", eps=0.1, steps=2))
    tl.pgd(model, randn(8, 4), tl.ThreatModel())
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(model[1].running_mean, stats)


def test_a_model_without_parameters_keeps_float64_inputs_in_float64() -> None:
    """Casting to the default dtype (float32) would lose the input's precision for no reason."""
    from reference_attacks import reference_pgd

    x = randn(5, 4, seed=6, dtype=torch.float64)
    threat = tl.ThreatModel(norm="l2", eps=0.1, steps=3)
    delta = tl.pgd(nn.Tanh(), x, threat)
    assert delta.dtype == torch.float64
    assert torch.allclose(delta, reference_pgd(nn.Tanh(), x, threat, "deviation"), atol=1e-12, rtol=0)


def test_attacks_on_features_refuse_a_torchvision_style_trunk_until_wrapped() -> None:
    """``model.features`` of a torchvision-style model is its convolutional trunk, not the penultimate layer."""
    from test_byom import THREAT as BYOM_THREAT
    from test_byom import TVStyle

    x = rand(4, 3, 8, 8)
    model = TVStyle().eval()
    with pytest.raises(TypeError, match="convolutional trunk"):
        tl.pgd(model, x, BYOM_THREAT, output="features")
    wrapped = tl.wrap_model(model, "classifier.6")
    assert tl.pgd(wrapped, x, BYOM_THREAT, output="features").shape == x.shape
