"""The whitened CNN of the fast fold models: its stem, its shape, its units."""

import pytest
import torch

from noisefind.base.errors import NoisefindError
from noisefind.data.labeled import to_float
from noisefind.models.architectures import build_model
from noisefind.models.whitened import KERNEL, Whitening


def test_the_stem_whitens_the_patches_it_was_fitted_on(digit_manifest):
    from noisefind.data.load import load_data

    x = to_float(load_data(digit_manifest).x)
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    stem = Whitening(3)
    stem.fit(x)
    half = stem.out_channels // 2  # the second half are the first's negatives
    assert torch.equal(stem.weight[half:], -stem.weight[:half])
    with torch.no_grad():
        out = torch.nn.functional.conv2d(x, stem.weight[:half])
    flat = out.permute(0, 2, 3, 1).reshape(-1, half).double()
    covariance = flat.T @ flat / len(flat)
    # Unit variance along every direction the patches have (the epsilon shrinks the weakest).
    strong = covariance.diagonal()[:4]
    assert torch.allclose(strong, torch.ones(4, dtype=torch.float64), atol=0.05)
    off = covariance - torch.diag(covariance.diagonal())
    assert off.abs().max() < 0.05
    assert not stem.weight.requires_grad and stem.bias.requires_grad


def test_whitened_net_gives_logits_and_names_its_units():
    model = build_model("whitened", (3, 32, 32), 10, width=0.25)
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    model.fit_normalization(x)
    assert model(x).shape == (6, 10)
    widths = [8, 8, 32, 32, 32, 32]
    assert len(model.unit_names()) == sum(widths)
    assert model.layers[0].out_channels == 2 * 3 * KERNEL**2


def test_whitened_net_refuses_images_too_small_for_its_pools():
    with pytest.raises(NoisefindError, match="at least 16 pixels") as caught:
        build_model("whitened", (3, 8, 8), 10)
    assert caught.value.parameter == "arch"
