"""The training loop: phases, class balance, augmentation on the device, exact resume."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from tqdm import tqdm

from dermaops.data.prepared import PreparedSet
from dermaops.errors import DermaOpsError
from dermaops.evaluation.metrics import macro_f1
from dermaops.labels import CLASSES
from dermaops.model.artifact import ONNX, Preprocessing, save_model_dir
from dermaops.model.export import export_onnx
from dermaops.model.factory import build_model, head_parameters, last_block_parameters
from dermaops.model.inference import (
    SplitTensors,
    autocast_dtype,
    predict_probs,
    resolve_device,
    split_tensors,
)
from dermaops.train.augment import draw
from dermaops.train.curves import plot_history
from dermaops.train.layout import CHECKPOINT
from dermaops.train.settings import TrainSettings
from dermaops.train.step import Distributed, Stepper, batches, draw_inputs, steps_per_epoch

log = logging.getLogger(__name__)


class RunFolderError(DermaOpsError):
    """The run folder holds another run, or nothing to resume."""


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    lr: float
    trainable: Callable[[nn.Module], list[nn.Parameter]]


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_val_f1: float
    epochs_run: int
    is_main: bool = True  # False on torchrun ranks other than 0


def plan_phases(s: TrainSettings) -> list[Phase]:
    """Head on a frozen backbone, then the last block unfrozen; one full phase from scratch."""
    if s.weights == "none":
        return [Phase("full", s.epochs, s.lr, lambda m: list(m.parameters()))]
    head_epochs = max(1, round(s.epochs * s.head_fraction))
    phases = [Phase("head", head_epochs, s.lr, lambda m: head_parameters(m, s.model))]
    if s.epochs > head_epochs:
        phases.append(
            Phase("finetune", s.epochs - head_epochs, s.finetune_lr,
                  lambda m: head_parameters(m, s.model) + last_block_parameters(m, s.model))
        )  # fmt: skip
    return phases


def task_checkpoints(root: Path, kfp_run_id: str, task: str = "train") -> Path:
    """Where a pipeline task keeps its checkpoint under durable ``root`` (a volume every retry
    of the task mounts): keyed by the pipeline run and the task, the two a retry keeps.

    Raises:
        RunFolderError: no run id, so retries of different runs would share one checkpoint.
    """
    if not kfp_run_id.strip() or "/" in kfp_run_id or kfp_run_id in {".", ".."}:
        raise RunFolderError(
            f"durable checkpoints need the pipeline run's id to key them, got {kfp_run_id!r}"
        )
    return root / f"{kfp_run_id}-{task}"  # one level: removed whole when the run ends


def train(
    prepared: Path,
    run_dir: Path,
    s: TrainSettings,
    resume: bool = False,
    checkpoints: Path | None = None,
) -> TrainResult:
    """Train on ``prepared`` into ``run_dir`` (checkpoint every epoch, model/ at the end).

    The checkpoint goes to ``checkpoints`` when given (storage that outlives the run folder: a
    retried pipeline task gets a new, empty output folder), and is removed from there when the
    run ends; else it goes into ``run_dir`` and stays. A resumed run may start from an empty
    ``run_dir``; it ends with the weights and history of a run that was never interrupted.

    Under torchrun (WORLD_SIZE > 1) every rank trains on its share of each batch with
    DistributedDataParallel; rank 0 alone writes checkpoints and outputs.

    Raises:
        RunFolderError: ``run_dir`` already holds a run and ``resume`` is False, or ``resume``
            is True and there is no checkpoint, or one of other settings.
    """
    ddp = Distributed.from_env(resolve_device(s.device))
    try:
        return _train(prepared, run_dir, s, resume, checkpoints or run_dir, ddp)
    finally:
        ddp.close()


def _train(
    prepared: Path,
    run_dir: Path,
    s: TrainSettings,
    resume: bool,
    checkpoints: Path,
    ddp: Distributed,
) -> TrainResult:
    state = _start_or_resume(run_dir, checkpoints, s, resume, ddp)
    device = ddp.device
    torch.manual_seed(s.seed)
    data = PreparedSet.open(prepared)
    pre = Preprocessing(image_size=s.image_size, cache_size=data.cache_size)
    train_set, val_set = (
        split_tensors(data, name, s.image_size, device) for name in ("train", "val")
    )
    model = build_model(s.model, len(CLASSES), s.weights).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its kernels
    if state:
        model.load_state_dict(state["model"])
    else:
        state = _fresh_state(s)
    weights = _class_weights(train_set.labels) if s.balance == "loss" else None
    phases = plan_phases(s)
    stepper: Stepper | None = None
    while state["phase"] < len(phases):
        phase = phases[state["phase"]]
        if stepper is None:
            stepper = _stepper(
                model,
                phase,
                s,
                state,
                weights,
                ddp,
                steps_per_epoch(len(train_set.labels), s.batch_size),
            )
        epoch = state["epoch"]
        torch.manual_seed(s.seed * 100_003 + epoch)  # dropout etc.: a pure function of the epoch
        started = time.perf_counter()
        desc = f"epoch {epoch + 1}/{s.epochs} [{phase.name}]"
        train_loss, train_acc = _train_epoch(stepper, train_set, s, pre, epoch, desc, ddp)
        ddp.sync_buffers(model)
        val = evaluate_split(model, val_set, pre, s.batch_size * 2)
        record = {"epoch": epoch + 1, "phase": phase.name, "lr": phase.lr, "train_loss": train_loss,
                  "train_accuracy": train_acc, **{f"val_{k}": v for k, v in val.items()},
                  "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip
        state["history"].append(record)
        log.info("%s: loss %.4f, val macro-F1 %.4f", desc, train_loss, val["f1_macro"])
        _update_best(state, model, val["f1_macro"], epoch + 1)
        state["epoch"] += 1
        state["phase_epoch"] += 1
        state["model"] = model.state_dict()
        state["optimizer"] = stepper.optimizer.state_dict()
        state["scheduler"] = stepper.scheduler.state_dict() if stepper.scheduler else None
        if state["phase_epoch"] >= phase.epochs or state["bad_epochs"] >= s.patience:
            if state["bad_epochs"] >= s.patience:
                log.info("no better val macro-F1 for %d epochs: %s ends", s.patience, phase.name)
            state.update(phase=state["phase"] + 1, phase_epoch=0, bad_epochs=0, optimizer=None)
            stepper = None
        if ddp.is_main:
            _save_checkpoint(checkpoints, state)
        ddp.barrier()
    if ddp.is_main:
        _write_outputs(run_dir, s, pre, data, state)
        if checkpoints != run_dir:  # storage shared by every run: free this run's share
            _remove_checkpoint(checkpoints)
    return TrainResult(run_dir, state["best_epoch"], state["best_f1"], state["epoch"], ddp.is_main)


@torch.no_grad()
def evaluate_split(
    model: nn.Module, split: SplitTensors, pre: Preprocessing, batch: int
) -> dict[str, float]:
    """Loss, accuracy and macro-F1 of ``model`` on a split (centre crop, no augmentation)."""
    probs = predict_probs(model, split.pixels, pre, batch)
    labels = split.labels.cpu().numpy()
    log_probs = torch.log(torch.from_numpy(probs).clamp_min(1e-12))
    predicted = probs.argmax(axis=1)
    return {
        "loss": float(F.nll_loss(log_probs, split.labels.cpu())),
        "accuracy": float((predicted == labels).mean()),
        "f1_macro": macro_f1(labels, predicted),
    }


def _stepper(
    model: nn.Module, phase: Phase, s: TrainSettings, state: dict[str, Any],
    weights: torch.Tensor | None, ddp: Distributed, steps: int,
) -> Stepper:  # fmt: skip
    """Freeze for the phase, restore optimiser state when resuming, wrap for DDP and compile."""
    optimizer, scheduler = _configure(model, phase, s, steps)
    if state.get("optimizer"):
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    wrapped = ddp.wrap(model)
    compiled = cast(nn.Module, torch.compile(wrapped)) if s.compile else wrapped
    dtype = autocast_dtype(ddp.device, s.precision)
    return Stepper(compiled, optimizer, scheduler, dtype, weights, s.label_smoothing)


def _train_epoch(
    stepper: Stepper, data: SplitTensors, s: TrainSettings, pre: Preprocessing, epoch: int,
    desc: str, ddp: Distributed,
) -> tuple[float, float]:  # fmt: skip
    """One pass; every rank draws the same global batches and trains on its share."""
    stepper.model.train()
    device = data.pixels.device
    seed = s.seed * 100_003 + epoch
    order = torch.Generator(device=device).manual_seed(seed)
    augment_rng = torch.Generator(device=device).manual_seed(seed * 131)
    totals = torch.zeros(4, device=device)  # loss sum, its divisor, correct, seen: on the device
    global_batches = list(batches(data.labels, s.batch_size, s.balance == "sampler", order))
    h, w = data.pixels.shape[1:3]
    bar = tqdm(global_batches, desc=desc, unit="batch", leave=False, disable=not ddp.is_main)
    for step, index in enumerate(bar):
        # Every rank draws the whole batch's transforms and takes its rows: image i of a batch
        # is augmented alike at any world size, and DDP's mean is the global batch's mean.
        drawn = draw(len(index), h, w, augment_rng)
        rows = ddp.rows(len(index))
        local = index[rows]
        y = data.labels[local]
        divisor = stepper.weight_of(data.labels[index]) / ddp.world
        x = draw_inputs(data.pixels[local], pre, drawn.rows(rows))
        loss_sum, logits = stepper(x, y, divisor)
        totals[0] += loss_sum
        totals[1] += stepper.weight_of(y)
        totals[2] += (logits.argmax(dim=1) == y).sum()
        totals[3] += len(y)
        if step % 10 == 9 or step == len(global_batches) - 1:  # a host sync only now and then
            loss_sum, weight, correct, seen = totals.tolist()
            bar.set_postfix(loss=f"{loss_sum / weight:.4f}", acc=f"{correct / seen:.3f}")
    loss_sum, weight, correct, seen = ddp.sum(totals).tolist()
    return loss_sum / weight, correct / seen


def _class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over the classes present."""
    counts = torch.bincount(labels, minlength=len(CLASSES)).float()
    weights = torch.where(counts > 0, counts.sum() / (len(CLASSES) * counts.clamp_min(1)), 0.0)
    return weights / weights[counts > 0].mean()


def _configure(
    model: nn.Module, phase: Phase, s: TrainSettings, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Freeze all but the phase's parameters; AdamW with a one-cycle schedule over the phase."""
    trainable = phase.trainable(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=phase.lr, weight_decay=s.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=phase.lr, total_steps=phase.epochs * steps, pct_start=0.2
    )
    return optimizer, scheduler


def _fresh_state(s: TrainSettings) -> dict[str, Any]:
    return {"settings": s.model_dump(), "epoch": 0, "phase": 0, "phase_epoch": 0, "bad_epochs": 0,
            "best_f1": -1.0, "best_epoch": 0, "best_state": None, "history": [],
            "optimizer": None, "scheduler": None}  # fmt: skip


def _update_best(state: dict[str, Any], model: nn.Module, f1: float, epoch: int) -> None:
    if f1 > state["best_f1"]:
        state.update(best_f1=f1, best_epoch=epoch, bad_epochs=0)
        state["best_state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        state["bad_epochs"] += 1


def _start_or_resume(
    run_dir: Path, checkpoints: Path, s: TrainSettings, resume: bool, ddp: Distributed
) -> dict[str, Any] | None:
    path = checkpoints / CHECKPOINT
    if resume:
        if not path.exists():
            raise RunFolderError(f"nothing to resume: {path} does not exist")
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
        if state["settings"] != s.model_dump():
            raise RunFolderError(f"{path} was started with other settings: {state['settings']}")
        log.info("resuming %s from %s after epoch %d", run_dir, path, state["epoch"])
        if ddp.is_main:
            _write_settings(run_dir, s)  # a new pod's output folder starts empty
        return state
    occupied = any(folder.exists() and any(folder.iterdir()) for folder in {run_dir, checkpoints})
    ddp.barrier()  # every rank looks before rank 0 writes, so all agree
    if occupied:
        raise RunFolderError(
            f"{run_dir} (or its checkpoint folder {checkpoints}) already holds a run; "
            "pass --resume or choose another --out"
        )
    if ddp.is_main:
        _write_settings(run_dir, s)
    return None


def _write_settings(run_dir: Path, s: TrainSettings) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "settings.json").write_text(s.model_dump_json(indent=2) + "\n")


def _remove_checkpoint(folder: Path) -> None:
    """A finished run's checkpoint, and its folder once empty (nothing retries a success)."""
    (folder / CHECKPOINT).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def _save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{CHECKPOINT}.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / CHECKPOINT)  # a kill mid-write leaves the previous checkpoint


def _write_outputs(
    run_dir: Path,
    s: TrainSettings,
    pre: Preprocessing,
    data: PreparedSet,
    state: dict[str, Any],
) -> None:
    """The best epoch's model (in plain layers, whatever data parallelism made of its
    BatchNorm), its ONNX graph, the history and the curves."""
    model = build_model(s.model, len(CLASSES), "none")
    model.load_state_dict(state["best_state"])
    extra = {
        "best_epoch": state["best_epoch"],
        "val_f1_macro": state["best_f1"],
        "data": {"generated": data.generated, "fingerprint": data.manifest.get("fingerprint")},
        "train_settings": s.model_dump(),
    }
    model_dir = run_dir / "model"
    model_dir.mkdir(exist_ok=True)
    if s.export_onnx:
        gap = export_onnx(model, s.model, pre, model_dir / ONNX)
        extra["onnx"] = {"file": ONNX, "parity_max_abs_diff": gap}
    save_model_dir(model_dir, model, s.model, pre, extra)
    (run_dir / "history.json").write_text(json.dumps(state["history"], indent=2) + "\n")
    plot_history(state["history"], run_dir / "curves.png", generated=data.generated)
