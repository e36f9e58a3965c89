"""The attacks as the Adversarial Robustness Toolbox (ART) implements them, on an ``AttackTarget``.

Each function builds ART's ``PyTorchClassifier`` over the target's score view (``capsrobust.adapters``), runs the
ART attack with true labels (never the model's predictions, to avoid label leaking) and returns the adversarials
exactly as ART returned them.
"""

from __future__ import annotations

import numpy as np
import torch

from capsrobust.adapters import AttackTarget, art_classifier
from capsrobust.attacks.registry import AttackCall, AttackError, AttackResult, Norm

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

    p = call.params
    random_inits = int(p["restarts"]) if p["random_start"] else 0
    attack = ProjectedGradientDescent(
        art_classifier(target, call.device), norm=_order(norm), eps=call.eps,
        eps_step=_positive(float(p["rel_step"]) * call.eps), max_iter=int(p["steps"]),
        num_random_init=random_inits, batch_size=call.batch_size, verbose=False,
    )
    return AttackResult(_generate(attack, call), int(p["steps"]) * int(p["restarts"]), target.describe())


def cw_l2(target: AttackTarget, call: AttackCall) -> AttackResult:
    """ART's Carlini–Wagner L2: its own margin loss on the target's scores; eps plays no part in the search."""
    from art.attacks.evasion import CarliniL2Method

    p = call.params
    attack = CarliniL2Method(
        art_classifier(target, call.device), confidence=float(p["confidence"]), targeted=False,
        learning_rate=float(p["learning_rate"]), binary_search_steps=int(p["binary_search_steps"]),
        max_iter=int(p["max_iter"]), initial_const=float(p["initial_const"]), batch_size=call.batch_size,
        verbose=False,
    )
    budget = int(p["binary_search_steps"]) * int(p["max_iter"])
    return AttackResult(_generate(attack, call), budget, target.describe("cw"))


def square(target: AttackTarget, call: AttackCall) -> AttackResult:
    """ART's Square Attack (L∞), gradient-free: only the scores' margin is queried."""
    from art.attacks.evasion import SquareAttack

    p = call.params
    attack = SquareAttack(
        art_classifier(target, call.device), norm=np.inf, max_iter=int(p["queries"]), eps=call.eps,
        p_init=float(p["p_init"]), nb_restarts=int(p["restarts"]), batch_size=call.batch_size, verbose=False,
    )
    return AttackResult(_generate(attack, call), int(p["queries"]) * int(p["restarts"]), target.describe("square"))


def autoattack(target: AttackTarget, call: AttackCall) -> AttackResult:
    """ART's ``AutoAttack`` (L∞) with its standard ensemble: APGD-CE, APGD-DLR, DeepFool and Square.

    The ensemble is spelled out (it is ART's default list) so that iterations and restarts are settings; ART
    keeps, per example, the first attack whose adversarial is misclassified within eps.
    """
    try:
        import multiprocess  # noqa: F401  (ART's AutoAttack imports it unconditionally)
    except ImportError:
        raise AttackError("ART's AutoAttack needs the package multiprocess: pip install multiprocess") from None
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, DeepFool, SquareAttack

    p = call.params
    classifier = art_classifier(target, call.device)
    steps, restarts, queries = int(p["apgd_steps"]), int(p["restarts"]), int(p["square_queries"])
    eps_step = float(p["rel_step"]) * call.eps
    apgd = {
        "estimator": classifier, "norm": np.inf, "eps": call.eps, "eps_step": eps_step, "max_iter": steps,
        "targeted": False, "nb_random_init": restarts, "batch_size": call.batch_size, "verbose": False,
    }
    attacks = [
        AutoProjectedGradientDescent(**apgd, loss_type="cross_entropy"),
        AutoProjectedGradientDescent(**apgd, loss_type="difference_logits_ratio"),
        DeepFool(classifier, max_iter=100, epsilon=1e-3, nb_grads=10, batch_size=call.batch_size, verbose=False),
        SquareAttack(classifier, norm=np.inf, max_iter=queries, eps=call.eps, p_init=0.8, nb_restarts=restarts,
                     batch_size=call.batch_size, verbose=False),
    ]
    attack = AutoAttack(classifier, norm=np.inf, eps=call.eps, eps_step=eps_step, attacks=attacks,
                        batch_size=call.batch_size)
    budget = 2 * steps * restarts + 100 + queries * restarts
    return AttackResult(_generate(attack, call), budget, target.describe("apgd-ce+apgd-dlr+deepfool+square"))
