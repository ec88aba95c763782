"""Fixtures shared by every test level: a private DERMAOPS_HOME and small generated data."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermaops.data.prepare import PrepareSettings, prepare
from dermaops.data.synth import SynthSettings, synthesize
from dermaops.evaluation.result import EvaluationMetrics
from dermaops.evaluation.run import evaluate
from dermaops.train.baseline import run_baseline
from dermaops.train.loop import train
from dermaops.train.settings import TrainSettings


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; this machine has no GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Every process the suite starts inherits this mark, so that the end of the run can find any
# left running (a server a test forgot, an orphan of one it stopped) by its environment.
RUN_MARK = "DERMAOPS_TEST_RUN"


def pytest_sessionstart(session: pytest.Session) -> None:
    os.environ[RUN_MARK] = f"{os.getpid()}.{time.time_ns()}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a process it started still runs (after a grace period); stop those."""
    left = _still_running(f"{RUN_MARK}={os.environ[RUN_MARK]}".encode(), grace=15)
    if not left:
        return
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"  {pid}: {command}" for pid, command in left.items()]
    message = "processes the tests started were still running at the end (now killed):"
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line("\n".join([message, *lines]), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The free disk at the end, where the tests wrote: a run that filled it says so."""
    places = {Path(tempfile.gettempdir()), Path.cwd()}
    free = ", ".join(f"{place} {shutil.disk_usage(place).free / 2**30:.1f} GiB" for place in places)
    terminalreporter.write_line(f"free disk at the end: {free}")


def _still_running(mark: bytes, grace: float) -> dict[int, str]:
    """Processes whose environment holds ``mark``, other than this one, after ``grace`` s."""
    deadline = time.monotonic() + grace
    while True:
        found: dict[int, str] = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if mark not in (proc / "environ").read_bytes().split(b"\0"):
                    continue
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:  # gone meanwhile, or not ours to read
                continue
            if command:  # a zombie has none: it has exited
                found[int(proc.name)] = command.decode(errors="replace").strip()[:300]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.fixture(autouse=True)
def dermaops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test writes its local state under its own DERMAOPS_HOME."""
    home = tmp_path / "home"
    monkeypatch.setenv("DERMAOPS_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def synth_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated set of 80 images in the Kaggle layout (read-only: copy before changing)."""
    out = tmp_path_factory.mktemp("synth") / "raw"
    synthesize(out, SynthSettings(n=80, seed=7, workers=2))
    return out


@pytest.fixture(scope="session")
def prepared_small(synth_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 80-image generated set, prepared (read-only)."""
    out = tmp_path_factory.mktemp("prepared") / "small"
    prepare(synth_raw, out, PrepareSettings(workers=2, max_share_gap=0.5))
    return out


@dataclass(frozen=True)
class Trained:
    prepared: Path
    run: Path
    evaluation: Path
    baseline: Path

    def metrics(self) -> EvaluationMetrics:
        return EvaluationMetrics.read(self.evaluation)


@pytest.fixture(scope="session")
def trained(prepared_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A small model trained, evaluated and baselined: what the register stage is given."""
    root = tmp_path_factory.mktemp("trained")
    settings = TrainSettings(model="resnet18", weights="none", epochs=1, image_size=32,
                             batch_size=16, export_onnx=False)  # fmt: skip
    train(prepared_small, root / "run", settings)
    evaluate(prepared_small, root / "run" / "model", root / "evaluation")
    run_baseline(prepared_small, root / "baseline", trees=20)
    return Trained(prepared_small, root / "run", root / "evaluation", root / "baseline")


@pytest.fixture(scope="session")
def served_model(prepared_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained model (ONNX included) with what registration adds: calibration, the
    embedding projection and the drift reference (read-only). Not quantized: whether INT8 is
    faster at 32 px is the machine's call, and the tests of the fp32 graph must not depend on
    it (tests/integration/test_int8.py quantizes its own copy)."""
    from dermaops.evaluation.run import evaluate
    from dermaops.model.artifact import assemble
    from dermaops.train.loop import train
    from dermaops.train.settings import TrainSettings

    root = tmp_path_factory.mktemp("served")
    settings = TrainSettings(model="resnet18", weights="none", epochs=1, image_size=32,
                             batch_size=16)  # fmt: skip
    train(prepared_small, root / "run", settings)
    evaluate(prepared_small, root / "run" / "model", root / "evaluation", int8=False)
    assemble(root / "run" / "model", prepared_small, root / "evaluation", root / "model")
    return root / "model"


@pytest.fixture
def jpeg_bytes() -> Callable[..., bytes]:
    """Encode a small RGB test image (a gradient, so resizing and orientation show)."""

    def make(width: int = 64, height: int = 48, fmt: str = "JPEG", **save: object) -> bytes:
        xx, yy = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
        pixels = np.dstack([xx, yy, np.full_like(xx, 90)]).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, fmt, **save)
        return buf.getvalue()

    return make
