"""The typer app, its root callback, the error mapping and the option types the commands share.

Exit status: 0 success, 1 runtime failure, 2 bad usage or bad input (one line, no traceback),
130 interrupted.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated

import typer
import typer.core
from rich.markup import escape

from noisefind.base.console import console, report
from noisefind.base.errors import NoisefindError
from noisefind.scanning.outputs import count_caution

# Commands in the order of the workflow, then the analyses (typer would list groups last).
COMMAND_ORDER = ("train", "scan", "rank", "review", "export", "bench", "localize", "memorization",
                 "evaluate")
MARKUP = typer.core.DEFAULT_MARKUP_MODE  # "rich" where rich is installed, else None


class WorkflowOrder(typer.core.TyperGroup):
    """Lists the commands in :data:`COMMAND_ORDER` (any others after them)."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        names = list(self.commands)
        ordered = [name for name in COMMAND_ORDER if name in names]
        return ordered + [name for name in names if name not in ordered]


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  cls=WorkflowOrder, rich_markup_mode=MARKUP,
                  help="Find mislabeled training examples by how few neurons flip them.")


def default_is(text: str) -> str:
    """``[default: TEXT]`` for a help text, escaped so that rich markup keeps the brackets."""
    shown = f"[default: {text}]"
    return escape(shown) if MARKUP == "rich" else shown


# --------------------------------------------------------------------------------------------
# Options shared by several commands: one name, one meaning.

Data = Annotated[str, typer.Argument(help="Image folder, .csv manifest, .npz, or a built-in: "
                                          "digits, mnist5k, wine, breast-cancer.")]
Seed = Annotated[int, typer.Option(help="Seed for noise, initialisation and batching.")]
Device = Annotated[str, typer.Option(help="Where models run: auto, cpu, cuda or mps.")]
Noise = Annotated[str | None, typer.Option(
    help="Corrupt labels for benchmarking: KIND:RATE, e.g. symmetric:0.1.")]
ImageSize = Annotated[int | None, typer.Option(help="Resize images to this side length.")]
MemoryBudget = Annotated[str | None, typer.Option(
    help="Decoded images to hold in memory, e.g. 4GB; a larger set streams from the disk cache "
         "a batch at a time [default: $NOISEFIND_MEMORY_BUDGET, else half the available "
         "memory].")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars and no messages.")]
Holdout = Annotated[float, typer.Option(
    help="Train without this seeded share of the data; evaluate tests on it.")]
Folds = Annotated[int, typer.Option(
    help="K of the K-fold cross-validation: K models, each judging the examples it never saw.")]
FoldRecipe = Annotated[str, typer.Option(
    help="How the K models train on colour images: fast (a whitened CNN, airbench's recipe: "
         "more accurate, in less time) or paper (--arch, --width, --epochs and the paper's "
         "recipe, with augmentation).")]
FoldEpochs = Annotated[int | None, typer.Option(
    help="Epochs of the K models " + default_is("30 with the fast recipe, --epochs with paper")
         + ".")]
FoldModels = Annotated[int, typer.Option(
    help="Models each fold trains, seeded apart, their probabilities averaged: more accurate "
         "evidence for that many times the fold models' training.")]
RunFolder = Annotated[Path, typer.Argument(help="A run folder written by noisefind train.")]
RunData = Annotated[str | None, typer.Option(
    help="Load the run's data from here " + default_is("where the run recorded it") + ".")]
ScanOut = Annotated[Path, typer.Argument(help="A scan's output folder (noisefind scan --out).")]

# The training options, the same on every command that trains a model.
Epochs = Annotated[int, typer.Option(
    help="Training epochs (in a scan: of a scanned model, and of fold models that do not use "
         "the fast recipe).")]
Width = Annotated[float, typer.Option(help="Width multiplier of the network.")]
Arch = Annotated[str, typer.Option(
    help="Network: auto (mlp for tables, cnn under 32 px, else resnet9), resnet9, whitened "
         "(the fast fold models' CNN), cnn or mlp.")]
BatchSize = Annotated[int | None, typer.Option(
    help="Training batch size " + default_is("auto") + ".")]
Lr = Annotated[float, typer.Option(help="Peak learning rate.")]

# The flip search's options (scan and bench). A scan runs the search only on one model
# (--rank-by flip or cutoff, --folds 0, --model); the default scan refuses them.
FLIP_ONLY = " (the flip search's; in a scan, with --rank-by flip|cutoff, --folds 0 or --model)"
MaxUnits = Annotated[int, typer.Option(help="Cap on units zeroed per example" + FLIP_ONLY + ".")]
NoiseCopies = Annotated[int, typer.Option(
    help="Noisy copies averaged per example" + FLIP_ONLY + ".")]
ReferenceSize = Annotated[int, typer.Option(
    help="Reference examples whose loss the search keeps low" + FLIP_ONLY + ".")]
ScanBatchSize = Annotated[int | None, typer.Option(
    help="Flip searches run together" + FLIP_ONLY + " " + default_is(
        "on CPU, about 192 inputs a pass, fewer for large images; on a GPU, what fits in half "
        "its free memory") + ".")]


# --------------------------------------------------------------------------------------------
# The root: --version


def _print_version(value: bool) -> None:
    if value:
        from noisefind import __version__

        typer.echo(f"noisefind {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", is_eager=True,
        callback=_print_version)] = False) -> None:
    """Find mislabeled training examples by how few neurons flip them."""


# --------------------------------------------------------------------------------------------
# Errors: one line and an exit status


def flag_message(error: NoisefindError, names: dict[str, str] | None = None) -> str:
    """The error's message with its library parameter said as the command's flag.

    ``NoisefindError("limit must be at least 1", parameter="limit")`` reads
    ``--limit must be at least 1``: the first whole-word occurrence of the parameter becomes
    ``--`` + the name with ``_`` as ``-``, or ``names[parameter]`` where the command calls it
    otherwise (``export`` calls the library's ``file`` ``--out``). A word inside a path
    (``runs/limit``) or already a flag (``--limit``) is not a parameter's name.

    ``parameter`` may also name several parameters (a tuple): the first as above; each further
    one at its last occurrence, where a message names the fix (``rank_by cutoff needs the
    cutoff; leave out cutoff none`` -> ``--rank-by cutoff needs the cutoff; leave out --cutoff
    none``).
    """
    return said_as_flags(str(error), getattr(error, "parameter", None), names)


def said_as_flags(text: str, parameters: str | tuple[str, ...] | None,
                  names: dict[str, str] | None = None) -> str:
    """``text`` with the library's ``parameters`` said as the command's flags, as
    :func:`flag_message` says an error's (a warning's too)."""
    if not parameters:
        return text
    if isinstance(parameters, str):
        parameters = (parameters,)
    names = names or {}
    for position, parameter in enumerate(parameters):
        flag = names.get(parameter, "--" + parameter.replace("_", "-"))
        word = re.compile(rf"(?<![\w./\\-]){re.escape(parameter)}(?![\w/\\-])")
        found = list(word.finditer(text))
        if found:
            where = found[0] if position == 0 else found[-1]
            text = text[:where.start()] + flag + text[where.end():]
    return text


def exits_cleanly(command=None, *, names: dict[str, str] | None = None):
    """Map bad input to one line and exit 2, unexpected failures to one line and exit 1,
    Ctrl-C to exit 130. ``names``: library parameters the command calls otherwise than
    ``--parameter-name`` (see :func:`flag_message`)."""

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except NoisefindError as exc:
                console.print(f"[red]error:[/] {escape(flag_message(exc, names))}",
                              highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
            except KeyboardInterrupt:
                console.print("[yellow]interrupted[/]; progress written so far is kept")
                raise typer.Exit(130) from None
            except (OSError, RuntimeError) as exc:
                console.print(f"[red]failed:[/] {type(exc).__name__}: {escape(str(exc))}",
                              highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None

        return wrapper

    return decorate(command) if command is not None else decorate


# --------------------------------------------------------------------------------------------
# Helpers the commands share


def join_torchrun(device: str, quiet: bool) -> tuple[str, bool]:
    """Under torchrun, join the process group; only rank 0 talks to the terminal."""
    import atexit

    from noisefind.base import distributed

    device = distributed.init_from_environment(device)
    atexit.register(distributed.shutdown)  # leave the process group once the command ends
    return device, quiet or not distributed.is_main()


def load(data: str, noise: str | None, seed: int, image_size: int | None, quiet: bool,
         memory_budget: str | None = None):
    """Load DATA and corrupt its labels with ``noise``."""
    from noisefind.data.load import load_data

    loaded = load_data(data, image_size=image_size, progress=not quiet,
                       memory_budget=memory_budget)
    return loaded.with_noise(noise, seed) if noise else loaded


def given(ctx: typer.Context, names) -> list[str]:
    """The options among ``names`` that the command line set (not left at their default)."""
    found = []
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            found.append(f"--{name.replace('_', '-')}")
    return found


def train_config(seed: int, device: str, *, epochs: int, width: float, arch: str,
                 batch_size: int | None, lr: float, **more):
    """The TrainConfig of the training options, a seed and a device."""
    from noisefind.training.config import TrainConfig

    return TrainConfig(epochs=epochs, width=width, arch=arch, batch_size=batch_size, lr=lr,
                       seed=seed, device=device, **more)


def parse_floats(text: str | None, name: str) -> list[float] | None:
    """``"0.485,0.456,0.406"`` -> floats (for ``--mean`` and ``--std``; ``name`` is the
    library parameter, which the error wrapper says as the flag)."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise NoisefindError(f"{name} {text!r}: give comma-separated numbers",
                             parameter=name) from None


def int_list(text: str, flag: str) -> list[int]:
    """``"0,5,10"`` -> integers."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise NoisefindError(f"{flag} {text!r}: give comma-separated integers") from None


def print_count(summary: dict) -> None:
    """The estimated number of wrong labels and its interval: "about 47 of 450 labels wrong
    (35-60)"; nothing without an estimate. Where the held-out models miss many labels the
    count takes as right, a second line says the count may be far off."""
    if not summary.get("estimated_mislabeled_interval"):
        return
    low, high = summary["estimated_mislabeled_interval"]
    report.print(f"about {summary['estimated_mislabeled']:.0f} of {summary['examples']} labels "
                 f"wrong ({low:.0f}-{high:.0f})", highlight=False)
    caution = count_caution(summary)
    if caution:
        report.print(f'{caution} (docs/method.md, "How far to trust the count")',
                     highlight=False)


def print_truth(summary: dict, score: str) -> None:
    """With the true labels known: how many are wrong, the order's AUROC (of ``score``), and
    the flag's precision and recall."""
    auroc = summary.get(f"auroc_{score}", summary.get("auroc"))
    wrong = summary.get("mislabeled", summary.get("mislabeled_scanned"))
    if auroc is None or wrong is None:
        return
    flag = (f", flag precision {summary['flag_precision']:.3f}, recall "
            f"{summary['flag_recall']:.3f}" if summary.get("flag_precision") is not None else "")
    report.print(f"against the true labels: {wrong} wrong; AUROC {auroc:.3f}{flag}",
                 highlight=False)


def print_written(paths, quiet: bool = False) -> None:
    if quiet:
        return
    report.print("wrote " + ", ".join(str(p) for p in paths), highlight=False, soft_wrap=True)
