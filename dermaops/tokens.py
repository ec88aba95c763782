"""Bearer tokens for the control paths (the monitor's webhook, records and drift trigger).

A token comes from an environment variable, or from a file named by ``<VAR>_FILE`` (a mounted
Kubernetes Secret). A monitor started without one makes its own, writes it where only its user
can read it, and says where: nothing that starts a run is ever open by default.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from dermaops.errors import ConfigError

MONITOR_TOKEN_ENV = "DERMAOPS_MONITOR_TOKEN"


def read_token(var: str = MONITOR_TOKEN_ENV) -> str | None:
    """``$VAR``, else the contents of the file ``$VAR_FILE``, else None.

    Raises:
        ConfigError: ``$VAR_FILE`` names a file that cannot be read or is empty.
    """
    if os.environ.get(var):
        return os.environ[var].strip()
    path = os.environ.get(f"{var}_FILE")
    if not path:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(f"{var}_FILE={path}: cannot read the token: {e}") from e
    if not token:
        raise ConfigError(f"{var}_FILE={path} is empty")
    return token


def ensure_token(path: Path) -> str:
    """The token stored at ``path``, created (mode 0600) when there is none."""
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (compared in constant time)."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )
