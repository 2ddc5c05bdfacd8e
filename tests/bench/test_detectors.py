"""Each detector on cases where the answer is known, and the context they share."""

from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from noisefind.base.errors import NoisefindError
from noisefind.bench.context import DetectorContext, early_checkpoint, el2n_epoch
from noisefind.bench.detectors import (
    DETECTORS,
    cleanlab_scores,
    el2n_from_probabilities,
    forgetting_events,
    get_detectors,
    parse_detector_list,
    register,
)
from noisefind.data.labeled import LabeledData
from noisefind.models.predict import predict_logits
from noisefind.signals.out_of_sample import (
    cross_validated_runs,
    cv_folds,
    fold_margins,
    held_out_probabilities,
)
from noisefind.training.config import TrainConfig, make_model
from noisefind.training.fit import fit
from noisefind.training.runs import History, Run, load_weights

CLASSES = ["a", "b", "c"]


def constructed(correct, margin, loss, labels=None):
    """Data and a run whose history is given, for detectors that read only the history."""
    correct = np.asarray(correct, dtype=bool)
    epochs, n = correct.shape
    labels = np.arange(n) % len(CLASSES) if labels is None else np.asarray(labels)
    data = LabeledData(torch.zeros(n, 4), torch.as_tensor(labels, dtype=torch.int64), CLASSES,
                       "constructed")
    config = TrainConfig(arch="mlp", width=0.05, epochs=epochs, device="cpu")
    run = Run(model=make_model(config, (4,), len(CLASSES)),
              config={"train": asdict(config), "seconds": 1.5, "classes": CLASSES,
                      "input_shape": [4]},
              history=History(loss=np.asarray(loss, dtype=np.float16),
                              margin=np.asarray(margin, dtype=np.float16), correct=correct,
                              labels=labels, index=np.arange(n)))
    return data, run


# Three examples over six epochs: learned at once, learned and forgotten twice, never learned.
CORRECT = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0]])
MARGIN = np.array([[3.0, 0.5, -2.0], [3.0, -0.5, -2.5], [3.0, 1.0, -1.0], [3.0, -0.5, -2.0],
                   [3.0, 1.0, -1.0], [3.0, 2.0, -0.5]])
LOSS = np.array([[0.01, 0.5, 2.0], [0.01, 0.9, 2.2], [0.01, 0.4, 1.5], [0.01, 0.9, 2.0],
                 [0.01, 0.4, 1.5], [0.01, 0.1, 1.1]])


@pytest.fixture
def three_examples():
    data, run = constructed(CORRECT, MARGIN, LOSS)
    return DetectorContext(data, run)


def test_never_learned_is_most_forgotten_and_has_lowest_aum(three_examples):
    forgetting = DETECTORS["forgetting"](three_examples)
    assert forgetting.tolist() == [0.0, 2.0, 6.0]
    aum = DETECTORS["aum"](three_examples)
    assert aum.argmax() == 2 and aum.argmin() == 0
    assert aum == pytest.approx(-MARGIN.mean(0), abs=1e-2)
    mean_loss = DETECTORS["mean_loss"](three_examples)
    assert mean_loss == pytest.approx(LOSS.mean(0), abs=1e-2)
    assert mean_loss.argmax() == 2


def test_forgetting_events_counts_only_correct_to_wrong():
    correct = np.array([[0, 1, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 1, 0]], dtype=bool)
    # columns: wrong-right-wrong-right (forgotten once), always right, learned late, never
    assert forgetting_events(correct).tolist() == [1.0, 0.0, 0.0, 4.0]


def test_scores_on_a_subset_of_rows_match_the_full_scores(three_examples):
    data, run = three_examples.data, three_examples.run
    subset = DetectorContext(data, run, rows=[2, 0])
    for name in ("forgetting", "aum", "mean_loss", "el2n", "final_loss"):
        full = DETECTORS[name](three_examples)
        assert DETECTORS[name](subset) == pytest.approx(full[[2, 0]]), name


def test_el2n_norm_of_softmax_minus_onehot():
    probabilities = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.25, 0.25]])
    scores = el2n_from_probabilities(probabilities, np.array([0, 0, 0]))
    assert scores == pytest.approx([0.0, np.sqrt(2.0), np.sqrt(0.25 + 2 * 0.0625)])


def test_el2n_without_checkpoint_reads_the_early_history(three_examples):
    # 10% of six epochs rounds to epoch 1: history row 0. There, the given label's probability
    # p = exp(-loss), and the score is EL2N with the rest spread evenly over the other classes.
    assert el2n_epoch(6) == 1 and el2n_epoch(50) == 5 and el2n_epoch(3) == 1
    p = np.exp(-LOSS[0].astype(np.float16).astype(np.float64))
    rest = (1 - p) / 2
    exact = el2n_from_probabilities(np.stack([p, rest, rest], 1), np.zeros(3, dtype=int))
    assert DETECTORS["el2n"](three_examples) == pytest.approx(exact, rel=1e-6)


def test_el2n_uses_the_early_checkpoint(digits, tmp_path):
    small = digits.subset(torch.arange(0, 1797, 9))
    run = fit(small, TrainConfig(width=0.25, epochs=10, checkpoint_every=2, device="cpu"),
              out=tmp_path, progress=False)
    chosen = early_checkpoint(run)
    assert chosen.name == "epoch_002.safetensors"  # nearest epoch 1 that is not the initial one
    model = make_model(TrainConfig.from_dict(run.config["train"]), small.input_shape, 10)
    model.load_state_dict(load_weights(chosen, model))
    probabilities = torch.softmax(predict_logits(model.eval(), small.x), 1).numpy()
    context = DetectorContext(small, run)
    scores = DETECTORS["el2n"](context)
    assert scores == pytest.approx(el2n_from_probabilities(probabilities, small.y.numpy()),
                                   abs=1e-5)
    assert "early_checkpoint" in context.costs


def test_final_loss_is_eval_cross_entropy_and_ranks_a_wrong_label_first(digits):
    small = digits.subset(torch.arange(0, 1797, 6))
    run = fit(small, TrainConfig(width=0.25, epochs=6, device="cpu"), progress=False)
    relabeled = small.with_noise("symmetric:0.05", seed=1)  # labels the model never saw
    scores = DETECTORS["final_loss"](DetectorContext(relabeled, run))
    logits = predict_logits(run.model, relabeled.x)
    assert scores == pytest.approx(F.cross_entropy(logits, relabeled.y, reduction="none").numpy(),
                                   rel=1e-5)
    wrong = relabeled.is_noisy.numpy()
    assert scores[wrong].min() > np.median(scores[~wrong])


def test_cleanlab_scores_put_confident_mistakes_first():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    probabilities = np.full((60, 3), 0.05)
    probabilities[np.arange(60), labels] = 0.9
    probabilities += rng.uniform(0, 0.02, size=probabilities.shape)
    mistakes = [3, 25, 47]
    for row in mistakes:  # the model is sure these belong to the next class
        probabilities[row] = 0.05
        probabilities[row, (labels[row] + 1) % 3] = 0.9
    scores = cleanlab_scores(labels, probabilities / probabilities.sum(1, keepdims=True))
    assert sorted(np.argsort(-scores)[:3].tolist()) == mistakes
    assert scores[mistakes].min() > 1.0  # flagged by find_label_issues: ranked above the rest


def test_cv_folds_partition_the_rows_stratified():
    labels = np.repeat([0, 1, 2], [10, 20, 30])
    folds = cv_folds(labels, 5, seed=0)
    held = np.concatenate(folds)
    assert sorted(held.tolist()) == list(range(60))
    assert all(np.bincount(labels[f], minlength=3).tolist() == [2, 4, 6] for f in folds)
    with pytest.raises(NoisefindError, match="at least 2"):
        cv_folds(labels, 1, seed=0)


def test_confident_learning_finds_noise_from_out_of_sample_probabilities(digits):
    noisy = digits.subset(torch.arange(0, 1797, 4)).with_noise("symmetric:0.2", seed=0)
    config = TrainConfig(width=0.25, epochs=8, device="cpu")
    # confident_learning never reads the run, so a one-epoch model stands in for it here.
    run = fit(noisy, replace(config, epochs=1), progress=False)
    context = DetectorContext(noisy, run, train_config=config, folds=2)
    context.start_tracking()
    scores = DETECTORS["confident_learning"](context)
    assert context.used == {"cross_validation"}
    probabilities = context.out_of_sample_probabilities()
    assert probabilities.shape == (len(noisy), 10)
    assert probabilities.sum(1) == pytest.approx(1.0, abs=1e-4)
    assert roc_auc_score(noisy.is_noisy.numpy(), scores) > 0.9


def test_cross_validated_probabilities_come_from_models_that_did_not_see_the_row(digits):
    # A model that has seen an example memorises its (wrong) label; one that has not cannot.
    noisy = digits.subset(torch.arange(0, 1797, 6)).with_noise("symmetric:0.3", seed=0)
    config = TrainConfig(width=0.25, epochs=12, device="cpu")
    probabilities = held_out_probabilities(noisy, cross_validated_runs(noisy, config, folds=2))
    wrong = noisy.is_noisy.numpy()
    given = probabilities[np.arange(len(noisy)), noisy.y.numpy()]
    assert given[wrong].mean() < 0.3 < given[~wrong].mean()


def test_fold_margins_sum_the_aum_of_the_models_that_trained_on_each_row():
    # Two fold models over four rows: the first held out rows 0 and 1, the second rows 2 and 3.
    _, first = constructed(np.ones((2, 2)), [[1.0, 3.0], [3.0, 5.0]], np.zeros((2, 2)))
    _, second = constructed(np.ones((2, 2)), [[-1.0, 0.0], [-3.0, 2.0]], np.zeros((2, 2)))
    total, count = fold_margins([(first, np.array([0, 1])), (second, np.array([2, 3]))], 4)
    assert count.tolist() == [1, 1, 1, 1]
    assert total.tolist() == [-2.0, 1.0, 2.0, 4.0]  # rows 0, 1 from the second; 2, 3 the first


def test_aum_folds_averages_the_scanned_and_the_fold_models_and_finds_noise(digits):
    noisy = digits.subset(torch.arange(0, 1797, 4)).with_noise("symmetric:0.2", seed=0)
    config = TrainConfig(width=0.25, epochs=8, device="cpu")
    run = fit(noisy, config, progress=False)
    context = DetectorContext(noisy, run, train_config=config, folds=3)
    context.start_tracking()
    scores = DETECTORS["aum_folds"](context)
    assert context.used == {"cross_validation", "train"}
    fold_runs = cross_validated_runs(noisy, context.out_of_sample.config, 3)
    total, count = fold_margins(fold_runs, len(noisy))
    assert (count == 2).all()
    main = run.history.margin.astype(np.float64).mean(0)
    assert scores == pytest.approx(-(main + total) / 3, abs=1e-6)
    assert roc_auc_score(noisy.is_noisy.numpy(), scores) > 0.9


def test_fold_aum_reads_only_the_fold_models_that_trained_on_each_row(digits):
    noisy = digits.subset(torch.arange(0, 1797, 4)).with_noise("symmetric:0.2", seed=0)
    config = TrainConfig(width=0.25, epochs=8, device="cpu")
    run = fit(noisy, replace(config, epochs=1), progress=False)  # fold_aum never reads it
    context = DetectorContext(noisy, run, train_config=config, folds=3)
    context.start_tracking()
    scores = DETECTORS["fold_aum"](context)
    assert context.used == {"cross_validation"}
    total, count = fold_margins(context.out_of_sample.runs(), len(noisy))
    assert scores == pytest.approx(-total / count, abs=1e-6)
    assert roc_auc_score(noisy.is_noisy.numpy(), scores) > 0.9


def test_fold_flip_searches_each_row_on_a_fold_model_that_learned_it(digits):
    from noisefind.signals.flip import FlipSettings, flip_search

    noisy = digits.subset(torch.arange(0, 1797, 6)).with_noise("symmetric:0.2", seed=0)
    config = TrainConfig(width=0.25, epochs=8, device="cpu")
    run = fit(noisy, replace(config, epochs=1), progress=False)  # fold_flip never reads it
    settings = FlipSettings(max_units=20)
    rows = np.arange(0, len(noisy), 2)
    context = DetectorContext(noisy, run, rows=rows, train_config=config, folds=3,
                              flip_settings=settings)
    context.start_tracking()
    scores = DETECTORS["fold_flip"](context)
    assert context.used == {"cross_validation", "fold_flip"} and np.isfinite(scores).all()
    fold_runs = context.out_of_sample.runs()
    held_by = np.empty(len(noisy), dtype=int)
    for fold, (_, held) in enumerate(fold_runs):
        held_by[held] = fold
    # The rows the first fold model holds out are searched on the second, which learned them.
    at = np.flatnonzero(held_by[rows] == 0)
    learner, held = fold_runs[1]
    assert not np.isin(rows[at], held).any()
    table = flip_search(learner.model, noisy, settings, rows=torch.from_numpy(rows[at]),
                        progress=False)
    assert -scores[at] == pytest.approx(table["flip_cost"].to_numpy(), abs=1e-5)
    assert roc_auc_score(noisy.is_noisy.numpy()[rows], scores) > 0.8


def test_oos_flip_searches_each_row_on_the_fold_model_that_held_it_out(digits):
    from noisefind.signals.flip import FlipSettings

    noisy = digits.subset(torch.arange(0, 1797, 6)).with_noise("symmetric:0.2", seed=0)
    config = TrainConfig(width=0.25, epochs=8, device="cpu")
    run = fit(noisy, replace(config, epochs=1), progress=False)  # oos_flip never reads it
    rows = np.arange(0, len(noisy), 3)
    context = DetectorContext(noisy, run, rows=rows, train_config=config, folds=3,
                              flip_settings=FlipSettings(max_units=20))
    context.start_tracking()
    scores = DETECTORS["oos_flip"](context)
    assert "oos_flip" in context.used and np.isfinite(scores).all()
    # Positive where the model that never saw the row predicts another class, else negative.
    predicted = np.empty(len(rows), dtype=int)
    for model, held in context.out_of_sample.runs():
        at = np.flatnonzero(np.isin(rows, held))
        predicted[at] = predict_logits(model.model, noisy.x[rows[at]]).argmax(1).numpy()
    differs = predicted != noisy.y.numpy()[rows]
    assert (scores[differs] >= 0).all() and (scores[~differs] <= 0).all()
    assert differs.any() and (~differs).any()


def test_flip_detectors_read_one_shared_search_on_the_given_rows(digits):
    small = digits.subset(torch.arange(0, 1797, 6))
    run = fit(small, TrainConfig(width=0.25, epochs=6, device="cpu"), progress=False)
    from noisefind.signals.flip import FlipSettings

    context = DetectorContext(small, run, rows=[7, 3, 11],
                              flip_settings=FlipSettings(max_units=20, noise_copies=2,
                                                         reference_size=4))
    context.start_tracking()
    counts = DETECTORS["flip"](context)
    assert context.used == {"flip_search", "train"}
    table = context.flip_results()
    assert table.index.tolist() == [7, 3, 11]
    assert counts.tolist() == (-table["units_to_flip"].to_numpy(dtype=float)).tolist()
    first_cost = context.costs["flip_search"]
    costs = DETECTORS["flip_cost"](context)
    assert context.costs["flip_search"] == first_cost  # not searched again
    assert costs.tolist() == (-table["flip_cost"].to_numpy(dtype=float)).tolist()


def test_flip_dynamics_is_the_scans_calibrated_cutoff_score(noisy_digits, noisy_digits_run):
    from noisefind.signals.flip import FlipSettings

    rows = np.random.default_rng(0).permutation(len(noisy_digits))[:150]
    context = DetectorContext(noisy_digits, noisy_digits_run, rows=rows,
                              flip_settings=FlipSettings(max_units=30))
    context.start_tracking()
    scores = DETECTORS["flip+dynamics"](context)
    assert context.used == {"train", "flip_search", "flip_cutoff"}
    cutoff = context.flip_cutoff()
    assert np.array_equal(cutoff.rows, rows) and np.array_equal(scores, cutoff.cutoff_score)
    assert cutoff.details["signals"] == ["log_flip_cost", "log_loss", "aum", "log_mean_loss"]
    noisy = noisy_digits.is_noisy.numpy()[rows]
    assert roc_auc_score(noisy, scores) > roc_auc_score(noisy, DETECTORS["flip_cost"](context))


def test_context_charges_what_a_detector_used(three_examples):
    three_examples.start_tracking()
    DETECTORS["aum"](three_examples)
    assert three_examples.used == {"train"}
    assert three_examples.charged_seconds() == 1.5  # the run's recorded training time


def test_registry_by_name():
    assert list(DETECTORS)[:6] == ["final_loss", "mean_loss", "aum", "forgetting", "el2n",
                                   "confident_learning"]
    assert {"flip", "flip_cost"} <= set(DETECTORS)
    assert list(get_detectors(["aum", "flip"])) == ["aum", "flip"]
    assert parse_detector_list(" aum, el2n ,") == ["aum", "el2n"]
    with pytest.raises(NoisefindError, match="unknown detector 'nope'"):
        get_detectors(["nope"])
    with pytest.raises(NoisefindError, match="at least one"):
        parse_detector_list(",")


def test_a_registered_detector_joins_the_registry(three_examples):
    @register("constant_for_test")
    def constant(context):
        return np.zeros(len(context.rows))

    try:
        assert get_detectors(["constant_for_test"])["constant_for_test"](three_examples).shape \
            == (3,)
    finally:
        del DETECTORS["constant_for_test"]


def test_context_rejects_data_the_run_was_not_trained_on(three_examples, digits):
    with pytest.raises(NoisefindError, match="history covers 3 examples"):
        DetectorContext(digits, three_examples.run)
