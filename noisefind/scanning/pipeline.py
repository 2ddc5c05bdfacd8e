"""``noisefind.scanning.pipeline``: from a labelled data set to a ranked, flagged table.

Two paths. **The default scan** (no model given, K-fold models, the default order) trains only
the K fold models: their held-out probabilities, their training dynamics on the rows they
learned, and their feature spaces give the default order's three witnesses
(:mod:`noisefind.decide.consensus`; a pretrained backbone's own features a fourth); no flip
search runs; canaries scored on the held-out evidence (on the backbone's neighbours, with a
backbone) give the count, and the flag takes that many from the top. **The scanned-model
scan** (a model given, or the paper's ``rank_by`` flip, or the canary-weighed cutoff) trains
or loads one model, flip-searches its training set, and calibrates the cutoff in a replica.

The scanned model's search appends its finished results to ``OUT/scan_progress.jsonl`` as they
arrive (flushed and fsynced), next to ``OUT/scan_state.json`` which records what is being
scanned (settings, rows, model). ``resume=True`` reads both, refuses a resume with other
settings, and scans only the rows not yet done; because each example's search depends only on
its own row and seed, the final table is the same as an uninterrupted run's. Models, searches
and features are kept in ``OUT/cache`` until the scan ends, so a resumed scan of
either path reuses them. The final ``suspects.csv`` and ``summary.json`` are written
atomically at the end.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from noisefind.base import distributed
from noisefind.base.console import console
from noisefind.base.errors import NoisefindError
from noisefind.data.labeled import LabeledData, scan_rows, to_float
from noisefind.decide.consensus import (
    consensus_decision,
    consensus_score,
    default_order_signals,
    witnesses_voting,
)
from noisefind.decide.cutoff import Cutoff, CutoffSettings, no_cutoff
from noisefind.models.predict import runner_up_classes
from noisefind.scanning.export import save_training_set
from noisefind.scanning.log import (
    STATE_FILE,
    MemoryLog,
    ScanLog,
    Stages,
    check_same_fold_models,
    check_same_training,
    plan_line,
)
from noisefind.scanning.outputs import (
    ORDER_COLUMNS,
    plot_top_suspects,
    write_pred_probs,
    write_summary,
    write_suspects,
)
from noisefind.scanning.table import (
    _positions,
    held_out_table,
    mark_suspected,
    rank_table,
    scan_summary,
    suspects_table,
    with_order,
    with_out_of_sample,
)
from noisefind.signals.flip import FlipSettings, flip_search
from noisefind.signals.out_of_sample import DEFAULT_FOLDS, OutOfSample, out_of_sample_config
from noisefind.signals.replica import calibrate
from noisefind.training.cache import ResultCache, digest, model_key
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit
from noisefind.training.runs import Run, check_compatible, is_own, load_run

DEFAULT_OUT = Path("noisefind-out")
CACHE_DIR = "cache"
TOP_PICTURES = 32  # suspects drawn in top_suspects.png
NO_CUTOFF = ("the model was not trained by noisefind: the cutoff's replica has no recipe to "
             "follow, so nothing is flagged; rank by the score")
# What a finished or interrupted scan leaves in its folder; a new scan there must not mix its
# files with these (``overwrite`` removes them, ``resume`` continues them).
SCAN_FILES = ("suspects.csv", "summary.json", "top_suspects.png", "report.html",
              "training_set.npz", "pred_probs.npy", STATE_FILE)
SCAN_FOLDERS = ("run", CACHE_DIR)
FOLD_OPTIONS = ("fold_recipe", "fold_epochs", "fold_models")  # the scan's, not the model's
OWN_FIT_MINIMUM = 0.8  # an own model predicting fewer of its given labels gets a warning


@dataclass
class ScanResult:
    """What a scan found.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per scanned example, most suspicious first: the columns of ``suspects.csv``.
    summary : dict
        The contents of ``summary.json``: counts, settings, timings, the estimate, and AUROC
        when the true labels are known (empty on a torchrun rank other than 0).
    run : Run or None
        The scanned model (given, or trained for ``rank_by`` flip or cutoff); None for the
        default scan, which trains only the K fold models.
    """

    table: pd.DataFrame
    summary: dict
    run: Run | None

    @property
    def suspected(self) -> pd.DataFrame:
        """The flagged rows (none without a cutoff)."""
        return self.table[self.table["suspected"]]


def scan(data: LabeledData, model: Run | str | Path | None = None, *,
         out: str | Path | None = DEFAULT_OUT, settings: FlipSettings | None = None,
         cutoff: CutoffSettings | None = None, train_config: TrainConfig | None = None,
         limit: int | None = None, folds: int = DEFAULT_FOLDS, rank_by: str | None = None,
         resume: bool = False, overwrite: bool = False, progress: bool = True,
         device: str = "auto") -> ScanResult:
    """Rank the training examples of ``data`` by how likely their labels are wrong.

    The default scan trains the K fold models, orders, counts and flags
    (:mod:`noisefind.decide`), and writes the files. With a ``model``, or ``rank_by`` flip or
    cutoff, that model is trained (or loaded) and flip-searched, and the cutoff is calibrated
    in a replica of it (module docstring).

    Parameters
    ----------
    data : LabeledData
        The training set with its given labels (and the truth, if noise was injected).
    model : Run or path, optional
        A trained run (or its folder) to flip-search. When None, the default scan trains only
        the K fold models; with ``rank_by`` flip or cutoff (or ``folds`` 0) a model is trained
        first with ``train_config`` and saved to ``OUT/run``.
    out : path or None
        Output folder for ``suspects.csv``, ``summary.json``, ``top_suspects.png``. None writes
        no files (no resume then).
    settings : FlipSettings, optional
        Flip-search settings.
    cutoff : CutoffSettings, optional
        How ``suspected`` and ``estimated_mislabeled`` are decided: the default order counts
        with canaries scored on the fold models' held-out evidence (only ``seed`` and
        ``method`` none apply); the other orders with canaries in a replica model
        (:mod:`noisefind.decide.cutoff`). Seeded with the flip search's seed by default.
    train_config : TrainConfig, optional
        The recipe when ``model`` is None: of the scanned model, and of the fold models
        (:func:`noisefind.signals.out_of_sample.out_of_sample_config`).
    limit : int, optional
        Scan a seeded random subset of this many examples instead of all.
    folds : int
        K of the K-fold models behind the default order's three witnesses; 0 leaves them out
        (and trains a scanned model). Costs K trainings.
    rank_by : {"consensus", "cutoff", "flip"}, optional
        Order of the table (and of ``top_suspects.png``): by ``consensus_score``, the default
        order (:mod:`noisefind.decide.consensus`; needs ``folds``); by ``cutoff_score``, the
        canary-weighed mix of the cutoff (needs the cutoff); or by ``score``, the flip search's
        own ranking (the paper's). Default: the first of these the scan has.
    resume : bool
        Continue an interrupted scan in ``out``.
    overwrite : bool
        Replace the results of an earlier scan in ``out``; without it (or ``resume``), a
        folder holding them is refused and left as it is.
    progress : bool
        Progress bars and messages on the terminal.
    device : str
        Device for a loaded model (a trained one uses ``train_config.device``).

    Returns
    -------
    ScanResult
    """
    settings = settings or FlipSettings()
    settings.validate()
    cutoff = cutoff or CutoffSettings(seed=settings.seed)
    cutoff.validate()
    if train_config is not None:  # a given model still takes its fold options (FOLD_OPTIONS)
        train_config.validate()  # before anything is written
    if folds == 1 or folds < 0:
        raise NoisefindError(f"folds must be 0 (none) or at least 2, got {folds}",
                             parameter="folds")
    if rank_by is not None:
        check_rank_by(rank_by, cutoff, folds)
    out = prepare_out(out, resume=resume, overwrite=overwrite)
    rows = scan_rows(len(data), limit, settings.seed)
    if model is None and folds and rank_by in (None, "consensus"):
        return _scan_fold_models(data, rows, out=out, settings=settings, cutoff=cutoff,
                                 config=train_config or TrainConfig(), limit=limit, folds=folds,
                                 resume=resume, progress=progress)
    own = isinstance(model, Run) and is_own(model)
    stages = Stages(plan_stages(trains=model is None, own=own, folds=folds, cutoff=cutoff,
                                rank_by=rank_by, writes=out is not None), progress)
    if progress:
        each_fold = (train_config or TrainConfig()).fold_models
        trained = (model is None) + (FOLDS_STAGE in stages.names) * folds * each_fold + (
            CUTOFF_STAGE in stages.names)
        console.print(plan_line(data.x, len(rows), stages.names, trained), highlight=False)
    started = time.perf_counter()
    if model is None:
        stages.start(TRAIN_STAGE)
    run = _get_model(data, model, out, train_config, progress, device, resume)
    check_compatible(run, data)
    if rank_by is None:
        rank_by = default_rank_by(run, cutoff, folds)
    elif rank_by == "consensus" and is_own(run):
        raise NoisefindError("rank_by 'consensus' needs fold models trained with the model's "
                             "recipe, which your own model lacks; rank by 'flip'",
                             parameter="rank_by")
    seconds = {"train": round(time.perf_counter() - started, 3)}
    if progress and model is None:
        _say_trainings_to_come(run, data, stages, folds, seconds["train"])

    stages.start(SEARCH_STAGE)
    results = _flip_search(data, run, rows, settings, out, resume, progress, seconds)
    scanned = torch.tensor(results["row"].to_numpy(), dtype=torch.int64)
    runner_up = runner_up_classes(run.model, data.x_at(scanned), data.index[scanned],
                                  data.y[scanned])
    table = suspects_table(results, data, run.model.unit_layers(), runner_up)
    if is_own(run) and progress:
        warn_if_unfitted(table)
    # Models trained along the way are kept until the scan ends, so a resumed scan reuses them;
    # other ranks compute their own (the same, by seed) rather than share the folder's files.
    cache = ResultCache(out / CACHE_DIR if out is not None and distributed.is_main() else None)
    oos = None
    if folds and not is_own(run):
        stages.start(FOLDS_STAGE)
        oos = _out_of_sample(data, run, folds, settings, cache, progress, train_config)
        table = with_out_of_sample(table, oos.probabilities(), data)
    decision = _decide(data, run, results, cutoff, settings, cache, oos, rank_by, progress,
                       stages)
    if rank_by == "consensus":
        table = with_order(table, decision, data)
    table = rank_table(mark_suspected(table, decision, data), rank_by)
    summary = {}
    if distributed.is_main():
        seconds.update({stage: round(took, 3) for stage, took in
                        (oos.seconds if oos is not None else {}).items()})
        seconds["cutoff"] = decision.details.get("seconds", 0.0)
        seconds["total"] = round(time.perf_counter() - started, 3)
        summary = _summary(table, data, run, settings, limit, seconds, decision, rank_by,
                           folds if oos is not None else 0)
        if out is not None:
            stages.start(WRITE_STAGE)
            _write(table, summary, data, out,
                   oos.probabilities() if oos is not None else None)
    return ScanResult(table=table, summary=summary, run=run)


def _scan_fold_models(data: LabeledData, rows: np.ndarray, *, out: Path | None,
                      settings: FlipSettings, cutoff: CutoffSettings, config: TrainConfig,
                      limit: int | None, folds: int, resume: bool,
                      progress: bool) -> ScanResult:
    """The default scan: the K fold models alone give all three witnesses of the default order
    and the count (:mod:`noisefind.decide.consensus`); no single model is trained and no flip
    search runs.

    The count comes from canaries scored exactly on the out-of-sample witness
    (:func:`noisefind.decide.consensus.consensus_decision`), and the flag takes that many
    from the top of the order. Resuming reuses the fold models kept in ``OUT/cache``."""
    given = _options_refused(settings, cutoff)
    if given:
        raise NoisefindError(f"{', '.join(given)}: these steer the flip search or the replica's "
                             "canaries, which the default order does without; give rank_by "
                             "flip or cutoff, or leave them out", parameter=(*given, "rank_by"))
    stages = Stages([FOLDS_STAGE, ORDER_STAGE] + [WRITE_STAGE] * (out is not None), progress)
    if progress:
        console.print(plan_line(data.x, len(rows), stages.names, folds * config.fold_models,
                                "ranked"),
                      highlight=False)
    state = {"rows": digest(rows), "labels": digest(data.y),
             "fold_models": {"folds": folds, **dataclasses.asdict(config)}}
    log = ScanLog(out) if out is not None and distributed.is_main() else MemoryLog()
    if resume:
        check_same_fold_models(out, state["fold_models"])
        log.resume(state, searched=False)  # refuses other settings
    else:
        log.start(state)
    started = time.perf_counter()
    stages.start(FOLDS_STAGE)
    cache = ResultCache(out / CACHE_DIR if out is not None and distributed.is_main() else None)
    oos = OutOfSample(data, config, folds, flip_settings=settings, progress=progress,
                      cache=cache)
    probabilities = oos.probabilities()
    stages.start(ORDER_STAGE)
    signals = order_signals(data, rows, oos)
    began = time.perf_counter()  # the count, apart from the neighbours' search before it
    decision = default_order(data, rows, oos, signals, cutoff)
    table = held_out_table(data, rows, probabilities)
    table = rank_table(mark_suspected(with_order(table, decision, data), decision, data),
                       "consensus")
    summary = {}
    if distributed.is_main():
        seconds = {stage: round(took, 3) for stage, took in oos.seconds.items()}
        seconds["count"] = round(time.perf_counter() - began, 3)
        seconds["total"] = round(time.perf_counter() - started, 3)
        summary = _summary(table, data, None, settings, limit, seconds, decision, "consensus",
                           folds, device=oos.runs()[0][0].device)
        summary["train"] = dataclasses.asdict(config)  # the fold models' recipe, as given
        if out is not None:
            stages.start(WRITE_STAGE)
            _write(table, summary, data, out, probabilities)
    return ScanResult(table=table, summary=summary, run=None)


TRAIN_STAGE, SEARCH_STAGE, FOLDS_STAGE = "training", "flip search", "out-of-sample models"
REPLICA_OPTIONS = ("canary_fraction", "canary_recall", "canary_labels", "replica_fraction")
# The flip search's settings, by FlipSettings field: the parameter that sets it in a scan.
SEARCH_OPTIONS = {"max_units": "max_units", "noise_copies": "noise_copies",
                  "noise_scale": "noise_scale", "reference_size": "reference_size",
                  "reference": "reference", "batch_size": "scan_batch_size"}
CUTOFF_STAGE, ORDER_STAGE, WRITE_STAGE = "cutoff (replica)", "default order", "writing"


def _options_refused(settings: FlipSettings, cutoff: CutoffSettings) -> list[str]:
    """The flip search's and the replica's settings given other values than their defaults:
    the default scan runs neither, so it refuses them rather than ignore them."""
    return ([parameter for field, parameter in SEARCH_OPTIONS.items()
             if getattr(settings, field) != getattr(FlipSettings, field)]
            + [name for name in REPLICA_OPTIONS
               if getattr(cutoff, name) != getattr(CutoffSettings, name)])


def plan_stages(*, trains: bool, own: bool, folds: int, cutoff: CutoffSettings,
                rank_by: str | None, writes: bool) -> list[str]:
    """The stages a scan will go through, in order (what ``[k/n]`` counts)."""
    consensus = rank_by == "consensus" or (rank_by is None and folds and not own)
    planned = [(TRAIN_STAGE, trains), (SEARCH_STAGE, True), (FOLDS_STAGE, folds and not own),
               (CUTOFF_STAGE, cutoff.method != "none" and not own and not consensus),
               (ORDER_STAGE, consensus), (WRITE_STAGE, writes)]
    return [name for name, happens in planned if happens]


def prepare_out(out: str | Path | None, *, resume: bool, overwrite: bool,
                resumable: bool = True) -> Path | None:
    """The output folder, checked: a file is refused; a folder holding another scan's results
    is refused unless the scan resumes them or ``overwrite`` replaces them (then they are
    removed, so no earlier file is left beside the new ones). ``resumable`` False: the work
    cannot resume (the refusal does not offer it)."""
    if out is None:
        if resume:
            raise NoisefindError("resume needs out, the folder of the interrupted scan",
                                 parameter="resume")
        return None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NoisefindError(f"out {out}: exists and is a file; give a folder", parameter="out")
    earlier = [name for name in SCAN_FILES if (out / name).exists()]
    if not earlier or resume:
        distributed.barrier()  # every rank has looked before the first one writes
        return out
    if not overwrite:
        if not resumable:
            raise NoisefindError(f"out {out} holds earlier results ({earlier[0]}); replace them "
                                 "with overwrite, or choose another folder",
                                 parameter=("out", "overwrite"))
        raise NoisefindError(
            f"out {out} holds the results of an earlier scan ({earlier[0]}); continue it with "
            "resume, replace it with overwrite, or choose another folder",
            parameter=("out", "resume", "overwrite"))
    if distributed.is_main():
        for name in SCAN_FILES:
            (out / name).unlink(missing_ok=True)
        for path in out.glob("scan_progress*.jsonl"):
            path.unlink()
        for name in SCAN_FOLDERS:
            shutil.rmtree(out / name, ignore_errors=True)
    distributed.barrier()
    return out


def _flip_search(data: LabeledData, run: Run, rows: np.ndarray, settings: FlipSettings,
                 out: Path | None, resume: bool, progress: bool, seconds: dict) -> pd.DataFrame:
    """Flip-search this process's share of ``rows`` not yet done; every rank's results."""
    state = {"settings": settings.as_dict(), "rows": digest(rows), "labels": digest(data.y),
             "model": model_key(run.model)}
    rank, world = distributed.rank_and_world()
    log = ScanLog(out, rank) if out is not None else MemoryLog()
    done_rows = log.resume(state) if resume else log.start(state)
    mine = rows[rank::world]  # this process's share, by position (all of it outside torchrun)
    todo = mine[~np.isin(mine, done_rows)]
    started = time.perf_counter()
    if len(todo):
        on_results = log.append if not progress else estimating(log.append, len(todo), started)
        flip_search(run.model, data, settings, rows=torch.from_numpy(todo), progress=progress,
                    on_results=on_results)
    took = time.perf_counter() - started
    seconds["flip_search"] = round(took, 3)
    seconds["examples_per_second"] = round(len(todo) / max(took, 1e-9), 3)
    distributed.barrier()  # every shard is on disk before the merge
    return log.read_all()


def _say_trainings_to_come(run: Run, data: LabeledData, stages: Stages, folds: int,
                           took: float) -> None:
    """After the scanned model, how long the other trainings will take, scaled from its time
    by their examples and epochs (the fold models' recipe may differ: a rough figure)."""
    config = TrainConfig.from_dict(run.config["train"])
    fold_share = 0.0
    if FOLDS_STAGE in stages.names:
        fold_epochs = out_of_sample_config(config, data).epochs
        # K models (times the models of a fold), each on (K - 1) / K of the data
        fold_share = (folds - 1) * config.fold_models * fold_epochs / config.epochs
    replica_share = 1.0 if CUTOFF_STAGE in stages.names else 0.0
    if fold_share + replica_share:
        names = " and ".join(name for name, share in (("fold models", fold_share),
                                                       ("replica", replica_share)) if share)
        console.print(f"trained in {took:.0f} s; the {names} to come take about "
                      f"{took * (fold_share + replica_share):.0f} s", highlight=False)


ESTIMATE_AFTER = 0.05  # share of the searches finished before the time left is estimated


def estimating(append, total: int, started: float):
    """``append``, which also says once, when a twentieth of the ``total`` searches are done,
    how long the rest will take at the rate so far (a search's cost varies too much with its
    example to say it before any is done)."""
    done = 0

    def on_results(frame: pd.DataFrame) -> None:
        nonlocal done
        append(frame)
        before, done = done, done + len(frame)
        if before < ESTIMATE_AFTER * total <= done < total:
            took = time.perf_counter() - started
            console.print(f"flip search: {done:,} of {total:,} rows in {took:.0f} s; about "
                          f"{took * (total - done) / done:.0f} s to go", highlight=False)
    return on_results


def _out_of_sample(data: LabeledData, run: Run, folds: int, settings: FlipSettings,
                   cache: ResultCache, progress: bool,
                   asked: TrainConfig | None = None) -> OutOfSample:
    """The K fold models, trained with the scanned model's recipe (augmented for images) and
    the fold models' own options the scan was ``asked`` (:data:`FOLD_OPTIONS`: a model given
    to scan records those it was trained beside, not those of this scan)."""
    recipe = replace(TrainConfig.from_dict(run.config["train"]), device=str(run.device))
    if asked is not None:
        recipe = replace(recipe, **{name: getattr(asked, name) for name in FOLD_OPTIONS})
    oos = OutOfSample(data, recipe, folds, flip_settings=settings, progress=progress,
                      cache=cache)
    if progress:
        each = f"{recipe.fold_models} models" if recipe.fold_models > 1 else "one model"
        console.print(f"out-of-sample evidence: {folds} folds, {each} each, trained without "
                      f"that 1/{folds} of the examples", highlight=False)
    oos.probabilities()
    return oos


def _decide(data: LabeledData, run: Run, results: pd.DataFrame, cutoff: CutoffSettings,
            settings: FlipSettings, cache: ResultCache, oos: OutOfSample | None, rank_by: str,
            progress: bool, stages: Stages) -> Cutoff:
    """The default order with its count and flag (the fold models' evidence, as the default
    scan decides), or the cutoff's (the replica's canaries) for the other orders."""
    rows = results["row"].to_numpy(dtype=np.int64)
    if rank_by == "consensus":
        stages.start(ORDER_STAGE)
        return default_order(data, rows, oos, order_signals(data, rows, oos), cutoff)
    if is_own(run) and cutoff.method != "none":
        return no_cutoff(rows, NO_CUTOFF)
    if cutoff.method != "none":
        stages.start(CUTOFF_STAGE)
    # Every rank calibrates alone (the same replica, the same decision as a single process).
    return calibrate(data, run, results, cutoff, settings, progress, cache=cache,
                     out_of_sample=None if oos is None else oos.probabilities())


def default_order(data: LabeledData, rows: np.ndarray, oos: OutOfSample,
                  signals: dict[str, np.ndarray], cutoff: CutoffSettings) -> Cutoff:
    """The default order of ``rows`` (``signals``: :func:`order_signals`), with its count and
    flag."""
    return consensus_decision(data.y.numpy(), rows, oos.probabilities(), consensus_score(signals),
                              signals, seed=cutoff.seed, count=cutoff.method != "none",
                              backbone_vote=oos.backbone_vote())


def order_signals(data: LabeledData, rows: np.ndarray, oos: OutOfSample) -> dict[str, np.ndarray]:
    """The default order's signals of ``rows`` (the neighbours' search is most of their cost)."""
    return default_order_signals(
        rows=rows, labels=data.y.numpy(), probabilities=oos.probabilities(),
        fold_margin=oos.fold_aum(rows), neighbours=oos.neighbours(rows),
        backbone_neighbours=oos.backbone_neighbours(rows))


def _summary(table: pd.DataFrame, data: LabeledData, run: Run | None, settings: FlipSettings,
             limit: int | None, seconds: dict, decision: Cutoff, rank_by: str,
             folds: int, device: torch.device | None = None) -> dict:
    summary = scan_summary(table, data, run, settings, limit, seconds)
    summary["rank_by"] = rank_by
    summary["peak_memory_mb"] = peak_memory_mb(run.device if run is not None else device)
    noisy = None if data.true_y is None else data.is_noisy.numpy()
    summary.update(decision.summary(len(data), None if noisy is None else noisy[decision.rows],
                                    None if noisy is None else int(noisy.sum())))
    summary["folds"] = folds
    if rank_by == "consensus":
        summary["witnesses"] = witnesses_voting(decision.signals)
    if data.preparation is not None:
        summary["input"] = data.preparation
    if run is not None and is_own(run):
        summary["own_model"] = run.config["own_model"]
        summary["own_model_fit"] = round(label_fit(table), 4)
        summary["witnesses"] = ["in_sample"]  # the flip search on the given model
    return summary


def _write(table: pd.DataFrame, summary: dict, data: LabeledData, out: Path,
           pred_probs: np.ndarray | None) -> None:
    write_suspects(table, out)
    save_training_set(data, out)
    if pred_probs is not None:  # the fold models' evidence, for cleanlab or `noisefind rank`
        write_pred_probs(pred_probs, out)
    if data.is_image and len(table):
        top = table.head(TOP_PICTURES)
        plot_top_suspects(top, to_float(data.x[_positions(data, top["index"])]).numpy(), out)
    write_summary(summary, out)
    shutil.rmtree(out / CACHE_DIR, ignore_errors=True)


def label_fit(table: pd.DataFrame) -> float:
    """The share of the scanned rows whose given label the model predicts."""
    return float((table["predicted_label"] == table["given_label"]).mean()) if len(table) else 0.0


def warn_if_unfitted(table: pd.DataFrame) -> None:
    """Say so when a model predicts too few of its given labels for the flip score to mean
    much: the search measures how little holds a *learned* label up, and a label the model
    never predicted starts flipped (0 units), whether it is wrong or not."""
    fit = label_fit(table)
    if fit < OWN_FIT_MINIMUM:
        console.print(
            f"[yellow]warning:[/] your model predicts the given label for only {fit:.0%} of the "
            f"scanned examples, so {1 - fit:.0%} start flipped (0 units) and the flip score "
            "means little here; give its out-of-sample probabilities to noisefind rank, or "
            "let noisefind train (leave out --model)", highlight=False, soft_wrap=True)


def default_rank_by(run: Run, cutoff: CutoffSettings, folds: int) -> str:
    """The best order the scan can give: ``consensus`` (needs the K-fold models, which own
    models, having no recipe, do not get), else ``cutoff`` (needs the cutoff), else ``flip``."""
    if is_own(run):
        return "flip"
    if folds:
        return "consensus"
    return "flip" if cutoff.method == "none" else "cutoff"


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch, or the process's peak resident memory on a CPU."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def check_rank_by(rank_by: str, cutoff: CutoffSettings, folds: int) -> None:
    """Refuse an unknown ``rank_by``, or an order whose inputs the scan will not make."""
    if rank_by not in ORDER_COLUMNS:
        raise NoisefindError(f"rank_by {rank_by}: use {', '.join(ORDER_COLUMNS)}",
                             parameter="rank_by")
    if rank_by == "cutoff" and cutoff.method == "none":
        raise NoisefindError("rank_by cutoff needs the cutoff; leave out cutoff none",
                             parameter=("rank_by", "cutoff"))
    if rank_by == "consensus" and not folds:
        raise NoisefindError("rank_by consensus needs the K-fold models; give folds 2 or more",
                             parameter=("rank_by", "folds"))


# ---------------------------------------------------------------------------------------------
# Model and progress log


def _get_model(data, model, out: Path, train_config, progress, device, resume) -> Run:
    if isinstance(model, Run):
        return model
    if model is not None:
        return load_run(model, device=device)
    if out is None:
        return fit(data, train_config, out=None, progress=progress)
    run_dir = out / "run"
    if resume and (run_dir / "model.safetensors").is_file() and (run_dir / "history.npz").is_file():
        console.print(f"resuming with the model already trained in {run_dir}")
        run = load_run(run_dir, device=(train_config or TrainConfig()).device)
        if train_config is not None:
            check_same_training(run, train_config)
        return run
    return fit(data, train_config, out=run_dir, progress=progress)
