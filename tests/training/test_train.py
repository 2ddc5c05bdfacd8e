import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from noisefind.base.errors import NoisefindError
from noisefind.models.predict import label_margin, predict_logits
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit
from noisefind.training.runs import check_compatible, load_run


def test_default_recipe_memorizes_noisy_digits(noisy_digits_run):
    metrics = noisy_digits_run.config["metrics"]
    assert metrics["train_clean_accuracy"] >= 0.95
    assert metrics["train_noisy_accuracy"] >= 0.95


def test_history_records_every_example_every_epoch(noisy_digits_run, noisy_digits):
    h = noisy_digits_run.history
    assert h.loss.shape == h.margin.shape == h.correct.shape == (40, len(noisy_digits))
    assert h.loss.dtype == np.float16 and h.correct.dtype == bool
    assert np.array_equal(h.labels, noisy_digits.y.numpy())
    assert np.array_equal(h.true_labels, noisy_digits.true_y.numpy())
    noisy = noisy_digits.is_noisy.numpy()
    # Mislabeled examples are learned late: early in training they are mostly wrong.
    assert h.correct[2, noisy].mean() < 0.3 < h.correct[2, ~noisy].mean()
    assert h.correct[-1].mean() > 0.95
    # The margin is positive exactly when the example was predicted right.
    assert np.array_equal(h.margin[-1] > 0, h.correct[-1])


def test_run_folder_reloads_with_identical_predictions(noisy_digits_run, noisy_digits):
    folder = noisy_digits_run.path
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.json",
                                                  "history.npz"}
    config = json.loads((folder / "config.json").read_text())
    assert config["data"]["noise"] == "symmetric:0.1"
    reloaded = load_run(folder, device="cpu")
    a = predict_logits(noisy_digits_run.model, noisy_digits.x)
    b = predict_logits(reloaded.model, noisy_digits.x)
    assert torch.equal(a, b)
    assert np.array_equal(reloaded.history.loss, noisy_digits_run.history.loss)
    check_compatible(reloaded, noisy_digits)


def test_runs_are_repeatable_on_cpu(digits):
    small = digits.subset(torch.arange(300))
    config = TrainConfig(width=0.25, epochs=2, device="cpu")
    a = fit(small, config, progress=False)
    b = fit(small, config, progress=False)
    assert np.array_equal(a.history.loss, b.history.loss)


def test_checkpoints_keep_initial_and_periodic_weights(digits, tmp_path):
    small = digits.subset(torch.arange(200))
    fit(small, TrainConfig(width=0.25, epochs=4, checkpoint_every=2), out=tmp_path,
        progress=False)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["epoch_000.safetensors", "epoch_002.safetensors", "epoch_004.safetensors"]


def test_divergence_stops_with_a_hint(digits):
    with pytest.raises(NoisefindError, match="lower --lr"):
        fit(digits.subset(torch.arange(200)), TrainConfig(width=0.25, epochs=3, lr=1e12),
            progress=False)


def test_mismatched_run_and_data(noisy_digits_run):
    from noisefind.data.load import load_data

    with pytest.raises(NoisefindError, match="classes"):
        check_compatible(noisy_digits_run, load_data("wine"))


def test_not_a_run_and_corrupt_weights(noisy_digits_run, tmp_path):
    with pytest.raises(NoisefindError, match="not a noisefind run"):
        load_run(tmp_path)
    for name in ("config.json", "history.npz"):
        (tmp_path / name).write_bytes((noisy_digits_run.path / name).read_bytes())
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x04pickle payload")
    with pytest.raises(NoisefindError, match="not a valid safetensors"):
        load_run(tmp_path)


def test_label_margin():
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.0, 3.0, 1.0]])
    assert label_margin(logits, torch.tensor([0, 0])).tolist() == [1.0, -3.0]


def test_image_views_are_shifted_or_mirrored_crops_of_the_padded_image():
    import torch.nn.functional as F

    from noisefind.training.views import ImageViews

    x = torch.rand(12, 3, 8, 8)
    views = ImageViews(x.shape, torch.device("cpu"), seed=0)(x)
    assert views.shape == x.shape
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")  # pad = 8 // 8
    kinds = set()
    for i in range(len(x)):
        matches = [(dy, dx, flip) for dy in range(3) for dx in range(3) for flip in (0, 1)
                   if torch.equal(views[i], (lambda c: c.flip(-1) if flip else c)(
                       padded[i, :, dy:dy + 8, dx:dx + 8]))]
        assert matches, f"view {i} is not a crop of its padded image"
        kinds.add(matches[0][2])
    assert kinds == {0, 1}  # both mirrored and plain views occur among 12


def test_grayscale_views_are_shifted_never_mirrored():
    from noisefind.training.views import ImageViews

    # Asymmetric images: a mirrored view could not match any unmirrored crop.
    x = torch.arange(40 * 8 * 8, dtype=torch.float32).reshape(40, 1, 8, 8).sin()
    views = ImageViews(x.shape, torch.device("cpu"), seed=0)(x)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    for i in range(len(x)):
        assert any(torch.equal(views[i], padded[i, :, dy:dy + 8, dx:dx + 8])
                   for dy in range(3) for dx in range(3)), f"view {i} is not a plain crop"
    assert not torch.equal(views, x)  # some views are shifted


def test_augmentation_applies_to_images_not_tables(digits):
    from noisefind.data.load import load_data
    from noisefind.training.views import augment_for

    assert augment_for(digits)
    assert not augment_for(load_data("wine"))
    config = TrainConfig(width=0.25, epochs=1)
    plain = fit(digits, config, progress=False)
    augmented = fit(digits, replace(config, augment=True), progress=False)
    assert not np.array_equal(plain.history.loss, augmented.history.loss)


@pytest.mark.parametrize("setting,value", [
    ("epochs", 0), ("batch_size", 1), ("lr", 0.0), ("width", -1.0), ("holdout", 1.0),
    ("checkpoint_every", -1)])
def test_a_recipe_that_cannot_train_is_refused_naming_its_setting(setting, value):
    with pytest.raises(NoisefindError, match=rf"^{setting} must be") as error:
        TrainConfig(**{setting: value}).validate()
    assert error.value.parameter == setting
