"""The adversarial gallery: what an attack did to chosen images, what the model saw, what the detector scored.

It needs the models, the test images and the saved adversarials of a sweep: for each chosen cell it shows examples
as (clean, adversarial, scaled perturbation, reconstruction of the adversarial, class scores), with predictions and
detector scores. A model without a decoder of its own shows the reconstruction by the sweep's decoder CNN (CNN+R)
when the sweep has one (what that detector would see of the adversarial), and a blank panel with a note otherwise.
Deterministic: the same sweep and seed give the same PNG bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from capsrobust.data import Dataset, load_dataset
from capsrobust.detection.detector import Distance, reconstruction_distances
from capsrobust.detection.pipeline import DETECTION_DIR, DetectionError, load_detection, read_sweep
from capsrobust.evaluation.store import load_adversarials, load_sweep_models, load_test_split
from capsrobust.figures.capsules import choose_examples, save_figure
from capsrobust.figures.images import show_image, signed_map
from capsrobust.figures.layout import blank_panel
from capsrobust.models import ModelOutput
from capsrobust.models.base import CAPSULE_CAPABILITIES, Capability, capabilities_of
from capsrobust.models.checkpoints import LoadedCheckpoint
from capsrobust.runtime import resolve_device


def _is_decoder_cnn(model: nn.Module) -> bool:
    """Whether ``model`` is a CNN+R in what it declares: a class-conditional decoder, and neither capsule lengths
    nor votes (an EM capsule network with a decoder has no lengths, but it is a capsule network).

    The gallery shows such a model's reconstructions beside those of models that have no decoder of their own.
    """
    capabilities = capabilities_of(model)
    return Capability.CLASS_DECODER in capabilities and not capabilities & CAPSULE_CAPABILITIES


@dataclass(frozen=True)
class GalleryExample:
    """One attacked test image of a gallery row, with everything its five panels show."""

    index: int
    label: int
    clean: np.ndarray  # (C, H, W)
    adversarial: np.ndarray  # (C, H, W)
    clean_pred: int
    adv_pred: int
    clean_scores: np.ndarray  # (C,) capsule lengths or softmax
    adv_scores: np.ndarray  # (C,)
    reconstruction: np.ndarray | None  # (C, H, W), None when no decoder is at hand
    distance: float | None  # detector score of the adversarial
    flagged: bool | None  # None when no threshold is known


@dataclass(frozen=True)
class GalleryRow:
    """One cell of the sweep: its examples and where the reconstruction column comes from."""

    model: str
    label: str
    backend: str
    eps: float
    score_name: str  # "capsule lengths" or "softmax"
    reconstruction_source: str | None  # the model whose decoder drew the reconstructions; None: no decoder
    examples: tuple[GalleryExample, ...]


def gallery_rows(
    sweep_dir: str | Path,
    *,
    n_per_row: int = 3,
    seed: int = 0,
    labels: Sequence[str] | None = None,
    eps: float | None = None,
    backend: str | None = None,
    device: str = "auto",
    data_dir: str | Path | None = None,
    dataset: Dataset | None = None,
    models: Sequence[str] | None = None,
) -> list[GalleryRow]:
    """The gallery's rows: per model and attack label, the cell at ``eps`` (default: the label's largest).

    ``backend`` defaults to each label's first. Examples are drawn with ``seed`` among the cell's successful
    adversarials (then among its other attacked images when there are too few). Detector thresholds come from the
    sweep's detection tables (``<sweep_dir>/detection``) when present; scores are recomputed with their distance.
    ``dataset``: the sweep's data set when already loaded (as in ``run_detection``). ``models`` limits the rows to
    those model labels (one seed of a multi-seed sweep, say).
    """
    if n_per_row < 1:
        raise DetectionError(f"--n-per-row must be ≥ 1, got {n_per_row}")
    record = read_sweep(sweep_dir)
    torch_device = resolve_device(device)
    models = load_sweep_models(record, torch_device)
    _, test = load_test_split(record, data_dir, dataset)
    thresholds, distance = _known_thresholds(record.path / DETECTION_DIR)
    recon_model = next((label for label, loaded in models.items() if _is_decoder_cnn(loaded.model)), None)
    cells = record.results[(record.results["role"] == "attack") & (record.results["eps"] > 0)]
    if labels:
        unknown = sorted(set(labels) - set(cells["label"]))
        if unknown:
            raise DetectionError(f"no attack labelled {unknown[0]!r} in {record.path}; "
                                 f"choose from: {', '.join(dict.fromkeys(cells['label']))}")
        cells = cells[cells["label"].isin(labels)]
    if backend is not None:
        cells = cells[cells["backend"] == backend]
    if models is not None:
        cells = cells[cells["model"].isin(models)]
    rows: list[GalleryRow] = []
    for (model_label, _), group in cells.groupby(["model", "label"], sort=False):
        group = group[group["backend"] == group["backend"].iloc[0]]
        chosen = group[np.isclose(group["eps"], eps)] if eps is not None else group[group["eps"] == group["eps"].max()]
        if chosen.empty:
            continue
        cell = chosen.iloc[0]
        loaded = models[str(model_label)]
        source = str(model_label) if loaded.model.can_reconstruct else recon_model
        rows.append(_gallery_row(
            record.examples, cell, loaded, models.get(source) if source else None, source,
            adversarials=load_adversarials(record, cell["cell_id"]), test_images=test.images, n_per_row=n_per_row,
            seed=seed, threshold=thresholds.get(source or ""), distance=distance, device=torch_device,
        ))
    if not rows:
        raise DetectionError(f"no cell of {record.path} matches the chosen attacks, eps and backend")
    return rows


def write_gallery(
    sweep_dir: str | Path,
    out_file: str | Path,
    *,
    n_per_row: int = 3,
    seed: int = 0,
    labels: Sequence[str] | None = None,
    eps: float | None = None,
    backend: str | None = None,
    device: str = "auto",
    data_dir: str | Path | None = None,
    dataset: Dataset | None = None,
    models: Sequence[str] | None = None,
) -> Path:
    """``gallery_rows`` drawn by ``gallery_figure`` into the PNG ``out_file``; the same seed gives the same bytes."""
    if dataset is None:
        dataset = load_dataset(read_sweep(sweep_dir).data_source, data_dir)
    rows = gallery_rows(sweep_dir, n_per_row=n_per_row, seed=seed, labels=labels, eps=eps, backend=backend,
                        device=device, data_dir=data_dir, dataset=dataset, models=models)
    return save_figure(gallery_figure(rows, dataset.classes), out_file)


def _known_thresholds(detection_dir: Path) -> tuple[dict[str, float], Distance]:
    """Thresholds by model from a detection directory, and their distance; none (and L2) when absent."""
    try:
        tables = load_detection(detection_dir)
    except DetectionError:
        return {}, Distance.L2
    frame = tables.thresholds
    distance = Distance(frame["distance"].iloc[0]) if len(frame) else Distance.L2
    return dict(zip(frame["model"], frame["threshold"].astype(float), strict=True)), distance


@torch.no_grad()
def _gallery_row(
    examples: pd.DataFrame, cell: pd.Series, loaded: LoadedCheckpoint, decoder: LoadedCheckpoint | None,
    source: str | None, *, adversarials: torch.Tensor, test_images: torch.Tensor, n_per_row: int, seed: int,
    threshold: float | None, distance: Distance, device: torch.device,
) -> GalleryRow:
    outcomes = examples[examples["cell_id"] == cell["cell_id"]].sort_values("index")
    attacked = outcomes[outcomes["clean_pred"] == outcomes["label"]]
    successful = attacked[attacked["success"].astype(bool)]["index"].to_numpy()
    others = attacked[~attacked["success"].astype(bool)]["index"].to_numpy()
    picked = successful[choose_examples(len(successful), n_per_row, seed)]
    if len(picked) < n_per_row:
        picked = np.r_[picked, others[choose_examples(len(others), n_per_row - len(picked), seed)]]
    index = torch.as_tensor(np.sort(picked), dtype=torch.long)
    clean, adversarial = test_images[index], adversarials[index]
    model = loaded.model.eval()
    clean_out, adv_out = model(clean.to(device)), model(adversarial.to(device))
    score_name = "capsule lengths" if adv_out.lengths is not None else "softmax"

    def class_scores(output: ModelOutput) -> np.ndarray:
        values = output.lengths if output.lengths is not None else output.logits.softmax(dim=1)  # (B, C)
        return values.cpu().numpy()

    reconstructions: np.ndarray | None = None
    scores: np.ndarray | None = None
    if decoder is not None:
        decoded = decoder.model.eval()(adversarial.to(device))
        assert decoded.reconstruction is not None
        reconstructions = decoded.reconstruction.cpu().numpy()  # (M, C, H, W)
        scores = reconstruction_distances(decoder.model, adversarial, distance, device)
    labels = dict(zip(outcomes["index"], outcomes["label"], strict=True))
    gallery = tuple(
        GalleryExample(
            index=int(i), label=int(labels[int(i)]), clean=clean[k].numpy(),
            adversarial=adversarial[k].numpy(),
            clean_pred=int(clean_out.predictions[k]), adv_pred=int(adv_out.predictions[k]),
            clean_scores=class_scores(clean_out)[k], adv_scores=class_scores(adv_out)[k],
            reconstruction=None if reconstructions is None else reconstructions[k],
            distance=None if scores is None else float(scores[k]),
            flagged=None if scores is None or threshold is None else bool(scores[k] > threshold),
        )
        for k, i in enumerate(index.tolist())
    )
    return GalleryRow(model=str(cell["model"]), label=str(cell["label"]), backend=str(cell["backend"]),
                      eps=float(cell["eps"]), score_name=score_name, reconstruction_source=source, examples=gallery)


PANELS = ("clean", "adversarial", "perturbation", "reconstruction", "scores")


def gallery_figure(rows: Sequence[GalleryRow], classes: Sequence[str]) -> Figure:
    """One figure row per cell; per example five panels: clean, adversarial, scaled perturbation, reconstruction
    of the adversarial (with its detector score; "flagged" when above the threshold) and class scores (bars: the
    adversarial's, red its prediction; dots: the clean image's)."""
    n_per_row = max(len(row.examples) for row in rows)
    n_columns = len(PANELS) * n_per_row
    figure = Figure(figsize=(1.05 * n_columns + 0.9, 1.55 * len(rows) + 0.4))
    axes = figure.subplots(len(rows), n_columns, squeeze=False)
    for r, row in enumerate(rows):
        for k in range(n_per_row):
            panel = axes[r, len(PANELS) * k : len(PANELS) * (k + 1)]
            if k >= len(row.examples):
                for axis in panel:
                    axis.axis("off")
                continue
            _draw_example(panel, row, row.examples[k], classes)
        axes[r, 0].text(-0.25, 0.5, f"{row.model}\n{row.label} {row.eps:g}\n({row.backend})", fontsize=6,
                        transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right")
    # Fixed margins instead of tight_layout, which costs seconds on a grid of a hundred panels.
    figure.subplots_adjust(left=0.8 / figure.get_figwidth(), right=0.99, bottom=0.1 / figure.get_figheight() + 0.02,
                           top=1 - 0.35 / figure.get_figheight(), wspace=0.25, hspace=0.6)
    return figure


def _draw_example(panel: Sequence[Axes], row: GalleryRow, example: GalleryExample, classes: Sequence[str]) -> None:
    clean_axis, adv_axis, delta_axis, recon_axis, bar_axis = panel
    show_image(clean_axis, example.clean)
    clean_axis.set_title(f"#{example.index} {classes[example.label]}→{classes[example.clean_pred]}", fontsize=6)
    show_image(adv_axis, example.adversarial)
    broken = example.adv_pred != example.label
    answer = classes[example.adv_pred] if example.adv_pred >= 0 else "no answer (NaN)"
    adv_axis.set_title(f"adv → {answer}", fontsize=6, color="red" if broken else "black")
    delta = signed_map(example.adversarial - example.clean)
    scale = float(np.abs(delta).max())
    delta_axis.imshow(delta / scale if scale > 0 else delta, cmap="seismic", vmin=-1, vmax=1)
    delta_axis.set_title(f"δ ×{1 / scale:.1f}" if scale > 0 else "δ = 0", fontsize=6)
    if example.reconstruction is None:
        blank_panel(recon_axis, "no decoder\n(add a cnn-recon\nrun to the sweep)")
    else:
        show_image(recon_axis, example.reconstruction)
        flag = "" if example.flagged is None else (" flagged" if example.flagged else " passed")
        by = "" if row.reconstruction_source == row.model else f"\nby {row.reconstruction_source}"
        recon_axis.set_title(f"d {example.distance:.2f}{flag}{by}", fontsize=5.5,
                             color="tab:green" if example.flagged else "black")
    for axis in (clean_axis, adv_axis, delta_axis, recon_axis):
        axis.set_xticks([])
        axis.set_yticks([])
    positions = np.arange(len(example.adv_scores))
    bars = bar_axis.bar(positions, example.adv_scores, color="0.65")
    bars[example.adv_pred].set_color("red" if broken else "tab:blue")
    bar_axis.plot(positions, example.clean_scores, "k.", markersize=2.5)
    bar_axis.set_ylim(0, 1)
    bar_axis.set_xticks(positions)
    bar_axis.set_xticklabels([str(i) for i in positions], fontsize=4)
    bar_axis.tick_params(axis="y", labelsize=4)
    bar_axis.set_title(row.score_name, fontsize=5)
