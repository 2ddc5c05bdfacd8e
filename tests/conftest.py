"""Shared fixtures: real small data (scikit-learn's digits) and a tiny image folder on disk."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from torch import nn

from noisefind.data.labeled import to_float
from noisefind.data.load import load_data
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit

# Decoded images are cached on disk; the tests keep theirs out of the user's ~/.cache (the CLI
# tests' subprocesses inherit this).
os.environ.setdefault("NOISEFIND_CACHE", tempfile.mkdtemp(prefix="noisefind-test-cache-"))

# The test models are tiny: a second intra-op thread gains little, and on a busy machine two
# threads spin against each other (measured: one small training 0.4 s with one thread, 15-40 s
# with two, under load).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    return load_data("digits")


@pytest.fixture(scope="session")
def noisy_digits(digits):
    return digits.with_noise("symmetric:0.1", seed=0)


@pytest.fixture(scope="session")
def noisy_digits_run(noisy_digits, tmp_path_factory):
    """A small CNN trained on 10%-noisy digits with the default recipe, saved to disk."""
    out = tmp_path_factory.mktemp("run")
    return fit(noisy_digits, TrainConfig(width=0.5, epochs=40), out=out, progress=False)


def write_image_folder(root, per_class: int = 6, classes=("cat", "dog", "fox"), size: int = 12):
    """Write a small ImageFolder of random colour PNGs; returns the root."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
            pixels[..., k % 3] = 200  # a class-dependent colour, so the task is learnable
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path):
    return write_image_folder(tmp_path / "images")


@pytest.fixture(scope="session")
def digit_manifest(tmp_path_factory):
    """300 digits as 16x16 colour PNGs in a manifest; 30 labels wrong, the truth beside them."""
    root = tmp_path_factory.mktemp("digit-images")
    images, labels = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(labels))[:300]
    given = labels[rows].copy()
    wrong = rng.permutation(300)[:30]
    given[wrong] = (given[wrong] + rng.integers(1, 10, size=30)) % 10
    paths = []
    for k, row in enumerate(rows):
        pixels = (images[row].reshape(8, 8) * 255 / 16).astype(np.uint8)
        picture = Image.fromarray(pixels).resize((16, 16), Image.BILINEAR).convert("RGB")
        picture.save(root / f"{k:03d}.png")
        paths.append(f"{k:03d}.png")
    manifest = root / "digits.csv"
    pd.DataFrame({"path": paths, "label": given, "true_label": labels[rows]}).to_csv(
        manifest, index=False)
    return manifest


@pytest.fixture(scope="session")
def resnet_weights(digit_manifest):
    """A torchvision ResNet-18 trained for a few steps on the manifest's images, as safetensors."""
    data = load_data(digit_manifest)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(6):
        batch = torch.arange(step * 50, step * 50 + 50)
        loss = nn.functional.cross_entropy(model(to_float(data.x[batch])), data.y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    file = digit_manifest.parent / "resnet18.safetensors"
    save_file(model.state_dict(), str(file))
    return file
