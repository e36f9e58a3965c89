"""Convolutional baselines: the paper's 35M-parameter CNN and the small CNN of the adversarial literature.

One configurable class covers both: a stack of 'same'-padded convolutions (optionally each followed by 2×2
max-pooling), then fully connected layers with ReLU and dropout, then the class logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from capsrobust.models.base import (
    CapsRobustModel,
    LossTerms,
    ModelOutput,
    Normalize,
    at_least_fp32,
    check_normalisation_and_classes,
    check_sizes,
)
from capsrobust.models.registry import register_architecture
from capsrobust.models.stem import StemConv2d


@dataclass(frozen=True)
class CNNConfig:
    """Hyper-parameters of a plain CNN classifier."""

    conv_channels: tuple[int, ...] = (32, 64)
    kernel_size: int = 5
    pool_after_conv: bool = True
    hidden_units: tuple[int, ...] = (1024,)
    dropout: float = 0.0
    num_classes: int = 10
    input_mean: tuple[float, ...] = (0.1307,)  # one value, or one per channel
    input_std: tuple[float, ...] = (0.3081,)
    # What the model takes; training sets them from the data (``Recipe.for_data``), recipes need not.
    input_channels: int = 1
    input_height: int = 28
    input_width: int = 28

    def __post_init__(self) -> None:
        """Ranges checked at load, before anything allocates (recipe errors name the key)."""
        check_sizes(self, "conv_channels", "kernel_size", "hidden_units")
        check_normalisation_and_classes(self)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.kernel_size > min(self.input_height, self.input_width):
            raise ValueError(f"kernel_size {self.kernel_size} exceeds the {self.input_height}×{self.input_width} "
                             f"image")
        if self.pool_after_conv and min(self.input_height, self.input_width) < 2 ** len(self.conv_channels):
            raise ValueError(f"{len(self.conv_channels)} 2×2 poolings leave nothing of a {self.input_height}×"
                             f"{self.input_width} image")


@register_architecture("cnn", CNNConfig)
class CNN(CapsRobustModel):
    """Convolutions → fully connected → logits, trained with cross-entropy."""

    capabilities = frozenset()  # logits only: no capsules, no decoder
    trains_in_bf16 = True  # cnn-small on mnist-5k, seeds 0-2: 97.5% in bf16, 97.4% in fp32 (docs/precision.md)

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        if c.kernel_size % 2 != 1:
            raise ValueError(f"'same' padding needs an odd kernel size, got {c.kernel_size}")
        self.normalize = Normalize(c.input_mean, c.input_std)
        convs: list[nn.Module] = []
        channels, height, width = c.input_channels, c.input_height, c.input_width
        for layer, out_channels in enumerate(c.conv_channels):
            convolution = StemConv2d if layer == 0 else nn.Conv2d  # the same layer, a faster input gradient
            convs += [convolution(channels, out_channels, c.kernel_size, padding=c.kernel_size // 2), nn.ReLU()]
            if c.pool_after_conv:
                convs.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels = out_channels
        # Channels-last kernels: oneDNN then runs every convolution, ReLU and pooling of the stack in NHWC, which on
        # 2 CPU cores (interleaved runs of benchmarks/throughput.py, batch 100) made cnn-small's PGD steps 11% (fp32)
        # and 23% (bf16) faster and its training 6% and 14%; the weights and checkpoints are the same numbers.
        self.features = nn.Sequential(*convs).to(memory_format=torch.channels_last)
        dense: list[nn.Module] = []
        width = channels * height * width
        for hidden in c.hidden_units:
            dense += [nn.Linear(width, hidden), nn.ReLU()]
            if c.dropout > 0:
                dense.append(nn.Dropout(c.dropout))
            width = hidden
        dense.append(nn.Linear(width, c.num_classes))
        self.classifier = nn.Sequential(*dense)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        features = self.features(self.normalize(images))  # (B, C_last, H, W)
        return ModelOutput(logits=at_least_fp32(self.classifier(features.flatten(1))))  # (B, K), float32

    def loss(self, output: ModelOutput, images: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        cross_entropy = F.cross_entropy(output.logits, labels)
        return LossTerms(cross_entropy, {"cross_entropy": cross_entropy})
