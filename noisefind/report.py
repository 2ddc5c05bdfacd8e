"""Every file a user reads (CSV, JSON, PNG) and every terminal table, for the bench and the scan.

Files are written atomically (a temporary file, then a rename), so a crash never leaves a
half-written CSV or JSON that looks complete. Bench writers take the records
:func:`noisefind.bench.bench` returns (one row per detector, noise setting and seed) and know
nothing of how they were computed.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from rich import box
from rich.table import Table

from noisefind.console import console
from noisefind.train import TrainConfig, atomic_write, write_json

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


def write_bench_json(runs: pd.DataFrame, path: str | Path, settings: dict | None = None,
                     extra: dict | None = None) -> None:
    """``results.json``: ``{"runs": [...], "settings": {...}}``; NaN metrics become null.

    ``extra`` adds further lists of records under their own keys (``decisions``, ``retrain``).
    """
    records = [{key: _plain(value) for key, value in record.items()}
               for record in runs.to_dict("records")]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    more = {key: [{k: _plain(v) for k, v in record.items()} for record in value]
            for key, value in (extra or {}).items() if value}
    write_json(path, {"runs": records, **({"settings": settings} if settings else {}), **more})


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
        lines += [_settings_line(settings), "", f"Command: `{bench_command(settings)}`", ""]
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


def bench_command(settings: dict) -> str:
    """The ``noisefind bench`` command line that reproduces ``settings`` (results.json's)."""
    from noisefind.flip import FlipSettings

    train, flip = settings["train"], settings.get("flip", {})
    train_default, flip_default = asdict(TrainConfig()), FlipSettings().as_dict()
    seeds = settings["seeds"]
    parts = ["noisefind bench", settings["data"], "--noise", ",".join(settings["noises"]),
             "--seeds", str(len(seeds))]
    flags = {"--seed": (seeds[0], 0), "--folds": (settings["folds"], 5),
             "--limit": (settings["limit"], None)}
    flags.update({f"--{key.replace('_', '-')}": (train[key], train_default[key])
                  for key in ("arch", "width", "epochs", "lr", "batch_size")})
    flags.update({f"--{key.replace('_', '-')}": (flip.get(key), flip_default[key])
                  for key in ("max_units", "noise_copies", "reference_size")})
    for flag, (value, default) in flags.items():
        if value is not None and value != default:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if "detectors" in settings:
        parts += ["--detectors", ",".join(settings["detectors"])]
    return " ".join(parts)


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
    atomic_write(path, lambda tmp: scores.to_csv(tmp, index=False))


def write_bench_results(runs: pd.DataFrame, out: str | Path, settings: dict | None = None,
                        roc: dict | None = None, extra: dict | None = None) -> None:
    """Write ``results.json``, ``results.md`` and (given curves) ``roc.png`` into ``out``.

    ``extra`` (``decisions`` and ``retrain`` records) goes into both files.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_bench_json(runs, out / "results.json", settings, extra)
    sections = decisions_markdown((extra or {}).get("decisions", []),
                                  (extra or {}).get("retrain", []))
    (out / "results.md").write_text(bench_markdown(runs, settings)
                                    + (f"\n{sections}" if sections else ""))
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


# --------------------------------------------------------------------------------------------
# Localize (layer analyses) and memorization: figures and terminal tables


def _agg_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure on the Agg canvas: no pyplot, so no global backend switch for the caller.
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=120, format="png"))
    return path


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
    figure = _agg_figure(4.2 * cols, 2.9 * rows)
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
    return _save_figure(figure, path)


def plot_gradient_cosine(gradients: dict, path: str | Path) -> Path:
    """The paper's Figure 2: cosine between the clean and mislabeled gradients, per layer."""
    from matplotlib import colormaps

    figure = _agg_figure(10, 3.8)
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
    return _save_figure(figure, path)


def plot_rewind(result: dict, path: str | Path) -> Path:
    """The paper's Figure 3: training accuracy after rewinding one layer group to a checkpoint,
    as two heat maps (clean, mislabeled against their given labels), groups x epochs."""
    labels = _group_labels(result)
    epochs = result["epochs"]
    figure = _agg_figure(2.5 + 2 * (1.2 + 0.42 * len(epochs)), 1.4 + 0.42 * len(labels))
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
    return _save_figure(figure, path)


def plot_retrain(result: dict, path: str | Path) -> Path:
    """The paper's Figure 4: accuracy after one group is reset and retrained on clean examples."""
    labels = _group_labels(result)
    bars = (("train_clean", "clean (trained on)", "tab:blue"),
            ("train_noisy", "mislabeled, given label (still fit)", "tab:red"),
            ("train_noisy_true", "mislabeled, true label", "tab:green"))
    figure = _agg_figure(max(6, 1.1 * len(labels) + 2), 4.2)
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
    return _save_figure(figure, path)


def plot_memorization(table: pd.DataFrame, path: str | Path) -> Path:
    """Histogram of the memorization estimate, clean vs mislabeled when the truth is known."""
    figure = _agg_figure(6, 3.8)
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
    return _save_figure(figure, path)


def gradient_table(summary: list[dict]) -> Table:
    """Per layer group: mean clean and mislabeled gradient norms and their cosine."""
    table = Table(title="gradient per layer, mean over epochs (norm / sqrt(params))",
                  box=box.SIMPLE_HEAD)
    for name in ("layer", "params", "clean", "mislabeled", "ratio", "cosine (median)",
                 "epochs < -0.75"):
        table.add_column(name, justify="left" if name == "layer" else "right",
                         no_wrap=name == "layer")
    for k, row in enumerate(summary):
        table.add_row(f"{k + 1} {row['kind']} ({row['group']})", str(row["parameters"]),
                      f"{row['clean_norm']:.2e}", f"{row['noisy_norm']:.2e}",
                      f"{row['noisy_to_clean']:.2f}", f"{row['cosine_median']:+.2f}",
                      str(row["epochs_cosine_below_-0.75"]))
    return table


def rewind_table(result: dict) -> Table:
    """Clean / mislabeled training accuracy (%) per rewound group (rows) and epoch (columns)."""
    final = result["final"]
    table = Table(title=f"rewinding: train accuracy % clean/mislabeled (final model "
                        f"{100 * final['train_clean']:.0f}/{100 * final['train_noisy']:.0f})",
                  box=box.SIMPLE_HEAD)
    table.add_column("layer rewound", no_wrap=True)
    for epoch in result["epochs"]:
        table.add_column(f"ep {epoch}", justify="right")
    for g, label in enumerate(_group_labels(result)):
        table.add_row(label, *(f"{100 * c[g]:.0f}/{100 * n[g]:.0f}" for c, n in zip(
            result["clean_accuracy"], result["noisy_accuracy"], strict=True)))
    return table


def retrain_table(result: dict) -> Table:
    """Accuracy (%) after resetting and after retraining each group on clean examples."""
    table = Table(title="retraining one layer on clean examples, the rest frozen (accuracy %)",
                  box=box.SIMPLE_HEAD)
    columns = ["layer", "reset: clean", "reset: mislabeled", "clean", "mislabeled (given)",
               "mislabeled (true)"]
    has_test = "test" in result["final"]
    columns += ["test"] if has_test else []
    for name in columns:
        table.add_column(name, justify="left" if name == "layer" else "right",
                         no_wrap=name == "layer")
    for g, label in zip(result["groups"], _group_labels(result), strict=True):
        reset, after = result["records"][g]["reset"], result["records"][g]["retrained"]
        cells = [reset["train_clean"], reset["train_noisy"], after["train_clean"],
                 after["train_noisy"], after["train_noisy_true"]]
        cells += [after["test"]] if has_test else []
        table.add_row(label, *(f"{100 * v:.1f}" for v in cells))
    return table


def memorization_table(table: pd.DataFrame, top: int = 10) -> Table:
    """The ``top`` most memorized training examples of a Feldman-Zhang estimate."""
    ranked = table.sort_values("memorization", ascending=False, na_position="last",
                               kind="stable").head(top)
    shown = Table(title=f"most memorized {len(ranked)} of {len(table)} training examples",
                  box=box.SIMPLE_HEAD)
    columns = ["index", "given_label", "memorization", "accuracy_in", "accuracy_out"]
    if table["path"].astype(bool).any():
        columns.insert(1, "path")
    columns += ["true_label", "is_noisy"] if "is_noisy" in table else []
    for name in columns:
        shown.add_column(name.replace("_", " "), overflow="fold")
    for _, row in ranked.iterrows():
        shown.add_row(*[f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c])
                        for c in columns])
    return shown


# --------------------------------------------------------------------------------------------
# Bench: decisions (flag and estimated count) and retraining on the cleaned set

DECISION_COLUMNS = {"flagged": "flagged", "precision": "precision", "recall": "recall",
                    "f1": "F1", "estimated": "estimated", "mislabeled": "true",
                    "count_error": "count error", "seconds": "seconds"}
RETRAIN_COLUMNS = {"examples": "examples", "dropped": "dropped",
                   "test_accuracy": "test accuracy"}


def _mean_table(records: list[dict], key: str, columns: dict[str, str]) -> pd.DataFrame:
    """Mean ± std over seeds of ``columns`` per noise setting and ``key``, formatted."""
    frame = pd.DataFrame(records)
    rows = []
    for (noise, name), group in frame.groupby(["noise", key], sort=False):
        row = {"noise": noise, key: name, "seeds": len(group)}
        for column in columns:
            values = pd.to_numeric(group[column], errors="coerce").astype(float)
            mean = values.mean()
            std = values.std(ddof=1) if len(group) > 1 else math.nan
            digits = 1 if column in ("flagged", "estimated", "mislabeled", "seconds",
                                     "examples", "dropped") else 3
            if digits == 1 and float(mean).is_integer() and not std > 0:  # a count
                digits = 0
            spread = "" if math.isnan(std) or std == 0 else f" ± {std:.{digits}f}"
            row[column] = "n/a" if math.isnan(mean) else f"{mean:.{digits}f}{spread}"
        rows.append(row)
    return pd.DataFrame(rows)


def decisions_markdown(decisions: list[dict], retrain: list[dict]) -> str:
    """Markdown sections for the flag's quality, the estimated count and the retraining."""
    lines = []
    if decisions:
        table = _mean_table(decisions, "method", DECISION_COLUMNS)
        lines += ["## Decisions: which rows to flag, how many are mislabeled", "",
                  "`flip_cutoff`: the calibrated cutoff on the flip search and training "
                  "dynamics (canaries in a replica model, noisefind.cutoff); `noisefind`: the "
                  "same canaries with the out-of-sample evidence added (the scan's default); "
                  "`cleanlab`: `find_label_issues` on the same K-fold "
                  "probabilities as `confident_learning`, its estimate `num_label_issues` "
                  "(scaled to the rows scored). `count error` = (estimated - true) / true.", "",
                  "| noise | method | " + " | ".join(DECISION_COLUMNS.values()) + " |",
                  "| --- | --- | " + " | ".join("---:" for _ in DECISION_COLUMNS) + " |"]
        lines += [f"| {row['noise']} | {row['method']} | "
                  + " | ".join(row[c] for c in DECISION_COLUMNS) + " |"
                  for _, row in table.iterrows()]
        lines.append("")
    if retrain:
        table = _mean_table(retrain, "training_set", RETRAIN_COLUMNS)
        lines += ["## Retraining: test accuracy after cleaning", "",
                  "The same recipe trained on the noisy labels, on each cleaned set (flagged "
                  "rows dropped, written and read back as `noisefind export --drop` does) and "
                  "on the true labels; tested on a held-out split with clean labels.", "",
                  "| noise | training set | " + " | ".join(RETRAIN_COLUMNS.values()) + " |",
                  "| --- | --- | " + " | ".join("---:" for _ in RETRAIN_COLUMNS) + " |"]
        lines += [f"| {row['noise']} | {row['training_set']} | "
                  + " | ".join(row[c] for c in RETRAIN_COLUMNS) + " |"
                  for _, row in table.iterrows()]
        lines.append("")
    return "\n".join(lines)


def decisions_table(decisions: list[dict]) -> Table:
    """A rich table of the decisions: the flag's quality and the estimated count."""
    table = Table(title="decisions (flag and estimated count)", box=box.SIMPLE_HEAD)
    short = {"precision": "prec.", "estimated": "est.", "count_error": "count err."}
    shown = {c: short.get(c, t) for c, t in DECISION_COLUMNS.items() if c != "seconds"}
    table.add_column("method", no_wrap=True)
    for title in shown.values():
        table.add_column(title, justify="right")
    for noise, part in _mean_table(decisions, "method", shown).groupby("noise", sort=False):
        table.add_row(f"[bold]{noise}[/]")
        for _, row in part.iterrows():
            table.add_row(f"  {row['method']}", *[row[c] for c in shown])
    return table


def cleaned_retrain_table(retrain: list[dict]) -> Table:
    """A rich table of the bench's test accuracy after retraining on each training set."""
    table = Table(title="retraining (clean test split)", box=box.SIMPLE_HEAD)
    table.add_column("training set", no_wrap=True)
    for title in RETRAIN_COLUMNS.values():
        table.add_column(title, justify="right")
    for noise, part in _mean_table(retrain, "training_set", RETRAIN_COLUMNS).groupby(
            "noise", sort=False):
        table.add_row(f"[bold]{noise}[/]")
        for _, row in part.iterrows():
            table.add_row(f"  {row['training_set']}", *[row[c] for c in RETRAIN_COLUMNS])
    return table
