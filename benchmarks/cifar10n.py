"""Bench every detector on CIFAR-10N: real human label noise, with the clean labels beside it.

    python benchmarks/cifar10n.py --labels random1 --part 0            # 5,000 images, CPU
    python benchmarks/cifar10n.py --labels aggre --part 1 --epochs 40 --width 0.25 --limit 1000

Builds an image manifest (``path,label,true_label``) from the CIFAR-10N label file and the
unpacked CIFAR-10 JPEG archive, for one label set (``aggre``, ``random1`` .. ``random3``,
``worst``) and one part of a seeded shuffle of the 40,000 labelled images (parts never
overlap), then runs ``noisefind bench MANIFEST --noise none`` on it. Results go to
``benchmarks/results/cifar10n-<labels>-part<k>/`` in the bench's own format; its ``cache/`` is
kept outside the repository (``--work``) so a rerun resumes from the trained models.

CIFAR-10N: Wei et al., "Learning with Noisy Labels Revisited: A Study Using Real-World Human
Annotations", ICLR 2022 (labels released by UCSC-REAL under CC BY-NC 4.0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
# The CIFAR-10 archive and the CIFAR-10N labels: beside the repository by default; the GPU
# runbook points NOISEFIND_DATASETS at a copy inside it (the device machine sees only the repo).
SHARED = Path(os.environ.get("NOISEFIND_DATASETS", REPO.parent / "shared" / "datasets"))
LABEL_SETS = ("aggre", "random1", "random2", "random3", "worst")


def unpack(archive: Path, cache: Path) -> Path:
    """The unpacked archive's ``cifar10/`` folder (unpacked once into ``cache``)."""
    root = cache / "cifar10"
    if not (root / "train").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as packed:
            packed.extractall(cache, filter="data")
    return root


def write_manifest(labels_csv: Path, images: Path, label_set: str, size: int, part: int,
                   seed: int, out: Path) -> Path:
    """A manifest of ``size`` images (part ``part`` of a seeded shuffle): the label set's label
    and the clean label as ``true_label``."""
    if label_set not in LABEL_SETS:
        raise SystemExit(f"--labels {label_set!r}: use one of {', '.join(LABEL_SETS)}")
    table = pd.read_csv(labels_csv)
    order = np.random.default_rng(seed).permutation(len(table))
    rows = order[part * size:(part + 1) * size]
    if len(rows) < size:
        raise SystemExit(f"--part {part}: only {len(table) // size} parts of {size} images")
    chosen = table.iloc[np.sort(rows)]
    manifest = pd.DataFrame({"path": [str(images / p) for p in chosen["path"]],
                             "label": chosen[label_set].to_numpy(),
                             "true_label": chosen["clean"].to_numpy()})
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(out, index=False)
    return out


TABLE_DETECTORS = ("noisefind", "noisefind-no-flip", "confident_learning", "oos_margin",
                   "cutoff+oos", "oos_confidence", "mean_loss", "aum", "flip+dynamics",
                   "flip_cost", "flip")


def rescore(folder: Path) -> None:
    """Recompute the consensus detectors of a stored result from its per-example scores.

    ``noisefind`` and ``noisefind-no-flip`` are functions of the stored ``oos_margin``, ``aum``
    and ``flip_cost`` columns of the same rows (:func:`noisefind.consensus.consensus_score`),
    so a result made before the consensus order existed can be brought up to date without
    retraining. Rows of the older canary-weighed default (then named ``noisefind``) are kept as
    ``cutoff+oos``; its ablation, which no longer exists, is dropped. The ``noisefind``
    decision becomes the consensus order's top rows, as many as the canaries' estimate. The
    charge is the training plus the flip search (``flip``'s seconds) plus the K-fold models
    (``oos_margin``'s seconds). ``settings.rescored`` records all this.
    """
    import json

    from noisefind.bench import detection_metrics
    from noisefind.bench_report import write_bench_json
    from noisefind.consensus import FLIP_SIGNAL, consensus_score, flag_top
    from noisefind.cutoff import flag_metrics

    stored = json.loads((folder / "results.json").read_text())
    if "cutoff+oos" in stored["settings"]["detectors"]:  # made with the consensus order
        if stored["settings"].get("rescored"):
            write_reports(folder)
        return
    scores_file = next((folder / "scores").glob("*.csv"))
    scores = pd.read_csv(scores_file)
    is_noisy = scores["is_noisy"].to_numpy(dtype=bool)
    records = {r["detector"]: r for r in stored["runs"]}
    old_default = records.pop("noisefind")
    records.pop("noisefind-no-flip", None)
    signals = {"oos_margin": scores["oos_margin"], "aum": scores["aum"],
               FLIP_SIGNAL: scores["flip_cost"]}
    seconds = records["flip"]["seconds"] + records["oos_margin"]["seconds"]
    new = {"noisefind": consensus_score(signals),
           "noisefind-no-flip": consensus_score(signals, without=(FLIP_SIGNAL,))}
    runs = [{**old_default, "detector": "cutoff+oos"}]
    for name, values in new.items():
        scores[name] = values
        runs.append({**old_default, "detector": name, **detection_metrics(is_noisy, values),
                     "seconds": round(seconds if name == "noisefind"
                                      else records["aum"]["seconds"] + records["oos_margin"][
                                          "seconds"], 3)})
    scores["cutoff+oos"] = pd.read_csv(scores_file)["noisefind"]
    decisions = []
    for decision in stored["decisions"]:
        if decision["method"] == "noisefind":
            flagged = flag_top(scores["noisefind"].to_numpy(), decision["estimated"])
            metrics = flag_metrics(is_noisy, flagged, decision["estimated"])
            decision = {**decision, "flagged": int(flagged.sum()),
                        "precision": metrics["flag_precision"],
                        "recall": metrics["flag_recall"], "f1": metrics["flag_f1"]}
        decisions.append(decision)
    order = [d for d in stored["settings"]["detectors"] if d in records] + [
        "cutoff+oos", "noisefind", "noisefind-no-flip"]
    by_name = {**records, **{r["detector"]: r for r in runs}}
    settings = {**stored["settings"], "detectors": order, "rescored": (
        "noisefind and noisefind-no-flip recomputed from the stored oos_margin, aum and "
        "flip_cost scores (the consensus order); the older canary-weighed default kept as "
        "cutoff+oos; the noisefind decision flags the consensus order's top rows")}
    write_bench_json(pd.DataFrame([by_name[d] for d in order]), folder / "results.json",
                     settings, {"decisions": decisions})
    scores.drop(columns=["noisefind-no-flip"]).assign(
        **{"noisefind-no-flip": new["noisefind-no-flip"]}).to_csv(scores_file, index=False)
    write_reports(folder)


def write_reports(folder: Path) -> None:
    """``results.md`` and ``roc.png`` of a stored result, redrawn from its ``results.json`` and
    per-example scores (as the bench draws them)."""
    import json

    from sklearn.metrics import roc_curve

    from noisefind.bench import finite_scores, mean_roc
    from noisefind.bench_report import write_bench_results

    stored = json.loads((folder / "results.json").read_text())
    scores = pd.read_csv(next((folder / "scores").glob("*.csv")))
    is_noisy = scores["is_noisy"].to_numpy(dtype=bool)
    roc = {"none": {}}
    for name in stored["settings"]["detectors"]:
        fpr, tpr, _ = roc_curve(is_noisy, finite_scores(scores[name].to_numpy()))
        roc["none"][name] = mean_roc([(fpr, tpr)])
    write_bench_results(pd.DataFrame(stored["runs"]), folder, stored["settings"], roc,
                        {"decisions": stored.get("decisions", [])})


def results_table(folder: Path) -> str:
    """A markdown table of AUROC / AUPRC per detector over every ``cifar10n-*`` result."""
    import json

    runs = {}
    for file in sorted(folder.glob("cifar10n-*/results.json")):
        records = json.loads(file.read_text())["runs"]
        runs[file.parent.name.removeprefix("cifar10n-")] = {
            r["detector"]: (r["auroc"], r["auprc"]) for r in records}
    lines = ["| detector | " + " | ".join(runs) + " |",
             "| --- |" + " ---: |" * len(runs)]
    for detector in TABLE_DETECTORS:
        cells = [f"{r[detector][0]:.3f} / {r[detector][1]:.3f}" if detector in r else "n/a"
                 for r in runs.values()]
        lines.append(f"| `{detector}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", default="random1", help="label set: " + ", ".join(LABEL_SETS))
    parser.add_argument("--size", type=int, default=5000, help="images per part")
    parser.add_argument("--part", type=int, default=0, help="which disjoint part")
    parser.add_argument("--subset-seed", type=int, default=0, help="seed of the shuffle")
    parser.add_argument("--seed", type=int, default=0, help="bench seed")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--limit", type=int, default=1000, help="rows every detector scores")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--detectors", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--labels-csv", type=Path, default=SHARED / "cifar10n-labels.csv")
    parser.add_argument("--archive", type=Path, default=SHARED / "cifar10-jpg.tar.gz")
    parser.add_argument("--work", type=Path, default=Path("/tmp/noisefind-cifar10n"),
                        help="unpacked images, manifests and the bench cache")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--table", action="store_true",
                        help="print the AUROC / AUPRC table of every stored result and stop")
    parser.add_argument("--rescore", action="store_true",
                        help="recompute the consensus detectors of every stored result from "
                             "its per-example scores, then print the table")
    args = parser.parse_args()
    if args.rescore:
        for folder in sorted((REPO / "benchmarks" / "results").glob("cifar10n-*")):
            rescore(folder)
    if args.table or args.rescore:
        print(results_table(REPO / "benchmarks" / "results"))
        return

    from rich.console import Console

    from noisefind.bench import bench
    from noisefind.bench_report import bench_table, decisions_table
    from noisefind.data import load_data
    from noisefind.detectors import parse_detector_list
    from noisefind.train import TrainConfig

    name = f"cifar10n-{args.labels}-part{args.part}"
    images = unpack(args.archive, args.work)
    manifest = write_manifest(args.labels_csv, images, args.labels, args.size, args.part,
                              args.subset_seed, args.work / f"{name}.csv")
    data = load_data(manifest, progress=True)
    out = args.out or REPO / "benchmarks" / "results" / name
    work_out = args.work / name  # results and the cache; results are copied into the repo
    config = TrainConfig(width=args.width, epochs=args.epochs, device=args.device)
    runs = bench(data, ["none"], seeds=[args.seed],
                 detectors=parse_detector_list(args.detectors) if args.detectors else None,
                 train_config=config, folds=args.folds, limit=args.limit, out=work_out)
    out.mkdir(parents=True, exist_ok=True)
    for file in work_out.iterdir():
        if file.is_file():
            shutil.copy2(file, out / file.name)
    if (work_out / "scores").is_dir():
        shutil.copytree(work_out / "scores", out / "scores", dirs_exist_ok=True)
    Console().print(bench_table(runs))
    if runs.attrs.get("decisions"):
        Console().print(decisions_table(runs.attrs["decisions"]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
