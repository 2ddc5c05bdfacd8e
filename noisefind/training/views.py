"""Augmented views of image batches, drawn on the device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from noisefind.data.labeled import LabeledData


def augment_for(data: LabeledData) -> bool:
    """Whether ``augment`` applies: images, where small shifts keep the class (mirror images
    too, for colour images only: a mirrored digit is another symbol); not tables."""
    return data.is_image


class ImageViews:
    """Random shifts (and mirror images) of a batch of images, drawn on the device.

    Each image is reflect-padded by ``pad`` (an eighth of its side, at least one pixel) and a
    window of its own size is cut at a random offset, as in the usual CIFAR-10 recipe; half the
    colour images are mirrored (a mirrored digit is another symbol, so grayscale ones never
    are). Draws come from their own seeded generator, so the batch order (and a run without
    augmentation) is unchanged.
    """

    def __init__(self, shape: torch.Size, device: torch.device, seed: int):
        self.size = shape[-1]
        self.mirror = shape[1] == 3
        self.pad = max(1, self.size // 8)
        self.device = device
        self.generator = torch.Generator().manual_seed(seed + 0xA06)
        self.grid = torch.arange(self.size, device=device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, pad = len(x), self.pad
        draws = torch.randint(0, 2 * pad + 1, (2, n), generator=self.generator)
        # Drawn even when unused, so later batches get the shifts the benchmarks were run with.
        flip = torch.rand(n, generator=self.generator) < 0.5
        dy, dx = draws.to(self.device)
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        rows = (self.grid[None, :] + dy[:, None])[:, None, :, None]
        columns = self.grid[None, :] + dx[:, None]
        if self.mirror:
            columns = torch.where(flip.to(self.device)[:, None], columns.flip(1), columns)
        rows = rows.expand(n, x.shape[1], self.size, padded.shape[-1])
        shifted = padded.gather(2, rows)
        columns = columns[:, None, None, :].expand(n, x.shape[1], self.size, self.size)
        return shifted.gather(3, columns)
