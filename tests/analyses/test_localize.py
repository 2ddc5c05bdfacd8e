"""Layer analyses on a tiny run: gradient accounting, rewinding, retraining, and their CLI."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from noisefind.analyses.gradients import GradientTracker
from noisefind.analyses.localize import (
    RetrainSettings,
    gradient_figures,
    group_keys,
    layer_groups,
    reset_group,
    retrain,
    retrain_group,
    rewind,
    save_analysis,
)
from noisefind.base.errors import NoisefindError
from noisefind.cli import app
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit
from noisefind.training.runs import load_run, load_weights

CONFIG = TrainConfig(width=0.25, epochs=6, checkpoint_every=2, device="cpu")


@pytest.fixture(scope="module")
def tiny(digits):
    return digits.subset(torch.arange(400)).with_noise("symmetric:0.1", seed=0)


@pytest.fixture(scope="module")
def tiny_run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("tracked")
    fit(tiny, CONFIG, out=out, progress=False, step_hook=GradientTracker)
    return load_run(out, device="cpu")


def test_layer_groups_cover_every_parameter(tiny_run):
    model = tiny_run.model
    groups = layer_groups(model)
    assert groups == ["layers.0", "layers.1", "layers.2", "layers.5", "head"]
    keys = [k for g in groups for k in group_keys(model, g)]
    params = {name for name, _ in model.named_parameters()}
    assert params <= set(keys) and len(keys) == len(set(keys))
    assert "layers.0.bn.running_mean" in group_keys(model, "layers.0")


def test_tracking_leaves_training_bit_identical(tiny, tiny_run):
    plain = fit(tiny, CONFIG, progress=False)
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, tiny_run.model.state_dict()[key]), key
    assert np.array_equal(plain.history.loss, tiny_run.history.loss)


def test_gradients_file_has_every_layer_and_epoch(tiny, tiny_run):
    saved = json.loads((tiny_run.path / "gradients.json").read_text())
    groups = layer_groups(tiny_run.model)
    assert saved["groups"] == groups and saved["epochs"] == list(range(1, 7))
    assert sum(saved["parameters"]) == sum(p.numel() for p in tiny_run.model.parameters())
    assert saved["examples"] == {"clean": 360, "mislabeled": 40}
    for key in ("clean_norm", "noisy_norm", "cosine", "step_clean_norm", "step_noisy_norm",
                "step_cosine"):
        values = np.array(saved[key], dtype=float)
        assert values.shape == (6, len(groups)) and np.isfinite(values).all(), key
    assert (np.abs(np.array(saved["cosine"])) <= 1 + 1e-6).all()
    assert (np.array(saved["noisy_norm"]) > 0).all()


def test_tracker_splits_one_step_exactly(tiny):
    torch.manual_seed(0)
    from noisefind.training.config import make_model

    model = make_model(CONFIG, tiny.input_shape, tiny.num_classes)
    model.fit_normalization(tiny.x)
    model.train()
    rows = torch.arange(64)
    tracker = GradientTracker(model, tiny, epochs=1)
    losses = F.cross_entropy(model(tiny.x[rows]), tiny.y[rows], reduction="none")
    tracker.backward(losses, rows, epoch=0)
    full = {n: p.grad.clone() for n, p in model.named_parameters()}
    noisy = tiny.is_noisy[rows].float()
    expected = {}
    for part, weight in (("clean", 1 - noisy), ("noisy", noisy)):
        model.zero_grad()
        losses = F.cross_entropy(model(tiny.x[rows]), tiny.y[rows], reduction="none")
        ((losses * weight).sum() / len(rows)).backward()
        expected[part] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for name, g in full.items():  # the two parts add up to the step's gradient
        torch.testing.assert_close(g, expected["clean"][name] + expected["noisy"][name])
    result = tracker.result()
    for k, group in enumerate(result["groups"]):
        names = [n for n in full if n.startswith(group + ".")]
        count = sum(full[n].numel() for n in names)
        for part in ("clean", "noisy"):
            norm = math.sqrt(sum(expected[part][n].square().sum().item() for n in names))
            assert result[f"{part}_norm"][0][k] == pytest.approx(norm / math.sqrt(count),
                                                                 rel=1e-4)
            assert result[f"step_{part}_norm"][0][k] == pytest.approx(
                norm / math.sqrt(count), rel=1e-4)


def test_tracking_needs_the_truth(digits):
    small = digits.subset(torch.arange(100))
    with pytest.raises(NoisefindError, match="--noise"):
        fit(small, TrainConfig(width=0.25, epochs=1), progress=False, step_hook=GradientTracker)


def test_rewind_to_the_last_checkpoint_changes_nothing(tiny, tiny_run):
    before = {k: v.clone() for k, v in tiny_run.model.state_dict().items()}
    result = rewind(tiny_run, tiny)
    groups = layer_groups(tiny_run.model)
    assert result["epochs"] == [0, 2, 4, 6] and result["groups"] == groups
    assert np.array(result["clean_accuracy"]).shape == (4, len(groups))
    final = result["final"]
    assert result["clean_accuracy"][-1] == [final["train_clean"]] * len(groups)
    assert result["noisy_accuracy"][-1] == [final["train_noisy"]] * len(groups)
    # Rewinding the first conv layer to its random initial weights hurts.
    assert result["clean_accuracy"][0][0] < final["train_clean"] - 0.1
    for key, value in tiny_run.model.state_dict().items():  # the run itself is untouched
        assert torch.equal(value, before[key])
    recalibrated = rewind(tiny_run, tiny, epochs=[0], bn="recalibrate")
    assert recalibrated["epochs"] == [0] and recalibrated["bn"] == "recalibrate"


def test_retraining_changes_only_the_chosen_layer(tiny, tiny_run):
    init = load_weights(tiny_run.path / "checkpoints" / "epoch_000.safetensors", tiny_run.model)
    group = "layers.1"
    model = reset_group(tiny_run.model, init, group)
    reset_state = {k: v.clone() for k, v in model.state_dict().items()}
    clean = tiny.subset(torch.nonzero(~tiny.is_noisy).flatten())
    retrain_group(model, group, clean, RetrainSettings(epochs=2), batch_size=64)
    keys = set(group_keys(model, group))
    final = tiny_run.model.state_dict()
    for key, value in model.state_dict().items():
        if key in keys:
            continue
        # Frozen weights and frozen BatchNorm statistics are bit-identical to the final model's.
        assert torch.equal(value, final[key]), key
    assert torch.equal(reset_state[f"{group}.conv.weight"], init[f"{group}.conv.weight"])
    assert not torch.equal(model.state_dict()[f"{group}.conv.weight"], init[f"{group}.conv.weight"])
    # The retrained layer's own BatchNorm re-estimates its statistics.
    assert not torch.equal(model.state_dict()[f"{group}.bn.running_mean"],
                           reset_state[f"{group}.bn.running_mean"])
    assert all(p.requires_grad for p in model.parameters()) and not model.training


def test_retrain_reports_every_chosen_layer(tiny, tiny_run):
    result = retrain(tiny_run, tiny, groups=["layers.2", "head"],
                     settings=RetrainSettings(epochs=3))
    assert result["groups"] == ["layers.2", "head"]
    for group in result["groups"]:
        after = result["records"][group]["retrained"]
        assert set(after) >= {"train_clean", "train_noisy", "train_noisy_true"}
        assert after["train_clean"] > 0.8  # retraining one layer on clean data works
    with pytest.raises(NoisefindError, match="no layer group"):
        retrain(tiny_run, tiny, groups=["layers.9"])


def test_analyses_refuse_runs_without_what_they_need(tiny, tmp_path):
    run = fit(tiny, TrainConfig(width=0.25, epochs=1, device="cpu"), out=tmp_path,
              progress=False)
    with pytest.raises(NoisefindError, match="--checkpoint-every"):
        rewind(run, tiny)
    with pytest.raises(NoisefindError, match="--checkpoint-every"):
        retrain(run, tiny)
    with pytest.raises(NoisefindError, match="--track-gradients"):
        gradient_figures(run)


def test_save_analysis_writes_json_and_figures(tiny_run, tmp_path):
    written = save_analysis("gradients", gradient_figures(tiny_run), tmp_path)
    assert [p.name for p in written] == ["gradients.json", "gradient_norms.png",
                                         "gradient_cosine.png"]
    assert all(p.stat().st_size > 1000 for p in written)
    summary = json.loads(written[0].read_text())["summary"]
    assert [row["group"] for row in summary] == layer_groups(tiny_run.model)


@pytest.fixture(scope="module")
def tiny_npz(digits, tmp_path_factory):
    """300 digits as a .npz, so the CLI reloads a run's data fast."""
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x=digits.x[:300, 0].numpy(), y=digits.y[:300].numpy())
    return path


@pytest.fixture(scope="module")
def cli_run(tiny_npz, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    result = CliRunner().invoke(app, [
        "train", str(tiny_npz), "--noise", "symmetric:0.1", "--width", "0.25", "--epochs", "3",
        "--checkpoint-every", "3", "--track-gradients", "--out", str(run), "--quiet",
        "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.parametrize("command,files", [
    (["gradients"], ["gradients.json", "gradient_norms.png", "gradient_cosine.png"]),
    (["rewind", "--epochs", "0,3", "--quiet"], ["rewind.json", "rewind.png"]),
    (["retrain", "--epochs", "1", "--layers", "head", "--quiet"], ["retrain.json",
                                                                  "retrain.png"]),
])
def test_cli_localize_end_to_end(command, files, cli_run, tmp_path):
    result = CliRunner().invoke(app, ["localize", command[0], str(cli_run), *command[1:],
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for file in files:
        assert (tmp_path / file).stat().st_size > 500, file
    if command[0] == "rewind":
        assert json.loads((tmp_path / "rewind.json").read_text())["epochs"] == [0, 3]


def test_cli_localize_defaults_to_the_run_folder(cli_run):
    result = CliRunner().invoke(app, ["localize", "gradients", str(cli_run)])
    assert result.exit_code == 0, result.output
    assert (cli_run / "localize" / "gradient_cosine.png").is_file()


@pytest.mark.parametrize("args,message", [
    (["train", "digits", "--track-gradients", "--epochs", "1"], "--noise"),
    (["localize", "rewind", "{run}", "--epochs", "5"], "no checkpoint for epoch 5"),
    (["localize", "rewind", "{run}", "--bn", "nope"], "--bn 'nope'"),
    (["localize", "retrain", "{run}", "--epochs", "0"], "--epochs must be at least 1"),
    (["localize", "gradients", "{plain}"], "--track-gradients"),
])
def test_cli_localize_bad_input_exits_2(args, message, cli_run, tiny, tmp_path):
    plain = tmp_path / "plain"
    if "{plain}" in args:
        fit(tiny, TrainConfig(width=0.25, epochs=1, device="cpu"), out=plain, progress=False)
    args = [a.replace("{run}", str(cli_run)).replace("{plain}", str(plain)) for a in args]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
