"""Layer groups and the gradient accounting of ``noisefind train --track-gradients``.

A *layer group* is one block with parameters: every conv block (conv + BatchNorm), every hidden
dense block (linear + BatchNorm) and the classifier head, named by module path (``layers.0``,
``layers.2.a``, ..., ``head``); :func:`layer_groups` lists them in forward order.

:class:`GradientTracker` is a step hook of :func:`noisefind.training.fit.fit` (``fit(...,
step_hook=GradientTracker)``, which ``noisefind train --track-gradients`` passes). In each training
step, the gradient of the batch's mean loss splits exactly into the part from clean and the part
from mislabeled examples (``sum over those rows of loss / batch size``). The mislabeled part is
taken with ``torch.autograd.grad`` on the step's own forward pass (graph retained), then the usual
``mean().backward()`` fills ``.grad``, and the clean part is the difference, so the optimizer steps
on exactly the gradient an untracked run uses and the training is bit-identical. Per group and
epoch it records, as the authors' code does, the norm of each part summed over the epoch's steps
(divided by the number of steps and by ``sqrt(parameters in the group)``) and the cosine between
the two epoch sums; and, per step and then averaged over the epoch, the same norms and cosine of
single steps. A group is one vector here (the authors' code adds up per-tensor norms and averages
per-tensor cosines, which weighs a BatchNorm scale vector like a whole conv kernel). Weight decay
is the optimizer's, not the loss's, and is left out. Clean examples' gradients include what they do
through the batch statistics of BatchNorm, in train mode as trained.

Training never imports this module: it takes the tracker as a step hook
(:class:`noisefind.training.fit.StepHook`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from noisefind.base.errors import NoisefindError
from noisefind.data.labeled import LabeledData
from noisefind.models.nets import ConvBlock, DenseBlock, Net

# --------------------------------------------------------------------------------------------
# Layer groups


def layer_groups(model: nn.Module) -> list[str]:
    """Module paths of the parameter groups, in forward order: blocks, then ``head``."""
    blocks = [name for name, m in model.named_modules() if isinstance(m, ConvBlock | DenseBlock)]
    return [*blocks, "head"]


def group_of(key: str, groups: Sequence[str]) -> str | None:
    """The group a state-dict key or parameter name belongs to (None: e.g. input statistics)."""
    matches = [g for g in groups if key.startswith(g + ".")]
    return max(matches, key=len) if matches else None


def group_keys(model: nn.Module, group: str) -> list[str]:
    """State-dict keys (parameters and BatchNorm buffers) of one group."""
    groups = layer_groups(model)
    keys = [k for k in model.state_dict() if group_of(k, groups) == group]
    if not keys:
        raise NoisefindError(f"no layer group {group!r}; groups: {', '.join(groups)}")
    return keys


def group_kind(model: nn.Module, group: str) -> str:
    """``conv``, ``dense`` or ``head``, for labels."""
    module = model.get_submodule(group)
    return "conv" if isinstance(module, ConvBlock) else "dense" if isinstance(
        module, DenseBlock) else "head"


def group_info(model: nn.Module) -> tuple[list[str], list[str], list[int]]:
    groups = layer_groups(model)
    counts = [sum(p.numel() for name, p in model.named_parameters()
                  if group_of(name, groups) == g) for g in groups]
    return groups, [group_kind(model, g) for g in groups], counts


# --------------------------------------------------------------------------------------------
# Gradient accounting, during training


class GradientTracker:
    """Splits each training step's gradient into clean and mislabeled parts, per layer group.

    :func:`noisefind.training.fit.fit` makes one when given ``step_hook=GradientTracker`` and
    calls
    :meth:`backward` in place of ``losses.mean().backward()``. Statistics stay on the device
    until :meth:`result` (no host synchronisation in the loop).

    Parameters
    ----------
    model : Net
        The network being trained (already on its device).
    data : LabeledData
        The training set; its truth (``true_y``) says which rows are mislabeled.
    epochs : int
        Epochs of training.

    Raises
    ------
    NoisefindError
        Without the truth, or with no mislabeled (or no clean) examples.
    """

    def __init__(self, model: Net, data: LabeledData, epochs: int):
        from noisefind.base.distributed import rank_and_world

        # Under DDP the step's gradient is averaged across processes but the mislabeled part
        # taken here would be this process's alone, so the split would not add up.
        if rank_and_world()[1] > 1:
            raise NoisefindError("--track-gradients runs in one process; launch without torchrun")
        if data.true_y is None:
            raise NoisefindError("--track-gradients needs to know which labels are wrong: "
                                 "inject noise with --noise KIND:RATE")
        noisy = data.is_noisy
        if not noisy.any() or noisy.all():
            raise NoisefindError("--track-gradients needs both clean and mislabeled examples; "
                                 f"this data has {int(noisy.sum())} of {len(noisy)} mislabeled")
        device = next(model.parameters()).device
        self.groups, self.kinds, self.counts = group_info(model)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        owner = [self.groups.index(group_of(n, self.groups)) for n, _ in named]
        self.owner = torch.tensor(owner, device=device)
        self.noisy = noisy.to(device=device, dtype=torch.float32)
        self.examples = {"clean": int((~noisy).sum()), "mislabeled": int(noisy.sum())}
        self.scale = torch.tensor(self.counts, device=device, dtype=torch.float32).rsqrt()
        self.sum_clean = [torch.zeros_like(p) for p in self.params]
        self.sum_noisy = [torch.zeros_like(p) for p in self.params]
        groups = len(self.groups)
        self.epoch_stats = torch.zeros(epochs, groups, 3, device=device)
        self.step_stats = torch.zeros(epochs, groups, 4, device=device)
        self.steps = [0] * epochs
        self._epoch = 0
        self._result: dict | None = None

    def backward(self, losses: torch.Tensor, rows: torch.Tensor, epoch: int) -> None:
        """Fill ``.grad`` with the gradient of ``losses.mean()`` and record its two parts."""
        if epoch != self._epoch:
            self._close_epoch()
            self._epoch = epoch
        noisy_loss = (losses * self.noisy[rows]).sum() / losses.numel()
        noisy = torch.autograd.grad(noisy_loss, self.params, retain_graph=True,
                                    allow_unused=True)
        losses.mean().backward()
        stats = []
        for p, g_noisy, s_clean, s_noisy in zip(self.params, noisy, self.sum_clean,
                                                self.sum_noisy, strict=True):
            g_noisy = torch.zeros_like(p) if g_noisy is None else g_noisy
            g_clean = (torch.zeros_like(p) if p.grad is None else p.grad) - g_noisy
            s_clean.add_(g_clean)
            s_noisy.add_(g_noisy)
            stats.append(_pair_stats(g_clean, g_noisy))
        clean, noisy_norm, cosine, valid = self._per_group(torch.stack(stats))
        self.step_stats[epoch] += torch.stack(
            [clean * self.scale, noisy_norm * self.scale, torch.where(valid, cosine, 0.0),
             valid.float()], dim=1)
        self.steps[epoch] += 1

    def _per_group(self, stats: torch.Tensor):
        """Per-parameter (squares, squares, dot) -> per-group norms, cosine, defined-mask."""
        summed = torch.zeros(len(self.groups), 3, device=stats.device).index_add_(
            0, self.owner, stats.float())
        clean, noisy = summed[:, 0].sqrt(), summed[:, 1].sqrt()
        valid = (clean > 0) & (noisy > 0)
        return clean, noisy, summed[:, 2] / (clean * noisy).clamp_min(1e-30), valid

    def _close_epoch(self) -> None:
        stats = torch.stack([_pair_stats(c, n) for c, n in zip(self.sum_clean, self.sum_noisy,
                                                               strict=True)])
        clean, noisy, cosine, valid = self._per_group(stats)
        self.epoch_stats[self._epoch] = torch.stack(
            [clean, noisy, torch.where(valid, cosine, torch.nan)], dim=1)
        for tensor in (*self.sum_clean, *self.sum_noisy):
            tensor.zero_()

    def result(self) -> dict:
        """Per-epoch, per-group statistics as plain lists (``[epoch][group]``, NaN as None).

        Ends the tracking: call it once training is over.
        """
        if self._result is not None:
            return self._result
        self._close_epoch()
        steps = torch.tensor(self.steps, dtype=torch.float32).clamp_min(1)[:, None]
        epoch_stats, step_stats = self.epoch_stats.cpu(), self.step_stats.cpu()
        scale = self.scale.cpu()[None, :]
        self._result = {
            "groups": self.groups, "kinds": self.kinds, "parameters": self.counts,
            "examples": self.examples, "epochs": list(range(1, len(self.steps) + 1)),
            "steps": self.steps,
            "clean_norm": _listed(epoch_stats[..., 0] / steps * scale),
            "noisy_norm": _listed(epoch_stats[..., 1] / steps * scale),
            "cosine": _listed(epoch_stats[..., 2]),
            "step_clean_norm": _listed(step_stats[..., 0] / steps),
            "step_noisy_norm": _listed(step_stats[..., 1] / steps),
            "step_cosine": _listed(step_stats[..., 2] / step_stats[..., 3]),
        }
        return self._result


def _pair_stats(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.float(), b.float()
    return torch.stack([a.square().sum(), b.square().sum(), (a * b).sum()])


def _listed(values: torch.Tensor) -> list:
    return [[None if not math.isfinite(v) else round(v, 8) for v in row]
            for row in values.tolist()]
