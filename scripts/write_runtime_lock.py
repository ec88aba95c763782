"""Turn a runtime-only `pip install --dry-run --report` into the images' hashed requirements.

requirements/runtime.txt is dermaops's runtime closure, each wheel with the sha256 pip recorded
when it resolved (Linux x86_64, CPython 3.11): the GPU images install it with
`pip install --require-hashes --no-deps`. requirements/runtime-cpu.txt is the same without
torch, torchvision and the CUDA wheels, which CPU images take from PyTorch's CPU index.
Regenerate with `make lock`.
Usage: python scripts/write_runtime_lock.py REPORT.json requirements/
"""

import json
import re
import sys
from pathlib import Path

HEADER = """\
# What the images install: dermaops's runtime closure (no dev tools), pinned as in lock.txt,
# each with the sha256 of its Linux x86_64 CPython 3.11 wheel. Installed with
#   pip install --require-hashes --no-deps -r requirements/runtime.txt
# Regenerate: make lock.
"""
HEADER_CPU = """\
# What the CPU images install besides torch and torchvision (taken from PyTorch's CPU index):
# dermaops's runtime closure without torch, torchvision and the CUDA wheels, pinned as in
# lock.txt, each with the sha256 of its Linux x86_64 CPython 3.11 wheel. Installed with
#   pip install --require-hashes --no-deps -r requirements/runtime-cpu.txt
# Regenerate: make lock.
"""


CUDA_ONLY = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")


def main(report_path: str, out_dir: str) -> None:
    report = json.loads(Path(report_path).read_text())
    blocks = {}
    for item in sorted(report["install"], key=lambda i: i["metadata"]["name"].lower()):
        name = item["metadata"]["name"].lower()
        if name == "dermaops":
            continue
        digest = item["download_info"]["archive_info"]["hashes"]["sha256"]
        blocks[name] = f"{name}=={item['metadata']['version']} \\\n    --hash=sha256:{digest}\n"
    out = Path(out_dir)
    (out / "runtime.txt").write_text(HEADER + "".join(blocks.values()))
    cpu = [block for name, block in blocks.items() if not CUDA_ONLY.match(name)]
    (out / "runtime-cpu.txt").write_text(HEADER_CPU + "".join(cpu))


if __name__ == "__main__":
    main(*sys.argv[1:3])
