# Two commands on a fresh machine: `make pipeline` runs the whole job, `make test` runs the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_SITE_CACHE_DIR := $(CURDIR)/.dvc/site-cache

.PHONY: install pipeline test mlflow-ui clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

pipeline: $(STAMP)  ## run every DVC stage: sample -> measure -> featurize -> train -> evaluate
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

test: $(STAMP)  ## the whole test suite
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest

mlflow-ui: $(STAMP)  ## the MLflow UI on http://127.0.0.1:5000 (runs and the model registry)
	@echo "Training runs: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000
