"""The attack registry and its backends: hand-computed FGSM, threat models respected, seeds, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from capsrobust.attacks import (
    AttackError,
    AttackKind,
    AttackResult,
    Backend,
    Norm,
    attack_names,
    get_attack,
    register_attack,
    run_attack,
)
from capsrobust.attacks.registry import unregister_attack
from capsrobust.models import CapsRobustModel, LossTerms, ModelOutput
from capsrobust.models.checkpoints import load_checkpoint
from capsrobust.models.recipes import build_model
from tests.conftest import recipe

BACKENDS = [Backend.ART, Backend.FOOLBOX]


class LinearModel(CapsRobustModel):
    """logits = W x + b: the input gradient of any loss is known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.linear = torch.nn.Linear(784, 10)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(10, 784, generator=generator))
            self.linear.bias.zero_()

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        return ModelOutput(logits=self.linear(images.flatten(1)))

    def loss(self, output: ModelOutput, images: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        return LossTerms(F.cross_entropy(output.logits, labels))


@pytest.fixture(scope="module")
def interior_images() -> torch.Tensor:
    """Pixels in [0.3, 0.7], so that a step of 0.1 never reaches the bounds."""
    return 0.3 + 0.4 * torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("objective", ["ce-log-lengths", "margin"])
def test_fgsm_on_a_linear_model_is_eps_times_the_sign_of_the_hand_computed_gradient(
    backend, objective, interior_images
):
    model = LinearModel().eval()
    labels = torch.tensor([0, 1, 2, 3, 4])
    weight = model.linear.weight.detach()  # (10, 784)
    logits = interior_images.flatten(1) @ weight.T  # (5, 10)
    if objective == "margin":  # ∇(z_j* − z_y) = W_j* − W_y, j* the best other class
        others = logits.scatter(1, labels[:, None], float("-inf"))
        gradient = weight[others.argmax(dim=1)] - weight[labels]
    else:  # ∇ CE = Wᵀ (softmax(z) − onehot(y))
        gradient = (logits.softmax(dim=1) - F.one_hot(labels, 10).float()) @ weight
    expected = (interior_images.flatten(1) + 0.1 * gradient.sign()).view_as(interior_images)
    result = run_attack("fgsm", model, interior_images, labels, eps=0.1, objective=objective, backend=backend)
    torch.testing.assert_close(result.adversarials, expected, rtol=0, atol=1e-6)
    assert result.steps_or_queries == 1


def test_every_attack_is_registered_with_a_backend_and_defaults():
    assert set(attack_names()) >= {"fgsm", "pgd-linf", "pgd-l2", "cw-l2", "autoattack", "square",
                                     "vote-pgd-linf", "vote-pgd-l2", "apgd-ce", "apgd-dlr", "apgd-t",
                                     "vote-apgd-ce", "vote-apgd-t"}
    for name in attack_names():
        spec = get_attack(name)
        assert spec.backends and spec.description
        assert set(spec.resolve_params()) == {param.name for param in spec.schema}
    assert get_attack("cw-l2").kind is AttackKind.MINIMIZATION
    assert get_attack("square").gradient_free
    assert get_attack("vote-pgd-linf").needs_capsules
    assert set(get_attack("pgd-linf").backends) == set(BACKENDS)


FAST = {
    "fgsm": {},
    "pgd-linf": {"steps": 3, "restarts": 2},
    "pgd-l2": {"steps": 3},
    "cw-l2": {"binary_search_steps": 1, "max_iter": 3},
    "autoattack": {"apgd_steps": 2, "restarts": 1, "targets": 2, "square_queries": 3},
    "square": {"queries": 5},
    "vote-pgd-linf": {"steps": 3},
    "vote-pgd-l2": {"steps": 3},
    "apgd-ce": {"steps": 3},
    "apgd-ce-lengths": {"steps": 3},
    "apgd-dlr": {"steps": 3},
    "apgd-t": {"steps": 3, "targets": 2},
    "vote-apgd-ce": {"steps": 3},
    "vote-apgd-t": {"steps": 3, "targets": 2},
}
EPS = {Norm.LINF: 0.2, Norm.L2: 1.5}
CASES = [(name, backend) for name in FAST for backend in get_attack(name).backends]


@pytest.mark.parametrize(("name", "backend"), CASES, ids=[f"{n}-{b.value}" for n, b in CASES])
def test_attacks_stay_in_bounds_and_in_their_threat_model(name, backend, trained_runs, mnist5k):
    model_name = "capsnet-tiny" if get_attack(name).needs_capsules else "cnn-tiny"
    model = load_checkpoint(trained_runs[model_name]).model
    images, labels = mnist5k.test.images[:6], mnist5k.test.labels[:6]
    spec = get_attack(name)
    result = run_attack(name, model, images, labels, eps=EPS[spec.norm], params=FAST[name], backend=backend)
    adversarials = result.adversarials
    assert adversarials.shape == images.shape and adversarials.dtype == torch.float32
    assert adversarials.min() >= 0 and adversarials.max() <= 1
    delta = (adversarials - images).flatten(1)
    if spec.kind is AttackKind.BOUNDED:
        size = delta.abs().amax(dim=1) if spec.norm is Norm.LINF else delta.norm(dim=1)
        assert (size <= EPS[spec.norm] + 1e-5).all()
    assert result.steps_or_queries >= 1 and "(" in result.objective_used


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_seed_gives_the_same_random_starts(backend):
    torch.manual_seed(0)
    model = build_model(recipe("cnn-tiny")).eval()
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([1, 2, 3, 4])

    def attack(seed: int) -> torch.Tensor:
        return run_attack("pgd-linf", model, images, labels, eps=0.1, params={"steps": 1}, backend=backend,
                          seed=seed).adversarials

    assert torch.equal(attack(5), attack(5))
    assert not torch.equal(attack(5), attack(6))


def test_refusals_are_attack_errors():
    torch.manual_seed(0)
    cnn = build_model(recipe("cnn-tiny")).eval()
    images, labels = torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    with pytest.raises(AttackError, match="unknown attack 'deepfool'"):
        run_attack("deepfool", cnn, images, labels, eps=0.1)
    with pytest.raises(AttackError, match="square is not available in foolbox"):
        run_attack("square", cnn, images, labels, eps=0.1, backend="foolbox")
    with pytest.raises(AttackError, match="vote-pgd-linf attacks capsules"):
        run_attack("vote-pgd-linf", cnn, images, labels, eps=0.1)
    with pytest.raises(AttackError, match="unknown parameter 'stepz'"):
        run_attack("pgd-linf", cnn, images, labels, eps=0.1, params={"stepz": 3})
    with pytest.raises(AttackError, match="restarts"):
        run_attack("pgd-linf", cnn, images, labels, eps=0.1, params={"restarts": 3, "random_start": False})
    with pytest.raises(AttackError, match="exceeds 1"):
        run_attack("fgsm", cnn, images, labels, eps=1.5)
    with pytest.raises(AttackError, match="needs eps > 0"):
        run_attack("autoattack", cnn, images, labels, eps=0.0)
    with pytest.raises(AttackError, match="unknown backend"):
        run_attack("fgsm", cnn, images, labels, eps=0.1, backend="cleverhans")


def test_adding_an_attack_is_one_entry():
    @register_attack("identity-test", norm=Norm.LINF, backends=(Backend.ART,))
    def identity(call):
        """Returns the inputs: a do-nothing attack."""
        return AttackResult(call.images.clone(), 0, "none")

    try:
        torch.manual_seed(0)
        model = build_model(recipe("cnn-tiny")).eval()
        images = torch.rand(2, 1, 28, 28)
        result = run_attack("identity-test", model, images, torch.tensor([0, 1]), eps=0.1)
        assert torch.equal(result.adversarials, images)
        assert get_attack("identity-test").description == "Returns the inputs: a do-nothing attack."
    finally:
        unregister_attack("identity-test")
