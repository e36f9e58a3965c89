"""Matrix capsules with EM routing (Hinton, Sabour & Frosst, ICLR 2018), scaled for 28 × 28 images.

Each capsule is a 4 × 4 pose matrix M and an activation a. A capsule i votes V_ij = M_i W_ij for every capsule j of
the layer above; EM routing fits one axis-aligned Gaussian per capsule j to the votes, weighted by a_i and by the
assignments R_ij, and turns each Gaussian's description cost into j's activation (the paper's Procedure 1).

Shapes for A = B = C = D = 32 on (B, 1, 28, 28) digits (Bt = batch, K = classes):
    images (Bt, 1, 28, 28)
    conv1 → (Bt, A, 14, 14)                     A 5×5 kernels, stride 2, padding 2, ReLU
    primary capsules → (Bt, 14, 14, B, 16) poses, (Bt, 14, 14, B) activations    1×1 convolutions, sigmoid activation
    ConvCaps1 → (Bt, 6, 6, C, 16), (Bt, 6, 6, C)    3×3 (K = 3), stride 2, EM routing in each receptive field
    ConvCaps2 → (Bt, 4, 4, D, 16), (Bt, 4, 4, D)    3×3, stride 1
    class votes → (Bt, 4·4·D, K, 16)            one W per (type, class) shared over positions, coordinate addition
    class capsules → poses (Bt, K, 16), activations (Bt, K)

"Scaled for 28 × 28": the paper feeds 32 × 32 crops of smallNORB to an unpadded conv1 (14 × 14 feature maps);
padding conv1 by 2 gives 28 × 28 digits the same 14 → 6 → 4 grids, so the capsule layers are the paper's exactly
(318,964 parameters with A = B = C = D = 32 and K = 10; the paper states about 310K). Other image sizes work too
(32 × 32 → 16 → 7 → 5).

Convolutional capsule layers route each output position's receptive field on its own (an input capsule's
assignments are normalised over the output types at that position), as the public reference implementations do;
the paper's inputs also compete across the overlapping positions they feed, which those implementations and this
one leave out.

Coordinate addition follows the paper's words: the scaled (row, column) of a ConvCaps2 capsule's position goes into
the first two elements of the right-hand column of its 4 × 4 vote matrix (entries 3 and 7 of the flattened vote).

Training: the spread loss on the class activations, its margin growing linearly from ``margin_start`` (0.2) to
``margin_end`` (0.9) over ``margin_anneal_steps`` training steps, counted by the ``steps_seen`` buffer (saved with
the weights, so a resumed run continues the schedule). λ's scale matters: a class activation is
logistic(λ(β_a − Σ_h cost_h)) and the cost grows with the data routed to the class, so the same ``final_lambda``
leaves a network with fewer class-layer inputs barely able to move its activations; the recipes scale it (see
models/em-capsnet-small.toml).

Optional beyond the paper, for the routing comparison (issue 20): a class decoder as CapsNet's (``decoder``), fed
the 16 pose entries of one class capsule with the others masked, so the reconstruction detector and the
defense-aware attack apply; and transformation weights drawn N(0, σ²) instead of the fan rule below
(``transformation_std``), which public reimplementations use and which learned faster than the fan rule in our
probes (models/em-capsnet-small.toml).

``ModelOutput.logits`` are the class activations' pre-sigmoid values λ(β_a − Σ_h cost_h), exactly the logit of
the activation, computed without ever forming log(a / (1 − a)). Activations are not capsule lengths, so the model
declares no ``CAPSULE_LENGTHS``: attacks score it by these logits (cross-entropy or the margin on them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

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
from capsrobust.models.compiled import CompiledOrEager
from capsrobust.models.registry import register_architecture
from capsrobust.models.stem import StemConv2d

#: Keeps Σ_i R_ij away from zero for an output no active input is assigned to.
EPS = 1e-8
#: Added to every variance σ²: an output whose votes agree exactly would otherwise cost −∞ (the references add 1e-8
#: or 1e-9 likewise).
VARIANCE_EPS = 1e-8
LOG_2PI = math.log(2 * math.pi)
#: The inverse temperature λ_t = final_lambda · (1 − 0.95^t) at EM iteration t = 1, 2, ...: Hinton's answer on
#: OpenReview (https://openreview.net/forum?id=HJWLfGWRb), "final_lambda is set to 0.01", as quoted and followed by
#: IBM/matrix-capsules-with-em-routing (em_routing.py, Gritzman 2019). λ grows over the iterations, so later
#: iterations sharpen the activations; the paper itself only says "a fixed schedule".
FINAL_LAMBDA = 0.01
LAMBDA_DECAY = 0.95


def inverse_temperature(iteration: int, final_lambda: float) -> float:
    """λ at EM iteration ``iteration`` (counted from 1): final_lambda · (1 − 0.95^iteration)."""
    return final_lambda * (1.0 - LAMBDA_DECAY**iteration)


class EMRouting(NamedTuple):
    """What EM routing returns for one group of inputs and outputs."""

    poses: torch.Tensor  # μ_j, (B, K, D)
    activations: torch.Tensor  # a_j, (B, K), in (0, 1)
    assignments: torch.Tensor  # R_ij the last M-step used, (B, N_in, K); each row sums to 1 over K
    logits: torch.Tensor  # λ(β_a − Σ_h cost_h), (B, K): the logit of a_j, computed directly


def m_step(
    votes: torch.Tensor,
    activations: torch.Tensor,
    assignments: torch.Tensor,
    beta_u: torch.Tensor,
    beta_a: torch.Tensor,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's M-step for every output j at once, on votes laid out (B, K, N_in, D).

    R'_ij = R_ij a_i;  μ_j = Σ_i R'_ij V_ij / Σ_i R'_ij;  σ²_j likewise;
    cost_h = (β_u + ln σ_h) Σ_i R'_ij;  logit_j = λ (β_a − Σ_h cost_h);  a_j = logistic(logit_j).
    ``activations`` are (B, N_in), ``assignments`` (B, K, N_in). Returns μ (B, K, D), σ² (B, K, D), the logits
    (B, K) and the squared deviations (V − μ)² (B, K, N_in, D), which the E-step needs too. Both sums over the inputs
    are batched matrix products over contiguous (N_in, D) blocks, so nothing of the votes' size is copied.
    """
    weighted = assignments * activations.unsqueeze(1)  # R'_ij, (B, K, N_in)
    amount = weighted.sum(dim=2)  # Σ_i R'_ij, the data assigned to j, (B, K)
    share = (weighted / (amount.unsqueeze(2) + EPS)).unsqueeze(2)  # (B, K, 1, N_in), sums to 1 over i
    mean = torch.matmul(share, votes)  # μ, (B, K, 1, D)
    squared = (votes - mean) ** 2  # (B, K, N_in, D)
    variance = torch.matmul(share, squared).squeeze(2) + VARIANCE_EPS  # σ², (B, K, D)
    cost = (beta_u.unsqueeze(-1) + 0.5 * torch.log(variance)) * amount.unsqueeze(-1)  # (B, K, D)
    logits = lam * (beta_a - cost.sum(dim=-1))  # (B, K)
    return mean.squeeze(2), variance, logits, squared


def e_step(squared: torch.Tensor, variance: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The paper's E-step: R_ij ∝ a_j p_j(V_ij) under j's Gaussian, normalised over the K outputs, in log space.

    ``squared`` (B, K, N_in, D) are (V − μ)² of the M-step before, ``variance`` (B, K, D), ``logits`` (B, K);
    returns R (B, K, N_in).
    """
    log_density = -torch.matmul(squared, (0.5 / variance).unsqueeze(-1)).squeeze(-1)  # −Σ_h (V−μ)²/2σ², (B, K, N_in)
    log_density = log_density - 0.5 * (torch.log(variance) + LOG_2PI).sum(dim=-1, keepdim=True)
    return torch.softmax(F.logsigmoid(logits).unsqueeze(-1) + log_density, dim=1)  # ln a_j + ln p_ij → R


def em_routing(
    votes: torch.Tensor,
    activations: torch.Tensor,
    beta_u: torch.Tensor,
    beta_a: torch.Tensor,
    iterations: int,
    final_lambda: float = FINAL_LAMBDA,
) -> EMRouting:
    """EM routing (the paper's Procedure 1) of (B, N_in, K, D) votes cast by inputs with (B, N_in) activations.

    Starts from uniform assignments R = 1/K, runs ``iterations`` M-steps with an E-step between each pair (the
    last E-step would change nothing that is returned), λ following ``inverse_temperature``. ``beta_u`` and
    ``beta_a`` hold one learned value per output (type). Computed in at least float32: the variances of tight
    clusters are far below what bfloat16 resolves. The votes are read as (B, K, N_in, D); the layers of
    ``EMCapsNet`` lay theirs out that way, so the transpose below copies nothing.
    """
    if iterations < 1:
        raise ValueError(f"EM routing needs at least one iteration, got {iterations}")
    votes = at_least_fp32(votes).transpose(1, 2).contiguous()  # (B, K, N_in, D)
    activations = at_least_fp32(activations)  # (B, N_in)
    batch, n_out, n_in, _ = votes.shape
    assignments = votes.new_full((batch, n_out, n_in), 1.0 / n_out)  # R, (B, K, N_in)
    with full_precision(votes.device):
        for iteration in range(1, iterations + 1):
            mean, variance, logits, squared = m_step(votes, activations, assignments, beta_u, beta_a,
                                                     inverse_temperature(iteration, final_lambda))
            if iteration < iterations:
                assignments = e_step(squared, variance, logits)
    return EMRouting(mean, torch.sigmoid(logits), assignments.transpose(1, 2), logits)


def full_precision(device: torch.device) -> torch.autocast:
    """No autocast inside: a bfloat16 mean is off by ~0.4% of the votes' size, more than a tight cluster's σ."""
    return torch.autocast(device.type, enabled=False)


def spread_loss(activations: torch.Tensor, labels: torch.Tensor, margin: float | torch.Tensor) -> torch.Tensor:
    """The paper's eq. 3, L = Σ_{i≠t} max(0, m − (a_t − a_i))², averaged over the batch, in at least float32."""
    activations = at_least_fp32(activations)
    target = activations.gather(1, labels.unsqueeze(1))  # a_t, (B, 1)
    per_class = F.relu(margin - (target - activations)) ** 2  # (B, K); the target's own term is m²
    others = 1.0 - F.one_hot(labels, num_classes=activations.shape[1]).to(activations.dtype)
    return (per_class * others).sum(dim=1).mean()


def annealed_margin(steps: int, start: float, end: float, anneal_steps: int) -> float:
    """The spread loss's margin after ``steps`` training steps: linear from ``start`` to ``end`` over
    ``anneal_steps`` steps, then ``end`` (the paper: "starting with a small margin of 0.2 and linearly increasing it
    during training to 0.9, we avoid dead capsules in the earlier layers")."""
    return start + (end - start) * min(1.0, steps / anneal_steps)


@dataclass(frozen=True)
class EMCapsNetConfig:
    """Hyper-parameters of an EM capsule network; the defaults are the paper's smallNORB model (A = B = C = D = 32)."""

    conv1_channels: int = 32  # A
    primary_types: int = 32  # B
    convcaps1_types: int = 32  # C
    convcaps2_types: int = 32  # D
    pose_dim: int = 16  # entries of a pose matrix; a square: 16 = 4 × 4
    capsule_kernel: int = 3  # K of both convolutional capsule layers
    routing_iterations: int = 3
    final_lambda: float = FINAL_LAMBDA  # λ_t = final_lambda · (1 − 0.95^t)
    margin_start: float = 0.2
    margin_end: float = 0.9
    margin_anneal_steps: int = 5000  # training steps (batches) over which the margin grows linearly
    # 0: every capsule layer's W drawn by the fan rule (``_transformation``); > 0: N(0, transformation_std²) in every
    # layer, as yl-1993/Matrix-Capsules-EM-PyTorch (std 1), which learned faster than the fan rule in our probes
    # (models/em-capsnet-small.toml says what was measured).
    transformation_std: float = 0.0
    # A class decoder (Sabour et al.'s 512-1024-pixels, fed the pose of one class, the others masked), trained with
    # reconstruction_weight · summed squared error like CapsNet's: not in the EM paper, which has none; the routing
    # comparison gives every variant one so that the detector and the defense-aware attack apply to all of them.
    decoder: bool = False
    decoder_hidden: tuple[int, ...] = (512, 1024)
    reconstruction_weight: float = 0.0005
    num_classes: int = 10
    input_mean: tuple[float, ...] = (0.0,)  # one value, or one per channel
    input_std: tuple[float, ...] = (1.0,)
    # What the model takes; training sets them from the data (``Recipe.for_data``), recipes need not.
    input_channels: int = 1
    input_height: int = 28
    input_width: int = 28
    # Run EM routing through torch.compile (same mathematics, 2.9x faster a training step on a CPU; capsrobust/
    # models/compiled.py). Off by default: compiling costs ~20 s a shape, more than tiny models ever run.
    compile_routing: bool = False

    def __post_init__(self) -> None:
        """Ranges checked at load, before anything allocates (recipe errors name the key)."""
        check_sizes(self, "conv1_channels", "primary_types", "convcaps1_types", "convcaps2_types", "pose_dim",
                    "capsule_kernel", "margin_anneal_steps", "decoder_hidden")
        check_normalisation_and_classes(self)
        side = math.isqrt(self.pose_dim)
        if side * side != self.pose_dim or side < 2:
            raise ValueError(f"pose_dim must be a square of 2 or more (16 = 4×4 pose matrices), got {self.pose_dim}")
        if not 1 <= self.routing_iterations <= 100:
            raise ValueError(f"routing_iterations must lie in [1, 100] (1: no E-step), got {self.routing_iterations}")
        if not 0 < self.final_lambda <= 1000:
            raise ValueError(f"final_lambda must lie in (0, 1000], got {self.final_lambda}")
        if not 0 <= self.transformation_std <= 100:
            raise ValueError(f"transformation_std must lie in [0, 100] (0: the fan rule), got "
                             f"{self.transformation_std}")
        if self.reconstruction_weight < 0:
            raise ValueError(f"reconstruction_weight must be ≥ 0, got {self.reconstruction_weight}")
        if not 0 <= self.margin_start <= self.margin_end <= 1:
            raise ValueError(f"margins need 0 ≤ margin_start ≤ margin_end ≤ 1, got {self.margin_start} and "
                             f"{self.margin_end}")
        if min(self.class_grid) < 1:
            raise ValueError(f"capsule_kernel {self.capsule_kernel} leaves no class-layer input capsule on a "
                             f"{self.input_height}×{self.input_width} image")

    @property
    def pose_side(self) -> int:
        """4 for 4 × 4 pose matrices."""
        return math.isqrt(self.pose_dim)

    @property
    def class_grid(self) -> tuple[int, int]:
        """(rows, columns) of ConvCaps2, the class layer's inputs: 4 × 4 on a 28 × 28 digit."""
        def after(size: int) -> int:
            conv1 = (size - 1) // 2 + 1  # 5×5, stride 2, padding 2
            convcaps1 = (conv1 - self.capsule_kernel) // 2 + 1  # stride 2
            return convcaps1 - self.capsule_kernel + 1  # stride 1
        return after(self.input_height), after(self.input_width)

    @property
    def num_class_inputs(self) -> int:
        rows, columns = self.class_grid
        return rows * columns * self.convcaps2_types


def _transformation(inputs: int, outputs: int, side: int, fan_below: int, std: float = 0.0) -> nn.Parameter:
    """W (inputs, outputs, side, side), N(0, fan_below / side): votes at the scale of the layer below's votes; or
    N(0, std²) when ``std`` is given (> 0).

    A capsule's pose is the mean μ of its votes, about 1/√fan_below of their size, so with a fixed scale every layer
    would shrink the poses (and σ) again; ln σ then dominates the cost, every activation starts saturated at 1 and
    nothing learns. Hinton set the initial scales "so that at the start of training half of the capsules in each
    layer are active" (OpenReview, quoted in IBM/matrix-capsules-with-em-routing); this rule does that without data:
    ``fan_below`` is the number of votes each capsule of the layer below averages (1 for the primary capsules).
    """
    return nn.Parameter(torch.randn(inputs, outputs, side, side) * (std or math.sqrt(fan_below / side)))


def matrix_votes(poses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """V_ij = M_i W_ij for (N, I, P, P) poses and (I, J, P, P) weights: (N, I, J, P²), a view of (N, J, I, P²)
    memory, the layout ``em_routing`` reads without a copy.

    One batched product over the I inputs ((N·P, P) @ (P, J·P) each), then one copy into the routing's layout.
    """
    n, i, side, _ = poses.shape
    j = weights.shape[1]
    by_input = poses.permute(1, 0, 2, 3).reshape(i, n * side, side)  # (I, N·P, P)
    votes = torch.bmm(by_input, weights.permute(0, 2, 1, 3).reshape(i, side, j * side))  # (I, N·P, J·P)
    votes = votes.view(i, n, side, j, side).permute(1, 3, 0, 2, 4).reshape(n, j, i, side * side)  # (N, J, I, P²)
    return votes.transpose(1, 2)  # (N, I, J, P²), a view


class ConvCapsules(nn.Module):
    """A convolutional capsule layer: each output position routes the K × K × T_in capsules of its receptive field
    to its T_out capsule types by EM."""

    def __init__(
        self, in_types: int, out_types: int, kernel: int, stride: int, side: int, fan_below: int,
        route: Callable[..., EMRouting] = em_routing, std: float = 0.0,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.side = kernel, stride, side
        self.route = route  # em_routing, or the model's compiled copy of it
        # one W per (input in the receptive field, output type)
        self.weights = _transformation(kernel * kernel * in_types, out_types, side, fan_below, std)
        self.beta_u = nn.Parameter(torch.zeros(out_types))  # one per output type
        self.beta_a = nn.Parameter(torch.zeros(out_types))

    def forward(
        self, poses: torch.Tensor, activations: torch.Tensor, iterations: int, final_lambda: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Bt, H, W, T_in, P²) poses, (Bt, H, W, T_in) activations → (Bt, H', W', T_out, P²), (Bt, H', W', T_out)."""
        k, s, side = self.kernel, self.stride, self.side
        batch = poses.shape[0]
        fields = poses.unfold(1, k, s).unfold(2, k, s)  # (Bt, H', W', T_in, P², k, k)
        rows, columns = fields.shape[1:3]
        fields = fields.permute(0, 1, 2, 5, 6, 3, 4).reshape(-1, k * k * poses.shape[3], side, side)  # (N, I, P, P)
        present = activations.unfold(1, k, s).unfold(2, k, s)  # (Bt, H', W', T_in, k, k)
        present = present.permute(0, 1, 2, 4, 5, 3).reshape(fields.shape[0], -1)  # (N, I), N = Bt·H'·W'
        votes = matrix_votes(fields, self.weights)  # V = M W, (N, I, T_out, P²), laid out (N, T_out, I, P²)
        routed = self.route(votes, present, self.beta_u, self.beta_a, iterations, final_lambda)
        out_types = self.weights.shape[1]
        return (routed.poses.view(batch, rows, columns, out_types, -1),  # (Bt, H', W', T_out, P²)
                routed.activations.view(batch, rows, columns, out_types))  # (Bt, H', W', T_out)


@register_architecture("em-capsnet", EMCapsNetConfig)
class EMCapsNet(CapsRobustModel):
    """ReLU conv1 → primary capsules → ConvCaps1 → ConvCaps2 → class capsules, EM routing between capsule layers,
    trained with the spread loss whose margin anneals from ``margin_start`` to ``margin_end`` (plus a
    reconstruction term when the config asks for a class decoder).

    What it can do depends on its config: every instance exposes votes, one built with ``decoder`` also a class
    decoder, so ``capabilities`` is set per instance.
    """

    capabilities = frozenset({Capability.VOTES})
    # trains_in_bf16 stays False: its loss is so rough at initialisation that a 0.4% change of the input turns its
    # gradient (cosine 0.26 in fp32), and two bf16 epochs stayed at chance (benchmarks/bf16_gradient.py,
    # docs/precision.md)

    steps_seen: torch.Tensor

    def __init__(self, config: EMCapsNetConfig) -> None:
        super().__init__()
        self.config = c = config
        side = c.pose_side
        # One routing function for every layer: compiled or not, by the recipe.
        self.route: Callable[..., EMRouting] = CompiledOrEager(em_routing) if c.compile_routing else em_routing
        self.normalize = Normalize(c.input_mean, c.input_std)
        self.conv1 = StemConv2d(c.input_channels, c.conv1_channels, 5, stride=2, padding=2)
        self.primary_poses = nn.Conv2d(c.conv1_channels, c.primary_types * c.pose_dim, 1)
        self.primary_activations = nn.Conv2d(c.conv1_channels, c.primary_types, 1)
        field = c.capsule_kernel**2  # K × K positions in a receptive field
        std = c.transformation_std
        self.convcaps1 = ConvCapsules(c.primary_types, c.convcaps1_types, c.capsule_kernel, 2, side, 1, self.route,
                                      std)
        self.convcaps2 = ConvCapsules(c.convcaps1_types, c.convcaps2_types, c.capsule_kernel, 1, side,
                                      field * c.primary_types, self.route, std)
        # One W per (ConvCaps2 type, class), shared by the positions of that type (with coordinate addition).
        self.class_weights = _transformation(c.convcaps2_types, c.num_classes, side, field * c.convcaps1_types, std)
        self.class_beta_u = nn.Parameter(torch.zeros(c.num_classes))
        self.class_beta_a = nn.Parameter(torch.zeros(c.num_classes))
        self.decoder = build_decoder(c.num_classes * c.pose_dim, c.decoder_hidden, self.input_shape) \
            if c.decoder else None
        if c.decoder:
            self.capabilities = frozenset({Capability.VOTES, Capability.CLASS_DECODER})
        # Training steps taken, for the margin's schedule; persistent so that a resumed run continues it.
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.int64))

    @property
    def routing_iterations(self) -> int:
        """EM iterations of every capsule layer (the vote attack's routed scores use as many)."""
        return self.config.routing_iterations

    def primary_capsules(self, images: torch.Tensor) -> torch.Tensor:
        """The class layer's inputs, ConvCaps2's capsules: (Bt, 1, 28, 28) → (Bt, 4·4·D, P² + 1).

        Each row is one capsule, ordered by (row, column, type): its flattened pose (the first P² = 16 entries) and
        its activation (the last). The name is the vote attack's: these are what cast the class votes.
        """
        c = self.config
        features = F.relu(self.conv1(self.normalize(images)))  # (Bt, A, 14, 14)
        batch, _, rows, columns = features.shape
        poses = self.primary_poses(features).view(batch, c.primary_types, c.pose_dim, rows, columns)
        poses = poses.permute(0, 3, 4, 1, 2)  # (Bt, 14, 14, B, P²)
        activations = torch.sigmoid(self.primary_activations(features)).permute(0, 2, 3, 1)  # (Bt, 14, 14, B)
        iterations, final_lambda = c.routing_iterations, c.final_lambda
        poses, activations = self.convcaps1(poses, activations, iterations, final_lambda)  # (Bt, 6, 6, C, P²)
        poses, activations = self.convcaps2(poses, activations, iterations, final_lambda)  # (Bt, 4, 4, D, P²)
        return torch.cat([poses, activations.unsqueeze(-1)], dim=-1).flatten(1, 3)  # (Bt, 4·4·D, P² + 1)

    def votes(self, primary: torch.Tensor) -> torch.Tensor:
        """Class votes with coordinate addition: (Bt, 4·4·D, P² + 1) → (Bt, 4·4·D, K, P²).

        V_ij = M_i W_type(i),j, then the scaled (row, column) of capsule i's position, ((r + ½)/rows, (c + ½)/columns),
        is added to the first two elements of the right-hand column of V_ij (the paper's coordinate addition), so the
        shared W can still say where the part is.
        """
        c = self.config
        side, rows, columns = c.pose_side, *c.class_grid
        batch = primary.shape[0]
        poses = primary[..., : c.pose_dim].reshape(batch * rows * columns, c.convcaps2_types, side, side)
        votes = matrix_votes(poses, self.class_weights)  # (Bt·4·4, D, K, P²), laid out (Bt·4·4, K, D, P²)
        votes = votes.unflatten(0, (batch, rows * columns)).permute(0, 3, 1, 2, 4)  # (Bt, K, 4·4, D, P²), a view
        centre_rows = (torch.arange(rows, dtype=votes.dtype, device=votes.device) + 0.5) / rows
        centre_columns = (torch.arange(columns, dtype=votes.dtype, device=votes.device) + 0.5) / columns
        offsets = votes.new_zeros(rows, columns, side, side)
        offsets[:, :, 0, side - 1] = centre_rows.view(rows, 1)  # row coordinate → V[0, P−1]
        offsets[:, :, 1, side - 1] = centre_columns.view(1, columns)  # column coordinate → V[1, P−1]
        votes = votes.contiguous() + offsets.view(1, 1, rows * columns, 1, c.pose_dim)  # (Bt, K, 4·4, D, P²)
        return votes.flatten(2, 3).transpose(1, 2)  # (Bt, 4·4·D, K, P²), a view of (Bt, K, 4·4·D, P²) memory

    def _route(self, primary: torch.Tensor, votes: torch.Tensor, iterations: int) -> EMRouting:
        activations = primary[..., self.config.pose_dim]  # (Bt, N_in)
        return self.route(votes, activations, self.class_beta_u, self.class_beta_a, iterations,
                          self.config.final_lambda)

    def routed_logits(self, primary: torch.Tensor, votes: torch.Tensor) -> torch.Tensor:
        """The model's own class logits (B, K) from these votes: full EM routing, as ``forward`` does."""
        return self._route(primary, votes, self.routing_iterations).logits

    def routing_free_logits(self, primary: torch.Tensor, votes: torch.Tensor) -> torch.Tensor:
        """Class logits (B, K) after ONE M-step from uniform assignments R = 1/K, no E-step: the routing-free
        surrogate the vote attack differentiates (equal to ``routed_logits`` when routing_iterations is 1)."""
        activations = at_least_fp32(primary[..., self.config.pose_dim])  # (Bt, N_in)
        votes = at_least_fp32(votes).transpose(1, 2).contiguous()  # (Bt, K, N_in, P²); no copy for ``votes``'
        uniform = votes.new_full(votes.shape[:3], 1.0 / votes.shape[1])  # R = 1/K, (Bt, K, N_in)
        lam = inverse_temperature(1, self.config.final_lambda)
        with full_precision(votes.device):
            return m_step(votes, activations, uniform, self.class_beta_u, self.class_beta_a, lam)[2]

    def reconstruct(self, poses: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Decode the pose of ``classes`` only (the others masked to zero): (Bt, K, P²) → (Bt, C, H, W)."""
        if self.decoder is None:
            return super().reconstruct(poses, classes)
        pixels = self.decoder(mask_by_class(poses, classes))  # (Bt, C·H·W)
        return at_least_fp32(pixels).view(-1, *self.input_shape)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        primary = self.primary_capsules(images)  # (Bt, 4·4·D, P² + 1)
        routed = self._route(primary, self.votes(primary), self.routing_iterations)
        if self.decoder is None:
            return ModelOutput(logits=routed.logits, poses=routed.poses)  # (Bt, K), (Bt, K, P²)
        classes = labels if labels is not None else routed.logits.argmax(dim=1)
        return ModelOutput(logits=routed.logits, poses=routed.poses,
                           reconstruction=self.reconstruct(routed.poses, classes))

    @property
    def margin(self) -> float:
        """The spread loss's margin at the current training step."""
        c = self.config
        return annealed_margin(int(self.steps_seen), c.margin_start, c.margin_end, c.margin_anneal_steps)

    def loss(self, output: ModelOutput, images: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        """The spread loss on the class activations; counts a training step when called to train (in train mode
        with gradients on), so evaluation and attacks never move the margin."""
        spread = spread_loss(torch.sigmoid(at_least_fp32(output.logits)), labels, self.margin)
        if self.training and torch.is_grad_enabled():
            self.steps_seen += 1
        if output.reconstruction is None:
            return LossTerms(spread, {"spread": spread})
        reconstruction = self.config.reconstruction_weight * sum_squared_error(output.reconstruction, images)
        return LossTerms(spread + reconstruction, {"spread": spread, "reconstruction": reconstruction})

    def decoder_parameter_names(self) -> set[str]:
        return set() if self.decoder is None else {f"decoder.{name}" for name, _ in self.decoder.named_parameters()}
