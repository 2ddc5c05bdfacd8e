"""The bench's outputs: ``results.json``, ``results.md``, ``roc.png``, ``scores/`` and its
terminal tables.

Writers take the records :func:`noisefind.bench.runner.bench` returns (one row per detector, noise
setting and seed) and know nothing of how they were computed. Files are written atomically
(:mod:`noisefind.base.files`).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from rich import box
from rich.table import Table

from noisefind.base.figures import agg_figure, save_figure
from noisefind.base.files import atomic_write, write_json
from noisefind.training.config import TrainConfig

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


def _noise_sections(runs: pd.DataFrame, spread: bool = True):
    """Per noise setting: its summary, formatted cells (``spread``: with ± std) and which
    cells are best."""
    summary = bench_summary(runs)
    for noise, part in summary.groupby("noise", sort=False):
        part = part.reset_index(drop=True)
        best = {column: _best_mask(part, column) for column in BENCH_COLUMNS}
        cells = [[_cell(row[f"{c}_mean"], row[f"{c}_std"] if spread else math.nan, c)
                  for c in BENCH_COLUMNS] for _, row in part.iterrows()]
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
    from noisefind.signals.flip import FlipSettings

    train, flip = settings["train"], settings.get("flip", {})
    train_default, flip_default = asdict(TrainConfig()), FlipSettings().as_dict()
    seeds = settings["seeds"]
    parts = ["noisefind bench", settings["data"], "--noise", ",".join(settings["noises"]),
             "--seeds", str(len(seeds))]
    flags = {"--seed": (seeds[0], 0), "--folds": (settings["folds"], 5),
             "--limit": (settings["limit"], None)}
    flags.update({f"--{key.replace('_', '-')}": (train.get(key), train_default[key])
                  for key in ("arch", "width", "epochs", "lr", "batch_size", "fold_recipe",
                              "fold_epochs")})
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
    panels = max(1, len(roc))
    figure = agg_figure(5 * panels, 4.6)
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
    save_figure(figure, path)


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
    """A rich table of the mean over seeds per noise setting and detector, best in bold; it
    fits 80 columns (the standard deviations are in ``results.md``)."""
    table = Table(title="noisefind bench (mislabeled = positive)", box=box.SIMPLE_HEAD,
                  caption="mean over seeds; ± std in results.md")
    table.add_column("detector", no_wrap=True)
    for title in BENCH_COLUMNS.values():
        table.add_column(title, justify="right", no_wrap=True)
    for noise, part, cells, best in _noise_sections(runs, spread=False):
        table.add_row(f"[bold]{noise}[/]")
        for i, detector in enumerate(part["detector"]):
            shown = [f"[bold green]{text}[/]" if best[c][i] and text != "n/a" else text
                     for c, text in zip(BENCH_COLUMNS, cells[i], strict=True)]
            table.add_row(f"  {detector}", *shown, end_section=i == len(part) - 1)
    return table


# --------------------------------------------------------------------------------------------
# Bench: decisions (flag and estimated count) and retraining on the cleaned set

DECISION_COLUMNS = {"flagged": "flagged", "precision": "precision", "recall": "recall",
                    "f1": "F1", "estimated": "estimated", "mislabeled": "true",
                    "count_error": "count error", "seconds": "seconds"}
RETRAIN_COLUMNS = {"examples": "examples", "dropped": "dropped",
                   "test_accuracy": "test accuracy"}


def _mean_table(records: list[dict], key: str, columns: dict[str, str],
                spread: bool = True) -> pd.DataFrame:
    """Mean (``spread``: ± std) over seeds of ``columns`` per noise setting and ``key``,
    formatted."""
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
            plus = "" if math.isnan(std) or std == 0 or not spread else f" ± {std:.{digits}f}"
            row[column] = "n/a" if math.isnan(mean) else f"{mean:.{digits}f}{plus}"
        rows.append(row)
    return pd.DataFrame(rows)


def decisions_markdown(decisions: list[dict], retrain: list[dict]) -> str:
    """Markdown sections for the flag's quality, the estimated count and the retraining."""
    lines = []
    if decisions:
        lines += _markdown_section(
            "## Decisions: which rows to flag, how many are mislabeled",
            "`flip_cutoff`: the calibrated cutoff on the flip search and training dynamics "
            "(canaries in a replica model, noisefind.cutoff); `noisefind` (the scan's "
            "default): the same canaries with the out-of-sample evidence added estimate the "
            "count, and that many rows are flagged from the top of the consensus order; "
            "`cleanlab`: `find_label_issues` on the same K-fold "
            "probabilities as `confident_learning`, its estimate `num_label_issues` "
            "(scaled to the rows scored). `count error` = (estimated - true) / true.",
            decisions, ("method", "method"), DECISION_COLUMNS)
    if retrain:
        lines += _markdown_section(
            "## Retraining: test accuracy after cleaning",
            "The same recipe trained on the noisy labels, on each cleaned set (flagged "
            "rows dropped, written and read back as `noisefind export --drop` does) and "
            "on the true labels; tested on a held-out split with clean labels.",
            retrain, ("training_set", "training set"), RETRAIN_COLUMNS)
    return "\n".join(lines)


def _markdown_section(title: str, note: str, records: list[dict], key: tuple[str, str],
                      columns: dict[str, str]) -> list[str]:
    """One titled Markdown table of mean ± std per noise setting and ``key`` (column, title)."""
    table = _mean_table(records, key[0], columns)
    lines = [title, "", note, "",
             f"| noise | {key[1]} | " + " | ".join(columns.values()) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in columns) + " |"]
    lines += [f"| {row['noise']} | {row[key[0]]} | " + " | ".join(row[c] for c in columns)
              + " |" for _, row in table.iterrows()]
    return [*lines, ""]


def decisions_table(decisions: list[dict]) -> Table:
    """A rich table of the decisions: the flag's quality and the estimated count."""
    table = Table(title="decisions (flag and estimated count)", box=box.SIMPLE_HEAD,
                  caption="mean over seeds; ± std in results.md")
    short = {"precision": "prec.", "estimated": "est.", "count_error": "count err."}
    shown = {c: short.get(c, t) for c, t in DECISION_COLUMNS.items() if c != "seconds"}
    table.add_column("method", no_wrap=True)
    for title in shown.values():
        table.add_column(title, justify="right")
    for noise, part in _mean_table(decisions, "method", shown, spread=False).groupby(
            "noise", sort=False):
        table.add_row(f"[bold]{noise}[/]")
        for _, row in part.iterrows():
            table.add_row(f"  {row['method']}", *[row[c] for c in shown])
    return table


def cleaned_retrain_table(retrain: list[dict]) -> Table:
    """A rich table of the bench's test accuracy after retraining on each training set."""
    table = Table(title="retraining (clean test split)", box=box.SIMPLE_HEAD,
                  caption="mean over seeds; ± std in results.md")
    table.add_column("training set", no_wrap=True)
    for title in RETRAIN_COLUMNS.values():
        table.add_column(title, justify="right")
    for noise, part in _mean_table(retrain, "training_set", RETRAIN_COLUMNS,
                                   spread=False).groupby("noise", sort=False):
        table.add_row(f"[bold]{noise}[/]")
        for _, row in part.iterrows():
            table.add_row(f"  {row['training_set']}", *[row[c] for c in RETRAIN_COLUMNS])
    return table
