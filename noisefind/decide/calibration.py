"""Confident learning's per-class calibration, kept continuous.

Real label errors live in a few hard class pairs (cat/dog, automobile/truck), and models are
less sure of hard classes. Confident learning (Northcutt et al. 2021) therefore judges each
class's probability against that class's typical confidence, its threshold. These functions
keep that calibration as a continuous score, for the out-of-sample probabilities and for the
neighbours' vote alike.
"""

from __future__ import annotations

import numpy as np


def class_thresholds(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per class c, the mean out-of-sample probability of c over the rows labelled c:
    confident learning's per-class threshold ``t_c`` (a hard class has a low one)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    return np.array([probabilities[labels == c, c].mean() if (labels == c).any() else 1.0
                     for c in range(probabilities.shape[1])])


def calibrated_margin(probabilities: np.ndarray, rows: np.ndarray, labels: np.ndarray,
                      thresholds: np.ndarray) -> np.ndarray:
    """``oos_margin``: how much more another class is present than the given label, each
    measured against its class's threshold ``t`` (:func:`class_thresholds`)::

        max_{j != label} log(p_j / t_j)  -  log(p_label / t_label)

    Positive when some other class is more confidently present, relative to how confident the
    models usually are about it, than the given label is. Confident learning flags a row when
    ``p_j >= t_j`` for another class j (Northcutt et al. 2021); the margin keeps that
    class-conditional calibration (real errors live in a few hard class pairs, cat/dog,
    automobile/truck) as a continuous score. ``labels`` are those of ``rows``; ``thresholds``
    come from the whole training set's given labels, so every row is judged against the same.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)[np.asarray(rows)]
    labels = np.asarray(labels)
    relative = np.log(np.clip(probabilities, 1e-9, None)) - np.log(
        np.clip(thresholds, 1e-9, None))
    given = relative[np.arange(len(relative)), labels]
    relative[np.arange(len(relative)), labels] = -np.inf
    return relative.max(axis=1) - given
