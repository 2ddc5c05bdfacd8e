"""Recompute the consensus detectors of stored bench results from their per-example scores.

    python benchmarks/rescore.py benchmarks/results/bench-digits-consensus

``noisefind`` (the scan's default order) and its ablations are functions of the stored
per-example signals of the same rows
(:func:`noisefind.decide.consensus.consensus_score`), so a result made with an earlier form of the
order, or before it existed, is brought up to date without retraining. A result from before
the consensus order keeps its canary-weighed default (then named ``noisefind``) as
``cutoff+oos`` and drops that default's ablation. The ``noisefind`` decision becomes the
consensus order's top rows, as many as the canaries' estimate. The charge is the training plus
the flip search (``flip_cost``'s seconds) plus the K-fold models (``oos_margin``'s seconds).
``settings.rescored`` says what was done; ``results.md`` and ``roc.png`` are redrawn.

Results made before the fold-model signals hold no ``fold_flip`` or ``neighbours`` column, so
what it writes there as ``noisefind`` is the two-witness order (the out-of-sample witness and
the scanned model's in-sample one), as ``benchmarks/cifar10n.py --table`` shows it. A result
that holds every signal of today's order (:data:`noisefind.decide.consensus.SIGNALS`) gets
today's order, its ablation ``noisefind-no-neighbours``, the order with the flip search on the
fold models in its in-sample witness (``noisefind-fold-flip``, the default until the search left
it; ``noisefind-no-flip`` of earlier results, the order now, is dropped), the order with the
neighbours' vote counted twice (``noisefind-neighbours-x2``) and the order before the in-sample
witness moved to the fold models (``noisefind-scanned``, from the stored ``aum`` and
``flip_cost``). Their seconds are what the bench charges each for its inputs: the K-fold models
(``oos_margin``'s seconds), their features (``neighbours``'s, which include the K-fold models)
and the flip search on them (``fold_flip``'s, which include them too);
``noisefind-scanned`` keeps the stored order's seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

RESCORED = ("noisefind and noisefind-no-flip recomputed from the stored oos_margin, aum and "
            "flip_cost scores with the consensus order of the code that rescored them; the "
            "noisefind decision flags the consensus order's top rows")
RESCORED_CURRENT = ("noisefind, its ablations and noisefind-scanned recomputed from the stored "
                    "scores of every signal of the consensus order of the code that rescored "
                    "them (seconds: what the bench charges for their inputs); the noisefind "
                    "decision flags its top rows")


def scores_file(folder: Path, noise: str, seed: int) -> Path:
    """The per-example scores of one setting, as the bench names them."""
    kind, _, rate = noise.partition(":")
    return folder / "scores" / f"{kind}-{float(rate or 0):g}_seed{seed}.csv"


def rescore(folder: Path) -> None:
    """Bring the consensus rows, decisions and scores of ``folder`` up to date (see above)."""
    from noisefind.bench.detectors import (
        FOLD_FLIP_WITNESSES,
        SCANNED_MODEL_WITNESSES,
        WEIGHTED_ORDERS,
    )
    from noisefind.bench.runner import detection_metrics
    from noisefind.decide.consensus import (
        NEIGHBOURS,
        SIGNALS,
        WITNESSES,
        consensus_score,
        flag_top,
    )
    from noisefind.decide.cutoff import flag_metrics

    stored = json.loads((folder / "results.json").read_text())
    settings, runs = stored["settings"], stored["runs"]
    if "cutoff+oos" not in settings["detectors"] and "neighbours" not in settings["detectors"]:
        # made before the consensus order: its noisefind was the cutoff with held-out evidence
        runs = [{**r, "detector": "cutoff+oos"} if r["detector"] == "noisefind" else r
                for r in runs if r["detector"] != "noisefind-no-flip"]
        settings["detectors"] = [d for d in settings["detectors"] if not d.startswith(
            "noisefind")] + ["cutoff+oos", "noisefind", "noisefind-no-flip"]
        renamed = True
    else:
        renamed = False
    by_key = {(r["detector"], r["noise"], r["seed"]): r for r in runs}
    decisions = stored.get("decisions", [])
    for noise, seed in sorted({(r["noise"], r["seed"]) for r in runs}):
        path = scores_file(folder, noise, seed)
        scores = pd.read_csv(path)
        if renamed:
            scores = scores.rename(columns={"noisefind": "cutoff+oos"})
        is_noisy = scores["is_noisy"].to_numpy(dtype=bool)
        current = all(name in scores for name in (*SIGNALS, "fold_flip"))
        if current:
            signals = {name: scores[name] for name in (*SIGNALS, "fold_flip", "aum", "flip_cost")}
            forms = {"noisefind": {}, "noisefind-fold-flip": {"witnesses": FOLD_FLIP_WITNESSES},
                     "noisefind-no-neighbours": {"without": NEIGHBOURS},
                     **{name: {"weights": w} for name, w in WEIGHTED_ORDERS.items()},
                     "noisefind-scanned": {"witnesses": SCANNED_MODEL_WITNESSES}}
            seconds_of = {d: by_key[(d, noise, seed)]["seconds"]
                          for d in ("fold_flip", "neighbours", "oos_margin", "noisefind")}
            with_flip = (seconds_of["fold_flip"] + seconds_of["neighbours"]
                         - seconds_of["oos_margin"])
            charged = {"noisefind": seconds_of["neighbours"], "noisefind-fold-flip": with_flip,
                       "noisefind-no-neighbours": seconds_of["oos_margin"],
                       **{name: seconds_of["neighbours"] for name in WEIGHTED_ORDERS},
                       "noisefind-scanned": by_key.get(("noisefind-scanned", noise, seed),
                                                       {"seconds": seconds_of["noisefind"]}
                                                       )["seconds"]}
            for dropped in ("noisefind-no-augmented", "noisefind-no-flip"):
                by_key.pop((dropped, noise, seed), None)
            settings["detectors"] = [d for d in settings["detectors"]
                                     if d not in ("noisefind-no-augmented", "noisefind-no-flip")]
            for name in forms:
                if name not in settings["detectors"]:
                    settings["detectors"].insert(settings["detectors"].index("noisefind") + 1,
                                                 name)
        else:
            signals = {name: scores[name] for name in ("oos_margin", "aum", "flip_cost")}
            two = {"out_of_sample": ("oos_margin",), "in_sample": ("aum", "flip_cost")}
            forms = {"noisefind": {"witnesses": two},
                     "noisefind-no-flip": {"witnesses": two, "without": ("flip_cost",)}}
            charged = {name: sum(by_key[(d, noise, seed)]["seconds"] for d in inputs)
                       for name, inputs in (("noisefind", ("flip_cost", "oos_margin")),
                                            ("noisefind-no-flip", ("aum", "oos_margin")))}
        template = by_key[("oos_margin", noise, seed)]
        for name, form in forms.items():
            names = [n for names in form.get("witnesses", WITNESSES).values() for n in names]
            used = {name: signals[name] for name in names if name in signals}
            scores[name] = consensus_score(used, **form)
            by_key[(name, noise, seed)] = {**template, "detector": name, **detection_metrics(
                is_noisy, scores[name].to_numpy()), "seconds": round(charged[name], 3)}
        scores.to_csv(path, index=False)
        for i, decision in enumerate(decisions):
            if (decision["method"], decision["noise"], decision["seed"]) == (
                    "noisefind", noise, seed):
                flagged = flag_top(scores["noisefind"].to_numpy(), decision["estimated"])
                metrics = flag_metrics(is_noisy, flagged, decision["estimated"])
                decisions[i] = {**decision, "flagged": int(flagged.sum()),
                                "precision": metrics["flag_precision"],
                                "recall": metrics["flag_recall"], "f1": metrics["flag_f1"]}
    order = {d: i for i, d in enumerate(settings["detectors"])}
    runs = sorted(by_key.values(), key=lambda r: (r["noise"], r["seed"], order[r["detector"]]))
    settings["rescored"] = RESCORED_CURRENT if current else RESCORED
    write_reports(folder, pd.DataFrame(runs), settings, decisions)


def write_reports(folder: Path, runs: pd.DataFrame, settings: dict, decisions: list) -> None:
    """``results.json``, ``results.md`` and ``roc.png`` of ``folder``, the curves drawn from its
    per-example scores (as the bench draws them)."""
    from sklearn.metrics import roc_curve

    from noisefind.bench.report import write_bench_results
    from noisefind.bench.runner import finite_scores, mean_roc

    curves: dict = {}
    for (noise, seed), _ in runs.groupby(["noise", "seed"], sort=False):
        scores = pd.read_csv(scores_file(folder, noise, seed))
        for name in settings["detectors"]:
            fpr, tpr, _ = roc_curve(scores["is_noisy"].to_numpy(dtype=bool),
                                    finite_scores(scores[name].to_numpy()))
            curves.setdefault(noise, {}).setdefault(name, []).append((fpr, tpr))
    roc = {noise: {name: mean_roc(c) for name, c in by_name.items()}
           for noise, by_name in curves.items()}
    write_bench_results(runs, folder, settings, roc, {"decisions": decisions})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="bench --out folders")
    for folder in parser.parse_args().folders:
        rescore(folder)
        print(f"rescored {folder}")


if __name__ == "__main__":
    main()
