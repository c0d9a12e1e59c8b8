"""Bring your own model: the model contract on a zoo of plain ``nn.Module``s.

Every model goes through ``tl.wrap_model`` and then ``tl.transferability``, ``tl.linear_probe`` and
``tl.retrain_last_layer``. Also guarded here: the wrapper's train/eval mode follows the module's
(nothing leaves an eval-mode module in train mode), ``wrap_model`` leaves no hook behind and checks that
the head is the module's last operation, and torchvision-style models (``.features`` = conv trunk) are
refused unwrapped with a ``TypeError`` that says how to wrap them.
"""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
from torch import nn

import transferlens as tl
from transferlens.models import FeatureModel, WrappedModel
from transferlens.models.base import feature_extractor

from helpers import rand, randn

THREAT = tl.ThreatModel(norm="l2", eps=0.1, steps=2)


# --------------------------------------------------------------------------------------------- the zoo


class GapCNN1D(nn.Module):
    """A small 1-D CNN on (N, 1, L) with global average pooling before its Linear head."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv1d(4, 6, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(6, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(1))


class GRUClassifier(nn.Module):
    """A GRU over (N, L) sequences (one scalar per step); the last hidden state feeds the head."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.gru = nn.GRU(1, 8, batch_first=True)
        self.fc = nn.Linear(8, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x.unsqueeze(-1))
        return self.fc(h[-1])


class BNDropNet(nn.Module):
    """BatchNorm + Dropout: only deterministic (and harmless to its statistics) in eval mode."""

    def __init__(self, n_in: int = 12, k: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5))
        self.fc = nn.Linear(16, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class TVStyle(nn.Module):
    """torchvision's VGG/AlexNet layout: ``features`` is the conv trunk, ``classifier`` a Sequential."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(
            nn.Linear(16, 12), nn.ReLU(True), nn.Dropout(),
            nn.Linear(12, 12), nn.ReLU(True), nn.Dropout(),
            nn.Linear(12, k),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TwoOut(nn.Module):
    def __init__(self, n_in: int = 12) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, 10), nn.Tanh())
        self.out = nn.Linear(10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


def _seeded(factory: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory().eval()


def _task(input_shape: tuple[int, ...], k: int, n_train: int = 48, n_test: int = 24, seed: int = 0) -> tl.Task:
    """Inputs in [0, 1); the label is the (binned) mean of the input, so the task is learnable."""
    def split(n: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = rand(n, *input_shape, seed=s)
        m = x.flatten(1).mean(1)
        y = torch.bucketize(m, torch.quantile(m, torch.linspace(0, 1, k + 1)[1:-1]))
        return x, y

    (x_tr, y_tr), (x_te, y_te) = split(n_train, seed), split(n_test, seed + 1)
    return tl.Task("tiny", x_tr, y_tr, x_te, y_te, k, bounds=(0.0, 1.0))


# name: (factory, head_name, input_shape)
ZOO = {
    "gap_cnn1d": (GapCNN1D, "fc", (1, 16)),
    "gru": (GRUClassifier, "fc", (12,)),
    "bn_dropout": (BNDropNet, "fc", (12,)),
    "torchvision_style": (TVStyle, "classifier.6", (3, 8, 8)),
}


def _hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_through_every_measure(name: str) -> None:
    factory, head_name, shape = ZOO[name]
    module = _seeded(factory)
    task = _task(shape, 3)
    before = _state(module)
    wrapped = tl.wrap_model(module, head_name)
    assert isinstance(wrapped, WrappedModel) and wrapped.training is False

    x = task.x_test[:8]
    with torch.no_grad():
        feats = wrapped.features(x)
        assert feats.ndim == 2 and feats.shape[0] == 8
        assert torch.equal(wrapped.head(feats), module(x))  # forward == head(features)
        assert torch.equal(wrapped(x), module(x))

    target = tl.build_model("mlp", shape, 3, seed=1, hidden=(8,))
    tf = tl.transferability(wrapped, target, x, task.y_test[:8], threat=THREAT)
    assert all(math.isfinite(v) for v in tf.metrics().values())
    assert tf.options["same_label_space"] is True and tf.s2t.success is not None

    lp = tl.linear_probe(wrapped, task, max_iter=300)
    rl = tl.retrain_last_layer(wrapped, task, steps=20)
    for r in (lp, rl):
        assert 0.0 <= r.accuracy <= 1.0 and math.isfinite(r.loss) and r.feature_dim == feats.shape[1]

    assert _hooks(module) == 0
    assert all(not m.training for m in module.modules())
    assert _same_state(_state(module), before)


def test_gru_features_are_the_last_hidden_state() -> None:
    module = _seeded(GRUClassifier)
    wrapped = tl.wrap_model(module, "fc")
    x = rand(5, 12, seed=3)
    with torch.no_grad():
        _, h = module.gru(x.unsqueeze(-1))
        assert torch.equal(tl.extract_features(wrapped, x), h[-1])


def test_two_output_source_against_ten_class_target() -> None:
    source = tl.wrap_model(_seeded(TwoOut), "out")
    task = _task((12,), 10, n_train=60, n_test=30)
    target = tl.build_model("mlp", (12,), 10, seed=1, hidden=(8,))
    tf = tl.transferability(source, target, task.x_test, task.y_test, threat=THREAT)
    assert tf.options["same_label_space"] is False
    assert tf.s2t.success is None and tf.t2s.success is None and tf.source_accuracy is None
    assert tf.target_accuracy is not None
    assert all(math.isfinite(v) for v in tf.metrics().values())
    lp = tl.linear_probe(source, task, max_iter=300)
    rl = tl.retrain_last_layer(source, task, steps=20)
    assert lp.feature_dim == rl.feature_dim == 10
    assert all(0.0 <= r.accuracy <= 1.0 and math.isfinite(r.loss) for r in (lp, rl))


# --------------------------------------------------------------------------------------------- torchvision-style .features


@pytest.mark.parametrize("call", ["extract_features", "linear_probe", "retrain_last_layer"])
def test_torchvision_style_features_trunk_refused_unwrapped(call: str) -> None:
    model = _seeded(TVStyle)
    task = _task((3, 8, 8), 3)
    fn = {
        "extract_features": lambda: tl.extract_features(model, task.x_test),
        "linear_probe": lambda: tl.linear_probe(model, task),
        "retrain_last_layer": lambda: tl.retrain_last_layer(model, task, steps=2),
    }[call]
    with pytest.raises(TypeError, match=r"convolutional trunk.*wrap_model\(model, 'classifier\.6'\)") as info:
        fn()
    assert "'classifier.0'" in str(info.value) and "'classifier.3'" in str(info.value)  # the candidates


def test_feature_extractor_rules() -> None:
    zoo = tl.build_model("mlp", (4,), 3, seed=0, hidden=(5,))
    assert feature_extractor(zoo) == zoo.features
    wrapped = tl.wrap_model(_seeded(TVStyle), "classifier.6")
    assert feature_extractor(wrapped) == wrapped.features

    class OwnMethod(nn.Module):  # a user class whose features is a real method: used as is
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Linear(4, 6)
            self.fc = nn.Linear(6, 2)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.enc(x))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.features(x))

    own = _seeded(OwnMethod)
    x = randn(3, 4)
    assert feature_extractor(own) == own.features
    with torch.no_grad():
        assert torch.equal(tl.extract_features(own, x), own.features(x))

    with pytest.raises(TypeError, match=r"features\(x\) method.*wrap_model\(model, 'fc'\)"):
        feature_extractor(_NoFeatures())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        feature_extractor(lambda x: x)  # type: ignore[arg-type]


class _NoFeatures(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_torchvision_style_wrapped_probes_the_classifier_input() -> None:
    model = _seeded(TVStyle)
    wrapped = tl.wrap_model(model, "classifier.6")
    x = _task((3, 8, 8), 3).x_test[:4]
    with torch.no_grad():
        trunk = torch.flatten(model.avgpool(model.features(x)), 1)
        penultimate = model.classifier[:6](trunk)
    assert torch.equal(tl.extract_features(wrapped, x), penultimate)


# --------------------------------------------------------------------------------------------- modes (finding 1)


def test_wrapper_takes_the_module_mode() -> None:
    module = _seeded(BNDropNet)  # eval mode
    wrapped = tl.wrap_model(module, "fc")
    assert wrapped.training is False
    # the nn.Module way of restoring a mode (model.train(was_training)) must not flip the module to train
    wrapped.train(wrapped.training)
    assert all(not m.training for m in module.modules())
    # train()/eval() on the wrapper propagate to every submodule, as for any nn.Module
    wrapped.train()
    assert wrapped.training and all(m.training for m in module.modules())
    wrapped.eval()
    assert not wrapped.training and all(not m.training for m in module.modules())
    # the wrapper has no mode of its own: changing the module afterwards is seen through it
    module.train()
    assert wrapped.training is True
    assert tl.wrap_model(module, "fc").training is True


def test_eval_module_stays_in_eval_mode_through_every_measure() -> None:
    module = _seeded(BNDropNet)
    with torch.no_grad():  # give the BatchNorm non-trivial running statistics, then freeze in eval mode
        module.train()
        module(randn(64, 12, seed=5) * 3 + 1)
        module.eval()
    stats = _state(module)
    wrapped = tl.wrap_model(module, "fc")
    task = _task((12,), 3)
    x, y = task.x_test[:8], task.y_test[:8]
    target = tl.build_model("mlp", (12,), 3, seed=1, hidden=(8,))

    tl.transferability(wrapped, target, x, y, threat=THREAT)
    tl.linear_probe(wrapped, task, max_iter=200)
    tl.retrain_last_layer(wrapped, task, steps=5)
    tl.pgd(wrapped, x, THREAT)
    tl.pgd(wrapped, x, THREAT, output="features")
    wrapped.train(wrapped.training)  # what a "restore the previous mode" on the wrapper does

    assert wrapped.training is False
    assert all(not m.training for m in module.modules())
    assert _same_state(_state(module), stats)
    probe = randn(16, 12, seed=9)
    with torch.no_grad():
        a, b = module(probe), module(probe)
    assert torch.equal(a, b)  # dropout off
    assert _same_state(_state(module), stats)  # running statistics untouched by plain forwards


def test_mixed_modes_inside_the_module_are_kept() -> None:
    module = _seeded(BNDropNet).train()
    module.body[1].eval()  # a frozen BatchNorm inside a model in train mode
    wrapped = tl.wrap_model(module, "fc")
    assert wrapped.training is True
    tl.linear_probe(wrapped, _task((12,), 3), max_iter=100)
    assert module.training and not module.body[1].training and module.body[3].training


# --------------------------------------------------------------------------------------------- head check and hooks (finding 3)


class _LogSoftmaxNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 5))
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.fc(torch.relu(self.body(x))), dim=1)


@pytest.mark.parametrize(
    "module,head", [(_LogSoftmaxNet, "fc"), (_LogSoftmaxNet, "body.1"), (TVStyle, "classifier.3")]
)
def test_head_that_is_not_the_last_operation_refused(module, head: str) -> None:
    m = _seeded(module)
    wrapped = tl.wrap_model(m, head)
    x = randn(3, 4) if module is _LogSoftmaxNet else rand(3, 3, 8, 8)
    with pytest.raises(ValueError, match=rf"head layer '{head}'.*last operation.*candidates") as info:
        wrapped.features(x)
    assert "'fc'" in str(info.value) or "'classifier.6'" in str(info.value)
    assert _hooks(m) == 0
    task = _task(tuple(x.shape[1:]), 3)
    with pytest.raises(ValueError, match="last operation"):
        tl.linear_probe(wrapped, task)
    assert _hooks(m) == 0


def test_head_output_returned_as_equal_copy_accepted() -> None:
    class Reshaped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Linear(4, 5)
            self.fc = nn.Linear(5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.tanh(self.enc(x))).reshape(len(x), -1).clone()

    m = _seeded(Reshaped)
    x = randn(4, 4)
    with torch.no_grad():
        assert torch.equal(tl.wrap_model(m, "fc").features(x), torch.tanh(m.enc(x)))


def test_no_hook_left_behind() -> None:
    class Counting(BNDropNet):
        """Records how many forward hooks its head carries while it runs."""

        seen: list[int]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.seen.append(len(self.fc._forward_hooks))
            return super().forward(x)

    module = _seeded(Counting)
    module.seen = []
    a, b = tl.wrap_model(module, "fc"), tl.wrap_model(module, "fc")
    assert _hooks(module) == 0
    x = randn(4, 12)
    with torch.no_grad():
        assert torch.equal(a.features(x), b.features(x))
        a(x)
    assert module.seen == [1, 1, 0]  # one hook while features() runs, none on a plain forward
    assert _hooks(module) == 0
    a.remove_hook()  # kept for compatibility; a no-op
    assert _hooks(module) == 0


def test_hook_removed_when_forward_raises() -> None:
    class Failing(_NoFeatures):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.fc(x)
            raise RuntimeError("boom")

    m = Failing()
    with pytest.raises(RuntimeError, match="boom"):
        tl.wrap_model(m, "fc").features(torch.zeros(1, 2))
    assert _hooks(m) == 0


def test_feature_model_untouched_by_wrap() -> None:
    model = tl.build_model("mlp", (4,), 3, seed=0)
    assert tl.wrap_model(model, "head") is model and isinstance(model, FeatureModel)
