"""From a ranking to a decision: the calibrated cutoff beside cleanlab, and retraining after it.

    python benchmarks/cutoff.py --data digits --width 1 --epochs 50 --seeds 3
    python benchmarks/cutoff.py --data mnist5k --width 0.5 --epochs 30 --seeds 1 --limit 1000

For each seed: 10% symmetric noise, a clean test split (a fifth, stratified) held out, the bench
(`noisefind.bench.runner.bench(..., retrain=True)`) on the rest with the detectors flip, flip_cost,
aum
and confident_learning. It reports, on the same run and rows:

- the flag of the scan's calibrated cutoff (`flip_cutoff`, canaries in a replica model) and of
  cleanlab's `find_label_issues` (on K-fold out-of-sample probabilities): precision, recall, F1;
- their estimated number of mislabeled rows against the truth (cleanlab: `num_label_issues`);
- the test accuracy of the recipe trained on the noisy set, on each cleaned set (flagged rows
  dropped and written as `noisefind export --drop` writes them, then read back) and on the true
  labels.

Writes benchmarks/results/cutoff_<data>.json and .md (with this command). One torch thread:
the 2 cores of the development machine are shared.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from noisefind.bench.runner import bench
from noisefind.data.load import load_data
from noisefind.signals.flip import FlipSettings
from noisefind.training.config import TrainConfig

DETECTORS = ["flip", "flip_cost", "flip+dynamics", "aum", "confident_learning"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--noise", default="symmetric:0.1")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-units", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default=None,
                        help="Results file stem after cutoff_ [default: the data's name].")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_data(args.data, progress=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="noisefind-cutoff-") as folder:
        runs = bench(data, [args.noise], seeds=args.seeds, detectors=DETECTORS,
                     train_config=TrainConfig(width=args.width, epochs=args.epochs,
                                              device=args.device),
                     folds=args.folds, limit=args.limit, out=folder,
                     flip_settings=FlipSettings(max_units=args.max_units), retrain=True)
        tables = (Path(folder) / "results.md").read_text()
        settings = json.loads((Path(folder) / "results.json").read_text())["settings"]
    command = "python benchmarks/cutoff.py " + " ".join(sys.argv[1:])
    result = {
        "command": command,
        "machine": f"{platform.machine()}, {args.threads} torch thread(s), {args.device}",
        "seconds": round(time.perf_counter() - started, 1),
        "settings": settings,
        "decisions": runs.attrs["decisions"],
        "retrain": runs.attrs["retrain"],
        "detectors": runs.to_dict("records"),
    }
    results_dir = Path(__file__).parent / "results"
    name = args.name or Path(args.data).name or args.data
    (results_dir / f"cutoff_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (results_dir / f"cutoff_{name}.md").write_text(
        f"# Cutoff, cleanlab and retraining: {name}\n\n```\n{command}\n```\n\n"
        f"{result['machine']}; {result['seconds'] / 60:.0f} minutes in all.\n\n"
        + tables.split("\n", 1)[1])
    print(tables)


if __name__ == "__main__":
    main()
