"""A pretrained backbone fine-tuned by noisefind: the weights it starts from, the linear probe,
and a scan whose every model is fine-tuned from it (so every witness runs); noisefind's own
fold network started from weights (``noisefind:fast``)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import noisefind
from noisefind.base.errors import NoisefindError
from noisefind.cli import app
from noisefind.data.load import load_data
from noisefind.decide.calibration import calibrated_margin, class_thresholds
from noisefind.decide.consensus import consensus_score
from noisefind.models.own import load_backbone
from noisefind.signals.neighbours import embeddings, neighbour_probabilities
from noisefind.signals.out_of_sample import OutOfSample, out_of_sample_config
from noisefind.training.config import TrainConfig, make_model, starting_model
from noisefind.training.fast_recipe import OWN_BACKBONE, WARM_EPOCHS
from noisefind.training.fit import fit

runner = CliRunner()
QUICK = ["--max-units", "3", "--noise-copies", "1", "--reference-size", "2", "--quiet"]


def recipe(weights, **options):
    return TrainConfig(backbone="torchvision:resnet18", backbone_weights=str(weights), lr=0.01,
                       batch_size=50, device="cpu", **options)


def test_the_probe_trains_the_new_classifier_alone_from_the_given_weights(digit_manifest,
                                                                           resnet_weights):
    data = load_data(digit_manifest)
    pretrained = load_file(str(resnet_weights))
    probed = fit(data, recipe(resnet_weights, epochs=1, probe_epochs=1), progress=False)
    state = {k.removeprefix("module."): v for k, v in probed.model.state_dict().items()
             if k.startswith("module.")}
    weights = [k for k in pretrained if not k.startswith("fc.") and "running" not in k
               and "num_batches" not in k]
    assert all(torch.equal(state[k], pretrained[k]) for k in weights)  # the body, as loaded
    assert not torch.equal(state["fc.weight"], pretrained["fc.weight"])  # a new, trained head
    tuned = fit(data, recipe(resnet_weights, epochs=1, probe_epochs=0), progress=False)
    tuned_state = {k.removeprefix("module."): v for k, v in tuned.model.state_dict().items()}
    assert not torch.equal(tuned_state["conv1.weight"], pretrained["conv1.weight"])
    assert tuned.config["arch"] == "torchvision:resnet18"
    assert tuned.config["train"]["backbone_weights"] == str(resnet_weights)


def test_scan_fine_tunes_every_model_from_the_backbone(digit_manifest, resnet_weights,
                                                       tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(digit_manifest), "--backbone",
                                 "torchvision:resnet18", "--weights", str(resnet_weights),
                                 "--epochs", "1", "--folds", "2", "--limit", "40",
                                 "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    # every witness runs, the backbone's own features too
    assert summary["witnesses"] == ["out_of_sample", "in_sample", "neighbours", "backbone"]
    assert summary["rank_by"] == "consensus" and summary["scanned"] == 40
    assert summary["train"]["backbone"] == "torchvision:resnet18"  # the fold models' recipe
    assert summary["train"]["lr"] == 0.01
    one = tmp_path / "one"  # the paper's order trains one model, saved as a run folder
    result = runner.invoke(app, ["scan", str(digit_manifest), "--backbone",
                                 "torchvision:resnet18", "--weights", str(resnet_weights),
                                 "--epochs", "1", "--folds", "0", "--limit", "20",
                                 "--cutoff", "none", "--out", str(one), *QUICK])
    assert result.exit_code == 0, result.output
    run = noisefind.load_run(one / "run")  # a run folder like any other, loaded without the file
    assert run.config["train"]["backbone"] == "torchvision:resnet18"
    assert run.config["train"]["lr"] == 0.01


def test_weights_of_another_architecture_are_refused(digit_manifest, resnet_weights):
    data = load_data(digit_manifest)
    wrong = TrainConfig(backbone="torchvision:resnet34", backbone_weights=str(resnet_weights),
                        epochs=1, device="cpu")
    with pytest.raises(NoisefindError, match="does not fit the backbone") as error:
        fit(data, wrong, progress=False)
    assert error.value.parameter == "weights"


@pytest.mark.parametrize("options,parameter", [
    ({"backbone": "torchvision:resnet18", "model": "torchvision:resnet18"},
     ("model", "backbone")),
    ({"backbone": "torchvision:resnet18", "mean": [0.5]}, ("mean", "backbone")),
    ({"backbone": "resnet18"}, "backbone"),
    ({"backbone": "torchvision:resnet18", "epochs": 2, "dropout": "standard"}, None),
])
def test_a_backbone_with_options_it_cannot_take_is_refused(digit_manifest, options, parameter):
    data = load_data(digit_manifest)
    if parameter is None:  # dropout is not a scan option: the recipe refuses it
        with pytest.raises(NoisefindError) as error:
            TrainConfig(backbone=options["backbone"], dropout="standard").validate()
        assert error.value.parameter == ("dropout", "backbone")
        return
    with pytest.raises(NoisefindError) as error:
        noisefind.scan(data, limit=5, **options)
    assert error.value.parameter == parameter


@pytest.fixture(scope="module")
def fold_network_weights(digit_manifest, tmp_path_factory):
    """noisefind's fold network trained one epoch with the fast recipe, as a user makes it."""
    out = tmp_path_factory.mktemp("fold-network") / "run"
    result = runner.invoke(app, ["train", str(digit_manifest), "--recipe", "fast", "--epochs",
                                 "1", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["arch"], config["train"]["recipe"], config["train"]["epochs"]) == (
        "whitened", "fast", 1)
    return out / "model.safetensors"


@pytest.mark.parametrize("options,message", [
    (["--width", "2"], "--width: --recipe fast trains the fold models' own network"),
    (["--recipe", "quick"], "choose paper or fast"),
])
def test_train_refuses_what_the_fast_recipe_cannot_take(digit_manifest, tmp_path, options,
                                                        message):
    recipe = [] if "--recipe" in options else ["--recipe", "fast"]
    result = runner.invoke(app, ["train", str(digit_manifest), *recipe, *options,
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and message in result.output
    grey = runner.invoke(app, ["train", "digits", "--recipe", "fast",
                               "--out", str(tmp_path / "grey")])  # 8-pixel grey images
    assert grey.exit_code == 2 and "colour images of at least 16 pixels" in grey.output


def test_noisefind_fast_starts_the_fold_models_from_the_weights(digit_manifest, digits,
                                                                fold_network_weights,
                                                                resnet_weights):
    data = load_data(digit_manifest)
    own = TrainConfig(backbone=OWN_BACKBONE, backbone_weights=str(fold_network_weights),
                      device="cpu")
    config = out_of_sample_config(own, data)
    # the fast recipe, whole from the start (no probe), for fewer epochs than from scratch
    assert (config.recipe, config.epochs, config.linear_probe_epochs()) == ("fast",
                                                                          WARM_EPOCHS, 0)
    model = make_model(config, data.input_shape, data.num_classes)
    model.fit_normalization(data.x)
    assert load_backbone(model, fold_network_weights, OWN_BACKBONE) > 0
    started = starting_model(config, data)  # what fit starts from: the same weights
    assert all(torch.equal(v, started.state_dict()[k]) for k, v in model.state_dict().items()
               if not k.startswith("head."))
    pretrained, state = load_file(str(fold_network_weights)), model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in pretrained.items() if k != "head.weight")
    assert not torch.equal(state["head.weight"], pretrained["head.weight"])  # a new classifier
    with pytest.raises(NoisefindError, match="does not fit the backbone noisefind:fast"):
        load_backbone(model, resnet_weights, OWN_BACKBONE)
    with pytest.raises(NoisefindError) as error:  # 8-pixel grey digits: not its kind of data
        out_of_sample_config(own, digits)
    assert error.value.parameter == "backbone"
    with pytest.raises(NoisefindError) as error:
        TrainConfig(backbone=OWN_BACKBONE).validate()
    assert error.value.parameter == ("backbone_weights", "backbone")


def test_scan_with_noisefind_fast_trains_the_fold_models_from_the_weights(
        digit_manifest, fold_network_weights, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(digit_manifest), "--backbone", OWN_BACKBONE,
                                 "--weights", str(fold_network_weights), "--fold-epochs", "2",
                                 "--folds", "2", "--limit", "40", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["train"]["backbone"], summary["train"]["fold_epochs"]) == (OWN_BACKBONE, 2)
    assert summary["auroc_consensus_score"] > 0.5
    # The neighbours also vote in the backbone's own feature space, and the order counts it.
    table = pd.read_csv(out / "suspects.csv")
    signals = {name: table[name].to_numpy() for name in
               ("oos_margin", "fold_aum", "neighbours", "backbone_neighbours")}
    assert table["consensus_score"].to_numpy() == pytest.approx(consensus_score(signals))
    assert "backbone_neighbours" in summary["seconds"]
    # ... and the count's canaries are scored there, where they sit as real errors do
    assert summary["cutoff"]["method"] == "backbone_canaries"
    review = runner.invoke(app, ["review", str(out)])  # the page names the fourth witness
    assert review.exit_code == 0, review.output
    assert "four witnesses" in (out / "report.html").read_text()
    assert summary["suspected"] == (table["suspected"]).sum() > 0


def test_the_backbone_s_neighbours_vote_in_its_features_before_any_training(
        digit_manifest, fold_network_weights):
    data = load_data(digit_manifest)
    own = TrainConfig(backbone=OWN_BACKBONE, backbone_weights=str(fold_network_weights),
                      device="cpu")
    oos, rows, labels = OutOfSample(data, own, 2), np.arange(len(data)), data.y.numpy()
    signal = oos.backbone_neighbours(rows, k=5)
    model = starting_model(oos.config, data)
    vote = neighbour_probabilities([embeddings(model, data.x, views=True)], labels,
                                   num_classes=data.num_classes, k=5)
    assert signal == pytest.approx(calibrated_margin(vote, rows, labels,
                                                     class_thresholds(vote, labels)))
    assert oos._runs is None  # no fold model was trained for it
    scratch = OutOfSample(data, TrainConfig(device="cpu"), 2)
    assert scratch.backbone_neighbours(rows) is None  # no backbone, no such signal
