"""CapsNet of Sabour, Frosst & Hinton (2017), *Dynamic Routing Between Capsules*, with fully batched routing.

Shapes for the paper's recipe (B = batch):
    images (B, 1, 28, 28)
    conv1 → (B, 256, 20, 20)                      256 9×9 kernels, ReLU
    primary conv → (B, 256, 6, 6)                 32 channels × 8-D capsules, 9×9, stride 2
    primary capsules → (B, 1152, 8)               32 · 6 · 6 = 1,152 capsules, squashed
    prediction vectors û = W u → (B, 1152, 10, 16)   W has shape (1152, 10, 16, 8)
    routing by agreement → digit capsules (B, 10, 16)
    lengths (B, 10)                                 the class scores
    decoder(masked poses (B, 160)) → (B, 1, 28, 28)  512–1024–784, sigmoid

What this model exposes as ``logits``: the log of the capsule lengths. Lengths live in [0, 1), so a softmax over
raw lengths can never put more than e times the mass on one class as on another; cross-entropy on them is then
nearly flat, and gradient attacks that treat the output as logits (ART, Foolbox) get weak gradients and make the
network look more robust than it is. ``softmax(log ℓ) = ℓ / Σℓ`` instead turns lengths into a proper
distribution, keeps the argmax, and gives cross-entropy its usual gradients. The raw lengths stay available as
``ModelOutput.lengths`` for the margin loss and for attacks that want another objective.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from capsrobust.models.base import (
    Capability,
    CapsRobustModel,
    LossTerms,
    ModelOutput,
    Normalize,
    at_least_fp32,
    build_decoder,
    check_normalisation_and_classes,
    check_sizes,
    mask_by_class,
    sum_squared_error,
)
from capsrobust.models.registry import register_architecture
from capsrobust.models.stem import StemConv2d

# Keeps |s| and its gradient finite at the zero vector, where attacks and early training do land.
NORM_EPS = 1e-8
MIN_LENGTH_FOR_LOG = 1e-12


def squash(vectors: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shrink vectors to length |s|² / (1 + |s|²) keeping their direction (the paper's eq. 1).

    Written as s · sqrt(|s|² + ε) / (1 + |s|²), which equals the paper's form for |s| ≫ √ε and, unlike
    s / |s|, has a finite gradient at s = 0. Computed in at least float32: ε = 1e-8 and the squared norms of
    near-zero capsules are below what bfloat16 resolves next to 1, so under autocast they would round away.
    """
    vectors = at_least_fp32(vectors)
    squared_norm = (vectors * vectors).sum(dim=dim, keepdim=True)
    return vectors * (torch.sqrt(squared_norm + NORM_EPS) / (1.0 + squared_norm))


def capsule_length(vectors: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Euclidean length with a finite gradient at the zero vector, in at least float32 (see ``squash``)."""
    vectors = at_least_fp32(vectors)
    return torch.sqrt((vectors * vectors).sum(dim=dim) + NORM_EPS)


def route_by_agreement(predictions: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic routing (the paper's Procedure 1) over a whole batch at once.

    ``predictions`` are the votes û of shape (B, N_in, C, D). Returns the output capsules (B, C, D) and the
    coupling coefficients of the last iteration (B, N_in, C), which sum to 1 over the C classes. Only the
    iterations are a Python loop; everything inside is a batched tensor operation, the same on CPU and CUDA.

    The votes are read as (B, C, N_in, D), so that both contractions (over the N_in inputs, and over the D pose
    dimensions) are batched matrix products over B·C contiguous (N_in, D) blocks; ``CapsNet.votes`` lays its
    result out that way, so the transpose below costs nothing (other layouts are copied once, not per
    iteration). The votes, the biggest tensor of the network, stay in their own dtype (bfloat16 under autocast);
    the routing logits, their softmax and the small (B, C, D) sums are float32. The backward pass is written out
    by hand (``_Routing``) because autograd's would touch the votes about four times as often.
    """
    if iterations < 1:
        raise ValueError(f"routing needs at least one iteration, got {iterations}")
    votes = predictions.transpose(1, 2).contiguous()  # (B, C, N_in, D); no copy for CapsNet.votes' layout
    outputs, coupling = _Routing.apply(votes, iterations)
    return outputs, coupling.transpose(1, 2)  # (B, C, D), (B, N_in, C)


def _weighted_sum(weights: torch.Tensor, votes: torch.Tensor) -> torch.Tensor:
    """Σ_i w_i û_i per (batch, class): (B, C, N_in) float weights, (B, C, N_in, D) votes → (B, C, D) float."""
    return torch.matmul(weights.to(votes.dtype).unsqueeze(2), votes).squeeze(2).to(weights.dtype)


def _agreement(votes: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
    """û_i · v per (batch, class, input): (B, C, N_in, D) votes, (B, C, D) float poses → (B, C, N_in) float."""
    return torch.matmul(votes, poses.to(votes.dtype).unsqueeze(3)).squeeze(3).to(poses.dtype)


class _Routing(torch.autograd.Function):
    """Routing by agreement on (B, C, N_in, D) votes with a backward pass that reads the votes 2·iterations − 2
    times and writes their gradient once.

    Autograd would differentiate each of the 2·iterations − 1 products with the votes separately: one full-size
    gradient per product, summed pairwise, about twenty passes over the network's biggest tensor. But that
    gradient is a sum of outer products, ∂L/∂û = Σ_t c_t ⊗ ∂L/∂s_t + Σ_t ∂L/∂b_{t+1} ⊗ v_t, of rank
    2·iterations − 1 per (batch, class), so it is one batched matrix product of small factors. The small
    steps (squash, softmax) are differentiated by autograd on their own small tensors.
    """

    @staticmethod
    def forward(ctx: Any, votes: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch, n_out, n_in, _ = votes.shape
        logits = votes.new_zeros(batch, n_out, n_in, dtype=torch.promote_types(votes.dtype, torch.float32))  # b
        couplings, sums, poses = [], [], []
        for iteration in range(iterations):
            coupling = logits.softmax(dim=1)  # c over the C classes, (B, C, N_in)
            weighted_sum = _weighted_sum(coupling, votes)  # s, (B, C, D)
            outputs = squash(weighted_sum)  # v, (B, C, D)
            couplings.append(coupling)
            sums.append(weighted_sum)
            poses.append(outputs)
            if iteration < iterations - 1:
                logits = logits + _agreement(votes, outputs)  # b += û·v, (B, C, N_in)
        ctx.iterations = iterations
        ctx.save_for_backward(votes, *couplings, *sums, *poses)
        return outputs, coupling

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_outputs: torch.Tensor | None, grad_coupling: torch.Tensor | None
    ) -> tuple[torch.Tensor, None]:
        iterations = ctx.iterations
        votes, *saved = ctx.saved_tensors
        couplings, sums, poses = (saved[k * iterations : (k + 1) * iterations] for k in range(3))
        grad_poses = grad_outputs if grad_outputs is not None else torch.zeros_like(poses[-1])
        grad_logits: torch.Tensor | None = None  # ∂L/∂b_{t+1}, summed over the iterations after t
        left: list[torch.Tensor] = []  # (B, C, N_in) factors of ∂L/∂û
        right: list[torch.Tensor] = []  # (B, C, D) factors of ∂L/∂û
        for t in reversed(range(iterations)):
            if t < iterations - 1:
                assert grad_logits is not None
                grad_poses = _weighted_sum(grad_logits, votes)  # v_t only fed the agreement b_{t+1} − b_t
                left.append(grad_logits)
                right.append(poses[t])
            with torch.enable_grad():
                weighted_sum = sums[t].detach().requires_grad_(True)
                (grad_sum,) = torch.autograd.grad(squash(weighted_sum), weighted_sum, grad_poses)
            left.append(couplings[t])
            right.append(grad_sum)
            if t == 0:
                break  # c_0 is the softmax of constant zeros: nothing upstream of it
            grad_c = _agreement(votes, grad_sum)  # (B, C, N_in)
            if t == iterations - 1 and grad_coupling is not None:
                grad_c = grad_c + grad_coupling
            coupling = couplings[t]
            grad_b = coupling * (grad_c - (grad_c * coupling).sum(dim=1, keepdim=True))  # softmax over C
            grad_logits = grad_b if grad_logits is None else grad_logits + grad_b
        factors = torch.stack([factor.to(votes.dtype) for factor in left], dim=3)  # (B, C, N_in, R)
        weights = torch.stack([factor.to(votes.dtype) for factor in right], dim=2)  # (B, C, R, D)
        return torch.matmul(factors, weights), None  # (B, C, N_in, D)


def margin_loss(
    lengths: torch.Tensor, labels: torch.Tensor, m_plus: float, m_minus: float, down_weight: float
) -> torch.Tensor:
    """The paper's eq. 4, summed over classes and averaged over the batch.

    L_k = T_k max(0, m⁺ − ‖v_k‖)² + λ (1 − T_k) max(0, ‖v_k‖ − m⁻)², in at least float32.
    """
    lengths = at_least_fp32(lengths)
    present = F.one_hot(labels, num_classes=lengths.shape[1]).to(lengths.dtype)  # (B, C)
    per_class = present * F.relu(m_plus - lengths) ** 2 + down_weight * (1.0 - present) * F.relu(lengths - m_minus) ** 2
    return per_class.sum(dim=1).mean()


def check_margin_loss_settings(config: Any) -> None:
    """The margin loss's and the decoder's weights, as every length-scored capsule config declares them."""
    if not 0 <= config.margin_minus < config.margin_plus <= 1:
        raise ValueError(f"margins need 0 ≤ margin_minus < margin_plus ≤ 1, got {config.margin_minus} and "
                         f"{config.margin_plus}")
    if config.margin_down_weight < 0 or config.reconstruction_weight < 0:
        raise ValueError("margin_down_weight and reconstruction_weight must be ≥ 0")


class LengthScoredCapsNet(CapsRobustModel):
    """What CapsNet and Efficient-CapsNet share after their routing: class capsules whose lengths are the scores.

    A subclass builds ``self.decoder`` and a config with the margin loss's settings, and says how images become class
    capsules (``class_capsules``); the outputs (log lengths as ``logits``, see the module docstring), the margin loss,
    and the decoder that reconstructs from the label's capsule (the prediction's without labels) are defined once
    here, so routing variants differ only in their routing.
    """

    capabilities = frozenset({Capability.CAPSULE_LENGTHS, Capability.VOTES, Capability.CLASS_DECODER})
    decoder: nn.Module
    config: Any

    @abstractmethod
    def class_capsules(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images → (B, K, D) class capsules, routed."""

    def reconstruct(self, poses: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Decode the capsule of ``classes`` only (the others masked to zero): (B, 10, 16) → (B, 1, 28, 28)."""
        pixels = self.decoder(mask_by_class(poses, classes))  # (B, C·H·W), bfloat16 under autocast
        return at_least_fp32(pixels).view(-1, *self.input_shape)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        poses = self.class_capsules(images)  # (B, 10, 16)
        lengths = capsule_length(poses)  # (B, 10)
        classes = labels if labels is not None else lengths.argmax(dim=1)
        return ModelOutput(
            logits=torch.log(lengths.clamp_min(MIN_LENGTH_FOR_LOG)),
            lengths=lengths,
            poses=poses,
            reconstruction=self.reconstruct(poses, classes),
        )

    def loss(self, output: ModelOutput, images: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        """Margin loss + reconstruction_weight · summed squared error, as the paper."""
        c = self.config
        assert output.lengths is not None and output.reconstruction is not None
        margin = margin_loss(output.lengths, labels, c.margin_plus, c.margin_minus, c.margin_down_weight)
        reconstruction = c.reconstruction_weight * sum_squared_error(output.reconstruction, images)
        return LossTerms(margin + reconstruction, {"margin": margin, "reconstruction": reconstruction})

    def decoder_parameter_names(self) -> set[str]:
        return {f"decoder.{name}" for name, _ in self.decoder.named_parameters()}


@dataclass(frozen=True)
class CapsNetConfig:
    """Hyper-parameters of a CapsNet; the defaults are the paper's."""

    conv1_channels: int = 256
    conv1_kernel: int = 9
    primary_channels: int = 32
    primary_dim: int = 8
    primary_kernel: int = 9
    primary_stride: int = 2
    num_classes: int = 10
    digit_dim: int = 16
    routing_iterations: int = 3
    margin_plus: float = 0.9
    margin_minus: float = 0.1
    margin_down_weight: float = 0.5
    decoder_hidden: tuple[int, ...] = (512, 1024)
    reconstruction_weight: float = 0.0005
    input_mean: tuple[float, ...] = (0.0,)  # one value, or one per channel
    input_std: tuple[float, ...] = (1.0,)
    # What the model takes; training sets them from the data (``Recipe.for_data``), recipes need not.
    input_channels: int = 1
    input_height: int = 28
    input_width: int = 28
    # Sabour et al.'s CIFAR-10 model (section 7): convolutions see a crop_size × crop_size crop of the image, random
    # while training and central otherwise; inside the forward pass, so attacks still act on the whole image.
    crop_size: int = 0  # 0: no crop
    # ... and routes to one more output capsule, "none of the above", that absorbs votes agreeing with no class;
    # it is never a prediction, its length is not a score, and it is not decoded.
    orphan_class: bool = False

    def __post_init__(self) -> None:
        """Ranges checked at load, before anything allocates (recipe errors name the key)."""
        check_sizes(self, "conv1_channels", "conv1_kernel", "primary_channels", "primary_dim", "primary_kernel",
                    "primary_stride", "digit_dim", "decoder_hidden")
        check_normalisation_and_classes(self)
        if not 1 <= self.routing_iterations <= 100:
            raise ValueError(f"routing_iterations must lie in [1, 100] (1: no routing), got {self.routing_iterations}")
        check_margin_loss_settings(self)
        if self.crop_size and not 0 < self.crop_size <= min(self.input_height, self.input_width):
            raise ValueError(f"crop_size {self.crop_size} does not fit a {self.input_height}×{self.input_width} image")
        if min(self.primary_grid) < 1:
            raise ValueError(f"conv1_kernel {self.conv1_kernel} and primary_kernel {self.primary_kernel} leave no "
                             f"primary capsule on a {self.seen_height}×{self.seen_width} image")

    @property
    def seen_height(self) -> int:
        """Rows the convolutions see: the crop's, or the image's."""
        return self.crop_size or self.input_height

    @property
    def seen_width(self) -> int:
        return self.crop_size or self.input_width

    @property
    def primary_grid(self) -> tuple[int, int]:
        """(rows, columns) of primary capsules: 6 × 6 on a 28 × 28 digit."""
        def after(size: int) -> int:
            return (size - self.conv1_kernel + 1 - self.primary_kernel) // self.primary_stride + 1
        return after(self.seen_height), after(self.seen_width)

    @property
    def num_primary_capsules(self) -> int:
        rows, columns = self.primary_grid
        return self.primary_channels * rows * columns

    @property
    def num_outputs(self) -> int:
        """Output capsules routing goes to: the classes, and "none of the above" when asked for."""
        return self.num_classes + int(self.orphan_class)


@register_architecture("capsnet", CapsNetConfig)
class CapsNet(LengthScoredCapsNet):
    """Conv1 → PrimaryCaps → DigitCaps (routing by agreement) → lengths, with a reconstruction decoder."""

    trains_in_bf16 = True  # capsnet-paper on mnist-5k, seed 0: 98.2% in bf16 and in fp32 (docs/precision.md)

    def __init__(self, config: CapsNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.normalize = Normalize(c.input_mean, c.input_std)
        self.conv1 = StemConv2d(c.input_channels, c.conv1_channels, c.conv1_kernel)
        self.primary = nn.Conv2d(
            c.conv1_channels, c.primary_channels * c.primary_dim, c.primary_kernel, stride=c.primary_stride
        )
        n_in = c.num_primary_capsules
        # W_ij of the paper, one (16 × 8) matrix per pair of primary capsule i and output capsule j.
        self.weights = nn.Parameter(0.01 * torch.randn(n_in, c.num_outputs, c.digit_dim, c.primary_dim))
        self.decoder = build_decoder(c.num_classes * c.digit_dim, c.decoder_hidden, self.input_shape)

    @property
    def routing_iterations(self) -> int:
        """How many rounds of routing by agreement ``forward`` runs (the vote attack routes its votes as often)."""
        return self.config.routing_iterations

    def primary_capsules(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) → squashed primary capsules (B, 1152, 8); any (B, C, H, W) → (B, N_in, 8)."""
        c = self.config
        features = F.relu(self.conv1(self.normalize(self._crop(images))))  # (B, 256, 20, 20)
        grid = self.primary(features)  # (B, 32·8, 6, 6)
        batch = grid.shape[0]
        capsules = grid.unflatten(1, (c.primary_channels, c.primary_dim))  # (B, 32, 8, 6, 6)
        capsules = capsules.permute(0, 1, 3, 4, 2).reshape(batch, -1, c.primary_dim)  # (B, 1152, 8)
        return squash(capsules)

    def _crop(self, images: torch.Tensor) -> torch.Tensor:
        """The crop the convolutions see (``crop_size``): one random offset per batch while training (seeded by the
        training loop's per-epoch seed), the centre otherwise, so evaluation and attacks are deterministic."""
        size = self.config.crop_size
        if not size:
            return images
        height, width = images.shape[-2:]
        if self.training:
            top = int(torch.randint(0, height - size + 1, ()))
            left = int(torch.randint(0, width - size + 1, ()))
        else:
            top, left = (height - size) // 2, (width - size) // 2
        return images[..., top : top + size, left : left + size]

    def votes(self, primary: torch.Tensor) -> torch.Tensor:
        """Prediction vectors û_j|i = W_ij u_i: (B, 1152, 8) → (B, 1152, 10, 16).

        One batched matrix product over the 1,152 primary capsules, then one copy into (B, 10, 1152, 16) memory,
        returned as a (B, 1152, 10, 16) view: both contractions of the routing loop (over the 1,152 inputs and
        over the 16 pose dimensions) then run as batched matrix products on contiguous (1152, 16) blocks, with
        no copies inside the loop. Under autocast the votes are bfloat16, which halves the traffic of the
        network's biggest tensor.
        """
        n_in, n_out, out_dim, _ = self.weights.shape
        flat_weights = self.weights.flatten(1, 2)  # (1152, 160, 8); a view unless W was made channels-last
        votes = torch.matmul(primary.transpose(0, 1), flat_weights.transpose(1, 2))  # (1152, B, 160)
        votes = votes.view(n_in, -1, n_out, out_dim).permute(1, 2, 0, 3).contiguous()  # (B, 10, 1152, 16)
        return votes.transpose(1, 2)  # (B, 1152, 10, 16), a view

    def class_capsules(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) → the digit capsules (B, 10, 16), routed; the "none of the above" capsule is dropped."""
        outputs, _ = route_by_agreement(
            self.votes(self.primary_capsules(images)), self.routing_iterations
        )  # (B, 10, 16), or (B, 11, 16) with "none of the above"
        return outputs[:, : self.config.num_classes]
