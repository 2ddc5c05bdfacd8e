"""The workflow's commands besides ``scan``: ``train``, ``review``, ``export`` and ``bench``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from noisefind.base.console import report
from noisefind.base.errors import NoisefindError
from noisefind.cli.app import (
    Arch,
    BatchSize,
    Data,
    Device,
    Epochs,
    FoldEpochs,
    FoldRecipe,
    Folds,
    Holdout,
    ImageSize,
    Lr,
    MaxUnits,
    MemoryBudget,
    Noise,
    NoiseCopies,
    Quiet,
    ReferenceSize,
    ScanBatchSize,
    ScanOut,
    Seed,
    Width,
    default_is,
    exits_cleanly,
    given,
    join_torchrun,
    load,
    train_config,
)

if TYPE_CHECKING:
    from noisefind.data.labeled import LabeledData
    from noisefind.training.config import TrainConfig

RunOut = Annotated[Path, typer.Option(
    "--out", help="Output folder: the run (weights, config, per-example training history).")]
BenchOut = Annotated[Path, typer.Option(
    "--out", help="Output folder: results.json, results.md and roc.png.")]
DropoutKind = Annotated[str, typer.Option(
    "--dropout", help="Layer after every block: none, standard, sparse or example-tied.")]
ExampleTied = Annotated[bool, typer.Option(
    "--example-tied-dropout", help="Same as --dropout example-tied.")]
PGen = Annotated[float, typer.Option(
    help="Generalization share of each layer (drop probability for standard dropout).")]
PMem = Annotated[float, typer.Option(help="Share of memorization channels each example owns.")]


@exits_cleanly
def train(
    ctx: typer.Context,
    data: Data,
    out: RunOut = Path("noisefind-run"),
    noise: Noise = None,
    seed: Seed = 0,
    device: Device = "auto",
    epochs: Epochs = 50,
    width: Width = 1.0,
    arch: Arch = "auto",
    batch_size: BatchSize = None,
    lr: Lr = 0.1,
    checkpoint_every: Annotated[int, typer.Option(
        help="Keep the weights every N epochs (0: only the last).")] = 0,
    dropout: DropoutKind = "none",
    example_tied_dropout: ExampleTied = False,
    p_gen: PGen = 0.2,
    p_mem: PMem = 0.1,
    holdout: Holdout = 0.0,
    track_gradients: Annotated[bool, typer.Option(
        "--track-gradients", help="Record per-layer gradients of clean vs mislabeled examples "
                                  "(needs --noise; see noisefind localize gradients).")] = False,
    image_size: ImageSize = None,
    memory_budget: MemoryBudget = None,
    recipe: Annotated[str, typer.Option(
        help="paper: the scanned model's recipe (fits every label, as the flip search needs); "
             "fast: noisefind's fold network with the fold models' recipe (colour images; its "
             "own network, rate and 30 epochs unless --epochs), whose OUT/model.safetensors "
             "`scan --backbone noisefind:fast --weights` starts from.")] = "paper",
    quiet: Quiet = False,
) -> None:
    """Train a model; --out holds weights, config and the per-example training history."""
    from noisefind.training.config import RECIPES
    from noisefind.training.fit import fit

    if recipe not in RECIPES:
        raise NoisefindError(f"--recipe {recipe!r}: choose {' or '.join(RECIPES)}")
    if recipe == "fast":
        # The fold models' own network and settings: options that would change them are refused.
        taken = given(ctx, ("width", "arch", "batch_size", "lr", "dropout",
                            "example_tied_dropout", "p_gen", "p_mem", "holdout",
                            "checkpoint_every"))
        if taken:
            raise NoisefindError(f"{', '.join(taken)}: --recipe fast trains the fold models' "
                                 "own network with its own settings; leave them out")
    if example_tied_dropout and dropout not in ("none", "example-tied"):
        raise NoisefindError(f"--example-tied-dropout conflicts with --dropout {dropout}")
    dropout = "example-tied" if example_tied_dropout else dropout
    unused = given(ctx, ("p_gen", "p_mem"))
    if dropout == "none" and unused:
        raise NoisefindError(f"{', '.join(unused)}: options of a dropout layer, but --dropout is "
                             "none; add --dropout example-tied (or standard, sparse)")
    device, quiet = join_torchrun(device, quiet)
    loaded = load(data, noise, seed, image_size, quiet, memory_budget)
    config = train_config(seed, device, epochs=epochs, width=width, arch=arch,
                          batch_size=batch_size, lr=lr, checkpoint_every=checkpoint_every,
                          dropout=dropout, p_gen=p_gen, p_mem=p_mem, holdout=holdout)
    if recipe == "fast":
        config = fold_network_config(config, loaded, epochs if given(ctx, ("epochs",)) else None)
    hook = None
    if track_gradients:
        from noisefind.analyses.gradients import GradientTracker as hook
    run = fit(loaded, config, out=out, progress=not quiet, step_hook=hook)
    if quiet and run.path is None:
        return  # a torchrun rank other than 0
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in run.config["metrics"].items())
    report.print(f"trained {run.config['arch']} on {run.config['data']['examples']} examples in "
                 f"{run.config['seconds']:.1f}s: {metrics}; run saved to {out}", highlight=False)


def fold_network_config(config: TrainConfig, data: LabeledData,
                        epochs: int | None) -> TrainConfig:
    """``config`` turned into the fold models' fast recipe (``epochs`` or its own), refused
    for data it does not train (anything but colour images of MIN_SIDE pixels a side or more)."""
    from noisefind.models.whitened import MIN_SIDE
    from noisefind.signals.out_of_sample import out_of_sample_config

    fast = out_of_sample_config(replace(config, fold_epochs=epochs), data)
    if fast.recipe != "fast":
        raise NoisefindError("--recipe fast: the fold models' network is for colour images of "
                             f"at least {MIN_SIDE} pixels a side")
    return fast


@exits_cleanly
def review(
    out: ScanOut,
    top: Annotated[int, typer.Option(
        help="Besides every flagged example, show this many of the most suspicious others.")
    ] = 1000,
    quiet: Quiet = False,
) -> None:
    """Write OUT/report.html: the suspects on one page, filterable, decided by key."""
    from noisefind.scanning.review import write_review

    path = write_review(out, top=top)
    if not quiet:
        report.print(f"wrote {path}", highlight=False)


# The library's export(out, file, ...) calls the scan folder `out` and the manifest `file`;
# this command calls them OUT and --out.
@exits_cleanly(names={"out": "OUT", "file": "--out"})
def export(
    out: ScanOut,
    manifest: Annotated[Path, typer.Option(
        "--out", help="The cleaned manifest to write: a .csv FILE (not a folder, unlike the "
                      "--out of the other commands).")],
    drop: Annotated[bool, typer.Option("--drop", help="Leave the flagged examples out.")] = False,
    relabel: Annotated[bool, typer.Option(
        "--relabel", help="Give the flagged examples their suggested label.")
    ] = False,
    decisions: Annotated[Path | None, typer.Option(
        "--decisions", help="Apply the decisions saved from the review page (decisions.csv: "
                            "index,decision,label with keep, relabel or drop) instead of the "
                            "flag; examples without one keep their label.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the --out file if it exists (else: an error, and the file "
                            "is left as it is).")] = False,
    quiet: Quiet = False,
) -> None:
    """Write a cleaned manifest: flagged examples dropped or relabelled, or your decisions."""
    from noisefind.scanning.export import export as export_manifest

    if drop + relabel + (decisions is not None) != 1:
        raise NoisefindError("export: give exactly one of --drop, --relabel or --decisions")
    result = export_manifest(out, manifest, "drop" if drop else "relabel", decisions=decisions,
                             overwrite=overwrite)
    if not quiet:
        unsure = (f", {result['flagged_unchanged']} flagged left as they are (suggestion not "
                  "confident)" if result.get("flagged_unchanged") else "")
        report.print(f"wrote {result['file']}: {result['examples']} examples, "
                     f"{result['dropped']} dropped, {result['relabelled']} relabelled{unsure}",
                     highlight=False)


@exits_cleanly
def bench(
    data: Data,
    noise: Annotated[str, typer.Option(
        help="Noise settings, comma-separated KIND:RATE, e.g. symmetric:0.1,asymmetric:0.2; "
             "'none' scores the labels as given against a manifest's true_label column.")],
    seeds: Annotated[int, typer.Option(
        help="Seeds per noise setting: --seed, --seed+1, ...")] = 3,
    folds: Folds = 5,
    fold_recipe: FoldRecipe = "fast",
    fold_epochs: FoldEpochs = None,
    limit: Annotated[int | None, typer.Option(
        help="Score a seeded random subset of N examples (every detector the same rows).")] = None,
    detectors: Annotated[str | None, typer.Option(
        help="Comma-separated detector names "
             + default_is("all but the costly opt-in memorization") + ".")] = None,
    out: BenchOut = Path("noisefind-bench"),
    seed: Annotated[int, typer.Option(
        help="First seed for noise, initialisation and batching (see --seeds).")] = 0,
    device: Device = "auto",
    epochs: Epochs = 50,
    width: Width = 1.0,
    arch: Arch = "auto",
    batch_size: BatchSize = None,
    lr: Lr = 0.1,
    max_units: MaxUnits = 100,
    noise_copies: NoiseCopies = 2,
    reference_size: ReferenceSize = 4,
    scan_batch_size: ScanBatchSize = None,
    retrain: Annotated[bool, typer.Option(
        "--retrain", help="Also report the test accuracy of models retrained on the cleaned "
                          "sets (a clean test split is held out when the data has none).")
    ] = False,
    image_size: ImageSize = None,
    memory_budget: MemoryBudget = None,
    quiet: Quiet = False,
) -> None:
    """Score every detector against known label noise: AUROC, AUPRC, TPR@5%FPR, P@k, cost."""

    from noisefind.bench.detectors import parse_detector_list
    from noisefind.bench.report import bench_table
    from noisefind.bench.runner import bench as run_bench
    from noisefind.data.labeled import parse_noise_list
    from noisefind.signals.flip import FlipSettings

    noises = parse_noise_list(noise)
    chosen = parse_detector_list(detectors) if detectors is not None else None
    if seeds < 1:
        raise NoisefindError(f"--seeds must be at least 1, got {seeds}")
    loaded = load(data, None, seed, image_size, quiet, memory_budget)
    config = train_config(seed, device, epochs=epochs, width=width, arch=arch,
                          batch_size=batch_size, lr=lr, fold_recipe=fold_recipe,
                          fold_epochs=fold_epochs)
    settings = FlipSettings(max_units=max_units, noise_copies=noise_copies,
                            reference_size=reference_size, batch_size=scan_batch_size, seed=seed)
    settings.validate()
    runs = run_bench(loaded, noises, range(seed, seed + seeds), detectors=chosen,
                     train_config=config, folds=folds, limit=limit, out=out,
                     flip_settings=settings, progress=not quiet, retrain=retrain)
    report.print(bench_table(runs))
    if runs.attrs.get("decisions"):
        from noisefind.bench.report import decisions_table

        report.print(decisions_table(runs.attrs["decisions"]))
    if runs.attrs.get("retrain"):
        from noisefind.bench.report import cleaned_retrain_table

        report.print(cleaned_retrain_table(runs.attrs["retrain"]))
    report.print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'roc.png'}",
                 highlight=False)
