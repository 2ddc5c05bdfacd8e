"""The greedy, gradient-guided zeroing search (docs/method.md, "The flip search"), batched and
one at a time.

For one training example (x, y) and a trained model in eval mode, the search zeroes units
(conv channels, hidden neurons) one by one until the model's prediction leaves y:

1. the example's logits are averaged over K copies of x with Gaussian noise of norm
   ``noise_scale * |x|``, both measured after the model's input standardisation, so the
   search cannot take an adversarial shortcut;
2. the objective O = loss(x, y) - mean loss of R other training examples, all under the same
   mask: the second term keeps the edit from wrecking the model as a whole;
3. every still-active unit is scored by the first-order estimate of O's increase if zeroed,
   which is minus the gradient of O with respect to the unit's mask (one backward pass);
4. the best unit is zeroed; stop when the noise-averaged prediction is no longer y, or at the
   cap ``max_units`` (recorded as not flipped).

The batched search runs S searches in one forward pass (each with its own mask: the mask is a
batch dimension, see ``models.UnitGate``). Finished searches leave their slot and the next
example takes it, all on the device: the step loop has no host synchronisation except at flush
points, every ``flush_every`` steps, where finished results are handed to ``on_results``.

Noise copies and reference examples are drawn from a counter-based hash of (seed, row), so an
example's search is the same whichever slot or batch it runs in; the one-at-a-time reference
:func:`flip_search_reference` follows the same maths with no batching, for tests and benchmarks.

``flip_cost`` is the continuous version of ``units_to_flip`` used to break the many ties among
small counts: ``(units_to_flip - 1) + m_before / (m_before - m_after)``, where m is the label
margin of the noise-averaged logits before and after the last zeroing, i.e. the fraction of the
last unit's effect that was still needed to cross the decision boundary. Examples the unedited
model already gets wrong have cost ``m / (1 + |m|)`` (in (-1, 0]); examples not flipped at the
cap have ``max_units + m / (1 + m)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from noisefind.base.console import progress_bar
from noisefind.base.device import autocast
from noisefind.base.errors import NoisefindError
from noisefind.base.rng import keyed_bits, keyed_normal
from noisefind.data.labeled import LabeledData, to_float
from noisefind.models.nets import Net, unit_masks
from noisefind.models.predict import label_margin

_NOISE_STREAM, _REFERENCE_STREAM = 11, 12
CPU_INPUTS_PER_PASS = 192  # inputs of one CPU pass, for small inputs (digits, MNIST, tables)
CPU_VALUES_PER_PASS = 150_000  # ... and fewer for large ones: input values (pixels x channels)
RESULT_COLUMNS = ("row", "index", "units_to_flip", "flipped", "flip_cost", "loss",
                  "predicted_label", "flipped_to", "reference_accuracy", "units")


@dataclass(frozen=True)
class FlipSettings:
    """Settings of the flip search.

    Parameters
    ----------
    max_units : int
        Cap on units zeroed; an example still not flipped is recorded ``flipped=False``.
    noise_copies : int
        K, the noisy copies of the example whose logits are averaged.
    noise_scale : float
        Norm of each copy's Gaussian noise relative to the input's norm.
    reference_size : int
        R, the other training examples whose mean loss is subtracted from the objective.
    reference : {"same-class", "random"}
        Where the R reference examples come from: examples with the same given label (default),
        or the whole training set. Same-class references make the search pay for damaging the
        class the example claims to belong to, so a clean example, supported by its class's
        shared features, needs more units; a memorised one does not (docs/benchmarks.md).
    batch_size : int or None
        Searches advanced together (each runs K + R examples); None lets
        :func:`auto_batch_size` choose (on CPU by the size of a pass, on a GPU by free memory).
    seed : int
        Seed of the noise copies and the reference draws.
    flush_every : int
        Steps between hand-overs of finished results (and host synchronisations).
    """

    max_units: int = 100
    noise_copies: int = 2
    noise_scale: float = 0.01
    reference_size: int = 4
    batch_size: int | None = None
    seed: int = 0
    flush_every: int = 8
    reference: str = "same-class"

    def validate(self) -> None:
        if self.max_units < 1:
            raise NoisefindError("max_units must be at least 1", parameter="max_units")
        if self.noise_copies < 1:
            raise NoisefindError("noise_copies must be at least 1", parameter="noise_copies")
        if self.reference_size < 0:
            raise NoisefindError("reference_size must be 0 or more", parameter="reference_size")
        if self.noise_scale < 0:
            raise NoisefindError("noise_scale must be 0 or more", parameter="noise_scale")
        if self.reference not in ("same-class", "random"):
            raise NoisefindError("reference must be same-class or random", parameter="reference")
        if self.batch_size is not None and self.batch_size < 1:
            raise NoisefindError("scan_batch_size must be at least 1", parameter="scan_batch_size")


    def as_dict(self) -> dict:
        """The settings that change results (not batching), to guard resumes."""
        d = asdict(self)
        d.pop("batch_size")
        d.pop("flush_every")
        return d


# --------------------------------------------------------------------------------------------
# Pieces shared by the batched and the one-at-a-time search


def noisy_copies(x: torch.Tensor, rows: torch.Tensor, settings: FlipSettings,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.Tensor:
    """K noisy copies of each example: (len(rows), K, *input_shape).

    The noise is drawn where the model sees the input, after its standardisation by ``mean``
    and ``std`` (per channel or per feature; the model's ``Net.mean`` and ``Net.std``), with a
    norm of ``noise_scale`` times the standardised input's norm. A share of the raw norm would
    drown the small features of a table whose features have mixed scales (wine: one feature
    near 1000, another with a spread of 0.1). Without ``mean`` and ``std``, the raw input.
    """
    inputs = to_float(x[rows])
    view = (1, -1) + (1,) * (x.dim() - 2)
    mean = inputs.new_zeros(()) if mean is None else mean.to(inputs.dtype).view(view)
    std = inputs.new_ones(()) if std is None else std.to(inputs.dtype).view(view)
    standard = ((inputs - mean) / std).reshape(len(rows), -1)
    k, d = settings.noise_copies, standard.shape[1]
    noise = keyed_normal(settings.seed, rows, _NOISE_STREAM, k * d).to(x.device, inputs.dtype)
    noise = noise.reshape(len(rows), k, d)
    scale = settings.noise_scale * standard.norm(dim=1, keepdim=True) / noise.norm(
        dim=2).clamp_min(1e-12)
    copies = (standard[:, None, :] + noise * scale[:, :, None]).reshape(-1, *x.shape[1:])
    return (copies * std + mean).reshape(len(rows), k, *x.shape[1:])


class ReferencePool:
    """Draws each example's R reference rows from its group, never the example itself.

    The group is the whole training set (``reference="random"``) or the examples with the same
    given label (``reference="same-class"``).
    """

    def __init__(self, y: torch.Tensor, settings: FlipSettings):
        groups = y if settings.reference == "same-class" else torch.zeros_like(y)
        self.groups = groups
        self.order = torch.argsort(groups, stable=True)
        self.counts = torch.bincount(groups)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts
        self.rank = torch.empty_like(self.order)
        self.rank[self.order] = torch.arange(len(y), device=y.device) - self.offsets[
            groups[self.order]]
        self.settings = settings

    def draw(self, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows), R) reference rows, a pure function of (seed, row)."""
        bits = keyed_bits(self.settings.seed, rows, _REFERENCE_STREAM,
                          self.settings.reference_size).to(rows.device)
        group = self.groups[rows]
        others = (self.counts[group] - 1).clamp_min(1)[:, None]
        pick = bits % others
        pick = pick + (pick >= self.rank[rows][:, None]).long()  # skip the example itself
        pick = pick.clamp(max=(self.counts[group] - 1)[:, None])
        return self.order[self.offsets[group][:, None] + pick]


def search_forward(model: Net, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor,
                   mask: torch.Tensor, settings: FlipSettings, pool: ReferencePool):
    """One forward pass of len(rows) searches under ``mask`` (len(rows), units).

    Returns the noise-averaged logits (S, C), the objective O per search (S,), and the
    accuracy of the masked model on each search's reference examples (S,).
    """
    s, k, r = len(rows), settings.noise_copies, settings.reference_size
    refs = pool.draw(rows)
    inputs = torch.cat([noisy_copies(x, rows, settings, model.mean, model.std),
                        to_float(x[refs])],
                       dim=1)
    inputs = inputs.reshape(s * (k + r), *x.shape[1:])
    gates = [g for _, g in model.gates()]
    masks = list(torch.split(mask, [g.units for g in gates], dim=1))
    with unit_masks(model, masks), autocast(x.device):
        logits = model(inputs).float().reshape(s, k + r, -1)
    example_logits = logits[:, :k].mean(dim=1)
    objective = F.cross_entropy(example_logits, y[rows], reduction="none")
    if r:
        ref_logits = logits[:, k:]
        ref_labels = y[refs]
        ref_loss = F.cross_entropy(ref_logits.reshape(s * r, -1), ref_labels.reshape(-1),
                                   reduction="none").reshape(s, r)
        objective = objective - ref_loss.mean(dim=1)
        ref_accuracy = (ref_logits.argmax(-1) == ref_labels).float().mean(dim=1)
    else:
        ref_accuracy = torch.full((s,), float("nan"), device=x.device)
    return example_logits, objective, ref_accuracy


def flip_cost(units: torch.Tensor, flipped: torch.Tensor, margin_before: torch.Tensor,
              margin_now: torch.Tensor, max_units: int) -> torch.Tensor:
    """The continuous flip count described in the module docstring."""
    step = (margin_before / (margin_before - margin_now).clamp_min(1e-12)).clamp(0, 1)
    cost = (units - 1).to(margin_now.dtype) + step
    cost = torch.where(units == 0, margin_now / (1 + margin_now.abs()), cost)
    return torch.where(flipped, cost,
                       max_units + margin_now.clamp_min(0) / (1 + margin_now.clamp_min(0)))


def _prepare(model: Net, data: LabeledData, rows, settings: FlipSettings):
    settings.validate()
    device = next(model.parameters()).device
    rows = torch.arange(len(data)) if rows is None else torch.as_tensor(rows, dtype=torch.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(data)):
        raise NoisefindError("rows to scan must be positions in the training set")
    x = data.x.to(device)  # uint8 images stay uint8: each batch is converted where it is used
    if x.is_floating_point():
        x = x.to(next(model.parameters()).dtype)
    return device, rows.to(device), x, data.y.to(device)


def _results_frame(rows, data: LabeledData, units, flipped, cost, loss, predicted, flipped_to,
                   ref_accuracy, unit_lists) -> pd.DataFrame:
    rows = np.asarray(rows, dtype=np.int64)
    return pd.DataFrame({
        "row": rows,
        "index": data.index.numpy()[rows],
        "units_to_flip": np.asarray(units, dtype=np.int64),
        "flipped": np.asarray(flipped, dtype=bool),
        "flip_cost": np.asarray(cost, dtype=np.float64),
        "loss": np.asarray(loss, dtype=np.float64),
        "predicted_label": np.asarray(predicted, dtype=np.int64),
        "flipped_to": np.asarray(flipped_to, dtype=np.int64),
        "reference_accuracy": np.asarray(ref_accuracy, dtype=np.float64),
        "units": unit_lists,
    }, columns=list(RESULT_COLUMNS))


# --------------------------------------------------------------------------------------------
# The batched search


def flip_search(model: Net, data: LabeledData, settings: FlipSettings | None = None,
                rows: Sequence[int] | torch.Tensor | None = None, progress: bool = True,
                on_results: Callable[[pd.DataFrame], None] | None = None) -> pd.DataFrame:
    """Run the flip search for every example in ``rows`` (default: all), many at once.

    Parameters
    ----------
    model : Net
        A trained network; it is put in eval mode and left unchanged.
    data : LabeledData
        The training set; ``data.y`` are the labels the search flips away from.
    settings : FlipSettings, optional
    rows : sequence of int, optional
        Positions in ``data`` to scan, in the order they enter the search.
    progress : bool
        Show a progress bar with examples done, rate and ETA.
    on_results : callable, optional
        Called with a DataFrame of newly finished examples at every flush point, so that a
        caller can persist them as the search goes.

    Returns
    -------
    pandas.DataFrame
        One row per scanned example, in the order of ``rows``; columns ``RESULT_COLUMNS``
        (``units`` holds the zeroed unit numbers in order, see ``Net.unit_names``).
    """
    settings = settings or FlipSettings()
    device, queue, x, y = _prepare(model, data, rows, settings)
    mask_dtype = next(model.parameters()).dtype
    n_scan, cap = len(queue), settings.max_units
    total_units = sum(g.units for _, g in model.gates())
    pool = ReferencePool(y, settings)
    slots = settings.batch_size or auto_batch_size(model, x, y, settings, pool)
    slots = min(slots, max(1, n_scan))
    trash = n_scan  # finished or empty slots write their results to this extra row

    def results(shape=(), dtype=torch.float32, fill=0):
        return torch.full((n_scan + 1, *shape), fill, dtype=dtype, device=device)

    res_units, res_flipped = results(dtype=torch.int64), results(dtype=torch.bool)
    res_cost, res_loss, res_ref = results(), results(), results()
    res_pred, res_to = results(dtype=torch.int64), results(dtype=torch.int64, fill=-1)
    res_zeroed = results((cap,), torch.int32, -1)
    res_done = results(dtype=torch.bool)

    slot_q = torch.arange(slots, device=device)
    slot_q = torch.where(slot_q < n_scan, slot_q, trash)
    next_q = torch.tensor(min(slots, n_scan), device=device)
    active = torch.ones(slots, total_units, dtype=torch.bool, device=device)
    count = torch.zeros(slots, dtype=torch.int64, device=device)
    margin_before = torch.zeros(slots, device=device)
    zeroed = torch.full((slots, cap), -1, dtype=torch.int32, device=device)
    slot_ids = torch.arange(slots, device=device)
    queue_padded = torch.cat([queue, queue[:1].clone() if n_scan else queue.new_zeros(1)])

    model.eval()
    was_requiring = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    handed_over = np.zeros(n_scan, dtype=bool)
    frames = []
    try:
        with progress_bar(progress) as bar:
            task = bar.add_task("flip search", total=n_scan, info="")
            step = 0
            while n_scan:
                live = slot_q != trash
                row = queue_padded[slot_q]
                mask = active.to(mask_dtype).requires_grad_(True)
                logits, objective, ref_acc = search_forward(model, x, y, row, mask, settings, pool)
                (grad,) = torch.autograd.grad(objective.sum(), mask)
                with torch.no_grad():
                    margin = label_margin(logits.float(), y[row])
                    flipped = margin <= 0
                    finished = live & (flipped | (count >= cap))
                    first = live & (count == 0)
                    target = torch.where(first, slot_q, trash)
                    res_loss[target] = F.cross_entropy(logits.float(), y[row], reduction="none")
                    res_pred[target] = logits.argmax(1)
                    target = torch.where(finished, slot_q, trash)
                    res_units[target] = count
                    res_flipped[target] = flipped
                    res_cost[target] = flip_cost(count, flipped, margin_before, margin, cap)
                    res_to[target] = torch.where(flipped, logits.argmax(1), -1)
                    res_ref[target] = ref_acc
                    res_zeroed[target] = zeroed
                    res_done[target] = True
                    res_done[trash] = False

                    # Zero the best still-active unit of every search that goes on.
                    score = (-grad.float()).masked_fill(~active, float("-inf"))
                    best = score.argmax(dim=1)
                    going = live & ~finished
                    active[slot_ids, best] = active[slot_ids, best] & ~going
                    position = count.clamp(max=cap - 1)
                    zeroed[slot_ids, position] = torch.where(going, best.int(),
                                                             zeroed[slot_ids, position])
                    count += going.long()
                    margin_before = torch.where(going, margin, margin_before)

                    # Refill finished slots from the queue, on the device.
                    new_q = next_q + torch.cumsum(finished.long(), 0) - 1
                    refill = torch.where(new_q < n_scan, new_q, trash)
                    slot_q = torch.where(finished, refill, slot_q)
                    next_q = next_q + finished.sum()
                    active |= finished[:, None]
                    count = torch.where(finished, 0, count)
                    zeroed.masked_fill_(finished[:, None], -1)
                step += 1
                if step % settings.flush_every == 0:
                    done = res_done[:n_scan].cpu().numpy()
                    new = np.flatnonzero(done & ~handed_over)
                    if len(new):
                        handed_over[new] = True
                        frame = _batch_frame(new, queue, data, res_units, res_flipped, res_cost,
                                             res_loss, res_pred, res_to, res_ref, res_zeroed)
                        frames.append(frame)
                        if on_results is not None:
                            on_results(frame)
                        finished = torch.from_numpy(handed_over).to(device)
                        finished_units = res_units[:n_scan][finished]
                        bar.update(task, completed=int(handed_over.sum()), info="median units "
                                   f"{int(finished_units.float().median())}")
                    if handed_over.all():
                        break
    finally:
        for p, flag in zip(model.parameters(), was_requiring, strict=True):
            p.requires_grad_(flag)
    if not frames:
        return _results_frame([], data, [], [], [], [], [], [], [], [])
    out = pd.concat(frames, ignore_index=True)
    order = {int(r): i for i, r in enumerate(queue.cpu().tolist())}
    return out.sort_values("row", key=lambda s: s.map(order)).reset_index(drop=True)


def auto_batch_size(model: Net, x: torch.Tensor, y: torch.Tensor, settings: FlipSettings,
                    pool: ReferencePool) -> int:
    """Searches per pass: on CPU, enough for about :data:`CPU_INPUTS_PER_PASS` inputs, or
    :data:`CPU_VALUES_PER_PASS` input values when inputs are large (K + R inputs per search, at
    least 8 searches); on a GPU, as many as fit in half the free memory.

    On a CPU small passes pay the per-step overhead and large ones spill the caches: the best
    pass held about 192 inputs on digits (8 x 8) and MNIST (28 x 28) but about 48 on CIFAR
    (32 x 32 x 3; docs/scaling.md). The memory of one search on a GPU is measured on a probe
    step of 8 searches.
    """
    device = x.device
    if device.type != "cuda":
        per_search = settings.noise_copies + settings.reference_size
        inputs = min(CPU_INPUTS_PER_PASS, CPU_VALUES_PER_PASS // max(1, x[0].numel()))
        return max(8, inputs // per_search)
    probe = 8
    rows = torch.arange(probe, device=device) % len(x)
    total_units = sum(g.units for _, g in model.gates())
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    model.eval()
    mask = torch.ones(probe, total_units, device=device, dtype=next(model.parameters()).dtype,
                      requires_grad=True)
    _, objective, _ = search_forward(model, x, y, rows, mask, settings, pool)
    torch.autograd.grad(objective.sum(), mask)
    per_search = max(1, (torch.cuda.max_memory_allocated(device) - base) // probe)
    free, _ = torch.cuda.mem_get_info(device)
    return int(min(4096, max(16, free // 2 // per_search)))


def _batch_frame(new: np.ndarray, queue, data, units, flipped, cost, loss, predicted,
                 flipped_to, ref, zeroed) -> pd.DataFrame:
    idx = torch.as_tensor(new, device=queue.device)

    def host(t):
        return t[idx].cpu().numpy()

    zeroed_lists = [[int(u) for u in z if u >= 0] for z in host(zeroed)]
    return _results_frame(host(queue), data, host(units), host(flipped), host(cost), host(loss),
                          host(predicted), host(flipped_to), host(ref), zeroed_lists)


# --------------------------------------------------------------------------------------------
# The one-at-a-time reference


def flip_search_reference(model: Net, data: LabeledData, settings: FlipSettings | None = None,
                          rows: Sequence[int] | torch.Tensor | None = None) -> pd.DataFrame:
    """The same search, one example and one step at a time: the faithful, slow baseline."""
    settings = settings or FlipSettings()
    device, rows, x, y = _prepare(model, data, rows, settings)
    mask_dtype = next(model.parameters()).dtype
    total_units = sum(g.units for _, g in model.gates())
    model.eval()
    pool = ReferencePool(y, settings)
    was_requiring = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    records = []
    try:
        for row in rows.split(1):
            active = torch.ones(1, total_units, dtype=torch.bool, device=device)
            zeroed, margin_before = [], torch.zeros(1, device=device)
            while True:
                mask = active.to(mask_dtype).requires_grad_(True)
                logits, objective, ref_acc = search_forward(model, x, y, row, mask, settings, pool)
                (grad,) = torch.autograd.grad(objective.sum(), mask)
                margin = label_margin(logits.float().detach(), y[row])
                if not zeroed:
                    loss = F.cross_entropy(logits.float(), y[row]).item()
                    predicted = int(logits.argmax(1))
                flipped = bool(margin <= 0)
                if flipped or len(zeroed) >= settings.max_units:
                    break
                score = (-grad.float()).masked_fill(~active, float("-inf"))
                best = int(score.argmax(dim=1))
                active[0, best] = False
                zeroed.append(best)
                margin_before = margin
            units = torch.tensor([len(zeroed)], device=device)
            cost = flip_cost(units, torch.tensor([flipped], device=device), margin_before,
                             margin, settings.max_units)
            records.append((int(row), len(zeroed), flipped, float(cost), loss, predicted,
                            int(logits.argmax(1)) if flipped else -1, float(ref_acc), zeroed))
    finally:
        for p, flag in zip(model.parameters(), was_requiring, strict=True):
            p.requires_grad_(flag)
    columns = list(zip(*records, strict=True)) if records else [[]] * 9
    return _results_frame(*columns[:1], data, *columns[1:])
