"""Turn one image's `pip install --dry-run --report` into its hashed requirements.

requirements/image-NAME.txt is the closure of one image (dermaops's extra NAME, or the MLflow
server's drivers), pinned as in lock.txt, each wheel with the sha256 pip recorded when it resolved
(Linux x86_64, CPython 3.11); the Dockerfile installs it with `pip install --require-hashes
--no-deps`. The trainer also runs on CPU nodes (kind), so requirements/image-train-cpu.txt is its
closure without torch, torchvision and the CUDA wheels, which a CPU build takes from PyTorch's CPU
index.
Regenerate with `make lock`.
Usage: python scripts/write_image_lock.py NAME REPORT.json requirements/ [PINS]
  PINS: the file the versions come from (default lock.txt)
"""

import json
import re
import sys
from pathlib import Path

HEADER = """\
# The {name} image's closure, pinned as in {pins}, each with the sha256
# of its Linux x86_64 CPython 3.11 wheel{cpu}. Installed with
#   pip install --require-hashes --no-deps -r requirements/{file}
# Regenerate: make lock.
"""
CPU_NOTE = " (torch and torchvision come from PyTorch's CPU index)"
CUDA_ONLY = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")
CPU_VARIANTS = {"train"}


def main(name: str, report_path: str, out_dir: str, pins: str = "lock.txt") -> None:
    report = json.loads(Path(report_path).read_text())
    blocks = {}
    for item in sorted(report["install"], key=lambda i: i["metadata"]["name"].lower()):
        package = item["metadata"]["name"].lower()
        if package == "dermaops":
            continue
        digest = item["download_info"]["archive_info"]["hashes"]["sha256"]
        blocks[package] = (
            f"{package}=={item['metadata']['version']} \\\n    --hash=sha256:{digest}\n"
        )
    out = Path(out_dir)
    file = f"image-{name}.txt"
    header = HEADER.format(name=name, pins=pins, cpu="", file=file)
    (out / file).write_text(header + "".join(blocks.values()))
    if name in CPU_VARIANTS:
        cpu = [block for package, block in blocks.items() if not CUDA_ONLY.match(package)]
        file = f"image-{name}-cpu.txt"
        header = HEADER.format(name=name, pins=pins, cpu=CPU_NOTE, file=file)
        (out / file).write_text(header + "".join(cpu))


if __name__ == "__main__":
    main(*sys.argv[1:5])
