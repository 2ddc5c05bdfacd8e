"""``noisefind review OUT``: one self-contained HTML page of a scan's suspects.

The page (``OUT/report.html``) needs no server and no network: thumbnails are inline base64
PNGs, the CSS and the filter script are inline. It lists the suspects in the order of
``suspects.csv`` (most suspicious first), each as "given X, likely Y" (Y the suggested label),
with its score and flag (and, where the flip search ran, the label its prediction flips to
and the units to flip); a class menu and a
flagged/not-flagged menu filter them. Image data shows thumbnails (from the arrays or the files
saved in ``OUT/training_set.npz``); tabular data shows each example's feature row.

Every flagged example is on the page; of the others, the ``top`` most suspicious, so that a
large scan still gives a page a browser opens quickly.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from noisefind.base.errors import NoisefindError
from noisefind.base.files import atomic_write
from noisefind.scanning.export import TrainingSet, feature_names, load_training_set, read_suspects
from noisefind.scanning.outputs import ORDER_COLUMNS, count_caution

THUMBNAIL = 96  # largest side of an inline thumbnail, pixels

# The page's style and script (filters, keyboard decisions) live beside this module.
STYLE = (Path(__file__).parent / "review.css").read_text(encoding="utf-8")
SCRIPT = (Path(__file__).parent / "review.js").read_text(encoding="utf-8")


def write_review(out: str | Path, top: int = 1000) -> Path:
    """Write ``OUT/report.html`` from a scan's ``suspects.csv``, ``summary.json`` and data.

    Parameters
    ----------
    out : path
        A scan's output folder.
    top : int
        Besides every flagged example, show this many of the most suspicious others.

    Returns
    -------
    Path
        The page.
    """
    if top < 0:
        raise NoisefindError(f"top must be 0 or more, got {top}", parameter="top")
    out = Path(out)
    suspects = read_suspects(out)
    training = load_training_set(out)
    summary_file = out / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    shown = shown_suspects(suspects, top)
    page = render_review(shown, training, summary, total=len(suspects))
    path = out / "report.html"
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def shown_suspects(suspects: pd.DataFrame, top: int) -> pd.DataFrame:
    """Every flagged row and the ``top`` first others, in the table's order."""
    others_so_far = (~suspects["suspected"]).cumsum()  # flagged rows do not count
    return suspects[suspects["suspected"] | (others_so_far <= top)]


def _order_note(summary: dict) -> str:
    rank_by = summary.get("rank_by", "flip")
    if rank_by == "consensus" and "evidence" in summary:  # noisefind rank: the given evidence
        return (f"Sorted by the consensus score of the witnesses the given evidence feeds "
                f"({', '.join(summary['witnesses'])}; one vote each; higher = more "
                "suspicious).")
    if rank_by == "consensus":
        backbone = "backbone" in summary.get("witnesses", [])
        return (f"Sorted by the consensus score ({'four' if backbone else 'three'} witnesses, "
                "one vote each: the out-of-sample margin of the fold model that never saw the "
                "example; the area under the margin on the fold models that learned it; how "
                "much less its nearest neighbours carry its label than its class's usually do"
                + ("; the same in the pretrained backbone's own features" if backbone else "")
                + ". Higher = more suspicious).")
    if rank_by == "cutoff":
        return ("Sorted by the cutoff's score (the flip cost weighed with the loss, the "
                "training dynamics and the out-of-sample evidence; higher = more like the "
                "canaries, more suspicious).")
    return ("Sorted by suspicion (score = minus the flip cost: fewer units zeroed to flip the "
            "prediction away from the given label = more suspicious).")


def render_review(shown: pd.DataFrame, training: TrainingSet, summary: dict,
                  total: int) -> str:
    """The whole page as one string."""
    title = f"noisefind review: {Path(training.name).name or training.name}"
    score = ORDER_COLUMNS[summary.get("rank_by", "flip")]
    body = (_cards(shown, training, score) if training.is_image
            else _feature_table(shown, training, score))
    classes = "".join(f'<option value="{escape(c, True)}">{escape(c)}</option>'
                      for c in training.classes)
    names = json.dumps(list(training.classes)).replace("</", "<\\/")
    page_id = hashlib.sha256(json.dumps([training.name, total, shown["index"].tolist()])
                             .encode()).hexdigest()[:16]
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{STYLE}</style>
</head>
<body data-page="{page_id}">
<header>
<h1>{escape(title)}</h1>
{_facts(summary, total, shown)}
</header>
<nav id="controls">
<label>class (given label) <select id="class-filter"><option value="">all</option>{classes}\
</select></label>
<label>show <select id="flag-filter"><option value="all">all</option>\
<option value="flagged">flagged only</option><option value="unflagged">not flagged</option>\
</select></label>
<span id="shown"></span>
<span id="decided"></span> <a id="save" download="decisions.csv" \
href="data:text/csv;charset=utf-8,index%2Cdecision%2Clabel%0A">save decisions</a>
<span id="keys">{_keys(training.classes)}</span>
</nav>
<script type="application/json" id="class-names">{names}</script>
<main id="suspects">
{body}
</main>
<footer>{_order_note(summary)} Flagged examples (red) are those the
calibrated cutoff marks as probably mislabeled. Showing every flagged example and the
{int((~shown["suspected"]).sum())} most suspicious others of {total} scanned.</footer>
<script>{SCRIPT}</script>
</body>
</html>
"""


def _keys(classes: list[str]) -> str:
    """The keyboard's help: moving, deciding, and the digit of each of the first ten classes."""
    digits = " ".join(f"<kbd>{k}</kbd> {escape(c)}" for k, c in enumerate(classes[:10]))
    return ("<kbd>j</kbd>/<kbd>k</kbd> next/previous · <kbd>a</kbd> accept the suggestion · "
            "<kbd>c</kbd> keep · <kbd>x</kbd> drop · <kbd>u</kbd> undo · relabel to: " + digits)


def _facts(summary: dict, total: int, shown: pd.DataFrame) -> str:
    cutoff = summary.get("cutoff", {})
    facts = [("data", summary.get("data")), ("noise injected", summary.get("noise")),
             ("examples", summary.get("examples")), ("scanned", total),
             ("flagged", int(shown["suspected"].sum())),
             ("estimated mislabeled", _estimate(summary)),
             ("caution", count_caution(summary)),
             ("witnesses", ", ".join(summary.get("witnesses", [])) or None),
             ("cutoff", cutoff.get("method")),
             ("AUROC of the score", _number(summary.get("auroc"))),
             ("AUROC of the consensus score", _number(summary.get("auroc_consensus_score"))),
             ("AUROC of the cutoff score", _number(summary.get("auroc_cutoff_score"))),
             ("flag precision", _number(summary.get("flag_precision"))),
             ("flag recall", _number(summary.get("flag_recall")))]
    items = "".join(f"<li>{escape(name)} <b>{escape(str(value))}</b></li>"
                    for name, value in facts if value is not None)
    return f'<ul class="facts">{items}</ul>'


def _estimate(summary: dict) -> str | None:
    estimate, interval = (summary.get("estimated_mislabeled"),
                          summary.get("estimated_mislabeled_interval"))
    if estimate is None or not interval:
        return estimate
    return f"{estimate:.0f} ({interval[0]:.0f}-{interval[1]:.0f})"


def _number(value) -> str | None:
    return None if value is None else f"{value:.3f}"


def _attributes(row: pd.Series) -> str:
    flagged = bool(row["suspected"])
    return (f'class="suspect{" flagged" if flagged else ""}" data-index="{int(row["index"])}" '
            f'data-rank="{int(row["rank"])}" data-label="{escape(row["given_label"], True)}" '
            f'data-suspected="{"true" if flagged else "false"}" '
            f'data-suggested="{escape(_suggested(row), True)}"')


def _badges(row: pd.Series) -> str:
    badges = '<span class="badge">flagged</span>' if row["suspected"] else ""
    if str(row.get("is_noisy", "")).lower() == "true":
        badges += (f'<span class="badge truth" title="injected noise">truly '
                   f'{escape(row["true_label"])}</span>')
    return badges


def _cards(shown: pd.DataFrame, training: TrainingSet, score: str) -> str:
    rows = training.positions(shown["index"])
    cards = []
    for row_number, (_, row) in zip(rows, shown.iterrows(), strict=True):
        image = _thumbnail(training, row_number)
        picture = (f'<img src="data:image/png;base64,{image}" alt="example {int(row["index"])}">'
                   if image else '<div class="no-image">no image</div>')
        likely = escape(_suggested(row)) or "&mdash;"
        path = (f'<div class="numbers" title="{escape(row["path"], True)}">'
                f'{escape(Path(row["path"]).name)}</div>' if row["path"] else "")
        cards.append(
            f'<article {_attributes(row)}>{picture}<div class="info">'
            f'<div><span class="rank">#{int(row["rank"])}</span> '
            f'<span class="numbers">index {int(row["index"])}</span></div>'
            f'<div class="badges">{_badges(row)}</div>'
            f'<div class="labels">given <b>{escape(row["given_label"])}</b>, likely '
            f'<b>{likely}</b></div>'
            f'<div class="numbers">{_flip(row)}score {float(row[score]):.3f}</div>'
            '<div class="decision"></div>'
            f'{path}</div></article>')
    return '<div class="grid">' + "\n".join(cards) + "</div>"


def _suggested(row: pd.Series) -> str:
    return str(row.get("suggested_label", "") or "")


def _flip(row: pd.Series) -> str:
    """"flips to X · N units · " for a row the flip search scored, else nothing."""
    if "units_to_flip" not in row or pd.isna(row["units_to_flip"]):
        return ""
    units = int(row["units_to_flip"])
    flipped = str(row["flipped"]).lower() == "true"
    flips = escape(row["flipped_to"]) if row["flipped_to"] else "&mdash;"
    return (f"flips to {flips} · {units} unit{'s' if units != 1 else ''}"
            + ("" if flipped else " (cap, not flipped)") + " · ")


def _feature_table(shown: pd.DataFrame, training: TrainingSet, score: str) -> str:
    searched = "units_to_flip" in shown
    features = None if training.x is None else training.x[training.positions(shown["index"])]
    names = [] if features is None else feature_names(training)
    head = ("<tr><th>rank</th><th>index</th><th>flag</th><th>given</th><th>likely</th>"
            + ("<th>flips to</th><th>units</th>" if searched else "") + "<th>score</th>"
            + "<th>decision</th>"
            + "".join(f"<th>{escape(str(n))}</th>" for n in names) + "</tr>")
    lines = []
    for k, (_, row) in enumerate(shown.iterrows()):
        values = "" if features is None else "".join(f"<td>{_feature(v)}</td>"
                                                     for v in features[k])
        flip = (f'<td class="text">{escape(row["flipped_to"]) or "&mdash;"}</td>'
                f'<td>{int(row["units_to_flip"])}</td>' if searched else "")
        lines.append(
            f'<tr {_attributes(row)}><td>{int(row["rank"])}</td><td>{int(row["index"])}</td>'
            f'<td class="text">{_badges(row)}</td>'
            f'<td class="text">{escape(row["given_label"])}</td>'
            f'<td class="text">{escape(_suggested(row)) or "&mdash;"}</td>'
            f'{flip}<td>{float(row[score]):.3f}</td><td class="decision text"></td>{values}'
            "</tr>")
    return (f'<div class="table-wrap"><table><thead>{head}</thead><tbody>'
            + "\n".join(lines) + "</tbody></table></div>")


def _feature(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return ""
    return f"{value:.4g}"


def _thumbnail(training: TrainingSet, row: int) -> str | None:
    """Base64 PNG of one example, its largest side at most :data:`THUMBNAIL` pixels."""
    from PIL import Image

    if training.paths is not None:
        try:
            with Image.open(training.paths[row]) as file:
                image = file.convert("RGB")
        except (OSError, ValueError):
            return None  # moved or unreadable since the scan: the card says "no image"
    else:
        pixels = np.clip(np.rint(training.x[row] * 255.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels[0] if pixels.shape[0] == 1
                                else np.transpose(pixels, (1, 2, 0)))
    if max(image.size) > THUMBNAIL:
        image.thumbnail((THUMBNAIL, THUMBNAIL), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
