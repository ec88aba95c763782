"""How the predictor says what it saw: v1's predictions, v2's outputs (REST and gRPC alike) and
explain's Grad-CAM PNGs, from a scored batch.

Encodings only: no model, no threads, no I/O. :class:`~dermaops.serving.model.DermaOpsModel`
decodes, runs the forward pass and scores a batch, then hands its :class:`Answer` here.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from PIL import Image

from dermaops.labels import CLASSES, FULL_NAMES
from dermaops.model.artifact import MEL
from dermaops.model.guard import OodGuard
from dermaops.model.heatmap import overlay
from dermaops.serving.backends import Explained
from dermaops.v1 import (
    ExplainAnswer,
    Explanation,
    MelanomaFlag,
    OodVerdict,
    PredictAnswer,
    Prediction,
    TopClass,
)

UNGUARDED = (
    "not checked: this model was served without an out-of-distribution guard (guard.npz, "
    "fitted by dermaops evaluate); it answers any image, dermoscopy or not"
)

Box = tuple[float, float, float, float]  # left, top, right, bottom as fractions of an image


class Answer(NamedTuple):
    """What the model says of a batch: calibrated probabilities, melanoma flags, embedding
    projections (N, K; K is 0 without a projection), the guard's scores (NaN without a guard)
    and verdicts (None without a guard)."""

    probs: np.ndarray
    flags: np.ndarray
    projections: np.ndarray
    ood_scores: np.ndarray
    in_distribution: list[bool | None]


@dataclass(frozen=True)
class Answers:
    """The answers of one served version: its name and version, the melanoma threshold its
    calibration set, its guard (None: served unguarded) and how many top classes v1 lists."""

    name: str
    version: str
    melanoma_threshold: float
    guard: OodGuard | None
    top_k: int

    def v1(self, answer: Answer) -> dict[str, Any]:
        """v1's ``predictions``: one :class:`Prediction` per image."""
        rows = zip(answer.probs, answer.flags, answer.ood_scores, answer.in_distribution,
                   strict=True)  # fmt: skip
        return PredictAnswer(
            predictions=[self._prediction(*row) for row in rows],
            model_name=self.name,
            model_version=self.version,
        ).model_dump()

    def _prediction(
        self, row: np.ndarray, flag: bool, ood_score: float, in_distribution: bool | None
    ) -> Prediction:
        exact = row.tolist()  # seven numbers: Python's sort, not NumPy's (a tenth of a ms)
        order = sorted(range(len(exact)), key=exact.__getitem__, reverse=True)
        probs = [round(p, 6) for p in exact]
        return Prediction(
            in_distribution=in_distribution,
            ood=self._ood(ood_score),
            unchecked=None if self.guard is not None else UNGUARDED,
            probabilities=dict(zip(CLASSES, probs, strict=True)),
            top_k=[
                TopClass(dx=CLASSES[i], name=FULL_NAMES[CLASSES[i]], probability=probs[i])
                for i in order[: self.top_k]
            ],
            melanoma=MelanomaFlag(
                flag=bool(flag),
                probability=probs[MEL],
                threshold=round(self.melanoma_threshold, 6),
            ),
        )

    def _ood(self, score: float) -> OodVerdict | None:
        """The guard's score, threshold and method (None: the model has no guard)."""
        if self.guard is None:
            return None
        return OodVerdict(
            score=round(float(score), 4),
            threshold=round(self.guard.threshold, 4),
            keep=self.guard.keep,
            method=self.guard.method,
        )

    def output_types(self) -> list[dict[str, Any]]:
        """The v2 model metadata's outputs: what :meth:`v2` answers with."""
        types = [("probabilities", "FP32", [-1, len(CLASSES)]), ("label", "BYTES", [-1]),
                 ("melanoma", "BOOL", [-1])]  # fmt: skip
        if self.guard is not None:
            types += [("in_distribution", "BOOL", [-1]), ("ood_score", "FP32", [-1])]
        return [{"name": n, "datatype": d, "shape": shape} for n, d, shape in types]

    def v2(self, answer: Answer, request: InferRequest) -> InferResponse:
        """v2's outputs, those ``request`` names (all when it names none); over gRPC all raw,
        with numbers as text in the parameters."""
        n = len(answer.probs)
        labels = [CLASSES[int(i)] for i in answer.probs.argmax(axis=1)]
        outputs = [
            InferOutput(
                "probabilities", [n, len(CLASSES)], "FP32", answer.probs.astype(np.float32)
            ),
            InferOutput("label", [n], "BYTES", labels),
            InferOutput("melanoma", [n], "BOOL", answer.flags.tolist()),
        ]
        parameters: dict[str, Any] = {
            "classes": ",".join(CLASSES),
            "melanoma_threshold": self.melanoma_threshold,
        }
        if self.guard is not None:
            outputs += [
                InferOutput("in_distribution", [n], "BOOL", list(answer.in_distribution)),
                InferOutput("ood_score", [n], "FP32", answer.ood_scores.astype(np.float32)),
            ]
            parameters |= {"ood_threshold": self.guard.threshold, "ood_method": self.guard.method}
        outputs = _requested(outputs, request)
        return InferResponse(
            response_id=request.id or "",
            model_name=self.name,
            model_version=self.version,
            infer_outputs=_raw(outputs) if request.from_grpc else outputs,
            parameters=_grpc_parameters(parameters) if request.from_grpc else parameters,
        )

    def explanations(
        self, explained: Explained, probs: np.ndarray, boxes: list[Box]
    ) -> dict[str, Any]:
        """Grad-CAM of each image's top class: heatmap and overlay as base64 PNG, and the
        square the model saw."""
        top = [int(i) for i in probs.argmax(axis=1)]
        return ExplainAnswer(
            explanations=[
                Explanation(
                    dx=CLASSES[c],
                    name=FULL_NAMES[CLASSES[c]],
                    probability=round(float(probs[i, c]), 6),
                    method="gradcam",
                    heatmap_png_b64=_png((explained.heatmaps[i] * 255).astype(np.uint8)),
                    overlay_png_b64=_png(overlay(explained.images[i], explained.heatmaps[i])),
                    seen_box=_rounded(boxes[i]),
                )
                for i, c in enumerate(top)
            ],
            model_name=self.name,
            model_version=self.version,
        ).model_dump()


def _requested(outputs: list[InferOutput], request: InferRequest) -> list[InferOutput]:
    """The outputs a v2 request names, in its order; all of them when it names none."""
    names = [o.name for o in request.request_outputs or []]
    if not names:
        return outputs
    by_name = {o.name: o for o in outputs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise InvalidInput(
            f"unknown output(s) {', '.join(unknown)}; this model has {', '.join(by_name)}"
        )
    return [by_name[n] for n in names]


def _raw(outputs: list[InferOutput]) -> list[InferOutput]:
    """Every output as raw bytes, the way Triton's server answers over gRPC.

    KServe's gRPC encoder puts NumPy outputs in ``raw_output_contents`` and lists in
    ``contents``; clients find raw outputs by position, so a reply that mixes the two is read
    wrongly. All raw is the one form every OIP client reads.
    """
    for output in outputs:
        output.set_data_from_numpy(output.as_numpy(), binary_data=True)
        output.parameters = None  # binary_data_size is REST's; gRPC carries each length itself
    return outputs


def _grpc_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Numbers as text: KServe's gRPC ``InferParameter`` has no double (only bool, int64 and
    string), and a float parameter fails the whole answer."""
    return {k: repr(float(v)) if isinstance(v, float) else v for k, v in parameters.items()}


def _rounded(box: Box) -> Box:
    left, top, right, bottom = (round(f, 6) for f in box)
    return left, top, right, bottom


def _png(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()
