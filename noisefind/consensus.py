"""The consensus score: the scan's default order, three independent witnesses added up.

A wrong label leaves three kinds of trace, each seen by a different model:

- ``oos_margin``: models that never saw the example (K-fold) find another class likelier than
  the given one, judged against each class's typical confidence
  (:func:`noisefind.out_of_sample.calibrated_margin`; confident learning's evidence);
- ``aum``: the scanned model's training margin stays low while it learns the example (area
  under the margin, Pleiss et al. 2020, negated);
- ``flip_cost``: after training, few units need zeroing to talk the scanned model out of the
  given label (the flip search's continuous cost, negated; Maini et al. 2023).

Each is standardised over the scored rows (zero mean, unit variance) and the three are summed
with equal weights. No weight is fitted: the canary-weighed mix (:mod:`noisefind.cutoff`)
learns from relabelled clear images, which on real human noise (ambiguous images) taught it to
lean on the in-sample signals; the equal sum does not depend on how alike canaries and real
errors are. The measurements behind the choice, and where it loses (injected noise, where the
mean training loss alone is near perfect), are in docs/benchmarks.md.

The flag for this order takes the cutoff's estimated count of mislabeled rows from the top
(:func:`flag_top`), so flagged rows are always a prefix of the order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from noisefind.errors import NoisefindError

SIGNALS = ("oos_margin", "aum", "flip_cost")  # each higher = more suspicious
FLIP_SIGNAL = "flip_cost"


def consensus_score(signals: Mapping[str, np.ndarray], *,
                    without: tuple[str, ...] = ()) -> np.ndarray:
    """Equal-weight sum of standardised suspicion signals, one value per row.

    Parameters
    ----------
    signals : mapping of str to numpy.ndarray
        Signal name -> one float per row, all the same length, higher = more suspicious
        (:data:`SIGNALS` for the scan's default).
    without : tuple of str
        Signals to leave out (ablations, e.g. ``(FLIP_SIGNAL,)``).

    Returns
    -------
    numpy.ndarray
        Float per row; higher = more suspicious. A signal constant over the rows adds nothing.

    Raises
    ------
    NoisefindError
        For no signals, signals of different lengths, or a non-finite value.
    """
    used = {name: np.asarray(values, dtype=np.float64) for name, values in signals.items()
            if name not in without}
    if not used:
        raise NoisefindError("signals: give at least one signal to add up")
    lengths = {name: len(values) for name, values in used.items()}
    if len(set(lengths.values())) != 1:
        raise NoisefindError(f"signals: every signal needs one value per row, got {lengths}")
    total = np.zeros(next(iter(lengths.values())))
    for name, values in used.items():
        if not np.isfinite(values).all():
            raise NoisefindError(f"signals: {name!r} has a missing or infinite value")
        spread = values.std()
        if spread > 0:
            total += (values - values.mean()) / spread
    return total


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
