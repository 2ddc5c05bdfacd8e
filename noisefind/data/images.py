"""Image files -> one uint8 tensor (N, C, H, W) at one side length, decoded in parallel.

The input size a from-scratch model trains on is never the raw photo size: a 2400 x 1800 photo
trained at full resolution takes gigabytes per batch. Unless ``image_size`` is given, the side
is the files' median shorter side, at most :data:`DEFAULT_SIDE`; every image is then resized so
that its shorter side is that long (keeping its shape) and centre-cropped to a square, so
nothing is squashed. Images already of that size are left as they are (CIFAR-10's 32 x 32
files come out as before). JPEG files are decoded straight at a reduced scale (PIL's draft
mode), which is what makes large photos cheap. The size and the rule are recorded in
``LabeledData.preparation``, and from there in ``summary.json``.

Unreadable files are skipped and listed, never fatal: any decoder failure is a recorded reason.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from rich.markup import escape

from noisefind.base.console import console, progress_bar
from noisefind.base.errors import NoisefindError
from noisefind.data import disk_images, image_cache
from noisefind.data.disk_images import DiskImages, human_bytes

DEFAULT_SIDE = 32  # the largest side a from-scratch model trains on unless told (docs/scaling.md)
PROBED_FILES = 64  # files whose headers choose the side and the colour mode
PARALLEL_FROM = 2000  # decode in worker processes from this many files on
RULE = "shorter side resized to {side} px, then centre-cropped to {side} x {side}"


class ImageFiles(torch.utils.data.Dataset):
    """Decodes one file to a uint8 array (C, side, side) and its original size, or reports why
    it could not."""

    def __init__(self, files: list[str], side: int, mode: str):
        self.files, self.side, self.mode = files, side, mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            with Image.open(self.files[i]) as img:
                original = img.size
                img.draft(self.mode, (self.side, self.side))  # JPEG: decode at a reduced scale
                img = square(img.convert(self.mode), self.side)
                array = np.asarray(img, dtype=np.uint8).reshape(self.side, self.side, -1)
            # numpy, not torch: worker results then travel pickled instead of as one shared
            # file descriptor per image, which runs out on large folders.
            return array.transpose(2, 0, 1).copy(), original, ""
        except Exception as exc:  # any decoder failure means "unreadable": record, do not crash
            return None, None, f"{type(exc).__name__}: {exc}"


def square(img: Image.Image, side: int) -> Image.Image:
    """``img`` with its shorter side resized to ``side`` and centre-cropped to a square."""
    width, height = img.size
    if (width, height) == (side, side):
        return img
    scale = side / min(width, height)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    img = img.resize(size, Image.BILINEAR)
    left, top = (size[0] - side) // 2, (size[1] - side) // 2
    return img.crop((left, top, left + side, top + side))


def probe_images(files: list[str]) -> tuple[int, str]:
    """The median shorter side of the first readable files, and RGB unless they are all
    grayscale."""
    sides, color = [], False
    for file in files[:PROBED_FILES]:
        try:
            with Image.open(file) as img:
                sides.append(min(img.size))
                color = color or img.mode not in ("L", "1", "I", "I;16", "F")
        except Exception:
            continue
    if not sides:
        raise NoisefindError(f"none of the first images could be read, e.g. {files[0]}")
    return int(np.median(sides)), "RGB" if color else "L"


def decode_images(files: list[str], size: int | None, workers: int | None, progress: bool,
                  channels: int | None = None, memory_budget: int | str | None = None
                  ) -> tuple[torch.Tensor | DiskImages, torch.Tensor, list[dict], dict]:
    """Decode ``files``: the uint8 images, the positions of the files that were read, the
    skipped ones with their reasons, and how the images were prepared (side, rule, sizes).

    Images that do not fit ``memory_budget`` (bytes or a size such as ``"4GB"``; see
    :func:`~noisefind.data.disk_images.memory_budget`) stay in the disk cache and are read a
    batch at a time (:class:`~noisefind.data.disk_images.DiskImages`).
    """
    probed, mode = probe_images(files)
    side = size or min(probed, DEFAULT_SIDE)
    if channels is not None:
        mode = "RGB" if channels == 3 else "L"
    if workers is None:
        workers = min(8, torch.get_num_threads()) if len(files) >= PARALLEL_FROM else 0
    shape = (len(files), 3 if mode == "RGB" else 1, side, side)
    budget = disk_images.memory_budget(memory_budget)
    needed = int(np.prod(shape))
    stream = budget is not None and needed > budget
    folder = image_cache.cache_folder()
    if stream and folder is None:
        raise NoisefindError(
            f"the decoded images take {human_bytes(needed)}, more than the memory budget "
            f"({human_bytes(budget)}), and {image_cache.CACHE_ENV}=none leaves nowhere on disk "
            f"to stream them from: set {image_cache.CACHE_ENV} to a folder with room, or give "
            "a larger memory budget", parameter="memory_budget")
    key = image_cache.cache_key(files, side, mode) if folder is not None else None
    cached = image_cache.load(folder, key, stream=stream) if folder is not None else None
    if cached is not None:
        images, ok, skipped, preparation = cached
        if progress:
            console.print(f"decoded images from the cache ({folder})", highlight=False)
    else:
        images, ok, skipped, preparation = _decode(files, shape, mode, workers, progress,
                                                   folder, key, stream)
    if skipped:  # lost input: said even without progress messages, from the cache too
        first = skipped[0]
        console.print(f"[yellow]warning:[/] skipped {len(skipped)} unreadable files, first: "
                      f"{escape(str(first['path']))} ({escape(str(first['reason']))})",
                      highlight=False, soft_wrap=True)
    preparation = {**preparation, "chosen": "given (image_size)" if size else
                   f"the files' median shorter side, at most {DEFAULT_SIDE} px",
                   "from_cache": cached is not None, "streamed_from_disk": stream,
                   "memory_budget_bytes": budget}
    # uint8, the readable files only: the model converts each batch to float (to_float)
    return images, torch.tensor(ok).nonzero().flatten(), skipped, preparation


def _decode(files: list[str], shape: tuple[int, ...], mode: str, workers: int, progress: bool,
            folder, key, stream: bool) -> tuple[torch.Tensor | DiskImages, list[bool],
                                                list[dict], dict]:
    side = shape[-1]
    loader = torch.utils.data.DataLoader(
        ImageFiles(files, side, mode), batch_size=256, num_workers=workers,
        collate_fn=lambda batch: batch)
    # Decoded straight into one uint8 array (no list of images and stacked copy side by
    # side), and written to the cache as decoded; a streamed set only to the cache.
    images = None if stream else torch.from_numpy(np.empty(shape, dtype=np.uint8))
    writer = image_cache.Writer(folder, key, shape) if folder is not None else None
    ok, skipped, shorter = [], [], []
    try:
        with progress_bar(progress) as bar:
            task = bar.add_task("decoding images", total=len(files), info="")
            for batch in loader:
                for pixels, original, reason in batch:
                    if reason:
                        skipped.append({"path": files[len(ok)], "reason": reason})
                    else:  # the readable files side by side: no copy to drop the others
                        if images is not None:
                            images[len(shorter)] = torch.from_numpy(pixels)
                        if writer is not None:
                            writer.add(pixels)
                        shorter.append(min(original))
                    ok.append(not reason)
                bar.advance(task, len(batch))
        if not shorter:
            raise NoisefindError(f"no readable images among {len(files)} files")
        preparation = {
            "side": side, "channels": shape[1],
            "rule": RULE.format(side=side),
            "shorter_side_px": {"min": int(min(shorter)), "median": int(np.median(shorter)),
                                "max": int(max(shorter))},
            "stored_as": "uint8",
        }
        entry = writer.finish(ok, skipped, preparation) if writer is not None else None
    except BaseException:
        if writer is not None:
            writer.abandon()
        raise
    if stream:
        return DiskImages(entry, rows=len(shorter)), ok, skipped, preparation
    return images[:len(shorter)], ok, skipped, preparation
