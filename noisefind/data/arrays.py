"""Arrays, tensors and Datasets in any usual layout, as a LabeledData."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from noisefind.base.errors import NoisefindError
from noisefind.data.labeled import LabeledData
from noisefind.data.load import _npz_inputs, class_names, load_data


def as_labeled_data(x, labels=None, *, image_size: int | None = None, classes=None,
                    progress: bool = False,
                    memory_budget: int | str | None = None) -> LabeledData:
    """``x`` and ``labels`` in any form :func:`noisefind.find_label_issues` takes, as a
    LabeledData (``progress``: a bar while image files are decoded; ``memory_budget``: see
    :func:`~noisefind.data.load.load_data`)."""
    if isinstance(x, LabeledData | str | Path):
        if labels is not None or classes is not None:
            name = "labels" if labels is not None else "classes"
            raise NoisefindError(f"{name}: x carries its own labels and classes; leave it out",
                                 parameter=name)
        if isinstance(x, LabeledData):
            return x
        return load_data(x, image_size=image_size, progress=progress,
                         memory_budget=memory_budget)
    name = type(x).__name__
    if isinstance(x, torch.utils.data.Dataset):
        try:
            items = [x[i] for i in range(len(x))]
        except TypeError:
            raise NoisefindError("x: a Dataset needs __len__ and __getitem__",
                                 parameter="x") from None
        inputs = np.stack([_numpy(item[0]) for item in items])
        if labels is None:
            labels = [_numpy(item[1]).item() for item in items]
    else:
        inputs = _numpy(x)
    if labels is None:
        raise NoisefindError("labels: give one label per example of x", parameter="labels")
    labels = _numpy(labels)
    if labels.ndim != 1 or len(labels) != len(inputs):
        raise NoisefindError(f"labels: {labels.size} labels of shape {labels.shape} for "
                             f"{len(inputs)} examples in x; give one per example",
                             parameter="labels")
    tensor = _npz_inputs(inputs)
    if not torch.isfinite(tensor).all():
        raise NoisefindError("x: contains missing or infinite values", parameter="x")
    if image_size is not None and tensor.dim() == 4 and tensor.shape[-2:] != (image_size,) * 2:
        tensor = F.interpolate(tensor, size=(image_size, image_size), mode="bilinear",
                               antialias=True, align_corners=False).clamp(0, 1)
    names, codes = _labels_as_classes(labels, classes)
    return LabeledData(tensor, torch.from_numpy(codes), names, name)


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _labels_as_classes(labels: np.ndarray, classes) -> tuple[list[str], np.ndarray]:
    if classes is None:
        return class_names(labels)
    names = [str(k) for k in range(classes)] if isinstance(classes, int) \
        else [str(c) for c in classes]
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or \
            labels.max() >= len(names):
        raise NoisefindError(f"labels: with classes given, labels must be integers 0 .. "
                             f"{len(names) - 1}", parameter="labels")
    return names, labels.astype(np.int64)
