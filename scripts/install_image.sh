#!/bin/sh
# Install one image into /opt/dermaops (run by the Dockerfile's stages), in two steps so that the
# closure's layer is reused while only our source changes:
#   install_image.sh closure NAME [TORCH_INDEX_URL]
#     a venv with NAME's closure (requirements/image-NAME.txt), --require-hashes --no-deps; with
#     TORCH_INDEX_URL, torch and torchvision come from that index at the closure's versions and
#     the rest from image-NAME-cpu.txt.
#   install_image.sh project NAME
#     dermaops's wheel (/wheels, built by the Dockerfile) without dependencies (not for the
#     third-party images, mlflow and storage-initializer); then pip and setuptools leave the venv.
set -eu
step=$1
name=$2
pip=/opt/dermaops/bin/pip
case $step in
  closure)
    torch_index=${3:-}
    closure=requirements/image-$name.txt
    python3 -m venv /opt/dermaops
    if [ -n "$torch_index" ]; then
      $pip install --no-deps --index-url "$torch_index" \
        "$(grep -E '^torch==' "$closure" | cut -d' ' -f1)" \
        "$(grep -E '^torchvision==' "$closure" | cut -d' ' -f1)"
      closure=requirements/image-$name-cpu.txt
    fi
    $pip install --require-hashes --no-deps -r "$closure"
    ;;
  project)
    if [ "$name" != mlflow ] && [ "$name" != storage-initializer ]; then
      $pip install --no-deps /wheels/dermaops-*.whl
    fi
    $pip uninstall -y pip setuptools
    find /opt/dermaops -name '__pycache__' -prune -exec rm -rf {} +
    ;;
  *)
    echo "install_image.sh: the first argument is closure or project, not '$step'" >&2
    exit 2
    ;;
esac
