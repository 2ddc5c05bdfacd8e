"""Every input form becomes one ``LabeledData``; label noise is injected here, with its truth kept.

Nothing else in noisefind knows about file formats. Images decoded from files are held as
uint8 tensors (N, C, H, W), a quarter of float32's memory; the model converts each batch to
float in [0, 1] on its device (:func:`to_float`), then normalises it. Built-in and array images
are float32 in [0, 1], tabular data raw float32 features (N, F); normalisation lives in the
model, so a trained run carries it along. Every example keeps a stable integer ``index``
(its row in the training set) and, for files, its ``path``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from noisefind.base.errors import NoisefindError
from noisefind.data.disk_images import DiskImages


def to_float(x: torch.Tensor) -> torch.Tensor:
    """Images as float32 in [0, 1]: uint8 pixels divided by 255 (the numbers the loader gave
    when it kept float32), anything else as it is."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


# Class-dependent confusions used for asymmetric noise (docs/method.md), by class name.
ASYMMETRIC_MAPS = {
    "cifar10": {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog",
                "dog": "cat"},
    "digits": {"2": "7", "3": "8", "5": "6", "6": "5", "7": "1"},
}


@dataclass
class LabeledData:
    """A labelled training set (and optional test set) held as tensors.

    Attributes
    ----------
    x : torch.Tensor or DiskImages
        Inputs: images (N, C, H, W), uint8 (decoded files) or float32 in [0, 1]; or tabular
        features (N, F), float32. :func:`to_float` gives the float view of a batch. Decoded
        images larger than the memory budget stay on disk (:class:`DiskImages`), read a batch
        at a time.
    y : torch.Tensor
        Given labels, int64 (N,). After :meth:`with_noise`, the corrupted labels.
    classes : list of str
        Class names; label ``k`` means ``classes[k]``.
    name : str
        Where the data came from (a path or a built-in name).
    index : torch.Tensor
        Stable example indices (N,), the rows of the full training set.
    paths : list of str or None
        File of each example, for image folders and manifests.
    true_y : torch.Tensor or None
        The true labels: those before injected noise, or a manifest's ``true_label`` column;
        None when unknown.
    x_test, y_test : torch.Tensor or None
        A test split, when the source has one.
    skipped : list of dict
        Files that could not be read, each ``{"path", "reason"}``.
    noise : str or None
        The noise specification that produced ``y``, e.g. ``"symmetric:0.1"``.
    """

    x: torch.Tensor | DiskImages
    y: torch.Tensor
    classes: list[str]
    name: str
    index: torch.Tensor = None  # type: ignore[assignment]
    paths: list[str] | None = None
    true_y: torch.Tensor | None = None
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    skipped: list[dict] = field(default_factory=list)
    noise: str | None = None
    noise_seed: int | None = None
    preparation: dict | None = None  # how image files became x: size, rule, the files' sizes

    def __post_init__(self) -> None:
        if self.index is None:
            self.index = torch.arange(len(self.y), dtype=torch.int64)
        if len(self.x) != len(self.y):
            raise NoisefindError(f"{self.name}: {len(self.x)} inputs but {len(self.y)} labels")
        if len(self.y) == 0:
            raise NoisefindError(f"{self.name}: no examples")
        present = torch.unique(self.y).numel()
        if len(self.classes) < 2 or present < 2:
            raise NoisefindError(
                f"{self.name}: only one class found; noisefind needs at least two classes")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x.dim() == 4

    @property
    def is_noisy(self) -> torch.Tensor | None:
        """Boolean mask of examples whose given label differs from the truth (None if unknown)."""
        return None if self.true_y is None else self.y != self.true_y

    def subset(self, rows: Sequence[int] | torch.Tensor) -> LabeledData:
        """The examples at positions ``rows``; they keep their original ``index`` and path.
        Images streamed from disk stay there (a lazy subset); tensors are copied."""
        rows = torch.as_tensor(rows, dtype=torch.int64)
        return replace(
            self,
            x=self.x_at(rows),
            y=self.y[rows],
            index=self.index[rows],
            paths=None if self.paths is None else [self.paths[i] for i in rows.tolist()],
            true_y=None if self.true_y is None else self.true_y[rows],
        )

    def x_at(self, rows: Sequence[int] | torch.Tensor) -> torch.Tensor | DiskImages:
        """The inputs at positions ``rows``: still on disk when streamed (read as batches
        need them), else a tensor."""
        rows = torch.as_tensor(rows, dtype=torch.int64)
        return self.x.rows(rows) if isinstance(self.x, DiskImages) else self.x[rows]

    def with_noise(self, spec: str | NoiseSpec, seed: int = 0) -> LabeledData:
        """A copy whose labels are corrupted by ``spec``; the clean labels go to ``true_y``.

        ``none`` keeps the labels as given (real noise, its truth in ``true_y`` if known).
        """
        spec = NoiseSpec.parse(spec) if isinstance(spec, str) else spec
        if spec.kind == "none":
            return replace(self, noise=None if self.true_y is None else "none")
        clean = self.y if self.true_y is None else self.true_y
        noisy = inject_noise(clean.numpy(), self.classes, spec, seed)
        return replace(self, y=torch.from_numpy(noisy), true_y=clean.clone(), noise=str(spec),
                       noise_seed=seed)

    def fingerprint(self) -> str:
        """A short hash of the inputs and class names, to tell whether a run fits this data."""
        h = hashlib.sha256()
        h.update(repr((tuple(self.x.shape), self.classes)).encode())
        step = max(1, len(self.x) // 512)
        h.update(self.x[::step].contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Label noise


@dataclass(frozen=True)
class NoiseSpec:
    """A label-noise setting, written ``KIND:RATE`` (``symmetric:0.1``, ``asymmetric:0.2``), or
    ``none``: the labels as given, for data whose true labels are known (real noise)."""

    kind: str
    rate: float

    @classmethod
    def parse(cls, text: str) -> NoiseSpec:
        if text.strip() == "none":
            return cls("none", 0.0)
        kind, sep, rate_text = text.strip().partition(":")
        if not sep:
            raise NoisefindError(
                f"noise {text!r}: expected KIND:RATE (e.g. symmetric:0.1 or asymmetric:0.2) "
                "or none", parameter="noise")
        if kind not in ("symmetric", "asymmetric"):
            raise NoisefindError(
                f"noise {text!r}: unknown kind {kind!r}; use symmetric or asymmetric",
                parameter="noise")
        try:
            rate = float(rate_text)
        except ValueError:
            raise NoisefindError(f"noise {text!r}: rate {rate_text!r} is not a number",
                                 parameter="noise") from None
        if not 0.0 <= rate < 1.0 or math.isnan(rate):
            raise NoisefindError(f"noise {text!r}: rate must be in [0, 1)", parameter="noise")
        return cls(kind, rate)

    def __str__(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.rate:g}"


def parse_noise_list(text: str) -> list[NoiseSpec]:
    """``"symmetric:0.1,asymmetric:0.2"`` -> two specs."""
    return [NoiseSpec.parse(part) for part in text.split(",") if part.strip()]


def inject_noise(labels: np.ndarray, classes: Sequence[str], spec: NoiseSpec,
                 seed: int) -> np.ndarray:
    """Corrupt ``labels`` (docs/method.md, "Label noise"); returns new labels, input untouched.

    Symmetric: exactly ``floor(rate * N)`` examples, chosen without replacement, each get a label
    drawn uniformly from the *other* classes. Asymmetric: each example of a mapped class moves to
    its confusion partner with probability ``rate`` (maps for CIFAR-10 and digit classes).
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    noisy = labels.copy()
    num_classes = len(classes)
    if spec.kind == "symmetric":
        count = int(math.floor(spec.rate * len(labels)))
        chosen = rng.choice(len(labels), size=count, replace=False)
        offsets = rng.integers(1, num_classes, size=count)  # never 0: never the true class
        noisy[chosen] = (labels[chosen] + offsets) % num_classes
        return noisy
    mapping = _asymmetric_map(classes)
    flip = rng.random(len(labels)) < spec.rate
    for source, target in mapping.items():
        rows = (labels == source) & flip
        noisy[rows] = target
    return noisy


def _asymmetric_map(classes: Sequence[str]) -> dict[int, int]:
    position = {name: k for k, name in enumerate(classes)}
    for name_map in ASYMMETRIC_MAPS.values():
        if set(name_map) | set(name_map.values()) <= set(position):
            return {position[a]: position[b] for a, b in name_map.items()}
    raise NoisefindError(
        "asymmetric noise needs CIFAR-10 class names or digit classes 0-9; "
        f"these classes have no known confusion map: {', '.join(classes[:10])}")


def split_holdout(data: LabeledData, fraction: float = 0.2,
                  seed: int = 0) -> LabeledData:
    """Give ``data`` a seeded, stratified test split when it has none (for commands needing one)."""
    if data.x_test is not None:
        return data
    rng = np.random.default_rng(seed)
    labels = (data.y if data.true_y is None else data.true_y).numpy()
    test_rows = []
    for k in np.unique(labels):
        rows = np.flatnonzero(labels == k)
        test_rows.extend(rng.choice(rows, size=max(1, int(round(fraction * len(rows)))),
                                    replace=False).tolist())
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_rows] = True
    train = data.subset(torch.from_numpy(np.flatnonzero(~is_test)))
    clean = data.y if data.true_y is None else data.true_y
    return replace(train, x_test=data.x[torch.from_numpy(is_test)],
                   y_test=clean[torch.from_numpy(is_test)])


def scan_rows(n: int, limit: int | None, seed: int) -> np.ndarray:
    """The rows to scan (or, in the bench, to score with every detector): all of them in order
    when ``limit`` is None or at least ``n``, else a seeded random subset of ``limit`` rows in
    random order. ``scan --limit`` and ``bench --limit`` with the same seed pick the same rows.
    """
    if limit is not None and limit < 1:
        raise NoisefindError(f"limit must be at least 1, got {limit}", parameter="limit")
    if limit is None or limit >= n:
        return np.arange(n)
    return np.random.default_rng(seed).permutation(n)[:limit]
