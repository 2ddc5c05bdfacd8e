"""Images read from the decoded-image cache a batch at a time: a set larger than the RAM.

When a folder's decoded uint8 images do not fit the memory budget
(:func:`memory_budget`), the scan keeps them in the cache's ``.npy`` file and reads the rows
each batch needs with ``pread``, through the operating system's page cache. Nothing is
memory-mapped, so the process never holds more of the set than its current batch (a mapping
would count every page it ever touched in the process's memory).

:class:`DiskImages` stands in for the (N, C, H, W) uint8 tensor where the pipeline only ever
asks for batches: ``len``, ``shape``, ``dtype``, indexing by a slice or by row positions (which
returns a tensor), :meth:`~DiskImages.rows` (a lazy subset: a fold's training rows), and
``.to(device)``: the CPU keeps reading from disk, a GPU receives the whole set in chunks (on a
GPU the uint8 set must fit the GPU's memory; the host never holds it whole).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from noisefind.base.errors import NoisefindError

BUDGET_ENV = "NOISEFIND_MEMORY_BUDGET"
DEFAULT_SHARE = 0.5  # of the memory available when the data is loaded
TO_DEVICE_CHUNK = 8192  # rows copied to a GPU at a time
UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30,
         "gb": 2**30, "t": 2**40, "tb": 2**40}


def parse_bytes(text: str, *, parameter: str = "memory_budget") -> int:
    """``"500MB"``, ``"4 GB"``, ``"2g"`` or a number of bytes -> bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match and match.group(2).lower()
    if not match or unit not in UNITS:
        raise NoisefindError(f"{parameter} {text!r}: expected a size such as 500MB or 4GB",
                             parameter=parameter)
    return int(float(match.group(1)) * UNITS[unit])


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget(given: int | str | None = None) -> int | None:
    """The bytes of decoded images a run may hold in memory: ``given``, else
    ``$NOISEFIND_MEMORY_BUDGET``, else half of the memory available now; None when unknown
    (then nothing streams)."""
    if given is None:
        given = os.environ.get(BUDGET_ENV) or None
    if given is None:
        available = available_memory()
        return None if available is None else int(available * DEFAULT_SHARE)
    budget = parse_bytes(given) if isinstance(given, str) else int(given)
    if budget < 0:
        raise NoisefindError(f"memory_budget must be at least 0, got {given}",
                             parameter="memory_budget")
    return budget


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KB' (binary units, as :func:`parse_bytes` reads them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError  # unreachable


def require_room(needed: int, free: int, where: str) -> None:
    """Refuse, in one line, images of ``needed`` bytes where only ``free`` bytes are left."""
    if needed > free:
        raise NoisefindError(
            f"the images take {human_bytes(needed)} as uint8, more than {where}'s free memory "
            f"({human_bytes(free)}): give a smaller image_size, or device cpu to read them "
            "from disk a batch at a time", parameter=("image_size", "device"))


class DiskImages:
    """The rows ``positions`` of a uint8 (N, C, H, W) ``.npy`` file, read on demand.

    Parameters
    ----------
    path : Path
        A ``.npy`` file holding a C-ordered uint8 array of 4 dimensions.
    positions : np.ndarray, optional
        Which of the file's rows, in order; default: the first ``rows`` of them.
    rows : int, optional
        How many leading rows are valid (the cache pads entries to their files' count).
    """

    dtype = torch.uint8
    device = torch.device("cpu")

    def __init__(self, path: str | Path, positions: np.ndarray | None = None,
                 rows: int | None = None):
        self.path = Path(path)
        with open(self.path, "rb") as file:
            version = np.lib.format.read_magic(file)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(file)
            self.offset = file.tell()
        if dtype != np.uint8 or fortran or len(shape) != 4:
            raise NoisefindError(f"{self.path}: not a C-ordered uint8 image array")
        self.row_shape = tuple(shape[1:])
        self.row_bytes = int(np.prod(self.row_shape))
        stored = shape[0] if rows is None else rows
        self.positions = np.arange(stored, dtype=np.int64) if positions is None else \
            np.asarray(positions, dtype=np.int64)
        self._fd: int | None = None
        self._pid = -1

    # -- what the pipeline asks of an image tensor -------------------------------------------

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.positions), *self.row_shape))

    def dim(self) -> int:
        return 4

    ndim = property(dim)

    def numel(self) -> int:
        return len(self.positions) * self.row_bytes

    def is_floating_point(self) -> bool:
        return False

    def __getitem__(self, key) -> torch.Tensor:
        """The selected rows as a uint8 tensor (an int gives one image (C, H, W), an index of
        shape (S, R) images of shape (S, R, C, H, W))."""
        if isinstance(key, (int, np.integer)):
            return self._read(self.positions[[key]])[0]
        chosen = self.positions[self._as_index(key)]  # an (S, R) index gives (S, R, C, H, W)
        return self._read(chosen.ravel()).reshape(*chosen.shape, *self.row_shape)

    def rows(self, key) -> DiskImages:
        """A lazy subset: the rows ``key`` (slice, positions or mask), still on disk."""
        return DiskImages(self.path, self.positions[self._as_index(key)])

    def to(self, device=None, *args, non_blocking: bool = False, **kwargs):
        """Itself on the CPU (batches keep coming from disk); on another device, the whole
        set as one tensor there, copied a chunk at a time."""
        device = torch.device(device) if device is not None else self.device
        if device.type == "cpu":
            return self
        if device.type == "cuda":
            require_room(self.numel(), torch.cuda.mem_get_info(device)[0], "the GPU")
        out = torch.empty(tuple(self.shape), dtype=torch.uint8, device=device)
        for start in range(0, len(self), TO_DEVICE_CHUNK):
            out[start:start + TO_DEVICE_CHUNK] = self[start:start + TO_DEVICE_CHUNK].to(
                device, non_blocking=non_blocking)
        return out

    def __repr__(self) -> str:
        return f"DiskImages({str(self.path)!r}, shape={tuple(self.shape)})"

    # -- reading -----------------------------------------------------------------------------

    @staticmethod
    def _as_index(key):
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        if isinstance(key, slice):
            return key
        key = np.asarray(key)
        return key if key.dtype == bool else key.astype(np.int64, copy=False)

    def _file(self) -> int:
        if self._pid != os.getpid():  # a forked process opens its own descriptor
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def _read(self, positions: np.ndarray) -> torch.Tensor:
        out = np.empty((len(positions), *self.row_shape), dtype=np.uint8)
        if not len(positions):
            return torch.from_numpy(out)
        flat = memoryview(out.reshape(len(positions), self.row_bytes))
        fd = self._file()
        # One read per run of consecutive rows: a slice of a sorted subset is one read.
        breaks = np.flatnonzero(np.diff(positions) != 1) + 1
        for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(positions)], strict=True):
            target = flat[start:stop].cast("B")
            where = self.offset + int(positions[start]) * self.row_bytes
            done = 0
            while done < len(target):  # a read may return fewer bytes than asked
                got = _read_into(fd, target[done:], where + done)
                if got <= 0:
                    raise NoisefindError(f"{self.path}: the cached images end early")
                done += got
        return torch.from_numpy(out)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)

    def __getstate__(self) -> dict:  # pickled into another process: reopen there
        return {**self.__dict__, "_fd": None, "_pid": -1}


def _read_into(fd: int, target: memoryview, where: int) -> int:
    """Read from ``fd`` at ``where`` straight into ``target``; the bytes read."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [target], where)
    data = os.pread(fd, len(target), where)  # platforms without preadv: one more copy
    target[:len(data)] = data
    return len(data)
