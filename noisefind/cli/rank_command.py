"""``noisefind rank``: rank from evidence at hand (out-of-sample probabilities, features), with
no training: the files in, :func:`noisefind.rank_label_issues`, the files out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from noisefind.base.console import console, report
from noisefind.cli.app import (
    Quiet,
    Seed,
    exits_cleanly,
    print_count,
    print_truth,
    print_written,
    said_as_flags,
)
from noisefind.signals.neighbours import NEIGHBOURS


@exits_cleanly(names={"labels": "LABELS"})
def rank(
    labels: Annotated[Path, typer.Argument(
        help="The given labels: a .npy of integers 0..C-1, or a .csv manifest with a 'label' "
             "column (and optionally 'path' for pictures on the review page and 'true_label' "
             "for benchmarks).", show_default=False)],
    pred_probs: Annotated[Path | None, typer.Option(
        "--pred-probs", help="(N, C) .npy of out-of-sample probabilities (K-fold: each row "
                             "from a model that did not train on it); column k is class k.")
    ] = None,
    features: Annotated[list[Path] | None, typer.Option(
        "--features", help="(N, D) .npy of embeddings; repeat for several models (their "
                           "neighbours' votes are averaged).")] = None,
    out: Annotated[Path, typer.Option(
        "--out", help="Output folder: suspects.csv, summary.json, report.html.")
    ] = Path("noisefind-rank"),
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace earlier results in --out.")] = False,
    classes: Annotated[str | None, typer.Option(
        "--classes", help="Class names in the order of --pred-probs' columns, comma-separated "
                          "(label names in LABELS are otherwise sorted, numerically where "
                          "they are numbers).", show_default=False)] = None,
    k: Annotated[int, typer.Option(
        "--k", help="Nearest neighbours whose labels vote.")] = NEIGHBOURS,
    count_from: Annotated[str | None, typer.Option(
        "--count-from", help="pred_probs or features: whose witness the count's canaries are "
                             "scored on. features suits embeddings no label trained (a "
                             "pretrained model's); default pred_probs when given.",
        show_default=False)] = None,
    top: Annotated[int, typer.Option(help="Suspects to print.")] = 10,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Rank examples from your own model's probabilities and/or embeddings (no training)."""
    from noisefind.api import rank_label_issues
    from noisefind.data.label_files import read_array, read_labels
    from noisefind.scanning.outputs import print_suspects

    names = None if classes is None else [name.strip() for name in classes.split(",")]
    given = read_labels(labels, classes=names)
    result = rank_label_issues(
        given.labels, classes=given.classes, paths=given.paths, true_labels=given.true_labels,
        pred_probs=None if pred_probs is None else read_array(pred_probs, "pred_probs"),
        features=None if not features else [read_array(f, "features") for f in features],
        k=k, seed=seed, count_from=count_from, name=str(labels), out=out,
        overwrite=overwrite)
    if quiet:
        return
    summary = result.summary
    for warning in summary.get("warnings", []):  # the column-order warning names these
        console.print(f"[yellow]warning:[/] "
                      f"{escape(said_as_flags(warning, ('pred_probs', 'classes')))}",
                      highlight=False, soft_wrap=True)
    print_suspects(result.table, top, "consensus")
    report.print(f"witnesses: {', '.join(summary['witnesses'])}; counted on "
                 f"{summary['count_from']}; {summary['flagged']} of {summary['examples']} "
                 "flagged", highlight=False)
    print_count(summary)
    print_truth(summary, "consensus_score")
    print_written([out / name for name in ("suspects.csv", "summary.json", "report.html")])
