"""``noisefind.scanning.pipeline``: train (or load) a model, run the flip search over the training
set, rank.

The search's finished results are appended to ``OUT/scan_progress.jsonl`` as they arrive
(flushed and fsynced), next to ``OUT/scan_state.json`` which records what is being scanned
(settings, rows, model). ``resume=True`` reads both, refuses a resume with other settings, and
scans only the rows not yet done; because each example's search depends only on its own row and
seed, the final table is the same as an uninterrupted run's. The final ``suspects.csv`` and
``summary.json`` are written atomically at the end.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from noisefind.base import distributed
from noisefind.base.console import console
from noisefind.base.errors import NoisefindError
from noisefind.data.labeled import LabeledData, scan_rows
from noisefind.decide.consensus import consensus_score, flag_top
from noisefind.decide.cutoff import CutoffSettings
from noisefind.models.predict import runner_up_classes
from noisefind.scanning.export import save_training_set
from noisefind.scanning.log import MemoryLog, ScanLog
from noisefind.scanning.outputs import (
    ORDER_COLUMNS,
    plot_top_suspects,
    write_summary,
    write_suspects,
)
from noisefind.scanning.table import (
    _positions,
    mark_suspected,
    rank_table,
    scan_summary,
    suspects_table,
    with_out_of_sample,
)
from noisefind.signals.dynamics import history_for, signals
from noisefind.signals.flip import FlipSettings, flip_search
from noisefind.signals.out_of_sample import OutOfSample, class_thresholds
from noisefind.signals.replica import calibrate
from noisefind.training.cache import ResultCache, digest, model_key
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit
from noisefind.training.runs import Run, check_compatible, is_own, load_run

NO_CUTOFF = ("the model was not trained by noisefind: the cutoff's replica has no recipe to "
             "follow, so nothing is flagged; rank by the score")


def own_model_cutoff(results):
    """The cutoff of a scan of an own model: none, saying why (see the module docstring)."""
    from noisefind.decide.cutoff import no_cutoff

    return no_cutoff(results["row"].to_numpy(dtype=np.int64), NO_CUTOFF)


CACHE_DIR = "cache"


def scan(data: LabeledData, model: Run | str | Path | None = None,
         out: str | Path | None = "noisefind-out", settings: FlipSettings | None = None,
         limit: int | None = None, resume: bool = False, train_config: TrainConfig | None = None,
         progress: bool = True, device: str = "auto",
         cutoff: CutoffSettings | None = None, rank_by: str | None = None,
         folds: int = 5) -> pd.DataFrame:
    """Rank the training examples of ``data`` by how few units flip the model's prediction.

    Parameters
    ----------
    data : LabeledData
        The training set with its given labels (and the truth, if noise was injected).
    model : Run or path, optional
        A trained run (or its folder). When None, a model is trained first with
        ``train_config`` and saved to ``OUT/run``.
    out : path or None
        Output folder for ``suspects.csv``, ``summary.json``, ``top_suspects.png``. None writes
        no files (no resume then); the summary is in ``table.attrs["summary"]`` either way.
    settings : FlipSettings, optional
        Flip-search settings.
    limit : int, optional
        Scan a seeded random subset of this many examples instead of all.
    resume : bool
        Continue an interrupted scan in ``out``.
    train_config : TrainConfig, optional
        Used only when ``model`` is None.
    progress : bool
        Progress bars for training and the search.
    device : str
        Device for a loaded model (a trained one uses ``train_config.device``).
    cutoff : CutoffSettings, optional
        How the ``suspected`` flag and ``estimated_mislabeled`` are calibrated (default:
        canaries in a replica model, seeded with the flip search's seed; see
        :mod:`noisefind.decide.cutoff`).
    rank_by : {"consensus", "cutoff", "flip"}, optional
        Order of the table (and of ``top_suspects.png``): by ``consensus_score``, one vote
        each for the out-of-sample margin, for the area under the margin with the flip cost,
        for the flip cost on a fold model that learned the example and for the labels of its
        nearest neighbours (:mod:`noisefind.decide.consensus`; the best order measured, on real and
        on injected noise; needs ``folds``, a training history and one more flip search); by
        ``cutoff_score``, the canary-weighed mix of the cutoff (needs the cutoff); or by
        ``score``, the flip search's own ranking (the paper's). Default: the first of these
        the scan has.
    folds : int
        K of the K-fold models (the scanned model's recipe, with augmentation for images)
        whose class-calibrated margin against each given label (``oos_margin``) enters
        the consensus and the cutoff's signals, and whose flip search and feature spaces give
        the consensus its augmented and neighbours witnesses; 0 leaves them out. Costs K
        trainings.

    Returns
    -------
    pandas.DataFrame
        The suspects table, most suspicious first (columns of ``suspects.csv``).
    """
    settings = settings or FlipSettings()
    settings.validate()
    cutoff = cutoff or CutoffSettings(seed=settings.seed)
    if folds == 1 or folds < 0:
        raise NoisefindError(f"folds must be 0 (none) or at least 2, got {folds}")
    if rank_by is not None:
        check_rank_by(rank_by, cutoff, folds)
    out = None if out is None else Path(out)
    if out is None and resume:
        raise NoisefindError("resume needs out, the folder of the interrupted scan")
    if out is not None and out.exists() and not out.is_dir():
        raise NoisefindError(f"--out {out}: exists and is a file; give a folder")
    rows = scan_rows(len(data), limit, settings.seed)
    started = time.perf_counter()
    run = _get_model(data, model, out, train_config, progress, device, resume)
    check_compatible(run, data)
    if rank_by is None:
        rank_by = default_rank_by(run, data, cutoff, folds)
    elif rank_by == "consensus" and history_for(run, data) is None:
        raise NoisefindError("rank_by='consensus' needs the model's training history (the area "
                             "under the margin); rank by 'flip'")
    trained_seconds = time.perf_counter() - started

    state = {"settings": settings.as_dict(), "rows": digest(rows), "labels": digest(data.y),
             "model": model_key(run.model)}
    rank, world = distributed.rank_and_world()
    log = ScanLog(out, rank) if out is not None else MemoryLog()
    done_rows = log.resume(state) if resume else log.start(state)
    mine = rows[rank::world]  # this process's share, by position (all of it outside torchrun)
    todo = mine[~np.isin(mine, done_rows)]

    search_started = time.perf_counter()
    if len(todo):
        flip_search(run.model, data, settings, rows=torch.from_numpy(todo), progress=progress,
                    on_results=log.append)
    search_seconds = time.perf_counter() - search_started
    distributed.barrier()  # every shard is on disk before the merge

    results = log.read_all()
    scanned = torch.tensor(results["row"].to_numpy(), dtype=torch.int64)
    runner_up = runner_up_classes(run.model, data.x[scanned], data.index[scanned],
                                  data.y[scanned])
    table = suspects_table(results, data, run.model.unit_layers(), runner_up)
    # Models trained along the way are kept until the scan ends, so a resumed scan reuses them;
    # other ranks compute their own (the same, by seed) rather than share the folder's files.
    cache = ResultCache(out / CACHE_DIR if out is not None and distributed.is_main() else None)
    oos = probabilities = None
    if folds and not is_own(run):
        recipe = replace(TrainConfig.from_dict(run.config["train"]), device=str(run.device))
        oos = OutOfSample(data, recipe, folds, flip_settings=settings, progress=progress,
                          cache=cache)
        if progress:
            console.print(f"out-of-sample evidence: {folds} models, each trained without "
                          f"1/{folds} of the examples", highlight=False)
        probabilities = oos.probabilities()
        table = with_out_of_sample(table, probabilities, data)
    # Every rank calibrates alone (the same replica, the same decision as a single process).
    if is_own(run) and cutoff.method != "none":
        decision = own_model_cutoff(results)
    else:
        decision = calibrate(data, run, results, cutoff, settings, progress, cache=cache,
                             out_of_sample=probabilities)
    if rank_by == "consensus":
        if progress:
            console.print("the augmented witness: the flip search again, on the fold model "
                          "that learned each example", highlight=False)
        consensus = consensus_of(results, run, data, oos)
        table["consensus_score"] = table["index"].map(dict(zip(
            data.index.numpy()[results["row"]].tolist(), consensus.tolist(), strict=True)))
        # The flag follows the order: the cutoff's estimated count, taken from the top
        # (the decision's rows are the flip search's, in its order).
        decision = replace(decision, suspected=flag_top(consensus, decision.estimated_scanned))
    table = rank_table(mark_suspected(table, decision, data), rank_by)
    if distributed.is_main():
        if out is not None:
            write_suspects(table, out)
            save_training_set(data, out)
        if out is not None and data.is_image and len(table):
            top = table.head(32)
            plot_top_suspects(top, data.x[_positions(data, top["index"])].numpy(), out)
        seconds = {"train": round(trained_seconds, 3), "flip_search": round(search_seconds, 3),
                   "examples_per_second": round(len(todo) / max(search_seconds, 1e-9), 3)}
        summary = scan_summary(table, data, run, settings, limit, seconds)
        summary["rank_by"] = rank_by
        summary["peak_memory_mb"] = peak_memory_mb(run.device)
        noisy = None if data.true_y is None else data.is_noisy.numpy()
        summary.update(decision.summary(len(data), None if noisy is None else noisy[decision.rows],
                                        None if noisy is None else int(noisy.sum())))
        summary["seconds"]["cutoff"] = decision.details.get("seconds", 0.0)
        for stage, took in (oos.seconds if oos is not None else {}).items():
            summary["seconds"][stage] = round(took, 3)
        summary["seconds"]["total"] = round(time.perf_counter() - started, 3)
        summary["folds"] = folds if probabilities is not None else 0
        if is_own(run):
            summary["own_model"] = run.config["own_model"]
        if out is not None:
            write_summary(summary, out)
            shutil.rmtree(out / CACHE_DIR, ignore_errors=True)
        table.attrs["summary"] = summary
    return table


def default_rank_by(run: Run, data: LabeledData, cutoff: CutoffSettings, folds: int) -> str:
    """The best order the scan can give: ``consensus`` (needs the K-fold models and the run's
    history, which own models lack), else ``cutoff`` (needs the cutoff), else ``flip``."""
    if is_own(run):
        return "flip"
    if folds and history_for(run, data) is not None:
        return "consensus"
    return "flip" if cutoff.method == "none" else "cutoff"


def consensus_of(results: pd.DataFrame, run: Run, data: LabeledData,
                 oos: OutOfSample) -> np.ndarray:
    """The :func:`~noisefind.decide.consensus.consensus_score` of the rows of a flip-search result,
    in its order: AUM and ``oos_margin`` as the cutoff reads them (:func:`cutoff.signals`), the
    flip search on the fold model after each row's held-out fold, and the neighbours in the
    fold models' feature spaces."""
    labels = data.y.numpy()
    rows = results["row"].to_numpy()
    probabilities = oos.probabilities()
    read = signals(results, history_for(run, data), probabilities, labels[rows],
                   thresholds=class_thresholds(probabilities, labels))
    return consensus_score({"oos_margin": read["oos_margin"], "aum": -read["aum"],
                            "flip_cost": -results["flip_cost"].to_numpy(dtype=np.float64),
                            "fold_flip": -oos.fold_flip(rows),
                            "neighbours": oos.neighbours(rows)})


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch, or the process's peak resident memory on a CPU."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def check_rank_by(rank_by: str, cutoff: CutoffSettings, folds: int) -> None:
    """Refuse an unknown ``rank_by``, or an order whose inputs the scan will not make."""
    if rank_by not in ORDER_COLUMNS:
        raise NoisefindError(f"rank_by={rank_by!r}: use {', '.join(map(repr, ORDER_COLUMNS))}")
    if rank_by == "cutoff" and cutoff.method == "none":
        raise NoisefindError("rank_by='cutoff' needs the cutoff; drop cutoff='none'")
    if rank_by == "consensus" and not folds:
        raise NoisefindError("rank_by='consensus' needs the K-fold models; set folds >= 2")


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
            _check_same_training(run, train_config)
        return run
    return fit(data, train_config, out=run_dir, progress=progress)


RESUMED_TRAINING = ("arch", "width", "epochs", "batch_size", "lr", "seed")


def _check_same_training(run: Run, config: TrainConfig) -> None:
    """A resumed scan keeps its model: refuse training options that would have made another."""
    trained = run.config["train"]
    changed = [f"--{k.replace('_', '-')} {getattr(config, k)} (the model: {trained.get(k)})"
               for k in RESUMED_TRAINING if trained.get(k) != getattr(config, k)]
    if changed:
        raise NoisefindError(f"cannot resume: the model in {run.path} was trained otherwise: "
                             f"{'; '.join(changed)}; resume with the same options, or rerun "
                             "without --resume")
