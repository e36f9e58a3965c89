"""The first convolution of a model, with an input gradient that costs a tenth of oneDNN's.

Every attack step, and every step of adversarial training, needs the gradient of the loss with respect to the
*image*, so it runs the backward pass of the first convolution down to its 1 (digits) or 3 (colour) input
channels. oneDNN computes that gradient as a transposed convolution and is slow at it when the input has so few
channels: measured on 2 cores (torch 2.14.1, AVX-512), CapsNet's conv1 (256 kernels of 9 × 9 on 28 × 28 digits,
batch 100) takes 134 ms for the input gradient against 34 ms for the whole forward pass, and 13.5 ms when the
gradient is written as what it is, one matrix product and a col2im:

    ∂L/∂x = fold(Wᵀ · ∂L/∂y)    W (C_out, C_in·k·k), ∂L/∂y (B, C_out, H'·W') → (B, C_in·k·k, H'·W') → (B, C_in, H, W)

That is 15% of a CapsNet PGD step (the other 85% is the primary capsules' convolution). The forward pass, and the
gradients of the weights and bias, stay oneDNN's (they are fast); ``StemConv2d`` is an ``nn.Conv2d`` with the same
parameters, so checkpoints are unchanged. Training on clean images never asks for the input gradient and runs
exactly as before.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

#: Up to this many input channels the matrix-product input gradient is used (measured faster for 1 and 3).
MAX_STEM_CHANNELS = 4


class StemConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` for a model's first layer whose input gradient is a matrix product and a col2im.

    The convolution itself runs on detached images, so autograd differentiates it for the weights and bias only
    (and only when they are wanted: an attack asks for neither); ``_InputGradient`` then routes the image
    gradient around it.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if (not images.requires_grad or self.groups != 1 or self.in_channels > MAX_STEM_CHANNELS
                or self.padding_mode != "zeros" or isinstance(self.padding, str)):
            return super().forward(images)
        features = super().forward(images.detach())  # (B, C_out, H', W'); autocast applies as usual
        return _InputGradient.apply(images, features, self.weight.detach(), self.stride, self.padding,
                                    self.dilation)


class _InputGradient(torch.autograd.Function):
    """Identity on the convolution's output; its backward adds the images' gradient, Wᵀ·∂L/∂y folded, in float32."""

    @staticmethod
    def forward(
        ctx: Any,
        images: torch.Tensor,
        features: torch.Tensor,
        weight: torch.Tensor,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
    ) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.geometry = (images.shape[2:], images.dtype, stride, padding, dilation)
        return features.view_as(features)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_features: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (weight,) = ctx.saved_tensors
        size, dtype, stride, padding, dilation = ctx.geometry
        grad_images = None
        if ctx.needs_input_grad[0]:
            batch, out_channels = grad_features.shape[:2]
            transposed = weight.reshape(out_channels, -1).t().float()  # (C_in·k·k, C_out)
            # (B, C_in·k·k, C_out) · (B, C_out, H'·W') → (B, C_in·k·k, H'·W'): the columns im2col would have made.
            # bmm on the expanded weight: matmul would fold the batch into a copy of the gradient first.
            columns = torch.bmm(transposed.expand(batch, -1, -1),
                                grad_features.reshape(batch, out_channels, -1).float())
            grad_images = F.fold(columns, size, weight.shape[2:], dilation=dilation, padding=padding,
                                 stride=stride).to(dtype)  # (B, C_in, H, W)
        return grad_images, grad_features, None, None, None, None
