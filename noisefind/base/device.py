"""Which torch device to use, and the number format on it."""

from __future__ import annotations

import torch

from noisefind.base.errors import NoisefindError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise NoisefindError(f"device {name!r}: use auto, cpu, cuda or mps", parameter="device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NoisefindError("device cuda: no CUDA GPU is available; use cpu", parameter="device")
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (tensor cores); a no-op context elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
