"""Where does memorization live? The paper's three layer-level analyses (docs/method.md,
"Where memorization lives").

A *layer group* is one block with parameters: every conv block (conv + BatchNorm), every hidden
dense block (linear + BatchNorm) and the classifier head, named by module path (``layers.0``,
``layers.2.a``, ..., ``head``); :func:`layer_groups` lists them in forward order. A group's
*state* is its parameters and its BatchNorm running statistics.

- **Gradient accounting** (:class:`noisefind.analyses.gradients.GradientTracker`, ``noisefind train
  --track-gradients``): each training step's gradient split exactly into its clean and
  mislabeled parts, per layer group; :func:`gradient_figures` reads what the run recorded.
- **Rewinding** (:func:`rewind`): the final model with one group's state replaced by a kept
  checkpoint's, for every group and checkpoint; training accuracy on clean and on mislabeled
  examples (their given labels: how many are still fit), in eval mode. The group's BatchNorm
  statistics come from the same checkpoint as its weights (the layer as it was then); the
  authors' code rewinds the parameters only. ``bn="recalibrate"`` instead re-estimates every
  BatchNorm's statistics on the training inputs after the rewind.
- **Retraining** (:func:`retrain`): the final model with one group reset to its initial state
  (checkpoint epoch 0) and trained alone on the clean examples, everything else frozen: its
  parameters have ``requires_grad`` off and are not given to the optimizer, and its modules stay
  in eval mode, so their BatchNorm running statistics do not move either (only the retrained
  group's own BatchNorm updates its statistics). Then accuracy on the mislabeled examples, which
  the retraining never saw. Recipe (the authors': SGD, peak lr 0.01, at most 20 epochs): SGD
  with Nesterov momentum 0.9, weight decay 5e-4, linear warm-up over 20% of the steps and linear
  decay, the run's batch size.

Dropout layers evaluate training examples with the channels they were trained with (example-tied
dropout's ``"example"`` mode), as :func:`noisefind.training.fit.training_accuracy` does.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from noisefind.analyses.gradients import (
    group_info,
    group_keys,
    group_kind,
    group_of,
    layer_groups,
)
from noisefind.base.console import progress_bar
from noisefind.base.device import autocast
from noisefind.base.errors import NoisefindError
from noisefind.data.labeled import LabeledData
from noisefind.models.nets import Net
from noisefind.training.config import TrainConfig
from noisefind.training.fit import make_optimizer
from noisefind.training.runs import Run, check_compatible, load_weights

GRADIENT_FILE = "gradients.json"
BN_MODES = ("checkpoint", "recalibrate")


def load_gradients(run: Run | str | Path) -> dict:
    """The gradient statistics a run recorded with ``--track-gradients`` (``gradients.json``)."""
    import json

    folder = Path(run.path if isinstance(run, Run) else run)
    file = folder / GRADIENT_FILE
    if not file.is_file():
        raise NoisefindError(f"{folder} has no {GRADIENT_FILE}: train it with "
                             "noisefind train DATA --noise KIND:RATE --track-gradients")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise NoisefindError(f"{file}: not valid JSON ({exc.msg})") from None


def gradient_summary(gradients: dict) -> list[dict]:
    """Per group, over all epochs: mean normalised norms (clean, mislabeled), their ratio and
    the mean and median cosine between the epoch-summed gradients."""
    rows = []
    for g, group in enumerate(gradients["groups"]):
        clean = _column(gradients["clean_norm"], g)
        noisy = _column(gradients["noisy_norm"], g)
        cosine = _column(gradients["cosine"], g)
        rows.append({
            "group": group, "kind": gradients["kinds"][g],
            "parameters": gradients["parameters"][g],
            "clean_norm": float(np.nanmean(clean)), "noisy_norm": float(np.nanmean(noisy)),
            "noisy_to_clean": float(np.nanmean(noisy) / np.nanmean(clean)),
            "cosine_mean": float(np.nanmean(cosine)),
            "cosine_median": float(np.nanmedian(cosine)),
            "epochs_cosine_below_-0.75": int(np.sum(cosine < -0.75)),
        })
    return rows


def _column(table: list, g: int) -> np.ndarray:
    return np.array([np.nan if row[g] is None else row[g] for row in table], dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Shared by rewinding and retraining


def checkpoint_files(run: Run) -> dict[int, Path]:
    """The run's kept checkpoints by epoch (0 = the initial weights)."""
    folder = None if run.path is None else Path(run.path) / "checkpoints"
    if folder is None or not folder.is_dir():
        return {}
    found = {}
    for file in folder.glob("epoch_*.safetensors"):
        epoch = file.stem.removeprefix("epoch_")
        if epoch.isdigit():
            found[int(epoch)] = file
    return dict(sorted(found.items()))


def _needs_truth(data: LabeledData, what: str) -> torch.Tensor:
    if data.true_y is None or not data.is_noisy.any():
        raise NoisefindError(f"{what} compares clean with mislabeled examples, so it needs a run "
                             "trained with injected noise (noisefind train --noise KIND:RATE)")
    return data.is_noisy


def _prepared(run: Run, data: LabeledData, what: str) -> LabeledData:
    from noisefind.analyses.evaluate import run_data

    data = run_data(run, data)
    check_compatible(run, data)
    _needs_truth(data, what)
    return data


def _accuracies(model: Net, data: LabeledData) -> dict[str, float]:
    from noisefind.analyses.evaluate import accuracies
    from noisefind.models.dropout import dropout_mode

    with dropout_mode(model, "example"):
        return accuracies(model, data)


# --------------------------------------------------------------------------------------------
# Rewinding


def rewind(run: Run, data: LabeledData, epochs: Sequence[int] | None = None,
           bn: str = "checkpoint", progress: bool = False) -> dict:
    """Rewind each layer group of the final model to each kept checkpoint; measure accuracy.

    Parameters
    ----------
    run : Run
        A run trained with injected noise and ``--checkpoint-every N`` (loaded from its folder).
    data : LabeledData
        Its data with the same noise (:func:`noisefind.analyses.evaluate.load_run_data`).
    epochs : sequence of int, optional
        Checkpoint epochs to rewind to; default every kept one.
    bn : str
        ``"checkpoint"``: the group's BatchNorm statistics come with its weights;
        ``"recalibrate"``: re-estimate all BatchNorm statistics on the training inputs after
        the rewind.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``groups``, ``kinds``, ``epochs``, ``final`` (accuracies of the unchanged model) and
        ``clean_accuracy``, ``noisy_accuracy`` (mislabeled examples against their given
        labels), ``noisy_true_accuracy`` and, with a test set, ``test_accuracy``: lists
        ``[epoch][group]`` of fractions.
    """
    if bn not in BN_MODES:
        raise NoisefindError(f"bn {bn!r}: choose one of {', '.join(BN_MODES)}", parameter="bn")
    data = _prepared(run, data, "rewinding")
    saved = _chosen_checkpoints(run, epochs)
    model = copy.deepcopy(run.model).eval()
    final = {k: v.clone() for k, v in model.state_dict().items()}
    groups, kinds, _ = group_info(model)
    keys = {g: group_keys(model, g) for g in groups}
    measures = {"clean_accuracy": "train_clean", "noisy_accuracy": "train_noisy",
                "noisy_true_accuracy": "train_noisy_true", "test_accuracy": "test"}
    table: dict[str, list] = {name: [] for name in measures}
    with progress_bar(progress) as bar:
        task = bar.add_task("rewinding", total=len(saved) * len(groups), info="")
        for file in saved.values():
            state = load_weights(file, model)
            rows = []
            for g in groups:
                rows.append(_rewound_accuracies(model, final, state, keys[g], data, bn))
                bar.advance(task)
            for name, key in measures.items():
                table[name].append([r.get(key) for r in rows])
    model.load_state_dict(final)
    result = {"groups": groups, "kinds": kinds, "epochs": list(saved), "bn": bn,
              "final": _accuracies(model, data), **table}
    if data.x_test is None:
        del result["test_accuracy"]
    return result


def _chosen_checkpoints(run: Run, epochs: Sequence[int] | None) -> dict[int, Path]:
    saved = checkpoint_files(run)
    if not saved:
        raise NoisefindError(f"{run.path} has no checkpoints: train it with --checkpoint-every N")
    if epochs is None:
        return saved
    missing = [e for e in epochs if e not in saved]
    if missing:
        raise NoisefindError(f"no checkpoint for epoch {missing[0]}; kept: "
                             f"{', '.join(map(str, saved))}")
    return {e: saved[e] for e in sorted(set(epochs))}


def _rewound_accuracies(model: Net, final: dict, state: dict, keys: list[str],
                        data: LabeledData, bn: str) -> dict[str, float]:
    from noisefind.models.dropout import dropout_mode, recalibrate_batch_norm

    model.load_state_dict({**final, **{k: state[k] for k in keys}})
    if bn == "recalibrate":
        with dropout_mode(model, "example"):
            recalibrate_batch_norm(model, data.x)
    return _accuracies(model, data)


# --------------------------------------------------------------------------------------------
# Retraining


@dataclass
class RetrainSettings:
    """How one layer group is retrained on the clean examples (see the module docstring)."""

    epochs: int = 20
    lr: float = 0.01
    batch_size: int | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: float = 0.2
    seed: int = 0

    def validate(self) -> None:
        if self.epochs < 1:
            raise NoisefindError(f"epochs must be at least 1, got {self.epochs}",
                                 parameter="epochs")
        if not self.lr > 0:
            raise NoisefindError(f"lr must be positive, got {self.lr}", parameter="lr")
        if self.batch_size is not None and self.batch_size < 2:
            raise NoisefindError("batch_size must be at least 2 (BatchNorm needs it)",
                                 parameter="batch_size")


def retrain(run: Run, data: LabeledData, groups: Sequence[str] | None = None,
            settings: RetrainSettings | None = None, progress: bool = False) -> dict:
    """Reset each layer group to its initial state, retrain it alone on clean examples, measure.

    Parameters
    ----------
    run : Run
        A run trained with injected noise and ``--checkpoint-every N`` (for the initial weights,
        ``checkpoints/epoch_000.safetensors``).
    data : LabeledData
        Its data with the same noise.
    groups : sequence of str, optional
        Groups to retrain (:func:`layer_groups` names); default all.
    settings : RetrainSettings, optional
        The retraining recipe.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``groups``, ``kinds``, ``settings``, ``final`` (accuracies of the unchanged model) and
        per group ``reset`` (right after the reset) and ``retrained`` (after retraining)
        accuracy records: ``train_clean``, ``train_noisy`` (mislabeled examples against their
        given labels: still fit), ``train_noisy_true`` and, with a test set, ``test``.
    """
    settings = settings or RetrainSettings()
    settings.validate()
    data = _prepared(run, data, "retraining")
    initial = checkpoint_files(run).get(0)
    if initial is None:
        raise NoisefindError(f"{run.path} has no initial weights (checkpoints/"
                             "epoch_000.safetensors): train it with --checkpoint-every N")
    all_groups = layer_groups(run.model)
    chosen = list(all_groups if groups is None else groups)
    for g in chosen:
        if g not in all_groups:
            raise NoisefindError(f"no layer group {g!r}; groups: {', '.join(all_groups)}")
    init_state = load_weights(initial, run.model)
    clean_rows = torch.nonzero(~data.is_noisy).flatten()
    batch_size = settings.batch_size or _run_batch_size(run, len(clean_rows))
    records = {}
    with progress_bar(progress) as bar:
        task = bar.add_task("retraining", total=len(chosen) * settings.epochs, info="")
        for g in chosen:
            model = reset_group(run.model, init_state, g)
            reset = _accuracies(model, data)
            bar.update(task, info=g)
            retrain_group(model, g, data.subset(clean_rows), settings, batch_size,
                          on_epoch=lambda: bar.advance(task))
            records[g] = {"reset": reset, "retrained": _accuracies(model, data)}
    return {"groups": chosen, "kinds": [group_kind(run.model, g) for g in chosen],
            "settings": {**asdict(settings), "batch_size": batch_size},
            "final": _accuracies(run.model, data), "records": records}


def _run_batch_size(run: Run, n: int) -> int:
    return TrainConfig(batch_size=run.config["train"].get("batch_size")).resolved_batch_size(n)


def reset_group(model: Net, init_state: dict, group: str) -> Net:
    """A copy of ``model`` whose ``group`` has its initial state (weights and BN statistics)."""
    model = copy.deepcopy(model)
    keys = group_keys(model, group)
    device = next(model.parameters()).device
    state = model.state_dict()
    state.update({k: init_state[k].to(device) for k in keys})
    model.load_state_dict(state)
    return model


def retrain_group(model: Net, group: str, data: LabeledData, settings: RetrainSettings,
                  batch_size: int, on_epoch: Callable[[], None] | None = None) -> None:
    """Train ``group`` of ``model`` in place on ``data`` (given labels), the rest frozen.

    Frozen means: parameters outside the group have ``requires_grad`` off and are not in the
    optimizer, and every module outside the group stays in eval mode, so BatchNorm layers there
    use and keep their running statistics. ``requires_grad`` is restored afterwards and the
    model left in eval mode.
    """
    from noisefind.models.dropout import dropout_mode

    groups = layer_groups(model)
    trainable = [p for name, p in model.named_parameters() if group_of(name, groups) == group]
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(settings.seed)
    n = len(data)
    batches = max(1, math.ceil(n / batch_size))
    optimizer, schedule = make_optimizer(trainable, settings.lr, settings.momentum,
                                         settings.weight_decay, settings.warmup,
                                         settings.epochs * batches)
    x, y, index = data.x.to(device), data.y.to(device), data.index.to(device)
    try:
        for name, p in model.named_parameters():
            p.requires_grad_(group_of(name, groups) == group)
        model.eval()
        model.get_submodule(group).train()
        with dropout_mode(model, "example"):
            for _ in range(settings.epochs):
                order = torch.randperm(n, generator=generator).to(device)
                # Near-equal batches: a trailing batch of one would break BatchNorm.
                for rows in torch.tensor_split(order, batches):
                    with autocast(device):
                        logits = model(x[rows], index[rows]).float()
                    optimizer.zero_grad(set_to_none=True)
                    F.cross_entropy(logits, y[rows]).backward()
                    optimizer.step()
                    schedule.step()
                if on_epoch is not None:
                    on_epoch()
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
        model.eval()


# --------------------------------------------------------------------------------------------
# Files


FIGURES = {"gradients": (("plot_gradient_norms", "gradient_norms.png"),
                         ("plot_gradient_cosine", "gradient_cosine.png")),
           "rewind": (("plot_rewind", "rewind.png"),),
           "retrain": (("plot_retrain", "retrain.png"),)}


def save_analysis(name: str, result: dict, out: str | Path) -> list[Path]:
    """Write ``OUT/<name>.json`` (the figures' data) and the PNG figures of one analysis.

    Parameters
    ----------
    name : str
        ``gradients`` (the run's statistics with :func:`gradient_summary` under ``summary``),
        ``rewind`` or ``retrain`` (what :func:`rewind` / :func:`retrain` return).
    result : dict
        The analysis' result.
    out : path
        Output folder (created).

    Returns
    -------
    list of Path
        The files written.
    """
    from noisefind.analyses import report as analysis_report
    from noisefind.base.files import write_json

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NoisefindError(f"out {out}: exists and is a file; give a folder", parameter="out")
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"{name}.json"]
    write_json(written[0], result)
    for plotter, file in FIGURES[name]:
        written.append(getattr(analysis_report, plotter)(result, out / file))
    return written


def gradient_figures(run: Run | str | Path) -> dict:
    """The run's gradient statistics with a per-group summary, ready for :func:`save_analysis`."""
    gradients = load_gradients(run)
    return {**gradients, "summary": gradient_summary(gradients)}
