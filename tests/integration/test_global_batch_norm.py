"""GlobalBatchNorm across two real processes (gloo): forward, backward and running statistics
equal one BatchNorm2d over the whole batch, for uneven shares and for a channel whose mean is
far larger than its spread (where E[x^2] - E[x]^2 in fp32 loses every digit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from dermaops.train.step import GlobalBatchNorm
from tests.k8s.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHARES = (5, 3)  # rows of the global batch of 8 on each rank


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of 8 with three channels, one of them an offset 2,000 times its spread; and
    the weights of the loss (so each image's gradient differs)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 4, 4, generator=g)
    x[:, 2] = 100.0 + 0.05 * x[:, 2]
    return x, torch.randn(8, 3, 4, 4, generator=g)


def _norm(cls: type[nn.BatchNorm2d]) -> nn.BatchNorm2d:
    torch.manual_seed(1)
    norm = cls(3, momentum=0.5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm


def _rank(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        x, w = _batch()
        start = sum(SHARES[:rank])
        rows = slice(start, start + SHARES[rank])
        mine = x[rows].clone().requires_grad_(True)
        norm = _norm(GlobalBatchNorm)
        y = norm(mine)
        (y * w[rows]).sum().backward()
        assert mine.grad is not None and norm.weight.grad is not None
        torch.save({"y": y.detach(), "grad": mine.grad, "weight_grad": norm.weight.grad,
                    "bias_grad": norm.bias.grad, "running_mean": norm.running_mean,
                    "running_var": norm.running_var}, f"{out}/rank{rank}.pt")  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_two_ranks_normalise_and_backpropagate_as_one_batch(tmp_path: Path) -> None:
    # Two plain processes (multiprocessing's spawn would leave its resource tracker running).
    call = "from tests.integration.test_global_batch_norm import _rank; _rank({}, {!r}, {!r})"
    ranks_run = [subprocess.Popen([sys.executable, "-c", call.format(r, str(tmp_path / "store"),
                                                                     str(tmp_path))],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for r in range(2)]  # fmt: skip
    for run in ranks_run:
        out, _ = run.communicate(timeout=240)
        assert run.returncode == 0, out[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    x, w = _batch()
    whole = x.clone().requires_grad_(True)
    norm = _norm(nn.BatchNorm2d)
    y = norm(whole)
    (y * w).sum().backward()
    assert whole.grad is not None and norm.weight.grad is not None and norm.bias.grad is not None

    # fp32's own resolution of a value near 100 is 8e-6, 2e-4 of that channel's spread
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y.detach(),
                               rtol=1e-3, atol=1e-3)  # fmt: skip
    torch.testing.assert_close(torch.cat([r["grad"] for r in ranks]), whole.grad,
                               rtol=1e-3, atol=1e-4)  # fmt: skip
    # DDP averages the parameters' gradients over ranks; their sum is the whole batch's.
    torch.testing.assert_close(sum(r["weight_grad"] for r in ranks), norm.weight.grad,
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    torch.testing.assert_close(sum(r["bias_grad"] for r in ranks), norm.bias.grad,
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    for r in ranks:  # the same running statistics on every rank, the whole batch's
        torch.testing.assert_close(r["running_mean"], norm.running_mean)
        torch.testing.assert_close(r["running_var"], norm.running_var, rtol=1e-4, atol=1e-6)
