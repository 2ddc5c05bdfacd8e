"""The default order's witnesses on finished scans: each one's share, and a backbone's own
neighbours, against confident learning on the same fold models.

    python benchmarks/witnesses.py SCAN [SCAN ...]
    python benchmarks/witnesses.py SCAN ... --json benchmarks/results/witnesses-backbone.json

Reads each scan folder's ``suspects.csv`` (the order's signals per row), ``pred_probs.npy`` and
``training_set.npz`` (the true labels: CIFAR-10N manifests carry them; ``--truth`` for a
folder's). The backbone's
neighbours signal (``backbone_neighbours``) comes from the scan's table when it has one (scans
with ``--backbone``, from this release); for a scan with a backbone made before, it is computed
here exactly as the scan computes it, from the data and weights the scan read (no model is
trained). Per scan: the AUROC over the scanned rows of confident learning
(cleanlab on the same probabilities, as ``benchmarks/decisions.py`` ranks it), of the three
fold-model witnesses together and of each left out, of the backbone's neighbours alone, and of
the order with them as a fourth witness or as a second signal of the neighbours witness.
Prints a table and writes JSON (default benchmarks/results/witnesses.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from noisefind.bench.detectors import cleanlab_scores
from noisefind.decide.consensus import WITNESSES, consensus_score
from noisefind.scanning.export import load_training_set

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decisions import markdown, scan_evidence, true_labels  # noqa: E402

RESULTS = Path(__file__).parent / "results"
FOLD_WITNESSES = {name: signals for name, signals in WITNESSES.items() if name != "backbone"}
# The backbone's neighbours as a second signal of the neighbours witness (the alternative to a
# vote of their own).
SHARED_WITNESSES = {**FOLD_WITNESSES, "neighbours": ("neighbours", "backbone_neighbours")}


def witnesses(scan: Path, truth_csv: Path | None = None) -> dict:
    training = load_training_set(scan)
    true_y = true_labels(training, truth_csv, scan)
    table = pd.read_csv(scan / "suspects.csv").sort_values("index")
    rows = training.positions(table["index"])
    wrong = (training.y != true_y)[rows]
    fold = {name: table[name].to_numpy(np.float64)
            for names in FOLD_WITNESSES.values() for name in names}
    probabilities = np.load(scan / "pred_probs.npy")
    scores = {"confident_learning": cleanlab_scores(training.y, probabilities)[rows],
              "three_witnesses": consensus_score(fold, witnesses=FOLD_WITNESSES)}
    for witness, names in FOLD_WITNESSES.items():
        scores[f"without_{witness}"] = consensus_score(fold, witnesses=FOLD_WITNESSES,
                                                       without=names)
    signals = dict(fold)
    if "backbone_neighbours" in table:
        signals["backbone_neighbours"] = table["backbone_neighbours"].to_numpy(np.float64)
    elif (evidence := scan_evidence(scan)) is not None:
        signals["backbone_neighbours"] = evidence.backbone_neighbours(rows)
    if "backbone_neighbours" in signals:
        scores["backbone_neighbours_alone"] = signals["backbone_neighbours"]
        scores["backbone_in_neighbours"] = consensus_score(signals, witnesses=SHARED_WITNESSES)
        scores["backbone_witness"] = consensus_score(signals)
    auroc = {name: round(float(roc_auc_score(wrong, score)), 4) for name, score in scores.items()}
    return {"scan": str(scan), "rows": len(rows), "wrong": int(wrong.sum()),
            "fold_accuracy": round(float((probabilities.argmax(1) == true_y).mean()), 4),
            "auroc": auroc}


def table(results: list[dict]) -> str:
    """The AUROC of every score of every scan (a column per score any scan has), each with its
    lead over confident learning in brackets."""
    names = list(dict.fromkeys(name for r in results for name in r["auroc"]))
    rows = []
    for r in results:
        base = r["auroc"]["confident_learning"]
        cells = [f"{r['auroc'][name]:.4f}" + ("" if name == "confident_learning"
                                              else f" ({r['auroc'][name] - base:+.3f})")
                 if name in r["auroc"] else "" for name in names]
        rows.append([Path(r["scan"]).name, f"{r['fold_accuracy']:.3f}", *cells])
    return markdown(["scan", "fold accuracy", *names], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scans", type=Path, nargs="+")
    parser.add_argument("--truth", type=Path, default=None,
                        help="path,true_label CSV for scans of files that hold no true labels "
                             "(benchmarks/decisions.py folder writes one)")
    parser.add_argument("--json", type=Path, default=RESULTS / "witnesses.json")
    args = parser.parse_args()
    results = [witnesses(scan, args.truth) for scan in args.scans]
    print(table(results))
    print("(in brackets: the lead over confident learning on the same fold models)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": "python benchmarks/witnesses.py "
                                     + " ".join(str(s) for s in args.scans),
                                     "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
