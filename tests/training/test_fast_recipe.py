"""The fast recipe of the out-of-sample models: optimiser, lookahead, test-time views, choice."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from noisefind.base.errors import NoisefindError
from noisefind.data.load import load_data
from noisefind.models.architectures import build_model
from noisefind.models.predict import predict_logits, prediction_views
from noisefind.signals.out_of_sample import cv_folds, out_of_sample_config, uses_views
from noisefind.training.config import TrainConfig
from noisefind.training.fast_recipe import BIAS_SCALE, FAST, Lookahead, fast_optimizer
from noisefind.training.fit import fit


def test_out_of_sample_config_picks_the_fast_recipe_for_colour_images_only(digit_manifest,
                                                                           digits):
    colour = load_data(digit_manifest)
    scanned = TrainConfig(width=0.25, epochs=7, seed=3)
    fast = out_of_sample_config(scanned, colour)
    assert (fast.recipe, fast.arch, fast.augment) == ("fast", "whitened", True)
    # The fast recipe's own epochs, not the scanned model's (which must fit every label).
    assert (fast.epochs, fast.seed, fast.width) == (FAST["epochs"], 3, FAST["width"])
    paper = out_of_sample_config(replace(scanned, fold_recipe="paper"), colour)
    assert (paper.recipe, paper.arch, paper.width, paper.augment) == ("paper", "auto", 0.25, True)
    assert paper.epochs == 7
    grey = out_of_sample_config(scanned, digits)  # 8 px grayscale: the paper's recipe
    assert (grey.recipe, grey.arch, grey.epochs) == ("paper", "auto", 7)
    for given in (replace(scanned, fold_epochs=4), replace(scanned, fold_epochs=4,
                                                           fold_recipe="paper")):
        assert out_of_sample_config(given, colour).epochs == 4
    for setting, value in (("fold_recipe", "quick"), ("fold_epochs", 0)):
        with pytest.raises(NoisefindError) as caught:
            TrainConfig(**{setting: value}).validate()
        assert caught.value.parameter == setting


def test_fast_recipe_learns_held_out_digits(digit_manifest):
    data = load_data(digit_manifest)
    held = cv_folds(data.y.numpy(), 5, 0)[0]
    kept = torch.from_numpy(np.setdiff1d(np.arange(len(data)), held))
    config = out_of_sample_config(TrainConfig(epochs=30, seed=1), data)
    run = fit(data.subset(kept), config, progress=False)
    assert uses_views(run) and run.config["train"]["recipe"] == "fast"
    predicted = predict_logits(run.model, data.x[held], views=True).argmax(1).numpy()
    # 240 training images, 10% of their labels wrong, mirrored at random as colour images are
    # (a mirrored digit is another symbol); chance is 10%.
    assert (predicted == data.true_y.numpy()[held]).mean() > 0.5


def test_batchnorm_shifts_learn_faster_without_more_weight_decay():
    model = build_model("whitened", (3, 16, 16), 4, width=0.25)
    optimizer, schedule = fast_optimizer(model, 20.0, 0.85, 0.0153, 128, 100)
    shifts, stem, others = optimizer.param_groups
    assert shifts["lr"] == pytest.approx(BIAS_SCALE * others["lr"])
    assert stem["params"] == [model.layers[0].bias]
    # Decay per step (lr * weight_decay) is the same in both groups.
    assert shifts["lr"] * shifts["weight_decay"] == pytest.approx(
        others["lr"] * others["weight_decay"])
    assert not any(p is model.layers[0].weight for p in others["params"])  # the fixed stem
    # The stem's bias learns early, then stops; the rest keep their schedule to the end.
    for _ in range(50):
        optimizer.step()
        schedule.step()
    assert stem["lr"] == 0.0 and others["lr"] > 0


def test_lookahead_sets_the_weights_to_their_running_average():
    layer = torch.nn.Linear(2, 1, bias=False)
    lookahead = Lookahead(layer, total_steps=10)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        lookahead.step(5)  # the average starts here
        layer.weight.fill_(3.0)
        lookahead.step(10)
    decay = 0.95 ** 5 * 1.0 ** 3
    assert layer.weight[0, 0].item() == pytest.approx(decay * 1.0 + (1 - decay) * 3.0)
    with torch.no_grad():
        layer.weight.fill_(9.0)
    lookahead.finish()
    assert layer.weight[0, 0].item() == pytest.approx(decay * 1.0 + (1 - decay) * 3.0)


def test_prediction_views_average_mirrored_and_shifted_images():
    colour = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    views = prediction_views(colour)
    assert len(views) == 6 and sum(w for w, _ in views) == pytest.approx(1.0)
    assert torch.equal(views[1][1], colour.flip(-1))
    assert torch.equal(views[2][1][..., 1:, 1:], colour[..., :-1, :-1])  # shifted down-right
    assert len(prediction_views(colour[:, :1])) == 3  # no mirror for one channel
    model = build_model("whitened", (3, 16, 16), 4, width=0.25).eval()
    x = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    model.fit_normalization(x)
    with torch.no_grad():
        expected = sum(w * model(v) for w, v in prediction_views(x))
    assert torch.allclose(predict_logits(model, x, views=True), expected, atol=1e-5)
