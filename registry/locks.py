"""Who moves aliases, and one at a time: the actor the audit names, and the promotion lock.

The lock is a file lock per registry (beside a sqlite store, else in the temporary folder), so
alias moves started at once on one machine take turns; where ``DERMAOPS_PROMOTION_LEASE`` names a
Kubernetes Lease, that Lease too, so they take turns across the cluster.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dermaops.registry.client import Registry, RegistryError
from dermaops.settings import ACTOR_ENV, PROMOTION_LEASE_ENV

log = logging.getLogger(__name__)


def actor() -> str:
    """Who acts: ``DERMAOPS_ACTOR`` (a pipeline's stage sets it to its KFP run), else the login
    name on this host (in a pod, the pod's name)."""
    return os.environ.get(ACTOR_ENV) or f"{getpass.getuser()}@{socket.gethostname()}"


@contextmanager
def promotion_lock(reg: Registry, timeout: float = 300) -> Iterator[None]:
    """Hold this registry's promotion lock: a file lock (one alias move at a time on this
    machine) and, where ``DERMAOPS_PROMOTION_LEASE`` names one (``NAMESPACE/NAME``; the chart
    sets it for the monitor and the pipelines), a Kubernetes Lease, one at a time in the cluster.

    Raises:
        RegistryError: another promotion held it for ``timeout`` seconds, or the Lease named
            cannot be reached (no alias moves without it).
    """
    with _file_lock(reg, timeout):
        named = os.environ.get(PROMOTION_LEASE_ENV, "")
        if not named:
            yield
            return
        from dermaops.registry.kube import KubernetesError, lease

        namespace, _, name = named.partition("/")
        if not namespace or not name:
            raise RegistryError(f"{PROMOTION_LEASE_ENV}={named!r}: give NAMESPACE/NAME")
        holder = f"{actor()} (pid {os.getpid()} on {socket.gethostname()})"
        try:
            with lease(namespace, name, holder, timeout):
                yield
        except KubernetesError as e:
            raise RegistryError(f"no alias moves without the promotion Lease {named}: {e}") from e


@contextmanager
def _file_lock(reg: Registry, timeout: float) -> Iterator[None]:
    path = _lock_path(reg)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline, waited = time.monotonic() + timeout, False
    with path.open("a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    waited = True
                    log.info("waiting for the promotion lock %s: another promotion of %s "
                             "is moving aliases", path, reg.model_name)  # fmt: skip
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"another promotion of {reg.model_name} has held {path} for over "
                        f"{timeout:.0f} s; try again when it has finished"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _lock_path(reg: Registry) -> Path:
    """Beside a sqlite store; for a server, one file per tracking URI in the temporary folder."""
    if reg.uri.startswith("sqlite:///"):
        return Path(reg.uri.removeprefix("sqlite:///") + ".promotion.lock")
    digest = hashlib.sha256(reg.uri.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"dermaops-promotion-{digest}.lock"
