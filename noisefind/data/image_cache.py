"""The decoded-image cache: a folder's images, decoded once, kept on disk as a uint8 array.

A rerun on the same files (the same paths, sizes and modification times) at the same side
length and colour mode memory-maps the array instead of decoding again, so the images are read
from disk as batches need them rather than all held in memory (a process that maps an entry
must not see it rewritten: entries are only ever replaced whole, by rename). The cache lives in
``~/.cache/noisefind/images`` or under the folder named by ``NOISEFIND_CACHE``;
``NOISEFIND_CACHE=none`` turns it off. An entry is written under a temporary name and renamed
when complete, so an interrupted decode never leaves an entry that looks whole.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from noisefind.base.files import atomic_write, write_json

CACHE_ENV = "NOISEFIND_CACHE"
FORMAT = 2  # bump when the decoding changes what a cached array holds (2: readable files only)


def cache_folder() -> Path | None:
    """Where decoded images are cached, or None when ``NOISEFIND_CACHE=none``."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("none", "off", ""):
        return None
    root = Path(value).expanduser() if value else Path.home() / ".cache" / "noisefind"
    return root / "images"


def cache_key(files: list[str], side: int, mode: str) -> str:
    """A name for these files at this size and mode: their paths, sizes and mtimes."""
    digest = hashlib.sha256(repr((FORMAT, side, mode)).encode())
    for file in files:
        stat = os.stat(file)
        digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def load(folder: Path, key: str) -> tuple[torch.Tensor, list[bool], list[dict], dict] | None:
    """The cached images (memory-mapped, copy on write), which files were read, the skipped
    ones and the preparation; None when there is no complete entry."""
    array, meta = folder / f"{key}.npy", folder / f"{key}.json"
    if not (array.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text())
        images = torch.from_numpy(np.load(array, mmap_mode="c"))
        return images, info["ok"], info["skipped"], info["preparation"]
    except (OSError, ValueError, KeyError):  # damaged: decode again, and replace it
        return None


def save(folder: Path, key: str, images: np.ndarray, ok: list[bool], skipped: list[dict],
         preparation: dict) -> None:
    """Store freshly decoded images as an entry (atomically: the array is renamed into place
    last, so an entry with its array is complete). The decoding process keeps its own copy in
    memory; only later runs map the file."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / f"{key}.json", {"ok": ok, "skipped": skipped,
                                        "preparation": preparation})
    atomic_write(folder / f"{key}.npy", lambda tmp: np.save(tmp, images), suffix=".npy")
