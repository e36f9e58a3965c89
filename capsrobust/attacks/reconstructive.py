"""The reconstructive attack of Qin et al. (ICLR 2020): PGD against the classifier *and* the reconstruction detector.

The detector (``capsrobust.detection.detector``) flags an input when its reconstruction from the predicted class lies
far from it. An attacker who knows this looks for a perturbation that changes the class *and* keeps that distance small:

    maximise over ‖x' − x‖ ≤ eps:   min(m(x'), κ) − λ · ‖r(x') − x'‖₂,   m(x') = max_{j≠y} z_j(x') − z_y(x')

``r(x')`` is the decoder's reconstruction from the capsule (CNN+R: the class vector) of the class the model
*predicts* for x' — exactly what the detector scores —, λ the parameter ``recon_weight`` and κ ``confidence``.

Two choices go beyond "class loss − λ · distance", so that one (λ, κ) means the same for capsules and CNNs and the
two terms do not cancel each other out:

* ``z`` are log-scores: log capsule lengths for CapsNet (its ``logits``), logits otherwise. Their margin is a
  log-odds ratio for both families (softmax(log ℓ) = ℓ / Σℓ), whereas raw lengths live on a scale ten times
  smaller than logits and would need another λ. The attack objective (``--objective``) is therefore not used;
  ``objective_used`` records what was maximised, as for the attacks with a loss of their own.
* the class term is a hinge (Carlini & Wagner 2017, *Adversarial Examples Are Not Easily Detected*): once the input
  is misclassified by a log-odds margin κ, only the reconstruction term moves it. Without the hinge the two terms
  fight to the last step and, at small λ, the distance barely moves (measurements in docs/detection.md).

The projection, step rule and random starts are the libraries' own PGD (ART and Foolbox), so this attack differs
from ``pgd-linf`` in its loss only. Neither library lets a loss see the input, only the scores: the view computes the
scores and the per-example reconstruction distances in one forward pass and keeps the distances for the loss,
which the library calls right after that forward pass (ART's ``loss_gradient``, Foolbox's ``loss_fn``).
"""

from __future__ import annotations

import torch
from torch import nn

from capsrobust.attacks import art_backend, foolbox_backend
from capsrobust.attacks.objectives import AttackTarget, ObjectiveView, has_capsule_lengths
from capsrobust.attacks.params import ReconPgdParams
from capsrobust.attacks.registry import AttackCall, AttackError, AttackResult, Backend, Norm
from capsrobust.models import CapsRobustModel

# Keeps the distance's gradient finite should a reconstruction ever match its input exactly.
DISTANCE_EPS = 1e-12


class ReconstructionAwareView(ObjectiveView):
    """``images → log-scores`` (the model's ``logits``), also keeping each image's reconstruction distance (B,)."""

    def __init__(self, model: CapsRobustModel) -> None:
        super().__init__(model, "logits" if not has_capsule_lengths(model) else "log-lengths")
        self.distances: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        output = self.model(images)  # reconstruction from the predicted class, as the detector sees it
        assert output.reconstruction is not None
        difference = (output.reconstruction.float() - images).flatten(1)  # (B, 784), float32 under autocast too
        self.distances = torch.sqrt((difference * difference).sum(dim=1) + DISTANCE_EPS)  # (B,)
        return output.logits.float()  # (B, C): log-lengths for CapsNet, logits otherwise


class ReconstructiveLoss(nn.Module):
    """``Σ min(m, κ) − λ · Σ distances`` with m the CW margin on the view's log-scores (positive: misclassified).

    Summed over the batch, like the other attack losses, so each example's gradient ignores the batch size.
    Labels may be indices (B,) or one-hot rows (B, C) (ART passes one-hot rows to losses it does not know).
    """

    def __init__(self, view: ReconstructionAwareView, weight: float, confidence: float) -> None:
        super().__init__()
        self.view = view
        self.weight = weight
        self.confidence = confidence

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.ndim == 2:
            labels = labels.argmax(dim=1)
        labels = labels.long()
        distances = self.view.distances
        if distances is None or distances.shape[0] != scores.shape[0]:
            raise RuntimeError("the reconstruction distances do not belong to these scores; call the view first")
        true = scores.gather(1, labels[:, None]).squeeze(1)  # (B,)
        others = scores.masked_fill(nn.functional.one_hot(labels, scores.shape[1]).bool(), float("-inf"))
        margin = others.max(dim=1).values - true  # (B,)
        return margin.clamp(max=self.confidence).sum() - self.weight * distances.sum()


def reconstructive_target(model: CapsRobustModel, call: AttackCall, name: str) -> AttackTarget:
    """The view (log-scores and distances) with the reconstructive loss; models without a decoder refused."""
    if not model.can_reconstruct:
        raise AttackError(
            f"{name} attacks the reconstruction detector; {type(model).__name__} has no class-conditional decoder "
            f"— use a capsnet or cnn-recon model, or drop {name} for this one"
        )
    view = ReconstructionAwareView(model)
    params = call.params_as(ReconPgdParams)
    weight, confidence = params.recon_weight, params.confidence
    return AttackTarget(view=view, scores=view.scores, loss="margin",
                        custom_loss=ReconstructiveLoss(view, weight, confidence),
                        custom_description=describe(view.scores, weight, confidence))


def describe(scores: str, weight: float, confidence: float) -> str:
    """E.g. ``min(margin(log-lengths), 2) - 0.3*l2(reconstruction)``, for the ``objective_used`` column."""
    return f"min(margin({scores}), {confidence:g}) - {weight:g}*l2(reconstruction)"


def reconstructive_pgd(call: AttackCall, norm: Norm, name: str) -> AttackResult:
    """The libraries' own PGD (ART or Foolbox, the same glue as ``pgd-linf``) on the reconstructive loss.

    Parameters: pgd-linf's, ``recon_weight`` and ``confidence``.
    """
    backend = art_backend if call.backend is Backend.ART else foolbox_backend
    return backend.pgd(reconstructive_target(call.model, call, name), call, norm)
