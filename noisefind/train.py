"""The one training loop, its per-example history, and the run folder it writes.

Written for the GPU first (airbench style): the whole training set lives on the device as one
tensor, batches are gathered by index, bf16 autocast and channels_last on CUDA, and the history
(loss, margin, correctness per example and epoch) is written into device tensors with no host
sync until the epoch ends. The same loop serves every command that trains.

A run folder holds ``model.safetensors``, ``config.json``, ``history.npz`` and, with
``checkpoint_every``, ``checkpoints/epoch_NNN.safetensors`` (epoch 0 = the initial weights).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from noisefind import distributed
from noisefind.console import console, progress_bar
from noisefind.data import LabeledData, split_holdout
from noisefind.errors import NoisefindError
from noisefind.files import atomic_write, write_json
from noisefind.models import Net, autocast, build_model, choose_arch

RUN_FORMAT = 1


@dataclass
class TrainConfig:
    """How to train. Defaults follow the paper's recipe and fit every label, wrong ones included.

    ``batch_size=None`` picks min(512, N // 8) (at least 32), so small data sets still get enough
    steps per epoch. The learning rate warms up linearly over the first ``warmup`` share of steps
    to ``lr``, then decays linearly to zero, which lets the last epochs memorise the stragglers.

    ``holdout > 0`` trains on all but a seeded, stratified ``holdout`` share of the examples
    (:func:`noisefind.data.split_holdout` with ``seed``), which become the test set; a data set
    with a test split of its own keeps it instead. The share is saved with the run, so
    :func:`noisefind.evaluate.run_data` rebuilds the same split from the same data.

    ``augment`` trains on randomly shifted views of images (by up to an eighth of the side,
    reflect-padded), horizontally flipped too for colour images, as out-of-sample models
    should be trained; it does nothing for tables. The scanned model trains without it, so
    that it fits every given label as the method requires (:func:`augment_for`).

    ``track_gradients`` splits every step's gradient into the parts from clean and from
    mislabeled examples, per layer (:class:`noisefind.gradients.GradientTracker`; needs injected
    noise); the optimizer steps on the same gradient as without it.
    """

    arch: str = "auto"
    width: float = 1.0
    epochs: int = 50
    batch_size: int | None = None
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: float = 0.2
    seed: int = 0
    device: str = "auto"
    dropout: str = "none"
    p_gen: float = 0.2
    p_mem: float = 0.1
    holdout: float = 0.0
    checkpoint_every: int = 0
    augment: bool = False
    track_gradients: bool = False
    extra: dict = field(default_factory=dict)

    def resolved_batch_size(self, n: int) -> int:
        if self.batch_size is not None:
            if self.batch_size < 2:
                raise NoisefindError("--batch-size must be at least 2 (BatchNorm needs it)")
            return self.batch_size
        return int(min(512, max(32, n // 8)))


@dataclass
class History:
    """Per-example training record, arrays of shape (epochs, N), rows in training-set order.

    ``loss`` and ``margin`` (given-label logit minus the largest other) are float16 and
    ``correct`` is bool, as seen in each example's training step of that epoch.
    """

    loss: np.ndarray
    margin: np.ndarray
    correct: np.ndarray
    labels: np.ndarray
    index: np.ndarray
    true_labels: np.ndarray | None = None

    def save(self, path: Path) -> None:
        arrays = dict(loss=self.loss, margin=self.margin, correct=self.correct,
                      labels=self.labels, index=self.index)
        if self.true_labels is not None:
            arrays["true_labels"] = self.true_labels
        atomic_write(path, lambda tmp: np.savez_compressed(tmp, **arrays), suffix=".npz")

    @classmethod
    def load(cls, path: Path) -> History:
        with np.load(path, allow_pickle=False) as f:
            return cls(**{k: f[k] for k in f.files})


@dataclass
class Run:
    """A trained model with its configuration and training history."""

    model: Net
    config: dict
    history: History | None
    path: Path | None = None
    gradients: dict | None = None  # per-layer clean/mislabeled gradient statistics, if tracked

    @property
    def classes(self) -> list[str]:
        return self.config["classes"]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise NoisefindError(f"--device {name!r}: use auto, cpu, cuda or mps")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NoisefindError("--device cuda: no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def make_model(config: TrainConfig, data_shape: tuple[int, ...], num_classes: int) -> Net:
    """The network ``config`` describes, with its dropout variant."""
    from noisefind.dropout import dropout_factory

    factory = dropout_factory(config.dropout, config.p_gen, config.p_mem, config.seed)
    return build_model(config.arch, data_shape, num_classes, config.width, factory)


Backward = Callable[[torch.Tensor, torch.Tensor, int], None]


def fit(data: LabeledData, config: TrainConfig | None = None, out: str | Path | None = None,
        progress: bool = True, data_parallel: bool = True,
        on_backward: Backward | None = None) -> Run:
    """Train a model on ``data`` and record every example's history.

    Parameters
    ----------
    data : LabeledData
        The training set (its ``y`` are the given labels, possibly noisy).
    config : TrainConfig, optional
        Hyper-parameters; defaults fit the training set, mislabeled examples included.
    out : path, optional
        Run folder to write (weights, config, history, checkpoints).
    progress : bool
        Show a progress bar with epoch, loss and training accuracy.
    data_parallel : bool
        Under torchrun, train across all ranks with DistributedDataParallel. False trains in
        this process alone, exactly as a single process would (for a model every rank needs
        bit-identical to the single-process one, such as the cutoff's replica).
    on_backward : callable, optional
        Called as ``on_backward(losses, rows, epoch)`` in place of ``losses.mean().backward()``
        in every step (``losses`` per example of the batch, ``rows`` their positions in
        ``data``); it must fill the parameters' ``.grad``. ``config.track_gradients`` uses
        :class:`noisefind.gradients.GradientTracker`'s (and cannot be combined with another).

    Returns
    -------
    Run
    """
    config = config or TrainConfig()
    if config.epochs < 1:
        raise NoisefindError("--epochs must be at least 1")
    if not 0.0 <= config.holdout < 1.0:
        raise NoisefindError(f"--holdout must be in [0, 1), got {config.holdout}")
    if config.holdout:
        data = split_holdout(data, config.holdout, config.seed)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = make_model(config, data.input_shape, data.num_classes)
    model.fit_normalization(data.x)
    model.to(device)
    if device.type == "cuda" and data.is_image:
        model.to(memory_format=torch.channels_last)
    tracker = None
    if config.track_gradients:
        if on_backward is not None:
            raise NoisefindError("track_gradients and on_backward both replace the backward "
                                 "step; give one")
        from noisefind.gradients import GradientTracker

        tracker = GradientTracker(model, data, config.epochs)
        on_backward = tracker.backward
    rank, world = distributed.rank_and_world() if data_parallel else (0, 1)
    out = Path(out) if out is not None and rank == 0 else None  # rank 0 writes the run folder
    if out is not None:
        _prepare_run_folder(out)
        if config.checkpoint_every:
            save_file(model.state_dict(), str(_checkpoint_path(out, 0)))
    trained = distributed.wrap_for_training(model, device) if world > 1 else model
    n = len(data)
    x = data.x.to(device, non_blocking=True)
    if device.type == "cuda" and data.is_image:
        x = x.contiguous(memory_format=torch.channels_last)
    y = data.y.to(device)
    index = data.index.to(device)
    batch_size = config.resolved_batch_size(n)
    batches_per_epoch = math.ceil(n / batch_size)
    total_steps = config.epochs * batches_per_epoch

    optimizer, schedule = make_optimizer(list(model.parameters()), config.lr, config.momentum,
                                         config.weight_decay, config.warmup, total_steps)

    loss_hist = torch.zeros(config.epochs, n, dtype=torch.float16, device=device)
    margin_hist = torch.zeros_like(loss_hist)
    correct_hist = torch.zeros(config.epochs, n, dtype=torch.bool, device=device)
    generator = torch.Generator().manual_seed(config.seed)
    views = ImageViews(x.shape, device, config.seed) if config.augment and augment_for(data) \
        else None
    start_time = time.perf_counter()
    model.train()
    with progress_bar(progress) as bar:
        task = bar.add_task("training", total=config.epochs, info="")
        for epoch in range(config.epochs):
            order = torch.randperm(n, generator=generator).to(device, non_blocking=True)
            # Near-equal batches: a trailing batch of one would break BatchNorm.
            for batch in torch.tensor_split(order, batches_per_epoch):
                rows = batch[rank::world]  # each rank its share of the batch
                inputs = x[rows] if views is None else views(x[rows])
                with autocast(device):
                    logits = trained(inputs, index[rows]).float()
                losses = F.cross_entropy(logits, y[rows], reduction="none")
                optimizer.zero_grad(set_to_none=True)
                if on_backward is None:
                    losses.mean().backward()
                else:
                    on_backward(losses, rows, epoch)
                optimizer.step()
                schedule.step()
                with torch.no_grad():
                    loss_hist[epoch, rows] = losses.detach().to(torch.float16)
                    margin_hist[epoch, rows] = label_margin(logits.detach(), y[rows]).half()
                    correct_hist[epoch, rows] = logits.argmax(1) == y[rows]
            if world > 1:
                distributed.sum_across_ranks(loss_hist[epoch], margin_hist[epoch],
                                             correct_hist[epoch])
            epoch_loss = loss_hist[epoch].float().mean().item()  # one sync per epoch
            if not math.isfinite(epoch_loss):
                raise NoisefindError(
                    f"training diverged: the loss became {epoch_loss} in epoch {epoch + 1}; "
                    f"try a lower --lr (now {config.lr})")
            accuracy = correct_hist[epoch].float().mean().item()
            bar.update(task, advance=1,
                       info=f"epoch {epoch + 1} loss {epoch_loss:.3f} acc {accuracy:.3f}")
            if out is not None and config.checkpoint_every and \
                    (epoch + 1) % config.checkpoint_every == 0:
                save_file(model.state_dict(), str(_checkpoint_path(out, epoch + 1)))
    seconds = time.perf_counter() - start_time
    model.eval()

    history = History(
        loss=loss_hist.cpu().numpy(), margin=margin_hist.cpu().numpy(),
        correct=correct_hist.cpu().numpy(), labels=data.y.numpy(), index=data.index.numpy(),
        true_labels=None if data.true_y is None else data.true_y.numpy())
    run_config = _run_config(data, config, model, seconds, device)
    run = Run(model=model, config=run_config, history=history, path=out,
              gradients=None if tracker is None else tracker.result())
    run.config["metrics"] = training_accuracy(run, data)
    if out is not None:
        save_run(run, out)
    return run


def augment_for(data: LabeledData) -> bool:
    """Whether ``augment`` applies: images, where small shifts keep the class (mirror images
    too, for colour images only: a mirrored digit is another symbol); not tables."""
    return data.is_image


class ImageViews:
    """Random shifts (and mirror images) of a batch of images, drawn on the device.

    Each image is reflect-padded by ``pad`` (an eighth of its side, at least one pixel) and a
    window of its own size is cut at a random offset, as in the usual CIFAR-10 recipe; half the
    colour images are mirrored (a mirrored digit is another symbol, so grayscale ones never
    are). Draws come from their own seeded generator, so the batch order (and a run without
    augmentation) is unchanged.
    """

    def __init__(self, shape: torch.Size, device: torch.device, seed: int):
        self.size = shape[-1]
        self.mirror = shape[1] == 3
        self.pad = max(1, self.size // 8)
        self.device = device
        self.generator = torch.Generator().manual_seed(seed + 0xA06)
        self.grid = torch.arange(self.size, device=device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, pad = len(x), self.pad
        draws = torch.randint(0, 2 * pad + 1, (2, n), generator=self.generator)
        # Drawn even when unused, so later batches get the shifts the benchmarks were run with.
        flip = torch.rand(n, generator=self.generator) < 0.5
        dy, dx = draws.to(self.device)
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        rows = (self.grid[None, :] + dy[:, None])[:, None, :, None]
        columns = self.grid[None, :] + dx[:, None]
        if self.mirror:
            columns = torch.where(flip.to(self.device)[:, None], columns.flip(1), columns)
        rows = rows.expand(n, x.shape[1], self.size, padded.shape[-1])
        shifted = padded.gather(2, rows)
        columns = columns[:, None, None, :].expand(n, x.shape[1], self.size, self.size)
        return shifted.gather(3, columns)


def make_optimizer(params: list[torch.nn.Parameter], lr: float, momentum: float,
                   weight_decay: float, warmup: float, total_steps: int):
    """SGD with Nesterov momentum, and the schedule: linear warm-up over the first ``warmup``
    share of steps to ``lr``, then linear decay to zero. BatchNorm scales and shifts (1-D
    parameters) get no weight decay."""
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, momentum=momentum, nesterov=True)
    warmup_steps = max(1, int(warmup * total_steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
        (s + 1) / warmup_steps, max(0.0, (total_steps - s) / max(1, total_steps - warmup_steps))))
    return optimizer, schedule


def label_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logit of the given label minus the largest other logit (negative = misclassified)."""
    given = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return given - others.max(1).values


def runner_up_class(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The class with the largest logit other than ``labels`` (per row)."""
    return logits.scatter(1, labels[:, None], float("-inf")).argmax(1)


def training_accuracy(run: Run, data: LabeledData) -> dict:
    """Eval-mode accuracy on all, clean and mislabeled training examples (given labels).

    Each example goes through the channels it was trained with (example-tied dropout's
    ``"example"`` mode), so the metrics say how well the network fit its training set.
    """
    from noisefind.dropout import dropout_mode
    from noisefind.models import predict_logits

    with dropout_mode(run.model, "example"):
        predicted = predict_logits(run.model, data.x, data.index).argmax(1).cpu()
    right = predicted == data.y
    metrics = {"train_accuracy": right.float().mean().item()}
    if data.true_y is not None:
        noisy = data.y != data.true_y
        metrics["train_clean_accuracy"] = right[~noisy].float().mean().item()
        if noisy.any():
            metrics["train_noisy_accuracy"] = right[noisy].float().mean().item()
    return metrics


def _run_config(data: LabeledData, config: TrainConfig, model: Net, seconds: float,
                device: torch.device) -> dict:
    return {
        "noisefind_run": RUN_FORMAT,
        "arch": choose_arch(data.input_shape) if config.arch == "auto" else config.arch,
        "input_shape": list(data.input_shape),
        "classes": list(data.classes),
        "train": asdict(config),
        "data": {"name": data.name, "fingerprint": data.fingerprint(), "examples": len(data),
                 "noise": data.noise, "noise_seed": data.noise_seed},
        "units": len(model.unit_names()),
        "seconds": round(seconds, 3),
        "device": str(device),
    }


# --------------------------------------------------------------------------------------------
# Run folders


def _prepare_run_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise NoisefindError(f"--out {out}: exists and is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)


def _checkpoint_path(out: Path, epoch: int) -> Path:
    folder = out / "checkpoints"
    folder.mkdir(exist_ok=True)
    return folder / f"epoch_{epoch:03d}.safetensors"


def save_run(run: Run, out: str | Path) -> None:
    """Write a run folder: weights (safetensors), config (JSON), history (npz)."""
    out = Path(out)
    _prepare_run_folder(out)
    state = {k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()}
    atomic_write(out / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
    write_json(out / "config.json", run.config)
    if run.history is not None:
        run.history.save(out / "history.npz")
    if run.gradients is not None:
        write_json(out / "gradients.json", run.gradients)
    run.path = out


def load_run(path: str | Path, device: str = "auto") -> Run:
    """Load a run folder written by :func:`fit`; weights via safetensors, never pickle."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise NoisefindError(f"{path} is not a noisefind run (no config.json); "
                             "train one with: noisefind train DATA --out RUN")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise NoisefindError(f"{config_file}: not valid JSON ({exc.msg})") from None
    if not isinstance(config, dict) or config.get("noisefind_run") != RUN_FORMAT:
        raise NoisefindError(f"{path} is not a noisefind run (config.json lacks noisefind_run)")
    train_config = TrainConfig(**config["train"])
    model = make_model(train_config, tuple(config["input_shape"]), len(config["classes"]))
    model.load_state_dict(load_weights(path / "model.safetensors", model))
    model.to(resolve_device(device)).eval()
    history_file = path / "history.npz"
    history = History.load(history_file) if history_file.is_file() else None
    return Run(model=model, config=config, history=history, path=path)


def load_weights(file: Path, model: Net) -> dict[str, torch.Tensor]:
    """Read a safetensors state dict and check that it fits ``model``."""
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise NoisefindError(f"{file}: not a valid safetensors file ({exc})") from None
    expected = model.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in state):
        raise NoisefindError(f"{file}: weights do not match the architecture in config.json")
    return state


def check_compatible(run: Run, data: LabeledData) -> None:
    """Raise a clear error if ``data`` cannot be fed to ``run``'s model."""
    if list(data.classes) != list(run.classes):
        raise NoisefindError(
            f"the model was trained on classes {run.classes[:6]}... but the data has "
            f"{data.classes[:6]}...; scan the data the model was trained on")
    expected = tuple(run.config["input_shape"])
    if data.input_shape != expected:
        fix = (f"; pass --image-size {expected[-1]} to match"
               if len(expected) == 3 and data.input_shape[0] == expected[0]
               else "; scan data of the kind the model was trained on")
        raise NoisefindError(f"the model expects inputs of shape {expected} but the data has "
                             f"{data.input_shape}{fix}")
    if run.config["data"]["fingerprint"] != data.fingerprint():
        console.print("[yellow]warning:[/] the data differs from the data the model was "
                      "trained on (fingerprint mismatch); flip counts assume a trained-on set")
