"""Terminal output shared by every long-running step: one rich console and one progress style."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second (examples, epochs) once the bar has moved."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f}/s" if task.speed else "")


def progress_bar(enabled: bool = True) -> Progress:
    """A progress bar with count, elapsed time and ETA; silent when ``enabled`` is false."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )
