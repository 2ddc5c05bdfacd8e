"""Confident learning's per-class calibration, kept continuous.

Real label errors live in a few hard class pairs (cat/dog, automobile/truck), and models are
less sure of hard classes. Confident learning (Northcutt et al. 2021) therefore judges each
class's probability against that class's typical confidence, its threshold. These functions
keep that calibration as a continuous score, for the out-of-sample probabilities and for the
neighbours' vote alike.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BLOCK = 8192  # rows converted to float64 at a time


def class_thresholds(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per class c, the mean out-of-sample probability of c over the rows labelled c:
    confident learning's per-class threshold ``t_c`` (a hard class has a low one)."""
    labels = np.asarray(labels)
    # Only the given label's column is read, so a large (N, C) array is never copied.
    given = np.asarray(probabilities[np.arange(len(labels)), labels], dtype=np.float64)
    return np.array([given[labels == c].mean() if (labels == c).any() else 1.0
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
    The rows are taken ``BLOCK`` at a time, so 200,000 rows of 1,000 classes never need more
    than one block's float64 copy.
    """
    rows, labels = np.asarray(rows, dtype=np.int64), np.asarray(labels)
    log_thresholds = np.log(np.clip(np.asarray(thresholds, dtype=np.float64), 1e-9, None))
    margins = np.empty(len(rows))
    for start in range(0, len(rows), BLOCK):
        block = slice(start, start + BLOCK)
        relative = np.log(np.clip(np.asarray(probabilities[rows[block]], dtype=np.float64),
                                  1e-9, None)) - log_thresholds
        at = np.arange(len(relative))
        given = relative[at, labels[block]]
        relative[at, labels[block]] = -np.inf
        margins[block] = relative.max(axis=1) - given
    return margins


def margin_judge(probabilities: np.ndarray,
                 labels: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``judge(rows, given)``: the :func:`calibrated_margin` of ``rows`` under the labels
    ``given``, against the thresholds of the whole set's ``labels``. Evidence that does not
    change with a row's own label can so be read again under another label (a canary)."""
    thresholds = class_thresholds(probabilities, labels)

    def judge(rows: np.ndarray, given: np.ndarray) -> np.ndarray:
        return calibrated_margin(probabilities, rows, given, thresholds)

    return judge
