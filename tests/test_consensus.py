import numpy as np
import pytest

from noisefind.consensus import FLIP_SIGNAL, SIGNALS, consensus_score, flag_top
from noisefind.errors import NoisefindError


def test_consensus_is_the_sum_of_standardised_signals():
    rng = np.random.default_rng(0)
    signals = {name: rng.normal(loc=i, scale=i + 1, size=50) for i, name in enumerate(SIGNALS)}
    expected = sum((v - v.mean()) / v.std() for v in signals.values())
    assert consensus_score(signals) == pytest.approx(expected)
    # Scale and offset of a signal do not matter; its order against the others does.
    rescaled = {**signals, "aum": 1000 * signals["aum"] - 7}
    assert consensus_score(rescaled) == pytest.approx(expected)


def test_the_ablation_leaves_the_flip_signal_out():
    signals = {"oos_margin": np.array([0.0, 1, 2]), "aum": np.array([2.0, 1, 0]),
               FLIP_SIGNAL: np.array([0.0, 0, 9])}
    assert consensus_score(signals, without=(FLIP_SIGNAL,)) == pytest.approx([0, 0, 0])
    assert consensus_score(signals).argmax() == 2


def test_a_constant_signal_adds_nothing():
    signals = {"oos_margin": np.array([1.0, 3.0]), "aum": np.array([5.0, 5.0])}
    assert consensus_score(signals) == pytest.approx([-1.0, 1.0])


@pytest.mark.parametrize("signals,message", [
    ({}, "at least one"),
    ({"aum": np.zeros(3), "oos_margin": np.zeros(4)}, "one value per row"),
    ({"aum": np.array([0.0, np.nan])}, "'aum' has a missing"),
])
def test_bad_signals_are_refused(signals, message):
    with pytest.raises(NoisefindError, match=message):
        consensus_score(signals)


def test_flag_top_takes_the_estimated_count_from_the_top():
    scores = np.array([0.1, 5.0, 3.0, 3.0, -2.0])
    assert flag_top(scores, 2.4).tolist() == [False, True, True, False, False]  # tie: position
    assert flag_top(scores, 99).all() and not flag_top(scores, None).any()
    assert not flag_top(scores, 0.2).any()
