"""A scan's training set kept in its output folder, and the cleaned manifest made from it.

``scan`` saves what it scanned to ``OUT/training_set.npz`` (labels, class names, example
indices, the truth when known, and the file paths for file data or the inputs themselves for
arrays and tables), so ``review`` and ``export`` work from ``OUT`` alone: no need to find, load
and re-noise the data again, and a scan of a library-made subset exports correctly. Loading
uses ``allow_pickle=False``.

``export`` writes a manifest that :func:`noisefind.data.load.load_data` reads back as it is:

- image files (folders, manifests): ``path,label`` with absolute paths;
- image arrays (``digits``, ``mnist5k``, ``.npz``): one PNG per example in ``<stem>_images/``
  next to the CSV (8-bit, as the arrays are rounded to), and ``path,label`` with paths relative
  to the CSV, so the cleaned set stays image data and trains the same network;
- tables: the numeric features and ``label``; the feature names are the source CSV's when it
  is still there, else ``x0, x1, ...``.

Labels are class names. ``--drop`` leaves out the suspected examples; ``--relabel`` gives a
suspected example its ``suggested_label`` only where the out-of-sample models back it
(:func:`noisefind.decide.suggest.confident_suggestions`) and leaves the others as they are.
``--decisions FILE`` applies a person's decisions instead (the review page saves them):
``index,decision,label`` rows, ``decision`` one of ``keep``, ``relabel`` (to ``label``, a class
name) or ``drop``; examples without a decision keep their label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from noisefind.base.errors import NoisefindError
from noisefind.base.files import atomic_write
from noisefind.data.labeled import LabeledData, to_float
from noisefind.decide.suggest import confident_suggestions, suggest_labels

TRAINING_SET = "training_set.npz"
MODES = ("drop", "relabel")
DECISIONS = ("keep", "relabel", "drop")
LABEL_COLUMNS = ("given_label", "suggested_label", "predicted_label", "flipped_to",
                 "runner_up_label", "oos_label", "true_label")


@dataclass
class TrainingSet:
    """What a scan scanned: labels, classes and the inputs (arrays) or their files (paths)."""

    index: np.ndarray
    y: np.ndarray
    classes: list[str]
    name: str
    x: np.ndarray | None = None
    paths: list[str] | None = None
    true_y: np.ndarray | None = None

    @property
    def is_image(self) -> bool:
        return self.paths is not None or (self.x is not None and self.x.ndim == 4)

    def positions(self, index) -> np.ndarray:
        """Rows holding the given example indices."""
        where = {int(i): r for r, i in enumerate(self.index.tolist())}
        try:
            return np.array([where[int(i)] for i in index], dtype=np.int64)
        except KeyError as exc:
            raise NoisefindError(f"example index {exc.args[0]} of suspects.csv is not in "
                                 f"{TRAINING_SET}; the folder mixes two scans") from None


def training_set(data: LabeledData) -> TrainingSet:
    """The parts of ``data`` that ``review`` and ``export`` need (inputs only without files)."""
    return TrainingSet(
        index=data.index.numpy(), y=data.y.numpy(), classes=list(data.classes),
        name=str(data.name), x=None if data.paths is not None else to_float(data.x).numpy(),
        paths=data.paths, true_y=None if data.true_y is None else data.true_y.numpy())


def save_training_set(data: LabeledData, out: str | Path) -> Path:
    """Write ``OUT/training_set.npz`` for ``review`` and ``export`` (atomic)."""
    return write_training_set(training_set(data), out)


def write_training_set(saved: TrainingSet, out: str | Path) -> Path:
    """Write ``saved`` as ``OUT/training_set.npz`` (atomic)."""
    arrays = {"index": saved.index, "y": saved.y, "classes": np.array(saved.classes, dtype=str),
              "name": np.array(saved.name)}
    if saved.paths is not None:
        arrays["paths"] = np.array(saved.paths, dtype=str)
    elif saved.x is not None:
        arrays["x"] = saved.x.astype(np.float32, copy=False)
    if saved.true_y is not None:
        arrays["true_y"] = saved.true_y
    path = Path(out) / TRAINING_SET
    atomic_write(path, lambda tmp: np.savez_compressed(tmp, **arrays), suffix=".npz")
    return path


def load_training_set(out: str | Path) -> TrainingSet:
    """Read ``OUT/training_set.npz`` written by a scan."""
    path = Path(out) / TRAINING_SET
    if not path.is_file():
        raise NoisefindError(f"{out} has no {TRAINING_SET}; run noisefind scan DATA --out {out} "
                             "first (a scan of this version writes it)")
    with np.load(path, allow_pickle=False) as f:
        return TrainingSet(
            index=f["index"], y=f["y"], classes=[str(c) for c in f["classes"]],
            name=str(f["name"]), x=f["x"] if "x" in f else None,
            paths=[str(p) for p in f["paths"]] if "paths" in f else None,
            true_y=f["true_y"] if "true_y" in f else None)


def read_suspects(out: str | Path) -> pd.DataFrame:
    """``OUT/suspects.csv`` with label columns as text (``suggested_label`` filled in for a
    scan from before that column) and a boolean ``suspected`` column."""
    path = Path(out) / "suspects.csv"
    if not path.is_file():
        raise NoisefindError(f"{out} has no suspects.csv; run noisefind scan DATA --out {out}")
    table = pd.read_csv(path, dtype={c: str for c in (*LABEL_COLUMNS, "path")})
    if "suspected" not in table.columns:
        raise NoisefindError(f"{path} has no 'suspected' column; rerun noisefind scan to get "
                             "the calibrated cutoff")
    for column in (*LABEL_COLUMNS, "path"):
        if column in table:
            table[column] = table[column].fillna("")
    table["suspected"] = table["suspected"].astype(str).str.lower().eq("true")
    if "suggested_label" not in table:  # a scan from before the column
        table["suggested_label"] = suggest_labels(table)
    return table


# --------------------------------------------------------------------------------------------
# The cleaned labels


def cleaned_labels(training: TrainingSet, suspects: pd.DataFrame,
                   mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of ``training`` to keep, and their labels, after dropping the flagged rows
    or relabelling those whose suggestion is confident
    (:func:`noisefind.decide.suggest.confident_suggestions`).

    Returns
    -------
    keep : numpy.ndarray
        Bool per row of ``training``.
    labels : numpy.ndarray
        Label code per row (the given one, or the new one for relabelled rows).
    """
    if mode not in MODES:
        raise NoisefindError(f"export mode {mode!r}: use --drop or --relabel")
    keep = np.ones(len(training.y), dtype=bool)
    labels = training.y.copy()
    flagged = suspects[suspects["suspected"]]
    rows = training.positions(flagged["index"])
    if mode == "drop":
        keep[rows] = False
        return keep, labels
    # Precision first: a flagged row changes label only where the models that never saw it
    # back the suggestion; the others keep their label (dropping them would lose clean ones).
    code = {name: k for k, name in enumerate(training.classes)}
    sure = confident_suggestions(flagged)
    for row, new in zip(rows[sure], flagged["suggested_label"][sure], strict=True):
        labels[row] = code[new]
    return keep, labels


def write_manifest(training: TrainingSet, keep: np.ndarray, labels: np.ndarray,
                   file: str | Path) -> Path:
    """Write the kept rows of ``training`` with ``labels`` as a manifest ``load_data`` reads
    (or, for labels ranked without their inputs, ``index,label`` rows)."""
    file = Path(file)
    if file.suffix.lower() != ".csv":
        raise NoisefindError(f"file {file}: the manifest is a CSV; give a name ending in .csv",
                             parameter="file")
    if file.is_dir():
        raise NoisefindError(f"file {file}: is a folder; give a .csv file name",
                             parameter="file")
    file.parent.mkdir(parents=True, exist_ok=True)
    rows = np.flatnonzero(keep)
    names = np.array(training.classes, dtype=object)[labels[rows]]
    if training.paths is not None:
        table = pd.DataFrame({"path": [str(Path(training.paths[r]).resolve()) for r in rows],
                              "label": names})
    elif training.x is None:  # a ranking of labels alone (noisefind rank): rows by index
        table = pd.DataFrame({"index": training.index[rows], "label": names})
    elif training.x.ndim == 4:
        table = pd.DataFrame({"path": _write_pngs(training, rows, file), "label": names})
    else:
        table = pd.DataFrame(training.x[rows], columns=feature_names(training))
        table["label"] = names
    atomic_write(file, lambda tmp: table.to_csv(tmp, index=False))
    return file


def _write_pngs(training: TrainingSet, rows: np.ndarray, file: Path) -> list[str]:
    from PIL import Image

    folder = file.with_name(f"{file.stem}_images")
    folder.mkdir(exist_ok=True)
    names = []
    for r in rows:
        pixels = np.clip(np.rint(training.x[r] * 255.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels[0] if pixels.shape[0] == 1
                                else np.transpose(pixels, (1, 2, 0)))
        name = f"{folder.name}/{int(training.index[r]):06d}.png"
        image.save(file.parent / name)
        names.append(name)
    return names


def feature_names(training: TrainingSet) -> list[str]:
    """Column names of tabular features: the source CSV's when it is there, else x0, x1, ..."""
    count = training.x.shape[1]
    source = Path(training.name)
    if source.suffix.lower() == ".csv" and source.is_file():
        header = [c for c in pd.read_csv(source, nrows=0).columns if c != "label"]
        if len(header) == count:
            return header
    return [f"x{k}" for k in range(count)]


def decided_labels(training: TrainingSet, file: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of ``training`` to keep, and their labels, after a decisions file
    (``index,decision,label``, the review page's ``decisions.csv``); the rest are kept as
    they are. A bad file is refused whole, naming its first bad row (as ``decisions``)."""
    file = Path(file)
    if not file.is_file():
        raise NoisefindError(f"decisions {file}: no such file", parameter="decisions")
    try:
        table = pd.read_csv(file, dtype={"label": str}, keep_default_na=False)
    except Exception as exc:
        raise NoisefindError(f"decisions {file}: not a readable CSV ({exc})",
                             parameter="decisions") from None
    if not {"index", "decision", "label"} <= set(table.columns):
        raise NoisefindError(f"decisions {file}: needs the columns index,decision,label",
                             parameter="decisions")
    code = {name: k for k, name in enumerate(training.classes)}
    known = set(training.index.tolist())
    for line, row in enumerate(table.itertuples(index=False), start=2):
        problem = (f"decision {row.decision!r} is not one of {', '.join(DECISIONS)}"
                   if row.decision not in DECISIONS else
                   f"label {row.label!r} is not a class" if row.decision == "relabel"
                   and row.label not in code else
                   f"index {row.index} is not in the scan" if row.index not in known else None)
        if problem:
            raise NoisefindError(f"decisions {file}, line {line}: {problem}",
                                 parameter="decisions")
    twice = table["index"][table["index"].duplicated()]
    if len(twice):
        raise NoisefindError(f"decisions {file}: index {twice.iloc[0]} is decided twice",
                             parameter="decisions")
    keep = np.ones(len(training.y), dtype=bool)
    labels = training.y.copy()
    rows = training.positions(table["index"])
    keep[rows[(table["decision"] == "drop").to_numpy()]] = False
    relabel = (table["decision"] == "relabel").to_numpy()
    labels[rows[relabel]] = [code[name] for name in table.loc[relabel, "label"]]
    return keep, labels


def export(out: str | Path, file: str | Path, mode: str = "drop", *,
           decisions: str | Path | None = None, overwrite: bool = False) -> dict:
    """Write a cleaned manifest of the scan in ``out``: suspects dropped or relabelled, or a
    person's decisions applied.

    Parameters
    ----------
    out : path
        A scan's output folder (``suspects.csv``, ``training_set.npz``).
    file : path
        The manifest CSV to write.
    mode : {"drop", "relabel"}
        What to do with the flagged examples (ignored with ``decisions``).
    decisions : path, optional
        A decisions file (:func:`decided_labels`): applied instead of the flag.
    overwrite : bool
        Replace ``file`` if it exists; without it an existing ``file`` is an error
        (:class:`~noisefind.base.errors.NoisefindError`) and is left as it is.

    Returns
    -------
    dict
        ``file``, ``examples`` (written), ``dropped`` and ``relabelled`` counts, and with
        ``relabel`` ``flagged_unchanged``: flagged rows whose suggestion was not confident.
    """
    if Path(file).is_file() and not overwrite:
        raise NoisefindError(f"overwrite not given, and {file} already exists: it is left as it "
                             "is", parameter="overwrite")
    training = load_training_set(out)
    suspects = None if decisions is not None else read_suspects(out)
    if suspects is None:
        keep, labels = decided_labels(training, decisions)
    else:
        keep, labels = cleaned_labels(training, suspects, mode)
    written = write_manifest(training, keep, labels, file)
    result = {"file": str(written), "examples": int(keep.sum()),
              "dropped": int((~keep).sum()),
              "relabelled": int((keep & (labels != training.y)).sum())}
    if suspects is not None and mode == "relabel":
        result["flagged_unchanged"] = int(suspects["suspected"].sum() - result["relabelled"])
    return result
