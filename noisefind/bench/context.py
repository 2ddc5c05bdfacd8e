"""What detectors score from: the data, the trained run, and shared inputs computed once and
charged to every detector that uses them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from noisefind.base.errors import NoisefindError
from noisefind.data.labeled import LabeledData
from noisefind.models.predict import predict_logits
from noisefind.signals.flip import FlipSettings, flip_search
from noisefind.signals.out_of_sample import DEFAULT_FOLDS, OutOfSample
from noisefind.training.cache import ResultCache, data_key, digest, model_key
from noisefind.training.config import TrainConfig, make_model
from noisefind.training.runs import History, Run, load_weights

if TYPE_CHECKING:
    from noisefind.decide.cutoff import CutoffSettings


EL2N_EPOCH_FRACTION = 0.1
TRAIN = "train"  # the shared input every detector of the trained model depends on


class DetectorContext:
    """What detectors score from: data, the trained run, and lazily computed shared inputs.

    Parameters
    ----------
    data : LabeledData
        The training set the run was trained on (given labels, possibly noisy).
    run : Run
        The trained model and its :class:`~noisefind.training.runs.History`.
    rows : sequence of int, optional
        Positions in ``data`` to score; default all. Every detector returns scores for exactly
        these rows, in this order, so detectors restricted to a subset (the flip search with a
        limit) stay comparable with the rest.
    train_config : TrainConfig, optional
        How to train the cross-validation models; default: the run's own configuration.
    folds : int
        K of the K-fold cross-validation behind ``confident_learning``.
    flip_settings : FlipSettings, optional
        Passed to :func:`noisefind.signals.flip.flip_search`.
    train_seconds : float, optional
        What training ``run`` cost; default the training time the run recorded.
    progress : bool
        Show progress bars for the costly shared inputs.
    cache : ResultCache, optional
        Where costly shared inputs (cross-validation models, flip searches, the cutoff's
        replica) are stored and found again; default none (everything is computed).
    cutoff_settings : CutoffSettings, optional
        How :meth:`flip_cutoff` calibrates; default the scan's, seeded like the flip search.

    Attributes
    ----------
    costs : dict of str to float
        Seconds each shared input took to compute (``"train"`` is the run's training).
    used : set of str
        Shared inputs asked for since the last :meth:`start_tracking`.
    shared_wall_seconds : float
        Wall time spent making (or reading back) shared inputs so far, which a detector's own
        time excludes.
    """

    def __init__(self, data: LabeledData, run: Run, rows: Sequence[int] | None = None, *,
                 train_config: TrainConfig | None = None, folds: int = DEFAULT_FOLDS,
                 flip_settings: FlipSettings | None = None, train_seconds: float | None = None,
                 progress: bool = False, cache: ResultCache | None = None,
                 cutoff_settings: CutoffSettings | None = None):
        if run.history is not None and run.history.loss.shape[1] != len(data):
            raise NoisefindError(f"the run's history covers {run.history.loss.shape[1]} examples "
                                 f"but the data has {len(data)}; score the data it was trained on")
        self.data = data
        self._run = run
        self.rows = np.arange(len(data)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.train_config = train_config or TrainConfig.from_dict(run.config["train"])
        self.folds = folds
        self.flip_settings = flip_settings
        self.progress = progress
        self.cache = cache or ResultCache(None)
        self.cutoff_settings = cutoff_settings
        self.costs: dict[str, float] = {TRAIN: float(
            run.config.get("seconds", 0.0) if train_seconds is None else train_seconds)}
        self.used: set[str] = set()
        self.shared_wall_seconds = 0.0  # time spent computing (or reading) shared inputs
        self._cache: dict[str, Any] = {}

    # -- bookkeeping ------------------------------------------------------------------------

    def start_tracking(self) -> None:
        """Forget which shared inputs were used, before timing the next detector."""
        self.used.clear()

    def charged_seconds(self) -> float:
        """Seconds of every shared input used since :meth:`start_tracking`."""
        return sum(self.costs[name] for name in self.used)

    def shared(self, name: str, compute: Callable[[], Any], depends: Iterable[str] = ()) -> Any:
        """``compute()`` once per context, timed and charged to every detector that asks for it.

        ``depends`` names the shared inputs the value is built on (``"train"`` for anything made
        from the trained run), so that a detector reading the cached value is charged for those
        too.
        """

        def timed() -> tuple[Any, float]:
            start = time.perf_counter()
            value = compute()
            return value, time.perf_counter() - start

        return self.shared_timed(name, timed, depends)

    def shared_timed(self, name: str, compute: Callable[[], tuple[Any, float]],
                     depends: Iterable[str] = ()) -> Any:
        """As :meth:`shared`, for a ``compute`` that returns its value and what it cost (a
        value read back from a :class:`~noisefind.training.cache.ResultCache` costs what it first
        did)."""
        self.used.update((name, *depends))
        if name not in self._cache:
            start = time.perf_counter()
            self._cache[name], self.costs[name] = compute()
            self.shared_wall_seconds += time.perf_counter() - start
        return self._cache[name]

    # -- inputs -----------------------------------------------------------------------------

    @property
    def run(self) -> Run:
        """The trained run; using it charges its training time."""
        self.used.add(TRAIN)
        return self._run

    @property
    def history(self) -> History:
        """The run's per-example history, columns restricted to :attr:`rows`."""
        history = self.run.history
        if history is None:
            raise NoisefindError("this run has no training history (history.npz); "
                                 "retrain it with noisefind train")
        return History(loss=history.loss[:, self.rows], margin=history.margin[:, self.rows],
                       correct=history.correct[:, self.rows], labels=history.labels[self.rows],
                       index=history.index[self.rows])

    @property
    def labels(self) -> np.ndarray:
        """Given labels of :attr:`rows`."""
        return self.data.y.numpy()[self.rows]

    def out_of_sample_probabilities(self) -> np.ndarray:
        """Softmax of K-fold cross-validated models for every training example, shape (N, C)."""
        oos = self.out_of_sample
        return self.shared_timed("cross_validation", lambda: (
            oos.probabilities(), oos.seconds["cross_validation"]))

    @property
    def used_out_of_sample(self) -> bool:
        """Whether a detector asked for the K-fold models."""
        return "out_of_sample" in self._cache

    @property
    def out_of_sample(self) -> OutOfSample:
        """The K-fold evidence (:class:`~noisefind.signals.out_of_sample.OutOfSample`); its costs
        are
        charged by :meth:`out_of_sample_probabilities` and :meth:`out_of_sample_flip`."""
        if "out_of_sample" not in self._cache:
            self._cache["out_of_sample"] = OutOfSample(
                self.data, self.train_config, self.folds, flip_settings=self.flip_settings,
                progress=self.progress, cache=self.cache)
        return self._cache["out_of_sample"]

    def early_probabilities(self) -> np.ndarray | None:
        """Eval-mode softmax of the early checkpoint for :attr:`rows`, or None without one."""
        return self.shared("early_checkpoint", self._early_probabilities, depends=(TRAIN,))

    def flip_results(self) -> pd.DataFrame:
        """The flip search over :attr:`rows`, one table row per scanned example, in row order."""
        return self.shared_timed("flip_search", self._flip_search, depends=(TRAIN,))

    def out_of_sample_flip(self, rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The ``oos_flip`` signal of ``rows`` under ``labels``
        (:meth:`~noisefind.signals.out_of_sample.OutOfSample.flip`)."""
        self.out_of_sample_probabilities()  # the searches run on the same K models
        start = time.perf_counter()
        values = self.out_of_sample.flip(rows, labels)
        self.shared_wall_seconds += time.perf_counter() - start
        self.costs["oos_flip"] = self.out_of_sample.seconds["oos_flip"]
        self.used.add("oos_flip")
        return values

    def fold_flip(self) -> np.ndarray:
        """Flip cost of :attr:`rows` on one fold model that trained on each
        (:meth:`~noisefind.signals.out_of_sample.OutOfSample.fold_flip`)."""
        self.out_of_sample_probabilities()  # the searches run on the same K models
        oos = self.out_of_sample
        return self.shared_timed("fold_flip", lambda: (
            oos.fold_flip(self.rows), oos.seconds["fold_flip"]), depends=("cross_validation",))

    def neighbours(self) -> np.ndarray:
        """The neighbours' calibrated margin against the given label of :attr:`rows`, in the K
        models' feature spaces (:meth:`~noisefind.signals.out_of_sample.OutOfSample.neighbours`)."""
        self.out_of_sample_probabilities()  # the features come from the same K models
        oos = self.out_of_sample
        return self.shared_timed("neighbours", lambda: (
            oos.neighbours(self.rows), oos.seconds["neighbours"]), depends=("cross_validation",))

    def flip_cutoff(self, out_of_sample: bool = False, oos_flip: bool = False):
        """The scan's calibrated cutoff over :attr:`rows`
        (:func:`noisefind.signals.replica.calibrate`:
        canaries in a replica model, seeded like the flip search), computed once per variant.

        ``out_of_sample`` adds the cross-validated models' class-calibrated margin
        (``oos_margin``) to its signals, ``oos_flip`` the flip search on those models
        (:meth:`out_of_sample_flip`). Variants share the replica.
        """
        from noisefind.decide.cutoff import CutoffSettings
        from noisefind.signals.replica import calibrate

        settings = self.cutoff_settings or CutoffSettings(seed=self.flip_settings.seed)

        def compute():
            results = self.flip_results().reset_index()  # a "row" column, in row order
            cutoff = calibrate(self.data, self.run, results, settings, self.flip_settings,
                               progress=self.progress, cache=self.cache,
                               out_of_sample=probabilities,
                               out_of_sample_flip=self.out_of_sample_flip if oos_flip else None)
            return cutoff, cutoff.details.get("seconds", 0.0)

        probabilities = self.out_of_sample_probabilities() if out_of_sample else None
        name = "flip_cutoff" + ("+oos" if out_of_sample else "") + (
            "+oos_flip" if oos_flip else "")
        return self.shared_timed(name, compute, depends=(TRAIN, "flip_search") + (
            ("cross_validation",) if out_of_sample or oos_flip else ()) + (
            ("oos_flip",) if oos_flip else ()))

    def _early_probabilities(self) -> np.ndarray | None:
        run = self.run
        checkpoint = early_checkpoint(run)
        if checkpoint is None:
            return None
        model = make_model(TrainConfig.from_dict(run.config["train"]),
                           tuple(run.config["input_shape"]), len(run.classes))
        model.load_state_dict(load_weights(checkpoint, model))
        model.to(run.device).eval()
        rows = torch.from_numpy(self.rows)
        logits = predict_logits(model, self.data.x_at(rows), self.data.index[rows])
        return torch.softmax(logits, 1).cpu().numpy()

    def _flip_search(self) -> tuple[pd.DataFrame, float]:
        scan_all = len(self.rows) == len(self.data) and np.array_equal(
            self.rows, np.arange(len(self.data)))
        key = digest("flip_search", data_key(self.data), model_key(self.run.model),
                     self.flip_settings.as_dict(), self.rows)
        table, seconds = self.cache.table(key, lambda: flip_search(
            self.run.model, self.data, self.flip_settings,
            rows=None if scan_all else self.rows.tolist(), progress=self.progress))
        table = table.set_index("row")
        missing = np.setdiff1d(self.rows, table.index.to_numpy())
        if len(missing):
            raise RuntimeError(f"the flip search returned no result for {len(missing)} rows, "
                               f"e.g. row {missing[0]}")
        return table.loc[self.rows], seconds


def el2n_epoch(epochs: int) -> int:
    """The epoch EL2N is read at: 10% of training, at least the first."""
    return max(1, round(EL2N_EPOCH_FRACTION * epochs))


def early_checkpoint(run: Run):
    """The run's checkpoint file nearest :func:`el2n_epoch` (never the initial one), or None."""
    if run.path is None or not (run.path / "checkpoints").is_dir():
        return None
    saved = {int(p.stem.split("_")[1]): p for p in (run.path / "checkpoints").glob(
        "epoch_*.safetensors") if p.stem.split("_")[1].isdigit()}
    saved.pop(0, None)
    if not saved:
        return None
    target = el2n_epoch(run.config["train"]["epochs"])
    return saved[min(saved, key=lambda epoch: (abs(epoch - target), epoch))]
