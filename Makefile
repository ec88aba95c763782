# The two commands a newcomer needs: `make demo` and `make test`. Both build .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DERMAOPS_HOME ?= $(CURDIR)/.dermaops
PYTEST_ARGS ?=
DEMO_N ?= 1500
DEMO_PORT ?= 8080
DEMO_MONITOR_PORT ?= 8090
DEMO_CHALLENGER_PORT ?= 8081

.PHONY: demo serve-once rollout-once test lint typecheck docs docs-serve docs-tables trainjob-local venv tools audit pin-images bench lock image-locks images clean

$(STAMP): pyproject.toml requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements/lock.txt -e '.[dev]'
	touch $@

venv: $(STAMP)

## demo: the training pipeline on KFP's local runner: generated set, train, gate, MLflow, deploy
demo: $(STAMP)
	@status=0; $(BIN)/dermaops pipeline run --local --n $(DEMO_N) || status=$$?; \
	if [ $$status -eq 3 ]; then \
	  echo "(a small model on generated data: the quality gate stopped it; try make demo DEMO_N=3000)"; \
	elif [ $$status -ne 0 ]; then exit $$status; fi
	@$(MAKE) --no-print-directory serve-once
	@$(MAKE) --no-print-directory rollout-once

# A new version rolled out beside the served one: shadow, the judge's paired checks, promotion.
rollout-once: $(STAMP)
	@scripts/demo_rollout.sh $(BIN) $(DEMO_PORT) $(DEMO_CHALLENGER_PORT)

# The deployed champion served on loopback: one prediction, normal and shifted traffic, drift.
serve-once: $(STAMP)
	@scripts/demo_serve.sh $(BIN) $(DEMO_PORT) $(DEMO_MONITOR_PORT)

## tools: real helm and kubectl (.tools/bin, hash-checked), KServe's storage code with MLflow's
## S3-backed server and moto's S3 (.tools/storage), and Triton's protocol client (.tools/client),
## for the chart, registry and protocol tests
tools: .tools/bin/helm .tools/bin/kubectl .tools/storage/.installed .tools/client/.installed

.tools/bin/helm .tools/bin/kubectl &: | $(STAMP)  # one recipe makes both (make -j runs it once)
	$(BIN)/python scripts/fetch_tools.py .tools/bin

.tools/storage/.installed: requirements/storage-tools.txt
	$(PYTHON) -m venv .tools/storage
	.tools/storage/bin/pip install --quiet --disable-pip-version-check --no-deps \
	  -r requirements/storage-tools.txt
	touch $@

.tools/client/.installed: requirements/client-tools.txt
	$(PYTHON) -m venv .tools/client
	.tools/client/bin/pip install --quiet --disable-pip-version-check --no-deps \
	  -r requirements/client-tools.txt
	touch $@

## test: lint, type-check and run every test but the GPU ones (the 40 slowest named at the end).
## The tools' venvs build beside .venv: pip installs on one core, and the first run has two.
test:
	@$(MAKE) --no-print-directory -j2 lint typecheck tools
	$(BIN)/pytest -m "not gpu" --durations=40 $(PYTEST_ARGS)

## docs: the documentation site, built strictly into site/ (a broken link or anchor fails);
## make test builds it too (tests/unit/test_docs.py)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## docs-serve: the site on http://127.0.0.1:8000, rebuilt as the pages change
docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:8000

## docs-tables: the docs' benchmark and reliability tables rewritten from docs/results/*.json
docs-tables: $(STAMP)
	$(BIN)/python scripts/result_tables.py

## trainjob-local: a TrainJob's two nodes as rendered, under podman, from the trainer image
## (torch with CUDA, about 7 GB: not in make test; as root; TRAINJOB_ARGS: --image IMAGE --base IMAGE)
TRAINJOB_ARGS ?=
trainjob-local: $(STAMP) .tools/bin/helm
	$(BIN)/python scripts/trainjob_local.py $(TRAINJOB_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/python scripts/typecheck.py

## audit: known vulnerabilities in the locked dependencies (exit 2 when it cannot check)
audit: .tools/audit/bin/pip-audit
	$(BIN)/python scripts/audit.py requirements/lock.txt --pip-audit .tools/audit/bin/pip-audit

.tools/audit/bin/pip-audit: | $(STAMP)
	$(PYTHON) -m venv .tools/audit
	.tools/audit/bin/pip install --quiet --disable-pip-version-check pip-audit==2.10.1

## pin-images: pin the base and third-party images to the digests their registries serve now
pin-images: $(STAMP)
	$(BIN)/python scripts/pin_images.py

## bench: prepare throughput against a plain PIL loop (a ratio, same run, same files)
bench: $(STAMP)
	$(BIN)/dermaops bench prepare --n 2000

## lock: re-resolve requirements/lock.txt, then each image's hashed closure (image-*.txt)
IMAGES := serving serving-gpu monitor ui train
MLFLOW_SERVER := mlflow[auth]==3.17.2 psycopg[binary]==3.3.9 boto3==1.44.8
lock:
	$(PYTHON) -m venv /tmp/dermaops-lock-venv
	/tmp/dermaops-lock-venv/bin/pip install --quiet --dry-run --ignore-installed \
	  --report /tmp/dermaops-lock.json -e '.[dev]' -r requirements/planned.txt
	$(PYTHON) scripts/write_lock.py /tmp/dermaops-lock.json requirements/lock.txt
	$(MAKE) --no-print-directory image-locks

## images: build the serving, monitor, ui and mlflow images with podman; sizes against budgets
## (IMAGES_ARGS: e.g. --base localhost/bookworm-python --podman-arg=-v... ; see scripts/images.py)
IMAGES_ARGS ?=
images: $(STAMP)
	$(BIN)/python scripts/images.py $(IMAGES_ARGS)

## image-locks: each image's closure under the lock: dermaops's extra, the MLflow server's drivers,
## and KServe's storage code (kserve-storage, pinned as in storage-tools.txt)
image-locks:
	$(PYTHON) -m venv /tmp/dermaops-lock-venv
	for image in $(IMAGES); do \
	  /tmp/dermaops-lock-venv/bin/pip install --quiet --dry-run --ignore-installed \
	    --report /tmp/dermaops-image.json -c requirements/lock.txt ".[$$image]"; \
	  $(PYTHON) scripts/write_image_lock.py $$image /tmp/dermaops-image.json requirements/; \
	done
	/tmp/dermaops-lock-venv/bin/pip install --quiet --dry-run --ignore-installed \
	  --report /tmp/dermaops-image.json -c requirements/lock.txt $(MLFLOW_SERVER)
	$(PYTHON) scripts/write_image_lock.py mlflow /tmp/dermaops-image.json requirements/
	/tmp/dermaops-lock-venv/bin/pip install --quiet --dry-run --ignore-installed \
	  --report /tmp/dermaops-image.json -c requirements/lock.txt setuptools
	$(PYTHON) scripts/write_image_lock.py build /tmp/dermaops-image.json requirements/
	/tmp/dermaops-lock-venv/bin/pip install --quiet --dry-run --ignore-installed \
	  --report /tmp/dermaops-image.json -c requirements/storage-tools.txt kserve-storage==0.21.0
	$(PYTHON) scripts/write_image_lock.py storage-initializer /tmp/dermaops-image.json \
	  requirements/ storage-tools.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
