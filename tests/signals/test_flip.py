import numpy as np
import pytest
import torch

from noisefind.base.errors import NoisefindError
from noisefind.data.load import load_data
from noisefind.signals.flip import (
    FlipSettings,
    ReferencePool,
    flip_cost,
    flip_search,
    flip_search_reference,
    noisy_copies,
)
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit


@pytest.fixture(scope="module")
def trained(noisy_digits):
    """A small CNN trained to memorise 10%-noisy digits (float64 for exact comparisons)."""
    run = fit(noisy_digits, TrainConfig(width=0.25, epochs=30), progress=False)
    return run.model.double()


@pytest.fixture(scope="module")
def mixed_rows(noisy_digits):
    noisy = noisy_digits.is_noisy
    return torch.cat([noisy.nonzero().flatten()[:12], (~noisy).nonzero().flatten()[:12]])


def test_batched_search_matches_the_one_at_a_time_reference(trained, noisy_digits, mixed_rows):
    # A small batch forces slots to be refilled many times during the run.
    settings = FlipSettings(max_units=40, batch_size=5, flush_every=3)
    batched = flip_search(trained, noisy_digits, settings, rows=mixed_rows, progress=False)
    reference = flip_search_reference(trained, noisy_digits, settings, rows=mixed_rows)
    assert batched["row"].tolist() == mixed_rows.tolist()
    assert batched["units_to_flip"].tolist() == reference["units_to_flip"].tolist()
    assert batched["units"].tolist() == reference["units"].tolist()
    assert np.allclose(batched["flip_cost"], reference["flip_cost"])
    assert batched["flipped_to"].tolist() == reference["flipped_to"].tolist()


def test_mislabeled_examples_flip_with_fewer_units(trained, noisy_digits, mixed_rows):
    result = flip_search(trained, noisy_digits, FlipSettings(max_units=60), rows=mixed_rows,
                         progress=False)
    noisy = noisy_digits.is_noisy[mixed_rows].numpy()
    assert result["units_to_flip"][noisy].mean() < result["units_to_flip"][~noisy].mean()


def test_flipped_examples_really_flip(trained, noisy_digits, mixed_rows):
    from noisefind.models.nets import unit_masks

    settings = FlipSettings(max_units=60)
    result = flip_search(trained, noisy_digits, settings, rows=mixed_rows[:6], progress=False)
    total = sum(g.units for _, g in trained.gates())
    for _, r in result.iterrows():
        assert r["flipped"] and len(r["units"]) == r["units_to_flip"]
        mask = torch.ones(1, total, dtype=torch.float64)
        mask[0, r["units"]] = 0
        copies = noisy_copies(noisy_digits.x.double(), torch.tensor([r["row"]]), settings,
                              trained.mean, trained.std)[0]
        masks = list(torch.split(mask, [g.units for _, g in trained.gates()], dim=1))
        with unit_masks(trained, masks), torch.no_grad():
            prediction = trained(copies).mean(0).argmax()
        assert prediction != noisy_digits.y[r["row"]] and prediction == r["flipped_to"]


def test_cap_records_not_flipped(trained, noisy_digits, mixed_rows):
    result = flip_search(trained, noisy_digits, FlipSettings(max_units=1), rows=mixed_rows,
                         progress=False)
    capped = ~result["flipped"]
    assert capped.any()
    assert (result.loc[capped, "units_to_flip"] == 1).all()
    assert (result.loc[capped, "flip_cost"] >= 1).all()
    assert (result.loc[capped, "flipped_to"] == -1).all()


def test_noise_copies_have_the_requested_norm_and_are_keyed_by_row(noisy_digits):
    settings = FlipSettings(noise_copies=4, noise_scale=0.05)
    x = noisy_digits.x
    a = noisy_copies(x, torch.tensor([3, 9]), settings)
    b = noisy_copies(x, torch.tensor([9]), settings)
    assert torch.equal(a[1], b[0])  # the same example gets the same noise in any batch
    relative = (a[0] - x[3]).flatten(1).norm(dim=1) / x[3].norm()
    assert torch.allclose(relative, torch.full((4,), 0.05), rtol=1e-4)


def test_noise_is_relative_to_the_standardised_input_on_mixed_scale_features():
    # wine: proline is near 1000, hue spreads by 0.2; 1% of the raw norm would be ~50 hue
    # standard deviations. Measured after standardisation, every feature gets the same share.
    wine = load_data("wine")
    mean, std = wine.x.mean(0), wine.x.std(0)
    settings = FlipSettings(noise_copies=3, noise_scale=0.01)
    copies = noisy_copies(wine.x, torch.tensor([0, 5]), settings, mean, std)
    standard_noise = (copies - wine.x[[0, 5]][:, None]) / std
    standard_input = (wine.x[[0, 5]] - mean) / std
    relative = standard_noise.norm(dim=2) / standard_input.norm(dim=1, keepdim=True)
    assert torch.allclose(relative, torch.full((2, 3), 0.01), rtol=1e-3)
    assert standard_noise.abs().max() < 0.1  # no feature is swamped


@pytest.mark.parametrize("reference", ["same-class", "random"])
def test_reference_rows_never_include_the_example(reference):
    labels = torch.arange(60) % 3
    rows = torch.arange(60)
    pool = ReferencePool(labels, FlipSettings(reference_size=400, reference=reference))
    refs = pool.draw(rows)
    assert refs.shape == (60, 400)
    assert not (refs == rows[:, None]).any()
    assert refs.min() >= 0 and refs.max() < 60
    if reference == "same-class":
        assert (labels[refs] == labels[rows][:, None]).all()
        assert len(refs[0].unique()) == 19  # every other member of the class is reachable
    assert torch.equal(pool.draw(rows[5:6]), refs[5:6])  # keyed by row, not by batch


def test_flip_cost_orders_within_equal_counts():
    units = torch.tensor([2, 2, 0, 5])
    flipped = torch.tensor([True, True, True, False])
    before = torch.tensor([0.1, 0.9, 0.0, 0.0])
    now = torch.tensor([-0.9, -0.1, -2.0, 1.0])
    cost = flip_cost(units, flipped, before, now, max_units=5)
    assert 1 < cost[0] < cost[1] <= 2  # needing less of the last unit means cheaper
    assert -1 < cost[2] <= 0
    assert cost[3] >= 5


def test_bad_settings():
    with pytest.raises(NoisefindError):
        FlipSettings(max_units=0).validate()
    with pytest.raises(NoisefindError):
        FlipSettings(noise_copies=0).validate()


def test_the_cli_and_the_library_default_to_the_search_settings_defaults():
    # The CLI keeps literal defaults so that `noisefind --help` does not import torch.
    import inspect

    from noisefind import api as library
    from noisefind import cli

    defaults = FlipSettings()
    for function in (cli.scan, cli.bench, library.scan):
        parameters = inspect.signature(function).parameters
        for name in ("max_units", "noise_copies", "reference_size"):
            assert parameters[name].default == getattr(defaults, name), (function, name)


def test_the_cli_and_the_library_default_to_the_same_fold_count():
    import inspect

    from noisefind import api, cli
    from noisefind.signals.out_of_sample import DEFAULT_FOLDS

    for function in (cli.scan, cli.bench, api.scan):
        assert inspect.signature(function).parameters["folds"].default == DEFAULT_FOLDS
