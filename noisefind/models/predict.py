"""What a trained network says about examples: logits, margins, runner-up classes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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


def prediction_views(x: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
    """Weighted views of a batch of images whose logits average into a steadier prediction
    (airbench's test-time augmentation): the images and, shifted one pixel up-left and one
    down-right (reflect-padded), the same at a quarter of the weight each; for colour images
    each also mirrored, sharing its weight (a mirrored digit is another symbol)."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [(0.5, x), (0.25, padded[..., :height, :width]), (0.25, padded[..., 2:, 2:])]
    if x.shape[1] != 3:
        return views
    return [(weight / 2, view) for weight, image in views for view in (image, image.flip(-1))]


@torch.no_grad()
def predict_logits(model: Net, x: torch.Tensor, index: torch.Tensor | None = None,
                   batch_size: int = 1024, views: bool = False) -> torch.Tensor:
    """Eval-mode logits (float32, on the model's device) for every row of ``x``; with
    ``views``, averaged over :func:`prediction_views` (images only)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device, non_blocking=True)
        ib = None if index is None else index[start:start + batch_size].to(device)
        with autocast(device):
            if views:
                out.append(sum(weight * model(view, ib).float()
                               for weight, view in prediction_views(xb)))
            else:
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
