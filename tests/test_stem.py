"""The stem convolution: an ``nn.Conv2d`` whose input gradient is a matrix product and a col2im, exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from capsrobust.models.recipes import build_model
from capsrobust.models.stem import StemConv2d
from tests.conftest import recipe

GEOMETRIES = [  # (C_in, C_out, kernel, stride, padding, side): CapsNet's conv1, cnn-small's, EM's, colour images
    (1, 16, 9, 1, 0, 28), (1, 8, 5, 1, 2, 28), (1, 8, 5, 2, 2, 28), (3, 8, 3, 1, 1, 32), (2, 4, 4, 3, 1, 17),
]


def _pair(geometry: tuple[int, ...]) -> tuple[nn.Conv2d, StemConv2d]:
    channels_in, channels_out, kernel, stride, padding, _ = geometry
    torch.manual_seed(0)
    reference = nn.Conv2d(channels_in, channels_out, kernel, stride=stride, padding=padding)
    torch.manual_seed(0)
    stem = StemConv2d(channels_in, channels_out, kernel, stride=stride, padding=padding)
    return reference, stem


def _gradients(layer: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    images = images.clone().requires_grad_(True)
    output = layer(images)
    loss = (output * torch.linspace(-1.0, 1.0, output.numel()).view_as(output)).sum()  # a gradient that varies
    return list(torch.autograd.grad(loss, (images, layer.weight, layer.bias)))


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_stem_gradients_equal_the_standard_convolutions(geometry):
    reference, stem = _pair(geometry)
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), stem.state_dict().values(),
                                                   strict=True))  # same initialisation, same checkpoint keys
    images = torch.rand(3, geometry[0], geometry[5], geometry[5])
    expected, got = _gradients(reference, images), _gradients(stem, images)
    for name, want, have in zip(("images", "weight", "bias"), expected, got, strict=True):
        assert have.shape == want.shape and have.dtype == want.dtype, name
        torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5, msg=name)
    with torch.no_grad():
        assert torch.equal(stem(images), reference(images))  # the forward pass is the standard one


def test_under_autocast_the_input_gradient_is_computed_in_float32():
    reference, stem = _pair(GEOMETRIES[0])
    images = torch.rand(2, 1, 28, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _gradients(stem, images)
    exact = _gradients(reference, images)  # float32 throughout
    assert got[0].dtype == torch.float32
    # bf16 forward and weights, float32 accumulation: within bf16's rounding of the exact gradient
    torch.testing.assert_close(got[0], exact[0], rtol=0.02, atol=0.02 * float(exact[0].abs().max()))


def test_an_attack_gradient_through_capsnet_equals_the_standard_layers():
    model = build_model(recipe("capsnet-tiny")).eval()
    standard = build_model(recipe("capsnet-tiny")).eval()
    plain_conv = nn.Conv2d(model.conv1.in_channels, model.conv1.out_channels, model.conv1.kernel_size)
    standard.conv1 = plain_conv
    standard.load_state_dict(model.state_dict())
    images = torch.rand(4, 1, 28, 28)

    def input_gradient(network: nn.Module) -> torch.Tensor:
        attacked = images.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(network(attacked).logits[:, 3].sum(), attacked)
        return gradient

    assert isinstance(model.conv1, StemConv2d)
    torch.testing.assert_close(input_gradient(model), input_gradient(standard), rtol=1e-4, atol=1e-6)
    assert all(parameter.grad is None for parameter in model.parameters())  # an attack writes no weight gradient
