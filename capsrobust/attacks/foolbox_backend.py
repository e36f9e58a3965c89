"""The attacks as Foolbox 3 implements them, on an ``AttackTarget``.

Foolbox keeps the loss inside the attack (cross-entropy on the model's outputs); for the margin objectives the
attack classes are subclassed to maximise the CW margin instead (Foolbox documents ``get_loss_fn`` as the hook
for this). Adversarials come back as Foolbox's *raw* output, never its eps-clipped copy, so that the sweep's
checks see what the attack really did.
"""

from __future__ import annotations

from typing import Any

import torch

from capsrobust.attacks.objectives import AttackTarget, MarginLoss, foolbox_model
from capsrobust.attacks.params import CwParams, PgdParams
from capsrobust.attacks.registry import AttackCall, AttackResult, Norm


def _with_loss(attack_class: type, target: AttackTarget) -> type:
    """``attack_class`` itself for cross-entropy; a subclass maximising the target's own loss or the CW margin.

    The loss is swapped through ``get_loss_fn``, Foolbox's documented hook.
    """
    if target.custom_loss is None and target.loss == "ce":
        return attack_class
    loss = target.custom_loss if target.custom_loss is not None else MarginLoss()

    def get_loss_fn(self: Any, model: Any, labels: Any) -> Any:
        import eagerpy as ep

        def loss_fn(inputs: Any) -> Any:
            return ep.astensor(loss(model(inputs).raw, labels.raw))

        return loss_fn

    prefix = "Custom" if target.custom_loss is not None else "Margin"
    return type(f"{prefix}{attack_class.__name__}", (attack_class,), {"get_loss_fn": get_loss_fn})


def _run(attack: Any, target: AttackTarget, call: AttackCall, epsilon: float | None, restarts: int = 1) -> torch.Tensor:
    """Run ``attack`` batch by batch; with restarts keep, per example, the first adversarial that succeeded."""
    model = foolbox_model(target, call.device)
    batches = []
    for start in range(0, call.images.shape[0], call.batch_size):
        images = call.images[start : start + call.batch_size].to(call.device)
        labels = call.labels[start : start + call.batch_size].to(call.device)
        best, found = None, None
        for _ in range(restarts):
            raw, _, success = attack(model, images, labels, epsilons=epsilon)
            raw, success = raw.detach(), success.detach()
            if best is None or found is None:
                best, found = raw, success
                continue
            take = success & ~found
            best = torch.where(take[:, None, None, None], raw, best)
            found = found | success
        assert best is not None
        batches.append(best.cpu().float())
    return torch.cat(batches)


def fgsm(target: AttackTarget, call: AttackCall) -> AttackResult:
    import foolbox

    attack = _with_loss(foolbox.attacks.LinfFastGradientAttack, target)(random_start=False)
    return AttackResult(_run(attack, target, call, call.eps), 1, target.describe())


def pgd(target: AttackTarget, call: AttackCall, norm: Norm) -> AttackResult:
    """Foolbox's PGD (``rel_stepsize`` = ``rel_step``); restarts are repeated runs, each from a new random start."""
    import foolbox

    p = call.params_as(PgdParams)
    base = foolbox.attacks.LinfPGD if norm is Norm.LINF else foolbox.attacks.L2PGD
    attack = _with_loss(base, target)(rel_stepsize=p.rel_step, steps=p.steps, random_start=p.random_start)
    adversarials = _run(attack, target, call, call.eps, restarts=p.restarts)
    return AttackResult(adversarials, p.budget, target.describe())


def cw_l2(target: AttackTarget, call: AttackCall) -> AttackResult:
    """Foolbox's Carlini–Wagner L2 (Adam, binary search over the constant), unbounded (``epsilons=None``).

    Foolbox returns an all-zero image where it found no adversarial; those examples get their clean image
    back (a failed attack leaves the input unchanged), which is what ART returns too.
    """
    import foolbox

    p = call.params_as(CwParams)
    attack = foolbox.attacks.L2CarliniWagnerAttack(
        binary_search_steps=p.binary_search_steps, steps=p.max_iter, stepsize=p.learning_rate,
        confidence=p.confidence, initial_const=p.initial_const, abort_early=True,
    )
    adversarials = _run(attack, target, call, None)
    failed = adversarials.flatten(1).abs().amax(dim=1) == 0  # (N,)
    adversarials[failed] = call.images[failed]
    return AttackResult(adversarials, p.budget, target.describe("cw"))
