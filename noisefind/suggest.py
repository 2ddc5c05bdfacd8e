"""What a suspect's label should be: the one place noisefind decides ``suggested_label``.

:func:`suggest_labels` reads only columns of a suspects table, so a new estimate (say an
out-of-sample prediction from cross-validated models) is one more column and one more line
here; ``suspects.csv``, the terminal table, ``top_suspects.png``, the review page and
``export --relabel`` all take the suggestion from this function.

Measured on digits with 10% symmetric noise (``noisefind scan digits --noise symmetric:0.1
--limit 400 --cutoff none``; docs/benchmarks.md), share of the mislabeled rows whose estimate is
the true label: ``flipped_to`` 0.864, the model's runner-up class 0.841, a nearest-neighbour
vote in the model's penultimate features 0.34 to 0.48 (the features memorised the wrong label
too). Where ``flipped_to`` and the runner-up agree (89% of the mislabeled rows) they are right
92% of the time; where they disagree ``flipped_to`` is right more often. Hence the order below.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

SUGGESTION_SOURCES = ("flipped_to", "predicted_label", "runner_up_label")


def suggest_labels(table: pd.DataFrame) -> pd.Series:
    """The label noisefind proposes for each row of a suspects table, as text.

    In order of preference, the first that names a label other than ``given_label``:

    1. ``flipped_to``: the class the prediction falls to when the flip search has zeroed the
       units that held the given label (empty when the search hit its cap);
    2. ``predicted_label``: the model's own prediction, when it already disagrees with the
       given label;
    3. ``runner_up_label``: the model's most likely class other than the given label.

    A row none of them offers another label for gets ``""``. Columns missing from ``table`` are
    skipped, so an older table without ``runner_up_label`` still gets a suggestion.
    """
    given = table["given_label"].astype(str).to_numpy()
    suggested = np.full(len(table), "", dtype=object)
    for column in SUGGESTION_SOURCES:
        if column not in table:
            continue
        values = table[column].fillna("").astype(str).to_numpy()
        usable = (suggested == "") & (values != "") & (values != given)
        suggested[usable] = values[usable]
    return pd.Series(suggested, index=table.index, name="suggested_label")


def runner_up_classes(model, x: torch.Tensor, index: torch.Tensor,
                      labels: torch.Tensor) -> np.ndarray:
    """Per example, the class code with the highest logit other than ``labels`` (eval mode,
    each training example through the dropout channels it was trained with)."""
    from noisefind.dropout import dropout_mode
    from noisefind.models import predict_logits

    with dropout_mode(model, "example"):
        logits = predict_logits(model, x, index).float()
    others = logits.scatter(1, labels.to(logits.device)[:, None], float("-inf"))
    return others.argmax(1).cpu().numpy()
