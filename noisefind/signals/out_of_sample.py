"""The K fold models: what models that never saw an example, and models that learned it, say
about its label.

A model trained on every label, wrong ones included, memorises them; its loss and flip cost
then tell a wrong label from a hard example only through how training went. K models, each
trained without one fold of the data (:func:`cross_validated_runs`), judge every example as
unseen: their probability of the given label (confident learning's evidence, Northcutt et al.
2021). Each of them also learned the other K-1 folds, so together they give the default order
(:mod:`noisefind.decide.consensus`) all three of its witnesses: the held-out probabilities
(out of sample); the area under the margin over the K-1 models that learned each row
(:func:`fold_margins`; in sample); and their feature spaces, where each row's nearest
neighbours vote with their labels (:mod:`noisefind.signals.neighbours`). Fold models started
from a pretrained backbone add a fourth: the neighbours' vote in the backbone's own features,
before any fold model trained them (:meth:`OutOfSample.backbone_vote`). The flip search on
one of the models that learned a row (:func:`fold_flip_results`) was the in-sample witness's
second signal until it showed no share of the order; the bench keeps it. The flip search on
the model that held a row out (:func:`out_of_sample_flip_costs`) is a signal the cutoff can
weigh (:mod:`noisefind.decide.cutoff`).
:class:`OutOfSample` hands everything over lazily, computing each once.

The K models should generalise, not fit every label: they train on augmented views, and on
colour images with a fast recipe of their own (:func:`out_of_sample_config`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from noisefind.base.console import console
from noisefind.base.device import resolve_device
from noisefind.base.errors import NoisefindError
from noisefind.data.labeled import LabeledData
from noisefind.decide.calibration import margin_judge
from noisefind.models.predict import predict_logits
from noisefind.models.whitened import MIN_SIDE
from noisefind.signals.flip import FlipSettings, flip_search
from noisefind.signals.neighbours import NEIGHBOURS, embeddings, neighbour_probabilities
from noisefind.training.cache import ResultCache, data_key, digest, model_key
from noisefind.training.config import TrainConfig, starting_model
from noisefind.training.fast_recipe import FAST, OWN_BACKBONE, WARM_EPOCHS
from noisefind.training.runs import Run

DEFAULT_FOLDS = 5  # K of the K-fold models: each trains on 4/5 and judges the other 1/5
FOLD_MODEL_SEEDS = 100  # seed step between the models of one fold (TrainConfig.fold_models)


def out_of_sample_config(config: TrainConfig, data: LabeledData) -> TrainConfig:
    """The recipe of out-of-sample (cross-validation) models, from the scanned model's.

    They predict examples they never saw, so they should generalise rather than fit every
    label: they train on augmented views (images only,
    :func:`noisefind.training.views.augment_for`). For colour images of 16 pixels a side or
    more, ``config.fold_recipe="fast"`` trains the whitened CNN with the fast recipe
    (:data:`noisefind.training.fast_recipe.FAST`, its own epoch count, ``config``'s seed and
    device); ``"paper"``, and every other kind of data, keep ``config``'s network, recipe and
    epochs. A backbone is fine-tuned with its own recipe, but ``noisefind:fast`` (the fast
    recipe's network, from pretrained weights) trains with the fast recipe for
    :data:`~noisefind.training.fast_recipe.WARM_EPOCHS`. ``config.fold_epochs``, when given,
    sets the epochs of any of them.
    """
    config = replace(config, augment=True, checkpoint_every=0, holdout=0.0)
    shape = data.input_shape
    colour = data.is_image and shape[0] == 3 and min(shape[1:]) >= MIN_SIDE
    if config.backbone == OWN_BACKBONE:
        if not colour:
            raise NoisefindError(f"backbone {OWN_BACKBONE}: noisefind's fold network is for "
                                 f"colour images of at least {MIN_SIDE} pixels a side",
                                 parameter="backbone")
        config = replace(config, **{**FAST, "epochs": WARM_EPOCHS})
    elif (config.fold_recipe == "fast" and config.backbone is None
          and config.arch in ("auto", "resnet9") and colour):
        config = replace(config, **FAST)
    return replace(config, epochs=config.fold_epochs) if config.fold_epochs else config


def uses_views(run: Run) -> bool:
    """Whether a model predicts through test-time views (the fast recipe's models do)."""
    return run.config.get("train", {}).get("recipe") == "fast"




def cv_folds(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out rows of each fold, stratified by label when every class can fill every fold."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if folds < 2:
        raise NoisefindError(f"folds must be at least 2, got {folds}", parameter="folds")
    if folds > len(labels):
        raise NoisefindError(f"folds {folds}: more folds than the {len(labels)} examples",
                             parameter="folds")
    counts = np.bincount(labels)
    stratify = counts[counts > 0].min() >= folds
    splitter = (StratifiedKFold if stratify else KFold)(folds, shuffle=True, random_state=seed)
    return [held for _, held in splitter.split(np.zeros(len(labels)), labels)]


def cross_validated_runs(data: LabeledData, config: TrainConfig, folds: int = DEFAULT_FOLDS,
                         progress: bool = False,
                         cache: ResultCache | None = None) -> list[tuple[Run, np.ndarray]]:
    """``folds`` models (``config.fold_models`` per fold) trained with :func:`fit`, each with
    the rows it held out.

    Each model trains on the other folds with ``config`` (seed ``config.seed + fold + 1``, and
    ``FOLD_MODEL_SEEDS`` more for each further model of the fold; no checkpoints, no holdout
    of its own). The list runs through the folds once per model of a fold, so the runs of
    one pass are the K models a single model per fold would give (and the cache shares them).
    ``cache`` keeps them. With ``progress``, the first model's time says how long the others
    will take.
    """
    cache = cache or ResultCache(None)
    runs = []
    splits = cv_folds(data.y.numpy(), folds, config.seed)
    total = folds * config.fold_models
    for repeat in range(config.fold_models):
        for fold, held in enumerate(splits):
            kept = np.setdiff1d(np.arange(len(data)), held)
            fold_config = replace(config, seed=config.seed + fold + 1 + FOLD_MODEL_SEEDS * repeat,
                                  checkpoint_every=0, holdout=0.0, fold_models=1)
            started = time.perf_counter()
            run = cache.fit(data.subset(torch.from_numpy(kept)), fold_config, progress=progress)
            runs.append((run, held))
            took = time.perf_counter() - started
            # A model read back from the cache took a fraction of the training it records.
            if progress and len(runs) == 1 and total > 1 and took >= 0.5 * run.config["seconds"]:
                console.print(f"fold model 1 of {total} trained in {took:.0f} s; the other "
                              f"{total - 1} take about {took * (total - 1):.0f} s",
                              highlight=False)
    return runs


def held_out_probabilities(data: LabeledData,
                           fold_runs: list[tuple[Run, np.ndarray]]) -> np.ndarray:
    """(N, C) softmax of every row by the fold model that held it out, averaged over the
    models that did when a fold has several."""
    probabilities = np.zeros((len(data), data.num_classes), dtype=np.float64)
    models = np.zeros(len(data))
    for run, held in fold_runs:
        held_rows = torch.from_numpy(held)
        logits = predict_logits(run.model, data.x_at(held_rows), data.index[held_rows],
                                views=uses_views(run))
        probabilities[held] += torch.softmax(logits, 1).cpu().numpy()
        models[held] += 1
    return probabilities / models[:, None]


def fold_margins(fold_runs: list[tuple[Run, np.ndarray]], n: int) -> np.ndarray:
    """(2, N): the sum over the fold models that trained on each row of its area under the
    margin (its label margin averaged over that model's epochs), and how many models that is.

    Each of K fold models trains on K-1 folds, so every row was learned by K-1 of them: K-1
    more records of how hard its label was to fit, which the scan's own model gives once.
    """
    total, count = np.zeros(n), np.zeros(n)
    for run, held in fold_runs:
        if run.history is None:
            raise NoisefindError("a fold model has no training history")
        kept = np.setdiff1d(np.arange(n), held)  # the fold's training rows, in its order
        total[kept] += run.history.margin.astype(np.float64).mean(0)
        count[kept] += 1
    return np.stack([total, count])


def held_by(fold_runs: list[tuple[Run, np.ndarray]], n: int) -> np.ndarray:
    """The position in ``fold_runs`` of a model that held out each of ``n`` rows (the last
    one, when a fold has several models)."""
    fold_of = np.empty(n, dtype=np.int64)
    for fold, (_, held) in enumerate(fold_runs):
        fold_of[held] = fold
    return fold_of


def out_of_sample_flip_costs(data: LabeledData, fold_runs: list[tuple[Run, np.ndarray]],
                             rows: np.ndarray, settings: FlipSettings, progress: bool = False,
                             cache: ResultCache | None = None,
                             ) -> tuple[np.ndarray, np.ndarray, float]:
    """The flip search run where the example is unseen: on the fold model that held each row
    out, away from that model's own prediction.

    A model that never saw an example predicts its class from what the class shares; how many
    units it takes to talk that model out of its prediction measures how firmly the example
    looks like that class, in the units the flip search counts.

    Returns
    -------
    costs : numpy.ndarray
        Flip cost per row of ``rows`` (:func:`noisefind.signals.flip.flip_search`'s ``flip_cost``).
    predicted : numpy.ndarray
        The fold model's prediction per row.
    seconds : float
        What the searches cost (as first computed, when read back from ``cache``).
    """
    rows = np.asarray(rows, dtype=np.int64)
    predicted = np.full(len(rows), -1, dtype=np.int64)

    def own_guesses(run: Run, at: np.ndarray) -> LabeledData:
        mine = torch.from_numpy(rows[at])
        guess = predict_logits(run.model, data.x_at(mine), data.index[mine]).argmax(1).cpu()
        predicted[at] = guess.numpy()
        y = data.y.clone()
        y[mine] = guess
        return replace(data, y=y)

    results, seconds = _searches_per_fold("oos_flip", fold_runs, rows,
                                          held_by(fold_runs, len(data))[rows], own_guesses,
                                          settings, progress, cache)
    return results["flip_cost"].to_numpy(dtype=np.float64), predicted, seconds


def learners(fold_runs: list[tuple[Run, np.ndarray]], rows: np.ndarray, n: int) -> np.ndarray:
    """The fold model that learned each of ``rows`` for the in-sample evidence: the one after
    the fold that held it out (every row is learned by K - 1 models; one flip search each)."""
    return (held_by(fold_runs, n)[np.asarray(rows, dtype=np.int64)] + 1) % len(fold_runs)


def fold_flip_results(data: LabeledData, fold_runs: list[tuple[Run, np.ndarray]],
                      rows: np.ndarray, settings: FlipSettings, progress: bool = False,
                      cache: ResultCache | None = None) -> tuple[pd.DataFrame, float]:
    """The flip search run where the example was learned: on one fold model that trained on
    each row (:func:`learners`), away from the given label.

    The fold models learned each label from a different seed and with augmentation; what it
    takes to talk one of them out of a label it learned (the bench's ``fold_flip`` and
    ``noisefind-fold-flip``; no longer in the default order, docs/benchmarks.md).

    Returns
    -------
    results : pandas.DataFrame
        :func:`noisefind.signals.flip.flip_search`'s columns, one row per row of ``rows`` in
        that order, with ``fold``: the model searched.
    seconds : float
        What the searches cost (as first computed, when read back from ``cache``).
    """
    rows = np.asarray(rows, dtype=np.int64)
    return _searches_per_fold("fold_flip", fold_runs, rows, learners(fold_runs, rows, len(data)),
                              lambda run, at: data, settings, progress, cache)


def _searches_per_fold(kind: str, fold_runs: list[tuple[Run, np.ndarray]], rows: np.ndarray,
                       searched_on: np.ndarray,
                       labelled: Callable[[Run, np.ndarray], LabeledData],
                       settings: FlipSettings, progress: bool,
                       cache: ResultCache | None) -> tuple[pd.DataFrame, float]:
    """The flip search of each of ``rows`` on fold model ``searched_on`` (one cached search per
    model), away from the labels of ``labelled(run, positions in rows)``: its results in the
    order of ``rows``, with the ``fold`` searched; and the seconds."""
    cache = cache or ResultCache(None)
    parts, seconds = [], 0.0
    for fold, (run, _) in enumerate(fold_runs):
        at = np.flatnonzero(searched_on == fold)
        if not len(at):
            continue
        data = labelled(run, at)
        key = digest(kind, data_key(data), model_key(run.model), settings.as_dict(), rows[at])
        table, took = cache.table(key, lambda model=run.model, d=data, r=rows[at]: flip_search(
            model, d, settings, rows=torch.from_numpy(r), progress=progress))
        seconds += took
        parts.append(table.assign(fold=fold))
    results = pd.concat(parts).set_index("row", drop=False).loc[rows].reset_index(drop=True)
    return results, seconds


def signed_flip(costs: np.ndarray, predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The ``oos_flip`` signal: how firmly an unseen-example model holds its prediction
    (``log1p`` of the flip cost away from it), positive where that prediction is not the given
    label (firmly another class: suspicious), negative where it is (firmly the given class)."""
    firmness = np.log1p(np.clip(np.asarray(costs, dtype=np.float64), 0.0, None))
    return np.where(np.asarray(predicted) != np.asarray(labels), firmness, -firmness)


class OutOfSample:
    """K-fold evidence for one data set, computed on first use and then kept.

    Parameters
    ----------
    data : LabeledData
        The training set with its given labels.
    config : TrainConfig
        The scanned model's recipe; the K models use :func:`out_of_sample_config` of it.
    folds : int
        K.
    flip_settings : FlipSettings, optional
        Settings of the flip search on the K models (default: the scan's defaults).
    progress : bool
        Progress bars while training and searching.
    cache : ResultCache, optional
        Keeps the K models, their probabilities and searches (resume).

    Attributes
    ----------
    seconds : dict of str to float
        What ``"cross_validation"`` (the K models and their probabilities), ``"oos_flip"``
        and ``"fold_flip"`` (the searches), ``"neighbours"`` and ``"backbone_neighbours"``
        cost so far, as first computed.
    """

    def __init__(self, data: LabeledData, config: TrainConfig, folds: int = DEFAULT_FOLDS, *,
                 flip_settings: FlipSettings | None = None, progress: bool = False,
                 cache: ResultCache | None = None):
        if folds < 2:
            raise NoisefindError(f"folds must be at least 2, got {folds}")
        self.data, self.folds, self.progress = data, folds, progress
        self.config = out_of_sample_config(config, data)
        self.flip_settings = flip_settings or FlipSettings()
        self.cache = cache or ResultCache(None)
        self.seconds: dict[str, float] = {}
        self._probabilities: np.ndarray | None = None
        self._runs: list[tuple[Run, np.ndarray]] | None = None
        self._fold_margins: np.ndarray | None = None
        self._votes: dict[str, np.ndarray] = {}  # the neighbours' votes, by cache key

    def runs(self) -> list[tuple[Run, np.ndarray]]:
        """The K models with the rows each held out."""
        if self._runs is None:
            self._runs = cross_validated_runs(self.data, self.config, self.folds, self.progress,
                                              self.cache)
        return self._runs

    def probabilities(self) -> np.ndarray:
        """(N, C) out-of-sample probabilities of every row."""
        if self._probabilities is None:
            key = digest("cross_validation", data_key(self.data), self.config.__dict__,
                         self.folds)
            self._probabilities, self.seconds["cross_validation"] = self.cache.array(
                key, lambda: held_out_probabilities(self.data, self.runs()))
        return self._probabilities

    def fold_aum(self, rows: np.ndarray) -> np.ndarray:
        """The area under the margin of ``rows`` averaged over the K-1 fold models that trained
        on each (:func:`fold_margins`)."""
        if self._fold_margins is None:
            key = digest("fold_margins", data_key(self.data), self.config.__dict__, self.folds)
            self._fold_margins, _ = self.cache.array(
                key, lambda: fold_margins(self.runs(), len(self.data)))
        total, count = self._fold_margins[:, np.asarray(rows, dtype=np.int64)]
        return total / count

    def fold_flip_results(self, rows: np.ndarray) -> pd.DataFrame:
        """The flip search of ``rows`` on one fold model that trained on each
        (:func:`fold_flip_results`), in the order of ``rows``."""
        results, self.seconds["fold_flip"] = fold_flip_results(
            self.data, self.runs(), rows, self.flip_settings, self.progress, self.cache)
        return results

    def fold_flip(self, rows: np.ndarray) -> np.ndarray:
        """Flip cost of ``rows`` on one fold model that trained on each."""
        return self.fold_flip_results(rows)["flip_cost"].to_numpy(dtype=np.float64)

    def neighbours(self, rows: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
        """The ``neighbours`` signal of ``rows``: the calibrated margin
        (:func:`~noisefind.decide.calibration.margin_judge`) of the labels of each row's ``k``
        nearest neighbours, in the K models' feature spaces
        (:func:`noisefind.signals.neighbours.neighbour_probabilities`), against the given label;
        per-class thresholds from every example's own neighbours.
        A data set of ``k`` examples or fewer uses all the others as neighbours."""
        vote = self._vote(
            "neighbour_probabilities", "neighbours", k,
            lambda: (embeddings(run.model, self.data.x, self.data.index, views=uses_views(run))
                     for run, _ in self.runs()))  # one feature space in memory at a time
        return self._margin(vote, rows)

    def backbone_vote(self, k: int = NEIGHBOURS) -> np.ndarray | None:
        """(N, C) share of each example's ``k`` nearest neighbours that carry each label, in
        the feature space of the pretrained backbone itself, as the fold models start from it
        (before any of these labels trained it, so a wrong label cannot have moved its
        example); None without pretrained weights."""
        if self.config.backbone_weights is None:
            return None
        return self._vote("backbone_neighbour_probabilities", "backbone_neighbours", k,
                          lambda: [self.backbone_embeddings()])

    def backbone_embeddings(self) -> torch.Tensor | None:
        """(N, D) features of every example in the pretrained backbone, as the fold models
        start from it (no label of the data has trained it); None without pretrained
        weights."""
        if self.config.backbone_weights is None:
            return None
        model = starting_model(self.config, self.data).to(resolve_device(self.config.device))
        return embeddings(model, self.data.x, self.data.index, views=self.config.recipe == "fast")

    def backbone_neighbours(self, rows: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray | None:
        """The ``backbone_neighbours`` signal of ``rows``: as :meth:`neighbours`, on
        :meth:`backbone_vote`; None without pretrained weights."""
        vote = self.backbone_vote(k)
        return None if vote is None else self._margin(vote, rows)

    def _vote(self, name: str, stage: str, k: int,
              spaces: Callable[[], Iterable[torch.Tensor]]) -> np.ndarray:
        """The neighbours' vote over the feature ``spaces()`` (computed once, cached as
        ``name``, its seconds as ``stage``)."""
        k = min(k, len(self.data) - 1)
        key = digest(name, data_key(self.data), self.config.__dict__, self.folds, k)
        if key not in self._votes:
            self._votes[key], self.seconds[stage] = self.cache.array(
                key, lambda: neighbour_probabilities(spaces(), self.data.y.numpy(),
                                                     num_classes=self.data.num_classes, k=k))
        return self._votes[key]

    def _margin(self, vote: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The calibrated margin of ``rows``' given labels in ``vote``."""
        labels = self.data.y.numpy()
        rows = np.asarray(rows, dtype=np.int64)
        return margin_judge(vote, labels)(rows, labels[rows])

    def flip(self, rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The ``oos_flip`` signal (:func:`signed_flip`) of ``rows`` under ``labels``."""
        costs, predicted, seconds = out_of_sample_flip_costs(
            self.data, self.runs(), rows, self.flip_settings, self.progress, self.cache)
        self.seconds["oos_flip"] = self.seconds.get("oos_flip", 0.0) + seconds
        return signed_flip(costs, predicted, labels)
