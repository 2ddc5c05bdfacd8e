"""``noisefind scan``: rank every training example by how few units flip the model's prediction.

The command's options and their help; the body loads, trains or loads a model, scans, prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from noisefind.base.console import report
from noisefind.cli.app import (
    FLIP_ONLY,
    Arch,
    BatchSize,
    Data,
    Device,
    Epochs,
    FoldEpochs,
    FoldModels,
    FoldRecipe,
    Folds,
    ImageSize,
    Lr,
    MaxUnits,
    MemoryBudget,
    Noise,
    NoiseCopies,
    Quiet,
    ReferenceSize,
    ScanBatchSize,
    Seed,
    Width,
    default_is,
    exits_cleanly,
    given,
    join_torchrun,
    parse_floats,
    print_count,
    print_truth,
)

ScanOutFolder = Annotated[Path, typer.Option(
    "--out", help="Output folder: suspects.csv, summary.json, the pictures and the models.")]


@exits_cleanly
def scan(
    ctx: typer.Context,
    data: Data,
    model: Annotated[str | None, typer.Option(
        "--model", help="A run folder from `noisefind train`, torchvision:<name> or "
                        "<module>:<function> (your own model, with --weights) to flip-search; "
                        "without it the default scan trains only the --folds models (and "
                        "--rank-by flip or cutoff trains one more).")] = None,
    backbone: Annotated[str | None, typer.Option(
        "--backbone", help="Train this architecture (torchvision:<name> or <module>:<function>) "
                           "from its pretrained --weights instead of noisefind's own network: "
                           "a new classifier, a linear probe, then fine-tuning, for the fold "
                           "models and any scanned model alike (--lr 0.01 unless given). "
                           "noisefind:fast starts noisefind's own fold network from --weights "
                           "(colour images): the fold models train with the fast recipe, 15 "
                           "epochs unless --fold-epochs.")
    ] = None,
    weights: Annotated[Path | None, typer.Option(
        help="Weights of your own --model, or the pretrained weights of --backbone: "
             ".safetensors or a torch state dict (loaded with weights_only, never "
             "unpickled).")] = None,
    mean: Annotated[str | None, typer.Option(
        help="Your own model's input standardisation: per-channel means, e.g. "
             "0.485,0.456,0.406 (inputs are in [0, 1]).")] = None,
    std: Annotated[str | None, typer.Option(
        help="Per-channel standard deviations to go with --mean.")] = None,
    out: ScanOutFolder = Path("noisefind-out"),
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the results of an earlier scan in --out.")] = False,
    noise: Noise = None,
    seed: Seed = 0,
    device: Device = "auto",
    limit: Annotated[int | None, typer.Option(
        help="Scan a seeded random subset of N examples.")] = None,
    epochs: Epochs = 50,
    width: Width = 1.0,
    arch: Arch = "auto",
    batch_size: BatchSize = None,
    lr: Lr = 0.1,
    max_units: MaxUnits = 100,
    noise_copies: NoiseCopies = 2,
    reference_size: ReferenceSize = 4,
    reference: Annotated[str, typer.Option(
        help="Reference examples from the example's class (same-class) or anywhere (random)"
             + FLIP_ONLY + ".")] = "same-class",
    scan_batch_size: ScanBatchSize = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted scan.")] = False,
    top: Annotated[int, typer.Option(help="Rows of the suspects table to print.")] = 10,
    cutoff: Annotated[str, typer.Option(
        help="Count the wrong labels and flag that many with canaries (rows given a wrong "
             "label on purpose: scored again on the fold models' held-out evidence for the "
             "default order; trained into a replica model for --rank-by cutoff or flip), or "
             "none.")] = "canaries",
    canary_fraction: Annotated[float, typer.Option(
        help="Share of examples relabelled as canaries in the replica (--rank-by cutoff or "
             "flip).")] = 0.05,
    canary_recall: Annotated[float, typer.Option(
        help="Share of the replica's canaries the cutoff's flag must catch (higher: more "
             "flagged; --rank-by cutoff or flip).")] = 0.9,
    canary_labels: Annotated[str, typer.Option(
        help="How the replica's canaries are relabelled: copying the confusions among the "
             "likeliest "
             "mislabeled examples (matched), to the model's most likely other class "
             "(runner-up), or to a random other class (uniform).")] = "matched",
    rank_by: Annotated[str | None, typer.Option(
        help="Order of suspects.csv and the pictures: consensus_score, one vote each for the "
             "fold models' out-of-sample margin, for their area under the margin on the "
             "example, and for the labels of its nearest neighbours (consensus; the best "
             "measured; trains only the fold models, runs no flip search), the "
             "cutoff_score, the canary-weighed mix (cutoff), or the flip search's own score on "
             "one model trained on every label (flip; the paper's) "
             + default_is("consensus, else cutoff with --folds 0, else flip") + ".")] = None,
    folds: Folds = 5,
    fold_recipe: FoldRecipe = "fast",
    fold_epochs: FoldEpochs = None,
    fold_models: FoldModels = 1,
    image_size: ImageSize = None,
    memory_budget: MemoryBudget = None,
    quiet: Quiet = False,
) -> None:
    """Rank every training example by how likely its label is wrong (flag, count, suggest)."""
    from noisefind.api import find_label_issues
    from noisefind.scanning.outputs import ORDER_COLUMNS, print_suspects

    device, quiet = join_torchrun(device, quiet)
    # Only the training options the command line set reach the library, which refuses them
    # beside --model (the model is already trained) and fills in the recipe's defaults.
    values = {"epochs": epochs, "width": width, "arch": arch, "batch_size": batch_size,
              "lr": lr}
    training = {name: value for name, value in values.items() if given(ctx, [name])}
    result = find_label_issues(
        data, model=model, backbone=backbone, weights=weights, mean=parse_floats(mean, "mean"),
        std=parse_floats(std, "std"), image_size=image_size, memory_budget=memory_budget,
        out=out, overwrite=overwrite,
        resume=resume, noise=noise, seed=seed, device=device, limit=limit, max_units=max_units,
        noise_copies=noise_copies, reference_size=reference_size, reference=reference,
        scan_batch_size=scan_batch_size, cutoff=cutoff, canary_fraction=canary_fraction,
        canary_recall=canary_recall, canary_labels=canary_labels, rank_by=rank_by, folds=folds,
        fold_recipe=fold_recipe, fold_epochs=fold_epochs, fold_models=fold_models,
        progress=not quiet, **training)
    if quiet:
        return  # also every torchrun rank but the first
    table, summary = result.table, result.summary
    print_suspects(table, top, summary["rank_by"])
    report.print(f"{int(table['suspected'].sum())} of {len(table)} scanned examples flagged "
                 "as suspected", highlight=False)
    print_count(summary)
    print_truth(summary, ORDER_COLUMNS[summary["rank_by"]])
    report.print(time_spent(summary["seconds"]), highlight=False)
    report.print(f"wrote {out / 'suspects.csv'} and {out / 'summary.json'}", highlight=False)


def time_spent(seconds: dict) -> str:
    """Where a scan's time went, from its summary's ``seconds``."""
    stages = {"train": "training", "flip_search": "flip search",
              "cross_validation": "out-of-sample models",
              "neighbours": "neighbours", "backbone_neighbours": "backbone's neighbours",
              "count": "count",
              "cutoff": "cutoff (replica)"}
    parts = [f"{name} {seconds[key]:.0f} s" for key, name in stages.items() if seconds.get(key)]
    return f"time: {', '.join(parts)}; total {seconds['total']:.0f} s"
