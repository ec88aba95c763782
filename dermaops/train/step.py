"""One optimisation step, its inputs, and the data-parallel plumbing around it.

Shared by the training loop and ``dermaops bench train``, so the benchmark times the step that
training runs, not a copy of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812
from torch import nn

from dermaops.labels import CLASSES
from dermaops.model.artifact import Preprocessing
from dermaops.model.stem import normalise
from dermaops.train.augment import augment


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int
    world: int
    device: torch.device

    @classmethod
    def from_env(cls, device: torch.device) -> Distributed:
        """Join the torchrun group if WORLD_SIZE > 1: NCCL on GPUs, gloo on CPUs."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls(0, 1, device)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world, device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch."""
        return index[self.rank :: self.world]

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(value)
        return value

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's BatchNorm statistics, so all evaluate the same model."""
        if self.world > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel over the parameters that train now (call after freezing)."""
        if self.world == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def make_inputs(
    pixels: torch.Tensor, pre: Preprocessing, generator: torch.Generator
) -> torch.Tensor:
    """Augmented, normalised model inputs from a uint8 batch already on the device."""
    x = normalise(augment(pixels, pre.image_size, generator), pre)
    if x.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def batches(
    labels: torch.Tensor, batch_size: int, balanced: bool, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Global batches of indices: a shuffle, or draws with probability 1/class size."""
    n = len(labels)
    if balanced:
        counts = torch.bincount(labels, minlength=len(CLASSES)).float()
        order = torch.multinomial((1.0 / counts)[labels], n, replacement=True, generator=generator)
    else:
        order = torch.randperm(n, generator=generator, device=labels.device)
    yield from torch.split(order[: _usable(n, batch_size)], batch_size)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """How many batches :func:`batches` yields for ``n`` images."""
    return max(1, _usable(n, batch_size) // batch_size)


def _usable(n: int, batch_size: int) -> int:
    """Whole batches only (no 1-image batch for BatchNorm), or one batch of all if fewer."""
    return n - n % batch_size if n >= batch_size else n


@dataclass
class Stepper:
    """Forward, loss, backward and optimiser step, under autocast on CUDA."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    dtype: torch.dtype | None
    class_weights: torch.Tensor | None = None
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step; returns the (detached) loss and logits."""
        with torch.autocast("cuda", dtype=self.dtype) if self.dtype else nullcontext():
            logits = self.model(x)
            loss = F.cross_entropy(
                logits.float(), y, weight=self.class_weights, label_smoothing=self.label_smoothing
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach(), logits.detach()
