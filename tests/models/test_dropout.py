"""Example-tied dropout and its controls: masks, modes, training, evaluation, the CLI."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from noisefind.analyses.evaluate import etd_scores, evaluate, run_data
from noisefind.base.errors import NoisefindError
from noisefind.cli import app
from noisefind.models.architectures import build_model
from noisefind.models.dropout import (
    ExampleTiedDropout,
    SparseNetwork,
    StandardDropout,
    dropout_factory,
    dropout_layers,
    dropout_mode,
    generalization_channels,
    memorization_dropped,
)
from noisefind.models.predict import label_margin, predict_logits
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit
from noisefind.training.runs import load_run

runner = CliRunner()


def etd_layer(channels=200, p_gen=0.2, p_mem=0.1, seed=0, layer=0) -> ExampleTiedDropout:
    return ExampleTiedDropout(channels, p_gen, p_mem, seed, layer)


@pytest.fixture(scope="module")
def etd_run(noisy_digits, tmp_path_factory):
    """A small example-tied CNN on 10%-noisy digits, trained without a 20% hold-out."""
    config = TrainConfig(width=0.5, epochs=12, dropout="example-tied", holdout=0.2, device="cpu")
    return fit(noisy_digits, config, out=tmp_path_factory.mktemp("etd"), progress=False)


@pytest.fixture(scope="module")
def etd_result(etd_run, noisy_digits):
    return evaluate(etd_run, noisy_digits, drop_memorization=True)


# --------------------------------------------------------------------------------------------
# Masks


def test_masks_are_a_function_of_the_index_alone():
    layer = etd_layer()
    index = torch.arange(1000)
    masks = layer.memorization_mask(index)
    assert torch.equal(masks, layer.memorization_mask(index))  # every epoch the same
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(layer.memorization_mask(index[order]), masks[order])  # any batch
    assert torch.equal(layer.memorization_mask(index[7:8]), masks[7:8])


def test_masks_differ_across_indices_at_the_expected_rate():
    layer = etd_layer(p_mem=0.1)
    masks = layer.memorization_mask(torch.arange(2000)).float()
    assert masks.shape == (2000, 200 - layer.n_gen)
    assert abs(masks.mean().item() - 0.1) < 0.005
    # Independent Bernoulli(0.1) masks disagree on 2 * 0.1 * 0.9 = 18% of channels.
    disagree = (masks[:1000] != masks[1000:]).float().mean().item()
    assert abs(disagree - 0.18) < 0.01
    assert len({tuple(m.tolist()) for m in masks.bool()}) == 2000


def test_layers_and_seeds_draw_their_own_masks():
    index = torch.arange(500)
    base = etd_layer().memorization_mask(index)
    for other in (etd_layer(layer=1), etd_layer(seed=1)):
        disagree = (other.memorization_mask(index) != base).float().mean().item()
        assert abs(disagree - 0.18) < 0.02


def test_generalization_share_is_rounded_and_kept_inside_the_layer():
    assert generalization_channels(64, 0.2) == 13
    assert generalization_channels(5, 0.01) == 1
    assert generalization_channels(5, 0.99) == 4
    assert generalization_channels(1, 0.2) == 1


# --------------------------------------------------------------------------------------------
# Modes


def test_train_mode_uses_the_own_mask_without_rescaling():
    layer = etd_layer(channels=40).train()
    x = torch.rand(300, 40, 3, 3) + 0.1
    index = torch.arange(300)
    out = layer(x, index)
    on = torch.cat([torch.ones(300, layer.n_gen, dtype=torch.bool),
                    layer.memorization_mask(index)], 1)
    assert torch.equal(out, x * on[:, :, None, None])  # kept channels pass unscaled
    with pytest.raises(NoisefindError, match="indices"):
        layer(x, None)


def test_eval_modes_scale_and_drop_exactly_the_memorization_channels():
    layer = etd_layer(channels=40, p_gen=0.2, p_mem=0.1).eval()
    x = torch.rand(50, 40) + 0.1
    index = torch.arange(50)
    n = layer.n_gen
    out = layer(x, index)  # "all", the default
    assert torch.equal(out[:, :n], x[:, :n])
    assert torch.allclose(out[:, n:], 0.1 * x[:, n:])
    with dropout_mode(layer, "drop"):
        dropped = layer(x, index)
    assert torch.all(dropped[:, n:] == 0)
    assert torch.allclose(dropped[:, :n], x[:, :n] * (0.2 + 0.1) / 0.2)
    with dropout_mode(layer, "example"):
        own = layer(x, index)
        assert torch.equal(layer(x, None), out)  # no indices (test data): as "all"
    assert torch.equal(own, layer.train()(x, index))
    assert layer.mode == "all"  # restored


def test_dropout_mode_reaches_every_layer_of_a_model():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, width=0.25,
                        dropout=dropout_factory("example-tied", 0.2, 0.1, seed=0)).eval()
    layers = dropout_layers(model)
    assert len(layers) == len({lay.stream for lay in layers}) == 4
    seen = []
    hooks = [lay.register_forward_hook(lambda m, i, o: seen.append((m.n_gen, o)))
             for lay in layers]
    with dropout_mode(model, "drop"):
        model(torch.rand(6, 1, 8, 8))
    for hook in hooks:
        hook.remove()
    assert len(seen) == 4 and all(torch.all(o[:, n:] == 0) for n, o in seen)
    assert any(o[:, :n].abs().sum() > 0 for n, o in seen)
    assert all(lay.mode == "all" for lay in layers)
    with pytest.raises(NoisefindError, match="mode"):
        with dropout_mode(model, "half"):
            pass


def test_standard_dropout_is_rescaled_in_training_and_the_identity_in_evaluation():
    torch.manual_seed(0)
    layer = StandardDropout(100, p_gen=0.2, p_mem=0.1)
    x = torch.ones(400, 100, 2, 2)
    out = layer.train()(x, None)
    assert set(out.unique().tolist()) == {0.0, 1.25}  # rescaled by 1 / (1 - 0.2)
    assert abs((out == 0).float().mean().item() - 0.2) < 0.01
    assert not torch.equal(layer(x, None), out)  # a fresh mask every step
    assert torch.equal(layer.eval()(x, None), x)
    with dropout_mode(layer, "drop"):
        assert torch.all(layer(x, None)[:, 20:] == 0)


def test_sparse_network_is_one_fixed_subset_of_the_example_share():
    a, b = SparseNetwork(50, 0.2, 0.1, seed=0, layer=3), SparseNetwork(50, 0.2, 0.1, 0, 3)
    assert torch.equal(a.all_scale, b.all_scale)  # rebuilt identically from the config
    assert a.all_scale.sum().item() == 10 + round(0.1 * 40)
    assert torch.all(a.all_scale[:10] == 1)
    x = torch.rand(8, 50)
    assert torch.equal(a.train()(x, torch.arange(8)), x * a.all_scale)  # same for every example
    assert torch.equal(a.eval()(x, None), x * a.all_scale)


@pytest.mark.parametrize("kind,p_gen,p_mem,message", [
    ("gaussian", 0.2, 0.1, "dropout"), ("example-tied", 0.0, 0.1, "p_gen"),
    ("example-tied", 1.0, 0.1, "p_gen"), ("sparse", 0.2, 0.0, "p_mem"),
    ("standard", 0.2, 1.5, "p_mem"),
])
def test_factory_rejects_bad_settings(kind, p_gen, p_mem, message):
    with pytest.raises(NoisefindError, match=message):
        dropout_factory(kind, p_gen, p_mem, seed=0)


def test_example_tied_dropout_in_the_mlp():
    factory = dropout_factory("example-tied", 0.2, 0.1, seed=0)
    assert dropout_factory("none", 0.2, 0.1, seed=0) is None
    model = build_model("mlp", (13,), 3, width=0.1, dropout=factory).train()
    assert model(torch.rand(4, 13), torch.arange(4)).shape == (4, 3)
    assert [lay.channels for lay in dropout_layers(model)] == [26, 26]


# --------------------------------------------------------------------------------------------
# A trained model


def test_holdout_is_the_same_split_in_training_and_evaluation(etd_run, noisy_digits):
    split = run_data(etd_run, noisy_digits)
    assert len(split) == etd_run.config["data"]["examples"] < len(noisy_digits)
    assert len(split) + len(split.x_test) == len(noisy_digits)
    assert np.array_equal(split.index.numpy(), etd_run.history.index)
    assert etd_run.config["data"]["fingerprint"] == split.fingerprint()
    assert run_data(etd_run, split) is split  # already split: unchanged


def test_trained_run_round_trips_with_identical_predictions(etd_run, noisy_digits):
    reloaded = load_run(etd_run.path, device="cpu")
    assert isinstance(dropout_layers(reloaded.model)[0], ExampleTiedDropout)
    for mode in ("all", "drop", "example"):
        with dropout_mode(etd_run.model, mode), dropout_mode(reloaded.model, mode):
            a = predict_logits(etd_run.model, noisy_digits.x, noisy_digits.index)
            b = predict_logits(reloaded.model, noisy_digits.x, noisy_digits.index)
        assert torch.equal(a, b), mode


def test_evaluate_reports_before_all_and_after(etd_run, etd_result, noisy_digits):
    result = etd_result
    assert list(result) == ["before", "all", "after"]
    for stage in result.values():
        assert {"train_clean", "train_noisy", "test"} <= set(stage)
        assert all(0.0 <= v <= 1.0 for v in stage.values())
    # The trained network fits its mislabeled examples through their own channels; dropping
    # those channels unlearns most of them while the clean ones stay.
    assert result["before"]["train_noisy"] > result["after"]["train_noisy"] + 0.3
    assert result["after"]["train_clean"] > 0.8
    assert "after" not in evaluate(etd_run, noisy_digits)


def test_drop_evaluation_leaves_batch_norm_statistics_as_they_were(etd_run, noisy_digits):
    before = {k: v.clone() for k, v in etd_run.model.state_dict().items()}
    with memorization_dropped(etd_run.model, noisy_digits.x[:300]):
        changed = etd_run.model.state_dict()
        assert not torch.equal(changed["layers.1.bn.running_mean"],
                               before["layers.1.bn.running_mean"])
    after = etd_run.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_etd_scores_rank_by_the_margin_after_the_drop(etd_run, noisy_digits):
    scores = etd_scores(etd_run, noisy_digits)
    train = run_data(etd_run, noisy_digits)
    assert scores.shape == (len(train),) and scores.dtype == np.float64
    with memorization_dropped(etd_run.model, train.x):
        logits = predict_logits(etd_run.model, train.x, train.index).cpu()
    wrong = (logits.argmax(1) != train.y).numpy()
    assert np.array_equal(scores > 0, wrong)
    assert np.allclose(scores, -label_margin(logits, train.y).numpy())
    noisy = train.is_noisy.numpy()
    assert scores[noisy].mean() > scores[~noisy].mean()


def test_bench_detector_etd_is_opt_in_and_trains_its_own_example_tied_model(noisy_digits):
    from noisefind.bench.context import DetectorContext
    from noisefind.bench.detectors import DETECTORS, OPT_IN

    assert "etd" in OPT_IN
    config = TrainConfig(width=0.5, epochs=12, device="cpu")
    run = fit(noisy_digits, config, progress=False)  # a plain run, as the bench trains
    rows = np.arange(0, len(noisy_digits), 3)
    context = DetectorContext(noisy_digits, run, rows=rows, train_config=config)
    context.start_tracking()
    scores = DETECTORS["etd"](context)
    assert scores.shape == (len(rows),)
    assert "etd_run" in context.used  # its own training is charged to it
    noisy = noisy_digits.is_noisy.numpy()[rows]
    assert roc_auc_score(noisy, scores) > 0.8


def test_drop_needs_a_run_with_dropout_layers(digits):
    plain = fit(digits.subset(torch.arange(200)), TrainConfig(width=0.25, epochs=1),
                progress=False)
    with pytest.raises(NoisefindError, match="--example-tied-dropout"):
        evaluate(plain, digits, drop_memorization=True)
    with pytest.raises(NoisefindError, match="--example-tied-dropout"):
        etd_scores(plain, digits)


# --------------------------------------------------------------------------------------------
# CLI


def test_cli_evaluate_json(etd_run, etd_result):
    result = runner.invoke(app, ["evaluate", str(etd_run.path), "--drop-memorization", "--json",
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"before", "all", "after"}
    assert set(payload["after"]) >= {"train_clean", "train_noisy", "test"}
    assert payload == json.loads(json.dumps(etd_result))  # the data reloads from the config


def test_cli_evaluate_prints_the_table(etd_run):
    result = runner.invoke(app, ["evaluate", str(etd_run.path), "--drop-memorization",
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "after drop" in result.stdout and "train, mislabeled" in result.stdout


def test_cli_train_with_example_tied_dropout(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "digits", "--example-tied-dropout", "--p-gen", "0.3",
                                 "--p-mem", "0.2", "--holdout", "0.2", "--epochs", "1",
                                 "--width", "0.25", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    train = json.loads((out / "config.json").read_text())["train"]
    assert (train["dropout"], train["p_gen"], train["p_mem"], train["holdout"]) == \
        ("example-tied", 0.3, 0.2, 0.2)


@pytest.mark.parametrize("args,message", [
    (["train", "digits", "--example-tied-dropout", "--dropout", "standard"], "conflicts"),
    (["train", "digits", "--dropout", "gaussian"], "--dropout"),
    (["train", "digits", "--example-tied-dropout", "--p-gen", "1.2"], "--p-gen"),
    (["train", "digits", "--holdout", "1.0"], "--holdout"),
    (["evaluate", "no/such/run"], "not a noisefind run"),
])
def test_cli_bad_dropout_input_exits_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
