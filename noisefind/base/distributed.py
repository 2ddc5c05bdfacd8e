"""Several processes (``torchrun``) share one scan or one training run through torch.distributed.

Launched by ``torchrun --nproc-per-node N -m noisefind scan|train ...``, every process reads
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` from the environment, joins one process group (NCCL on
GPUs, Gloo on CPUs), and:

- ``train`` wraps the model in DistributedDataParallel: each rank takes a strided share of every
  batch, gradients are averaged, and the per-example history is summed across ranks at the end
  of each epoch (each example is seen by exactly one rank); rank 0 writes the run folder.
- ``scan`` gives rank r the rows ``rows[r::world]`` (by position, deterministic); each rank
  appends its finished examples to its own progress file, and rank 0 merges them into the one
  ``suspects.csv`` a single process would write (each example's search depends only on its row
  and seed, so the rows are identical).

Outside torchrun everything here is a no-op for a world of one.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return rank_and_world()[0] == 0


def init_from_environment(device: str = "auto") -> str:
    """Join the torchrun process group if launched by torchrun; return the device to use.

    Under torchrun with GPUs, each process takes the GPU of its ``LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or dist.is_initialized():
        return device
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=60))
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def wrap_for_training(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` in a world of several, else ``model`` itself."""
    if rank_and_world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def sum_across_ranks(*tensors: torch.Tensor) -> None:
    """In-place sum of each tensor over all ranks (any dtype; reduced in float32)."""
    if rank_and_world()[1] == 1:
        return
    for tensor in tensors:
        buffer = tensor.to(torch.float32)
        dist.all_reduce(buffer)
        tensor.copy_(buffer.to(tensor.dtype))
