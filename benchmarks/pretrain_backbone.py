"""Pretrain a backbone on images disjoint from the ones it will scan, for ``scan --backbone``.

    python benchmarks/pretrain_backbone.py --epochs 15 --out /tmp/backbone-resnet18.safetensors
    python benchmarks/pretrain_backbone.py --spec noisefind:fast --epochs 30 \
        --out /tmp/backbone-noisefind-fast.safetensors

Trains ``torchvision:resnet18`` (no downloaded weights: nothing can be downloaded here) on the
10,000 CIFAR-10 *test* images, which are disjoint from the 40,000 CIFAR-10N training images the
benchmarks scan, with noisefind's own loop (shifted and flipped views, SGD, the paper's
schedule), and saves the network's weights as safetensors; ``noisefind:fast`` (noisefind's
own fold network) trains as the fold models do, with the fast recipe (seed 1, as a scan's
first fold model). Prints the training accuracy and writes
``benchmarks/results/pretrain-backbone.json`` (``pretrain-backbone-noisefind-fast.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cifar10n import SHARED, unpack
from safetensors.torch import save_file

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="torchvision:resnet18")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--archive", type=Path, default=SHARED / "cifar10-jpg.tar.gz")
    parser.add_argument("--work", type=Path, default=Path("/tmp/noisefind-cifar10n"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/backbone-resnet18.safetensors"))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from noisefind.data.load import load_data
    from noisefind.signals.out_of_sample import out_of_sample_config
    from noisefind.training.config import TrainConfig
    from noisefind.training.fast_recipe import OWN_BACKBONE
    from noisefind.training.fit import fit

    images = unpack(args.archive, args.work) / "test"
    data = load_data(images, progress=True)
    own = args.spec == OWN_BACKBONE
    config = out_of_sample_config(TrainConfig(seed=1, fold_epochs=args.epochs,
                                              device=args.device), data) if own else \
        TrainConfig(backbone=args.spec, epochs=args.epochs, lr=args.lr, augment=True,
                    batch_size=256, device=args.device)
    started = time.perf_counter()
    run = fit(data, config)
    seconds = time.perf_counter() - started
    state = {k.removeprefix("module."): v.contiguous() for k, v in run.model.state_dict().items()
             if own or k.startswith("module.")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out))
    record = {"command": "python benchmarks/pretrain_backbone.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                  if k in ("spec", "epochs") or (k == "lr" and not own)),
              "images": len(data), "seconds": round(seconds, 1),
              "train_accuracy": run.config["metrics"], "weights": str(args.out)}
    RESULTS.mkdir(exist_ok=True)
    name = "pretrain-backbone-noisefind-fast.json" if own else "pretrain-backbone.json"
    (RESULTS / name).write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
