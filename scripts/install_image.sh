#!/bin/sh
# Install one image's closure into /opt/dermaops (run by the Dockerfile's build stages).
#   install_image.sh NAME [TORCH_INDEX_URL]
# NAME's closure (requirements/image-NAME.txt) is installed with --require-hashes --no-deps; with
# TORCH_INDEX_URL, torch and torchvision come from that index at the closure's versions and the
# rest from image-NAME-cpu.txt. Then dermaops's wheel (/wheels, built by the Dockerfile) without
# dependencies (not for the third-party images, mlflow and storage-initializer), and pip and
# setuptools leave the venv.
set -eu
name=$1
torch_index=${2:-}
closure=requirements/image-$name.txt
python3 -m venv /opt/dermaops
pip=/opt/dermaops/bin/pip
if [ -n "$torch_index" ]; then
  $pip install --no-deps --index-url "$torch_index" \
    "$(grep -E '^torch==' "$closure" | cut -d' ' -f1)" \
    "$(grep -E '^torchvision==' "$closure" | cut -d' ' -f1)"
  closure=requirements/image-$name-cpu.txt
fi
$pip install --require-hashes --no-deps -r "$closure"
if [ "$name" != mlflow ] && [ "$name" != storage-initializer ]; then
  $pip install --no-deps /wheels/dermaops-*.whl
fi
$pip uninstall -y pip setuptools
find /opt/dermaops -name '__pycache__' -prune -exec rm -rf {} +
