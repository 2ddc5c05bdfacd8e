"""How many labels are wrong: confident learning's count, and the canaries' count.

**Confident learning's count** (:func:`confident_count`) reads out-of-sample probabilities.

A row is *confidently* of class j when its out-of-sample probability of j reaches j's
threshold (the class's mean confidence in its own rows, :func:`class_thresholds`); where
several classes do, the likeliest. Counting rows by (given label, confident class) gives the
confident joint; scaling each given label's row of it to that label's number of examples
(calibration) and reading off the diagonal gives the count of wrong labels (Northcutt et al.
2021, eq. 4; cleanlab's ``num_label_issues(estimation_method="off_diagonal_calibrated")``):

    wrong = N - sum_c n_c * diagonal_c / confident_c

with n_c the examples labelled c, ``confident_c`` those of them confidently of some class and
``diagonal_c`` those confidently of c itself (at least one, as cleanlab has it).

It counts every row that some other class confidently claims, so with a model that is often
torn between two classes (hard pairs) it counts many clean rows too: on the synthetic arrays of
benchmarks/rank_arrays.py it over-counts by two thirds (docs/own-models.md).

**The canaries' count** (:func:`count_from_canaries`) asks instead how wrong labels score in
this very ranking. Canaries are rows given a wrong label on purpose, drawn the way the data's
own errors seem to go (:func:`canary_labels`: from the confusions that confident learning
sees, or those that several kinds of evidence all see, :func:`agreed_classes`); how they score
under the order tells how a wrong label looks, and the mixture-proportion estimate of
:func:`estimate_count` turns that into a count. For evidence that does not move
when a label changes (out-of-sample probabilities, the neighbours of a row) a canary is exact:
its score is computed, not retrained for. The scan's cutoff counts the same way, with canaries
trained into a replica (:mod:`noisefind.decide.cutoff`).

Both intervals are a bootstrap over the rows (and the canaries): they say how much the count
moves with the sample, not how far the canaries or the calibration are from the truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from noisefind.base.errors import NoisefindError
from noisefind.decide.calibration import BLOCK, class_thresholds, margin_judge

RESAMPLES = 200  # bootstrap resamples of the rows for the interval
# Canaries: rows scored again under a wrong label, for the count. Their scores are computed, not
# trained for, so many cost little; fewer let the count swing with the draw (on a 450-image
# folder, 90 canaries moved it by 11-38% of the truth from one draw to the next, 2,000 by 0-7%).
CANARY_SHARE, MIN_CANARIES = 0.02, 2000
LEVEL = 0.9  # the interval's coverage of the resampled counts


@dataclass(frozen=True)
class CountEstimate:
    """An estimated number of wrong labels among ``examples`` rows, with its interval."""

    estimate: float
    low: float
    high: float
    examples: int
    method: str = "confident_joint"

    def as_dict(self) -> dict:
        return {"estimated_mislabeled": round(self.estimate, 1),
                "estimated_mislabeled_interval": [round(self.low, 1), round(self.high, 1)],
                "estimated_mislabeled_fraction": round(self.estimate / self.examples, 4),
                "count_method": self.method}


def confident_classes(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """The class each row is confidently of (see the module docstring), or -1 for none."""
    labels = np.asarray(labels, dtype=np.int64)
    thresholds = class_thresholds(probabilities, labels) - 1e-6  # cleanlab's tolerance
    guesses = np.empty(len(labels), dtype=np.int64)
    for start in range(0, len(labels), BLOCK):
        block = np.asarray(probabilities[start:start + BLOCK])
        confident = block >= thresholds
        likeliest = np.where(confident, block, -np.inf).argmax(axis=1)
        guesses[start:start + BLOCK] = np.where(confident.any(axis=1), likeliest, -1)
    return guesses


def agreed_classes(*guesses: np.ndarray) -> np.ndarray:
    """The class all of ``guesses`` (:func:`confident_classes` of the same labels under several
    kinds of evidence) name for each row, or -1 where they differ.

    Canaries drawn from one model's confusions follow that model's own mistakes too: a model torn
    between two alike classes puts clean rows of the pair off the diagonal, so the canaries go
    to the partner class more often than the real errors do, look harder to see than they, and
    the count runs high. A confusion that two independent kinds of evidence (a model's
    probabilities and an embedding's neighbours) both see is more likely a real error's.
    """
    first, *others = (np.asarray(g, dtype=np.int64) for g in guesses)
    agreed = first.copy()
    for other in others:
        agreed[other != first] = -1
    return agreed


def confident_count(labels: np.ndarray, probabilities: np.ndarray, *,
                    guesses: np.ndarray | None = None, resamples: int = RESAMPLES,
                    level: float = LEVEL, seed: int = 0) -> CountEstimate:
    """Confident learning's calibrated count of wrong labels, with a bootstrap interval.

    Parameters
    ----------
    labels : numpy.ndarray
        Given label per row, integers in 0 .. C-1.
    probabilities : numpy.ndarray
        (N, C) out-of-sample probabilities (any float dtype; read in blocks).
    guesses : numpy.ndarray, optional
        :func:`confident_classes` of these labels and probabilities, when already at hand.
    resamples : int
        Bootstrap resamples for the interval (0: the interval is the estimate itself).
    level : float
        Central share of the resampled counts the interval covers.
    seed : int
        Seeds the resampling.

    Returns
    -------
    CountEstimate
    """
    labels = np.asarray(labels, dtype=np.int64)
    if guesses is None:
        guesses = confident_classes(labels, probabilities)
    classes = probabilities.shape[1]
    confident, diagonal = guesses >= 0, guesses == labels

    def count(rows: np.ndarray | slice) -> float:
        given = labels[rows]
        examples = np.bincount(given, minlength=classes)
        on_diagonal = np.maximum(np.bincount(given, weights=diagonal[rows], minlength=classes), 1)
        # cleanlab's floor of one on the diagonal counts in the row sum too
        sure = np.bincount(given, weights=confident[rows] & ~diagonal[rows], minlength=classes)
        return float(len(given) - (examples * on_diagonal / (sure + on_diagonal)).sum())

    rng = np.random.default_rng(seed)
    estimate = count(slice(None))
    low, high = bootstrap_interval(lambda: count(rng.integers(0, len(labels), len(labels))),
                                   resamples, level, estimate)
    return CountEstimate(estimate, low, high, len(labels))


def canary_labels(labels: np.ndarray, guesses: np.ndarray, rows: np.ndarray, classes: int, *,
                  seed: int = 0) -> np.ndarray:
    """A wrong label for each of ``rows``, drawn as the data's errors seem to go.

    A row labelled t is taken to be of class t; its canary label is j with the probability
    that confident learning sees a row of class t labelled j (``guesses``:
    :func:`confident_classes`; the off-diagonal of the confident joint's column t), or any
    other class alike where it sees no such confusion.
    """
    labels, rows = np.asarray(labels, dtype=np.int64), np.asarray(rows, dtype=np.int64)
    rng = np.random.default_rng(seed)
    sure = (guesses >= 0) & (guesses != labels)
    confusions = np.zeros((classes, classes))
    np.add.at(confusions, (guesses[sure], labels[sure]), 1.0)  # [true guess, given]
    truth = labels[rows]
    weights = confusions[truth]
    weights[np.arange(len(rows)), truth] = 0.0
    none = weights.sum(1) == 0
    weights[none] = 1.0
    weights[np.arange(len(rows)), truth] = 0.0
    cumulative = weights.cumsum(1)
    draws = rng.random(len(rows)) * cumulative[:, -1]
    return (cumulative <= draws[:, None]).sum(1)


def count_from_canaries(scores: np.ndarray, canary_scores: np.ndarray, *,
                        resamples: int = RESAMPLES, level: float = LEVEL,
                        seed: int = 0) -> CountEstimate:
    """The number of wrong labels among ``scores`` that the canaries' scores imply
    (:func:`estimate_count`), with a bootstrap interval over the rows and the canaries."""
    scores, canary_scores = np.asarray(scores), np.asarray(canary_scores)
    rng = np.random.default_rng(seed)

    def resampled() -> float:
        return estimate_count(scores[rng.integers(0, len(scores), len(scores))],
                              canary_scores[rng.integers(0, len(canary_scores),
                                                         len(canary_scores))])[0]

    estimate = float(estimate_count(scores, canary_scores)[0])
    low, high = bootstrap_interval(resampled, resamples, level, estimate)
    return CountEstimate(estimate, low, high, len(scores), "canaries")


def bootstrap_interval(resampled: Callable[[], float], resamples: int, level: float,
                       estimate: float) -> tuple[float, float]:
    """The central ``level`` of ``resamples`` draws of ``resampled()``; the estimate itself
    for no resamples. Refuses settings that give no interval, naming them."""
    if resamples < 0:
        raise NoisefindError(f"resamples must be 0 or more, got {resamples}",
                             parameter="resamples")
    if not 0 < level < 1:
        raise NoisefindError(f"level must lie between 0 and 1, got {level}", parameter="level")
    if not resamples:
        return estimate, estimate
    low, high = np.quantile([resampled() for _ in range(resamples)],
                            [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


ESTIMATE_RECALLS = (0.5, 0.6, 0.7, 0.8, 0.9)


def estimate_count(scores: np.ndarray, canary_scores: np.ndarray,
                   recalls: Sequence[float] = ESTIMATE_RECALLS) -> tuple[float, dict]:
    """Estimated number of mislabeled rows among ``scores``: a mixture-proportion estimate.

    If the canaries score like the mislabeled rows, then above any threshold t the scanned rows
    hold ``pi * N * P(t)`` mislabeled ones plus some clean ones, P(t) the canaries' share above
    t. So ``count(scores >= t) / P(t)`` over-counts by the clean rows above t and is an upper
    bound for every t; the estimate is the tightest bound over the thresholds that keep
    ``recalls`` of the canaries (not fewer than half of them, so that P(t) rests on enough
    canaries). No more rows than there are can be wrong: the estimate is at most N (a bound
    can pass it where the canaries score below most rows, as when the evidence contradicts
    nearly every label).

    Returns
    -------
    estimate : float
    bounds : dict
        The bound at each canary recall, for ``summary.json``.
    """
    bounds = {}
    for recall in recalls:
        threshold = np.quantile(canary_scores, 1.0 - recall)
        kept = float((canary_scores >= threshold).mean())
        bounds[f"{recall:g}"] = round(float((scores >= threshold).sum()) / kept, 2)
    return min(*bounds.values(), float(len(scores))), bounds


def count_with_canaries(labels: np.ndarray, guesses: np.ndarray, classes: int,
                        signal: np.ndarray, judge, *, seed: int) -> tuple[CountEstimate, int]:
    """The canaries' count (:func:`count_from_canaries`) of one
    witness's ``signal`` (per row, under the given labels) and how many canaries: rows scored
    again by ``judge(rows, labels)`` under a wrong label drawn from the confusions that
    confident learning sees (``guesses``: :func:`confident_classes`).
    The witness's evidence does not change with a row's own label, so a canary's score is
    exact: no model is retrained, and a row may host several canaries (drawn with
    replacement: :data:`CANARY_SHARE` of the rows, at least :data:`MIN_CANARIES`)."""
    canaries = np.random.default_rng(seed).choice(
        len(labels), max(MIN_CANARIES, round(CANARY_SHARE * len(labels))), replace=True)
    wrong = canary_labels(labels, guesses, canaries, classes, seed=seed)
    return count_from_canaries(signal, judge(canaries, wrong), seed=seed), len(canaries)


# Above this share of rows whose given label the held-out models miss although the count takes
# it as right, the count is said to be possibly high: strong fold models (digits, mnist5k)
# leave 1-2% of such rows, weak ones (CIFAR-10N, a 450-image folder) 10-22%
# (docs/benchmarks.md, "How far to trust the count").
LOOSE_SHARE = 0.05


def unexplained_misses(agreement: float, estimated_fraction: float) -> float:
    """The share of rows whose given label the held-out models do not predict, beyond the
    share the count calls wrong: rows taken as rightly labelled that still look wrong. The
    count's bound takes clean rows that look wrong for errors, so the larger this share, the
    higher the count may run (above :data:`LOOSE_SHARE`: say so)."""
    return max(0.0, (1.0 - agreement) - estimated_fraction)


def likeliest_classes(probabilities: np.ndarray) -> np.ndarray:
    """Each row's likeliest class (read :data:`BLOCK` rows at a time)."""
    return np.concatenate([np.asarray(probabilities[start:start + BLOCK]).argmax(1)
                           for start in range(0, len(probabilities), BLOCK)])


def held_out_agreement(labels: np.ndarray, probabilities: np.ndarray, *,
                       likeliest: np.ndarray | None = None) -> float:
    """The share of rows whose given label is the held-out models' likeliest class
    (``likeliest``: :func:`likeliest_classes` of ``probabilities``, when already at hand)."""
    if likeliest is None:
        likeliest = likeliest_classes(probabilities)
    return float((likeliest == np.asarray(labels, dtype=np.int64)).mean())


def out_of_sample_count(labels: np.ndarray, probabilities: np.ndarray, *,
                        seed: int = 0, evidence: np.ndarray | None = None
                        ) -> tuple[CountEstimate, int]:
    """How many of ``labels`` are wrong, from out-of-sample ``probabilities``: the canaries'
    count (:func:`count_with_canaries`) on their calibrated margin (``oos_margin``), or on that
    of ``evidence`` when given (another (N, C) vote, such as the neighbours' in a feature space
    no label trained); and how many canaries. The canaries' labels follow the confusions
    confident learning sees in ``probabilities`` either way."""
    labels = np.asarray(labels, dtype=np.int64)
    judge = margin_judge(probabilities if evidence is None else evidence, labels)
    return count_with_canaries(labels, confident_classes(labels, probabilities),
                               probabilities.shape[1], judge(np.arange(len(labels)), labels),
                               judge, seed=seed)
