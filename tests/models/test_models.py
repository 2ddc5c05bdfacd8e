import pytest
import torch

from noisefind.base.errors import NoisefindError
from noisefind.models.architectures import build_model, choose_arch
from noisefind.models.nets import resnet9, unit_masks


def test_resnet9_matches_the_paper_layout():
    model = resnet9(3, 10, width=1.0)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    shapes = [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0])
              for c in convs]
    assert shapes == [(3, 64, 3, 1, 1), (64, 128, 5, 2, 2), (128, 128, 3, 1, 1),
                      (128, 128, 3, 1, 1), (128, 256, 3, 1, 1), (256, 256, 3, 1, 1),
                      (256, 256, 3, 1, 1), (256, 128, 3, 1, 0)]
    assert all(c.bias is None for c in convs)
    assert model.head.in_features == 128 and model.head.bias is None
    assert model.out_scale == 0.2
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert len(model.unit_names()) == 64 + 128 * 3 + 256 * 3 + 128


@pytest.mark.parametrize("shape,arch", [((13,), "mlp"), ((1, 8, 8), "cnn"), ((1, 28, 28), "cnn"),
                                        ((3, 32, 32), "resnet9")])
def test_auto_arch_by_input_shape(shape, arch):
    assert choose_arch(shape) == arch
    model = build_model("auto", shape, 4, width=0.25).eval()
    assert model(torch.rand(3, *shape)).shape == (3, 4)


def test_unit_names_are_unique_and_reach_every_gate():
    model = build_model("cnn", (1, 8, 8), 10, width=0.5)
    names = model.unit_names()
    assert len(names) == len(set(names)) == sum(g.units for _, g in model.gates())
    assert names[0] == "layers.0.gate:0"


def test_unit_masks_zero_exactly_the_masked_units_per_group():
    torch.manual_seed(0)
    model = build_model("mlp", (5,), 3, width=0.1).eval()
    x = torch.rand(4, 5)
    gates = model.gates()
    masks = [torch.ones(2, g.units) for _, g in gates]
    masks[0][1, :] = 0  # the second group loses the whole first hidden layer
    with unit_masks(model, masks):
        out = model(x)
    plain = model(x)
    assert torch.allclose(out[:2], plain[:2])  # group 0 untouched
    bias_only = model.head(torch.relu(model.layers[1].bn(torch.zeros(2, gates[1][1].units))))
    assert torch.allclose(out[2:], bias_only, atol=1e-6)
    assert all(g.mask is None for _, g in gates)  # masks are removed afterwards


def test_bad_arch_and_width():
    with pytest.raises(NoisefindError):
        build_model("vgg", (1, 8, 8), 10)
    with pytest.raises(NoisefindError):
        build_model("mlp", (1, 8, 8), 10)
    with pytest.raises(NoisefindError):
        build_model("cnn", (1, 8, 8), 10, width=0)


def test_channel_statistics_of_uint8_images_in_chunks_match_the_float_figures(monkeypatch):
    from noisefind.data.labeled import to_float
    from noisefind.models import nets

    pixels = torch.randint(0, 256, (300, 3, 5, 5), dtype=torch.uint8)
    whole = nets.channel_statistics(pixels)
    monkeypatch.setattr(nets, "WHOLE_FLOAT_COPY", 0)  # as if the float copy were too large
    monkeypatch.setattr(nets, "STATISTICS_CHUNK", 64)
    chunked = nets.channel_statistics(pixels)
    exact = to_float(pixels).double()
    for got in (whole, chunked):
        assert torch.allclose(got[0].double(), exact.mean(dim=[0, 2, 3]), atol=1e-6)
        assert torch.allclose(got[1].double(), exact.std(dim=[0, 2, 3]), atol=1e-6)
