"""The ``noisefind`` command: parses arguments, calls the library, prints. No logic of its own.

Exit status: 0 success, 1 runtime failure, 2 bad usage or bad input (one line, no traceback).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from noisefind.console import console
from noisefind.errors import NoisefindError

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
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


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


def _load(data: str, noise: str | None, seed: int, image_size: int | None, quiet: bool):
    from noisefind.data import load_data

    loaded = load_data(data, image_size=image_size, progress=not quiet)
    if loaded.skipped:
        console.print(f"[yellow]warning:[/] skipped {len(loaded.skipped)} unreadable files, "
                      f"first: {loaded.skipped[0]['path']} ({loaded.skipped[0]['reason']})",
                      highlight=False, soft_wrap=True)
    return loaded.with_noise(noise, seed) if noise else loaded


@app.command()
@exits_cleanly
def train(
    data: Data,
    out: Out = Path("noisefind-run"),
    noise: Noise = None,
    seed: Seed = 0,
    device: Device = "auto",
    epochs: Epochs = 50,
    width: Width = 1.0,
    arch: Arch = "auto",
    batch_size: BatchSize = None,
    lr: Lr = 0.1,
    checkpoint_every: Annotated[int, typer.Option(help="Keep weights every N epochs.")] = 0,
    image_size: ImageSize = None,
    quiet: Quiet = False,
) -> None:
    """Train a model; OUT holds weights, config and the per-example training history."""
    from noisefind.train import TrainConfig, fit

    loaded = _load(data, noise, seed, image_size, quiet)
    config = TrainConfig(arch=arch, width=width, epochs=epochs, batch_size=batch_size, lr=lr,
                         seed=seed, device=device, checkpoint_every=checkpoint_every)
    run = fit(loaded, config, out=out, progress=not quiet)
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in run.config["metrics"].items())
    console.print(f"trained {run.config['arch']} on {len(loaded)} examples in "
                  f"{run.config['seconds']:.1f}s: {metrics}; run saved to {out}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
