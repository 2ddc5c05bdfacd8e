"""The one training loop, its per-example history, and the run folder it writes.

Written for the GPU first (airbench style): the whole training set lives on the device as one
tensor, batches are gathered by index, bf16 autocast and channels_last on CUDA, and the history
(loss, margin, correctness per example and epoch) is written into device tensors with no host
sync until the epoch ends. The same loop serves every command that trains.

A run folder holds ``model.safetensors``, ``config.json``, ``history.npz`` and, with
``checkpoint_every``, ``checkpoints/epoch_NNN.safetensors`` (epoch 0 = the initial weights).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from noisefind.base import distributed
from noisefind.base.console import progress_bar
from noisefind.base.device import autocast, resolve_device
from noisefind.base.errors import NoisefindError
from noisefind.data.labeled import LabeledData, split_holdout
from noisefind.models.nets import Net
from noisefind.models.predict import label_margin
from noisefind.training.config import TrainConfig, starting_model
from noisefind.training.fast_recipe import Lookahead, fast_optimizer
from noisefind.training.runs import (
    History,
    Run,
    _checkpoint_path,
    _prepare_run_folder,
    _run_config,
    save_run,
)
from noisefind.training.views import ImageViews, augment_for


class StepHook(Protocol):
    """Takes over each training step's backward pass and reports what it saw.

    The gradient analysis (:class:`noisefind.analyses.gradients.GradientTracker`) plugs in
    here, so the training loop knows nothing of the analyses.
    """

    def backward(self, losses: torch.Tensor, rows: torch.Tensor, epoch: int) -> None:
        """Fill the parameters' ``.grad`` with the gradient of ``losses.mean()``."""

    def result(self) -> dict:
        """What was recorded, as plain JSON-able values; called once training is over."""


# (model on its device, training data, epochs) -> the hook for this training
StepHookFactory = Callable[[Net, LabeledData, int], StepHook]


def fit(data: LabeledData, config: TrainConfig | None = None, out: str | Path | None = None,
        progress: bool = True, data_parallel: bool = True,
        step_hook: StepHookFactory | None = None) -> Run:
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
    step_hook : callable, optional
        ``step_hook(model, data, epochs)`` makes a :class:`StepHook` that replaces
        ``losses.mean().backward()`` in every step (``losses`` per example of the batch,
        ``rows`` their positions in ``data``); its ``result()`` is kept as ``run.gradients``
        and saved as ``gradients.json``.

    Returns
    -------
    Run
    """
    config = config or TrainConfig()
    config.validate()
    if config.holdout:
        data = split_holdout(data, config.holdout, config.seed)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = starting_model(config, data)
    probing = config.linear_probe_epochs()
    head = set(model.head_parameters()) if probing else set()
    body = [p for name, p in model.named_parameters() if probing and name not in head]
    model.to(device)
    if device.type == "cuda" and data.is_image:
        model.to(memory_format=torch.channels_last)
    hook = None if step_hook is None else step_hook(model, data, config.epochs)
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

    fast = config.recipe == "fast"
    if fast:
        optimizer, schedule = fast_optimizer(model, config.lr, config.momentum,
                                             config.weight_decay, batch_size, total_steps)
    else:
        optimizer, schedule = make_optimizer(list(model.parameters()), config.lr,
                                             config.momentum, config.weight_decay,
                                             config.warmup, total_steps)
    lookahead = Lookahead(model, total_steps) if fast else None
    step = 0

    loss_hist = torch.zeros(config.epochs, n, dtype=torch.float16, device=device)
    margin_hist = torch.zeros_like(loss_hist)
    correct_hist = torch.zeros(config.epochs, n, dtype=torch.bool, device=device)
    generator = torch.Generator().manual_seed(config.seed)
    views = ImageViews(x.shape, device, config.seed) if config.augment and augment_for(data) \
        else None
    start_time = time.perf_counter()
    model.train()
    with progress_bar(progress) as bar:
        # Counted in batches, so a log shows every tenth of even a one-epoch training.
        task = bar.add_task("training", total=total_steps, info="")
        for epoch in range(config.epochs):
            for parameter in body:  # a backbone's linear probe: the classifier alone learns
                # DistributedDataParallel reduces every gradient it was built with, so across
                # processes the body keeps computing them and they are dropped before the step.
                parameter.requires_grad_(epoch >= probing or world > 1)
            order = torch.randperm(n, generator=generator).to(device, non_blocking=True)
            # Near-equal batches: a trailing batch of one would break BatchNorm.
            for step_in_epoch, batch in enumerate(torch.tensor_split(order, batches_per_epoch)):
                rows = batch[rank::world]  # each rank its share of the batch
                inputs = x[rows] if views is None else views(x[rows])
                with autocast(device):
                    logits = trained(inputs, index[rows]).float()
                losses = F.cross_entropy(logits, y[rows], reduction="none")
                learned = losses if not config.label_smoothing else F.cross_entropy(
                    logits, y[rows], reduction="none", label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                if hook is None:
                    learned.mean().backward()
                else:
                    hook.backward(learned, rows, epoch)
                if epoch < probing and world > 1:
                    for parameter in body:
                        parameter.grad = None  # SGD leaves a parameter without one as it is
                optimizer.step()
                schedule.step()
                step += 1
                if lookahead is not None:
                    lookahead.step(step)
                with torch.no_grad():
                    loss_hist[epoch, rows] = losses.detach().to(torch.float16)
                    margin_hist[epoch, rows] = label_margin(logits.detach(), y[rows]).half()
                    correct_hist[epoch, rows] = logits.argmax(1) == y[rows]
                if step_in_epoch < batches_per_epoch - 1:  # the last one with the epoch's figures
                    bar.advance(task)  # host-side only: no device synchronisation
            if lookahead is not None:
                lookahead.finish()
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
              gradients=None if hook is None else hook.result())
    run.config["metrics"] = training_accuracy(run, data)
    if out is not None:
        save_run(run, out)
    return run


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


def training_accuracy(run: Run, data: LabeledData) -> dict:
    """Eval-mode accuracy on all, clean and mislabeled training examples (given labels).

    Each example goes through the channels it was trained with (example-tied dropout's
    ``"example"`` mode), so the metrics say how well the network fit its training set.
    """
    from noisefind.models.dropout import dropout_mode
    from noisefind.models.predict import predict_logits

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
