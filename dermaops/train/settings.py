"""Settings of ``dermaops train``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dermaops.model.factory import ARCHS


class TrainSettings(BaseModel):
    """Everything that decides a training run; saved in the run folder and its checkpoints."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model: str = Field("resnet50", description=f"one of {', '.join(ARCHS)}")
    weights: str = Field("imagenet", description="imagenet, none, or a state-dict path")
    epochs: int = Field(15, ge=1, description="epochs over both phases")
    head_fraction: float = Field(
        0.3, gt=0, lt=1, description="share of epochs that train the head on a frozen backbone"
    )
    image_size: int = Field(224, ge=32, le=1024)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(
        1e-3, gt=0, description="peak rate of the head (and of all layers from scratch)"
    )
    finetune_lr: float = Field(1e-4, gt=0, description="peak rate when the last block is unfrozen")
    weight_decay: float = Field(1e-4, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    balance: Literal["loss", "sampler", "none"] = Field(
        "sampler", description="a class-balanced sampler, or inverse-frequency weights in the loss"
    )
    patience: int = Field(5, ge=1, description="epochs without a better val macro-F1 end a phase")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="autocast dtype on CUDA (auto: bf16 where supported); CPU uses fp32"
    )
    compile: bool = Field(False, description="torch.compile the model (CUDA)")
    export_onnx: bool = Field(True, description="write model/model.onnx and check its parity")
