"""The vote attack of Gu & Tresp (ICLR 2021), *Effective and Efficient Vote Attack on Capsule Networks*.

Routing by agreement is iterative and its gradients are weak and costly; Gu & Tresp attack around it. The class
scores are computed from the *average* of the prediction vectors (votes) that the 1,152 primary capsules cast
for each class, squashed, with no routing at all:

    votes û_j|i = W_ij u_i          (B, 1152, 10, 16)
    mean over i                     (B, 10, 16)
    squash, length                  (B, 10)

PGD on these scores finds perturbations that move most votes at once, and these transfer to the routed model.
The adversarials are always evaluated on the full model, with routing.
"""

from __future__ import annotations

import torch
from torch import nn

from capsrobust.adapters import AttackObjective, AttackTarget, ObjectiveError, ScoreKind, resolve_objective
from capsrobust.models.capsnet import MIN_LENGTH_FOR_LOG, CapsNet, capsule_length, squash


class VoteView(nn.Module):
    """``images (B, 1, 28, 28) → scores (B, 10)`` from the averaged, squashed votes of a CapsNet."""

    def __init__(self, model: CapsNet, scores: ScoreKind) -> None:
        super().__init__()
        if scores == "logits":
            raise ObjectiveError("the vote view scores capsule lengths; use 'lengths' or 'log-lengths'")
        self.model = model
        self.scores: ScoreKind = scores
        self.model.eval()

    def train(self, mode: bool = True) -> VoteView:
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        votes = self.model.votes(self.model.primary_capsules(images))  # (B, 1152, 10, 16)
        lengths = capsule_length(squash(votes.mean(dim=1)))  # (B, 10)
        if self.scores == "lengths":
            return lengths
        return torch.log(lengths.clamp_min(MIN_LENGTH_FOR_LOG))


def vote_target(model: nn.Module, objective: str | AttackObjective | None = None) -> AttackTarget:
    """The vote view of a CapsNet with the objective's scores and loss; other models are refused."""
    if not isinstance(model, CapsNet):
        raise ObjectiveError(
            f"the vote attack needs a CapsNet (it averages the primary capsules' votes); "
            f"{type(model).__name__} has none — drop vote-pgd-linf for this model"
        )
    chosen = resolve_objective(model, objective)
    scores = chosen.capsule_scores
    return AttackTarget(view=VoteView(model, scores), scores=scores, loss=chosen.loss, via="votes")
