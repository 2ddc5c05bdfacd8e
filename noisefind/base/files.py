"""Writing files safely: atomic replacement, JSON, and the append-only progress logs.

- :func:`atomic_write` writes through a temporary file, fsyncs it and renames it over the
  target, so a crash never leaves a half-written CSV, JSON, PNG or weights file that looks
  complete.
- :class:`JsonLines` is the progress log of the resumable commands (``scan``, ``memorization``):
  one JSON object per line, each append flushed and fsynced before the work goes on, and reading
  skips a last line cut short by a kill.

This module knows nothing of models or data; every other module may use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object], suffix: str = "") -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it to ``path``.

    ``suffix`` ends the temporary name, for writers that insist on an extension (numpy's
    ``savez`` appends ``.npz`` otherwise).
    """
    path = Path(path)
    # One temporary name per process: two processes writing the same file (two scans filling
    # the same cache entry) must not rename each other's half-written files.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    """Atomically write ``obj`` as indented JSON (values JSON does not know become strings)."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


class JsonLines:
    """An append-only log of JSON objects, one per line, that survives being killed.

    Every :meth:`append` is flushed and fsynced before it returns, so what was appended is on
    disk; a kill can at worst cut the line being written, which :meth:`read` skips and
    :meth:`repair` removes (so later appends stay line-aligned).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.is_file() and self.path.stat().st_size > 0

    def append(self, records: Iterable[dict] | str) -> None:
        """Append objects (or text already in JSON-lines form) and force them to disk."""
        text = records if isinstance(records, str) else "".join(
            json.dumps(r) + "\n" for r in records)
        if text and not text.endswith("\n"):
            text += "\n"
        with open(self.path, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict]:
        """Every complete line, in order; a line that does not parse (cut by a kill) is left
        out."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def rewrite(self, records: Iterable[dict]) -> None:
        """Replace the whole log with ``records`` (atomically)."""
        text = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write(self.path, lambda tmp: tmp.write_text(text))

    def repair(self) -> list[dict]:
        """Drop a line cut by a kill, so appends continue on a line of their own; returns
        :meth:`read`."""
        records = self.read()
        if self.path.is_file():
            text = self.path.read_text()
            lines = [t for t in text.splitlines() if t.strip()]
            if len(records) != len(lines) or (text and not text.endswith("\n")):
                self.rewrite(records)
        return records
