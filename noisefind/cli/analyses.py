"""The analyses: ``localize`` (where memorization lives), ``memorization`` and ``evaluate``
(docs/analyses.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from noisefind.base.console import report
from noisefind.base.errors import NoisefindError
from noisefind.cli.app import (
    MARKUP,
    Arch,
    BatchSize,
    Data,
    Device,
    Epochs,
    Holdout,
    ImageSize,
    Lr,
    MemoryBudget,
    Noise,
    Quiet,
    RunData,
    RunFolder,
    Seed,
    Width,
    default_is,
    exits_cleanly,
    int_list,
    load,
    print_written,
    train_config,
)

localize_app = typer.Typer(no_args_is_help=True, rich_markup_mode=MARKUP,
                           help="Where does memorization live? Layer analyses of a run trained "
                                "with injected noise.")
LocalizeOut = Annotated[Path | None, typer.Option(
    "--out", help="Output folder: the JSON and PNG files " + default_is("RUN/localize") + ".")]
MemorizationOut = Annotated[Path, typer.Option(
    "--out", help="Output folder: memorization.csv, summary.json and the subset models.")]
DropMemorization = Annotated[bool, typer.Option(
    "--drop-memorization", help="Also evaluate with the memorization channels dropped.")]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")]


def _localize_out(run: Path, out: Path | None) -> Path:
    return out if out is not None else run / "localize"


@localize_app.command("gradients")
@exits_cleanly
def localize_gradients(run: RunFolder, out: LocalizeOut = None, quiet: Quiet = False) -> None:
    """Per-layer gradient norms of clean vs mislabeled examples and their cosine (Figs. 1, 2).

    The run must be trained with --noise and --track-gradients.
    """
    from noisefind.analyses.localize import gradient_figures, save_analysis
    from noisefind.analyses.report import gradient_table

    result = gradient_figures(run)
    written = save_analysis("gradients", result, _localize_out(run, out))
    report.print(gradient_table(result["summary"]))
    print_written(written, quiet)


@localize_app.command("rewind")
@exits_cleanly
def localize_rewind(
    run: RunFolder,
    out: LocalizeOut = None,
    epochs: Annotated[str | None, typer.Option(
        help="The kept checkpoints to rewind to, by epoch, comma-separated (not a training "
             "length) " + default_is("all kept") + ".")] = None,
    bn: Annotated[str, typer.Option(
        help="BatchNorm statistics of a rewound layer: checkpoint (with its weights) or "
             "recalibrate (re-estimate all on the training inputs).")] = "checkpoint",
    data: RunData = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Rewind each layer to each kept checkpoint; clean and mislabeled accuracy (Fig. 3)."""
    from noisefind.analyses.localize import rewind
    from noisefind.analyses.report import rewind_table

    chosen = int_list(epochs, "--epochs") if epochs is not None else None
    _layer_analysis("rewind", run, out, data, device, quiet, rewind_table,
                    lambda loaded_run, loaded: rewind(loaded_run, loaded, epochs=chosen, bn=bn,
                                                      progress=not quiet))


def _layer_analysis(name: str, run: Path, out: Path | None, data: str | None, device: str,
                    quiet: bool, table, analyse) -> None:
    """Load a run and its data, run one layer analysis, save it, print its table."""

    from noisefind.analyses.evaluate import load_run_data
    from noisefind.analyses.localize import save_analysis
    from noisefind.training.runs import load_run

    loaded_run = load_run(run, device=device)
    loaded = load_run_data(loaded_run, data, progress=not quiet)
    result = analyse(loaded_run, loaded)
    written = save_analysis(name, result, _localize_out(run, out))
    report.print(table(result))
    print_written(written, quiet)


@localize_app.command("retrain")
@exits_cleanly
def localize_retrain(
    run: RunFolder,
    out: LocalizeOut = None,
    layers: Annotated[str | None, typer.Option(
        help="Layer groups to retrain, comma-separated module names "
             + default_is("all") + ".")] = None,
    epochs: Annotated[int, typer.Option(help="Retraining epochs per layer.")] = 20,
    lr: Annotated[float, typer.Option(help="Peak learning rate of the retraining.")] = 0.01,
    batch_size: BatchSize = None,
    data: RunData = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Reset each layer to its initial weights, retrain it alone on clean examples (Fig. 4)."""
    from noisefind.analyses.localize import RetrainSettings, retrain
    from noisefind.analyses.report import retrain_table

    groups = [g.strip() for g in layers.split(",") if g.strip()] if layers else None
    settings = RetrainSettings(epochs=epochs, lr=lr, batch_size=batch_size)
    settings.validate()
    _layer_analysis("retrain", run, out, data, device, quiet, retrain_table,
                    lambda loaded_run, loaded: retrain(loaded_run, loaded, groups=groups,
                                                       settings=settings, progress=not quiet))


@exits_cleanly
def memorization(
    data: Data,
    models: Annotated[int, typer.Option(help="Models trained on random subsets.")] = 32,
    subset: Annotated[float, typer.Option(help="Share of the examples each model trains on.")
                      ] = 0.7,
    influence: Annotated[bool, typer.Option(
        "--influence", help="Also estimate each training example's influence on each test "
                            "example (needs a test split or --holdout).")] = False,
    holdout: Holdout = 0.0,
    out: MemorizationOut = Path("noisefind-memorization"),
    noise: Noise = None,
    seed: Seed = 0,
    device: Device = "auto",
    epochs: Epochs = 50,
    width: Width = 1.0,
    arch: Arch = "auto",
    batch_size: BatchSize = None,
    lr: Lr = 0.1,
    top: Annotated[int, typer.Option(help="Most memorized examples to print.")] = 10,
    image_size: ImageSize = None,
    memory_budget: MemoryBudget = None,
    quiet: Quiet = False,
) -> None:
    """Feldman-Zhang memorization of every training example from subset-trained models.

    Resumable: rerun the same command to continue; a larger --models extends the estimate.
    """
    from noisefind.analyses.memorization import MemorizationSettings, summarize
    from noisefind.analyses.memorization import memorization as estimate
    from noisefind.analyses.report import memorization_table
    from noisefind.data.labeled import split_holdout

    settings = MemorizationSettings(models=models, subset=subset, seed=seed)
    settings.validate()
    if not 0.0 <= holdout < 1.0:
        raise NoisefindError(f"--holdout must be in [0, 1), got {holdout}")
    loaded = load(data, noise, seed, image_size, quiet, memory_budget)
    if holdout:
        loaded = split_holdout(loaded, holdout, seed)
    config = train_config(seed, device, epochs=epochs, width=width, arch=arch,
                          batch_size=batch_size, lr=lr)
    result = estimate(loaded, settings, config, out=out, with_influence=influence,
                      progress=not quiet)
    summary = summarize(result, settings)
    report.print(memorization_table(result.table, top))
    if "auroc" in summary:
        report.print(f"mean memorization: clean {summary['mean_memorization_clean']:.3f}, "
                     f"mislabeled {summary['mean_memorization_mislabeled']:.3f}; AUROC as a "
                     f"detector {summary['auroc']:.3f}", highlight=False)
    if not quiet:
        report.print(f"wrote {out / 'memorization.csv'} and {out / 'summary.json'}",
                     highlight=False)


@exits_cleanly
def evaluate(
    run: RunFolder,
    drop_memorization: DropMemorization = False,
    data: RunData = None,
    json_output: JsonOutput = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Accuracy on clean and mislabeled training examples and on the test set."""
    import json

    from noisefind.analyses.evaluate import evaluate as evaluate_run
    from noisefind.analyses.evaluate import evaluation_table, load_run_data
    from noisefind.training.runs import load_run

    loaded_run = load_run(run, device=device)
    loaded = load_run_data(loaded_run, data, progress=not quiet)
    result = evaluate_run(loaded_run, loaded, drop_memorization=drop_memorization)
    if json_output:
        typer.echo(json.dumps(result, indent=2))
        return
    kind = loaded_run.config["train"]["dropout"]
    title = f"{run} ({'no' if kind == 'none' else kind} dropout)"
    report.print(evaluation_table(result, title=title))
    if "test" not in result["before"] and not quiet:
        report.print("no test set: train with --holdout 0.2 (or give data with a test split)")
