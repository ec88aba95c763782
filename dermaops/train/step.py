"""One optimisation step, its inputs, and the data-parallel plumbing around it.

Shared by the training loop and ``dermaops bench train``, so the benchmark times the step that
training runs, not a copy of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812
from torch import nn

from dermaops.labels import CLASSES
from dermaops.model.artifact import Preprocessing
from dermaops.model.stem import normalise
from dermaops.train.augment import Draw, apply, draw


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int
    world: int
    device: torch.device

    @classmethod
    def from_env(cls, device: torch.device, timeout_s: float = 300.0) -> Distributed:
        """Join the torchrun group if WORLD_SIZE > 1: NCCL on GPUs, gloo on CPUs.

        ``timeout_s`` bounds every collective: a rank whose peer died (a preempted node) fails
        with the backend's error within it instead of hanging.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls(0, 1, device)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(
                "nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s)
            )
        return cls(dist.get_rank(), world, device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, n: int) -> torch.Tensor:
        """This rank's rows of a global batch of ``n``: every ``world``-th from its rank."""
        return torch.arange(self.rank, n, self.world, device=self.device)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(value)
        return value

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's BatchNorm statistics, so all evaluate the same model and
        agree on the best epoch and on when a phase ends."""
        if self.world > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel over the parameters that train now (call after freezing).

        BatchNorm layers normalise by the whole global batch (torch's ``SyncBatchNorm`` on GPUs,
        :class:`GlobalBatchNorm` on CPUs), so every rank computes what one process would.
        """
        if self.world == 1:
            return model
        if self.device.type == "cuda":
            # In place below the root (a BatchNorm is never the model itself).
            nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
        else:
            GlobalBatchNorm.convert(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch, on any device.

    Two all-reduces, as a two-pass variance in one process: each rank's per-channel count and
    sum give the global mean, then each rank's sum of squared deviations from it the variance
    (one pass with E[x^2] - E[x]^2 loses every digit of fp32 for a channel whose mean is far
    larger than its spread). Both are differentiable, so the gradient flows through the
    statistics as it does in one process. ``SyncBatchNorm`` does this fused, but only on GPUs.
    Outside training, or alone, it is a plain BatchNorm2d: the state dict and the exported
    graph are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dtype, x = x.dtype, x.float()
        c, shape = x.shape[1], (1, x.shape[1], 1, 1)
        sums: torch.Tensor = _SumOverRanks.apply(
            torch.cat([x.sum((0, 2, 3)), x.new_full((1,), x.numel() / c)])
        )
        count = sums[-1]
        mean = sums[:c] / count
        centred = x - mean.view(shape)
        squares: torch.Tensor = _SumOverRanks.apply((centred * centred).sum((0, 2, 3)))
        var = squares / count  # biased, as BatchNorm normalises
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    self.momentum
                    if self.momentum is not None
                    else 1.0 / float(self.num_batches_tracked)
                )
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * count / (count - 1), m)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(dtype)

    @classmethod
    def convert(cls, model: nn.Module) -> None:
        """Make every BatchNorm2d of ``model`` one (in place: parameters and buffers kept)."""
        for module in model.modules():
            if type(module) is nn.BatchNorm2d:
                module.__class__ = cls


class _SumOverRanks(torch.autograd.Function):
    """A tensor summed over the ranks, differentiably: every rank's loss depends on the sum, so
    the gradient reaching each rank's share is the sum of the ranks' gradients of it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def make_inputs(
    pixels: torch.Tensor, pre: Preprocessing, generator: torch.Generator
) -> torch.Tensor:
    """Augmented, normalised model inputs from a uint8 batch already on the device."""
    n, h, w, _ = pixels.shape
    return draw_inputs(pixels, pre, draw(n, h, w, generator))


def draw_inputs(pixels: torch.Tensor, pre: Preprocessing, drawn: Draw) -> torch.Tensor:
    """Model inputs under transforms drawn already (a rank's rows of a global batch's draw)."""
    x = normalise(apply(pixels, pre.image_size, drawn), pre)
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

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, divisor: torch.Tensor | float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on the sum of the samples' losses divided by ``divisor`` (default: the
        batch's size, or its class weights' sum: the mean). Returns the (detached) sum and logits.

        A data-parallel rank passes the global batch's divisor over the world size: DDP's
        average of the ranks' gradients is then that of the global batch's mean, whatever its
        split across ranks or its class weights.
        """
        with torch.autocast("cuda", dtype=self.dtype) if self.dtype else nullcontext():
            logits = self.model(x)
            total = F.cross_entropy(
                logits.float(), y, weight=self.class_weights,
                label_smoothing=self.label_smoothing, reduction="sum",
            )  # fmt: skip
        if divisor is None:
            divisor = self.weight_of(y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total / divisor).backward()  # type: ignore[no-untyped-call]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return total.detach(), logits.detach()

    def weight_of(self, y: torch.Tensor) -> torch.Tensor:
        """What the mean divides by: the samples' count, or their class weights' sum."""
        if self.class_weights is None:
            return torch.tensor(float(len(y)), device=y.device)
        return self.class_weights[y].sum()
