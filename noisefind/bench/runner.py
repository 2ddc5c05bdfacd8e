"""The benchmark: noise settings x seeds x detectors -> detection metrics (docs/method.md).

For each noise setting and seed: corrupt the labels (seed ``s`` draws the noise and initialises
training), train one model (with checkpoints for EL2N), build one
:class:`~noisefind.bench.context.DetectorContext` and score every detector on the same rows, then
compare the scores with the injected truth. Mislabeled examples are the positives.

Metrics, each a number per detector, noise setting and seed:

- ``auroc`` and ``auprc`` (average precision) from scikit-learn; tied scores count as one
  threshold, so ties are neither rewarded nor punished by their order;
- ``tpr_at_5fpr``: the ROC curve linearly interpolated at 5% false-positive rate, which is the
  expected TPR when ties are broken at random;
- ``precision_at_k`` with ``k`` the true number of mislabeled rows scored, again the expectation
  under random tie-breaking (integer scores such as flip counts tie often);
- ``seconds``: what the detector would cost run alone: its own time plus every shared input it
  used (training the model, the cross-validation models, the flip search), each charged in full
  to every detector that uses it.

With ``limit``, every detector scores the same seeded random subset of rows (the flip search
on a CPU cannot afford them all), so the numbers stay comparable.
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from noisefind.base.console import console
from noisefind.base.errors import NoisefindError
from noisefind.bench.context import DetectorContext, el2n_epoch
from noisefind.bench.detectors import Detector, get_detectors
from noisefind.data.labeled import LabeledData, NoiseSpec, scan_rows
from noisefind.signals.flip import FlipSettings
from noisefind.signals.out_of_sample import DEFAULT_FOLDS
from noisefind.training.cache import ResultCache
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit

METRICS = ("auroc", "auprc", "tpr_at_5fpr", "precision_at_k")
ROC_GRID = np.linspace(0.0, 1.0, 201)


# --------------------------------------------------------------------------------------------
# Metrics


def detection_metrics(is_noisy: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUROC, AUPRC, TPR at 5% FPR and precision at k for one score vector.

    All are NaN when the rows hold only one kind (no mislabeled or no clean examples).
    """
    is_noisy = np.asarray(is_noisy, dtype=bool)
    scores = finite_scores(scores)
    if is_noisy.all() or not is_noisy.any():
        return dict.fromkeys(METRICS, math.nan)
    return {
        "auroc": float(roc_auc_score(is_noisy, scores)),
        "auprc": float(average_precision_score(is_noisy, scores)),
        "tpr_at_5fpr": tpr_at_fpr(is_noisy, scores, 0.05),
        "precision_at_k": precision_at_k(is_noisy, scores),
    }


def finite_scores(scores: np.ndarray) -> np.ndarray:
    """``scores`` with infinities moved just past the finite ones, keeping the ranking.

    A detector may score an example "infinitely" (un)suspicious, e.g. a flip search that hit its
    cap; the metrics need finite numbers and only the order matters.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores must not be NaN")
    finite = scores[np.isfinite(scores)]
    low, high = (finite.min(), finite.max()) if len(finite) else (0.0, 0.0)
    return np.clip(scores, low - 1.0, high + 1.0)


def tpr_at_fpr(is_noisy: np.ndarray, scores: np.ndarray, fpr: float = 0.05) -> float:
    """True-positive rate at false-positive rate ``fpr`` (expected under random tie-breaking)."""
    fprs, tprs, _ = roc_curve(is_noisy, scores)
    return float(np.interp(fpr, fprs, tprs))


def precision_at_k(is_noisy: np.ndarray, scores: np.ndarray, k: int | None = None) -> float:
    """Share of mislabeled rows among the ``k`` highest scores (default k = their true number).

    Rows tied with the k-th score are taken in expectation: if ``m`` of ``t`` tied rows fit,
    they contribute ``m / t`` of the tied group's mislabeled rows.
    """
    is_noisy = np.asarray(is_noisy, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    k = int(is_noisy.sum()) if k is None else k
    if k <= 0:
        return math.nan
    kth = np.sort(scores)[::-1][min(k, len(scores)) - 1]
    above, tied = scores > kth, scores == kth
    room = min(k, len(scores)) - above.sum()
    hits = is_noisy[above].sum() + room * is_noisy[tied].sum() / tied.sum()
    return float(hits / k)


def mean_roc(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Vertical average of ROC curves ``(fpr, tpr)`` on a common FPR grid."""
    tprs = [np.interp(ROC_GRID, fpr, tpr) for fpr, tpr in curves]
    return ROC_GRID, np.mean(tprs, axis=0)


# --------------------------------------------------------------------------------------------
# One noise setting and seed


@dataclass
class SettingResult:
    """Records (one per detector) and per-example scores of one noise setting and seed."""

    records: list[dict]
    scores: pd.DataFrame
    roc: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    decisions: list[dict] = field(default_factory=list)
    retrain: list[dict] = field(default_factory=list)


def bench_setting(data: LabeledData, noise: NoiseSpec, seed: int,
                  detectors: dict[str, Detector], train_config: TrainConfig,
                  folds: int = DEFAULT_FOLDS, limit: int | None = None,
                  flip_settings: FlipSettings | None = None, progress: bool = True,
                  retrain: bool = False, cache: ResultCache | None = None) -> SettingResult:
    """Inject ``noise`` with ``seed``, train, and score every detector against the truth.

    Also decides (:func:`bench_decisions`) and, with ``retrain``, holds out a clean test split
    (when the data has none) and measures :func:`retrain_records` on it. ``cache`` keeps the
    trained models and searches for a later bench of the same setting.
    """
    noisy = data.with_noise(noise, seed)
    if retrain:
        noisy = with_test_split(noisy, seed)
    config = _config_for(train_config, seed, detectors)
    flip_settings = replace(flip_settings or FlipSettings(), seed=seed)
    rows = scan_rows(len(noisy), limit, seed)
    with tempfile.TemporaryDirectory(prefix="noisefind-bench-") as workdir:
        # Without a cache folder the work folder holds the run (EL2N reads its checkpoint).
        cache = cache or ResultCache(workdir)
        run = cache.fit(noisy, config, progress=progress)
        context = DetectorContext(noisy, run, rows, train_config=config, folds=folds,
                                  flip_settings=flip_settings,
                                  train_seconds=run.config["seconds"], progress=progress,
                                  cache=cache)
        scores = {name: _timed_scores(context, name, detector)
                  for name, detector in detectors.items()}
        decisions = bench_decisions(context, detectors)
        retrained = retrain_records(context, decisions, noise, seed) if retrain else []
        folds_seen = fold_accuracy(context)
    is_noisy = noisy.is_noisy.numpy()[rows]
    records, roc = [], {}
    for name, (values, seconds) in scores.items():
        record = {"detector": name, "noise": str(noise), "seed": seed,
                  **detection_metrics(is_noisy, values), "seconds": round(seconds, 3),
                  "examples": len(rows), "mislabeled": int(is_noisy.sum()), **folds_seen}
        records.append(record)
        if 0 < is_noisy.sum() < len(is_noisy):
            fpr, tpr, _ = roc_curve(is_noisy, finite_scores(values))
            roc[name] = (fpr, tpr)
    table = pd.DataFrame({
        "row": rows, "index": noisy.index.numpy()[rows], "given_label": noisy.y.numpy()[rows],
        "true_label": noisy.true_y.numpy()[rows], "is_noisy": is_noisy,
        **{name: values for name, (values, _) in scores.items()}})
    return SettingResult(records, table, roc, decision_records(decisions, is_noisy, noise, seed),
                         retrained)


def fold_accuracy(context: DetectorContext) -> dict:
    """How often the fold models' out-of-sample prediction is the true label and the given
    one, over every example, when a detector used them (else nothing)."""
    if not context.used_out_of_sample:
        return {}
    predicted = context.out_of_sample.probabilities().argmax(1)
    data = context.data
    seen = {"fold_given_accuracy": round(float((predicted == data.y.numpy()).mean()), 4)}
    if data.true_y is not None:
        seen["fold_accuracy"] = round(float((predicted == data.true_y.numpy()).mean()), 4)
    return seen


def _config_for(train_config: TrainConfig, seed: int,
                detectors: dict[str, Detector]) -> TrainConfig:
    # EL2N reads an early checkpoint; save one at that epoch (and its multiples) when needed.
    every = train_config.checkpoint_every
    if "el2n" in detectors and not every:
        every = el2n_epoch(train_config.epochs)
    # Every example must be trained on to be scored, so no holdout.
    return replace(train_config, seed=seed, checkpoint_every=every, holdout=0.0)


def _timed_scores(context: DetectorContext, name: str,
                  detector: Detector) -> tuple[np.ndarray, float]:
    """A detector's scores and its cost: own time plus every shared input it used."""
    context.start_tracking()
    shared_before = context.shared_wall_seconds
    start = time.perf_counter()
    values = np.asarray(detector(context), dtype=np.float64)
    elapsed = time.perf_counter() - start
    own = elapsed - (context.shared_wall_seconds - shared_before)
    if values.shape != context.rows.shape:
        raise RuntimeError(f"detector {name} returned {values.shape[0] if values.ndim else 0} "
                           f"scores for {len(context.rows)} rows")
    if np.isnan(values).any():
        raise RuntimeError(f"detector {name} returned NaN for {int(np.isnan(values).sum())} "
                           "rows")
    return values, own + context.charged_seconds()


# --------------------------------------------------------------------------------------------
# The whole benchmark


def bench(data: LabeledData, noises: Sequence[NoiseSpec | str], seeds: int | Sequence[int] = 1,
          detectors: Sequence[str] | None = None, train_config: TrainConfig | None = None,
          folds: int = DEFAULT_FOLDS, limit: int | None = None, out: str | Path | None = None,
          flip_settings: FlipSettings | None = None, progress: bool = True,
          retrain: bool = False) -> pd.DataFrame:
    """Score detectors against injected label noise, over noise settings and seeds.

    Parameters
    ----------
    data : LabeledData
        Clean data; its labels are taken as the truth (``true_y`` if it has one).
    noises : sequence of NoiseSpec or str
        Noise settings, e.g. ``["symmetric:0.1", "asymmetric:0.2"]``.
    seeds : int or sequence of int
        How many seeds (``0 .. seeds-1``) or which ones. A seed draws the noise, the subset of
        rows, the training initialisation and order, and the cross-validation folds.
    detectors : sequence of str, optional
        Names from :data:`noisefind.bench.detectors.DETECTORS`; default all but the opt-in ones
        (:data:`noisefind.bench.detectors.OPT_IN`, e.g. ``memorization``).
    train_config : TrainConfig, optional
        How to train the model (and the cross-validation models); its seed is replaced.
    folds : int
        K of the K-fold cross-validation behind ``confident_learning``.
    limit : int, optional
        Score only a seeded random subset of this many rows (all detectors the same rows).
    out : path, optional
        Folder for ``results.json``, ``results.md``, ``roc.png`` and ``scores/`` (per-example
        scores of each setting and seed, with the truth). ``results.json`` is rewritten after
        every setting, so an interrupted bench keeps what it finished, and ``cache/`` keeps
        every trained model and search (:class:`~noisefind.training.cache.ResultCache`), so a bench
        run
        again into the same folder resumes where it stopped and reuses them for other
        detectors.
    flip_settings : FlipSettings, optional
        Settings of the flip search; its seed is replaced by each bench seed.
    progress : bool
        Print progress.
    retrain : bool
        Hold out a clean test split (when the data has none) and report the test accuracy of
        the recipe trained on the noisy set, on each cleaned set and on the true labels.

    Returns
    -------
    pandas.DataFrame
        One row per detector, noise setting and seed: ``detector, noise, seed, auroc, auprc,
        tpr_at_5fpr, precision_at_k, seconds, examples, mislabeled``. ``attrs["decisions"]``
        holds one record per decision method (the flip cutoff, cleanlab), noise setting and
        seed: ``flagged, precision, recall, f1, estimated, count_error, seconds``;
        ``attrs["retrain"]`` the retraining records (empty without ``retrain``). Both are
        also in ``results.json`` and ``results.md``.
    """
    from noisefind.bench import report

    noises = [NoiseSpec.parse(n) if isinstance(n, str) else n for n in noises]
    if not noises:
        raise NoisefindError("noises: give at least one KIND:RATE setting, or none")
    if data.true_y is None and any(n.kind == "none" for n in noises):
        raise NoisefindError(f"noises 'none' scores the labels as given against their truth, "
                             f"and {data.name} has none (a manifest's true_label column)")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise NoisefindError("seeds must be at least 1", parameter="seeds")
    chosen = get_detectors(detectors)
    train_config = train_config or TrainConfig()
    settings = bench_settings(data, noises, seed_list, chosen, train_config, folds, limit,
                              flip_settings)
    out = Path(out) if out is not None else None
    cache = ResultCache(out / "cache") if out is not None else None
    _warm_up(data, train_config)
    records, curves, extra = [], {}, {"decisions": [], "retrain": []}
    for noise in noises:
        for seed in seed_list:
            if progress:
                console.print(f"[bold]{noise}[/] seed {seed}", highlight=False)
            result = bench_setting(data, noise, seed, chosen, train_config, folds, limit,
                                   flip_settings, progress, retrain, cache)
            records.extend(result.records)
            extra["decisions"].extend(result.decisions)
            extra["retrain"].extend(result.retrain)
            for name, curve in result.roc.items():
                curves.setdefault(str(noise), {}).setdefault(name, []).append(curve)
            if out is not None:
                report.write_bench_scores(result.scores, out / "scores" / f"{noise.kind}-"
                                          f"{noise.rate:g}_seed{seed}.csv")
                report.write_bench_json(pd.DataFrame(records), out / "results.json", settings,
                                        extra)
    runs = pd.DataFrame(records)
    runs.attrs.update(extra)
    if out is not None:
        roc = {noise: {name: mean_roc(c) for name, c in by_name.items()}
               for noise, by_name in curves.items()}
        report.write_bench_results(runs, out, settings=settings, roc=roc, extra=extra)
    return runs


def _warm_up(data: LabeledData, train_config: TrainConfig) -> None:
    # The first training in a process pays one-time costs (lazy imports, kernel selection) that
    # would otherwise be charged to whichever detector's training is timed first.
    rows = torch.arange(0, len(data), max(1, len(data) // 256))  # spread: files sort by class
    fit(data.subset(rows), replace(train_config, epochs=1, checkpoint_every=0, holdout=0.0),
        progress=False)


def bench_settings(data: LabeledData, noises: Sequence[NoiseSpec], seeds: Sequence[int],
                   detectors: dict[str, Detector], train_config: TrainConfig, folds: int,
                   limit: int | None, flip_settings: FlipSettings | None = None) -> dict:
    """What a bench ran on and with, for ``results.json`` (so a table can be reproduced)."""
    from noisefind import __version__
    from noisefind.base.device import resolve_device

    device = resolve_device(train_config.device)
    return {
        "data": data.name, "examples": len(data), "noises": [str(n) for n in noises],
        "seeds": list(seeds), "detectors": list(detectors), "folds": folds, "limit": limit,
        "train": asdict(train_config),
        "flip": (flip_settings or FlipSettings()).as_dict(),
        "machine": {
            "platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "noisefind": __version__},
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------------------------
# Decisions (which rows to flag, how many are wrong) and retraining on the cleaned set


RETRAIN_TEST_FRACTION = 0.2


@dataclass
class Decision:
    """One method's flag over the bench rows and its estimated number of mislabeled rows."""

    method: str
    suspected: np.ndarray
    estimated: float | None
    seconds: float


def bench_decisions(context: DetectorContext, detectors: dict[str, Detector]) -> list[Decision]:
    """The flip cutoff (when a flip detector ran), the scan's default flag (when
    ``noisefind`` ran: the canaries' count on the out-of-sample evidence, taken from the top of
    the consensus order, as the scan decides) and cleanlab's ``find_label_issues`` (when
    ``confident_learning`` ran), on the same run and rows."""
    decisions = []
    if any("flip" in name for name in detectors):
        decisions.append(_timed_decision(context, "flip_cutoff", lambda: _flip_cutoff(context)))
    if "noisefind" in detectors:
        decisions.append(_timed_decision(context, "noisefind", lambda: _consensus_flag(
            context, detectors["noisefind"])))
    if "confident_learning" in detectors:
        decisions.append(_timed_decision(context, "cleanlab", lambda: _cleanlab_decision(
            context)))
    return decisions


def _timed_decision(context: DetectorContext, method: str, decide) -> Decision:
    context.start_tracking()
    shared_before = context.shared_wall_seconds
    start = time.perf_counter()
    suspected, estimated = decide()
    own = time.perf_counter() - start - (context.shared_wall_seconds - shared_before)
    return Decision(method, suspected, estimated, own + context.charged_seconds())


def _flip_cutoff(context: DetectorContext,
                 out_of_sample: bool = False) -> tuple[np.ndarray, float | None]:
    cutoff = context.flip_cutoff(out_of_sample=out_of_sample)
    return cutoff.suspected, cutoff.estimated_scanned


def _consensus_flag(context: DetectorContext,
                    noisefind: Detector) -> tuple[np.ndarray, float | None]:
    from noisefind.decide.consensus import consensus_decision

    decision = consensus_decision(context.data.y.numpy(), context.rows,
                                  context.out_of_sample_probabilities(), noisefind(context), {},
                                  seed=context.flip_settings.seed,
                                  backbone_vote=context.out_of_sample.backbone_vote())
    return decision.suspected, decision.estimated_scanned


def _cleanlab_decision(context: DetectorContext) -> tuple[np.ndarray, float]:
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues

    probabilities = context.out_of_sample_probabilities()
    probabilities = probabilities / probabilities.sum(1, keepdims=True)
    labels = context.data.y.numpy()
    flagged = find_label_issues(labels, probabilities, n_jobs=1)
    # cleanlab estimates over the whole set; scale to the bench rows like the flip cutoff.
    estimated = num_label_issues(labels, probabilities) * len(context.rows) / len(labels)
    return flagged[context.rows], float(estimated)


def decision_records(decisions: list[Decision], is_noisy: np.ndarray, noise: NoiseSpec,
                     seed: int) -> list[dict]:
    """One record per decision: flag precision, recall, F1 and the estimated count's error."""
    from noisefind.decide.cutoff import flag_metrics

    records = []
    for decision in decisions:
        metrics = flag_metrics(is_noisy, decision.suspected, decision.estimated)
        records.append({
            "method": decision.method, "noise": str(noise), "seed": seed,
            "examples": len(is_noisy), "mislabeled": metrics["mislabeled_true"],
            "flagged": int(decision.suspected.sum()),
            "precision": metrics["flag_precision"], "recall": metrics["flag_recall"],
            "f1": metrics["flag_f1"],
            "estimated": None if decision.estimated is None else round(decision.estimated, 1),
            "count_error": metrics["count_error"], "seconds": round(decision.seconds, 3)})
    return records


def with_test_split(data: LabeledData, seed: int) -> LabeledData:
    """``data`` with a test split: its own, else a seeded stratified share with clean labels."""
    from noisefind.data.labeled import split_holdout

    return split_holdout(data, RETRAIN_TEST_FRACTION, seed)


def retrain_records(context: DetectorContext, decisions: list[Decision], noise: NoiseSpec,
                    seed: int) -> list[dict]:
    """Test accuracy of the recipe trained on the noisy set, on each cleaned set and on the
    truly clean labels.

    The noisy model is the bench's own run. Each cleaned set is what ``noisefind export
    --drop`` writes: the flagged rows left out, written as a manifest with
    :func:`noisefind.scanning.export.write_manifest` and read back with ``load_data``.
    """
    data, config = context.data, replace(context.train_config, checkpoint_every=0)
    records = [_retrain_record("noisy", noise, seed, context.run.model, data, 0,
                               context.costs["train"])]
    for decision in decisions:
        keep = np.ones(len(data), dtype=bool)
        keep[context.rows[decision.suspected]] = False
        start = time.perf_counter()
        cleaned = _through_manifest(data, keep)
        model = fit(cleaned, config, progress=context.progress).model
        records.append(_retrain_record(f"dropped by {decision.method}", noise, seed, model,
                                       data, int((~keep).sum()), time.perf_counter() - start,
                                       cleaned.classes))
    start = time.perf_counter()
    clean = replace(data, y=data.true_y.clone())
    model = fit(clean, config, progress=context.progress).model
    records.append(_retrain_record("clean labels", noise, seed, model, data, 0,
                                   time.perf_counter() - start))
    return records


def _through_manifest(data: LabeledData, keep: np.ndarray) -> LabeledData:
    """The kept rows as ``export --drop`` writes them, loaded back as a user would."""
    from noisefind.data.load import load_data
    from noisefind.scanning.export import training_set, write_manifest

    with tempfile.TemporaryDirectory(prefix="noisefind-retrain-") as folder:
        training = training_set(data)
        file = write_manifest(training, keep, training.y, Path(folder) / "cleaned.csv")
        return load_data(file, image_size=data.x.shape[-1] if data.is_image else None)


def _retrain_record(training_set: str, noise: NoiseSpec, seed: int, model, data: LabeledData,
                    dropped: int, seconds: float, classes: list[str] | None = None) -> dict:
    from noisefind.models.predict import predict_logits

    predicted = predict_logits(model, data.x_test).argmax(1).cpu().numpy()
    if classes is not None:  # a manifest may order (or lose) class names: compare by name
        names = np.array(classes, dtype=object)[predicted]
        truth = np.array(data.classes, dtype=object)[data.y_test.numpy()]
        accuracy = float((names == truth).mean())
    else:
        accuracy = float((predicted == data.y_test.numpy()).mean())
    return {"training_set": training_set, "noise": str(noise), "seed": seed,
            "examples": len(data) - dropped, "dropped": dropped,
            "test_examples": len(data.y_test), "test_accuracy": round(accuracy, 4),
            "seconds": round(seconds, 3)}
