"""Adversarial training's inner maximisation: PGD (Madry et al. 2018) and TRADES (Zhang et al. 2019) in plain torch.

The training loop (``capsrobust.training.loop``) asks this module for the loss of one batch; a recipe's
``[adversarial]`` table (``AdversarialConfig``) says how to make it:

* ``pgd-linf`` / ``pgd-l2`` — Madry's min-max: PGD with a random start maximises the attack objective in the eps
  ball around each training image, and the model's own training loss is taken on those adversarial images.
* ``trades-linf`` / ``trades-l2`` — TRADES: PGD maximises KL(f(x) ‖ f(x')) between the softmax of the clean and the
  perturbed scores (logits; log-lengths for capsules); the loss is the natural training loss plus β·KL.

Why plain torch and not ART or Foolbox: the attack runs inside every training step, so it must be fast (no NumPy
round trips, no per-call classifier wrappers), run under the run's precision (tf32/bf16 on a GPU, as the training
forward does), and draw its random start from the epoch's generator so that a resumed run repeats the
uninterrupted one exactly.

The attack step runs the model in **eval mode**: dropout would make each PGD step attack a different random
sub-network (a noisy, weaker gradient) and batch-norm layers would fold half-finished adversarial batches into
their running statistics; the model being attacked is the one that is deployed and evaluated. The weights are
frozen while attacking (only the pixels need gradients), then the update runs in train mode as for natural training.

The Madry objective is what the evaluation attacks a model with (``capsrobust.attacks.objectives``): ``auto`` is the
model's default, and a capsule recipe may name another or the vote surrogate (``vote-margin``); which is strongest
against capsules was measured, see docs/adversarial-training.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from capsrobust.attacks.objectives import attack_target, frozen_parameters, loss_module
from capsrobust.attacks.vote import vote_target
from capsrobust.data import Split
from capsrobust.models import CapsRobustModel, ModelOutput
from capsrobust.models.recipes import AdversarialConfig
from capsrobust.precision import Precision, precision_scope

#: PGD's step in the robust validation, relative to eps: 2.5·eps/steps, the rule of Madry et al.'s robustness
#: library, lets the iterate cross the ball and back in any number of steps.
VALIDATION_STEP_RULE = 2.5
#: TRADES starts from x + 0.001·N(0, 1) (Zhang et al.'s code), not from a uniform draw in the ball.
TRADES_START_STD = 0.001

BatchLoss = Callable[[torch.Tensor], torch.Tensor]


def batch_eps(config: AdversarialConfig, epoch: int, progress: float) -> float:
    """The budget at ``progress`` ∈ (0, 1] through ``epoch`` (0-based): a linear ramp over ``warmup_epochs``."""
    if config.warmup_epochs == 0:
        return config.eps
    return config.eps * min(1.0, (epoch + progress) / config.warmup_epochs)


def random_start(images: torch.Tensor, norm: str, eps: float, generator: torch.Generator) -> torch.Tensor:
    """A uniform draw from the L∞ ball, or from the L2 ball (uniform in volume), around each image; drawn on the CPU
    from ``generator`` so the draw is the same on every device."""
    shape = images.shape
    if norm == "linf":
        delta = (torch.rand(shape, generator=generator) * 2 - 1) * eps
    else:
        direction = torch.randn(shape, generator=generator)
        direction /= direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        dims = images[0].numel()
        radius = eps * torch.rand(shape[0], generator=generator) ** (1.0 / dims)  # (B,)
        delta = direction * radius.view(-1, 1, 1, 1)
    return delta.to(images.device, images.dtype)


def project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """The nearest point of the eps ball around 0 (per image)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return delta * (eps / norms.clamp_min(1e-12)).clamp(max=1.0)


def pgd(
    loss_of: BatchLoss,
    images: torch.Tensor,
    *,
    norm: str,
    eps: float,
    steps: int,
    step_size: float,
    start: torch.Tensor | None,
    precision: Precision,
) -> torch.Tensor:
    """Projected gradient ascent on ``loss_of`` (summed over the batch) from ``images + start``.

    L∞ steps along the gradient's sign, L2 along the gradient normalised per image; every iterate is projected onto
    the eps ball and clipped to [0, 1]. The forward runs in ``precision``, the backward outside it (autocast's rule).
    """
    if eps == 0:
        return images.detach()
    adversarial = (images + project(start, norm, eps) if start is not None else images).clamp(0, 1).detach()
    for _ in range(steps):
        adversarial.requires_grad_(True)
        with precision_scope(precision, images.device):
            loss = loss_of(adversarial)
        (gradient,) = torch.autograd.grad(loss, adversarial)
        with torch.no_grad():
            if norm == "linf":
                direction = gradient.sign()
            else:
                direction = gradient / gradient.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            moved = adversarial + step_size * direction
            adversarial = (images + project(moved - images, norm, eps)).clamp(0, 1).detach()
    return adversarial


def objective_loss(model: CapsRobustModel, objective: str, labels: torch.Tensor) -> BatchLoss:
    """``images → summed loss`` of a Madry objective: ``auto``, an attack objective, or ``vote-`` and one.

    Builds the same views the evaluation attacks use (they put the model in eval mode).
    """
    if objective.startswith("vote-"):
        target = vote_target(model, objective.removeprefix("vote-"))
    else:
        target = attack_target(model, None if objective == "auto" else objective)
    loss = loss_module(target.loss)
    return lambda images: loss(target.view(images), labels)


def check_applies(model: CapsRobustModel, config: AdversarialConfig) -> None:
    """Refuse, before the first epoch, an objective the model cannot be attacked on (``vote-*`` needs capsule votes)."""
    if not config.trades:
        objective_loss(model, config.objective, torch.zeros(1, dtype=torch.long))


def kl_loss(clean_log_probs: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``logits' → KL(p ‖ softmax(logits'))`` summed over the batch, for fixed clean log-probabilities ``log p``."""
    return lambda logits: F.kl_div(F.log_softmax(logits.float(), dim=1), clean_log_probs, reduction="sum",
                                   log_target=True)


def adversarial_examples(
    model: CapsRobustModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: AdversarialConfig,
    *,
    eps: float,
    steps: int,
    step_size: float,
    generator: torch.Generator,
    precision: Precision,
) -> torch.Tensor:
    """The training attack's images for a batch (model left in eval mode; the caller restores train mode)."""
    model.eval()
    with frozen_parameters(model):
        if config.trades:
            with torch.no_grad(), precision_scope(precision, images.device):
                clean = F.log_softmax(model(images).logits.float(), dim=1)  # (B, C)
            kl = kl_loss(clean)
            start = TRADES_START_STD * torch.randn(images.shape, generator=generator).to(images.device)
            return pgd(lambda x: kl(model(x).logits), images, norm=config.norm, eps=eps, steps=steps,
                       step_size=step_size, start=start, precision=precision)
        start = random_start(images, config.norm, eps, generator) if config.random_start else None
        return pgd(objective_loss(model, config.objective, labels), images, norm=config.norm, eps=eps, steps=steps,
                   step_size=step_size, start=start, precision=precision)


def adversarial_loss(
    model: CapsRobustModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: AdversarialConfig,
    eps: float,
    generator: torch.Generator,
    precision: Precision,
) -> tuple[ModelOutput, torch.Tensor]:
    """One training batch's output on the adversarial images and the loss to minimise (model ends in train mode).

    Madry: the model's training loss on the adversarial images (capsule decoders reconstruct those images).
    TRADES: the training loss on the clean images plus β·KL(f(x) ‖ f(x')), the KL averaged over the batch.
    """
    step_size = config.step_size * eps / config.eps if config.eps > 0 else 0.0
    adversarial = adversarial_examples(model, images, labels, config, eps=eps, steps=config.steps,
                                       step_size=step_size, generator=generator, precision=precision)
    model.train()
    with precision_scope(precision, images.device):
        if not config.trades:
            output = model(adversarial, labels)
            return output, model.loss(output, adversarial, labels).total
        clean = model(images, labels)
        output = model(adversarial, labels)
        kl = kl_loss(F.log_softmax(clean.logits.float(), dim=1))(output.logits) / labels.shape[0]
        return output, model.loss(clean, images, labels).total + config.trades_beta * kl


def robust_accuracy(
    model: CapsRobustModel,
    split: Split,
    config: AdversarialConfig,
    device: torch.device,
    *,
    seed: int = 0,
    batch_size: int = 500,
) -> float:
    """Accuracy on ``split`` under ``config.val_steps``-step PGD at the full eps, with the training objective.

    The Madry attack even for TRADES runs (TRADES' KL is a training device, not an evaluation); fp32, and a random
    start drawn from ``seed`` so that every epoch meets the same starting points. It is a cheap gauge that picks
    ``best``; the verdict on a model is the sweep's strongest attacks.
    """
    generator = torch.Generator().manual_seed(seed)
    madry = AdversarialConfig(attack=f"pgd-{config.norm}", eps=config.eps, steps=config.val_steps,
                              step_size=max(VALIDATION_STEP_RULE * config.eps / config.val_steps, 1e-12),
                              objective=config.objective)
    correct = 0
    for start in range(0, len(split), batch_size):
        images = split.images[start : start + batch_size].to(device)
        labels = split.labels[start : start + batch_size].to(device)
        adversarial = adversarial_examples(model, images, labels, madry, eps=madry.eps, steps=madry.steps,
                                           step_size=madry.step_size, generator=generator, precision=Precision.FP32)
        with torch.no_grad():
            correct += int((model(adversarial).predictions == labels).sum())
    return correct / len(split)


def attack_passes(config: AdversarialConfig | None) -> int:
    """Forward/backward passes per training batch: 1 natural, steps + 1 Madry, steps + 2 TRADES (clean twice)."""
    if config is None:
        return 1
    return config.steps + (2 if config.trades else 1)


def ramp_progress(batch: int, batches: int) -> float:
    """How far through its epoch a batch ends, in (0, 1]."""
    return (batch + 1) / max(batches, 1)

