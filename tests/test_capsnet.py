"""CapsNet: squash, routing invariants, margin loss by hand, the paper's parameter counts, and the forward contract."""

from __future__ import annotations

import math

import pytest
import torch

from capsrobust.models.capsnet import capsule_length, margin_loss, route_by_agreement, squash
from capsrobust.models.describe import describe_model
from capsrobust.models.recipes import build_model
from tests.conftest import recipe


def test_squash_matches_the_papers_formula():
    vectors = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    # |s| = 5 → scale |s|² / (1 + |s|²) / |s| = 25/26/5; |s| = 0.5 → 0.25/1.25/0.5.
    expected = torch.tensor([[3.0 * 5 / 26, 4.0 * 5 / 26], [0.3 * 0.4, 0.4 * 0.4]])
    assert torch.allclose(squash(vectors), expected, atol=1e-6)
    lengths = capsule_length(squash(vectors))
    assert torch.allclose(lengths, torch.tensor([25 / 26, 0.25 / 1.25]), atol=1e-6)


def test_squash_and_length_have_finite_gradients_at_zero():
    zero = torch.zeros(4, 16, requires_grad=True)
    capsule_length(squash(zero)).sum().backward()
    assert torch.isfinite(zero.grad).all()
    assert float(capsule_length(squash(torch.zeros(1, 16)))) < 1e-3


def naive_routing(votes: torch.Tensor, iterations: int) -> torch.Tensor:
    """Procedure 1 of the paper written with explicit loops, as the reference for the batched code."""
    batch, n_in, n_out, _ = votes.shape
    outputs = torch.zeros(batch, n_out, votes.shape[3])
    for b in range(batch):
        logits = torch.zeros(n_in, n_out)
        for iteration in range(iterations):
            coupling = torch.softmax(logits, dim=1)
            for j in range(n_out):
                s = sum(coupling[i, j] * votes[b, i, j] for i in range(n_in))
                outputs[b, j] = squash(s)
            if iteration < iterations - 1:
                for i in range(n_in):
                    for j in range(n_out):
                        logits[i, j] += votes[b, i, j] @ outputs[b, j]
    return outputs


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_batched_routing_equals_the_papers_procedure(iterations):
    torch.manual_seed(0)
    votes = torch.randn(2, 6, 3, 4)
    outputs, coupling = route_by_agreement(votes, iterations)
    assert outputs.shape == (2, 3, 4) and coupling.shape == (2, 6, 3)
    assert torch.allclose(outputs, naive_routing(votes, iterations), atol=1e-5)


def test_coupling_coefficients_sum_to_one_and_start_uniform():
    torch.manual_seed(1)
    votes = torch.randn(5, 1152, 10, 16) * 0.1
    _, coupling = route_by_agreement(votes, 3)
    assert torch.allclose(coupling.sum(dim=2), torch.ones(5, 1152), atol=1e-5)
    _, first = route_by_agreement(votes, 1)
    assert torch.allclose(first, torch.full_like(first, 0.1))


def test_routing_sends_votes_to_the_class_they_agree_on():
    # Inputs 0-3 all vote the same direction for class 0 and scatter their votes for class 1.
    torch.manual_seed(2)
    votes = torch.randn(1, 4, 2, 8)
    votes[0, :, 0] = torch.ones(8)
    _, coupling = route_by_agreement(votes, 3)
    assert (coupling[0, :, 0] > 0.5).all()


def test_margin_loss_matches_hand_computation():
    lengths = torch.tensor([[0.95, 0.2, 0.05], [0.3, 0.8, 0.6]])
    labels = torch.tensor([0, 2])
    # example 0: present 0.95 ≥ 0.9 → 0; absent 0.2 → 0.5·0.1² = 0.005; absent 0.05 → 0.
    # example 1: present 0.6 → (0.9 − 0.6)² = 0.09; absent 0.3 → 0.5·0.2² = 0.02; absent 0.8 → 0.5·0.7² = 0.245.
    expected = (0.005 + 0.09 + 0.02 + 0.245) / 2
    assert math.isclose(float(margin_loss(lengths, labels, 0.9, 0.1, 0.5)), expected, rel_tol=1e-6)


def test_paper_recipe_has_the_papers_parameter_counts_and_cost():
    description = describe_model(recipe("capsnet-paper"))
    assert description["parameters"] == 8_215_568
    assert description["parameters_without_decoder"] == 6_804_224
    assert 0.38e9 < description["forward_flops_per_image"] < 0.42e9
    weights = dict(build_model(recipe("capsnet-paper")).named_parameters())["weights"]
    assert tuple(weights.shape) == (1152, 10, 16, 8)


def test_forward_contract_and_decoder_masking():
    torch.manual_seed(0)
    model = build_model(recipe("capsnet-tiny")).eval()
    with torch.no_grad():  # untrained capsules are almost zero vectors; give them some length
        model.weights.normal_(0.0, 1.0)
    images = torch.rand(4, 1, 28, 28)
    output = model(images)
    assert output.logits.shape == output.lengths.shape == (4, 10)
    assert output.poses.shape == (4, 10, 8)
    assert output.reconstruction.shape == (4, 1, 28, 28)
    assert torch.allclose(output.logits, torch.log(output.lengths))
    assert ((output.lengths >= 0) & (output.lengths < 1)).all()
    # At inference the decoder sees the predicted class's capsule; with labels it sees the labelled one.
    predicted = output.predictions
    assert torch.allclose(model(images, predicted).reconstruction, output.reconstruction)
    other = (predicted + 1) % 10
    assert not torch.allclose(model(images, other).reconstruction, output.reconstruction)


def test_loss_is_margin_plus_weighted_reconstruction_and_differentiable_in_the_input():
    torch.manual_seed(0)
    model = build_model(recipe("capsnet-tiny"))
    images = torch.rand(3, 1, 28, 28, requires_grad=True)
    labels = torch.tensor([1, 2, 3])
    output = model(images, labels)
    terms = model.loss(output, images, labels)
    sse = ((output.reconstruction - images) ** 2).flatten(1).sum(1).mean()
    assert torch.allclose(terms.parts["reconstruction"], 0.0005 * sse)
    assert torch.allclose(terms.total, terms.parts["margin"] + terms.parts["reconstruction"])
    output.logits.gather(1, labels[:, None]).sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_the_cifar10_capsnet_crops_inside_and_routes_to_none_of_the_above():
    """Sabour et al. section 7: 64 primary types on a 24 × 24 crop (4 × 4 grid), an 11th output capsule that is
    never a class; at evaluation the crop is the centre, so two forward passes agree and pixels outside it do not
    matter."""
    model = build_model(recipe("capsnet-cifar10")).eval()
    assert model.input_shape == (3, 32, 32) and model.config.primary_grid == (4, 4)
    assert model.weights.shape == (64 * 4 * 4, 11, 16, 8)  # 1,024 primary capsules, 10 classes + orphan
    images = torch.rand(2, 3, 32, 32)
    output = model(images)
    assert output.logits.shape == (2, 10) and output.poses.shape == (2, 10, 16)
    assert output.reconstruction.shape == (2, 3, 32, 32)
    border = images.clone()
    border[..., :4, :] = 0.0  # rows the central 24 × 24 crop (rows 4..27) never sees
    border[..., 28:, :] = 1.0
    assert torch.equal(model(border).logits, output.logits)
    model.train()
    torch.manual_seed(0)
    seen = {tuple(model._crop(images).shape) for _ in range(3)}
    assert seen == {(2, 3, 24, 24)}
