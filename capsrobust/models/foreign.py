"""Bring your own trained model: a ``torch.nn.Module`` that capsrobust did not build, evaluated like its own.

``wrap_module`` puts any module that maps images in [0, 1] to class scores behind the interface the attacks, the
sweep, the detector and the report use. What the module offers beyond scores is read from the module itself and
becomes its declared capabilities, so the same attacks apply as to a built-in model that declares the same:

* ``returns="logits"`` — ``module(images)`` gives logits (B, C): any torchvision-style classifier.
* ``returns="lengths"`` — ``module(images)`` gives capsule lengths (B, C) in [0, 1): a capsule network; the
  logits become their logarithm, as for the built-in CapsNet, and the objective may pick raw or log lengths.
* ``returns="output"`` — ``module(images, labels)`` gives a full ``ModelOutput`` (lengths, poses,
  reconstruction): a capsule network with a decoder.

A module with ``primary_capsules(images)``, ``votes(primary)`` and ``routing_iterations`` offers votes (the vote
attack runs on it); one with ``reconstruct(poses, classes)`` offers a class-conditional decoder (the detector and
the defense-aware attack run on it). The wrapper only evaluates: it has no training loss.
"""

from __future__ import annotations

import hashlib
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from capsrobust.errors import CapsRobustError, parse_choice
from capsrobust.models.base import (
    MNIST_CLASSES,
    MNIST_SHAPE,
    Capability,
    CapsRobustModel,
    LossTerms,
    ModelOutput,
    at_least_fp32,
    shape_text,
)
from capsrobust.models.checkpoints import LoadedCheckpoint
from capsrobust.models.recipes import Recipe, TrainConfig

#: How sweep tables name the "checkpoint" of a model that was never saved: ``in-memory:NAME``.
IN_MEMORY_PREFIX = "in-memory:"
#: Log lengths are clamped here, as the built-in CapsNet does, so that a zero length gives a finite logit.
MIN_LENGTH_FOR_LOG = 1e-12
VOTE_METHODS = ("primary_capsules", "votes", "routing_iterations")


class ForeignModelError(CapsRobustError):
    """A wrapped module that does not offer what it was declared to, or is asked to do what it cannot."""


class Returns(str, Enum):
    """What the wrapped module's forward returns."""

    LOGITS = "logits"
    LENGTHS = "lengths"
    OUTPUT = "output"


class ForeignModel(CapsRobustModel):
    """A trained module behind capsrobust's model interface; build one with ``wrap_module``."""

    def __init__(self, module: nn.Module, name: str, returns: Returns, capabilities: frozenset[Capability],
                 input_shape: tuple[int, int, int] = MNIST_SHAPE, num_classes: int = MNIST_CLASSES) -> None:
        super().__init__()
        self.module = module
        self.name = name
        self.returns = returns
        self.capabilities = capabilities  # per instance: what this module offers, not what a class does
        self._input_shape = tuple(input_shape)
        self._num_classes = num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._input_shape  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        if self.returns is Returns.OUTPUT:
            output = self.module(images, labels)
            if not isinstance(output, ModelOutput):
                raise ForeignModelError(f"{self.name} was wrapped with returns='output' but its forward returned "
                                        f"{type(output).__name__}; return a capsrobust.models.ModelOutput")
            return output
        scores = at_least_fp32(self.module(images))  # (B, C)
        if self.returns is Returns.LOGITS:
            return ModelOutput(logits=scores)
        return ModelOutput(logits=torch.log(scores.clamp_min(MIN_LENGTH_FOR_LOG)), lengths=scores)

    def loss(self, output: ModelOutput, images: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        raise ForeignModelError(f"{self.name} is a wrapped, already trained module: capsrobust evaluates it but "
                                f"does not train it; train it in your own code, or register its architecture")

    # What the vote attack and the detector call; present only when the module offers them (see capabilities).

    @property
    def routing_iterations(self) -> int:
        return int(self.module.routing_iterations)

    def primary_capsules(self, images: torch.Tensor) -> torch.Tensor:
        return self.module.primary_capsules(images)

    def votes(self, primary: torch.Tensor) -> torch.Tensor:
        return self.module.votes(primary)

    def reconstruct(self, poses: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        if not self.has(Capability.CLASS_DECODER):
            return super().reconstruct(poses, classes)
        return self.module.reconstruct(poses, classes)

    def decoder_parameter_names(self) -> set[str]:
        names = getattr(self.module, "decoder_parameter_names", None)
        return {f"module.{name}" for name in names()} if callable(names) else set()


def offered_capabilities(module: nn.Module, returns: Returns) -> frozenset[Capability]:
    """What ``module`` offers, read from the module: lengths from ``returns``, votes and a decoder from methods."""
    offered = set()
    if returns is not Returns.LOGITS:
        offered.add(Capability.CAPSULE_LENGTHS)
    if all(hasattr(module, method) for method in VOTE_METHODS):
        offered.add(Capability.VOTES)
    if callable(getattr(module, "reconstruct", None)):
        offered.add(Capability.CLASS_DECODER)
    return frozenset(offered)


def wrap_module(
    module: nn.Module,
    *,
    name: str,
    returns: str | Returns = Returns.LOGITS,
    capabilities: frozenset[Capability] | set[Capability] | None = None,
    input_shape: tuple[int, int, int] = MNIST_SHAPE,
) -> ForeignModel:
    """``module`` (images in [0, 1] of shape (B, *input_shape), MNIST's (B, 1, 28, 28) by default) wrapped for
    sweeps, detection and reports. Its number of classes is read off one forward pass of a blank image, which also
    refuses, in one line, a module that does not take ``input_shape``.

    ``name`` labels the model in every table. ``capabilities`` (default: everything the module offers, see
    ``offered_capabilities``) may narrow what attacks may use, e.g. ``frozenset()`` to evaluate a capsule network
    as a plain classifier; declaring one the module does not offer raises ``ForeignModelError``. The module is put
    in eval mode; its weights are not copied.
    """
    chosen = parse_choice(Returns, returns, ForeignModelError, "returns")
    if not name or any(character.isspace() or character in "/\\" for character in name):
        raise ForeignModelError(f"model name {name!r} is empty or holds spaces or slashes; pass a short name")
    if chosen is Returns.OUTPUT and capabilities is None:
        raise ForeignModelError("with returns='output' say what the module offers: capabilities={...}")
    offered = offered_capabilities(module, chosen) | (
        {Capability.CAPSULE_LENGTHS} if chosen is Returns.OUTPUT else set())
    declared = offered if capabilities is None else frozenset(capabilities)
    missing = sorted(capability.value for capability in declared - offered)
    if missing:
        raise ForeignModelError(f"{name} is declared to offer {', '.join(missing)} but its module lacks it "
                                f"(votes need {', '.join(VOTE_METHODS)}; a decoder needs reconstruct(poses, classes))")
    wrapped = ForeignModel(module, name, chosen, frozenset(declared), tuple(input_shape)).eval()
    wrapped._num_classes = _count_classes(wrapped, tuple(input_shape))
    return wrapped


def _count_classes(model: ForeignModel, input_shape: tuple[int, ...]) -> int:
    """K from the scores of one blank image; a module that cannot take ``input_shape`` is refused here."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            scores = model(torch.zeros(1, *input_shape, device=device)).logits
    except (RuntimeError, ValueError, TypeError) as error:
        raise ForeignModelError(f"{model.name} does not take {shape_text(input_shape)} images ({error}); pass the "
                                f"input_shape it was trained on, e.g. input_shape=(3, 32, 32)") from None
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ForeignModelError(f"{model.name} returns scores of shape {tuple(scores.shape)} for one image; it must "
                                f"return (B, K) with K ≥ 2 classes")
    return int(scores.shape[1])


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over the model's state (names, dtypes, shapes, bytes): what a sweep records instead of a file hash."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def in_memory_checkpoint(model: ForeignModel, device: torch.device | str = "cpu") -> LoadedCheckpoint:
    """The wrapped model as a sweep holds a loaded checkpoint: no file, its weights' digest, its module's class."""
    recipe = Recipe(name=model.name, architecture=type(model.module).__name__, model=None, train=TrainConfig(),
                    description="a wrapped module that capsrobust did not build")
    metadata: dict[str, Any] = {"weights_sha256": weights_digest(model), "in_memory": True}
    return LoadedCheckpoint(model.to(device), recipe, metadata, Path(IN_MEMORY_PREFIX + model.name))
