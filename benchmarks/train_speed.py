"""Training speed: epochs per second and peak memory of the default recipe.

    python benchmarks/train_speed.py                       # digits and mnist5k on this device
    python benchmarks/train_speed.py --data /path/cifar10 --epochs 5   # on a GPU

Prints a table and writes benchmarks/results/train_speed_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from noisefind.base.device import resolve_device
from noisefind.data.load import load_data
from noisefind.scanning.pipeline import peak_memory_mb
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["digits", "mnist5k"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    fit(load_data("digits").subset(torch.arange(256)), TrainConfig(epochs=1, width=0.25,
        device=str(device)), progress=False)  # one-time start-up costs off the clock

    rows = []
    for name in args.data:
        data = load_data(name).with_noise("symmetric:0.1", seed=0)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        run = fit(data, TrainConfig(epochs=args.epochs, width=args.width, device=str(device)),
                  progress=False)
        seconds = time.perf_counter() - started
        rows.append({"data": Path(name).name or name, "examples": len(data),
                     "arch": run.config["arch"], "width": args.width, "epochs": args.epochs,
                     "epochs_per_second": round(args.epochs / seconds, 3),
                     "examples_per_second": round(args.epochs * len(data) / seconds, 1),
                     "peak_memory_mb": peak_memory_mb(device),
                     "train_accuracy": round(run.config["metrics"]["train_accuracy"], 4)})
    table = Table(title=f"training speed on {device}")
    for key in rows[0]:
        table.add_column(key.replace("_", " "))
    for row in rows:
        table.add_row(*[str(v) for v in row.values()])
    Console().print(table)
    result = {"command": "python benchmarks/train_speed.py " + " ".join(
                  f"--{k} {' '.join(v) if isinstance(v, list) else v}"
                  for k, v in vars(args).items()),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
              "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "runs": rows}
    out = Path(__file__).parent / "results" / f"train_speed_{device.type}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
