"""The consensus score: the scan's default order, three witnesses (four with a backbone)
with a vote each.

A wrong label is seen by three witnesses: models that never saw it, models that learned it,
and its neighbours. All three read the K fold models (:mod:`noisefind.signals.out_of_sample`):

- **out of sample**: the fold model that never saw the example finds another class likelier
  than the given one, judged against each class's typical confidence (``oos_margin``,
  :func:`noisefind.decide.calibration.calibrated_margin`; confident learning's evidence);
- **in sample**: the K-1 fold models that trained on the example: how hard its label was to
  learn (``fold_aum``: the area under the margin, Pleiss et al. 2020, averaged over them and
  negated);
- **neighbours**: how much less the example's nearest neighbours in the K-fold models' feature
  spaces carry its label than another, each against its class's usual share (``neighbours``,
  :mod:`noisefind.signals.neighbours`): the labels around it, not any model's verdict on it.

A scan whose fold models start from a pretrained backbone (``scan --backbone``) has a fourth:

- **backbone**: the same neighbours' vote in the backbone's own feature space, as the fold
  models start from it (``backbone_neighbours``,
  :meth:`noisefind.signals.out_of_sample.OutOfSample.backbone_neighbours`). No label of the
  data shaped that space, so a wrong label cannot have pulled its example towards its class.
  On CIFAR-10N, with noisefind's fold network pretrained on other images, it lifted the order
  on every part measured, more as a vote of its own than as a second signal of the neighbours
  witness (docs/benchmarks.md, "The backbone's own neighbours").

The flip search (Maini et al. 2023: how few units must be zeroed to flip the prediction away
from the given label) is not among them. Run on the fold model that learned each row, as the
in-sample witness's second signal (``fold_flip``, in the default order until this change), it
changed the order's AUROC by -0.003 to +0.001 on twelve CIFAR-10N parts (mean 0.000) and by
+0.0004 to +0.0007 on four whole scans, for 8-16% of a scan's time; by the rule that the flip
search's signals stay where an ablation shows they add, it left the default (docs/benchmarks.md,
"The flip search leaves the default order"). ``--rank-by flip`` keeps the paper's own score,
and the bench measures the order with it (``noisefind-fold-flip``).

Each signal is standardised over the scored rows (zero mean, unit variance); a witness's
signals are added and the sum standardised again, and the witnesses' scores are added. So the
witnesses weigh the same however many signals each has: AUM and the flip cost come from the
same models and partly repeat each other. No weight is fitted: the canary-weighed mix
(:mod:`noisefind.decide.cutoff`) learns from relabelled clear images, which on real human noise
(ambiguous images) taught it to lean on the in-sample signals; this sum does not depend on how
alike canaries and real errors are.

The count for this order comes from canaries scored exactly on the out-of-sample witness, or
on the backbone witness when there is one (:func:`noisefind.decide.count.out_of_sample_count`;
no model is retrained), and the flag takes that many rows from the top (:func:`flag_top`,
:func:`consensus_decision`), so flagged rows are always a prefix of the order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from noisefind.base.errors import NoisefindError
from noisefind.decide.calibration import margin_judge
from noisefind.decide.count import held_out_agreement, out_of_sample_count
from noisefind.decide.cutoff import Cutoff, no_cutoff

Witnesses = Mapping[str, tuple[str, ...]]  # witness name -> the names of its signals
WITNESSES: Witnesses = {"out_of_sample": ("oos_margin",), "in_sample": ("fold_aum",),
                        "neighbours": ("neighbours",), "backbone": ("backbone_neighbours",)}
SIGNALS = tuple(name for names in WITNESSES.values() for name in names)  # higher = suspicious
NEIGHBOURS = WITNESSES["neighbours"]
# Signals only some scans have: the backbone witness needs a pretrained backbone (scan
# --backbone). Without them their witness has no vote and the others vote as before.
OPTIONAL = WITNESSES["backbone"]


def consensus_score(signals: Mapping[str, np.ndarray], *, without: tuple[str, ...] = (),
                    weights: Mapping[str, float] | None = None,
                    witnesses: Witnesses = WITNESSES) -> np.ndarray:
    """Sum over ``witnesses`` of each witness's standardised sum of standardised signals.

    Parameters
    ----------
    signals : mapping of str to numpy.ndarray
        The signals of ``witnesses`` (by default :data:`SIGNALS`; those of :data:`OPTIONAL`
        may be absent) by name, one float per row each, all the same length, higher = more
        suspicious.
    without : tuple of str
        Signals to leave out (ablations, e.g. :data:`NEIGHBOURS`); a witness left with
        none has no vote.
    weights : mapping of str to float, optional
        A weight per witness (default 1 each; a witness not named keeps 1), for ablations of
        how much each should count.
    witnesses : mapping of str to tuple of str
        The witnesses and their signals (default :data:`WITNESSES`, the default order; the
        bench passes others to compare orders).

    Returns
    -------
    numpy.ndarray
        Float per row; higher = more suspicious. A signal constant over the rows adds nothing.

    Raises
    ------
    NoisefindError
        For a missing or unknown signal, signals of different lengths, or a non-finite value.
    """
    expected = [name for names in witnesses.values() for name in names]
    missing = [name for name in expected
               if name not in signals and name not in without and name not in OPTIONAL]
    unknown = [name for name in signals if name not in expected]
    if missing or unknown:
        raise NoisefindError(f"signals: give exactly {', '.join(expected)}; "
                             f"missing {missing}, unknown {unknown}")
    used = {name: np.asarray(values, dtype=np.float64) for name, values in signals.items()
            if name not in without}
    lengths = {len(values) for values in used.values()}
    if len(lengths) != 1:
        raise NoisefindError(f"signals: every signal needs one value per row, got lengths "
                             f"{sorted(lengths)}")
    for name, values in used.items():
        if not np.isfinite(values).all():
            raise NoisefindError(f"signals: {name!r} has a missing or infinite value")
    weights = dict(weights or {})
    if set(weights) - set(witnesses):
        raise NoisefindError(f"weights: name witnesses of {', '.join(witnesses)}; got "
                             f"{sorted(set(weights) - set(witnesses))}", parameter="weights")
    total = np.zeros(lengths.pop())
    for witness, names in witnesses.items():
        votes = [standardised(used[name]) for name in names if name in used]
        if votes:
            total += weights.get(witness, 1.0) * standardised(np.sum(votes, axis=0))
    return total


def witnesses_voting(signals: Mapping[str, np.ndarray],
                     witnesses: Witnesses = WITNESSES) -> list[str]:
    """The names of the ``witnesses`` that have at least one of ``signals`` (in order)."""
    return [witness for witness, names in witnesses.items()
            if any(name in signals for name in names)]


def default_order_signals(*, rows: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                          fold_margin: np.ndarray, neighbours: np.ndarray,
                          backbone_neighbours: np.ndarray | None = None
                          ) -> dict[str, np.ndarray]:
    """The :data:`SIGNALS` of the default order for ``rows``, each higher = more suspicious.

    The one place where the evidence becomes the order's signals: the scan and the bench's
    ``noisefind`` detector both call it (and :func:`consensus_score` on what it returns).

    Parameters
    ----------
    rows : numpy.ndarray
        Positions in the training set of the rows to score.
    labels : numpy.ndarray
        The given label of every example of the training set (the class thresholds are the
        whole set's, as confident learning sets them).
    probabilities : numpy.ndarray
        (N, C) out-of-sample probabilities of every example.
    fold_margin : numpy.ndarray
        Per row of ``rows``: its area under the margin averaged over the fold models that
        trained on it (:meth:`noisefind.signals.out_of_sample.OutOfSample.fold_aum`).
    neighbours : numpy.ndarray
        Per row of ``rows``: the neighbours' calibrated margin in the fold models' feature
        spaces (already higher = more suspicious).
    backbone_neighbours : numpy.ndarray, optional
        The same in the pretrained backbone's own feature space (scans with a backbone).
    """
    rows = np.asarray(rows, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    signals = {"oos_margin": margin_judge(probabilities, labels)(rows, labels[rows]),
               "fold_aum": -np.asarray(fold_margin, dtype=np.float64),
               "neighbours": np.asarray(neighbours, dtype=np.float64)}
    if backbone_neighbours is not None:
        signals["backbone_neighbours"] = np.asarray(backbone_neighbours, dtype=np.float64)
    return signals


def standardised(values: np.ndarray) -> np.ndarray:
    """``values`` at zero mean and unit variance; all zeros when they are constant."""
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def flag_top(scores: np.ndarray, count: float | None) -> np.ndarray:
    """Bool per row: the ``round(count)`` highest ``scores`` (ties broken by position).

    ``count`` None (no estimate) flags nothing.
    """
    scores = np.asarray(scores, dtype=np.float64)
    flagged = np.zeros(len(scores), dtype=bool)
    if count is None:
        return flagged
    top = min(len(scores), max(0, int(round(count))))
    flagged[np.argsort(-scores, kind="stable")[:top]] = True
    return flagged


COUNT_NOTES = {
    "out_of_sample_canaries": "canaries: rows scored again, exactly, on the fold models' "
                              "out-of-sample evidence under a wrong label drawn from the "
                              "confusions confident learning sees",
    "backbone_canaries": "canaries: rows scored again, exactly, on the backbone's own "
                         "neighbours under a wrong label drawn from the confusions "
                         "confident learning sees"}


def consensus_decision(labels: np.ndarray, rows: np.ndarray, probabilities: np.ndarray,
                       order: np.ndarray, signals: Mapping[str, np.ndarray], *, seed: int = 0,
                       count: bool = True, backbone_vote: np.ndarray | None = None) -> Cutoff:
    """The default order's decision for ``rows``: how many of them are wrong, and that many
    flagged from the top of ``order``.

    The count is the canaries' count of all ``labels``
    (:func:`noisefind.decide.count.out_of_sample_count`), scaled to the share of the rows
    scored: on the backbone's own neighbours when there is a backbone (``backbone_vote``),
    else on the out-of-sample evidence. Features no label trained place a canary among
    neighbours as a real error's are placed; on CIFAR-10N with pretrained fold models the
    out-of-sample canaries were too easy to see and the count ran short (docs/benchmarks.md,
    "The count with a backbone"). ``count`` False: no count and nothing flagged (``cutoff
    none``).

    Parameters
    ----------
    labels : numpy.ndarray
        The given label of every example.
    rows : numpy.ndarray
        Positions of the scored rows, in the order of ``order``.
    probabilities : numpy.ndarray
        (N, C) out-of-sample probabilities of every example.
    order, signals
        :func:`consensus_score` of the rows, and its signals (kept for the table).
    seed : int
        Draws the canaries and the interval's resamples.
    backbone_vote : numpy.ndarray, optional
        (N, C) share of each example's neighbours in the backbone's own feature space that
        carry each label (:meth:`~noisefind.signals.out_of_sample.OutOfSample.backbone_vote`).
    """
    rows = np.asarray(rows, dtype=np.int64)
    if not count:
        decision = no_cutoff(rows, "no count asked for (--cutoff none): nothing flagged")
    else:
        method = "out_of_sample_canaries" if backbone_vote is None else "backbone_canaries"
        estimate, canaries = out_of_sample_count(labels, probabilities, seed=seed,
                                                 evidence=backbone_vote)
        share = len(rows) / len(labels)
        decision = Cutoff(method, rows, np.zeros(len(rows), dtype=bool),
                          np.full(len(rows), np.nan), estimate.estimate * share,
                          {"method": method, "canaries": canaries,
                           "held_out_agreement": round(held_out_agreement(labels,
                                                                          probabilities), 4),
                           "note": COUNT_NOTES[method]},
                          interval=(estimate.low * share, estimate.high * share))
    decision.suspected = flag_top(order, decision.estimated_scanned)
    decision.order, decision.signals = order, dict(signals)
    return decision
