"""What every capsrobust model returns and exposes, so that training, attacks and detection treat them alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelOutput:
    """The result of a forward pass.

    ``logits`` are class scores that attack libraries may treat as logits (softmax / cross-entropy over them is
    meaningful, argmax is the prediction). Capsule models also return their capsule ``lengths``, the digit
    capsule ``poses`` and, when they have a decoder, the ``reconstruction`` of the input from the capsule of
    the masked class.
    """

    logits: torch.Tensor  # (B, C)
    lengths: torch.Tensor | None = None  # (B, C), in [0, 1)
    poses: torch.Tensor | None = None  # (B, C, D)
    reconstruction: torch.Tensor | None = None  # (B, C, H, W) like the input, in [0, 1]

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)


@dataclass
class LossTerms:
    """The training loss and the named parts it is a sum of (for logging)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


class Normalize(nn.Module):
    """Pixel-space input to the model's internal scale; lives inside the model so attacks stay in [0, 1].

    ``mean`` and ``std`` hold one value for every channel or one per channel (CIFAR-10's three). They are part of
    the recipe, hence of every checkpoint's metadata: the tensors are non-persistent buffers, which follow the
    model to its device (made once, not on every forward pass) but never enter a checkpoint's weights.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.identity = all(value == 0.0 for value in mean) and all(value == 1.0 for value in std)
        shape = (1, -1, 1, 1)  # (1, C or 1, 1, 1): broadcast over batch and pixels
        self.register_buffer("mean_tensor", torch.tensor(self.mean).view(shape), persistent=False)
        self.register_buffer("std_tensor", torch.tensor(self.std).view(shape), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return images
        return (images - self.mean_tensor.to(images.dtype)) / self.std_tensor.to(images.dtype)


def build_decoder(
    in_features: int, hidden: tuple[int, ...], output_shape: tuple[int, int, int] | int
) -> nn.Sequential:
    """The reconstruction decoder of Sabour et al.: fully connected ReLU layers, then sigmoid pixels, C·H·W of them.

    ``output_shape`` is (C, H, W); a single side S (how plugins written for 0.2 call it) means (1, S, S).
    """
    if isinstance(output_shape, int):
        output_shape = (1, output_shape, output_shape)
    layers: list[nn.Module] = []
    width = in_features
    for units in hidden:
        layers += [nn.Linear(width, units), nn.ReLU(inplace=True)]
        width = units
    channels, height, width_out = output_shape
    layers += [nn.Linear(width, channels * height * width_out), nn.Sigmoid()]
    return nn.Sequential(*layers)


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 when it is in a narrower float type (bf16/fp16 under autocast), else unchanged.

    Every model returns its ``ModelOutput`` in float32 whatever the precision inside, so losses, attack libraries
    (NumPy has no bfloat16) and comparisons see one dtype.
    """
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def mask_by_class(groups: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Keep only the vector of ``classes`` in (B, C, D) groups, zero the others, flatten to (B, C·D)."""
    mask = F.one_hot(classes, num_classes=groups.shape[1]).to(groups.dtype)  # (B, C)
    return (groups * mask.unsqueeze(-1)).flatten(1)  # (B, C·D)


def sum_squared_error(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per-image sum of squared pixel errors, averaged over the batch (the paper's reconstruction loss)."""
    return ((reconstruction - images) ** 2).flatten(1).sum(dim=1).mean()


class Capability(str, Enum):
    """Something a model offers beyond logits, declared as data so that code asks for it instead of a class name.

    A new architecture states what it can do in its ``capabilities``; adapters, attacks, the detector and the
    report then treat it like the built-in models that declare the same, with no edits of their own.
    """

    #: ``forward`` returns capsule ``lengths`` (B, C) in [0, 1) that score the classes; the objective then picks
    #: between raw and log lengths.
    CAPSULE_LENGTHS = "capsule-lengths"
    #: The model exposes ``primary_capsules(images)`` (B, N_in, D_in), ``votes(primary)`` (B, N_in, C, D) and
    #: ``routing_iterations``: what the vote attack (Gu & Tresp 2021) needs.
    VOTES = "votes"
    #: ``reconstruct(poses, classes)`` decodes the input from the pose vector of one class (the detector's need).
    CLASS_DECODER = "class-decoder"


#: What makes a model a capsule network, whichever it declares: lengths that score the classes (CapsNet,
#: Efficient-CapsNet) or votes to route (every capsule model, EM's too, which scores by activations).
CAPSULE_CAPABILITIES = frozenset({Capability.CAPSULE_LENGTHS, Capability.VOTES})


def capabilities_of(model: nn.Module) -> frozenset[Capability]:
    """What ``model`` declares in its ``capabilities`` (none for a module that declares nothing)."""
    return frozenset(getattr(model, "capabilities", frozenset()))


def capabilities_text(capabilities: frozenset[Capability]) -> str:
    """The capabilities as one sorted, comma-joined string, as result tables record them ("" for none)."""
    return ",".join(sorted(capability.value for capability in capabilities))


def parse_capabilities(text: str) -> frozenset[Capability]:
    """The inverse of ``capabilities_text``; unknown names (from a newer capsrobust) are ignored."""
    known = {capability.value: capability for capability in Capability}
    return frozenset(known[name] for name in (part.strip() for part in text.split(",")) if name in known)


class CapsRobustModel(nn.Module, ABC):
    """Base of every model: a forward that returns ``ModelOutput`` and a training loss over it."""

    #: What the model offers beyond logits (see ``Capability``); a subclass declares its own set.
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    #: Whether ``--precision auto`` may train the architecture in bf16 on a CPU with bf16 hardware: only where bf16
    #: training was measured to reach fp32's accuracy. An architecture that does not say trains in fp32 there.
    trains_in_bf16: ClassVar[bool] = False

    def has(self, capability: Capability) -> bool:
        """Whether the model declares ``capability``."""
        return capability in self.capabilities

    @property
    def can_reconstruct(self) -> bool:
        """Whether ``forward`` can reconstruct the input conditioned on a class (needed by the detector)."""
        return self.has(Capability.CLASS_DECODER)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model takes, from its config (built-in architectures), else MNIST's."""
        return input_shape_of(getattr(self, "config", None))

    @property
    def num_classes(self) -> int:
        """K, the number of classes the model scores, from its config (10 when it has none)."""
        return int(getattr(getattr(self, "config", None), "num_classes", MNIST_CLASSES))

    @abstractmethod
    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        """Classify ``images`` (B, C, H, W) in [0, 1] (``input_shape``).

        ``labels`` only matters to models with a decoder: the reconstruction is masked by these classes
        (training) instead of the predicted ones (inference).
        """

    @abstractmethod
    def loss(self, output: ModelOutput, images: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        """The training objective for ``output`` computed from ``images`` with true ``labels``."""

    def reconstruct(self, poses: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Decode the pose vector of ``classes`` from (B, K, D) poses into (B, C, H, W) images."""
        raise NotImplementedError(f"{type(self).__name__} has no class-conditional decoder")

    def decoder_parameter_names(self) -> set[str]:
        """Names of parameters that belong to a reconstruction decoder (none by default)."""
        return set()


#: The largest layer width or channel count a recipe may ask for. Far above any published MNIST or CIFAR network
#: (the paper's widest layer has 1,024 units); a mistyped size beyond it would allocate gigabytes before anything
#: could say what was wrong.
MAX_LAYER_SIZE = 16_384


def check_sizes(config: object, *names: str) -> None:
    """Refuse sizes (ints, or tuples of ints) outside [1, MAX_LAYER_SIZE], naming the key; raises ``ValueError``."""
    for name in names:
        value = getattr(config, name)
        for size in value if isinstance(value, tuple) else (value,):
            if not 1 <= size <= MAX_LAYER_SIZE:
                raise ValueError(f"{name} must lie in [1, {MAX_LAYER_SIZE:,}], got {value}")


def check_normalisation_and_classes(config: Any) -> None:
    """The checks every architecture shares: at least two classes, a sane input shape, and a per-channel (or one)
    normalisation with positive standard deviations."""
    if config.num_classes < 2:
        raise ValueError(f"num_classes must be ≥ 2, got {config.num_classes}")
    check_sizes(config, "input_channels", "input_height", "input_width")
    for name in ("input_mean", "input_std"):
        values = getattr(config, name)
        if len(values) not in (1, config.input_channels):
            raise ValueError(f"{name} holds {len(values)} values; give one, or one per channel "
                             f"({config.input_channels})")
    if not all(value > 0 for value in config.input_std):
        raise ValueError(f"input_std must be positive, got {config.input_std}")


#: What a model without a config (a plugin's, an old one) takes: MNIST's digits.
MNIST_SHAPE = (1, 28, 28)
MNIST_CLASSES = 10


def input_shape_of(config: Any) -> tuple[int, int, int]:
    """(C, H, W) from a config's ``input_channels``, ``input_height`` and ``input_width``, else MNIST's."""
    if config is None or not hasattr(config, "input_channels"):
        return MNIST_SHAPE
    return (int(config.input_channels), int(config.input_height), int(config.input_width))


def shape_text(shape: tuple[int, ...]) -> str:
    """(3, 32, 32) as "3×32×32"."""
    return "×".join(str(size) for size in shape)


def refuse_other_data(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, label: str) -> None:
    """``CheckpointError`` in one line when ``model`` was built for other images or classes than the data's.

    A model built for 1×28×28 digits would fail deep inside its first convolution on 3×32×32 images, and one with
    10 class scores would "classify" a 5-class data set with labels it never had.
    """
    from capsrobust.errors import CheckpointError

    expected = (tuple(getattr(model, "input_shape", MNIST_SHAPE)), int(getattr(model, "num_classes", MNIST_CLASSES)))
    if expected != (tuple(input_shape), int(num_classes)):
        raise CheckpointError(f"{label} takes {shape_text(expected[0])} images in {expected[1]} classes, the data "
                              f"has {shape_text(tuple(input_shape))} in {num_classes}: evaluate it on the data it was "
                              f"trained on, or train one on this data")
