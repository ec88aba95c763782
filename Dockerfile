# syntax=docker/dockerfile:1
# DermaOps images, one multi-stage file. Targets:
#   serving   the KServe predictor (CPU: ONNX Runtime; build with TORCH_INDEX_URL="" for the GPU image)
#   monitor   drift monitor, Alertmanager webhook, `dermaops pipeline submit`
#   ui        the clinician page (Streamlit)
#   trainer   the KFP components (build with TORCH_INDEX_URL="": torch with CUDA for the GPU pool)
# BASE_IMAGE must be a Debian-based Python 3.11. The default is pinned by digest (the multi-arch
# index of python:3.11.16-slim-bookworm, built 2026-09-01, as docker-library/repo-info records
# it); `make pin-images` refreshes pins from the registry.
ARG BASE_IMAGE=python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f

FROM ${BASE_IMAGE} AS build
# The CPU wheels of torch by default; an empty value installs the CUDA wheels from the index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/dermaops
WORKDIR /src
COPY requirements/runtime.txt requirements/runtime-cpu.txt requirements/
# Dependencies first, so a code change does not reinstall them: the runtime closure pinned and
# hash-checked (--require-hashes). CPU images take torch and torchvision, at the same versions,
# from TORCH_INDEX_URL (PyTorch's CPU builds are not on PyPI, so their hashes are not ours).
RUN set -eu; \
    pip=/opt/dermaops/bin/pip; \
    if [ -n "$TORCH_INDEX_URL" ]; then \
      $pip install --no-deps --index-url "$TORCH_INDEX_URL" \
        "$(grep -E '^torch==' requirements/runtime.txt | cut -d' ' -f1)" \
        "$(grep -E '^torchvision==' requirements/runtime.txt | cut -d' ' -f1)"; \
      $pip install --require-hashes --no-deps -r requirements/runtime-cpu.txt; \
    else \
      $pip install --require-hashes --no-deps -r requirements/runtime.txt; \
    fi
COPY pyproject.toml README.md ./
COPY dermaops dermaops
COPY components components
COPY pipelines pipelines
COPY registry registry
COPY serving serving
COPY monitoring monitoring
COPY ui ui
RUN /opt/dermaops/bin/pip install --no-deps --no-build-isolation . \
 && /opt/dermaops/bin/pip uninstall -y pip setuptools \
 && find /opt/dermaops -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE_IMAGE} AS runtime
# Nothing to build with: no compiler, no pip; a non-root user; writes only to volumes.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin dermaops
COPY --from=build /opt/dermaops /opt/dermaops
ENV PATH=/opt/dermaops/bin:$PATH \
    DERMAOPS_HOME=/var/lib/dermaops \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true
USER 10001:10001
WORKDIR /tmp

FROM runtime AS serving
EXPOSE 8080
ENTRYPOINT ["python3", "-m", "dermaops.serving"]
CMD ["--model_dir=/mnt/models", "--http_port=8080"]

FROM runtime AS monitor
EXPOSE 8000
ENTRYPOINT ["dermaops", "monitor", "serve"]
CMD ["--host=0.0.0.0", "--port=8000"]

FROM runtime AS ui
EXPOSE 8501
ENTRYPOINT ["dermaops", "ui"]
CMD ["--host=0.0.0.0", "--port=8501"]

FROM runtime AS trainer
# KFP sets the command of each component; the default shows the CLI.
CMD ["dermaops", "--help"]
