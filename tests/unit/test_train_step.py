"""The step's loss divisor: ranks' shares of a global batch average to the batch's mean."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dermaops.train.step import Stepper


@pytest.mark.parametrize("weights", [None, torch.tensor([0.5, 1.0, 2.0, 1.0, 1.0, 3.0, 0.7])])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_uneven_shares_with_the_global_divisor_give_the_global_batchs_gradient(
    weights: torch.Tensor | None, smoothing: float
) -> None:
    """Three ranks with 6, 5 and 5 of a batch of 16, each dividing by the global batch's weight
    over the world: DDP's average of their gradients is the whole batch's mean's gradient (a
    mean of per-rank means would weigh the ranks' images unevenly)."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 4), torch.randint(0, 7, (16,))

    def gradient(rows: torch.Tensor, divisor: torch.Tensor | None) -> torch.Tensor:
        torch.manual_seed(1)
        model = nn.Linear(4, 7)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the step leaves grads as are
        Stepper(model, optimizer, None, None, weights, smoothing)(x[rows], y[rows], divisor)
        assert model.weight.grad is not None
        return model.weight.grad.clone()

    whole = gradient(torch.arange(16), None)
    stepper = Stepper(nn.Linear(4, 7), torch.optim.SGD([nn.Parameter(torch.zeros(1))]), None,
                      None, weights)  # fmt: skip
    divisor = stepper.weight_of(y) / 3
    ranks = [gradient(torch.arange(r, 16, 3), divisor) for r in range(3)]
    assert torch.allclose(sum(ranks) / 3, whole, atol=1e-6)
