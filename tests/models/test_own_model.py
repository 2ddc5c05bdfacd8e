"""Own models: a torchvision ResNet-18 trained here, a module:function factory, an nn.Module
passed to the library, the library call on arrays, and the one-line errors of bad specs."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from safetensors.torch import save_file
from sklearn.datasets import load_digits, load_wine
from torch import nn
from typer.testing import CliRunner

import noisefind
from noisefind.base.errors import NoisefindError
from noisefind.cli import app
from noisefind.data.arrays import as_labeled_data
from noisefind.data.labeled import to_float
from noisefind.data.load import load_data
from noisefind.signals.flip import FlipSettings, flip_search, flip_search_reference
from noisefind.training.runs import load_own_model

runner = CliRunner()
README = Path(__file__).resolve().parents[2] / "README.md"
FAST = ["--max-units", "3", "--noise-copies", "1", "--reference-size", "2", "--quiet"]


def test_cli_scans_a_torchvision_resnet18_with_its_safetensors_weights(
        digit_manifest, resnet_weights, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(digit_manifest), "--model", "torchvision:resnet18",
                                 "--weights", str(resnet_weights), "--limit", "12",
                                 "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "suspects.csv")
    assert len(table) == 12 and table["index"].is_unique
    assert table["score"].is_monotonic_decreasing and "is_noisy" in table
    summary = json.loads((out / "summary.json").read_text())
    own = summary["own_model"]
    assert own["model"] == "torchvision:resnet18" and own["classifier (not searched)"] == "fc"
    assert own["input"]["shape"] == [3, 16, 16] and "[0, 1]" in own["input"]["preparation"]
    assert "flip search" in own["ranking_signals"]
    assert summary["cutoff"]["method"] == "none" and "not trained by noisefind" in \
        summary["cutoff"]["note"]


def test_a_model_that_fits_few_of_its_labels_is_warned_about(digit_manifest, resnet_weights,
                                                            wine, tmp_path, monkeypatch):
    # The ResNet-18 took six steps: it predicts few of the given labels.
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(digit_manifest), "--model", "torchvision:resnet18",
                                 "--weights", str(resnet_weights), "--limit", "30",
                                 "--out", str(out), *FAST[:-1]])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    table = pd.read_csv(out / "suspects.csv", dtype=str)
    fit = (table["predicted_label"] == table["given_label"]).mean()
    assert summary["own_model_fit"] == pytest.approx(fit, abs=1e-4) and fit < 0.8
    assert f"predicts the given label for only {fit:.0%}" in " ".join(result.output.split())
    assert summary["witnesses"] == ["in_sample"]
    # The wine MLP fits its labels: no warning.
    _, _, mean, std, model = wine
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(model.state_dict(), tmp_path / "wine.pt")
    fitted = runner.invoke(app, ["scan", "wine", "--model", _wine_factory_module(tmp_path),
                                 "--weights", "wine.pt", "--mean", ",".join(map(str, mean)),
                                 "--std", ",".join(map(str, std)), "--limit", "40",
                                 "--out", "wine-out", *FAST[:-1]])
    assert fitted.exit_code == 0, fitted.output
    assert json.loads((tmp_path / "wine-out" / "summary.json").read_text())[
        "own_model_fit"] >= 0.8
    assert "warning" not in fitted.output


def test_batched_search_equals_the_reference_on_resnet18(digit_manifest, resnet_weights):
    data = load_data(digit_manifest)
    run = load_own_model("torchvision:resnet18", data, resnet_weights, device="cpu")
    model = run.model.double()  # float64, so that batching cannot change a near tie
    # 64 + 64 + 128 + ... channels: every conv of the network is searched, the classifier not.
    assert len(model.gates()) == 20 and sum(g.units for _, g in model.gates()) == 4800
    assert "fc" not in {name for name, _ in model.gates()}
    settings = FlipSettings(max_units=4, noise_copies=2, reference_size=2, batch_size=3,
                            flush_every=2)
    rows = torch.arange(8)
    batched = flip_search(model, data, settings, rows=rows, progress=False)
    reference = flip_search_reference(model, data, settings, rows=rows)
    assert batched["units_to_flip"].tolist() == reference["units_to_flip"].tolist()
    assert batched["units"].tolist() == reference["units"].tolist()
    assert np.allclose(batched["flip_cost"], reference["flip_cost"])
    assert batched["flipped_to"].tolist() == reference["flipped_to"].tolist()


def test_a_switched_off_channel_is_zero_after_its_relu(digit_manifest, resnet_weights):
    from noisefind.models.nets import unit_masks

    data = load_data(digit_manifest)
    model = load_own_model("torchvision:resnet18", data, resnet_weights, device="cpu").model
    seen = []
    hook = model.module.relu.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    masks = [torch.ones(2, g.units) for _, g in model.gates()]
    masks[0][0, 5] = 0  # group 0: channel 5 of conv1 off; group 1: nothing off
    with unit_masks(model, masks), torch.no_grad():
        model(to_float(data.x[:4]))
    hook.remove()
    after_stem = seen[0]  # the first ReLU call is the stem's, after conv1 and bn1
    assert after_stem[:2, 5].abs().max() == 0 and after_stem[2:, 5].abs().max() > 0
    assert after_stem[:2, 6].abs().max() > 0


def _wine_factory_module(folder: Path) -> str:
    (folder / "wine_models.py").write_text(
        "from torch import nn\n\n\n"
        "def mlp(num_classes):\n"
        "    return nn.Sequential(nn.Linear(13, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),\n"
        "                         nn.Linear(32, num_classes))\n")
    return "wine_models:mlp"


def _train_wine_mlp(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(13, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@pytest.fixture(scope="module")
def wine():
    x, y = load_wine(return_X_y=True)
    mean, std = x.mean(0), x.std(0)
    standard = torch.tensor((x - mean) / std, dtype=torch.float32)
    return x, y, mean, std, _train_wine_mlp(standard, torch.tensor(y))


def test_cli_scans_tabular_data_with_a_module_function_factory(wine, tmp_path, monkeypatch):
    _, _, mean, std, model = wine
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = _wine_factory_module(tmp_path)
    torch.save(model.state_dict(), tmp_path / "wine.pt")
    result = runner.invoke(app, ["scan", "wine", "--model", spec, "--weights", "wine.pt",
                                 "--mean", ",".join(map(str, mean)),
                                 "--std", ",".join(map(str, std)), "--limit", "40",
                                 "--out", "out", *FAST])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["scanned"] == 40 and summary["own_model"]["units"] == 64
    assert summary["own_model"]["input"]["mean"] == pytest.approx(mean, rel=1e-5)


def test_find_label_issues_with_an_nn_module_on_tabular_data(wine, tmp_path):
    x, y, mean, std, model = wine
    noisy = y.copy()
    noisy[:10] = (noisy[:10] + 1) % 3
    result = noisefind.find_label_issues(x, noisy, model=model, mean=mean, std=std, limit=60,
                                         max_units=10, out=tmp_path / "scan")
    assert len(result.table) == 60 and isinstance(result.summary, dict)
    written = json.loads((tmp_path / "scan" / "summary.json").read_text())
    assert written.keys() == result.summary.keys() and written["scanned"] == 60
    assert result.summary["own_model"]["model"] == "Sequential"
    assert not result.table["suspected"].any()  # no cutoff for a model trained elsewhere
    assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules())
    assert model.training  # the caller's module is left as it was (the call scans a copy)


def test_readme_python_example_runs_and_writes_nothing(tmp_path, monkeypatch):
    text = README.read_text()
    section = text[text.index("## Your own model"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) == 3
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    result = scope["result"]
    assert len(result.table) == 100 and isinstance(result.summary, dict)
    assert result.summary["scanned"] == 100
    assert list(result.table.columns[:4]) == ["rank", "index", "path", "given_label"]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kind,message", [
    ("unknown", "unknown architecture"),
    ("classes", "class count"),
    ("other", "weights of another architecture"),
    ("pickle", "pickle"),
    ("shape", "input shape"),
    ("missing", "needs your weights"),
])
def test_bad_specs_give_one_line_and_exit_2(kind, message, digit_manifest, resnet_weights,
                                            tmp_path):
    data, spec, weights = str(digit_manifest), "torchvision:resnet18", str(resnet_weights)
    if kind == "unknown":
        spec = "torchvision:resnet_nine"
    elif kind == "classes":
        weights = str(tmp_path / "five.safetensors")
        save_file(torchvision.models.resnet18(num_classes=5).state_dict(), weights)
    elif kind == "other":
        spec = "torchvision:resnet34"
    elif kind == "pickle":
        weights = str(tmp_path / "whole.pt")
        torch.save(nn.Sequential(nn.Linear(2, 2)), weights)
    elif kind == "shape":
        data = "digits"  # one-channel 8x8 images; ResNet-18 takes three channels
    args = ["scan", data, "--model", spec, "--out", str(tmp_path / "out"), "--quiet"]
    result = runner.invoke(app, args + ([] if kind == "missing" else ["--weights", weights]))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_run_trained_on_corrupted_labels_passes_its_noise_on(noisy_digits_run):
    result = noisefind.find_label_issues("digits", model=noisy_digits_run.path, limit=20,
                                         max_units=5, cutoff="none")
    assert result.summary["noise"] == "symmetric:0.1" and "is_noisy" in result.table


def test_library_errors_name_parameters_not_flags():
    x, y = load_digits(return_X_y=True)
    with pytest.raises(NoisefindError, match=r"^max_units must be at least 1"):
        noisefind.find_label_issues(x, y, max_units=0)
    with pytest.raises(NoisefindError, match="labels: 5 labels"):
        noisefind.find_label_issues(x, y[:5])
    with pytest.raises(NoisefindError, match="weights: only for a model"):
        noisefind.find_label_issues(x, y, weights="w.safetensors")


def test_inputs_in_every_form_become_the_same_data():
    images, labels = load_digits(return_X_y=True)
    images = images.reshape(-1, 8, 8)[:50] / 16
    labels = labels[:50]
    from_array = as_labeled_data(images, labels)
    as_tensor = torch.tensor(images, dtype=torch.float32)[:, None]
    dataset = torch.utils.data.TensorDataset(as_tensor, torch.tensor(labels))
    from_dataset = as_labeled_data(dataset)
    assert from_array.x.shape == (50, 1, 8, 8) and from_array.classes == from_dataset.classes
    assert torch.equal(from_array.x, from_dataset.x) and torch.equal(from_array.y, from_dataset.y)
    resized = as_labeled_data(as_tensor, labels, image_size=16)
    assert resized.x.shape == (50, 1, 16, 16)


def test_readme_step_by_step_example_runs(tmp_path, monkeypatch):
    """The README's longer example, as written: train, scan, review, export."""
    text = README.read_text()
    section = text[text.index("Step by"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    result, flip = scope["result"], scope["flip"]
    table = result.table
    assert len(table) == 300 and result.summary["rank_by"] == "consensus"
    assert table["suspected"].any() and table["consensus_score"].is_monotonic_decreasing
    assert len(result.suspected) == table["suspected"].sum()
    assert flip.table["score"].is_monotonic_decreasing and flip.summary["rank_by"] == "flip"
    assert (tmp_path / "noisefind-out" / "report.html").is_file()
    clean = (tmp_path / "clean.csv").read_text().splitlines()
    assert len(clean) - 1 == 1797 - int(table["suspected"].sum())  # header + kept rows
