"""What capsrobust adds around ART's APGD and Square to make AutoAttack's standard version.

AutoAttack (Croce & Hein, ICML 2020, arXiv:2003.01690), standard version, L∞: on every image, in this order,

    APGD-CE   100 iterations, 1 restart, cross-entropy on the logits
    APGD-T    100 iterations, 1 restart, each of the 9 runner-up classes as target, targeted DLR loss
    FAB-T     9 target classes
    Square    5,000 queries, 1 restart, margin on the logits

and the first adversarial that is misclassified within eps counts; each attack sees only the images every earlier
one failed on. ART 1.20 has APGD and Square; neither ART 1.20 nor Foolbox 3.3 has FAB, so capsrobust's AutoAttack
leaves FAB-T out (and says so in its ``objective_used``). In Croce & Hein's runs FAB-T rarely breaks an image that
APGD-T has not.

Why not ART's own ``AutoAttack`` class? It does attack only the still-robust images and keep the first success,
but its targeted phase re-runs *every* attack of its list against *every* other class in index order, and counts
a targeted run as successful only when the image lands in the target class. APGD-T aims at the runner-up classes
by the model's own scores and counts any misclassification. So the ensemble rule lives here (``first_success``),
the members are ART's attacks (``capsrobust.attacks.art_backend``), and the targeted DLR loss is below.

Targets ride in the labels: ART passes a loss it does not know the labels unreduced, as float rows, so a row holds
1 at the true class and ``TARGET_MARK`` at the target class. ART's own success test (argmax of the row) still sees
the true class, which is AutoAttack's criterion: APGD-T succeeds when the image is misclassified, into any class.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from capsrobust.attacks.registry import Norm

log = logging.getLogger(__name__)

TARGET_MARK = 0.5  # below 1, so the argmax of a label row stays the true class
DLR_EPS = 1e-12  # Croce & Hein's guard against a zero denominator
BALL_TOLERANCE = 1e-6  # the sweep's in-ball tolerance: what counts here is what the sweep will count


class DLRLoss(nn.Module):
    """Croce & Hein's Difference of Logits Ratio, per example, to be maximised.

    Untargeted: ``−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)``; targeted at t: ``−(z_y − z_t) / (z_π1 − ½(z_π3 + z_π4))``,
    with z_π1 ≥ z_π2 ≥ … the sorted scores. Both are invariant to shifting and scaling the scores (the point of
    DLR), not to a non-linear map such as lengths → log-lengths. Labels are class indices (N,) or rows (N, C)
    whose argmax is the true class; targeted rows mark the target with ``TARGET_MARK`` (see ``target_rows``).
    ``reduction`` ("sum", "mean" or "none") is an attribute because ART sets it to read per-example losses.
    """

    def __init__(self, targeted: bool = False, reduction: str = "sum") -> None:
        super().__init__()
        self.targeted = targeted
        self.reduction = reduction

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        scores = scores.float()  # (N, C)
        true = labels.argmax(dim=1) if labels.ndim == 2 else labels.long()  # (N,)
        ranked = scores.sort(dim=1).values  # (N, C), ascending
        z_y = scores.gather(1, true[:, None]).squeeze(1)  # (N,)
        if self.targeted:
            if labels.ndim != 2:
                raise ValueError("targeted DLR needs label rows that mark the target (capsrobust target_rows)")
            marks = labels.float().scatter(1, true[:, None], -math.inf)  # (N, C), the true class masked
            z_t = scores.gather(1, marks.argmax(dim=1, keepdim=True)).squeeze(1)  # (N,)
            loss = -(z_y - z_t) / (ranked[:, -1] - 0.5 * (ranked[:, -3] + ranked[:, -4]) + DLR_EPS)
        else:
            others = scores.masked_fill(nn.functional.one_hot(true, scores.shape[1]).bool(), -math.inf)
            loss = -(z_y - others.amax(dim=1)) / (ranked[:, -1] - ranked[:, -3] + DLR_EPS)
        if self.reduction == "none":
            return loss
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        raise ValueError(f"unknown reduction {self.reduction!r}; use 'none', 'mean' or 'sum'")


def runner_up_targets(scores: torch.Tensor, labels: torch.Tensor, rank: int) -> torch.Tensor:
    """The class with the ``rank``-th highest score among the classes other than the label (rank 1: the runner-up).

    ``scores`` (N, C) are the model's scores on the *clean* images, as in AutoAttack's APGD-T, so the targets do
    not move while the attack runs. Raises ``ValueError`` for a rank outside 1 … C − 1.
    """
    classes = scores.shape[1]
    if not 1 <= rank <= classes - 1:
        raise ValueError(f"target rank must be in 1 … {classes - 1}, got {rank}")
    others = scores.float().scatter(1, labels.long()[:, None], -math.inf)  # (N, C), the label never a target
    return others.argsort(dim=1, descending=True, stable=True)[:, rank - 1]  # (N,)


def target_rows(labels: torch.Tensor, targets: torch.Tensor, classes: int) -> np.ndarray:
    """Label rows (N, C) for ART: 1 at the true class, ``TARGET_MARK`` at the target (see the module docstring)."""
    if (labels == targets).any():
        raise ValueError("a target equals its true label; targets must be other classes")
    rows = nn.functional.one_hot(labels.long(), classes).float()  # (N, C)
    rows[torch.arange(len(labels)), targets.long()] = TARGET_MARK
    return rows.numpy()


#: (images (M, 1, 28, 28), labels (M,)) → adversarials (M, 1, 28, 28), all on the CPU
MemberRun = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: images (M, 1, 28, 28) → the attacked model's predicted classes (M,)
Predict = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Member:
    """One attack of an ensemble; ``budget`` is its gradient steps or queries per image."""

    name: str
    run: MemberRun
    budget: int


@dataclass(frozen=True)
class EnsembleResult:
    """The adversarials (the clean image where nothing succeeded) and how many images each member broke first."""

    adversarials: torch.Tensor  # (N, 1, 28, 28)
    broken_by: dict[str, int] = field(default_factory=dict)
    budget: int = 0  # steps or queries per image that survives every member: the sum of the members' budgets


def first_success(
    members: Sequence[Member], images: torch.Tensor, labels: torch.Tensor, predict: Predict, eps: float, norm: Norm
) -> EnsembleResult:
    """AutoAttack's rule: run ``members`` in order, each on the images still robust, and keep per image the first
    adversarial that ``predict`` misclassifies within ``eps``.

    Images the model already gets wrong are not attacked (they are not robust to begin with). A member's output
    outside the eps ball (beyond the sweep's tolerance) never counts as a success; it is logged.
    """
    adversarials = images.clone()
    robust = predict(images) == labels  # (N,)
    broken_by: dict[str, int] = {}
    for member in members:
        index = robust.nonzero().squeeze(1)  # (M,)
        if index.numel() == 0:
            broken_by[member.name] = 0
            continue
        candidates = member.run(images[index], labels[index]).float()  # (M, 1, 28, 28)
        delta = (candidates.double() - images[index].double()).flatten(1)  # (M, 784)
        size = delta.abs().amax(dim=1) if norm is Norm.LINF else delta.norm(dim=1)  # (M,)
        in_ball = size <= eps + BALL_TOLERANCE
        if not in_ball.all():
            log.warning("%s returned %d adversarials outside the eps ball; they do not count",
                        member.name, int((~in_ball).sum()))
        broken = (predict(candidates) != labels[index]) & in_ball  # (M,)
        adversarials[index[broken]] = candidates[broken]
        robust[index[broken]] = False
        broken_by[member.name] = int(broken.sum())
    log.info("first successes per member: %s", broken_by)
    return EnsembleResult(adversarials, broken_by, sum(member.budget for member in members))
