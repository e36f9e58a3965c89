"""Figures of the reconstruction-error detector drawn from its tables: score histograms and ROC curves.

Both are drawn from the detection tables only (``capsrobust.detection.pipeline.load_detection``), so they can be
rebuilt without a model; the gallery of adversarial examples, which needs the models, is ``figures.gallery``.
Everything uses matplotlib's object API (``Figure``) and is deterministic: the same tables give the same PNG bytes
(``capsrobust.figures.capsules.save_figure``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from capsrobust.detection.pipeline import (
    DetectionError,
    DetectionTables,
    load_detection,
)
from capsrobust.figures.capsules import save_figure
from capsrobust.figures.layout import Margins, blank_panel, fixed_grid

HISTOGRAM_FILE = "detection_histograms.png"
ROC_FILE = "detection_roc.png"
HISTOGRAM_BINS = 30


def _panels(tables: DetectionTables) -> tuple[list[str], list[str], pd.DataFrame]:
    """Models (rows), attack labels (columns) and the cells drawn: eps > 0 of each label's first backend."""
    rows = tables.detection[tables.detection["eps"] > 0]
    models = list(dict.fromkeys(rows["model"]))
    labels = list(dict.fromkeys(rows["label"]))
    first_backend = rows.groupby(["model", "label"], sort=False)["backend"].transform("first")
    return models, labels, rows[rows["backend"] == first_backend]


# Panel and gap sizes in inches (fixed margins: see figures/layout.py).
PANEL_WIDTH, PANEL_HEIGHT = 2.2, 1.7
GAP_WIDTH, GAP_HEIGHT = 0.4, 0.6  # room for y tick labels; for a two-line title over x tick labels
MARGINS = Margins(left=0.55, right=0.1, top=0.75, bottom=0.45)  # y label; edge; suptitle; x label


def _grid(n_rows: int, n_columns: int) -> tuple[Figure, np.ndarray]:
    return fixed_grid([PANEL_HEIGHT] * n_rows, n_columns, PANEL_WIDTH, GAP_WIDTH, GAP_HEIGHT, MARGINS)


def _eps_colours(values: Sequence[float]) -> dict[float, tuple[float, ...]]:
    colours = mpl.colormaps["viridis"](np.linspace(0.0, 0.85, max(len(values), 1)))
    return {eps: tuple(colour) for eps, colour in zip(sorted(values), colours, strict=False)}


def score_histograms(tables: DetectionTables) -> Figure:
    """Per model (row) and attack (column): clean scores against the scores of successful adversarials per eps.

    The dashed line is the model's threshold; mass to its right is flagged. Clean scores are those of the attacked
    (clean-correct) test images, the same for every cell of a model.
    """
    models, labels, cells = _panels(tables)
    if not models:
        raise DetectionError("no cell with eps > 0 in the detection tables; there is nothing to plot")
    figure, axes = _grid(len(models), len(labels))
    examples = tables.examples
    for row, model in enumerate(models):
        mine = examples[examples["model"] == model]
        clean = mine.drop_duplicates("index")["clean_score"].to_numpy()
        values = mine[["clean_score", "adv_score"]].to_numpy()
        bins = np.linspace(values.min(), values.max(), HISTOGRAM_BINS + 1)
        threshold = float(tables.detection.loc[tables.detection["model"] == model, "threshold"].iloc[0])
        for column, label in enumerate(labels):
            axis = axes[row, column]
            chosen = cells[(cells["model"] == model) & (cells["label"] == label)]
            if chosen.empty:
                blank_panel(axis, f"{label}: not run")
                continue
            axis.hist(clean, bins=bins, density=True, color="0.75", label="clean")
            colours = _eps_colours(chosen["eps"].tolist())
            for _, cell in chosen.iterrows():
                adversarial = mine[(mine["cell_id"] == cell["cell_id"]) & mine["success"]]["adv_score"].to_numpy()
                if adversarial.size:
                    axis.hist(adversarial, bins=bins, density=True, histtype="step", linewidth=1.3,
                              color=colours[cell["eps"]], label=f"eps {cell['eps']:g} ({adversarial.size})")
            axis.axvline(threshold, color="black", linestyle="--", linewidth=0.9)
            axis.set_title(f"{model}\n{label} ({chosen['backend'].iloc[0]})", fontsize=7)
            axis.tick_params(labelsize=6)
            axis.legend(fontsize=5, frameon=False)
            if row == len(models) - 1:
                axis.set_xlabel(f"{chosen['distance'].iloc[0]} reconstruction distance", fontsize=7)
    figure.suptitle("clean vs successful adversarial scores; dashed: threshold", fontsize=9)
    return figure


def roc_curves(tables: DetectionTables) -> Figure:
    """Per model (row) and attack (column): ROC curves of successful adversarials vs their clean images, per eps.

    The dot on each curve is the operating point of the calibrated threshold (its FPR on these clean images and
    its TPR); the legend gives the AUC (``auc`` of the detection table).
    """
    models, labels, cells = _panels(tables)
    if not models:
        raise DetectionError("no cell with eps > 0 in the detection tables; there is nothing to plot")
    figure, axes = _grid(len(models), len(labels))
    examples = tables.examples
    for row, model in enumerate(models):
        mine = examples[examples["model"] == model]
        for column, label in enumerate(labels):
            axis = axes[row, column]
            chosen = cells[(cells["model"] == model) & (cells["label"] == label)]
            if chosen.empty:
                blank_panel(axis, f"{label}: not run")
                continue
            colours = _eps_colours(chosen["eps"].tolist())
            drawn = 0
            for _, cell in chosen.iterrows():
                rows = mine[mine["cell_id"] == cell["cell_id"]]
                successful = rows[rows["success"]]
                if successful.empty:
                    continue
                drawn += 1
                truth = np.r_[np.zeros(len(rows)), np.ones(len(successful))]
                scores = np.r_[rows["clean_score"].to_numpy(), successful["adv_score"].to_numpy()]
                fpr, tpr, _ = roc_curve(truth, scores)
                colour = colours[cell["eps"]]
                axis.plot(fpr, tpr, color=colour, linewidth=1.2, label=f"eps {cell['eps']:g}: AUC {cell['auc']:.2f}")
                axis.plot([cell["false_positive_rate"]], [cell["true_positive_rate"]], "o", color=colour, markersize=3)
            axis.plot([0, 1], [0, 1], color="0.7", linewidth=0.7, linestyle=":")
            axis.set_xlim(0, 1)
            axis.set_ylim(0, 1.02)
            axis.set_title(f"{model}\n{label} ({chosen['backend'].iloc[0]})", fontsize=7)
            axis.tick_params(labelsize=6)
            if drawn:
                axis.legend(fontsize=5, frameon=False, loc="lower right")
            else:
                axis.text(0.5, 0.5, "no successful adversarial", ha="center", fontsize=6, transform=axis.transAxes)
            if row == len(models) - 1:
                axis.set_xlabel("false-positive rate", fontsize=7)
            if column == 0:
                axis.set_ylabel("true-positive rate", fontsize=7)
    figure.suptitle("ROC of the reconstruction-error detector (successful adversarials vs clean)", fontsize=9)
    return figure


def write_detection_figures(out_dir: str | Path) -> list[Path]:
    """``detection_histograms.png`` and ``detection_roc.png`` in a detection directory, from its tables.

    Returns the paths written: none when no cell has eps > 0 (there is no adversarial to draw).
    """
    out = Path(out_dir)
    tables = load_detection(out)
    if not (tables.detection["eps"] > 0).any():
        return []
    histograms = save_figure(score_histograms(tables), out / HISTOGRAM_FILE)
    return [histograms, save_figure(roc_curves(tables), out / ROC_FILE)]


