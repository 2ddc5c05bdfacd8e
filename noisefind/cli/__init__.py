"""The ``noisefind`` command: parses arguments, calls the library, prints. No logic of its own.

Exit status: 0 success, 1 runtime failure, 2 bad usage or bad input (one line, no traceback),
130 interrupted.

- :mod:`noisefind.cli.app`: the typer app, ``--version``, the error mapping, shared options;
- :mod:`noisefind.cli.scan_command`: ``scan``;
- :mod:`noisefind.cli.rank_command`: ``rank``;
- :mod:`noisefind.cli.workflow`: ``train``, ``review``, ``export``, ``bench``;
- :mod:`noisefind.cli.analyses`: ``localize``, ``memorization``, ``evaluate``.
"""

from noisefind.cli.analyses import evaluate, localize_app, memorization
from noisefind.cli.app import app
from noisefind.cli.rank_command import rank
from noisefind.cli.scan_command import scan
from noisefind.cli.workflow import bench, export, review, train

# Registered in the workflow's order, which `noisefind --help` lists (app.COMMAND_ORDER).
app.command()(train)
app.command()(scan)
app.command()(rank)
app.command()(review)
app.command()(export)
app.command()(bench)
app.add_typer(localize_app, name="localize")
app.command()(memorization)
app.command()(evaluate)


def main() -> None:
    """Run the command line (``noisefind`` and ``python -m noisefind``)."""
    app(prog_name="noisefind")


__all__ = ["app", "bench", "evaluate", "export", "main", "memorization", "rank", "review",
           "scan", "train"]
