# dlcourse developer commands. `make help` lists them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The real data sets beside the project (CI, this workplace); elsewhere MNIST downloads to data/.
export DLCOURSE_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast validate smoke lint format typecheck bench docs docs-examples wheel wheel-check clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install dlcourse with its dev, docs and onnx extras

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev,docs,onnx]'
	touch $(STAMP)

run: install  ## train the MNIST CNN (the main job) and print where the run went
	$(BIN)/dlcourse train configs/mnist_cnn.yaml

test: install  ## the test suite (real data included when DLCOURSE_DATA_DIR is set), 20 slowest listed
	$(BIN)/python -m pytest -m "not validate" --durations=20

test-fast: install  ## the tests without the slow ones
	$(BIN)/python -m pytest -m "not slow and not validate"

validate: install  ## the long accuracy targets: LeNet-5's paper figure, full MNIST, each sweep's outcome
	$(BIN)/python -m pytest -m validate --durations=0

smoke: install  ## every shipped config for one short epoch
	test -f data/house_prices.csv || $(BIN)/dlcourse data make house-prices --out data/house_prices.csv
	test -f data/spam.csv || $(BIN)/dlcourse data make spam --out data/spam.csv
	for config in configs/*.yaml; do \
	  $(BIN)/dlcourse train $$config --runs-dir /tmp/dlcourse-smoke --set train.epochs=1 --set data.limit=500 || exit 1; \
	done

lint: install  ## ruff (lint, formatting) and import-linter (the package layers, no cycles)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install  ## ruff: fix what can be fixed, format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install  ## mypy on the package
	$(BIN)/mypy dlcourse

bench: install  ## time dlcourse against hand-written loops (see bench/)
	$(BIN)/python bench/run.py

docs: install  ## build the docs site into site/ (mkdocs --strict; the references made from the code)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-examples: install  ## run the commands the docs show, write their output to docs/snippets/ (minutes)
	$(BIN)/python docs/examples.py

wheel: install  ## build the sdist and the wheel into dist/ (python -m build)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

WHEEL_CHECK := /tmp/dlcourse-wheel-check
wheel-check: wheel  ## install the wheel into a fresh venv (dependencies from the index), init and train there
	rm -rf $(WHEEL_CHECK)
	$(PYTHON) -m venv $(WHEEL_CHECK)/venv
	$(WHEEL_CHECK)/venv/bin/pip install --quiet dist/dlcourse-*.whl
	cd $(WHEEL_CHECK) && venv/bin/dlcourse --version && venv/bin/dlcourse --help >/dev/null
	cd $(WHEEL_CHECK) && venv/bin/dlcourse init course
	cd $(WHEEL_CHECK)/course && ../venv/bin/dlcourse train configs/playground_xor.yaml --set train.epochs=5
	cd $(WHEEL_CHECK) && (venv/bin/dlcourse doctor --runs-dir course/runs || test -z "$$DLCOURSE_DATA_DIR")  # fails without the data
	du -sh $(WHEEL_CHECK)/venv
	rm -rf $(WHEEL_CHECK)

clean:  ## remove caches, smoke runs and the built docs (not .venv, not runs/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache /tmp/dlcourse-smoke site build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
