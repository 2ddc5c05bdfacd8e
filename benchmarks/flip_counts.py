"""Paper Figure 5(a): units to flip for clean and mislabeled examples, with the ranking's AUROC.

    python benchmarks/flip_counts.py --data mnist5k --width 0.5 --epochs 30 --per-group 150
    python benchmarks/flip_counts.py --data /path/cifar10 --epochs 50 --per-group 1000  # GPU

Trains on DATA with 10% symmetric noise, scans an equal number of clean and mislabeled training
examples, and writes a histogram PNG and a JSON of the medians and AUROC (of the plain count and
of the tie-broken flip cost) to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402

from noisefind.data.load import load_data  # noqa: E402
from noisefind.signals.flip import FlipSettings, flip_search  # noqa: E402
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--noise", default="symmetric:0.1")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--per-group", type=int, default=150)
    parser.add_argument("--max-units", type=int, default=100)
    parser.add_argument("--reference", default="same-class")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    data = load_data(args.data, progress=True).with_noise(args.noise, seed=0)
    started = time.perf_counter()
    run = fit(data, TrainConfig(width=args.width, epochs=args.epochs, device=args.device))
    train_seconds = time.perf_counter() - started
    rng = np.random.default_rng(0)
    noisy = data.is_noisy.numpy()
    rows = np.concatenate([rng.permutation(np.flatnonzero(noisy))[:args.per_group],
                           rng.permutation(np.flatnonzero(~noisy))[:args.per_group]])
    started = time.perf_counter()
    result = flip_search(run.model, data,
                         FlipSettings(max_units=args.max_units, reference=args.reference),
                         rows=torch.from_numpy(rows))
    scan_seconds = time.perf_counter() - started
    is_noisy = noisy[result["row"].to_numpy()]
    units = result["units_to_flip"].to_numpy()

    name = Path(args.data).name or args.data
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.arange(0, min(args.max_units, int(units.max()) + 2) + 1) - 0.5
    ax.hist(units[~is_noisy], bins=bins, alpha=0.6, label="clean")
    ax.hist(units[is_noisy], bins=bins, alpha=0.6, label="mislabeled")
    ax.set_xlabel("units zeroed to flip the prediction")
    ax.set_ylabel("examples")
    ax.set_title(f"{name}, {args.noise} noise")
    ax.legend()
    fig.tight_layout()
    results_dir = Path(__file__).parent / "results"
    fig.savefig(results_dir / f"flip_counts_{name}.png", dpi=120)

    summary = {
        "command": "python benchmarks/flip_counts.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
                   f"{run.config['device']}",
        "train_accuracy": run.config["metrics"],
        "median_units_clean": float(np.median(units[~is_noisy])),
        "median_units_mislabeled": float(np.median(units[is_noisy])),
        "mislabeled_under_10_units": float(np.mean(units[is_noisy] < 10)),
        "clean_under_10_units": float(np.mean(units[~is_noisy] < 10)),
        "not_flipped_clean": int((~result["flipped"].to_numpy() & ~is_noisy).sum()),
        "auroc_units_to_flip": float(roc_auc_score(is_noisy, -units)),
        "auroc_flip_cost": float(roc_auc_score(is_noisy, -result["flip_cost"])),
        "auprc_flip_cost": float(average_precision_score(is_noisy, -result["flip_cost"])),
        "seconds": {"train": round(train_seconds, 1), "scan": round(scan_seconds, 1)},
    }
    (results_dir / f"flip_counts_{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
