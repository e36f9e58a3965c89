"""EM routing (Hinton, Sabour & Frosst 2018): one M-step and one E-step by hand, the assignments' invariant, the
routing-free surrogate, the spread loss and its margin schedule, and the em-capsnet architecture's contract."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from click.testing import CliRunner

from capsrobust.cli import main
from capsrobust.errors import RecipeError
from capsrobust.figures.gallery import _is_decoder_cnn
from capsrobust.models.base import Capability
from capsrobust.models.checkpoints import load_checkpoint, save_checkpoint
from capsrobust.models.describe import describe_model
from capsrobust.models.em_capsnet import annealed_margin, em_routing, inverse_temperature, spread_loss
from capsrobust.models.recipes import build_model, load_recipe, recipe_from_dict
from tests.conftest import recipe


def tiny(iterations: int = 3, input_shape: tuple[int, int, int] = (1, 28, 28), classes: int = 10, **changes):
    torch.manual_seed(0)
    chosen = recipe("em-capsnet-tiny").for_data(input_shape, classes)
    chosen = dataclasses.replace(chosen, model=dataclasses.replace(chosen.model, routing_iterations=iterations,
                                                                   **changes))
    return build_model(chosen)


# Two inputs, two outputs, one-dimensional poses. λ_1 = final_lambda · (1 − 0.95) = 1 with final_lambda = 20.
VOTES = torch.tensor([[[[1.0], [2.0]], [[3.0], [2.5]]]])  # V_ij, (B=1, N_in=2, K=2, D=1)
ACTIVATIONS = torch.tensor([[1.0, 0.5]])  # a_i
BETA_U = torch.tensor([1.0, -1.0])
BETA_A = torch.tensor([2.0, 1.0])
FINAL_LAMBDA = 20.0


def test_one_em_iteration_matches_hand_computation():
    routed = em_routing(VOTES, ACTIVATIONS, BETA_U, BETA_A, iterations=1, final_lambda=FINAL_LAMBDA)
    # R = 1/2, so R' = R·a = (0.5, 0.25) for both outputs and Σ_i R'_ij = 0.75.
    # output 0: μ = (0.5·1 + 0.25·3)/0.75 = 5/3;   σ² = (0.5·(1 − 5/3)² + 0.25·(3 − 5/3)²)/0.75 = 8/9
    # output 1: μ = (0.5·2 + 0.25·2.5)/0.75 = 13/6; σ² = (0.5·(2 − 13/6)² + 0.25·(2.5 − 13/6)²)/0.75 = 1/18
    # cost_j = (β_u + ln σ) · 0.75;  logit_j = λ (β_a − cost_j) with λ = 1
    cost = [(1.0 + 0.5 * math.log(8 / 9)) * 0.75, (-1.0 + 0.5 * math.log(1 / 18)) * 0.75]  # 0.705831, −1.833889
    logits = torch.tensor([[2.0 - cost[0], 1.0 - cost[1]]])  # 1.294169, 2.833889
    assert torch.allclose(logits, torch.tensor([[1.294169, 2.833889]]), atol=1e-6)
    assert torch.allclose(routed.poses, torch.tensor([[[5 / 3], [13 / 6]]]), atol=1e-6)
    assert torch.allclose(routed.logits, logits, atol=1e-6)
    assert torch.allclose(routed.activations, torch.sigmoid(logits), atol=1e-6)
    assert torch.allclose(routed.assignments, torch.full((1, 2, 2), 0.5))


def test_the_e_step_matches_hand_computation():
    routed = em_routing(VOTES, ACTIVATIONS, BETA_U, BETA_A, iterations=2, final_lambda=FINAL_LAMBDA)
    # After the first M-step (above): R_ij ∝ a_j N(V_ij; μ_j, σ²_j), normalised over the outputs j.
    mean, variance = (5 / 3, 13 / 6), (8 / 9, 1 / 18)
    activation = [1 / (1 + math.exp(-logit)) for logit in (1.294169, 2.833889)]

    def density(vote: float, j: int) -> float:
        return math.exp(-((vote - mean[j]) ** 2) / (2 * variance[j])) / math.sqrt(2 * math.pi * variance[j])

    expected = []
    for i in range(2):
        weights = [activation[j] * density(float(VOTES[0, i, j, 0]), j) for j in range(2)]
        expected.append([weight / sum(weights) for weight in weights])
    assert torch.allclose(routed.assignments, torch.tensor([expected]), atol=1e-5)
    # Both inputs' votes for output 1 lie within one σ of its tight Gaussian (σ² = 1/18), which is also the more
    # active: output 1 claims about 83% of each input.
    assert torch.allclose(routed.assignments[0, :, 1], torch.tensor([0.828, 0.828]), atol=2e-3)


def test_assignments_sum_to_one_over_the_outputs_and_start_uniform():
    torch.manual_seed(1)
    votes, activations = torch.randn(3, 20, 5, 16), torch.rand(3, 20)
    beta_u, beta_a = torch.randn(5), torch.randn(5)
    routed = em_routing(votes, activations, beta_u, beta_a, iterations=3, final_lambda=1.0)
    assert routed.assignments.shape == (3, 20, 5) and routed.poses.shape == (3, 5, 16)
    assert torch.allclose(routed.assignments.sum(dim=2), torch.ones(3, 20), atol=1e-5)
    assert not torch.allclose(routed.assignments, torch.full_like(routed.assignments, 0.2))
    first = em_routing(votes, activations, beta_u, beta_a, iterations=1).assignments
    assert torch.allclose(first, torch.full_like(first, 0.2))
    with pytest.raises(ValueError, match="at least one iteration"):
        em_routing(votes, activations, beta_u, beta_a, iterations=0)


def test_inverse_temperature_grows_towards_final_lambda():
    schedule = [inverse_temperature(t, 0.01) for t in (1, 2, 3)]
    assert schedule == pytest.approx([0.01 * 0.05, 0.01 * (1 - 0.95**2), 0.01 * (1 - 0.95**3)])
    assert schedule[0] < schedule[1] < schedule[2] < 0.01


@pytest.mark.parametrize(
    ("input_shape", "classes", "inputs"),
    [((1, 28, 28), 10, 4 * 4 * 4), ((3, 32, 32), 5, 5 * 5 * 4)],  # ConvCaps2 grids 4×4 and 5×5, D = 4 types
)
def test_shapes_on_digits_and_colour_images(input_shape, classes, inputs):
    model = tiny(input_shape=input_shape, classes=classes)
    images = torch.rand(2, *input_shape)
    output = model(images)
    assert output.logits.shape == (2, classes) and output.poses.shape == (2, classes, 16)
    assert output.lengths is None and output.reconstruction is None
    primary = model.primary_capsules(images)
    assert primary.shape == (2, inputs, 17)  # 16 pose entries and the activation
    assert ((primary[..., 16] > 0) & (primary[..., 16] < 1)).all()
    assert model.votes(primary).shape == (2, inputs, classes, 16)


def test_logits_have_finite_input_gradients():
    model = tiny().eval()
    images = torch.rand(3, 1, 28, 28, requires_grad=True)
    output = model(images)
    margin = output.logits[:, 0] - output.logits[:, 1:].max(dim=1).values
    margin.sum().backward()
    assert torch.isfinite(output.logits).all()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_votes_are_declared_without_capsule_lengths():
    model = tiny()
    assert model.has(Capability.VOTES) and not model.has(Capability.CAPSULE_LENGTHS)
    assert not model.can_reconstruct and model.routing_iterations == 3


def test_transformations_follow_the_fan_rule_or_the_given_std():
    # em-capsnet-tiny: 4 × 4 poses (side 4), 3 × 3 kernels, 4 types per layer: ConvCaps1 averages 1 vote per primary
    # capsule, ConvCaps2 9 · 4 = 36, the class layer 9 · 4 = 36 → stds √(1/4), √(36/4), √(36/4).
    fan = tiny()
    expected = {"convcaps1.weights": 0.5, "convcaps2.weights": 3.0, "class_weights": 3.0}
    normal = tiny(transformation_std=1.0)
    for name, std in expected.items():
        assert float(fan.get_parameter(name).detach().std()) == pytest.approx(std, rel=0.1), name
        assert float(normal.get_parameter(name).detach().std()) == pytest.approx(1.0, rel=0.1), name


def test_a_class_decoder_reconstructs_from_one_pose_and_adds_its_term_to_the_loss():
    model = tiny(decoder=True, decoder_hidden=(32,), reconstruction_weight=0.01).train()
    assert model.can_reconstruct and model.has(Capability.VOTES)
    assert not tiny().can_reconstruct  # the paper's network has none (and says so per instance, not per class)
    images, labels = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    output = model(images, labels)
    assert output.reconstruction.shape == (4, 1, 28, 28)
    masked = output.poses * torch.nn.functional.one_hot(labels, 10).unsqueeze(-1)  # only the label's pose
    expected = model.decoder(masked.flatten(1)).view(4, 1, 28, 28)
    torch.testing.assert_close(output.reconstruction, expected)
    terms = model.loss(output, images, labels)
    by_hand = 0.01 * ((expected - images) ** 2).flatten(1).sum(dim=1).mean()
    torch.testing.assert_close(terms.parts["reconstruction"], by_hand)
    torch.testing.assert_close(terms.total, terms.parts["spread"] + by_hand)
    predicted = model.eval()(images)  # without labels: the predicted class's pose
    torch.testing.assert_close(predicted.reconstruction,
                               model.reconstruct(predicted.poses, predicted.logits.argmax(dim=1)))
    assert not _is_decoder_cnn(model)  # a capsule network with a decoder, not a CNN+R for the gallery
    described = describe_model(dataclasses.replace(load_recipe("em-capsnet-tiny"), model=model.config))
    assert described["parameters_without_decoder"] == 6_104  # the decoder adds, the capsules are unchanged
    assert described["parameters"] == 6_104 + (160 * 32 + 32) + (32 * 784 + 784)


def test_coordinate_addition_writes_the_right_hand_column():
    model = tiny()
    with torch.no_grad():
        model.class_weights.zero_()  # the votes are then the added coordinates alone
    votes = model.votes(model.primary_capsules(torch.rand(1, 1, 28, 28)))  # (1, 4·4·4, 10, 16)
    grid = votes.view(1, 4, 4, 4, 10, 4, 4)  # (B, row, column, type, class, P, P)
    centres = (torch.arange(4.0) + 0.5) / 4
    assert torch.allclose(grid[0, :, :, :, :, 0, 3], centres.view(4, 1, 1, 1).expand(4, 4, 4, 10))  # rows
    assert torch.allclose(grid[0, :, :, :, :, 1, 3], centres.view(1, 4, 1, 1).expand(4, 4, 4, 10))  # columns
    grid[..., 0, 3] = 0.0
    grid[..., 1, 3] = 0.0
    assert (grid == 0).all()  # nothing else of the vote matrix moved


def test_routing_free_logits_equal_one_iteration_of_routing():
    model = tiny(iterations=1).eval()
    images = torch.rand(4, 1, 28, 28)
    primary = model.primary_capsules(images)
    votes = model.votes(primary)
    free = model.routing_free_logits(primary, votes)
    assert free.shape == (4, 10)
    assert torch.allclose(free, model.routed_logits(primary, votes), atol=1e-6)
    assert torch.allclose(free, model(images).logits, atol=1e-6)
    routed = tiny(iterations=3).eval()  # with routing they differ, and routed_logits are the model's own
    primary = routed.primary_capsules(images)
    votes = routed.votes(primary)
    assert torch.allclose(routed.routed_logits(primary, votes), routed(images).logits, atol=1e-6)
    assert not torch.allclose(routed.routing_free_logits(primary, votes), routed(images).logits, atol=1e-6)


def test_spread_loss_matches_hand_computation():
    activations = torch.tensor([[0.9, 0.8, 0.1], [0.3, 0.6, 0.5]])
    labels = torch.tensor([0, 2])
    # example 0, m = 0.5: class 1: max(0, 0.5 − 0.1)² = 0.16; class 2: max(0, 0.5 − 0.8)² = 0
    # example 1: class 0: max(0, 0.5 − 0.2)² = 0.09; class 1: max(0, 0.5 + 0.1)² = 0.36
    assert float(spread_loss(activations, labels, 0.5)) == pytest.approx((0.16 + 0.09 + 0.36) / 2)


def test_margin_anneals_linearly_while_training_only():
    assert [annealed_margin(step, 0.2, 0.9, 100) for step in (0, 50, 100, 500)] == pytest.approx([0.2, 0.55, 0.9, 0.9])
    model = tiny()
    images, labels = torch.rand(2, 1, 28, 28), torch.tensor([1, 2])
    model.eval()
    model.loss(model(images), images, labels)  # evaluation does not count
    model.train()
    with torch.no_grad():
        model.loss(model(images), images, labels)  # nor does a loss without gradients (attacks, validation)
    assert model.margin == pytest.approx(0.2)
    for _ in range(50):
        model.loss(model(images), images, labels)
    assert int(model.steps_seen) == 50 and model.margin == pytest.approx(0.2 + 0.7 * 50 / 100)
    assert "steps_seen" in model.state_dict()  # a resumed run continues the schedule


def test_the_margin_survives_a_checkpoint(tmp_path):
    model = tiny()
    model.steps_seen.fill_(70)
    chosen = recipe("em-capsnet-tiny")
    save_checkpoint(tmp_path / "last", model, chosen, {})
    loaded = load_checkpoint(tmp_path / "last")
    assert int(loaded.model.steps_seen) == 70 and loaded.model.margin == pytest.approx(model.margin)


def test_one_optimiser_step_lowers_the_spread_loss():
    model = tiny().train()
    torch.manual_seed(2)
    images, labels = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    margin = model.margin
    loss = model.loss(model(images), images, labels).total
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    with torch.no_grad():
        after = spread_loss(torch.sigmoid(model(images).logits), labels, margin)
    assert float(after) < float(loss.detach())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pose_dim = 15", r"\[model\] pose_dim must be a square"),
        ("pose_dim = 1", r"\[model\] pose_dim must be a square of 2 or more"),
        ("routing_iterations = 0", r"\[model\] routing_iterations must lie in \[1, 100\]"),
        ("final_lambda = 0.0", r"\[model\] final_lambda must lie in"),
        ("transformation_std = -1.0", r"\[model\] transformation_std must lie in \[0, 100\]"),
        ("reconstruction_weight = -0.5", r"\[model\] reconstruction_weight must be ≥ 0"),
        ("margin_start = 0.95", r"\[model\] margins need"),
        ("capsule_kernel = 9", r"\[model\] capsule_kernel 9 leaves no class-layer input capsule"),
    ],
)
def test_bad_configurations_are_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(f'architecture = "em-capsnet"\n[model]\n{text}\n')
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)
    key, value = (part.strip() for part in text.split("="))
    with pytest.raises(RecipeError, match=message.replace(r"\[model\] ", "")):
        recipe_from_dict({"architecture": "em-capsnet", "model": {key: json.loads(value)}})


def test_describe_reports_the_parameter_counts():
    assert describe_model(load_recipe("em-capsnet-tiny"))["parameters"] == 6_104
    result = CliRunner().invoke(main, ["describe", "models/em-capsnet.toml", "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    description = json.loads(result.output)
    # The paper's "about 310K": conv1 832, primary capsules 17,952, ConvCaps1 and 2 147,520 each, class 5,140.
    assert description["architecture"] == "em-capsnet" and description["parameters"] == 318_964
    assert description["forward_flops_per_image"] > 0


def test_routing_stays_in_float32_under_bfloat16_autocast():
    model = tiny(iterations=1).eval()
    images = torch.rand(2, 1, 28, 28)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(images)
        primary = model.primary_capsules(images)
        free = model.routing_free_logits(primary, model.votes(primary))
    assert output.logits.dtype == torch.float32 and free.dtype == torch.float32
    assert torch.isfinite(output.logits).all() and torch.allclose(free, output.logits, atol=1e-6)
