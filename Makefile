# The few commands people type. Everything installs into .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STUDY  ?= studies/demo.yaml
STORE  ?= sqlite:///mlflow.db
BENCH  ?= overhead
ARGS   ?=
CLUSTER_DIR ?= /tmp/tunelab-cluster-$(shell id -un)
WORKER_GPUS ?= 0

.PHONY: setup sysdeps demo run test test-unit lint ui bench clean cluster-up cluster-down submit

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed          ## create .venv and install tunelab with its pinned dependencies

sysdeps:                           ## system packages the tests need (PostgreSQL, Chromium); idempotent
	scripts/system-deps.sh

demo: setup                        ## run studies/demo.yaml on a local Ray, tracked in mlflow.db
	$(VENV)/bin/tunelab run studies/demo.yaml

run: setup                         ## run any study: make run STUDY=studies/x.yaml
	$(VENV)/bin/tunelab run $(STUDY)

#: integration tests through every private reach of tunelab/compat.py, run once more on the public paths
COMPAT_OFF_TESTS ?= tests/integration/test_cells.py \
	"tests/integration/test_faults.py::test_killed_driver_resumes_without_losing_or_repeating_trials"

test: setup sysdeps lint           ## all tests: lint, unit, integration (real Ray, real MLflow), then compat off
	$(PY) -m pytest -q --durations=25
	TUNELAB_COMPAT=off $(PY) -m pytest -q $(COMPAT_OFF_TESTS)

lint: setup                        ## ruff: lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-unit: setup                   ## the fast tests only
	$(PY) -m pytest -q -m "not integration and not cluster"

ui: setup                          ## the MLflow UI on the study store, loopback only
	@echo "MLflow UI on http://127.0.0.1:5000 — open the link tunelab run printed, or pick Model training (docs/tour.md)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri $(STORE) --host 127.0.0.1 --port 5000

bench: setup                       ## one benchmark against its alternatives: make bench BENCH=throughput ARGS="--seconds 1"
	$(PY) benchmarks/$(BENCH).py $(ARGS)

cluster-up: setup sysdeps           ## PostgreSQL + MLflow server + Ray head + Ray worker, on loopback
	$(PY) scripts/cluster.py up --dir $(CLUSTER_DIR) --worker-gpus $(WORKER_GPUS)

cluster-down:                      ## stop exactly what cluster-up started
	$(PY) scripts/cluster.py down --dir $(CLUSTER_DIR)

submit: setup                      ## ray job submit a study: make submit STUDY=studies/cluster.yaml
	@if [ -z "$$RAY_ADDRESS" ] && [ -f $(CLUSTER_DIR)/env ]; then . $(CLUSTER_DIR)/env; fi; \
	$(PY) scripts/submit.py $(STUDY)

clean:
	rm -rf tune_results mlruns mlartifacts mlflow.db mlflow.db-wal mlflow.db-shm
