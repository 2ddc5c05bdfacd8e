"""The library: ``noisefind.find_label_issues`` and ``noisefind.scan``, data in, a result out.

:func:`scan` is the one scan request: it makes every decision between the user's options and
the pipeline (:func:`noisefind.scanning.pipeline.scan`): which model to scan, whether the run's
training noise is inherited, which settings follow. The CLI maps its flags onto it and prints.
:func:`find_label_issues` is the same call for inputs in any form: ``x`` may be an array or
tensor (images N x C x H x W, N x H x W or N x H x W x C; a table N x D), a
``torch.utils.data.Dataset`` of ``(input, label)`` pairs, a
:class:`~noisefind.data.labeled.LabeledData`, or a path that :func:`noisefind.load_data` reads.

Nothing is written unless ``out`` is given. Errors are
:class:`~noisefind.base.errors.NoisefindError` naming the parameter at fault.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from torch import nn

from noisefind.base.console import console
from noisefind.base.errors import NoisefindError
from noisefind.data.arrays import as_labeled_data
from noisefind.data.labeled import LabeledData
from noisefind.decide.cutoff import CutoffSettings
from noisefind.models.own import is_model_spec
from noisefind.scanning import pipeline
from noisefind.scanning.evidence import checked_evidence, rank_evidence, write_ranking
from noisefind.scanning.pipeline import ScanResult, prepare_out
from noisefind.signals.flip import FlipSettings
from noisefind.signals.neighbours import NEIGHBOURS
from noisefind.signals.out_of_sample import DEFAULT_FOLDS
from noisefind.training.config import BACKBONE_LR, TrainConfig
from noisefind.training.runs import (
    RANKING_SIGNALS,
    Run,
    check_compatible,
    is_own,
    load_own_model,
    load_run,
    own_run,
)

LabelIssues = ScanResult  # the name of the first releases
TRAINING_OPTIONS = ("epochs", "width", "arch", "batch_size", "lr")
OWN_MODEL_OPTIONS = ("weights", "mean", "std")


def find_label_issues(x, labels=None, *, classes=None, image_size: int | None = None,
                      memory_budget: int | str | None = None, progress: bool = False,
                      **options) -> ScanResult:
    """Rank the examples of ``x`` by how likely their ``labels`` are wrong.

    Parameters
    ----------
    x : array, tensor, Dataset, LabeledData or path
        The training inputs (see the module docstring). Images are float in [0, 1] (uint8 is
        divided by 255); tables are raw features.
    labels : array-like, optional
        One label per example (any values; sorted into classes). None when ``x`` carries its
        labels (a path, a Dataset, a LabeledData).
    classes : list of str or int, optional
        Class names, label k meaning ``classes[k]`` (labels must then be 0 .. K-1), or just the
        number of classes: for a model with more outputs than the labels show.
    image_size : int, optional
        Resize images to this side (bilinear) before anything else.
    memory_budget : int or str, optional
        For image files: bytes (or ``"4GB"``) of decoded images to hold in memory; a larger set
        streams from the disk cache. Default: ``$NOISEFIND_MEMORY_BUDGET``, else half of the
        memory available.
    progress : bool
        Progress bars and messages on the terminal.
    **options
        Any option of :func:`scan` (``model``, ``out``, ``epochs``, ``limit``, ...).

    Returns
    -------
    ScanResult
        ``table`` (``index`` is the row of ``x``), ``summary`` and ``run``.
    """
    data = as_labeled_data(x, labels, image_size=image_size, classes=classes, progress=progress,
                           memory_budget=memory_budget)
    return scan(data, progress=progress, **options)


def rank_label_issues(labels, *, pred_probs=None, features=None, classes=None,
                      k: int = NEIGHBOURS, seed: int = 0, count_from: str | None = None,
                      true_labels=None, paths=None,
                      name: str = "evidence", out: str | Path | None = None,
                      overwrite: bool = False) -> ScanResult:
    """Rank examples by how likely their ``labels`` are wrong, from evidence already at hand.

    No model is trained: ``pred_probs`` feed the default order's out-of-sample witness and the
    count, ``features`` its neighbours witness (:mod:`noisefind.scanning.evidence`).

    Parameters
    ----------
    labels : array-like
        One given label per example: integers 0 .. C-1 (label k is column k of
        ``pred_probs``), or any values when only ``features`` are given.
    pred_probs : array, optional
        (N, C) out-of-sample probabilities: each row from a model that did not train on it
        (K-fold cross-validation). A memory-mapped array (``np.load(..., mmap_mode="r")``) is
        read in blocks, never copied whole.
    features : array or list of arrays, optional
        (N, D) embeddings, or one per model (their neighbours' votes are averaged); nearness is
        the cosine similarity.
    classes : list of str, optional
        Class names, label k meaning ``classes[k]``.
    k : int
        Neighbours whose labels vote (at most N - 1).
    seed : int
        Seeds the count's canaries and its bootstrap interval.
    count_from : {"pred_probs", "features"}, optional
        Whose witness the count's canaries are scored on; default ``pred_probs`` when given.
        ``features`` suits embeddings no label trained (a pretrained or self-supervised
        model's): a canary then stands among neighbours as a real error does. Embeddings from
        a model trained on these labels make canaries too easy to see, and the count low.
    true_labels : array-like, optional
        The true labels, for benchmarking: adds AUROC, AUPRC, precision and recall.
    paths : list of str, optional
        The examples' image files, for the review page's pictures.
    name : str
        What the data is called in the summary and on the review page.
    out : path, optional
        Write ``suspects.csv``, ``summary.json``, ``training_set.npz`` and ``report.html``
        there; a folder holding earlier results is refused unless ``overwrite``.

    Returns
    -------
    ScanResult
        ``table`` (most suspicious first: ``consensus_score``, ``suspected``,
        ``suggested_label`` and each witness's column), ``summary`` (``estimated_mislabeled``
        with its interval, ``witnesses``) and ``run`` None.
    """
    codes, names, pred_probs, features = checked_evidence(
        labels, pred_probs=pred_probs, features=features, classes=classes, k=k,
        count_from=count_from)
    truth = None
    if true_labels is not None:
        truth = np.asarray(true_labels)
        if truth.shape != codes.shape or truth.min() < 0 or truth.max() >= len(names):
            raise NoisefindError(f"true_labels must be {len(codes)} labels in "
                                 f"0..{len(names) - 1}", parameter="true_labels")
    if paths is not None and len(paths) != len(codes):
        raise NoisefindError(f"paths: give one per label ({len(codes)}), got {len(paths)}",
                             parameter="paths")
    folder = prepare_out(out, resume=False, overwrite=overwrite, resumable=False)
    table, summary = rank_evidence(codes, names, pred_probs=pred_probs, features=features,
                                   k=k, seed=seed, count_from=count_from, true_labels=truth,
                                   paths=paths)
    summary = {"data": name, **summary}
    if folder is not None:
        write_ranking(table, summary, folder, labels=codes, classes=names, paths=paths,
                      true_labels=truth)
    return ScanResult(table=table, summary=summary, run=None)


def scan(data: LabeledData, model=None, *, backbone: str | None = None, weights=None,
         mean=None, std=None,
         out: str | Path | None = None, noise: str | None = None, seed: int = 0,
         device: str = "auto", epochs: int | None = None, width: float | None = None,
         arch: str | None = None, batch_size: int | None = None, lr: float | None = None,
         limit: int | None = None, max_units: int = FlipSettings.max_units,
         noise_copies: int = FlipSettings.noise_copies,
         reference_size: int = FlipSettings.reference_size,
         reference: str = FlipSettings.reference, scan_batch_size: int | None = None,
         cutoff: str = CutoffSettings.method,
         canary_fraction: float = CutoffSettings.canary_fraction,
         canary_recall: float = CutoffSettings.canary_recall,
         canary_labels: str = CutoffSettings.canary_labels, rank_by: str | None = None,
         folds: int = DEFAULT_FOLDS, fold_recipe: str = TrainConfig.fold_recipe,
         fold_epochs: int | None = None, fold_models: int = TrainConfig.fold_models,
         resume: bool = False, overwrite: bool = False, progress: bool = False) -> ScanResult:
    """Scan ``data``: train the fold models (or load a model), gather the evidence, rank, flag,
    suggest labels.

    Parameters
    ----------
    data : LabeledData
        The training set (:func:`noisefind.load_data`, or :func:`find_label_issues` for other
        forms).
    model : None, Run, path, str or torch.nn.Module
        None: the default scan trains only the K fold models, with the training options below
        (``rank_by`` flip or cutoff, or ``folds`` 0, trains one model to flip-search); a run
        (or its folder) written by ``noisefind train``; a spec (``torchvision:<name>`` or
        ``<module>:<function>``, with ``weights``); or any ``torch.nn.Module`` (the scan uses
        a copy).
    backbone : str, optional
        Train this architecture (``torchvision:<name>`` or ``<module>:<function>``) instead
        of noisefind's own, starting from ``weights``: a new classifier for the data's classes,
        a linear probe, then fine-tuning; the fold models (and any scanned model and its
        replica) alike, so every witness runs (learning rate 0.01 unless ``lr`` is given).
    weights : path, optional
        ``.safetensors`` or a state dict (``torch.load(weights_only=True)``) for a spec model,
        or the pretrained weights of ``backbone``.
    mean, std : sequence of float, optional
        Standardisation of the inputs before an own model (not a noisefind run): per channel
        for images, per feature for tables.
    out : path, optional
        Write the scan's files there (``suspects.csv``, ``summary.json``, ...).
    noise : str, optional
        Corrupt the labels for benchmarking (``symmetric:0.1``). A noisefind run trained on
        corrupted labels passes its noise (and its seed) on when this is None.
    seed : int
        Seeds the noise, the training, the flip search and the canaries.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    epochs, width, arch, batch_size, lr : optional
        The training recipe when ``model`` is None (:class:`~noisefind.TrainConfig`'s defaults
        when left out); refused with a model, which is already trained.
    limit : int, optional
        Scan a seeded random subset of this many examples.
    max_units, noise_copies, reference_size, reference, scan_batch_size
        The flip search (:class:`~noisefind.FlipSettings`; ``scan_batch_size`` is its
        ``batch_size``), for ``rank_by`` flip or cutoff and a given model; the default scan,
        which runs no flip search, refuses them.
    cutoff, canary_fraction, canary_recall, canary_labels
        The count and flag (:class:`~noisefind.decide.cutoff.CutoffSettings`; ``cutoff`` is
        its ``method``, ``none`` for neither). The canary options tune the replica of
        ``rank_by`` cutoff or flip; the default scan, which has none, refuses them.
    rank_by : {"consensus", "cutoff", "flip"}, optional
        The order; default the best the scan has (the consensus, the default order).
    folds : int
        K of the K-fold models; 0 leaves them out.
    fold_recipe : {"fast", "paper"}
        How the K models train on colour images: the whitened CNN with the fast recipe, or the
        network and recipe of the training options above (:func:`~noisefind.signals.out_of_sample.
        out_of_sample_config`).
    fold_epochs : int, optional
        Epochs of the K models (default: 30 with the fast recipe, ``epochs`` with the paper's).
    fold_models : int
        Models each fold trains, seeded apart, their held-out probabilities averaged: more
        accurate fold models (and evidence) for that many times their training.
    resume, overwrite : bool
        Continue an interrupted scan in ``out``, or replace an earlier scan's results there.
    progress : bool
        Progress bars and messages on the terminal.

    Returns
    -------
    ScanResult
        ``table`` (one row per scanned example, most suspicious first), ``summary`` (the
        contents of ``summary.json``) and ``run`` (the scanned model; None for the default
        scan).
    """
    if progress and data.preparation is not None:
        prepared = data.preparation
        sides = prepared["shorter_side_px"]
        console.print(f"images: {len(data)}, shorter sides {sides['min']}-{sides['max']} px; "
                      f"{prepared['rule']} ({prepared['chosen']})", highlight=False)
    training = {name: value for name, value in zip(
        TRAINING_OPTIONS, (epochs, width, arch, batch_size, lr), strict=True)
        if value is not None}
    if model is not None and training:
        raise NoisefindError(f"{', '.join(training)}: the training's, and a given model is "
                             "trained already; leave them out, or leave out model",
                             parameter=(*training, "model"))
    recipe = TrainConfig(**training, seed=seed, device=device, fold_recipe=fold_recipe,
                         fold_epochs=fold_epochs, fold_models=fold_models)
    if backbone is not None:
        if model is not None or mean is not None or std is not None:
            given = "model" if model is not None else "mean" if mean is not None else "std"
            raise NoisefindError(f"{given}: not with a backbone, which noisefind fine-tunes "
                                 "(standardised by the data's statistics); leave out one",
                                 parameter=(given, "backbone"))
        recipe = TrainConfig(**{"lr": BACKBONE_LR, **training}, seed=seed, device=device,
                             fold_recipe=fold_recipe, fold_epochs=fold_epochs,
                             fold_models=fold_models,
                             backbone=backbone,
                             backbone_weights=None if weights is None else str(weights))
        weights = None
    run = resolve_model(model, data, weights=weights, mean=mean, std=std, device=device)
    noise, seed, inherited = training_noise(run, noise, seed)
    if inherited and progress:
        console.print(f"using the model's training noise {noise} (seed {seed})")
    if run is not None and is_own(run):
        check_own_rank_by(rank_by)
        if progress:
            console.print(f"your own model: the ranking uses {RANKING_SIGNALS}",
                          highlight=False, soft_wrap=True)
    if noise:
        data = data.with_noise(noise, seed)
    settings = FlipSettings(max_units=max_units, noise_copies=noise_copies,
                            reference_size=reference_size, reference=reference,
                            batch_size=scan_batch_size, seed=seed)
    cutoff_settings = CutoffSettings(method=cutoff, canary_fraction=canary_fraction,
                                     canary_recall=canary_recall, canary_labels=canary_labels,
                                     seed=seed)
    return pipeline.scan(data, run, out=out, settings=settings, cutoff=cutoff_settings,
                         train_config=recipe,
                         limit=limit, folds=folds, rank_by=rank_by, resume=resume,
                         overwrite=overwrite, progress=progress, device=device)


def resolve_model(model, data: LabeledData, *, weights=None, mean=None, std=None,
                  device: str = "auto") -> Run | None:
    """The run to scan: None (to be trained), a run, a spec with ``weights``, or a module."""
    given = [name for name, value in zip(OWN_MODEL_OPTIONS, (weights, mean, std), strict=True)
             if value is not None]
    if isinstance(model, nn.Module):
        return own_run(copy.deepcopy(model), data, spec=type(model).__name__, weights=weights,
                       mean=mean, std=std, device=device)
    if isinstance(model, str | Path) and is_model_spec(str(model)):
        return load_own_model(str(model), data, weights, mean, std, device)
    if given:
        raise NoisefindError(f"{given[0]}: only for a model noisefind did not train "
                             "(torchvision:<name>, <module>:<function> or a torch module)",
                             parameter=given[0])
    if model is None:
        return None
    run = model if isinstance(model, Run) else load_run(model, device=device)
    check_compatible(run, data)
    return run


def training_noise(run: Run | None, noise: str | None, seed: int) -> tuple[str | None, int, bool]:
    """The noise to apply: ``noise``, or when None the noise ``run`` was trained with (and its
    seed), so that a run trained on corrupted labels is scanned on the same labels. The third
    value says whether the run's noise was taken."""
    trained = None if run is None else run.config["data"].get("noise")
    if noise is None and trained:
        return trained, run.config["data"]["noise_seed"], True
    return noise, seed, False


def check_own_rank_by(rank_by: str | None) -> None:
    """An own model has no cutoff and no training history, so it is ranked by the flip score."""
    if rank_by in ("cutoff", "consensus"):
        needs = "the cutoff" if rank_by == "cutoff" else "a training history"
        raise NoisefindError(f"rank_by {rank_by} needs {needs}, which a model noisefind did "
                             "not train has none of; rank by flip", parameter="rank_by")
