# The two commands a newcomer needs: `make demo` and `make test`. Both build .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DERMAOPS_HOME ?= $(CURDIR)/.dermaops
PYTEST_ARGS ?=
DEMO_N ?= 1000
SYNTH := $(DERMAOPS_HOME)/data/synth
PREPARED := $(DERMAOPS_HOME)/data/prepared
RUN := $(DERMAOPS_HOME)/runs/demo-resnet18

.PHONY: demo test lint typecheck venv bench lock clean

$(STAMP): pyproject.toml requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements/lock.txt -e '.[dev]'
	touch $@

venv: $(STAMP)

## demo: generate a HAM10000-shaped set, prepare it, train a small CNN, evaluate and gate it
demo: $(STAMP) $(RUN)/model/model.json
	$(BIN)/dermaops baseline --data $(PREPARED) --out $(DERMAOPS_HOME)/runs/demo-baseline
	$(BIN)/dermaops evaluate --data $(PREPARED) --run $(RUN) --out $(RUN)/eval
	@$(BIN)/dermaops gate --metrics $(RUN)/eval/metrics.json || \
	  echo "(a small demo model on generated data: the gate is meant to stop it)"
	@echo
	@echo "Data report:  $(PREPARED)/data_report.md"
	@echo "Model:        $(RUN)/model (weights.pt, model.onnx, model.json)"
	@echo "Evaluation:   $(RUN)/eval/report.md"

$(PREPARED)/manifest.json: $(SYNTH)/HAM10000_metadata.csv | $(STAMP)
	$(BIN)/dermaops data prepare --raw $(SYNTH) --out $(PREPARED)

$(RUN)/model/model.json: $(PREPARED)/manifest.json | $(STAMP)
	rm -rf $(RUN)
	$(BIN)/dermaops train --data $(PREPARED) --out $(RUN) --model resnet18 --weights none \
	  --image-size 96 --epochs 8 --batch-size 32

$(SYNTH)/HAM10000_metadata.csv: | $(STAMP)
	$(BIN)/dermaops data synth --out $(SYNTH) --n $(DEMO_N) --seed 0

## test: lint, type-check and run every test but the GPU ones
test: lint typecheck
	$(BIN)/pytest -m "not gpu" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## bench: prepare throughput against a plain PIL loop (a ratio, same run, same files)
bench: $(STAMP)
	$(BIN)/dermaops bench prepare --n 2000

## lock: re-resolve requirements/lock.txt for the project and the planned stack
lock:
	$(PYTHON) -m venv /tmp/dermaops-lock-venv
	/tmp/dermaops-lock-venv/bin/pip install --quiet --dry-run --ignore-installed \
	  --report /tmp/dermaops-lock.json -e '.[dev]' -r requirements/planned.txt
	$(PYTHON) scripts/write_lock.py /tmp/dermaops-lock.json requirements/lock.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
