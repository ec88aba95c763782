"""Apply an InferenceService with the Kubernetes client (in a pod, or from a kubeconfig)."""

from __future__ import annotations

from typing import Any

from dermaops.errors import DermaOpsError

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


class KubernetesError(DermaOpsError):
    """The cluster could not be reached or refused the manifest."""


def apply_inference_service(manifest: dict[str, Any]) -> str:
    """Create the InferenceService, or merge-patch it when it exists (a canary rollout)."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_incluster_config()
    except ConfigException:
        try:
            config.load_kube_config()
        except ConfigException as e:
            raise KubernetesError(f"no in-cluster config and no kubeconfig: {e}") from e
    api = client.CustomObjectsApi()
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    where = (GROUP, VERSION, namespace, PLURAL)
    try:
        api.get_namespaced_custom_object(*where, name)
    except ApiException as e:
        if e.status != 404:
            raise KubernetesError(f"reading InferenceService {namespace}/{name}: {e.reason}") from e
        try:
            api.create_namespaced_custom_object(*where, manifest)
        except ApiException as create_error:
            raise KubernetesError(
                f"creating InferenceService {namespace}/{name}: {create_error.reason}"
            ) from create_error
        return f"created {namespace}/{name}"
    try:
        api.patch_namespaced_custom_object(*where, name, manifest)
    except ApiException as e:
        raise KubernetesError(f"updating InferenceService {namespace}/{name}: {e.reason}") from e
    return f"updated {namespace}/{name}"
