"""CNN+R: a CNN with a class-conditional reconstruction decoder, the baseline of Qin et al. (ICLR 2020).

Its penultimate layer has ``num_classes × class_dim`` units (10 × 16 = 160, like CapsNet's digit capsules), read as
one 16-D vector per class. The logits are a linear read-out of all 160 units; the decoder, of the same shape as
CapsNet's (160 → 512 → 1024 → 784), sees only the vector of one class — the true class in training, the predicted
one at inference — exactly as CapsNet's decoder sees only the winning capsule. This lets the reconstruction-error
detector be compared between capsules and CNNs on equal terms.

Shapes for the ``cnn-recon`` recipe:
    images (B, 1, 28, 28) → conv 32, pool → conv 64, pool → (B, 64, 7, 7) → FC 1024 → (B, 1024)
    class vectors (B, 10, 16) → logits (B, 10);  masked class vectors (B, 160) → decoder → (B, 1, 28, 28)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from capsrobust.models.base import (
    Capability,
    LossTerms,
    ModelOutput,
    at_least_fp32,
    build_decoder,
    check_sizes,
    mask_by_class,
    sum_squared_error,
)
from capsrobust.models.cnn import CNN, CNNConfig
from capsrobust.models.registry import register_architecture


@dataclass(frozen=True)
class CNNReconConfig(CNNConfig):
    """A CNN trunk (as ``CNNConfig``) plus per-class feature vectors and a decoder."""

    class_dim: int = 16
    decoder_hidden: tuple[int, ...] = (512, 1024)
    reconstruction_weight: float = 0.0005

    def __post_init__(self) -> None:
        super().__post_init__()
        check_sizes(self, "class_dim", "decoder_hidden")
        if self.reconstruction_weight < 0:
            raise ValueError(f"reconstruction_weight must be ≥ 0, got {self.reconstruction_weight}")


@register_architecture("cnn-recon", CNNReconConfig)
class CNNRecon(CNN):
    """CNN trunk → per-class vectors → logits and a class-masked reconstruction."""

    capabilities = frozenset({Capability.CLASS_DECODER})

    def __init__(self, config: CNNReconConfig) -> None:
        super().__init__(config)
        c = config
        trunk_width = self.classifier[-1].in_features
        self.classifier[-1] = nn.Linear(trunk_width, c.num_classes * c.class_dim)  # class vectors, (B, 160)
        self.readout = nn.Linear(c.num_classes * c.class_dim, c.num_classes)
        self.decoder = build_decoder(c.num_classes * c.class_dim, c.decoder_hidden, self.input_shape)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        c = self.config
        features = self.features(self.normalize(images)).flatten(1)  # (B, 64·7·7)
        class_vectors = self.classifier(features).view(-1, c.num_classes, c.class_dim)  # (B, 10, 16)
        logits = self.readout(class_vectors.flatten(1))  # (B, 10)
        classes = labels if labels is not None else logits.argmax(dim=1)
        reconstruction = self.reconstruct(class_vectors, classes)  # (B, 1, 28, 28)
        return ModelOutput(logits=at_least_fp32(logits), poses=at_least_fp32(class_vectors),
                           reconstruction=at_least_fp32(reconstruction))  # float32 under bf16 autocast too

    def reconstruct(self, poses: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Decode the vector of ``classes`` only: (B, 10, 16) → (B, 1, 28, 28), or any (B, C, H, W) input shape."""
        return self.decoder(mask_by_class(poses, classes)).view(-1, *self.input_shape)

    def loss(self, output: ModelOutput, images: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        assert output.reconstruction is not None
        cross_entropy = F.cross_entropy(output.logits, labels)
        reconstruction = self.config.reconstruction_weight * sum_squared_error(output.reconstruction, images)
        return LossTerms(
            cross_entropy + reconstruction, {"cross_entropy": cross_entropy, "reconstruction": reconstruction}
        )

    def decoder_parameter_names(self) -> set[str]:
        return {f"decoder.{name}" for name, _ in self.decoder.named_parameters()}
