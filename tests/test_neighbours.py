import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from noisefind.errors import NoisefindError
from noisefind.models import build_model, predict_logits
from noisefind.neighbours import embeddings, neighbour_disagreement


def clusters(seed=0):
    """Two tight clusters of 20 points each; labels follow the cluster except rows 0 and 25."""
    rng = np.random.default_rng(seed)
    centres = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    points = np.repeat(centres, 20, axis=0) + rng.normal(scale=0.05, size=(40, 3))
    labels = np.repeat([0, 1], 20)
    labels[[0, 25]] = [1, 0]
    return F.normalize(torch.tensor(points, dtype=torch.float32), dim=1), labels


def test_a_label_its_neighbours_do_not_share_scores_high():
    features, labels = clusters()
    scores = neighbour_disagreement([features], labels, np.arange(40), k=5)
    assert scores.shape == (40,) and ((0 <= scores) & (scores <= 1)).all()
    assert set(np.argsort(-scores)[:2]) == {0, 25}
    assert scores[0] == 1.0  # every neighbour is of the other class
    # An example is not its own neighbour: the rows in its cluster see at most one odd one.
    assert np.delete(scores, [0, 25]).max() <= 1 / 5


def test_feature_spaces_are_averaged_and_rows_are_scored_in_order():
    features, labels = clusters()
    shuffled = features[:, [2, 0, 1]]  # the same distances
    rows = np.array([25, 3, 0])
    one = neighbour_disagreement([features], labels, rows, k=5)
    assert neighbour_disagreement([features, shuffled], labels, rows, k=5) == pytest.approx(one)
    # Where one space has no structure the average sits between the two readings.
    noise = F.normalize(torch.randn(40, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    both = neighbour_disagreement([features, noise], labels, rows, k=5)
    alone = neighbour_disagreement([noise], labels, rows, k=5)
    assert both == pytest.approx((one + alone) / 2)
    assert neighbour_disagreement([features], labels, rows, k=5, batch_size=2) == \
        pytest.approx(one)


@pytest.mark.parametrize("features,labels,k,message", [
    ([], np.zeros(4, int), 2, "at least one"),
    ([torch.zeros(3, 2)], np.zeros(4, int), 2, "one row per label"),
    ([torch.zeros(4, 2)], np.zeros(4, int), 4, "k must be between 1 and 3"),
])
def test_bad_input_is_refused(features, labels, k, message):
    with pytest.raises(NoisefindError, match=message):
        neighbour_disagreement(features, labels, np.arange(len(labels)), k=k)


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
    from noisefind.detectors import DETECTORS, DetectorContext
    from noisefind.train import TrainConfig, fit

    noisy = digits.subset(torch.arange(0, 1797, 4)).with_noise("symmetric:0.2", seed=0)
    config = TrainConfig(width=0.25, epochs=8, device="cpu")
    run = fit(noisy, TrainConfig(width=0.25, epochs=1, device="cpu"), progress=False)
    context = DetectorContext(noisy, run, train_config=config, folds=3)
    context.start_tracking()
    scores = DETECTORS["neighbours"](context)
    assert context.used == {"cross_validation", "neighbours"}
    assert roc_auc_score(noisy.is_noisy.numpy(), scores) > 0.9
