"""A calibrated cutoff: which scanned examples to flag, and how many labels are wrong.

A ranking leaves the user asking where to stop. The cutoff answers from inside the run, with
**canaries**: examples whose labels we corrupted ourselves, so we know they are wrong and can
watch how a wrong label looks in this data, with this model and this recipe (docs/method.md,
"The cutoff"; the measurements behind each choice are in docs/benchmarks.md).

1. Canaries are *real* training examples (``canary_fraction`` of them, at least
   ``min_canaries``), each relabelled to a wrong class. The estimate is only as good as the
   canaries' likeness to the real errors, so by default (``canary_labels="matched"``) they copy
   the confusions the run itself shows: the model's likeliest mislabeled examples (the top tenth
   by mean training loss, or by final loss for a model without its history) each give a pair
   (true class = the model's most likely other class, given label), and the canaries are
   unsuspected rows of a pair's true class relabelled to its given label
   (:func:`estimated_confusions`). The alternatives are ``"runner-up"`` (any row, relabelled to
   the model's most likely other class for it) and ``"uniform"`` (any row, a random other
   class). Relabelled real examples look like real label noise; relabelled near-copies
   (shifted or mixed-up images) did not.
2. A real example cannot be a canary and be scored under its own label by the same model, so the
   canaries go into a **replica**: a second model trained with the scanned model's recipe and
   seed on the same data, with only the canaries' labels changed. The scanned model stays a
   model of the user's data (``OUT/run`` is reusable), and a model passed with ``--model`` can
   be calibrated too (the replica follows its recipe). The canaries are flip-searched on the
   replica and never appear in any output.
3. Each example (scanned ones on the model, canaries on the replica) is described by the
   signals a wrong label leaves: the flip search's cost (``log1p``), the model's loss on the
   given label (``log``) and, from its training history, the area under the margin (AUM,
   Pleiss et al. 2020) and the mean training loss (``log``; both left out when a run has no
   history for these rows). The flip cost alone overlaps too much between clean and mislabeled
   examples to set a cutoff on small models, so the cutoff learns how to weigh them.
4. The weighing is positive-unlabelled learning: a logistic regression tells the canaries
   (positives) from the scanned examples (unlabelled, a mixture of clean and mislabeled), on
   standardised signals with balanced class weights. Its decision value is ``cutoff_score``.
   The canaries' own scores are cross-fitted (each scored by a model fit without it), so the
   threshold is not flattered by overfitting.
5. ``suspected = cutoff_score >= t`` with ``t`` the canaries' ``1 - canary_recall`` quantile:
   the flag catches about ``canary_recall`` (0.9) of the canaries, hence of the mislabeled
   examples they stand for.
6. The estimated number of mislabeled examples among the scanned ones is a mixture-proportion
   estimate (:func:`noisefind.decide.count.estimate_count`): above a threshold that keeps a
   share r of the canaries, ``count / r`` over-counts by the clean examples above it, so the
   smallest such bound over r in 0.5 ... 0.9 is taken, with a bootstrap interval. With
   ``--limit`` it is scaled to the whole training set.

Caveats: the flag and the estimate are as good as the canaries' likeness to the real errors;
errors unlike any plausible or random relabelling (a systematic relabelling of a whole class)
are not what they calibrate for. The replica costs one more training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from noisefind.base.errors import NoisefindError

METHODS = ("canaries", "none")
CANARY_LABELS = ("matched", "runner-up", "uniform")
SIGNALS = ("log_flip_cost", "log_loss", "aum", "log_mean_loss", "oos_margin",
           "oos_flip")


@dataclass(frozen=True)
class CutoffSettings:
    """How the cutoff is calibrated.

    Parameters
    ----------
    method : {"canaries", "none"}
        ``canaries`` (see the module docstring) or ``none`` (no flag, no estimate; no replica is
        trained).
    canary_fraction : float
        Share of the training examples relabelled in the replica.
    min_canaries : int
        At least this many canaries (but never more than a fifth of the data), so the
        canaries' quantiles mean something on small data.
    canary_recall : float
        Share of the canaries the flag must catch; sets the threshold.
    canary_labels : {"matched", "runner-up", "uniform"}
        A canary's class and wrong label: drawn from the confusions estimated among the
        scanned model's likeliest mislabeled examples (:func:`estimated_confusions`); or any
        row, relabelled to the model's most likely other class for it; or any row, relabelled
        to a uniformly random other class.
    seed : int
        Draws the canaries and their labels.
    replica_fraction : float
        Share of the other (non-canary) rows the replica trains on beside the canaries. Below
        1 the replica costs about that share of a training, but its canaries look less like
        the scanned model's errors and the flag loses quality (measured in
        docs/benchmarks.md); kept at 1 by the scan.
    """

    method: str = "canaries"
    canary_fraction: float = 0.05
    min_canaries: int = 30
    canary_recall: float = 0.9
    canary_labels: str = "matched"
    seed: int = 0
    replica_fraction: float = 1.0

    def validate(self) -> None:
        if self.method not in METHODS:
            raise NoisefindError(f"cutoff {self.method!r}: use {' or '.join(METHODS)}",
                                 parameter="cutoff")
        if not 0.0 < self.canary_fraction <= 0.2:
            raise NoisefindError(
                f"canary_fraction must be in (0, 0.2], got {self.canary_fraction}",
                parameter="canary_fraction")
        if self.min_canaries < 2:
            raise NoisefindError(f"min_canaries must be at least 2, got {self.min_canaries}")
        if not 0.0 < self.canary_recall < 1.0:
            raise NoisefindError(f"canary_recall must be in (0, 1), got {self.canary_recall}",
                                 parameter="canary_recall")
        if not 0.0 < self.replica_fraction <= 1.0:
            raise NoisefindError(
                f"replica_fraction must be in (0, 1], got {self.replica_fraction}")
        if self.canary_labels not in CANARY_LABELS:
            raise NoisefindError(f"canary_labels {self.canary_labels!r}: use "
                                 f"{' or '.join(CANARY_LABELS)}", parameter="canary_labels")


@dataclass
class Cutoff:
    """The decision for the scanned rows.

    Attributes
    ----------
    method : str
        ``canaries`` or ``none``.
    rows : numpy.ndarray
        Positions in the training set, in the order of the arrays below.
    suspected : numpy.ndarray
        Bool per row: flagged as probably mislabeled.
    cutoff_score : numpy.ndarray
        Float per row (higher = more like the canaries); NaN without a cutoff.
    estimated_scanned : float or None
        Estimated number of mislabeled examples among ``rows``.
    details : dict
        How the cutoff was set, for ``summary.json``.
    order : numpy.ndarray or None
        The default order's score per row (:mod:`noisefind.decide.consensus`) when the flag
        follows it: then ``suspected`` is its top ``estimated_scanned`` rows.
    signals : dict of str to numpy.ndarray, optional
        The default order's signals per row (higher = more suspicious), with ``order``.
    interval : tuple of float, optional
        A 90% bootstrap interval of ``estimated_scanned``
        (:func:`noisefind.decide.count.count_from_canaries`).
    """

    method: str
    rows: np.ndarray
    suspected: np.ndarray
    cutoff_score: np.ndarray
    estimated_scanned: float | None = None
    details: dict = field(default_factory=dict)
    order: np.ndarray | None = None
    signals: dict | None = None
    interval: tuple[float, float] | None = None

    def estimated_total(self, examples: int) -> float | None:
        """The estimate scaled from the scanned rows to ``examples`` training examples."""
        if self.estimated_scanned is None or not len(self.rows):
            return None
        return self.estimated_scanned * examples / len(self.rows)

    def summary(self, examples: int, is_noisy: np.ndarray | None = None,
                mislabeled_total: int | None = None) -> dict:
        """``summary.json`` entries; given the truth, the flag's quality and the count's error.

        Parameters
        ----------
        examples : int
            Size of the training set (the estimate is scaled to it).
        is_noisy : numpy.ndarray, optional
            Truth of :attr:`rows`: flag precision, recall, F1 and ``count_error_scanned``.
        mislabeled_total : int, optional
            True number of mislabeled examples in the training set: ``count_error``.
        """
        total = self.estimated_total(examples)
        out = {
            "suspected": int(self.suspected.sum()),
            "estimated_mislabeled": None if total is None else int(round(total)),
            "estimated_noise_rate": None if total is None else round(total / examples, 4),
            "estimated_mislabeled_interval": None if total is None or self.interval is None
            else [round(bound * examples / len(self.rows), 1) for bound in self.interval],
            "cutoff": self.details,
        }
        if is_noisy is not None:
            metrics = flag_metrics(is_noisy, self.suspected, self.estimated_scanned)
            out.update({k: v for k, v in metrics.items() if k != "mislabeled_true"})
            out["count_error_scanned"] = out.pop("count_error")
        if mislabeled_total is not None:
            out["mislabeled_total"] = mislabeled_total
            out["count_error"] = (None if total is None or not mislabeled_total
                                  else round((total - mislabeled_total) / mislabeled_total, 4))
        return out


def no_cutoff(rows: np.ndarray, reason: str) -> Cutoff:
    """A cutoff that flags nothing and estimates nothing, saying why."""
    rows = np.asarray(rows, dtype=np.int64)
    return Cutoff("none", rows, np.zeros(len(rows), dtype=bool), np.full(len(rows), np.nan),
                  None, {"method": "none", "note": reason})


def fit_cutoff(scanned: np.ndarray, canaries: np.ndarray, canary_recall: float,
               seed: int = 0, names: Sequence[str] | None = None,
               ) -> tuple[np.ndarray, float, float, dict, np.ndarray]:
    """Positive-unlabelled logistic regression: canaries against the scanned examples.

    Parameters
    ----------
    scanned, canaries : numpy.ndarray
        (rows, signals) of the scanned examples and of the canaries.
    canary_recall : float
        Share of the canaries the threshold keeps.
    seed : int
        Seeds the canaries' cross-fitting folds.
    names : sequence of str, optional
        The signals' names, one per column, for ``weights`` (default: the first columns of
        :data:`SIGNALS`).

    Returns
    -------
    scores : numpy.ndarray
        Decision values of the scanned examples (higher = more like the canaries).
    threshold : float
        The canaries' ``1 - canary_recall`` quantile of cross-fitted scores.
    measured_recall : float
        Share of the canaries' cross-fitted scores at or above the threshold.
    weights : dict
        Coefficient per standardised signal.
    canary_scores : numpy.ndarray
        The canaries' cross-fitted decision values.
    """
    from sklearn.model_selection import KFold

    if len(canaries) < 2 or len(scanned) < 2:
        raise NoisefindError("the cutoff needs at least 2 scanned examples and 2 canaries")
    names = list(SIGNALS[:scanned.shape[1]] if names is None else names)
    score, weights = _pu_classifier(scanned, canaries, names)
    canary_scores = np.empty(len(canaries))
    folds = KFold(min(5, len(canaries)), shuffle=True, random_state=seed)
    for fit_rows, held in folds.split(canaries):
        canary_scores[held] = _pu_classifier(scanned, canaries[fit_rows], names)[0](
            canaries[held])
    threshold = float(np.quantile(canary_scores, 1.0 - canary_recall))
    measured = float((canary_scores >= threshold).mean())
    return score(scanned), threshold, measured, weights, canary_scores


def _pu_classifier(unlabelled: np.ndarray, positives: np.ndarray, names: Sequence[str]):
    """A scoring function (decision values) and its weights per standardised signal."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(unlabelled)
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
    model.fit(scaler.transform(np.concatenate([positives, unlabelled])),
              np.r_[np.ones(len(positives)), np.zeros(len(unlabelled))])
    weights = {name: round(float(w), 4) for name, w in zip(names, model.coef_[0], strict=True)}
    return (lambda x: model.decision_function(scaler.transform(x))), weights


def flag_metrics(is_noisy: np.ndarray, suspected: np.ndarray,
                 estimated: float | None) -> dict:
    """Precision, recall and F1 of a flag and the relative error of an estimated count.

    ``count_error`` is ``(estimated - true) / true`` over the same rows (None when either is
    missing or nothing is mislabeled).
    """
    is_noisy = np.asarray(is_noisy, dtype=bool)
    suspected = np.asarray(suspected, dtype=bool)
    hits = int((is_noisy & suspected).sum())
    precision = hits / suspected.sum() if suspected.any() else math.nan
    recall = hits / is_noisy.sum() if is_noisy.any() else math.nan
    if not is_noisy.any():
        f1 = math.nan
    elif hits:
        f1 = 2 * precision * recall / (precision + recall)
    else:
        f1 = 0.0  # nothing right (or nothing flagged) among real mislabeled rows
    true = int(is_noisy.sum())
    error = (estimated - true) / true if estimated is not None and true else None
    return {"flag_precision": _rounded(precision), "flag_recall": _rounded(recall),
            "flag_f1": _rounded(f1), "mislabeled_true": true,
            "count_error": None if error is None else round(error, 4)}


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 4)
