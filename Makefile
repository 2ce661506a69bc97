# flexrl automation. `make test` and `make demo` work from a fresh clone: they install first.
VENV        ?= .venv
PYTHON      ?= python3
PY          := $(VENV)/bin/python
FLEXRL      := $(VENV)/bin/flexrl
STAMP       := $(VENV)/.installed
# The CPU build of torch lies in /opt/wheels on these machines; use it when it is there.
FIND_LINKS  := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
DEMO_DIR    ?= demo-workspace

.PHONY: help install test lint demo bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install flexrl with the dev extra, pinned by constraints.txt

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(FIND_LINKS) -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

test: install  ## run the test suite
	$(PY) -m pytest

lint: install  ## ruff over the package, tests and benchmarks
	$(VENV)/bin/ruff check flexrl tests benchmarks
	$(VENV)/bin/ruff format --check flexrl tests benchmarks

demo: install  ## run the pipeline as far as it exists, into $(DEMO_DIR)/
	rm -rf $(DEMO_DIR)
	$(FLEXRL) train --config recipes/quickstart.yaml --name quickstart --workspace $(DEMO_DIR)
	$(FLEXRL) runs ls --workspace $(DEMO_DIR)
	$(FLEXRL) runs lineage quickstart --workspace $(DEMO_DIR)
	@echo
	@echo "== flexrl demo: what it made and where =="
	@echo "  workspace      $(DEMO_DIR)/"
	@echo "  PPO run        $$(ls -d $(DEMO_DIR)/runs/*-quickstart-*)/"
	@echo "    recipe       recipe.yaml (fully resolved), provenance.json (code, packages, host)"
	@echo "    metrics      metrics.csv ($$(($$(wc -l < $$(ls -d $(DEMO_DIR)/runs/*-quickstart-*)/metrics.csv) - 1)) rows), tensorboard/"
	@echo "    checkpoint   $$(ls $(DEMO_DIR)/runs/*-quickstart-*/artifacts/final.pt)"
	@echo "  look closer:   $(FLEXRL) runs show quickstart --workspace $(DEMO_DIR)"

bench: install  ## run the benchmarks (writes benchmarks/results/*.json)
	$(PY) benchmarks/runs_ls_bench.py

clean:  ## remove the virtual environment and demo outputs
	rm -rf $(VENV) $(DEMO_DIR)
