"""Efficient-CapsNet of Mazzia, Salvetti & Chiaberge (2021), *Efficient-CapsNet: capsule network with self-attention
routing* (Scientific Reports 11, 14634), after the authors' code (github.com/EscVM/Efficient-CapsNet,
``models/efficient_capsnet_graph_mnist.py`` and ``utils/layers.py``).

Shapes for the paper's MNIST recipe (B = batch):
    images (B, 1, 28, 28)
    4 convolutions, 'valid', each ReLU then BatchNorm:
        32 5×5 → (B, 32, 24, 24); 64 3×3 → (B, 64, 22, 22); 64 3×3 → (B, 64, 20, 20); 128 3×3 /2 → (B, 128, 9, 9)
    depthwise 9×9 convolution → (B, 128, 1, 1)          one 9×9 filter per channel, no mixing of channels
    primary capsules → (B, 16, 8)                        the 128 channels read as 16 capsules of 8 D, squashed
    votes û_j|i = W_ij u_i → (B, 16, 10, 16)             W has shape (16, 10, 8, 16)
    self-attention routing (one step) → class capsules (B, 10, 16)
    lengths (B, 10)                                       the class scores
    decoder(masked poses (B, 160)) → (B, 1, 28, 28)      512–1024–784, sigmoid

On other images the depthwise kernel stays 9×9 and slides over whatever grid the convolutions leave (11 × 11 on
32 × 32 images: 3 × 3 positions, 144 primary capsules), as CapsNet's primary capsules do.

Self-attention routing replaces the routing iterations by one step. For each class j, every vote û_i agrees with the
other votes for j by Σ_k û_i·û_k / √D (a row sum of the votes' self-attention matrix); a softmax of these agreements
over the classes gives coupling coefficients c_ij (each input spreads one unit of vote over the classes, as in dynamic
routing), a learned bias b_ij (the paper's log priors) is added, and s_j = Σ_i (c_ij + b_ij) û_i is squashed. The
softmax runs over the classes because the authors' code does (``tf.nn.softmax(c, axis=1)`` on (B, classes, inputs,
1)); a reading of the paper as a softmax over the inputs would differ.

``routing = "uniform"`` is the no-routing ablation (``efficient-capsnet-uniform``), as one iteration is for dynamic
routing: every coupling is 1/K, no agreement is computed, and s_j = Σ_i (1/K + b_ij) û_i keeps the learned priors,
which do not depend on the input. Everything else is the same network, so a difference in robustness between the
two is the routing's.

Their squash is 1 − e^(−|s|) for the length instead of |s|² / (1 + |s|²), for primary and class capsules alike.
``logits`` are log lengths, as CapsNet's, for the same reason (see ``capsrobust.models.capsnet``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from capsrobust.models.base import (
    Normalize,
    at_least_fp32,
    build_decoder,
    check_normalisation_and_classes,
    check_sizes,
)
from capsrobust.models.capsnet import (
    MIN_LENGTH_FOR_LOG,
    NORM_EPS,
    LengthScoredCapsNet,
    capsule_length,
    check_margin_loss_settings,
    squash,
)
from capsrobust.models.registry import register_architecture
from capsrobust.models.stem import StemConv2d


def efficient_squash(vectors: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Efficient-CapsNet's squash: length 1 − e^(−|s|), direction kept.

    Written as s · (1 − e^(−n)) / n with n = sqrt(|s|² + ε): (1 − e^(−n)) / n tends to 1 at s = 0, so the gradient
    is finite there (the authors' s / (|s| + ε) is not), and ``expm1`` keeps it exact for small n. In at least
    float32, for the reason ``capsnet.squash`` gives.
    """
    vectors = at_least_fp32(vectors)
    norm = torch.sqrt((vectors * vectors).sum(dim=dim, keepdim=True) + NORM_EPS)
    return vectors * (-torch.expm1(-norm) / norm)


def self_attention_routing(votes: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of self-attention routing on votes (B, N_in, K, D) with a learned bias (N_in, K).

    Returns the class capsules (B, K, D) and the coupling coefficients (B, N_in, K), the softmax part only: they sum
    to 1 over the K classes for every input; the poses use c + b, which need not. The agreement of û_i with all the
    votes for its class, Σ_k û_i·û_k, is û_i · (Σ_k û_k): one (B, K, D) sum instead of the (N_in × N_in) matrix.
    Computed in at least float32 (the votes are few: 16 × 10 × 16 per MNIST image).
    """
    votes = at_least_fp32(votes)  # (B, N_in, K, D)
    total = votes.sum(dim=1, keepdim=True)  # Σ_k û_k per class, (B, 1, K, D)
    agreement = (votes * total).sum(dim=-1) / math.sqrt(votes.shape[-1])  # (B, N_in, K)
    coefficients = agreement.softmax(dim=2)  # over the K classes, (B, N_in, K)
    weights = coefficients + bias.to(coefficients.dtype)  # c + b, (B, N_in, K)
    sums = (weights.unsqueeze(-1) * votes).sum(dim=1)  # s_j = Σ_i (c_ij + b_ij) û_i, (B, K, D)
    return efficient_squash(sums), coefficients


def uniform_routing(votes: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """No routing, in ``self_attention_routing``'s signature: couplings 1/K for every input and class, plus the
    learned bias, which does not depend on the input. Votes (B, N_in, K, D) → class capsules (B, K, D) and the
    couplings (B, N_in, K)."""
    votes = at_least_fp32(votes)  # (B, N_in, K, D)
    coefficients = torch.full(votes.shape[:3], 1.0 / votes.shape[2], dtype=votes.dtype, device=votes.device)
    weights = coefficients + bias.to(coefficients.dtype)  # (B, N_in, K)
    return efficient_squash((weights.unsqueeze(-1) * votes).sum(dim=1)), coefficients


ROUTINGS = {"self-attention": self_attention_routing, "uniform": uniform_routing}


def log_lengths(poses: torch.Tensor) -> torch.Tensor:
    """(B, K, D) capsules → (B, K) log lengths, clamped as CapsNet's logits are."""
    return torch.log(capsule_length(poses).clamp_min(MIN_LENGTH_FOR_LOG))


@dataclass(frozen=True)
class EfficientCapsNetConfig:
    """Hyper-parameters of an Efficient-CapsNet; the defaults are the paper's MNIST model."""

    conv_channels: tuple[int, ...] = (32, 64, 64, 128)
    conv_kernels: tuple[int, ...] = (5, 3, 3, 3)
    conv_strides: tuple[int, ...] = (1, 1, 1, 2)
    primary_kernel: int = 9  # the depthwise convolution's
    primary_dim: int = 8  # the last convolution's channels are read as capsules of this many dimensions
    num_classes: int = 10
    class_dim: int = 16
    margin_plus: float = 0.9
    margin_minus: float = 0.1
    margin_down_weight: float = 0.5
    decoder_hidden: tuple[int, ...] = (512, 1024)
    reconstruction_weight: float = 0.0005  # on the summed squared error; the authors' 0.392 × mean over 784 pixels
    input_mean: tuple[float, ...] = (0.0,)  # one value, or one per channel
    input_std: tuple[float, ...] = (1.0,)
    routing: str = "self-attention"  # or "uniform": the no-routing ablation (couplings 1/K)
    # What the model takes; training sets them from the data (``Recipe.for_data``), recipes need not.
    input_channels: int = 1
    input_height: int = 28
    input_width: int = 28

    def __post_init__(self) -> None:
        """Ranges checked at load, before anything allocates (recipe errors name the key)."""
        check_sizes(self, "conv_channels", "conv_kernels", "conv_strides", "primary_kernel", "primary_dim",
                    "class_dim", "decoder_hidden")
        check_normalisation_and_classes(self)
        if not len(self.conv_channels) == len(self.conv_kernels) == len(self.conv_strides) >= 1:
            raise ValueError(f"conv_channels, conv_kernels and conv_strides need one entry per convolution, got "
                             f"{len(self.conv_channels)}, {len(self.conv_kernels)} and {len(self.conv_strides)}")
        if self.conv_channels[-1] % self.primary_dim:
            raise ValueError(f"primary_dim {self.primary_dim} must divide the last of conv_channels "
                             f"({self.conv_channels[-1]}): its channels are read as capsules")
        check_margin_loss_settings(self)
        if self.routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {', '.join(ROUTINGS)}, got {self.routing!r}")
        if min(self.primary_grid) < 1:
            raise ValueError(f"conv_kernels {self.conv_kernels}, conv_strides {self.conv_strides} and primary_kernel "
                             f"{self.primary_kernel} leave no primary capsule on a {self.input_height}×"
                             f"{self.input_width} image")

    @property
    def primary_grid(self) -> tuple[int, int]:
        """(rows, columns) of primary capsule positions: 1 × 1 on a 28 × 28 digit."""
        def after(size: int) -> int:
            for kernel, stride in zip(self.conv_kernels, self.conv_strides, strict=True):
                size = (size - kernel) // stride + 1 if size >= kernel else 0
            return size - self.primary_kernel + 1
        return after(self.input_height), after(self.input_width)

    @property
    def num_primary_capsules(self) -> int:
        rows, columns = self.primary_grid
        return self.conv_channels[-1] // self.primary_dim * rows * columns


@register_architecture("efficient-capsnet", EfficientCapsNetConfig)
class EfficientCapsNet(LengthScoredCapsNet):
    """Convolutions + BatchNorm → depthwise primary capsules → one self-attention routing step → lengths, decoder.

    BatchNorm makes training-mode outputs depend on the batch; in eval mode (every attack and evaluation) it uses
    its running statistics, so the model is deterministic there.
    """

    trains_in_bf16 = True  # mnist-5k, seed 0, 15 epochs in bf16: 98.8% validation accuracy (the routing profile)

    def __init__(self, config: EfficientCapsNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.normalize = Normalize(c.input_mean, c.input_std)
        layers: list[nn.Module] = []
        channels = c.input_channels
        for out_channels, kernel, stride in zip(c.conv_channels, c.conv_kernels, c.conv_strides, strict=True):
            convolution = nn.Conv2d if layers else StemConv2d  # the first: a faster input gradient
            conv = convolution(channels, out_channels, kernel, stride=stride)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")  # the authors' he_normal
            # ReLU before BatchNorm, as the authors' code; eps and momentum are Keras' defaults (0.99 there).
            layers += [conv, nn.ReLU(), nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.01)]
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.primary = nn.Conv2d(channels, channels, c.primary_kernel, groups=channels)  # depthwise, linear
        n_in, n_out = c.num_primary_capsules, c.num_classes
        # W_ij, one (D_in × D) matrix per primary capsule i and class j; he_normal over fan-in K·N_in·D_in as Keras.
        fan_in = n_out * n_in * c.primary_dim
        self.weights = nn.Parameter(math.sqrt(2.0 / fan_in) * torch.randn(n_in, n_out, c.primary_dim, c.class_dim))
        self.bias = nn.Parameter(torch.zeros(n_in, n_out))  # b_ij, the paper's log priors
        self.decoder = build_decoder(n_out * c.class_dim, c.decoder_hidden, self.input_shape)

    @property
    def routing_iterations(self) -> int:
        """1: self-attention routing is one non-iterative step (what the vote attack reads for this model)."""
        return 1

    def primary_capsules(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) → squashed primary capsules (B, 16, 8); any (B, C, H, W) → (B, N_in, D_in)."""
        grid = self.primary(self.features(self.normalize(images)))  # (B, 128, 1, 1)
        capsules = grid.unflatten(1, (-1, self.config.primary_dim))  # (B, 16, 8, rows, columns)
        capsules = capsules.permute(0, 1, 3, 4, 2).flatten(1, 3)  # (B, 16 · rows · columns, 8)
        return efficient_squash(capsules)

    def votes(self, primary: torch.Tensor) -> torch.Tensor:
        """Prediction vectors û_j|i = W_ij u_i: (B, 16, 8) → (B, 16, 10, 16), laid out as ``CapsNet.votes``'
        (contiguous (B, K, N_in, D) memory, returned as a (B, N_in, K, D) view)."""
        votes = torch.einsum("bni,nkid->bknd", primary, self.weights)  # (B, 10, 16, 16)
        return votes.transpose(1, 2)  # (B, 16, 10, 16), a view

    def routed_logits(self, primary: torch.Tensor, votes: torch.Tensor) -> torch.Tensor:
        """The model's own logits (B, K) from ``votes`` (B, N_in, K, D): log lengths after the config's routing.

        ``primary`` is unused: routing here reads only the votes; the argument keeps one signature for every
        routing variant the vote attack calls.
        """
        return log_lengths(self.route(votes)[0])  # (B, K)

    def routing_free_logits(self, primary: torch.Tensor, votes: torch.Tensor) -> torch.Tensor:
        """Log length of the squashed mean of the votes (B, K): the vote attack's surrogate, with no routing.

        The same surrogate, with CapsNet's squash, as the vote attack uses for dynamic routing, so the routing-free
        attacks of the variants differ only in their votes. ``primary`` is unused (see ``routed_logits``).
        """
        return log_lengths(squash(votes.mean(dim=1)))  # mean over the N_in inputs: (B, K, D) → (B, K)

    def class_capsules(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) → the class capsules (B, 10, 16) after one self-attention routing step (or none)."""
        return self.route(self.votes(self.primary_capsules(images)))[0]

    def route(self, votes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Votes (B, N_in, K, D) → class capsules (B, K, D) and couplings (B, N_in, K), by the config's routing."""
        return ROUTINGS[self.config.routing](votes, self.bias)
