"""The calibrated cutoff: canaries, the positive-unlabelled decision, and the scan's outputs."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from noisefind.base.errors import NoisefindError
from noisefind.cli import app
from noisefind.decide.count import MIN_CANARIES, estimate_count
from noisefind.decide.cutoff import CutoffSettings, fit_cutoff, flag_metrics
from noisefind.signals.replica import (
    calibrate,
    canary_count,
    choose_canaries,
    estimated_confusions,
    replica_rows,
)

runner = CliRunner()
TINY = ["--width", "0.25", "--epochs", "8", "--quiet"]
SEARCH = ["--max-units", "20"]  # for the scans that run the flip search


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """A real scan (digits, 10% symmetric noise, tiny CNN) of 150 rows through the CLI, ranked
    by the cutoff: one model, its replica with canaries."""
    out = tmp_path_factory.mktemp("scan")
    result = runner.invoke(app, ["scan", "digits", "--noise", "symmetric:0.1", "--limit", "150",
                                 "--rank-by", "cutoff", "--out", str(out), *TINY, *SEARCH])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def default_scan(tmp_path_factory):
    """The same scan with the default order: the fold models alone."""
    out = tmp_path_factory.mktemp("default")
    result = runner.invoke(app, ["scan", "digits", "--noise", "symmetric:0.1", "--limit", "150",
                                 "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    return out


def test_canaries_are_seeded_distinct_rows_with_another_label():
    labels = np.random.default_rng(0).integers(0, 10, size=1000)
    settings = CutoffSettings(seed=3, canary_labels="uniform")
    rows, new = choose_canaries(labels, 10, settings)
    again, _ = choose_canaries(labels, 10, settings)
    other, _ = choose_canaries(labels, 10, CutoffSettings(seed=4, canary_labels="uniform"))
    assert len(rows) == canary_count(1000, settings) == 50 and len(set(rows)) == len(rows)
    assert (new != labels[rows]).all() and ((new >= 0) & (new < 10)).all()
    assert np.array_equal(rows, again) and not np.array_equal(rows, other)


def test_canary_count_bounds():
    assert canary_count(10_000, CutoffSettings()) == 500  # 5%
    assert canary_count(400, CutoffSettings()) == 30  # at least min_canaries
    assert canary_count(60, CutoffSettings()) == 12  # never more than a fifth


def test_fit_cutoff_recovers_the_share_of_canary_like_examples():
    rng = np.random.default_rng(0)
    clean = rng.normal(0.0, 1.0, size=(1800, 3))
    noisy = rng.normal([-2.5, 2.0, -3.0], 1.0, size=(200, 3))
    canaries = rng.normal([-2.5, 2.0, -3.0], 1.0, size=(60, 3))
    scores, threshold, recall, weights, canary_scores = fit_cutoff(
        np.concatenate([clean, noisy]), canaries, canary_recall=0.8)
    suspected = scores >= threshold
    truth = np.r_[np.zeros(1800, bool), np.ones(200, bool)]
    estimate, bounds = estimate_count(scores, canary_scores)
    metrics = flag_metrics(truth, suspected, estimate)
    assert 0.7 <= recall <= 0.9 and set(weights) == {"log_flip_cost", "log_loss", "aum"}
    assert metrics["flag_precision"] > 0.9 and metrics["flag_recall"] > 0.6
    assert abs(metrics["count_error"]) < 0.2
    assert len(canary_scores) == len(canaries)
    assert estimate == min(bounds.values()) and set(bounds) == {"0.5", "0.6", "0.7", "0.8", "0.9"}


def test_count_estimate_is_the_tightest_upper_bound():
    # 100 mislabeled rows score like the canaries; 900 clean rows mostly low, 50 of them high.
    canaries = np.linspace(1.0, 2.0, 200)
    mislabeled = np.linspace(1.0, 2.0, 100)
    clean = np.r_[np.full(850, -5.0), np.full(50, 1.3)]  # among the canaries' lower half
    estimate, bounds = estimate_count(np.r_[mislabeled, clean], canaries)
    # Keeping 90% of the canaries lets in the 50 high clean rows; keeping 50% does not.
    assert bounds["0.9"] > 140 and bounds["0.5"] == pytest.approx(100, rel=0.03)
    assert estimate == pytest.approx(100, rel=0.03)


def test_flag_metrics_by_hand():
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    flag = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)
    metrics = flag_metrics(truth, flag, 4.5)
    assert metrics["flag_precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["flag_recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["flag_f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["count_error"] == 0.5 and metrics["mislabeled_true"] == 3


def test_runner_up_canaries_take_the_most_likely_other_class():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=200)
    logits = rng.normal(size=(200, 4))
    logits[np.arange(200), labels] = 10.0  # the model agrees with every given label
    rows, new = choose_canaries(labels, 4, CutoffSettings(seed=0, canary_labels="runner-up"),
                                logits)
    assert (new != labels[rows]).all()
    runner_up = np.argsort(logits[rows], axis=1)[:, -2]
    assert np.array_equal(new, runner_up)
    with pytest.raises(ValueError, match="logits"):
        choose_canaries(labels, 4, CutoffSettings(canary_labels="runner-up"))


def _asymmetric_case(seed=0, n=2000, classes=10):
    """Labels with 2 -> 7 noise on 10% of the rows; the model memorized them and ranks the
    true class second. Returns labels, logits, suspicion (loss) and the noisy rows."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, size=n)
    noisy = rng.random(n) < 0.1
    true[noisy] = 2
    labels = np.where(noisy, 7, true)
    logits = rng.normal(size=(n, classes))
    logits[np.arange(n), labels] = 10.0
    logits[noisy, 2] = 8.0
    suspicion = np.where(noisy, 2.0, 0.1) + rng.normal(0, 0.05, size=n)
    return labels, logits, suspicion, noisy


def test_estimated_confusions_find_the_noise_pairs():
    labels, logits, suspicion, noisy = _asymmetric_case()
    confusions, suspects = estimated_confusions(labels, logits, suspicion, 10)
    assert np.isclose(confusions.sum(), 1.0) and (np.diag(confusions) == 0).all()
    assert suspects.sum() == 200 and noisy[suspects].mean() > 0.9
    assert np.unravel_index(confusions.argmax(), confusions.shape) == (2, 7)
    assert confusions[2, 7] > 0.5  # the rest is smoothing over the 89 other pairs


def test_matched_canaries_copy_the_estimated_confusions_onto_unsuspected_rows():
    labels, logits, suspicion, noisy = _asymmetric_case()
    settings = CutoffSettings(seed=0, canary_labels="matched")
    rows, new = choose_canaries(labels, 10, settings, logits, suspicion)
    assert len(rows) == canary_count(len(labels), settings) and len(set(rows)) == len(rows)
    assert (new != labels[rows]).all() and not noisy[rows].any()
    # Most canaries are class-2 examples relabelled 7, as the real noise is.
    assert ((labels[rows] == 2) & (new == 7)).mean() > 0.5
    again = choose_canaries(labels, 10, settings, logits, suspicion)
    assert np.array_equal(rows, again[0]) and np.array_equal(new, again[1])
    with pytest.raises(ValueError, match="suspicion"):
        choose_canaries(labels, 10, settings, logits)


def test_matched_canaries_of_symmetric_noise_spread_over_the_pairs():
    rng = np.random.default_rng(2)
    n, classes = 3000, 10
    labels = rng.integers(0, classes, size=n)
    noisy = rng.random(n) < 0.1
    true = np.where(noisy, (labels + rng.integers(1, classes, size=n)) % classes, labels)
    logits = rng.normal(size=(n, classes))
    logits[np.arange(n), labels] = 10.0
    logits[np.arange(n)[noisy], true[noisy]] = 8.0
    suspicion = noisy + rng.normal(0, 0.05, size=n)
    rows, new = choose_canaries(labels, classes, CutoffSettings(seed=1, canary_labels="matched"),
                                logits, suspicion)
    pairs = set(zip(labels[rows].tolist(), new.tolist(), strict=True))
    assert len(pairs) > 60  # of 90 possible pairs, with 150 canaries


@pytest.mark.parametrize("settings,message", [
    (CutoffSettings(canary_labels="nearest"), "canary_labels"),
    (CutoffSettings(method="quantile"), "cutoff"),
    (CutoffSettings(canary_fraction=0.5), "canary_fraction"),
    (CutoffSettings(canary_recall=1.0), "canary_recall"),
    (CutoffSettings(replica_fraction=0.0), "replica_fraction"),
])
def test_bad_settings(settings, message):
    with pytest.raises(NoisefindError, match=message):
        settings.validate()


def test_scan_flags_and_estimates_from_canaries_that_never_appear(scanned):
    table = pd.read_csv(scanned / "suspects.csv")
    summary = json.loads((scanned / "summary.json").read_text())
    assert table["suspected"].dtype == bool and table["suspected"].any()
    assert len(table) == 150 and table["index"].is_unique  # scanned rows only: no canaries
    cutoff = summary["cutoff"]
    assert cutoff["method"] == "canaries" and cutoff["canaries"] == 90
    assert summary["suspected"] == int(table["suspected"].sum())
    # The estimate is for the whole training set (the truth: 179 of 1797).
    assert 0 < summary["estimated_mislabeled"] < 1797
    assert summary["mislabeled_total"] == 179 and "count_error" in summary
    for key in ("flag_precision", "flag_recall", "flag_f1", "count_error_scanned"):
        assert key in summary
    # Flagged examples are mostly the truly mislabeled ones even with this tiny model.
    assert summary["flag_precision"] >= 0.5
    assert summary["rank_by"] == "cutoff" and table["cutoff_score"].is_monotonic_decreasing
    assert summary["folds"] == 5 and "oos_margin" in cutoff["signals"]
    assert 0.5 < summary["auroc_cutoff_score"] <= 1.0
    assert (scanned / "run" / "model.safetensors").is_file()
    assert not (scanned / "cache").exists()  # models kept for a resume are gone at the end


def test_the_default_scan_counts_on_the_fold_models_and_flags_from_the_top(default_scan):
    table = pd.read_csv(default_scan / "suspects.csv")
    summary = json.loads((default_scan / "summary.json").read_text())
    assert len(table) == 150 and summary["rank_by"] == "consensus"
    assert summary["witnesses"] == ["out_of_sample", "in_sample", "neighbours"]
    assert table["consensus_score"].is_monotonic_decreasing
    # The count: canaries scored on the held-out probabilities of all 1797 rows (2,000 of
    # them, drawn with replacement: more than 2% of the rows), then scaled to the 150 scanned.
    cutoff = summary["cutoff"]
    assert cutoff["method"] == "out_of_sample_canaries" and cutoff["canaries"] == MIN_CANARIES
    probabilities = np.load(default_scan / "pred_probs.npy")  # of all 1797 rows
    given = np.load(default_scan / "training_set.npz")["y"]
    assert cutoff["held_out_agreement"] == pytest.approx(
        (probabilities.argmax(1) == given).mean(), abs=1e-4)
    flagged = table["suspected"].to_numpy()
    assert flagged[:flagged.sum()].all()  # a prefix of the order
    assert abs(flagged.sum() - summary["estimated_mislabeled"] * 150 / 1797) <= 1
    low, high = summary["estimated_mislabeled_interval"]
    assert low <= summary["estimated_mislabeled"] <= high
    assert summary["flag_precision"] >= 0.5 and 0.9 < summary["auroc_consensus_score"] <= 1.0
    assert table["oos_confidence"].between(0, 1).all()
    for stage in ("cross_validation", "neighbours", "count"):
        assert summary["seconds"][stage] > 0
    assert "train" not in summary["seconds"] and summary["model"] is None
    assert not (default_scan / "run").exists() and not (default_scan / "cache").exists()
    # No flip search ran: no flip columns, no search settings, no flip score's AUROC.
    assert "fold_flip" not in summary["seconds"] and "units_to_flip" not in table
    assert "flipped" not in summary and "auroc" not in summary
    assert summary["settings"] == {"seed": 0, "limit": 150}
    assert table.columns[0] == "rank" and (table["predicted_label"] != "").all()


def test_a_partial_replica_trains_on_every_canary_and_a_share_of_the_rest():
    canaries = np.array([3, 10, 50])
    rows = replica_rows(103, canaries, CutoffSettings(replica_fraction=0.5, seed=1))
    assert np.isin(canaries, rows).all() and len(rows) == 3 + 50
    assert (np.diff(rows) > 0).all()
    again = replica_rows(103, canaries, CutoffSettings(replica_fraction=0.5, seed=1))
    assert rows.tolist() == again.tolist()
    assert replica_rows(103, canaries, CutoffSettings()).tolist() == list(range(103))


def test_a_partial_replica_calibrates_the_same_rows(noisy_digits, noisy_digits_run):
    from noisefind.signals.flip import FlipSettings, flip_search

    rows = np.random.default_rng(0).permutation(len(noisy_digits))[:120]
    settings = FlipSettings(max_units=30)
    results = flip_search(noisy_digits_run.model, noisy_digits, settings,
                          rows=rows.tolist(), progress=False).reset_index()
    whole = calibrate(noisy_digits, noisy_digits_run, results, CutoffSettings(), settings)
    half = calibrate(noisy_digits, noisy_digits_run, results,
                     CutoffSettings(replica_fraction=0.5), settings)
    assert half.rows.tolist() == whole.rows.tolist()
    assert half.details["canaries"] == whole.details["canaries"] == 90
    assert whole.details["replica_examples"] == len(noisy_digits)
    assert half.details["replica_examples"] == 90 + round(0.5 * (len(noisy_digits) - 90))
    truth = noisy_digits.is_noisy.numpy()[rows]
    for cutoff in (whole, half):  # both flags find the injected noise
        assert flag_metrics(truth, cutoff.suspected, cutoff.estimated_scanned)[
            "flag_precision"] >= 0.5


def test_cutoff_none_flags_nothing(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", "digits", "--noise", "symmetric:0.1", "--limit", "40",
                                 "--cutoff", "none", "--folds", "2", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "suspects.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert not table["suspected"].any() and summary["estimated_mislabeled"] is None
    assert summary["cutoff"]["method"] == "none" and "--cutoff none" in summary["cutoff"]["note"]
    assert summary["rank_by"] == "consensus"  # the order needs no cutoff, only the folds


@pytest.mark.parametrize("option", [["--canary-fraction", "0.2"], ["--max-units", "20"],
                                    ["--scan-batch-size", "8"]])
def test_the_replica_s_and_the_search_s_options_are_refused_by_the_default_scan(tmp_path,
                                                                               option):
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", "digits", *option, "--out", str(out), *TINY])
    assert result.exit_code == 2
    assert option[0] in result.output and "--rank-by" in result.output
    assert not (out / "suspects.csv").exists()


def test_a_given_model_is_calibrated_by_a_replica_of_its_recipe(scanned, tmp_path):
    out = tmp_path / "again"
    result = runner.invoke(app, ["scan", "digits", "--model", str(scanned / "run"), "--limit",
                                 "60", "--out", str(out), "--max-units", "20", "--quiet",
                                 "--rank-by", "cutoff"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    table = pd.read_csv(out / "suspects.csv")
    assert summary["rank_by"] == "cutoff" and table["rank"].tolist() == list(range(1, 61))
    assert table["cutoff_score"].is_monotonic_decreasing
    assert not table["score"].is_monotonic_decreasing  # the flip score orders them otherwise
    assert summary["noise"] == "symmetric:0.1"  # taken from the run
    assert summary["cutoff"]["method"] == "canaries" and "replica" in summary["cutoff"][
        "calibration"]
    assert not (out / "run").exists()  # the given model was used; the replica is not kept


@pytest.mark.parametrize("args,message", [
    (["--cutoff", "quantile"], "--cutoff"),
    (["--canary-fraction", "0"], "--canary-fraction"),
    (["--canary-labels", "nearest"], "--canary-labels"),
    (["--rank-by", "units"], "--rank-by"),
    (["--rank-by", "cutoff", "--cutoff", "none"], "--rank-by cutoff needs the cutoff"),
    (["--rank-by", "consensus", "--folds", "0"], "--rank-by consensus needs the K-fold models"),
])
def test_bad_cutoff_flags_exit_2(args, message):
    result = runner.invoke(app, ["scan", "digits", *args, "--quiet"])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bench_reports_decisions_beside_cleanlab(tmp_path):
    from noisefind.bench.runner import bench
    from noisefind.data.load import load_data
    from noisefind.signals.flip import FlipSettings
    from noisefind.training.config import TrainConfig

    runs = bench(load_data("digits"), ["symmetric:0.1"], seeds=1,
                 detectors=["flip", "confident_learning"], folds=2, limit=80,
                 train_config=TrainConfig(width=0.25, epochs=6), out=tmp_path / "bench",
                 flip_settings=FlipSettings(max_units=20), progress=False)
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert {"detector", "noise", "seed", "auroc", "auprc", "tpr_at_5fpr", "precision_at_k",
            "seconds"} <= set(results["runs"][0])
    decisions = {d["method"]: d for d in results["decisions"]}
    assert set(decisions) == {"flip_cutoff", "cleanlab"} == {
        d["method"] for d in runs.attrs["decisions"]}
    for record in decisions.values():
        assert record["examples"] == 80 and record["seconds"] > 0
        assert {"precision", "recall", "f1", "estimated", "count_error", "flagged"} <= set(record)
    markdown = (tmp_path / "bench" / "results.md").read_text()
    assert "## Decisions" in markdown and "| symmetric:0.1 | flip_cutoff |" in markdown
