"""``noisefind rank`` on real noise: a finished scan's fold probabilities and its backbone's
embeddings, handed to ``rank_label_issues`` as a user with their own evidence would.

    python benchmarks/rank_scans.py SCAN [SCAN ...] [--json benchmarks/results/rank-scans.json]

Each SCAN is the folder of a ``noisefind scan ... --backbone SPEC --weights FILE`` whose true
labels are known (a manifest with a ``true_label`` column, such as ``benchmarks/cifar10n.py``
writes). The evidence: the scan's ``pred_probs.npy`` (its fold models' held-out probabilities)
and the embeddings of the pretrained backbone itself, before any of these labels trained it
(the label-free embeddings a user might bring from a pretrained model). Per scan it ranks with
the probabilities alone, with both (the count on the probabilities, the default), and with both
and ``count_from="features"``, and reports each one's AUROC / AUPRC and count error beside
confident learning's ranking (cleanlab's, on the same probabilities). Prints a table and writes
JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import noisefind
from noisefind.bench.detectors import cleanlab_scores
from noisefind.scanning.export import load_training_set

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decisions import markdown, scan_evidence, true_labels, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results"
WAYS = {"pred_probs only": {"features": False},
        "both, count on pred_probs": {},
        "both, count on features": {"count_from": "features"}}


def backbone_embeddings(scan: Path) -> np.ndarray:
    """The scan's data embedded by its pretrained backbone, as its fold models start."""
    evidence = scan_evidence(scan)
    if evidence is None:
        raise SystemExit(f"{scan}: not a scan with a backbone (--backbone, --weights)")
    with torch.no_grad():
        return evidence.backbone_embeddings().numpy()


def evaluate(scan: Path) -> dict:
    training = load_training_set(scan)
    given, probabilities = training.y, np.load(scan / "pred_probs.npy")
    truth = true_labels(training, None, scan)
    features = backbone_embeddings(scan)
    wrong = int((given != truth).sum())
    result = {"scan": str(scan), "examples": len(given), "wrong": wrong}
    result["confident_learning_auroc"] = round(float(roc_auc_score(
        given != truth, cleanlab_scores(given, probabilities))), 4)
    for way, options in WAYS.items():
        summary = noisefind.rank_label_issues(
            given, pred_probs=probabilities,
            features=features if options.get("features", True) else None,
            count_from=options.get("count_from"), true_labels=truth).summary
        result[way] = {"auroc": summary["auroc_consensus_score"],
                       "auprc": summary["auprc_consensus_score"],
                       "estimated": summary["estimated_mislabeled"],
                       "count_error": round(summary["estimated_mislabeled"] / wrong - 1, 3)}
    return result


def table(results: list[dict]) -> str:
    rows = [[Path(r["scan"]).name, str(r["wrong"]), f"{r['confident_learning_auroc']:.3f}",
             *(f"{r[way]['auroc']:.3f} / {r[way]['count_error']:+.0%}" for way in WAYS)]
            for r in results]
    return markdown(["scan", "wrong", "confident learning AUROC",
                     *(f"{way}: AUROC / count error" for way in WAYS)], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scans", type=Path, nargs="+")
    parser.add_argument("--json", type=Path, default=RESULTS / "rank-scans.json")
    args = parser.parse_args()
    results = []
    for scan in args.scans:
        results.append(evaluate(scan))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    print(table(results))
    write_results(args.json, results)


if __name__ == "__main__":
    main()
