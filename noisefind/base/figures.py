"""Matplotlib figures drawn without pyplot, so noisefind never switches a caller's backend.

A bare :class:`matplotlib.figure.Figure` on the Agg canvas renders PNG files in any process
(a server with no display, a notebook with its own backend) and leaves pyplot's global state
alone. Matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path

from noisefind.base.files import atomic_write


def agg_figure(width: float, height: float, layout: str | None = "constrained"):
    """A new figure of ``width`` x ``height`` inches on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``figure`` as a PNG file (atomically)."""
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=dpi, format="png"))
    return path
