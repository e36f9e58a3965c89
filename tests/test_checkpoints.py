"""Checkpoints: round-trip exactly, and refuse anything truncated, altered, pickled or mismatched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from capsrobust.errors import CheckpointError
from capsrobust.models.checkpoints import load_checkpoint, save_checkpoint
from capsrobust.models.recipes import build_model
from tests.conftest import recipe


@pytest.fixture
def run_copy(trained_runs, tmp_path) -> Path:
    return Path(shutil.copytree(trained_runs["capsnet-tiny"], tmp_path / "run"))


def test_round_trip_gives_identical_weights_and_predictions(tmp_path, mnist5k):
    torch.manual_seed(0)
    model = build_model(recipe("capsnet-tiny")).eval()
    save_checkpoint(tmp_path / "ckpt", model, recipe("capsnet-tiny"), {"epoch": 1})
    loaded = load_checkpoint(tmp_path / "ckpt.safetensors")
    assert loaded.recipe == recipe("capsnet-tiny") and loaded.metadata["epoch"] == 1
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values(), strict=True)
    )
    images = mnist5k.test.images[:16]
    assert torch.equal(model(images).logits, loaded.model(images).logits)
    assert not loaded.model.training


def test_run_directory_resolves_to_best_and_json_path_works(run_copy):
    assert load_checkpoint(run_copy).path.name == "best.safetensors"
    assert load_checkpoint(run_copy / "last.json").path.name == "last.safetensors"


def test_truncated_weights_are_refused(run_copy):
    weights = run_copy / "best.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="truncated or altered"):
        load_checkpoint(run_copy)


def test_weights_of_another_recipe_are_refused(run_copy):
    metadata = json.loads((run_copy / "best.json").read_text())
    metadata["recipe"]["model"]["digit_dim"] = 12
    (run_copy / "best.json").write_text(json.dumps(metadata))
    with pytest.raises(CheckpointError, match="does not match its recipe"):
        load_checkpoint(run_copy)


def test_pickles_and_foreign_json_are_refused(tmp_path, run_copy):
    torch.save({"w": torch.zeros(1)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="never pickles"):
        load_checkpoint(tmp_path / "model.pt")
    (run_copy / "best.json").write_text('{"hello": 1}')
    with pytest.raises(CheckpointError, match="not a capsrobust checkpoint"):
        load_checkpoint(run_copy)
    (run_copy / "last.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(run_copy / "last.json")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused(tmp_path, bad):
    model = build_model(recipe("capsnet-tiny")).eval()
    with torch.no_grad():
        next(model.parameters()).view(-1)[3] = bad
    save_checkpoint(tmp_path / "ckpt", model, recipe("capsnet-tiny"), {"epoch": 1})  # SHA-256 consistent: not altered
    with pytest.raises(CheckpointError, match="NaN or infinite weights"):
        load_checkpoint(tmp_path / "ckpt")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda meta: meta.update(recipe=5), "its 'recipe' is not a table"),
        (lambda meta: meta.update(weights_sha256=["x"]), "its 'weights_sha256' is not a string"),
        (lambda meta: meta.update(epoch="3"), "its 'epoch' is not an integer"),
        (lambda meta: meta["recipe"].update(model=[1, 2]), "holds no valid recipe"),
    ],
)
def test_checkpoint_json_with_fields_of_the_wrong_type_is_refused_in_one_line(run_copy, edit, message):
    metadata = json.loads((run_copy / "best.json").read_text())
    edit(metadata)
    (run_copy / "best.json").write_text(json.dumps(metadata))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(run_copy)


def test_absurdly_nested_checkpoint_json_is_refused(run_copy):
    (run_copy / "best.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        load_checkpoint(run_copy)
