"""Which canaries make the cutoff's count right: matched, runner-up and uniform, on one run.

    python benchmarks/canary_labels.py --data digits --width 1 --epochs 50 --settings \
        symmetric:0.1/0,symmetric:0.1/1,symmetric:0.1/2,symmetric:0.2/0,asymmetric:0.2/0,asymmetric:0.2/1
    python benchmarks/canary_labels.py --data mnist5k --width 0.5 --epochs 30 --limit 1000 \
        --settings symmetric:0.1/0,symmetric:0.1/1,asymmetric:0.2/0

For each noise/seed setting: inject the noise, train once, flip-search the scanned rows once,
then calibrate the cutoff (`noisefind.signals.replica.calibrate`, one replica per canary kind) with
each
kind of canary labels on that same model and search. Reports the flag's precision, recall and
F1 and the estimated count's error against the injected truth (over the scanned rows). All
rows are trained on; there is no test split, unlike benchmarks/cutoff.py.

Prints a table and writes benchmarks/results/canary_labels_<name>.json and .md. One torch
thread: the 2 cores of the development machine are shared.
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
from rich.console import Console
from rich.table import Table

from noisefind.data.labeled import scan_rows
from noisefind.data.load import load_data
from noisefind.decide.cutoff import CANARY_LABELS, CutoffSettings, flag_metrics
from noisefind.signals.flip import FlipSettings, flip_search
from noisefind.signals.replica import calibrate
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--settings", default="symmetric:0.1/0,asymmetric:0.2/0",
                        help="Comma-separated NOISE/SEED settings.")
    parser.add_argument("--kinds", default=",".join(CANARY_LABELS))
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default=None,
                        help="Results file stem after canary_labels_ [default: the data's name].")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_data(args.data)
    started = time.perf_counter()
    records = []
    for setting in args.settings.split(","):
        noise, seed = setting.rsplit("/", 1)
        seed = int(seed)
        noisy = data.with_noise(noise, seed)
        run = fit(noisy, TrainConfig(width=args.width, epochs=args.epochs, seed=seed,
                                     holdout=0.0, checkpoint_every=0, device="cpu"),
                  progress=False)
        rows = scan_rows(len(noisy), args.limit, seed)
        flip_settings = FlipSettings(seed=seed)
        results = flip_search(run.model, noisy, flip_settings, rows=torch.from_numpy(rows),
                              progress=False).reset_index()
        is_noisy = noisy.is_noisy.numpy()[rows]
        for kind in args.kinds.split(","):
            cutoff = calibrate(noisy, run, results, CutoffSettings(seed=seed, canary_labels=kind),
                               flip_settings)
            records.append({"noise": noise, "seed": seed, "canary_labels": kind,
                            **flag_metrics(is_noisy, cutoff.suspected, cutoff.estimated_scanned),
                            "estimated": round(cutoff.estimated_scanned, 1),
                            "flagged": int(cutoff.suspected.sum())})
            print(json.dumps(records[-1]), flush=True)

    command = "python benchmarks/canary_labels.py " + " ".join(sys.argv[1:])
    table = Table(title=f"canary labels: {args.data}")
    columns = ["noise", "seed", "canary_labels", "flag_precision", "flag_recall", "flag_f1",
               "estimated", "mislabeled_true", "count_error"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("noise", "canary_labels")
                         else "right")
    for record in records:
        table.add_row(*(str(record[c]) for c in columns))
    Console(width=160).print(table)
    summary = {}
    for kind in args.kinds.split(","):
        runs = [r for r in records if r["canary_labels"] == kind]
        summary[kind] = {
            "mean_abs_count_error": round(float(np.mean([abs(r["count_error"]) for r in runs])), 4),
            "mean_flag_f1": round(float(np.mean([r["flag_f1"] for r in runs])), 4)}
    print(json.dumps(summary, indent=1))

    name = args.name or args.data
    results_dir = Path(__file__).parent / "results"
    result = {"command": command, "machine": f"{platform.machine()}, {args.threads} torch "
              "thread(s), cpu", "seconds": round(time.perf_counter() - started, 1),
              "train": {"width": args.width, "epochs": args.epochs}, "limit": args.limit,
              "summary": summary, "runs": records}
    (results_dir / f"canary_labels_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Canary labels: {name}", "", f"```\n{command}\n```", "",
             f"{result['machine']}; {result['seconds'] / 60:.0f} minutes in all. Count error = "
             "(estimated - true) / true over the scanned rows.", "",
             "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in records]
    lines += ["", "| canary_labels | mean abs count error | mean flag F1 |",
              "| --- | ---: | ---: |"]
    lines += [f"| {kind} | {s['mean_abs_count_error']} | {s['mean_flag_f1']} |"
              for kind, s in summary.items()]
    (results_dir / f"canary_labels_{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
