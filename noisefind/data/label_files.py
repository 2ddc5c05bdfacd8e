"""Files of given evidence for ``noisefind rank``: the labels, and arrays of probabilities or
features.

Labels come as a ``.npy`` array (integers 0 .. C-1) or a ``.csv`` manifest with a ``label``
column: integers are the classes' numbers (column k of the probabilities is class k), names
are the k-th of the given ``classes`` (the probabilities' columns in order) or, without them,
sorted as :func:`noisefind.data.load.load_data` sorts them (column k is the k-th). An
optional ``path`` column gives the review page its pictures, an optional ``true_label`` column
the truth for benchmarks.
Arrays are ``.npy`` files, memory-mapped rather than read whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noisefind.base.errors import NoisefindError
from noisefind.data.load import TRUE_LABEL, class_codes, class_names, manifest_paths


@dataclass(frozen=True)
class GivenLabels:
    """Labels read from a file: codes 0 .. C-1, class names, and optionally files and truth."""

    labels: np.ndarray
    classes: list[str] | None
    paths: list[str] | None = None
    true_labels: np.ndarray | None = None


def read_labels(path: str | Path, parameter: str = "labels",
                classes: list[str] | None = None) -> GivenLabels:
    """The labels of a ``.npy`` array or a ``.csv`` manifest (see the module docstring), label
    names counted in the order of ``classes`` when given."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise NoisefindError(f"{parameter} {path}: no such file", parameter=parameter)
    if path.suffix.lower() == ".npy":
        labels = read_array(path, parameter)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise NoisefindError(f"{parameter} {path}: give a 1-D array of integer labels, got "
                                 f"{labels.dtype} of shape {labels.shape}", parameter=parameter)
        return GivenLabels(np.asarray(labels, dtype=np.int64), classes)
    if path.suffix.lower() != ".csv":
        raise NoisefindError(f"{parameter} {path}: give a .npy array or a .csv manifest",
                             parameter=parameter)
    try:
        table = pd.read_csv(path)
    except Exception as exc:
        raise NoisefindError(f"{parameter} {path}: not a readable CSV ({exc})",
                             parameter=parameter) from None
    columns = ["label", *([TRUE_LABEL] if TRUE_LABEL in table else [])]
    if "label" not in table or table[columns].isna().any().any():
        raise NoisefindError(f"{parameter} {path}: needs a 'label' column with a label in "
                             "every row", parameter=parameter)
    both = np.concatenate([table[c].to_numpy() for c in columns])
    if np.issubdtype(both.dtype, np.integer):  # already codes: label k is column k
        codes = both.astype(np.int64)
    elif classes is not None:
        codes = class_codes(both, classes)
    else:
        classes, codes = class_names(both)
    paths = manifest_paths(path, table["path"]) if "path" in table else None
    truth = codes[len(table):] if TRUE_LABEL in table else None
    return GivenLabels(codes[:len(table)], classes, paths, truth)


def read_array(path: str | Path, parameter: str) -> np.ndarray:
    """A ``.npy`` array, memory-mapped; never unpickled."""
    path = Path(path)
    if path.suffix.lower() != ".npy" or not path.is_file():
        raise NoisefindError(f"{parameter} {path}: give an existing .npy file",
                             parameter=parameter)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise NoisefindError(f"{parameter} {path}: not a readable .npy array ({exc})",
                             parameter=parameter) from None
