"""The attacks as the Adversarial Robustness Toolbox (ART) implements them, on an ``AttackTarget``.

Each function builds ART's ``PyTorchClassifier`` over the target's score view (``capsrobust.attacks.objectives``),
runs the ART attack with true labels (never the model's predictions, to avoid label leaking) and returns the
adversarials exactly as ART returned them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from capsrobust.attacks.autoattack import DLRLoss, Member, Predict, first_success, runner_up_targets, target_rows
from capsrobust.attacks.objectives import AttackTarget, art_classifier
from capsrobust.attacks.params import (
    ApgdParams,
    ApgdTargetedParams,
    AutoAttackParams,
    CwParams,
    PgdParams,
    SquareParams,
)
from capsrobust.attacks.registry import AttackCall, AttackResult, Norm
from capsrobust.models.inference import predict

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

# ART refuses a step size of 0. At eps = 0 the projection onto the zero ball undoes any step, so a tiny positive
# step leaves the result (the clean image) unchanged while still running ART's own code path.
MIN_STEP = 1e-12


def _positive(step: float) -> float:
    return max(step, MIN_STEP)


def _generate(attack: object, call: AttackCall) -> torch.Tensor:
    adversarials = attack.generate(x=call.images.numpy(), y=call.labels.numpy())  # type: ignore[attr-defined]
    return torch.from_numpy(np.asarray(adversarials, dtype=np.float32))


def _order(norm: Norm) -> float:
    return np.inf if norm is Norm.LINF else 2.0


def fgsm(target: AttackTarget, call: AttackCall) -> AttackResult:
    from art.attacks.evasion import FastGradientMethod

    attack = FastGradientMethod(
        art_classifier(target, call.device), norm=np.inf, eps=call.eps, eps_step=_positive(call.eps),
        num_random_init=0, batch_size=call.batch_size,
    )
    return AttackResult(_generate(attack, call), 1, target.describe())


def pgd(target: AttackTarget, call: AttackCall, norm: Norm) -> AttackResult:
    """PGD with ``steps`` steps of ``rel_step · eps``; ``restarts`` random starts (ART's ``num_random_init``)."""
    from art.attacks.evasion import ProjectedGradientDescent

    p = call.params_as(PgdParams)
    attack = ProjectedGradientDescent(
        art_classifier(target, call.device), norm=_order(norm), eps=call.eps, eps_step=_positive(p.rel_step * call.eps),
        max_iter=p.steps, num_random_init=p.restarts if p.random_start else 0, batch_size=call.batch_size,
        verbose=False,
    )
    return AttackResult(_generate(attack, call), p.budget, target.describe())


def cw_l2(target: AttackTarget, call: AttackCall) -> AttackResult:
    """ART's Carlini–Wagner L2: its own margin loss on the target's scores; eps plays no part in the search."""
    from art.attacks.evasion import CarliniL2Method

    p = call.params_as(CwParams)
    attack = CarliniL2Method(
        art_classifier(target, call.device), confidence=p.confidence, targeted=False, learning_rate=p.learning_rate,
        binary_search_steps=p.binary_search_steps, max_iter=p.max_iter, initial_const=p.initial_const,
        batch_size=call.batch_size, verbose=False,
    )
    return AttackResult(_generate(attack, call), p.budget, target.describe("cw"))


def _square_attack(classifier: PyTorchClassifier, call: AttackCall, queries: int, restarts: int, p_init: float) -> Any:
    from art.attacks.evasion import SquareAttack

    return SquareAttack(classifier, norm=np.inf, max_iter=queries, eps=call.eps, p_init=p_init, nb_restarts=restarts,
                        batch_size=call.batch_size, verbose=False)


def square(target: AttackTarget, call: AttackCall) -> AttackResult:
    """ART's Square Attack (L∞), gradient-free: only the scores' margin is queried.

    ART evaluates the model three times per query (robustness, current and new margin), so it runs at about a
    third of the speed its query count suggests.
    """
    p = call.params_as(SquareParams)
    attack = _square_attack(art_classifier(target, call.device), call, p.queries, p.restarts, p.p_init)
    return AttackResult(_generate(attack, call), p.budget, target.describe("square"))


# ---------------------------------------------------------------------------------------------------------------
# APGD and AutoAttack (Croce & Hein 2020). ART 1.20's APGD differs from the reference implementation in two ways
# worth knowing: it keeps an image's *last* iterate (and only if it is misclassified), not the best one seen; and it
# evaluates the loss and its gradient in separate passes (two forward passes and one backward per iteration).


def _apgd_attack(classifier: PyTorchClassifier, call: AttackCall, settings: ApgdParams, loss_type: str | None) -> Any:
    """ART's APGD, untargeted in ART's sense (it maximises the loss and succeeds on a misclassification).

    ``loss_type="cross_entropy"``: ART builds cross-entropy on the classifier's outputs itself; ``None``: the
    classifier's own loss (capsrobust's DLR). Each restart starts from a uniform random point in the ball and
    attacks only the images earlier restarts left robust.
    """
    from art.attacks.evasion import AutoProjectedGradientDescent

    return AutoProjectedGradientDescent(
        classifier, norm=np.inf, eps=call.eps, eps_step=_positive(settings.rel_step * call.eps),
        max_iter=settings.steps, targeted=False, nb_random_init=settings.restarts, batch_size=call.batch_size,
        loss_type=loss_type, verbose=False,
    )


def _run(attack: Any, images: torch.Tensor, labels: torch.Tensor | np.ndarray) -> torch.Tensor:
    rows = labels.numpy() if isinstance(labels, torch.Tensor) else labels
    return torch.from_numpy(np.asarray(attack.generate(x=images.numpy(), y=rows), dtype=np.float32))


def _predictor(call: AttackCall) -> Predict:
    """The attacked model's own predictions (routing included, whatever view was differentiated), as the sweep
    will score them."""
    return lambda images: predict(call.model, images, call.device, call.batch_size)


def apgd_ce_member(target: AttackTarget, call: AttackCall, settings: ApgdParams) -> Member:
    """APGD-CE: cross-entropy on the target's scores (the catalog passes log-lengths for a CapsNet)."""
    attack = _apgd_attack(art_classifier(target, call.device), call, settings, "cross_entropy")
    return Member("apgd-ce", lambda images, labels: _run(attack, images, labels), settings.budget)


def apgd_t_members(target: AttackTarget, call: AttackCall, settings: ApgdParams, targets: int) -> list[Member]:
    """APGD-T: one member per runner-up class (ranked by the clean scores), each maximising the targeted DLR.

    A model with K ≤ ``targets`` classes has only K − 1 runner-ups: that many members.
    """
    classifier = art_classifier(target, call.device, loss=DLRLoss(targeted=True))
    attack = _apgd_attack(classifier, call, settings, None)
    classes = classifier.nb_classes

    def aim(rank: int) -> Member:
        def run(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            scores = torch.from_numpy(classifier.predict(images.numpy(), batch_size=call.batch_size))  # (M, K)
            aims = runner_up_targets(scores, labels, rank)  # (M,)
            return _run(attack, images, target_rows(labels, aims, classes))

        return Member(f"apgd-t-{rank}", run, settings.budget)

    return [aim(rank) for rank in range(1, min(targets, classes - 1) + 1)]


def square_member(target: AttackTarget, call: AttackCall, queries: int, p_init: float) -> Member:
    """Square Attack with one restart, as in AutoAttack's standard version."""
    attack = _square_attack(art_classifier(target, call.device), call, queries, 1, p_init)
    return Member("square", lambda images, labels: _run(attack, images, labels), queries)


def apgd_ce(target: AttackTarget, call: AttackCall) -> AttackResult:
    """ART's APGD with cross-entropy on the target's scores (where it fails, ART returns its last random start)."""
    member = apgd_ce_member(target, call, call.params_as(ApgdParams))
    return AttackResult(member.run(call.images, call.labels), member.budget, target.describe("ce"))


def apgd_dlr(target: AttackTarget, call: AttackCall) -> AttackResult:
    """ART's APGD maximising the untargeted DLR loss on the target's scores."""
    settings = call.params_as(ApgdParams)
    attack = _apgd_attack(art_classifier(target, call.device, loss=DLRLoss()), call, settings, None)
    return AttackResult(_run(attack, call.images, call.labels), settings.budget, target.describe("dlr"))


def apgd_t(target: AttackTarget, call: AttackCall) -> AttackResult:
    """APGD-T: the runner-up classes as targets in turn, each on the images no earlier target broke."""
    p = call.params_as(ApgdTargetedParams)
    members = apgd_t_members(target, call, p, p.targets)
    result = first_success(members, call.images, call.labels, _predictor(call), call.eps, Norm.LINF)
    return AttackResult(result.adversarials, result.budget, target.describe("dlr-targeted"))


def autoattack(ce_target: AttackTarget, dlr_target: AttackTarget, call: AttackCall) -> AttackResult:
    """AutoAttack's standard version without FAB-T: APGD-CE, APGD-T, Square, the first success per image.

    APGD-CE differentiates ``ce_target``'s scores, APGD-T's DLR and Square's margin read ``dlr_target``'s.
    ``steps_or_queries`` is the budget an image that survives everything has seen: APGD-CE's steps + APGD-T's steps
    over all targets + Square's queries.
    """
    p = call.params_as(AutoAttackParams)
    members = [
        apgd_ce_member(ce_target, call, p.apgd()),
        *apgd_t_members(dlr_target, call, p.apgd(), p.targets),
        square_member(dlr_target, call, p.square_queries, p.p_init),
    ]
    result = first_success(members, call.images, call.labels, _predictor(call), call.eps, Norm.LINF)
    ce, dlr = ce_target.scores, dlr_target.scores
    scores = ce if ce == dlr else f"ce: {ce}, dlr and margin: {dlr}"
    return AttackResult(result.adversarials, result.budget, f"apgd-ce+apgd-t+square({scores}), no fab-t")
