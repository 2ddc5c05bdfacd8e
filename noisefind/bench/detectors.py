"""Detectors: one score per training example, higher = more likely mislabeled.

Every detector is a function ``detector(context) -> np.ndarray`` that returns one float per row
in ``context.rows`` (positions in the training set, in that order). The context holds the
training data, the trained run with its history, and the shared inputs that some detectors need
and that are costly to make (cross-validated probabilities, the flip search, an early-epoch
model). Shared inputs are computed lazily, once, and the context records what each one cost, so
the bench can charge a detector for everything it used (docs/method.md).

The registry :data:`DETECTORS` maps names to functions; :func:`register` adds one. Detectors of
later modules (example-tied dropout, the memorization estimate) register the same way.

Choices the method leaves open, written down here:

- ``final_loss`` is the cross-entropy of the trained model in eval mode (BatchNorm running
  statistics), the state the flip search works on.
- ``aum`` and ``mean_loss`` average the per-epoch values recorded in each example's training
  step (train mode, before that step's update), as Pleiss et al. and Toneva et al. record them.
- ``forgetting`` counts correct -> wrong transitions between consecutive epochs; an example
  never predicted right in any epoch scores ``epochs``, more than any example can be forgotten
  (at most ``epochs // 2`` times).
- ``el2n`` (Paul et al. 2021) uses the run's checkpoint closest to 10% of training (the paper
  scored CIFAR-10 at epoch 20 of 200) and evaluates it in eval mode; the bench trains with
  checkpoints so one is there. Paul et al. average over 10 independently trained models; here
  one model is used. Without a checkpoint, the history at that epoch gives the given label's
  probability ``p = exp(-loss)`` but not the spread over the other classes, so the score is
  ``(1 - p) * sqrt(C / (C - 1))``: the EL2N of that example when the remaining mass is spread
  evenly, and the same ranking as that epoch's training loss.
- ``confident_learning`` runs cleanlab on out-of-sample probabilities from K-fold
  cross-validation (stratified by the given labels; K models trained with :func:`fit`, seeds
  ``seed + 1 .. seed + K``): the examples that ``cleanlab.filter.find_label_issues`` flags come
  first, each group ordered by ``1 - cleanlab.rank.get_label_quality_scores`` (self-confidence).
- ``flip`` is minus the number of units the flip search zeroed (fewer = more suspicious; the
  scan's plain count); ``flip_cost`` is minus its continuous cost.
- ``flip+dynamics`` is the scan's ``cutoff_score`` without K-fold models: the flip cost, the
  loss, AUM and the mean training loss weighed by a logistic regression that tells canaries
  (real examples relabelled in a replica model) from the scored rows
  (:mod:`noisefind.decide.cutoff`);
  it costs one more training, shared with the bench's ``flip_cutoff`` decision. ``cutoff+oos``
  adds the K-fold models' ``oos_margin`` to its signals (the scan's ``--rank-by cutoff``).
- ``noisefind`` is the scan's default order, ``consensus_score``
(:mod:`noisefind.decide.consensus`);
  ``noisefind-fold-flip`` adds the flip search on the fold models to its in-sample witness
  (the default order until the search left it), ``noisefind-no-neighbours`` leaves out the
  neighbours witness, ``noisefind-scanned`` is the order whose in-sample witness read the
  scanned model.
- ``etd`` trains a second model with example-tied dropout (:mod:`noisefind.models.dropout`) and
scores
  minus the label margin with the memorization channels dropped; opt-in, as it costs a training.
- ``memorization`` is the Feldman-Zhang estimate (:mod:`noisefind.analyses.memorization`) from
  ``MemorizationSettings().models`` models trained with the context's training configuration on
  random 70% subsets. It costs that many trainings, so it is opt-in (``register(...,
  default=False)``): the bench runs it only when ``--detectors`` names it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from noisefind.base.errors import NoisefindError
from noisefind.decide.calibration import class_thresholds
from noisefind.decide.consensus import NEIGHBOURS, WITNESSES
from noisefind.models.predict import predict_logits
from noisefind.training.fit import fit

if TYPE_CHECKING:
    pass
from noisefind.bench.context import DetectorContext, el2n_epoch

Detector = Callable[[DetectorContext], np.ndarray]
DETECTORS: dict[str, Detector] = {}
OPT_IN: set[str] = set()  # registered, but run only when asked for by name (too costly)


def register(name: str, default: bool = True) -> Callable[[Detector], Detector]:
    """Decorator: add a detector to :data:`DETECTORS` under ``name``.

    ``default=False`` makes it opt-in: :func:`get_detectors` leaves it out unless named.
    """

    def add(detector: Detector) -> Detector:
        DETECTORS[name] = detector
        if not default:
            OPT_IN.add(name)
        return detector

    return add


def get_detectors(names: Iterable[str] | None = None) -> dict[str, Detector]:
    """The detectors called ``names`` (default: all registered but the opt-in ones), in order.

    Raises
    ------
    NoisefindError
        For a name that is not registered.
    """
    if names is None:
        return {name: d for name, d in DETECTORS.items() if name not in OPT_IN}
    names = list(names)
    unknown = [name for name in names if name not in DETECTORS]
    if unknown:
        raise NoisefindError(f"unknown detector {unknown[0]!r}; choose from "
                             f"{', '.join(DETECTORS)}")
    return {name: DETECTORS[name] for name in names}


def parse_detector_list(text: str) -> list[str]:
    """``"aum,flip"`` -> ``["aum", "flip"]``, checked against the registry."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise NoisefindError("detectors: give at least one detector name", parameter="detectors")
    return list(get_detectors(names))


# --------------------------------------------------------------------------------------------
# Baselines (docs/method.md, "Baseline detectors")


@register("final_loss")
def final_loss(context: DetectorContext) -> np.ndarray:
    """Cross-entropy of the trained model (eval mode) on the given label."""
    rows = torch.from_numpy(context.rows)
    logits = predict_logits(context.run.model, context.data.x_at(rows), context.data.index[rows])
    labels = context.data.y[rows].to(logits.device)
    return F.cross_entropy(logits, labels, reduction="none").cpu().numpy().astype(np.float64)


@register("mean_loss")
def mean_loss(context: DetectorContext) -> np.ndarray:
    """Training loss averaged over the epochs."""
    return context.history.loss.astype(np.float64).mean(0)


@register("aum")
def aum(context: DetectorContext) -> np.ndarray:
    """Area under the margin (Pleiss et al. 2020), negated: low margins are suspicious."""
    return -context.history.margin.astype(np.float64).mean(0)


@register("forgetting")
def forgetting(context: DetectorContext) -> np.ndarray:
    """Forgetting events (Toneva et al. 2019); never-learned examples count as most forgotten."""
    return forgetting_events(context.history.correct)


@register("el2n")
def el2n(context: DetectorContext) -> np.ndarray:
    """EL2N (Paul et al. 2021): ``|softmax - onehot(label)|_2`` early in training."""
    probabilities = context.early_probabilities()
    if probabilities is not None:
        return el2n_from_probabilities(probabilities, context.labels)
    history = context.history
    epoch = el2n_epoch(history.loss.shape[0]) - 1  # history row e-1 is epoch e
    given = np.exp(-history.loss[epoch].astype(np.float64))
    classes = context.data.num_classes
    return (1.0 - given) * np.sqrt(classes / (classes - 1))


@register("confident_learning")
def confident_learning(context: DetectorContext) -> np.ndarray:
    """Confident learning (Northcutt et al. 2021) by cleanlab on cross-validated probabilities."""
    probabilities = context.out_of_sample_probabilities()
    return cleanlab_scores(context.data.y.numpy(), probabilities)[context.rows]


@register("oos_confidence")
def oos_confidence(context: DetectorContext) -> np.ndarray:
    """Out-of-sample self-confidence, negated: the K-fold models' probability of the given
    label (cleanlab's ``self_confidence`` label quality, without its flagged-first order)."""
    probabilities = context.out_of_sample_probabilities()
    return -probabilities[context.rows, context.labels]


@register("oos_margin")
def oos_margin(context: DetectorContext) -> np.ndarray:
    """The out-of-sample class-calibrated margin against the given label
    (:func:`noisefind.decide.calibration.calibrated_margin`): confident learning's per-class
    thresholds kept as a continuous score."""
    from noisefind.decide.calibration import calibrated_margin

    probabilities = context.out_of_sample_probabilities()
    return calibrated_margin(probabilities, context.rows, context.labels,
                             class_thresholds(probabilities, context.data.y.numpy()))


@register("oos+mean_loss")
def oos_mean_loss(context: DetectorContext) -> np.ndarray:
    """Mean of two ranks: out-of-sample self-confidence and the mean training loss (an
    unweighted mix of the strongest out-of-sample and in-sample signals)."""
    ranks = [pd.Series(scores).rank().to_numpy() for scores in (
        oos_confidence(context), mean_loss(context))]
    return (ranks[0] + ranks[1]) / 2


# --------------------------------------------------------------------------------------------
# The flip search (docs/method.md). Every flip-based detector has "flip" in its name.


@register("flip")
def flip(context: DetectorContext) -> np.ndarray:
    """Fewer units zeroed to flip the prediction = more suspicious (the plain count)."""
    return -context.flip_results()["units_to_flip"].to_numpy(dtype=np.float64)


@register("flip_cost")
def flip_cost(context: DetectorContext) -> np.ndarray:
    """The flip search's continuous cost, negated."""
    return -context.flip_results()["flip_cost"].to_numpy(dtype=np.float64)


@register("flip+dynamics")
def flip_dynamics(context: DetectorContext) -> np.ndarray:
    """The scan's ``cutoff_score``: a logistic regression of the flip cost, the loss, AUM and
    the mean training loss, fit to tell canaries (real examples relabelled in a replica model)
    from the scanned rows (:mod:`noisefind.decide.cutoff`). Costs the flip search and one more
    training."""
    return _cutoff_scores(context)


@register("noisefind")
def noisefind_default(context: DetectorContext) -> np.ndarray:
    """The scan's default order (:mod:`noisefind.decide.consensus`): the out-of-sample witness
    (``oos_margin``), the in-sample one read on the fold models (``fold_aum``) and the
    neighbours (``neighbours``), one standardised vote each. Costs the K-fold models and one
    forward pass of each over the data."""
    return _consensus(context)


# The default order until the flip search left it: the flip search's cost on the fold model
# that learned each row beside AUM in the in-sample witness.
FOLD_FLIP_WITNESSES = {**WITNESSES, "in_sample": ("fold_aum", "fold_flip")}


@register("noisefind-fold-flip")
def noisefind_with_fold_flip(context: DetectorContext) -> np.ndarray:
    """``noisefind`` with the flip search's signal (``fold_flip``) in its in-sample witness
    (:data:`FOLD_FLIP_WITNESSES`): the flip search's share of the order, on every run."""
    from noisefind.decide.consensus import consensus_score

    return consensus_score({**_order_signals(context), "fold_flip": -context.fold_flip()},
                           witnesses=FOLD_FLIP_WITNESSES)


@register("noisefind-no-neighbours")
def noisefind_without_neighbours(context: DetectorContext) -> np.ndarray:
    """Ablation of ``noisefind`` without the neighbours witness."""
    return _consensus(context, without=NEIGHBOURS)


# The default order until the in-sample witness moved to the fold models: the scanned model's
# AUM and flip cost in sample, the fold model's flip cost as a fourth ("augmented") witness.
SCANNED_MODEL_WITNESSES = {"out_of_sample": ("oos_margin",), "in_sample": ("aum", "flip_cost"),
                           "augmented": ("fold_flip",), "neighbours": NEIGHBOURS,
                           "backbone": WITNESSES["backbone"]}


@register("noisefind-scanned")
def noisefind_scanned_model(context: DetectorContext) -> np.ndarray:
    """The default order before this release (:data:`SCANNED_MODEL_WITNESSES`): its in-sample
    witness read the scanned model. Kept to compare the two on every run."""
    from noisefind.decide.consensus import consensus_score

    signals = {**_order_signals(context), "fold_flip": -context.fold_flip(),
               "aum": -context.history.margin.astype(np.float64).mean(axis=0),
               "flip_cost": -context.flip_results()["flip_cost"].to_numpy(dtype=np.float64)}
    signals.pop("fold_aum")
    return consensus_score(signals, witnesses=SCANNED_MODEL_WITNESSES)


# Variants of the default order that weigh a witness otherwise, by detector name (also read by
# benchmarks/rescore.py to recompute them from stored scores).
WEIGHTED_ORDERS = {"noisefind-neighbours-x2": {"neighbours": 2.0}}


@register("noisefind-neighbours-x2")
def noisefind_neighbours_twice(context: DetectorContext) -> np.ndarray:
    """Variant of ``noisefind`` whose neighbours witness counts twice: with strong fold models
    the neighbours alone ranked level with the whole order (docs/benchmarks.md)."""
    return _consensus(context, weights=WEIGHTED_ORDERS["noisefind-neighbours-x2"])


@register("aum_folds")
def aum_folds(context: DetectorContext) -> np.ndarray:
    """AUM averaged over the scanned model and the K-1 fold models that trained on each row
    (:meth:`~noisefind.signals.out_of_sample.OutOfSample.fold_aum`), negated. Costs the training and
    the K-fold models."""
    k = context.folds
    return (aum(context) + (k - 1) * fold_aum(context)) / k


@register("fold_aum")
def fold_aum(context: DetectorContext) -> np.ndarray:
    """AUM averaged over the K-1 fold models that trained on each row (with augmentation for
    images), negated. Costs the K-fold models."""
    context.out_of_sample_probabilities()  # the same K models: charge them
    return -context.out_of_sample.fold_aum(context.rows)


@register("fold_flip")
def fold_flip(context: DetectorContext) -> np.ndarray:
    """The flip search's cost on one fold model that trained on each row
    (:meth:`DetectorContext.fold_flip`), negated. Costs the K-fold models and one more
    search."""
    return -context.fold_flip()


@register("neighbours")
def neighbours(context: DetectorContext) -> np.ndarray:
    """How much less the labels of each row's 20 nearest neighbours in the K-fold models'
    feature spaces back its given label than another, each judged against its class's usual
    share: confident learning's calibrated margin on the neighbours' vote
    (:meth:`~noisefind.signals.out_of_sample.OutOfSample.neighbours`). Costs the K-fold models and
    one
    forward pass of each over the data."""
    return context.neighbours()


@register("cutoff+oos")
def cutoff_with_out_of_sample(context: DetectorContext) -> np.ndarray:
    """The scan's ``cutoff_score`` with K-fold models (``--rank-by cutoff``): the cutoff's
    signals (flip cost, loss, AUM, mean training loss) plus ``oos_margin``, weighed on
    canaries (:mod:`noisefind.decide.cutoff`). Costs the flip search, the K-fold models and one more
    training."""
    return _cutoff_scores(context, out_of_sample=True)


@register("oos_flip", default=False)
def oos_flip(context: DetectorContext) -> np.ndarray:
    """The flip search where the example is unseen: how many units talk the model that held it
    out of its prediction, positive when that prediction is not the given label (firmly
    another class = suspicious), negative when it is (firmly the given class = trusted).
    Opt-in: one more flip search, and weaker than the same models' probabilities."""
    return context.out_of_sample_flip(context.rows, context.labels)


@register("cutoff+oos_flip", default=False)
def cutoff_with_oos_flip(context: DetectorContext) -> np.ndarray:
    """``cutoff+oos`` with the ``oos_flip`` signal added (costs one more flip search; opt-in:
    on CIFAR-10N it lowered the AUROC, see docs/benchmarks.md)."""
    return _cutoff_scores(context, out_of_sample=True, oos_flip=True)


def _order_signals(context: DetectorContext) -> dict[str, np.ndarray]:
    """The default order's signals on the context's rows (the same function the scan calls)."""
    from noisefind.decide.consensus import default_order_signals

    return default_order_signals(
        rows=context.rows, labels=context.data.y.numpy(),
        probabilities=context.out_of_sample_probabilities(),
        fold_margin=context.out_of_sample.fold_aum(context.rows),
        neighbours=context.neighbours(),
        backbone_neighbours=context.out_of_sample.backbone_neighbours(context.rows))


def _consensus(context: DetectorContext, without: tuple[str, ...] = (),
               weights: dict[str, float] | None = None) -> np.ndarray:
    """The scan's default order on the context's rows."""
    from noisefind.decide.consensus import consensus_score

    return consensus_score(_order_signals(context), without=without, weights=weights)


def _cutoff_scores(context: DetectorContext, **variant: Any) -> np.ndarray:
    cutoff = context.flip_cutoff(**variant)
    if cutoff.method != "canaries":
        raise NoisefindError(f"the cutoff could not be calibrated: {cutoff.details['note']}")
    return cutoff.cutoff_score


# --------------------------------------------------------------------------------------------
# Detectors built on other modules register below. One that needs a costly input of its own
# makes it through ``context.shared`` so the bench charges it.


@register("etd", default=False)
def etd(context: DetectorContext) -> np.ndarray:
    """Example-tied dropout (docs/method.md), opt-in: a second model trained with
    example-tied dropout; minus each example's label margin once its memorization channels are
    dropped."""
    from dataclasses import replace

    from noisefind.analyses.evaluate import etd_scores

    run = context.shared("etd_run", lambda: fit(context.data, replace(
        context.train_config, dropout="example-tied", checkpoint_every=0, holdout=0.0),
        progress=context.progress))
    return etd_scores(run, context.data)[context.rows]


@register("memorization", default=False)
def memorization(context: DetectorContext) -> np.ndarray:
    """Feldman-Zhang memorization estimate (docs/method.md), opt-in: it trains
    :data:`noisefind.analyses.memorization.MemorizationSettings` ``.models`` subset models."""
    from noisefind.analyses.memorization import MemorizationSettings, memorization_scores

    settings = MemorizationSettings(seed=context.train_config.seed)
    scores = context.shared("memorization", lambda: memorization_scores(
        context.data, context.train_config, settings, progress=context.progress))
    return scores[context.rows]


# --------------------------------------------------------------------------------------------
# Helpers


def forgetting_events(correct: np.ndarray) -> np.ndarray:
    """Correct -> wrong transitions per column of a (epochs, N) bool array.

    Columns never correct score ``epochs``, above the most events possible (``epochs // 2``).
    """
    correct = np.asarray(correct, dtype=bool)
    events = (correct[:-1] & ~correct[1:]).sum(0).astype(np.float64)
    events[~correct.any(0)] = correct.shape[0]
    return events


def el2n_from_probabilities(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """L2 norm of each row of ``probabilities`` minus the one-hot of its label."""
    error = np.asarray(probabilities, dtype=np.float64).copy()
    error[np.arange(len(labels)), labels] -= 1.0
    return np.linalg.norm(error, axis=1)


def cleanlab_scores(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Examples cleanlab flags first, each group by ``1 - label quality`` (self-confidence)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probabilities = np.asarray(probabilities, dtype=np.float64)
    probabilities = probabilities / probabilities.sum(1, keepdims=True)  # float32 softmax drift
    quality = get_label_quality_scores(labels, probabilities)
    # n_jobs=1: cleanlab's process pool costs more than it saves here and fights for the cores.
    flagged = find_label_issues(labels, probabilities, n_jobs=1)
    return flagged.astype(np.float64) + (1.0 - quality)
