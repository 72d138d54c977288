# Two commands from a fresh clone:
#   make demo   install everything into .venv and run the demo
#   make test   install everything into .venv and run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first: the CPU wheel, so the package's torch range does not pull CUDA builds.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/bayes-transfer demo --out demo-output

test: $(STAMP)
	$(BIN)/ruff check bayes_transfer tests benchmarks
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo-output
