"""Where does memorization live? The paper's Figures 1-4 and the Feldman-Zhang estimate, on CPU.

    python benchmarks/localize.py --data digits --width 0.5 --epochs 30 --checkpoint-every 3
    python benchmarks/localize.py --data mnist5k --width 0.5 --epochs 30 --checkpoint-every 3 \
        --retrain-epochs 10
    python benchmarks/localize.py --data digits --memorization --models 4,8,16,32,48 \
        --width 0.25 --epochs 30

Layer analyses: trains on DATA with 10% symmetric noise (noise seed 0), tracking the per-layer
gradients of clean and mislabeled examples and keeping checkpoints, then runs the three analyses
(gradients, rewind, retrain) and writes their JSON and PNG files to
``benchmarks/results/localize_<data>/`` with ``summary.json``: the headline numbers next to the
paper's claims. The run folder itself (weights, checkpoints) goes to a temporary folder.

``--memorization``: the Feldman-Zhang estimate from subset models of the given width and epochs;
the models are trained once (resumable, in a temporary folder) and the estimate is read after
the first 4, 8, ... of them, to show how its AUROC as a detector grows with the number of
models. Writes ``benchmarks/results/memorization_<data>.json`` and ``.png``.

One intra-op thread (the machine is shared; the models are tiny).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from noisefind.analyses.gradients import GradientTracker
from noisefind.analyses.localize import (
    RetrainSettings,
    gradient_figures,
    retrain,
    rewind,
    save_analysis,
)
from noisefind.analyses.memorization import MemorizationSettings, memorization, summarize
from noisefind.analyses.report import plot_memorization
from noisefind.base.files import write_json
from noisefind.data.load import load_data
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit
from noisefind.training.runs import load_run

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--noise", default="symmetric:0.1")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--checkpoint-every", type=int, default=3)
    parser.add_argument("--retrain-epochs", type=int, default=20)
    parser.add_argument("--retrain-lr", type=float, default=0.01)
    parser.add_argument("--memorization", action="store_true")
    parser.add_argument("--models", default="4,8,16,32,48")
    parser.add_argument("--subset", type=float, default=0.7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = load_data(args.data, progress=True).with_noise(args.noise, seed=0)
    name = Path(args.data).name or args.data
    if args.memorization:
        memorization_curve(data, name, args)
    else:
        layer_analyses(data, name, args)


def layer_analyses(data, name: str, args) -> None:
    out = RESULTS / f"localize_{name}"
    timings = {}
    with tempfile.TemporaryDirectory(prefix="noisefind-localize-") as folder:
        config = TrainConfig(width=args.width, epochs=args.epochs, device=args.device,
                             checkpoint_every=args.checkpoint_every)
        started = time.perf_counter()
        fit(data, config, out=folder, step_hook=GradientTracker)
        timings["train_with_tracking"] = time.perf_counter() - started
        run = load_run(folder, device=args.device)
        gradients = gradient_figures(run)
        save_analysis("gradients", gradients, out)
        started = time.perf_counter()
        rewound = rewind(run, data, progress=True)
        timings["rewind"] = time.perf_counter() - started
        save_analysis("rewind", rewound, out)
        started = time.perf_counter()
        retrained = retrain(run, data, settings=RetrainSettings(
            epochs=args.retrain_epochs, lr=args.retrain_lr), progress=True)
        timings["retrain"] = time.perf_counter() - started
        save_analysis("retrain", retrained, out)
        metrics = run.config["metrics"]
    summary = {
        "data": args.data, "noise": args.noise, "examples": len(data),
        "train": {"width": args.width, "epochs": args.epochs, "arch": run.config["arch"],
                  "checkpoint_every": args.checkpoint_every, "metrics": metrics},
        "gradients": gradients["summary"],
        "rewind": rewind_headlines(rewound),
        "retrain": {g: rec["retrained"] for g, rec in retrained["records"].items()},
        "retrain_settings": retrained["settings"],
        "final": retrained["final"],
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "machine": machine(),
        "command": "python benchmarks/localize.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k not in ("memorization", "models", "subset")),
    }
    write_json(out / "summary.json", summary)
    print(json.dumps({k: summary[k] for k in ("gradients", "rewind", "retrain")}, indent=1))


def rewind_headlines(result: dict) -> dict:
    """Per group: accuracy after rewinding to epoch 0 and to the middle kept checkpoint."""
    epochs = result["epochs"]
    middle = epochs[len(epochs) // 2]
    rows = {}
    for g, group in enumerate(result["groups"]):
        rows[group] = {
            f"epoch_{e}": {"clean": result["clean_accuracy"][k][g],
                           "mislabeled": result["noisy_accuracy"][k][g]}
            for k, e in enumerate(epochs) if e in (0, middle)}
    return rows


def memorization_curve(data, name: str, args) -> None:
    counts = [int(k) for k in args.models.split(",")]
    config = TrainConfig(width=args.width, epochs=args.epochs, device=args.device)
    curve = []
    with tempfile.TemporaryDirectory(prefix="noisefind-memorization-") as folder:
        started = time.perf_counter()
        for models in counts:  # each call trains only the models the previous one lacked
            settings = MemorizationSettings(models=models, subset=args.subset)
            result = memorization(data, settings, config, out=folder)
            curve.append({"models": models, **summarize(result, settings),
                          "seconds": round(time.perf_counter() - started, 1)})
            print(json.dumps({k: curve[-1][k] for k in ("models", "auroc", "auprc",
                                                        "mean_memorization_clean",
                                                        "mean_memorization_mislabeled")}))
    plot_memorization(result.table, RESULTS / f"memorization_{name}.png")
    write_json(RESULTS / f"memorization_{name}.json", {
        "data": args.data, "noise": args.noise, "examples": len(data), "subset": args.subset,
        "train": {"width": args.width, "epochs": args.epochs}, "curve": curve,
        "machine": machine(),
        "command": f"python benchmarks/localize.py --data {args.data} --memorization "
                   f"--models {args.models} --width {args.width} --epochs {args.epochs}"})
    mislabeled = result.table[result.table["is_noisy"]]
    print("mislabeled: accuracy in", np.nanmean(mislabeled["accuracy_in"]), "out",
          np.nanmean(mislabeled["accuracy_out"]))


def machine() -> dict:
    import os

    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


if __name__ == "__main__":
    main()
