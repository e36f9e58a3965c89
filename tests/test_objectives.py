"""Adapters to ART and Foolbox: same predictions as the model, eval mode, untouched weights, the right losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from capsrobust.attacks.objectives import (
    CAPSNET_DEFAULT_OBJECTIVE,
    AttackObjective,
    MarginLoss,
    ObjectiveError,
    attack_target,
    default_objective,
    frozen_parameters,
    to_art,
    to_foolbox,
)
from capsrobust.attacks.vote import VoteView, vote_target
from capsrobust.models.recipes import build_model
from tests.conftest import recipe


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(recipe(name)).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["capsnet-tiny", "cnn-tiny"])
@pytest.mark.parametrize("objective", list(AttackObjective))
def test_art_and_foolbox_predict_what_the_model_predicts(name, objective, images):
    model = tiny(name)
    with torch.no_grad():
        output = model(images)
    expected = output.logits
    if name == "capsnet-tiny" and objective in (AttackObjective.CE_LENGTHS, AttackObjective.MARGIN):
        expected = output.lengths
    art_scores = to_art(model, objective).predict(images.numpy())
    np.testing.assert_allclose(art_scores, expected.numpy(), rtol=1e-5, atol=1e-6)
    foolbox_scores = to_foolbox(model, objective)(images)
    torch.testing.assert_close(foolbox_scores, expected, rtol=1e-5, atol=1e-6)
    assert (art_scores.argmax(axis=1) == output.predictions.numpy()).all()


def test_art_classifier_settings():
    classifier = to_art(tiny("cnn-tiny"))
    assert classifier.clip_values is not None and tuple(np.asarray(classifier.clip_values).ravel()) == (0.0, 1.0)
    assert classifier.input_shape == (1, 28, 28)
    assert classifier.nb_classes == 10
    assert isinstance(classifier._loss, torch.nn.CrossEntropyLoss)
    assert isinstance(to_art(tiny("cnn-tiny"), "margin")._loss, MarginLoss)
    assert to_foolbox(tiny("cnn-tiny")).bounds == (0, 1)


@pytest.mark.parametrize("name", ["capsnet-tiny", "cnn-tiny"])
def test_adapters_put_the_model_in_eval_mode_and_never_change_weights(name, images):
    model = tiny(name).train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    classifier = to_art(model)
    assert not model.training
    classifier.loss_gradient(images.numpy(), np.eye(10)[np.arange(6)], training_mode=True)  # ART wants one-hot
    assert not model.training  # the view keeps the model in eval mode whatever ART asks for
    to_foolbox(model)(images)
    import foolbox

    foolbox.attacks.LinfPGD(steps=2)(to_foolbox(model), images, torch.arange(6) % 10, epsilons=0.1)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_art_margin_gradient_is_the_margin_gradient(images):
    """ART hands custom losses one-hot labels; the margin must still see the right class."""
    model = tiny("capsnet-tiny")
    labels = np.array([3, 1, 4, 1, 5, 9])
    art_gradient = to_art(model, "margin").loss_gradient(images.numpy(), np.eye(10)[labels])
    inputs = images.clone().requires_grad_(True)
    MarginLoss()(model(inputs).lengths, torch.from_numpy(labels)).backward()
    np.testing.assert_allclose(art_gradient, inputs.grad.numpy(), rtol=1e-4, atol=1e-7)


def test_margin_loss_by_hand():
    scores = torch.tensor([[1.0, 3.0, 2.0], [0.5, 0.2, 0.1]])
    assert MarginLoss()(scores, torch.tensor([0, 0])).item() == pytest.approx((3 - 1) + (0.2 - 0.5))
    one_hot = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert MarginLoss()(scores, one_hot).item() == pytest.approx((2 - 3) + (0.5 - 0.1))


def test_objectives_choose_scores_and_loss():
    capsnet, cnn = tiny("capsnet-tiny"), tiny("cnn-tiny")
    assert default_objective(capsnet) is CAPSNET_DEFAULT_OBJECTIVE
    assert default_objective(cnn) is AttackObjective.CE_LOG_LENGTHS
    assert attack_target(capsnet, "ce-lengths").describe() == "ce(lengths)"
    assert attack_target(capsnet, "margin-log-lengths").describe() == "margin(log-lengths)"
    assert attack_target(cnn, "ce-lengths").describe() == "ce(logits)"
    assert attack_target(cnn, "margin").describe() == "margin(logits)"
    with pytest.raises(ObjectiveError, match="unknown attack objective 'hinge'"):
        AttackObjective.parse("hinge")


def test_vote_view_averages_votes_and_refuses_cnns(images):
    capsnet = tiny("capsnet-tiny")
    scores = VoteView(capsnet, "lengths")(images)
    assert scores.shape == (6, 10)
    assert (scores >= 0).all() and (scores < 1).all()
    assert vote_target(capsnet, "ce-log-lengths").describe() == "ce(votes log-lengths)"
    with pytest.raises(ObjectiveError, match="needs a CapsNet"):
        vote_target(tiny("cnn-tiny"))


def test_frozen_parameters_restores_flags():
    model = tiny("cnn-tiny")
    with frozen_parameters(model):
        assert not any(parameter.requires_grad for parameter in model.parameters())
    assert all(parameter.requires_grad for parameter in model.parameters())


class OwnRule(torch.nn.Module):
    """A routing variant with a routing-free rule of its own (as EM's one uniform M-step): two inputs, two classes."""

    routing_iterations = 2
    num_classes = 2

    def primary_capsules(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1).view(-1, 2, 1)  # (B, 2 inputs, 1)

    def votes(self, primary: torch.Tensor) -> torch.Tensor:
        return primary.unsqueeze(2).expand(-1, -1, 2, -1) * torch.tensor([1.0, -1.0]).view(1, 1, 2, 1)  # (B, 2, 2, 1)

    def routing_free_logits(self, primary: torch.Tensor, votes: torch.Tensor) -> torch.Tensor:
        return votes.mean(dim=1).squeeze(-1)  # (B, 2)

    def routed_logits(self, primary: torch.Tensor, votes: torch.Tensor) -> torch.Tensor:
        return 10 * votes.sum(dim=1).squeeze(-1)  # (B, 2): deliberately another value


def test_a_variant_with_its_own_routing_free_rule_is_attacked_through_it():
    model, images = OwnRule(), torch.tensor([[[[0.2, 0.6]]]], requires_grad=True)  # (1, 1, 1, 2)
    surrogate = VoteView(model, "logits")(images)
    assert torch.allclose(surrogate, torch.tensor([[0.4, -0.4]]))
    routed = VoteView(model, "logits", values="routed")(images)
    assert torch.allclose(routed, torch.tensor([[8.0, -8.0]]))  # the model's own values...
    (gradient,) = torch.autograd.grad(routed[0, 0], images)
    assert torch.allclose(gradient, torch.full_like(gradient, 0.5))  # ...with the routing-free rule's gradient
    with pytest.raises(ObjectiveError, match="not raw lengths or activations"):
        VoteView(model, "lengths")


@pytest.mark.parametrize("name", ["efficient-capsnet-tiny", "em-capsnet-tiny"])
def test_the_vote_attack_applies_to_every_routing_variant(name):
    """Self-attention and EM routing offer their own routing-free rule: the vote view scores with it, in logit
    space, and with values="routed" it returns exactly the model's own logits."""
    torch.manual_seed(0)
    model = build_model(recipe(name)).eval()
    images = torch.rand(3, 1, 28, 28, requires_grad=True)
    target = vote_target(model)
    assert target.scores == "logits" and target.describe().endswith("(votes logits)")
    scores = target.view(images)
    assert scores.shape == (3, 10) and torch.isfinite(scores).all()
    (gradient,) = torch.autograd.grad(scores.logsumexp(dim=1).sum(), images)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    routed = VoteView(model, "logits", values="routed")(images)
    assert torch.allclose(routed, model(images).logits, atol=1e-5)
