"""Terminal output shared by every long-running step: one rich console and one progress style.

In a terminal, progress is a live bar. When stderr is a file or a pipe (a cluster job,
``noisefind scan ... 2> scan.log``), a live bar would write nothing until the end, so progress is
written as lines instead: one when a step starts, one at every tenth of it, one when it ends,
each with the elapsed time and an estimate of the time left.
"""

from __future__ import annotations

import time

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

console = Console(stderr=True)  # progress, messages and errors
console.soft_wrap = not console.is_terminal  # a log keeps each message on one line
# Results (tables, counts, files written) go to stdout, so `noisefind scan ... > results.txt`
# keeps them apart from the progress.
report = Console(soft_wrap=True)  # one result, one line, however narrow the terminal
LOG_STEPS = 10  # lines per step in a log: one at every tenth


class RateColumn(ProgressColumn):
    """Items per second (examples, epochs) once the bar has moved."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f}/s" if task.speed else "")


def progress_bar(enabled: bool = True) -> Progress | LogProgress:
    """A progress bar with count, elapsed time and ETA; lines in a log file when stderr is not
    a terminal; silent when ``enabled`` is false."""
    if enabled and not console.is_terminal:
        return LogProgress()
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


def clock(seconds: float) -> str:
    """``1:02:03`` for a duration in seconds."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Step:
    def __init__(self, description: str, total: float | None, completed: float, info: str):
        self.description, self.total, self.completed, self.info = (
            description, total, completed, info)
        self.started = time.perf_counter()
        self.logged = -1  # the last tenth written
        self.done = False


class LogProgress:
    """The subset of :class:`rich.progress.Progress` noisefind uses, written as log lines."""

    def __init__(self, steps: int = LOG_STEPS):
        self.steps = steps
        self._tasks: list[_Step] = []

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        for task in self._tasks:
            if not task.done and exc[0] is None:
                self._line(task, final=True)

    def add_task(self, description: str, total: float | None = None, completed: float = 0,
                 info: str = "", **_) -> int:
        self._tasks.append(_Step(description, total, completed, info))
        task = len(self._tasks) - 1
        console.print(f"{description}: started" + (f", {total:g} to do" if total else ""),
                      highlight=False, markup=False)
        return task

    def update(self, task: int, *, advance: float | None = None, completed: float | None = None,
               total: float | None = None, info: str | None = None, **_) -> None:
        step = self._tasks[task]
        if total is not None:
            step.total = total
        if completed is not None:
            step.completed = completed
        if advance is not None:
            step.completed += advance
        if info is not None:
            step.info = info
        self._maybe_log(step)

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def _maybe_log(self, step: _Step) -> None:
        if not step.total:
            return
        tenth = int(self.steps * min(step.completed, step.total) / step.total)
        if tenth > step.logged and tenth > 0:
            step.logged = tenth
            self._line(step, final=step.completed >= step.total)

    def _line(self, step: _Step, final: bool) -> None:
        elapsed = time.perf_counter() - step.started
        if step.total:
            share = min(step.completed, step.total) / step.total
            left = elapsed * (1 - share) / share if share > 0 else float("nan")
            where = (f"{100 * share:.0f}% ({step.completed:g}/{step.total:g}), elapsed "
                     f"{clock(elapsed)}" + ("" if final else f", eta {clock(left)}"))
        else:
            where = f"{step.completed:g} done, elapsed {clock(elapsed)}"
        info = f" · {step.info}" if step.info else ""
        console.print(f"{step.description}: {where}{info}", highlight=False, markup=False)
        step.done = final
