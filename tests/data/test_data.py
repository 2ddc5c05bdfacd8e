import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from noisefind.base.errors import NoisefindError
from noisefind.data.labeled import NoiseSpec, inject_noise, parse_noise_list, split_holdout
from noisefind.data.load import load_data


def test_digits_builtin_has_real_labels_and_indices(digits):
    assert digits.x.shape == (1797, 1, 8, 8)
    assert digits.classes == [str(k) for k in range(10)]
    assert torch.equal(digits.index, torch.arange(1797))
    assert 0.0 <= digits.x.min() and digits.x.max() <= 1.0
    assert torch.bincount(digits.y).min() > 150


@pytest.mark.parametrize("name,features,classes", [("wine", 13, 3), ("breast-cancer", 30, 2)])
def test_tabular_builtins(name, features, classes):
    data = load_data(name)
    assert data.input_shape == (features,)
    assert data.num_classes == classes
    assert not data.is_image


def test_image_folder_labels_paths_and_indices(image_folder):
    data = load_data(image_folder)
    assert data.classes == ["cat", "dog", "fox"]
    assert data.x.shape == (18, 3, 12, 12)
    assert data.y.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert data.paths[7].endswith("dog/001.png")
    assert torch.equal(data.index, torch.arange(18))


def test_image_folder_with_train_and_test(tmp_path):
    from conftest import write_image_folder

    write_image_folder(tmp_path / "d" / "train")
    write_image_folder(tmp_path / "d" / "test", per_class=2)
    data = load_data(tmp_path / "d")
    assert len(data) == 18 and data.x_test.shape[0] == 6
    assert data.y_test.tolist() == [0, 0, 1, 1, 2, 2]


def test_image_manifest_with_own_labels(image_folder):
    files = sorted(image_folder.rglob("*.png"))
    labels = ["a" if i % 2 else "b" for i in range(len(files))]
    rows = pd.DataFrame({"path": [str(f.relative_to(image_folder)) for f in files],
                         "label": labels})
    rows.to_csv(image_folder / "manifest.csv", index=False)
    data = load_data(image_folder / "manifest.csv")
    assert data.classes == ["a", "b"]
    assert data.y.tolist() == [1 if lab == "b" else 0 for lab in labels]
    assert data.paths[0] == str(files[0].resolve())


def test_tabular_csv_and_npz(tmp_path):
    table = pd.DataFrame({"f1": [0.1, 0.2, 0.3, 0.4], "f2": [1, 2, 3, 4], "label": [3, 10, 3, 10]})
    table.to_csv(tmp_path / "t.csv", index=False)
    data = load_data(tmp_path / "t.csv")
    assert data.classes == ["3", "10"] and data.y.tolist() == [0, 1, 0, 1]
    assert data.input_shape == (2,)

    x = np.random.default_rng(0).integers(0, 255, size=(10, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(10) % 2, x_test=x[:4], y_test=np.arange(4) % 2)
    data = load_data(tmp_path / "a.npz")
    assert data.x.shape == (10, 1, 8, 8) and data.x.max() <= 1.0
    assert data.y_test.tolist() == [0, 1, 0, 1]


def test_symmetric_noise_exact_count_never_true_class_and_seeded(digits):
    spec = NoiseSpec.parse("symmetric:0.1")
    labels = digits.y.numpy()
    a = inject_noise(labels, digits.classes, spec, seed=3)
    b = inject_noise(labels, digits.classes, spec, seed=3)
    c = inject_noise(labels, digits.classes, spec, seed=4)
    changed = a != labels
    assert changed.sum() == math.floor(0.1 * len(labels))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # Every other class is reachable (the authors' code could never pick (y - 1) mod C).
    offsets = (a[changed] - labels[changed]) % 10
    assert set(offsets.tolist()) == set(range(1, 10))


def test_noisy_copy_keeps_truth(digits):
    noisy = digits.with_noise("symmetric:0.2", seed=0)
    assert torch.equal(noisy.true_y, digits.y)
    assert int(noisy.is_noisy.sum()) == math.floor(0.2 * len(digits))
    assert noisy.noise == "symmetric:0.2"


def test_asymmetric_noise_follows_the_digit_map(digits):
    noisy = digits.with_noise("asymmetric:0.3", seed=0)
    moved = noisy.is_noisy
    pairs = set(zip(noisy.true_y[moved].tolist(), noisy.y[moved].tolist(), strict=True))
    assert pairs <= {(2, 7), (3, 8), (5, 6), (6, 5), (7, 1)}
    assert len(pairs) == 5
    rate = moved.float().sum() / torch.isin(digits.y, torch.tensor([2, 3, 5, 6, 7])).sum()
    assert 0.2 < rate < 0.4


@pytest.mark.parametrize("text", ["symmetric", "symmetric:1.0", "symmetric:-0.1", "gaussian:0.1",
                                  "symmetric:abc"])
def test_bad_noise_specs_are_refused(text):
    with pytest.raises(NoisefindError):
        NoiseSpec.parse(text)


def test_noise_list():
    assert [str(s) for s in parse_noise_list("symmetric:0.1,asymmetric:0.2")] == [
        "symmetric:0.1", "asymmetric:0.2"]


def test_holdout_is_stratified_and_disjoint(digits):
    data = split_holdout(digits, 0.2, seed=0)
    assert len(data) + len(data.x_test) == len(digits)
    assert torch.bincount(data.y_test).min() >= 30
    assert len(set(data.index.tolist())) == len(data)


def test_unreadable_images_are_skipped_and_listed(image_folder):
    (image_folder / "cat" / "broken.png").write_bytes(b"not an image")
    (image_folder / "dog" / "empty.jpg").write_bytes(b"")
    Image.new("L", (20, 20), 128).save(image_folder / "fox" / "gray.png")  # other mode and size
    data = load_data(image_folder)
    assert len(data) == 19
    assert sorted(s["path"].rsplit("/", 1)[1] for s in data.skipped) == ["broken.png", "empty.jpg"]
    assert data.x.shape[1:] == (3, 12, 12)


def _write(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _one_class(p):
    (p / "one" / "a").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(p / "one" / "a" / "x.png")
    return p / "one"


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "missing", "not found"),
    (lambda p: _write(p / "empty" / ".keep").parent, "no class sub-folders"),
    (_one_class, "one class"),
    (lambda p: _write(p / "noimg" / "a" / "x.txt", "hi").parent.parent, "no image files"),
    (lambda p: _write(p / "m.csv", "file,klass\na.png,1\n"), "'label'"),
    (lambda p: _write(p / "m.csv", "path,label\nnope.png,1\n"), "do not exist"),
])
def test_bad_data_gives_a_clear_error(tmp_path, make, message):
    with pytest.raises(NoisefindError, match=message):
        load_data(make(tmp_path))


def test_unknown_builtin():
    with pytest.raises(NoisefindError, match="built-in"):
        load_data("cifar100")


def test_manifest_true_label_column_gives_the_truth(image_folder, tmp_path):
    files = sorted(image_folder.glob("*/*.png"))
    given = [f.parent.name for f in files]
    truth = list(given)
    truth[0], truth[-1] = "wolf", given[1]  # a true class nobody was given; a swapped label
    manifest = tmp_path / "labels.csv"
    pd.DataFrame({"path": [str(f) for f in files], "label": given,
                  "true_label": truth}).to_csv(manifest, index=False)
    data = load_data(manifest)
    assert "wolf" in data.classes
    assert data.is_noisy.tolist() == [g != t for g, t in zip(given, truth, strict=True)]
    assert data.classes[int(data.true_y[0])] == "wolf"
    assert data.with_noise("none").true_y.equal(data.true_y)  # labels as given, truth kept


def test_noise_none_keeps_the_labels(digits):
    assert str(NoiseSpec.parse("none")) == "none"
    same = digits.with_noise("none")
    assert same.y.equal(digits.y) and same.true_y is None


def test_manifest_with_missing_true_labels_is_refused(tmp_path):
    manifest = tmp_path / "t.csv"
    pd.DataFrame({"f": [1.0, 2.0, 3.0], "label": [0, 1, 0],
                  "true_label": [0, None, 0]}).to_csv(manifest, index=False)
    with pytest.raises(NoisefindError, match="true_label"):
        load_data(manifest)


def test_photos_become_centre_crops_of_their_shorter_side_at_a_capped_size(tmp_path):
    from noisefind.data.images import DEFAULT_SIDE

    for name, colour in (("wide", 0), ("tall", 1)):
        (tmp_path / name).mkdir()
        for i in range(3):
            # a wide photo: red | green | blue thirds; only the green middle survives the crop
            pixels = np.zeros((96, 288, 3), dtype=np.uint8)
            pixels[:, :96, 0] = pixels[:, 96:192, 1] = pixels[:, 192:, 2] = 255
            image = Image.fromarray(pixels)
            (image if colour == 0 else image.rotate(90, expand=True)).save(
                tmp_path / name / f"{i}.jpg", quality=95)
    data = load_data(tmp_path)
    assert data.x.dtype == torch.uint8 and data.x.shape == (6, 3, DEFAULT_SIDE, DEFAULT_SIDE)
    wide = data.x[data.y == data.classes.index("wide")].float().mean(dim=(0, 2, 3))
    assert wide[1] > 200 and wide[0] < 40 and wide[2] < 40  # green: centred, not squashed
    prepared = data.preparation
    assert prepared["side"] == DEFAULT_SIDE and prepared["shorter_side_px"]["max"] == 96
    assert "centre-cropped" in prepared["rule"] and prepared["stored_as"] == "uint8"
    assert load_data(tmp_path, image_size=48).x.shape[-1] == 48  # a given size wins
