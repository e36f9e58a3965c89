"""Detection: flag adversarial inputs by how badly the winning class reconstructs them.

``detector`` holds the pure pieces (distances, a threshold calibrated on clean data, ROC AUC); ``pipeline`` runs
them over a finished sweep and writes the detection tables. Figures of the results live in
``capsrobust.figures.detection``.
"""

from capsrobust.detection.detector import (
    DetectionError,
    Distance,
    Threshold,
    calibrate,
    reconstruction_distances,
    roc_auc,
)
from capsrobust.detection.pipeline import DetectionTables, load_detection, run_detection

__all__ = [
    "DetectionError", "DetectionTables", "Distance", "Threshold", "calibrate", "load_detection",
    "reconstruction_distances", "roc_auc", "run_detection",
]
