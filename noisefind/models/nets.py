"""Architectures whose every prunable unit can be switched off per example.

Each conv block and hidden layer ends in a :class:`UnitGate`: by default it does nothing; given a
mask of shape (S, units) it multiplies the activations of S groups of examples by S different
masks. That one mechanism serves the flip search (S searches advance in one forward pass), and
the gradient with respect to the mask is exactly the per-unit first-order score the search
needs. Units are named ``"<gate>:<k>"``, e.g. ``"layers.3.block1:17"``.

Normalisation is part of the network (buffers ``mean`` and ``std``), so a saved run carries it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from noisefind.data.labeled import to_float

# A factory for an optional layer after each block's activation: channels -> module whose
# forward takes (x, index) -- e.g. example-tied dropout, which needs the example indices.
DropoutFactory = Callable[[int], nn.Module]


class UnitGate(nn.Module):
    """Per-example on/off switches over the units (channels or neurons) of one layer."""

    def __init__(self, units: int):
        super().__init__()
        self.units = units
        self.mask: torch.Tensor | None = None  # (S, units); the batch is S equal groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask is None:
            return x
        groups = self.mask.shape[0]
        trailing = (1,) * (x.dim() - 2)
        grouped = x.reshape(groups, -1, *x.shape[1:])
        mask = self.mask.to(x.dtype).reshape(groups, 1, self.units, *trailing)
        return (grouped * mask).reshape(x.shape)


class Block(nn.Module):
    """A layer that takes the example indices along with the activations."""

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class ConvBlock(Block):
    """Conv (no bias) -> BatchNorm -> ReLU [-> dropout layer] -> gate."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1,
                 padding: int | None = None, dropout: DropoutFactory | None = None):
        super().__init__()
        padding = kernel // 2 if padding is None else padding
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.dropout = dropout(cout) if dropout else None
        self.gate = UnitGate(cout)

    def forward(self, x, index=None):
        x = F.relu(self.bn(self.conv(x)))
        if self.dropout is not None:
            x = self.dropout(x, index)
        return self.gate(x)


class DenseBlock(Block):
    """Linear -> BatchNorm -> ReLU [-> dropout layer] -> gate, a hidden layer of the MLP."""

    def __init__(self, fin: int, fout: int, dropout: DropoutFactory | None = None):
        super().__init__()
        self.linear = nn.Linear(fin, fout, bias=False)
        self.bn = nn.BatchNorm1d(fout)
        self.dropout = dropout(fout) if dropout else None
        self.gate = UnitGate(fout)

    def forward(self, x, index=None):
        x = F.relu(self.bn(self.linear(x)))
        if self.dropout is not None:
            x = self.dropout(x, index)
        return self.gate(x)


class Residual(Block):
    """x + b(a(x)), the ResNet-9 residual pair."""

    def __init__(self, a: Block, b: Block):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x, index=None):
        return x + self.b(self.a(x, index), index)


class Net(nn.Module):
    """Normalise, run the blocks, pool, classify. ``forward(x, index=None)`` returns logits."""

    def __init__(self, layers: list[nn.Module], head: nn.Linear, in_features: int,
                 out_scale: float = 1.0):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.head = head
        self.out_scale = out_scale
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))

    def fit_normalization(self, x: torch.Tensor) -> None:
        """Per-channel (images) or per-feature (tabular) mean and std of the training inputs."""
        mean, std = channel_statistics(x)
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-6))

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        shape = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
        x = (to_float(x) - self.mean.view(shape)) / self.std.view(shape)
        for layer in self.layers:
            x = layer(x, index) if isinstance(layer, Block) else layer(x)
        return self.head(x) * self.out_scale

    def gates(self) -> list[tuple[str, UnitGate]]:
        """Every unit gate in forward order, with its module name."""
        return [(name, m) for name, m in self.named_modules() if isinstance(m, UnitGate)]

    def unit_names(self) -> list[str]:
        """A name for every prunable unit, in the order the flip search numbers them."""
        return [f"{name}:{k}" for name, gate in self.gates() for k in range(gate.units)]

    def unit_layers(self) -> list[str]:
        """The layer (block) of every unit, e.g. ``"layers.2.a"``, in unit order."""
        return [name.removesuffix(".gate") for name, gate in self.gates()
                for _ in range(gate.units)]


STATISTICS_CHUNK = 4096  # uint8 images converted to float this many at a time ...
WHOLE_FLOAT_COPY = 2**24  # ... when their float copy would exceed this many values (64 MiB)


def channel_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation per channel (images) or per feature (tables) of float
    inputs. Large uint8 image sets are summed a chunk at a time (in float64), so their float
    copy never has to fit in memory; smaller ones give exactly the float32 figures of old."""
    dims = [0, 2, 3] if x.dim() == 4 else [0]
    if x.dtype != torch.uint8 or x.numel() <= WHOLE_FLOAT_COPY:
        x = to_float(x[:])  # [:] reads images streamed from disk (a view of a tensor)
        return x.mean(dim=dims), x.std(dim=dims)
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(x), STATISTICS_CHUNK):
        chunk = to_float(x[start:start + STATISTICS_CHUNK]).double()
        total += chunk.sum(dim=dims)
        squares += chunk.square().sum(dim=dims)
    count = x.numel() // x.shape[1]
    mean = total / count
    variance = (squares - count * mean.square()) / max(1, count - 1)
    return mean.float(), variance.clamp_min(0).sqrt().float()


@contextmanager
def unit_masks(model: Net, masks: list[torch.Tensor]) -> Iterator[None]:
    """Apply one (S, units) mask per gate for the duration of the block."""
    gates = [g for _, g in model.gates()]
    if len(masks) != len(gates):
        raise ValueError(f"{len(masks)} masks for {len(gates)} gates")
    for gate, mask in zip(gates, masks, strict=True):
        gate.mask = mask
    try:
        yield
    finally:
        for gate in gates:
            gate.mask = None


def _ch(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


def resnet9(in_channels: int, num_classes: int, width: float = 1.0,
            dropout: DropoutFactory | None = None) -> Net:
    """The paper's ResNet-9 (docs/method.md, "Training"), channels scaled by ``width``."""
    c1, c2, c3, c4 = _ch(64, width), _ch(128, width), _ch(256, width), _ch(128, width)

    def block(cin, cout, **kw):
        return ConvBlock(cin, cout, dropout=dropout, **kw)

    layers = [
        block(in_channels, c1, kernel=3),
        block(c1, c2, kernel=5, stride=2, padding=2),
        Residual(block(c2, c2), block(c2, c2)),
        block(c2, c3, kernel=3),
        nn.MaxPool2d(2),
        Residual(block(c3, c3), block(c3, c3)),
        block(c3, c4, kernel=3, padding=0),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
    ]
    return Net(layers, nn.Linear(c4, num_classes, bias=False), in_channels, out_scale=0.2)


def small_cnn(in_channels: int, num_classes: int, width: float = 1.0,
              dropout: DropoutFactory | None = None) -> Net:
    """Three conv blocks and a hidden layer, for tiny images (8x8 digits, 28x28 MNIST)."""
    c1, c2, c3, h = _ch(32, width), _ch(64, width), _ch(128, width), _ch(128, width)
    layers = [
        ConvBlock(in_channels, c1, dropout=dropout),
        ConvBlock(c1, c2, stride=2, dropout=dropout),
        ConvBlock(c2, c3, stride=2, dropout=dropout),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        DenseBlock(4 * c3, h, dropout=dropout),
    ]
    return Net(layers, nn.Linear(h, num_classes), in_channels)


def mlp(in_features: int, num_classes: int, width: float = 1.0,
        dropout: DropoutFactory | None = None) -> Net:
    """Two hidden layers of 256 * width neurons, for tabular data."""
    h = _ch(256, width)
    layers = [DenseBlock(in_features, h, dropout=dropout), DenseBlock(h, h, dropout=dropout)]
    return Net(layers, nn.Linear(h, num_classes), in_features)
