"""Adversarial training: the training attack stays in its ball and raises its loss, settings are checked, runs resume.

Tiny models on a few hundred images with 2-step attacks keep this file to seconds.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from capsrobust.cli import main
from capsrobust.data import Dataset
from capsrobust.errors import RecipeError, RunError
from capsrobust.models.checkpoints import load_checkpoint
from capsrobust.models.recipes import AdversarialConfig, build_model, recipe_from_dict, with_adversarial
from capsrobust.precision import Precision
from capsrobust.training import TrainSettings, train
from capsrobust.training.adversarial import adversarial_examples, batch_eps, objective_loss, pgd, project, random_start
from tests.conftest import REPO, recipe


@pytest.fixture(scope="module")
def small(mnist5k) -> Dataset:
    """100 training and 50 validation images: an adversarial epoch of a tiny model in about a second."""
    return dataclasses.replace(mnist5k, train=mnist5k.train.head(100), val=mnist5k.val.head(50))


def _fast(name: str, **overrides) -> object:
    """A tiny recipe trained adversarially with a 2-step attack and a 2-step robust validation."""
    settings = {"attack": "pgd-linf", "eps": 0.3, "steps": 2, "step_size": 0.15, "val_steps": 2, **overrides}
    return with_adversarial(recipe(name), **settings)


@pytest.mark.parametrize(("attack", "eps"), [("pgd-linf", 0.3), ("pgd-l2", 2.0), ("trades-linf", 0.1)])
@pytest.mark.parametrize("name", ["capsnet-tiny", "cnn-tiny"])
def test_the_training_attack_stays_in_the_ball_and_in_pixel_range(mnist5k, name, attack, eps):
    torch.manual_seed(0)
    model = build_model(recipe(name))
    images, labels = mnist5k.train.images[:8], mnist5k.train.labels[:8]
    config = AdversarialConfig(attack=attack, eps=eps, steps=2, step_size=eps / 2)
    adversarial = adversarial_examples(model, images, labels, config, eps=eps, steps=2, step_size=eps / 2,
                                       generator=torch.Generator().manual_seed(0), precision=Precision.FP32)
    delta = (adversarial - images).flatten(1)
    size = delta.abs().amax(dim=1) if config.norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all() and (size > 0).any()
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert not model.training  # attacked in eval mode: no dropout noise in the gradient


def test_pgd_on_a_linear_loss_moves_each_pixel_by_eps_along_the_weights_sign_then_clips():
    weights = torch.tensor([1.0, -2.0, 0.5, -0.1]).view(1, 1, 2, 2)
    images = torch.tensor([0.5, 0.5, 0.95, 0.05]).view(1, 1, 2, 2)
    adversarial = pgd(lambda x: (x * weights).sum(), images, norm="linf", eps=0.1, steps=5, step_size=0.04,
                      start=None, precision=Precision.FP32)
    # by hand: +0.1, −0.1, +0.1 clipped at 1, −0.1 clipped at 0
    assert torch.allclose(adversarial.flatten(), torch.tensor([0.6, 0.4, 1.0, 0.0]))
    l2 = pgd(lambda x: (x * weights).sum(), images, norm="l2", eps=0.1, steps=1, step_size=0.1, start=None,
             precision=Precision.FP32)
    expected = (images + 0.1 * weights / weights.norm()).clamp(0, 1)  # one full step along w/‖w‖
    assert torch.allclose(l2, expected)


def test_projection_and_random_start_respect_the_ball():
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(64, 1, 28, 28)
    for norm, eps in (("linf", 0.3), ("l2", 1.5)):
        delta = random_start(images, norm, eps, generator)
        size = delta.flatten(1).abs().amax(1) if norm == "linf" else delta.flatten(1).norm(dim=1)
        assert (size <= eps + 1e-5).all() and size.mean() > eps / 2  # spread over the ball, not collapsed at 0
    big = torch.full((2, 1, 2, 2), 3.0)
    assert torch.allclose(project(big, "l2", 1.0).flatten(1).norm(dim=1), torch.ones(2))
    assert torch.equal(project(big, "linf", 0.2), torch.full_like(big, 0.2))


@pytest.mark.parametrize(("name", "objective"), [("capsnet-tiny", "margin"), ("capsnet-tiny", "vote-margin"),
                                                 ("cnn-tiny", "auto")])
def test_the_loss_the_training_attack_maximises_rises_above_the_clean_loss(trained_runs, mnist5k, name, objective):
    model = load_checkpoint(trained_runs[name]).model
    images, labels = mnist5k.val.images[:64], mnist5k.val.labels[:64]
    config = AdversarialConfig(eps=0.1, steps=5, step_size=0.025, objective=objective)
    adversarial = adversarial_examples(model, images, labels, config, eps=0.1, steps=5, step_size=0.025,
                                       generator=torch.Generator().manual_seed(0), precision=Precision.FP32)
    loss = objective_loss(model, objective, labels)
    with torch.no_grad():
        clean, attacked = float(loss(images)), float(loss(adversarial))
        start = float(loss((images + random_start(images, "linf", 0.1, torch.Generator().manual_seed(0))).clamp(0, 1)))
        robust = float((model(adversarial).predictions == labels).float().mean())
        accuracy = float((model(images).predictions == labels).float().mean())
    assert attacked > clean and attacked > start  # PGD climbs past the clean images and its own random start
    assert robust < accuracy  # and the routed model (for vote-margin, the real one) loses images


def test_eps_ramps_linearly_per_batch_over_the_warm_up_epochs():
    config = AdversarialConfig(eps=0.3, warmup_epochs=3)
    assert batch_eps(config, 0, 0.5) == pytest.approx(0.05)
    assert batch_eps(config, 1, 1.0) == pytest.approx(0.2)
    assert batch_eps(config, 5, 0.1) == pytest.approx(0.3)
    assert batch_eps(AdversarialConfig(eps=0.3), 0, 0.01) == 0.3


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"eps": 1.5}, "must lie in [0, 1]"),
        ({"eps": -0.1}, "must lie in [0, 1]"),
        ({"steps": 0}, "steps must be ≥ 1"),
        ({"attack": "fgsm-free"}, "unknown training attack 'fgsm-free'"),
        ({"attack": "trades-linf", "trades_beta": -1.0}, "TRADES beta must be ≥ 0"),
        ({"objective": "logits"}, "unknown training objective"),
    ],
)
def test_bad_adversarial_settings_are_refused_in_one_line_naming_the_file(table, message):
    base = recipe("cnn-tiny").to_dict()
    with pytest.raises(RecipeError, match=r"bad\.toml: \[adversarial\]") as error:
        recipe_from_dict({**base, "adversarial": table}, source="bad.toml")
    assert message in str(error.value) and "\n" not in str(error.value)
    overrides = {"attack": "pgd-linf", **table}
    with pytest.raises(RecipeError, match="adversarial training of cnn-tiny"):
        with_adversarial(recipe("cnn-tiny"), **overrides)


def test_the_cli_refuses_a_bad_training_eps_with_one_line(tmp_path):
    result = CliRunner().invoke(main, ["train", "cnn-tiny", "--adversarial", "pgd-linf", "--train-eps", "2",
                                       "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code != 0
    assert "must lie in [0, 1]" in result.output and "got 2.0" in result.output and not (tmp_path / "run").exists()
    result = CliRunner().invoke(main, ["train", "cnn-tiny", "--train-steps", "3", "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and "name a training attack (--adversarial)" in result.output


@pytest.mark.parametrize("base", ["capsnet-paper-at", "cnn-small-at", "cnn-recon-at"])
def test_the_at_recipes_name_madrys_settings_and_train_on_tiny_models(tmp_path, small, base):
    shipped = recipe(base)
    assert shipped.adversarial == dataclasses.replace(
        shipped.adversarial, attack="pgd-linf", eps=0.3, steps=40, step_size=0.01, random_start=True)
    assert recipe_from_dict(shipped.to_dict()) == shipped
    tiny_name = {"capsnet-paper-at": "capsnet-tiny", "cnn-small-at": "cnn-tiny", "cnn-recon-at": "cnn-recon-tiny"}
    tiny = recipe(tiny_name[base])
    quick = dataclasses.replace(shipped.adversarial, steps=2, step_size=0.15, val_steps=2, warmup_epochs=1)
    at = dataclasses.replace(shipped, model=tiny.model, train=tiny.train, adversarial=quick)
    metrics = train(at, small, tmp_path, TrainSettings(epochs=1, device="cpu", progress=False))
    row = metrics.iloc[0]
    assert 0 <= row["robust_val_accuracy"] <= 1 and row["train_eps"] == pytest.approx(0.3)
    assert row["passes_per_batch"] == 3
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["adversarial"]["attack"] == "pgd-linf" and run["recipe"]["adversarial"]["steps"] == 2
    best = load_checkpoint(tmp_path / "best.json")
    assert best.recipe.adversarial == quick and best.metadata["metrics"]["robust_val_accuracy"] == row[
        "robust_val_accuracy"]


def test_best_is_the_epoch_with_the_highest_robust_accuracy(tmp_path, small):
    settings = TrainSettings(epochs=3, batch_size=50, device="cpu", progress=False)
    metrics = train(_fast("cnn-tiny"), small, tmp_path, settings)
    best = load_checkpoint(tmp_path / "best.json").metadata["metrics"]
    assert best["robust_val_accuracy"] == metrics["robust_val_accuracy"].max()
    assert best["epoch"] == int(metrics.loc[metrics["robust_val_accuracy"].idxmax(), "epoch"])
    columns = set(pd.read_csv(tmp_path / "metrics.csv").columns)
    assert {"val_accuracy", "train_eps", "robust_val_accuracy", "robust_val_seconds", "passes_per_batch"} <= columns


@pytest.mark.parametrize(("name", "attack"), [("capsnet-tiny", "pgd-linf"), ("cnn-tiny", "trades-l2")])
def test_an_adversarial_run_resumed_equals_the_uninterrupted_one(tmp_path, small, name, attack):
    at = _fast(name, attack=attack, eps=0.3 if attack == "pgd-linf" else 1.5, warmup_epochs=1)
    settings = TrainSettings(epochs=2, device="cpu", progress=False)
    straight = train(at, small, tmp_path / "straight", settings)
    train(at, small, tmp_path / "resumed", dataclasses.replace(settings, epochs=1))
    resumed = train(at, small, tmp_path / "resumed", dataclasses.replace(settings, resume=True))
    a, b = load_file(str(tmp_path / "straight" / "last.safetensors")), load_file(
        str(tmp_path / "resumed" / "last.safetensors"))
    assert all(torch.allclose(a[key], b[key], atol=1e-6) for key in a)
    assert resumed["robust_val_accuracy"].tolist() == pytest.approx(straight["robust_val_accuracy"].tolist())
    with pytest.raises(RunError, match="another recipe"):
        train(with_adversarial(at, eps=0.2), small, tmp_path / "resumed",
              dataclasses.replace(settings, epochs=3, resume=True))


@pytest.mark.slow
def test_the_report_sets_adversarially_trained_capsules_against_cnns_with_their_cost(tmp_path, small, mnist5k):
    from capsrobust.evaluation.sweep import run_sweep
    from capsrobust.reporting.report import build_report

    runs = []
    for name in ("capsnet-tiny", "cnn-tiny"):
        train(_fast(name), small, tmp_path / f"{name}-at", TrainSettings(epochs=1, device="cpu", progress=False))
        runs.append(tmp_path / f"{name}-at")
    train(recipe("cnn-tiny"), small, tmp_path / "cnn-tiny", TrainSettings(epochs=1, device="cpu", progress=False))
    suite = tmp_path / "suite.toml"
    suite.write_text('[suite]\nname = "t"\nn = 10\n\n[[attack]]\nname = "pgd-linf"\neps = [0.1, 0.3]\n'
                     'backends = ["art"]\n[attack.params]\nsteps = 2\nrel_step = 0.5\n')
    run_sweep([*runs, tmp_path / "cnn-tiny"], suite, mnist5k, out_dir=tmp_path / "sweep", device="cpu",
              progress=False)
    build_report([tmp_path / "sweep"], tmp_path / "report", formats=["md"], n_resamples=200)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Robust against robust" in text and "pgd-linf eps 0.3, 2 steps of 0.15" in text
    cost = pd.read_csv(tmp_path / "report" / "tables" / "robust_training.csv")
    assert set(cost["model"]) == {"capsnet-tiny-at", "cnn-tiny-at"}  # the naturally trained cnn-tiny is not here
    assert (cost["train_seconds"] > 0).all() and (cost["ci_low"] <= cost["robust_accuracy"]).all()
    pairs = pd.read_csv(tmp_path / "report" / "tables" / "robust_comparison.csv")
    assert set(pairs["candidate"]) == {"capsnet-tiny-at"} and set(pairs["baseline"]) == {"cnn-tiny-at"}
    assert list(pairs["eps"]) == [0.1, 0.3]


def test_the_robust_profile_pairs_the_adversarially_trained_models_with_the_strongest_suite():
    from capsrobust.attacks.registry import AttackRole, get_attack
    from capsrobust.attacks.suites import load_suite
    from capsrobust.profiles import get_profile

    profile = get_profile("robust")
    assert [name for name, _ in profile.recipes] == ["capsnet-paper-at", "cnn-small-at"]
    assert all(recipe(name).adversarial is not None for name, _ in profile.recipes)
    suite = load_suite(profile.suite)
    assert suite.double_steps_check and profile.n == 1000
    budgets = {eps for attack in suite.attacks for eps in attack.eps}
    assert {0.1, 0.2, 0.3, 0.4} <= budgets and max(budgets) == 0.5  # 0.5: the large-eps check, 0.2 above 0.3
    names = {attack.attack for attack in suite.attacks}
    assert {"autoattack", "vote-pgd-linf", "square"} <= names
    assert AttackRole.GRADIENT_FREE in {get_attack(name).role for name in names}


def test_a_vote_objective_on_a_model_without_votes_is_refused_before_training(tmp_path, small):
    from capsrobust.attacks.objectives import ObjectiveError

    with pytest.raises(ObjectiveError, match="needs a CapsNet"):
        train(_fast("cnn-tiny", objective="vote-margin"), small, tmp_path / "run",
              TrainSettings(epochs=1, device="cpu", progress=False))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_robust_profile_runs_end_to_end_on_tiny_adversarially_trained_models(tmp_path, small):
    from capsrobust.benchmark import run_benchmark

    suite = tmp_path / "robust-short.toml"
    suite.write_text(
        (REPO / "attacks" / "robust.toml").read_text()
        .replace("steps = 100", "steps = 2").replace("steps = 40", "steps = 2").replace("restarts = 5", "restarts = 1")
        .replace("queries = 1000", "queries = 5").replace("square_queries = 1000", "square_queries = 5")
        .replace("n = 1000", "n = 6"))
    result = run_benchmark("robust", out_dir=tmp_path / "bench", report_dir=tmp_path / "report", data=small,
                           device="cpu", n=6, recipes=[("capsnet-tiny-at", 1), ("cnn-tiny-at", 1)], suite=suite,
                           progress=False, precision="fp32")  # the profile's tf32 is a GPU mode
    assert result.finished
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Robust against robust" in text
    checks = text.index("Self-check") if "Self-check" in text else text.index("## Robust against robust")
    assert checks <= text.index("## Robust against robust")  # the checks come first
