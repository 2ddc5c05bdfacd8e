import numpy as np
import pytest

from noisefind.base.errors import NoisefindError
from noisefind.decide.count import (
    MIN_CANARIES,
    agreed_classes,
    canary_labels,
    confident_classes,
    confident_count,
    count_from_canaries,
    estimate_count,
    held_out_agreement,
    out_of_sample_count,
    unexplained_misses,
)


def noisy_probabilities(n=3000, classes=5, wrong=0.2, seed=0):
    """Out-of-sample-like probabilities of the true class, and labels with ``wrong`` flipped."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes))
    logits[np.arange(n), truth] += 2.5
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = truth.copy()
    flipped = rng.random(n) < wrong
    labels[flipped] = (truth[flipped] + rng.integers(1, classes, flipped.sum())) % classes
    return labels, probabilities, int(flipped.sum())


def test_the_count_is_cleanlab_s_calibrated_confident_joint():
    from cleanlab.count import num_label_issues

    for seed in (0, 1, 2):
        labels, probabilities, _ = noisy_probabilities(seed=seed)
        ours = confident_count(labels, probabilities, resamples=0).estimate
        theirs = num_label_issues(labels, probabilities,
                                  estimation_method="off_diagonal_calibrated")
        assert ours == pytest.approx(theirs, abs=3)  # cleanlab rounds each cell


def test_the_count_finds_the_number_flipped_and_its_interval_holds_the_estimate():
    labels, probabilities, flipped = noisy_probabilities(n=6000, wrong=0.15)
    count = confident_count(labels, probabilities)
    assert count.low <= count.estimate <= count.high
    assert count.high - count.low < 0.3 * count.estimate
    assert count.estimate == pytest.approx(flipped, rel=0.25)
    # With clean labels it counts far fewer.
    clean = confident_count(np.argmax(probabilities, 1), probabilities, resamples=0).estimate
    assert clean < 0.25 * count.estimate


def test_a_row_is_confidently_of_the_likeliest_class_over_its_threshold_or_of_none():
    probabilities = np.array([[0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.5, 0.5, 0.0],
                              [0.3, 0.3, 0.4], [0.2, 0.2, 0.6]])
    labels = np.array([0, 1, 0, 2, 2])
    # thresholds: class 0 (0.8 + 0.5) / 2 = 0.65, class 1 0.9, class 2 0.5
    assert confident_classes(labels, probabilities).tolist() == [0, 1, -1, -1, 2]


@pytest.mark.parametrize("options,parameter", [({"resamples": -1}, "resamples"),
                                                ({"level": 1.0}, "level")])
def test_bad_settings_name_their_parameter(options, parameter):
    labels, probabilities, _ = noisy_probabilities(n=50)
    with pytest.raises(NoisefindError) as error:
        confident_count(labels, probabilities, **options)
    assert error.value.parameter == parameter


def test_canary_labels_follow_the_confusions_confident_learning_sees():
    # Class 0 is often taken for 1 (rows labelled 1 that are confidently 0), never for 2.
    labels = np.array([1] * 30 + [0] * 100 + [2] * 100)
    guesses = np.array([0] * 30 + [0] * 100 + [2] * 100)
    rows = np.arange(30, 130)  # rows labelled 0
    drawn = canary_labels(labels, guesses, rows, 3, seed=0)
    assert (drawn == 1).all()
    # Class 2 has no confusion seen: any other class alike, never its own.
    drawn = canary_labels(labels, guesses, np.arange(130, 230), 3, seed=0)
    assert set(drawn) == {0, 1}
    assert 30 < (drawn == 0).sum() < 70


def test_canaries_follow_only_the_confusions_every_kind_of_evidence_sees():
    # Class 1: 40 rows labelled 2 by mistake (both kinds of evidence say 1). Class 0: 60 clean
    # rows that the model alone takes for class 1 (its own confusion, not the labels').
    labels = np.array([2] * 40 + [0] * 60 + [1] * 100 + [0] * 100)
    model = np.array([1] * 40 + [1] * 60 + [1] * 100 + [0] * 100)
    embedding = np.array([1] * 40 + [0] * 60 + [1] * 100 + [0] * 100)
    agreed = agreed_classes(model, embedding)
    np.testing.assert_array_equal(agreed, np.where(model == embedding, model, -1))
    rows = np.arange(100, 200)  # rows labelled 1
    assert (canary_labels(labels, model, rows, 3, seed=0) == 0).mean() > 0.4
    assert (canary_labels(labels, agreed, rows, 3, seed=0) == 2).all()


def test_the_estimate_is_never_more_rows_than_there_are():
    # Canaries scoring below every row (evidence against every label): each bound passes N.
    scores, canaries = np.linspace(0.0, 1.0, 100), np.linspace(-2.0, -1.0, 50)
    estimate, bounds = estimate_count(scores, canaries)
    assert min(bounds.values()) > 100
    assert estimate == 100


def test_the_canaries_count_and_its_interval():
    rng = np.random.default_rng(0)
    scores, canaries = np.r_[rng.normal(0, 1, 9000), rng.normal(3, 1, 1000)], rng.normal(3, 1, 1000)
    count = count_from_canaries(scores, canaries, seed=0)
    assert count.estimate == estimate_count(scores, canaries)[0]
    assert count.estimate == pytest.approx(1000, rel=0.1)
    assert count.low <= count.estimate <= count.high and count.method == "canaries"


def test_the_misses_beyond_the_count_are_the_clean_rows_that_look_wrong():
    labels, probabilities, wrong = noisy_probabilities()
    agreement = held_out_agreement(labels, probabilities)
    assert agreement == pytest.approx((probabilities.argmax(1) == labels).mean())
    # The models miss the wrong labels and some right ones: beyond the true share of wrong
    # labels, what is left are right labels they miss (the noise in these probabilities).
    missed = unexplained_misses(agreement, wrong / len(labels))
    assert 0 < missed < 1 - agreement
    assert unexplained_misses(0.95, 0.10) == 0.0  # never below zero
    assert unexplained_misses(0.70, 0.16) == pytest.approx(0.14)


def test_the_count_reads_other_evidence_when_given_and_the_probabilities_otherwise():
    labels, weak, flipped = noisy_probabilities(n=6000, wrong=0.15, seed=3)
    on_weak, canaries = out_of_sample_count(labels, weak, seed=0)
    assert out_of_sample_count(labels, weak, seed=0, evidence=weak)[0] == on_weak
    assert canaries == MIN_CANARIES
    # A vote that sees the true class better (as features no label trained can), from the
    # same truth: the count reads it, and lands near the number flipped.
    rng = np.random.default_rng(3)
    truth = np.where(weak.argmax(1) == labels, labels, weak.argmax(1))  # close to the truth
    strong = np.full(weak.shape, 0.02)
    strong[np.arange(len(labels)), truth] = 1.0
    strong += rng.uniform(0, 0.05, strong.shape)
    strong /= strong.sum(1, keepdims=True)
    on_strong = out_of_sample_count(labels, weak, seed=0, evidence=strong)[0]
    assert on_strong.estimate != on_weak.estimate
    assert on_strong.estimate == pytest.approx((truth != labels).sum(), rel=0.25)
