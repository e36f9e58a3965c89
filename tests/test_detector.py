"""The reconstruction-error detector: threshold, AUC and undetected success against hand-checked values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from capsrobust.detection.detector import (
    DetectionError,
    Distance,
    calibrate,
    detection_outcome,
    reconstruction_distances,
    roc_auc,
)
from capsrobust.models.recipes import build_model
from tests.conftest import recipe


def test_threshold_lands_at_the_requested_percentile():
    scores = np.arange(1, 101, dtype=float)  # 1..100
    threshold = calibrate(scores, percentile=95)
    assert threshold.value == pytest.approx(95.05)
    assert threshold.flag(scores).mean() == pytest.approx(0.05)
    assert calibrate(scores, 50).flag(scores).sum() == 50


def test_auc_is_one_when_separated_and_half_when_identical():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 1, 200)
    assert roc_auc(clean, clean + 2.0) == 1.0
    assert roc_auc(clean, clean) == pytest.approx(0.5)
    assert roc_auc(clean + 2.0, clean) == 0.0


def test_undetected_success_rate_by_hand():
    threshold = calibrate(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), percentile=80)  # value 4.2
    adversarial = np.array([1.0, 5.0, 6.0, 3.0])
    success = np.array([True, True, False, True])
    outcome = detection_outcome(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), adversarial, success, threshold)
    # flagged: [no, yes, yes, no]; misclassified and not flagged: inputs 0 and 3 → 2 of 4.
    assert outcome.undetected_success_rate == pytest.approx(0.5)
    assert outcome.true_positive_rate == pytest.approx(1 / 3)
    assert outcome.attack_success_rate == pytest.approx(0.75)
    assert outcome.false_positive_rate == pytest.approx(0.2)


def test_bad_inputs_are_refused():
    with pytest.raises(DetectionError, match="percentile"):
        calibrate(np.ones(3), 100)
    with pytest.raises(DetectionError, match="no clean scores"):
        calibrate(np.empty(0))
    with pytest.raises(DetectionError, match="no class-conditional decoder"):
        reconstruction_distances(build_model(recipe("cnn-tiny")), torch.rand(2, 1, 28, 28))


def test_distances_are_the_norm_of_input_minus_reconstruction():
    torch.manual_seed(0)
    model = build_model(recipe("capsnet-tiny")).eval()
    images = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        reconstruction = model(images).reconstruction
    expected = (reconstruction - images).flatten(1).norm(dim=1).double().numpy()
    assert np.allclose(reconstruction_distances(model, images, batch_size=2), expected)
    l1 = reconstruction_distances(model, images, Distance.L1)
    assert np.allclose(l1, (reconstruction - images).flatten(1).abs().sum(1).double().numpy())
