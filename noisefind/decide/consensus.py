"""The consensus score: the scan's default order, four witnesses with a vote each.

A wrong label is seen by four witnesses, one that never saw it, two that learned it and one
that looks at its neighbours:

- **out of sample**: models that never saw the example (K-fold) find another class likelier
  than the given one, judged against each class's typical confidence (``oos_margin``,
  :func:`noisefind.decide.calibration.calibrated_margin`; confident learning's evidence);
- **in sample**: the scanned model, which fit every label. How hard the label was to learn
  (``aum``: the area under the margin, Pleiss et al. 2020, negated) and how little holds it up
  once learned (``flip_cost``: the flip search's continuous cost, negated; Maini et al. 2023);
- **augmented**: the flip search on a K-fold model that trained on the example, with
  augmentation for images (``fold_flip``, negated). A second model that learned the
  label under a different seed and recipe; on real human noise its flip cost alone ranks as
  well as confident learning, where the scanned model's ranks well below it. (Its AUM,
  ``fold_aum``, was part of this witness until the neighbours came; beside them it lowered
  the order, docs/benchmarks.md);
- **neighbours**: how much less the example's nearest neighbours in the K-fold models' feature
  spaces carry its label than another, each against its class's usual share (``neighbours``,
  :mod:`noisefind.signals.neighbours`): the labels around it, not any model's verdict on it.

Each signal is standardised over the scored rows (zero mean, unit variance); a witness's
signals are added and the sum standardised again, and the witnesses' scores are added. So the
witnesses weigh the same however many signals each has: AUM and the flip cost come from the
same model and partly repeat each other. No weight is fitted: the canary-weighed mix
(:mod:`noisefind.decide.cutoff`) learns from relabelled clear images, which on real human noise
(ambiguous images) taught it to lean on the in-sample signals; this sum does not depend on how
alike canaries and real errors are. The measurements behind the choice, on real and on
injected noise, are in docs/benchmarks.md.

The flag for this order takes the cutoff's estimated count of mislabeled rows from the top
(:func:`flag_top`), so flagged rows are always a prefix of the order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from noisefind.base.errors import NoisefindError
from noisefind.decide.calibration import calibrated_margin, class_thresholds

WITNESSES = {"out_of_sample": ("oos_margin",), "in_sample": ("aum", "flip_cost"),
             "augmented": ("fold_flip",), "neighbours": ("neighbours",)}
SIGNALS = tuple(name for names in WITNESSES.values() for name in names)  # higher = suspicious
FLIP_SIGNALS = ("flip_cost", "fold_flip")
AUGMENTED = WITNESSES["augmented"]
NEIGHBOURS = WITNESSES["neighbours"]


def consensus_score(signals: Mapping[str, np.ndarray], *, without: tuple[str, ...] = (),
                    weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Sum over :data:`WITNESSES` of each witness's standardised sum of standardised signals.

    Parameters
    ----------
    signals : mapping of str to numpy.ndarray
        :data:`SIGNALS` by name, one float per row each, all the same length, higher = more
        suspicious.
    without : tuple of str
        Signals to leave out (ablations, e.g. :data:`FLIP_SIGNALS`); a witness left with
        none has no vote.
    weights : mapping of str to float, optional
        A weight per witness of :data:`WITNESSES` (default 1 each; a witness not named keeps
        1), for ablations of how much each should count.

    Returns
    -------
    numpy.ndarray
        Float per row; higher = more suspicious. A signal constant over the rows adds nothing.

    Raises
    ------
    NoisefindError
        For a missing or unknown signal, signals of different lengths, or a non-finite value.
    """
    missing = [name for name in SIGNALS if name not in signals and name not in without]
    unknown = [name for name in signals if name not in SIGNALS]
    if missing or unknown:
        raise NoisefindError(f"signals: give exactly {', '.join(SIGNALS)}; "
                             f"missing {missing}, unknown {unknown}")
    used = {name: np.asarray(values, dtype=np.float64) for name, values in signals.items()
            if name not in without}
    lengths = {len(values) for values in used.values()}
    if len(lengths) != 1:
        raise NoisefindError(f"signals: every signal needs one value per row, got lengths "
                             f"{sorted(lengths)}")
    for name, values in used.items():
        if not np.isfinite(values).all():
            raise NoisefindError(f"signals: {name!r} has a missing or infinite value")
    weights = dict(weights or {})
    if set(weights) - set(WITNESSES):
        raise NoisefindError(f"weights: name witnesses of {', '.join(WITNESSES)}; got "
                             f"{sorted(set(weights) - set(WITNESSES))}", parameter="weights")
    total = np.zeros(lengths.pop())
    for witness, names in WITNESSES.items():
        votes = [standardised(used[name]) for name in names if name in used]
        if votes:
            total += weights.get(witness, 1.0) * standardised(np.sum(votes, axis=0))
    return total


def default_order_signals(*, rows: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                          margins: np.ndarray, flip_cost: np.ndarray, fold_flip: np.ndarray,
                          neighbours: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`SIGNALS` of the default order for ``rows``, each higher = more suspicious.

    The one place where the evidence becomes the order's signals: the scan and the bench's
    ``noisefind`` detector both call it (and :func:`consensus_score` on what it returns).

    Parameters
    ----------
    rows : numpy.ndarray
        Positions in the training set of the rows to score.
    labels : numpy.ndarray
        The given label of every example of the training set (the class thresholds are the
        whole set's, as confident learning sets them).
    probabilities : numpy.ndarray
        (N, C) out-of-sample probabilities of every example.
    margins : numpy.ndarray
        (epochs, rows) training history of the rows' label margins (the area under the margin).
    flip_cost, fold_flip, neighbours : numpy.ndarray
        Per row of ``rows``: the flip search's cost on the scanned model and on a fold model
        that learned the row, and the neighbours' calibrated margin (already higher =
        more suspicious).
    """
    rows = np.asarray(rows, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    return {"oos_margin": calibrated_margin(probabilities, rows, labels[rows],
                                            class_thresholds(probabilities, labels)),
            "aum": -np.asarray(margins, dtype=np.float64).mean(axis=0),
            "flip_cost": -np.asarray(flip_cost, dtype=np.float64),
            "fold_flip": -np.asarray(fold_flip, dtype=np.float64),
            "neighbours": np.asarray(neighbours, dtype=np.float64)}


def standardised(values: np.ndarray) -> np.ndarray:
    """``values`` at zero mean and unit variance; all zeros when they are constant."""
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def flag_top(scores: np.ndarray, count: float | None) -> np.ndarray:
    """Bool per row: the ``round(count)`` highest ``scores`` (ties broken by position).

    ``count`` None (no estimate) flags nothing.
    """
    scores = np.asarray(scores, dtype=np.float64)
    flagged = np.zeros(len(scores), dtype=bool)
    if count is None:
        return flagged
    top = min(len(scores), max(0, int(round(count))))
    flagged[np.argsort(-scores, kind="stable")[:top]] = True
    return flagged
