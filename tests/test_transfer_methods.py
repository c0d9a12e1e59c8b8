"""The transfer-method registry: each entry is the library function it names, options are checked up front."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import transferlens as tl
from transferlens.transfer_methods import check_transfer_options


@pytest.fixture(scope="module")
def setup():
    task = tl.digits_task("rotate", strength=0.3, seed=0)
    source = tl.build_model("mlp", task.input_shape, 10, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tl.TrainingWarning)
        tl.fit(source, tl.digits_task("none", seed=1), tl.TrainConfig(epochs=3), device="cpu")
    return task, source


DIRECT = {
    "linear_probe": lambda m, t: tl.linear_probe(m, t, C=0.5),
    "last_layer": lambda m, t: tl.retrain_last_layer(m, t, steps=50, seed=4),
    "fine_tune": lambda m, t: tl.fine_tune(m, t, epochs=1, seed=4, device="cpu"),
    "knn": lambda m, t: tl.knn_transfer(m, t, k=3),
}
OPTIONS = {"linear_probe": {"C": 0.5}, "last_layer": {"steps": 50}, "fine_tune": {"epochs": 1}, "knn": {"k": 3}}


@pytest.mark.parametrize("name", list(DIRECT))
def test_each_method_is_the_function_it_names(setup, name):
    task, source = setup
    before = {k: v.clone() for k, v in source.state_dict().items()}
    got = tl.transfer(name, source, task, seed=4, device="cpu", **OPTIONS[name])
    want = DIRECT[name](source, task)
    assert got == want and got.method == want.method
    assert np.array_equal(got.test_correct, want.test_correct)
    assert got.accuracy == pytest.approx(got.test_correct.mean())
    assert all(torch.equal(before[k], v) for k, v in source.state_dict().items())


def test_distill_reports_the_students_accuracy_and_loss(setup):
    task, source = setup
    got = tl.transfer("distill", source, task, seed=2, device="cpu", epochs=2, temperature=2.0)
    student = tl.build_model("mlp", task.input_shape, 10, seed=2)
    direct = tl.distill(source, student, task, epochs=2, temperature=2.0, seed=2, device="cpu")
    assert got.method == "distill" and got.accuracy == pytest.approx(direct.accuracy, abs=1e-12)
    assert got.accuracy == pytest.approx(got.test_correct.mean())
    with torch.no_grad():
        logits = direct.student.cpu()(task.x_test).double()
    assert got.loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, task.y_test)), rel=1e-9)
    assert got.options["student"] == "mlp" and got.options["temperature"] == 2.0 and got.feature_dim == 10


def test_every_registered_method_has_a_summary_and_its_options():
    assert tl.transfer_method_names() == ["linear_probe", "last_layer", "fine_tune", "knn", "distill"]
    assert "epochs" in tl.TRANSFER_METHODS["fine_tune"].option_names()
    assert {"temperature", "divergence", "student"} <= set(tl.TRANSFER_METHODS["distill"].option_names())
    assert all(m.summary for m in tl.TRANSFER_METHODS.values())


def test_bad_names_and_options_are_refused_before_any_work(setup):
    task, source = setup
    with pytest.raises(ValueError, match="unknown transfer method 'probe'.*linear_probe"):
        tl.transfer("probe", source, task)
    with pytest.raises(ValueError, match=r"takes no option\(s\) \['epochs'\]; its options are \['k'\]"):
        tl.transfer("knn", source, task, epochs=3)
    with pytest.raises(ValueError, match="seed"):  # seed is given by keyword, never as an option
        check_transfer_options("fine_tune", {"seed": 1})
    with pytest.raises(ValueError, match="architecture name"):
        tl.transfer("distill", source, task, student=tl.build_model("mlp", task.input_shape, 10))
