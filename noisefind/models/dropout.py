"""Dropout variants placed after every block: none, standard, sparse, example-tied.

Example-tied dropout (docs/method.md, "Example-tied dropout"; Maini et al. 2023) splits each
layer's ``C`` channels (neurons, for the MLP) into a generalization share, the first
``round(p_gen * C)`` channels, which every example uses, and memorization channels, each of
which a training example ``i`` uses with probability ``p_mem``. Example ``i``'s subset is a pure
function of ``(seed, layer, i)``, computed by the counter-based hash of :mod:`noisefind.base.rng` on
the device: the same mask every epoch, whichever batch ``i`` lands in, with no per-example table
and no loop over the batch. Whatever an example can only fit by memorizing it tends to be stored
in its own channels, so zeroing the memorization channels ("drop") should unlearn the mislabeled
examples and spare the rest.

Every variant is a :class:`ChannelDropout` with three evaluation modes, set with
:func:`dropout_mode` (or :func:`set_dropout_mode`):

- ``"all"`` (the default, the paper's first mode): every channel on, the memorization channels
  scaled by ``p_mem``, their mean in training;
- ``"example"``: each training example with the channels it was trained with (its own
  memorization channels, unscaled), given its index; without indices (test data) as ``"all"``.
  This is the network that fit the training set, so it is the one that measures "before the drop"
  on training examples;
- ``"drop"`` (the paper's second mode): the memorization channels (all but the first
  ``round(p_gen * C)``) zeroed and the generalization channels scaled by
  ``(p_gen + p_mem) / p_gen``.

In training mode (``model.train()``) the mode is ignored and the training-time mask is used.

Dropping 80% of a layer's channels moves the inputs of the next BatchNorm far from the statistics
it kept in training, and one global factor cannot fix that per channel: without it the plain
``"drop"`` mode collapsed the small CNN on mnist5k (docs/analyses.md).
:func:`memorization_dropped` therefore re-estimates the BatchNorm statistics on the training
inputs (no labels) in ``"drop"`` mode for the duration of an evaluation, as is usual for
pruned networks. Every conv and hidden layer is bias-free and followed by BatchNorm, so after the
re-estimation the ``(p_gen + p_mem) / p_gen`` factor only matters in the last layer, the one that
feeds the classifier.

The two controls the paper compares against, trained and evaluated the same way:

- ``"standard"``: ordinary inverted dropout (``torch.nn.functional.dropout``) of single
  activations with drop probability ``p = p_gen``, PyTorch's convention for ``p`` and what the
  authors' code uses; a fresh random mask each step, rescaled by ``1 / (1 - p)`` in training, so
  ``"all"`` and ``"example"`` are the identity. ``"drop"`` zeroes
  the same channels as for example-tied dropout (all but the first ``round(p_gen * C)``) and
  scales the rest by ``C / round(p_gen * C)``: it shows what the drop does to a network that was
  not trained to put memorization there.
- ``"sparse"``: a fixed sparse network with the share of channels an example-tied example uses:
  the generalization channels plus exactly ``round(p_mem * (C - n_gen))`` memorization channels,
  one fixed (seeded) subset per layer shared by every example. Training and ``"all"`` use that
  subset unscaled; ``"drop"`` is the example-tied one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from noisefind.base.device import autocast
from noisefind.base.errors import NoisefindError
from noisefind.base.rng import keyed_uniform

DROPOUTS = ("none", "standard", "sparse", "example-tied")
MODES = ("all", "drop", "example")

# keyed_uniform streams: layer k of a model uses BASE + k. The bases sit far from the small
# stream numbers of the other per-example draws (the flip search's noise and references use 11
# and 12), so dropout masks never share their numbers.
EXAMPLE_TIED_STREAM = 0xE7D000
SPARSE_STREAM = 0x5BA000


def generalization_channels(channels: int, p_gen: float) -> int:
    """``round(p_gen * channels)``, kept in ``[1, channels - 1]`` so both shares exist.

    A layer narrower than two channels has no room for memorization channels: all of it is
    generalization.
    """
    if channels < 2:
        return channels
    return min(channels - 1, max(1, round(p_gen * channels)))


class ChannelDropout(nn.Module):
    """Base of the dropout variants: a mask in training, per-channel factors in evaluation.

    Subclasses define :meth:`train_mask` (a ``(B, C)`` mask for a training batch; standard
    dropout overrides the training forward instead), may define :meth:`example_mask`, and set
    the ``all_scale`` and ``drop_scale`` buffers (``(C,)`` per-channel factors for evaluation).
    """

    def __init__(self, channels: int, p_gen: float, p_mem: float):
        super().__init__()
        self.channels, self.p_gen, self.p_mem = channels, p_gen, p_mem
        self.n_gen = generalization_channels(channels, p_gen)
        self.mode = "all"
        # Non-persistent: they are recomputed from the config, so saved weights stay the same
        # set of tensors whatever the dropout variant.
        self.register_buffer("all_scale", torch.ones(channels), persistent=False)
        self.register_buffer("drop_scale", torch.zeros(channels), persistent=False)

    def train_mask(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def example_mask(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The deterministic mask each training example was fit with; by default ``all``'s."""
        return self.all_scale.unsqueeze(0)

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            mask = self.train_mask(x, index)
        elif self.mode == "drop":
            mask = self.drop_scale.unsqueeze(0)
        elif self.mode == "example" and index is not None:
            mask = self.example_mask(x, index)
        else:
            mask = self.all_scale.unsqueeze(0)
        return x * _broadcast(mask.to(x.dtype), x)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, generalization={self.n_gen}, p_gen={self.p_gen}, "
                f"p_mem={self.p_mem}, mode={self.mode!r}")


class ExampleTiedDropout(ChannelDropout):
    """Generalization channels always on; each memorization channel on for example ``i`` with
    probability ``p_mem``, by a hash of ``(seed, layer, i)``. Training: no rescaling.

    Evaluation ``"all"`` scales the memorization channels by ``p_mem`` (their mean in training);
    ``"drop"`` zeroes them and scales the generalization channels by ``(p_gen + p_mem) / p_gen``,
    as the paper does.
    """

    def __init__(self, channels: int, p_gen: float, p_mem: float, seed: int, layer: int):
        super().__init__(channels, p_gen, p_mem)
        self.seed, self.stream = seed, EXAMPLE_TIED_STREAM + layer
        self.all_scale[self.n_gen:] = p_mem
        self.drop_scale[:self.n_gen] = (p_gen + p_mem) / p_gen

    def memorization_mask(self, index: torch.Tensor) -> torch.Tensor:
        """Boolean ``(len(index), C - n_gen)``: which memorization channels each example owns."""
        count = self.channels - self.n_gen
        return keyed_uniform(self.seed, index, self.stream, count) < self.p_mem

    def example_mask(self, x, index):
        own = self.memorization_mask(index.to(x.device))
        always = torch.ones(len(own), self.n_gen, dtype=torch.bool, device=x.device)
        return torch.cat([always, own], dim=1)

    def train_mask(self, x, index):
        if index is None:
            raise NoisefindError("example-tied dropout needs the example indices in training "
                                 "mode: call model(x, index)")
        return self.example_mask(x, index)


class StandardDropout(ChannelDropout):
    """Ordinary inverted dropout of single activations with drop probability ``p_gen``."""

    def __init__(self, channels: int, p_gen: float, p_mem: float):
        super().__init__(channels, p_gen, p_mem)
        self.drop_scale[:self.n_gen] = channels / self.n_gen

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            return F.dropout(x, self.p_gen, training=True)
        return super().forward(x, index)


class SparseNetwork(ChannelDropout):
    """One fixed channel subset per layer, shared by every example, the size of an example's
    subset under example-tied dropout."""

    def __init__(self, channels: int, p_gen: float, p_mem: float, seed: int, layer: int):
        super().__init__(channels, p_gen, p_mem)
        count = channels - self.n_gen
        keep = round(p_mem * count)
        # The `keep` memorization channels with the smallest hashed uniforms: a seeded, exact-size
        # subset that the run's config reproduces on load.
        draws = keyed_uniform(seed, torch.tensor([layer]), SPARSE_STREAM, count)[0]
        chosen = self.n_gen + torch.argsort(draws)[:keep]
        self.all_scale.zero_()
        self.all_scale[:self.n_gen] = 1.0
        self.all_scale[chosen] = 1.0
        self.drop_scale[:self.n_gen] = (p_gen + p_mem) / p_gen

    def train_mask(self, x, index):
        return self.all_scale.unsqueeze(0)


def _broadcast(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A ``(B or 1, C)`` mask shaped to multiply ``x`` of shape ``(B, C, ...)``."""
    return mask.reshape(*mask.shape, *(1,) * (x.dim() - 2))


def check_probabilities(p_gen: float, p_mem: float) -> None:
    """Raise :class:`NoisefindError` unless ``0 < p_gen < 1`` and ``0 < p_mem <= 1``."""
    if not 0.0 < p_gen < 1.0 or math.isnan(p_gen):
        raise NoisefindError(f"p_gen must be in (0, 1), got {p_gen}", parameter="p_gen")
    if not 0.0 < p_mem <= 1.0 or math.isnan(p_mem):
        raise NoisefindError(f"p_mem must be in (0, 1], got {p_mem}", parameter="p_mem")


def dropout_factory(kind: str, p_gen: float, p_mem: float,
                    seed: int) -> Callable[[int], nn.Module] | None:
    """A factory ``channels -> layer`` for ``kind``, or None for no dropout layer.

    Parameters
    ----------
    kind : str
        ``"none"``, ``"standard"``, ``"sparse"`` or ``"example-tied"`` (see the module docstring).
    p_gen : float
        Generalization share (example-tied, sparse); the drop probability for standard dropout.
    p_mem : float
        Probability that an example owns a memorization channel; the sparse network keeps that
        share of the memorization channels.
    seed : int
        Seeds the per-example masks (example-tied) and the fixed subsets (sparse).

    Returns
    -------
    callable or None
        Each call builds the layer for the next block; calls are numbered so that every layer
        draws its own masks. Build a model's layers in a fixed order (the model constructors do)
        and a reloaded run gets the same masks.
    """
    if kind not in DROPOUTS:
        raise NoisefindError(f"dropout {kind!r}: choose one of {', '.join(DROPOUTS)}",
                             parameter="dropout")
    if kind == "none":
        return None
    check_probabilities(p_gen, p_mem)
    layers = itertools.count()

    def build(channels: int) -> nn.Module:
        if kind == "standard":
            return StandardDropout(channels, p_gen, p_mem)
        layer_class = ExampleTiedDropout if kind == "example-tied" else SparseNetwork
        return layer_class(channels, p_gen, p_mem, seed, next(layers))

    return build


def dropout_layers(model: nn.Module) -> list[ChannelDropout]:
    """Every dropout layer of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, ChannelDropout)]


def set_dropout_mode(model: nn.Module, mode: str) -> list[ChannelDropout]:
    """Set the evaluation mode (``"all"``, ``"drop"`` or ``"example"``) of every dropout layer."""
    if mode not in MODES:
        raise NoisefindError(f"dropout mode {mode!r}: choose one of {', '.join(MODES)}")
    layers = dropout_layers(model)
    for layer in layers:
        layer.mode = mode
    return layers


@contextmanager
def dropout_mode(model: nn.Module, mode: str) -> Iterator[list[ChannelDropout]]:
    """Evaluate ``model`` with its dropout layers in ``mode`` for the duration of the block."""
    layers = dropout_layers(model)
    previous = [layer.mode for layer in layers]
    set_dropout_mode(model, mode)
    try:
        yield layers
    finally:
        for layer, old in zip(layers, previous, strict=True):
            layer.mode = old


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> None:
    """Re-estimate every BatchNorm's running statistics on ``x`` as the model now computes.

    The statistics become the plain average over the batches of ``x`` (in order, so repeatable);
    dropout layers stay in evaluation, in whatever mode they are set to.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    norms = _batch_norms(model)
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
        bn.train()
    try:
        # Batches of at least two rows: a batch of one has no variance.
        for rows in torch.tensor_split(torch.arange(len(x)), max(1, len(x) // batch_size)):
            xb = x[rows].to(device, non_blocking=True)
            with autocast(device):
                model(xb)
    finally:
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
        model.train(was_training)


@contextmanager
def memorization_dropped(model: nn.Module, x: torch.Tensor) -> Iterator[None]:
    """``"drop"`` mode with BatchNorm statistics re-estimated on ``x`` (the training inputs).

    The model's own statistics and modes come back when the block ends.
    """
    norms = _batch_norms(model)
    saved = [{k: v.clone() for k, v in bn.state_dict().items()} for bn in norms]
    try:
        with dropout_mode(model, "drop"):
            recalibrate_batch_norm(model, x)
            yield
    finally:
        for bn, state in zip(norms, saved, strict=True):
            bn.load_state_dict(state)
