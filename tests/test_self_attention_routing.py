"""Efficient-CapsNet (self-attention routing): shapes on any data, votes, the routing against hand-computed numbers,
the vote attack's two scores, one training step, and the parameter counts the recipes state."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from capsrobust.errors import RecipeError
from capsrobust.models import Capability, build_model, capabilities_of, describe_model
from capsrobust.models.capsnet import capsule_length, squash
from capsrobust.models.efficient_capsnet import (
    EfficientCapsNet,
    efficient_squash,
    self_attention_routing,
    uniform_routing,
)
from capsrobust.models.recipes import load_recipe, recipe_from_dict

PAPER_PARAMETERS = 161_824  # Mazzia et al. 2021, without the decoder


def tiny(input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> EfficientCapsNet:
    torch.manual_seed(0)
    model = build_model(load_recipe("efficient-capsnet-tiny").for_data(input_shape, num_classes))
    assert isinstance(model, EfficientCapsNet)
    return model.eval()


@pytest.mark.parametrize(("input_shape", "num_classes", "n_in"), [((1, 28, 28), 10, 4), ((3, 32, 32), 10, 36)])
def test_shapes_on_digits_and_colour_images(input_shape, num_classes, n_in):
    model = tiny(input_shape, num_classes)  # 32×32: 3 × 3 depthwise positions of 4 capsules each
    images = torch.rand(5, *input_shape)
    primary = model.primary_capsules(images)
    votes = model.votes(primary)
    output = model(images)
    assert primary.shape == (5, n_in, 4)
    assert votes.shape == (5, n_in, num_classes, 8)  # (B, N_in, K, D), as CapsNet.votes
    assert output.logits.shape == output.lengths.shape == (5, num_classes)
    assert output.poses.shape == (5, num_classes, 8)
    assert output.reconstruction.shape == (5, *input_shape)
    assert torch.allclose(output.logits, torch.log(output.lengths))
    assert ((output.lengths >= 0) & (output.lengths < 1)).all()
    assert model.routing_iterations == 1
    assert capabilities_of(model) == {Capability.CAPSULE_LENGTHS, Capability.VOTES, Capability.CLASS_DECODER}


def test_input_gradients_are_finite_even_at_the_blank_image():
    model = tiny()
    images = torch.cat([torch.zeros(1, 1, 28, 28), torch.rand(3, 1, 28, 28)]).requires_grad_(True)
    output = model(images)
    output.logits.logsumexp(dim=1).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_eval_mode_is_deterministic_and_independent_of_the_batch():
    model = tiny()  # BatchNorm uses its running statistics in eval mode
    images = torch.rand(4, 1, 28, 28)
    assert torch.equal(model(images).logits, model(images).logits)
    assert torch.allclose(model(images[:1]).logits, model(images).logits[:1], atol=1e-6)


def test_efficient_squash_has_length_one_minus_exp_and_a_finite_gradient_at_zero():
    vectors = torch.tensor([[3.0, 4.0], [0.0, 0.0]], requires_grad=True)
    squashed = efficient_squash(vectors)
    assert torch.allclose(squashed[0], torch.tensor([0.6, 0.8]) * (1 - math.exp(-5.0)))
    assert torch.allclose(squashed[1], torch.zeros(2))
    squashed.sum().backward()
    assert torch.isfinite(vectors.grad).all()


def test_coupling_coefficients_sum_to_one_over_the_classes():
    votes = torch.randn(3, 7, 5, 4)  # (B, N_in, K, D)
    poses, coefficients = self_attention_routing(votes, torch.randn(7, 5))
    assert poses.shape == (3, 5, 4) and coefficients.shape == (3, 7, 5)
    assert torch.allclose(coefficients.sum(dim=2), torch.ones(3, 7))


def test_routing_against_a_hand_computed_example():
    # Two inputs, two classes, D = 2. Votes for class 0: (1, 0) and (1, 0); for class 1: (2, 0) and (0, 0).
    votes = torch.tensor([[[[1.0, 0.0], [2.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]]])  # (1, 2, 2, 2)
    # Agreements û_i · Σ_k û_k / √2: input 1 → (2, 4)/√2, input 2 → (2, 0)/√2; softmax over the classes gives
    # 1 / (1 + e^√2) = 0.1955703 for the smaller one.
    small, large = 0.1955703174930431, 0.8044296825069569
    poses, coefficients = self_attention_routing(votes, torch.zeros(2, 2))
    assert torch.allclose(coefficients, torch.tensor([[[small, large], [large, small]]]), atol=1e-6)
    # s_0 = 0.19557 · (1, 0) + 0.80443 · (1, 0) = (1, 0); s_1 = 0.80443 · (2, 0) = (1.6088594, 0);
    # lengths 1 − e^(−|s|): 0.6321206 and 0.7998843.
    assert torch.allclose(poses, torch.tensor([[[0.6321205588, 0.0], [0.7998842570, 0.0]]]), atol=1e-6)
    # The bias adds to the coefficients, not to the agreements: b_00 = 0.5 makes s_0 = (1.5, 0), length 0.7768698.
    bias = torch.tensor([[0.5, 0.0], [0.0, 0.0]])
    poses, biased_coefficients = self_attention_routing(votes, bias)
    assert torch.allclose(biased_coefficients, coefficients)
    assert torch.allclose(poses[0, 0], torch.tensor([0.7768698399, 0.0]), atol=1e-6)


def test_the_vote_attack_scores():
    model = tiny()
    images = torch.rand(4, 1, 28, 28)
    primary = model.primary_capsules(images)
    votes = model.votes(primary)
    expected = torch.log(capsule_length(squash(votes.mean(dim=1))).clamp_min(1e-12))
    assert torch.allclose(model.routing_free_logits(primary, votes), expected)
    assert torch.allclose(model.routed_logits(primary, votes), model(images).logits, atol=1e-6)


def test_one_adam_step_lowers_the_loss_on_a_fixed_batch():
    model = tiny().train()
    generator = torch.Generator().manual_seed(1)
    images, labels = torch.rand(16, 1, 28, 28, generator=generator), torch.arange(16) % 10
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = model.loss(model(images, labels), images, labels).total
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = model.loss(model(images, labels), images, labels).total
    assert after < before
    assert set(model.loss(model(images, labels), images, labels).parts) == {"margin", "reconstruction"}


def test_uniform_coupling_is_the_no_routing_ablation_of_the_same_network():
    """efficient-capsnet-uniform: couplings 1/K whatever the votes, s_j = Σ_i (1/K + b_ij) û_i; same weights give
    the same primary capsules and votes as self-attention routing, and different class capsules."""
    votes, bias = torch.randn(3, 7, 5, 4), torch.randn(7, 5)
    poses, coefficients = uniform_routing(votes, bias)
    assert torch.equal(coefficients, torch.full((3, 7, 5), 0.2))
    assert torch.allclose(poses, efficient_squash(((0.2 + bias)[None, :, :, None] * votes).sum(dim=1)))

    routed = tiny()
    torch.manual_seed(0)
    recipe = load_recipe("efficient-capsnet-tiny")
    ablation = build_model(dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, routing="uniform")))
    ablation.load_state_dict(routed.state_dict())  # no parameter of its own: the same weights load
    ablation.eval()
    images = torch.rand(4, 1, 28, 28)
    primary = ablation.primary_capsules(images)
    assert torch.equal(primary, routed.primary_capsules(images))
    votes = ablation.votes(primary)
    assert torch.allclose(ablation(images).poses, uniform_routing(votes, ablation.bias)[0], atol=1e-6)
    assert not torch.allclose(ablation(images).poses, routed(images).poses, atol=1e-4)
    assert torch.allclose(ablation.routed_logits(primary, votes), ablation(images).logits, atol=1e-6)
    assert describe_model(load_recipe("efficient-capsnet-uniform"))["parameters_without_decoder"] == PAPER_PARAMETERS
    assert load_recipe("efficient-capsnet-uniform").model.routing == "uniform"


def test_the_paper_recipe_has_the_papers_parameter_count():
    description = describe_model(load_recipe("efficient-capsnet"))
    # Exactly the paper's 161,824 (BatchNorm's running statistics are buffers, not parameters, as in Keras).
    assert description["parameters_without_decoder"] == PAPER_PARAMETERS
    assert description["parameters"] == PAPER_PARAMETERS + 1_411_344  # 160-512-1024-784 decoder


def test_the_matched_cnn_is_within_ten_percent():
    parameters = describe_model(load_recipe("cnn-efficient-match"))["parameters"]
    assert parameters == 167_114  # the count the recipe states
    assert abs(parameters - PAPER_PARAMETERS) <= 0.1 * PAPER_PARAMETERS


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"primary_dim": 5}, r"primary_dim 5 must divide the last of conv_channels"),
        ({"conv_kernels": [5, 3, 3]}, r"one entry per convolution"),
        ({"primary_kernel": 12}, r"leave no primary capsule"),
        ({"conv_channels": [0, 64, 64, 128]}, r"conv_channels must lie in"),
        ({"margin_plus": 0.05}, r"margins need"),
        ({"routing": "dynamic"}, r"routing must be one of self-attention, uniform"),
    ],
)
def test_bad_configurations_are_refused_naming_the_key(model, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict({"architecture": "efficient-capsnet", "model": model})
