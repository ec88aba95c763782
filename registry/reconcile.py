"""The served version follows the champion: one level-triggered reconciler.

Whatever moved the ``champion`` alias (a pipeline's promote stage, ``registry promote``,
``registry rollback``) and whatever became of the deploy after it (a failed patch, a killed
stage), :func:`reconcile` reads the champion and what is served, and deploys the champion where
they differ. It holds the promotion lock while it does, so no alias moves between its read and
its deploy; it is safe to call at any time, any number of times. The monitor runs it in a loop
on a cluster (``monitor serve --reconcile-every``); the pipeline's deploy stage, the ``registry``
commands and the demo call it once.

What is served is read where the predictor reads it: locally the pointer
``$DERMAOPS_HOME/serving/current.json``; on a cluster the ``dermaops.io/model-version`` label the
deploy patch sets on the chart's InferenceService (or its plain Deployment).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from dermaops.deploy import VERSION_LABEL, Promotion, pointer_get, read_pointer, write_pointer
from dermaops.errors import ConfigError, DermaOpsError
from dermaops.registry.client import Registry, alias_version
from dermaops.registry.locks import promotion_lock
from dermaops.registry.model import CHAMPION, storage_uri
from dermaops.registry.promotion import audit, repair
from dermaops.settings import Home

log = logging.getLogger(__name__)


class ReconcileError(DermaOpsError):
    """The champion could not be served; ``champion`` and ``served`` as last read (None:
    none, or not read)."""

    def __init__(self, message: str, champion: str | None = None, served: str | None = None):
        super().__init__(message)
        self.champion, self.served = champion, served


class Serving(Protocol):
    """Where the champion is served: what it serves now, and how to serve another version."""

    @property
    def where(self) -> str:
        """Where that is, in words."""
        ...

    def version(self) -> str | None:
        """The version served now; None when nothing is."""
        ...

    def deploy(self, reg: Registry, version: str) -> str:
        """Serve ``version``; what was done, in words."""
        ...


@dataclass(frozen=True)
class LocalServing:
    """The pointer ``dermaops serve`` and the local monitor read."""

    home: Home
    where: str = "the local predictor"

    def version(self) -> str | None:
        try:
            return read_pointer(self.home.serving, "")[1]
        except ConfigError:  # nothing deployed yet, or a pointer past reading: deploy anew
            return None

    def deploy(self, reg: Registry, version: str) -> str:
        uri = reg.client.get_model_version_download_uri(reg.model_name, version)
        try:
            pointer = write_pointer(self.home.serving, uri, reg.model_name, version)
        except OSError as e:
            raise ReconcileError(f"could not write {self.home.serving}: {e}") from e
        return f"pointed {pointer} at version {version}"


@dataclass(frozen=True)
class ClusterServing:
    """The chart's release: its InferenceService, or its plain Deployment."""

    release: str
    namespace: str
    canary_percent: int | None = None
    where: str = "the cluster"

    def version(self) -> str | None:
        from dermaops.components.kube import KubernetesError, connect, read_release

        if not connect():
            raise ReconcileError("no in-cluster config and no kubeconfig: cannot read the release")
        try:
            objects = read_release(self.release, self.namespace)
        except KubernetesError as e:
            raise ReconcileError(str(e)) from e
        predictor = objects["InferenceService"] or objects["predictor"]
        if predictor is None:
            raise ReconcileError(
                f"release {self.release} in {self.namespace} has no predictor: helm install it"
            )
        label = pointer_get(predictor, f"/metadata/labels/{VERSION_LABEL.replace('/', '~1')}")
        return str(label) if label else None

    def deploy(self, reg: Registry, version: str) -> str:
        from dermaops.components.kube import KubernetesError
        from dermaops.components.kube import deploy as patch_release

        promotion = Promotion(version, storage_uri(reg, version), self.canary_percent)
        try:
            sent = patch_release(promotion, self.release, self.namespace)
        except KubernetesError as e:
            raise ReconcileError(str(e)) from e
        return "; ".join(f"patched {p.kind} {p.namespace}/{p.name}" for p in sent)


@dataclass(frozen=True)
class Reconciled:
    """One pass: the champion, what was served before and after, and what was done."""

    champion: str | None
    was: str | None
    served: str | None
    action: str

    @property
    def converged(self) -> bool:
        """The champion is served (or there is no champion yet)."""
        return self.champion is None or self.served == self.champion


def reconcile(reg: Registry, serving: Serving) -> Reconciled:
    """Serve the champion where it is not served; nothing where it is.

    Raises:
        ReconcileError: the deploy failed, or what is served after it is still not the champion.
        RegistryError: the registry could not be read.
    """
    with promotion_lock(reg):
        repair(reg)  # a transition cut short is finished before the champion is read
        champion = alias_version(reg, CHAMPION)
        served = serving.version()
        if champion is None:
            return Reconciled(None, served, served, f"{reg.model_name} has no champion yet")
        if served == champion:
            return Reconciled(champion, served, served, f"version {champion} is served")
        try:
            done = serving.deploy(reg, champion)
        except (ConfigError, ReconcileError) as e:
            raise ReconcileError(
                f"champion version {champion} is not served on {serving.where} (it serves "
                f"{_named(served)}): {e}", champion, served,
            ) from e  # fmt: skip
        now = serving.version()
        if now != champion:
            raise ReconcileError(
                f"deployed champion version {champion} on {serving.where}, which still "
                f"serves {_named(now)}", champion, now,
            )  # fmt: skip
        audit(reg, champion, f"served on {serving.where} (was {_named(served)}): {done}")
    log.info("champion version %s served on %s (was %s)", champion, serving.where, served)
    return Reconciled(champion, served, champion, done)


def _named(version: str | None) -> str:
    return f"version {version}" if version else "nothing"
