"""The ``noisefind`` command: parses arguments, calls the library, prints. No logic of its own.

Exit status: 0 success, 1 runtime failure, 2 bad usage or bad input (one line, no traceback).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from pathlib import Path
from typing import Annotated

import typer

from noisefind.base.console import console
from noisefind.base.errors import NoisefindError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find mislabeled training examples by how few neurons flip them.")

# Options shared by the commands that load data and train.
Data = Annotated[str, typer.Argument(help="Image folder, .csv manifest, .npz, or a built-in: "
                                          "digits, mnist5k, wine, breast-cancer.")]
Out = Annotated[Path, typer.Option("--out", help="Output folder.")]
Seed = Annotated[int, typer.Option(help="Seed for noise, initialisation and batching.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
Epochs = Annotated[int, typer.Option(help="Training epochs.")]
Width = Annotated[float, typer.Option(help="Width multiplier of the network.")]
Arch = Annotated[str, typer.Option(help="auto, resnet9, cnn or mlp.")]
BatchSize = Annotated[int | None, typer.Option(help="Training batch size [default: auto].")]
Lr = Annotated[float, typer.Option(help="Peak learning rate.")]
Noise = Annotated[str | None, typer.Option(
    help="Corrupt labels for benchmarking: KIND:RATE, e.g. symmetric:0.1.")]
ImageSize = Annotated[int | None, typer.Option(help="Resize images to this side length.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars and no messages.")]
DropoutKind = Annotated[str, typer.Option(
    "--dropout", help="Layer after every block: none, standard, sparse or example-tied.")]
ExampleTied = Annotated[bool, typer.Option(
    "--example-tied-dropout", help="Same as --dropout example-tied.")]
PGen = Annotated[float, typer.Option(
    help="Generalization share of each layer (drop probability for standard dropout).")]
PMem = Annotated[float, typer.Option(help="Share of memorization channels each example owns.")]
Holdout = Annotated[float, typer.Option(
    help="Train without this seeded share of the data; evaluate tests on it.")]


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False):
    """Find mislabeled training examples by how few neurons flip them."""
    if version:
        from noisefind import __version__

        console.print(f"noisefind {__version__}")
        raise typer.Exit()


def exits_cleanly(command):
    """Map bad input to one line and exit 2, unexpected failures to one line and exit 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except NoisefindError as exc:
            console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]; progress written so far is kept")
            raise typer.Exit(130) from None
        except (OSError, RuntimeError) as exc:
            console.print(f"[red]failed:[/] {type(exc).__name__}: {exc}", highlight=False,
                          soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


@contextlib.contextmanager
def _flag_words():
    """Say the library's parameter words (``rank_by='flip'``) as the CLI's flags."""
    try:
        yield
    except NoisefindError as error:
        text = str(error)
        for words, flag in (("rank_by=", "--rank-by "), ("cutoff='none'", "--cutoff none"),
                            ("set folds >= 2", "give --folds 2 or more")):
            text = text.replace(words, flag)
        raise NoisefindError(text.replace("'", "")) from None


def _join_torchrun(device: str, quiet: bool) -> tuple[str, bool]:
    """Under torchrun, join the process group; only rank 0 talks to the terminal."""
    from noisefind.base import distributed

    device = distributed.init_from_environment(device)
    return device, quiet or not distributed.is_main()


def _load(data: str, noise: str | None, seed: int, image_size: int | None, quiet: bool):
    from noisefind.data.load import load_data

    loaded = load_data(data, image_size=image_size, progress=not quiet)
    if loaded.skipped:
        console.print(f"[yellow]warning:[/] skipped {len(loaded.skipped)} unreadable files, "
                      f"first: {loaded.skipped[0]['path']} ({loaded.skipped[0]['reason']})",
                      highlight=False, soft_wrap=True)
    return loaded.with_noise(noise, seed) if noise else loaded


TrainingOptions = dict  # the shared training options by name (with_training_options)

TRAINING_PARAMETERS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
    for name, default, kind in (("epochs", 50, Epochs), ("width", 1.0, Width),
                                ("arch", "auto", Arch), ("batch_size", None, BatchSize),
                                ("lr", 0.1, Lr))]
TRAINING_OPTIONS = tuple(p.name for p in TRAINING_PARAMETERS)


def with_training_options(command):
    """Give a command the training options every training command shares (--epochs, --width,
    --arch, --batch-size, --lr); it receives them as one ``training`` dict."""
    signature = inspect.signature(command)
    own = [p for p in signature.parameters.values() if p.name != "training"]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        training = {name: kwargs.pop(name) for name in TRAINING_OPTIONS}
        return command(*args, training=training, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=own + TRAINING_PARAMETERS)
    del wrapper.__wrapped__  # typer reads __signature__, not the wrapped function's
    return wrapper


def _given(ctx: typer.Context, names) -> list[str]:
    """The options among ``names`` that the command line set (not left at their default)."""
    given = []
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given.append(f"--{name.replace('_', '-')}")
    return given


def _train_config(seed: int, device: str, training: TrainingOptions, **more):
    """The TrainConfig of the shared training options, a seed and a device."""
    from noisefind.training.config import TrainConfig

    return TrainConfig(**training, seed=seed, device=device, **more)


@app.command()
@exits_cleanly
@with_training_options
def train(
    ctx: typer.Context,
    data: Data,
    out: Out = Path("noisefind-run"),
    noise: Noise = None,
    seed: Seed = 0,
    device: Device = "auto",
    checkpoint_every: Annotated[int, typer.Option(help="Keep weights every N epochs.")] = 0,
    dropout: DropoutKind = "none",
    example_tied_dropout: ExampleTied = False,
    p_gen: PGen = 0.2,
    p_mem: PMem = 0.1,
    holdout: Holdout = 0.0,
    track_gradients: Annotated[bool, typer.Option(
        "--track-gradients", help="Record per-layer gradients of clean vs mislabeled examples "
                                  "(needs --noise; see noisefind localize gradients).")] = False,
    image_size: ImageSize = None,
    quiet: Quiet = False,
    training: TrainingOptions | None = None,
) -> None:
    """Train a model; OUT holds weights, config and the per-example training history."""
    from noisefind.training.fit import fit

    if example_tied_dropout and dropout not in ("none", "example-tied"):
        raise NoisefindError(f"--example-tied-dropout conflicts with --dropout {dropout}")
    dropout = "example-tied" if example_tied_dropout else dropout
    unused = _given(ctx, ("p_gen", "p_mem"))
    if dropout == "none" and unused:
        raise NoisefindError(f"{', '.join(unused)}: options of a dropout layer, but --dropout is "
                             "none; add --dropout example-tied (or standard, sparse)")
    device, quiet = _join_torchrun(device, quiet)
    loaded = _load(data, noise, seed, image_size, quiet)
    config = _train_config(seed, device, training, checkpoint_every=checkpoint_every,
                           dropout=dropout, p_gen=p_gen, p_mem=p_mem, holdout=holdout)
    hook = None
    if track_gradients:
        from noisefind.analyses.gradients import GradientTracker as hook
    run = fit(loaded, config, out=out, progress=not quiet, step_hook=hook)
    if quiet and run.path is None:
        return  # a torchrun rank other than 0
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in run.config["metrics"].items())
    console.print(f"trained {run.config['arch']} on {run.config['data']['examples']} examples in "
                  f"{run.config['seconds']:.1f}s: {metrics}; run saved to {out}", highlight=False)


RunFolder = Annotated[Path, typer.Argument(help="A run folder written by noisefind train.")]
DropMemorization = Annotated[bool, typer.Option(
    "--drop-memorization", help="Also evaluate with the memorization channels dropped.")]
RunData = Annotated[str | None, typer.Option(
    help="Load the run's data from here (default: where the run recorded it).")]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")]


@app.command()
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

    from rich.console import Console

    from noisefind.analyses.evaluate import evaluate as evaluate_run
    from noisefind.analyses.evaluate import evaluation_table, load_run_data
    from noisefind.training.runs import load_run

    loaded_run = load_run(run, device=device)
    loaded = load_run_data(loaded_run, data, progress=not quiet)
    result = evaluate_run(loaded_run, loaded, drop_memorization=drop_memorization)
    if json_output:
        typer.echo(json.dumps(result, indent=2))
        return
    # The table is the command's result, so stdout; messages stay on the stderr console.
    kind = loaded_run.config["train"]["dropout"]
    title = f"{run} ({'no' if kind == 'none' else kind} dropout)"
    Console().print(evaluation_table(result, title=title))
    if "test" not in result["before"] and not quiet:
        console.print("no test set: train with --holdout 0.2 (or give data with a test split)")


@app.command()
@exits_cleanly
@with_training_options
def scan(
    ctx: typer.Context,
    data: Data,
    model: Annotated[str | None, typer.Option(
        "--model", help="A run folder from `noisefind train`, torchvision:<name> or "
                        "<module>:<function> (your own model, with --weights); trains one when "
                        "omitted.")] = None,
    weights: Annotated[Path | None, typer.Option(
        help="Weights of your own --model: .safetensors or a torch state dict (loaded with "
             "weights_only, never unpickled).")] = None,
    mean: Annotated[str | None, typer.Option(
        help="Your own model's input standardisation: per-channel means, e.g. "
             "0.485,0.456,0.406 (inputs are in [0, 1]).")] = None,
    std: Annotated[str | None, typer.Option(
        help="Per-channel standard deviations to go with --mean.")] = None,
    out: Out = Path("noisefind-out"),
    noise: Noise = None,
    seed: Seed = 0,
    device: Device = "auto",
    limit: Annotated[int | None, typer.Option(
        help="Scan a seeded random subset of N examples.")] = None,
    max_units: Annotated[int, typer.Option(help="Cap on units zeroed per example.")] = 100,
    noise_copies: Annotated[int, typer.Option(help="Noisy copies averaged per example.")] = 2,
    reference_size: Annotated[int, typer.Option(
        help="Reference examples whose loss the search keeps low.")] = 4,
    reference: Annotated[str, typer.Option(
        help="Reference examples from the example's class (same-class) or anywhere (random)."
    )] = "same-class",
    scan_batch_size: Annotated[int | None, typer.Option(
        help="Searches run together [default: on CPU, about 192 inputs a pass, fewer for "
             "large images; on a GPU, what fits in half its free memory].")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted scan.")] = False,
    top: Annotated[int, typer.Option(help="Rows of the suspects table to print.")] = 10,
    cutoff: Annotated[str, typer.Option(
        help="Calibrate the 'suspected' flag with canaries in a replica model (canaries: one "
             "more training), or none.")] = "canaries",
    canary_fraction: Annotated[float, typer.Option(
        help="Share of examples relabelled as canaries in the replica.")] = 0.05,
    canary_recall: Annotated[float, typer.Option(
        help="Share of the canaries the flag must catch (higher: more flagged).")] = 0.9,
    canary_labels: Annotated[str, typer.Option(
        help="How canaries are relabelled: copying the confusions among the likeliest "
             "mislabeled examples (matched), to the model's most likely other class "
             "(runner-up), or to a random other class (uniform).")] = "matched",
    rank_by: Annotated[str | None, typer.Option(
        help="Order of suspects.csv and the pictures: consensus_score, one vote each for the "
             "out-of-sample margin, for the area under the margin with the flip cost, for the "
             "flip cost on a fold model that learned the example, and for the labels of its "
             "nearest neighbours (consensus; the best measured), the cutoff_score, the "
             "canary-weighed mix (cutoff), or the flip search's own score (flip; the "
             "paper's) [default: consensus, else cutoff with --folds 0, else flip].")] = None,
    folds: Annotated[int, typer.Option(
        help="K-fold models, each judging the examples it never saw: their class-calibrated "
             "margin against the given label enters the consensus and the cutoff's signals, "
             "and they are the consensus's augmented witness for the examples they learned "
             "and its neighbours witness (K more trainings and one more flip search); 0 "
             "leaves them out.")] = 5,
    image_size: ImageSize = None,
    quiet: Quiet = False,
    training: TrainingOptions | None = None,
) -> None:
    """Rank every training example by how few units flip the model's prediction."""
    from noisefind.api import check_own_rank_by, resolve_model, training_noise
    from noisefind.decide.cutoff import CutoffSettings
    from noisefind.scanning.outputs import print_suspects
    from noisefind.scanning.pipeline import check_rank_by
    from noisefind.scanning.pipeline import scan as run_scan
    from noisefind.signals.flip import FlipSettings
    from noisefind.training.runs import RANKING_SIGNALS, is_own

    ignored = _given(ctx, TRAINING_OPTIONS)
    if model is not None and ignored:
        raise NoisefindError(f"{', '.join(ignored)}: options of the training, but --model "
                             "gives a trained model; drop them, or drop --model")
    device, quiet = _join_torchrun(device, quiet)
    loaded = _load(data, None, seed, image_size, quiet)
    run = resolve_model(model, loaded, weights=weights, mean=parse_floats(mean, "--mean"),
                        std=parse_floats(std, "--std"), device=device)
    noise, seed, inherited = training_noise(run, noise, seed)
    if inherited and not quiet:
        console.print(f"using the model's training noise {noise} (seed {seed})")
    if run is not None and is_own(run):
        with _flag_words():
            check_own_rank_by(run, rank_by)
        if not quiet:
            console.print(f"your own model: the ranking uses {RANKING_SIGNALS}",
                          highlight=False, soft_wrap=True)
    if noise:
        loaded = loaded.with_noise(noise, seed)
    settings = FlipSettings(max_units=max_units, noise_copies=noise_copies,
                            reference_size=reference_size, reference=reference,
                            batch_size=scan_batch_size, seed=seed)
    config = _train_config(seed, device, training)
    cutoff_settings = CutoffSettings(method=cutoff, canary_fraction=canary_fraction,
                                     canary_recall=canary_recall,
                                     canary_labels=canary_labels, seed=seed)
    cutoff_settings.validate()
    if rank_by is not None:
        with _flag_words():
            check_rank_by(rank_by, cutoff_settings, folds)
    table = run_scan(loaded, run, out=out, settings=settings, limit=limit, resume=resume,
                     train_config=config, progress=not quiet, device=device,
                     cutoff=cutoff_settings, rank_by=rank_by, folds=folds)
    if not quiet:
        print_suspects(table, top)
        flagged = int(table["suspected"].sum()) if "suspected" in table else 0
        console.print(f"{flagged} of {len(table)} scanned examples flagged as suspected",
                      highlight=False)
        console.print(time_spent(out), highlight=False)
        console.print(f"wrote {out / 'suspects.csv'} and {out / 'summary.json'}",
                      highlight=False)


def time_spent(out: Path) -> str:
    """Where a scan's time went, from its ``summary.json``."""
    import json

    seconds = json.loads((out / "summary.json").read_text())["seconds"]
    stages = {"train": "training", "flip_search": "flip search",
              "cross_validation": "out-of-sample models",
              "fold_flip": "flip search on the fold models",
              "neighbours": "neighbours",
              "cutoff": "cutoff (replica)"}
    parts = [f"{name} {seconds[key]:.0f} s" for key, name in stages.items() if seconds.get(key)]
    return f"time: {', '.join(parts)}; total {seconds['total']:.0f} s"


@app.command()
@exits_cleanly
def bench(
    data: Data,
    noise: Annotated[str, typer.Option(
        help="Noise settings, comma-separated KIND:RATE, e.g. symmetric:0.1,asymmetric:0.2; "
             "'none' scores the labels as given against a manifest's true_label column.")],
    seeds: Annotated[int, typer.Option(help="Seeds per noise setting: --seed, --seed+1, ...")] = 3,
    folds: Annotated[int, typer.Option(help="K of the cross-validation (confident learning).")] = 5,
    limit: Annotated[int | None, typer.Option(
        help="Score a seeded random subset of N examples (every detector the same rows).")] = None,
    detectors: Annotated[str | None, typer.Option(
        help="Comma-separated detector names [default: all but the costly opt-in "
             "memorization].")] = None,
    out: Out = Path("noisefind-bench"),
    seed: Annotated[int, typer.Option(help="First seed.")] = 0,
    device: Device = "auto",
    epochs: Epochs = 50,
    width: Width = 1.0,
    arch: Arch = "auto",
    batch_size: BatchSize = None,
    lr: Lr = 0.1,
    max_units: Annotated[int, typer.Option(help="Cap on units zeroed per example.")] = 100,
    noise_copies: Annotated[int, typer.Option(help="Noisy copies averaged per example.")] = 2,
    reference_size: Annotated[int, typer.Option(
        help="Reference examples whose loss the search keeps low.")] = 4,
    scan_batch_size: Annotated[int | None, typer.Option(
        help="Searches run together [default: on CPU, about 192 inputs a pass, fewer for "
             "large images; on a GPU, what fits in half its free memory].")] = None,
    retrain: Annotated[bool, typer.Option(
        "--retrain", help="Also report the test accuracy of models retrained on the cleaned "
                          "sets (a clean test split is held out when the data has none).")
    ] = False,
    image_size: ImageSize = None,
    quiet: Quiet = False,
) -> None:
    """Score every detector against known label noise: AUROC, AUPRC, TPR@5%FPR, P@k, cost."""
    from rich.console import Console

    from noisefind.bench.detectors import parse_detector_list
    from noisefind.bench.report import bench_table
    from noisefind.bench.runner import bench as run_bench
    from noisefind.data.labeled import parse_noise_list
    from noisefind.signals.flip import FlipSettings
    from noisefind.training.config import TrainConfig

    noises = parse_noise_list(noise)
    chosen = parse_detector_list(detectors) if detectors is not None else None
    if seeds < 1:
        raise NoisefindError(f"--seeds must be at least 1, got {seeds}")
    loaded = _load(data, None, seed, image_size, quiet)
    config = TrainConfig(arch=arch, width=width, epochs=epochs, batch_size=batch_size, lr=lr,
                         seed=seed, device=device)
    settings = FlipSettings(max_units=max_units, noise_copies=noise_copies,
                            reference_size=reference_size, batch_size=scan_batch_size, seed=seed)
    settings.validate()
    runs = run_bench(loaded, noises, range(seed, seed + seeds), detectors=chosen,
                     train_config=config, folds=folds, limit=limit, out=out,
                     flip_settings=settings, progress=not quiet, retrain=retrain)
    # The table is the command's result, so stdout; messages stay on the stderr console.
    Console().print(bench_table(runs))
    if runs.attrs.get("decisions"):
        from noisefind.bench.report import decisions_table

        Console().print(decisions_table(runs.attrs["decisions"]))
    if runs.attrs.get("retrain"):
        from noisefind.bench.report import cleaned_retrain_table

        Console().print(cleaned_retrain_table(runs.attrs["retrain"]))
    console.print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'roc.png'}",
                  highlight=False)


# --------------------------------------------------------------------------------------------
# Where memorization lives: layer analyses of a run (docs/analyses.md)

localize_app = typer.Typer(no_args_is_help=True, help="Where does memorization live? Layer "
                           "analyses of a run trained with injected noise.")
app.add_typer(localize_app, name="localize")
LocalizeOut = Annotated[Path | None, typer.Option(
    "--out", help="Folder for the JSON and PNG files [default: RUN/localize].")]


def _localize_out(run: Path, out: Path | None) -> Path:
    return out if out is not None else run / "localize"


def _print_written(paths, quiet: bool = False) -> None:
    if quiet:
        return
    console.print("wrote " + ", ".join(str(p) for p in paths), highlight=False, soft_wrap=True)


@localize_app.command("gradients")
@exits_cleanly
def localize_gradients(run: RunFolder, out: LocalizeOut = None, quiet: Quiet = False) -> None:
    """Per-layer gradient norms of clean vs mislabeled examples and their cosine (Figs. 1, 2).

    The run must be trained with --noise and --track-gradients.
    """
    from rich.console import Console

    from noisefind.analyses.localize import gradient_figures, save_analysis
    from noisefind.analyses.report import gradient_table

    result = gradient_figures(run)
    written = save_analysis("gradients", result, _localize_out(run, out))
    Console().print(gradient_table(result["summary"]))
    _print_written(written, quiet)


@localize_app.command("rewind")
@exits_cleanly
def localize_rewind(
    run: RunFolder,
    out: LocalizeOut = None,
    epochs: Annotated[str | None, typer.Option(
        help="Checkpoint epochs to rewind to, comma-separated [default: all kept].")] = None,
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

    chosen = _int_list(epochs, "--epochs") if epochs is not None else None
    _layer_analysis("rewind", run, out, data, device, quiet, rewind_table,
                    lambda loaded_run, loaded: rewind(loaded_run, loaded, epochs=chosen, bn=bn,
                                                      progress=not quiet))


def _layer_analysis(name: str, run: Path, out: Path | None, data: str | None, device: str,
                    quiet: bool, table, analyse) -> None:
    """Load a run and its data, run one layer analysis, save it, print its table."""
    from rich.console import Console

    from noisefind.analyses.evaluate import load_run_data
    from noisefind.analyses.localize import save_analysis
    from noisefind.training.runs import load_run

    loaded_run = load_run(run, device=device)
    loaded = load_run_data(loaded_run, data, progress=not quiet)
    result = analyse(loaded_run, loaded)
    written = save_analysis(name, result, _localize_out(run, out))
    Console().print(table(result))
    _print_written(written, quiet)


@localize_app.command("retrain")
@exits_cleanly
def localize_retrain(
    run: RunFolder,
    out: LocalizeOut = None,
    layers: Annotated[str | None, typer.Option(
        help="Layer groups to retrain, comma-separated module names [default: all].")] = None,
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


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise NoisefindError(f"{flag} {text!r}: give comma-separated integers") from None


@app.command()
@exits_cleanly
@with_training_options
def memorization(
    data: Data,
    models: Annotated[int, typer.Option(help="Models trained on random subsets.")] = 32,
    subset: Annotated[float, typer.Option(help="Share of the examples each model trains on.")
                      ] = 0.7,
    influence: Annotated[bool, typer.Option(
        "--influence", help="Also estimate each training example's influence on each test "
                            "example (needs a test split or --holdout).")] = False,
    holdout: Holdout = 0.0,
    out: Out = Path("noisefind-memorization"),
    noise: Noise = None,
    seed: Seed = 0,
    device: Device = "auto",
    top: Annotated[int, typer.Option(help="Most memorized examples to print.")] = 10,
    image_size: ImageSize = None,
    quiet: Quiet = False,
    training: TrainingOptions | None = None,
) -> None:
    """Feldman-Zhang memorization of every training example from subset-trained models.

    Resumable: rerun the same command to continue; a larger --models extends the estimate.
    """
    from rich.console import Console

    from noisefind.analyses.memorization import MemorizationSettings, summarize
    from noisefind.analyses.memorization import memorization as estimate
    from noisefind.analyses.report import memorization_table
    from noisefind.data.labeled import split_holdout

    settings = MemorizationSettings(models=models, subset=subset, seed=seed)
    settings.validate()
    if not 0.0 <= holdout < 1.0:
        raise NoisefindError(f"--holdout must be in [0, 1), got {holdout}")
    loaded = _load(data, noise, seed, image_size, quiet)
    if holdout:
        loaded = split_holdout(loaded, holdout, seed)
    config = _train_config(seed, device, training)
    result = estimate(loaded, settings, config, out=out, with_influence=influence,
                      progress=not quiet)
    summary = summarize(result, settings)
    # The table is the command's result, so stdout; messages stay on the stderr console.
    Console().print(memorization_table(result.table, top))
    if "auroc" in summary:
        console.print(f"mean memorization: clean {summary['mean_memorization_clean']:.3f}, "
                      f"mislabeled {summary['mean_memorization_mislabeled']:.3f}; AUROC as a "
                      f"detector {summary['auroc']:.3f}", highlight=False)
    if not quiet:
        console.print(f"wrote {out / 'memorization.csv'} and {out / 'summary.json'}",
                      highlight=False)


ScanOut = Annotated[Path, typer.Argument(help="A scan's output folder (noisefind scan --out).")]


@app.command()
@exits_cleanly
def review(
    out: ScanOut,
    top: Annotated[int, typer.Option(
        help="Besides every flagged example, show this many of the most suspicious others.")
    ] = 1000,
    quiet: Quiet = False,
) -> None:
    """Write OUT/report.html: one self-contained page of the suspects, filterable."""
    from noisefind.scanning.review import write_review

    path = write_review(out, top=top)
    if not quiet:
        console.print(f"wrote {path}", highlight=False)


@app.command()
@exits_cleanly
def export(
    out: ScanOut,
    manifest: Annotated[Path, typer.Option(
        "--out", help="The cleaned manifest to write (.csv).")],
    drop: Annotated[bool, typer.Option("--drop", help="Leave the flagged examples out.")] = False,
    relabel: Annotated[bool, typer.Option(
        "--relabel", help="Give the flagged examples their suggested label.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Write a cleaned manifest (flagged examples dropped or relabelled), ready to train on."""
    from noisefind.scanning.export import export as export_manifest

    if drop == relabel:
        raise NoisefindError("export: give exactly one of --drop or --relabel")
    result = export_manifest(out, manifest, "drop" if drop else "relabel")
    if not quiet:
        console.print(f"wrote {result['file']}: {result['examples']} examples, "
                      f"{result['dropped']} dropped, {result['relabelled']} relabelled",
                      highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()


def parse_floats(text: str | None, name: str) -> list[float] | None:
    """``"0.485,0.456,0.406"`` -> floats (for ``--mean`` and ``--std``)."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise NoisefindError(f"{name} {text!r}: give comma-separated numbers") from None
