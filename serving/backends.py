"""Where the forward pass runs: ONNX Runtime on CPU (no torch), or torch (fp16) on CUDA.

Both take the stem's cache pixels, uint8 (N, H, W, 3), and answer with logits and embeddings;
``explain`` adds each image's heatmap of its top class and the square the model saw. The ONNX
backend runs the serving graph (:mod:`dermaops.model.export`), which holds the rest of the stem
and the class activation maps, so the CPU predictor's image needs no torch; torch is imported only
when the torch backend is chosen.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from dermaops.cpus import cpu_budget
from dermaops.errors import ConfigError
from dermaops.model.artifact import GRAPH_INPUT, GRAPH_OUTPUTS, INT8, ONNX, ModelArtifact
from dermaops.model.heatmap import class_heatmaps
from dermaops.model.quantize import INT8_UNITS, cpu_description, cpu_session

NVIDIA_DRIVER = ("/proc/driver/nvidia/version", "/dev/nvidiactl")  # present with the driver

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

LOGITS, EMBEDDING, IMAGE, CAMS = GRAPH_OUTPUTS
Outputs = tuple[np.ndarray, np.ndarray]  # logits (N, 7) and embedding (N, D), float32


class ExplainUnavailableError(NotImplementedError):
    """This backend cannot explain this model (its head is not pooled-linear): HTTP 501."""


@dataclass(frozen=True)
class Explained:
    """Per image: logits, the top class's heatmap (S, S) in 0..1, the square seen (S, S, 3)."""

    logits: np.ndarray
    heatmaps: np.ndarray
    images: np.ndarray


class Backend(Protocol):
    name: str
    precision: str  # the arithmetic of the forward pass: int8, fp16 or fp32

    def __call__(self, pixels: np.ndarray) -> Outputs:
        """Logits and embeddings for uint8 cache pixels (N, H, W, 3)."""
        ...

    def explain(self, pixels: np.ndarray) -> Explained:
        """Heatmaps of each image's top class (Grad-CAM, or its equal for pooled-linear heads)."""
        ...


class OnnxBackend:
    """The serving graph on ONNX Runtime's CPU provider; one session, the container's CPUs
    unless told (ONNX Runtime itself would size its pool from the host's cores).

    With ``precision`` int8 it runs the quantized graph registered with the model; explanations
    then come from the fp32 graph (opened at load, so the memory budget counts it) unless the
    registration measured the INT8 graph's heatmaps equal to fp32's
    (:mod:`dermaops.model.quantize`); either way they explain the class the INT8 graph answered.
    """

    def __init__(self, artifact: ModelArtifact, threads: int = 0, precision: str = "fp32"):
        fp32 = artifact.onnx_path
        if fp32 is None:
            raise ConfigError(f"--backend onnx: {artifact.folder} has no {ONNX}")
        self.threads = threads or cpu_budget().threads  # not the host's cores
        self.precision = precision
        self.name = "onnxruntime-int8" if precision == "int8" else "onnxruntime"
        path = artifact.int8_path if precision == "int8" else fp32
        if path is None:
            raise ConfigError(
                f"--precision int8: {artifact.folder} has no {INT8}; "
                f"{_int8_refusal(artifact)}; serve it with --precision fp32 or auto"
            )
        self.session = self._open(path)
        self.outputs = {o.name for o in self.session.get_outputs()}
        self.size = artifact.preprocessing.image_size
        explains_int8 = artifact.precision.get("explain") == "int8"
        self.explainer: Any = (
            self.session if precision == "fp32" or explains_int8 else self._open(fp32)
        )

    def _open(self, path: Path) -> Any:
        session = cpu_session(path, self.threads)
        inputs = [(i.name, i.type) for i in session.get_inputs()]
        if inputs != [(GRAPH_INPUT, "tensor(uint8)")]:
            raise ConfigError(
                f"{path} takes {inputs}, not the serving graph's uint8 {GRAPH_INPUT!r}: it was "
                f"exported before the stem was part of the graph; train or export it again, or "
                f"serve it with --backend torch"
            )
        return session

    def __call__(self, pixels: np.ndarray) -> Outputs:
        logits, embedding = self.session.run([LOGITS, EMBEDDING], {GRAPH_INPUT: pixels})
        return np.asarray(logits, np.float32), np.asarray(embedding, np.float32)

    def explain(self, pixels: np.ndarray) -> Explained:
        if CAMS not in self.outputs:
            raise ExplainUnavailableError(
                "this model's head is not global pooling then one linear layer, so its serving "
                "graph has no class activation maps; explain it with the GPU predictor "
                "(--backend torch or cuda), which runs Grad-CAM"
            )
        logits, images, cams = self.explainer.run([LOGITS, IMAGE, CAMS], {GRAPH_INPUT: pixels})
        if self.explainer is not self.session:  # the heatmap of the class this graph answers
            (logits,) = self.session.run([LOGITS], {GRAPH_INPUT: pixels})
        top = np.asarray(logits).argmax(axis=1).tolist()
        return Explained(np.asarray(logits, np.float32), class_heatmaps(cams, top, self.size),
                         np.asarray(images))  # fmt: skip


class TorchBackend:
    """The torch model; on CUDA in fp16 and channels_last, optionally compiled."""

    def __init__(self, artifact: ModelArtifact, device: torch.device, compile: bool = False):
        import torch

        from dermaops.model.embedding import WithEmbedding

        self.artifact, self.pre, self.device = artifact, artifact.preprocessing, device
        self.half = device.type == "cuda"
        self.precision = "fp16" if self.half else "fp32"
        model = WithEmbedding(artifact.torch_model(), artifact.arch).to(device).eval()
        if self.half:
            model = model.half().to(memory_format=torch.channels_last)
        self.model: Any = torch.compile(model) if compile else model
        self.name = f"torch-{device.type}" + ("-fp16" if self.half else "")
        self._cam_model: torch.nn.Module | None = None
        self._cam_lock = threading.Lock()

    def __call__(self, pixels: np.ndarray) -> Outputs:
        import torch

        from dermaops.model.stem import pixels_to_batch

        with torch.inference_mode():
            x = pixels_to_batch(pixels, self.pre).to(self.device, non_blocking=True)
            if self.half:
                x = x.half().contiguous(memory_format=torch.channels_last)
            logits, embedding = self.model(x)
            return logits.float().cpu().numpy(), embedding.float().cpu().numpy()

    def explain(self, pixels: np.ndarray) -> Explained:
        """Grad-CAM on a float copy of the model on the CPU, one request at a time (it hooks it)."""
        import torch

        from dermaops.model.cam import heatmaps
        from dermaops.model.stem import centre_crop, fit_short_side, pixels_to_batch

        x = pixels_to_batch(pixels, self.pre)
        with self._cam_lock:
            if self._cam_model is None:
                self._cam_model = self.artifact.torch_model()
            with torch.inference_mode():
                logits = self._cam_model(x).numpy()
            maps = heatmaps(self._cam_model, self.artifact.arch, x, logits.argmax(axis=1).tolist())
        size = self.pre.image_size
        images = centre_crop(fit_short_side(torch.from_numpy(pixels), size), size).numpy()
        return Explained(logits, maps, images)


def choose_backend(
    artifact: ModelArtifact,
    choice: str,
    compile: bool = False,
    threads: int = 0,
    precision: str = "auto",
) -> Backend:
    """``auto``: torch on CUDA when there is a GPU, else ONNX Runtime when the model has ONNX
    (``threads`` intra-op threads; 0: the container's CPUs), on the graph ``precision`` picks.

    Raises:
        ConfigError: ``onnx`` asked for a model without model.onnx; ``cuda`` without a GPU;
            ``torch`` or ``cuda`` in an image without torch (the CPU predictor's); ``int8``
            for a model without a kept INT8 graph, or on a torch backend.
    """
    choice = resolve(choice, artifact)
    if choice == "onnx":
        return OnnxBackend(artifact, threads, resolve_precision(precision, artifact))
    if precision == "int8":
        raise ConfigError(
            f"--precision int8 runs the INT8 ONNX graph on the CPU, not --backend {choice} "
            f"(CUDA runs in fp16); use --backend onnx, or --precision auto"
        )
    if not _has_torch():
        raise ConfigError(
            f"--backend {choice}: this installation has no torch (the CPU predictor's image); "
            f"serve a model with {ONNX} here, or use the serving-gpu image"
        )
    if choice == "cuda" and not _cuda_available():
        raise ConfigError("--backend cuda: CUDA is not available here")
    import torch

    return TorchBackend(artifact, torch.device("cuda" if choice == "cuda" else "cpu"), compile)


def resolve(choice: str, artifact: ModelArtifact) -> str:
    """What ``choice`` means here: ``auto`` becomes cuda, onnx or torch.

    Raises:
        ConfigError: not one of auto, onnx, torch, cuda.
    """
    if choice not in ("auto", "onnx", "torch", "cuda"):
        raise ConfigError(f"--backend {choice!r}: choose auto, onnx, torch or cuda")
    if choice != "auto":
        return choice
    return "cuda" if _cuda_available() else ("onnx" if artifact.onnx_path else "torch")


def resolve_precision(choice: str, artifact: ModelArtifact) -> str:
    """What ``choice`` means for ``artifact`` on ONNX Runtime: ``auto`` is int8 where its
    registration kept an INT8 graph, else fp32.

    Raises:
        ConfigError: not one of auto, fp32, int8.
    """
    if choice not in ("auto", "fp32", "int8"):
        raise ConfigError(f"--precision {choice!r}: choose auto, fp32 or int8")
    if choice != "auto":
        return choice
    kept = artifact.int8_path is not None and artifact.precision.get("serve") == "int8"
    if kept and not _has_int8_units(artifact.precision.get("cpu", {}).get("flags", [])):
        log.warning("the INT8 graph was judged on a CPU with %s and this one has none of them "
                    "(uint8 x int8 products may saturate without them): serving fp32",
                    ", ".join(INT8_UNITS))  # fmt: skip
        return "fp32"
    return "int8" if kept else "fp32"


def _has_int8_units(judged_on: list[str]) -> bool:
    """Whether this CPU has the integer dot-product units of the CPU the INT8 graph was judged
    on (VNNI, AMX); True when that CPU had none either (judged as it will run)."""
    needed = [flag for flag in judged_on if flag in INT8_UNITS]
    return not needed or bool(set(cpu_description()["flags"]) & set(INT8_UNITS))


def _int8_refusal(artifact: ModelArtifact) -> str:
    """Why a model has no INT8 graph, as its registration recorded it."""
    reason = artifact.precision.get("reason")
    return f"its registration kept fp32: {reason}" if reason else "it was never quantized"


def _has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def _cuda_available() -> bool:
    """A GPU torch can use; False where torch is not installed, or where no NVIDIA driver is
    loaded (checked first: importing torch only to ask costs a CPU replica about 400 MB)."""
    if not _has_torch() or not any(Path(p).exists() for p in NVIDIA_DRIVER):
        return False
    import torch

    return bool(torch.cuda.is_available())
