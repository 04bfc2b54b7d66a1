# Everyday commands. `make dev` once, then `make check` before every commit.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev serve test lint format typecheck check

$(BIN)/python:
	python3 -m venv $(VENV)

dev: $(BIN)/python  ## install eventport with the development tools
	$(BIN)/pip install -e '.[dev]'

serve:  ## run the server on the embedded default (./eventport-data)
	$(BIN)/eventport serve

test:  ## the whole suite, SQLite and PostgreSQL
	$(BIN)/pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck:
	$(BIN)/mypy

check: lint typecheck test
