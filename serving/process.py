"""A predictor as its own process on a loopback port: for the benchmarks and the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from dermaops.errors import DermaOpsError
from dermaops.net import free_port, stop, wait_until_ready


class PredictorProcess:
    """``python -m dermaops.serving`` for ``model`` on one port (and one for gRPC when asked),
    which it keeps across restarts, as a pod keeps its address when the kubelet restarts its
    container."""

    def __init__(
        self,
        model: Path,
        home: Path,
        log: Path,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        grpc: bool = False,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        grpc_port = free_port() if grpc else 0
        self.grpc_target = f"127.0.0.1:{grpc_port}" if grpc else ""  # host:port, as gRPC names it
        self.log = log
        grpc_args = ["--enable_grpc", "true", "--grpc_port", str(grpc_port)]
        self.command = [sys.executable, "-m", "dermaops.serving", "--model_dir", str(model),
                        "--http_port", str(self.port),
                        *(grpc_args if grpc else ["--enable_grpc", "false"]), *args]  # fmt: skip
        self.env = os.environ | {"DERMAOPS_HOME": str(home)} | (env or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise DermaOpsError("the predictor is not running")
        return self.process.pid

    def start(self, wait: float = 180) -> str:
        """Start it (its output appended to the log) and wait until it is ready; its URL.

        Raises:
            DermaOpsError: it exited or was not ready within ``wait`` seconds (with the log's tail).
        """
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_until_ready(f"{self.url}/v2/health/ready", wait, self.process, self.log)
        except DermaOpsError:
            self.stop()
            raise
        return self.url

    def kill(self) -> None:
        """SIGKILL, as the kernel's OOM killer or a lost node would: no shutdown at all."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def __enter__(self) -> PredictorProcess:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextmanager
def predictor_process(
    model: Path,
    home: Path,
    log: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    wait: float = 180,
) -> Iterator[str]:
    """A started :class:`PredictorProcess`'s URL; stopped after."""
    log.write_bytes(b"")
    predictor = PredictorProcess(model, home, log, args, env)
    predictor.start(wait)
    try:
        yield predictor.url
    finally:
        predictor.stop()
