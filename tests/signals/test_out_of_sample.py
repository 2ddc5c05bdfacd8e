"""The K-fold models: several models a fold, seeded apart, and what they give together."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from noisefind.base.errors import NoisefindError
from noisefind.cli import app
from noisefind.signals.out_of_sample import (
    FOLD_MODEL_SEEDS,
    cross_validated_runs,
    fold_margins,
    held_out_probabilities,
    learners,
)
from noisefind.training.config import TrainConfig

runner = CliRunner()


@pytest.fixture(scope="module")
def small(digits):
    return digits.subset(torch.arange(0, 1797, 8)).with_noise("symmetric:0.2", seed=0)


def test_several_models_a_fold_average_their_held_out_probabilities(small):
    config = TrainConfig(width=0.25, epochs=3, device="cpu", seed=4)
    single = cross_validated_runs(small, config, folds=2)
    runs = cross_validated_runs(small, TrainConfig(**{**config.__dict__, "fold_models": 2}),
                                folds=2)
    assert len(runs) == 4
    assert [run.config["train"]["seed"] for run, _ in runs] == \
        [5, 6, 5 + FOLD_MODEL_SEEDS, 6 + FOLD_MODEL_SEEDS]
    for (_, held), (_, again) in zip(runs[:2], runs[2:], strict=True):
        assert np.array_equal(held, again)  # the same split, passed through twice
    first, second = (held_out_probabilities(small, part) for part in (runs[:2], runs[2:]))
    # The first pass is the single models (same seeds), the second other models.
    assert first == pytest.approx(held_out_probabilities(small, single), abs=1e-6)
    assert np.abs(first - second).max() > 0.01
    assert held_out_probabilities(small, runs) == pytest.approx((first + second) / 2, abs=1e-9)


def test_every_row_is_learned_by_the_models_of_the_other_folds(small):
    config = TrainConfig(width=0.25, epochs=1, device="cpu", fold_models=2)
    runs = cross_validated_runs(small, config, folds=3)
    total, count = fold_margins(runs, len(small))
    assert (count == 4).all()  # (K - 1) folds, two models each
    rows = np.arange(len(small))
    for row, learner in zip(rows, learners(runs, rows, len(small)), strict=True):
        assert row not in runs[learner][1]  # a model that trained on the row


def test_fold_models_below_one_are_refused():
    with pytest.raises(NoisefindError, match="fold_models must be at least 1") as error:
        TrainConfig(fold_models=0).validate()
    assert error.value.parameter == "fold_models"


def test_a_scan_with_two_models_a_fold_says_so_and_records_it(tmp_path):
    out = tmp_path / "scan"
    result = runner.invoke(app, ["scan", "digits", "--noise", "symmetric:0.1", "--epochs", "2",
                                 "--width", "0.25", "--folds", "2", "--fold-models", "2",
                                 "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "4 models to train" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"]["fold_models"] == 2 and summary["folds"] == 2
    assert len(pd.read_csv(out / "suspects.csv")) == 1797
    refused = runner.invoke(app, ["scan", "digits", "--noise", "symmetric:0.1", "--epochs", "2",
                                  "--width", "0.25", "--folds", "2", "--out", str(out),
                                  "--resume"])
    assert refused.exit_code == 2
    assert "--fold-models 1 (trained with 2)" in refused.output


def test_fold_models_zero_is_one_line_naming_the_flag():
    result = runner.invoke(app, ["scan", "digits", "--fold-models", "0"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == \
        ["error: --fold-models must be at least 1, got 0"]
