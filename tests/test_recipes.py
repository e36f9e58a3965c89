"""Recipes: every shipped recipe loads; mistakes are refused naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsrobust.errors import RecipeError
from capsrobust.models.recipes import load_recipe, recipe_from_dict
from tests.conftest import REPO


@pytest.mark.parametrize("path", sorted((REPO / "models").glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_loads_and_round_trips(path: Path):
    loaded = load_recipe(path)
    assert loaded.name == path.stem
    assert recipe_from_dict(loaded.to_dict()) == loaded


def test_bare_names_resolve_to_the_models_folder():
    assert load_recipe("cnn-small").model.conv_channels == (32, 64)


def test_bare_names_resolve_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no models/ here: the repository's recipes are found, as suites are
    assert load_recipe("cnn-small-at").adversarial is not None
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "cnn-small.toml").write_text(
        (REPO / "models" / "cnn-small.toml").read_text(encoding="utf-8").replace('name = "cnn-small"',
                                                                                 'name = "cnn-small-local"'),
        encoding="utf-8")
    assert load_recipe("cnn-small").name == "cnn-small-local"  # the working directory's own models/ comes first


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'architecture = "capsnet"\n[model]\nrouting_iteration = 3\n',
            r"bad.toml: \[model\] unknown key 'routing_iteration'",
        ),
        (
            'architecture = "capsnet"\n[model]\nrouting_iterations = "3"\n',
            r"key 'model.routing_iterations' must be an integer",
        ),
        (
            'architecture = "capsnet"\n[model]\ndecoder_hidden = 512\n',
            r"key 'model.decoder_hidden' must be a list",
        ),
        ('architecture = "cnn"\n[train]\nepochs = 0\n', r"bad.toml: \[train\] epochs must be positive"),
        ('architecture = "transformer"\n', r"key 'architecture': unknown architecture 'transformer'"),
        ("[model]\nconv1_channels = 8\n", r"missing key 'architecture'"),
        ('architecture = "cnn"\ncolour = "red"\n', r"unknown key 'colour'"),
        ('architecture = "cnn"\n[model\n', r"not valid TOML"),
        # ranges, checked at load before anything allocates
        ('architecture = "capsnet"\n[model]\nrouting_iterations = 0\n', r"\[model\] routing_iterations must lie in"),
        ('architecture = "capsnet"\n[model]\nconv1_channels = 0\n', r"\[model\] conv1_channels must lie in \[1, "),
        ('architecture = "capsnet"\n[model]\ndecoder_hidden = [512, 100000000000]\n', r"decoder_hidden must lie in"),
        ('architecture = "capsnet"\n[model]\nconv1_kernel = 27\n', r"leave no primary capsule"),
        ('architecture = "capsnet"\n[model]\nmargin_plus = 0.05\n', r"margins need"),
        ('architecture = "cnn"\n[model]\nhidden_units = [0]\n', r"hidden_units must lie in"),
        ('architecture = "cnn"\n[model]\ndropout = 1.0\n', r"dropout must lie in \[0, 1\)"),
        ('architecture = "cnn"\n[model]\nnum_classes = 1\n', r"num_classes must be ≥ 2"),
        ('architecture = "cnn-recon"\n[model]\nclass_dim = 0\n', r"class_dim must lie in"),
        ('architecture = "cnn"\n[model]\ninput_std = 0.0\n', r"input_std must be positive"),
    ],
)
def test_bad_recipes_are_refused_with_file_and_key(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(_write(tmp_path, text))


def test_missing_recipe_lists_the_known_ones():
    with pytest.raises(RecipeError, match=r"known recipes: .*capsnet-paper"):
        load_recipe("capsnet-papr")


def test_a_recipe_is_built_for_the_datas_shape_and_classes():
    import torch

    from capsrobust.models.recipes import build_model

    for name in ("capsnet-tiny", "cnn-tiny", "cnn-recon-tiny"):
        model = build_model(load_recipe(name).for_data((3, 20, 28), 7)).eval()
        assert model.input_shape == (3, 20, 28) and model.num_classes == 7
        output = model(torch.rand(2, 3, 20, 28))
        assert output.logits.shape == (2, 7)
        if output.reconstruction is not None:
            assert output.reconstruction.shape == (2, 3, 20, 28)  # the decoder outputs C × H × W


def test_recipes_and_checkpoints_of_version_0_2_still_load():
    """Before inputs had a shape, a [model] table said image_size = 28 and gave one input_mean / input_std."""
    old = {"name": "cnn-old", "architecture": "cnn",
           "model": {"conv_channels": [4], "hidden_units": [8], "image_size": 28, "input_mean": 0.1307,
                     "input_std": 0.3081}}
    loaded = recipe_from_dict(old)
    assert (loaded.model.input_height, loaded.model.input_width, loaded.model.input_channels) == (28, 28, 1)
    assert loaded.model.input_mean == (0.1307,) and loaded.model.input_std == (0.3081,)
    assert recipe_from_dict(loaded.to_dict()) == loaded


def test_a_recipe_that_cannot_fit_the_data_is_one_line():
    with pytest.raises(RecipeError, match=r"does not fit 3×8×8 images in 10 classes: .*leave no primary capsule"):
        load_recipe("capsnet-tiny").for_data((3, 8, 8), 10)
    with pytest.raises(RecipeError, match="input_mean holds 2 values; give one, or one per channel"):
        recipe_from_dict({"architecture": "cnn", "model": {"input_mean": [0.1, 0.2], "input_channels": 3}})
