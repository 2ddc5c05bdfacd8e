"""The paper's whole pipeline on CIFAR-10, timed stage by stage.

    python benchmarks/cifar10_pipeline.py                       # GPU: the full run
    python benchmarks/cifar10_pipeline.py --subset 2000 --epochs 2 --scan 32   # CPU: projected

Unpacks ../shared/datasets/cifar10-jpg.tar.gz (outside the repository) if needed, loads the
training folder, injects 10% symmetric noise, trains ResNet-9 (the paper's 50 epochs), and runs
the flip search over the training set. With ``--subset`` / ``--scan`` it times a part and
projects the time of the full run (50,000 examples, 50 epochs, all examples scanned) linearly.
Goals on one H100: training under 2 minutes, the full scan under 10 minutes.
Writes benchmarks/results/cifar10_pipeline_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from noisefind.base.device import resolve_device
from noisefind.data.load import load_data
from noisefind.scanning.pipeline import peak_memory_mb
from noisefind.signals.flip import FlipSettings, flip_search
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar10n import SHARED, unpack  # noqa: E402

ARCHIVE = SHARED / "cifar10-jpg.tar.gz"
FULL_EXAMPLES, FULL_EPOCHS = 50_000, 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/noisefind-cifar10"))
    parser.add_argument("--subset", type=int, default=None, help="train on N examples only")
    parser.add_argument("--epochs", type=int, default=FULL_EPOCHS)
    parser.add_argument("--scan", type=int, default=None, help="scan N examples only")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    stages: dict[str, float] = {}

    started = time.perf_counter()
    root = unpack(ARCHIVE, args.cache)
    stages["unpack"] = time.perf_counter() - started
    started = time.perf_counter()
    data = load_data(root, progress=True)
    stages["load"] = time.perf_counter() - started
    if args.subset:
        data = data.subset(torch.from_numpy(
            np.random.default_rng(0).permutation(len(data))[:args.subset]))
    data = data.with_noise("symmetric:0.1", seed=0)

    started = time.perf_counter()
    run = fit(data, TrainConfig(arch="resnet9", width=args.width, epochs=args.epochs,
                                device=str(device)))
    if device.type == "cuda":
        torch.cuda.synchronize()
    stages["train"] = time.perf_counter() - started

    rows = np.random.default_rng(0).permutation(len(data))[:args.scan or len(data)]
    started = time.perf_counter()
    result = flip_search(run.model, data, FlipSettings(), rows=torch.from_numpy(rows))
    if device.type == "cuda":
        torch.cuda.synchronize()
    stages["scan"] = time.perf_counter() - started

    noisy = data.is_noisy.numpy()[result["row"].to_numpy()]
    train_scale = (FULL_EXAMPLES / len(data)) * (FULL_EPOCHS / args.epochs)
    scan_scale = FULL_EXAMPLES / len(rows)
    summary = {
        "command": "python benchmarks/cifar10_pipeline.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if v is not None and k != "cache"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "examples_trained": len(data), "epochs": args.epochs, "examples_scanned": len(rows),
        "seconds": {k: round(v, 1) for k, v in stages.items()},
        "projected_full_seconds": {"train": round(stages["train"] * train_scale, 1),
                                   "scan": round(stages["scan"] * scan_scale, 1)},
        "train_metrics": run.config["metrics"],
        "median_units_to_flip": {
            "clean": float(np.median(result["units_to_flip"][~noisy])),
            "mislabeled": float(np.median(result["units_to_flip"][noisy])) if noisy.any()
            else None},
        "auroc_flip_cost": float(roc_auc_score(noisy, -result["flip_cost"]))
        if 0 < noisy.sum() < len(noisy) else None,
        "peak_memory_mb": peak_memory_mb(device),
    }
    out = Path(__file__).parent / "results" / f"cifar10_pipeline_{device.type}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
