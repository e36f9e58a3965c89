"""Self-checks: each flags the broken evaluation it is meant to catch, and passes a sound one."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from capsrobust.attacks import AttackResult, Backend, Norm, register_attack
from capsrobust.attacks.objectives import AttackTarget, attack_target
from capsrobust.attacks.registry import unregister_attack
from capsrobust.attacks.suites import suite_from_dict
from capsrobust.evaluation.checks import (
    Status,
    check_backends_agree,
    check_double_steps,
    check_eps_zero,
    check_gradient_free,
    check_large_eps,
    check_model,
    check_monotone,
    check_pgd_vs_apgd,
    check_pgd_vs_fgsm,
    checks_frame,
)
from capsrobust.evaluation.store import load_sweep
from capsrobust.evaluation.sweep import run_sweep
from capsrobust.models.recipes import build_model
from tests.conftest import recipe


def row(**values) -> dict:
    base = {"model": "m", "role": "attack", "check_of": "", "label": "pgd-linf", "attack": "pgd-linf",
            "backend": "art", "norm": "linf", "kind": "bounded", "gradient_free": False, "eps": 0.1,
            "clean_accuracy": 0.99, "robust_accuracy": 0.5, "steps_or_queries": 10, "n_out_of_bounds": 0,
            "n_out_of_ball": 0}
    return {**base, **values}


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def test_eps_zero():
    assert check_eps_zero("m", frame(row(eps=0.0, robust_accuracy=0.99))).status is Status.PASS
    assert check_eps_zero("m", frame(row(eps=0.0, robust_accuracy=0.98))).status is Status.FLAG
    assert check_eps_zero("m", frame(row())).status is Status.SKIP


def test_monotone_in_eps():
    falling = frame(row(eps=0.1, robust_accuracy=0.6), row(eps=0.2, robust_accuracy=0.3))
    rising = frame(row(eps=0.1, robust_accuracy=0.3), row(eps=0.2, robust_accuracy=0.6))
    assert check_monotone("m", falling).status is Status.PASS
    flagged = check_monotone("m", rising)
    assert flagged.status is Status.FLAG and "rises to 60.0% at eps 0.2" in flagged.detail


def test_large_eps_must_break_an_undefended_model():
    assert check_large_eps("m", frame(row(eps=0.3, robust_accuracy=0.02))).status is Status.PASS
    masked = check_large_eps("m", frame(row(eps=0.3, robust_accuracy=0.6)))
    assert masked.status is Status.FLAG and "gradient masking" in masked.detail
    assert check_large_eps("m", frame(row(eps=0.1))).status is Status.SKIP


def test_an_adversarially_trained_model_is_tested_beyond_its_training_eps():
    madry = {"train_linf_eps": 0.3}  # robust at its training eps by design: not a sign of masking
    at_training_eps = check_large_eps("m", frame(row(eps=0.3, robust_accuracy=0.89, **madry)))
    assert at_training_eps.status is Status.SKIP and "add eps ≥ 0.5 (adversarially trained at L∞ 0.3)" in \
        at_training_eps.detail
    falls = frame(row(eps=0.3, robust_accuracy=0.89, **madry), row(eps=0.5, robust_accuracy=0.04, **madry))
    assert check_large_eps("m", falls).status is Status.PASS
    holds = check_large_eps("m", frame(row(eps=0.5, robust_accuracy=0.7, **madry)))
    assert holds.status is Status.FLAG and "gradient masking" in holds.detail
    natural = {"train_linf_eps": None}  # a naturally trained model in the same table: 0.3 is large enough
    assert check_large_eps("m", frame(row(eps=0.3, robust_accuracy=0.6, **natural))).status is Status.FLAG


def test_pgd_must_beat_fgsm():
    fgsm = row(label="fgsm", attack="fgsm", robust_accuracy=0.4)
    assert check_pgd_vs_fgsm("m", frame(fgsm, row(robust_accuracy=0.3))).status is Status.PASS
    assert check_pgd_vs_fgsm("m", frame(fgsm, row(robust_accuracy=0.5))).status is Status.FLAG


def test_double_steps_flags_an_unconverged_pgd():
    base = row(robust_accuracy=0.5)
    converged = row(role="check", label="pgd-linf-2x-steps", check_of="pgd-linf", robust_accuracy=0.49,
                    steps_or_queries=20)
    unconverged = {**converged, "robust_accuracy": 0.3}
    assert check_double_steps("m", frame(base, converged)).status is Status.PASS
    flagged = check_double_steps("m", frame(base, unconverged))
    assert flagged.status is Status.FLAG and "not converged" in flagged.detail
    assert check_double_steps("m", frame(base)).status is Status.SKIP


def test_gradient_free_must_not_beat_pgd():
    square = row(label="square", attack="square", gradient_free=True, robust_accuracy=0.6)
    assert check_gradient_free("m", frame(row(robust_accuracy=0.5), square)).status is Status.PASS
    flagged = check_gradient_free("m", frame(row(robust_accuracy=0.8), square))
    assert flagged.status is Status.FLAG and "masked" in flagged.detail


def test_gradient_free_is_compared_with_the_strongest_gradient_attack_not_autoattack():
    square = row(label="square", attack="square", gradient_free=True, robust_accuracy=0.6)
    pgd = row(robust_accuracy=0.8)
    apgd = row(label="apgd-ce", attack="apgd-ce", robust_accuracy=0.55)
    # Square beats PGD, but APGD is stronger still: the gradients are not masked
    assert check_gradient_free("m", frame(pgd, apgd, square)).status is Status.PASS
    # Square beats APGD too: flagged, naming the strongest gradient cell
    weak_apgd = {**apgd, "robust_accuracy": 0.7}
    flagged = check_gradient_free("m", frame(pgd, weak_apgd, square))
    assert flagged.status is Status.FLAG and "square/art@0.1 60.0% < apgd-ce/art@0.1 70.0%" in flagged.detail
    # AutoAttack runs Square itself: it is no gradient attack, on either side of the comparison
    autoattack = row(label="autoattack", attack="autoattack", robust_accuracy=0.4)
    assert check_gradient_free("m", frame(pgd, weak_apgd, square, autoattack)).status is Status.FLAG
    # an L2 cell at the same number is another threat model
    l2 = row(label="pgd-l2", attack="pgd-l2", norm="l2", robust_accuracy=0.1)
    assert check_gradient_free("m", frame(pgd, weak_apgd, square, l2)).status is Status.FLAG
    assert check_gradient_free("m", frame(square, autoattack)).status is Status.SKIP


def test_pgd_vs_apgd_flags_a_pgd_that_under_attacks():
    pgd = row(robust_accuracy=0.50)
    close = row(label="apgd-ce", attack="apgd-ce", robust_accuracy=0.48)  # exactly two points: within tolerance
    assert check_pgd_vs_apgd("m", frame(pgd, close)).status is Status.PASS
    autoattack = row(label="autoattack", attack="autoattack", robust_accuracy=0.40)
    flagged = check_pgd_vs_apgd("m", frame(pgd, close, autoattack))
    assert flagged.status is Status.FLAG and "autoattack/art@0.1 40.0% < pgd-linf 50.0%" in flagged.detail
    # the strongest PGD cell counts (e.g. the restarts entry), not the first
    restarts = row(label="pgd-linf-restarts", robust_accuracy=0.41)
    assert check_pgd_vs_apgd("m", frame(pgd, restarts, autoattack)).status is Status.PASS
    # the vote attacks are compared with the vote PGD, not with PGD on the model
    vote_pgd = row(label="vote-pgd-linf", attack="vote-pgd-linf", robust_accuracy=0.7)
    vote_apgd = row(label="vote-apgd-t", attack="vote-apgd-t", robust_accuracy=0.6)
    flagged = check_pgd_vs_apgd("m", frame(pgd, vote_pgd, vote_apgd))
    assert flagged.status is Status.FLAG and "< vote-pgd-linf 70.0%" in flagged.detail
    assert check_pgd_vs_apgd("m", frame(pgd, row(label="apgd-ce", attack="apgd-ce", eps=0.2))).status is Status.SKIP


def test_backends_must_agree_within_two_points():
    art, foolbox = row(robust_accuracy=0.50), row(backend="foolbox", robust_accuracy=0.515)
    assert check_backends_agree("m", frame(art, foolbox)).status is Status.PASS
    far = {**foolbox, "robust_accuracy": 0.6}
    assert check_backends_agree("m", frame(art, far)).status is Status.FLAG
    assert check_backends_agree("m", frame(art)).status is Status.SKIP
    # Exactly two points apart (66 vs 64 of 100) is "within 2 points", whatever the floating-point rounding says.
    exact = row(robust_accuracy=66 / 100), row(backend="foolbox", robust_accuracy=64 / 100)
    assert check_backends_agree("m", frame(*exact)).status is Status.PASS


class _Noisy(torch.nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)[:, :10] + torch.randn(images.shape[0], 10)


class _Flat(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.randn(10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return 0 * images.flatten(1)[:, :10] + self.bias


def test_model_checks_flag_zero_gradients_and_randomness():
    images, labels = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    gradients, deterministic = check_model("flat", AttackTarget(_Flat(), "logits", "ce"), images, labels)
    assert gradients.status is Status.FLAG and "4 zero" in gradients.detail
    assert deterministic.status is Status.PASS
    _, noisy = check_model("noisy", AttackTarget(_Noisy(), "logits", "ce"), images, labels)
    assert noisy.status is Status.FLAG
    torch.manual_seed(0)
    capsnet = build_model(recipe("capsnet-tiny"))
    sound = check_model("capsnet", attack_target(capsnet), images, labels)
    assert [check.status for check in sound] == [Status.PASS, Status.PASS]


def test_checks_frame_puts_flags_first():
    from capsrobust.evaluation.checks import Check

    table = checks_frame([Check("a", "m", Status.PASS, ""), Check("b", "m", Status.FLAG, ""),
                          Check("c", "m", Status.SKIP, "")])
    assert list(table["status"]) == ["flag", "pass", "skip"]


@pytest.fixture
def broken_attack():
    """An 'attack' that steps twice past its budget and out of [0, 1] on every other image."""

    @register_attack("broken-test", norm=Norm.LINF, backends=(Backend.ART,))
    def broken(call):
        """Violates its threat model on purpose."""
        signs = torch.where(torch.arange(call.images[0].numel()) % 2 == 0, 1.0, -1.0).view_as(call.images[0])
        adversarials = (call.images + 2 * call.eps * signs).clamp(0, 1)  # in [0, 1], outside the ball
        adversarials[::2] += 1.0  # and every other image far outside [0, 1]
        return AttackResult(adversarials, 1, "none")

    yield "broken-test"
    unregister_attack("broken-test")


def test_a_sweep_counts_the_violations_of_a_broken_attack(broken_attack, trained_runs, mnist5k, tmp_path):
    suite = suite_from_dict({"attack": [{"name": broken_attack, "eps": [0.1]}]}, source="broken.toml")
    results = run_sweep([trained_runs["cnn-tiny"]], suite, mnist5k, out_dir=tmp_path, n=10, device="cpu",
                        progress=False)
    assert results.loc[0, "n_out_of_ball"] == 10 and results.loc[0, "n_out_of_bounds"] == 5
    checks = load_sweep(tmp_path).checks.set_index("check")
    assert checks.loc["in-ball", "status"] == "flag" and "10 adversarials outside" in checks.loc["in-ball", "detail"]
    assert checks.loc["in-bounds", "status"] == "flag" and "5 adversarials outside" in checks.loc["in-bounds", "detail"]
    examples = load_sweep(tmp_path).examples
    assert examples["linf"].max() > 1.0  # recorded as returned, never clipped


def test_checks_find_the_attacks_they_compare_by_role_not_by_name():
    from capsrobust.attacks import AttackRole, get_attack

    assert get_attack("fgsm").role is AttackRole.SINGLE_STEP and get_attack("pgd-linf").role is AttackRole.ITERATIVE
    assert get_attack("vote-pgd-linf").surface == "votes" and get_attack("apgd-t").surface == "model"
    assert get_attack("square").gradient_free and get_attack("autoattack").ensemble

    # a new iterative L∞ attack registered under another name is held to "PGD beats FGSM" like PGD itself
    @register_attack("my-pgd", norm=Norm.LINF, backends=(Backend.ART,), role=AttackRole.ITERATIVE)
    def my_pgd(call):
        """A stand-in iterative attack (never run here)."""
        raise AssertionError("not run")

    try:
        rows = pd.DataFrame([
            {"attack": "fgsm", "role": "attack", "backend": "art", "eps": 0.1, "robust_accuracy": 0.5},
            {"attack": "my-pgd", "role": "attack", "backend": "art", "eps": 0.1, "robust_accuracy": 0.7},
        ])
        flagged = check_pgd_vs_fgsm("m", rows)
        assert flagged.status is Status.FLAG and "FGSM beats PGD" in flagged.detail
    finally:
        unregister_attack("my-pgd")
