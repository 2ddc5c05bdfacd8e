"""suggest_labels: which estimate becomes suggested_label."""

import pandas as pd

from noisefind.decide.suggest import suggest_labels


def test_flipped_to_then_prediction_then_runner_up():
    table = pd.DataFrame({
        "given_label": ["a", "a", "a", "a", "b"],
        "flipped_to": ["b", "", "", None, ""],
        "predicted_label": ["a", "c", "a", "a", "b"],
        "runner_up_label": ["c", "b", "d", "", ""],
    })
    assert suggest_labels(table).tolist() == ["b", "c", "d", "", ""]


def test_missing_columns_are_skipped():
    table = pd.DataFrame({"given_label": ["1", "2"], "flipped_to": ["3", ""],
                          "predicted_label": ["1", "2"]})
    assert suggest_labels(table).tolist() == ["3", ""]
