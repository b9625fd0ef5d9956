# Two commands on a fresh machine: `make pipeline` runs the whole job, `make test` runs the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The PyTorch -> TFLite converter (litert-torch) cannot share .venv with Prefect; leti keeps it in
# .venv-tflite and runs it as a subprocess (leti/devices/litert_env.py pins its versions).
CONVERTER_STAMP := .venv-tflite/.leti-requirements

# Tool state (Prefect's database, DVC's site cache, ...) stays in the project without exports here:
# see leti/project.py.

.PHONY: install pipeline test mlflow-ui prefect-server clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(CONVERTER_STAMP): $(STAMP) leti/devices/litert_env.py
	$(BIN)/python -c 'from leti.devices import litert_env; litert_env.ensure()'

install: $(STAMP) $(CONVERTER_STAMP)

pipeline: $(STAMP) $(CONVERTER_STAMP)  ## run every DVC stage: sample -> measure -> featurize -> train -> evaluate
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

test: $(STAMP) $(CONVERTER_STAMP)  ## the whole test suite
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest

mlflow-ui: $(STAMP)  ## the MLflow UI on http://127.0.0.1:5000 (runs and the model registry)
	@echo "Training runs: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

prefect-server: $(STAMP)  ## Prefect server and UI on http://127.0.0.1:4200 (database in .prefect/)
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200
