"""`make pin-images`: pin third-party image references to the digests their registries serve.

The references: the Dockerfile's `ARG BASE_IMAGE=` and every `image:` value in the chart's
values.yaml (DermaOps' own images are built by skaffold, which deploys them by digest).

  python scripts/pin_images.py [FILE ...]           NAME:TAG -> NAME:TAG@sha256:... in place
  python scripts/pin_images.py --check [FILE ...]   no network: list what is not pinned

The digest is the sha256 of the manifest bytes the registry serves for the tag (OCI
distribution API, anonymous bearer token where the registry asks for one), checked against
its Docker-Content-Digest header. A reference already pinned is left alone.
Exit: 0 all pinned, 1 unpinned references (--check), 2 a registry could not be asked; that
reference is left as it was, never guessed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULT_FILES = (Path("Dockerfile"), Path("charts/dermaops/values.yaml"))
LOCATIONS = re.compile(r"^\s*(?:ARG BASE_IMAGE=|image:\s*)(?P<ref>\S+)\s*$")
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])  # fmt: skip
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
TIMEOUT_S = 20.0


class PinError(RuntimeError):
    """A registry that could not be asked, or whose answer does not add up."""


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str
    digest: str = ""

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Docker's rules: no registry host means Docker Hub, one-part names are library/."""
        name, _, digest = text.partition("@")
        if digest and not DIGEST.match(digest):
            raise ValueError(f"{text}: the digest is not sha256:<64 hex>")
        head, _, rest = name.partition("/")
        if rest and ("." in head or ":" in head or head == "localhost"):
            registry, path = head, rest
        else:
            registry, path = "docker.io", name
            if "/" not in path:
                path = f"library/{path}"
        repository, _, tag = path.rpartition(":") if ":" in path else (path, "", "")
        if not tag and not digest:
            raise ValueError(f"{text}: neither a tag nor a digest; pin a tag first")
        return cls(registry, repository, tag, digest)

    @property
    def base_url(self) -> str:
        host = "registry-1.docker.io" if self.registry == "docker.io" else self.registry
        hostname = host.rsplit(":", 1)[0].strip("[]")
        loopback = hostname == "localhost" or hostname.startswith("127.") or hostname == "::1"
        return f"{'http' if loopback else 'https'}://{host}"


def _get(url: str, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        return response.read(), {k.lower(): v for k, v in response.headers.items()}


def _token(challenge: str) -> str:
    """An anonymous pull token from the realm a `WWW-Authenticate: Bearer ...` names."""
    scheme, _, params = challenge.partition(" ")
    fields = dict(CHALLENGE_PARAM.findall(params))
    if scheme.lower() != "bearer" or "realm" not in fields:
        raise PinError(f"the registry wants {scheme or 'an unknown'} authentication")
    realm = fields.pop("realm")
    body, _ = _get(f"{realm}?{urllib.parse.urlencode(fields)}", {})
    try:
        answer = json.loads(body)
        return str(answer.get("token") or answer["access_token"])
    except (ValueError, KeyError, AttributeError) as e:
        raise PinError(f"no token in the answer of {realm}") from e


def resolve(ref: Reference) -> str:
    """The digest of the manifest the registry serves for ref's tag now."""
    url = f"{ref.base_url}/v2/{ref.repository}/manifests/{ref.tag}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        try:
            body, answer = _get(url, headers)
        except urllib.error.HTTPError as e:
            if e.code != 401 or "www-authenticate" not in {k.lower() for k in e.headers}:
                raise
            headers["Authorization"] = f"Bearer {_token(e.headers['WWW-Authenticate'])}"
            body, answer = _get(url, headers)
    except urllib.error.HTTPError as e:
        raise PinError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise PinError(f"{url}: {getattr(e, 'reason', e)}") from e
    digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
    claimed = answer.get("docker-content-digest", digest)
    if claimed != digest:
        raise PinError(f"{url}: served bytes hash to {digest}, the registry says {claimed}")
    return digest


def references(path: Path) -> list[tuple[int, str]]:
    """(line index, reference) for each image reference in path."""
    lines = path.read_text().splitlines()
    return [(i, m["ref"]) for i, line in enumerate(lines) if (m := LOCATIONS.match(line))]


def pin_file(path: Path) -> list[str]:
    """Pin every unpinned reference in path; the problems, one line each."""
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    problems = []
    for index, text in references(path):
        ref = Reference.parse(text)
        if ref.digest:
            continue
        try:
            digest = resolve(ref)
        except PinError as e:
            problems.append(f"CANNOT PIN {text} ({path}): {e}")
            continue
        lines[index] = lines[index].replace(text, f"{text}@{digest}", 1)
        print(f"pinned {text}@{digest} ({path})")
    if "".join(lines) != original:
        path.write_text("".join(lines))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, default=list(DEFAULT_FILES))
    parser.add_argument("--check", action="store_true", help="list unpinned; no network")
    args = parser.parse_args(argv)
    try:
        found = [(path, text, Reference.parse(text)) for path in args.files
                 for _, text in references(path)]  # fmt: skip
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        loose = [f"{text} ({path})" for path, text, ref in found if not ref.digest]
        for line in loose:
            print(f"NOT PINNED {line}")
        print(f"{len(found) - len(loose)} of {len(found)} image references pinned by digest")
        return 1 if loose else 0
    problems = [p for path in args.files for p in pin_file(path)]
    for problem in problems:
        print(problem)
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
