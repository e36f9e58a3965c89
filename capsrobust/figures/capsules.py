"""Figures from models and result tables: reconstructions, capsule tweaks (and, with the sweeps, galleries, curves).

Figures are built with matplotlib's object API (``Figure``), not pyplot: no global figure state, no display
backend to select. Every figure is a PNG written atomically and byte-for-byte the same for the same inputs and
seed: examples are chosen by a seeded generator and PNG metadata that would carry a version is left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from capsrobust.data import Split
from capsrobust.detection.detector import require_reconstruction
from capsrobust.figures.images import mosaic, show_image, tile_centres
from capsrobust.figures.layout import Margins, fixed_grid
from capsrobust.models import CapsRobustModel
from capsrobust.runtime import atomic_write

PNG_METADATA = {"Software": None}
DPI = 110
# inches: the row names (left), each column's two-line title (top), the bars' class ticks (bottom)
RECONSTRUCTION_MARGINS = Margins(left=0.55, right=0.1, top=0.45, bottom=0.25)


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG atomically and close it."""
    target = Path(path)
    atomic_write(target, lambda temporary: figure.savefig(temporary, format="png", dpi=DPI, metadata=PNG_METADATA))
    return target


def choose_examples(n_available: int, n: int, seed: int) -> np.ndarray:
    """``n`` distinct indices drawn with ``seed``, sorted (the same on every machine)."""
    if n > n_available:
        n = n_available
    return np.sort(np.random.default_rng(seed).choice(n_available, size=n, replace=False))


@torch.no_grad()
def reconstruction_figure(
    model: CapsRobustModel, split: Split, indices: np.ndarray, classes: tuple[str, ...], device: str = "cpu"
) -> Figure:
    """Inputs (top) over their reconstructions from the predicted class (middle) and the class scores (bottom)."""
    require_reconstruction(model)
    model.eval()
    images = split.images[torch.as_tensor(indices)].to(device)
    output = model(images)
    scores = output.lengths if output.lengths is not None else output.logits.softmax(dim=1)
    score_name = "capsule lengths" if output.lengths is not None else "softmax"
    n = len(indices)
    figure, axes = fixed_grid([1.0, 1.0, 0.8], n, 1.0, 0.3, 0.25, RECONSTRUCTION_MARGINS)
    for column, index in enumerate(indices):
        label, predicted = int(split.labels[index]), int(output.predictions[column])
        show_image(axes[0, column], images[column])
        colour = "black" if label == predicted else "red"
        axes[0, column].set_title(f"#{index}\n{classes[label]}→{classes[predicted]}", fontsize=8, color=colour)
        show_image(axes[1, column], output.reconstruction[column])
        bars = axes[2, column].bar(range(len(classes)), scores[column].cpu().numpy(), color="0.6")
        bars[predicted].set_color("tab:blue")
        axes[2, column].set_ylim(0, 1)
        axes[2, column].set_xticks(range(len(classes)))
        axes[2, column].set_xticklabels([str(i) for i in range(len(classes))], fontsize=5)
        axes[2, column].tick_params(axis="y", labelsize=5)
        for row in (0, 1):
            axes[row, column].axis("off")
    axes[0, 0].text(-0.3, 0.5, "input", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[1, 0].text(-0.3, 0.5, "reconstruction", transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right")
    axes[2, 0].set_ylabel(score_name, fontsize=7)
    return figure


def tweak_deltas(radius: float = 0.25, step: float = 0.05) -> np.ndarray:
    """Offsets from −radius to +radius inclusive in ``step``s: 11 values for the defaults."""
    count = round(2 * radius / step) + 1
    return np.linspace(-radius, radius, count)


@torch.no_grad()
def capsule_tweaks(
    model: CapsRobustModel, image: torch.Tensor, deltas: np.ndarray, device: str = "cpu"
) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Move each dimension of the winning capsule by each delta and decode (the original ``cap_tweak`` mode).

    Returns the predicted class, the tweaked poses (D, K, C, D) and their reconstructions (D, K, C_in, H, W), where
    D is the pose dimension (16) and K the number of deltas (11): row r changes dimension r only.
    """
    require_reconstruction(model)
    model.eval()
    output = model(image.unsqueeze(0).to(device))
    assert output.poses is not None
    predicted = int(output.predictions[0])
    base = output.poses[0]  # (C, D)
    n_dims, n_deltas = base.shape[1], len(deltas)
    offsets = torch.as_tensor(deltas, dtype=base.dtype, device=base.device)
    poses = base.expand(n_dims, n_deltas, *base.shape).clone()  # (D, K, C, D)
    rows = torch.arange(n_dims, device=base.device)
    poses[rows, :, predicted, rows] += offsets  # row r, column k: dimension r moved by deltas[k]
    classes = torch.full((n_dims * n_deltas,), predicted, device=base.device)
    decoded = model.reconstruct(poses.view(n_dims * n_deltas, *base.shape), classes)  # (D·K, 1, 28, 28)
    return predicted, poses.cpu(), decoded.view(n_dims, n_deltas, *decoded.shape[-3:]).cpu()


def tweak_figure(
    predicted: int, reconstructions: torch.Tensor, deltas: np.ndarray, classes: tuple[str, ...]
) -> Figure:
    """A (dimensions × deltas) grid of decoded tweaks; one row per capsule dimension."""
    n_dims, n_deltas = reconstructions.shape[:2]
    figure = Figure(figsize=(0.75 * n_deltas + 0.6, 0.75 * n_dims + 0.6))
    axis = figure.subplots()
    gap = 1
    picture = mosaic(reconstructions, gap)
    axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
    height, width = reconstructions.shape[-2:]
    axis.set_xticks(tile_centres(n_deltas, width, gap), [f"{delta:+.2f}" for delta in deltas], fontsize=7)
    axis.set_yticks(tile_centres(n_dims, height, gap), [f"dim {row}" for row in range(n_dims)], fontsize=7)
    axis.tick_params(length=0, top=True, labeltop=True, bottom=False, labelbottom=False)
    for side in axis.spines.values():
        side.set_visible(False)
    figure.suptitle(f"winning capsule: class {classes[predicted]}; each row moves one of its {n_dims} dimensions")
    figure.tight_layout()
    return figure
