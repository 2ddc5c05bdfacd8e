"""Neighbour evidence: a label that the example's look-alikes do not share.

A model's penultimate features place examples that look alike close together, whatever their
labels. A mislabeled example sits among examples of its true class, so few of its nearest
neighbours carry its given label; a hard but correctly labelled one usually has some that do.
This reads the labels around each example rather than any model's verdict on it, so it is
evidence that neither confident learning (the held-out model's probability) nor the training
dynamics (how hard the label was to fit) give (Bahri et al. 2020, "Deep k-NN for noisy labels";
Zhu et al. 2022, "Detecting corrupted labels without training a model to predict").

:func:`neighbour_probabilities` turns the vote into a probability per class, so the
``neighbours`` signal is judged as confident learning judges a model's probabilities: by the
calibrated margin against each class's typical share
(:func:`noisefind.decide.calibration.calibrated_margin`). Examples of a hard class pair (cat/dog)
usually have neighbours of both classes, and the calibration stops that counting against them.

The features come from the K fold models (:mod:`noisefind.signals.out_of_sample`). Each of them
learned K-1 of every K examples, but with augmentation for images and without fitting
every label, so a wrong label moves its example little. The scanned model, which fits every
label, places a mislabeled example among its given class, and its neighbours agree with it: in
its feature space this evidence is close to useless (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from noisefind.base.errors import NoisefindError
from noisefind.models.nets import Net
from noisefind.models.predict import predict_logits, prediction_views

NEIGHBOURS = 20  # k: each example's nearest neighbours whose labels vote
QUERY_BLOCK, KEY_BLOCK = 1024, 8192  # similarities computed this many by this many at once
# Above this many rows the search is approximate (clustered_neighbours): on a CPU, where the
# exact search takes 17 s at 50,000 rows and grows as N squared; on a GPU it stays exact longer.
EXACT_UP_TO, EXACT_UP_TO_GPU = 50_000, 1_000_000
PROBES = 24  # clusters searched per cluster of queries (docs/scaling.md: recall and time)


def embeddings(model: Net, x: torch.Tensor, index: torch.Tensor | None = None,
               views: bool = False, batch_size: int = 1024) -> torch.Tensor:
    """(N, D) unit-length penultimate features of ``x`` (the input of ``model.head``), in eval
    mode, as float32 on the model's device; with ``views``, the weighted mean over
    :func:`~noisefind.models.predict.prediction_views` before the length is set to one.
    Views are combined a batch at a time, so only the (N, D) result grows with N."""
    weights = [weight for weight, _ in prediction_views(x[:1])] if views else [1.0]
    captured: list[torch.Tensor] = []
    hook = model.head.register_forward_hook(
        lambda _module, inputs, _output: captured.append(inputs[0].float()))
    features = []
    try:
        for start in range(0, len(x), batch_size):
            stop = start + batch_size
            predict_logits(model, x[start:stop], None if index is None else index[start:stop],
                           batch_size=batch_size, views=views)
            # one capture per view (one without views)
            features.append(F.normalize(sum(w * f for w, f in zip(weights, captured,
                                                                    strict=True)), dim=1))
            captured.clear()
    finally:
        hook.remove()
    return torch.cat(features)


def neighbour_probabilities(features: Iterable[torch.Tensor], labels: np.ndarray, *,
                            num_classes: int | None = None, k: int = NEIGHBOURS,
                            pseudo_count: float = 1.0) -> np.ndarray:
    """(N, C) share of each example's ``k`` nearest other examples that carry each label,
    smoothed and averaged over feature spaces: the neighbours' vote, read as probabilities.

    In each space a row gets ``(count_c + pseudo_count) / (k + pseudo_count * C)`` for class
    c, so no class is ever at zero (its log stays finite in the calibrated margin); the
    spaces' shares are then averaged.

    Parameters
    ----------
    features : iterable of torch.Tensor
        One (N, D) tensor of unit-length features per model (:func:`embeddings`) for every
        example; nearness is the cosine similarity. A generator is read one space at a time,
        so only one space need be in memory.
    labels : numpy.ndarray
        Given label of every example, length N.
    num_classes : int, optional
        C (default: the largest label + 1).
    k : int
        Neighbours per example (at most N - 1); an example is never its own neighbour.
    pseudo_count : float
        Added to every class's count (Laplace smoothing); must be positive.

    Returns
    -------
    numpy.ndarray
        Float64 of shape (N, C); every row sums to 1.

    Raises
    ------
    NoisefindError
        For no feature spaces, features or labels of different lengths, a bad ``k``, a
        non-positive ``pseudo_count`` or a label outside ``num_classes``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not 1 <= k < len(labels):
        raise NoisefindError(f"k must be between 1 and {len(labels) - 1} (the other examples), "
                             f"got {k}")
    if not pseudo_count > 0:
        raise NoisefindError(f"pseudo_count must be positive, got {pseudo_count}")
    classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.min() < 0 or labels.max() >= classes:
        raise NoisefindError(f"labels must lie in 0..{classes - 1} (num_classes {classes})")
    counts = np.zeros((len(labels), classes))
    rows = np.repeat(np.arange(len(labels)), k)
    spaces = 0
    for space in features:
        if len(space) != len(labels):
            raise NoisefindError(f"features: every tensor needs one row per label "
                                 f"({len(labels)}), got {len(space)}")
        # One count per (row, neighbour's label): never an (N, k, C) one-hot.
        found = labels[nearest_neighbours(space, k).cpu().numpy().ravel()]
        np.add.at(counts, (rows, found), 1.0)
        spaces += 1
    if not spaces:
        raise NoisefindError("features: give at least one (N, D) tensor")
    counts /= spaces
    counts += pseudo_count
    counts /= k + pseudo_count * classes
    return counts


def nearest_neighbours(features: torch.Tensor, k: int, *, exact: bool | None = None,
                       query_block: int = QUERY_BLOCK, key_block: int = KEY_BLOCK,
                       probes: int = PROBES) -> torch.Tensor:
    """(N, k) indices of each row's ``k`` most similar other rows (dot product; cosine for
    unit-length features), on the features' device. A row is never its own neighbour.

    ``exact`` None searches exactly up to :data:`EXACT_UP_TO` rows on a CPU
    (:data:`EXACT_UP_TO_GPU` on a GPU; :func:`exact_neighbours`) and approximately above
    (:func:`clustered_neighbours`), where the exact search's N squared time would dominate.
    """
    limit = EXACT_UP_TO if features.device.type == "cpu" else EXACT_UP_TO_GPU
    if exact or (exact is None and len(features) <= limit):
        return exact_neighbours(features, k, query_block=query_block, key_block=key_block)
    return clustered_neighbours(features, k, probes=probes)


def exact_neighbours(features: torch.Tensor, k: int, *, query_block: int = QUERY_BLOCK,
                     key_block: int = KEY_BLOCK) -> torch.Tensor:
    """(N, k) exact nearest neighbours (see :func:`nearest_neighbours`).

    The similarities are computed ``query_block`` by ``key_block`` at a time and each row keeps
    a running top k, so memory stays ``query_block * (key_block + k)`` values whatever N; the
    time grows as N squared (docs/scaling.md).
    """
    n, device = len(features), features.device
    nearest = torch.empty(n, k, dtype=torch.int64, device=device)
    for start in range(0, n, query_block):
        queries = features[start:start + query_block]
        own = torch.arange(start, start + len(queries), device=device)
        best = torch.full((len(queries), 0), -torch.inf, device=device)
        best_rows = torch.empty((len(queries), 0), dtype=torch.int64, device=device)
        for first in range(0, n, key_block):
            keys = torch.arange(first, min(first + key_block, n), device=device)
            similarity = queries @ features[keys].T
            similarity[own[:, None] == keys[None, :]] = -torch.inf
            candidates = torch.cat([best, similarity], dim=1)
            rows = torch.cat([best_rows, keys.expand(len(queries), -1)], dim=1)
            top = candidates.topk(min(k, candidates.shape[1]), dim=1)
            best, best_rows = top.values, rows.gather(1, top.indices)
        nearest[start:start + len(queries)] = best_rows
    return nearest


def clustered_neighbours(features: torch.Tensor, k: int, *, probes: int = PROBES,
                         seed: int = 0) -> torch.Tensor:
    """(N, k) approximate nearest neighbours: each row's ``k`` most similar rows among the
    members of the ``probes`` clusters nearest to its own cluster's centre.

    The rows are split into about sqrt(N) clusters (spherical k-means on a sample, a few
    rounds); all the rows of one cluster are searched together, as one block, against the
    members of the clusters whose centres are nearest to theirs. Each row is compared with
    about ``probes * sqrt(N)`` others instead of N, so the time grows as N to the power 1.5
    and memory with one cluster's block; a row whose true neighbours sit in a cluster not
    probed misses them (the recall against the exact search: docs/scaling.md).
    """
    n, device = len(features), features.device
    generator = torch.Generator().manual_seed(seed)
    count = max(1, round(n ** 0.5))
    centres = features[torch.randperm(n, generator=generator)[:count].to(device)].float()
    sample = features[torch.randperm(n, generator=generator)[:64 * count].to(device)].float()
    for _ in range(5):
        assigned = (sample @ centres.T).argmax(1)
        sums = torch.zeros_like(centres).index_add_(0, assigned, sample)
        filled = torch.bincount(assigned, minlength=count)[:, None] > 0
        centres = torch.where(filled, F.normalize(sums, dim=1), centres)
    cluster = torch.cat([(features[start:start + KEY_BLOCK].float() @ centres.T).argmax(1)
                         for start in range(0, n, KEY_BLOCK)])
    members = torch.argsort(cluster)
    bounds = torch.searchsorted(cluster[members],
                                torch.arange(count + 1, device=device)).tolist()
    nearness = (centres @ centres.T).argsort(dim=1, descending=True).tolist()
    sizes = torch.tensor(bounds).diff().tolist()
    nearest = torch.empty(n, k, dtype=torch.int64, device=device)
    for centre in range(count):
        queries = members[bounds[centre]:bounds[centre + 1]]
        if not len(queries):
            continue
        # The nearest ``probes`` clusters, and more while they hold fewer than k others.
        probed = nearness[centre][:probes]
        while sum(sizes[c] for c in probed) <= k:
            probed = nearness[centre][:len(probed) + 1]
        keys = torch.cat([members[bounds[c]:bounds[c + 1]] for c in probed])
        similarity = features[queries] @ features[keys].T
        similarity[queries[:, None] == keys[None, :]] = -torch.inf
        nearest[queries] = keys[similarity.topk(min(k, len(keys)), dim=1).indices]
    return nearest
