"""APGD and AutoAttack: the DLR losses by hand and against ART's own, target choice, the first-success rule,
and the real attacks on tiny trained models (stronger than FGSM, no weaker than their members, honest budgets)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from capsrobust.attacks import AttackError, Norm, get_attack, run_attack
from capsrobust.attacks import art_backend as art_backend_module
from capsrobust.attacks.autoattack import (
    TARGET_MARK,
    DLRLoss,
    Member,
    first_success,
    runner_up_targets,
    target_rows,
)
from capsrobust.attacks.objectives import ObjectiveError
from capsrobust.attacks.suites import suite_from_dict
from capsrobust.attacks.vote import VoteView, vote_target
from capsrobust.evaluation.compare import worst_case
from capsrobust.evaluation.store import load_sweep
from capsrobust.evaluation.sweep import run_sweep
from capsrobust.models.checkpoints import load_checkpoint
from capsrobust.models.inference import predict
from capsrobust.models.recipes import build_model
from tests.conftest import recipe

# ---------------------------------------------------------------------------------------------------------- losses


def test_targeted_dlr_by_hand():
    scores = torch.tensor([[3.0, 1.0, 2.0, 0.0, -1.0]])  # sorted: 3, 2, 1, 0, -1
    rows = torch.from_numpy(target_rows(torch.tensor([0]), torch.tensor([2]), 5))
    # −(z_y − z_t) / (z_π1 − ½(z_π3 + z_π4)) = −(3 − 2) / (3 − ½(1 + 0)) = −0.4
    assert DLRLoss(targeted=True)(scores, rows).item() == pytest.approx(-0.4)
    # untargeted: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3) = −(3 − 2) / (3 − 1) = −0.5
    assert DLRLoss()(scores, torch.tensor([0])).item() == pytest.approx(-0.5)
    assert DLRLoss()(scores, rows).item() == pytest.approx(-0.5)  # rows: argmax is the true class


def test_dlr_is_invariant_to_shift_and_scale_but_not_to_the_log():
    lengths = torch.rand(8, 10, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    labels = torch.arange(8)
    loss = DLRLoss(reduction="none")
    torch.testing.assert_close(loss(3 * lengths + 7, labels), loss(lengths, labels), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(loss(lengths.log(), labels), loss(lengths, labels))


def test_untargeted_dlr_equals_arts_own():
    """ART builds its own DLR for loss_type="difference_logits_ratio"; capsrobust's must be the same function."""
    from art.attacks.evasion import AutoProjectedGradientDescent

    from capsrobust.attacks.objectives import to_art

    torch.manual_seed(0)
    classifier = to_art(build_model(recipe("cnn-tiny")).eval())
    arts = AutoProjectedGradientDescent(classifier, eps=0.1, eps_step=0.2, loss_type="difference_logits_ratio",
                                        verbose=False).estimator._loss
    arts.reduction = "none"
    scores = torch.randn(16, 10, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(2))
    one_hot = torch.nn.functional.one_hot(labels, 10).float()
    torch.testing.assert_close(DLRLoss(reduction="none")(scores, one_hot), arts(scores, one_hot))


def test_dlr_reduction_is_what_art_sets():
    scores, labels = torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    loss = DLRLoss()
    per_example = loss.__class__(reduction="none")(scores, labels)
    assert per_example.shape == (4,)
    torch.testing.assert_close(loss(scores, labels), per_example.sum())
    with pytest.raises(ValueError, match="targeted DLR needs label rows"):
        DLRLoss(targeted=True)(scores, labels)


# --------------------------------------------------------------------------------------------------------- targets


def test_runner_up_targets_rank_the_other_classes_by_clean_score():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.9], [0.9, 0.2, 0.8, 0.1]])
    labels = torch.tensor([3, 2])  # the second image is misclassified: its label is never a target all the same
    assert runner_up_targets(scores, labels, 1).tolist() == [1, 0]
    assert runner_up_targets(scores, labels, 2).tolist() == [2, 1]
    assert runner_up_targets(scores, labels, 3).tolist() == [0, 3]
    with pytest.raises(ValueError, match="target rank"):
        runner_up_targets(scores, labels, 4)


def test_target_rows_keep_the_true_class_as_argmax_and_refuse_the_label_as_target():
    rows = target_rows(torch.tensor([4, 0]), torch.tensor([1, 9]), 10)
    assert rows.argmax(axis=1).tolist() == [4, 0]
    assert rows[0, 1] == TARGET_MARK and rows[1, 9] == TARGET_MARK and rows.sum() == 2 * (1 + TARGET_MARK)
    with pytest.raises(ValueError, match="equals its true label"):
        target_rows(torch.tensor([3]), torch.tensor([3]), 10)


# ------------------------------------------------------------------------------------------------ first success


def _brightness_classifier(images: torch.Tensor) -> torch.Tensor:
    """Class = mean pixel value · 10, rounded down: an image is 'broken' by brightening it past its class."""
    return (images.flatten(1).mean(dim=1) * 10).floor().long().clamp(0, 9)


def test_first_success_attacks_only_robust_images_and_keeps_the_first_adversarial():
    images = 0.15 + 1e-3 * torch.arange(4.0)[:, None, None, None].expand(4, 1, 28, 28)  # all class 1, told apart
    labels = torch.tensor([1, 1, 1, 0])  # the last image is misclassified clean: never attacked
    seen: dict[str, list[int]] = {}

    def brighten(name: str, amount: float, which: set[int]) -> Member:
        """Brightens the images with an index in ``which`` by ``amount`` (into class 2 for 0.1)."""

        def run(batch: torch.Tensor, batch_labels: torch.Tensor) -> torch.Tensor:
            indices = [int((images == image).flatten(1).all(dim=1).nonzero()) for image in batch]
            seen[name] = indices
            return torch.stack([image + amount if index in which else image
                                for image, index in zip(batch, indices, strict=True)])

        return Member(name, run, budget=10)

    members = [brighten("a", 0.1, {0}), brighten("b", 0.1, {0, 1}), brighten("far", 0.5, {2}),
               brighten("c", 0.1, {2})]
    result = first_success(members, images, labels, _brightness_classifier, eps=0.2, norm=Norm.LINF)
    assert seen == {"a": [0, 1, 2], "b": [1, 2], "far": [2], "c": [2]}
    assert result.broken_by == {"a": 1, "b": 1, "far": 0, "c": 1}  # "far" leaves the eps ball: no success
    assert _brightness_classifier(result.adversarials).tolist() == [2, 2, 2, 1]
    torch.testing.assert_close(result.adversarials[:3], images[:3] + 0.1)  # each from the first member that broke it
    assert torch.equal(result.adversarials[3], images[3])  # not attacked: returned clean
    assert result.budget == 40


# ------------------------------------------------------------------------------------------------- vote view


def test_routed_vote_view_has_the_models_values_and_the_votes_gradient():
    torch.manual_seed(0)
    capsnet = build_model(recipe("capsnet-tiny")).eval()
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    routed, votes = VoteView(capsnet, "log-lengths", "routed"), VoteView(capsnet, "log-lengths", "votes")
    torch.testing.assert_close(routed(images), capsnet(images).logits)

    def gradient(view: torch.nn.Module) -> torch.Tensor:
        inputs = images.clone().requires_grad_(True)
        view(inputs)[:, 0].sum().backward()
        return inputs.grad

    torch.testing.assert_close(gradient(routed), gradient(votes))


def test_capsule_only_attacks_refuse_a_cnn():
    torch.manual_seed(0)
    cnn = build_model(recipe("cnn-tiny")).eval()
    images, labels = torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    for name in ("vote-apgd-ce", "vote-apgd-t", "apgd-ce-lengths"):
        with pytest.raises(AttackError, match=f"{name} attacks capsules \\(votes or lengths\\); CNN has none"):
            run_attack(name, cnn, images, labels, eps=0.1)
    with pytest.raises(ObjectiveError, match="drop the vote-\\* attacks"):
        vote_target(cnn)


# ---------------------------------------------------------------------------------------- the attacks, for real


@pytest.fixture(scope="module")
def cnn(trained_runs):
    return load_checkpoint(trained_runs["cnn-tiny"]).model.eval()


@pytest.fixture(scope="module")
def capsnet(trained_runs):
    return load_checkpoint(trained_runs["capsnet-tiny"]).model.eval()


def _robust(model, adversarials, labels) -> torch.Tensor:
    return predict(model, adversarials) == labels


def test_apgd_ce_breaks_at_least_as_many_images_as_fgsm(cnn, mnist5k):
    images, labels = mnist5k.test.images[:100], mnist5k.test.labels[:100]
    fgsm = run_attack("fgsm", cnn, images, labels, eps=0.1, seed=0)
    apgd = run_attack("apgd-ce", cnn, images, labels, eps=0.1, params={"steps": 20}, seed=0)
    fgsm_robust, apgd_robust = _robust(cnn, fgsm.adversarials, labels), _robust(cnn, apgd.adversarials, labels)
    assert apgd_robust.sum() < fgsm_robust.sum()  # strictly stronger on this model and seed
    assert apgd.steps_or_queries == 20 and apgd.objective_used == "ce(logits)"


def test_apgd_ce_differentiates_log_lengths_whatever_the_objective(capsnet, mnist5k):
    images, labels = mnist5k.test.images[:4], mnist5k.test.labels[:4]
    for objective in ("ce-lengths", "margin"):
        used = run_attack("apgd-ce", capsnet, images, labels, eps=0.1, params={"steps": 1}, objective=objective)
        assert used.objective_used == "ce(log-lengths)"
    dlr = run_attack("apgd-t", capsnet, images, labels, eps=0.1, params={"steps": 1, "targets": 1})
    assert dlr.objective_used == "dlr-targeted(log-lengths)"
    raw = run_attack("apgd-ce-lengths", capsnet, images, labels, eps=0.1, params={"steps": 1}, objective="margin")
    assert raw.objective_used == "ce(lengths)"


def test_apgd_t_aims_at_the_runner_up_classes_never_the_label(cnn, mnist5k, monkeypatch):
    images, labels = mnist5k.test.images[:30], mnist5k.test.labels[:30]
    aimed: list[tuple[torch.Tensor, torch.Tensor]] = []

    def spy(batch_labels: torch.Tensor, targets: torch.Tensor, classes: int) -> np.ndarray:
        aimed.append((batch_labels.clone(), targets.clone()))
        return target_rows(batch_labels, targets, classes)

    monkeypatch.setattr(art_backend_module, "target_rows", spy)
    run_attack("apgd-t", cnn, images, labels, eps=0.05, params={"steps": 3, "targets": 3})
    assert len(aimed) >= 1
    for batch_labels, targets in aimed:
        assert (targets != batch_labels).all()
    first_labels, first_targets = aimed[0]  # rank 1 on every clean-correct image: the best other class
    correct = predict(cnn, images) == labels
    scores = cnn(images[correct]).logits.detach()
    expected = scores.scatter(1, labels[correct][:, None], float("-inf")).argmax(dim=1)
    assert torch.equal(first_labels, labels[correct]) and torch.equal(first_targets, expected)


SMALL_AA = {"apgd_steps": 10, "targets": 3, "square_queries": 100}


def test_autoattack_is_no_more_robust_than_its_members_alone(cnn, mnist5k):
    images, labels = mnist5k.test.images[:60], mnist5k.test.labels[:60]
    eps = 0.12
    ensemble = run_attack("autoattack", cnn, images, labels, eps=eps, params=SMALL_AA, seed=3)
    alone = {
        "apgd-ce": run_attack("apgd-ce", cnn, images, labels, eps=eps, params={"steps": 10}, seed=3),
        "apgd-t": run_attack("apgd-t", cnn, images, labels, eps=eps, params={"steps": 10, "targets": 3}, seed=3),
        "square": run_attack("square", cnn, images, labels, eps=eps, params={"queries": 100}, seed=3,
                             objective="ce-log-lengths"),
    }
    robust = _robust(cnn, ensemble.adversarials, labels)
    member_robust = {name: _robust(cnn, result.adversarials, labels) for name, result in alone.items()}
    # APGD-CE runs first, from the same seed, on the same images: per image, AutoAttack keeps all it found
    assert not (robust & ~member_robust["apgd-ce"]).any()
    for name, member in member_robust.items():
        assert robust.sum() <= member.sum(), name
    assert robust.sum() < member_robust["apgd-ce"].sum()  # the later members add breaks on this model and seed
    assert ensemble.steps_or_queries == 10 * (1 + 3) + 100
    assert "no fab-t" in ensemble.objective_used and "no FAB-T" in get_attack("autoattack").description
    delta = (ensemble.adversarials - images).flatten(1).abs().amax(dim=1)
    assert (delta <= eps + 1e-6).all() and ensemble.adversarials.min() >= 0 and ensemble.adversarials.max() <= 1
    unbroken = robust | (predict(cnn, images) != labels)
    assert torch.equal(ensemble.adversarials[unbroken], images[unbroken])  # the clean image where nothing worked


def test_vote_apgd_breaks_the_routed_capsnet_within_its_ball(capsnet, mnist5k):
    images, labels = mnist5k.test.images[:20], mnist5k.test.labels[:20]
    for name, params in (("vote-apgd-ce", {"steps": 10}), ("vote-apgd-t", {"steps": 10, "targets": 2})):
        result = run_attack(name, capsnet, images, labels, eps=0.15, params=params)
        delta = (result.adversarials - images).flatten(1).abs().amax(dim=1)
        assert (delta <= 0.15 + 1e-6).all() and result.adversarials.min() >= 0 and result.adversarials.max() <= 1
        assert _robust(capsnet, result.adversarials, labels).sum() < _robust(capsnet, images, labels).sum()
        assert "(votes log-lengths)" in result.objective_used


def test_a_sweep_takes_the_new_attacks_into_the_best_attack_rows_and_checks(trained_runs, mnist5k, tmp_path):
    suite = suite_from_dict({
        "suite": {"double_steps_check": False},
        "attack": [
            {"name": "fgsm", "eps": [0.1]},
            {"name": "pgd-linf", "eps": [0.1], "params": {"steps": 5}},
            {"name": "apgd-ce", "eps": [0.1], "params": {"steps": 10}},
            {"name": "autoattack", "eps": [0.1], "params": SMALL_AA},
        ],
    }, source="aa.toml")
    results = run_sweep([trained_runs["cnn-tiny"]], suite, mnist5k, out_dir=tmp_path, n=40, device="cpu",
                        progress=False)
    tables = load_sweep(tmp_path)
    best = worst_case(tables.results, tables.examples)
    assert len(best) == 1 and "autoattack/art" in best.loc[0, "attacks"]
    assert best.loc[0, "robust_accuracy"] <= results["robust_accuracy"].min()
    checks = tables.checks.set_index("check")
    assert checks.loc["pgd-vs-apgd", "status"] in {"pass", "flag"}
    assert (results["n_out_of_ball"] == 0).all() and (results["n_out_of_bounds"] == 0).all()
    assert set(pd.unique(results["attack"])) == {"fgsm", "pgd-linf", "apgd-ce", "autoattack"}


def test_refusals(cnn):
    images, labels = torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    with pytest.raises(AttackError, match="'targets' must be ≤ 9"):
        run_attack("apgd-t", cnn, images, labels, eps=0.1, params={"targets": 10})
    with pytest.raises(AttackError, match="needs eps > 0"):
        run_attack("apgd-ce", cnn, images, labels, eps=0.0)
    with pytest.raises(AttackError, match="apgd-ce is not available in foolbox"):
        run_attack("apgd-ce", cnn, images, labels, eps=0.1, backend="foolbox")


def test_every_apgd_attack_is_registered_as_documented():
    for name in ("apgd-ce", "apgd-ce-lengths", "apgd-dlr", "apgd-t", "vote-apgd-ce", "vote-apgd-t", "autoattack"):
        spec = get_attack(name)
        assert spec.norm is Norm.LINF and spec.needs_positive_eps and not spec.gradient_free
    assert get_attack("autoattack").ensemble and not get_attack("apgd-t").ensemble
    assert get_attack("vote-apgd-t").needs_capsules
    defaults = get_attack("autoattack").resolve_params()
    assert defaults == {"apgd_steps": 100, "restarts": 1, "targets": 9, "square_queries": 5000, "rel_step": 2.0,
                        "p_init": 0.8}
    assert get_attack("apgd-t").resolve_params()["targets"] == 9
