"""The defense-aware (reconstructive) attack: loss by hand, lower reconstruction error than PGD, refusals, sweeps."""

from __future__ import annotations

import pytest
import torch

from capsrobust.attacks import AttackError, Backend, get_attack, run_attack
from capsrobust.attacks.reconstructive import ReconstructionAwareView, ReconstructiveLoss
from capsrobust.attacks.suites import load_suite, suite_from_dict
from capsrobust.detection.detector import reconstruction_distances
from capsrobust.evaluation.store import load_sweep
from capsrobust.evaluation.sweep import run_sweep
from capsrobust.models.checkpoints import load_checkpoint
from capsrobust.models.recipes import build_model
from tests.conftest import recipe

SETTINGS = {"steps": 10, "rel_step": 0.25}


def test_loss_is_the_hinged_margin_minus_weighted_distances_by_hand():
    torch.manual_seed(0)
    view = ReconstructionAwareView(build_model(recipe("capsnet-tiny")).eval())
    view.distances = torch.tensor([2.0, 5.0])
    scores = torch.tensor([[3.0, 1.0, 0.0], [0.0, 4.0, 1.0]])
    labels = torch.tensor([1, 2])
    # margins: max other − true = 3 − 1 = 2 (clamped to κ = 1.5) and 4 − 1 = 3 (clamped to 1.5)
    loss = ReconstructiveLoss(view, weight=0.5, confidence=1.5)
    assert loss(scores, labels).item() == pytest.approx(1.5 + 1.5 - 0.5 * 7.0)
    one_hot = torch.nn.functional.one_hot(labels, 3).float()  # ART hands unknown losses one-hot labels
    assert loss(scores, one_hot).item() == pytest.approx(loss(scores, labels).item())
    # labels 0: margins 1 − 3 = −2 and 4 − 0 = 4, both below κ = 10; no distance term at λ = 0
    assert ReconstructiveLoss(view, 0.0, 10.0)(scores, torch.tensor([0, 0])).item() == pytest.approx(2.0)


@pytest.mark.parametrize("backend", [Backend.ART, Backend.FOOLBOX])
@pytest.mark.parametrize("model_name", ["capsnet-tiny", "cnn-recon-tiny"])
def test_defense_aware_attack_leaves_a_lower_reconstruction_error_than_plain_pgd(
    model_name, backend, trained_runs, recon_run, mnist5k
):
    run = recon_run if model_name == "cnn-recon-tiny" else trained_runs[model_name]
    model = load_checkpoint(run).model
    images, labels = mnist5k.test.images[:24], mnist5k.test.labels[:24]
    plain = run_attack("pgd-linf", model, images, labels, eps=0.3, params=SETTINGS, backend=backend, seed=3)
    aware = run_attack("pgd-linf-recon", model, images, labels, eps=0.3, params={**SETTINGS, "recon_weight": 1.0},
                       backend=backend, seed=3)
    plain_distance = reconstruction_distances(model, plain.adversarials).mean()
    aware_distance = reconstruction_distances(model, aware.adversarials).mean()
    assert aware_distance < plain_distance - 0.5
    delta = (aware.adversarials - images).flatten(1).abs().amax(dim=1)
    assert (delta <= 0.3 + 1e-5).all()
    assert aware.adversarials.min() >= 0 and aware.adversarials.max() <= 1
    assert "l2(reconstruction)" in aware.objective_used and aware.steps_or_queries == 10


def test_l2_variant_stays_in_its_ball(trained_runs, mnist5k):
    model = load_checkpoint(trained_runs["capsnet-tiny"]).model
    images, labels = mnist5k.test.images[:6], mnist5k.test.labels[:6]
    result = run_attack("pgd-l2-recon", model, images, labels, eps=1.5, params={"steps": 3}, backend="foolbox")
    assert ((result.adversarials - images).flatten(1).norm(dim=1) <= 1.5 + 1e-4).all()


def test_models_without_a_decoder_are_refused_in_one_line():
    torch.manual_seed(0)
    cnn = build_model(recipe("cnn-tiny")).eval()
    with pytest.raises(AttackError, match="no class-conditional decoder — use a capsnet or cnn-recon model"):
        run_attack("pgd-linf-recon", cnn, torch.rand(2, 1, 28, 28), torch.tensor([0, 1]), eps=0.1)


def test_registered_with_defaults_and_in_the_shipped_suites():
    spec = get_attack("pgd-linf-recon")
    assert spec.resolve_params() == {"steps": 40, "rel_step": 0.1, "random_start": True, "restarts": 1,
                                     "recon_weight": 0.1, "confidence": 2.0}
    assert set(spec.backends) == {Backend.ART, Backend.FOOLBOX}
    assert get_attack("pgd-l2-recon").norm.value == "l2"
    for name in ("standard", "full"):
        assert "pgd-linf-recon" in {entry.attack for entry in load_suite(name).attacks}


def test_runs_inside_a_sweep(trained_runs, recon_run, mnist5k, tmp_path):
    suite = suite_from_dict({"attack": [{"name": "pgd-linf-recon", "eps": [0.2], "params": {"steps": 2}}]})
    results = run_sweep([trained_runs["capsnet-tiny"], recon_run], suite, mnist5k, out_dir=tmp_path, n=8,
                        backend="both", device="cpu", progress=False)
    assert len(results) == 4
    assert set(results["objective_used"]) == {"min(margin(log-lengths), 2) - 0.1*l2(reconstruction)",
                                              "min(margin(logits), 2) - 0.1*l2(reconstruction)"}
    assert (results["n_out_of_ball"] == 0).all() and (results["n_out_of_bounds"] == 0).all()


def test_a_sweep_leaves_it_out_for_models_without_a_decoder_and_says_so(trained_runs, recon_run, mnist5k, tmp_path):
    suite = suite_from_dict({"attack": [{"name": "pgd-linf-recon", "eps": [0.2], "params": {"steps": 2}}]})
    results = run_sweep([trained_runs["cnn-tiny"], recon_run], suite, mnist5k, out_dir=tmp_path, n=8,
                        device="cpu", progress=False)
    assert set(results["model"]) == {recon_run.name}
    checks = load_sweep(tmp_path).checks
    coverage = checks[(checks["check"] == "coverage") & (checks["model"] == trained_runs["cnn-tiny"].name)].iloc[0]
    assert coverage["status"] == "skip" and "pgd-linf-recon (needs a model with a class-conditional decoder)" in \
        coverage["detail"]
