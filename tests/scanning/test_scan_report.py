import pandas as pd
from rich.console import Console

from noisefind.scanning.outputs import suspects_table


def _table() -> pd.DataFrame:
    table = pd.DataFrame({"rank": [1, 2], "index": [7, 3], "path": ["", ""],
                          "given_label": ["cat", "dog"], "suggested_label": ["dog", ""],
                          "score": [-0.25, -4.5], "consensus_score": [3.125, 1.5],
                          "cutoff_score": [0.75, 0.5]})
    return table


def _render(table: pd.DataFrame, rank_by: str) -> str:
    console = Console(width=80, record=True)
    console.print(suspects_table(table, rank_by=rank_by))
    return console.export_text()


def test_the_terminal_table_shows_the_score_of_the_order():
    text = _render(_table(), "consensus")
    assert "consensus" in text and "3.125" in text and "-0.250" not in text
    text = _render(_table(), "flip")
    assert "score" in text and "-0.250" in text and "3.125" not in text
    assert all(len(line) <= 80 for line in text.splitlines())
