"""Outputs of the layer analyses (``noisefind localize``) and of the memorization estimate:
the paper's Figures 1-4 as PNG files and their terminal tables.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from rich import box
from rich.table import Table

from noisefind.base.figures import agg_figure, save_figure


def _group_labels(result: dict) -> list[str]:
    return [f"{k + 1} {kind} ({group})"
            for k, (group, kind) in enumerate(zip(result["groups"], result["kinds"],
                                                  strict=True))]


def _series(table: list, g: int) -> np.ndarray:
    return np.array([np.nan if row[g] is None else row[g] for row in table], dtype=np.float64)


def plot_gradient_norms(gradients: dict, path: str | Path) -> Path:
    """The paper's Figure 1: per layer group and epoch, the gradient norm from clean and from
    mislabeled examples, each over sqrt(parameters): epoch-summed (solid) and per step (dashed).
    """
    labels = _group_labels(gradients)
    cols = min(3, len(labels))
    rows = math.ceil(len(labels) / cols)
    figure = agg_figure(4.2 * cols, 2.9 * rows)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    epochs = gradients["epochs"]
    for g, (ax, label) in enumerate(zip(axes, labels, strict=False)):
        for key, name, color in (("clean", "clean", "tab:blue"),
                                 ("noisy", "mislabeled", "tab:red")):
            ax.plot(epochs, _series(gradients[f"{key}_norm"], g), color=color,
                    label=f"{name} (epoch sum)")
            ax.plot(epochs, _series(gradients[f"step_{key}_norm"], g), color=color, ls="--",
                    lw=0.9, alpha=0.7, label=f"{name} (per step)")
        ax.set(title=label, xlabel="epoch", ylabel="grad norm / sqrt(params)")
        ax.title.set_fontsize(9)
    for ax in axes[len(labels):]:
        ax.axis("off")
    figure.axes[0].legend(fontsize=7)
    examples = gradients["examples"]
    figure.suptitle(f"gradient norm per layer: {examples['clean']} clean vs "
                    f"{examples['mislabeled']} mislabeled examples", fontsize=10)
    return save_figure(figure, path)


def plot_gradient_cosine(gradients: dict, path: str | Path) -> Path:
    """The paper's Figure 2: cosine between the clean and mislabeled gradients, per layer."""
    from matplotlib import colormaps

    figure = agg_figure(10, 3.8)
    axes = figure.subplots(1, 2)
    labels = _group_labels(gradients)
    colors = colormaps["viridis"](np.linspace(0, 0.9, len(labels)))
    for ax, key, title in ((axes[0], "cosine", "epoch-summed gradients (paper)"),
                           (axes[1], "step_cosine", "single steps, averaged over the epoch")):
        for g, label in enumerate(labels):
            ax.plot(gradients["epochs"], _series(gradients[key], g), color=colors[g],
                    label=label)
        ax.axhline(0, color="grey", lw=0.8)
        ax.axhline(-0.75, color="grey", lw=0.8, ls="--")
        ax.set(title=title, xlabel="epoch", ylabel="cosine(clean, mislabeled)", ylim=(-1, 1))
    axes[1].legend(fontsize=7, loc="upper right")
    return save_figure(figure, path)


def plot_rewind(result: dict, path: str | Path) -> Path:
    """The paper's Figure 3: training accuracy after rewinding one layer group to a checkpoint,
    as two heat maps (clean, mislabeled against their given labels), groups x epochs."""
    labels = _group_labels(result)
    epochs = result["epochs"]
    figure = agg_figure(2.5 + 2 * (1.2 + 0.42 * len(epochs)), 1.4 + 0.42 * len(labels))
    axes = figure.subplots(1, 2)
    figure.suptitle("training accuracy (%) after rewinding one layer group", fontsize=10)
    for ax, key, title in ((axes[0], "clean_accuracy", "clean examples"),
                           (axes[1], "noisy_accuracy", "mislabeled (given label)")):
        values = 100 * np.array(result[key], dtype=np.float64).T  # groups x epochs
        image = ax.imshow(values, vmin=0, vmax=100, cmap="magma", aspect="auto")
        ax.set(xticks=range(len(epochs)), xticklabels=epochs, yticks=range(len(labels)),
               xlabel="rewound to epoch", title=title)
        ax.set_yticklabels(labels if ax is axes[0] else [""] * len(labels), fontsize=8)
        for (g, e), v in np.ndenumerate(values):
            ax.text(e, g, f"{v:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if v < 60 else "black")
    figure.colorbar(image, ax=axes, shrink=0.8)
    return save_figure(figure, path)


def plot_retrain(result: dict, path: str | Path) -> Path:
    """The paper's Figure 4: accuracy after one group is reset and retrained on clean examples."""
    labels = _group_labels(result)
    bars = (("train_clean", "clean (trained on)", "tab:blue"),
            ("train_noisy", "mislabeled, given label (still fit)", "tab:red"),
            ("train_noisy_true", "mislabeled, true label", "tab:green"))
    figure = agg_figure(max(6, 1.1 * len(labels) + 2), 4.2)
    ax = figure.subplots()
    x = np.arange(len(labels))
    for k, (key, name, color) in enumerate(bars):
        values = [100 * result["records"][g]["retrained"].get(key, np.nan)
                  for g in result["groups"]]
        ax.bar(x + (k - 1) * 0.27, values, width=0.27, color=color, label=name)
    ax.axhline(100 * result["final"]["train_noisy"], color="tab:red", ls="--", lw=1,
               label="mislabeled fit by the final model")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="accuracy (%)", ylim=(0, 135), yticks=range(0, 101, 20),
           title="one layer group reset and retrained on clean examples, the rest frozen")
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    return save_figure(figure, path)


def plot_memorization(table: pd.DataFrame, path: str | Path) -> Path:
    """Histogram of the memorization estimate, clean vs mislabeled when the truth is known."""
    figure = agg_figure(6, 3.8)
    ax = figure.subplots()
    values = table["memorization"].to_numpy(dtype=np.float64)
    bins = np.linspace(-1, 1, 41)
    if "is_noisy" in table:
        noisy = table["is_noisy"].to_numpy(dtype=bool)
        ax.hist(values[~noisy & ~np.isnan(values)], bins, alpha=0.7, label="clean",
                color="tab:blue", density=True)
        ax.hist(values[noisy & ~np.isnan(values)], bins, alpha=0.7, label="mislabeled",
                color="tab:red", density=True)
        ax.legend()
    else:
        ax.hist(values[~np.isnan(values)], bins, color="tab:blue")
    ax.set(xlabel="memorization = acc(trained on it) - acc(not trained on it)",
           ylabel="density", title="Feldman-Zhang memorization estimate")
    return save_figure(figure, path)


def _numbers_table(title: str, first: str, columns: list[str], caption: str | None = None):
    """A terminal table that fits 80 columns: a label column, then right-aligned numbers."""
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column(first, no_wrap=True)
    for name in columns:
        table.add_column(name, justify="right", min_width=min(7, len(name)))
    return table


def _short_labels(result: dict) -> list[str]:
    """``k group`` per layer group, for terminal tables (the figures say the kind too)."""
    return [f"{k + 1} {group}" for k, group in enumerate(result["groups"])]


def gradient_table(summary: list[dict]) -> Table:
    """Per layer group: mean clean and mislabeled gradient norms and their cosine."""
    table = _numbers_table("gradient per layer, mean over epochs (norm / sqrt(params))",
                           "layer", ["clean", "mislabeled", "ratio", "cosine median",
                                     "epochs < -0.75"])
    for k, row in enumerate(summary):
        table.add_row(f"{k + 1} {row['kind']} ({row['group']})", f"{row['clean_norm']:.2e}",
                      f"{row['noisy_norm']:.2e}", f"{row['noisy_to_clean']:.2f}",
                      f"{row['cosine_median']:+.2f}", str(row["epochs_cosine_below_-0.75"]))
    return table


def rewind_table(result: dict) -> Table:
    """Clean / mislabeled training accuracy (%) per checkpoint epoch (rows) and rewound group
    (columns)."""
    final = result["final"]
    labels = _short_labels(result)
    table = _numbers_table(f"rewinding one layer: train accuracy % clean/mislabeled (final "
                           f"model {100 * final['train_clean']:.0f}/"
                           f"{100 * final['train_noisy']:.0f})", "epoch", labels)
    for epoch, clean, noisy in zip(result["epochs"], result["clean_accuracy"],
                                   result["noisy_accuracy"], strict=True):
        table.add_row(str(epoch), *(f"{100 * c:.0f}/{100 * n:.0f}"
                                    for c, n in zip(clean, noisy, strict=True)))
    return table


def retrain_table(result: dict) -> Table:
    """Accuracy (%) after resetting and after retraining each group on clean examples."""
    columns = ["reset: clean", "reset: mislab.", "clean", "mislab. (given)", "mislab. (true)"]
    has_test = "test" in result["final"]
    table = _numbers_table("retraining one layer on clean examples, the rest frozen "
                           "(accuracy %)", "layer", columns + (["test"] if has_test else []))
    for g, label in zip(result["groups"], _short_labels(result), strict=True):
        reset, after = result["records"][g]["reset"], result["records"][g]["retrained"]
        cells = [reset["train_clean"], reset["train_noisy"], after["train_clean"],
                 after["train_noisy"], after["train_noisy_true"]]
        cells += [after["test"]] if has_test else []
        table.add_row(label, *(f"{100 * v:.1f}" for v in cells))
    return table


def memorization_table(table: pd.DataFrame, top: int = 10) -> Table:
    """The ``top`` most memorized training examples of a Feldman-Zhang estimate (80 columns:
    the file's name, not its path; the CSV has the rest)."""
    ranked = table.sort_values("memorization", ascending=False, na_position="last",
                               kind="stable").head(top)
    shown = Table(title=f"most memorized {len(ranked)} of {len(table)} training examples",
                  box=box.SIMPLE_HEAD, show_edge=False)
    has_files = table["path"].astype(bool).any()
    headers = {"index": "index", "path": "file", "given_label": "given",
               "memorization": "memorized", "accuracy_in": "acc. in",
               "accuracy_out": "acc. out", "true_label": "true"}  # acc. with / without it
    columns = ["index", *(["path"] if has_files else []), "given_label", "memorization",
               "accuracy_in", "accuracy_out", *(["true_label"] if "is_noisy" in table else [])]
    for name in columns:
        text = name in ("path", "given_label", "true_label")
        shown.add_column(headers[name], justify="left" if text else "right", no_wrap=True,
                         overflow="ellipsis", max_width=16 if name == "path" else 9 if text
                         else None, min_width=None if text else len(headers[name]))
    for _, row in ranked.iterrows():
        shown.add_row(*[Path(row[c]).name if c == "path" else
                        f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c])
                        for c in columns])
    return shown
