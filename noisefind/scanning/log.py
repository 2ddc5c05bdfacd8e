"""The scan's progress, kept on disk (resumable) or in memory, and what a resume must keep."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from noisefind.base import distributed
from noisefind.base.console import console
from noisefind.base.errors import NoisefindError
from noisefind.base.files import JsonLines, write_json
from noisefind.signals.flip import RESULT_COLUMNS
from noisefind.training.config import TrainConfig
from noisefind.training.runs import Run

PROGRESS_FILE, STATE_FILE = "scan_progress.jsonl", "scan_state.json"


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

    def resume(self, state: dict, searched: bool = True) -> np.ndarray:
        """Check that ``state`` matches the interrupted scan; return the rows already done
        (``searched`` False: a scan that logs no rows, whose kept work is in ``OUT/cache``)."""
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
            console.print(f"resuming: {len(done)} examples already scanned" if searched else
                          f"resuming: the work kept in {self.out / 'cache'} is reused")
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

    def resume(self, state: dict, searched: bool = True) -> np.ndarray:
        """Nothing was kept in memory (another rank of a resumed scan): start afresh."""
        return self.start(state)

    def append(self, frame: pd.DataFrame) -> None:
        self.frames.append(frame)

    def read_all(self) -> pd.DataFrame:
        done = pd.concat(self.frames, ignore_index=True) if self.frames else pd.DataFrame(
            columns=list(RESULT_COLUMNS))
        return done.drop_duplicates("row", keep="first").astype({"row": "int64"})


def plan_line(x, scanned: int, stages: list[str], models: int,
              done_to_rows: str = "flip-searched") -> str:
    """One line that says, before the work, what a scan will do and hold in memory (``x``:
    the training inputs; ``done_to_rows``: what happens to the ``scanned`` rows)."""
    if isinstance(x, torch.Tensor):
        held = x.numel() * x.element_size() / 2**20
        kind = "uint8, made float a batch at a time" if x.element_size() == 1 else str(x.dtype)
        where = f"{held:,.1f} MB in memory as {kind.removeprefix('torch.')}"
    else:  # streamed from the disk cache
        where = f"{x.numel() / 2**20:,.1f} MB of uint8 on disk, read a batch at a time"
    return (f"plan: {' -> '.join(stages)}; {len(x):,} examples ({where}), {scanned:,} "
            f"{done_to_rows}, {models} model{'s' if models != 1 else ''} to train")


class Stages:
    """Says which stage of how many a scan is in (``[2/5] flip search``), on the terminal and
    in a log alike; the stages are planned before the work starts."""

    def __init__(self, names: list[str], enabled: bool = True):
        self.names, self.enabled = names, enabled

    def start(self, name: str) -> None:
        if self.enabled and name in self.names:
            console.print(f"[{self.names.index(name) + 1}/{len(self.names)}] {name}",
                          highlight=False, markup=False)


RESUMED_TRAINING = ("arch", "width", "epochs", "batch_size", "lr", "seed")
RESUMED_FOLDS = ("folds", "fold_recipe", "fold_epochs", "fold_models", *RESUMED_TRAINING)


def check_same_fold_models(out: Path, fold_models: dict) -> None:
    """A resumed default scan keeps its fold models: refuse training options that would have
    made others (the state file records the earlier ones)."""
    state_file = out / STATE_FILE
    if state_file.is_file():  # else nothing to resume: the log says so
        earlier = {"fold_models": 1,  # scans from before the option had one model a fold
                   **json.loads(state_file.read_text()).get("fold_models", {})}
        refuse_other_training(earlier, fold_models, RESUMED_FOLDS, f"the fold models in {out}")


def check_same_training(run: Run, config: TrainConfig) -> None:
    """A resumed scan keeps its model: refuse training options that would have made another."""
    refuse_other_training(run.config["train"], dataclasses.asdict(config), RESUMED_TRAINING,
                          f"the model in {run.path}")


def refuse_other_training(trained: dict, asked: dict, options: tuple[str, ...],
                          what: str) -> None:
    """Refuse a resume whose training ``options`` differ from those ``what`` was trained
    with, naming each."""
    changed = [k for k in options if trained.get(k) != asked.get(k)]
    if changed:
        told = "; ".join(f"{k} {asked.get(k)} (trained with {trained.get(k)})" for k in changed)
        raise NoisefindError(f"cannot resume: {what} was trained otherwise: {told}; resume "
                             "with the same options, or rerun without resume",
                             parameter=(*changed, "resume"))
