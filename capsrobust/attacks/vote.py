"""The vote attack of Gu & Tresp (ICLR 2021), *Effective and Efficient Vote Attack on Capsule Networks*.

Routing by agreement is iterative and its gradients are weak and costly; Gu & Tresp attack around it. The class
scores are computed from the *average* of the prediction vectors (votes) that the 1,152 primary capsules cast
for each class, squashed, with no routing at all:

    votes û_j|i = W_ij u_i          (B, 1152, 10, 16)
    mean over i                     (B, 10, 16)
    squash, length                  (B, 10)

PGD on these scores finds perturbations that move most votes at once, and these transfer to the routed model.
The adversarials are always evaluated on the full model, with routing.

APGD (the vote-APGD attacks) also *reads* the scores: it keeps an iterate only if the estimator misclassifies it,
and it halves its step and moves to its best point by the loss values it measures. Measured on the surrogate,
APGD would return its random start wherever the surrogate was not fooled even if the routed model was, and would
skip images the surrogate already gets wrong. ``VoteView(..., values="routed")`` therefore returns the routed
model's scores as its values and the averaged votes' gradient backward (a straight-through estimator, as in
BPDA, Athalye et al. 2018): APGD steps along the vote gradient and judges progress on the real model.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from capsrobust.attacks.objectives import AttackObjective, AttackTarget, ObjectiveError, ScoreKind, resolve_objective
from capsrobust.models.base import Capability, capabilities_of
from capsrobust.models.capsnet import MIN_LENGTH_FOR_LOG, capsule_length, route_by_agreement, squash

VoteValues = Literal["votes", "routed"]


class VoteView(nn.Module):
    """``images (B, C, H, W) → scores (B, K)`` from the averaged, squashed votes of a capsule model.

    The model is any module that declares ``Capability.VOTES``: it offers ``primary_capsules(images)``,
    ``votes(primary)`` in the (B, N_in, C, D) layout of ``CapsNet.votes``, and ``routing_iterations``. A routing
    variant whose routing-free rule differs from dynamic routing's (EM: one M-step with uniform assignments) also
    offers ``routing_free_logits(primary, votes)`` and ``routed_logits(primary, votes)``, both (B, K) in its logit
    space, and those are used instead.

    ``values="routed"``: the scores' values are the routed model's and only their gradient is the votes' (see the
    module docstring); ``"votes"``: values and gradient both from the votes (what PGD needs, and cheaper).
    """

    def __init__(self, model: nn.Module, scores: ScoreKind, values: VoteValues = "votes") -> None:
        super().__init__()
        own_rule = hasattr(model, "routing_free_logits")
        if own_rule and scores == "lengths":
            raise ObjectiveError(f"{type(model).__name__} scores its routing-free votes in logit space; attack its "
                                 f"logits or log-lengths, not raw lengths or activations")
        if scores == "logits" and not own_rule:
            raise ObjectiveError("the vote view scores capsule lengths; use 'lengths' or 'log-lengths'")
        self.model = model
        self.scores: ScoreKind = scores
        self.values: VoteValues = values
        self.model.eval()

    def train(self, mode: bool = True) -> VoteView:
        super().train(mode)
        self.model.eval()
        return self

    def _scored(self, lengths: torch.Tensor) -> torch.Tensor:
        if self.scores == "lengths":
            return lengths
        return torch.log(lengths.clamp_min(MIN_LENGTH_FOR_LOG))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        primary = self.model.primary_capsules(images)
        votes = self.model.votes(primary)  # (B, 1152, 10, 16) for CapsNet
        if hasattr(self.model, "routing_free_logits"):  # a routing of its own (EM, self-attention): its own rule
            return self._own_rule(primary, votes)
        classes = self.model.num_classes if hasattr(self.model, "num_classes") else votes.shape[2]
        # (B, 10): a "none of the above" capsule after the classes gets votes but is no class, so it is no score
        surrogate = self._scored(capsule_length(squash(votes[:, :, :classes].mean(dim=1))))
        if self.values == "votes":
            return surrogate.float()
        with torch.no_grad():
            poses, _ = route_by_agreement(votes, self.model.routing_iterations)  # (B, 10, 16), routed over all
            routed = self._scored(capsule_length(poses[:, :classes]))  # (B, 10), the model's own scores
        return (surrogate + (routed - surrogate).detach()).float()  # value: routed; gradient: votes; float32

    def _own_rule(self, primary: torch.Tensor, votes: torch.Tensor) -> torch.Tensor:
        """A routing variant's routing-free scores (``routing_free_logits``: for self-attention the squashed mean of
        the votes, for EM one M-step with uniform assignments), in the model's logit space (log-lengths, or the
        logit of an activation); with ``values="routed"`` the values are the model's own (``routed_logits``)."""
        surrogate = self.model.routing_free_logits(primary, votes)  # (B, K)
        if self.values == "votes":
            return surrogate.float()
        with torch.no_grad():
            routed = self.model.routed_logits(primary, votes)  # (B, K)
        return (surrogate + (routed - surrogate).detach()).float()


def vote_target(
    model: nn.Module, objective: str | AttackObjective | None = None, values: VoteValues = "votes"
) -> AttackTarget:
    """The vote view of a model with capsule votes, with the objective's scores and loss; others are refused.

    Only ``Capability.VOTES`` is asked for, not the ``CapsNet`` class, so a new capsule architecture that declares
    it is attacked the same way.
    """
    if Capability.VOTES not in capabilities_of(model):
        raise ObjectiveError(
            "a vote attack needs a CapsNet or another model with capsule votes (it averages the primary capsules' "
            f"votes); {type(model).__name__} has none — drop the vote-* attacks for this model"
        )
    chosen = resolve_objective(model, objective)
    # a routing variant with its own routing-free rule scores in logit space (log-lengths, activation logits)
    scores: ScoreKind = "logits" if hasattr(model, "routing_free_logits") else chosen.capsule_scores
    return AttackTarget(view=VoteView(model, scores, values), scores=scores, loss=chosen.loss, via="votes")
