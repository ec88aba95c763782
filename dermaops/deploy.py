"""What a deploy changes: a JSON patch of named fields of the objects the chart renders.

The Helm chart (``charts/dermaops``) owns the predictor and the monitor: image, probes, volumes,
token, security, scaling. Deploying a version changes only what a deploy request names, in both of
the chart's modes (a KServe InferenceService, or the plain Deployment of ``kserve.enabled=false``):

- the model's storage URI (``STORAGE_URI``: KServe's webhook reads it, and the storage
  initializer of the plain Deployment and of the monitor expands it into its arguments),
- the version: the predictor's ``DERMAOPS_SERVING_MODEL_VERSION``, the object's
  ``dermaops.io/model-version`` label, and the monitor's reference version,
- the canary, where the mode has one: KServe's Serverless mode takes the new version with
  ``canaryTrafficPercent`` (Knative keeps the previous revision for the rest); its RawDeployment
  mode keeps the stable predictor and takes the new version as ``spec.canary``, a copy of the
  served predictor with the new version's URI and version and its ``trafficPercent``. Without
  KServe, the chart's canary Deployment (``predictor.canary.enabled``) takes the new version and
  its replicas, and the HTTPRoute's two weights, where the chart has one, split the traffic;
  without one the canary's share is its part of the predictor Service's pods. In those two a
  deploy at 100 % or without a percent serves the version alone (the canary Deployment at 0
  replicas); in Serverless mode 100 % sends it all traffic, and no percent keeps the chart's.

Each change addresses its field by position and is guarded by ``test`` operations on the names
at that position, so a chart whose fields moved makes the patch fail, whole, instead of changing
the wrong field. Locally, deploying writes ``$DERMAOPS_HOME/serving/current.json`` instead.
This module only builds documents; applying them is :mod:`dermaops.registry.kube`'s.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from dermaops.errors import ConfigError
from dermaops.v1 import SHADOW_HEADER

Mode = Literal["kserve", "deployment"]
MODES: tuple[Mode, ...] = ("kserve", "deployment")

CHART = "dermaops"  # the chart's name; object names derive from the release as its helpers do
TRAINER_IMAGE = "ghcr.io/dermaops/trainer:0.1.0"  # every pipeline task (Dockerfile target trainer)
POINTER = "current.json"

VERSION_LABEL = "dermaops.io/model-version"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
SERVERLESS = "Serverless"
RAW_DEPLOYMENT = "RawDeployment"
SERVERLESS_MODES = (SERVERLESS, "Knative")  # KServe 0.15 renamed the modes Knative and Standard
RAW_MODES = (RAW_DEPLOYMENT, "Standard")
PREDICTOR_CONTAINER = "kserve-container"  # the name KServe gives its model container
STORAGE_INITIALIZER = "storage-initializer"
MONITOR_CONTAINER = "monitor"
STORAGE_URI_ENV = "STORAGE_URI"  # read by KServe's webhook; expanded by the storage initializers
MODEL_VERSION_ENV = "DERMAOPS_SERVING_MODEL_VERSION"  # ServingSettings.model_version
SHADOW_URL_ENV = "DERMAOPS_SERVING_SHADOW_URL"  # ServingSettings.shadow_url
REFERENCE_VERSION_ENV = "DERMAOPS_MONITOR_REFERENCE_VERSION"  # `monitor serve --reference-version`


def fullname(release: str) -> str:
    """The chart's ``dermaops.fullname`` of a release (without ``fullnameOverride``)."""
    name = release if CHART in release else f"{release}-{CHART}"
    return name[:45].rstrip("-")


@dataclass(frozen=True)
class DeployRequest:
    """What changes when a version is deployed."""

    version: str
    storage_uri: str
    canary_percent: int | None = None  # None: keep the chart's; 1-100: the new version's share
    shadow_of: str = ""  # with canary_percent 0: mirrored this (stable) version's requests

    def __post_init__(self) -> None:
        if not self.version:
            raise ConfigError("a deployment needs the model version")
        if self.storage_uri.startswith(("models:/", "mlflow-artifacts:", "runs:/")):
            raise ConfigError(
                f"{self.storage_uri} is MLflow's own URI, which KServe's storage initializer "
                "cannot fetch: deploy the URI of the version's files in the artifact store"
            )
        if (self.canary_percent == 0) != bool(self.shadow_of):
            raise ConfigError("a shadow is a canary at 0 % that names the stable version it "
                              "mirrors: give both or neither")  # fmt: skip
        if self.canary_percent is not None and not 0 <= self.canary_percent <= 100:
            raise ConfigError(f"canary percent {self.canary_percent}: give 1 to 100")


@dataclass(frozen=True)
class PatchPrecondition:
    """A ``test`` operation, and what it means when it fails."""

    path: str
    value: Any
    meaning: str


@dataclass(frozen=True)
class Patch:
    """A JSON patch (RFC 6902) of one object: its preconditions (``test`` operations) first,
    then the changes."""

    kind: str
    api_version: str
    name: str
    namespace: str
    preconditions: list[PatchPrecondition] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""  # what the patch means that its fields do not say (a replica share)
    # A Deployment of the same patch set whose pods must be rolled out and ready before this
    # patch is sent (a route sends traffic only to pods that can answer it).
    after: str = ""
    # This Deployment's pods must be rolled out and ready before the deploy is done (a shadow's
    # canary, which the stable predictor mirrors to once the rollout is saved in shadow).
    ready: bool = False

    def operations(self) -> list[dict[str, Any]]:
        tests = [{"op": "test", "path": g.path, "value": g.value} for g in self.preconditions]
        return [*tests, *self.changes]

    def as_dict(self) -> dict[str, Any]:
        """What ``dermaops deploy --dry-run`` prints for this object."""
        printed = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "patch": self.operations(),
        }
        return printed | ({"note": self.note} if self.note else {}) \
            | ({"after": self.after} if self.after else {}) \
            | ({"ready": True} if self.ready else {})  # fmt: skip

    def broken_preconditions(self, obj: Mapping[str, Any]) -> list[str]:
        """Why the patch would fail on ``obj``, one line per precondition that does not hold."""
        broken = []
        for g in self.preconditions:
            found = pointer_get(obj, g.path)
            if found != g.value:
                broken.append(f"{g.meaning} ({g.path} is {found!r}, expected {g.value!r})")
        return broken


@dataclass(frozen=True)
class Observed:
    """What the cluster holds for a release; ``None`` when there is no cluster to ask (the
    chart's defaults are assumed: the monitor on, fetching the served model's reference)."""

    mode: Mode
    serverless: bool | None = None  # KServe's deployment mode, when known
    monitor: bool = True
    monitor_fetches_model: bool = True  # the monitor has its storage initializer
    # RawDeployment: the served predictor (a canary is a copy of it) and the mode's annotation
    predictor: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    annotation: str = RAW_DEPLOYMENT
    # The chart's canary Deployment (either mode), the plain Deployment's HTTPRoute, and the
    # stable replicas (under KServe, the predictor's least, at least 1)
    canary: bool = False
    route: bool = False
    replicas: int = 1

    @property
    def mirrors(self) -> bool:
        """Whether a rollout's shadow can be served: under KServe the predictor mirrors to the
        canary Deployment; without KServe the HTTPRoute mirrors to it."""
        return self.canary and (self.mode == "kserve" or self.route)


def plan(request: DeployRequest, release: str, namespace: str, observed: Observed) -> list[Patch]:
    """The patches that deploy ``request`` to a release of the chart.

    Raises:
        ConfigError: a canary where the release has none, or a RawDeployment canary planned
            without the served predictor to copy.
    """
    name = fullname(release)
    if request.shadow_of and not observed.mirrors:
        missing = ("the chart's HTTPRoute, which mirrors to the canary without KServe: set "
                   "predictor.canary.parentRefs" if observed.canary else "the chart's canary "
                   "Deployment (predictor.canary.enabled=true): with KServe the predictor "
                   "mirrors to it, without KServe the chart's HTTPRoute does")  # fmt: skip
        raise ConfigError(f"a shadow on a cluster needs {missing}; elsewhere a rollout starts in "
                          "its first canary step")  # fmt: skip
    if observed.mode == "kserve" and request.shadow_of:
        patches = [_shadow_home(request, name, namespace, observed)]
    elif observed.mode == "kserve" and observed.serverless is False:
        patches = [_raw_deployment(request, name, namespace, observed)]
    elif observed.mode == "kserve":
        patches = [_inference_service(request, name, namespace)]
    elif observed.mode == "deployment":
        patches = _plain_deployments(request, name, namespace, observed)
    else:
        raise ConfigError(f"deploy mode {observed.mode!r}: use one of {', '.join(MODES)}")
    if observed.mode == "kserve" and observed.canary and not request.shadow_of:
        patches.append(_canary_deployment(request, name, namespace, 0))  # no shadow after
    if observed.monitor and not request.shadow_of:  # a shadow answers no one: the reference stays
        patches.append(_monitor(request, name, namespace, observed.monitor_fetches_model))
    return patches


def _inference_service(p: DeployRequest, name: str, namespace: str) -> Patch:
    patch = Patch("InferenceService", "serving.kserve.io/v1beta1", name, namespace)
    container = "/spec/predictor/containers/0"
    _container(patch, container, PREDICTOR_CONTAINER)
    _env(patch, container, 0, MODEL_VERSION_ENV, p.version)
    _env(patch, container, 1, STORAGE_URI_ENV, p.storage_uri)
    _label(patch, p.version)
    if p.canary_percent is not None:  # Serverless, or a mode not known: guarded as Serverless
        patch.preconditions.append(
            PatchPrecondition(
                f"/metadata/annotations/{_escape(DEPLOYMENT_MODE_ANNOTATION)}",
                SERVERLESS,
                "a canary needs KServe's Serverless mode (kserve.deploymentMode=Serverless)",
            )
        )
        patch.changes.append(
            {"op": "add", "path": "/spec/predictor/canaryTrafficPercent", "value": p.canary_percent}
        )
    return patch


def _shadow_home(p: DeployRequest, name: str, namespace: str, observed: Observed) -> Patch:
    """A shadow under KServe: the candidate on the chart's canary Deployment, with as many pods
    as the predictor's least (each mirrored request reaches one), ready before the deploy is
    done; the InferenceService stays as it is (a change there would restart what answers)."""
    note = (f"a shadow: {observed.replicas} canary pod(s) take the requests the predictor "
            "mirrors while the rollout says shadow, answering no one")  # fmt: skip
    canary = _canary_deployment(p, name, namespace, observed.replicas, note)
    return dataclasses.replace(canary, ready=True)


def _canary_deployment(
    p: DeployRequest, name: str, namespace: str, pods: int, note: str = ""
) -> Patch:
    """The chart's canary Deployment at ``pods`` replicas, serving ``p`` (at 0 only its
    replicas change: the pods go, whatever version they had)."""
    canary = Patch("Deployment", "apps/v1", f"{name}-predictor-canary", namespace, note=note)
    _plain_pod(canary, p, version=pods > 0)  # guarded either way
    canary.changes.append({"op": "replace", "path": "/spec/replicas", "value": pods})
    return canary


def _raw_deployment(p: DeployRequest, name: str, namespace: str, observed: Observed) -> Patch:
    """KServe's RawDeployment: a canary step adds ``spec.canary`` (the served predictor copied,
    with the new version's URI and version), leaving the stable predictor as it is; a full
    deploy patches the stable predictor and removes the canary. The object's version label
    names the version deployed last, in a canary too (as in Serverless mode)."""
    patch = Patch("InferenceService", "serving.kserve.io/v1beta1", name, namespace)
    container = "/spec/predictor/containers/0"
    if p.canary_percent is None or p.canary_percent == 100:
        _container(patch, container, PREDICTOR_CONTAINER)
        _env(patch, container, 0, MODEL_VERSION_ENV, p.version)
        _env(patch, container, 1, STORAGE_URI_ENV, p.storage_uri)
        _label(patch, p.version)
        # No canary afterwards, whether one was there when the release was read or not.
        patch.changes.extend([{"op": "add", "path": "/spec/canary", "value": []},
                              {"op": "remove", "path": "/spec/canary"}])  # fmt: skip
        return patch
    patch.preconditions.append(
        PatchPrecondition(
            f"/metadata/annotations/{_escape(DEPLOYMENT_MODE_ANNOTATION)}",
            observed.annotation,
            "this InferenceService's deployment mode changed since it was read",
        )
    )
    if observed.predictor is None:
        raise ConfigError(
            f"a canary ({p.canary_percent}%) in KServe's RawDeployment mode copies the served "
            "predictor: plan it against the cluster, not without one"
        )
    canary = copy.deepcopy(dict(observed.predictor))
    canary.pop("canaryTrafficPercent", None)
    served = canary["containers"][0]
    names = [e.get("name") for e in served.get("env", [])[:2]]
    if served.get("name") != PREDICTOR_CONTAINER or names != [MODEL_VERSION_ENV, STORAGE_URI_ENV]:
        raise ConfigError(
            f"the served predictor's container is {served.get('name')!r} with env {names}, not "
            f"{PREDICTOR_CONTAINER!r} with {MODEL_VERSION_ENV} and {STORAGE_URI_ENV} first: the "
            "chart's fields moved, so no canary is copied from it"
        )
    served["env"][0] = {**served["env"][0], "value": p.version}
    served["env"][1] = {**served["env"][1], "value": p.storage_uri}
    patch.preconditions.append(
        PatchPrecondition("/spec/predictor", dict(observed.predictor),
                          "the predictor changed since it was read for the canary's copy")
    )  # fmt: skip
    patch.changes.append(
        {"op": "add", "path": "/spec/canary",
         "value": [{"trafficPercent": p.canary_percent, "predictor": canary}]}
    )  # fmt: skip
    _label(patch, p.version)  # the version rolling out, as in Serverless mode
    return patch


def _plain_deployments(
    p: DeployRequest, name: str, namespace: str, observed: Observed
) -> list[Patch]:
    """Without KServe: a full deploy patches the stable Deployment, then (once its pods serve
    the version) the HTTPRoute's weights to the stable, then scales the canary's to 0; a canary
    step patches the canary Deployment with the version and its replicas, then (once they are
    ready) the weights, leaving the stable pods as they are."""
    stable = Patch("Deployment", "apps/v1", f"{name}-predictor", namespace)
    if p.canary_percent is None or p.canary_percent == 100:
        _plain_pod(stable, p)
        patches = [stable]
        if observed.route:  # all traffic back on the stable pods once they serve the version
            route = _route_weights(name, namespace, 0)
            patches.append(dataclasses.replace(route, after=stable.name))
        if observed.canary:  # then the canary's pods go, no longer sent anything
            patches.append(_canary_deployment(p, name, namespace, 0))
        return patches
    if not observed.canary:
        raise ConfigError(
            f"a canary ({p.canary_percent}%) without KServe needs the chart's canary Deployment "
            f"({name}-predictor-canary): set predictor.canary.enabled=true, or serve with KServe "
            "(kserve.enabled=true, either mode)"
        )
    _label(stable, p.version)  # the version rolling out, as in KServe's modes; no pod changes
    pods, note = _canary_pods(p.canary_percent, max(1, observed.replicas), observed.route)
    canary = _canary_deployment(p, name, namespace, pods, note)
    if observed.route:  # weights and mirror once the canary's pods are ready for them
        route = _route_weights(name, namespace, p.canary_percent, p.shadow_of)
        return [stable, canary, dataclasses.replace(route, after=canary.name)]
    return [stable, canary]


def _canary_pods(percent: int, stable: int, route: bool) -> tuple[int, str]:
    """The canary's replicas beside ``stable`` ones, and what share that gives: behind an
    HTTPRoute its part of the capacity (in a shadow, all of it: every request is mirrored);
    without one, the nearest replica share (at least one pod), said with the share it really
    gives."""
    if route and percent == 0:
        return stable, f"a shadow: every request mirrored to {stable} canary pod(s), none answered"
    if route:
        pods = max(1, math.ceil(stable * percent / 100))
        return pods, f"{percent} % of the HTTPRoute's traffic to {pods} canary pod(s)"
    # At most as many as the stable's: past half, a replica share would outgrow the release.
    pods = min(stable, max(1, round(stable * percent / (100 - percent))))
    share = 100 * pods / (stable + pods)
    return pods, (
        f"canary {pods} of {stable + pods} pods: about {share:.0f} % of the predictor Service's "
        f"requests (asked {percent} %; an HTTPRoute, predictor.canary.parentRefs, gives exact "
        "weights)"
    )


def _plain_pod(patch: Patch, p: DeployRequest, version: bool = True) -> None:
    """The plain Deployment's storage URI and version (``version=False``: only the guards)."""
    pod = "/spec/template/spec"
    _container(patch, f"{pod}/initContainers/0", STORAGE_INITIALIZER)
    _container(patch, f"{pod}/containers/0", PREDICTOR_CONTAINER)
    if version:
        _env(patch, f"{pod}/initContainers/0", 0, STORAGE_URI_ENV, p.storage_uri)
        _env(patch, f"{pod}/containers/0", 0, MODEL_VERSION_ENV, p.version)
        _label(patch, p.version)


def _route_weights(name: str, namespace: str, percent: int, shadow_of: str = "") -> Patch:
    """The HTTPRoute's weights, ``100 - percent`` to the stable Service and ``percent`` to the
    canary's, and its filters: in a shadow (``shadow_of``), every request marked with
    :data:`~dermaops.v1.SHADOW_HEADER` and mirrored to the canary; otherwise the header
    stripped, so that no caller can mark its own requests."""
    patch = Patch("HTTPRoute", "gateway.networking.k8s.io/v1", f"{name}-predictor", namespace)
    rule = "/spec/rules/0"
    for index, (track, weight) in enumerate((("stable", 100 - percent), ("canary", percent))):
        ref = f"{rule}/backendRefs/{index}"
        patch.preconditions.append(
            PatchPrecondition(f"{ref}/name", f"{name}-predictor-{track}",
                              f"the {track} Service is not backendRefs[{index}] of the route")
        )  # fmt: skip
        patch.changes.append({"op": "replace", "path": f"{ref}/weight", "value": weight})
    if shadow_of:
        header = {"set": [{"name": SHADOW_HEADER, "value": shadow_of}]}
        mirror = {"backendRef": {"name": f"{name}-predictor-canary", "port": 80}}
        filters = [{"type": "RequestHeaderModifier", "requestHeaderModifier": header},
                   {"type": "RequestMirror", "requestMirror": mirror}]  # fmt: skip
    else:
        filters = [{"type": "RequestHeaderModifier",
                    "requestHeaderModifier": {"remove": [SHADOW_HEADER]}}]  # fmt: skip
    patch.changes.append({"op": "add", "path": f"{rule}/filters", "value": filters})
    return patch


def _monitor(p: DeployRequest, name: str, namespace: str, fetches_model: bool) -> Patch:
    patch = Patch("Deployment", "apps/v1", f"{name}-monitor", namespace)
    pod = "/spec/template/spec"
    _container(patch, f"{pod}/containers/0", MONITOR_CONTAINER)
    _env(patch, f"{pod}/containers/0", 0, REFERENCE_VERSION_ENV, p.version)
    if fetches_model:
        _container(patch, f"{pod}/initContainers/0", STORAGE_INITIALIZER)
        _env(patch, f"{pod}/initContainers/0", 0, STORAGE_URI_ENV, p.storage_uri)
    return patch


def _container(patch: Patch, path: str, name: str) -> None:
    patch.preconditions.append(
        PatchPrecondition(f"{path}/name", name, f"container {name} is not at {path}")
    )


def _env(patch: Patch, container: str, index: int, name: str, value: str) -> None:
    path = f"{container}/env/{index}"
    patch.preconditions.append(
        PatchPrecondition(f"{path}/name", name, f"{name} is not env[{index}] of {container}")
    )
    patch.changes.append({"op": "replace", "path": f"{path}/value", "value": value})


def _label(patch: Patch, version: str) -> None:
    path = f"/metadata/labels/{_escape(VERSION_LABEL)}"
    patch.changes.append({"op": "replace", "path": path, "value": version})


def _escape(key: str) -> str:
    """A map key as a JSON pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def pointer_get(obj: Any, pointer: str) -> Any:
    """The value at a JSON pointer, or ``None`` when the path does not exist."""
    for raw in pointer.lstrip("/").split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(obj, Mapping):
            obj = obj.get(token)
        elif isinstance(obj, list) and token.isdigit() and int(token) < len(obj):
            obj = obj[int(token)]
        else:
            return None
    return obj


def observe(objects: Mapping[str, Mapping[str, Any] | None]) -> Observed:
    """The mode and the optional parts of a release, from its objects as the cluster holds them.

    Args:
        objects: ``InferenceService``, ``predictor`` (the plain Deployment), ``canary`` (the
            chart's canary Deployment, in either mode), ``route`` (the plain Deployment's
            HTTPRoute) and ``monitor`` (its Deployment), each ``None`` (or missing) when the
            cluster has none.

    Raises:
        ConfigError: the release has no predictor.
    """
    isvc, plain = objects.get("InferenceService"), objects.get("predictor")
    monitor = objects.get("monitor")
    fetches = bool(monitor) and bool(pointer_get(monitor, "/spec/template/spec/initContainers"))
    if isvc:
        mode = pointer_get(isvc, f"/metadata/annotations/{_escape(DEPLOYMENT_MODE_ANNOTATION)}")
        least = max(1, int(pointer_get(isvc, "/spec/predictor/minReplicas") or 1))
        # A shadow's home only where the predictor is rendered to mirror to it.
        env = pointer_get(isvc, "/spec/predictor/containers/0/env") or []
        wired = any(e.get("name") == SHADOW_URL_ENV for e in env)
        kserve = Observed("kserve", None, monitor is not None, fetches,
                          canary=bool(objects.get("canary")) and wired, replicas=least)  # fmt: skip
        if mode in SERVERLESS_MODES:
            return dataclasses.replace(kserve, serverless=True)
        if mode in RAW_MODES:
            served = isvc.get("spec", {}).get("predictor")
            return dataclasses.replace(kserve, serverless=False, predictor=served,
                                       annotation=str(mode))  # fmt: skip
        return kserve  # the cluster's default mode
    if plain:
        replicas = int(pointer_get(plain, "/spec/replicas") or 1)
        return Observed("deployment", None, monitor is not None, fetches,
                        canary=bool(objects.get("canary")), route=bool(objects.get("route")),
                        replicas=replicas)  # fmt: skip
    raise ConfigError(
        "no predictor of this release in the cluster (neither an InferenceService nor a "
        "Deployment): install the chart first (helm install), then deploy versions"
    )


def write_pointer(folder: Path, model_uri: str, name: str, version: str) -> Path:
    """Point the local predictor at a version: ``folder/current.json``, replaced atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    pointer = {
        "model_uri": model_uri,
        "name": name,
        "version": version,
        "deployed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    staged = folder / f".{POINTER}.partial"
    staged.write_text(json.dumps(pointer, indent=2) + "\n")
    staged.replace(folder / POINTER)
    return folder / POINTER


def read_pointer(folder: Path, when_missing: str) -> tuple[str, str]:
    """(model URI, version) of the locally deployed model, from ``folder/current.json``.

    Raises:
        ConfigError: nothing is deployed (the message ends with ``when_missing``, what to do
            instead), or the file is not a pointer.
    """
    pointer = folder / POINTER
    try:
        target = json.loads(pointer.read_text())
        return str(target["model_uri"]), str(target["version"])
    except FileNotFoundError as e:
        raise ConfigError(f"no deployed model ({pointer} is missing): {when_missing}") from e
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{pointer} is not a deployment pointer: {e}") from e
