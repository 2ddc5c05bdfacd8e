"""Own model on CIFAR-10N: a torchvision ResNet-18 trained as a user would, scanned by noisefind,
against confident learning on the same model.

    python benchmarks/own_model.py --size 5000 --epochs 30 --limit 1000 --folds 5
    python benchmarks/own_model.py --size 200 --epochs 1 --limit 20 --folds 2 --max-units 5 \\
        --noise-copies 1 --reference-size 2 --out /tmp/own-model-smoke    # a smoke test

1. A manifest (``path,label,true_label``) of ``--size`` CIFAR-10N images (one label set, one
   part of a seeded shuffle; ``benchmarks/cifar10n.py``), read as 32x32 colour in [0, 1].
2. The user's model: ``torchvision.models.resnet18(num_classes=10)`` trained here by a plain
   loop (SGD with Nesterov momentum, linear warm-up and decay, inputs standardised with the
   training set's per-channel mean and std, no augmentation so that it fits the given labels),
   its weights saved as safetensors. No pretrained weights are involved.
3. ``noisefind.find_label_issues(MANIFEST, model="torchvision:resnet18", weights=FILE,
   mean=..., std=...)`` on ``--limit`` rows: the flip search's score (the only ranking signal of
   a model trained elsewhere, see the README) and the model's loss beside it.
4. Confident learning (cleanlab) on the same rows, with probabilities of the same model
   (in-sample: what a user with one model has), and with cross-validated probabilities from
   ``--folds`` models of the same recipe (the usual setting of confident learning; 0 skips).

Writes ``results.json`` (AUROC and AUPRC of each ranking against ``true_label``, settings and
seconds) to ``--out`` (default ``benchmarks/results/own-model-<labels>-part<k>``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cifar10n import LABEL_SETS, SHARED, unpack, write_manifest  # noqa: E402


def train_resnet18(x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                   epochs: int, seed: int, device: torch.device, lr: float = 0.05,
                   batch_size: int = 128) -> torch.nn.Module:
    """The user's training: a plain loop over a torchvision ResNet-18, nothing of noisefind."""
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=int(y.max()) + 1).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    steps = epochs * math.ceil(len(x) / batch_size)
    warmup = max(1, steps // 5)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup + 1))))
    x = ((x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).to(device)
    y = y.to(device)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            if len(batch) < 2:
                continue  # BatchNorm needs two
            loss = F.cross_entropy(model(x[batch.to(device)]), y[batch.to(device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def probabilities(model, x, mean, std, device, batch_size: int = 512) -> np.ndarray:
    out = []
    for start in range(0, len(x), batch_size):
        xb = ((x[start:start + batch_size] - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1))
        out.append(torch.softmax(model(xb.to(device)).float(), 1).cpu())
    return torch.cat(out).numpy().astype(np.float64)


def scores_quality(noisy: np.ndarray, score: np.ndarray) -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {"auroc": round(float(roc_auc_score(noisy, score)), 4),
            "auprc": round(float(average_precision_score(noisy, score)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", default="random1", help="label set: " + ", ".join(LABEL_SETS))
    parser.add_argument("--size", type=int, default=5000, help="images")
    parser.add_argument("--part", type=int, default=0, help="which disjoint part of the shuffle")
    parser.add_argument("--subset-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of the user's training")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--limit", type=int, default=1000, help="rows scanned and scored")
    parser.add_argument("--max-units", type=int, default=100)
    parser.add_argument("--noise-copies", type=int, default=5)
    parser.add_argument("--reference-size", type=int, default=16)
    parser.add_argument("--folds", type=int, default=5,
                        help="models for cross-validated confident learning (0: skip)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--labels-csv", type=Path, default=SHARED / "cifar10n-labels.csv")
    parser.add_argument("--archive", type=Path, default=SHARED / "cifar10-jpg.tar.gz")
    parser.add_argument("--work", type=Path, default=Path("/tmp/noisefind-cifar10"),
                        help="holds (or receives) the unpacked images, the manifest, weights")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import noisefind
    from noisefind.base.device import resolve_device
    from noisefind.bench.detectors import cleanlab_scores
    from noisefind.data.load import load_data
    from noisefind.signals.out_of_sample import cv_folds

    device = resolve_device(args.device)
    name = f"own-model-{args.labels}-part{args.part}"
    out = args.out or REPO / "benchmarks" / "results" / name
    images = unpack(args.archive, args.work)
    manifest = write_manifest(args.labels_csv, images, args.labels, args.size, args.part,
                              args.subset_seed, args.work / f"{name}-{args.size}.csv")
    data = load_data(manifest, progress=True)
    mean, std = data.x.mean(dim=(0, 2, 3)), data.x.std(dim=(0, 2, 3))

    started = time.perf_counter()
    model = train_resnet18(data.x, data.y, mean, std, args.epochs, args.seed, device, args.lr)
    seconds = {"training": round(time.perf_counter() - started, 1)}
    from safetensors.torch import save_file

    weights = args.work / f"{name}-resnet18.safetensors"
    save_file({k: v.cpu().contiguous() for k, v in model.state_dict().items()}, str(weights))
    probs = probabilities(model, data.x, mean, std, device)
    train_accuracy = float((probs.argmax(1) == data.y.numpy()).mean())

    started = time.perf_counter()
    result = noisefind.find_label_issues(
        data, model="torchvision:resnet18", weights=weights, mean=mean.tolist(),
        std=std.tolist(), limit=args.limit, max_units=args.max_units, seed=args.seed,
        noise_copies=args.noise_copies, reference_size=args.reference_size,
        device=args.device, progress=True)
    seconds["flip_search"] = round(time.perf_counter() - started, 1)
    table = result.table
    rows = table["index"].to_numpy()  # the manifest's rows (index = row of the training set)
    noisy = table["is_noisy"].to_numpy()
    labels = data.y.numpy()
    rankings = {
        "flip score (noisefind, own model)": scores_quality(noisy, table["score"].to_numpy()),
        "loss of the own model": scores_quality(noisy, table["loss"].to_numpy()),
        "confident learning, the own model's probabilities": scores_quality(
            noisy, cleanlab_scores(labels, probs)[rows]),
    }
    if args.folds:
        started = time.perf_counter()
        held_probs = np.zeros_like(probs)
        for fold, held in enumerate(cv_folds(labels, args.folds, args.seed)):
            kept = torch.from_numpy(np.setdiff1d(np.arange(len(data)), held))
            fold_model = train_resnet18(data.x[kept], data.y[kept], mean, std, args.epochs,
                                        args.seed + fold + 1, device, args.lr)
            held_probs[held] = probabilities(fold_model, data.x[torch.from_numpy(held)], mean,
                                             std, device)
        rankings[f"confident learning, {args.folds}-fold cross-validated ResNet-18s"] = \
            scores_quality(noisy, cleanlab_scores(labels, held_probs)[rows])
        seconds["cross_validation"] = round(time.perf_counter() - started, 1)

    report = {
        "data": {"manifest": str(manifest), "label_set": args.labels, "images": len(data),
                 "part": args.part, "noise_rate": round(float(data.is_noisy.float().mean()), 4)},
        "model": {"architecture": "torchvision resnet18", "epochs": args.epochs, "lr": args.lr,
                  "train_accuracy_given_labels": round(train_accuracy, 4)},
        "scanned": len(table), "mislabeled_scanned": int(noisy.sum()),
        "flip_settings": result.summary.get("settings"), "rankings": rankings, "seconds": seconds,
        "device": str(device), "own_model": result.summary.get("own_model"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    for ranking, quality in rankings.items():
        print(f"{ranking}: AUROC {quality['auroc']:.3f}, AUPRC {quality['auprc']:.3f}")
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
