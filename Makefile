PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run dev test lint bench simulate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## serve on http://localhost:3000 with config.toml
	$(BIN)/actorchat serve --config config.toml

dev: $(STAMP)  ## serve and restart on source changes
	$(BIN)/actorchat serve --config config.toml --reload

simulate: $(STAMP)  ## the OpenAI simulator on http://127.0.0.1:8001/v1
	$(BIN)/actorchat simulate --port 8001

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint  ## ruff, then the whole suite
	$(BIN)/pytest -q

bench: $(STAMP)  ## benchmarks: prints a table, writes bench/results.json
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
