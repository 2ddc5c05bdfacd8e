"""Which torch device to use."""

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
        raise NoisefindError(f"--device {name!r}: use auto, cpu, cuda or mps")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NoisefindError("--device cuda: no CUDA GPU is available; use --device cpu")
    return torch.device(name)
