"""The one resolver of model URIs: a folder, ``file://``, ``models:/NAME@ALIAS`` (MLflow), or the
local deployment pointer, for serving, the monitor and the benches.

``models:/`` needs MLflow: the registry layer is imported for such a URI only, so resolving a
folder (what KServe's storage initializer fetched) loads no platform SDK.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

from dermaops.deploy import read_pointer
from dermaops.errors import ConfigError
from dermaops.model.artifact import ModelArtifact, locate_model_dir
from dermaops.settings import Home

log = logging.getLogger(__name__)


def load_model(uri: str, home: Home, when_missing: str = "") -> tuple[ModelArtifact, str]:
    """The model at ``uri`` (see :func:`resolve_model`), read once, and its version label."""
    folder, version = resolve_model(uri, home, when_missing)
    return ModelArtifact.load(folder), version


def resolve_model(uri: str, home: Home, when_missing: str = "") -> tuple[Path, str]:
    """(model directory, version label) for ``uri``.

    ``""`` reads ``$DERMAOPS_HOME/serving/current.json`` (written by the pipeline's deploy
    stage); ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` is downloaded from MLflow;
    ``file://`` and plain paths are read in place (KServe mounts the model at /mnt/models).

    Raises:
        ConfigError: nothing to serve at ``uri``.
    """
    version = "local"
    if not uri:
        uri, version = read_pointer(
            home.serving, when_missing or "run `dermaops pipeline run --local` or pass --model-uri"
        )
    if uri.startswith("models:/"):
        return _from_registry(uri, home)
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ConfigError(
            f"cannot read {uri!r} here: give a folder, file://, or models:/ URI "
            "(on KServe the storage initializer fetches s3:// and gs:// into /mnt/models)"
        )
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri)
    if not path.exists():
        raise ConfigError(f"model {uri} does not exist")
    return locate_model_dir(path), version


def _from_registry(uri: str, home: Home) -> tuple[Path, str]:
    from dermaops.registry import Registry, RegistrySettings
    from dermaops.registry.client import alias_version
    from dermaops.registry.model import download

    name, _, ref = uri.removeprefix("models:/").partition("@")
    if ref:
        reg = Registry(RegistrySettings(model_name=name), home)
        version = alias_version(reg, ref)
        if version is None:
            raise ConfigError(f"{uri}: model {name} has no alias {ref!r}")
    else:
        name, _, version = name.partition("/")
        reg = Registry(RegistrySettings(model_name=name), home)
    dest = home.serving / "models" / f"{name}-v{version}"
    with _download_lock(dest):  # the monitor's drift watch and estimates may ask at once
        if (dest / "done").is_file():
            return Path((dest / "done").read_text()), version
        folder = download(reg, version, dest)
        (dest / "done").write_text(str(folder))
    log.info("downloaded %s (version %s) to %s", uri, version, folder)
    return folder, version


_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _download_lock(dest: Path) -> threading.Lock:
    """One download into ``dest`` at a time in this process."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(dest, threading.Lock())
