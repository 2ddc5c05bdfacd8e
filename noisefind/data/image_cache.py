"""The decoded-image cache: a folder's images, decoded once, kept on disk as a uint8 array.

A rerun on the same files (the same paths, sizes and modification times) at the same side
length and colour mode reads the array instead of decoding again: memory-mapped when the set
fits the memory budget, else a batch at a time (:class:`~noisefind.data.disk_images.DiskImages`),
which is how a set larger than the RAM streams through the scan. The cache lives in
``~/.cache/noisefind/images`` or under the folder named by ``NOISEFIND_CACHE``;
``NOISEFIND_CACHE=none`` turns it off. Images are written as they are decoded, under a
temporary name renamed when complete, so an interrupted decode never leaves an entry that looks
whole, and an entry is only ever replaced whole (a process reading one never sees it change).
An entry's array has one row per file; the readable files' images come first, in order, and
the ``rows`` recorded beside it say how many.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from noisefind.base.errors import NoisefindError
from noisefind.base.files import write_json
from noisefind.data.disk_images import DiskImages

CACHE_ENV = "NOISEFIND_CACHE"
FORMAT = 3  # bump when what a cached array holds changes (3: a row per file, readable first)


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


def load(folder: Path, key: str, *, stream: bool) -> tuple[torch.Tensor | DiskImages, list[bool],
                                                          list[dict], dict] | None:
    """The cached images (memory-mapped copy-on-write, or read from disk by batches when
    ``stream``), which files were read, the skipped ones and the preparation; None when there
    is no complete entry."""
    array, meta = folder / f"{key}.npy", folder / f"{key}.json"
    if not (array.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text())
        rows = info["rows"]
        images = DiskImages(array, rows=rows) if stream else \
            torch.from_numpy(np.load(array, mmap_mode="c")[:rows])
        return images, info["ok"], info["skipped"], info["preparation"]
    except (OSError, ValueError, KeyError, NoisefindError):  # damaged: decode again, replace it
        return None


class Writer:
    """Writes one entry as images are decoded: :meth:`add` appends a readable file's image,
    :meth:`finish` completes the array and renames it into place with its description."""

    def __init__(self, folder: Path, key: str, shape: tuple[int, ...]):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.key, self.shape = folder, key, shape
        self.tmp = folder / f".{key}.npy.tmp{os.getpid()}"
        self.file = open(self.tmp, "wb")
        header = {"descr": "|u1", "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_2_0(self.file, header)
        self.rows = 0

    def add(self, pixels: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
        self.rows += 1

    def finish(self, ok: list[bool], skipped: list[dict], preparation: dict) -> Path:
        """Complete the entry; the path of its array."""
        # The unread files' rows stay zero: the array keeps the shape its header promises.
        self.file.truncate(self.file.tell() + (self.shape[0] - self.rows)
                           * int(np.prod(self.shape[1:])))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        write_json(self.folder / f"{self.key}.json", {"ok": ok, "skipped": skipped,
                                                      "preparation": preparation,
                                                      "rows": self.rows})
        array = self.folder / f"{self.key}.npy"
        os.replace(self.tmp, array)  # last: the entry is whole
        return array

    def abandon(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)
