"""The reconstruction-error detector and its metrics (Frosst, Sabour & Hinton 2018, *DARCCC*; Qin et al. 2020).

A model that can reconstruct its input from the representation of one class (CapsNet from its winning capsule,
CNN+R from its winning class vector) scores each input by the distance between the input and that reconstruction.
Adversarial inputs that fool the classifier into a wrong class often reconstruct badly: the decoder draws the
wrong digit. The detector flags scores above a threshold set as a percentile (95th by default) of the scores on
clean *validation* images, so the false-positive rate is fixed on data the evaluation never sees.

Metrics follow the usual detection conventions: ROC AUC of adversarial-vs-clean scores, the true-positive rate at
the threshold (with the false-positive rate that threshold actually gives on clean test images), the detection
rate among successful adversarial examples, and the **undetected attack success rate** — the fraction of attacked
inputs that are misclassified *and* not flagged, which is what an attacker facing model + detector achieves.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from capsrobust.errors import CapsRobustError
from capsrobust.models import CapsRobustModel


class DetectionError(CapsRobustError):
    """The detector cannot be used as asked: a model without a decoder, empty data, a bad percentile, or a sweep
    it cannot score (no saved adversarials, no model with a decoder, changed inputs)."""


class Distance(str, Enum):
    """How far a reconstruction lies from its input."""

    L2 = "l2"  # Euclidean distance, as in DARCCC
    L1 = "l1"


def require_reconstruction(model: CapsRobustModel, name: str = "this model") -> None:
    if not model.can_reconstruct:
        raise DetectionError(
            f"{name} has no class-conditional decoder (needed for reconstructions, tweaks and the detector); "
            f"use a capsnet or cnn-recon recipe"
        )


@torch.no_grad()
def reconstruction_distances(
    model: CapsRobustModel,
    images: torch.Tensor,
    distance: Distance = Distance.L2,
    device: torch.device | str = "cpu",
    batch_size: int = 500,
) -> np.ndarray:
    """Distance between each image and its reconstruction from the predicted class: (N,) float64."""
    require_reconstruction(model)
    model.eval()
    scores = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device)
        output = model(batch)
        assert output.reconstruction is not None
        difference = (output.reconstruction - batch).flatten(1)  # (B, 784)
        if distance is Distance.L2:
            scores.append(difference.norm(dim=1).cpu())
        else:
            scores.append(difference.abs().sum(dim=1).cpu())
    return torch.cat(scores).double().numpy() if scores else np.empty(0)


@dataclass(frozen=True)
class Threshold:
    """Flag inputs whose score exceeds ``value``, the ``percentile`` of clean validation scores."""

    value: float
    percentile: float
    distance: Distance
    n_calibration: int

    def flag(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.value


def calibrate(clean_scores: np.ndarray, percentile: float = 95.0, distance: Distance = Distance.L2) -> Threshold:
    """The threshold that flags ``100 − percentile`` % of the clean calibration scores."""
    scores = np.asarray(clean_scores, dtype=np.float64)
    if scores.size == 0:
        raise DetectionError("no clean scores to calibrate the threshold on")
    if not 0.0 < percentile < 100.0:
        raise DetectionError(f"percentile must lie in (0, 100), got {percentile}")
    return Threshold(float(np.percentile(scores, percentile)), percentile, distance, int(scores.size))


def roc_auc(clean_scores: np.ndarray, adversarial_scores: np.ndarray) -> float:
    """Probability that an adversarial input scores higher than a clean one (ties count half)."""
    clean, adversarial = np.asarray(clean_scores), np.asarray(adversarial_scores)
    if clean.size == 0 or adversarial.size == 0:
        return float("nan")
    labels = np.r_[np.zeros(clean.size), np.ones(adversarial.size)]
    return float(roc_auc_score(labels, np.r_[clean, adversarial]))


@dataclass(frozen=True)
class DetectionOutcome:
    """Detector metrics for one set of attacked inputs and their clean counterparts."""

    n: int
    auc: float  # adversarial (successful ones) vs clean
    auc_all: float  # every attacked input vs clean
    threshold: float
    false_positive_rate: float  # on the clean test inputs
    true_positive_rate: float  # among successful adversarial examples
    attack_success_rate: float  # misclassified after the attack, among all attacked inputs
    undetected_success_rate: float  # misclassified and not flagged, among all attacked inputs


def detection_outcome(
    clean_scores: np.ndarray,
    adversarial_scores: np.ndarray,
    adversarial_success: np.ndarray,
    threshold: Threshold,
) -> DetectionOutcome:
    """Score the detector on attacked inputs.

    ``adversarial_success[i]`` says whether attacked input i is misclassified. The clean and adversarial arrays
    describe the same test inputs, clean and attacked.
    """
    clean = np.asarray(clean_scores, dtype=np.float64)
    adversarial = np.asarray(adversarial_scores, dtype=np.float64)
    success = np.asarray(adversarial_success, dtype=bool)
    if adversarial.shape != success.shape:
        raise DetectionError(f"{adversarial.size} adversarial scores but {success.size} success flags")
    flagged = threshold.flag(adversarial)
    n = int(adversarial.size)
    return DetectionOutcome(
        n=n,
        auc=roc_auc(clean, adversarial[success]),
        auc_all=roc_auc(clean, adversarial),
        threshold=threshold.value,
        false_positive_rate=float(threshold.flag(clean).mean()) if clean.size else float("nan"),
        true_positive_rate=float(flagged[success].mean()) if success.any() else float("nan"),
        attack_success_rate=float(success.mean()) if n else float("nan"),
        undetected_success_rate=float((success & ~flagged).mean()) if n else float("nan"),
    )
