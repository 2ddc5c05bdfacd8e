"""The Feldman-Zhang subset estimate of memorization and influence (docs/method.md, "The
memorization estimate").

``models`` networks are trained, each on its own random subset of ``round(subset * n)``
training examples (drawn without replacement by a generator seeded with ``(seed, model)``;
model ``t`` trains with seed ``seed + t``) and predicts every training example (and every test
example) in eval mode. For training example ``i``::

    mem_i = acc_i(models whose subset held i) - acc_i(models whose subset did not)

where ``acc_i`` is the share of those models predicting ``i``'s *given* label. A mislabeled
example is fit only by models trained on it, so its estimate is near 1; a typical clean example
is predicted right either way, near 0. The influence of training example ``i`` on test example
``j`` is the same difference measured on ``j`` (its label). An example that every model held,
or none did, has no estimate (NaN); with ``subset = 0.7`` that happens with probability
``0.7**T + 0.3**T`` per example.

Resumable: each finished model's subset and predictions are appended to ``OUT/models.jsonl``
(one JSON line, flushed and fsynced) after a first line with the settings. Running again with
the same data, labels, subset share, seed and training settings trains only the models not yet
there (asking for more models extends the estimate); other settings are refused. A line cut
short by a kill is dropped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from noisefind.base.console import console, progress_bar
from noisefind.base.errors import NoisefindError
from noisefind.base.files import JsonLines, atomic_write, write_json
from noisefind.data.labeled import LabeledData
from noisefind.models.predict import predict_logits
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit

PROGRESS_FILE = "models.jsonl"
PROGRESS_FORMAT = 1


@dataclass
class MemorizationSettings:
    """How many subset models, on what share of the data, with which seed."""

    models: int = 32
    subset: float = 0.7
    seed: int = 0

    def validate(self) -> None:
        if self.models < 2:
            raise NoisefindError(f"models must be at least 2, got {self.models}",
                                 parameter="models")
        if not 0.0 < self.subset < 1.0:
            raise NoisefindError(f"subset must be in (0, 1), got {self.subset}", parameter="subset")


@dataclass
class MemorizationResult:
    """The estimate: one table row per training example, plus influence when asked for.

    Attributes
    ----------
    table : pandas.DataFrame
        In training-set order: ``row, index, path, given_label, memorization, accuracy_in,
        accuracy_out, models_in, models_out`` and, with the truth, ``true_label, is_noisy``.
    influence : numpy.ndarray or None
        (training examples, test examples) float32, when a test set was given and asked for.
    models : int
        Models the estimate is built on.
    """

    table: pd.DataFrame
    influence: np.ndarray | None
    models: int


def subset_mask(n: int, subset: float, seed: int, model: int) -> np.ndarray:
    """Which of ``n`` examples model ``model`` trains on (bool, ``round(subset * n)`` true)."""
    size = min(n - 1, max(1, round(subset * n)))
    chosen = np.random.default_rng([seed, model]).choice(n, size=size, replace=False)
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    return mask


def estimate(held: np.ndarray, correct: np.ndarray) -> dict[str, np.ndarray]:
    """Memorization from ``held`` and ``correct``, both (models, examples) bool.

    Returns ``memorization``, ``accuracy_in``, ``accuracy_out`` (NaN where undefined) and the
    counts ``models_in``, ``models_out``.
    """
    held, correct = np.asarray(held, dtype=bool), np.asarray(correct, dtype=bool)
    models_in, models_out = held.sum(0), (~held).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy_in = (held & correct).sum(0) / models_in
        accuracy_out = (~held & correct).sum(0) / models_out
    return {"memorization": accuracy_in - accuracy_out, "accuracy_in": accuracy_in,
            "accuracy_out": accuracy_out, "models_in": models_in, "models_out": models_out}


def influence(held: np.ndarray, correct_test: np.ndarray) -> np.ndarray:
    """Influence of every training example on every test example, (n_train, n_test) float32.

    ``held`` is (models, n_train) bool, ``correct_test`` (models, n_test) bool; rows of training
    examples that every model (or no model) held are NaN.
    """
    held = np.asarray(held, dtype=np.float32)
    correct = np.asarray(correct_test, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        with_i = held.T @ correct / held.sum(0)[:, None]
        without_i = (1.0 - held).T @ correct / (1.0 - held).sum(0)[:, None]
    return (with_i - without_i).astype(np.float32)


def memorization(data: LabeledData, settings: MemorizationSettings | None = None,
                 train_config: TrainConfig | None = None, out: str | Path | None = None,
                 with_influence: bool = False, progress: bool = True) -> MemorizationResult:
    """Estimate every training example's memorization from models trained on random subsets.

    Parameters
    ----------
    data : LabeledData
        The training set (given labels, possibly noisy); its test split is used for influence.
    settings : MemorizationSettings, optional
        Number of models, subset share, seed.
    train_config : TrainConfig, optional
        How each model trains; its seed, checkpoints, hold-out and gradient tracking are
        replaced (seed ``settings.seed + t``, none of the others).
    out : path, optional
        Folder for ``models.jsonl`` (progress, resumable), ``memorization.csv``,
        ``summary.json``, ``memorization.png`` and, with influence, ``influence.npz`` and
        ``influence_top.csv``. Without it nothing is written or resumed.
    with_influence : bool
        Also estimate the influence of each training example on each test example.
    progress : bool
        Show a progress bar over the models.

    Returns
    -------
    MemorizationResult
    """
    settings = settings or MemorizationSettings()
    settings.validate()
    if with_influence and data.x_test is None:
        raise NoisefindError("influence needs a test set: give data with a test split or "
                             "hold some out (--holdout 0.2)")
    config = replace(train_config or TrainConfig(), checkpoint_every=0, holdout=0.0)
    state = _state(data, settings, config)
    out = Path(out) if out is not None else None
    done = _read_progress(out, state) if out is not None else {}
    todo = [t for t in range(settings.models) if t not in done]
    if done and progress:
        console.print(f"resuming: {len(done)} of {settings.models} models already trained")
    with progress_bar(progress) as bar:
        task = bar.add_task("subset models", total=settings.models, completed=len(done),
                            info="")
        for t in todo:
            done[t] = _train_one(data, settings, config, t)
            if out is not None:
                JsonLines(out / PROGRESS_FILE).append([{"model": t, **_encode(done[t])}])
            bar.advance(task)
    result = _result(data, [done[t] for t in range(settings.models)], with_influence)
    if out is not None:
        write_outputs(result, data, settings, config, out)
    return result


def memorization_scores(data: LabeledData, train_config: TrainConfig | None = None,
                        settings: MemorizationSettings | None = None,
                        progress: bool = False) -> np.ndarray:
    """Memorization estimate per training example as a detector score (higher = suspect).

    Examples without an estimate (held by every model or by none) get the mean of the rest,
    a neutral rank.
    """
    table = memorization(data, settings, train_config, progress=progress).table
    scores = table["memorization"].to_numpy(dtype=np.float64, copy=True)
    missing = np.isnan(scores)
    if missing.all():
        raise NoisefindError("no example has a memorization estimate; train more --models")
    scores[missing] = scores[~missing].mean()
    return scores


# --------------------------------------------------------------------------------------------
# One model


def _train_one(data: LabeledData, settings: MemorizationSettings, config: TrainConfig,
               t: int) -> dict:
    held = subset_mask(len(data), settings.subset, settings.seed, t)
    run = fit(data.subset(torch.from_numpy(np.flatnonzero(held))),
              replace(config, seed=settings.seed + t), progress=False)
    predicted = predict_logits(run.model, data.x, data.index).argmax(1).cpu().numpy()
    record = {"held": held, "predicted": predicted.astype(np.int64)}
    if data.x_test is not None:
        record["predicted_test"] = predict_logits(run.model, data.x_test).argmax(1).cpu().numpy()
    return record


def _result(data: LabeledData, records: list[dict], with_influence: bool) -> MemorizationResult:
    held = np.stack([r["held"] for r in records])
    labels = data.y.numpy()
    correct = np.stack([r["predicted"] for r in records]) == labels[None, :]
    table = pd.DataFrame({
        "row": np.arange(len(data)), "index": data.index.numpy(),
        "path": data.paths if data.paths is not None else [""] * len(data),
        "given_label": [data.classes[k] for k in labels], **estimate(held, correct)})
    if data.true_y is not None:
        table["true_label"] = [data.classes[k] for k in data.true_y.numpy()]
        table["is_noisy"] = data.is_noisy.numpy()
    matrix = None
    if with_influence:
        correct_test = np.stack([r["predicted_test"] for r in records]) == \
            data.y_test.numpy()[None, :]
        matrix = influence(held, correct_test)
    return MemorizationResult(table, matrix, len(records))


# --------------------------------------------------------------------------------------------
# Progress file


def _state(data: LabeledData, settings: MemorizationSettings, config: TrainConfig) -> dict:
    """What a resumed estimate must share with the one it continues."""
    labels = hashlib.sha256(data.y.numpy().tobytes()).hexdigest()[:16]
    train = asdict(config)
    train.pop("device")  # the same estimate may continue on another device
    return {"format": PROGRESS_FORMAT, "fingerprint": data.fingerprint(), "labels": labels,
            "examples": len(data), "test_examples": 0 if data.x_test is None else
            len(data.x_test), "subset": settings.subset, "seed": settings.seed, "train": train}


def _encode(record: dict) -> dict:
    encoded = {"held": np.packbits(record["held"]).tobytes().hex(),
               "predicted": record["predicted"].tolist()}
    if "predicted_test" in record:
        encoded["predicted_test"] = record["predicted_test"].tolist()
    return encoded


def _decode(line: dict, n: int) -> dict:
    record = {"held": np.unpackbits(np.frombuffer(bytes.fromhex(line["held"]), dtype=np.uint8),
                                    count=n).astype(bool),
              "predicted": np.asarray(line["predicted"], dtype=np.int64)}
    if "predicted_test" in line:
        record["predicted_test"] = np.asarray(line["predicted_test"], dtype=np.int64)
    return record


def _read_progress(out: Path, state: dict) -> dict[int, dict]:
    """Models already trained in ``out`` (starting the file if there is none)."""
    if out.exists() and not out.is_dir():
        raise NoisefindError(f"out {out}: exists and is a file; give a folder", parameter="out")
    out.mkdir(parents=True, exist_ok=True)
    log = JsonLines(out / PROGRESS_FILE)
    if not log.exists():
        log.append([{"settings": state}])
        return {}
    lines = log.read()
    try:
        saved = lines[0]["settings"]
    except (IndexError, KeyError, TypeError):
        raise NoisefindError(f"{log.path}: not a noisefind memorization progress file; "
                             "use another --out") from None
    if saved != json.loads(json.dumps(state)):
        changed = sorted(k for k in state if saved.get(k) != json.loads(json.dumps(state[k])))
        raise NoisefindError(f"{out} holds an estimate with other settings ({', '.join(changed)}"
                             "); use another --out, or the same data and settings")
    log.repair()  # drop a line cut by a kill before appending
    done = {}
    for line in lines[1:]:
        try:
            done[int(line["model"])] = _decode(line, state["examples"])
        except (KeyError, ValueError, TypeError):
            continue  # not a model's line
    return done


# --------------------------------------------------------------------------------------------
# Outputs


def summarize(result: MemorizationResult, settings: MemorizationSettings) -> dict:
    """Counts, settings, mean estimate of clean and mislabeled examples, AUROC with the truth."""
    table = result.table
    values = table["memorization"].to_numpy(dtype=np.float64)
    summary = {"models": result.models, "subset": settings.subset, "seed": settings.seed,
               "examples": len(table), "without_estimate": int(np.isnan(values).sum()),
               "mean_memorization": float(np.nanmean(values))}
    if "is_noisy" in table:
        from sklearn.metrics import average_precision_score, roc_auc_score

        noisy = table["is_noisy"].to_numpy(dtype=bool)
        filled = np.where(np.isnan(values), np.nanmean(values), values)
        summary.update({
            "mislabeled": int(noisy.sum()),
            "mean_memorization_clean": float(np.nanmean(values[~noisy])),
            "mean_memorization_mislabeled": float(np.nanmean(values[noisy])),
            "mean_accuracy_in_mislabeled": float(np.nanmean(table["accuracy_in"][noisy])),
            "mean_accuracy_out_mislabeled": float(np.nanmean(table["accuracy_out"][noisy])),
        })
        if 0 < noisy.sum() < len(noisy):
            summary["auroc"] = float(roc_auc_score(noisy, filled))
            summary["auprc"] = float(average_precision_score(noisy, filled))
    return summary


def write_outputs(result: MemorizationResult, data: LabeledData,
                  settings: MemorizationSettings, config: TrainConfig, out: Path) -> None:
    """``memorization.csv`` (most memorized first), ``summary.json``, ``memorization.png`` and,
    with influence, ``influence.npz`` and ``influence_top.csv``."""
    from noisefind.analyses.report import plot_memorization

    table = result.table.sort_values("memorization", ascending=False, na_position="last",
                                      kind="stable")
    atomic_write(out / "memorization.csv", lambda tmp: table.to_csv(tmp, index=False))
    summary = summarize(result, settings)
    summary["train"] = asdict(config)
    write_json(out / "summary.json", summary)
    plot_memorization(result.table, out / "memorization.png")
    if result.influence is not None:
        atomic_write(out / "influence.npz", lambda tmp: np.savez_compressed(
            tmp, influence=result.influence, train_index=data.index.numpy()), suffix=".npz")
        top = top_influences(result.influence, data)
        atomic_write(out / "influence_top.csv", lambda tmp: top.to_csv(tmp, index=False))


def top_influences(matrix: np.ndarray, data: LabeledData) -> pd.DataFrame:
    """For every test example, the training example with the largest influence on it."""
    filled = np.nan_to_num(matrix, nan=-np.inf)
    best = filled.argmax(0)
    labels = data.y.numpy()
    table = pd.DataFrame({
        "test_row": np.arange(matrix.shape[1]), "test_label": [
            data.classes[k] for k in data.y_test.numpy()],
        "train_row": best, "train_index": data.index.numpy()[best],
        "train_label": [data.classes[k] for k in labels[best]],
        "influence": matrix[best, np.arange(matrix.shape[1])]})
    return table.sort_values("influence", ascending=False, kind="stable")
