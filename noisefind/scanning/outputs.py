"""The scan's outputs: ``suspects.csv``, ``summary.json``, ``top_suspects.png`` and the
terminal table of the top suspects (what the columns mean: docs/outputs.md).

Files are written atomically (:mod:`noisefind.base.files`), so a crash never leaves a half-written
CSV or JSON that looks complete.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from rich import box
from rich.table import Table

from noisefind.base.console import report
from noisefind.base.figures import agg_figure, save_figure
from noisefind.base.files import atomic_write, write_json
from noisefind.decide.count import LOOSE_SHARE, unexplained_misses

ORDER_COLUMNS = {"consensus": "consensus_score", "cutoff": "cutoff_score", "flip": "score"}
SUSPECT_COLUMNS = ["rank", "index", "path", "given_label", "suggested_label", "predicted_label",
                   "units_to_flip", "flipped", "score", "loss", "flip_cost", "flipped_to",
                   "runner_up_label", "reference_accuracy", "layers"]


def count_caution(summary: dict) -> str | None:
    """A sentence saying the count may be far off, where the held-out models miss more than
    :data:`~noisefind.decide.count.LOOSE_SHARE` of the given labels beyond the share counted
    wrong (``held_out_agreement``: a default scan's in ``cutoff``, ``noisefind rank``'s at the
    top); None where they do not, or where nothing was counted."""
    agreement = summary.get("held_out_agreement",
                            (summary.get("cutoff") or {}).get("held_out_agreement"))
    if agreement is None or summary.get("estimated_mislabeled") is None:
        return None
    missed = unexplained_misses(agreement, summary["estimated_mislabeled"] / summary["examples"])
    if missed <= LOOSE_SHARE:
        return None
    return (f"the held-out models miss another {missed:.0%} of the given labels beyond those "
            "counted wrong: with models this unsure, clean rows look wrong and the count may "
            "be far off, high or low")


def write_suspects(table: pd.DataFrame, out: Path) -> Path:
    """``suspects.csv``: one row per scanned example, most suspicious first (atomic)."""
    path = out / "suspects.csv"
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
    return path


def write_summary(summary: dict, out: Path) -> Path:
    """``summary.json`` (atomic)."""
    path = out / "summary.json"
    write_json(path, summary)
    return path


def write_pred_probs(pred_probs: np.ndarray, out: Path) -> Path:
    """``pred_probs.npy``: the fold models' (N, C) out-of-sample probabilities, float32, rows in
    ``training_set.npz``'s order (atomic)."""
    path = out / "pred_probs.npy"
    atomic_write(path, lambda tmp: np.save(tmp, np.asarray(pred_probs, dtype=np.float32)),
                 suffix=".npy")
    return path


def plot_top_suspects(table: pd.DataFrame, images: np.ndarray, out: Path, top: int = 32) -> Path:
    """``top_suspects.png``: a grid of the top suspects, each captioned "given X, likely Y"
    (and the units the flip search zeroed, where it ran).

    ``images`` holds the top rows' inputs, (n, C, H, W) in [0, 1], in the table's order.
    """
    n = min(top, len(images))
    cols = min(8, max(1, n))
    rows = max(1, math.ceil(n / cols))
    figure = agg_figure(1.6 * cols, 1.9 * rows, layout=None)
    axes = figure.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        image = np.transpose(images[i], (1, 2, 0))
        gray = image.shape[-1] == 1
        ax = axes.flat[i]
        ax.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=1)
        row = table.iloc[i]
        units = f" · {row['units_to_flip']} units" if "units_to_flip" in row else ""
        ax.set_title(f"#{row['rank']} given {row['given_label']}\n"
                     f"{_likely(row['suggested_label'])}{units}", fontsize=7)
    figure.tight_layout()
    return save_figure(figure, out / "top_suspects.png", dpi=110)


def _likely(suggested) -> str:
    return f"likely {suggested}" if isinstance(suggested, str) and suggested else "no suggestion"


def suspects_table(table: pd.DataFrame, top: int = 10, rank_by: str = "flip") -> Table:
    """The ``top`` suspects as a terminal table that fits 80 columns: rank, file name (or
    example index), given label, suggested label, and the score the rows are ordered by
    (``consensus_score``, ``cutoff_score`` or the flip ``score``, as ``rank_by`` says). The
    CSV has the rest."""
    order = ORDER_COLUMNS[rank_by]
    shown = Table(title=f"top {min(top, len(table))} of {len(table)} scanned examples",
                  box=box.SIMPLE_HEAD)
    has_files = "path" in table and table["path"].astype(bool).any()
    shown.add_column("rank", justify="right", no_wrap=True)
    shown.add_column("file" if has_files else "index", no_wrap=True, overflow="ellipsis",
                     max_width=28)
    shown.add_column("given", no_wrap=True, overflow="ellipsis", max_width=14)
    shown.add_column("suggested", no_wrap=True, overflow="ellipsis", max_width=14)
    shown.add_column(order.removesuffix("_score") if order != "score" else "score",
                     justify="right", no_wrap=True)
    for _, row in table.head(top).iterrows():
        where = Path(row["path"]).name if has_files else str(row["index"])
        shown.add_row(str(row["rank"]), where, str(row["given_label"]),
                      str(row["suggested_label"] or "-"), f"{row[order]:.3f}")
    return shown


def print_suspects(table: pd.DataFrame, top: int = 10, rank_by: str = "flip") -> None:
    """Print :func:`suspects_table` on stdout (the results console); nothing for ``top`` 0."""
    if top > 0:
        report.print(suspects_table(table, top, rank_by))
