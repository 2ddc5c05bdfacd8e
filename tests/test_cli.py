"""End-to-end: the real CLI on real (small) data, through typer's CliRunner."""

import json

import pytest
from typer.testing import CliRunner

from noisefind.cli import app

runner = CliRunner()


def test_train_writes_a_run_folder(tmp_path):
    result = runner.invoke(app, ["train", "digits", "--noise", "symmetric:0.1", "--epochs", "3",
                                 "--width", "0.25", "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["arch"] == "cnn" and config["train"]["epochs"] == 3


@pytest.mark.parametrize("args,message", [
    (["train", "no/such/folder"], "data not found"),
    (["train", "nodata"], "built-in data sets are"),
    (["train", "digits", "--noise", "symmetric:1.5"], "rate must be in [0, 1)"),
    (["train", "digits", "--arch", "vgg"], "--arch"),
])
def test_bad_input_exits_2_with_one_line(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_out_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    result = runner.invoke(app, ["train", "digits", "--epochs", "1", "--out", str(tmp_path / "f"),
                                 "--quiet"])
    assert result.exit_code == 2 and "is a file" in result.output


@pytest.mark.parametrize("command", [
    ["train", "--help"], ["scan", "--help"], ["bench", "--help"], ["evaluate", "--help"],
    ["memorization", "--help"], ["review", "--help"], ["export", "--help"],
    ["localize", "gradients", "--help"], ["localize", "rewind", "--help"],
    ["localize", "retrain", "--help"],
])
def test_every_command_accepts_quiet(command):
    result = runner.invoke(app, command, env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--quiet" in result.output


@pytest.mark.parametrize("option", [["--epochs", "5"], ["--width", "0.5"], ["--arch", "mlp"],
                                    ["--lr", "0.05"], ["--batch-size", "64"]])
def test_training_options_with_a_trained_model_are_an_error(option, tmp_path):
    result = runner.invoke(app, ["scan", "digits", "--model", str(tmp_path), *option])
    assert result.exit_code == 2
    assert option[0] in result.output and "--model" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_dropout_options_without_dropout_are_an_error():
    result = runner.invoke(app, ["train", "digits", "--p-gen", "0.4"])
    assert result.exit_code == 2 and "--p-gen" in result.output and "--dropout" in result.output
