"""A fast CNN for the out-of-sample models: a patch-whitening stem and three conv groups.

After airbench (Jordan 2024, github.com/KellerJordan/cifar10-airbench), which trains it to 94%
on CIFAR-10 in seconds on one GPU. What makes it learn much from few examples and few steps:

- the first layer is fixed, not learned: its filters whiten 2x2 patches of the training
  images (the eigenvectors of their covariance, scaled by one over the square root of the
  eigenvalues, and their negatives), so the next layers start from decorrelated inputs;
- each conv starts as an identity on its first channels (Dirac initialisation), an implicit
  residual path without residual blocks;
- BatchNorm scales are frozen at one and only the shifts learn (at a raised learning rate, set
  by the ``fast`` recipe in :mod:`noisefind.training.fit`).

Every conv group's two activations end in a :class:`~noisefind.models.nets.UnitGate`, so the
flip search runs on it as on the paper's ResNet-9.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from noisefind.base.errors import NoisefindError
from noisefind.data.labeled import to_float
from noisefind.models.nets import Block, DropoutFactory, Net, UnitGate

KERNEL = 2  # the whitening stem's patch side
PATCH_SAMPLE = 5000  # images whose patches give the whitening filters
EPSILON = 5e-4  # added to the patch covariance's eigenvalues
MIN_SIDE = 16  # three halvings after the stem leave at least one pixel


class Whitening(nn.Conv2d):
    """The fixed first layer: ``2 * channels * KERNEL**2`` filters that whiten image patches.

    Its weights are set from the data by :meth:`fit` and never trained; its bias trains for
    the first epochs of the ``fast`` recipe only.
    """

    def __init__(self, in_channels: int):
        super().__init__(in_channels, 2 * in_channels * KERNEL**2, KERNEL, padding=0,
                         bias=True)
        self.weight.requires_grad_(False)
        nn.init.zeros_(self.bias)

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Set the filters from normalised images ``x`` (N, C, H, W), float."""
        c = x.shape[1]
        patches = x[:PATCH_SAMPLE].unfold(2, KERNEL, 1).unfold(3, KERNEL, 1)
        patches = patches.transpose(1, 3).reshape(-1, c * KERNEL * KERNEL).double()
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = eigenvectors.T.reshape(-1, c, KERNEL, KERNEL).flip(0)
        scaled = filters / torch.sqrt(eigenvalues.flip(0).clamp_min(0) + EPSILON).view(-1, 1, 1, 1)
        self.weight.copy_(torch.cat((scaled, -scaled)).to(self.weight.dtype))


class FrozenScaleNorm(nn.BatchNorm2d):
    """BatchNorm whose scales stay at one: only the shifts learn."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-12, momentum=0.4)
        self.weight.requires_grad_(False)


class GroupConv(Block):
    """Conv (identity-initialised, no bias) [-> max pool 2] -> BatchNorm -> GELU
    [-> dropout layer] -> gate."""

    def __init__(self, cin: int, cout: int, pool: bool, dropout: DropoutFactory | None = None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        nn.init.dirac_(self.conv.weight.data[:min(cin, cout)])
        self.pool = pool
        self.bn = FrozenScaleNorm(cout)
        self.dropout = dropout(cout) if dropout else None
        self.gate = UnitGate(cout)

    def forward(self, x, index=None):
        x = self.conv(x)
        if self.pool:
            x = F.max_pool2d(x, 2)
        x = F.gelu(self.bn(x))
        if self.dropout is not None:
            x = self.dropout(x, index)
        return self.gate(x)


class WhitenedNet(Net):
    """A :class:`~noisefind.models.nets.Net` whose first layer whitens patches of its inputs."""

    def fit_normalization(self, x: torch.Tensor) -> None:
        """Normalisation statistics, then the whitening filters on the normalised images."""
        super().fit_normalization(x)
        sample = to_float(x[:PATCH_SAMPLE])
        shape = (1, -1, 1, 1)
        self.layers[0].fit((sample - self.mean.view(shape)) / self.std.view(shape))


def whitened_cnn(in_channels: int, num_classes: int, width: float = 1.0,
                 dropout: DropoutFactory | None = None, *,
                 image_side: tuple[int, int] = (32, 32)) -> Net:
    """Whitening stem, then conv groups of 32, 128 and 128 channels (times ``width``), each
    two convs with a max pool after the first; global max pool; linear head scaled by 1/9.

    At ``width=2`` this is airbench94's network (64, 256, 256).
    """
    if min(image_side) < MIN_SIDE:
        raise NoisefindError(f"arch whitened needs images of at least {MIN_SIDE} pixels a side",
                             parameter="arch")
    widths = [max(1, int(round(c * width))) for c in (32, 128, 128)]
    stem = Whitening(in_channels)
    layers: list[nn.Module] = [stem, nn.GELU()]
    cin = stem.out_channels
    for cout in widths:
        layers += [GroupConv(cin, cout, pool=True, dropout=dropout),
                   GroupConv(cout, cout, pool=False, dropout=dropout)]
        cin = cout
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
    return WhitenedNet(layers, nn.Linear(cin, num_classes, bias=False), in_channels,
                       out_scale=1 / 9)
