"""Predictions of a model batch by batch: the one forward pass that training, evaluation and attacks share.

It lives with the models (not with evaluation) because the attack backends need it too, and attacks sit below
evaluation in the pipeline.

A row of scores holding NaN or infinity is no answer at all: its prediction is ``NO_PREDICTION`` (-1), which equals
no label, so an attack that drives a model to NaN counts as a success and never as robust. Clean evaluations refuse
such a model outright (``require_answers``).
"""

from __future__ import annotations

import torch

from capsrobust.errors import ModelOutputError
from capsrobust.models.base import CapsRobustModel
from capsrobust.precision import Precision, precision_scope, resolve_precision

#: The prediction for an image whose scores are not all finite: no class, so never correct.
NO_PREDICTION = -1


@torch.no_grad()
def predict(
    model: CapsRobustModel,
    images: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    precision: Precision | str = Precision.FP32,
) -> torch.Tensor:
    """Predicted classes (N,) on the CPU, computed in eval mode batch by batch in ``precision``.

    An image whose scores are not all finite gets ``NO_PREDICTION``.

    ``precision`` may be ``auto`` (fp32 here, as for any evaluation); one the device cannot run raises
    ``PrecisionError``.
    """
    resolved = resolve_precision(precision, torch.device(device), training=False)
    was_training = model.training
    model.eval()
    try:
        predictions = []
        for start in range(0, images.shape[0], batch_size):
            with precision_scope(resolved, device):
                scores = model(images[start : start + batch_size].to(device)).logits
            answered = torch.isfinite(scores).all(dim=1)  # (B,)
            predictions.append(torch.where(answered, scores.argmax(dim=1), NO_PREDICTION).cpu())
    finally:
        model.train(was_training)
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)


def require_answers(predictions: torch.Tensor, model: str, what: str) -> torch.Tensor:
    """``predictions`` unchanged, or ``ModelOutputError`` when any is ``NO_PREDICTION``.

    On clean images a non-finite score is a broken model (or broken inputs), not a misclassification: counting it
    as one would report a number for a model that computed nothing.
    """
    missing = int((predictions == NO_PREDICTION).sum())
    if missing:
        raise ModelOutputError(f"{model} gives NaN or infinite scores on {missing} of {len(predictions)} {what}; "
                               f"check its weights and inputs (a diverged run must be retrained)")
    return predictions
