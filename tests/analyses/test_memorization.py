"""The Feldman-Zhang subset estimate: arithmetic, a tiny run, resuming, the detector, the CLI."""

import functools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import noisefind.analyses.memorization as mem
from noisefind.analyses.memorization import (
    MemorizationSettings,
    estimate,
    influence,
    memorization,
    memorization_scores,
    subset_mask,
    summarize,
)
from noisefind.base.errors import NoisefindError
from noisefind.bench.context import DetectorContext
from noisefind.bench.detectors import DETECTORS, OPT_IN, get_detectors
from noisefind.cli import app
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit

CONFIG = TrainConfig(width=0.25, epochs=12, device="cpu")
SETTINGS = MemorizationSettings(models=6, subset=0.7, seed=0)


@pytest.fixture(scope="module")
def tiny(digits):
    return digits.subset(torch.arange(240)).with_noise("symmetric:0.1", seed=0)


@pytest.fixture(scope="module")
def estimated(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("memorization")
    return out, memorization(tiny, SETTINGS, CONFIG, out=out, progress=False)


def test_estimate_is_accuracy_in_minus_accuracy_out():
    held = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=bool)
    correct = np.array([[1, 1, 1], [1, 1, 0], [0, 1, 1], [0, 1, 1]], dtype=bool)
    result = estimate(held, correct)
    assert result["memorization"].tolist() == [1.0, 0.0, pytest.approx(1 - 0.5)]
    assert result["models_in"].tolist() == [2, 2, 2]
    nan = estimate(np.ones((2, 1), dtype=bool), np.ones((2, 1), dtype=bool))
    assert np.isnan(nan["memorization"][0])  # never held out: no estimate


def test_influence_is_the_same_difference_on_test_examples():
    held = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=bool)
    correct_test = np.array([[1], [1], [0], [0]], dtype=bool)
    matrix = influence(held, correct_test)
    assert matrix.shape == (2, 1)
    assert matrix[0, 0] == pytest.approx(1.0) and matrix[1, 0] == pytest.approx(0.0)


def test_subsets_are_seeded_and_sized():
    a, b = subset_mask(100, 0.7, 3, 5), subset_mask(100, 0.7, 3, 5)
    assert np.array_equal(a, b) and a.sum() == 70
    assert not np.array_equal(a, subset_mask(100, 0.7, 3, 6))


def test_mislabeled_examples_are_memorized(estimated, tiny):
    _, result = estimated
    table = result.table
    assert len(table) == len(tiny) and result.models == SETTINGS.models
    assert list(table["row"]) == list(range(len(tiny)))
    summary = summarize(result, SETTINGS)
    # Fit only when trained on: a high estimate for mislabeled examples, low for clean ones.
    assert summary["mean_memorization_mislabeled"] > 0.5
    assert summary["mean_memorization_clean"] < 0.25
    assert summary["auroc"] > 0.8


def test_outputs_are_written(estimated):
    out, result = estimated
    for name in ("models.jsonl", "memorization.csv", "summary.json", "memorization.png"):
        assert (out / name).stat().st_size > 100, name
    table = pd.read_csv(out / "memorization.csv")
    assert list(table.columns[:4]) == ["row", "index", "path", "given_label"]
    assert table["memorization"].dropna().is_monotonic_decreasing
    lines = (out / "models.jsonl").read_text().splitlines()
    assert "settings" in json.loads(lines[0]) and len(lines) == 1 + SETTINGS.models


def test_resume_trains_only_what_is_missing_and_drops_a_cut_line(tiny, estimated, tmp_path,
                                                                 monkeypatch):
    source, complete = estimated
    lines = (source / "models.jsonl").read_text().splitlines()
    # Four models finished, the fifth was cut off mid-write by a kill.
    (tmp_path / "models.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:40])
    trained = []
    real = mem._train_one
    monkeypatch.setattr(mem, "_train_one", lambda *a: trained.append(a[-1]) or real(*a))
    resumed = memorization(tiny, SETTINGS, CONFIG, out=tmp_path, progress=False)
    assert trained == [4, 5]
    pd.testing.assert_frame_equal(resumed.table, complete.table)
    assert len((tmp_path / "models.jsonl").read_text().splitlines()) == 1 + SETTINGS.models


def test_resume_with_other_settings_is_refused(tiny, estimated):
    source, _ = estimated
    with pytest.raises(NoisefindError, match="other settings"):
        memorization(tiny, MemorizationSettings(models=6, subset=0.5), CONFIG, out=source,
                     progress=False)


def test_influence_needs_a_test_set(tiny):
    with pytest.raises(NoisefindError, match="test set"):
        memorization(tiny, SETTINGS, CONFIG, with_influence=True, progress=False)


@pytest.mark.parametrize("settings", [MemorizationSettings(models=1),
                                      MemorizationSettings(subset=1.0)])
def test_bad_settings_are_refused(settings, tiny):
    with pytest.raises(NoisefindError):
        memorization(tiny, settings, CONFIG, progress=False)


def test_detector_is_registered_but_opt_in(tiny, monkeypatch):
    assert "memorization" in DETECTORS and "memorization" in OPT_IN
    assert "memorization" not in get_detectors()
    assert list(get_detectors(["memorization"])) == ["memorization"]
    monkeypatch.setattr(mem, "MemorizationSettings",
                        functools.partial(MemorizationSettings, models=3))
    run = fit(tiny, TrainConfig(width=0.25, epochs=1, device="cpu"), progress=False)
    context = DetectorContext(tiny, run, rows=[5, 0, 7],
                              train_config=TrainConfig(width=0.25, epochs=2, device="cpu"))
    scores = DETECTORS["memorization"](context)
    full = memorization_scores(tiny, context.train_config, MemorizationSettings(models=3))
    assert scores.shape == (3,) and np.isfinite(scores).all()
    assert scores == pytest.approx(full[[5, 0, 7]])
    assert "memorization" in context.costs


def test_cli_memorization_with_influence(tmp_path):
    out = tmp_path / "mem"
    args = ["memorization", "digits", "--noise", "symmetric:0.1", "--models", "2",
            "--width", "0.25", "--epochs", "1", "--holdout", "0.9", "--influence",
            "--out", str(out), "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "AUROC" in result.output
    matrix = np.load(out / "influence.npz")["influence"]
    assert matrix.shape[0] == len(pd.read_csv(out / "memorization.csv"))
    assert (out / "influence_top.csv").is_file()
    again = CliRunner().invoke(app, args[:5] + ["3"] + args[6:])  # extend to 3 models
    assert again.exit_code == 0 and "resuming: 2 of 3" in again.output


@pytest.mark.parametrize("args,message", [
    (["--subset", "1.5"], "--subset must be in (0, 1)"),
    (["--models", "1"], "--models must be at least 2"),
    (["--influence"], "test set"),
])
def test_cli_memorization_bad_input_exits_2(args, message, tmp_path):
    result = CliRunner().invoke(app, ["memorization", "digits", *args, "--out",
                                      str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
