# The few commands people type. Everything installs into .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STUDY  ?= studies/demo.yaml
STORE  ?= sqlite:///mlflow.db
TRIALS ?= 200

.PHONY: setup sysdeps demo run test test-unit ui bench clean

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

test: setup sysdeps                ## all tests: unit, then integration (real Ray, real MLflow)
	$(PY) -m pytest -q

test-unit: setup                   ## the fast tests only
	$(PY) -m pytest -q -m "not integration"

ui: setup                          ## the MLflow UI on the study store, loopback only
	@echo "MLflow UI on http://127.0.0.1:5000 — pick 'Model training' at the top left (README: A quick tour)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri $(STORE) --host 127.0.0.1 --port 5000

bench: setup                       ## tunelab vs plain Ray Tune on trivial trials
	$(PY) benchmarks/overhead.py --trials $(TRIALS)

clean:
	rm -rf tune_results mlruns mlartifacts mlflow.db mlflow.db-wal mlflow.db-shm
