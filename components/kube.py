"""Deploy a version to a release of the chart with the Kubernetes client (in a pod, or from a
kubeconfig): read what the release has, then send the JSON patches of :mod:`dermaops.deploy`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dermaops.deploy import Observed, Patch, Promotion, fullname, observe, plan
from dermaops.errors import ConfigError, DermaOpsError

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


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


def read_release(release: str, namespace: str) -> Observed:
    """The mode and parts of a release, from the objects the cluster holds."""
    from kubernetes import client

    name = fullname(release)
    apps = client.AppsV1Api()
    found = {
        "InferenceService": _read(
            lambda: client.CustomObjectsApi().get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            ),
            f"InferenceService {namespace}/{name}",
        ),
        **{
            part: _read(
                lambda part=part: _json(
                    apps.read_namespaced_deployment(
                        f"{name}-{part}", namespace, _preload_content=False
                    )
                ),
                f"Deployment {namespace}/{name}-{part}",
            )
            for part in ("predictor", "monitor")
        },
    }
    return observe(found)


def _read(get: Callable[[], dict[str, Any]], what: str) -> dict[str, Any] | None:
    """The object as the API writes it (camelCase, as JSON pointers name it); None if absent."""
    from kubernetes.client.exceptions import ApiException

    try:
        return get()
    except ApiException as e:
        if e.status == 404:
            return None
        raise KubernetesError(f"reading {what}: {e.status} {e.reason}") from e


def deploy(promotion: Promotion, release: str, namespace: str) -> list[Patch]:
    """Patch the release's predictor (and monitor) to ``promotion``; the patches applied.

    Raises:
        KubernetesError: no cluster, or it refused a patch (nothing of that object changed).
        ConfigError: the release has no predictor, or the chart's fields moved.
    """
    if not connect():
        raise KubernetesError("no in-cluster config and no kubeconfig: cannot reach a cluster")
    patches = plan(promotion, release, namespace, read_release(release, namespace))
    for patch in patches:
        apply(patch)
    return patches


def apply(patch: Patch) -> None:
    """Send one patch (``application/json-patch+json``); the API server applies it whole."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    ops = patch.operations()
    where = f"{patch.kind} {patch.namespace}/{patch.name}"
    try:
        if patch.kind == "InferenceService":
            api = client.CustomObjectsApi()
            obj = api.get_namespaced_custom_object(GROUP, VERSION, patch.namespace, PLURAL,
                                                   patch.name)  # fmt: skip
            _check(patch, obj)
            api.patch_namespaced_custom_object(GROUP, VERSION, patch.namespace, PLURAL,
                                               patch.name, ops)  # fmt: skip
        elif patch.kind == "Deployment":
            apps = client.AppsV1Api()
            raw = apps.read_namespaced_deployment(patch.name, patch.namespace,
                                                  _preload_content=False)  # fmt: skip
            _check(patch, _json(raw))
            apps.patch_namespaced_deployment(patch.name, patch.namespace, ops)
        else:
            raise ConfigError(f"cannot patch a {patch.kind}")
    except ApiException as e:
        raise KubernetesError(f"patching {where}: {e.status} {e.reason}: {e.body}") from e
    log.info("patched %s: %s", where, ops)


def _check(patch: Patch, obj: dict[str, Any]) -> None:
    """Refuse before sending when a guard does not hold, saying which field moved."""
    broken = patch.broken_guards(obj)
    if broken:
        raise ConfigError(
            f"{patch.kind} {patch.namespace}/{patch.name} is not shaped as this version of "
            f"the chart renders it, so nothing was patched: {'; '.join(broken)}"
        )


def _json(response: Any) -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads(response.data)
    return data
