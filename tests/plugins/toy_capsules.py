"""A small capsule network that capsrobust does not ship, registered from outside the package (a plugin).

Load it with ``capsrobust --plugin tests/plugins/toy_capsules.py ...``. One strided convolution makes 16 × 49
four-dimensional primary capsules; each votes for 10 six-dimensional class capsules through its own matrices; two
routing iterations; a decoder reconstructs the input from the winning capsule. The class declares what it offers
(capsule lengths, votes, a class-conditional decoder), so the vote attack, the defense-aware attack, the detector
and the report's capsule comparison all apply to it without any edit under capsrobust/.
"""

from dataclasses import dataclass

import torch
from torch import nn

from capsrobust.models.base import (
    Capability,
    CapsRobustModel,
    LossTerms,
    ModelOutput,
    build_decoder,
    mask_by_class,
    sum_squared_error,
)
from capsrobust.models.capsnet import capsule_length, margin_loss, route_by_agreement, squash
from capsrobust.models.registry import register_architecture

GRID = 7  # (28 − 9) // 3 + 1: the primary grid of a 9×9 convolution with stride 3


@dataclass(frozen=True)
class ToyCapsConfig:
    channels: int = 16
    primary_dim: int = 4
    digit_dim: int = 6
    routing_iterations: int = 2
    decoder_hidden: tuple[int, ...] = (64,)


@register_architecture("toy-caps", ToyCapsConfig)
class ToyCaps(CapsRobustModel):
    capabilities = frozenset({Capability.CAPSULE_LENGTHS, Capability.VOTES, Capability.CLASS_DECODER})

    def __init__(self, config: ToyCapsConfig) -> None:
        super().__init__()
        self.config = config
        self.conv = nn.Conv2d(1, config.channels * config.primary_dim, 9, stride=3)
        n_in = config.channels * GRID * GRID
        self.weights = nn.Parameter(0.05 * torch.randn(n_in, 10, config.digit_dim, config.primary_dim))
        self.decoder = build_decoder(10 * config.digit_dim, config.decoder_hidden, 28)

    @property
    def routing_iterations(self) -> int:
        return self.config.routing_iterations

    def primary_capsules(self, images: torch.Tensor) -> torch.Tensor:
        grid = self.conv(images)  # (B, C·D, 7, 7)
        batch = grid.shape[0]
        capsules = grid.view(batch, self.config.channels, self.config.primary_dim, -1).transpose(2, 3)  # (B,C,49,D)
        return squash(capsules.reshape(batch, -1, self.config.primary_dim))  # (B, N, D)

    def votes(self, primary: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ncdk,bnk->bncd", self.weights, primary)  # (B, N, 10, digit_dim)

    def reconstruct(self, poses: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return self.decoder(mask_by_class(poses, classes)).view(-1, 1, 28, 28)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        poses, _ = route_by_agreement(self.votes(self.primary_capsules(images)), self.routing_iterations)
        lengths = capsule_length(poses)  # (B, 10)
        classes = labels if labels is not None else lengths.argmax(dim=1)
        return ModelOutput(logits=torch.log(lengths.clamp_min(1e-12)), lengths=lengths, poses=poses,
                           reconstruction=self.reconstruct(poses, classes))

    def loss(self, output: ModelOutput, images: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        assert output.lengths is not None and output.reconstruction is not None
        margin = margin_loss(output.lengths, labels, 0.9, 0.1, 0.5)
        reconstruction = 0.0005 * sum_squared_error(output.reconstruction, images)
        return LossTerms(margin + reconstruction, {"margin": margin, "reconstruction": reconstruction})

    def decoder_parameter_names(self) -> set[str]:
        return {f"decoder.{name}" for name, _ in self.decoder.named_parameters()}
