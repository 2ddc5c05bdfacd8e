"""``noisefind.find_label_issues``: inputs and labels in, a ranked table and a summary out.

The call a notebook makes: ``x`` may be an array or tensor (images N x C x H x W, N x H x W or
N x H x W x C; a table N x D), a ``torch.utils.data.Dataset`` of ``(input, label)`` pairs, a
:class:`~noisefind.data.LabeledData`, or a path that :func:`noisefind.load_data` reads. ``model``
may be None (noisefind trains one), a run (a :class:`~noisefind.train.Run` or its folder), a
spec (``torchvision:<name>`` or ``<module>:<function>``, with ``weights``), or any
``torch.nn.Module`` (used as it is: the call scans a copy). Nothing is written unless ``out`` is
given. Errors are :class:`~noisefind.errors.NoisefindError` naming the parameter at fault.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from noisefind.data import LabeledData, _class_names, _npz_inputs, load_data
from noisefind.errors import NoisefindError
from noisefind.own_model import is_model_spec, is_own, load_own_model, own_run
from noisefind.train import Run, check_compatible, load_run


@dataclass
class LabelIssues:
    """What :func:`find_label_issues` found.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per scanned example, most suspicious first: the columns of ``suspects.csv``
        (``index`` is the row of ``x``).
    summary : dict
        The contents of ``summary.json``: counts, settings, timings, the cutoff, and AUROC when
        the true labels are known.
    run : Run
        The scanned model (trained here when ``model`` was None).
    """

    table: pd.DataFrame
    summary: dict
    run: Run

    @property
    def suspected(self) -> pd.DataFrame:
        """The rows the calibrated cutoff flags (none without a cutoff)."""
        return self.table[self.table["suspected"]]


def find_label_issues(x, labels=None, *, model=None, weights=None, out=None, classes=None,
                      noise=None, seed=0, device="auto", epochs=50, width=1.0, arch="auto",
                      batch_size=None, lr=0.1, limit=None, max_units=100, noise_copies=2,
                      reference_size=4, reference="same-class", scan_batch_size=None,
                      cutoff="canaries", canary_fraction=0.05, canary_recall=0.9,
                      canary_labels="matched", rank_by=None, image_size=None, mean=None,
                      std=None, resume=False, progress=False) -> LabelIssues:
    """Rank the examples of ``x`` by how likely their ``labels`` are wrong.

    Parameters
    ----------
    x : array, tensor, Dataset, LabeledData or path
        The training inputs (see the module docstring). Images are float in [0, 1] (uint8 is
        divided by 255); tables are raw features.
    labels : array-like, optional
        One label per example (any values; sorted into classes). None when ``x`` carries its
        labels (a path, a Dataset, a LabeledData).
    model : None, Run, path, str or torch.nn.Module
        The model to scan; None trains one with the options below (``epochs``, ``width``, ...).
    weights : path, optional
        ``.safetensors`` or a state dict (``torch.load(weights_only=True)``) for a spec model.
    out : path, optional
        Also write the scan's files (``suspects.csv``, ``summary.json``, ...) there.
    classes : list of str or int, optional
        Class names, label k meaning ``classes[k]`` (labels must then be 0 .. K-1), or just the
        number of classes: for a model with more outputs than the labels show.
    noise : str, optional
        Corrupt the labels for benchmarking (``symmetric:0.1``). A noisefind run trained on
        corrupted labels passes its noise on when this is None.
    image_size : int, optional
        Resize images to this side (bilinear) before anything else.
    mean, std : sequence of float, optional
        Standardisation of the inputs before an own model (not a noisefind run): per channel
        for images, per feature for tables.
    rank_by : str, optional
        Order of the table; default: the scan's.
    Other options
        As the ``noisefind scan`` options of the same names (``--max-units`` is ``max_units``).

    Returns
    -------
    LabelIssues
    """
    try:
        data = as_labeled_data(x, labels, image_size=image_size, classes=classes)
        run = resolve_model(model, data, weights=weights, mean=mean, std=std, device=device)
        noise, seed, _ = training_noise(run, noise, seed)
        if noise:
            data = data.with_noise(noise, seed)
        return _scan(data, run, out=out, seed=seed, device=device, epochs=epochs, width=width,
                     arch=arch, batch_size=batch_size, lr=lr, limit=limit, max_units=max_units,
                     noise_copies=noise_copies, reference_size=reference_size,
                     reference=reference, scan_batch_size=scan_batch_size, cutoff=cutoff,
                     canary_fraction=canary_fraction, canary_recall=canary_recall,
                     canary_labels=canary_labels, rank_by=rank_by, resume=resume,
                     progress=progress)
    except NoisefindError as exc:
        raise NoisefindError(parameter_names(str(exc))) from None


def _scan(data: LabeledData, run: Run | None, *, out, seed, device, epochs, width, arch,
          batch_size, lr, limit, max_units, noise_copies, reference_size, reference,
          scan_batch_size, cutoff, canary_fraction, canary_recall, canary_labels, rank_by,
          resume, progress) -> LabelIssues:
    from noisefind.cutoff import CutoffSettings
    from noisefind.flip import FlipSettings
    from noisefind.scan import _get_model, scan
    from noisefind.train import TrainConfig

    settings = FlipSettings(max_units=max_units, noise_copies=noise_copies,
                            reference_size=reference_size, reference=reference,
                            batch_size=scan_batch_size, seed=seed)
    settings.validate()
    cutoff_settings = CutoffSettings(method=cutoff, canary_fraction=canary_fraction,
                                     canary_recall=canary_recall, canary_labels=canary_labels,
                                     seed=seed)
    cutoff_settings.validate()
    config = TrainConfig(arch=arch, width=width, epochs=epochs, batch_size=batch_size, lr=lr,
                         seed=seed, device=device)
    out = None if out is None else Path(out)
    if run is None:
        run = _get_model(data, None, out, config, progress, device, resume)
    check_own_rank_by(run, rank_by)
    options = {} if rank_by is None else {"rank_by": rank_by}
    table = scan(data, run, out=out, settings=settings, limit=limit, resume=resume,
                 train_config=config, progress=progress, device=device, cutoff=cutoff_settings,
                 **options)
    summary = table.attrs.pop("summary", {})
    return LabelIssues(table=table, summary=summary, run=run)


def parameter_names(message: str) -> str:
    """A message naming CLI flags (``--max-units``) with the parameters' names (``max_units``)."""
    return re.sub(r"(?<![\w-])--([a-z][a-z0-9-]*)", lambda m: m.group(1).replace("-", "_"),
                  message)


# --------------------------------------------------------------------------------------------
# Inputs


def as_labeled_data(x, labels=None, *, image_size: int | None = None,
                    classes=None) -> LabeledData:
    """``x`` and ``labels`` in any form :func:`find_label_issues` takes, as a LabeledData."""
    if isinstance(x, LabeledData | str | Path):
        if labels is not None or classes is not None:
            raise NoisefindError(f"{'labels' if labels is not None else 'classes'}: x carries "
                                 "its own labels and classes; leave it out")
        if isinstance(x, LabeledData):
            return x
        return load_data(x, image_size=image_size)
    name = type(x).__name__
    if isinstance(x, torch.utils.data.Dataset):
        try:
            items = [x[i] for i in range(len(x))]
        except TypeError:
            raise NoisefindError("x: a Dataset needs __len__ and __getitem__") from None
        inputs = np.stack([_numpy(item[0]) for item in items])
        if labels is None:
            labels = [_numpy(item[1]).item() for item in items]
    else:
        inputs = _numpy(x)
    if labels is None:
        raise NoisefindError("labels: give one label per example of x")
    labels = _numpy(labels)
    if labels.ndim != 1 or len(labels) != len(inputs):
        raise NoisefindError(f"labels: {labels.size} labels of shape {labels.shape} for "
                             f"{len(inputs)} examples in x; give one per example")
    tensor = _npz_inputs(inputs)
    if not torch.isfinite(tensor).all():
        raise NoisefindError("x: contains missing or infinite values")
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
        return _class_names(labels)
    names = [str(k) for k in range(classes)] if isinstance(classes, int) \
        else [str(c) for c in classes]
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or \
            labels.max() >= len(names):
        raise NoisefindError(f"labels: with classes given, labels must be integers 0 .. "
                             f"{len(names) - 1}")
    return names, labels.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Models


def resolve_model(model, data: LabeledData, *, weights=None, mean=None, std=None,
                  device: str = "auto") -> Run | None:
    """The run to scan: None (to be trained), a run, a spec with ``weights``, or a module."""
    own_options = {"weights": weights, "mean": mean, "std": std}
    given = [k for k, v in own_options.items() if v is not None]
    if isinstance(model, nn.Module):
        return own_run(copy.deepcopy(model), data, spec=type(model).__name__, weights=weights,
                       mean=mean, std=std, device=device)
    if isinstance(model, str | Path) and is_model_spec(str(model)):
        return load_own_model(str(model), data, weights, mean, std, device)
    if given:
        raise NoisefindError(f"{given[0]}: only for a model noisefind did not train "
                             "(torchvision:<name>, <module>:<function> or a torch module)")
    if model is None:
        return None
    run = model if isinstance(model, Run) else load_run(model, device=device)
    check_compatible(run, data)
    return run


def training_noise(run: Run | None, noise: str | None, seed: int) -> tuple[str | None, int, bool]:
    """The noise to apply: ``noise``, or when None the noise ``run`` was trained with (and its
    seed), so that a run trained on corrupted labels is scanned on the same labels. The third
    value says whether the run's noise was taken."""
    trained = None if run is None else run.config["data"].get("noise")
    if noise is None and trained:
        return trained, run.config["data"]["noise_seed"], True
    return noise, seed, False


def check_own_rank_by(run: Run, rank_by: str | None) -> None:
    """An own model has no cutoff and no training history, so it is ranked by the flip score."""
    if is_own(run) and rank_by in ("cutoff", "consensus"):
        needs = "the cutoff" if rank_by == "cutoff" else "a training history"
        raise NoisefindError(f"rank_by={rank_by!r} needs {needs}, which a model noisefind "
                             "did not train has none of; rank by 'flip'")
