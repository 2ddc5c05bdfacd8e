"""Per-example signals read off a flip search and a training history."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from noisefind.data.labeled import LabeledData
from noisefind.decide.calibration import calibrated_margin
from noisefind.training.runs import History, Run

# rows, their given labels -> one value per row; see :func:`signals`
RowSignal = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------
# Signals and the decision


def signals(results: pd.DataFrame, history: History | None,
            out_of_sample: np.ndarray | None = None, labels: np.ndarray | None = None,
            out_of_sample_flip: RowSignal | None = None,
            thresholds: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The :data:`SIGNALS` a wrong label leaves, for the rows of a flip-search result.

    ``history`` gives the AUM and mean-training-loss columns; ``out_of_sample`` (N, C)
    probabilities of models that never saw the row, with ``labels`` the rows' given labels and
    ``thresholds`` the whole set's per-class thresholds, the out-of-sample class-calibrated
    margin against the given label (:func:`noisefind.decide.calibration.calibrated_margin`);
    ``out_of_sample_flip(rows, labels)``
    the ``oos_flip`` column. Each is left out when None.
    """
    rows = results["row"].to_numpy()
    cost = results["flip_cost"].to_numpy(dtype=np.float64)
    loss = results["loss"].to_numpy(dtype=np.float64)
    # Costs of already-misclassified examples lie in (-1, 0]; clip so log1p stays finite.
    columns = {"log_flip_cost": np.log1p(np.clip(cost, -0.99, None)),
               "log_loss": np.log(np.clip(loss, 1e-8, None))}
    if history is not None:
        columns["aum"] = history.margin[:, rows].astype(np.float64).mean(axis=0)
        mean_loss = history.loss[:, rows].astype(np.float64).mean(axis=0)
        columns["log_mean_loss"] = np.log(np.clip(mean_loss, 1e-8, None))
    if out_of_sample is not None:
        columns["oos_margin"] = calibrated_margin(out_of_sample, rows, np.asarray(labels),
                                                  thresholds)
    if out_of_sample_flip is not None:
        columns["oos_flip"] = out_of_sample_flip(rows, np.asarray(labels))
    return columns


def history_for(run: Run, data: LabeledData) -> History | None:
    """The run's history when its columns are exactly ``data``'s rows, else None."""
    history = run.history
    if history is None or history.margin.shape[1] != len(data):
        return None
    return history if np.array_equal(history.index, data.index.numpy()) else None
