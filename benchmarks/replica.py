"""Can the cutoff's replica be cheaper? The flag and the count with a replica on part of the data.

    python benchmarks/replica.py --data digits --noise symmetric:0.1,asymmetric:0.2 --seeds 2
    python benchmarks/replica.py --data /tmp/noisefind-cifar10n/cifar10n-aggre-part4.csv \
        --noise none --width 0.25 --epochs 20 --limit 1000 \
        --work /tmp/noisefind-cifar10n/cifar10n-aggre-part4/cache

The cutoff trains a replica of the scanned model with canaries (``noisefind.decide.cutoff``): about
one more training. ``CutoffSettings.replica_fraction`` trains it on the canaries and only that
share of the other rows. For each noise/seed setting this trains the scanned model once (as
``noisefind bench`` does, so ``--work`` can point at a bench's cache and reuse its models and
searches), then calibrates with each ``--fractions`` value and reports, over the scanned rows:
the cutoff's own flag (``flip_cutoff``) and the scan's default flag (the count estimated with
out-of-sample evidence, taken from the top of the consensus order): precision, recall, F1 and
the count's error, with what the replica and its canaries' search cost.

Prints a table and writes benchmarks/results/replica_<name>.json and .md. One torch thread:
the 2 cores of the development machine are shared.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from noisefind.bench.context import DetectorContext, el2n_epoch
from noisefind.bench.detectors import noisefind_default
from noisefind.data.labeled import scan_rows
from noisefind.data.load import load_data
from noisefind.decide.consensus import flag_top
from noisefind.decide.cutoff import CutoffSettings, flag_metrics
from noisefind.signals.flip import FlipSettings
from noisefind.training.cache import ResultCache
from noisefind.training.config import TrainConfig

COLUMNS = ["noise", "seed", "fraction", "replica_seconds", "cutoff_precision", "cutoff_recall",
           "cutoff_f1", "cutoff_count_error", "default_precision", "default_recall",
           "default_f1", "default_count_error"]


def measure(data, noise: str, seed: int, config: TrainConfig, limit: int | None,
            fractions: list[float], cache: ResultCache) -> list[dict]:
    """One record per replica fraction, all on the same scanned model and search."""
    noisy = data.with_noise(noise, seed)
    # The bench's recipe for this seed (checkpoints for EL2N), so a bench cache is reused.
    config = replace(config, seed=seed, holdout=0.0, checkpoint_every=el2n_epoch(config.epochs))
    run = cache.fit(noisy, config, progress=False)
    rows = scan_rows(len(noisy), limit, seed)
    is_noisy = noisy.is_noisy.numpy()[rows]
    records = []
    for fraction in fractions:
        context = DetectorContext(noisy, run, rows, train_config=config,
                                  flip_settings=FlipSettings(seed=seed), cache=cache,
                                  cutoff_settings=CutoffSettings(seed=seed,
                                                                 replica_fraction=fraction))
        plain = context.flip_cutoff()
        informed = context.flip_cutoff(out_of_sample=True)
        flagged = flag_top(noisefind_default(context), informed.estimated_scanned)
        record = {"noise": noise, "seed": seed, "fraction": fraction,
                  "replica_seconds": plain.details["seconds"]}
        for prefix, suspected, estimate in (
                ("cutoff", plain.suspected, plain.estimated_scanned),
                ("default", flagged, informed.estimated_scanned)):
            metrics = flag_metrics(is_noisy, suspected, estimate)
            record.update({f"{prefix}_precision": metrics["flag_precision"],
                           f"{prefix}_recall": metrics["flag_recall"],
                           f"{prefix}_f1": metrics["flag_f1"],
                           f"{prefix}_count_error": metrics["count_error"]})
        records.append(record)
        print(json.dumps(record), flush=True)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--noise", default="symmetric:0.1", help="comma-separated noise specs")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--fractions", default="1,0.5,0.25")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None,
                        help="cache folder (a bench's cache/ to reuse its models)")
    parser.add_argument("--name", default=None,
                        help="results file stem after replica_ [default: the data's name]")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fractions = [float(f) for f in args.fractions.split(",")]
    data = load_data(args.data)
    config = TrainConfig(width=args.width, epochs=args.epochs)
    started = time.perf_counter()
    records = []
    with tempfile.TemporaryDirectory(prefix="noisefind-replica-") as workdir:
        cache = ResultCache(args.work or workdir)
        for noise in args.noise.split(","):
            for seed in range(args.seeds):
                records += measure(data, noise, seed, config, args.limit, fractions, cache)

    command = "python benchmarks/replica.py " + " ".join(sys.argv[1:])
    table = Table(title=f"replica fraction: {args.data}")
    for column in COLUMNS:
        table.add_column(column.replace("_", " "), justify="left" if column == "noise"
                         else "right")
    for record in records:
        table.add_row(*(str(record[c]) for c in COLUMNS))
    Console(width=200).print(table)

    name = args.name or Path(args.data).stem
    results_dir = Path(__file__).parent / "results"
    result = {"command": command, "machine": f"{platform.machine()}, {args.threads} torch "
              "thread(s), cpu", "seconds": round(time.perf_counter() - started, 1),
              "train": {"width": args.width, "epochs": args.epochs}, "limit": args.limit,
              "runs": records}
    (results_dir / f"replica_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Replica fraction: {name}", "", f"```\n{command}\n```", "",
             f"{result['machine']}; {result['seconds'] / 60:.0f} minutes in all. `cutoff`: the "
             "cutoff's own flag; `default`: the scan's default flag (the count with "
             "out-of-sample evidence, from the top of the consensus order). Count error = "
             "(estimated - true) / true over the scanned rows; replica seconds as first "
             "computed (cached ones keep their first cost).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in records]
    (results_dir / f"replica_{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
