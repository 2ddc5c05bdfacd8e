"""The flip search on a model noisefind did not build: a torchvision architecture, a factory of
the user's, or any ``nn.Module``.

:class:`OwnModel` wraps the user's module with the interface the search needs (that of
:class:`noisefind.models.nets.Net`): ``forward(x, index=None)``, the ``mean`` and ``std`` buffers of
its input standardisation, and one :class:`~noisefind.models.nets.UnitGate` per prunable layer,
listed
by ``gates()``, ``unit_names()`` and ``unit_layers()``. The gates are attached with forward hooks
and change nothing until the search gives them a mask, so the user's module is used as it is:
BatchNorm in eval mode, in-place ReLUs and residual additions included.

Prunable units are every output channel of a ``Conv2d`` and every output neuron of a ``Linear``,
except the final classifier (the last such layer the forward pass runs). When the layer's output
goes straight into a BatchNorm, the gate sits on the BatchNorm's output: a zeroed unit then
outputs 0 after the usual ReLU, exactly as a gated unit of noisefind's own networks does (a zero
before the BatchNorm would become its shift, not an off switch). Each gate multiplies S equal
groups of the batch by S masks, as ``UnitGate`` does, so the batched search and the one at a
time agree on these models too.

Inputs are prepared explicitly: images are float tensors in [0, 1] (resized by the data loader
when asked), then standardised per channel with ``mean`` and ``std`` when given (else left as
they are: the user's module may standardise itself). Tables are fed as their raw features.

Such a model has no training history and no noisefind recipe, so the ranking can use only what
the model says now: the flip search's cost (the score), with the loss beside it. The cutoff's
flag needs a replica trained with the scanned model's recipe and is left out (``no_cutoff``).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path

import torch
from torch import nn

from noisefind.base.errors import NoisefindError
from noisefind.data.labeled import to_float
from noisefind.models.nets import Net, UnitGate

TORCHVISION = "torchvision:"
PREPROCESSING = "images as float tensors in [0, 1], resized to image_size, then (x - mean) / std"


class OwnModel(nn.Module):
    """A user's classifier with unit gates hooked onto its prunable layers (module docstring).

    Parameters
    ----------
    module : nn.Module
        Takes a batch of inputs and returns logits (batch, classes).
    example : torch.Tensor
        A few inputs of the data's shape (already in [0, 1] for images), for one probing forward
        pass that finds the layers in the order they run.
    mean, std : sequence of float, optional
        Per-channel (images) or per-feature (tables) standardisation applied before ``module``.
    num_classes : int, optional
        Checked against the width of the logits.
    name : str
        How errors name the model (its spec).
    """

    def __init__(self, module: nn.Module, example: torch.Tensor, mean=None, std=None,
                 num_classes: int | None = None, name: str = "model"):
        super().__init__()
        self.module = module.eval()
        features = example.shape[1]
        self.register_buffer("mean", _per_channel(mean, 0.0, features, "mean"))
        self.register_buffer("std", _per_channel(std, 1.0, features, "std"))
        if (self.std <= 0).any():
            raise NoisefindError("std: every value must be positive")
        layers, classifier = probe_layers(self, example, num_classes, name)
        self.classifier = classifier
        self.unit_gates = nn.ModuleList(UnitGate(units) for _, _, units in layers)
        self._gate_names = [layer for layer, _, _ in layers]
        for (_, target, _), gate in zip(layers, self.unit_gates, strict=True):
            target.register_forward_hook(_gate_hook(gate))

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        shape = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
        x = (to_float(x) - self.mean.view(shape)) / self.std.view(shape)
        return self.module(x)

    def gates(self) -> list[tuple[str, UnitGate]]:
        """Every unit gate in forward order, named after the layer whose units it switches."""
        return list(zip(self._gate_names, self.unit_gates, strict=True))

    def unit_names(self) -> list[str]:
        """A name for every prunable unit, e.g. ``"layer1.0.conv1:17"``, in search order."""
        return [f"{name}:{k}" for name, gate in self.gates() for k in range(gate.units)]

    def unit_layers(self) -> list[str]:
        """The layer of every unit, in unit order."""
        return [name for name, gate in self.gates() for _ in range(gate.units)]

    def fit_normalization(self, x: torch.Tensor) -> None:
        """Standardise with the training inputs' per-channel (or per-feature) statistics, as
        noisefind's own networks do (a backbone fine-tuned by :func:`noisefind.fit`)."""
        from noisefind.models.nets import channel_statistics

        mean, std = channel_statistics(x)
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-6))

    @property
    def head(self) -> nn.Module:
        """The final classifier (its input is the penultimate features), as ``Net.head``."""
        return self.module.get_submodule(self.classifier)

    def head_parameters(self) -> list[str]:
        """Names of the classifier's parameters (what a linear probe trains)."""
        return [name for name, _ in self.named_parameters()
                if name.startswith(f"module.{self.classifier}.")]



def _per_channel(values, default: float, size: int, name: str) -> torch.Tensor:
    if values is None:
        return torch.full((size,), default)
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() == 1:
        return t.expand(size).clone()
    if t.numel() != size:
        raise NoisefindError(f"{name}: {t.numel()} values, but the inputs have {size} channels "
                             f"(images) or features (tables); give one value or {size}")
    return t


def _gate_hook(gate: UnitGate):
    def hook(module, inputs, output):
        if gate.mask is None:
            return None
        if isinstance(module, nn.Linear) and output.dim() > 2:  # (batch, ..., features)
            return gate(output.movedim(-1, 1)).movedim(1, -1)
        return gate(output)  # units on dimension 1: a Conv2d's channels, a BatchNorm's

    return hook


def probe_layers(model: OwnModel, example: torch.Tensor, num_classes: int | None, name: str):
    """The prunable layers in forward order, as (unit layer name, module to hook, units), and
    the name of the final classifier; checks the input shape and the class count on the way."""
    runs, norms, kept = [], {}, []

    def record(layer_name):
        def hook(module, inputs, output):
            kept.append((inputs, output))  # alive to the end, so no id is reused meanwhile
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                norms.setdefault(id(inputs[0]), (layer_name, module))
            elif all(m is not module for _, m, _ in runs):
                runs.append((layer_name, module, output))

        return hook

    watched = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)
    handles = [m.register_forward_hook(record(n)) for n, m in model.module.named_modules()
               if isinstance(m, watched)]
    try:
        with torch.no_grad():
            logits = model(example)
    except (RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NoisefindError(f"input shape: model {name} cannot take inputs of shape "
                             f"{tuple(example.shape[1:])} ({first})") from None
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else ""
        raise NoisefindError(f"model {name} must return logits of shape (batch, classes); it "
                             f"returned {type(logits).__name__}{shape}")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise NoisefindError(f"class count: model {name} outputs {logits.shape[1]} classes but "
                             f"the data has {num_classes}")
    if not runs:
        raise NoisefindError(f"model {name} has no Conv2d or Linear layer to search")
    classifier = runs[-1][0]
    layers = []
    for layer_name, module, output in runs[:-1]:
        units = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
        norm = norms.get(id(output))
        target = norm[1] if norm is not None else module
        layers.append((layer_name, target, units))
    if not layers:
        raise NoisefindError(f"model {name} has no Conv2d or hidden Linear layer to search "
                             f"(only its classifier {classifier})")
    return layers, classifier


# --------------------------------------------------------------------------------------------
# Specs and weights


def is_model_spec(text: str) -> bool:
    """``torchvision:<name>`` or ``<module>:<function>`` (not an existing path)."""
    return ":" in text and not Path(text).exists()


def build_module(spec: str, num_classes: int) -> nn.Module:
    """An untrained module for ``spec`` with ``num_classes`` outputs."""
    if spec.startswith(TORCHVISION):
        import torchvision.models as tvm

        arch = spec[len(TORCHVISION):]
        known = tvm.list_models(module=tvm)
        if arch not in known:
            raise NoisefindError(f"unknown architecture: {spec!r} is not a torchvision "
                                 f"classification model (e.g. resnet18, resnet50, "
                                 f"efficientnet_b0, vit_b_16)")
        return tvm.get_model(arch, weights=None, num_classes=num_classes)
    module_name, _, function = spec.partition(":")
    if not module_name or not function.isidentifier():
        raise NoisefindError(f"model {spec!r}: give a run folder, torchvision:<name> or "
                             "<module>:<function>")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        imported = importlib.import_module(module_name)
    except ImportError as exc:
        raise NoisefindError(f"model {spec!r}: cannot import {module_name} ({exc}); it must be "
                             "importable from the working directory or PYTHONPATH") from None
    factory = getattr(imported, function, None)
    if not callable(factory):
        raise NoisefindError(f"model {spec!r}: {module_name} has no function {function}")
    try:
        accepts = "num_classes" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepts = False
    module = factory(num_classes=num_classes) if accepts else factory()
    if not isinstance(module, nn.Module):
        raise NoisefindError(f"model {spec!r}: {function}() returned {type(module).__name__}, "
                             "not a torch.nn.Module")
    return module


def read_weights(file: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save``'d one, never unpickling code."""
    file = Path(file)
    if not file.is_file():
        raise NoisefindError(f"weights {file}: no such file")
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(file))
        except (SafetensorError, OSError, ValueError) as exc:
            raise NoisefindError(f"weights {file}: not a valid safetensors file ({exc})") from None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # any torch.load failure means "not weights we can read"
        if type(exc).__name__ == "UnpicklingError":  # torch refuses a pickle of objects
            raise NoisefindError(f"weights {file}: a pickle of Python objects, which noisefind "
                                 "does not unpickle; save model.state_dict() (torch.save or "
                                 "safetensors)") from None
        raise NoisefindError(f"weights {file}: not a safetensors file or a torch state dict "
                             f"({type(exc).__name__})") from None
    for key in ("state_dict", "model_state_dict", "model"):  # common checkpoint layouts
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise NoisefindError(f"weights {file}: holds a {type(state).__name__}, not a state dict "
                             "of tensors")
    return state


def load_into(module: nn.Module, state: dict[str, torch.Tensor], file, spec: str,
              classifier: str) -> None:
    """Load ``state`` into ``module``, or say which way it does not fit."""
    expected = module.state_dict()
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise NoisefindError(
            f"weights of another architecture: {file} does not fit {spec} ({len(missing)} "
            f"tensors missing, e.g. {missing[:1] or '-'}; {len(unexpected)} unexpected, e.g. "
            f"{unexpected[:1] or '-'})")
    wrong = [k for k in expected if state[k].shape != expected[k].shape]
    if wrong:
        head = [k for k in wrong if k.startswith(classifier + ".")]
        if head and len(head) == len(wrong):
            raise NoisefindError(f"class count: the weights in {file} are for "
                                 f"{state[head[0]].shape[0]} classes but the data has "
                                 f"{expected[head[0]].shape[0]}")
        raise NoisefindError(f"weights of another architecture: {file} has {wrong[0]} of shape "
                             f"{tuple(state[wrong[0]].shape)}, {spec} expects "
                             f"{tuple(expected[wrong[0]].shape)}")
    module.load_state_dict(state)


def load_backbone(model: OwnModel | Net, file: str | Path, spec: str) -> int:
    """Load pretrained weights into every layer of ``model`` but its classifier, which stays
    new (the data's classes); the number of tensors loaded. Weights that do not fit the
    architecture are refused, naming the first that does not. For one of noisefind's own
    networks the input standardisation comes with the weights: the layers expect it."""
    state = read_weights(file)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    module, head = (model.module, f"{model.classifier}.") if isinstance(model, OwnModel) \
        else (model, "head.")
    expected = {k: v for k, v in module.state_dict().items() if not k.startswith(head)}
    given = {k: v for k, v in state.items() if not k.startswith(head)}
    missing = [k for k in expected if k not in given]
    wrong = [k for k in expected if k in given and given[k].shape != expected[k].shape]
    if missing or wrong or len(given) != len(expected):
        first = (missing or wrong or [k for k in given if k not in expected])[0]
        raise NoisefindError(f"weights of another architecture: {file} does not fit the "
                             f"backbone {spec} (first misfit: {first})", parameter="weights")
    module.load_state_dict(given, strict=False)
    return len(given)
