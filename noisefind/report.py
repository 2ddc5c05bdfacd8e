"""Every file a user reads (CSV, JSON, PNG) and every terminal table, for the bench and the scan.

Files are written atomically (a temporary file, then a rename), so a crash never leaves a
half-written CSV or JSON that looks complete. Bench writers take the records :func:`noisefind.bench.bench` returns (one row per detector,
noise setting and seed) and know nothing of how they were computed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from rich import box
from rich.table import Table

from noisefind.console import console
from noisefind.train import atomic_write, write_json

BENCH_METRICS = ("auroc", "auprc", "tpr_at_5fpr", "precision_at_k")
BENCH_COLUMNS = {"auroc": "AUROC", "auprc": "AUPRC", "tpr_at_5fpr": "TPR@5%FPR",
                 "precision_at_k": "P@k", "seconds": "seconds"}
LOWER_IS_BETTER = {"seconds"}


# --------------------------------------------------------------------------------------------
# Bench: summaries


def bench_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation (over seeds) and seed count per noise setting and detector.

    Columns ``noise, detector, seeds`` and ``<metric>_mean``, ``<metric>_std`` for every metric
    and ``seconds``; rows keep the order in which noise settings and detectors first appear.
    """
    rows = []
    for (noise, detector), group in runs.groupby(["noise", "detector"], sort=False):
        row = {"noise": noise, "detector": detector, "seeds": len(group)}
        for column in BENCH_COLUMNS:
            values = group[column].astype(float)
            row[f"{column}_mean"] = values.mean()
            row[f"{column}_std"] = values.std(ddof=1) if len(group) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(mean: float, std: float, column: str) -> str:
    if math.isnan(mean):
        return "n/a"
    digits = 1 if column == "seconds" else 3
    text = f"{mean:.{digits}f}"
    return text if math.isnan(std) else f"{text} ± {std:.{digits}f}"


def _best_mask(summary: pd.DataFrame, column: str) -> np.ndarray:
    # Compare at the printed precision, so equal-looking cells are all bold or none.
    digits = 1 if column == "seconds" else 3
    means = summary[f"{column}_mean"].round(digits)
    if means.isna().all():
        return np.zeros(len(summary), dtype=bool)
    best = means.min() if column in LOWER_IS_BETTER else means.max()
    return (means == best).to_numpy()


def _noise_sections(runs: pd.DataFrame):
    """Per noise setting: its summary, formatted cells and which cells are best."""
    summary = bench_summary(runs)
    for noise, part in summary.groupby("noise", sort=False):
        part = part.reset_index(drop=True)
        best = {column: _best_mask(part, column) for column in BENCH_COLUMNS}
        cells = [[_cell(row[f"{c}_mean"], row[f"{c}_std"], c) for c in BENCH_COLUMNS]
                 for _, row in part.iterrows()]
        yield noise, part, cells, best


# --------------------------------------------------------------------------------------------
# Bench: files


def write_bench_json(runs: pd.DataFrame, path: str | Path, settings: dict | None = None) -> None:
    """``results.json``: ``{"runs": [...], "settings": {...}}``; NaN metrics become null."""
    records = [{key: _plain(value) for key, value in record.items()}
               for record in runs.to_dict("records")]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"runs": records, **({"settings": settings} if settings else {})})


def _plain(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def bench_markdown(runs: pd.DataFrame, settings: dict | None = None) -> str:
    """Markdown tables, one per noise setting, of mean ± std over seeds; best per column bold."""
    lines = [f"# noisefind bench: {settings['data']}" if settings else "# noisefind bench", ""]
    if settings:
        lines += [_settings_line(settings), ""]
    header = "| detector | " + " | ".join(BENCH_COLUMNS.values()) + " |"
    align = "| --- | " + " | ".join("---:" for _ in BENCH_COLUMNS) + " |"
    for noise, part, cells, best in _noise_sections(runs):
        group = runs[runs["noise"] == noise]
        lines += [f"## {noise}", "",
                  f"{part['seeds'].max()} seed(s), {group['examples'].mean():.0f} rows scored, "
                  f"{group['mislabeled'].mean():.1f} mislabeled on average.", "",
                  header, align]
        for i, detector in enumerate(part["detector"]):
            shown = [f"**{text}**" if best[c][i] and text != "n/a" else text
                     for c, text in zip(BENCH_COLUMNS, cells[i], strict=True)]
            lines.append(f"| {detector} | " + " | ".join(shown) + " |")
        lines.append("")
    lines += ["Mean ± standard deviation over seeds; the best mean per column in bold. "
              "Mislabeled examples are the positives; P@k is precision among the k highest "
              "scores, k the true number of mislabeled rows. `seconds` is what a detector costs "
              "run alone: its own time plus the training it needs (the model for most; the "
              "cross-validation models for confident_learning) and any shared search it uses.",
              ""]
    return "\n".join(lines)


def _settings_line(settings: dict) -> str:
    train, machine = settings["train"], settings["machine"]
    scored = f"{settings['limit']} rows scored" if settings["limit"] else "all rows scored"
    gpu = f" ({machine['gpu']})" if machine.get("gpu") else ""
    return (f"{settings['examples']} training examples; seeds {settings['seeds']}; "
            f"{settings['folds']}-fold cross-validation; {scored}; arch {train['arch']}, "
            f"width {train['width']:g}, {train['epochs']} epochs. Machine: {machine['device']}"
            f"{gpu}, {machine['cpus']} CPUs, torch {machine['torch']}.")


def plot_bench_roc(roc: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
                   path: str | Path) -> None:
    """``roc.png``: one panel per noise setting, one mean ROC curve per detector."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure on the Agg canvas: no pyplot, so no global backend switch for the caller.
    panels = max(1, len(roc))
    figure = Figure(figsize=(5 * panels, 4.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    for ax, (noise, curves) in zip(axes, roc.items(), strict=False):
        for name, (fpr, tpr) in curves.items():
            area = float(np.trapezoid(tpr, fpr))
            ax.plot(fpr, tpr, lw=2 if "flip" in name else 1.2,
                    label=f"{name} ({area:.3f})")
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
        ax.axvline(0.05, ls="--", color="grey", lw=0.8)
        ax.set(title=noise, xlabel="false-positive rate (clean flagged)",
               ylabel="true-positive rate (mislabeled found)", xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(loc="lower right", fontsize=8, title="detector (area under mean ROC)",
                  title_fontsize=8)
    figure.savefig(path, dpi=120)


def write_bench_scores(scores: pd.DataFrame, path: str | Path) -> None:
    """Per-example scores of one noise setting and seed, with the truth, as CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scores.to_csv(path, index=False)


def write_bench_results(runs: pd.DataFrame, out: str | Path, settings: dict | None = None,
                        roc: dict | None = None) -> None:
    """Write ``results.json``, ``results.md`` and (given curves) ``roc.png`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_bench_json(runs, out / "results.json", settings)
    (out / "results.md").write_text(bench_markdown(runs, settings))
    if roc:
        plot_bench_roc(roc, out / "roc.png")


# --------------------------------------------------------------------------------------------
# Bench: terminal


def bench_table(runs: pd.DataFrame) -> Table:
    """A rich table of mean ± std over seeds per noise setting and detector, best in bold."""
    table = Table(title="noisefind bench (mislabeled = positive)", box=box.SIMPLE_HEAD)
    table.add_column("detector", no_wrap=True)
    for title in BENCH_COLUMNS.values():
        table.add_column(title, justify="right")
    for noise, part, cells, best in _noise_sections(runs):
        table.add_row(f"[bold]{noise}[/]")
        for i, detector in enumerate(part["detector"]):
            shown = [f"[bold green]{text}[/]" if best[c][i] and text != "n/a" else text
                     for c, text in zip(BENCH_COLUMNS, cells[i], strict=True)]
            table.add_row(f"  {detector}", *shown, end_section=i == len(part) - 1)
    return table


# --------------------------------------------------------------------------------------------
# Scan

SUSPECT_COLUMNS = ["rank", "index", "path", "given_label", "predicted_label", "units_to_flip",
                   "flipped", "score", "loss", "flip_cost", "flipped_to", "reference_accuracy",
                   "layers"]


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


def plot_top_suspects(table: pd.DataFrame, images: np.ndarray, out: Path, top: int = 32) -> Path:
    """``top_suspects.png``: a grid of the top suspects captioned with given/predicted label.

    ``images`` holds the top rows' inputs, (n, C, H, W) in [0, 1], in the table's order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(top, len(images))
    cols = min(8, max(1, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        image = np.transpose(images[i], (1, 2, 0))
        gray = image.shape[-1] == 1
        ax = axes.flat[i]
        ax.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=1)
        row = table.iloc[i]
        ax.set_title(f"#{row['rank']} given {row['given_label']}\npred {row['predicted_label']}"
                     f" · {row['units_to_flip']} units", fontsize=7)
    fig.tight_layout()
    path = out / "top_suspects.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def print_suspects(table: pd.DataFrame, top: int = 10) -> None:
    """A rich table of the ``top`` suspects."""
    shown = Table(title=f"top {min(top, len(table))} of {len(table)} scanned examples")
    columns = ["rank", "index", "given_label", "predicted_label", "units_to_flip", "score"]
    if table["path"].astype(bool).any():
        columns.insert(2, "path")
    if "is_noisy" in table:
        columns.append("is_noisy")
    for name in columns:
        shown.add_column(name.replace("_", " "), overflow="fold")
    for _, row in table.head(top).iterrows():
        shown.add_row(*[f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c])
                        for c in columns])
    console.print(shown)
