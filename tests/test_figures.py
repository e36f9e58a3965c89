"""Figures: the tweak grid's geometry, and PNGs that are written, not blank, and identical for the same seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from capsrobust.detection.detector import DetectionError
from capsrobust.figures.capsules import (
    capsule_tweaks,
    choose_examples,
    reconstruction_figure,
    save_figure,
    tweak_deltas,
    tweak_figure,
)
from capsrobust.figures.images import mosaic, tile_centres
from capsrobust.figures.results import perturbation_sizes
from capsrobust.models.checkpoints import load_checkpoint
from capsrobust.models.recipes import build_model
from tests.conftest import recipe


def test_default_deltas_are_the_original_eleven_steps():
    assert np.allclose(tweak_deltas(), np.arange(-0.25, 0.2501, 0.05))
    assert len(tweak_deltas(0.5, 0.1)) == 11


def test_a_mosaic_places_each_tile_at_its_row_and_column_with_white_gaps():
    grey = torch.arange(4.0).view(2, 2, 1, 1, 1).expand(2, 2, 1, 2, 3) / 4  # tile (r, k) filled with (2r + k) / 4
    picture = mosaic(grey, gap=1)
    assert picture.shape == (2 * 2 + 1, 2 * 3 + 1)
    assert np.all(picture[:2, :3] == 0.0) and np.all(picture[:2, 4:] == 0.25) and np.all(picture[3:, 4:] == 0.75)
    assert np.all(picture[2, :] == 1.0) and np.all(picture[:, 3] == 1.0)  # the gaps
    assert list(tile_centres(2, 3, gap=1)) == [1.0, 5.0] and list(tile_centres(2, 2, gap=1)) == [0.5, 3.5]
    colour = mosaic(torch.rand(3, 4, 3, 5, 5), gap=2)
    assert colour.shape == (3 * 7 - 2, 4 * 7 - 2, 3) and np.all(colour[5:7] == 1.0)


def test_each_tweak_row_moves_only_its_own_dimension_of_the_winning_capsule(mnist5k):
    torch.manual_seed(0)
    model = build_model(recipe("capsnet-paper")).eval()
    deltas = tweak_deltas()
    predicted, poses, images = capsule_tweaks(model, mnist5k.test.images[3], deltas)
    assert poses.shape == (16, 11, 10, 16) and images.shape == (16, 11, 1, 28, 28)
    original = model(mnist5k.test.images[3:4]).poses[0].detach()
    for row in range(16):
        change = poses[row] - original  # (11, 10, 16)
        assert torch.allclose(change[:, predicted, row], torch.as_tensor(deltas, dtype=torch.float32), atol=1e-6)
        change[:, predicted, row] = 0
        assert change.abs().max() < 1e-6
    assert torch.allclose(images[:, 5], images[0, 5])  # the zero offset decodes the untouched capsule everywhere


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64)


def test_figures_are_written_non_blank_and_identical_for_the_same_seed(trained_runs, mnist5k, tmp_path):
    model = load_checkpoint(trained_runs["capsnet-tiny"]).model
    paths = []
    for name in ("a.png", "b.png"):
        indices = choose_examples(len(mnist5k.test), 6, seed=7)
        paths.append(save_figure(reconstruction_figure(model, mnist5k.test, indices, mnist5k.classes), tmp_path / name))
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert _pixels(paths[0]).std() > 10
    predicted, _, images = capsule_tweaks(model, mnist5k.test.images[0], tweak_deltas())
    tweak_path = save_figure(tweak_figure(predicted, images, tweak_deltas(), mnist5k.classes), tmp_path / "t.png")
    assert _pixels(tweak_path).std() > 10
    assert not np.array_equal(choose_examples(1000, 6, seed=7), choose_examples(1000, 6, seed=8))


def test_models_without_a_decoder_are_refused(mnist5k):
    with pytest.raises(DetectionError, match="no class-conditional decoder"):
        capsule_tweaks(build_model(recipe("cnn-tiny")), mnist5k.test.images[0], tweak_deltas())


@pytest.mark.parametrize("sizes", [pd.DataFrame(), pd.DataFrame({"series": [], "l2": []})])
def test_the_cw_size_figure_says_when_no_model_was_fooled(sizes):
    """A report whose Carlini–Wagner cells found no adversarial (concat of empty frames has no columns) still draws."""
    figure = perturbation_sizes(sizes)
    texts = [text.get_text() for axis in figure.axes for text in axis.texts]
    assert texts == ["no adversarial found"] * 2
