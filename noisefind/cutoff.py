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
   estimate (:func:`estimate_count`): above a threshold that keeps a share r of the canaries,
   ``count / r`` over-counts by the clean examples above it, so the smallest such bound over
   r in 0.5 ... 0.9 is taken. With ``--limit`` it is scaled to the whole training set.

Caveats: the flag and the estimate are as good as the canaries' likeness to the real errors;
errors unlike any plausible or random relabelling (a systematic relabelling of a whole class)
are not what they calibrate for. The replica costs one more training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from noisefind.cache import ResultCache, data_key, digest
from noisefind.console import console
from noisefind.data import LabeledData
from noisefind.errors import NoisefindError
from noisefind.flip import FlipSettings, flip_search
from noisefind.models import predict_logits
from noisefind.out_of_sample import calibrated_margin, class_thresholds
from noisefind.train import History, Run, TrainConfig

METHODS = ("canaries", "none")
CANARY_LABELS = ("matched", "runner-up", "uniform")
SIGNALS = ("log_flip_cost", "log_loss", "aum", "log_mean_loss", "oos_margin",
           "oos_flip")

# rows, their given labels -> one value per row; see :func:`signals`
RowSignal = Callable[[np.ndarray, np.ndarray], np.ndarray]


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
            raise NoisefindError(f"--cutoff {self.method!r}: use {' or '.join(METHODS)}")
        if not 0.0 < self.canary_fraction <= 0.2:
            raise NoisefindError(
                f"--canary-fraction must be in (0, 0.2], got {self.canary_fraction}")
        if self.min_canaries < 2:
            raise NoisefindError(f"min_canaries must be at least 2, got {self.min_canaries}")
        if not 0.0 < self.canary_recall < 1.0:
            raise NoisefindError(f"--canary-recall must be in (0, 1), got {self.canary_recall}")
        if not 0.0 < self.replica_fraction <= 1.0:
            raise NoisefindError(
                f"replica_fraction must be in (0, 1], got {self.replica_fraction}")
        if self.canary_labels not in CANARY_LABELS:
            raise NoisefindError(f"--canary-labels {self.canary_labels!r}: use "
                                 f"{' or '.join(CANARY_LABELS)}")


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
    """

    method: str
    rows: np.ndarray
    suspected: np.ndarray
    cutoff_score: np.ndarray
    estimated_scanned: float | None = None
    details: dict = field(default_factory=dict)

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


# --------------------------------------------------------------------------------------------
# Canaries


def canary_count(examples: int, settings: CutoffSettings) -> int:
    """How many canaries: ``canary_fraction`` of the data, at least ``min_canaries``, at most
    a fifth of it."""
    wanted = max(settings.min_canaries, math.ceil(settings.canary_fraction * examples))
    return int(min(wanted, examples // 5))


def choose_canaries(labels: np.ndarray, num_classes: int, settings: CutoffSettings,
                    logits: np.ndarray | None = None,
                    suspicion: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded canary rows and their new labels, never the given ones.

    ``logits`` (rows, classes) are the scanned model's for every row of ``labels``; runner-up
    and matched canaries need them. Matched canaries also need ``suspicion`` (one value per
    row, higher = more likely mislabeled; the mean training loss, say): see
    :func:`estimated_confusions`.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng([settings.seed, 0xCA4A])
    if settings.canary_labels == "matched":
        if logits is None or suspicion is None:
            raise ValueError("matched canaries need the scanned model's logits and a suspicion")
        confusions, suspects = estimated_confusions(labels, logits, suspicion, num_classes)
        return _matched_canaries(labels, confusions, suspects,
                                 canary_count(len(labels), settings), rng)
    rows = np.sort(rng.choice(len(labels), canary_count(len(labels), settings), replace=False))
    shift = rng.integers(1, num_classes, size=len(rows))  # never 0: never the given label
    if settings.canary_labels == "uniform":
        return rows, (labels[rows] + shift) % num_classes
    if logits is None:
        raise ValueError("runner-up canaries need the scanned model's logits")
    return rows, runner_up(logits[rows], labels[rows])


def runner_up(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row, the class with the highest logit other than the row's label."""
    others = np.array(logits, dtype=np.float64)
    others[np.arange(len(others)), labels] = -np.inf
    return others.argmax(axis=1)


SUSPECT_SHARE = 0.1


def estimated_confusions(labels: np.ndarray, logits: np.ndarray, suspicion: np.ndarray,
                         num_classes: int, share: float = SUSPECT_SHARE,
                         smoothing: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Estimated joint distribution of (true class, given label) among the mislabeled rows.

    The ``share`` of rows with the highest ``suspicion`` are taken as mislabeled (on digits and
    mnist5k the mean training loss ranks them at AUROC 0.97 to 0.9999), and each one's true
    class as the model's most likely class after its given label: a model that memorized a
    wrong label still ranks the right one next. ``smoothing`` is added to every off-diagonal
    pair so that no confusion is ruled out.

    Returns
    -------
    confusions : numpy.ndarray
        (classes, classes) probabilities, zero on the diagonal: row = true class, column =
        given label.
    suspects : numpy.ndarray
        Bool per row: the rows taken as mislabeled.
    """
    labels = np.asarray(labels, dtype=np.int64)
    taken = max(1, int(round(share * len(labels))))
    suspects = np.zeros(len(labels), dtype=bool)
    suspects[np.argsort(-np.asarray(suspicion, dtype=np.float64), kind="stable")[:taken]] = True
    counts = np.full((num_classes, num_classes), smoothing)
    np.add.at(counts, (runner_up(logits[suspects], labels[suspects]), labels[suspects]), 1.0)
    np.fill_diagonal(counts, 0.0)
    return counts / counts.sum(), suspects


def _matched_canaries(labels: np.ndarray, confusions: np.ndarray, suspects: np.ndarray,
                      count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` canaries whose (class, new label) pairs are drawn from ``confusions``.

    A canary of true class c is a row *given* c that is not a suspect (so most likely really
    of class c). Pairs whose class has run out of rows are drawn again from the other pairs.
    """
    num_classes = len(confusions)
    pools = [rng.permutation(np.flatnonzero((labels == c) & ~suspects)) for c in
             range(num_classes)]
    used = np.zeros(num_classes, dtype=np.int64)
    rows, new_labels = [], []
    weights = confusions.ravel().copy()
    while len(rows) < count and weights.sum() > 0:
        pair = rng.choice(len(weights), p=weights / weights.sum())
        true, given = divmod(int(pair), num_classes)
        if used[true] == len(pools[true]):
            weights[true * num_classes:(true + 1) * num_classes] = 0.0
            continue
        rows.append(pools[true][used[true]])
        new_labels.append(given)
        used[true] += 1
    order = np.argsort(rows)
    return np.asarray(rows, dtype=np.int64)[order], np.asarray(new_labels, dtype=np.int64)[order]


def replica_config(run: Run) -> TrainConfig:
    """The scanned run's recipe and seed, on every row (no hold-out), without checkpoints."""
    config = TrainConfig(**run.config["train"])
    return replace(config, holdout=0.0, checkpoint_every=0, device=str(run.device))


def canary_results(data: LabeledData, run: Run, flip_settings: FlipSettings,
                   settings: CutoffSettings, progress: bool,
                   cache: ResultCache | None = None,
                   ) -> tuple[pd.DataFrame, History, float, int]:
    """Train the replica with canaries and flip-search them: their results, its history, the
    seconds both took (``cache`` may hold them from an earlier run) and how many rows it
    trained on."""
    cache = cache or ResultCache(None)
    logits = (None if settings.canary_labels == "uniform"
              else predict_logits(run.model, data.x, data.index).cpu().numpy())
    rows, new_labels = choose_canaries(data.y.numpy(), data.num_classes, settings, logits,
                                       row_suspicion(run, data, logits))
    y = data.y.clone()
    y[torch.from_numpy(rows)] = torch.from_numpy(new_labels)
    relabelled = replace(data, y=y)
    trained = replica_rows(len(data), rows, settings)
    replica_data = relabelled if len(trained) == len(data) else relabelled.subset(
        torch.from_numpy(trained))
    if progress:
        console.print(f"calibrating the cutoff: a replica with {len(rows)} canaries (real "
                      "examples relabelled), then their flip search", highlight=False)
    # Each rank trains the whole replica alone: a data-parallel one would differ in its
    # BatchNorm statistics and rounding from the single-process replica, and so would the flag.
    config = replica_config(run)
    replica = cache.fit(replica_data, config, progress=progress, data_parallel=False)
    at = np.searchsorted(trained, rows)  # the canaries' positions in the replica's data
    key = digest("canaries", data_key(replica_data), config.__dict__, flip_settings.as_dict(),
                 rows)
    results, seconds = cache.table(key, lambda: flip_search(
        replica.model, replica_data, flip_settings, rows=torch.from_numpy(at),
        progress=progress))
    results = results.assign(row=trained[results["row"].to_numpy()])
    results = results.assign(given_label=new_labels[np.searchsorted(rows, results["row"])])
    history = replica.history
    if len(trained) < len(data):
        history = _spread(history, trained, len(data))
    return results, history, replica.config["seconds"] + seconds, len(trained)


def replica_rows(examples: int, canaries: np.ndarray, settings: CutoffSettings) -> np.ndarray:
    """Sorted rows the replica trains on: every canary and a seeded ``replica_fraction`` of the
    other rows (all of them at 1)."""
    if settings.replica_fraction >= 1.0:
        return np.arange(examples)
    others = np.setdiff1d(np.arange(examples), canaries)
    rng = np.random.default_rng([settings.seed, 0x4E91])
    kept = rng.choice(others, round(settings.replica_fraction * len(others)), replace=False)
    return np.sort(np.concatenate([np.asarray(canaries, dtype=np.int64), kept]))


def _spread(history: History, trained: np.ndarray, examples: int) -> History:
    # The replica's history has a column per row it trained on; signals() reads columns by
    # the training set's row numbers, so put each where its row is (the rest stay zero).
    def full(values: np.ndarray) -> np.ndarray:
        out = np.zeros(values.shape[:-1] + (examples,), dtype=values.dtype)
        out[..., trained] = values
        return out

    return History(loss=full(history.loss), margin=full(history.margin),
                   correct=full(history.correct), labels=full(history.labels),
                   index=full(history.index))


def row_suspicion(run: Run, data: LabeledData, logits: np.ndarray | None) -> np.ndarray | None:
    """Per row of ``data``: the mean training loss when the run has a history of these rows,
    else the final loss (from ``logits``); None without either."""
    history = history_for(run, data)
    if history is not None:
        return history.loss.astype(np.float64).mean(axis=0)
    if logits is None:
        return None
    log_probs = torch.log_softmax(torch.from_numpy(logits).double(), dim=1)
    return -log_probs[torch.arange(len(data)), data.y].numpy()


# --------------------------------------------------------------------------------------------
# Signals and the decision


def signals(results: pd.DataFrame, history: History | None,
            out_of_sample: np.ndarray | None = None, labels: np.ndarray | None = None,
            out_of_sample_flip: RowSignal | None = None,
            thresholds: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The :data:`SIGNALS` a wrong label leaves, for the rows of a flip-search result.

    ``history`` gives the AUM and mean-training-loss columns; ``out_of_sample`` (N, C)
    probabilities of models that never saw the row, with ``labels`` the rows' given labels and
    ``thresholds`` the whole set's per-class thresholds, the out-of-sample class-calibrated
    margin against the given label (:func:`noisefind.out_of_sample.calibrated_margin`);
    ``out_of_sample_flip(rows, labels)``
    the ``oos_flip`` column. Each is left out when None.
    """
    rows = results["row"].to_numpy()
    cost = results["flip_cost"].to_numpy(dtype=np.float64)
    loss = results["loss"].to_numpy(dtype=np.float64)
    # Costs of already-misclassified examples lie in (-1, 0]; clip so log1p stays finite.
    columns = {"log_flip_cost": np.log1p(np.clip(cost, -0.99, None)),
               "log_loss": np.log(np.clip(loss, 1e-8, None))}
    if history is not None:
        columns["aum"] = history.margin[:, rows].astype(np.float64).mean(axis=0)
        mean_loss = history.loss[:, rows].astype(np.float64).mean(axis=0)
        columns["log_mean_loss"] = np.log(np.clip(mean_loss, 1e-8, None))
    if out_of_sample is not None:
        columns["oos_margin"] = calibrated_margin(out_of_sample, rows, np.asarray(labels),
                                                  thresholds)
    if out_of_sample_flip is not None:
        columns["oos_flip"] = out_of_sample_flip(rows, np.asarray(labels))
    return columns


def history_for(run: Run, data: LabeledData) -> History | None:
    """The run's history when its columns are exactly ``data``'s rows, else None."""
    history = run.history
    if history is None or history.margin.shape[1] != len(data):
        return None
    return history if np.array_equal(history.index, data.index.numpy()) else None


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


ESTIMATE_RECALLS = (0.5, 0.6, 0.7, 0.8, 0.9)


def estimate_count(scores: np.ndarray, canary_scores: np.ndarray,
                   recalls: Sequence[float] = ESTIMATE_RECALLS) -> tuple[float, dict]:
    """Estimated number of mislabeled rows among ``scores``: a mixture-proportion estimate.

    If the canaries score like the mislabeled rows, then above any threshold t the scanned rows
    hold ``pi * N * P(t)`` mislabeled ones plus some clean ones, P(t) the canaries' share above
    t. So ``count(scores >= t) / P(t)`` over-counts by the clean rows above t and is an upper
    bound for every t; the estimate is the tightest bound over the thresholds that keep
    ``recalls`` of the canaries (not fewer than half of them, so that P(t) rests on enough
    canaries).

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
    return min(bounds.values()), bounds


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


def calibrate(data: LabeledData, run: Run, results: pd.DataFrame,
              settings: CutoffSettings | None = None, flip_settings: FlipSettings | None = None,
              progress: bool = False, cache: ResultCache | None = None,
              out_of_sample: np.ndarray | None = None,
              out_of_sample_flip: RowSignal | None = None) -> Cutoff:
    """The cutoff for the scanned rows of ``results`` (a flip search of ``run`` on ``data``).

    Parameters
    ----------
    data : LabeledData
        The scanned training set, with its given labels.
    run : Run
        The scanned model; the replica copies its recipe (``run.config["train"]``).
    results : pandas.DataFrame
        :func:`noisefind.flip.flip_search` results of the scanned rows.
    settings : CutoffSettings, optional
    flip_settings : FlipSettings, optional
        The scan's flip-search settings, used for the canaries too.
    progress : bool
        Print what is being trained and searched.
    cache : ResultCache, optional
        Keeps the replica and its canaries' search (the bench's resume).
    out_of_sample : numpy.ndarray, optional
        (N, C) probabilities from models that never saw each row (cross-validation): adds the
        out-of-sample confidence in the given label as a signal. A canary's is read at its new
        label, from the model that held it out, which never saw that label either.
    out_of_sample_flip : callable, optional
        ``(rows, labels) -> values``: the ``oos_flip`` signal (:func:`signed_flip`) of those
        rows under those labels, for the scanned rows and the canaries alike.

    Returns
    -------
    Cutoff
    """
    settings = settings or CutoffSettings()
    settings.validate()
    flip_settings = flip_settings or FlipSettings()
    rows = results["row"].to_numpy(dtype=np.int64)
    if settings.method == "none":
        return no_cutoff(rows, "no cutoff asked for (--cutoff none)")
    if canary_count(len(data), settings) < 2 or len(rows) < 2:
        return no_cutoff(rows, f"too few examples ({len(data)}) for canaries")
    canary, replica_history, replica_seconds, replica_examples = canary_results(
        data, run, flip_settings, settings, progress, cache)
    started = time.perf_counter()  # the replica is charged what it first cost, cached or not
    history = history_for(run, data)
    use_history = history is not None  # both sides need it; the replica always has one
    # Class thresholds from the given labels, as confident learning sets them; the canaries
    # are judged against the same ones.
    thresholds = (None if out_of_sample is None
                  else class_thresholds(out_of_sample, data.y.numpy()))
    scanned = signals(results, history, out_of_sample, data.y.numpy()[results["row"]],
                      out_of_sample_flip, thresholds)
    canaries = signals(canary, replica_history if use_history else None, out_of_sample,
                       canary["given_label"].to_numpy(), out_of_sample_flip, thresholds)
    names = list(scanned)
    scores, threshold, recall, weights, canary_scores = fit_cutoff(
        np.stack([scanned[n] for n in names], 1), np.stack([canaries[n] for n in names], 1),
        settings.canary_recall, settings.seed, names)
    suspected = scores >= threshold
    estimate, bounds = estimate_count(scores, canary_scores)
    details = {
        "method": "canaries",
        "canaries": len(canary),
        "canary_labels": settings.canary_labels,
        "replica_examples": replica_examples,
        "calibration": "a replica of the scanned model's recipe and seed, trained with the "
                       "canaries (real examples relabelled to a wrong class); the "
                       "canaries are flip-searched on it and never appear in the outputs",
        "signals": names,
        "weights": weights,
        "canary_recall_target": settings.canary_recall,
        "canary_recall": round(recall, 4),
        "threshold": round(threshold, 6),
        "count_bounds_by_canary_recall": bounds,
        "canary_median_units_to_flip": float(canary["units_to_flip"].median()),
        "seconds": round(replica_seconds + time.perf_counter() - started, 3),
    }
    return Cutoff("canaries", rows, suspected, scores, estimate, details)


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


def mark_suspected(table: pd.DataFrame, cutoff: Cutoff, data: LabeledData) -> pd.DataFrame:
    """``table`` (a suspects table) with ``suspected`` after ``score`` and ``cutoff_score`` last."""
    index = data.index.numpy()[cutoff.rows]
    flagged = dict(zip(index.tolist(), cutoff.suspected.tolist(), strict=True))
    scores = dict(zip(index.tolist(), cutoff.cutoff_score.tolist(), strict=True))
    table = table.copy()
    table.insert(table.columns.get_loc("score") + 1, "suspected",
                 table["index"].map(flagged).fillna(False).astype(bool))
    table["cutoff_score"] = table["index"].map(scores).astype(np.float64)
    return table
