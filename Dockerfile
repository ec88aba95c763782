# syntax=docker/dockerfile:1
# DermaOps images, one multi-stage file; each installs only its layer's closure
# (requirements/image-NAME.txt, `make lock`), hash-checked. Targets:
#   serving      the CPU predictor: the serving graph on ONNX Runtime, no torch
#   serving-gpu  the GPU predictor: torch with CUDA, Grad-CAM for every architecture
#   monitor      drift monitor, Alertmanager webhook, `dermaops pipeline submit`
#   ui           the clinician page (Streamlit)
#   trainer      the KFP components (torch with CUDA; TORCH_INDEX_URL=<PyTorch's CPU index>
#                builds it for CPU nodes)
#   mlflow       the tracking server with the PostgreSQL and S3 drivers the chart's MLflow needs
#   storage-initializer  KServe's storage code (kserve-storage 0.21.0), as its own image runs it
# BASE_IMAGE must be a Debian-based Python 3.11. The default is pinned by digest (the multi-arch
# index of python:3.11.16-slim-bookworm, built 2026-09-01, as docker-library/repo-info records
# it); `make pin-images` refreshes pins from the registry.
ARG BASE_IMAGE=python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f

# Each image's third-party closure first, from the lock files alone: a change to our source
# rebuilds only the small layers that install dermaops's wheel on top.
FROM ${BASE_IMAGE} AS closures
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY scripts/install_image.sh scripts/
COPY requirements/image-*.txt requirements/

FROM closures AS closure-serving
RUN sh scripts/install_image.sh closure serving

FROM closures AS closure-serving-gpu
RUN sh scripts/install_image.sh closure serving-gpu

FROM closures AS closure-monitor
RUN sh scripts/install_image.sh closure monitor

FROM closures AS closure-ui
RUN sh scripts/install_image.sh closure ui

FROM closures AS closure-trainer
ARG TORCH_INDEX_URL=""
RUN sh scripts/install_image.sh closure train "$TORCH_INDEX_URL"

FROM closures AS closure-mlflow
RUN sh scripts/install_image.sh closure mlflow

FROM closures AS closure-storage-initializer
RUN sh scripts/install_image.sh closure storage-initializer

FROM closures AS source
COPY scripts/storage_initializer.py scripts/
COPY pyproject.toml README.md ./
COPY dermaops dermaops
COPY components components
COPY pipelines pipelines
COPY registry registry
COPY serving serving
COPY monitoring monitoring
COPY ui ui
# dermaops's own wheel, built once with the hashed setuptools of image-build.txt (a venv's bundled
# setuptools is older than the license field of pyproject.toml).
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps -r requirements/image-build.txt \
 && /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# One build stage per image: its closure, then the project without deps (not for the
# third-party images), then pip and setuptools leave.
FROM closure-serving AS build-serving
COPY --from=source /wheels /wheels
RUN sh scripts/install_image.sh project serving

FROM closure-serving-gpu AS build-serving-gpu
COPY --from=source /wheels /wheels
RUN sh scripts/install_image.sh project serving-gpu

FROM closure-monitor AS build-monitor
COPY --from=source /wheels /wheels
RUN sh scripts/install_image.sh project monitor

FROM closure-ui AS build-ui
COPY --from=source /wheels /wheels
RUN sh scripts/install_image.sh project ui

FROM closure-trainer AS build-trainer
COPY --from=source /wheels /wheels
RUN sh scripts/install_image.sh project train

FROM closure-mlflow AS build-mlflow
RUN sh scripts/install_image.sh project mlflow

FROM closure-storage-initializer AS build-storage-initializer
RUN sh scripts/install_image.sh project storage-initializer

FROM ${BASE_IMAGE} AS runtime
# Nothing to build with: no compiler, no pip; a non-root user; writes only to volumes.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin dermaops
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
COPY --from=build-serving /opt/dermaops /opt/dermaops
EXPOSE 8080
ENTRYPOINT ["python3", "-m", "dermaops.serving"]
CMD ["--model_dir=/mnt/models", "--http_port=8080"]

FROM runtime AS serving-gpu
COPY --from=build-serving-gpu /opt/dermaops /opt/dermaops
EXPOSE 8080
ENTRYPOINT ["python3", "-m", "dermaops.serving"]
CMD ["--model_dir=/mnt/models", "--http_port=8080"]

FROM runtime AS monitor
COPY --from=build-monitor /opt/dermaops /opt/dermaops
EXPOSE 8000
ENTRYPOINT ["dermaops", "monitor", "serve"]
CMD ["--host=0.0.0.0", "--port=8000"]

FROM runtime AS ui
COPY --from=build-ui /opt/dermaops /opt/dermaops
EXPOSE 8501
ENTRYPOINT ["dermaops", "ui"]
CMD ["--host=0.0.0.0", "--port=8501"]

FROM runtime AS trainer
COPY --from=build-trainer /opt/dermaops /opt/dermaops
# KFP sets the command of each component; the default shows the CLI.
CMD ["dermaops", "--help"]

FROM runtime AS mlflow
COPY --from=build-mlflow /opt/dermaops /opt/dermaops
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]

FROM runtime AS storage-initializer
COPY --from=build-storage-initializer /opt/dermaops /opt/dermaops
COPY --from=source /src/scripts/storage_initializer.py /opt/dermaops/storage_initializer.py
ENTRYPOINT ["python3", "/opt/dermaops/storage_initializer.py"]
