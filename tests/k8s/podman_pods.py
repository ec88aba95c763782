"""The chart's rendered pods as podman commands, for running them in containers in CI.

Debian's podman 4.3 cannot `kube play` these pods (TOOLBOX.md: Secret volumes crash it, emptyDirs
come up root-owned, init containers with volumes fail), so a rendered pod spec becomes `podman pod
create` and one `podman run --pod` per container, init containers first and to completion. Every
field the chart sets is mapped below, or named with the reason it does not apply on one host; any
other field is an error, so a chart change cannot slip past the container test unrun.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Fields with no meaning on one host without an API server, and why they may be dropped.
NOT_HERE = {
    "automountServiceAccountToken": "no API server: nothing to mount",
    "serviceAccountName": "no API server: tokens come as volumes",
    "nodeSelector": "one host",
    "tolerations": "one host",
    "restartPolicy": "init containers run once with --rm, the others until the test stops them",
    "imagePullPolicy": "images are local: --pull=never",
    "livenessProbe": "the test watches readiness; a restart would hide a crash",
    "startupProbe": "the test waits on readiness, which startup gates alike",
    "ports": "published by the pod (--publish), by container port",
    "requests": "podman enforces limits only",
}
POD_FIELDS = {"securityContext", "volumes", "initContainers", "containers"}
CONTAINER_FIELDS = {"name", "image", "command", "args", "env", "envFrom", "volumeMounts",
                    "securityContext", "resources", "readinessProbe"}  # fmt: skip
VARIABLE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class UnmappedFieldError(ValueError):
    """A rendered field this translator does not map: extend it, do not skip the field."""


@dataclass(frozen=True)
class Host:
    """How this host provides what a cluster would.

    images: rendered image -> local image; secrets: Secret name -> {key: value};
    claims: claim name -> podman volume; workdir: where Secret and token files are written;
    hosts: DNS name -> address, for the Services a pod calls (see :func:`service_ports`).
    """

    images: Mapping[str, str]
    secrets: Mapping[str, Mapping[str, str]]
    claims: Mapping[str, str]
    workdir: Path
    network: str = ""
    hosts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Probe:
    container: str
    path: str
    port: int


@dataclass
class PodPlan:
    """The commands that run one pod, in order, and what the test waits on."""

    name: str
    volumes: list[str] = field(default_factory=list)  # podman volumes to create and chown
    owner: str = ""  # uid:gid the volumes belong to (runAsUser, fsGroup)
    create: list[str] = field(default_factory=list)
    init: list[list[str]] = field(default_factory=list)
    run: list[list[str]] = field(default_factory=list)
    readiness: list[Probe] = field(default_factory=list)


def plan_pod(name: str, spec: Mapping[str, Any], publish: Mapping[int, int], host: Host) -> PodPlan:
    """Podman commands for the pod ``spec``; ``publish`` maps container ports to loopback ports."""
    _known(spec, POD_FIELDS, f"pod {name}")
    pod = _pod_security(spec.get("securityContext", {}), name)
    plan = PodPlan(name, owner=f"{pod['user']}:{pod['fs_group']}")
    mounts = _volumes(spec.get("volumes", []), name, host, plan)
    plan.create = ["podman", "pod", "create", "--name", name]
    if host.network:
        plan.create += ["--network", host.network]
    for container_port, host_port in publish.items():
        plan.create += ["--publish", f"127.0.0.1:{host_port}:{container_port}"]
    for dns, address in host.hosts.items():
        plan.create += ["--add-host", f"{dns}:{address}"]
    for container in spec.get("initContainers", []):
        plan.init.append(_run(container, name, pod, mounts, host, detach=False))
    for container in spec["containers"]:
        plan.run.append(_run(container, name, pod, mounts, host, detach=True))
        probe = container.get("readinessProbe")
        if probe:
            get = probe["httpGet"]
            port = _port(container, get["port"])
            plan.readiness.append(Probe(container["name"], get["path"], port))
    return plan


def _port(container: Mapping[str, Any], port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if port not in named:
        raise UnmappedFieldError(f"container {container['name']}: no port named {port!r}")
    return int(named[port])


# An InferenceService component's own fields (KServe's ComponentExtensionSpec): the controller
# reads them into the Deployment, its Service and autoscaler (labels and annotations onto the pod
# template's metadata, which a pod on one host has no use for); none is a field of the pod spec.
COMPONENT_FIELDS = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType",
                    "autoScaling", "containerConcurrency", "timeout", "canaryTrafficPercent",
                    "labels", "annotations", "deploymentStrategy"}  # fmt: skip
# Component fields that add containers of KServe's own (its agent): not played here.
AGENT_FIELDS = {"logger", "batcher"}
KSERVE_CONTAINER, MODEL_MOUNT = "kserve-container", "/mnt/models"
PROVISION_VOLUME = "kserve-provision-location"


def kserve_predictor_pod(isvc: Mapping[str, Any], initializer_image: str) -> dict[str, Any]:
    """The pod spec KServe makes of an InferenceService's predictor in RawDeployment, with no
    KServe controller here to make it: the component's own fields left out, and what KServe's
    storage initialization adds where the ``kserve-container`` has ``STORAGE_URI`` (its
    ``CommonStorageInitialization`` for one URI): an emptyDir ``kserve-provision-location``, an
    init container ``storage-initializer`` (the image of KServe's configuration, its default
    resources) fetching the URI into it, the volume mounted read-only at ``/mnt/models`` in the
    model server, whose ``STORAGE_URI`` then names that folder. Credentials from the service
    account's secrets are not played (the tests' URIs are public).

    Raises:
        UnmappedFieldError: a component field that adds KServe's agent container.
    """
    predictor = isvc["spec"]["predictor"]
    if AGENT_FIELDS & set(predictor):
        raise UnmappedFieldError(f"predictor: {sorted(AGENT_FIELDS & set(predictor))} add "
                                 "KServe's agent container, which is not played here")  # fmt: skip
    spec = {k: v for k, v in predictor.items() if k not in COMPONENT_FIELDS}
    containers = [dict(c) for c in spec["containers"]]
    (server,) = [c for c in containers if c["name"] == KSERVE_CONTAINER]
    uri = {e["name"]: e.get("value") for e in server.get("env", [])}.get("STORAGE_URI")
    if uri:
        mount = {"name": PROVISION_VOLUME, "mountPath": MODEL_MOUNT}
        server["volumeMounts"] = [*server.get("volumeMounts", []), mount | {"readOnly": True}]
        server["env"] = [e | {"value": MODEL_MOUNT} if e["name"] == "STORAGE_URI" else e
                         for e in server["env"]]  # fmt: skip
        spec["volumes"] = [*spec.get("volumes", []), {"name": PROVISION_VOLUME, "emptyDir": {}}]
        resources = {"requests": {"cpu": "100m", "memory": "100Mi"},
                     "limits": {"cpu": "1", "memory": "1Gi"}}  # fmt: skip
        spec["initContainers"] = [*spec.get("initContainers", []), {
            "name": "storage-initializer", "image": initializer_image, "args": [uri, MODEL_MOUNT],
            "resources": resources, "volumeMounts": [mount],
        }]  # fmt: skip
    return spec | {"containers": containers}


def _known(obj: Mapping[str, Any], mapped: set[str], where: str) -> None:
    unknown = set(obj) - mapped - set(NOT_HERE)
    if unknown:
        raise UnmappedFieldError(f"{where}: {sorted(unknown)} not mapped to podman")


def _pod_security(context: Mapping[str, Any], where: str) -> dict[str, Any]:
    _known(context, {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "seccompProfile"}, where)
    user = context.get("runAsUser")
    if context.get("runAsNonRoot") and not user:
        raise UnmappedFieldError(f"{where}: runAsNonRoot needs a numeric runAsUser here")
    _seccomp(context, where)
    group = context.get("runAsGroup", user)
    return {"user": user, "group": group, "fs_group": context.get("fsGroup", group)}


def _seccomp(context: Mapping[str, Any], where: str) -> None:
    profile = context.get("seccompProfile", {}).get("type", "RuntimeDefault")
    if profile != "RuntimeDefault":  # podman's default profile is the runtime's default
        raise UnmappedFieldError(f"{where}: seccompProfile {profile!r}")


def _volumes(
    volumes: list[Mapping[str, Any]], pod: str, host: Host, plan: PodPlan
) -> dict[str, str]:
    """Volume name -> the --volume source: a podman volume or a host folder."""
    sources = {}
    for volume in volumes:
        name, kinds = volume["name"], set(volume) - {"name"}
        if kinds == {"emptyDir"}:
            sources[name] = f"{pod}-{name}"
            plan.volumes.append(sources[name])
        elif kinds == {"persistentVolumeClaim"}:
            sources[name] = host.claims[volume["persistentVolumeClaim"]["claimName"]]
            plan.volumes.append(sources[name])
        elif kinds == {"secret"}:
            sources[name] = str(_secret_dir(volume["secret"], host))
        elif kinds == {"projected"}:
            sources[name] = str(_token_dir(volume["projected"], pod, name, host))
        else:
            raise UnmappedFieldError(f"pod {pod}: volume {name} of kind {sorted(kinds)}")
    return sources


def _secret_dir(secret: Mapping[str, Any], host: Host) -> Path:
    """A Secret as files: every key, or only the listed ``items`` at their paths."""
    where = f"secret volume {secret.get('secretName')}"
    _known(secret, {"secretName", "defaultMode", "items"}, where)
    data = host.secrets[secret["secretName"]]
    paths = {key: key for key in data}
    if "items" in secret:
        for item in secret["items"]:
            _known(item, {"key", "path"}, f"{where}, item")
        paths = {item["key"]: item["path"] for item in secret["items"]}
    folder = host.workdir / "secrets" / secret["secretName"]
    folder.mkdir(parents=True, exist_ok=True)
    for key, relative in paths.items():
        value = data[key]
        path = folder / relative
        path.write_text(value)
        path.chmod(secret.get("defaultMode", 0o644) | 0o004)  # the pod's uid is not the file's
    return folder


def _token_dir(projected: Mapping[str, Any], pod: str, name: str, host: Host) -> Path:
    """A projected service account token: a placeholder, since no API server issues one."""
    folder = host.workdir / "tokens" / pod / name
    folder.mkdir(parents=True, exist_ok=True)
    for source in projected["sources"]:
        if set(source) != {"serviceAccountToken"}:
            raise UnmappedFieldError(f"pod {pod}: projected source {sorted(source)}")
        path = folder / source["serviceAccountToken"]["path"]
        path.write_text("not-a-cluster-token")
        path.chmod(0o644)
    return folder


def _run(container: Mapping[str, Any], pod: str, security: Mapping[str, Any],
         mounts: Mapping[str, str], host: Host, detach: bool) -> list[str]:  # fmt: skip
    name = container["name"]
    _known(container, CONTAINER_FIELDS, f"pod {pod}, container {name}")
    command = ["podman", "run", "--pod", pod, "--name", f"{pod}-{name}", "--pull=never"]
    command += ["-d"] if detach else ["--rm"]
    command += _user(security) + _container_security(container.get("securityContext", {}), name)
    command += _limits(container.get("resources", {}), name)
    env = container_env(container, host)
    for key, value in env.items():
        command += ["--env", f"{key}={value}"]
    for mount in container.get("volumeMounts", []):
        _known(mount, {"name", "mountPath", "readOnly"}, f"container {name}, mount")
        options = ":ro" if mount.get("readOnly") else ""
        command += ["--volume", f"{mounts[mount['name']]}:{mount['mountPath']}{options}"]
    if "command" in container:
        command += ["--entrypoint", json.dumps([_expand(a, env) for a in container["command"]])]
    command.append(host.images.get(container["image"], container["image"]))
    return command + [_expand(a, env) for a in container.get("args", [])]


def _user(security: Mapping[str, Any]) -> list[str]:
    if security["user"] is None:
        return []
    return ["--user", f"{security['user']}:{security['group']}", "--group-add",
            str(security["fs_group"])]  # fmt: skip


def _container_security(context: Mapping[str, Any], where: str) -> list[str]:
    mapped = {"allowPrivilegeEscalation", "readOnlyRootFilesystem", "runAsNonRoot",
              "capabilities", "seccompProfile"}  # fmt: skip
    _known(context, mapped, f"container {where}, securityContext")
    _seccomp(context, where)
    flags = []
    if context.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    if context.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    capabilities = context.get("capabilities", {})
    _known(capabilities, {"drop"}, f"container {where}, capabilities")
    for capability in capabilities.get("drop", []):
        flags += ["--cap-drop", capability]
    return flags


def _limits(resources: Mapping[str, Any], where: str) -> list[str]:
    _known(resources, {"limits"}, f"container {where}, resources")
    limits = resources.get("limits", {})
    _known(limits, {"cpu", "memory"}, f"container {where}, limits")
    flags = []
    if "cpu" in limits:
        cpu = str(limits["cpu"])
        flags += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
    if "memory" in limits:
        flags += ["--memory", _bytes(str(limits["memory"]))]
    return flags


def _bytes(quantity: str) -> str:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return str(int(float(quantity[: -len(unit)]) * factor))
    return str(int(quantity))


def container_env(container: Mapping[str, Any], host: Host) -> dict[str, str]:
    """A container's environment as the kubelet gives it: ``envFrom`` Secrets, then ``env``
    (which wins), each value's ``$(VAR)`` expanded."""
    name = container["name"]
    return _env_from(container.get("envFrom", []), host, name) | _env(
        container.get("env", []), host, name
    )


def _env(entries: list[Mapping[str, Any]], host: Host, where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in entries:
        _known(entry, {"name", "value", "valueFrom"}, f"container {where}, env")
        if "valueFrom" in entry:
            source = entry["valueFrom"]
            if set(source) != {"secretKeyRef"}:
                raise UnmappedFieldError(f"container {where}: env from {sorted(source)}")
            ref = source["secretKeyRef"]
            env[entry["name"]] = host.secrets[ref["name"]][ref["key"]]
        else:
            env[entry["name"]] = _expand(str(entry.get("value", "")), env)
    return env


def _env_from(sources: list[Mapping[str, Any]], host: Host, where: str) -> dict[str, str]:
    """``envFrom`` Secrets: every key of each becomes a variable."""
    env: dict[str, str] = {}
    for source in sources:
        if set(source) != {"secretRef"}:
            raise UnmappedFieldError(f"container {where}: envFrom {sorted(source)}")
        _known(source["secretRef"], {"name"}, f"container {where}, envFrom secretRef")
        env |= host.secrets[source["secretRef"]["name"]]
    return env


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) in command, args and env: defined names expand, `$$` is a `$`."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return VARIABLE.sub(one, text)


def service_ports(service: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[int, int]:
    """A Service's ports -> the container ports of the pod it selects (named ports resolved)."""
    _known(service["spec"], {"type", "selector", "ports"}, f"service {service['metadata']['name']}")
    ports = {}
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        container_ports = {int(_port(c, target)) for c in spec["containers"]
                           if _has_port(c, target)}  # fmt: skip
        if len(container_ports) != 1:
            raise UnmappedFieldError(f"service port {port} matches {container_ports or 'nothing'}")
        ports[int(port["port"])] = container_ports.pop()
    return ports


def _has_port(container: Mapping[str, Any], port: int | str) -> bool:
    if isinstance(port, int) or str(port).isdigit():
        return any(p["containerPort"] == int(port) for p in container.get("ports", []))
    return any(p.get("name") == port for p in container.get("ports", []))
