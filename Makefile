# DumbKV: `make run` serves on the embedded SQLite default; `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test lint typecheck bench rules clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The editable install also compiles the request path into src/ (setup.py; pure Python where
# there is no C compiler), so any change to the sources installs again. The stamps take the
# time the install started: a file saved during the build is newer, and installs again.
SOURCES := pyproject.toml setup.py $(shell find src -name '*.py')
SAY_BUILD = $(BIN)/python -c 'from dumbkv._compiled import describe; print("dumbkv request path:", describe())'

$(VENV)/.installed-run: $(SOURCES) | $(BIN)/python
	touch $@.start
	$(BIN)/python -m pip install --quiet -e .
	$(SAY_BUILD)
	mv $@.start $@

$(VENV)/.installed-test: $(SOURCES) | $(BIN)/python
	touch $@.start
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(SAY_BUILD)
	cp -p $@.start $(VENV)/.installed-run
	mv $@.start $@

run: $(VENV)/.installed-run
	$(BIN)/dumbkv serve $(ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check setup.py src tests bench k8s/tools

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

test: $(VENV)/.installed-test
	$(BIN)/ruff check setup.py src tests bench k8s/tools
	$(BIN)/mypy
	$(BIN)/pytest $(ARGS)

bench: $(VENV)/.installed-test
	$(BIN)/python bench/compare.py $(ARGS)

# The plain Prometheus rules file (the PrometheusRule's .spec) for promtool or a plain Prometheus.
rules: $(VENV)/.installed-test
	mkdir -p build
	$(BIN)/python k8s/tools/extract_rules.py k8s/base/prometheusrule.yaml > build/dumbkv-rules.yaml
	@echo "wrote build/dumbkv-rules.yaml"

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
	find src -name '*.so' -delete
	rm -f src/dumbkv/_compiled_sources.json
