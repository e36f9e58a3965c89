"""Capabilities as data: what a model can do is declared, and asked for, not read off its class or name."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from capsrobust.attacks.objectives import (
    CAPSNET_DEFAULT_OBJECTIVE,
    ObjectiveError,
    attack_target,
    default_objective,
    has_capsule_lengths,
)
from capsrobust.attacks.suites import suite_from_dict
from capsrobust.attacks.vote import VoteView, vote_target
from capsrobust.evaluation.compare import is_capsule_model
from capsrobust.evaluation.store import RESULT_COLUMNS, load_sweep
from capsrobust.evaluation.sweep import run_sweep
from capsrobust.models.base import (
    Capability,
    CapsRobustModel,
    LossTerms,
    ModelOutput,
    capabilities_of,
    capabilities_text,
    parse_capabilities,
)
from capsrobust.models.capsnet import CapsNet, capsule_length, route_by_agreement, squash
from capsrobust.models.recipes import build_model
from tests.conftest import recipe

ALL = frozenset(Capability)


class ToyCapsules(CapsRobustModel):
    """A capsule model that is no CapsNet: linear primary capsules, votes, routing, lengths; nothing else."""

    capabilities = frozenset({Capability.CAPSULE_LENGTHS, Capability.VOTES})
    routing_iterations = 2

    def __init__(self, n_in: int = 12, in_dim: int = 4, n_out: int = 10, out_dim: int = 6) -> None:
        super().__init__()
        self.n_in, self.in_dim = n_in, in_dim
        self.primary = nn.Linear(28 * 28, n_in * in_dim)
        self.weights = nn.Parameter(0.1 * torch.randn(n_in, n_out, out_dim, in_dim))

    def primary_capsules(self, images: torch.Tensor) -> torch.Tensor:
        return squash(self.primary(images.flatten(1)).view(-1, self.n_in, self.in_dim))  # (B, 12, 4)

    def votes(self, primary: torch.Tensor) -> torch.Tensor:
        return torch.einsum("icdk,bik->bicd", self.weights, primary)  # (B, 12, 10, 6)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        poses, _ = route_by_agreement(self.votes(self.primary_capsules(images)), self.routing_iterations)
        lengths = capsule_length(poses)  # (B, 10)
        return ModelOutput(logits=torch.log(lengths), lengths=lengths, poses=poses)

    def loss(self, output: ModelOutput, images: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        return LossTerms(F.cross_entropy(output.logits, labels))


class LengthsOnly(ToyCapsules):
    """Capsule lengths but no votes on offer: the vote attack must refuse it."""

    capabilities = frozenset({Capability.CAPSULE_LENGTHS})


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize(("name", "declared"), [
    ("capsnet-tiny", ALL),
    ("cnn-recon-tiny", {Capability.CLASS_DECODER}),
    ("cnn-tiny", set()),
])
def test_built_in_models_declare_what_they_offer(name, declared):
    model = build_model(recipe(name))
    assert model.capabilities == frozenset(declared)
    assert capabilities_of(model) == frozenset(declared)
    assert all(model.has(capability) == (capability in declared) for capability in Capability)
    assert model.can_reconstruct == (Capability.CLASS_DECODER in declared)
    assert has_capsule_lengths(model) == (Capability.CAPSULE_LENGTHS in declared)


def test_capabilities_round_trip_as_sorted_text():
    assert capabilities_text(CapsNet.capabilities) == "capsule-lengths,class-decoder,votes"
    assert capabilities_text(frozenset()) == ""
    assert parse_capabilities("votes,capsule-lengths,class-decoder") == ALL
    assert parse_capabilities("") == frozenset()
    assert parse_capabilities("votes, from-a-newer-version") == {Capability.VOTES}
    assert capabilities_of(nn.Linear(2, 2)) == frozenset()  # a module that declares nothing offers nothing


def test_a_capsule_model_that_is_no_capsnet_is_attacked_like_one(images):
    torch.manual_seed(0)
    model = ToyCapsules().eval()
    assert not isinstance(model, CapsNet)
    assert has_capsule_lengths(model)
    assert default_objective(model) is CAPSNET_DEFAULT_OBJECTIVE
    assert attack_target(model).describe() == "margin(lengths)"
    target = vote_target(model, "ce-log-lengths")
    assert target.describe() == "ce(votes log-lengths)"
    assert target.view(images).shape == (5, 10)
    with torch.no_grad():
        lengths = model(images).lengths
    # the routed values are the model's own scores, routed as often as the model declares
    torch.testing.assert_close(VoteView(model, "lengths", values="routed")(images), lengths)


@pytest.mark.parametrize("model", [LengthsOnly(), build_model(recipe("cnn-tiny"))], ids=["lengths-only", "cnn"])
def test_the_vote_attack_refuses_models_without_votes_in_one_line(model):
    with pytest.raises(ObjectiveError, match="needs a CapsNet") as caught:
        vote_target(model)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{type(model).__name__} has none" in message


def test_report_reads_capsules_from_the_capabilities_column(tmp_path):
    rows = pd.DataFrame({
        "model": ["toy", "caps", "cnn", "recon", "em"],
        "architecture": ["toy-capsules", "capsnet", "cnn", "cnn-recon", "em-capsnet"],
        "capabilities": ["capsule-lengths,votes", "capsule-lengths,class-decoder,votes", "", "class-decoder",
                         "class-decoder,votes"],
    })
    rows.to_csv(tmp_path / "results.csv", index=False)
    read_back = pd.read_csv(tmp_path / "results.csv").set_index("model")  # the empty set reads back as missing
    assert math.isnan(read_back.loc["cnn", "capabilities"])
    assert {model: is_capsule_model(row) for model, row in read_back.iterrows()} == {
        "toy": True, "caps": True, "cnn": False, "recon": False, "em": True,  # EM: activations, no lengths
    }


def test_report_falls_back_to_the_architecture_for_old_tables():
    old = pd.DataFrame({"model": ["caps", "cnn", "recon"], "architecture": ["capsnet", "cnn", "cnn-recon"]})
    assert [is_capsule_model(row) for _, row in old.iterrows()] == [True, False, False]


def test_a_sweep_records_each_models_capabilities(trained_runs, mnist5k, tmp_path):
    # new columns go last: capabilities, adversarial training budget, cascade mode and counts, no-answers, transfer,
    # the precision each model was trained in
    assert RESULT_COLUMNS[-7:] == ["capabilities", "train_linf_eps", "mode", "n_attacked", "n_no_answer",
                                   "transfer_from", "train_precision"]
    suite = suite_from_dict({"suite": {"name": "one", "n": 4}, "attack": [{"name": "fgsm", "eps": [0.1]}]},
                            source="one.toml")
    run_sweep([trained_runs["capsnet-tiny"], trained_runs["cnn-tiny"]], suite, mnist5k, out_dir=tmp_path,
              backend="art", device="cpu", progress=False)
    results = load_sweep(tmp_path).results
    by_architecture = {row["architecture"]: row for _, row in results.drop_duplicates("model").iterrows()}
    assert by_architecture["capsnet"]["capabilities"] == "capsule-lengths,class-decoder,votes"
    assert pd.isna(by_architecture["cnn"]["capabilities"])  # "" on disk
    assert is_capsule_model(by_architecture["capsnet"]) and not is_capsule_model(by_architecture["cnn"])
    assert set(results["train_precision"]) == {"fp32"}  # the session's tiny runs, trained in fp32 (conftest)


def test_sweeps_plan_attacks_by_what_a_model_declares():
    from capsrobust.attacks.objectives import AttackObjective
    from capsrobust.attacks.registry import Backend
    from capsrobust.attacks.suites import suite_from_dict
    from capsrobust.evaluation.plan import PlannedModel, plan_cells

    suite = suite_from_dict({"attack": [
        {"name": "vote-pgd-linf", "eps": [0.1], "backends": ["art"]},
        {"name": "apgd-ce-lengths", "eps": [0.1]},
        {"name": "pgd-linf-recon", "eps": [0.1], "backends": ["art"]},
    ]})
    votes_only = PlannedModel("votes-only", AttackObjective.MARGIN, frozenset({Capability.VOTES}))
    cells, notes = plan_cells(suite, [votes_only], [Backend.ART], seed=0)
    assert [cell.label for cell in cells] == ["vote-pgd-linf"]
    assert "apgd-ce-lengths (needs a capsule model (capsule lengths))" in notes[0].detail
    assert "pgd-linf-recon (needs a model with a class-conditional decoder)" in notes[0].detail
