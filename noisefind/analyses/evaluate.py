"""Accuracy before and after dropping the memorization channels, and the detector it gives.

A run trained with a dropout layer (example-tied above all, docs/method.md) is evaluated on
its clean training examples, its mislabeled training examples (against their given, wrong labels:
how many are still fit) and a test set, the paper's Table 1:

- ``"before"``: the network as trained. Each training example goes through the channels it was
  trained with (``"example"`` mode); test examples, which own no channels, through all of them
  (``"all"``).
- ``"all"`` (example-tied runs): everything through all channels, memorization channels scaled by
  ``p_mem`` (the paper's first evaluation mode).
- ``"after"``: memorization channels dropped (the paper's second mode), with BatchNorm statistics
  re-estimated on the training inputs (see :mod:`noisefind.models.dropout` for why).

The test set is the data's own test split, or else the hold-out the run was trained without:
``TrainConfig.holdout`` (``noisefind train --holdout 0.2``) is saved in the run's config, and
:func:`run_data` applies :func:`noisefind.data.labeled.split_holdout` with the same share and seed
to the
same data, so training and evaluation agree on the split without storing any row lists. A run
trained on all its rows has no test set to measure; ``"test"`` is then left out.
"""

from __future__ import annotations

import numpy as np
import torch
from rich.table import Table

from noisefind.base.errors import NoisefindError
from noisefind.data.labeled import LabeledData, split_holdout
from noisefind.data.load import load_data
from noisefind.models.dropout import (
    ExampleTiedDropout,
    dropout_layers,
    dropout_mode,
    memorization_dropped,
)
from noisefind.models.nets import Net
from noisefind.models.predict import label_margin, predict_logits
from noisefind.training.runs import Run, check_compatible

# Rows of the table, in the paper's order; keys of each accuracy record.
STAGES = {"before": "before drop", "all": "all channels", "after": "after drop"}
MEASURES = {"train_clean": "train, clean", "train_noisy": "train, mislabeled", "test": "test",
            "train": "train (given labels)"}


def load_run_data(run: Run, source: str | None = None, progress: bool = False) -> LabeledData:
    """Reload the data ``run`` was trained on, with the same injected noise.

    Parameters
    ----------
    run : Run
        A run whose ``config["data"]`` names its data, noise and noise seed.
    source : str, optional
        Load the data from here instead of the recorded name (a moved folder, say); the run's
        noise is still applied.
    progress : bool
        Show a progress bar while decoding images.
    """
    info = run.config["data"]
    shape = run.config["input_shape"]
    try:
        data = load_data(source or info["name"], image_size=shape[-1] if len(shape) == 3 else None,
                         progress=progress)
    except NoisefindError as exc:
        raise NoisefindError(f"cannot reload the run's data ({exc}); pass --data DATA") from None
    if info.get("noise"):
        data = data.with_noise(info["noise"], info.get("noise_seed") or 0)
    return data


def run_data(run: Run, data: LabeledData) -> LabeledData:
    """``data`` split as ``run`` was trained: its training rows, plus the hold-out as test set.

    Data that has a test split, or that has exactly the run's number of training examples
    (already the training rows), is returned as it is.
    """
    train = run.config["train"]
    holdout = train.get("holdout", 0.0)
    if not holdout or data.x_test is not None or len(data) == run.config["data"]["examples"]:
        return data
    return split_holdout(data, holdout, train["seed"])


def accuracies(model: Net, data: LabeledData) -> dict[str, float]:
    """Eval-mode accuracy of ``model`` (its dropout layers in their current mode).

    Keys: ``train_clean`` and ``train_noisy`` (when the truth is known; mislabeled examples are
    scored against their given labels, i.e. how many are still fit), ``test`` (when ``data`` has a
    test split), ``train`` (all training examples, given labels) and ``train_noisy_true`` (the
    share of mislabeled examples predicted as their true class).
    """
    predicted = predict_logits(model, data.x, data.index).argmax(1).cpu()
    right = predicted == data.y
    out: dict[str, float] = {}
    if data.true_y is not None:
        noisy = data.y != data.true_y
        out["train_clean"] = _mean(right[~noisy])
        if noisy.any():
            out["train_noisy"] = _mean(right[noisy])
    if data.x_test is not None:
        test_predicted = predict_logits(model, data.x_test).argmax(1).cpu()
        out["test"] = _mean(test_predicted == data.y_test)
    out["train"] = _mean(right)
    if data.true_y is not None and noisy.any():
        out["train_noisy_true"] = _mean(predicted[noisy] == data.true_y[noisy])
    return out


def _mean(values: torch.Tensor) -> float:
    return values.float().mean().item()


def _require_dropout(run: Run, what: str) -> None:
    if not dropout_layers(run.model):
        raise NoisefindError(f"{what} needs a run trained with dropout layers (this one has "
                             "none); train with: noisefind train DATA --example-tied-dropout")


def evaluate(run: Run, data: LabeledData, drop_memorization: bool = False) -> dict:
    """Accuracies before (and optionally after) dropping the memorization channels.

    Parameters
    ----------
    run : Run
        A trained run; ``drop_memorization`` needs one with dropout layers.
    data : LabeledData
        The data the run was trained on (all of it: :func:`run_data` re-applies its hold-out).
    drop_memorization : bool
        Also evaluate with the memorization channels dropped.

    Returns
    -------
    dict
        ``{"before": {...}, "all": {...}, "after": {...}}`` of :func:`accuracies` records
        (fractions); ``"all"`` only for example-tied runs, ``"after"`` only with
        ``drop_memorization``. See the module docstring for what each stage means.
    """
    if drop_memorization:
        _require_dropout(run, "--drop-memorization")
    data = run_data(run, data)
    check_compatible(run, data)
    with dropout_mode(run.model, "example"):
        result = {"before": accuracies(run.model, data)}
    if any(isinstance(m, ExampleTiedDropout) for m in run.model.modules()):
        with dropout_mode(run.model, "all"):
            result["all"] = accuracies(run.model, data)
    if drop_memorization:
        with memorization_dropped(run.model, data.x):
            result["after"] = accuracies(run.model, data)
    return result


def etd_scores(run: Run, data: LabeledData) -> np.ndarray:
    """The example-tied dropout detector: one score per training example, higher = more suspect.

    The score is minus the margin (given-label logit minus the largest other) with the
    memorization channels dropped (as in :func:`evaluate`'s ``"after"``), so a training example
    whose prediction after the drop disagrees with its label scores above 0, and the surer the
    disagreement the higher.

    Parameters
    ----------
    run : Run
        A run trained with ``dropout="example-tied"``.
    data : LabeledData
        Its training data (all of it, or its training rows); scores follow the training rows'
        order, the order of ``run.history``.

    Returns
    -------
    numpy.ndarray
        float64, one score per training example.
    """
    _require_dropout(run, "the etd detector")
    data = run_data(run, data)
    with memorization_dropped(run.model, data.x):
        logits = predict_logits(run.model, data.x, data.index).cpu()
    return (-label_margin(logits, data.y)).double().numpy()


def evaluation_table(result: dict, title: str | None = None) -> Table:
    """A rich table of :func:`evaluate`'s result, in percent, like the paper's Table 1."""
    table = Table(title=title)
    table.add_column("accuracy (%)")
    for stage in result:
        table.add_column(STAGES.get(stage, stage), justify="right")
    # Without the truth the clean/mislabeled split is unknown: show all training examples.
    keys = ("train_clean", "train_noisy", "test") if "train_clean" in result["before"] \
        else ("train", "test")
    for key in keys:
        label = MEASURES[key]
        values = [result[stage].get(key) for stage in result]
        table.add_row(label, *("-" if v is None else f"{100 * v:.1f}" for v in values))
    return table
