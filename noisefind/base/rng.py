"""Counter-based random numbers computed on the device.

Per-example randomness (noise copies and reference examples in the flip search, the
memorization channels of example-tied dropout) must be the same whichever batch an example
lands in and whatever else runs. A stateful generator cannot promise that; a hash of
``(seed, example index, counter)`` can, and it runs vectorised on the GPU with no host sync.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    # (x * c) mod 2**32 without int64 overflow: split c into 16-bit halves.
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """Wellons' ``lowbias32`` integer hash on int64 tensors holding 32-bit values."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def keyed_bits(seed: int, index: torch.Tensor, stream: int, count: int) -> torch.Tensor:
    """32-bit random integers of shape ``(len(index), count)``, a pure function of the inputs.

    ``stream`` separates independent uses (noise, reference draws, dropout masks) so that they
    never share numbers.
    """
    index = index.to(torch.int64).reshape(-1, 1)
    counter = torch.arange(count, device=index.device, dtype=torch.int64).reshape(1, -1)
    key = hash32(hash32(torch.full_like(index, seed) ^ (stream * 0x9E3779B9)) ^ index)
    return hash32(key ^ hash32(counter + 0x632BE5AB))


def keyed_uniform(seed: int, index: torch.Tensor, stream: int, count: int) -> torch.Tensor:
    """Uniform floats in (0, 1), shape ``(len(index), count)``."""
    bits = keyed_bits(seed, index, stream, count) >> 8  # 24 bits fit a float32 mantissa
    return (bits.to(torch.float32) + 0.5) / float(1 << 24)


def keyed_normal(seed: int, index: torch.Tensor, stream: int, count: int) -> torch.Tensor:
    """Standard normal floats, shape ``(len(index), count)``, by Box-Muller."""
    u = keyed_uniform(seed, index, stream, 2 * count)
    u1, u2 = u[:, :count], u[:, count:]
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * torch.pi * u2)
