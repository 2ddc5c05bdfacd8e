import numpy as np
import pytest

from noisefind.base.errors import NoisefindError
from noisefind.decide.consensus import (
    NEIGHBOURS,
    OPTIONAL,
    SIGNALS,
    WITNESSES,
    consensus_score,
    flag_top,
    witnesses_voting,
)


def z(values):
    return (values - values.mean()) / values.std()


@pytest.fixture
def signals():
    rng = np.random.default_rng(0)
    return {name: rng.normal(loc=i, scale=i + 1, size=50) for i, name in enumerate(SIGNALS)}


def test_each_witness_has_one_standardised_vote(signals):
    assert WITNESSES == {"out_of_sample": ("oos_margin",), "in_sample": ("fold_aum",),
                         "neighbours": ("neighbours",), "backbone": ("backbone_neighbours",)}
    expected = (z(signals["oos_margin"]) + z(signals["fold_aum"]) + z(signals["neighbours"])
                + z(signals["backbone_neighbours"]))
    assert consensus_score(signals) == pytest.approx(expected)
    assert witnesses_voting(signals) == list(WITNESSES)
    # Scale and offset of a signal do not matter; its order against the others does.
    rescaled = {**signals, "fold_aum": 1000 * signals["fold_aum"] - 7}
    assert consensus_score(rescaled) == pytest.approx(expected)


def test_a_witness_with_two_signals_sums_them_before_its_vote():
    witnesses = {"out_of_sample": ("oos_margin",), "in_sample": ("fold_aum", "fold_flip")}
    three = {"oos_margin": np.array([0.0, 1, 2]), "fold_aum": np.array([2.0, 1, 0]),
             "fold_flip": np.array([0.0, 0, 9])}
    assert consensus_score(three, witnesses=witnesses, without=("fold_flip",)) == \
        pytest.approx([0, 0, 0])
    assert consensus_score(three, witnesses=witnesses).argmax() == 2


def test_without_a_backbone_its_witness_has_no_vote_and_the_others_vote_as_before(signals):
    assert OPTIONAL == ("backbone_neighbours",)
    given = {name: values for name, values in signals.items() if name not in OPTIONAL}
    expected = z(signals["oos_margin"]) + z(signals["fold_aum"]) + z(signals["neighbours"])
    assert consensus_score(given) == pytest.approx(expected)
    assert witnesses_voting(given) == ["out_of_sample", "in_sample", "neighbours"]


def test_a_witness_left_out_has_no_vote(signals):
    expected = z(signals["oos_margin"]) + z(signals["fold_aum"])
    given = {name: values for name, values in signals.items()
             if name not in NEIGHBOURS + OPTIONAL}
    assert consensus_score(given, without=NEIGHBOURS) == pytest.approx(expected)


def test_a_witness_weight_multiplies_its_vote_and_unknown_witnesses_are_refused(signals):
    expected = (z(signals["oos_margin"]) + z(signals["fold_aum"])
                + 2 * z(signals["neighbours"]) + z(signals["backbone_neighbours"]))
    assert consensus_score(signals, weights={"neighbours": 2.0}) == pytest.approx(expected)
    with pytest.raises(NoisefindError) as error:
        consensus_score(signals, weights={"fold_aum": 2.0})  # a signal, not a witness
    assert error.value.parameter == "weights"


def test_other_witnesses_can_be_given_for_comparisons():
    witnesses = {"first": ("a",), "second": ("b", "c")}
    given = {"a": np.array([0.0, 1, 2]), "b": np.array([2.0, 1, 0]), "c": np.array([0.0, 1, 5])}
    expected = z(given["a"]) + z(z(given["b"]) + z(given["c"]))
    assert consensus_score(given, witnesses=witnesses) == pytest.approx(expected)
    with pytest.raises(NoisefindError, match="missing \\['c'\\]"):
        consensus_score({"a": given["a"], "b": given["b"]}, witnesses=witnesses)


def test_a_constant_signal_adds_nothing():
    signals = {"oos_margin": np.array([1.0, 3.0]), "fold_aum": np.array([5.0, 5.0])}
    assert consensus_score(signals, without=NEIGHBOURS) == pytest.approx([-1.0, 1.0])


@pytest.mark.parametrize("change,message", [
    (lambda s: {k: v for k, v in s.items() if k != "fold_aum"}, "missing \\['fold_aum'\\]"),
    (lambda s: {**s, "loss": s["fold_aum"]}, "unknown \\['loss'\\]"),
    (lambda s: {**s, "fold_aum": s["fold_aum"][:10]}, "one value per row"),
    (lambda s: {**s, "fold_aum": np.r_[np.nan, s["fold_aum"][1:]]}, "'fold_aum' has a missing"),
])
def test_bad_signals_are_refused(signals, change, message):
    with pytest.raises(NoisefindError, match=message):
        consensus_score(change(signals))


def test_flag_top_takes_the_estimated_count_from_the_top():
    scores = np.array([0.1, 5.0, 3.0, 3.0, -2.0])
    assert flag_top(scores, 2.4).tolist() == [False, True, True, False, False]  # tie: position
    assert flag_top(scores, 99).all() and not flag_top(scores, None).any()
    assert not flag_top(scores, 0.2).any()


def test_the_scan_and_the_bench_give_the_same_default_order(noisy_digits):
    """The README's figures come from the bench's ``noisefind`` detector; the user gets the
    scan's ``consensus_score``. Both must be the one definition of the default order."""
    import torch

    import noisefind
    from noisefind.bench.context import DetectorContext
    from noisefind.bench.detectors import get_detectors
    from noisefind.data.labeled import scan_rows

    data = noisefind.LabeledData.subset(noisy_digits, torch.arange(400))
    result = noisefind.scan(data, epochs=10, width=0.25, limit=120, folds=2, cutoff="none",
                            rank_by="consensus", device="cpu")
    rows = scan_rows(len(data), 120, seed=0)
    # The bench reads the fold models' recipe from a run; the default scan trained none.
    run = noisefind.train(data, noisefind.TrainConfig.from_dict(result.summary["train"]))
    context = DetectorContext(data, run, rows, folds=2,
                              flip_settings=noisefind.FlipSettings(seed=0))
    bench = get_detectors(["noisefind"])["noisefind"](context)
    scan = result.table.set_index("index").loc[data.index.numpy()[rows], "consensus_score"]
    np.testing.assert_allclose(bench, scan.to_numpy(), rtol=1e-9, atol=1e-12)
    assert np.std(bench) > 0
