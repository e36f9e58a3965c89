"""Adapters to ART and Foolbox, and the attack objectives: what an attack differentiates.

A capsrobust model returns a ``ModelOutput``; attack libraries want a module that maps images in [0, 1] to one
(B, C) tensor of class scores and a loss over those scores. Which scores and which loss matter a great deal for
CapsNet (see ``docs/attack-objectives.md``): capsule lengths lie in [0, 1), so cross-entropy on raw lengths has
small, nearly flat gradients and can make a CapsNet look more robust than it is — the classic gradient-masking trap
that Carlini et al. (2019), *On Evaluating Adversarial Robustness*, warn about. (Measured, L∞ PGD and APGD, which
step along the gradient's sign, broke *more* images with raw lengths than with log-lengths; no single objective
wins everywhere.) The objective is therefore a setting, recorded beside every result:

==================== ======================= =============================================
objective            scores (CapsNet)        loss maximised by the attack
==================== ======================= =============================================
ce-lengths           raw lengths ℓ           cross-entropy (small gradients)
ce-log-lengths       log ℓ (model's logits)  cross-entropy, i.e. −log(ℓ_y / Σ_j ℓ_j)
margin               raw lengths ℓ           CW margin  max_{j≠y} ℓ_j − ℓ_y
margin-log-lengths   log ℓ                   CW margin  max_{j≠y} log ℓ_j − log ℓ_y
==================== ======================= =============================================

A CNN has only logits: the ``ce-*`` objectives are cross-entropy on its logits and the ``margin*`` objectives the
CW margin on its logits; ``AttackTarget.describe()`` records which one was used.

Nothing here calls ``torch.no_grad``: gradients must flow from the scores back to the pixels. The views keep the
wrapped model in eval mode whatever mode a library sets on them (attacks must not see dropout noise nor update
batch-norm statistics), and nothing here changes a weight.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from capsrobust.errors import CapsRobustError, parse_choice
from capsrobust.models import CapsRobustModel
from capsrobust.models.base import MNIST_CLASSES, MNIST_SHAPE, Capability, capabilities_of

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

CLIP_VALUES = (0.0, 1.0)

ScoreKind = Literal["lengths", "log-lengths", "logits"]
LossKind = Literal["ce", "margin"]


class ObjectiveError(CapsRobustError):
    """An attack objective is unknown or does not apply to the model."""


class AttackObjective(str, Enum):
    """What a gradient attack maximises; see the module docstring for the table."""

    CE_LENGTHS = "ce-lengths"
    CE_LOG_LENGTHS = "ce-log-lengths"
    MARGIN = "margin"
    MARGIN_LOG_LENGTHS = "margin-log-lengths"

    @classmethod
    def parse(cls, name: str | AttackObjective) -> AttackObjective:
        return parse_choice(cls, name, ObjectiveError, "attack objective")

    @property
    def loss(self) -> LossKind:
        return "margin" if self in (AttackObjective.MARGIN, AttackObjective.MARGIN_LOG_LENGTHS) else "ce"

    @property
    def capsule_scores(self) -> ScoreKind:
        """The scores this objective reads from a capsule model."""
        if self in (AttackObjective.CE_LENGTHS, AttackObjective.MARGIN):
            return "lengths"
        return "log-lengths"


#: The strongest objective against CapsNet measured on capsnet-paper (PGD L∞, eps 0.1 and 0.2; tied with CE on raw
#: lengths, and faster): the margin on raw lengths. Table and command: docs/attack-objectives.md.
CAPSNET_DEFAULT_OBJECTIVE = AttackObjective.MARGIN
#: For a model with plain logits the standard choice: cross-entropy on the logits.
LOGITS_DEFAULT_OBJECTIVE = AttackObjective.CE_LOG_LENGTHS


def has_capsule_lengths(model: nn.Module) -> bool:
    """Whether ``model`` scores classes by capsule lengths (and so whether the objective changes the scores).

    Asked of the model's declared capabilities, not its class: any architecture that declares
    ``Capability.CAPSULE_LENGTHS`` is attacked like a CapsNet.
    """
    return Capability.CAPSULE_LENGTHS in capabilities_of(model)


def default_objective(model: nn.Module) -> AttackObjective:
    """The objective a sweep uses when none is asked for: the measured strongest for capsules, CE otherwise."""
    return CAPSNET_DEFAULT_OBJECTIVE if has_capsule_lengths(model) else LOGITS_DEFAULT_OBJECTIVE


def resolve_objective(model: nn.Module, objective: str | AttackObjective | None) -> AttackObjective:
    return default_objective(model) if objective is None else AttackObjective.parse(objective)


class ObjectiveView(nn.Module):
    """A capsrobust model seen as ``images (B, 1, 28, 28) → scores (B, C)`` for one objective.

    This is the module ART and Foolbox wrap; a user can also call it directly. The wrapped model stays in eval
    mode even when a library calls ``train()`` on the view.
    """

    def __init__(self, model: CapsRobustModel, scores: ScoreKind) -> None:
        super().__init__()
        if scores != "logits" and not has_capsule_lengths(model):
            raise ObjectiveError(f"{type(model).__name__} has no capsule lengths; use scores='logits'")
        self.model = model
        self.scores: ScoreKind = scores
        self.model.eval()

    def train(self, mode: bool = True) -> ObjectiveView:
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Scores leave in float32 whatever the precision inside (bf16 autocast): losses and the libraries'
        # NumPy conversions need it, and it costs one (B, C) cast.
        output = self.model(images)
        if self.scores == "lengths":
            assert output.lengths is not None
            return output.lengths.float()  # (B, C) in [0, 1)
        return output.logits.float()  # (B, C): log-lengths for CapsNet, logits otherwise


class MarginLoss(nn.Module):
    """The Carlini–Wagner margin ``max_{j≠y} s_j − s_y``, summed over the batch; positive means misclassified.

    Labels may be class indices (B,) or one-hot / probability rows (B, C): ART hands custom losses the labels as
    one-hot rows (``PyTorchClassifier.reduce_labels`` reduces them only for the losses it knows). The sum, not the
    mean, keeps each example's gradient independent of the batch size.
    """

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.ndim == 2:
            labels = labels.argmax(dim=1)
        labels = labels.long()
        true = scores.gather(1, labels[:, None]).squeeze(1)  # (B,)
        others = scores.masked_fill(nn.functional.one_hot(labels, scores.shape[1]).bool(), float("-inf"))
        return (others.max(dim=1).values - true).sum()


def loss_module(loss: LossKind) -> nn.Module:
    """The loss an attack maximises: cross-entropy or CW margin, both summed over the batch."""
    return nn.CrossEntropyLoss(reduction="sum") if loss == "ce" else MarginLoss()


@dataclass(frozen=True)
class AttackTarget:
    """What an attack differentiates: a score view of the model and the loss over those scores."""

    view: nn.Module
    scores: ScoreKind
    loss: LossKind
    via: str = ""  # what the scores are computed from when not the model's own forward, e.g. "votes"
    # A loss module of the attack's own replacing ``loss`` in both libraries (the reconstructive attack's), and how
    # ``objective_used`` names it.
    custom_loss: nn.Module | None = field(default=None, compare=False)
    custom_description: str = ""

    def describe(self, loss: str | None = None) -> str:
        """E.g. ``margin(lengths)``; attacks with a loss of their own (CW, AutoAttack, Square) pass its name."""
        if self.custom_description and loss is None:
            return self.custom_description
        scores = f"{self.via} {self.scores}" if self.via else self.scores
        return f"{loss or self.loss}({scores})"


def attack_target(model: CapsRobustModel, objective: str | AttackObjective | None = None) -> AttackTarget:
    """The view and loss for ``objective`` (``None``: the model's default objective)."""
    chosen = resolve_objective(model, objective)
    scores: ScoreKind = chosen.capsule_scores if has_capsule_lengths(model) else "logits"
    return AttackTarget(view=ObjectiveView(model, scores), scores=scores, loss=chosen.loss)


def art_classifier(
    target: AttackTarget, device: torch.device | str = "cpu", loss: nn.Module | None = None
) -> PyTorchClassifier:
    """ART's ``PyTorchClassifier`` over a target's view, with inputs in [0, 1] and the target's loss.

    ``loss`` replaces the target's loss for attacks that bring their own (APGD's DLR). ART hands a loss it does not
    know the labels unreduced, as float rows (N, C), and sets its ``reduction`` attribute when it wants per-example
    values, so such a loss must accept rows and honour ``reduction``.
    """
    from art.estimators.classification import PyTorchClassifier

    device = torch.device(device)
    target.view.to(device).eval()
    attacked = getattr(target.view, "model", target.view)  # every view keeps the model it scores
    return PyTorchClassifier(
        model=target.view,
        loss=loss if loss is not None else target.custom_loss or loss_module(target.loss),
        input_shape=getattr(attacked, "input_shape", MNIST_SHAPE),
        nb_classes=getattr(attacked, "num_classes", MNIST_CLASSES),
        clip_values=CLIP_VALUES,
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


def foolbox_model(target: AttackTarget, device: torch.device | str = "cpu") -> Any:
    """Foolbox's ``PyTorchModel`` over a target's view with bounds (0, 1).

    Foolbox keeps losses inside its attacks (cross-entropy on the model's output); capsrobust's Foolbox backend
    swaps in the margin where the objective asks for it.
    """
    import foolbox

    device = torch.device(device)
    target.view.to(device).eval()
    return foolbox.PyTorchModel(target.view, bounds=CLIP_VALUES, device=device)


def to_art(
    model: CapsRobustModel, objective: str | AttackObjective | None = None, device: torch.device | str = "cpu"
) -> PyTorchClassifier:
    """``model`` as an ART ``PyTorchClassifier`` (clip values (0, 1), the model's input shape and classes).

    Its predictions are the objective's scores (argmax = the model's prediction) and its loss the objective's
    loss, so ART's loss-gradient attacks maximise exactly the chosen objective. The model is put in eval mode;
    no weight is changed.
    """
    return art_classifier(attack_target(model, objective), device)


def to_foolbox(
    model: CapsRobustModel, objective: str | AttackObjective | None = None, device: torch.device | str = "cpu"
) -> Any:
    """``model`` as a Foolbox ``PyTorchModel`` with bounds (0, 1) whose outputs are the objective's scores.

    Foolbox's own gradient attacks apply cross-entropy to those outputs, so with no objective given the outputs
    are the model's logits (log-lengths for CapsNet): cross-entropy on raw lengths would be the weak, nearly flat
    objective. For the margin objectives use the attacks of ``capsrobust.attacks.foolbox_backend``, which
    replace Foolbox's loss.
    """
    chosen = AttackObjective.CE_LOG_LENGTHS if objective is None else objective
    return foolbox_model(attack_target(model, chosen), device)


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Stop gradients into the weights while attacking (faster backward passes), then restore the flags."""
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
