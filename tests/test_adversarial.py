"""Tests for transferlens.adversarial: transferability, PRESETS and the result dataclasses.

The reference is a slow textbook implementation (per-sample Python loops over the models, straight from
the definitions in the metrics reference) with its own attack, ``reference_pgd`` from
``tests/reference_attacks.py``, so that a bug in the library's ``pgd`` cannot cancel out. Exact agreement
checks use float64 models so that they test the metric, not float32 rounding.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from transferlens.adversarial import PRESETS, DirectionResult, SuccessRates, Transferability, transferability
from transferlens.attacks import ThreatModel, model_output, pgd
from transferlens.models import build_model

from helpers import linear, mlp, params_snapshot, randn
from reference_attacks import reference_pgd

F64 = torch.float64
METRIC_KEYS = {"alpha1_s2t", "alpha2_s2t", "combined_s2t", "alpha1_t2s", "alpha2_t2s", "combined_t2s"}


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def textbook(source, target, x, threat, objective, *, output="logits", seed=0, squared=False, keep=None, tol=1e-6):
    """Slow reference: every quantity computed sample by sample from the definitions."""
    n = len(x)
    keep = [True] * n if keep is None else list(keep)
    dev = {k: [] for k in ("s2s", "s2t", "t2t", "t2s")}
    for i in range(n):
        xi = x[i : i + 1]
        d = {"s": reference_pgd(source, xi, threat, objective, output=output, seed=seed),
             "t": reference_pgd(target, xi, threat, objective, output=output, seed=seed)}
        models = {"s": source, "t": target}
        for a in "st":
            for b in "st":
                with torch.no_grad():
                    adv = model_output(models[b], xi + d[a], output)[0].double().numpy()
                    clean = model_output(models[b], xi, output)[0].double().numpy()
                dev[f"{a}2{b}"].append(adv - clean)
    out = {}
    for name, aa, ab, bb in (("s2t", "s2s", "s2t", "t2t"), ("t2s", "t2t", "t2s", "s2s")):
        a1, m, w, used, degenerate = [], None, None, [], 0
        for i in range(n):
            if not keep[i]:
                continue
            n_aa = math.sqrt(sum(float(c) ** 2 for c in dev[aa][i]))
            n_ab = math.sqrt(sum(float(c) ** 2 for c in dev[ab][i]))
            n_bb = math.sqrt(sum(float(c) ** 2 for c in dev[bb][i]))
            if n_aa <= tol or n_bb <= tol:
                degenerate += 1
                continue
            alpha1 = n_ab / n_bb
            u = dev[aa][i] / n_aa
            v = dev[ab][i] / n_ab if n_ab > 0 else np.zeros_like(dev[ab][i])
            outer = np.zeros((len(u), len(v)))
            for r in range(len(u)):
                for c in range(len(v)):
                    outer[r, c] = u[r] * v[c]
            m = outer if m is None else m + outer
            w = alpha1 * outer if w is None else w + alpha1 * outer
            a1.append(alpha1)
            used.append(i)
        k = len(used)
        frob = lambda mat: math.sqrt(sum(float(e) ** 2 for e in (mat / k).ravel()))  # noqa: E731
        a2, comb = frob(m), frob(w)
        out[name] = dict(
            alpha1_samples=np.array(a1), alpha1=float(np.mean(a1)), alpha2=a2 * a2 if squared else a2,
            combined=comb * comb if squared else comb, used=used, degenerate=degenerate,
        )
    out["dev"] = {k: np.array(v) for k, v in dev.items()}
    return out


def _assert_matches(res: Transferability, ref: dict, atol: float = 1e-6) -> None:
    for d in ("s2t", "t2s"):
        got: DirectionResult = getattr(res, d)
        want = ref[d]
        assert got.used_index.tolist() == want["used"]
        assert got.n_degenerate == want["degenerate"]
        np.testing.assert_allclose(got.alpha1_samples, want["alpha1_samples"], rtol=0, atol=atol)
        for key in ("alpha1", "alpha2", "combined"):
            assert getattr(got, key) == pytest.approx(want[key], abs=atol), (d, key)
            assert res[f"{key}_{d}"] == pytest.approx(want[key], abs=atol)
        assert got.alpha1_median == pytest.approx(float(np.median(want["alpha1_samples"])), abs=atol)


class DeadZone(nn.Module):
    """3 outputs, all ``relu(x0 - 1) * c``: exactly constant (zero gradient) wherever ``x0 < 1``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(x[:, :1] - 1.0)
        return torch.cat([h, -2.0 * h, 0.5 * h], dim=1) + torch.tensor([0.1, 0.2, -0.3], dtype=x.dtype)


class TrainSensitive(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Dropout -> Linear (differs between train and eval)."""

    def __init__(self, n_in: int = 6, n_out: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(n_in, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Dropout(0.3), nn.Linear(10, n_out))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
            self.net(torch.randn(32, n_in, generator=g) + 0.5)  # non-trivial running statistics (train mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


THEORY = ThreatModel("l2", 0.3, 6)


# ----------------------------------------------------------------------------------------------
# Presets and options
# ----------------------------------------------------------------------------------------------


def test_presets() -> None:
    assert set(PRESETS) == {"paper", "theory"}
    paper, theory = PRESETS["paper"], PRESETS["theory"]
    assert (paper.objective, paper.threat.norm, paper.correct_only, paper.squared) == ("ce", "linf", True, True)
    assert (theory.objective, theory.threat.norm, theory.correct_only, theory.squared) == ("deviation", "l2", False, False)
    assert paper.name == "paper" and theory.name == "theory"


def test_paper_preset_matches_textbook_squared_on_correct_samples() -> None:
    s, t = mlp(6, 3, seed=1, dtype=F64), mlp(6, 3, seed=2, dtype=F64)
    x = randn(12, 6, seed=3, dtype=F64)
    with torch.no_grad():
        pred_t = t(x).argmax(1)
    y = pred_t.clone()
    y[[0, 5, 7]] = (y[[0, 5, 7]] + 1) % 3  # three target mistakes
    res = transferability(s, t, x, y, preset="paper")
    keep = (pred_t == y).numpy()
    ref = textbook(s, t, x, PRESETS["paper"].threat, "ce", squared=True, keep=keep)
    _assert_matches(res, ref)
    assert res.s2t.n_filtered == res.t2s.n_filtered == 3
    opts = res.options
    assert (opts["preset"], opts["objective"], opts["correct_only"], opts["squared"]) == ("paper", "ce", True, True)
    assert opts["threat"] == PRESETS["paper"].threat.to_dict()


def test_explicit_options_override_preset_and_are_recorded() -> None:
    s, t = mlp(6, 3, seed=1, dtype=F64), mlp(6, 3, seed=2, dtype=F64)
    x = randn(5, 6, seed=3, dtype=F64)
    threat = ThreatModel("linf", 0.05, 3, bounds=(-5, 5))
    res = transferability(s, t, x, preset="paper", threat=threat, objective="kl", correct_only=False, squared=False,
                          output="probs", seed=4)
    o = res.options
    assert o["preset"] == "paper" and o["objective"] == "kl" and o["output"] == "probs"
    assert o["correct_only"] is False and o["squared"] is False and o["seed"] == 4
    assert o["threat"] == threat.to_dict() and o["attack"] == "pgd"
    assert transferability(s, t, x, threat=ThreatModel.fgsm(0.1)).options["attack"] == "fgsm"


# ----------------------------------------------------------------------------------------------
# Agreement with the textbook definitions
# ----------------------------------------------------------------------------------------------


def test_same_model_alpha1_is_one_and_alpha2_textbook() -> None:
    model = mlp(6, 4, seed=5, dtype=F64)
    x = randn(10, 6, seed=6, dtype=F64)
    res = transferability(model, model, x, threat=THEORY)
    for d in ("s2t", "t2s"):
        r = getattr(res, d)
        assert np.allclose(r.alpha1_samples, 1.0, rtol=0, atol=1e-6)
        assert r.alpha1 == pytest.approx(1.0, abs=1e-6)
        assert r.combined == pytest.approx(r.alpha2, abs=1e-9)
    # alpha2 from deviations computed here, sample by sample.
    m = np.zeros((4, 4))
    for i in range(len(x)):
        xi = x[i : i + 1]
        delta = reference_pgd(model, xi, THEORY, "deviation")
        with torch.no_grad():
            dv = (model(xi + delta) - model(xi))[0].numpy()
        u = dv / np.linalg.norm(dv)
        for r in range(4):
            for c in range(4):
                m[r, c] += u[r] * u[c] / len(x)
    alpha2 = math.sqrt(sum(e * e for e in m.ravel()))
    assert res.s2t.alpha2 == pytest.approx(alpha2, abs=1e-6)
    assert res.t2s.alpha2 == pytest.approx(alpha2, abs=1e-6)
    assert 1 / math.sqrt(4) - 1e-9 <= alpha2 <= 1 + 1e-9
    assert res.metrics()["combined_s2t"] == pytest.approx(alpha2, abs=1e-6)


@pytest.mark.parametrize(
    "objective, threat, output",
    [
        ("deviation", THEORY, "logits"),
        ("deviation", ThreatModel("l2", 0.4, 3, step_size=0.3, bounds=(-1.5, 1.5)), "probs"),
        ("ce", ThreatModel("linf", 0.1, 5), "logits"),
        ("ce", ThreatModel.fgsm(0.1), "logits"),
        ("kl", ThreatModel("l2", 0.4, 4), "probs"),
        ("deviation", ThreatModel("linf", 0.2, 4, bounds=(-4.0, 4.0)), "features"),
    ],
)
def test_reference_attack_agrees_with_library_pgd(objective, threat, output) -> None:
    # The independent attack of the textbook reference reproduces the library's (same start, same steps):
    # if this fails, the attack differs; if only the textbook comparisons below fail, the metrics do.
    model = build_model("cnn1d", (6,), 3, seed=12, channels=4, feature_dim=8).to(F64)
    x = randn(7, 6, seed=13, dtype=F64)
    if threat.bounds is not None:
        x = x.clamp(*threat.bounds)  # some inputs on the boundary: the clipping is active
    want = reference_pgd(model, x, threat, objective, output=output, seed=3)
    got = pgd(model, x, threat, objective, output=output, seed=3)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    norms = want.abs().amax(1) if threat.norm == "linf" else want.norm(dim=1)
    assert (norms <= threat.eps * (1 + 1e-12)).all() and (norms > 0).all()


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize(
    "objective, threat, output",
    [
        ("deviation", THEORY, "logits"),
        ("ce", ThreatModel("linf", 0.1, 5), "logits"),
        ("kl", ThreatModel("l2", 0.4, 4, random_start=False), "probs"),
        ("deviation", ThreatModel("linf", 0.2, 4, bounds=(-4.0, 4.0)), "features"),
    ],
)
def test_two_models_match_textbook(objective, threat, output, squared) -> None:
    s = mlp(6, 3, seed=11, dtype=F64)
    t = build_model("cnn1d", (6,), 3, seed=12, channels=4, feature_dim=8).to(F64)
    x = randn(8, 6, seed=13, dtype=F64)
    res = transferability(s, t, x, threat=threat, objective=objective, output=output, squared=squared, seed=3)
    ref = textbook(s, t, x, threat, objective, output=output, seed=3, squared=squared)
    _assert_matches(res, ref)
    assert res.s2t.n_used == res.t2s.n_used == len(x)
    # combined is the alpha1-weighted norm, not the product of the means
    assert res.s2t.combined != pytest.approx(res.s2t.alpha1 * res.s2t.alpha2, rel=1e-6)


def test_squared_is_square_of_plain() -> None:
    s, t = mlp(6, 3, seed=1, dtype=F64), mlp(6, 3, seed=2, dtype=F64)
    x = randn(8, 6, seed=3, dtype=F64)
    plain = transferability(s, t, x, threat=THEORY, squared=False).metrics()
    sq = transferability(s, t, x, threat=THEORY, squared=True).metrics()
    for k in plain:
        expected = plain[k] ** 2 if not k.startswith("alpha1") else plain[k]
        assert sq[k] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("preset", ["theory", "paper"])
def test_batch_equals_one_sample_at_a_time(preset: str) -> None:
    s = mlp(6, 3, seed=1, dtype=F64)
    t = build_model("cnn1d", (6,), 3, seed=2, channels=4, feature_dim=8).to(F64)
    x = randn(9, 6, seed=4, dtype=F64)
    kw = dict(preset=preset, correct_only=False)
    full = transferability(s, t, x, **kw)
    one = transferability(s, t, x, batch_size=1, **kw)
    four = transferability(s, t, x, batch_size=4, **kw)
    for other in (one, four):
        for k, v in full.metrics().items():
            assert other[k] == pytest.approx(v, abs=1e-6)
        np.testing.assert_allclose(other.s2t.alpha1_samples, full.s2t.alpha1_samples, atol=1e-6)
        np.testing.assert_allclose(other.t2s.alpha1_samples, full.t2s.alpha1_samples, atol=1e-6)


def test_float32_theory_preset_batch_equals_one_sample_at_a_time() -> None:
    s = build_model("mlp", (8,), 4, seed=1, hidden=(32, 16))
    t = build_model("mlp", (8,), 4, seed=2, hidden=(32, 16))
    x = randn(16, 8, seed=0, dtype=torch.float32)
    full = transferability(s, t, x)
    one = transferability(s, t, x, batch_size=1)
    s64, t64 = s.to(F64), t.to(F64)
    ref = transferability(s64, t64, x.to(F64))
    for k, v in full.metrics().items():
        assert one[k] == pytest.approx(v, abs=1e-5)
        assert ref[k] == pytest.approx(v, abs=1e-5)


# ----------------------------------------------------------------------------------------------
# Filtering: correct_only, degenerate samples
# ----------------------------------------------------------------------------------------------


def test_correct_only_uses_target_correct_samples() -> None:
    s, t = mlp(6, 3, seed=1, dtype=F64), mlp(6, 3, seed=2, dtype=F64)
    x = randn(14, 6, seed=5, dtype=F64)
    y = torch.arange(14) % 3
    with torch.no_grad():
        correct = (t(x).argmax(1) == y).numpy()
    assert 0 < correct.sum() < len(x)
    res = transferability(s, t, x, y, threat=THEORY, correct_only=True)
    sub = transferability(s, t, x[torch.from_numpy(correct)], threat=THEORY, correct_only=False)
    for d in ("s2t", "t2s"):
        r = getattr(res, d)
        assert r.n_used + r.n_filtered + r.n_degenerate == len(x)
        assert r.n_filtered == int((~correct).sum())
        assert r.used_index.tolist() == np.flatnonzero(correct).tolist()
        assert set(r.used_index.tolist()) <= set(np.flatnonzero(correct).tolist())
        assert len(r.alpha1_samples) == r.n_used
    # Per-sample independence: the same as measuring on the correct subset only.
    for k, v in sub.metrics().items():
        assert res[k] == pytest.approx(v, abs=1e-9)
    assert res.target_accuracy == pytest.approx(correct.mean())
    assert res.n == len(x)


def test_correct_only_needs_labels() -> None:
    s, t = mlp(6, 3, seed=1, dtype=F64), mlp(6, 3, seed=2, dtype=F64)
    x = randn(4, 6, dtype=F64)
    with pytest.raises(ValueError, match="needs the labels y"):
        transferability(s, t, x, correct_only=True)
    with pytest.raises(ValueError, match="needs the labels y"):
        transferability(s, t, x, preset="paper")


def test_no_correct_sample_is_a_clear_error() -> None:
    s, t = mlp(6, 3, seed=1, dtype=F64), mlp(6, 3, seed=2, dtype=F64)
    x = randn(5, 6, dtype=F64)
    with torch.no_grad():
        wrong = (t(x).argmax(1) + 1) % 3
    with pytest.raises(ValueError, match="no sample left"):
        transferability(s, t, x, wrong, preset="paper")


def test_degenerate_reference_deviation_is_excluded_not_nan() -> None:
    s, t = mlp(4, 3, seed=1, dtype=F64), DeadZone()
    x = randn(10, 4, seed=2, dtype=F64)
    dead = torch.tensor([True, False] * 5)
    x[:, 0] = torch.where(dead, torch.tensor(-2.0, dtype=F64), torch.tensor(3.0, dtype=F64))  # dead vs live ReLU
    res = transferability(s, t, x, threat=THEORY)
    live = np.flatnonzero(~dead.numpy()).tolist()
    for d in ("s2t", "t2s"):
        r = getattr(res, d)
        assert r.n_degenerate == 5 and r.n_used == 5 and r.n_filtered == 0
        assert r.used_index.tolist() == live
        assert np.isfinite(r.alpha1_samples).all()
        assert all(np.isfinite([r.alpha1, r.alpha1_median, r.alpha2, r.combined]))
    _assert_matches(res, textbook(s, t, x, THEORY, "deviation"))
    assert 0 <= res.t2s.alpha2 <= 1 + 1e-9 and 0 <= res.s2t.alpha2 <= 1 + 1e-9


def test_large_tol_marks_samples_degenerate() -> None:
    s, t = mlp(6, 3, seed=1, dtype=F64), mlp(6, 3, seed=2, dtype=F64)
    x = randn(10, 6, seed=3, dtype=F64)
    ref = textbook(s, t, x, THEORY, "deviation")
    n_tt = np.linalg.norm(ref["dev"]["t2t"], axis=1)
    n_ss = np.linalg.norm(ref["dev"]["s2s"], axis=1)
    tol = float(np.median(np.minimum(n_tt, n_ss)))
    res = transferability(s, t, x, threat=THEORY, tol=tol)
    expected_degenerate = int(((n_tt <= tol) | (n_ss <= tol)).sum())
    assert 0 < expected_degenerate < len(x)
    for d in ("s2t", "t2s"):
        r = getattr(res, d)
        assert r.n_degenerate == expected_degenerate
        assert r.n_used + r.n_degenerate == len(x)
    _assert_matches(res, textbook(s, t, x, THEORY, "deviation", tol=tol))
    with pytest.raises(ValueError, match="no sample left"):
        transferability(s, t, x, threat=THEORY, tol=1e6)


# ----------------------------------------------------------------------------------------------
# Success rates
# ----------------------------------------------------------------------------------------------


def test_success_rates_hand_made() -> None:
    # S predicts from x0 only, T from x0 + x1 (2 classes, logits (z, -z)). With ce + linf eps=0.5 the attack
    # on S moves x0 by -0.5*sign(x0) (x1 untouched: zero gradient) and the attack on T moves both
    # coordinates by -0.5*sign(x0 + x1).
    s = linear([[1.0, 0.0], [-1.0, 0.0]])
    t = linear([[1.0, 1.0], [-1.0, -1.0]])
    x = torch.tensor([[0.3, 0.4], [0.3, -0.1], [0.9, 0.2], [-0.3, 0.6], [0.4, -0.7]])
    y = torch.tensor([0, 0, 0, 0, 1])
    threat = ThreatModel("linf", 0.5, 10)
    d_s = pgd(s, x, threat, "ce")
    d_t = pgd(t, x, threat, "ce")
    assert torch.allclose(d_s, torch.tensor([[-0.5, 0.0]] * 3 + [[0.5, 0.0], [-0.5, 0.0]]))
    assert torch.allclose(d_t, torch.tensor([[-0.5, -0.5]] * 4 + [[0.5, 0.5]]))
    #            sample:   A  B  C  D  E
    # S clean pred:         0  0  0  1  0  -> correct: A B C       (source accuracy 3/5)
    # T clean pred:         0  0  0  0  1  -> correct: all         (target accuracy 5/5)
    # S on x + d_s:         1  1  0  0  1  -> fooled: A B
    # T on x + d_s:         0  1  0  0  1  -> fooled: B
    # T on x + d_t:         1  1  0  1  0  -> fooled: A B D E
    # S on x + d_t:         1  1  0  1  0  -> wrong:  A B D E
    res = transferability(s, t, x, y, threat=threat, objective="ce")
    assert res.source_accuracy == pytest.approx(0.6) and res.target_accuracy == pytest.approx(1.0)
    s2t, t2s = res.s2t.success, res.t2s.success
    assert isinstance(s2t, SuccessRates) and isinstance(t2s, SuccessRates)
    assert s2t == SuccessRates(
        n=5, error_rate=pytest.approx(1 / 5), fooling_rate=pytest.approx(1 / 5), n_victim_correct=5,
        conditional_rate=pytest.approx(1 / 2), n_conditional=2, whitebox_rate=pytest.approx(2 / 3),
        n_attacked_correct=3, gradient_masking_suspected=False,
    )
    assert t2s == SuccessRates(
        n=5, error_rate=pytest.approx(4 / 5), fooling_rate=pytest.approx(2 / 3), n_victim_correct=3,
        conditional_rate=pytest.approx(1.0), n_conditional=2, whitebox_rate=pytest.approx(4 / 5),
        n_attacked_correct=5, gradient_masking_suspected=False,
    )
    # The attack on S never changes x1, so T's own deviation direction is never fully reproduced.
    assert np.isfinite(list(res.metrics().values())).all()


def test_gradient_masking_flag() -> None:
    # S = logits (x0 + 5, -(x0 + 5)): always class 0 within eps=0.5 of these inputs, but its ce gradient still
    # moves x0 by -0.5, which fools T = logits (x0, -x0) wherever 0 < x0 < 0.5. Transfer beats white-box.
    s = linear([[1.0, 0.0], [-1.0, 0.0]], bias=[5.0, -5.0])
    t = linear([[1.0, 0.0], [-1.0, 0.0]])
    x = torch.tensor([[0.2, 0.0], [0.3, 1.0], [1.0, -1.0]])
    y = torch.tensor([0, 0, 0])
    res = transferability(s, t, x, y, threat=ThreatModel("linf", 0.5, 5), objective="ce")
    s2t, t2s = res.s2t.success, res.t2s.success
    assert s2t.whitebox_rate == 0.0 and s2t.n_attacked_correct == 3
    assert s2t.fooling_rate == pytest.approx(2 / 3) and s2t.n_victim_correct == 3
    assert s2t.conditional_rate is None and s2t.n_conditional == 0  # S is never fooled
    assert s2t.gradient_masking_suspected is True
    assert t2s.whitebox_rate == pytest.approx(2 / 3) and t2s.fooling_rate == 0.0
    assert t2s.conditional_rate == 0.0 and t2s.n_conditional == 2
    assert t2s.gradient_masking_suspected is False


def test_different_label_spaces_have_no_success_rates() -> None:
    s, t = mlp(6, 3, seed=1, dtype=F64), mlp(6, 5, seed=2, dtype=F64)
    x = randn(8, 6, seed=3, dtype=F64)
    y = torch.tensor([0, 1, 2, 3, 4, 4, 3, 2])
    res = transferability(s, t, x, y, threat=THEORY)
    assert res.s2t.success is None and res.t2s.success is None
    assert res.source_accuracy is None
    with torch.no_grad():
        assert res.target_accuracy == pytest.approx(float((t(x).argmax(1) == y).double().mean()))
    assert res.options["same_label_space"] is False
    _assert_matches(res, textbook(s, t, x, THEORY, "deviation"))
    json.dumps(res.to_dict(samples=True))
    with pytest.raises(ValueError, match="same_label_space=True"):
        transferability(s, t, x, y, threat=THEORY, same_label_space=True)
    # y is checked against the target's label set
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\)"):
        transferability(s, t, x, torch.full((8,), 5), threat=THEORY)


def test_without_labels_no_accuracies() -> None:
    s, t = mlp(6, 3, seed=1, dtype=F64), mlp(6, 3, seed=2, dtype=F64)
    res = transferability(s, t, randn(4, 6, dtype=F64), threat=THEORY)
    assert res.source_accuracy is None and res.target_accuracy is None
    assert res.s2t.success is None and res.t2s.success is None


# ----------------------------------------------------------------------------------------------
# Result API
# ----------------------------------------------------------------------------------------------


def test_result_indexing_metrics_and_to_dict() -> None:
    s, t = mlp(6, 3, seed=1, dtype=F64), mlp(6, 3, seed=2, dtype=F64)
    x = randn(6, 6, seed=3, dtype=F64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    res = transferability(s, t, x, y, threat=THEORY, seed=7)
    assert res["alpha1_t2s"] == res.t2s.alpha1 and isinstance(res["alpha1_t2s"], float)
    assert res["combined_s2t"] == res.s2t.combined and res["alpha2_s2t"] == res.s2t.alpha2
    m = res.metrics()
    assert set(m) == METRIC_KEYS
    assert all(isinstance(v, float) for v in m.values())
    for bad in ("alpha3_s2t", "alpha1_x2y", "alpha1", "alpha1_median_s2t", ""):
        with pytest.raises(KeyError):
            res[bad]
    d = res.to_dict()
    text = json.dumps(d)
    back = json.loads(text)
    assert back["metrics"] == m
    assert back["n"] == 6
    opts = back["options"]
    for key in ("preset", "threat", "objective", "output", "correct_only", "squared", "seed"):
        assert key in opts
    assert opts["preset"] == "theory" and opts["seed"] == 7 and opts["objective"] == "deviation"
    assert opts["output"] == "logits" and opts["correct_only"] is False and opts["squared"] is False
    assert opts["threat"] == {"norm": "l2", "eps": 0.3, "steps": 6, "step_size": pytest.approx(0.125),
                              "random_start": False, "bounds": None}
    assert back["s2t"]["success"]["n"] == 6
    assert "alpha1_samples" not in back["s2t"]
    full = json.loads(json.dumps(res.to_dict(samples=True)))
    assert full["t2s"]["alpha1_samples"] == pytest.approx(res.t2s.alpha1_samples.tolist())
    assert full["t2s"]["used_index"] == res.t2s.used_index.tolist()


# ----------------------------------------------------------------------------------------------
# Inputs untouched, modes restored, determinism
# ----------------------------------------------------------------------------------------------


def test_inputs_untouched_modes_restored_deterministic() -> None:
    s = TrainSensitive(6, 3, seed=1).to(F64).train()
    t = mlp(6, 3, seed=2, dtype=F64).eval()
    next(t.parameters()).requires_grad_(False)
    rg_t = [p.requires_grad for p in t.parameters()]
    state_s, state_t = params_snapshot(s), params_snapshot(t)
    x = randn(8, 6, seed=3, dtype=F64).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    x0, y0 = x.detach().clone(), y.clone()
    a = transferability(s, t, x, y, threat=ThreatModel("l2", 0.3, 4, random_start=True), seed=5)
    assert torch.equal(x.detach(), x0) and torch.equal(y, y0) and x.grad is None
    assert s.training and all(m.training for m in s.modules())
    assert not t.training and not any(m.training for m in t.modules())
    assert all(p.requires_grad for p in s.parameters())
    assert [p.requires_grad for p in t.parameters()] == rg_t
    assert all(p.grad is None for p in list(s.parameters()) + list(t.parameters()))
    assert all(torch.equal(u, v) for u, v in zip(state_s, params_snapshot(s)))  # incl. BatchNorm running stats
    assert all(torch.equal(u, v) for u, v in zip(state_t, params_snapshot(t)))
    b = transferability(s, t, x, y, threat=ThreatModel("l2", 0.3, 4, random_start=True), seed=5)
    assert a.metrics() == b.metrics()
    assert a.to_dict(samples=True) == b.to_dict(samples=True)
    # Train mode is irrelevant: the same as with both models in eval mode.
    s.eval()
    c = transferability(s, t, x, y, threat=ThreatModel("l2", 0.3, 4, random_start=True), seed=5)
    assert c.metrics() == a.metrics()
    s.train()
    # A different seed changes the random start and hence the numbers.
    d = transferability(s, t, x, y, threat=ThreatModel("l2", 0.3, 4, random_start=True), seed=6)
    assert d.metrics() != a.metrics()


def test_same_model_in_train_mode_restored() -> None:
    model = TrainSensitive(6, 3, seed=4).to(F64).train()
    transferability(model, model, randn(5, 6, dtype=F64), threat=THEORY)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_array_like_inputs_accepted() -> None:
    s, t = mlp(6, 3, seed=1, dtype=torch.float32), mlp(6, 3, seed=2, dtype=torch.float32)
    x = randn(5, 6, seed=3, dtype=torch.float32)
    y = [0, 1, 2, 0, 1]
    a = transferability(s, t, x.numpy(), np.array(y), preset="paper", correct_only=False)
    b = transferability(s, t, x, torch.tensor(y), preset="paper", correct_only=False)
    assert a.metrics() == b.metrics()


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def test_bad_inputs_rejected() -> None:
    s, t = mlp(6, 3, seed=1, dtype=F64), mlp(6, 3, seed=2, dtype=F64)
    x = randn(5, 6, dtype=F64)
    y = torch.tensor([0, 1, 2, 0, 1])
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        transferability(s, t, bad, y)
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN/Inf"):
        transferability(s, t, bad, y)
    with pytest.raises(ValueError, match="empty"):
        transferability(s, t, x[:0])
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        transferability(s, t, x, torch.tensor([0, 1, 3, 0, 1]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        transferability(s, t, x, torch.tensor([0, -1, 2, 0, 1]))
    with pytest.raises(ValueError, match="4 labels but there are 5 inputs"):
        transferability(s, t, x, y[:4])
    with pytest.raises(ValueError, match="integer class indices"):
        transferability(s, t, x, torch.tensor([0.0, 1.5, 2.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        transferability(s, t, x, y[:, None])
    with pytest.raises(ValueError, match="unknown preset"):
        transferability(s, t, x, y, preset="papers")
    for tol in (0.0, -1e-6, float("nan")):
        with pytest.raises(ValueError, match="tol must be"):
            transferability(s, t, x, y, tol=tol)
    with pytest.raises(ValueError, match="output must be one of"):
        transferability(s, t, x, y, output="penultimate")
    with pytest.raises(ValueError, match="objective must be one of"):
        transferability(s, t, x, y, objective="cw")
    with pytest.raises(ValueError, match="outside the input bounds"):
        transferability(s, t, x, y, threat=ThreatModel("linf", 0.1, 2, bounds=(0.0, 1.0)))
    with pytest.raises(ValueError, match="could not process inputs"):
        transferability(s, mlp(7, 3, dtype=F64), x, y)

    class ThreeD(nn.Module):
        def forward(self, z):
            return z[:, :6].reshape(len(z), 2, 3)

    with pytest.raises(ValueError, match="2-D"):
        transferability(s, ThreeD(), x, y)


def test_outputs_overflowing_after_the_first_rows_are_refused() -> None:
    class Overflows(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.exp(x[:, :3] * 100.0)

    x = torch.zeros(8, 4)
    x[5:] = 10.0
    with pytest.raises(ValueError, match="NaN/Inf"):
        transferability(mlp(4, 3, dtype=torch.float32), Overflows(), x, threat=ThreatModel("l2", 0.1, 1), objective="ce")


def test_labels_are_validated_strictly() -> None:
    s, t = mlp(6, 3, seed=1, dtype=torch.float32), mlp(6, 3, seed=2, dtype=torch.float32)
    x = randn(4, 6, dtype=torch.float32)
    with pytest.raises(TypeError, match="integer class indices"):
        transferability(s, t, x, torch.tensor([True, False, True, False]))
    with pytest.raises(ValueError, match="NaN/Inf"):
        transferability(s, t, x, torch.tensor([0.0, 1.0, float("inf"), 2.0]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        transferability(s, t, x, torch.tensor([0.0, 1.0, 1e30, 2.0]))


def test_preset_threat_is_the_one_rule_for_overrides():
    from transferlens.adversarial import preset_threat
    from transferlens.experiments import E2Config

    assert preset_threat("paper") is PRESETS["paper"].threat and preset_threat(None) is PRESETS["theory"].threat
    fgsm_bigger = preset_threat("paper", eps=0.3)
    assert (fgsm_bigger.steps, fgsm_bigger.step, fgsm_bigger.norm) == (1, 0.3, "linf")  # one step keeps step = eps
    pgd = preset_threat("paper", steps=4, norm="l2")
    assert pgd.step_size is None and pgd.step == pytest.approx(2.5 * 0.1 / 4) and pgd.norm == "l2"
    one = preset_threat("theory", steps=1)
    assert one.step == one.eps == 0.1
    for preset in PRESETS:
        for kw in ({}, {"eps": 0.2}, {"steps": 1}, {"steps": 3, "norm": "linf"}):
            assert E2Config(preset=preset, **kw).threat == preset_threat(preset, **kw)
    with pytest.raises(ValueError, match="unknown preset"):
        preset_threat("nope")
