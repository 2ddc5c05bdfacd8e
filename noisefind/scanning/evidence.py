"""A ranking from evidence the user brings: out-of-sample probabilities and features.

Users who already have a strong model (or embeddings) need no training from noisefind: their
cross-validated probabilities are the out-of-sample witness of the default order, and their
features are the space in which the neighbours witness reads the labels around each example
(:mod:`noisefind.decide.consensus`). The witnesses that need noisefind's own models (the flip
search, the training dynamics) have no vote; the order is the same sum over the witnesses
that speak, so given a scan's own fold probabilities and features it reproduces that scan's
``oos_margin`` and ``neighbours`` columns.

The count comes from canaries (:func:`noisefind.decide.count.count_with_canaries`): rows scored
again, exactly, under a wrong label drawn from the confusions that confident learning sees in
the probabilities (with features too: only those the neighbours' vote also sees,
:func:`noisefind.decide.count.agreed_classes`), on the out-of-sample witness alone (on the
neighbours' vote when only features are given); the flag takes that many from the top of the
order. The neighbours are left out of the count unless ``count_from`` asks for them: in a
feature space trained on these labels a relabelled row stands among neighbours that carry its
true label, which real errors, clustered among alike images, often do not (on CIFAR-10N's
human noise canaries scored on both witnesses under-counted by a third to three quarters,
docs/benchmarks.md); in embeddings no label trained it stands where a real error stands.
Confident learning's own count of the same probabilities is reported beside it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from noisefind.base.errors import NoisefindError
from noisefind.data.load import class_codes
from noisefind.decide.calibration import margin_judge
from noisefind.decide.consensus import SIGNALS, consensus_score, flag_top, witnesses_voting
from noisefind.decide.count import (
    CountEstimate,
    agreed_classes,
    confident_classes,
    confident_count,
    count_with_canaries,
    held_out_agreement,
    likeliest_classes,
)
from noisefind.scanning.export import TrainingSet, write_training_set
from noisefind.scanning.outputs import write_summary, write_suspects
from noisefind.scanning.review import write_review
from noisefind.signals.neighbours import NEIGHBOURS, neighbour_probabilities

EVIDENCE_WITNESSES = {"pred_probs": "out_of_sample", "features": "neighbours"}
COUNTED_SIGNAL = {"pred_probs": "oos_margin", "features": "neighbours"}


def rank_evidence(labels: np.ndarray, classes: list[str], *,
                  pred_probs: np.ndarray | None = None,
                  features: list[np.ndarray] | None = None,
                  k: int = NEIGHBOURS, seed: int = 0, count_from: str | None = None,
                  true_labels: np.ndarray | None = None,
                  paths: list[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """The default order over the witnesses the evidence feeds, the count and the flag.

    Inputs are checked by :func:`noisefind.rank_label_issues`; this assumes them valid:
    ``labels`` integers in 0 .. C-1, ``pred_probs`` (N, C) probabilities, ``features`` one
    or more (N, D) arrays (feature spaces, say of several models, whose votes are averaged),
    ``count_from`` the evidence whose witness the canaries are scored on (None: ``pred_probs``
    when given).

    Returns
    -------
    table : pandas.DataFrame
        One row per example, most suspicious first (the columns: docs/outputs.md).
    summary : dict
        Counts, the witnesses used, the estimate and its interval, timings; AUROC, AUPRC,
        precision and recall when ``true_labels`` are given.
    """
    started = time.perf_counter()
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(len(labels))
    names = np.array(classes, dtype=object)
    judges, columns, vote = witness_judges(labels, names, pred_probs=pred_probs,
                                           features=features, k=k)
    seconds = {"neighbours": time.perf_counter() - started} if features is not None else {}
    signals = {name: judge(rows, labels) for name, judge in judges.items()}
    score = consensus_score(signals, without=tuple(s for s in SIGNALS if s not in signals))
    began = time.perf_counter()
    count_from = count_from or ("pred_probs" if pred_probs is not None else "features")
    counted = COUNTED_SIGNAL[count_from]
    count, canaries, learning = evidence_count(labels, signals[counted], judges[counted],
                                               pred_probs=pred_probs, vote=vote, seed=seed)
    seconds["count"] = time.perf_counter() - began
    table = pd.DataFrame({"index": rows, "path": "" if paths is None else list(paths),
                          "given_label": names[labels],
                          "suggested_label": columns.get("oos_label",
                                                         columns.get("neighbour_label")),
                          "suspected": flag_top(score, count.estimate),
                          "consensus_score": score, **signals, **columns})
    if true_labels is not None:
        table["true_label"] = names[np.asarray(true_labels, dtype=np.int64)]
        table["is_noisy"] = table["true_label"] != table["given_label"]
    table = table.sort_values(["consensus_score", "index"], ascending=[False, True],
                              kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    seconds["total"] = time.perf_counter() - started
    summary = {"examples": len(labels), "classes": len(classes), "rank_by": "consensus",
               "evidence": [name for name in EVIDENCE_WITNESSES
                            if {"pred_probs": pred_probs, "features": features}[name]
                            is not None],
               "witnesses": witnesses_voting(signals),
               "neighbours_k": min(k, len(labels) - 1) if features is not None else None,
               "feature_spaces": 0 if features is None else len(features),
               "count_from": count_from,
               **count.as_dict(), "canaries": canaries,
               "confident_joint_estimate": round(learning, 1),
               "flagged": int(table["suspected"].sum()),
               "seconds": {name: round(value, 3) for name, value in seconds.items()}}
    if pred_probs is not None:
        likeliest = likeliest_classes(pred_probs)
        summary["held_out_agreement"] = round(
            held_out_agreement(labels, pred_probs, likeliest=likeliest), 4)
        summary.update(column_order_warnings(labels, likeliest))
    if "is_noisy" in table:
        summary.update(truth_figures(table))
    return table, summary


def evidence_count(labels: np.ndarray, signal: np.ndarray, judge, *,
                   pred_probs: np.ndarray | None, vote: np.ndarray | None,
                   seed: int) -> tuple[CountEstimate, int, float]:
    """The canaries' count of one witness (its ``signal`` under the given labels, ``judge``
    to score canaries), how many canaries, and confident learning's count of the
    probabilities (the neighbours' ``vote`` without them).

    The canaries' labels follow the confusions confident learning sees in the probabilities;
    with a ``vote`` too, only those it also sees (:func:`noisefind.decide.count.agreed_classes`).
    """
    probabilities = pred_probs if pred_probs is not None else vote
    guesses = confident_classes(labels, probabilities)
    drawn_from = guesses
    if pred_probs is not None and vote is not None:
        drawn_from = agreed_classes(guesses, confident_classes(labels, vote))
    count, canaries = count_with_canaries(labels, drawn_from, probabilities.shape[1], signal,
                                          judge, seed=seed)
    learning = confident_count(labels, probabilities, guesses=guesses, resamples=0)
    return count, canaries, learning.estimate


def column_order_warnings(labels: np.ndarray, likeliest: np.ndarray) -> dict:
    """``{"warnings": [...]}`` when for most classes the probabilities' ``likeliest`` class
    (:func:`noisefind.decide.count.likeliest_classes`) is mostly another than the label
    (:func:`classes_given_elsewhere`), else ``{}``: a model that learned anything puts most of
    a class's rows in it, so the columns are likely out of the labels' order."""
    elsewhere, present = classes_given_elsewhere(labels, likeliest)
    if elsewhere <= present / 2:
        return {}
    return {"warnings": [f"for {elsewhere} of {present} classes the likeliest class in "
                         "pred_probs is mostly another than the label: are its columns in the "
                         "labels' order? (label names are sorted unless classes gives the "
                         "columns' order)"]}


def witness_judges(labels: np.ndarray, names: np.ndarray, *, pred_probs: np.ndarray | None,
                   features: list[np.ndarray] | None, k: int):
    """Per witness the evidence feeds, a function ``judge(rows, labels)`` giving its signal
    for those rows under those labels; the table's columns of each; and the neighbours'
    (N, C) vote (None without features)."""
    judges, columns, vote = {}, {}, None
    rows = np.arange(len(labels))
    if pred_probs is not None:
        judges["oos_margin"] = margin_judge(pred_probs, labels)
        columns["oos_confidence"] = np.asarray(pred_probs[rows, labels], dtype=np.float64)
        likeliest = likeliest_other(pred_probs, labels)
        columns["oos_label"] = names[likeliest]
        columns["oos_label_probability"] = np.asarray(pred_probs[rows, likeliest],
                                                      dtype=np.float64)
    if features is not None:
        spaces = [F.normalize(torch.from_numpy(np.array(f, dtype=np.float32)), dim=1)
                  for f in features]
        vote = neighbour_probabilities(spaces, labels, num_classes=len(names),
                                       k=min(k, len(labels) - 1))
        judges["neighbours"] = margin_judge(vote, labels)
        columns["neighbour_label"] = names[likeliest_other(vote, labels)]
    return judges, columns, vote


def checked_evidence(labels, *, pred_probs=None, features=None, classes=None, k: int = NEIGHBOURS,
                     count_from: str | None = None
                     ) -> tuple[np.ndarray, list[str], np.ndarray | None, list[np.ndarray] | None]:
    """The evidence as :func:`rank_evidence` takes it, or a :class:`NoisefindError` naming the
    parameter at fault: labels as integers, the class names, the probabilities (never copied:
    a memory-mapped array stays on disk) and a list of feature spaces."""
    if pred_probs is None and features is None:
        raise NoisefindError("give pred_probs, features or both: the evidence to rank by",
                             parameter=("pred_probs", "features"))
    if count_from is not None:
        if count_from not in COUNTED_SIGNAL:
            raise NoisefindError(f"count_from must be one of {', '.join(COUNTED_SIGNAL)}, got "
                                 f"{count_from!r}", parameter="count_from")
        if {"pred_probs": pred_probs, "features": features}[count_from] is None:
            raise NoisefindError(f"count_from is {count_from} but no {count_from} are given",
                                 parameter=("count_from", count_from))
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) < 2:
        raise NoisefindError(f"labels: give one label per example (a 1-D array of 2 or more), "
                             f"got shape {labels.shape}", parameter="labels")
    if pred_probs is not None:
        pred_probs = _checked_probabilities(pred_probs, len(labels))
    if np.issubdtype(labels.dtype, np.integer):
        count = int(labels.max()) + 1 if pred_probs is None else pred_probs.shape[1]
        names = [str(c) for c in range(count)] if classes is None else [str(c) for c in classes]
        codes = labels.astype(np.int64)
    elif classes is not None:
        names = [str(c) for c in classes]
        codes = class_codes(labels, names)
    elif pred_probs is not None:
        raise NoisefindError("labels: with pred_probs give integer labels (label k is column k "
                             "of pred_probs) or classes, the names of its columns in order",
                             parameter=("labels", "classes"))
    else:
        found, codes = np.unique(labels.astype(str), return_inverse=True)
        names = list(found)
    if pred_probs is not None and pred_probs.shape[1] != len(names):
        raise NoisefindError(f"pred_probs has {pred_probs.shape[1]} columns for "
                             f"{len(names)} classes", parameter=("pred_probs", "classes"))
    if codes.min() < 0 or codes.max() >= len(names):  # names map inside; numbers may not
        raise NoisefindError(f"labels must lie in 0..{len(names) - 1} (one per class), got "
                             f"{codes.min()}..{codes.max()}", parameter="labels")
    if features is not None:
        features = _checked_features(features, len(labels))
        if not 1 <= k:
            raise NoisefindError(f"k must be 1 or more, got {k}", parameter="k")
    return codes, names, pred_probs, features


def _checked_probabilities(pred_probs, n: int) -> np.ndarray:
    if not isinstance(pred_probs, np.ndarray):
        pred_probs = np.asarray(pred_probs.detach().cpu() if isinstance(pred_probs, torch.Tensor)
                                else pred_probs)
    if pred_probs.ndim != 2 or len(pred_probs) != n or pred_probs.shape[1] < 2:
        raise NoisefindError(f"pred_probs must be ({n}, C) with C >= 2 classes, one row per "
                             f"label; got shape {pred_probs.shape}", parameter="pred_probs")
    if not np.issubdtype(pred_probs.dtype, np.floating):
        raise NoisefindError(f"pred_probs must be floats, got {pred_probs.dtype}",
                             parameter="pred_probs")
    for start in range(0, n, 8192):
        block = np.asarray(pred_probs[start:start + 8192], dtype=np.float64)
        if not np.isfinite(block).all() or (block < 0).any():
            raise NoisefindError("pred_probs has a missing, infinite or negative value",
                                 parameter="pred_probs")
        bad = np.flatnonzero(np.abs(block.sum(1) - 1) > 1e-3)
        if len(bad):
            raise NoisefindError(
                f"pred_probs row {start + bad[0]} sums to {block[bad[0]].sum():.4g}, not 1: "
                "give probabilities (a softmax of the logits)", parameter="pred_probs")
    return pred_probs


def _checked_features(features, n: int) -> list[np.ndarray]:
    spaces = list(features) if isinstance(features, list | tuple) else [features]
    checked = []
    for space in spaces:
        space = np.asarray(space.detach().cpu() if isinstance(space, torch.Tensor) else space)
        if space.ndim != 2 or len(space) != n:
            raise NoisefindError(f"features must be ({n}, D), one row per label; got shape "
                                 f"{space.shape}", parameter="features")
        if not np.isfinite(space).all():
            raise NoisefindError("features has a missing or infinite value",
                                 parameter="features")
        checked.append(space)
    if not checked:
        raise NoisefindError("features: give at least one (N, D) array", parameter="features")
    return checked


def classes_given_elsewhere(labels: np.ndarray, likeliest: np.ndarray) -> tuple[int, int]:
    """How many classes' rows most often have another ``likeliest`` class than their label, of
    how many classes have rows. Most of them at once means the probabilities' columns are
    likely not in the labels' order rather than a weak model."""
    classes = int(max(labels.max(), likeliest.max())) + 1
    pairs, counts = np.unique(labels * classes + likeliest, return_counts=True)
    given, guessed = pairs // classes, pairs % classes
    order = np.lexsort((-counts, given))  # each label's commonest guess first
    first = np.unique(given[order], return_index=True)[1]
    return int((guessed[order][first] != given[order][first]).sum()), len(first)


def likeliest_other(probabilities: np.ndarray, labels: np.ndarray,
                    block: int = 8192) -> np.ndarray:
    """Per row, the likeliest class other than its label (read ``block`` rows at a time)."""
    found = np.empty(len(labels), dtype=np.int64)
    for start in range(0, len(labels), block):
        part = np.array(probabilities[start:start + block], dtype=np.float64)
        part[np.arange(len(part)), labels[start:start + block]] = -np.inf
        found[start:start + block] = part.argmax(axis=1)
    return found


def truth_figures(table: pd.DataFrame) -> dict:
    """AUROC and AUPRC of the order, and the flag's precision and recall, against the truth."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    noisy = table["is_noisy"].to_numpy()
    flagged = table["suspected"].to_numpy()
    figures = {"mislabeled": int(noisy.sum())}
    if 0 < noisy.sum() < len(noisy):
        figures["auroc_consensus_score"] = round(float(
            roc_auc_score(noisy, table["consensus_score"])), 4)
        figures["auprc_consensus_score"] = round(float(
            average_precision_score(noisy, table["consensus_score"])), 4)
    if flagged.any():
        figures["flag_precision"] = round(float(noisy[flagged].mean()), 4)
    if noisy.any():
        figures["flag_recall"] = round(float(flagged[noisy].mean()), 4)
    return figures


def write_ranking(table: pd.DataFrame, summary: dict, out: Path, *, labels: np.ndarray,
                  classes: list[str], paths: list[str] | None = None,
                  true_labels: np.ndarray | None = None) -> list[Path]:
    """Write a ranking's ``suspects.csv``, ``training_set.npz`` (for ``review`` and
    ``export``), ``summary.json`` and ``report.html`` into ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    training = TrainingSet(index=np.arange(len(labels)), y=labels, classes=list(classes),
                           name=str(summary.get("data", "evidence")),
                           paths=None if paths is None else [str(p) for p in paths],
                           true_y=true_labels)
    written = [write_suspects(table, out), write_training_set(training, out),
               write_summary(summary, out)]
    return [*written, write_review(out)]
