"""The bench: metrics on rankings whose quality is known, cost accounting, files, and the CLI."""

import json
import math
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from noisefind.base.errors import NoisefindError
from noisefind.bench.detectors import get_detectors
from noisefind.bench.report import bench_markdown, bench_summary
from noisefind.bench.runner import (
    bench,
    detection_metrics,
    finite_scores,
    precision_at_k,
    scan_rows,
    tpr_at_fpr,
)
from noisefind.cli import app
from noisefind.training.config import TrainConfig

runner = CliRunner()
IS_NOISY = np.array([True] * 10 + [False] * 90)


def test_a_perfect_ranking_scores_one_everywhere():
    scores = np.linspace(1.0, 0.0, 100)  # the ten mislabeled rows score highest
    metrics = detection_metrics(IS_NOISY, scores)
    assert metrics == pytest.approx(
        {"auroc": 1.0, "auprc": 1.0, "tpr_at_5fpr": 1.0, "precision_at_k": 1.0})


def test_a_reversed_ranking_scores_zero():
    metrics = detection_metrics(IS_NOISY, np.linspace(0.0, 1.0, 100))
    assert metrics["auroc"] == 0.0
    assert metrics["tpr_at_5fpr"] == 0.0
    assert metrics["precision_at_k"] == 0.0
    # Average precision of the worst ranking: hits at ranks 91..100.
    assert metrics["auprc"] == pytest.approx(np.mean([(i + 1) / (90 + i + 1) for i in range(10)]))


def test_all_tied_scores_are_worth_chance():
    metrics = detection_metrics(IS_NOISY, np.zeros(100))
    assert metrics["auroc"] == 0.5
    assert metrics["precision_at_k"] == pytest.approx(0.1)
    assert metrics["tpr_at_5fpr"] == pytest.approx(0.05)


def test_precision_at_k_takes_ties_at_the_cut_in_expectation():
    is_noisy = np.array([True, True, False, True, False, False])
    scores = np.array([5.0, 3.0, 3.0, 3.0, 3.0, 0.0])
    # k = 3: row 0 is in; two of the four rows tied at 3 fill the rest, holding 2/4 mislabeled
    # on average each, so 1 + 2 * 2 / 4 = 2 hits of 3.
    assert precision_at_k(is_noisy, scores) == pytest.approx(2 / 3)
    assert precision_at_k(is_noisy, scores, k=1) == 1.0


def test_tpr_at_fpr_interpolates_the_roc_curve():
    is_noisy = np.array([True, True, False] + [False] * 9)
    scores = np.array([9.0, 5.0, 5.0] + [1.0] * 9)  # the second mislabeled row ties a clean one
    # The tie moves the curve from (0, 1/2) to (1/10, 1); at FPR 5% it is halfway up.
    assert tpr_at_fpr(is_noisy, scores, 0.05) == pytest.approx(0.75)
    assert tpr_at_fpr(is_noisy, np.array([9.0, 5.0, 6.0] + [1.0] * 9), 0.05) == 0.5


def test_infinite_scores_rank_at_the_ends():
    scores = np.linspace(1.0, 0.0, 100)
    scores[0], scores[-1] = np.inf, -np.inf
    assert detection_metrics(IS_NOISY, scores)["auroc"] == 1.0
    assert finite_scores(np.array([np.inf, 2.0, -np.inf])).tolist() == [3.0, 2.0, 1.0]


def test_metrics_are_nan_without_both_kinds():
    metrics = detection_metrics(np.zeros(5, dtype=bool), np.arange(5.0))
    assert all(math.isnan(v) for v in metrics.values())


def test_scan_rows_is_a_seeded_subset():
    assert scan_rows(10, None, 0).tolist() == list(range(10))
    assert scan_rows(10, 50, 0).tolist() == list(range(10))
    rows = scan_rows(100, 7, 3)
    assert len(set(rows.tolist())) == 7 and rows.tolist() == scan_rows(100, 7, 3).tolist()
    assert rows.tolist() != scan_rows(100, 7, 4).tolist()
    with pytest.raises(NoisefindError, match="limit must be"):
        scan_rows(10, 0, 0)


def test_bench_records_every_detector_and_charges_shared_costs(digits):
    small = digits.subset(torch.arange(0, 1797, 4))
    runs = bench(small, ["symmetric:0.2"], seeds=[5],
                 detectors=["aum", "final_loss", "confident_learning"],
                 train_config=TrainConfig(width=0.25, epochs=5, device="cpu"), folds=2,
                 progress=False)
    assert runs["detector"].tolist() == ["aum", "final_loss", "confident_learning"]
    assert set(runs["noise"]) == {"symmetric:0.2"} and set(runs["seed"]) == {5}
    assert (runs["mislabeled"] == int(0.2 * len(small))).all()
    assert (runs["examples"] == len(small)).all()
    assert runs[["auroc", "auprc"]].min().min() > 0.5
    seconds = runs.set_index("detector")["seconds"]
    # Both training-history detectors pay for the same model; CL pays for its two models.
    assert seconds["aum"] > 0 and seconds["final_loss"] >= seconds["aum"] * 0.5
    assert seconds["confident_learning"] > 0
    # Confident learning used the fold models: every record says how accurate they were.
    assert runs["fold_accuracy"].nunique() == 1 and runs["fold_accuracy"].iloc[0] > 0.5
    # They predict the true label more often than the given one (20% of those are wrong).
    assert (runs["fold_accuracy"] > runs["fold_given_accuracy"]).all()


def test_markdown_bolds_the_best_mean_per_column():
    runs = pd.DataFrame([
        dict(detector=d, noise="symmetric:0.1", seed=s, auroc=a, auprc=0.5, tpr_at_5fpr=0.2,
             precision_at_k=p, seconds=t, examples=100, mislabeled=10)
        for d, a, p, t in [("good", 0.9, 0.4, 9.0), ("fast", 0.7, 0.6, 1.0)] for s in (0, 1)])
    summary = bench_summary(runs)
    assert summary["seeds"].tolist() == [2, 2] and summary["auroc_std"].tolist() == [0.0, 0.0]
    text = bench_markdown(runs)
    good = next(line for line in text.splitlines() if line.startswith("| good"))
    fast = next(line for line in text.splitlines() if line.startswith("| fast"))
    assert "**0.900 ± 0.000**" in good and "**1.0 ± 0.0**" in fast
    assert "**0.600 ± 0.000**" in fast and "**0.500 ± 0.000**" in good  # a tie: both bold


def test_cli_bench_end_to_end(tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, [
        "bench", "digits", "--noise", "symmetric:0.1", "--seeds", "1", "--width", "0.25",
        "--epochs", "4", "--folds", "2", "--fold-epochs", "3", "--limit", "40",
        "--max-units", "20", "--noise-copies", "1", "--reference-size", "3", "--out", str(out),
        "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert {r["detector"] for r in results["runs"]} == set(get_detectors())  # defaults
    for record in results["runs"]:
        assert set(record) >= {"detector", "noise", "seed", "auroc", "auprc", "tpr_at_5fpr",
                               "precision_at_k", "seconds"}
        assert record["noise"] == "symmetric:0.1" and record["examples"] == 40
    markdown = (out / "results.md").read_text()
    assert "| flip |" in markdown
    # The recorded command reproduces this run: every non-default flag, in the CLI's spelling.
    command = re.search(r"Command: `(noisefind bench [^`]*)`", markdown).group(1).split()
    assert command[:7] == ["noisefind", "bench", "digits", "--noise", "symmetric:0.1",
                           "--seeds", "1"]
    flags = dict(zip(command[7::2], command[8::2], strict=True))
    assert flags["--width"] == "0.25" and flags["--epochs"] == "4" and flags["--limit"] == "40"
    assert flags["--folds"] == "2" and flags["--reference-size"] == "3"
    assert flags["--fold-epochs"] == "3" and "--fold-recipe" not in flags  # the default
    assert flags["--noise-copies"] == "1" and flags["--max-units"] == "20"
    assert (out / "roc.png").stat().st_size > 10_000
    scores = pd.read_csv(out / "scores" / "symmetric-0.1_seed0.csv")
    assert len(scores) == 40 and set(get_detectors()) <= set(scores.columns)
    assert "confident_learning" in result.output


@pytest.mark.parametrize("args,message", [
    (["--noise", "gaussian:0.1"], "unknown kind"),
    (["--noise", "symmetric:0.1", "--detectors", "aum,nope"], "unknown detector 'nope'"),
    (["--noise", "symmetric:0.1", "--seeds", "0"], "--seeds must be at least 1"),
])
def test_cli_bench_bad_input_exits_2_with_one_line(args, message, tmp_path):
    result = CliRunner().invoke(app, ["bench", "digits", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"


@pytest.fixture(scope="module")
def cifar10n_manifest(tmp_path_factory):
    """240 CIFAR-10 training images with one annotator's CIFAR-10N labels (real human noise)
    and the clean labels as ``true_label``; needs the shared data sets beside the repository."""
    if not (SHARED / "cifar10n-labels.csv").is_file():
        pytest.skip("the CIFAR-10N label file is not beside the repository")
    folder = tmp_path_factory.mktemp("cifar10n")
    labels = pd.read_csv(SHARED / "cifar10n-labels.csv")
    # Rows where the annotator erred first, so the small sample holds enough of them.
    wrong = labels[labels["random1"] != labels["clean"]].head(60)
    right = labels[labels["random1"] == labels["clean"]].head(180)
    chosen = pd.concat([wrong, right])
    wanted = {f"cifar10/{p}" for p in chosen["path"]}
    with tarfile.open(SHARED / "cifar10-jpg.tar.gz") as archive:
        members = [m for m in archive.getmembers() if m.name in wanted]
        archive.extractall(folder, members=members, filter="data")
    manifest = folder / "random1.csv"
    pd.DataFrame({"path": [str(folder / "cifar10" / p) for p in chosen["path"]],
                  "label": chosen["random1"], "true_label": chosen["clean"]}).to_csv(
        manifest, index=False)
    return manifest


def test_bench_on_real_label_noise_through_the_cli(cifar10n_manifest, tmp_path):
    out = tmp_path / "bench"
    result = runner.invoke(app, [
        "bench", str(cifar10n_manifest), "--noise", "none", "--seeds", "1", "--epochs", "3",
        "--width", "0.25", "--limit", "80", "--folds", "2", "--image-size", "16",
        "--max-units", "20", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    runs = pd.DataFrame(results["runs"])
    assert set(runs["noise"]) == {"none"}
    assert {"noisefind", "noisefind-fold-flip", "confident_learning"} <= set(runs["detector"])
    assert (runs["examples"] == 80).all()
    truth = pd.read_csv(cifar10n_manifest)
    assert (runs["mislabeled"] > 0).all() and (runs["mislabeled"] < 80).all()
    assert runs["auroc"].between(0, 1).all()
    scores = pd.read_csv(out / "scores" / "none-0_seed0.csv")
    # is_noisy is the manifest's own disagreement between label and true_label.
    assert scores["is_noisy"].sum() == runs["mislabeled"].iloc[0]
    assert (truth["label"] != truth["true_label"]).sum() == 60
    assert list((out / "cache").iterdir())  # models kept for a resumed bench


def test_bench_noise_none_needs_the_truth(tmp_path):
    result = runner.invoke(app, ["bench", "digits", "--noise", "none", "--out",
                                 str(tmp_path / "b")])
    assert result.exit_code == 2
    assert "true_label" in result.output
