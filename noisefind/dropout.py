"""Dropout variants placed after every block: none, standard, sparse, example-tied."""

from __future__ import annotations

from noisefind.errors import NoisefindError
from noisefind.models import DropoutFactory

DROPOUTS = ("none",)


def dropout_factory(kind: str, p_gen: float, p_mem: float, seed: int) -> DropoutFactory | None:
    """A factory ``channels -> layer`` for ``kind``, or None for no dropout layer."""
    if kind == "none":
        return None
    raise NoisefindError(f"--dropout {kind!r}: choose one of {', '.join(DROPOUTS)}")
