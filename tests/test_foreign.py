"""Bring your own trained module: models capsrobust did not build go through sweep → detect → report in Python."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from capsrobust.data import Dataset
from capsrobust.detection import run_detection
from capsrobust.evaluation import SweepError, load_sweep, run_sweep
from capsrobust.models import Capability, ForeignModelError, ModelOutput, wrap_module
from capsrobust.models.capsnet import capsule_length, margin_loss, route_by_agreement, squash
from capsrobust.reporting import build_report

SUITE = """\
[suite]
name = "foreign"
n = 16
double_steps_check = false

[[attack]]
name = "fgsm"
eps = [0.0, 0.2]

[[attack]]
name = "pgd-linf"
eps = [0.2]
[attack.params]
steps = 3

[[attack]]
name = "vote-pgd-linf"
eps = [0.2]
[attack.params]
steps = 3

[[attack]]
name = "pgd-linf-recon"
eps = [0.2]
[attack.params]
steps = 3
"""


def torchvision_style_cnn() -> nn.Module:
    """A plain classifier as a user writes it: no capsrobust base class, logits out."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2),  # (B, 8, 12, 12)
        nn.Conv2d(8, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 4, 4)
        nn.Flatten(), nn.Linear(256, 10),
    )


class UserCapsules(nn.Module):
    """A small capsule network with votes and a decoder, written against nothing but torch and capsrobust's ops."""

    routing_iterations = 2

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 32, 9, stride=3)  # (B, 32, 7, 7): 8 channels of 4-d primary capsules
        self.weights = nn.Parameter(0.05 * torch.randn(8 * 49, 10, 6, 4))
        self.decoder = nn.Sequential(nn.Linear(60, 64), nn.ReLU(), nn.Linear(64, 784), nn.Sigmoid())

    def primary_capsules(self, images: torch.Tensor) -> torch.Tensor:
        grid = self.conv(images)
        capsules = grid.view(grid.shape[0], 8, 4, 49).transpose(2, 3)  # (B, 8, 49, 4)
        return squash(capsules.reshape(grid.shape[0], -1, 4))  # (B, 392, 4)

    def votes(self, primary: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ncdk,bnk->bncd", self.weights, primary)  # (B, 392, 10, 6)

    def reconstruct(self, poses: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        masked = poses * F.one_hot(classes, 10).unsqueeze(-1).to(poses.dtype)  # (B, 10, 6)
        return self.decoder(masked.flatten(1)).view(-1, 1, 28, 28)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        poses, _ = route_by_agreement(self.votes(self.primary_capsules(images)), self.routing_iterations)
        lengths = capsule_length(poses)  # (B, 10)
        classes = labels if labels is not None else lengths.argmax(dim=1)
        return ModelOutput(logits=torch.log(lengths.clamp_min(1e-12)), lengths=lengths, poses=poses,
                           reconstruction=self.reconstruct(poses, classes))


def train_in_plain_torch(module: nn.Module, data: Dataset, capsules: bool) -> nn.Module:
    """One epoch of the user's own training loop: capsrobust is not involved."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    images, labels = data.train.images, data.train.labels
    for start in range(0, len(labels), 100):
        batch, target = images[start:start + 100], labels[start:start + 100]
        if capsules:
            output = module(batch, target)
            loss = margin_loss(output.lengths, target, 0.9, 0.1, 0.5) + 5e-4 * (
                (output.reconstruction - batch) ** 2).flatten(1).sum(1).mean()
        else:
            loss = F.cross_entropy(module(batch), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return module.eval()


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("suite") / "foreign.toml"
    path.write_text(SUITE, encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_torchvision_style_cnn_is_swept_and_reported_without_a_checkpoint(tmp_path, mnist5k, suite_file):
    module = train_in_plain_torch(torchvision_style_cnn(), mnist5k, capsules=False)
    model = wrap_module(module, name="my-cnn")
    assert model.capabilities == frozenset()
    results = run_sweep([model], suite_file, mnist5k, out_dir=tmp_path / "sweep", device="cpu", progress=False)

    assert set(results["label"]) == {"fgsm", "pgd-linf"}  # no votes, no decoder: those attacks are left out
    assert set(results["checkpoint"]) == {"in-memory:my-cnn"}
    assert set(results["architecture"]) == {"Sequential"} and set(results["capabilities"].fillna("")) == {""}
    with torch.no_grad():
        expected = (module(mnist5k.test.images[:16]).argmax(1) == mnist5k.test.labels[:16]).float().mean().item()
    assert results["clean_accuracy"].iloc[0] == pytest.approx(expected)
    eps_zero = results[results["eps"] == 0.0]
    assert eps_zero["robust_accuracy"].iloc[0] == pytest.approx(expected)  # no budget, nothing broken
    assert (results["robust_accuracy"] <= results["clean_accuracy"]).all()
    checks = load_sweep(tmp_path / "sweep").checks
    assert "vote-pgd-linf" in " ".join(checks.loc[checks["check"] == "coverage", "detail"])

    again = run_sweep([model], suite_file, mnist5k, out_dir=tmp_path / "sweep", device="cpu", resume=True,
                      progress=False)  # nothing left to run: the same table back
    pd.testing.assert_frame_equal(again.drop(columns=["seconds", "command"]),
                                  results.drop(columns=["seconds", "command"]))
    with torch.no_grad():
        module[-1].bias.add_(1.0)
    with pytest.raises(SweepError):  # other weights under the same name are another sweep
        run_sweep([model], suite_file, mnist5k, out_dir=tmp_path / "sweep", device="cpu", resume=True,
                  progress=False)

    build_report([tmp_path / "sweep"], tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "my-cnn" in report and "Headline: clean and robust accuracy" in report


@pytest.mark.slow
def test_a_users_capsule_module_gets_the_vote_and_defense_aware_attacks_and_the_detector(
    tmp_path, mnist5k, suite_file
):
    capsules = wrap_module(train_in_plain_torch(UserCapsules(), mnist5k, capsules=True), name="user-caps",
                           returns="output", capabilities={Capability.CAPSULE_LENGTHS, Capability.VOTES,
                                                           Capability.CLASS_DECODER})
    cnn = wrap_module(train_in_plain_torch(torchvision_style_cnn(), mnist5k, capsules=False), name="user-cnn")
    results = run_sweep([capsules, cnn], suite_file, mnist5k, out_dir=tmp_path / "sweep", device="cpu",
                        save_adversarials=True, progress=False)
    mine = results[results["model"] == "user-caps"]
    assert set(mine["label"]) == {"fgsm", "pgd-linf", "vote-pgd-linf", "pgd-linf-recon"}
    assert mine["capabilities"].iloc[0] == "capsule-lengths,class-decoder,votes"
    assert mine["clean_accuracy"].iloc[0] > 0.2  # above chance (0.1): one epoch of the user's own loop learned

    with pytest.raises(SweepError, match="swept in memory"):
        run_detection(tmp_path / "sweep", device="cpu", dataset=mnist5k)
    detection = run_detection(tmp_path / "sweep", device="cpu", dataset=mnist5k, models=[capsules, cnn])
    assert set(detection["model"]) == {"user-caps"}  # the CNN has no decoder
    assert set(detection["attack"]) >= {"pgd-linf-recon", "vote-pgd-linf"}

    build_report([tmp_path / "sweep"], tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "user-caps (candidate) against user-cnn (baseline)" in report
    assert "Reconstruction-error detector" in report


def test_wrapping_refuses_what_the_module_does_not_offer():
    with pytest.raises(ForeignModelError, match="declared to offer votes"):
        wrap_module(torchvision_style_cnn(), name="cnn", capabilities={Capability.VOTES})
    with pytest.raises(ForeignModelError, match="unknown returns 'probabilities'"):
        wrap_module(torchvision_style_cnn(), name="cnn", returns="probabilities")
    with pytest.raises(ForeignModelError, match="spaces or slashes"):
        wrap_module(torchvision_style_cnn(), name="my cnn")
    with pytest.raises(ForeignModelError, match="does not train it"):
        model = wrap_module(torchvision_style_cnn(), name="cnn")
        model.loss(model(torch.zeros(1, 1, 28, 28)), torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))
    offered = wrap_module(UserCapsules(), name="caps", returns="output",
                          capabilities={Capability.CAPSULE_LENGTHS, Capability.VOTES, Capability.CLASS_DECODER})
    assert offered.routing_iterations == 2 and offered.can_reconstruct
    lengths_only = wrap_module(nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Sigmoid()), name="lengths",
                               returns="lengths")
    output = lengths_only(torch.rand(3, 1, 28, 28))
    assert lengths_only.capabilities == frozenset({Capability.CAPSULE_LENGTHS})
    torch.testing.assert_close(output.logits, torch.log(output.lengths))  # scored like the built-in CapsNet


def test_a_wrapped_module_declares_its_input_shape_and_its_classes_are_counted():
    colour = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 14, 5))  # 3×32×16 in
    model = wrap_module(colour, name="colour", input_shape=(3, 32, 16))
    assert model.input_shape == (3, 32, 16) and model.num_classes == 5
    with pytest.raises(ForeignModelError, match=r"does not take 1×28×28 images .*input_shape="):
        wrap_module(colour, name="colour")  # the MNIST default does not fit it
