"""Deploy a version to a release of the chart with the Kubernetes client (in a pod, or from a
kubeconfig): read what the release has, then send the JSON patches of :mod:`dermaops.deploy`.

Objects are read and patched through the API's paths, so that each patch goes out as
``application/json-patch+json`` (the typed client sends custom objects as merge patches).
"""

from __future__ import annotations

import logging
from typing import Any

from dermaops.deploy import Patch, Promotion, fullname, observe, plan
from dermaops.errors import ConfigError, DermaOpsError

log = logging.getLogger(__name__)

PATHS = {  # kind -> (API group path, plural)
    "InferenceService": ("/apis/serving.kserve.io/v1beta1", "inferenceservices"),
    "Deployment": ("/apis/apps/v1", "deployments"),
}


class KubernetesError(DermaOpsError):
    """The cluster could not be reached or refused a patch."""


def connect() -> bool:
    """Load the in-cluster config, else a kubeconfig; False when there is neither."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_incluster_config()
    except ConfigException:
        try:
            config.load_kube_config()
        except ConfigException:
            return False
    return True


def read_release(release: str, namespace: str) -> dict[str, dict[str, Any] | None]:
    """The release's objects as the cluster holds them (see :func:`dermaops.deploy.observe`)."""
    name = fullname(release)
    return {
        "InferenceService": read("InferenceService", namespace, name),
        "predictor": read("Deployment", namespace, f"{name}-predictor"),
        "monitor": read("Deployment", namespace, f"{name}-monitor"),
    }


def deploy(promotion: Promotion, release: str, namespace: str) -> list[Patch]:
    """Patch the release's predictor (and monitor) to ``promotion``; the patches applied.

    Raises:
        KubernetesError: no cluster, or it refused a patch (nothing of that object changed).
        ConfigError: the release has no predictor, or the chart's fields moved.
    """
    if not connect():
        raise KubernetesError("no in-cluster config and no kubeconfig: cannot reach a cluster")
    objects = read_release(release, namespace)
    patches = plan(promotion, release, namespace, observe(objects))
    send(patches, objects)
    return patches


def send(patches: list[Patch], objects: dict[str, dict[str, Any] | None]) -> None:
    """Check every patch's guards on the objects as read, then send each; the API server
    applies a patch whole or not at all (its ``test`` operations guard the moment of writing)."""
    by_name = {obj["metadata"]["name"]: obj for obj in objects.values() if obj}
    for patch in patches:
        where = f"{patch.kind} {patch.namespace}/{patch.name}"
        broken = patch.broken_guards(by_name.get(patch.name, {}))
        if broken:
            raise ConfigError(
                f"{where} is not shaped as this version of the chart renders it, so nothing "
                f"was patched: {'; '.join(broken)}"
            )
    for patch in patches:
        where = f"{patch.kind} {patch.namespace}/{patch.name}"
        _call("PATCH", _path(patch.kind, patch.namespace, patch.name), where, patch.operations())
        log.info("patched %s: %s", where, patch.operations())


def read(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """An object as the API writes it (camelCase, as JSON pointers name it); None if absent."""
    return _call("GET", _path(kind, namespace, name), f"{kind} {namespace}/{name}")


def _path(kind: str, namespace: str, name: str) -> str:
    group, plural = PATHS[kind]
    return f"{group}/namespaces/{namespace}/{plural}/{name}"


def _call(
    method: str, path: str, what: str, body: list[dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json-patch+json"
    try:
        found: dict[str, Any] = client.ApiClient().call_api(
            path, method, header_params=headers, body=body, auth_settings=["BearerToken"],
            response_type="object", _return_http_data_only=True,
        )  # fmt: skip
    except ApiException as e:
        if e.status == 404 and method == "GET":
            return None
        raise KubernetesError(f"{method} {what}: {e.status} {e.reason}: {e.body}") from e
    return found
