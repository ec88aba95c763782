"""Deploy a version to a release of the chart with the Kubernetes client (in a pod, or from a
kubeconfig): read what the release has, then send the JSON patches of :mod:`dermaops.deploy`;
and hold the release's promotion Lease, so that alias moves take turns across the cluster.

Objects are read and patched through the API's paths, so that each patch goes out as
``application/json-patch+json`` (the typed client sends custom objects as merge patches).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from dermaops.deploy import DeployRequest, Mode, Observed, Patch, fullname, observe, plan
from dermaops.errors import ConfigError, DermaOpsError

log = logging.getLogger(__name__)

PATHS = {  # kind -> (API group path, plural)
    "InferenceService": ("/apis/serving.kserve.io/v1beta1", "inferenceservices"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "HTTPRoute": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases"),
}
LEASE_SECONDS = 60  # a holder that died frees the Lease after this; alias moves take seconds


class KubernetesError(DermaOpsError):
    """The cluster could not be reached or refused a request (``status``: its HTTP status)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


def connect() -> bool:
    """Load the in-cluster config, else a kubeconfig; False when there is neither."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_incluster_config()
    except ConfigException:
        try:  # KUBECONFIG as it is now (the client reads it once, when first imported)
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        except ConfigException:
            return False
    return True


def read_release(release: str, namespace: str) -> dict[str, dict[str, Any] | None]:
    """The release's objects as the cluster holds them (see :func:`dermaops.deploy.observe`)."""
    name = fullname(release)
    objects = {
        "InferenceService": read("InferenceService", namespace, name),
        "predictor": read("Deployment", namespace, f"{name}-predictor"),
        "monitor": read("Deployment", namespace, f"{name}-monitor"),
        # The canary Deployment, where rendered: a canary's pods without KServe, a shadow's in
        # either mode.
        "canary": read("Deployment", namespace, f"{name}-predictor-canary"),
    }
    if objects["predictor"] is not None:  # the plain Deployment's HTTPRoute, where rendered
        objects["route"] = _read_route(namespace, f"{name}-predictor")
    return objects


def _read_route(namespace: str, name: str) -> dict[str, Any] | None:
    """The release's HTTPRoute; None where it has none, the cluster has no Gateway API (404),
    or the release's Role has no HTTPRoute to read (403: the chart rendered none)."""
    try:
        return read("HTTPRoute", namespace, name)
    except KubernetesError as e:
        if e.status == 403:
            return None
        raise


def deploy(
    request: DeployRequest, release: str, namespace: str, mode: Mode | None = None
) -> list[Patch]:
    """Patch the release's predictor (and monitor) to ``request``; the patches applied.

    Raises:
        KubernetesError: no cluster, or it refused a patch (nothing of that object changed).
        ConfigError: the release has no predictor, serves in another ``mode`` than the one
            asked, or the chart's fields moved.
    """
    if not connect():
        raise KubernetesError("no in-cluster config and no kubeconfig: cannot reach a cluster")
    objects = read_release(release, namespace)
    patches = plan(request, release, namespace, _observed(objects, release, mode))
    send(patches, objects)
    return patches


def planned(
    request: DeployRequest, release: str, namespace: str, mode: Mode | None = None
) -> list[Patch]:
    """The patches :func:`deploy` would send: planned on what the cluster holds, or without a
    cluster on the chart's defaults (``mode``, else ``kserve``).

    Raises:
        KubernetesError: the cluster could not be read.
        ConfigError: as for :func:`deploy`.
    """
    if not connect():
        return plan(request, release, namespace, Observed(mode or "kserve"))
    objects = read_release(release, namespace)
    return plan(request, release, namespace, _observed(objects, release, mode))


def _observed(
    objects: dict[str, dict[str, Any] | None], release: str, mode: Mode | None
) -> Observed:
    observed = observe(objects)
    if mode is not None and mode != observed.mode:
        raise ConfigError(f"mode {mode} was asked, but release {release} serves as {observed.mode}")
    return observed


def send(patches: list[Patch], objects: dict[str, dict[str, Any] | None]) -> None:
    """Check every patch's preconditions on the objects as read, then send each; the API server
    applies a patch whole or not at all (its ``test`` operations guard the moment of writing)."""
    by_name = {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects.values() if obj}
    for patch in patches:
        where = f"{patch.kind} {patch.namespace}/{patch.name}"
        broken = patch.broken_preconditions(by_name.get((patch.kind, patch.name), {}))
        if broken:
            raise ConfigError(
                f"{where} is not shaped as this version of the chart renders it, so nothing "
                f"was patched: {'; '.join(broken)}"
            )
    for patch in patches:
        where = f"{patch.kind} {patch.namespace}/{patch.name}"
        if patch.after:
            rolled_out(patch.namespace, patch.after, f"{where} was not patched")
        _call("PATCH", _path(patch.kind, patch.namespace, patch.name), where, patch.operations())
        log.info("patched %s: %s", where, patch.operations())
        if patch.ready:
            why = "the deploy is not done (nothing is mirrored to pods that cannot answer)"
            rolled_out(patch.namespace, patch.name, why)


ROLLOUT_TIMEOUT_S = 600.0  # as `kubectl rollout status` would wait for a predictor's pods


def rolled_out(
    namespace: str, name: str, waiting: str, timeout: float | None = None, poll: float = 1.0
) -> None:
    """Wait until the Deployment ``name`` has rolled out its latest spec: observed by its
    controller, every replica updated, no old one left, each available (the conditions of
    `kubectl rollout status`); ``waiting``: what did not happen for want of it ("HTTPRoute X
    was not patched").

    Raises:
        KubernetesError: not within ``timeout`` seconds (default ``ROLLOUT_TIMEOUT_S``; what
            it has, said), or it is gone.
    """
    timeout = ROLLOUT_TIMEOUT_S if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while True:
        found = read("Deployment", namespace, name)
        if found is None:
            raise KubernetesError(f"Deployment {namespace}/{name} is gone, so {waiting}")
        pending = _rollout_waits_for(found)
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise KubernetesError(
                f"Deployment {namespace}/{name} not rolled out after {timeout:.0f} s ({pending}), "
                f"so {waiting}: the next deploy or rollout pass sends it again"
            )
        time.sleep(poll)


def _rollout_waits_for(deployment: dict[str, Any]) -> str:
    """What a Deployment's rollout still waits for ("" when done)."""
    spec, status = deployment.get("spec", {}), deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    generation = int(deployment.get("metadata", {}).get("generation", 0))
    if int(status.get("observedGeneration", 0)) < generation:
        return "its controller has not seen the new spec"
    updated, available, existing = (
        int(status.get(k, 0)) for k in ("updatedReplicas", "availableReplicas", "replicas")
    )
    if updated < wanted:
        return f"{updated} of {wanted} pods updated"
    if existing > updated:
        return f"{existing - updated} old pod(s) still terminating"
    if available < updated:
        return f"{available} of {updated} updated pods available"
    return ""


@contextmanager
def lease(namespace: str, name: str, holder: str, timeout: float = 300) -> Iterator[None]:
    """Hold the Lease ``namespace/name`` (coordination.k8s.io/v1) as ``holder``: one holder at a
    time across the cluster. A Lease not renewed within its ``leaseDurationSeconds`` is free;
    while held, it is renewed every third of that.

    Raises:
        KubernetesError: no cluster, or the Lease was held by others for ``timeout`` seconds.
    """
    if not connect():
        raise KubernetesError("no in-cluster config and no kubeconfig: cannot take the Lease")
    deadline, waited = time.monotonic() + timeout, False
    while not _take(namespace, name, holder):
        if not waited:
            waited = True
            log.info("waiting for the Lease %s/%s, held by another promotion", namespace, name)
        if time.monotonic() > deadline:
            raise KubernetesError(f"the Lease {namespace}/{name} was held for over {timeout:.0f} s")
        time.sleep(0.5)
    stop = threading.Event()
    renewer = threading.Thread(target=_keep, args=(namespace, name, holder, stop), daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        _give_back(namespace, name, holder)


def _keep(namespace: str, name: str, holder: str, stop: threading.Event) -> None:
    """Renew the Lease every third of its duration until ``stop`` (a deploy that waits for
    pods to roll out holds it for minutes); a renewal that fails is logged, the next tries."""
    while not stop.wait(LEASE_SECONDS / 3):
        try:
            if not _take(namespace, name, holder):
                log.warning("the Lease %s/%s was taken by another holder", namespace, name)
        except KubernetesError as e:
            log.warning("could not renew the Lease %s/%s: %s", namespace, name, e)


def _take(namespace: str, name: str, holder: str) -> bool:
    """One try: create the Lease, or take it over if free, expired or ours; False if held."""
    now = _micro_time(datetime.now(UTC))
    spec = {"holderIdentity": holder, "leaseDurationSeconds": LEASE_SECONDS,
            "acquireTime": now, "renewTime": now}  # fmt: skip
    found = read("Lease", namespace, name)
    try:
        if found is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip
            _call("POST", _collection("Lease", namespace), f"Lease {namespace}/{name}", body)
            return True
        if _held_by_another(found.get("spec") or {}, holder):
            return False
        _call("PUT", _path("Lease", namespace, name), f"Lease {namespace}/{name}",
              found | {"spec": spec})  # fmt: skip
    except KubernetesError as e:
        if e.status == 409:  # another holder created or updated it first
            return False
        raise
    return True


def _held_by_another(spec: dict[str, Any], holder: str) -> bool:
    current = spec.get("holderIdentity")
    if not current or current == holder:
        return False
    renewed = spec.get("renewTime") or spec.get("acquireTime")
    if not renewed:
        return True
    until = datetime.fromisoformat(renewed.replace("Z", "+00:00")) + timedelta(
        seconds=int(spec.get("leaseDurationSeconds") or LEASE_SECONDS)
    )
    return datetime.now(UTC) < until


def _give_back(namespace: str, name: str, holder: str) -> None:
    """Free the Lease if still ours (a failure leaves it to expire)."""
    try:
        found = read("Lease", namespace, name)
        if found is not None and (found.get("spec") or {}).get("holderIdentity") == holder:
            spec = {**found["spec"], "holderIdentity": None}
            _call("PUT", _path("Lease", namespace, name), f"Lease {namespace}/{name}",
                  found | {"spec": spec})  # fmt: skip
    except KubernetesError as e:
        log.warning("could not give back the Lease %s/%s (it expires on its own): %s",
                    namespace, name, e)  # fmt: skip


def _micro_time(at: datetime) -> str:
    """Kubernetes' MicroTime: RFC 3339 with microseconds, in UTC."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """An object as the API writes it (camelCase, as JSON pointers name it); None if absent."""
    return _call("GET", _path(kind, namespace, name), f"{kind} {namespace}/{name}")


def _path(kind: str, namespace: str, name: str) -> str:
    return f"{_collection(kind, namespace)}/{name}"


def _collection(kind: str, namespace: str) -> str:
    group, plural = PATHS[kind]
    return f"{group}/namespaces/{namespace}/{plural}"


def _call(
    method: str, path: str, what: str, body: list[dict[str, Any]] | dict[str, Any] | None = None
) -> dict[str, Any] | None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    headers = {"Accept": "application/json"}
    if body is not None:
        patch = method == "PATCH"
        headers["Content-Type"] = "application/json-patch+json" if patch else "application/json"
    try:
        found: dict[str, Any] = client.ApiClient().call_api(
            path, method, header_params=headers, body=body, auth_settings=["BearerToken"],
            response_type="object", _return_http_data_only=True,
        )  # fmt: skip
    except ApiException as e:
        if e.status == 404 and method == "GET":
            return None
        raise KubernetesError(f"{method} {what}: {e.status} {e.reason}: {e.body}", e.status) from e
    except HTTPError as e:  # no answer at all: refused, reset, timed out
        raise KubernetesError(f"{method} {what}: the API server did not answer: {e}") from e
    return found
