"""The ``fast`` recipe: how the out-of-sample models learn much in few steps.

After airbench (Jordan 2024, github.com/KellerJordan/cifar10-airbench), adapted to a few
thousand images: the whitened CNN (:mod:`noisefind.models.whitened`), Nesterov SGD in a
decoupled form (the learning rate and weight decay are given per 1,024 examples, so changing
the batch size or the momentum does not change the step), BatchNorm shifts at 64 times the
learning rate, a triangular schedule, and a lookahead average of the weights
(:class:`Lookahead`). Predictions then average flipped and shifted views
(:func:`noisefind.models.predict.predict_logits` with ``views=True``).

What each ingredient does to the fold models' accuracy and to detection is measured in
docs/benchmarks.md ("The fold models' recipe").
"""

from __future__ import annotations

import torch
from torch import nn

from noisefind.models.whitened import Whitening

# TrainConfig fields of the fast recipe (noisefind.signals.out_of_sample picks it for images).
# No label smoothing: it blunts the confidence the detectors read, and did not help them.
# Its own epoch count, not the scanned model's (which must fit every label): on CIFAR-10N
# folds of 4,000 images, 30 beat 20 and 40 (wrong labels get learned; docs/benchmarks.md).
FAST = {"recipe": "fast", "arch": "whitened", "width": 0.5, "lr": 20.0, "momentum": 0.85,
        "weight_decay": 0.0153, "batch_size": 128, "label_smoothing": 0.0, "epochs": 30}
# The backbone spec for noisefind's own fold network started from pretrained weights: the fold
# models then train with this recipe from them, for fewer epochs (on CIFAR-10N folds of 4,000
# images, 15 epochs from weights pretrained on other images matched 30: docs/benchmarks.md).
OWN_BACKBONE, WARM_EPOCHS = "noisefind:fast", 15
BIAS_SCALE = 64.0  # BatchNorm shifts learn this much faster (their weight decay does not grow)
SCHEDULE = (0.2, 0.23, 0.07)  # the learning rate's start, peak position, end (share of peak)
STEM_SHARE = 0.3  # share of the steps in which the whitening stem's bias learns
LOOKAHEAD_START = 0.3  # share of the steps before the weights are averaged
LOOKAHEAD_EVERY = 5  # steps between two averagings


def fast_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float,
                   batch_size: int, total_steps: int):
    """Nesterov SGD for the mean loss of a batch, from the decoupled settings, and the
    triangular schedule: from ``SCHEDULE[0]`` of the peak up to it at ``SCHEDULE[1]`` of the
    steps, then down to ``SCHEDULE[2]`` of it. A whitening stem's bias learns for the first
    ``STEM_SHARE`` of the steps only (its rate then drops to zero: the parameters that take
    gradients never change, as DistributedDataParallel requires)."""
    steps_scale = 1024 * (1 + 1 / (1 - momentum))  # how much Nesterov momentum amplifies a step
    step_lr = lr / steps_scale * batch_size  # per example, times the batch for the mean loss
    decay = weight_decay * batch_size / steps_scale  # shrinkage of the weights per step
    shifts = [m.bias for m in model.modules()
              if isinstance(m, nn.BatchNorm2d) and m.bias is not None and m.bias.requires_grad]
    stem = [m.bias for m in model.modules() if isinstance(m, Whitening)]
    apart = {id(p) for p in shifts + stem}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in apart]
    optimizer = torch.optim.SGD(
        [{"params": shifts, "lr": step_lr * BIAS_SCALE,
          "weight_decay": decay / (step_lr * BIAS_SCALE)},
         {"params": stem, "lr": step_lr, "weight_decay": decay / step_lr},
         {"params": others, "lr": step_lr, "weight_decay": decay / step_lr}],
        momentum=momentum, nesterov=True)
    start, peak, end = SCHEDULE
    peak_step = max(1, int(peak * total_steps))

    stem_steps = STEM_SHARE * total_steps

    def factor(step: int) -> float:
        if step < peak_step:
            return start + (1 - start) * step / peak_step
        return 1 + (end - 1) * (step - peak_step) / max(1, total_steps - peak_step)

    def stem_factor(step: int) -> float:
        return factor(step) if step < stem_steps else 0.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, [factor, stem_factor, factor])


class Lookahead:
    """An average of the weights, copied back into the network as it goes.

    From ``LOOKAHEAD_START`` of the steps on, every ``LOOKAHEAD_EVERY`` steps the average moves
    towards the weights and the weights are set to it; its decay grows with the steps (the
    cube of the share done), so training moves fast early and averages strongly at the end.
    """

    def __init__(self, model: nn.Module, total_steps: int):
        self.model, self.total_steps = model, total_steps
        self.average: list[torch.Tensor] | None = None

    def _tensors(self) -> list[torch.Tensor]:
        return [t for t in self.model.state_dict().values() if t.dtype.is_floating_point]

    @torch.no_grad()
    def step(self, step: int) -> None:
        """Called after optimiser step ``step`` (counted from 1)."""
        if step < LOOKAHEAD_START * self.total_steps or step % LOOKAHEAD_EVERY:
            return
        if self.average is None:
            self.average = [t.detach().clone() for t in self._tensors()]
            return
        decay = 0.95 ** LOOKAHEAD_EVERY * (step / self.total_steps) ** 3
        for average, weights in zip(self.average, self._tensors(), strict=True):
            average.lerp_(weights, 1 - decay)
            weights.copy_(average)

    @torch.no_grad()
    def finish(self) -> None:
        """Set the weights to the average (at the end of each epoch)."""
        if self.average is not None:
            for average, weights in zip(self.average, self._tensors(), strict=True):
                weights.copy_(average)
