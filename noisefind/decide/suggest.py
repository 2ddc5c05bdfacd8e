"""What a suspect's label should be: the one place noisefind decides ``suggested_label``.

:func:`suggest_labels` reads only columns of a suspects table, so a new estimate (say an
out-of-sample prediction from cross-validated models) is one more column and one more line
here; ``suspects.csv``, the terminal table, ``top_suspects.png``, the review page and
``export --relabel`` all take the suggestion from this function.

The order of the sources below was measured on digits (docs/benchmarks.md, "Suggested
labels"): the flip search's ``flipped_to`` is right more often than the model's runner-up class,
and both far more often than a vote of neighbours in the model's own features, which memorized
the wrong labels too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SUGGESTION_SOURCES = ("oos_label", "flipped_to", "predicted_label", "runner_up_label")
# How sure the out-of-sample models must be of a suggested label before `export --relabel`
# applies it. 0.5 ("likelier than all the others together") made CIFAR-10N aggre's labels
# worse with strong fold models; 0.9 lowered the wrong labels on every scan measured, with
# few new errors (docs/benchmarks.md, "Relabel, precision first").
RELABEL_CONFIDENCE = 0.9


def suggest_labels(table: pd.DataFrame) -> pd.Series:
    """The label noisefind proposes for each row of a suspects table, as text.

    In order of preference, the first that names a label other than ``given_label``:

    1. ``oos_label``: the likeliest class other than the given label for the out-of-sample
       models that never saw the row (present when the scan ran them; on real label noise it
       is right more often than ``flipped_to``, docs/benchmarks.md);
    2. ``flipped_to``: the class the prediction falls to when the flip search has zeroed the
       units that held the given label (empty when the search hit its cap);
    3. ``predicted_label``: the model's own prediction, when it already disagrees with the
       given label;
    4. ``runner_up_label``: the model's most likely class other than the given label.

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


def confident_suggestions(table: pd.DataFrame,
                          confidence: float = RELABEL_CONFIDENCE) -> np.ndarray:
    """Bool per row: its ``suggested_label`` is backed by models that never saw the row.

    The suggestion must be the out-of-sample models' likeliest class other than the given one
    (``oos_label``) with a probability of at least ``confidence``
    (``oos_label_probability``). A label changed on weaker evidence would as often make a
    clean label wrong as fix a wrong one; a table without out-of-sample evidence (a model of
    yours, ``--folds 0``, a scan from before the column) has no confident suggestion.
    """
    if "oos_label_probability" not in table or "oos_label" not in table:
        return np.zeros(len(table), dtype=bool)
    suggested = table["suggested_label"].fillna("").astype(str)
    backed = suggested.eq(table["oos_label"].fillna("").astype(str)) & suggested.ne("")
    sure = pd.to_numeric(table["oos_label_probability"], errors="coerce").fillna(0.0)
    return (backed & (sure >= confidence)).to_numpy()
