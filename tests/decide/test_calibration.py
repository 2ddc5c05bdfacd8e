import numpy as np
import pytest

from noisefind.decide import calibration
from noisefind.decide.calibration import calibrated_margin, class_thresholds


def test_thresholds_are_each_class_s_mean_confidence_in_its_own_rows():
    probabilities = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.4, 0.6]])
    labels = np.array([0, 0, 1, 1])
    assert class_thresholds(probabilities, labels) == pytest.approx([0.7, 0.7])
    # A class nobody carries has threshold 1.
    assert class_thresholds(np.array([[0.5, 0.5, 0.0]] * 2), np.array([0, 1]))[2] == 1.0


def test_the_margin_is_the_best_other_class_against_the_given_one_each_over_its_threshold():
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    thresholds = np.array([0.6, 0.3, 0.5])
    margins = calibrated_margin(probabilities, np.array([0, 1]), np.array([0, 1]), thresholds)
    # Row 0, label 0: log(0.6/0.6) = 0 against class 1's log(0.3/0.3) = 0.
    assert margins[0] == pytest.approx(0.0)
    # Row 1, label 1: class 0 at log(0.2/0.6), class 2 at log(0.1/0.5); given log(0.7/0.3).
    assert margins[1] == pytest.approx(np.log(0.2 / 0.6) - np.log(0.7 / 0.3))


def test_blocks_change_nothing(monkeypatch):
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(7), size=1000).astype(np.float32)
    labels = rng.integers(0, 7, 1000)
    rows = rng.permutation(1000)[:600]
    thresholds = class_thresholds(probabilities, labels)
    whole = calibrated_margin(probabilities, rows, labels[rows], thresholds)
    monkeypatch.setattr(calibration, "BLOCK", 37)
    assert np.array_equal(calibrated_margin(probabilities, rows, labels[rows], thresholds), whole)
