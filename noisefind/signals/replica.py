"""Canaries in a replica model: how a wrong label looks in this data, for the cutoff."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from noisefind.base.console import console
from noisefind.data.labeled import LabeledData
from noisefind.decide.calibration import class_thresholds
from noisefind.decide.count import count_from_canaries, estimate_count
from noisefind.decide.cutoff import Cutoff, CutoffSettings, fit_cutoff, no_cutoff
from noisefind.models.predict import predict_logits
from noisefind.signals.dynamics import RowSignal, history_for, signals
from noisefind.signals.flip import FlipSettings, flip_search
from noisefind.training.cache import ResultCache, data_key, digest
from noisefind.training.config import TrainConfig
from noisefind.training.runs import History, Run

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
    config = TrainConfig.from_dict(run.config["train"])
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
        :func:`noisefind.signals.flip.flip_search` results of the scanned rows.
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
    count = count_from_canaries(scores, canary_scores, seed=settings.seed)
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
    return Cutoff("canaries", rows, suspected, scores, estimate, details,
                  interval=(count.low, count.high))
