"""CNN baselines: the published parameter counts and the forward contract."""

from __future__ import annotations

import pytest
import torch

from capsrobust.models.describe import describe_model
from capsrobust.models.recipes import build_model
from tests.conftest import recipe


@pytest.mark.parametrize(
    ("name", "parameters", "gflops"),
    [("cnn-baseline", 35_445_522, (3.8, 4.1)), ("cnn-small", 3_274_634, (0.02, 0.04))],
)
def test_published_parameter_counts_and_cost(name, parameters, gflops):
    description = describe_model(recipe(name))
    assert description["parameters"] == parameters
    assert "parameters_without_decoder" not in description
    assert gflops[0] < description["forward_flops_per_image"] / 1e9 < gflops[1]


def test_forward_returns_logits_only_and_normalises_inside():
    model = build_model(recipe("cnn-tiny")).eval()
    images = torch.rand(2, 1, 28, 28)
    output = model(images)
    assert output.logits.shape == (2, 10)
    assert output.lengths is None and output.reconstruction is None
    assert model.normalize(torch.full((1,), 0.1307)).abs().max() < 1e-6
