"""Make the served version equal to X: the one deploy path.

Where versions are served is chosen once, by :func:`serving_for`: ``local``, the pointer
``$DERMAOPS_HOME/serving/current.json`` the local predictor and monitor read; ``kubernetes``,
the chart's release, JSON-patched (:mod:`dermaops.deploy` plans the patches,
:mod:`dermaops.registry.kube` sends them). A version is served through :func:`deploy_version`,
which holds the promotion lock while it reads what is served, changes it, reads it back and
writes the audit entry, so no alias move and no other deploy comes between. ``dermaops
deploy`` calls it; the reconciler (:mod:`dermaops.registry.reconcile`), which the pipeline's
deploy stage, the ``registry`` commands and the monitor run, calls :func:`serve_locked` under
the same lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Protocol

from dermaops.deploy import (
    VERSION_LABEL,
    DeployRequest,
    Mode,
    Patch,
    observe,
    pointer_get,
    read_pointer,
    write_pointer,
)
from dermaops.errors import ConfigError, DermaOpsError
from dermaops.registry.client import Registry, RegistryError
from dermaops.registry.kube import KubernetesError, connect, planned, read_release
from dermaops.registry.kube import deploy as patch_release
from dermaops.registry.locks import promotion_lock
from dermaops.registry.model import storage_uri
from dermaops.registry.promotion import audit
from dermaops.settings import Home

log = logging.getLogger(__name__)

Target = Literal["local", "kubernetes"]
TARGETS: tuple[Target, ...] = ("local", "kubernetes")


class DeployError(DermaOpsError):
    """A version could not be served; ``served``: what is served, as last read (None:
    nothing, or it could not be read)."""

    def __init__(self, message: str, served: str | None = None):
        super().__init__(message)
        self.served = served


class Serving(Protocol):
    """Where versions are served: what is served now, and how to serve another."""

    @property
    def where(self) -> str:
        """Where that is, in words."""
        ...

    def version(self) -> str | None:
        """The version served now; None when nothing is."""
        ...

    def deploy(self, reg: Registry, version: str, uri: str = "") -> str:
        """Serve ``version`` (its files at ``uri``; empty: where the registry keeps them);
        what was done, in words."""
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

    def deploy(self, reg: Registry, version: str, uri: str = "") -> str:
        try:
            uri = uri or reg.client.get_model_version_download_uri(reg.model_name, version)
        except RegistryError as e:
            raise DeployError(f"{reg.model_name} version {version}: {e}") from e
        try:
            pointer = write_pointer(self.home.serving, uri, reg.model_name, version)
        except OSError as e:
            raise DeployError(f"could not write {self.home.serving}: {e}") from e
        return f"pointed {pointer} at version {version}"


@dataclass(frozen=True)
class ClusterServing:
    """The chart's release: its InferenceService, or its plain Deployment (``mode``: the one
    expected, checked against the cluster; None: whichever the release has)."""

    release: str
    namespace: str
    canary_percent: int | None = None
    mode: Mode | None = None
    where: str = "the cluster"
    shadow_of: str = ""  # with canary_percent 0: the candidate mirrored from this version

    def mirrors(self) -> bool:
        """Whether the release can mirror traffic to a candidate (a rollout's shadow stage):
        it has the chart's canary Deployment (under KServe the predictor mirrors to it, without
        KServe the chart's HTTPRoute)."""
        if not connect():
            return False
        try:
            observed = observe(read_release(self.release, self.namespace))
        except (KubernetesError, ConfigError) as e:
            raise DeployError(str(e)) from e
        return observed.mirrors

    def version(self) -> str | None:
        if not connect():
            raise DeployError("no in-cluster config and no kubeconfig: cannot read the release")
        try:
            objects = read_release(self.release, self.namespace)
        except KubernetesError as e:
            raise DeployError(str(e)) from e
        # A shadow's version is the one on its pods (the canary Deployment): the stable one
        # still answers every request.
        shadow = objects.get("canary") if self.shadow_of else None
        predictor = shadow or objects["InferenceService"] or objects["predictor"]
        if predictor is None:
            raise DeployError(
                f"release {self.release} in {self.namespace} has no predictor: install the chart "
                "first (helm install)"
            )
        label = pointer_get(predictor, f"/metadata/labels/{VERSION_LABEL.replace('/', '~1')}")
        return str(label) if label else None

    def request(self, reg: Registry, version: str, uri: str = "") -> DeployRequest:
        """What deploying ``version`` changes (its files at ``uri``, else the registry's)."""
        return DeployRequest(version, uri or storage_uri(reg, version), self.canary_percent,
                             self.shadow_of)  # fmt: skip

    def plan(self, reg: Registry, version: str, uri: str = "") -> list[Patch]:
        """The patches :meth:`deploy` would send; nothing is sent (without a cluster, planned
        on the chart's defaults)."""
        try:
            return planned(self.request(reg, version, uri), self.release, self.namespace,
                           self.mode)  # fmt: skip
        except KubernetesError as e:
            raise DeployError(str(e)) from e

    def deploy(self, reg: Registry, version: str, uri: str = "") -> str:
        request = self.request(reg, version, uri)
        try:
            sent = patch_release(request, self.release, self.namespace, self.mode)
        except KubernetesError as e:
            raise DeployError(str(e)) from e
        return "; ".join(
            f"patched {p.kind} {p.namespace}/{p.name}" + (f" ({p.note})" if p.note else "")
            for p in sent
        )


def serving_for(
    target: str,
    home: Home | None = None,
    release: str = "dermaops",
    namespace: str = "dermaops",
    canary_percent: int | None = None,
    mode: Mode | None = None,
) -> LocalServing | ClusterServing:
    """Where ``target`` (``local`` or ``kubernetes``) serves: the one place that choice is made.

    Raises:
        ConfigError: another target, or a canary where the target has none (local).
    """
    if target == "local":
        if canary_percent is not None:
            raise ConfigError(f"a canary ({canary_percent}%) needs the cluster: the local "
                              "predictor serves one version")  # fmt: skip
        return LocalServing(home or Home.from_env())
    if target == "kubernetes":
        return ClusterServing(release, namespace, canary_percent, mode)
    raise ConfigError(f"serving target {target!r}: use one of {', '.join(TARGETS)}")


@dataclass(frozen=True)
class Deployed:
    """What a deploy found and did."""

    version: str
    was: str | None
    action: str


def deploy_version(reg: Registry, serving: Serving, version: str, uri: str = "") -> Deployed:
    """Serve ``version`` on ``serving`` under the promotion lock (sent even where it is served
    already: the files at ``uri`` may have changed); read back and audited.

    Raises:
        DeployError: the deploy failed, or what is served after it is not ``version``.
        ConfigError: the release is not shaped as the chart renders it, or the mode differs.
        RegistryError: the lock, or the version's files, could not be had.
    """
    with promotion_lock(reg):
        was = serving.version()
        return serve_locked(reg, serving, version, was, uri)


def serve_locked(
    reg: Registry, serving: Serving, version: str, was: str | None, uri: str = ""
) -> Deployed:
    """Deploy ``version`` where ``was`` is served, read it back and audit; the caller holds
    the promotion lock.

    Raises:
        DeployError: the deploy failed, or what is served after it is not ``version``.
        ConfigError: as the target's ``deploy`` raises it.
    """
    done = serving.deploy(reg, version, uri)
    now = serving.version()
    if now != version:
        raise DeployError(
            f"deployed version {version} on {serving.where}, which still serves "
            f"{named(now)}", now,
        )  # fmt: skip
    event = f"served on {serving.where} (was {named(was)}): {done}"
    try:
        audit(reg, version, event)
    except RegistryError as e:  # files given by URI for a version this registry lacks
        log.warning("version %s %s; not audited: %s", version, event, e)
    log.info("version %s served on %s (was %s)", version, serving.where, was)
    return Deployed(version, was, done)


def named(version: str | None) -> str:
    return f"version {version}" if version else "nothing"
