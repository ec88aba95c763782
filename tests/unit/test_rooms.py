"""The core's rooms: short public faces that load a submodule only when one of its names is read."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dermaops._lazy import faces

ROOMS = [
    "dermaops.data",
    "dermaops.model",
    "dermaops.train",
    "dermaops.evaluation",
    "dermaops.rollout",
]
HEAVY = ["torch", "torchvision", "kfp", "kserve", "mlflow", "evidently", "sklearn"]


@pytest.mark.parametrize("room", ROOMS)
def test_every_public_name_is_the_object_its_module_defines(room: str) -> None:
    package = importlib.import_module(room)
    assert package.__all__, room
    for name in package.__all__:
        value = getattr(package, name)
        where = faces(Path(package.__file__).read_text(), room)[name]
        assert value is getattr(importlib.import_module(where), name)
        assert name in dir(package)
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        getattr(package, "nothing_here")  # noqa: B009


def loaded_after(code: str) -> list[str]:
    """The heavy libraries a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    modules = set(json.loads(out.stdout.splitlines()[-1]))
    return [name for name in HEAVY if name in modules]


def test_the_faces_and_the_command_line_load_no_framework() -> None:
    code = "\n".join(f"import {room}" for room in [*ROOMS, "dermaops.cli"])
    assert loaded_after(code) == []


def test_reading_a_model_folder_needs_no_torch() -> None:
    """The predictor's CPU image has no torch: the model type and the resolver must not pull it."""
    code = "from dermaops.model import ModelArtifact, Preprocessing, resolve_model"
    assert loaded_after(code) == []


def test_a_name_is_loaded_with_its_module_only() -> None:
    assert "torch" in loaded_after("from dermaops.model import build_model")


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("from dermaops.room.a import x as x\nfrom dermaops.room.b import x as x", "offered twice"),
        ("from dermaops.room.evaluate import evaluate as evaluate", "face and a submodule"),
        ("from .a import x as x", "only absolute"),
        ("import dermaops.room.a", "only absolute"),
        ("from dermaops.other import x as x", "not inside the package"),
    ],
)
def test_a_face_that_would_misbehave_is_refused(block: str, message: str) -> None:
    body = "\n".join(f"    {line}" for line in block.splitlines())
    with pytest.raises(ValueError, match=message):
        faces(f"if TYPE_CHECKING:\n{body}\n", "dermaops.room")


def test_a_room_without_faces_is_refused() -> None:
    with pytest.raises(ValueError, match="no 'if TYPE_CHECKING:' imports"):
        faces("import os\n", "dermaops.room")
