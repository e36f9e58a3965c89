"""Figures drawn from result tables alone: robustness curves, Carlini–Wagner L2 distributions, detector ROC curves.

The figures of ``capsrobust.figures.capsules`` need a model; these need only the tidy tables a sweep or a detection run
wrote, so a report can redraw them from disk at any time. Like ``capsrobust.figures.capsules`` they use matplotlib's
object API (``Figure``, never pyplot) and pass ``ax=`` to seaborn, so no global figure state is touched; seaborn's
style is applied only while the axes are created (``axes_style`` as a context manager).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from capsrobust.figures.layout import blank_panel

NORM_TITLES = {"linf": "L∞", "l2": "L2"}
STYLE = "whitegrid"


def palette(names: list[str]) -> dict[str, tuple[float, float, float]]:
    """One colour-blind-safe colour per name, the same name getting the same colour in every figure."""
    colours = sns.color_palette("colorblind", max(len(names), 1))
    return {name: colours[i % len(colours)] for i, name in enumerate(names)}


def robustness_curves(curves: pd.DataFrame) -> Figure:
    """Robust accuracy against eps, one line per model with its 95% band, one panel per norm.

    ``curves`` has columns series (the line's name), norm, eps, robust_accuracy, ci_low, ci_high.
    """
    norms = [norm for norm in NORM_TITLES if norm in set(curves["norm"])] or ["linf"]
    series = list(dict.fromkeys(curves["series"]))
    colours = palette(series)
    with sns.axes_style(STYLE):
        figure = Figure(figsize=(5.2 * len(norms), 4.0))
        axes = figure.subplots(1, len(norms), squeeze=False)[0]
    for axis, norm in zip(axes, norms, strict=True):
        rows = curves[curves["norm"] == norm].sort_values("eps")
        for name in series:
            line = rows[rows["series"] == name]
            if line.empty:
                continue
            axis.fill_between(line["eps"], line["ci_low"], line["ci_high"], color=colours[name], alpha=0.18,
                              linewidth=0)
        if not rows.empty:
            sns.lineplot(data=rows, x="eps", y="robust_accuracy", hue="series", hue_order=series, palette=colours,
                         marker="o", estimator=None, sort=True, ax=axis)
            axis.legend(title=None, fontsize=8)
        axis.set_title(f"{NORM_TITLES[norm]} threat model", fontsize=10)
        axis.set_xlabel(f"eps ({NORM_TITLES[norm]})")
        axis.set_ylabel("robust accuracy (worst case over attacks)")
        axis.set_ylim(-0.02, 1.02)
    figure.tight_layout()
    return figure


def perturbation_sizes(sizes: pd.DataFrame) -> Figure:
    """Distribution of the L2 size of the Carlini–Wagner adversarials, per model (histogram and ECDF).

    ``sizes`` has columns series and l2, one row per clean-correct image the attack misclassified; it is empty (maybe
    without columns) when the attack fooled no model on any image, and the panels say so.
    """
    series = list(dict.fromkeys(sizes["series"])) if not sizes.empty else []
    colours = palette(series)
    with sns.axes_style(STYLE):
        figure = Figure(figsize=(10.4, 3.8))
        left, right = figure.subplots(1, 2)
    if not sizes.empty:
        sns.histplot(data=sizes, x="l2", hue="series", hue_order=series, palette=colours, element="step",
                     stat="density", common_norm=False, fill=False, ax=left)
        sns.ecdfplot(data=sizes, x="l2", hue="series", hue_order=series, palette=colours, ax=right)
    else:
        for axis in (left, right):
            blank_panel(axis, "no adversarial found")
    for axis in (left, right):
        if axis.get_legend() is not None:
            axis.get_legend().set_title(None)
    left.set_title("L2 of the adversarials found", fontsize=10)
    left.set_xlabel("L2 distance to the clean image")
    right.set_title("cumulative: share of the adversarials found within L2", fontsize=10)
    right.set_xlabel("L2 distance to the clean image")
    right.set_ylabel("proportion")
    figure.tight_layout()
    return figure


def roc_panels(scores: pd.DataFrame, false_positive_rate: dict[str, float] | None = None) -> Figure:
    """ROC curves of the reconstruction-error detector, one panel per model, one curve per attack cell.

    ``scores`` has columns model, curve (the cell's name), kind (``adversarial`` or ``clean``) and score; the
    clean rows of a curve are the same images before the attack. ``false_positive_rate`` marks each model's
    calibrated operating point with a dashed vertical line.
    """
    models = list(dict.fromkeys(scores["model"]))
    count = max(len(models), 1)
    with sns.axes_style(STYLE):
        figure = Figure(figsize=(4.4 * count, 4.2))
        axes = figure.subplots(1, count, squeeze=False)[0]
    for axis, model in zip(axes, models, strict=False):
        rows = scores[scores["model"] == model]
        names = list(dict.fromkeys(rows["curve"]))
        colours = palette(names)
        lines = []
        for name in names:
            curve = rows[rows["curve"] == name]
            truth = (curve["kind"] == "adversarial").to_numpy()
            if truth.all() or not truth.any():
                continue
            fpr, tpr, _ = roc_curve(truth, curve["score"].to_numpy())
            lines.append(pd.DataFrame({"curve": name, "fpr": fpr, "tpr": tpr}))
        if lines:
            sns.lineplot(data=pd.concat(lines, ignore_index=True), x="fpr", y="tpr", hue="curve", hue_order=names,
                         palette=colours, estimator=None, sort=False, ax=axis)
            axis.legend(title=None, fontsize=7, loc="lower right")
        axis.plot([0, 1], [0, 1], color="0.7", linewidth=0.8, linestyle=":")
        if false_positive_rate and model in false_positive_rate and np.isfinite(false_positive_rate[model]):
            axis.axvline(false_positive_rate[model], color="0.4", linewidth=0.8, linestyle="--")
        axis.set_title(str(model), fontsize=10)
        axis.set_xlabel("false-positive rate (clean images flagged)")
        axis.set_ylabel("true-positive rate (successful adversarials flagged)")
        axis.set_xlim(-0.01, 1.01)
        axis.set_ylim(-0.01, 1.01)
    figure.tight_layout()
    return figure
