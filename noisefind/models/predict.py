"""What a trained network says about examples: logits, margins, runner-up classes."""

from __future__ import annotations

import numpy as np
import torch

from noisefind.base.device import autocast
from noisefind.models.nets import Net


def runner_up_classes(model, x: torch.Tensor, index: torch.Tensor,
                      labels: torch.Tensor) -> np.ndarray:
    """Per example, the class code with the highest logit other than ``labels`` (eval mode,
    each training example through the dropout channels it was trained with)."""
    from noisefind.models.dropout import dropout_mode

    with dropout_mode(model, "example"):
        logits = predict_logits(model, x, index).float()
    return runner_up_class(logits, labels.to(logits.device)).cpu().numpy()


@torch.no_grad()
def predict_logits(model: Net, x: torch.Tensor, index: torch.Tensor | None = None,
                   batch_size: int = 1024) -> torch.Tensor:
    """Eval-mode logits (float32, on the model's device) for every row of ``x``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device, non_blocking=True)
        ib = None if index is None else index[start:start + batch_size].to(device)
        with autocast(device):
            out.append(model(xb, ib).float())
    model.train(was_training)
    return torch.cat(out)


def label_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logit of the given label minus the largest other logit (negative = misclassified)."""
    given = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return given - others.max(1).values


def runner_up_class(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The class with the largest logit other than ``labels`` (per row)."""
    return logits.scatter(1, labels[:, None], float("-inf")).argmax(1)
