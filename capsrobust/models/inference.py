"""Predictions of a model batch by batch: the one forward pass that training, evaluation and attacks share.

It lives with the models (not with evaluation) because the attack backends need it too, and attacks sit below
evaluation in the pipeline.
"""

from __future__ import annotations

import torch

from capsrobust.models.base import CapsRobustModel
from capsrobust.precision import Precision, precision_scope, resolve_precision


@torch.no_grad()
def predict(
    model: CapsRobustModel,
    images: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    precision: Precision | str = Precision.FP32,
) -> torch.Tensor:
    """Predicted classes (N,) on the CPU, computed in eval mode batch by batch in ``precision``.

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
            predictions.append(scores.argmax(dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)
