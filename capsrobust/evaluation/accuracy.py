"""Clean accuracy, per-class accuracy and the confusion matrix of a model on one split.

Evaluation runs in fp32 unless a caller names another precision (``capsrobust.precision``): accuracies that
reports compare with attacked accuracies should come from the same arithmetic the attacks use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from capsrobust.data import Split
from capsrobust.models.base import CapsRobustModel, refuse_other_data
from capsrobust.models.inference import predict, require_answers
from capsrobust.precision import Precision, resolve_precision


@dataclass(frozen=True)
class Evaluation:
    """How a model did on one split; ``confusion[i, j]`` counts examples of class i predicted as j."""

    accuracy: float
    n: int
    confusion: np.ndarray  # (C, C) int64
    classes: tuple[str, ...]
    precision: str = Precision.FP32.value  # the arithmetic the predictions were made in

    @property
    def per_class(self) -> pd.DataFrame:
        totals = self.confusion.sum(axis=1)
        correct = np.diag(self.confusion)
        return pd.DataFrame(
            {
                "class": list(self.classes),
                "n": totals,
                "correct": correct,
                "accuracy": np.divide(correct, totals, out=np.full(len(totals), np.nan), where=totals > 0),
            }
        )

    def confusion_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.confusion, index=list(self.classes), columns=list(self.classes))

    def to_dict(self) -> dict[str, Any]:
        per_class = self.per_class
        return {
            "accuracy": self.accuracy,
            "n": self.n,
            "per_class_accuracy": {
                row["class"]: (None if np.isnan(row["accuracy"]) else float(row["accuracy"]))
                for _, row in per_class.iterrows()
            },
            "confusion_matrix": self.confusion.tolist(),
            "classes": list(self.classes),
            "precision": self.precision,
        }


def evaluate(
    model: CapsRobustModel,
    split: Split,
    classes: tuple[str, ...],
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    precision: Precision | str = Precision.FP32,
) -> Evaluation:
    """Accuracy and confusion matrix of ``model`` on ``split`` (fp32 unless ``precision`` says otherwise)."""
    resolved = resolve_precision(precision, torch.device(device), training=False)
    refuse_other_data(model, tuple(split.images.shape[1:]), len(classes), "the model")
    predictions = require_answers(predict(model, split.images, device, batch_size, resolved), "the model",
                                  "images").numpy()
    labels = split.labels.numpy()
    n_classes = len(classes)
    confusion = np.bincount(labels * n_classes + predictions, minlength=n_classes**2).reshape(
        n_classes, n_classes
    )
    n = int(labels.shape[0])
    accuracy = float((predictions == labels).mean()) if n else float("nan")
    return Evaluation(
        accuracy=accuracy, n=n, confusion=confusion.astype(np.int64), classes=classes, precision=resolved.value
    )
