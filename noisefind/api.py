"""``noisefind.find_label_issues``: inputs and labels in, a ranked table and a summary out.

The call a notebook makes: ``x`` may be an array or tensor (images N x C x H x W, N x H x W or
N x H x W x C; a table N x D), a ``torch.utils.data.Dataset`` of ``(input, label)`` pairs, a
:class:`~noisefind.data.labeled.LabeledData`, or a path that :func:`noisefind.load_data` reads.
``model``
may be None (noisefind trains one), a run (a :class:`~noisefind.training.runs.Run` or its folder), a
spec (``torchvision:<name>`` or ``<module>:<function>``, with ``weights``), or any
``torch.nn.Module`` (used as it is: the call scans a copy). Nothing is written unless ``out`` is
given. Errors are :class:`~noisefind.base.errors.NoisefindError` naming the parameter at fault.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from torch import nn

from noisefind.base.errors import NoisefindError
from noisefind.data.arrays import as_labeled_data
from noisefind.data.labeled import LabeledData
from noisefind.models.own import is_model_spec
from noisefind.training.runs import Run, check_compatible, is_own, load_own_model, load_run, own_run


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
    from noisefind.decide.cutoff import CutoffSettings
    from noisefind.scanning.pipeline import _get_model, scan
    from noisefind.signals.flip import FlipSettings
    from noisefind.training.config import TrainConfig

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
