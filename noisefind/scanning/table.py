"""The suspects table: search results joined with labels, ranked, summarised."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import torch

from noisefind.data.labeled import LabeledData
from noisefind.decide.cutoff import Cutoff
from noisefind.decide.suggest import suggest_labels
from noisefind.scanning.outputs import (
    ORDER_COLUMNS,
    SUSPECT_COLUMNS,
)
from noisefind.signals.flip import FlipSettings
from noisefind.training.runs import Run


def with_out_of_sample(table: pd.DataFrame, probabilities: np.ndarray,
                       data: LabeledData) -> pd.DataFrame:
    """``table`` with ``oos_confidence`` (the out-of-sample probability of the given label),
    ``oos_label`` (the out-of-sample models' likeliest class other than the given label) and
    ``oos_label_probability`` (its probability) after ``loss``, and ``suggested_label``
    redone with it (:func:`noisefind.decide.suggest.suggest_labels`)."""
    rows = _positions(data, table["index"]).numpy()
    given = data.y.numpy()[rows]
    classes = np.array(data.classes, dtype=object)
    others = np.array(probabilities[rows], dtype=np.float64)
    others[np.arange(len(rows)), given] = -np.inf
    table = table.copy()
    at = table.columns.get_loc("loss") + 1
    likeliest = others.argmax(1)
    table.insert(at, "oos_confidence", probabilities[rows, given])
    table.insert(at + 1, "oos_label", classes[likeliest])
    table.insert(at + 2, "oos_label_probability", others[np.arange(len(rows)), likeliest])
    table["suggested_label"] = suggest_labels(table)
    return table


def held_out_table(data: LabeledData, rows: np.ndarray,
                   probabilities: np.ndarray) -> pd.DataFrame:
    """The default scan's table before its order: per row of ``rows``, its labels, the fold
    models' held-out prediction (``predicted_label``) and the given label's held-out ``loss``,
    then :func:`with_out_of_sample`'s columns (and the suggestion they give)."""
    classes = np.array(data.classes, dtype=object)
    given = data.y.numpy()[rows]
    held_out = np.asarray(probabilities[rows], dtype=np.float64)
    table = pd.DataFrame({
        "index": data.index.numpy()[rows],
        "path": [data.paths[r] for r in rows] if data.paths is not None else [""] * len(rows),
        "given_label": classes[given],
        "suggested_label": "",
        "predicted_label": classes[held_out.argmax(1)],
        "loss": -np.log(np.clip(held_out[np.arange(len(rows)), given], 1e-12, None)),
    })
    if data.true_y is not None:
        table["is_noisy"] = (data.y != data.true_y).numpy()[rows]
        table["true_label"] = classes[data.true_y.numpy()[rows]]
    return with_out_of_sample(table, probabilities, data)


def suspects_table(results: pd.DataFrame, data: LabeledData, unit_layers: list[str],
                   runner_up: np.ndarray | None = None) -> pd.DataFrame:
    """Join search results with the data's labels and paths; rank by score, highest first.

    ``score = -flip_cost``: fewer units to flip (and, among equal counts, less of the last unit
    needed) means more suspicious. ``runner_up`` (class codes, one per row of ``results``) is
    the model's most likely class other than the given label; ``suggested_label`` comes from
    :func:`noisefind.decide.suggest.suggest_labels`.
    """
    rows = results["row"].to_numpy()
    classes = np.array(data.classes, dtype=object)
    table = pd.DataFrame({
        "index": results["index"].to_numpy(),
        "path": [data.paths[r] for r in rows] if data.paths is not None else [""] * len(rows),
        "given_label": classes[data.y.numpy()[rows]],
        "predicted_label": classes[results["predicted_label"].to_numpy()],
        "units_to_flip": results["units_to_flip"].to_numpy(),
        "flipped": results["flipped"].to_numpy(),
        "score": -results["flip_cost"].to_numpy(),
        "loss": results["loss"].to_numpy(),
        "flip_cost": results["flip_cost"].to_numpy(),
        "flipped_to": [classes[t] if t >= 0 else "" for t in results["flipped_to"]],
        "reference_accuracy": results["reference_accuracy"].to_numpy(),
        "layers": [_layer_summary(u, unit_layers) for u in results["units"]],
    })
    if runner_up is not None:
        table["runner_up_label"] = classes[runner_up]
    table.insert(table.columns.get_loc("given_label") + 1, "suggested_label",
                 suggest_labels(table))
    if data.true_y is not None:
        table["is_noisy"] = (data.y != data.true_y).numpy()[rows]
        table["true_label"] = classes[data.true_y.numpy()[rows]]
    table = rank_table(table, "flip")
    known = [c for c in SUSPECT_COLUMNS if c in table]
    return table[known + [c for c in table.columns if c not in SUSPECT_COLUMNS]]


def _positions(data: LabeledData, index) -> torch.Tensor:
    """Rows of ``data`` holding the given example indices."""
    where = {int(i): r for r, i in enumerate(data.index.tolist())}
    return torch.tensor([where[int(i)] for i in index], dtype=torch.int64)


def _layer_summary(units, unit_layers: list[str]) -> str:
    """How many zeroed units came from each layer, e.g. ``"layers.0:2 layers.3:1"``."""
    counts = Counter(unit_layers[u] for u in units)
    return " ".join(f"{layer}:{k}" for layer, k in counts.items())


def rank_table(table: pd.DataFrame, rank_by: str = "flip") -> pd.DataFrame:
    """``table`` sorted by the column ``ORDER_COLUMNS[rank_by]``, highest first, ``rank``
    renumbered.

    Ties (and missing values, last) keep the training-set order of ``index``.
    """
    table = table.sort_values([ORDER_COLUMNS[rank_by], "index"], ascending=[False, True],
                              kind="stable", na_position="last").reset_index(drop=True)
    if "rank" not in table:
        table.insert(0, "rank", 0)
    return table.assign(rank=np.arange(1, len(table) + 1))


def scan_summary(table: pd.DataFrame, data: LabeledData, run: Run | None, settings: FlipSettings,
                 limit: int | None, seconds: dict) -> dict:
    """Counts, settings, timings and, when the truth is known, AUROC/AUPRC of the orders.

    The flip search's figures (``flipped``, the units, its settings, ``auroc`` of its
    ``score``) only where it ran: a table without ``units_to_flip`` (the default scan's) keeps
    of the settings the seed alone."""
    searched = "units_to_flip" in table
    summary = {"data": data.name, "examples": len(data), "scanned": len(table)}
    if searched:
        summary["flipped"] = int(table["flipped"].sum())
        summary["median_units_to_flip"] = (float(table["units_to_flip"].median())
                                           if len(table) else None)
    summary.update({
        "settings": {**(settings.as_dict() if searched else {"seed": settings.seed}),
                     "limit": limit},
        "model": str(run.path) if run is not None and run.path else None,
        "noise": data.noise, "seconds": seconds, "skipped_files": data.skipped})
    if "is_noisy" in table and 0 < table["is_noisy"].sum() < len(table):
        from sklearn.metrics import average_precision_score, roc_auc_score

        noisy = table["is_noisy"].to_numpy()
        summary["mislabeled_scanned"] = int(noisy.sum())
        if searched:
            summary["auroc"] = float(roc_auc_score(noisy, table["score"]))
            summary["auprc"] = float(average_precision_score(noisy, table["score"]))
        for column in ("consensus_score", "cutoff_score"):
            if column in table and table[column].notna().all():
                summary[f"auroc_{column}"] = float(roc_auc_score(noisy, table[column]))
                summary[f"auprc_{column}"] = float(average_precision_score(noisy, table[column]))
        if searched:
            summary["median_units_to_flip_mislabeled"] = float(
                table.loc[noisy, "units_to_flip"].median())
            summary["median_units_to_flip_clean"] = float(
                table.loc[~noisy, "units_to_flip"].median())
        summary["suggested_label_accuracy_mislabeled"] = round(float(
            (table.loc[noisy, "suggested_label"] == table.loc[noisy, "true_label"]).mean()), 4)
    return summary


def mark_suspected(table: pd.DataFrame, cutoff: Cutoff, data: LabeledData) -> pd.DataFrame:
    """``table`` (a suspects table) with ``suspected`` after ``score`` (after
    ``predicted_label`` in a table without the flip search's ``score``) and, where the cutoff
    scored the rows, ``cutoff_score`` last."""
    index = data.index.numpy()[cutoff.rows]
    flagged = dict(zip(index.tolist(), cutoff.suspected.tolist(), strict=True))
    table = table.copy()
    after = "score" if "score" in table else "predicted_label"
    table.insert(table.columns.get_loc(after) + 1, "suspected",
                 table["index"].map(flagged).fillna(False).astype(bool))
    if np.isfinite(cutoff.cutoff_score).any():
        scores = dict(zip(index.tolist(), cutoff.cutoff_score.tolist(), strict=True))
        table["cutoff_score"] = table["index"].map(scores).astype(np.float64)
    return table


def with_order(table: pd.DataFrame, decision: Cutoff, data: LabeledData) -> pd.DataFrame:
    """``table`` with the default order's ``consensus_score`` and its signals' columns (those
    the table lacks), matched by example index."""
    scanned_index = data.index.numpy()[decision.rows].tolist()
    table = table.copy()
    for column, values in {"consensus_score": decision.order, **{
            name: values for name, values in decision.signals.items()
            if name not in table}}.items():
        table[column] = table["index"].map(dict(zip(scanned_index, values.tolist(),
                                                    strict=True)))
    return table
