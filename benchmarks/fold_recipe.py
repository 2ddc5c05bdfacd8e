"""The fold models' recipe: accuracy, detection and time of each variant, side by side.

    python benchmarks/fold_recipe.py --labels random1 --part 0           # ablation, one fold
    python benchmarks/fold_recipe.py --labels aggre --part 0 --variants fast,paper
    python benchmarks/fold_recipe.py --cifar10 --fold-epochs 10          # all 50,000 (GPU)

On one CIFAR-10N part (``benchmarks/cifar10n.py``'s manifest), each variant trains the model
of fold 0 of the scan's 5-fold split (4,000 images) and judges the 1,000 it held out: its
accuracy against the clean labels and against the given ones, and how well its probability of
the given label ranks the wrong labels among them (AUROC: confident learning's evidence on this
fold), how well the area under the margin ranks the wrong labels among the 4,000 it trained on
(``aum_auroc``: the in-sample witness's evidence), with the seconds it trained. Variants
(``--fold-epochs`` sets every variant's epochs):

- ``paper``: the fold models before the fast recipe (the scanned model's ResNet-9 at
  ``--width``, with augmentation), trained for the scanned model's ``--epochs``;
- ``fast``: the fast recipe (noisefind's default for colour images), its own 30 epochs;
- ``fast-no-X``: the fast recipe without one ingredient: ``whitening`` (the stem learns from a
  random start), ``views`` (no test-time views), ``lookahead``, ``bias-scale`` (BatchNorm
  shifts at the base learning rate);
- ``fast-smoothing``: the fast recipe with airbench's label smoothing (0.2);
- ``fast:e30``, ``fast:w0.75``, ``fast:e30:w0.75``: the fast recipe at another epoch count or
  width (the other variants train the recipe's epochs at its width); ``fast:s3``: three
  models of the fold, seeded apart, their probabilities averaged (seconds: all three);
  ``fast:c12``: a 12-pixel cutout in every training view; ``fast:g0.7``: the generalised
  cross-entropy at q = 0.7 instead of the cross-entropy; ``fast:t``: trained on the true
  labels (the recipe's ceiling on the fold);
- ``pretrained``: noisefind's fold network started from ``--weights`` (``scan --backbone
  noisefind:fast``: the fast recipe, its 15 epochs; ``pretrained:e30`` for 30).

``--cifar10`` trains the fast recipe on the 50,000 CIFAR-10 training images and tests it on
the 10,000 test images (the GPU check). Writes ``benchmarks/results/fold_recipe-<name>.json``
(``--out`` to move it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from noisefind.base.device import resolve_device
from noisefind.data.load import load_data
from noisefind.models import whitened
from noisefind.models.predict import predict_logits
from noisefind.signals.out_of_sample import FOLD_MODEL_SEEDS, cv_folds, out_of_sample_config
from noisefind.training import fast_recipe
from noisefind.training import views as views_module
from noisefind.training.config import TrainConfig
from noisefind.training.fast_recipe import OWN_BACKBONE
from noisefind.training.fit import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar10n import SHARED, unpack, write_manifest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("paper", "fast", "fast-no-whitening", "fast-no-views", "fast-no-lookahead",
            "fast-no-bias-scale", "fast-smoothing")


@contextmanager
def without(ingredient: str):
    """The fast recipe less one ingredient, for the duration of the block."""
    saved = (whitened.Whitening.fit, fast_recipe.LOOKAHEAD_START, fast_recipe.BIAS_SCALE)

    def learned_stem(stem, x):  # a stem that starts random and learns like any conv
        torch.nn.init.kaiming_uniform_(stem.weight, a=5 ** 0.5)
        stem.weight.requires_grad_(True)

    if ingredient == "whitening":
        whitened.Whitening.fit = learned_stem
    elif ingredient == "lookahead":
        fast_recipe.LOOKAHEAD_START = float("inf")
    elif ingredient == "bias-scale":
        fast_recipe.BIAS_SCALE = 1.0
    try:
        yield
    finally:
        whitened.Whitening.fit, fast_recipe.LOOKAHEAD_START, fast_recipe.BIAS_SCALE = saved


@contextmanager
def cutout(size: int):
    """Training views with a ``size``-pixel square of each image (at a random place, partly
    off the image at the borders) set to the batch's mean colour (DeVries & Taylor 2017), for
    the duration of the block; 0 leaves the views as they are."""
    original = views_module.ImageViews.__call__

    def with_cutout(self, x):
        x = original(self, x)
        n, side = len(x), x.shape[-1]
        corner = torch.randint(-size // 2, side - size // 2 + 1, (2, n), generator=self.generator)
        grid = torch.arange(side)
        rows, columns = ((grid[None] >= c[:, None]) & (grid[None] < c[:, None] + size)
                         for c in corner)
        hole = (rows[:, :, None] & columns[:, None, :])[:, None].to(x.device)
        fill = x.float().mean((0, 2, 3), keepdim=True).to(x.dtype)
        return torch.where(hole, fill, x)

    if size:
        views_module.ImageViews.__call__ = with_cutout
    try:
        yield
    finally:
        views_module.ImageViews.__call__ = original


class GeneralizedCrossEntropy:
    """A step hook that learns from the generalised cross-entropy ``(1 - p**q) / q`` of the
    given label's probability ``p`` (Zhang & Sabuncu 2018), a loss bounded for the rows a
    model cannot fit (wrong labels), instead of the cross-entropy ``-log p``."""

    def __init__(self, q: float):
        self.q = q

    def __call__(self, model, data, epochs):
        return self

    def backward(self, losses: torch.Tensor, rows: torch.Tensor, epoch: int) -> None:
        ((1 - torch.exp(-self.q * losses)) / self.q).mean().backward()  # p**q = exp(-q * CE)

    def result(self) -> dict:
        return {}


@dataclass
class Variant:
    """How one variant trains and predicts."""

    config: TrainConfig
    views: bool = True  # predict through the test-time views
    left_out: str = ""  # the fast recipe's ingredient left out
    seeds: int = 1  # models of the fold, seeded apart, their probabilities averaged
    cutout: int = 0  # side of the square cut out of each training view
    gce: float = 0.0  # q of the generalised cross-entropy (0: the cross-entropy)
    truth: bool = False  # trained on the true labels: the recipe's ceiling on this fold


SUFFIXES = {"e": "epochs", "w": "width", "s": "seeds", "c": "cutout", "g": "gce"}


def variant_of(name: str, scanned: TrainConfig, data) -> Variant:
    """The :class:`Variant` named ``name`` (``pretrained``: from ``scanned``'s backbone
    weights); suffixes ``:e30``, ``:w0.75`` (epochs, width), ``:s3`` (seeds), ``:c12``
    (cutout), ``:g0.7`` (generalised cross-entropy), ``:t`` (the true labels)."""
    name, *suffixes = name.split(":")
    if suffixes:
        variant = variant_of(name, scanned, data)
        for suffix in suffixes:
            if suffix == "t":
                variant.truth = True
                continue
            field, value = SUFFIXES[suffix[0]], suffix[1:]
            if field in ("epochs", "width"):
                config = variant.config
                variant.config = replace(config, **{field: type(getattr(config, field))(value)})
            else:
                setattr(variant, field, type(getattr(variant, field))(value))
        return variant
    if name == "pretrained":
        if scanned.backbone_weights is None:
            raise SystemExit("the pretrained variant needs --weights")
        return Variant(out_of_sample_config(replace(scanned, backbone=OWN_BACKBONE), data))
    scanned = replace(scanned, backbone_weights=None)  # the other variants start from scratch
    if name == "paper":
        return Variant(out_of_sample_config(replace(scanned, fold_recipe="paper"), data),
                       views=False)
    config = out_of_sample_config(scanned, data)
    if name == "fast-smoothing":
        return Variant(replace(config, label_smoothing=0.2))
    left_out = name.removeprefix("fast-no-") if name != "fast" else ""
    return Variant(config, views=left_out != "views", left_out=left_out)


def measure(data, kept: np.ndarray, held: np.ndarray, variant: Variant, test=None) -> dict:
    """Train ``variant`` on ``kept`` (its models' probabilities averaged); accuracy (and
    AUROC) on ``held`` or on ``test`` (x, y)."""
    x, truth, given = (data.x[held], data.true_y.numpy()[held], data.y.numpy()[held]) \
        if test is None else (test.x, test.y.numpy(), test.y.numpy())
    trained = data.subset(torch.from_numpy(kept))
    if variant.truth:
        trained = replace(trained, y=trained.true_y.clone())
    config, seeds = variant.config, variant.seeds
    hook = GeneralizedCrossEntropy(variant.gce) if variant.gce else None
    seconds, probabilities, margins = 0.0, 0.0, 0.0
    for seed in range(seeds):
        with without(variant.left_out), cutout(variant.cutout):
            start = time.perf_counter()
            seeded = replace(config, seed=config.seed + FOLD_MODEL_SEEDS * seed)  # as a scan's
            run = fit(trained, seeded, progress=False, step_hook=hook)
            seconds += time.perf_counter() - start
        probabilities = probabilities + torch.softmax(
            predict_logits(run.model, x, views=variant.views), 1).cpu().numpy() / seeds
        margins = margins + run.history.margin.astype(np.float64).mean(0) / seeds
    predicted = probabilities.argmax(1)
    record = {"train_seconds": round(seconds, 1), "epochs": config.epochs, "examples": len(kept),
              "accuracy": round(float((predicted == truth).mean()), 4),
              "given_accuracy": round(float((predicted == given).mean()), 4)}
    wrong = given != truth
    if 0 < wrong.sum() < len(wrong):
        given_probability = probabilities[np.arange(len(given)), given]
        record["auroc"] = round(float(roc_auc_score(wrong, -given_probability)), 4)
    trained_wrong = None if data.true_y is None else \
        data.y.numpy()[kept] != data.true_y.numpy()[kept]
    if trained_wrong is not None and 0 < trained_wrong.sum() < len(kept):
        # the in-sample witness's evidence: the area under the margin of the rows it trained on
        record["aum_auroc"] = round(float(roc_auc_score(trained_wrong, -margins)), 4)
    return record


def subset_manifest(folder: Path, size: int, work: Path) -> Path:
    """A manifest of a seeded ``size`` of an image folder's files (smoke runs)."""
    files = sorted(folder.glob("*/*.jpg"))
    chosen = sorted(np.random.default_rng(0).permutation(len(files))[:size])
    manifest = work / f"fold-recipe-{folder.name}-{size}.csv"
    lines = ["path,label"] + [f"{files[i]},{files[i].parent.name}" for i in chosen]
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", default="random1")
    parser.add_argument("--part", type=int, default=0)
    parser.add_argument("--subset-seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=float, default=0.25, help="the paper variant's width")
    parser.add_argument("--fold-epochs", type=int, default=None,
                        help="every variant's epochs (default: the fast recipe's own, and "
                             "--epochs for paper)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--cifar10", action="store_true",
                        help="the fast recipe on all 50,000 CIFAR-10 training images")
    parser.add_argument("--subset", type=int, default=None,
                        help="with --cifar10: this many training and test images only")
    parser.add_argument("--weights", type=Path, default=None,
                        help="noisefind's fold network pretrained elsewhere (the pretrained "
                             "variant; benchmarks/pretrain_backbone.py --spec noisefind:fast)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, default=Path("/tmp/noisefind-cifar10n"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    scanned = TrainConfig(width=args.width, epochs=args.epochs, device=args.device, seed=1,
                          fold_epochs=args.fold_epochs,
                          backbone_weights=None if args.weights is None else str(args.weights))
    images = unpack(SHARED / "cifar10-jpg.tar.gz", args.work)
    device = resolve_device(args.device)
    meta = {"epochs": args.epochs, "fold_epochs": args.fold_epochs, "device": str(device),
            "platform": platform.platform(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    if args.cifar10:
        train, test = (load_data(images / split) if not args.subset else
                       load_data(subset_manifest(images / split, args.subset, args.work))
                       for split in ("train", "test"))
        kept = np.arange(len(train))
        results = {"fast": measure(train, kept, kept, variant_of("fast", scanned, train),
                                   test=test)}
        name = "cifar10"
    else:
        shuffle = f"-shuffle{args.subset_seed}" if args.subset_seed else ""
        name = f"cifar10n-{args.labels}{shuffle}-part{args.part}-e{args.epochs}"
        manifest = write_manifest(SHARED / "cifar10n-labels.csv", images, args.labels,
                                  args.size, args.part, args.subset_seed,
                                  args.work / f"fold-recipe-{name}.csv")
        data = load_data(manifest)
        held = cv_folds(data.y.numpy(), 5, scanned.seed - 1)[0]  # the scan's fold 0 (seed 0)
        kept = np.setdiff1d(np.arange(len(data)), held)
        results = {}
        for variant in args.variants.split(","):
            results[variant] = measure(data, kept, held, variant_of(variant, scanned, data))
            print(variant, results[variant], flush=True)
    print(f"{'variant':<22} {'seconds':>8} {'accuracy':>9} {'given':>6} {'auroc':>6}")
    for variant, r in results.items():
        print(f"{variant:<22} {r['train_seconds']:>8} {r['accuracy']:>9.3f} "
              f"{r['given_accuracy']:>6.3f} {r.get('auroc', float('nan')):>6.3f}")
    out = args.out or REPO / "benchmarks" / "results" / f"fold_recipe-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": meta, "results": results}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
