"""The decisions on finished scans whose true labels are known: the count, the flag against
cleanlab's ``find_label_issues`` on the same fold models, and what ``export --relabel`` does.

    python benchmarks/decisions.py folder /tmp/f450          # the 450-image CIFAR-10 folder
    noisefind scan /tmp/f450/photos --width 0.25 --epochs 20 --out /tmp/f450/scan
    python benchmarks/decisions.py evaluate /tmp/f450/scan --truth /tmp/f450/truth.csv
    python benchmarks/decisions.py evaluate scan-digits scan-r1p3 --json /tmp/decisions.json
    python benchmarks/decisions.py canaries scan-digits scan-r1p3     # canaries against errors

``folder`` copies the first 150 CIFAR-10 training images of airplane, cat and ship into class
folders and puts 45 of the 450 (drawn with a seeded generator) into another class's folder;
``truth.csv`` beside it holds each file's true class. ``evaluate`` reads a scan folder: the true
labels from ``training_set.npz`` (injected noise, or a manifest's ``true_label`` column such as
``benchmarks/cifar10n.py`` writes) or from ``--truth``; cleanlab runs on the scan's own
``pred_probs.npy``; the relabelled manifest comes from the real ``noisefind export --relabel``.
Per scan it reports the estimate against the truth, the flag's precision, recall and F1 beside
cleanlab's (over the scanned rows), and the wrong labels before and after the relabel, with
the fixes and the new errors (clean labels changed); and, beside it, the fold models' held-out
accuracy and the AUROC / AUPRC of the scan's order and of confident learning (cleanlab's
ranking on the same probabilities) over the scanned rows. Prints tables and writes JSON (default
benchmarks/results/decisions.json). ``canaries`` recomputes a scan's out-of-sample count with the
canaries it draws, with uniform ones, and with the real wrong labels as canaries, on the
out-of-sample evidence and on the order's own score, and for scans with a backbone the drawn
canaries on the backbone's own neighbours (benchmarks/results/count-canaries.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from noisefind.bench.detectors import cleanlab_scores
from noisefind.data.load import load_data
from noisefind.decide.calibration import margin_judge
from noisefind.decide.count import estimate_count, out_of_sample_count
from noisefind.decide.cutoff import flag_metrics
from noisefind.scanning.export import TrainingSet, load_training_set
from noisefind.signals.out_of_sample import OutOfSample
from noisefind.training.config import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar10n import SHARED, unpack  # noqa: E402

RESULTS = Path(__file__).parent / "results"
FOLDER_CLASSES = ("airplane", "cat", "ship")
PER_CLASS, MOVED = 150, 45


def make_folder(out: Path, seed: int = 0) -> Path:
    """The 450-image folder (``out/photos``) and its ``out/truth.csv``; returns the folder."""
    images = unpack(SHARED / "cifar10-jpg.tar.gz",
                    Path(tempfile.gettempdir()) / "noisefind-cifar10n") / "train"
    files = [(name, path) for name in FOLDER_CLASSES
             for path in sorted((images / name).glob("*.jpg"))[:PER_CLASS]]
    rng = np.random.default_rng(seed)
    moved = set(rng.choice(len(files), MOVED, replace=False).tolist())
    photos = out / "photos"
    if photos.exists():
        shutil.rmtree(photos)
    truth = []
    for i, (name, path) in enumerate(files):
        folder = name
        if i in moved:
            others = [c for c in FOLDER_CLASSES if c != name]
            folder = others[int(rng.integers(len(others)))]
        target = photos / folder / f"{name}_{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        truth.append((str(target.resolve()), name))
    pd.DataFrame(truth, columns=["path", "true_label"]).to_csv(out / "truth.csv", index=False)
    return photos


def true_labels(training: TrainingSet, truth_csv: Path | None, scan: Path) -> np.ndarray:
    """The true label (class code) of every example, in the training set's order."""
    if training.true_y is not None:
        return training.true_y
    if truth_csv is None or training.paths is None:
        raise SystemExit(f"{scan}: no true labels in training_set.npz; give --truth")
    truth = dict(pd.read_csv(truth_csv, dtype=str).itertuples(index=False, name=None))
    codes = {name: k for k, name in enumerate(training.classes)}
    return np.array([codes[truth[str(Path(p).resolve())]] for p in training.paths])


def flag_scores(flagged: np.ndarray, wrong: np.ndarray) -> dict:
    """The flag's precision, recall and F1 (noisefind's own :func:`flag_metrics`)."""
    metrics = flag_metrics(wrong, flagged, None)
    return {"flagged": int(flagged.sum()), "precision": round(metrics["flag_precision"], 3),
            "recall": round(metrics["flag_recall"], 3), "f1": round(metrics["flag_f1"], 3)}


def relabel(scan: Path, true_y: np.ndarray, given: np.ndarray, classes: list[str]) -> dict:
    """Run ``noisefind export SCAN --relabel`` and count the wrong labels in its manifest."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "relabelled.csv"
        subprocess.run([sys.executable, "-m", "noisefind", "export", str(scan), "--relabel",
                        "--out", str(manifest)], check=True, capture_output=True)
        labels = pd.read_csv(manifest, dtype=str)["label"].to_numpy()
    names = np.array(classes)
    after, truth, before = labels, names[true_y], names[given]
    changed = after != before
    return {"wrong_before": int((before != truth).sum()),
            "wrong_after": int((after != truth).sum()),
            "relabelled": int(changed.sum()), "fixed": int((changed & (after == truth)).sum()),
            "new_errors": int((changed & (before == truth)).sum())}


def evaluate(scan: Path, truth_csv: Path | None) -> dict:
    from cleanlab.filter import find_label_issues

    training = load_training_set(scan)
    given, classes = training.y, training.classes
    true_y = true_labels(training, truth_csv, scan)
    summary = json.loads((scan / "summary.json").read_text())
    suspects = pd.read_csv(scan / "suspects.csv", usecols=["rank", "index", "suspected"])
    rows = training.positions(suspects["index"])
    wrong = given != true_y
    estimate = summary["estimated_mislabeled"]
    result = {"scan": str(scan), "examples": len(given), "scanned": len(rows),
              "wrong": int(wrong.sum()), "estimated": estimate,
              "interval": summary.get("estimated_mislabeled_interval"),
              "count_error": round((estimate - wrong.sum()) / wrong.sum(), 3),
              "noisefind": flag_scores(suspects["suspected"].to_numpy(bool), wrong[rows])}
    if (scan / "pred_probs.npy").exists():
        probabilities = np.load(scan / "pred_probs.npy")
        issues = find_label_issues(given, probabilities)
        result["cleanlab"] = flag_scores(issues[rows], wrong[rows])
        result["cleanlab_count_error"] = round((issues.sum() - wrong.sum()) / wrong.sum(), 3)
        result["ranking"] = ranking(-suspects["rank"].to_numpy(float), rows, given,
                                    probabilities, true_y)
    result["relabel"] = relabel(scan, true_y, given, classes)
    return result


def ranking(order: np.ndarray, rows: np.ndarray, given: np.ndarray,
            probabilities: np.ndarray, true_y: np.ndarray) -> dict:
    """The fold models' held-out accuracy against the true labels, and the AUROC / AUPRC of
    the scan's ``order`` (a score of its ``rows``) and of confident learning (cleanlab on the
    same probabilities) over those rows."""
    wrong = (given != true_y)[rows]
    scores = {"order": order, "confident_learning": cleanlab_scores(given, probabilities)[rows]}
    result = {"fold_accuracy": round(float((probabilities.argmax(1) == true_y).mean()), 4)}
    for name, score in scores.items():
        result[name] = {"auroc": round(float(roc_auc_score(wrong, score)), 4),
                        "auprc": round(float(average_precision_score(wrong, score)), 4)}
    result["lead"] = round(result["order"]["auroc"] - result["confident_learning"]["auroc"], 4)
    return result


def scan_evidence(scan: Path) -> OutOfSample | None:
    """A scan's fold-model evidence as the scan set it up (its data and recipe from
    ``summary.json``), for what needs no fold model: the backbone's own neighbours. None for a
    scan without a backbone."""
    summary = json.loads((scan / "summary.json").read_text())
    config = TrainConfig.from_dict(summary.get("train", {}))
    if config.backbone_weights is None:
        return None
    return OutOfSample(load_data(summary["data"], progress=False), replace(config, device="cpu"))


def canaries(scan: Path, truth_csv: Path | None) -> dict:
    """The out-of-sample count of a finished scan with three kinds of canaries: those the scan
    draws (from the confusions confident learning sees; as today's code draws them, with the
    scan's seed), as many uniform ones, and the real wrong
    labels themselves (known here only because the truth is): how far each is from the truth
    says whether the count is right because canaries score like real errors."""
    training = load_training_set(scan)
    given, probabilities = training.y, np.load(scan / "pred_probs.npy")
    truth = true_labels(training, truth_csv, scan)
    wrong = given != truth
    judge = margin_judge(probabilities, given)
    scores = judge(np.arange(len(given)), given)
    seed = json.loads((scan / "summary.json").read_text()).get("settings", {}).get("seed", 0)
    drawn, count = out_of_sample_count(given, probabilities, seed=seed)  # as the scan draws
    rng = np.random.default_rng(0)
    rows = rng.choice(len(given), count, replace=True)
    uniform = (given[rows] + rng.integers(1, probabilities.shape[1], count)) % \
        probabilities.shape[1]

    def error(estimate: float) -> float:
        return round((estimate - wrong.sum()) / wrong.sum(), 3)

    result = {"scan": str(scan), "examples": len(given), "wrong": int(wrong.sum()),
              "accuracy": round(float((probabilities.argmax(1) == truth).mean()), 3),
              "canaries": count, "drawn": error(drawn.estimate),
              "uniform": error(estimate_count(scores, judge(rows, uniform))[0]),
              "real_errors": error(estimate_count(scores, scores[wrong])[0])}
    # The same ceiling on the order's own score: no canary, however alike the real errors,
    # counts closer than this from the mixture alone (the clean rows above each threshold).
    ranked = pd.read_csv(scan / "suspects.csv")
    if "consensus_score" in ranked and len(ranked) == len(given):
        order = ranked.sort_values("index")["consensus_score"].to_numpy()
        result["real_errors_on_order"] = error(estimate_count(order, order[wrong])[0])
    evidence = scan_evidence(scan)
    if evidence is not None:  # the same canaries on the backbone's own neighbours (what a
        # scan with a backbone counts since the backbone witness came)
        result["drawn_on_backbone"] = error(out_of_sample_count(
            given, probabilities, seed=seed, evidence=evidence.backbone_vote())[0].estimate)
    return result


def write_results(path: Path, results: list[dict]) -> None:
    """``results`` as JSON at ``path``, beside the command line that made them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    path.write_text(json.dumps({"command": command, "results": results}, indent=2) + "\n")


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: the first column left-aligned, the others right-aligned."""
    lines = [header, ["---"] + ["---:"] * (len(header) - 1), *rows]
    return "\n".join("|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"
                     for cells in lines)


def table(results: list[dict]) -> str:
    rows = []
    for r in results:
        ours, lab, rel = r["noisefind"], r.get("cleanlab"), r["relabel"]
        theirs = (f"{lab['precision']} / {lab['recall']} / {lab['f1']} "
                  f"({r['cleanlab_count_error']:+.0%})" if lab else "no pred_probs.npy")
        rows.append([Path(r["scan"]).name, str(r["wrong"]),
                     f"{r['estimated']} ({r['count_error']:+.0%})",
                     f"{ours['precision']} / {ours['recall']} / {ours['f1']}", theirs,
                     f"{rel['wrong_before']} -> {rel['wrong_after']}", str(rel["fixed"]),
                     str(rel["new_errors"])])
    return markdown(["scan", "wrong", "estimated (error)", "flag P / R / F1",
                     "cleanlab P / R / F1 (count error)", "relabel: wrong before -> after",
                     "fixed", "new errors"], rows)


def ranking_table(results: list[dict]) -> str:
    rows = []
    for r in results:
        if "ranking" not in r:
            continue
        k = r["ranking"]
        rows.append([Path(r["scan"]).name, f"{k['fold_accuracy']:.3f}",
                     f"{k['order']['auroc']:.3f} / {k['order']['auprc']:.3f}",
                     f"{k['confident_learning']['auroc']:.3f} / "
                     f"{k['confident_learning']['auprc']:.3f}", f"{k['lead']:+.3f}"])
    return markdown(["scan", "fold models' accuracy", "order AUROC / AUPRC",
                     "confident learning AUROC / AUPRC", "lead (AUROC)"], rows)


def canaries_table(results: list[dict]) -> str:
    rows = [[Path(r["scan"]).name, f"{r['accuracy']:.3f}", str(r["wrong"]), str(r["canaries"]),
             f"{r['drawn']:+.0%}", f"{r['uniform']:+.0%}", f"{r['real_errors']:+.0%}",
             f"{r['real_errors_on_order']:+.0%}" if "real_errors_on_order" in r else "",
             f"{r['drawn_on_backbone']:+.0%}" if "drawn_on_backbone" in r else ""]
            for r in results]
    return markdown(["scan", "fold models' accuracy", "wrong", "canaries",
                     "count error: drawn, on the held-out probabilities", "uniform",
                     "the real errors as canaries", "the same, on the order's score",
                     "drawn, on the backbone's neighbours"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    folder = commands.add_parser("folder", help="make the 450-image CIFAR-10 folder")
    folder.add_argument("out", type=Path)
    folder.add_argument("--seed", type=int, default=0)
    scans = commands.add_parser("evaluate", help="evaluate finished scans")
    scans.add_argument("scans", type=Path, nargs="+")
    scans.add_argument("--truth", type=Path, help="path,true_label CSV for the scans of "
                       "files that hold no true labels (the folder's truth.csv)")
    scans.add_argument("--json", type=Path, default=RESULTS / "decisions.json")
    kinds = commands.add_parser("canaries", help="the count with other canaries, and with the "
                                "real errors as canaries")
    kinds.add_argument("scans", type=Path, nargs="+")
    kinds.add_argument("--truth", type=Path, help="as for evaluate")
    kinds.add_argument("--json", type=Path, default=RESULTS / "count-canaries.json")
    args = parser.parse_args()
    if args.command == "folder":
        print(make_folder(args.out, args.seed))
        return
    if args.command == "canaries":
        results = [canaries(scan, args.truth) for scan in args.scans]
        print(canaries_table(results))
    else:
        results = [evaluate(scan, args.truth) for scan in args.scans]
        print(table(results))
        print()
        print(ranking_table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
