"""Grids of panels laid out by fixed sizes in inches instead of ``tight_layout``, and the blank panel they share.

Why: ``tight_layout`` measures every tick label and title of every panel to find margins the sizes already fix.
That costs about 0.6 s on a ten-column reconstruction figure and seconds on a benchmark's grid of a hundred panels,
and the figures are drawn by every benchmark, report and many tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


@dataclass(frozen=True)
class Margins:
    """Room outside the panels, in inches: for row labels (left), a title (top) and tick labels (bottom)."""

    left: float
    right: float
    top: float
    bottom: float


def fixed_grid(
    row_heights: Sequence[float], n_columns: int, panel_width: float, gap_width: float, gap_height: float,
    margins: Margins,
) -> tuple[Figure, np.ndarray]:
    """A figure sized to hold ``len(row_heights)`` × ``n_columns`` panels and its axes (always 2-d).

    Every column is ``panel_width`` wide; row r is ``row_heights[r]`` high; gaps and margins are as given.
    """
    n_rows = len(row_heights)
    width = margins.left + n_columns * panel_width + (n_columns - 1) * gap_width + margins.right
    height = margins.top + sum(row_heights) + (n_rows - 1) * gap_height + margins.bottom
    figure = Figure(figsize=(width, height))
    # matplotlib's gaps are fractions of the mean panel width and height
    figure.subplots_adjust(left=margins.left / width, right=1 - margins.right / width, top=1 - margins.top / height,
                           bottom=margins.bottom / height, wspace=gap_width / panel_width,
                           hspace=gap_height / (sum(row_heights) / n_rows))
    axes = figure.subplots(n_rows, n_columns, squeeze=False, gridspec_kw={"height_ratios": list(row_heights)})
    return figure, axes


def blank_panel(axis: Axes, text: str) -> None:
    """A panel that says why it is empty (an attack not run, no adversarial found) instead of empty axes."""
    axis.text(0.5, 0.5, text, ha="center", va="center", fontsize=7, color="0.4", transform=axis.transAxes)
    axis.set_xticks([])
    axis.set_yticks([])
