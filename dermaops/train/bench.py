"""``dermaops bench train``: the real training step against the bare model step.

The ratio says how much the data path (cache, augmentation on the device) costs on top of
forward, backward and the optimiser: 1.0 means the model is the only bottleneck.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch

from dermaops.data.prepare import PrepareSettings, prepare
from dermaops.data.prepared import PreparedSet
from dermaops.data.synth import SynthSettings, synthesize
from dermaops.labels import CLASSES
from dermaops.model.artifact import Preprocessing
from dermaops.model.factory import build_model
from dermaops.model.inference import autocast_dtype, resolve_device, split_tensors
from dermaops.train.settings import TrainSettings
from dermaops.train.step import Stepper, make_inputs


def bench_train(
    prepared: Path | None, s: TrainSettings, steps: int = 10, warmup: int = 2
) -> dict[str, Any]:
    """Images/s of the real training step (cache -> augmentation -> step) against the same
    step on random tensors of the same shape: same model, batch and run.

    Args:
        prepared: a prepared set; None generates and prepares 200 images first (not timed).
        s: model, image size, batch size, device and precision under test.
        steps: timed steps of each kind, after ``warmup`` untimed ones.
    """
    with tempfile.TemporaryDirectory(prefix="dermaops-bench-") as tmp:
        if prepared is None:
            raw, prepared = Path(tmp) / "raw", Path(tmp) / "prepared"
            synthesize(raw, SynthSettings(n=200, seed=0))
            prepare(raw, prepared, PrepareSettings())
        data = PreparedSet.open(prepared)
        device = resolve_device(s.device)
        train = split_tensors(data, "train", s.image_size, device)
    pre = Preprocessing(image_size=s.image_size, cache_size=data.cache_size)
    cached, targets = train.pixels, train.labels
    torch.manual_seed(s.seed)
    model = build_model(s.model, len(CLASSES), "none").to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    step_model = cast(torch.nn.Module, torch.compile(model)) if s.compile else model
    stepper = Stepper(step_model, torch.optim.AdamW(model.parameters(), lr=1e-4), None,
                      autocast_dtype(device, s.precision))  # fmt: skip
    rng = torch.Generator(device=device).manual_seed(s.seed)
    noise = torch.randn(s.batch_size, 3, s.image_size, s.image_size, device=device)
    noise_labels = torch.randint(0, len(CLASSES), (s.batch_size,), generator=rng, device=device)
    if device.type == "cuda":
        noise = noise.contiguous(memory_format=torch.channels_last)

    def real() -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(0, len(targets), (s.batch_size,), generator=rng, device=device)
        return make_inputs(cached[index], pre, rng), targets[index]

    def random_tensors() -> tuple[torch.Tensor, torch.Tensor]:
        return noise, noise_labels

    raw_first = _throughput(stepper, random_tensors, steps, warmup, s.batch_size, device)
    real_rate = _throughput(stepper, real, steps, warmup, s.batch_size, device)
    raw_rate = (
        raw_first + _throughput(stepper, random_tensors, steps, warmup, s.batch_size, device)
    ) / 2
    return {
        "benchmark": "train",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": s.model,
        "image_size": s.image_size,
        "batch_size": s.batch_size,
        "precision": str(autocast_dtype(device, s.precision) or "fp32"),
        "raw_images_per_s": round(raw_rate, 1),
        "train_step_images_per_s": round(real_rate, 1),
        "ratio": round(real_rate / raw_rate, 3),
        "note": "raw: the same step on random tensors of the same shape, timed before and after",
    }


def _throughput(
    stepper: Stepper, batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    steps: int, warmup: int, batch_size: int, device: torch.device,
) -> float:  # fmt: skip
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        stepper(*batch())
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
