import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from noisefind.base.errors import NoisefindError
from noisefind.decide.calibration import calibrated_margin, class_thresholds
from noisefind.models.architectures import build_model
from noisefind.models.predict import predict_logits
from noisefind.signals.neighbours import (
    clustered_neighbours,
    embeddings,
    nearest_neighbours,
    neighbour_probabilities,
)


def clusters(sizes_and_labels, seed=0):
    """Tight clusters far apart, one per entry: (labels of its points); unit-length rows."""
    rng = np.random.default_rng(seed)
    points, labels = [], []
    for centre, members in enumerate(sizes_and_labels):
        axis = np.zeros(len(sizes_and_labels))
        axis[centre] = 1.0
        points.append(axis + rng.normal(scale=0.01, size=(len(members), len(axis))))
        labels.extend(members)
    points = torch.tensor(np.concatenate(points), dtype=torch.float32)
    return F.normalize(points, dim=1), np.array(labels)


def margin(features, labels, k):
    probabilities = neighbour_probabilities(features, labels, k=k)
    rows = np.arange(len(labels))
    return calibrated_margin(probabilities, rows, labels, class_thresholds(probabilities, labels))


def test_the_vote_counts_each_class_among_the_k_nearest_others_smoothed():
    # With k = 5 every point's neighbours are exactly the rest of its cluster of six.
    features, labels = clusters([[0, 0, 0, 0, 0, 3], [1, 1, 1, 2, 2, 2]])
    probabilities = neighbour_probabilities([features], labels, num_classes=5, k=5)
    assert probabilities.shape == (12, 5)
    assert probabilities.sum(1) == pytest.approx(np.ones(12))
    # Row 5 (label 3) sees five 0s; with one pseudo-count per class: (5 + 1) / (5 + 5).
    assert probabilities[5] == pytest.approx(np.array([6, 1, 1, 1, 1]) / 10)
    # A point of the mixed cluster sees two of its own class and three of the other.
    assert probabilities[6] == pytest.approx(np.array([1, 3, 4, 1, 1]) / 10)
    halved = neighbour_probabilities([features], labels, num_classes=5, k=5,
                                     pseudo_count=0.5)
    assert halved[5] == pytest.approx(np.array([5.5, 0.5, 0.5, 0.5, 0.5]) / 7.5)


def test_a_label_its_neighbours_do_not_share_scores_highest():
    features, labels = clusters([[0] * 19 + [1], [1] * 20])
    scores = margin([features], labels, k=5)
    assert np.argmax(scores) == 19
    assert scores[19] > 0 > np.delete(scores, 19).max()


def test_a_hard_class_pair_is_judged_against_its_own_usual_share():
    # Cluster 0: class 0 with one odd label 1; cluster 1: the hard pair 1/2, mixed;
    # cluster 2: class 0 mixed with class 4. Rows 6-8 (class 1) and 12-14 (class 0) see the
    # same two of five neighbours of their own class, but class 0 mostly agrees with its
    # neighbours and class 1 never does: the class-0 rows are the odd ones.
    features, labels = clusters([[0, 0, 0, 0, 0, 1], [1, 1, 1, 2, 2, 2], [0, 0, 0, 4, 4, 4]])
    probabilities = neighbour_probabilities([features], labels, k=5)
    assert probabilities[6, 1] == pytest.approx(probabilities[12, 0])
    scores = margin([features], labels, k=5)
    assert scores[12:15].min() > scores[6:9].max()
    assert np.argmax(scores) == 5  # the odd label in a cluster that agrees is the most suspect


def test_feature_spaces_are_averaged_and_batches_change_nothing():
    features, labels = clusters([[0] * 19 + [1], [1] * 20])
    shuffled = features[:, [1, 0]]  # the same distances
    one = neighbour_probabilities([features], labels, k=5)
    assert neighbour_probabilities([features, shuffled], labels, k=5) == pytest.approx(one)
    # Where one space has no structure the average sits between the two readings.
    noise = F.normalize(torch.randn(40, 2, generator=torch.Generator().manual_seed(0)), dim=1)
    both = neighbour_probabilities([features, noise], labels, k=5)
    alone = neighbour_probabilities([noise], labels, k=5)
    assert both == pytest.approx((one + alone) / 2)


def test_blocked_search_finds_the_same_neighbours_as_all_pairs_at_once():
    generator = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(300, 16, generator=generator), dim=1)
    similarity = features @ features.T
    similarity.fill_diagonal_(-torch.inf)
    expected = similarity.topk(7, dim=1).indices
    for query_block, key_block in ((300, 300), (64, 50), (7, 3), (1, 1)):
        found = nearest_neighbours(features, 7, query_block=query_block, key_block=key_block)
        assert torch.equal(found, expected), (query_block, key_block)


def test_the_clustered_search_finds_most_true_neighbours_and_never_the_row_itself():
    # 40 classes in 32 dimensions, 3,000 rows: a structured space like a model's features.
    generator = torch.Generator().manual_seed(1)
    centres = F.normalize(torch.randn(40, 32, generator=generator), dim=1)
    labels = torch.randint(0, 40, (3000,), generator=generator)
    features = F.normalize(centres[labels] + 0.1 * torch.randn(3000, 32, generator=generator),
                           dim=1)
    exact = nearest_neighbours(features, 10, exact=True)
    found = clustered_neighbours(features, 10)
    assert found.shape == (3000, 10)
    assert not (found == torch.arange(3000)[:, None]).any()
    assert all(len(set(row)) == 10 for row in found.tolist())
    recall = np.mean([len(set(a) & set(b)) / 10
                      for a, b in zip(found.tolist(), exact.tolist(), strict=True)])
    assert recall > 0.9
    # With one probe the search is narrower and misses more: the probes are what buys recall.
    narrow = clustered_neighbours(features, 10, probes=1)
    narrow_recall = np.mean([len(set(a) & set(b)) / 10
                             for a, b in zip(narrow.tolist(), exact.tolist(), strict=True)])
    assert narrow_recall < recall


def test_a_tiny_cluster_borrows_rows_from_more_clusters_until_k_fit():
    features = F.normalize(torch.randn(30, 4, generator=torch.Generator().manual_seed(2)), dim=1)
    found = clustered_neighbours(features, 25, probes=1)
    assert found.shape == (30, 25)
    assert not (found == torch.arange(30)[:, None]).any()


@pytest.mark.parametrize("features,labels,options,message", [
    ([], np.zeros(4, int), {"k": 2}, "at least one"),
    ([torch.zeros(3, 2)], np.zeros(4, int), {"k": 2}, "one row per label"),
    ([torch.zeros(4, 2)], np.zeros(4, int), {"k": 4}, "k must be between 1 and 3"),
    ([torch.zeros(4, 2)], np.zeros(4, int), {"k": 2, "pseudo_count": 0}, "pseudo_count"),
    ([torch.zeros(4, 2)], np.array([0, 1, 2, 3]), {"k": 2, "num_classes": 3}, "0..2"),
])
def test_bad_input_is_refused(features, labels, options, message):
    with pytest.raises(NoisefindError, match=message):
        neighbour_probabilities(features, labels, **options)


def test_embeddings_are_the_unit_length_input_of_the_head():
    model = build_model("cnn", (1, 8, 8), 10, width=0.25)
    x = torch.rand(6, 1, 8, 8)
    features = embeddings(model, x)
    assert features.shape == (6, model.head.in_features)
    assert torch.linalg.vector_norm(features, dim=1) == pytest.approx(torch.ones(6), abs=1e-5)
    # The head maps these features, at their own length, to the logits: without its bias the
    # logits point where the head's weights send the unit-length features.
    with torch.no_grad():
        logits = predict_logits(model, x) / model.out_scale - model.head.bias
        mapped = features @ model.head.weight.T
    assert F.cosine_similarity(logits, mapped, dim=1).tolist() == pytest.approx([1.0] * 6,
                                                                                abs=1e-4)


def test_neighbours_on_digits_find_injected_noise(digits):
    from noisefind.bench.context import DetectorContext
    from noisefind.bench.detectors import DETECTORS
    from noisefind.training.config import TrainConfig
    from noisefind.training.fit import fit

    noisy = digits.subset(torch.arange(0, 1797, 4)).with_noise("symmetric:0.2", seed=0)
    config = TrainConfig(width=0.25, epochs=8, device="cpu")
    run = fit(noisy, TrainConfig(width=0.25, epochs=1, device="cpu"), progress=False)
    context = DetectorContext(noisy, run, train_config=config, folds=3)
    context.start_tracking()
    scores = DETECTORS["neighbours"](context)
    assert context.used == {"cross_validation", "neighbours"}
    assert roc_auc_score(noisy.is_noisy.numpy(), scores) > 0.9
