"""The flip search's cost against the training's, for several search settings in one run.

    python benchmarks/scan_speed.py --data digits
    python benchmarks/scan_speed.py --data mnist5k --variant fast:reference_size=4,noise_copies=2
    python benchmarks/scan_speed.py --data digits --examples 200 --reference-examples 60

One model is trained (timed), then the flip search scans the same rows under each setting:
``paper`` (the settings of the first release: R=16 references, K=5 noise copies, 100 units at
most, 8 searches per pass), ``default`` (today's :class:`~noisefind.signals.flip.FlipSettings`) and
any
``--variant NAME:key=value,...``. For each it reports the search's seconds, its ratio to the
training's seconds (projected to every row when ``--examples`` scans fewer), examples per
second, peak memory and the AUROC of the flip score (units to flip) and of the flip cost
against the injected noise. With ``--reference-examples N``, the default search is also checked
against the one-at-a-time reference on N rows (same units to flip, and the speed ratio).

Prints a table and writes benchmarks/results/scan_speed_<data>_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score

from noisefind.base.device import resolve_device
from noisefind.data.load import load_data
from noisefind.scanning.pipeline import peak_memory_mb
from noisefind.signals.flip import FlipSettings, flip_search, flip_search_reference
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit

PAPER = FlipSettings(max_units=100, noise_copies=5, reference_size=16, batch_size=8)
TABLE_COLUMNS = ("settings", "reference_size", "noise_copies", "max_units", "batch_size",
                 "flip_search_seconds", "ratio_to_training", "examples_per_second",
                 "peak_memory_mb", "auroc_flip", "auroc_flip_cost", "mean_units")


def parse_variant(text: str) -> tuple[str, FlipSettings]:
    """``"fast:reference_size=4,noise_copies=2"`` -> ("fast", FlipSettings(...))."""
    name, _, assignments = text.partition(":")
    kinds = {f.name: f.type for f in fields(FlipSettings)}
    values = {}
    for assignment in filter(None, assignments.split(",")):
        key, _, value = assignment.partition("=")
        if key not in kinds:
            raise SystemExit(f"--variant {text!r}: unknown setting {key!r}")
        values[key] = value if "str" in str(kinds[key]) else (
            float(value) if "float" in str(kinds[key]) else int(value))
    return name, FlipSettings(**values)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--noise", default="symmetric:0.1",
                        help="injected noise; 'none' for data with a true_label column")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--examples", type=int, default=None, help="rows scanned (default: all)")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME:key=value,... more FlipSettings to time (repeatable)")
    parser.add_argument("--reference-examples", type=int, default=0,
                        help="also check the default search against the one-at-a-time one")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="where the JSON goes")
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_data(args.data)
    if args.noise != "none":
        data = data.with_noise(args.noise, seed=0)
    synchronize(device)
    start = time.perf_counter()
    run = fit(data, TrainConfig(width=args.width, epochs=args.epochs, device=str(device)),
              progress=False)
    synchronize(device)
    train_seconds = time.perf_counter() - start
    n = len(data) if args.examples is None else min(args.examples, len(data))
    rows = torch.from_numpy(np.random.default_rng(0).permutation(len(data))[:n])
    noisy = data.is_noisy.numpy()[rows.numpy()]

    variants = [("paper", PAPER), ("default", FlipSettings())]
    variants += [parse_variant(text) for text in args.variant]
    results = []
    for name, settings in variants:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        synchronize(device)
        start = time.perf_counter()
        table = flip_search(run.model, data, settings, rows=rows, progress=False)
        synchronize(device)
        seconds = time.perf_counter() - start
        units = table["units_to_flip"].to_numpy()
        results.append({
            "settings": name, **settings.as_dict(), "batch_size": settings.batch_size or "auto",
            "flip_search_seconds": round(seconds, 2),
            "ratio_to_training": round(seconds * len(data) / n / train_seconds, 3),
            "examples_per_second": round(n / seconds, 2),
            "peak_memory_mb": round(peak_memory_mb(device), 1),
            "auroc_flip": round(float(roc_auc_score(noisy, -units)), 4),
            "auroc_flip_cost": round(float(roc_auc_score(noisy, -table["flip_cost"])), 4),
            "mean_units": round(float(units.mean()), 2),
            "median_units": float(np.median(units)),
        })
        print(json.dumps(results[-1]), flush=True)

    check = {}
    if args.reference_examples:
        some = rows[:args.reference_examples]
        start = time.perf_counter()
        batched = flip_search(run.model, data, rows=some, progress=False)
        batched_seconds = time.perf_counter() - start
        start = time.perf_counter()
        reference = flip_search_reference(run.model, data, rows=some)
        reference_seconds = time.perf_counter() - start
        check = {"examples": len(some),
                 "units_to_flip_agreement": float(np.mean(
                     batched["units_to_flip"].to_numpy() == reference["units_to_flip"].to_numpy())),
                 "batched_over_one_at_a_time_speed": round(reference_seconds / batched_seconds, 2)}

    report = {
        "command": "python benchmarks/scan_speed.py " + " ".join(
            f"--{k.replace('_', '-')} {item}" for k, v in vars(args).items()
            if v not in (None, [], 0) for item in (v if isinstance(v, list) else [v])),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} threads",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(),
        "data": args.data, "noise": args.noise, "width": args.width, "epochs": args.epochs,
        "examples": len(data), "scanned": n, "train_seconds": round(train_seconds, 2),
        "settings": results, "batched_against_one_at_a_time": check,
    }
    shown = Table(title=f"flip search against training ({train_seconds:.1f} s), {args.data}, "
                        f"{report['device']}")
    for column in TABLE_COLUMNS:
        shown.add_column(column.replace("_", " "), justify="right")
    for row in results:
        shown.add_row(*(str(row[column]) for column in TABLE_COLUMNS))
    Console(width=200).print(shown)
    if check:
        print(f"batched against one at a time on {check['examples']} rows: agreement "
              f"{check['units_to_flip_agreement']:.3f}, "
              f"{check['batched_over_one_at_a_time_speed']}x")
    out = args.out or (Path(__file__).parent / "results"
                       / f"scan_speed_{Path(args.data).stem}_{device.type}.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
