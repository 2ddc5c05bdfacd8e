"""Neighbour evidence: a label that the example's look-alikes do not share.

A model's penultimate features place examples that look alike close together, whatever their
labels. A mislabeled example sits among examples of its true class, so few of its nearest
neighbours carry its given label; a hard but correctly labelled one usually has some that do.
This reads the labels around each example rather than any model's verdict on it, so it is
evidence that neither confident learning (the held-out model's probability) nor the training
dynamics (how hard the label was to fit) give (Bahri et al. 2020, "Deep k-NN for noisy labels";
Zhu et al. 2022, "Detecting corrupted labels without training a model to predict").

The features come from the K fold models (:mod:`noisefind.out_of_sample`). Each of them
learned K-1 of every K examples, but with augmentation for colour images and without fitting
every label, so a wrong label moves its example little. The scanned model, which fits every
label, places a mislabeled example among its given class, and its neighbours agree with it: in
its feature space this evidence is close to useless (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from noisefind.errors import NoisefindError
from noisefind.models import Net, predict_logits


def embeddings(model: Net, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """(N, D) unit-length penultimate features of ``x`` (the input of ``model.head``), in eval
    mode, as float32 on the model's device."""
    captured: list[torch.Tensor] = []
    hook = model.head.register_forward_hook(
        lambda _module, inputs, _output: captured.append(inputs[0].float()))
    try:
        predict_logits(model, x, index)
    finally:
        hook.remove()
    return F.normalize(torch.cat(captured), dim=1)


def neighbour_disagreement(features: Sequence[torch.Tensor], labels: np.ndarray,
                           rows: np.ndarray, *, k: int = 10,
                           batch_size: int = 1024) -> np.ndarray:
    """Share of each row's ``k`` nearest other examples that carry another label, averaged
    over feature spaces.

    Parameters
    ----------
    features : sequence of torch.Tensor
        One (N, D) tensor of unit-length features per model (:func:`embeddings`) for every
        example; nearness is the cosine similarity.
    labels : numpy.ndarray
        Given label of every example, length N.
    rows : numpy.ndarray
        Positions of the examples to score; their neighbours are sought among all N.
    k : int
        Neighbours per row (at most N - 1).
    batch_size : int
        Rows compared with all N at once (memory: ``batch_size * N`` floats).

    Returns
    -------
    numpy.ndarray
        Float in [0, 1] per row of ``rows``; higher = more suspicious.

    Raises
    ------
    NoisefindError
        For no feature spaces, features or labels of different lengths, or a bad ``k``.
    """
    labels = np.asarray(labels)
    rows = np.asarray(rows, dtype=np.int64)
    if not features:
        raise NoisefindError("features: give at least one (N, D) tensor")
    if any(len(f) != len(labels) for f in features):
        raise NoisefindError(f"features: every tensor needs one row per label ({len(labels)}), "
                             f"got {[len(f) for f in features]}")
    if not 1 <= k < len(labels):
        raise NoisefindError(f"k must be between 1 and {len(labels) - 1} (the other examples), "
                             f"got {k}")
    disagree = np.zeros(len(rows))
    for space in features:
        label_of = torch.tensor(labels, device=space.device)
        for start in range(0, len(rows), batch_size):
            chunk = torch.tensor(rows[start:start + batch_size], device=space.device)
            similarity = space[chunk] @ space.T
            similarity[torch.arange(len(chunk), device=space.device), chunk] = -torch.inf
            nearest = similarity.topk(k, dim=1).indices
            differ = (label_of[nearest] != label_of[chunk, None]).double().mean(1)
            disagree[start:start + len(chunk)] += differ.cpu().numpy()
    return disagree / len(features)
