"""Paper Table 1: example-tied dropout vs standard dropout and a sparse network, before/after drop.

    python benchmarks/example_tied_dropout.py                       # mnist5k, CPU
    python benchmarks/example_tied_dropout.py --data /path/cifar10 --arch resnet9 --width 1 \\
        --epochs 50 --device cuda --grid none --name example_tied_dropout_cifar10   # GPU

Trains on DATA with 10% symmetric noise and a seeded 20% hold-out as the test set (unless DATA has
a test split), once per dropout variant (example-tied, standard, sparse) with the same recipe,
and evaluates each before and after dropping the memorization channels; then trains example-tied
runs over a small p_gen x p_mem grid. Prints the tables, checks the issue's bar and writes
benchmarks/results/NAME.json and NAME.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from noisefind.analyses.evaluate import evaluate
from noisefind.data.load import load_data
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit

KINDS = "example-tied,standard,sparse,none"
MEASURES = ("train_clean", "train_noisy", "test")
console = Console(width=120)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--noise", default="symmetric:0.1")
    parser.add_argument("--arch", default="auto")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--p-gen", type=float, default=0.2)
    parser.add_argument("--p-mem", type=float, default=0.1)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--kinds", default=KINDS, help="dropout variants of the main table")
    parser.add_argument("--grid", default="0.2,0.4x0.1,0.2",
                        help="P_GENSxP_MEMS for the example-tied grid, or 'none'")
    parser.add_argument("--grid-width", type=float, default=0.5,
                        help="width of the grid's runs (cheaper than the main table's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="example_tied_dropout")
    return parser.parse_args()


def train_and_evaluate(data, args: argparse.Namespace, dropout: str, p_gen: float, p_mem: float,
                       width: float) -> dict:
    """One run: train with ``dropout`` and return its settings, seconds and accuracies."""
    config = TrainConfig(arch=args.arch, width=width, epochs=args.epochs, lr=args.lr,
                         seed=args.seed, device=args.device, dropout=dropout, p_gen=p_gen,
                         p_mem=p_mem, holdout=args.holdout)
    started = time.perf_counter()
    run = fit(data, config, progress=False)
    train_seconds = time.perf_counter() - started
    result = evaluate(run, data, drop_memorization=dropout != "none")
    record = {"dropout": dropout, "p_gen": p_gen, "p_mem": p_mem, "width": width,
              "train_seconds": round(train_seconds, 1), "device": run.config["device"],
              "arch": run.config["arch"], **result}
    console.print(f"{dropout} p_gen={p_gen} p_mem={p_mem} width={width}: "
                  f"{train_seconds:.0f}s  {cells(record)}", highlight=False)
    return record


def triple(accuracies: dict) -> str:
    """``clean / mislabeled / test`` in percent."""
    return " / ".join("-" if k not in accuracies else f"{100 * accuracies[k]:.1f}"
                      for k in MEASURES)


def cell(record: dict, stage: str) -> str:
    return triple(record[stage]) if stage in record else "-"


def cells(record: dict) -> str:
    return "  ".join(f"{stage}: {triple(record[stage])}"
                     for stage in ("before", "all", "after") if stage in record)


def check_bar(records: list[dict]) -> dict:
    """The issue's "done when" conditions, measured."""
    by_kind = {r["dropout"]: r for r in records}
    checks = {}
    if "example-tied" in by_kind:
        before, after = by_kind["example-tied"]["before"], by_kind["example-tied"]["after"]
        checks["etd_noisy_after_at_most_10pct"] = after["train_noisy"] <= 0.10
        checks["etd_clean_after_at_least_90pct"] = after["train_clean"] >= 0.90
        checks["etd_noisy_before_at_least_90pct"] = before["train_noisy"] >= 0.90
        if "test" in before:
            checks["etd_test_after_not_lower"] = after["test"] >= before["test"]
    for kind in ("standard", "sparse", "none"):
        if kind in by_kind:
            checks[f"{kind}_fits_noisy_before_at_least_90pct"] = \
                by_kind[kind]["before"]["train_noisy"] >= 0.90
    return checks


def markdown(records: list[dict], grid: list[dict], checks: dict, settings: dict) -> str:
    """The results as Markdown: the main table, the grid and the checks."""
    lines = [f"# Example-tied dropout on {settings['data']} ({settings['noise']})", "",
             f"Command: `{settings['command']}`", "",
             f"Accuracy in % as train clean / train mislabeled (given labels) / test; width "
             f"{settings['width']}, {settings['epochs']} epochs, seed {settings['seed']}, "
             f"{settings['device']}.", "",
             "| dropout | before drop | all channels | after drop | train s |",
             "| --- | --- | --- | --- | --- |"]
    for r in records:
        lines.append(f"| {r['dropout']} | {triple(r['before'])} | "
                     f"{cell(r, 'all')} | {cell(r, 'after')} | "
                     f"{r['train_seconds']:.0f} |")
    if grid:
        lines += ["", f"Example-tied grid (width {grid[0]['width']}):", "",
                  "| p_gen | p_mem | before drop | after drop |", "| --- | --- | --- | --- |"]
        lines += [f"| {g['p_gen']} | {g['p_mem']} | {triple(g['before'])} | "
                  f"{triple(g['after'])} |" for g in grid]
    lines += ["", "Checks (the issue's bar):", ""]
    lines += [f"- {name}: {'yes' if ok else '**no**'}" for name, ok in checks.items()]
    return "\n".join(lines) + "\n"


def print_table(records: list[dict], title: str) -> None:
    table = Table(title=title)
    for column in ("dropout", "p_gen", "p_mem", "before drop", "all channels", "after drop"):
        table.add_column(column)
    for r in records:
        table.add_row(r["dropout"], str(r["p_gen"]), str(r["p_mem"]), triple(r["before"]),
                      cell(r, "all"), cell(r, "after"))
    console.print(table)


def parse_grid(text: str) -> list[tuple[float, float]]:
    if text == "none":
        return []
    gens, mems = text.split("x")
    return [(float(g), float(m)) for g in gens.split(",") for m in mems.split(",")]


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_data(args.data, progress=True).with_noise(args.noise, seed=args.seed)
    records = [train_and_evaluate(data, args, kind, args.p_gen, args.p_mem, args.width)
               for kind in args.kinds.split(",")]
    grid = [train_and_evaluate(data, args, "example-tied", g, m, args.grid_width)
            for g, m in parse_grid(args.grid)]
    checks = check_bar(records)
    settings = {"command": "python " + " ".join(sys.argv), "data": args.data,
                "noise": args.noise, "width": args.width, "epochs": args.epochs, "lr": args.lr,
                "holdout": args.holdout, "seed": args.seed, "device": records[0]["device"],
                "threads": torch.get_num_threads(), "torch": torch.__version__,
                "platform": platform.platform()}
    print_table(records, "clean / mislabeled / test accuracy (%)")
    if grid:
        print_table(grid, f"example-tied grid, width {args.grid_width}")
    for name, ok in checks.items():
        console.print(f"{name}: {'yes' if ok else 'NO'}")
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"settings": settings, "runs": records, "grid": grid, "checks": checks}
    (args.out / f"{args.name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(records, grid, checks, settings))
    console.print(f"wrote {args.out / args.name}.json and .md")


if __name__ == "__main__":
    main()
