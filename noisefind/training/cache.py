"""A folder of finished costly results (trained runs, arrays, tables), keyed by what made them.

The bench keeps one in ``OUT/cache`` so that an interrupted bench, or a bench run again with
other detectors, reuses every model it already trained and every search it already ran: a
result is found by a key that hashes everything it depends on (the data's inputs, labels and
rows, the training or search settings, the seed), so a changed setting misses and is computed
anew, never served stale. Each entry records the seconds it first took, which the bench keeps
charging to the detectors that use it, so a resumed bench reports the same costs.

Entries are written atomically (a folder is complete once its ``done.json`` exists); weights
are safetensors and tables JSON lines, so nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from noisefind.base.files import atomic_write, write_json
from noisefind.data.labeled import LabeledData
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit
from noisefind.training.runs import Run, load_run

DONE = "done.json"


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (arrays and tensors by their bytes)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu()
            part = (part.view(torch.int16) if part.dtype == torch.bfloat16 else part).numpy()
        if isinstance(part, np.ndarray):
            h.update(repr((part.dtype.str, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def data_key(data: LabeledData) -> str:
    """What a model trained on ``data`` depends on: its inputs, rows and given labels."""
    return digest(data.fingerprint(), data.index, data.y)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python numbers and lists, for ``json.dumps``."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def model_key(model: torch.nn.Module) -> str:
    """What a search on ``model`` depends on: its weights and buffers."""
    state = model.state_dict()
    return digest(list(state), *state.values())


class ResultCache:
    """Results stored under ``folder`` by key; with ``folder=None`` everything is computed.

    Parameters
    ----------
    folder : path or None
        Where entries live, one sub-folder per key.
    """

    def __init__(self, folder: str | Path | None):
        self.folder = None if folder is None else Path(folder)

    def _entry(self, kind: str, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{kind}-{key}"

    def _load_done(self, entry: Path | None) -> dict | None:
        if entry is None or not (entry / DONE).is_file():
            return None
        return json.loads((entry / DONE).read_text())

    def _finish(self, entry: Path, seconds: float) -> None:
        write_json(entry / DONE, {"seconds": round(seconds, 3)})

    def fit(self, data: LabeledData, config: TrainConfig, progress: bool = False,
            **options: Any) -> Run:
        """:func:`noisefind.training.fit.fit`, or the run it saved for the same data and config."""
        entry = self._entry("run", digest(data_key(data), config.__dict__, options))
        if self._load_done(entry) is not None:
            return load_run(entry, device=config.device)
        run = fit(data, config, out=entry, progress=progress, **options)
        if entry is not None:
            self._finish(entry, run.config["seconds"])
        return run

    def array(self, key: str, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
        """``compute()`` or its stored value; returns the array and the seconds it took."""
        entry = self._entry("array", key)
        done = self._load_done(entry)
        if done is not None:
            with np.load(entry / "value.npz", allow_pickle=False) as stored:
                return stored["value"], done["seconds"]
        start = time.perf_counter()
        value = np.asarray(compute())
        seconds = time.perf_counter() - start
        if entry is not None:
            entry.mkdir(parents=True, exist_ok=True)
            atomic_write(entry / "value.npz", lambda tmp: np.savez(tmp, value=value),
                         suffix=".npz")
            self._finish(entry, seconds)
        return value, seconds

    def table(self, key: str, compute: Callable[[], pd.DataFrame]) -> tuple[pd.DataFrame, float]:
        """``compute()`` or its stored table (JSON lines); returns it and the seconds it took."""
        entry = self._entry("table", key)
        done = self._load_done(entry)
        if done is not None:
            lines = (entry / "value.jsonl").read_text().splitlines()
            columns = json.loads((entry / "columns.json").read_text())
            return pd.DataFrame([json.loads(line) for line in lines], columns=columns), \
                done["seconds"]
        start = time.perf_counter()
        value = compute()
        seconds = time.perf_counter() - start
        if entry is not None:
            entry.mkdir(parents=True, exist_ok=True)
            write_json(entry / "columns.json", list(map(str, value.columns)))
            # Python's JSON writes floats exactly (shortest round-trip repr) and keeps inf.
            lines = "".join(json.dumps(record, default=_plain) + "\n"
                            for record in value.to_dict(orient="records"))
            atomic_write(entry / "value.jsonl", lambda tmp: tmp.write_text(lines))
            self._finish(entry, seconds)
        return value, seconds
