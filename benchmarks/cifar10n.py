"""Bench every detector on CIFAR-10N: real human label noise, with the clean labels beside it.

    python benchmarks/cifar10n.py --labels random1 --part 0            # 5,000 images, CPU
    python benchmarks/cifar10n.py --labels aggre --part 1 --epochs 40   # -> ...-part1-e40

Builds an image manifest (``path,label,true_label``) from the CIFAR-10N label file and the
unpacked CIFAR-10 JPEG archive, for one label set (``aggre``, ``random1`` .. ``random3``,
``worst``) and one part of a seeded shuffle of the 40,000 labelled images (parts never
overlap), then runs ``noisefind bench MANIFEST --noise none`` on it (``--manifest-only``: writes the
manifest, prints its path and stops). Results go to
``benchmarks/results/cifar10n-<labels>-part<k>/`` in the bench's own format; its ``cache/`` is
kept outside the repository (``--work``) so a rerun resumes from the trained models. Another
shuffle (``--subset-seed``) draws fresh parts, named ``cifar10n-<labels>-shuffle<seed>-part<k>``:
they are disjoint from each other but overlap the first shuffle's. Models trained for other
than 20 epochs (the documented runs) add ``-e<epochs>`` to the name, and models fine-tuned
from a backbone (``--backbone torchvision:resnet18 --backbone-weights FILE``) its name (and
``-scratch`` when that architecture trains from scratch, without weights). Fold models of
the fast recipe (``--fold-recipe fast``) add ``-fast`` and, when they train other than 20
epochs (30 is the recipe's default now; ``--fold-epochs``), ``-fast<epochs>``.

CIFAR-10N: Wei et al., "Learning with Noisy Labels Revisited: A Study Using Real-World Human
Annotations", ICLR 2022 (labels released by UCSC-REAL under CC BY-NC 4.0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
# The CIFAR-10 archive and the CIFAR-10N labels: beside the repository by default; the GPU
# check (gpu_check.sh) points NOISEFIND_DATASETS at a copy inside it (the device machine
# sees only the repository).
SHARED = Path(os.environ.get("NOISEFIND_DATASETS", REPO.parent / "shared" / "datasets"))
LABEL_SETS = ("aggre", "random1", "random2", "random3", "worst")
EPOCHS = 20  # the documented runs; other lengths name their results -eN


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


TABLE_DETECTORS = ("noisefind", "noisefind-fold-flip", "noisefind-scanned",
                   "noisefind-neighbours-x2", "noisefind-no-neighbours", "three witnesses",
                   "two witnesses",
                   "confident_learning", "oos_margin", "neighbours", "cutoff+oos",
                   "oos_confidence", "mean_loss", "aum", "aum_folds", "fold_aum", "fold_flip",
                   "flip+dynamics", "flip_cost", "flip")


def results_table(folder: Path, fast: bool = False) -> str:
    """A markdown table of AUROC / AUPRC per detector over every ``cifar10n-*`` result with
    fold models of the paper's recipe, or (``fast``) of the fast recipe (``-fast``,
    ``-fast<epochs>``), where a last row gives the fold models' accuracy against the clean
    labels.

    A run made before today's default order shows its ``noisefind`` under the order of its
    time: ``three witnesses`` (before the neighbours witness: no ``neighbours`` row) or ``two
    witnesses`` (before the augmented one: no ``fold_flip`` row); its ablations, of that
    order, are left out. A detector no run has is left out too.
    """
    runs, accuracy = {}, {}
    for file in sorted(folder.glob("cifar10n-*/results.json")):
        if ("-fast" in file.parent.name) != fast:
            continue
        records = json.loads(file.read_text())["runs"]
        accuracy[file.parent.name] = records[0].get("fold_accuracy")
        scores = {r["detector"]: (r["auroc"], r["auprc"]) for r in records}
        if "neighbours" not in scores and "noisefind" in scores:
            earlier = "three witnesses" if "fold_flip" in scores else "two witnesses"
            scores[earlier] = scores.pop("noisefind")
            for ablation in ("noisefind-no-flip", "noisefind-no-augmented"):
                scores.pop(ablation, None)
        runs[file.parent.name.removeprefix("cifar10n-")] = scores
    lines = ["| detector | " + " | ".join(runs) + " |",
             "| --- |" + " ---: |" * len(runs)]
    for detector in TABLE_DETECTORS:
        if not any(detector in r for r in runs.values()):
            continue
        cells = [f"{r[detector][0]:.3f} / {r[detector][1]:.3f}" if detector in r else "n/a"
                 for r in runs.values()]
        lines.append(f"| `{detector}` | " + " | ".join(cells) + " |")
    if fast:
        lines.append("| fold models' accuracy | " + " | ".join(
            "n/a" if a is None else f"{a:.3f}" for a in accuracy.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", default="random1", help="label set: " + ", ".join(LABEL_SETS))
    parser.add_argument("--size", type=int, default=5000, help="images per part")
    parser.add_argument("--part", type=int, default=0, help="which disjoint part")
    parser.add_argument("--subset-seed", type=int, default=0, help="seed of the shuffle")
    parser.add_argument("--seed", type=int, default=0, help="bench seed")
    parser.add_argument("--epochs", type=int, default=EPOCHS,
                        help=f"epochs of every model; other than {EPOCHS} names the results -eN")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--backbone", default=None,
                        help="fine-tune this architecture from --backbone-weights instead "
                             "(benchmarks/pretrain_backbone.py makes them)")
    parser.add_argument("--backbone-weights", default=None)
    parser.add_argument("--lr", type=float, default=None,
                        help="default 0.1 from scratch, 0.01 with a backbone")
    parser.add_argument("--limit", type=int, default=1000, help="rows every detector scores")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fold-recipe", default="paper", choices=("paper", "fast"),
                        help="how the fold models train (fast: results named -fast)")
    parser.add_argument("--fold-epochs", type=int, default=None,
                        help="the fold models' epochs (default: the recipe's)")
    parser.add_argument("--detectors", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--labels-csv", type=Path, default=SHARED / "cifar10n-labels.csv")
    parser.add_argument("--archive", type=Path, default=SHARED / "cifar10-jpg.tar.gz")
    parser.add_argument("--work", type=Path, default=Path("/tmp/noisefind-cifar10n"),
                        help="unpacked images, manifests and the bench cache")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--manifest-only", action="store_true",
                        help="write the part's manifest, print its path and stop (for a "
                             "whole `noisefind scan` of it)")
    parser.add_argument("--table", action="store_true",
                        help="print the AUROC / AUPRC table of every stored result and stop")
    parser.add_argument("--rescore", action="store_true",
                        help="recompute the consensus detectors of the stored results made "
                             "before the consensus order (or rescored before) from their "
                             "per-example scores (benchmarks/rescore.py), then print the table")
    args = parser.parse_args()
    if args.rescore:
        from rescore import rescore

        for folder in sorted((REPO / "benchmarks" / "results").glob("cifar10n-*")):
            settings = json.loads((folder / "results.json").read_text())["settings"]
            if "cutoff+oos" not in settings["detectors"] or settings.get("rescored"):
                rescore(folder)  # made before the consensus order, or rescored before
    if args.table or args.rescore:
        print(results_table(REPO / "benchmarks" / "results", fast=args.fold_recipe == "fast"))
        return

    from rich.console import Console

    from noisefind.bench.detectors import parse_detector_list
    from noisefind.bench.report import bench_table, decisions_table
    from noisefind.bench.runner import bench
    from noisefind.data.load import load_data
    from noisefind.training.config import BACKBONE_LR, TrainConfig

    # A shuffle other than the first names its parts apart: they overlap the first's.
    shuffle = f"-shuffle{args.subset_seed}" if args.subset_seed else ""
    length = f"-e{args.epochs}" if args.epochs != EPOCHS else ""
    backbone = (f"-{args.backbone.split(':')[-1]}{'' if args.backbone_weights else '-scratch'}"
                if args.backbone else "")
    folds = ""
    if args.fold_recipe == "fast":
        from noisefind.training.fast_recipe import FAST

        fold_epochs = args.fold_epochs or FAST["epochs"]
        folds = "-fast" if fold_epochs == EPOCHS else f"-fast{fold_epochs}"
    name = f"cifar10n-{args.labels}{shuffle}-part{args.part}{length}{backbone}{folds}"
    images = unpack(args.archive, args.work)
    manifest = write_manifest(args.labels_csv, images, args.labels, args.size, args.part,
                              args.subset_seed, args.work / f"{name}.csv")
    if args.manifest_only:
        print(manifest)
        return
    data = load_data(manifest, progress=True)
    out = args.out or REPO / "benchmarks" / "results" / name
    work_out = args.work / name  # results and the cache; results are copied into the repo
    lr = args.lr or (BACKBONE_LR if args.backbone else TrainConfig.lr)
    config = TrainConfig(width=args.width, epochs=args.epochs, device=args.device, lr=lr,
                         backbone=args.backbone, backbone_weights=args.backbone_weights,
                         fold_recipe=args.fold_recipe, fold_epochs=args.fold_epochs)
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
    accuracy = runs["fold_accuracy"].iloc[0] if "fold_accuracy" in runs else None
    if accuracy is not None:
        print(f"fold models' accuracy against the clean labels: {accuracy:.3f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
