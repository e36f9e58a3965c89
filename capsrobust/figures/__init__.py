"""Figures: what the capsules encode (reconstructions, tweaks), robustness curves, the detector's pictures and
the adversarial gallery.

Each function draws from tables or a model and returns a matplotlib figure; ``save_figure`` writes one atomically.
"""

from capsrobust.figures.capsules import reconstruction_figure, save_figure, tweak_figure
from capsrobust.figures.detection import write_detection_figures
from capsrobust.figures.gallery import write_gallery
from capsrobust.figures.results import perturbation_sizes, robustness_curves

__all__ = [
    "perturbation_sizes", "reconstruction_figure", "robustness_curves", "save_figure", "tweak_figure",
    "write_detection_figures", "write_gallery",
]
