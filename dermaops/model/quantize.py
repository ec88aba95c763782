"""The INT8 serving graph: ``model.onnx`` quantized statically, kept only where it keeps quality.

Static quantization (ONNX Runtime's ``quantize_static``) calibrates each activation's range on
training-split images, stores weights as int8 per output channel, and lets the CPU run the
convolutions on its integer units (AVX-512 VNNI, AVX-VNNI, AMX). Which format and data types are
fastest depends on the CPU: on a VNNI EPYC uint8 activations with int8 weights (U8S8) ran
ResNet-50 at about a third of fp32, while the documented default (S8S8) was slower than fp32.
So each candidate :data:`RECIPES` is timed on the machine that quantizes (its CPU flags are
recorded beside the choice), and the fastest is then judged on the test split against the fp32
graph (:func:`judge`): it is kept only if macro-F1 and melanoma sensitivity at the operating point
each drop by at most :class:`Tolerance` points and calibration (ECE) holds. Its class activation
maps are compared with the fp32 graph's; where they differ, explanations are served from the
fp32 graph. The decision, kept or not and why, is ``precision.json`` (:class:`PrecisionDecision`).

The stem (resize, crop, normalise) stays in float: only the model's convolutions, matrix
products and what fuses with them are quantized, so the square a clinician is shown is the same.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dermaops.errors import DermaOpsError
from dermaops.model.artifact import GRAPH_INPUT, GRAPH_OUTPUTS, PRECISION
from dermaops.model.heatmap import class_heatmaps

log = logging.getLogger(__name__)

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "asimddp")
INT8_UNITS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")  # integer dot products
LOGITS, _, _, CAMS = GRAPH_OUTPUTS


class QuantizationError(DermaOpsError):
    """The serving graph could not be quantized or judged."""


@dataclass(frozen=True)
class Recipe:
    """A quantization format and its data types, as ONNX Runtime names them."""

    format: Literal["QDQ", "QOperator"]
    activations: Literal["uint8", "int8"]
    weights: Literal["int8"] = "int8"

    @property
    def name(self) -> str:
        short = {"uint8": "U8", "int8": "S8"}
        return f"{self.format} {short[self.activations]}{short[self.weights]}"


RECIPES = (Recipe("QDQ", "uint8"), Recipe("QOperator", "uint8"), Recipe("QDQ", "int8"))


@dataclass(frozen=True)
class Tolerance:
    """How much worse the INT8 graph may be than fp32 on the test split, in points (1 = 1 %)."""

    f1_macro: float = 1.0
    melanoma_sensitivity: float = 1.0
    ece: float = 1.0
    cam_correlation: float = 0.9  # mean Pearson r of the top class's heatmap, else explain in fp32


@dataclass(frozen=True)
class PrecisionDecision:
    """Which graph serves, and the evidence (``precision.json``)."""

    serve: Literal["int8", "fp32"]
    reason: str
    recipe: str = ""
    cpu: dict[str, Any] = field(default_factory=dict)  # model name and the INT8-relevant flags
    timings_ms: dict[str, float] = field(default_factory=dict)  # p50 per recipe and fp32
    fp32: dict[str, float] = field(default_factory=dict)  # test f1_macro, sensitivity, ece
    int8: dict[str, float] = field(default_factory=dict)
    deltas_points: dict[str, float] = field(default_factory=dict)  # int8 - fp32, x 100
    cam_correlation: float | None = None
    explain: Literal["int8", "fp32"] = "fp32"  # the graph that serves :explain

    def write(self, folder: Path) -> Path:
        path = folder / PRECISION
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, path: Path) -> PrecisionDecision:
        """Raises: QuantizationError: not a precision decision."""
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise QuantizationError(f"{path} is not a precision decision: {e}") from e


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU's model name and which of :data:`CPU_FLAGS` it has (empty off Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return {"model": "unknown", "flags": []}
    model, flags = "unknown", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() in ("flags", "Features") and not flags:
            flags = set(value.split())
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags]}


def quantize_graph(fp32: Path, out: Path, calibration: np.ndarray, recipe: Recipe) -> None:
    """Write ``fp32`` statically quantized by ``recipe`` to ``out``, per-channel weights,
    activation ranges calibrated on ``calibration`` (uint8 cache pixels, N, H, W, 3).

    Raises:
        QuantizationError: ONNX Runtime could not quantize the graph.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Images(CalibrationDataReader):  # type: ignore[misc]  # untyped base
        def __init__(self) -> None:
            self.images: Iterator[np.ndarray] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self.images, None)
            return None if image is None else {GRAPH_INPUT: image[None]}

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            prepared = Path(tmp) / "prepared.onnx"  # shapes inferred, as ORT advises
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared), str(out), Images(),
                quant_format=getattr(QuantFormat, recipe.format), per_channel=True,
                activation_type=types[recipe.activations], weight_type=types[recipe.weights],
                op_types_to_quantize=["Conv", "MatMul", "Gemm", "Relu", "Add", "MaxPool"],
            )  # fmt: skip
    except Exception as e:  # ORT's quantizer raises many types; all mean the same here
        out.unlink(missing_ok=True)
        raise QuantizationError(f"quantizing {fp32.name} as {recipe.name} failed: {e}") from e


def cpu_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session as the predictor opens one, so that what is timed here is
    what serves: ``threads`` intra-op threads, every graph optimisation, and idle threads that
    sleep instead of spinning (the event loop and decoding need the cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def p50_ms(path: Path, image: np.ndarray, threads: int, runs: int = 12) -> float:
    """Median milliseconds of one forward pass of one image (batch 1, as served), after warm-up."""
    graph = cpu_session(path, threads)
    feed = {GRAPH_INPUT: image[None]}
    for _ in range(3):
        graph.run([LOGITS], feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        graph.run([LOGITS], feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def fastest(
    fp32: Path,
    out: Path,
    calibration: np.ndarray,
    threads: int,
    recipes: Sequence[Recipe] = RECIPES,
) -> tuple[Recipe, dict[str, float]]:
    """Quantize ``fp32`` by each of ``recipes``, time each here, keep the fastest at ``out``.

    Returns:
        The recipe and every p50 in ms (``fp32`` and each recipe that quantized).

    Raises:
        QuantizationError: no recipe quantized the graph.
    """
    probe = calibration[0]
    timings = {"fp32": p50_ms(fp32, probe, threads)}
    best: Recipe | None = None
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:  # same file system as ``out``
        for recipe in recipes:
            candidate = Path(tmp) / f"{recipe.format}-{recipe.activations}.onnx"
            try:
                quantize_graph(fp32, candidate, calibration, recipe)
                timings[recipe.name] = p50_ms(candidate, probe, threads)
            except QuantizationError as e:
                log.warning("%s", e)
                continue
            except Exception as e:  # quantized, but ONNX Runtime cannot load or run it
                log.warning("%s quantized %s, which ONNX Runtime cannot run: %s", recipe.name,
                            fp32.name, e)  # fmt: skip
                continue
            if best is None or timings[recipe.name] < timings[best.name]:
                best = recipe
                candidate.replace(out)
    if best is None:
        raise QuantizationError(f"no recipe of {[r.name for r in recipes]} quantized {fp32}")
    log.info("INT8 recipes (p50 ms at batch 1, %d threads): %s; fastest %s", threads,
             ", ".join(f"{k} {v:.2f}" for k, v in timings.items()), best.name)  # fmt: skip
    return best, timings


@dataclass(frozen=True)
class GraphOutputs:
    """A graph's logits and (where it has them) class activation maps on a set of images."""

    logits: np.ndarray
    cams: np.ndarray | None


def run_graph(path: Path, pixels: np.ndarray, threads: int, batch: int = 32) -> GraphOutputs:
    """``path``'s logits (and cams) for uint8 cache pixels, ``batch`` images at a time."""
    graph = cpu_session(path, threads)
    names = [o.name for o in graph.get_outputs()]
    wanted = [LOGITS, CAMS] if CAMS in names else [LOGITS]
    logits, cams = [], []
    for start in range(0, len(pixels), batch):
        outputs = graph.run(wanted, {GRAPH_INPUT: pixels[start : start + batch]})
        logits.append(np.asarray(outputs[0], np.float32))
        if len(outputs) > 1:
            cams.append(np.asarray(outputs[1], np.float32))
    return GraphOutputs(np.concatenate(logits), np.concatenate(cams) if cams else None)


@dataclass(frozen=True)
class Scores:
    """What the gate compares: macro-F1, melanoma sensitivity at the threshold, ECE (0..1)."""

    f1_macro: float
    melanoma_sensitivity: float
    ece: float


def cam_correlation(fp32: np.ndarray, int8: np.ndarray, classes: list[int], size: int) -> float:
    """Mean Pearson r between the two graphs' heatmaps of the same (fp32's top) class."""
    a = class_heatmaps(fp32, classes, size).reshape(len(classes), -1)
    b = class_heatmaps(int8, classes, size).reshape(len(classes), -1)
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    flat = norms == 0  # a flat map equals a flat map, and nothing else
    r = np.where(flat, np.all(a == b, axis=1).astype(np.float64),
                 (a * b).sum(axis=1) / np.where(flat, 1, norms))  # fmt: skip
    return float(r.mean())


def judge(
    fp32: Scores,
    int8: Scores,
    tolerance: Tolerance,
    correlation: float | None,
) -> tuple[bool, str, dict[str, float]]:
    """Whether the INT8 graph keeps the model's quality, why, and the deltas in points."""
    deltas = {
        "f1_macro": round(100 * (int8.f1_macro - fp32.f1_macro), 2),
        "melanoma_sensitivity": round(
            100 * (int8.melanoma_sensitivity - fp32.melanoma_sensitivity), 2
        ),
        "ece": round(100 * (int8.ece - fp32.ece), 2),
    }
    failures = []
    if -deltas["f1_macro"] > tolerance.f1_macro:
        failures.append(f"macro-F1 fell {-deltas['f1_macro']:.2f} points (> {tolerance.f1_macro})")
    if -deltas["melanoma_sensitivity"] > tolerance.melanoma_sensitivity:
        failures.append(
            f"melanoma sensitivity fell {-deltas['melanoma_sensitivity']:.2f} points "
            f"(> {tolerance.melanoma_sensitivity})"
        )
    if deltas["ece"] > tolerance.ece:
        failures.append(f"ECE rose {deltas['ece']:.2f} points (> {tolerance.ece})")
    if failures:
        return False, "; ".join(failures), deltas
    cams = "" if correlation is None else f"; heatmaps r = {correlation:.3f}"
    return True, f"within {tolerance.f1_macro:g}/{tolerance.melanoma_sensitivity:g}/" \
                 f"{tolerance.ece:g} points of fp32{cams}", deltas  # fmt: skip
