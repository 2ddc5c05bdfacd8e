"""``noisefind.scan``: train (or load) a model, run the flip search over the training set, rank.

The search's finished results are appended to ``OUT/scan_progress.jsonl`` as they arrive
(flushed and fsynced), next to ``OUT/scan_state.json`` which records what is being scanned
(settings, rows, model). ``resume=True`` reads both, refuses a resume with other settings, and
scans only the rows not yet done; because each example's search depends only on its own row and
seed, the final table is the same as an uninterrupted run's. The final ``suspects.csv`` and
``summary.json`` are written atomically at the end.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from noisefind import distributed
from noisefind.cache import ResultCache, digest, model_key
from noisefind.consensus import consensus_score, flag_top
from noisefind.console import console
from noisefind.cutoff import CutoffSettings, calibrate, history_for, mark_suspected, signals
from noisefind.data import LabeledData
from noisefind.errors import NoisefindError
from noisefind.export import save_training_set
from noisefind.files import JsonLines, write_json
from noisefind.flip import RESULT_COLUMNS, FlipSettings, flip_search
from noisefind.out_of_sample import OutOfSample, class_thresholds
from noisefind.own_model import is_own, own_model_cutoff
from noisefind.scan_report import (
    ORDER_COLUMNS,
    SUSPECT_COLUMNS,
    plot_top_suspects,
    write_summary,
    write_suspects,
)
from noisefind.suggest import runner_up_classes, suggest_labels
from noisefind.train import Run, TrainConfig, check_compatible, fit, load_run

PROGRESS_FILE, STATE_FILE = "scan_progress.jsonl", "scan_state.json"
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
        :mod:`noisefind.cutoff`).
    rank_by : {"consensus", "cutoff", "flip"}, optional
        Order of the table (and of ``top_suspects.png``): by ``consensus_score``, one vote
        each for the out-of-sample margin, for the area under the margin with the flip cost,
        for the flip cost on a fold model that learned the example and for the labels of its
        nearest neighbours (:mod:`noisefind.consensus`; the best order measured, on real and
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
        recipe = replace(TrainConfig(**run.config["train"]), device=str(run.device))
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


def with_out_of_sample(table: pd.DataFrame, probabilities: np.ndarray,
                       data: LabeledData) -> pd.DataFrame:
    """``table`` with ``oos_confidence`` (the out-of-sample probability of the given label) and
    ``oos_label`` (the out-of-sample models' likeliest class other than the given label) after
    ``loss``, and ``suggested_label`` redone with it (:func:`noisefind.suggest.suggest_labels`)."""
    rows = _positions(data, table["index"]).numpy()
    given = data.y.numpy()[rows]
    classes = np.array(data.classes, dtype=object)
    others = np.array(probabilities[rows], dtype=np.float64)
    others[np.arange(len(rows)), given] = -np.inf
    table = table.copy()
    at = table.columns.get_loc("loss") + 1
    table.insert(at, "oos_confidence", probabilities[rows, given])
    table.insert(at + 1, "oos_label", classes[others.argmax(1)])
    table["suggested_label"] = suggest_labels(table)
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
    """The :func:`~noisefind.consensus.consensus_score` of the rows of a flip-search result,
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


def scan_rows(n: int, limit: int | None, seed: int) -> np.ndarray:
    """The rows to scan (or, in the bench, to score with every detector): all of them in order
    when ``limit`` is None or at least ``n``, else a seeded random subset of ``limit`` rows in
    random order. ``scan --limit`` and ``bench --limit`` with the same seed pick the same rows.
    """
    if limit is not None and limit < 1:
        raise NoisefindError(f"--limit must be at least 1, got {limit}")
    if limit is None or limit >= n:
        return np.arange(n)
    return np.random.default_rng(seed).permutation(n)[:limit]


def suspects_table(results: pd.DataFrame, data: LabeledData, unit_layers: list[str],
                   runner_up: np.ndarray | None = None) -> pd.DataFrame:
    """Join search results with the data's labels and paths; rank by score, highest first.

    ``score = -flip_cost``: fewer units to flip (and, among equal counts, less of the last unit
    needed) means more suspicious. ``runner_up`` (class codes, one per row of ``results``) is
    the model's most likely class other than the given label; ``suggested_label`` comes from
    :func:`noisefind.suggest.suggest_labels`.
    """
    rows = results["row"].to_numpy()
    classes = np.array(data.classes, dtype=object)
    table = pd.DataFrame({
        "index": results["index"].to_numpy(),
        "path": [data.paths[r] for r in rows] if data.paths is not None else [""] * len(rows),
        "given_label": classes[data.y.numpy()[rows]],
        "predicted_label": classes[results["predicted_label"].to_numpy()],
        "units_to_flip": results["units_to_flip"].to_numpy(),
        "flipped": results["flipped"].to_numpy(),
        "score": -results["flip_cost"].to_numpy(),
        "loss": results["loss"].to_numpy(),
        "flip_cost": results["flip_cost"].to_numpy(),
        "flipped_to": [classes[t] if t >= 0 else "" for t in results["flipped_to"]],
        "reference_accuracy": results["reference_accuracy"].to_numpy(),
        "layers": [_layer_summary(u, unit_layers) for u in results["units"]],
    })
    if runner_up is not None:
        table["runner_up_label"] = classes[runner_up]
    table.insert(table.columns.get_loc("given_label") + 1, "suggested_label",
                 suggest_labels(table))
    if data.true_y is not None:
        table["is_noisy"] = (data.y != data.true_y).numpy()[rows]
        table["true_label"] = classes[data.true_y.numpy()[rows]]
    table = rank_table(table, "flip")
    known = [c for c in SUSPECT_COLUMNS if c in table]
    return table[known + [c for c in table.columns if c not in SUSPECT_COLUMNS]]


def _positions(data: LabeledData, index) -> torch.Tensor:
    """Rows of ``data`` holding the given example indices."""
    where = {int(i): r for r, i in enumerate(data.index.tolist())}
    return torch.tensor([where[int(i)] for i in index], dtype=torch.int64)


def _layer_summary(units, unit_layers: list[str]) -> str:
    """How many zeroed units came from each layer, e.g. ``"layers.0:2 layers.3:1"``."""
    counts = Counter(unit_layers[u] for u in units)
    return " ".join(f"{layer}:{k}" for layer, k in counts.items())


def check_rank_by(rank_by: str, cutoff: CutoffSettings, folds: int) -> None:
    """Refuse an unknown ``rank_by``, or an order whose inputs the scan will not make."""
    if rank_by not in ORDER_COLUMNS:
        raise NoisefindError(f"rank_by={rank_by!r}: use {', '.join(map(repr, ORDER_COLUMNS))}")
    if rank_by == "cutoff" and cutoff.method == "none":
        raise NoisefindError("rank_by='cutoff' needs the cutoff; drop cutoff='none'")
    if rank_by == "consensus" and not folds:
        raise NoisefindError("rank_by='consensus' needs the K-fold models; set folds >= 2")


def rank_table(table: pd.DataFrame, rank_by: str = "flip") -> pd.DataFrame:
    """``table`` sorted by the column ``ORDER_COLUMNS[rank_by]``, highest first, ``rank``
    renumbered.

    Ties (and missing values, last) keep the training-set order of ``index``.
    """
    table = table.sort_values([ORDER_COLUMNS[rank_by], "index"], ascending=[False, True],
                              kind="stable", na_position="last")
    return table.assign(rank=np.arange(1, len(table) + 1)).reset_index(drop=True)


def scan_summary(table: pd.DataFrame, data: LabeledData, run: Run, settings: FlipSettings,
                 limit: int | None, seconds: dict) -> dict:
    """Counts, settings, timings and, when the truth is known, AUROC/AUPRC of the score."""
    summary = {
        "data": data.name,
        "examples": len(data),
        "scanned": len(table),
        "flipped": int(table["flipped"].sum()),
        "median_units_to_flip": float(table["units_to_flip"].median()) if len(table) else None,
        "settings": {**settings.as_dict(), "limit": limit},
        "model": str(run.path) if run.path else None,
        "noise": data.noise,
        "seconds": seconds,
        "skipped_files": data.skipped,
    }
    if "is_noisy" in table and 0 < table["is_noisy"].sum() < len(table):
        from sklearn.metrics import average_precision_score, roc_auc_score

        noisy = table["is_noisy"].to_numpy()
        summary["mislabeled_scanned"] = int(noisy.sum())
        summary["auroc"] = float(roc_auc_score(noisy, table["score"]))
        summary["auprc"] = float(average_precision_score(noisy, table["score"]))
        for column in ("consensus_score", "cutoff_score"):
            if column in table and table[column].notna().all():
                summary[f"auroc_{column}"] = float(roc_auc_score(noisy, table[column]))
                summary[f"auprc_{column}"] = float(average_precision_score(noisy, table[column]))
        summary["median_units_to_flip_mislabeled"] = float(
            table.loc[noisy, "units_to_flip"].median())
        summary["median_units_to_flip_clean"] = float(table.loc[~noisy, "units_to_flip"].median())
        summary["suggested_label_accuracy_mislabeled"] = round(float(
            (table.loc[noisy, "suggested_label"] == table.loc[noisy, "true_label"]).mean()), 4)
    return summary


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


class ScanLog:
    """The scan's progress on disk: one JSON line per finished example, one file per rank.

    Rank 0 appends to ``scan_progress.jsonl``, rank r > 0 to ``scan_progress.r.jsonl``;
    ``scan_state.json`` says what is being scanned. Reading merges every rank's file, so a
    resumed scan may run with another number of processes.
    """

    def __init__(self, out: Path, rank: int = 0):
        self.out, self.rank = out, rank
        name = PROGRESS_FILE if rank == 0 else f"scan_progress.{rank}.jsonl"
        self.file = out / name
        self.log = JsonLines(self.file)

    def files(self) -> list[Path]:
        return sorted(self.out.glob("scan_progress*.jsonl"))

    def start(self, state: dict) -> np.ndarray:
        """Begin a new scan: forget earlier progress. Returns the rows already done (none)."""
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            for file in self.files():
                file.unlink()
            write_json(self.out / STATE_FILE, state)
        distributed.barrier()
        return np.array([], dtype=np.int64)

    def resume(self, state: dict) -> np.ndarray:
        """Check that ``state`` matches the interrupted scan; return the rows already done."""
        state_file = self.out / STATE_FILE
        if not state_file.is_file():
            console.print(f"nothing to resume in {self.out}; starting a new scan")
            return self.start(state)
        previous = json.loads(state_file.read_text())
        changed = [k for k in state if previous.get(k) != state[k]]
        if changed:
            raise NoisefindError(
                f"cannot resume: the interrupted scan in {self.out} used different "
                f"{', '.join(changed)}; rerun without --resume or with the same settings")
        done = self.read_all()
        distributed.barrier()  # everyone has read before anyone rewrites its file
        self.log.repair()  # a line cut by a kill: that example is simply scanned again
        if self.rank == 0:
            console.print(f"resuming: {len(done)} examples already scanned")
        return done["row"].to_numpy(dtype=np.int64)

    def append(self, frame: pd.DataFrame) -> None:
        """Append finished examples and force them to disk before the search goes on."""
        self.log.append(frame.to_json(orient="records", lines=True))

    def read_all(self) -> pd.DataFrame:
        """Every finished example in every rank's file, each once."""
        records = [r for file in self.files() for r in JsonLines(file).read()]
        done = pd.DataFrame(records, columns=list(RESULT_COLUMNS))
        return done.drop_duplicates("row", keep="first").astype({"row": "int64"})

class MemoryLog:
    """The scan's progress kept in memory, for a scan that writes no files (``out=None``)."""

    def __init__(self):
        self.frames: list[pd.DataFrame] = []

    def start(self, state: dict) -> np.ndarray:
        return np.array([], dtype=np.int64)

    def append(self, frame: pd.DataFrame) -> None:
        self.frames.append(frame)

    def read_all(self) -> pd.DataFrame:
        done = pd.concat(self.frames, ignore_index=True) if self.frames else pd.DataFrame(
            columns=list(RESULT_COLUMNS))
        return done.drop_duplicates("row", keep="first").astype({"row": "int64"})
