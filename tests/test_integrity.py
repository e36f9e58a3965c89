"""A model that computes nothing, or an attack that changes the model, never turns into a robust-accuracy number."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from capsrobust.attacks.suites import suite_from_dict
from capsrobust.data import Dataset
from capsrobust.errors import ModelOutputError
from capsrobust.evaluation import load_sweep, run_sweep
from capsrobust.evaluation import sweep as sweep_module
from capsrobust.evaluation.accuracy import evaluate
from capsrobust.evaluation.integrity import unchanged_model
from capsrobust.models import wrap_module
from capsrobust.models.inference import NO_PREDICTION, predict


class OffGridIsNaN(nn.Module):
    """Logistic regression that answers NaN for any image off the 1/255 grid of real 8-bit digits.

    Clean test digits lie on the grid, FGSM at eps 0.1 (25.5 grey levels) moves them off it: every adversarial gets
    NaN scores, which ``argmax`` used to read as class 0 and so as "robust" for every digit 0.
    """

    def __init__(self, weights: nn.Linear) -> None:
        super().__init__()
        self.linear = weights

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.linear(images.flatten(1))  # (B, 10)
        levels = images.flatten(1) * 255
        off_grid = (levels - levels.round()).abs().amax(dim=1) > 1e-3  # (B,)
        return torch.where(off_grid[:, None], torch.full_like(logits, float("nan")), logits)


def logistic_regression(data: Dataset, steps: int = 60) -> nn.Linear:
    """A classifier worth attacking, fitted full-batch in about a second."""
    torch.manual_seed(0)
    linear = nn.Linear(784, 10)
    images, labels = data.train.images.flatten(1), data.train.labels
    optimizer = torch.optim.Adam(linear.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(linear(images), labels).backward()
        optimizer.step()
    return linear


def test_non_finite_scores_are_no_prediction():
    scores = torch.tensor([[0.0, 2.0], [float("nan"), 1.0], [float("inf"), 0.0], [3.0, 1.0]])
    model = wrap_module(nn.Flatten(), name="scores", input_shape=(1, 1, 2))  # a 1×2 "image" is its own scores
    assert predict(model, scores.view(4, 1, 1, 2)).tolist() == [1, NO_PREDICTION, NO_PREDICTION, 0]


def test_clean_evaluation_refuses_a_model_that_answers_nan(mnist5k):
    model = wrap_module(OffGridIsNaN(logistic_regression(mnist5k)), name="nan-model")
    split = type(mnist5k.test)(mnist5k.test.images[:20] + 0.5 / 255, mnist5k.test.labels[:20])  # all off the grid
    with pytest.raises(ModelOutputError, match="NaN or infinite scores on 20 of 20"):
        evaluate(model, split, mnist5k.classes)


def test_adversarials_with_nan_scores_count_as_broken_and_are_flagged(mnist5k, tmp_path):
    model = wrap_module(OffGridIsNaN(logistic_regression(mnist5k)), name="nan-model")
    suite = suite_from_dict({"suite": {"name": "nan", "n": 40},
                             "attack": [{"name": "fgsm", "eps": [0.1]}]}, source="nan.toml")
    run_sweep([model], suite, mnist5k, out_dir=tmp_path, backend="art", device="cpu", progress=False)
    tables = load_sweep(tmp_path)
    row = tables.results.iloc[0]
    assert row["n_clean_correct"] >= 20  # a real classifier, so there was something to keep
    assert row["n_no_answer"] == row["n_clean_correct"] == row["n_success"]
    assert row["robust_accuracy"] == 0.0  # before: every digit 0 counted robust (argmax of NaN is 0)
    answers = tables.checks[tables.checks["check"] == "answers"].iloc[0]
    assert answers["status"] == "flag" and f"{row['n_no_answer']} adversarials" in answers["detail"]


def test_an_attack_that_trains_the_model_is_refused_and_undone():
    linear = nn.Linear(3, 2)
    before = linear.weight.detach().clone()
    with pytest.raises(ModelOutputError, match=r"changed 1 weight tensor.*weight"), unchanged_model(linear, "x"), \
            torch.no_grad():
        linear.weight += 1
    assert torch.equal(linear.weight, before)


def test_an_attack_that_leaves_the_model_training_is_refused_and_undone():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).eval()
    with pytest.raises(ModelOutputError, match="changed 3 weight tensor"), unchanged_model(model, "x"):
        model.train()
        model(torch.randn(4, 3))  # moves BatchNorm's running mean and variance (and counts the batch)
    assert not any(module.training for module in model.modules())
    with pytest.raises(ModelOutputError, match="training/eval mode"), unchanged_model(model, "x"):
        model[0].train()
    assert not model[0].training
    with unchanged_model(model, "x"):  # a body that only reads passes
        model(torch.randn(4, 3))


def test_a_sweep_stops_when_an_attack_changes_the_weights(mnist5k, tmp_path, monkeypatch):
    model = wrap_module(nn.Sequential(nn.Flatten(), logistic_regression(mnist5k, steps=5)), name="victim")
    real = sweep_module.run_attack

    def training_attack(name, target, images, labels, **kwargs):
        with torch.no_grad():
            next(target.parameters()).add_(0.01)
        return real(name, target, images, labels, **kwargs)

    monkeypatch.setattr(sweep_module, "run_attack", training_attack)
    suite = suite_from_dict({"suite": {"name": "w", "n": 8}, "attack": [{"name": "fgsm", "eps": [0.1]}]},
                            source="w.toml")
    out = tmp_path / "sweep"
    with pytest.raises(ModelOutputError, match=r"fgsm at eps 0\.1 on victim changed"):
        run_sweep([model], suite, mnist5k, out_dir=out, backend="art", device="cpu", progress=False)
    assert not out.exists()  # it finished no cell: nothing is left, so the same command can run again
    monkeypatch.setattr(sweep_module, "run_attack", real)
    run_sweep([model], suite, mnist5k, out_dir=out, backend="art", device="cpu", progress=False)
    assert len(load_sweep(out).results) == 1
