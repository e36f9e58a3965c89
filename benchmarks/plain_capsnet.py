"""A plain, vectorized CapsNet of the paper's shape: the speed reference for ``throughput.py --plain``.

Written the way most public PyTorch CapsNets are, independently of ``capsrobust.models.capsnet``: the votes and
both routing contractions are single ``torch.einsum`` calls on the (B, 1152, 10, 16) votes, with no attention to
memory layout or dtypes. capsrobust's CapsNet must never train slower than this at the same batch size and
precision; if it does, its layout tricks cost more than they save. Used for timing only, never trained to
accuracy or attacked, so it lives with the benchmarks, not in the package.

Shapes (B = batch):
    images (B, 1, 28, 28) → conv1 256@9×9, ReLU → (B, 256, 20, 20)
    primary conv 256@9×9 stride 2 → (B, 256, 6, 6) → capsules (B, 1152, 8), squashed
    votes û = W u with W (1152, 10, 16, 8) → (B, 1152, 10, 16)
    3 routing iterations → digit capsules (B, 10, 16) → lengths (B, 10)
    decoder 160 → 512 → 1024 → 784 on the true class's capsule; loss margin + 0.0005 · SSE
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def squash(s: torch.Tensor) -> torch.Tensor:
    squared = (s * s).sum(dim=-1, keepdim=True)
    return squared / (1.0 + squared) * s / torch.sqrt(squared + 1e-8)


class PlainCapsNet(nn.Module):
    """Conv1 → PrimaryCaps → DigitCaps with dynamic routing → decoder; the paper's sizes, nothing configurable."""

    def __init__(self, routing_iterations: int = 3) -> None:
        super().__init__()
        self.routing_iterations = routing_iterations
        self.conv1 = nn.Conv2d(1, 256, 9)
        self.primary = nn.Conv2d(256, 32 * 8, 9, stride=2)
        self.W = nn.Parameter(0.01 * torch.randn(1152, 10, 16, 8))
        self.decoder = nn.Sequential(
            nn.Linear(160, 512), nn.ReLU(), nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 784), nn.Sigmoid()
        )

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Capsule lengths (B, 10) and the reconstruction (B, 784) from the capsule of ``labels`` (or the winner)."""
        x = F.relu(self.conv1(images))  # (B, 256, 20, 20)
        x = self.primary(x)  # (B, 256, 6, 6)
        batch = x.shape[0]
        u = squash(x.view(batch, 32, 8, 6, 6).permute(0, 1, 3, 4, 2).reshape(batch, 1152, 8))  # (B, 1152, 8)
        u_hat = torch.einsum("ncdk,bnk->bncd", self.W, u)  # (B, 1152, 10, 16)
        logits = torch.zeros(batch, 1152, 10, device=images.device)  # (B, 1152, 10)
        for iteration in range(self.routing_iterations):
            c = logits.softmax(dim=2)  # (B, 1152, 10)
            v = squash(torch.einsum("bnc,bncd->bcd", c, u_hat))  # (B, 10, 16)
            if iteration < self.routing_iterations - 1:
                logits = logits + torch.einsum("bncd,bcd->bnc", u_hat, v)
        lengths = torch.sqrt((v * v).sum(dim=-1) + 1e-8)  # (B, 10)
        classes = labels if labels is not None else lengths.argmax(dim=1)
        mask = F.one_hot(classes, 10).to(v.dtype)  # (B, 10)
        reconstruction = self.decoder((v * mask[:, :, None]).flatten(1))  # (B, 784)
        return lengths, reconstruction

    @staticmethod
    def loss(
        lengths: torch.Tensor, reconstruction: torch.Tensor, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Margin loss (m⁺ 0.9, m⁻ 0.1, λ 0.5) plus 0.0005 times the per-image sum of squared pixel errors."""
        present = F.one_hot(labels, 10).to(lengths.dtype)
        margin = present * F.relu(0.9 - lengths) ** 2 + 0.5 * (1 - present) * F.relu(lengths - 0.1) ** 2
        sse = ((reconstruction - images.flatten(1)) ** 2).sum(dim=1)
        return (margin.sum(dim=1) + 0.0005 * sse).mean()
