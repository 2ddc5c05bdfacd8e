"""How each stage's cost grows with the data: seconds and peak memory against N.

    python benchmarks/scale.py photos --photos 240            # the full-size photo check
    python benchmarks/scale.py stages --sizes 10000,50000     # decode, train, neighbours vs N
    python benchmarks/scale.py neighbours --sizes 5000,50000,200000
    python benchmarks/scale.py side --folder IMAGES --sides 32,64   # cost of the input size
    python benchmarks/scale.py scan --sizes 10000,50000,200000 --memory-budget 16MB

``photos`` writes that many synthetic JPEG photos (2400 x 1800 and 1800 x 2400, three class
folders) to a temporary folder and runs ``noisefind scan photos/ --epochs 3 --folds 2`` as a
user would, in a child process whose peak resident memory is read from the kernel.
``stages`` writes N synthetic 32 x 32 PNG files in ten class folders and measures, each in a
fresh process, decoding them (``load_data``), one training epoch of a small model, and the
neighbours witness over its features. ``neighbours`` times the blocked nearest-neighbour search
alone on random unit-length 128-d features. ``side`` loads an image folder at each side
length and times three epochs of ResNet-9 (width 1) and the flip search of 30 examples.
``scan`` writes the largest N synthetic 32 x 32 PNG files once, then runs the whole default
``noisefind scan`` (two fold models of the small CNN, one epoch each, 500 rows ranked; stages
of scans that flip-search, when recorded, per searched row) on a manifest
of the first N of them, in a child process, with the images streamed from the disk cache when
they exceed ``--memory-budget`` (``--memory-budget none``: the default budget, half the
available memory): each stage's seconds per example and the child's own peak RSS. The data
sets are made here and never committed.
Results: a table on the terminal and ``benchmarks/results/scale-<mode>.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def child(code: str) -> dict:
    """Run ``code`` in a fresh Python; it prints one JSON object. Adds its peak RSS (MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # ru_maxrss of children is the largest of any child so far: report it only if it grew.
    result["peak_rss_mb"] = round(peak / 1024, 1) if peak > before else None
    return result


def write_photos(root: Path, count: int, seed: int = 0) -> None:
    """``count`` JPEG photos of 2400 x 1800 or 1800 x 2400 in three class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        k = i % 3
        width, height = (2400, 1800) if i % 2 == 0 else (1800, 2400)
        coarse = rng.integers(0, 255, (height // 100, width // 100, 3)).astype(np.int16)
        coarse[..., k] += 25  # a faint colour cast per class: learnable, not trivial
        image = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize(
            (width, height), Image.BICUBIC)
        grain = rng.integers(-20, 20, (height, width, 3))
        pixels = np.clip(np.asarray(image).astype(np.int16) + grain, 0, 255).astype(np.uint8)
        folder = root / ("beach", "forest", "city")[k]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)


def photos(args) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="noisefind-photos-") as folder:
        root = Path(folder) / "photos"
        write_photos(root, args.photos)
        size_mb = sum(f.stat().st_size for f in root.rglob("*.jpg")) / 2**20
        out = Path(folder) / "out"
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "noisefind", "scan", str(root), "--epochs",
                               "3", "--folds", "2", "--out", str(out), "--quiet"],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        summary = json.loads((out / "summary.json").read_text()) if done.returncode == 0 else {}
    return [{"photos": args.photos, "on_disk_mb": round(size_mb, 1), "exit": done.returncode,
             "error": done.stderr.strip().splitlines()[-1:] if done.returncode else [],
             "peak_rss_mb": round(max(peak, before) / 1024, 1), "seconds": round(seconds, 1),
             "input": summary.get("input"), "stage_seconds": summary.get("seconds")}]


def write_small_images(root: Path, count: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.png", compress_level=1)


STAGES = """
import json, time, torch
from noisefind.data.load import load_data
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit
from noisefind.signals.neighbours import embeddings, neighbour_probabilities
t = time.perf_counter(); data = load_data({root!r}); decode = time.perf_counter() - t
t = time.perf_counter()
run = fit(data, TrainConfig(epochs=1, width=0.25, device="cpu"), progress=False)
train = time.perf_counter() - t
t = time.perf_counter(); features = embeddings(run.model, data.x, data.index)
neighbours = neighbour_probabilities([features], data.y.numpy(), k=20)
near = time.perf_counter() - t
print(json.dumps({{"examples": len(data), "dtype": str(data.x.dtype),
                   "decoded_mb": round(data.x.numel() * data.x.element_size() / 2**20, 1),
                   "decode_s": round(decode, 2), "train_epoch_s": round(train, 2),
                   "neighbours_s": round(near, 2)}}))
"""


def stages(args) -> list[dict]:
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="noisefind-scale-") as folder:
            started = time.perf_counter()
            write_small_images(Path(folder), n)
            written = time.perf_counter() - started
            row = child(STAGES.format(root=folder))
        row["write_files_s"] = round(written, 1)
        for stage in ("decode", "train_epoch", "neighbours"):
            row[f"{stage}_ms_per_example"] = round(1000 * row[f"{stage}_s"] / n, 3)
        rows.append(row)
        print(row, flush=True)
    return rows


NEIGHBOURS = """
import json, time, torch
import torch.nn.functional as F
from noisefind.signals.neighbours import EXACT_UP_TO, nearest_neighbours
# Like a model's features: 1,000 class centres in 128 dimensions, each row near its class's.
g = torch.Generator().manual_seed(0)
centres = F.normalize(torch.randn(1000, 128, generator=g), dim=1)
labels = torch.randint(0, 1000, ({n},), generator=g)
features = F.normalize(centres[labels] + 0.15 * torch.randn({n}, 128, generator=g), dim=1)
t = time.perf_counter(); found = nearest_neighbours(features, 20)
seconds = time.perf_counter() - t
# Recall against the exact neighbours of 2,000 rows.
rows = torch.randperm({n}, generator=g)[:2000]
exact = []
for block in rows.split(250):  # a block at a time, so the check adds little to the peak RSS
    similarity = features[block] @ features.T
    similarity[torch.arange(len(block)), block] = -torch.inf
    exact.append(similarity.topk(20, dim=1).indices)
exact = torch.cat(exact)
recall = sum(len(set(a) & set(b)) for a, b in zip(found[rows].tolist(), exact.tolist())) / (
    20 * len(rows))
# What the witness reads: the share of the neighbours of the row's own class, found and exact.
share = (labels[found[rows]] == labels[rows, None]).float().mean().item()
exact_share = (labels[exact] == labels[rows, None]).float().mean().item()
print(json.dumps({{"examples": {n}, "search": "exact" if {n} <= EXACT_UP_TO else "clustered",
                   "seconds": round(seconds, 2), "recall_at_20": round(recall, 4),
                   "same_class_share": round(share, 4),
                   "same_class_share_exact": round(exact_share, 4)}}))
"""


def neighbours(args) -> list[dict]:
    rows = []
    for n in args.sizes:
        row = child(NEIGHBOURS.format(n=n))
        row["us_per_example"] = round(1e6 * row["seconds"] / n, 1)
        rows.append(row)
        print(row, flush=True)
    return rows


SIDE = """
import json, time
from noisefind.data.load import load_data
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit
from noisefind.signals.flip import FlipSettings, flip_search
data = load_data({folder!r}, image_size={side}).with_noise("symmetric:0.1", seed=0)
t = time.perf_counter(); run = fit(data, TrainConfig(epochs=3, device="cpu"), progress=False)
train = time.perf_counter() - t
t = time.perf_counter()
found = flip_search(run.model, data, FlipSettings(), rows=list(range(30)), progress=False)
search = time.perf_counter() - t
print(json.dumps({{"side": {side}, "examples": len(data),
                   "train_ms_per_example_epoch": round(1000 * train / (3 * len(data)), 1),
                   "flip_s_per_example": round(search / 30, 3),
                   "median_units": float(found["units_to_flip"].median())}}))
"""


def side(args) -> list[dict]:
    rows = []
    for length in args.sides:
        rows.append(child(SIDE.format(folder=str(args.folder), side=length)))
        print(rows[-1], flush=True)
    return rows


SCANNED = 500  # rows scanned in ``scan`` (a flip search's cost is per scanned row)


def run_child(command: list[str], log: Path) -> tuple[int, float, float]:
    """Run ``command`` with stderr to ``log``; its exit status, seconds and own peak RSS (MB,
    from the kernel's accounting of that one child)."""
    import os

    started = time.perf_counter()
    with open(log, "w") as err:
        child_process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child_process.pid, 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - started, usage.ru_maxrss / 1024


def scan(args) -> list[dict]:
    import os

    import pandas as pd

    rows = []
    with tempfile.TemporaryDirectory(prefix="noisefind-scale-scan-") as folder:
        root = Path(folder)
        started = time.perf_counter()
        write_small_images(root / "images", max(args.sizes))
        written = time.perf_counter() - started
        files = sorted((root / "images").rglob("*.png"), key=lambda f: f.name)
        env_cache = root / "cache"
        for n in args.sizes:
            manifest = root / f"first{n}.csv"
            pd.DataFrame({"path": [str(f) for f in files[:n]],
                          "label": [f.parent.name for f in files[:n]]}).to_csv(manifest,
                                                                               index=False)
            out = root / f"scan{n}"
            command = [sys.executable, "-m", "noisefind", "scan", str(manifest), "--epochs", "1",
                       "--folds", "2", "--fold-recipe", "paper", "--arch", "cnn", "--limit",
                       str(SCANNED), "--out", str(out)]
            if args.memory_budget != "none":
                command += ["--memory-budget", args.memory_budget]
            os.environ["NOISEFIND_CACHE"] = str(env_cache)  # the child's cache: made here
            code, seconds, peak = run_child(command, root / f"scan{n}.log")
            log_lines = (root / f"scan{n}.log").read_text().splitlines()
            if code:
                raise SystemExit(f"scan of {n} failed ({code}): {log_lines[-3:]}")
            summary = json.loads((out / "summary.json").read_text())
            row = {"examples": n, "memory_budget": args.memory_budget,
                   "streamed": summary["input"]["streamed_from_disk"],
                   "uint8_mb": round(n * 3 * 32 * 32 / 2**20, 1), "peak_rss_mb": round(peak, 1),
                   "seconds": round(seconds, 1), "log_lines": len(log_lines)}
            for stage in ("train", "flip_search", "cross_validation", "fold_flip", "neighbours",
                          "count", "cutoff", "total"):
                value = summary["seconds"].get(stage, 0.0)
                per = SCANNED if stage in ("flip_search", "fold_flip") else n
                row[f"{stage}_ms_per_{'scanned' if per == SCANNED else 'example'}"] = round(
                    1000 * value / per, 3)
            rows.append(row)
            print(row, flush=True)
    for row in rows:
        row["write_files_s"] = round(written, 1)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("photos", "stages", "neighbours", "side", "scan"))
    parser.add_argument("--memory-budget", default="16MB",
                        help="scan: the scan's --memory-budget, or none for its default")
    parser.add_argument("--folder", type=Path, help="image folder (side)")
    parser.add_argument("--sides", default="32,64",
                        type=lambda text: [int(v) for v in text.split(",")])
    parser.add_argument("--photos", type=int, default=240)
    parser.add_argument("--sizes", default="10000,50000",
                        type=lambda text: [int(v) for v in text.split(",")])
    args = parser.parse_args()
    modes = {"photos": photos, "stages": stages, "neighbours": neighbours, "side": side,
             "scan": scan}
    rows = modes[args.mode](args)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"scale: {args.mode}")
    keys = [k for k in rows[0] if not isinstance(rows[0][k], dict | list)]
    for key in keys:
        table.add_column(key, justify="right")
    for row in rows:
        table.add_row(*(str(row[k]) for k in keys))
    Console(width=200).print(table)
    RESULTS.mkdir(exist_ok=True)
    suffix = f"-{args.memory_budget}" if args.mode == "scan" else ""
    out = RESULTS / f"scale-{args.mode}{suffix}.json"
    out.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
