"""Batched flip search against the one-at-a-time reference: examples per second, ratio, memory.

    python benchmarks/scan_speed.py --data digits --examples 200
    python benchmarks/scan_speed.py --data mnist5k --width 0.5 --examples 100

Both searches scan the same examples with the same model and settings; the script checks that
they agree on every units_to_flip, prints a table and writes benchmarks/results/scan_speed_<data>
_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from noisefind.data import load_data
from noisefind.flip import FlipSettings, flip_search, flip_search_reference
from noisefind.scan import peak_memory_mb
from noisefind.train import TrainConfig, fit, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--reference-examples", type=int, default=None,
                        help="examples for the slow search (default: all); rate is per example")
    parser.add_argument("--batch-size", type=int, default=None, help="searches per pass")
    parser.add_argument("--max-units", type=int, default=100)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_data(args.data).with_noise("symmetric:0.1", seed=0)
    run = fit(data, TrainConfig(width=args.width, epochs=args.epochs, device=str(device)),
              progress=False)
    rows = torch.from_numpy(np.random.default_rng(0).permutation(len(data))[:args.examples])
    settings = FlipSettings(max_units=args.max_units, batch_size=args.batch_size)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    batched = flip_search(run.model, data, settings, rows=rows, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    batched_seconds = time.perf_counter() - start
    batched_memory = peak_memory_mb(device)

    ref_rows = rows[:args.reference_examples or len(rows)]
    start = time.perf_counter()
    reference = flip_search_reference(run.model, data, settings, rows=ref_rows)
    if device.type == "cuda":
        torch.cuda.synchronize()
    reference_seconds = time.perf_counter() - start

    agree = float(np.mean(batched["units_to_flip"].to_numpy()[:len(ref_rows)]
                          == reference["units_to_flip"].to_numpy()))
    batched_rate = len(rows) / batched_seconds
    reference_rate = len(ref_rows) / reference_seconds
    result = {
        "command": "python benchmarks/scan_speed.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} threads",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(),
        "data": args.data, "width": args.width, "examples": len(rows),
        "batch_size": settings.batch_size or "auto",
        "batched_examples_per_second": round(batched_rate, 2),
        "reference_examples_per_second": round(reference_rate, 2),
        "speedup": round(batched_rate / reference_rate, 2),
        "peak_memory_mb": round(batched_memory, 1),
        "units_to_flip_agreement": agree,
        "median_units_to_flip": float(batched["units_to_flip"].median()),
    }
    table = Table(title=f"flip search speed, {args.data}, {result['device']}")
    for key in ("batched_examples_per_second", "reference_examples_per_second", "speedup",
                "peak_memory_mb", "units_to_flip_agreement"):
        table.add_row(key.replace("_", " "), str(result[key]))
    Console().print(table)
    out = (Path(__file__).parent / "results"
           / f"scan_speed_{Path(args.data).name}_{device.type}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
