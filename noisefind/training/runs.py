"""Run folders: a trained model with its configuration and history, saved and loaded safely
(safetensors and JSON, never pickle); models trained elsewhere wrapped as runs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from noisefind.base.console import console
from noisefind.base.device import resolve_device
from noisefind.base.errors import NoisefindError
from noisefind.base.files import atomic_write, write_json
from noisefind.data.labeled import LabeledData, to_float
from noisefind.models.architectures import choose_arch
from noisefind.models.nets import Net
from noisefind.models.own import (
    PREPROCESSING,
    TORCHVISION,
    OwnModel,
    build_module,
    load_into,
    read_weights,
)
from noisefind.training.config import TrainConfig, make_model

RANKING_SIGNALS = ("the flip search's cost (score) and the model's loss on the given label "
                   "(loss); no training history, so no area under the margin or mean training "
                   "loss, and no calibrated cutoff (its replica needs noisefind's recipe)")


def own_run(module: nn.Module, data: LabeledData, *, spec: str = "model",
            weights: str | Path | None = None, mean=None, std=None,
            device: str = "auto") -> Run:
    """A :class:`Run` (no history, no recipe) of ``module`` wrapped for the flip search."""
    example = to_float(data.x[:min(2, len(data))])
    module = module.cpu()
    wrapped = OwnModel(module, example, mean, std, data.num_classes, spec)
    if weights is not None:
        load_into(module, read_weights(weights), weights, spec, wrapped.classifier)
    wrapped.to(resolve_device(device)).eval()
    config = {
        "own_model": {
            "model": spec,
            "weights": None if weights is None else str(weights),
            "units": len(wrapped.unit_names()),
            "layers": len(wrapped.gates()),
            "classifier (not searched)": wrapped.classifier,
            "input": {"preparation": PREPROCESSING if data.is_image else "raw features, then "
                      "(x - mean) / std", "shape": list(data.input_shape),
                      "mean": wrapped.mean.tolist() if mean is not None else None,
                      "std": wrapped.std.tolist() if std is not None else None},
            "ranking_signals": RANKING_SIGNALS,
        },
        "classes": list(data.classes),
        "input_shape": list(data.input_shape),
        "train": None,
        "data": {"name": data.name, "fingerprint": data.fingerprint(), "examples": len(data),
                 "noise": None, "noise_seed": None},
        "units": len(wrapped.unit_names()),
    }
    return Run(model=wrapped, config=config, history=None, path=None)


def load_own_model(spec: str, data: LabeledData, weights: str | Path | None = None,
                   mean=None, std=None, device: str = "auto") -> Run:
    """``torchvision:<name>`` or ``<module>:<function>``, built for ``data``'s classes, with
    ``weights`` (``.safetensors`` or a state dict) loaded into it."""
    if weights is None and spec.startswith(TORCHVISION):
        raise NoisefindError(f"weights: {spec} needs your weights (.safetensors or a state "
                             "dict); noisefind downloads none and would scan an untrained network")
    return own_run(build_module(spec, data.num_classes), data, spec=spec, weights=weights,
                   mean=mean, std=std, device=device)


def is_own(run: Run) -> bool:
    """Whether ``run`` wraps a model noisefind did not train (no recipe, no history)."""
    return "own_model" in run.config


RUN_FORMAT = 1


@dataclass
class History:
    """Per-example training record, arrays of shape (epochs, N), rows in training-set order.

    ``loss`` and ``margin`` (given-label logit minus the largest other) are float16 and
    ``correct`` is bool, as seen in each example's training step of that epoch.
    """

    loss: np.ndarray
    margin: np.ndarray
    correct: np.ndarray
    labels: np.ndarray
    index: np.ndarray
    true_labels: np.ndarray | None = None

    def save(self, path: Path) -> None:
        arrays = dict(loss=self.loss, margin=self.margin, correct=self.correct,
                      labels=self.labels, index=self.index)
        if self.true_labels is not None:
            arrays["true_labels"] = self.true_labels
        atomic_write(path, lambda tmp: np.savez_compressed(tmp, **arrays), suffix=".npz")

    @classmethod
    def load(cls, path: Path) -> History:
        with np.load(path, allow_pickle=False) as f:
            return cls(**{k: f[k] for k in f.files})


@dataclass
class Run:
    """A trained model with its configuration and training history."""

    model: Net
    config: dict
    history: History | None
    path: Path | None = None
    gradients: dict | None = None  # per-layer clean/mislabeled gradient statistics, if tracked

    @property
    def classes(self) -> list[str]:
        return self.config["classes"]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _run_config(data: LabeledData, config: TrainConfig, model: Net, seconds: float,
                device: torch.device) -> dict:
    return {
        "noisefind_run": RUN_FORMAT,
        "arch": config.backbone or (choose_arch(data.input_shape) if config.arch == "auto"
                                    else config.arch),
        "input_shape": list(data.input_shape),
        "classes": list(data.classes),
        "train": asdict(config),
        "data": {"name": data.name, "fingerprint": data.fingerprint(), "examples": len(data),
                 "noise": data.noise, "noise_seed": data.noise_seed},
        "units": len(model.unit_names()),
        "input": data.preparation,
        "seconds": round(seconds, 3),
        "device": str(device),
    }


# --------------------------------------------------------------------------------------------
# Run folders


def _prepare_run_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise NoisefindError(f"out {out}: exists and is a file; give a folder", parameter="out")
    out.mkdir(parents=True, exist_ok=True)


def _checkpoint_path(out: Path, epoch: int) -> Path:
    folder = out / "checkpoints"
    folder.mkdir(exist_ok=True)
    return folder / f"epoch_{epoch:03d}.safetensors"


def save_run(run: Run, out: str | Path) -> None:
    """Write a run folder: weights (safetensors), config (JSON), history (npz)."""
    out = Path(out)
    _prepare_run_folder(out)
    state = {k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()}
    atomic_write(out / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
    write_json(out / "config.json", run.config)
    if run.history is not None:
        run.history.save(out / "history.npz")
    if run.gradients is not None:
        write_json(out / "gradients.json", run.gradients)
    run.path = out


def load_run(path: str | Path, device: str = "auto") -> Run:
    """Load a run folder written by :func:`fit`; weights via safetensors, never pickle."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise NoisefindError(f"{path} is not a noisefind run (no config.json); "
                             "train one with: noisefind train DATA --out RUN")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise NoisefindError(f"{config_file}: not valid JSON ({exc.msg})") from None
    if not isinstance(config, dict) or config.get("noisefind_run") != RUN_FORMAT:
        raise NoisefindError(f"{path} is not a noisefind run (config.json lacks noisefind_run)")
    train_config = TrainConfig.from_dict(config["train"])
    model = make_model(train_config, tuple(config["input_shape"]), len(config["classes"]))
    model.load_state_dict(load_weights(path / "model.safetensors", model))
    model.to(resolve_device(device)).eval()
    history_file = path / "history.npz"
    history = History.load(history_file) if history_file.is_file() else None
    return Run(model=model, config=config, history=history, path=path)


def load_weights(file: Path, model: Net) -> dict[str, torch.Tensor]:
    """Read a safetensors state dict and check that it fits ``model``."""
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise NoisefindError(f"{file}: not a valid safetensors file ({exc})") from None
    expected = model.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in state):
        raise NoisefindError(f"{file}: weights do not match the architecture in config.json")
    return state


def check_compatible(run: Run, data: LabeledData) -> None:
    """Raise a clear error if ``data`` cannot be fed to ``run``'s model."""
    if list(data.classes) != list(run.classes):
        raise NoisefindError(
            f"the model was trained on classes {run.classes[:6]}... but the data has "
            f"{data.classes[:6]}...; scan the data the model was trained on")
    expected = tuple(run.config["input_shape"])
    if data.input_shape != expected:
        fix = (f"; pass --image-size {expected[-1]} to match"
               if len(expected) == 3 and data.input_shape[0] == expected[0]
               else "; scan data of the kind the model was trained on")
        raise NoisefindError(f"the model expects inputs of shape {expected} but the data has "
                             f"{data.input_shape}{fix}")
    if run.config["data"]["fingerprint"] != data.fingerprint():
        console.print("[yellow]warning:[/] the data differs from the data the model was "
                      "trained on (fingerprint mismatch); flip counts assume a trained-on set")
