"""Shared fixtures: real small data (scikit-learn's digits) and a tiny image folder on disk."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

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
