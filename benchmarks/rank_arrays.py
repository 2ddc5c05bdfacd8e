"""``rank_label_issues`` at scale: 200,000 rows x 1,000 classes, 128-d features, against
cleanlab's ``find_label_issues`` on the same arrays (time, peak RSS, AUROC, count).

    python benchmarks/rank_arrays.py                      # 200k x 1000, 128-d (a few minutes)
    python benchmarks/rank_arrays.py --rows 20000 --classes 100 --out /tmp/small.json

The arrays are synthetic, made to look like a strong model's out-of-sample output on data with
hard class pairs. Classes come in 500 confusable pairs (2m, 2m+1). Of the labels, 10% are
wrong: half to the class's partner (a hard-pair confusion), half to any other class. The
probabilities are a softmax of Gaussian logits with a per-row boost of the true class
(N(6, 2)) and of its partner (N(3, 2)). The features are unit-length 128-d: the true class's
centre (partners' centres close together) plus Gaussian noise. Each row's model did not see it,
so the probabilities follow the true class, not the given label.

Each method runs in its own process (peak RSS is that process's); the arrays are .npy files
in a temporary folder, memory-mapped by noisefind and read whole by cleanlab. Prints a table
and writes JSON (default benchmarks/results/rank-arrays.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
METHODS = ("noisefind", "noisefind_count_from_features", "noisefind_probabilities_only",
           "cleanlab")


def make_arrays(folder: Path, rows: int, classes: int, dim: int, wrong: float,
                seed: int) -> int:
    """Write labels.npy, truth.npy, pred_probs.npy and features.npy; the number of wrong labels."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, rows)
    partner = truth ^ 1  # classes 2m and 2m+1 are a hard pair
    labels = truth.copy()
    flipped = rng.random(rows) < wrong
    to_partner = flipped & (rng.random(rows) < 0.5)
    labels[to_partner] = partner[to_partner]
    anywhere = flipped & ~to_partner
    labels[anywhere] = (truth[anywhere] + rng.integers(1, classes, anywhere.sum())) % classes
    np.save(folder / "labels.npy", labels)
    np.save(folder / "truth.npy", truth)
    probabilities = np.lib.format.open_memmap(folder / "pred_probs.npy", mode="w+",
                                              dtype=np.float32, shape=(rows, classes))
    for start in range(0, rows, 8192):
        block = slice(start, start + 8192)
        logits = rng.normal(size=(len(truth[block]), classes)).astype(np.float32)
        at = np.arange(len(logits))
        logits[at, truth[block]] += rng.normal(6.0, 2.0, len(at))
        logits[at, partner[block]] += rng.normal(3.0, 2.0, len(at))
        logits -= logits.max(1, keepdims=True)
        np.exp(logits, out=logits)
        probabilities[block] = logits / logits.sum(1, keepdims=True)
    probabilities.flush()
    pairs = rng.normal(size=(classes // 2 + 1, dim))
    centres = pairs[np.arange(classes) // 2] + 0.6 * rng.normal(size=(classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    features = centres[truth] + rng.normal(scale=0.15, size=(rows, dim))
    np.save(folder / "features.npy", features.astype(np.float32))
    return int(flipped.sum())


def noisefind_worker(folder: Path, features: bool = True, count_from: str | None = None) -> dict:
    import noisefind

    labels = np.load(folder / "labels.npy")
    started = time.perf_counter()
    result = noisefind.rank_label_issues(
        labels, pred_probs=np.load(folder / "pred_probs.npy", mmap_mode="r"),
        features=np.load(folder / "features.npy", mmap_mode="r") if features else None,
        count_from=count_from, true_labels=np.load(folder / "truth.npy"))
    seconds = time.perf_counter() - started
    summary = result.summary
    return {"seconds": seconds, "auroc": summary["auroc_consensus_score"],
            "auprc": summary["auprc_consensus_score"],
            "estimated": summary["estimated_mislabeled"],
            "interval": summary["estimated_mislabeled_interval"],
            "flagged": summary["flagged"], "precision": summary.get("flag_precision"),
            "recall": summary.get("flag_recall"), "stages_s": summary["seconds"]}


def noisefind_probabilities_only_worker(folder: Path) -> dict:
    return noisefind_worker(folder, features=False)


def noisefind_count_from_features_worker(folder: Path) -> dict:
    return noisefind_worker(folder, count_from="features")


def cleanlab_worker(folder: Path) -> dict:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.load(folder / "labels.npy")
    pred_probs = np.load(folder / "pred_probs.npy")
    started = time.perf_counter()
    issues = find_label_issues(labels, pred_probs)
    seconds = time.perf_counter() - started
    noisy = labels != np.load(folder / "truth.npy")
    quality = get_label_quality_scores(labels, pred_probs)
    return {"seconds": seconds, "auroc": float(roc_auc_score(noisy, -quality)),
            "auprc": float(average_precision_score(noisy, -quality)),
            "estimated": int(issues.sum()), "flagged": int(issues.sum()),
            "precision": float(noisy[issues].mean()), "recall": float(issues[noisy].mean())}


def run_worker(name: str, folder: Path) -> dict:
    """Run one method in a fresh process; its figures and its peak RSS."""
    code = (f"import json, resource, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"from rank_arrays import {name}_worker as w; from pathlib import Path; "
            f"r = w(Path({str(folder)!r})); "
            "r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; "
            "print(json.dumps(r))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--wrong", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "rank-arrays.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        wrong = make_arrays(folder, args.rows, args.classes, args.dim, args.wrong, args.seed)
        results = {name: run_worker(name, folder) for name in METHODS}
    print(f"{args.rows:,} rows x {args.classes:,} classes, {args.dim}-d features, "
          f"{wrong:,} labels wrong")
    print(f"{'method':<30}{'seconds':>9}{'peak RSS MB':>13}{'AUROC':>8}{'AUPRC':>8}"
          f"{'count':>9}{'precision':>11}{'recall':>8}")
    for name, r in results.items():
        print(f"{name:<30}{r['seconds']:>9.1f}{r['peak_rss_mb']:>13.0f}{r['auroc']:>8.4f}"
              f"{r['auprc']:>8.4f}{r['estimated']:>9.0f}{r['precision']:>11.3f}"
              f"{r['recall']:>8.3f}")
    ratio = results["noisefind"]["seconds"] / results["cleanlab"]["seconds"]
    print(f"time noisefind / cleanlab: {ratio:.2f}; count error "
          f"{results['noisefind']['estimated'] / wrong - 1:+.1%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "python benchmarks/rank_arrays.py " + " ".join(sys.argv[1:]),
        "rows": args.rows, "classes": args.classes, "dim": args.dim, "wrong": wrong,
        "time_ratio_noisefind_to_cleanlab": round(ratio, 3), **results}, indent=2))


if __name__ == "__main__":
    main()
